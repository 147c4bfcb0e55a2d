"""Defenses: training modes and transformations that make a zoo model harder to fool, and the
robust evaluation that judges them.

A defended model is a zoo model to every later stage: same checkpoint format, ``load_model``
unchanged. Adversarial training (:mod:`advmir.defenses.adversarial`) is a training mode of the
model zoo, switched on by ``training["adversarial"]`` (absent: ordinary training, bit-identical);
the config's ``defenses.models`` names defended models that the workflow adds to the zoo
(:func:`advmir.config.expand_defenses`). :mod:`advmir.defenses.robust` measures robust accuracy
under an AutoAttack-style ensemble and :mod:`advmir.defenses.sanity` the gradient-masking checks.
Input-transformation defenses (:mod:`advmir.defenses.transforms`: a codec, quantisation, resampling,
low-pass, noise or a random combination in front of a model, ``defenses.transforms``) are scored
clean, non-adaptively and adaptively with BPDA / EOT by :mod:`advmir.defenses.transform_eval`.
Randomized smoothing (:mod:`advmir.defenses.smoothing`, ``defenses.smoothing``) certifies an L2
radius per clip, reported in dB, for a model trained in the ``gaussian`` mode.

Names are imported lazily: checking a config (:mod:`advmir.defenses.settings`, the plan) does not
import pytorch_lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "MODES": "advmir.defenses.settings",
    "AdversarialConfig": "advmir.defenses.settings",
    "DefenseConfigError": "advmir.defenses.settings",
    "AdversarialTraining": "advmir.defenses.adversarial",
    "build_adversarial": "advmir.defenses.adversarial",
}

__all__ = ["MODES", "AdversarialConfig", "AdversarialTraining", "DefenseConfigError", "build_adversarial"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
