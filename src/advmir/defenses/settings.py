"""The settings of an adversarial-training mode, checked without torch or Lightning.

:class:`AdversarialConfig` checks ``training["adversarial"]`` (and each entry of the config's
``defenses.models``, which the workflow turns into one): the workflow calls it when it starts, so a
bad mode, budget or guard setting stops ``snakemake -n`` with the key and what it allows, and the
training job (:mod:`advmir.defenses.adversarial`) builds the same object. Kept apart from that
module so that checking a config imports neither torch nor pytorch_lightning.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from advmir.errors import InputError

if TYPE_CHECKING:
    from advmir.attacks.budgets import Budget

MODES = ("pgd_at", "fast_at", "trades", "adv_aug")
#: modes that aim at clean accuracy (adversarial examples as augmentation), not at robustness
AUGMENT_MODES = ("adv_aug",)
SECTION = "training.adversarial"
#: keys every mode takes, and each mode's own
COMMON_KEYS = ("mode", "eps", "snr_db", "rel_step", "alpha")
MODE_KEYS = {
    "pgd_at": ("norm", "steps", "mix"),
    "fast_at": ("mix", "guard_drop", "guard_steps", "guard_clips"),
    "trades": ("norm", "steps", "beta"),
    "adv_aug": ("norm", "steps", "weight", "separate_bn"),
}
DEFAULT_STEPS = 10
FAST_REL_STEP = 1.25  # Wong et al.'s alpha = 1.25 eps


class DefenseConfigError(InputError, ValueError):
    """A defense setting that is unknown or out of range; the message names the key and what it allows."""


@dataclass(frozen=True)
class AdversarialConfig:
    """One adversarial-training mode, checked (see the module docstring for the keys).

    Attributes:
        mode: one of :data:`MODES`.
        norm: ``"linf"`` or ``"l2"`` (fast_at: linf).
        eps: absolute budget in (0, 1], or None. snr_db: per-clip budget in dB in (0, 100], or None;
            exactly one of the two.
        steps: PGD steps per batch (pgd_at, trades; fast_at: 1).
        rel_step: step as a fraction of each clip's radius, or None when ``alpha`` is given.
        alpha: absolute step size, or None.
        mix: share of each batch replaced by adversarial clips, in (0, 1] (pgd_at, fast_at).
        weight: adv_aug's weight of the adversarial batch's loss beside the clean batch's, > 0.
        separate_bn: adv_aug: adversarial clips go through auxiliary batch norms (AdvProp), the
            clean ones through the model's own; False: one set of batch norms for both.
        beta: TRADES' weight of the KL term, > 0.
        guard_drop: fast_at's tolerated fall of robust accuracy below the best, in (0, 1).
        guard_steps: steps of the guard's PGD (fast_at).
        guard_clips: clips in the guard's fixed batch: the first training clips (fast_at).
    """

    mode: str
    norm: str = "linf"
    eps: float | None = None
    snr_db: float | None = None
    steps: int = DEFAULT_STEPS
    rel_step: float | None = None
    alpha: float | None = None
    mix: float = 1.0
    beta: float = 6.0
    guard_drop: float = 0.2
    guard_steps: int = DEFAULT_STEPS
    guard_clips: int = 128
    weight: float = 1.0
    separate_bn: bool = True

    @classmethod
    def from_dict(cls, values: Any, section: str = SECTION) -> AdversarialConfig:
        """Check ``training["adversarial"]``; raise :class:`DefenseConfigError` naming the key (under
        ``section``, e.g. ``defenses.models.NAME`` for the config's defenses section)."""
        if not isinstance(values, dict):
            raise DefenseConfigError(f"{section} must be a mapping with a 'mode', got {values!r}")
        mode = values.get("mode")
        if mode not in MODES:
            raise DefenseConfigError(f"{section}: key 'mode' must be one of {list(MODES)}, got {mode!r}")
        allowed = COMMON_KEYS + MODE_KEYS[mode]
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise DefenseConfigError(
                f"{section}: unknown key(s) {unknown} for mode {mode!r}; allowed: {list(allowed)}"
            )
        out: dict[str, Any] = {"mode": mode}
        if "norm" in values:
            if values["norm"] not in ("linf", "l2"):
                raise DefenseConfigError(
                    f"{section}: key 'norm' must be one of ['linf', 'l2'], got {values['norm']!r}"
                )
            out["norm"] = values["norm"]
        budget = [k for k in ("eps", "snr_db") if values.get(k) is not None]
        if len(budget) != 1:
            raise DefenseConfigError(
                f"{section}: give exactly one budget key, 'eps' (absolute, in (0, 1]) or 'snr_db' "
                f"(per clip, in (0, 100] dB), got {budget or 'neither'}"
            )
        if budget == ["eps"]:
            out["eps"] = _number(section, "eps", values["eps"], 0.0, 1.0, "in (0, 1]")
        else:
            out["snr_db"] = _number(section, "snr_db", values["snr_db"], 0.0, 100.0, "in (0, 100]")
        if "steps" in values:
            out["steps"] = _integer(section, "steps", values["steps"], minimum=1)
        if values.get("rel_step") is not None and values.get("alpha") is not None:
            raise DefenseConfigError(f"{section}: give either key 'rel_step' or 'alpha', not both")
        if values.get("rel_step") is not None:
            out["rel_step"] = _number(section, "rel_step", values["rel_step"], 0.0, math.inf, "> 0")
        if values.get("alpha") is not None:
            out["alpha"] = _number(section, "alpha", values["alpha"], 0.0, 2.0, "in (0, 2]")
        if "mix" in values:
            out["mix"] = _number(section, "mix", values["mix"], 0.0, 1.0, "in (0, 1]")
        if "weight" in values:
            out["weight"] = _number(section, "weight", values["weight"], 0.0, math.inf, "> 0")
        if "separate_bn" in values:
            if not isinstance(values["separate_bn"], bool):
                raise DefenseConfigError(
                    f"{section}: key 'separate_bn' must be true or false, got {values['separate_bn']!r}"
                )
            out["separate_bn"] = values["separate_bn"]
        if "beta" in values:
            out["beta"] = _number(section, "beta", values["beta"], 0.0, math.inf, "> 0")
        if "guard_drop" in values:
            out["guard_drop"] = _number(
                section, "guard_drop", values["guard_drop"], 0.0, 1.0, "in (0, 1)", high_open=True
            )
        for key in ("guard_steps", "guard_clips"):
            if key in values:
                out[key] = _integer(section, key, values[key], minimum=1)
        if mode == "fast_at":
            out["steps"] = 1
        elif mode == "adv_aug":
            out.setdefault("steps", 1)  # augmentation: one FGSM step from a random start by default
        if out.get("alpha") is None and out.get("rel_step") is None:
            steps = out.get("steps", DEFAULT_STEPS)
            single = mode == "fast_at" or (mode == "adv_aug" and steps == 1)
            out["rel_step"] = FAST_REL_STEP if single else 2.5 / steps
        return cls(**out)

    @property
    def budget(self) -> Budget:
        """The training budget in the attack stage's semantics."""
        from advmir.attacks.budgets import Budget

        return Budget.create(SECTION, self.norm, eps=self.eps, snr_db=self.snr_db)

    def attack_params(self) -> dict[str, Any]:
        """Parameters of the attack stage's PGD that crafts the training examples."""
        params: dict[str, Any] = {
            "norm": self.norm,
            "steps": self.steps,
            "random_start": True,
            "early_stop": False,  # training ascends the loss for every clip, fooled or not
        }
        params.update(
            {
                k: getattr(self, k)
                for k in ("eps", "snr_db", "rel_step", "alpha")
                if getattr(self, k) is not None
            }
        )
        return params

    def as_dict(self) -> dict[str, Any]:
        """The resolved settings of the mode (what metrics.json records)."""
        keys = ("norm", "steps", "rel_step", "alpha", *MODE_KEYS[self.mode])
        out = {"mode": self.mode, "budget": self.budget.as_dict()}
        out.update({k: getattr(self, k) for k in dict.fromkeys(keys)})
        return out


def _number(
    section: str, key: str, value: Any, low: float, high: float, allowed: str, high_open: bool = False
) -> float:
    """``value`` as a float in (low, high] ((low, high) with ``high_open``), else a DefenseConfigError."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        ok = low < value < high if high_open else low < value <= high
    if not ok:
        raise DefenseConfigError(f"{section}: key {key!r} must be a number {allowed}, got {value!r}")
    return float(value)


def _integer(section: str, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise DefenseConfigError(f"{section}: key {key!r} must be an integer >= {minimum}, got {value!r}")
    return int(value)
