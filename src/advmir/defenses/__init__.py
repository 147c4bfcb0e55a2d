"""Defenses: training modes and transformations that make a zoo model harder to fool.

A defended model is a zoo model to every later stage: same checkpoint format, ``load_model``
unchanged. Adversarial training (:mod:`advmir.defenses.adversarial`) is a training mode of the
model zoo, switched on by ``training["adversarial"]`` (absent: ordinary training, bit-identical).
"""

from __future__ import annotations

from advmir.defenses.adversarial import (
    MODES,
    AdversarialConfig,
    AdversarialTraining,
    DefenseConfigError,
    build_adversarial,
)

__all__ = ["MODES", "AdversarialConfig", "AdversarialTraining", "DefenseConfigError", "build_adversarial"]
