"""The attack suite, on the raw waveform in [-1, 1]: one attack per module on a shared base.

``build_attack({"name": "pgd", "params": {...}}, model)`` builds any of them from a config entry;
unknown names and parameters are rejected with a message naming the attack and the parameter.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from advmir.attacks.apgd import APGD, APGDDLR, APGDT
from advmir.attacks.base import BUDGET_PARAMS, Attack, AttackResult, IterativeAttack, attack_mode
from advmir.attacks.bim import BIM
from advmir.attacks.budgets import Budget, perturbation_metrics, snr_db
from advmir.attacks.cw import CarliniWagnerL2
from advmir.attacks.deepfool import DeepFool
from advmir.attacks.eot_pgd import EOTPGD
from advmir.attacks.fab import FAB, FABT
from advmir.attacks.fgsm import FGSM
from advmir.attacks.mifgsm import MIFGSM
from advmir.attacks.noise import RandomNoise
from advmir.attacks.params import AttackParamError
from advmir.attacks.pgd import PGD
from advmir.attacks.square import Square
from advmir.attacks.universal import Universal

ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls
    for cls in (
        FGSM,
        BIM,
        PGD,
        EOTPGD,
        MIFGSM,
        APGD,
        APGDDLR,
        APGDT,
        FAB,
        FABT,
        DeepFool,
        CarliniWagnerL2,
        Universal,
        Square,
        RandomNoise,
    )
}
COMMON_PARAMS = ("targeted", "target_map", "batch_size", "seed")


def accepted_params(name: str) -> list[str]:
    """Parameter names the attack ``name`` accepts (its own, its budget's and the common ones)."""
    attack = ATTACKS[name]
    unused_budget = set(BUDGET_PARAMS) - set(attack.budget_params)
    skip = {"self", "model", *getattr(attack, "fixed_params", {}), *unused_budget}
    own: list[str] = []
    for klass in attack.__mro__:  # follow **kwargs up to the classes that take them
        params = inspect.signature(klass.__init__).parameters.values()
        own += [
            p.name
            for p in params
            if p.name not in skip | set(own) and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        ]
        if not any(p.kind is p.VAR_KEYWORD for p in params) or klass is Attack:
            break
    return own + [p for p in COMMON_PARAMS if p not in own]


def build_attack(name: str, params: dict[str, Any] | None = None, model: nn.Module | None = None) -> Attack:
    """Build attack ``name`` with ``params`` (validated now; the model may be set later)."""
    if name not in ATTACKS:
        raise AttackParamError(f"unknown attack {name!r}; known attacks: {sorted(ATTACKS)}")
    params = dict(params or {})
    allowed = accepted_params(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise AttackParamError(f"{name}: unknown parameter(s) {unknown}; {name} accepts {allowed}")
    return ATTACKS[name](model, **params)


__all__ = [
    "APGD",
    "APGDDLR",
    "APGDT",
    "ATTACKS",
    "BIM",
    "EOTPGD",
    "FAB",
    "FABT",
    "FGSM",
    "MIFGSM",
    "PGD",
    "Attack",
    "AttackParamError",
    "AttackResult",
    "Budget",
    "CarliniWagnerL2",
    "DeepFool",
    "IterativeAttack",
    "RandomNoise",
    "Square",
    "Universal",
    "accepted_params",
    "attack_mode",
    "build_attack",
    "perturbation_metrics",
    "snr_db",
]
