"""PGD: projected gradient descent in an L-inf or L2 ball, with a random start."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advmir.attacks.base import IterativeAttack, unit_l2


class PGD(IterativeAttack):
    r"""Projected Gradient Descent, in 'Towards Deep Learning Models Resistant to Adversarial Attacks'
    (Madry et al., 2018) [https://arxiv.org/abs/1706.06083].

    Distance measure: L-inf (signed steps, box projection) or L2 (normalised steps, ball projection).
    Each step ascends the loss (cross-entropy; minus cross-entropy on the target when targeted), then
    projects onto the per-clip ball and onto [-1, 1]. With ``early_stop`` a clip leaves the batch as soon
    as it fools the model and a pending clip takes its place.

    Args:
        model (nn.Module): maps (B, T) waveforms in [-1, 1] to logits (B, C).
        norm (str): ``"linf"`` or ``"l2"``. Default ``"linf"``.
        eps, snr_db, envelope: the budget in ``norm`` (exactly one of eps / snr_db); see
            :class:`advmir.attacks.base.Attack`.
        steps (int): maximum steps per clip. Default 10.
        rel_step (float | None): step size as a fraction of the clip's radius. Default 2.5 / steps
            (Madry et al.'s rule).
        alpha (float | None): absolute step size instead of rel_step. Default None.
        random_start (bool): start uniformly in the L-inf box / the L2 ball. Default True.
        early_stop (bool): stop stepping a clip once it fools the model. Default True.
        loss (str): the objective ascended: ``"ce"`` (cross-entropy, Madry et al.) or ``"margin"``
            (the best other logit minus the label's, CW's f6; with label smoothing and a confident
            model it keeps a useful gradient where cross-entropy saturates). Default ``"ce"``.
        targeted, target_map, batch_size, seed: see :class:`advmir.attacks.base.Attack`.

    Shape:
        x: (B, T) float in [-1, 1]; y: (B,) int64; result.x_adv: (B, T).

    Example::
        >>> attack = PGD(model, norm="linf", snr_db=30, steps=20)
        >>> result = attack(x, y)   # result.iterations: steps each clip needed
    """

    name = "pgd"
    norm = "linf"
    default_random_start = True
    default_rel_step = 2.5

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        norm: str = "linf",
        steps: int = 10,
        rel_step: float | None = None,
        alpha: float | None = None,
        random_start: bool | None = None,
        early_stop: bool = True,
        loss: str = "ce",
        **common: Any,
    ) -> None:
        self.norm = norm  # the budget's norm: the base checks it and builds the budget
        super().__init__(model, **common)
        self.objective = self._choice("loss", loss, ("ce", "margin"))
        self.steps = self._number("steps", steps, minimum=1, integer=True)
        self.rel_step = self._number("rel_step", rel_step, minimum=0, exclusive_minimum=True, optional=True)
        self.alpha = self._number("alpha", alpha, minimum=0, exclusive_minimum=True, optional=True)
        if self.rel_step is not None and self.alpha is not None:
            raise self._both("rel_step", "alpha")
        if self.rel_step is None and self.alpha is None:
            self.rel_step = self.default_rel_step / self.steps
        self.random_start = self._bool(
            "random_start", self.default_random_start if random_start is None else random_start
        )
        self.early_stop = self._bool("early_stop", early_stop)

    def loss(self, logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-clip loss (B,) to ascend: cross-entropy (see Attack.loss) or minus the logit margin."""
        if self.objective == "margin":
            return -self.margin(logits, y, t)
        return super().loss(logits, y, t)

    def describe(self) -> dict[str, Any]:
        """The resolved parameters, the objective under its config name ``loss``."""
        out = super().describe()
        out["loss"] = out.pop("objective")
        return out

    def _both(self, a: str, b: str) -> Exception:
        from advmir.attacks.params import AttackParamError

        return AttackParamError(f"{self.name}: give either {a!r} or {b!r}, not both")

    def step_size(self, radius: torch.Tensor) -> torch.Tensor:
        """Step size, shaped like the radius: (b, 1), or (b, T) for a shaped L-inf box."""
        return torch.full_like(radius, self.alpha) if self.alpha is not None else radius * self.rel_step

    def init_state(
        self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, radius: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        x_adv = x.clone()
        if self.random_start:
            if self.norm == "linf":
                noise = torch.rand(x.shape, generator=self._gen, device=x.device, dtype=x.dtype) * 2 - 1
                delta = noise * radius
            else:
                noise = torch.randn(x.shape, generator=self._gen, device=x.device, dtype=x.dtype)
                u = torch.rand((x.shape[0], 1), generator=self._gen, device=x.device, dtype=x.dtype)
                delta = unit_l2(noise) * u * radius
            x_adv = (x + delta).clamp(-1.0, 1.0)
        state = {"x_adv": x_adv}
        if self.norm == "linf":
            # the L-inf box and [-1, 1] meet in one box per sample: one clamp per step projects on both
            state["lo"] = (x - radius).clamp_(min=-1.0)
            state["hi"] = (x + radius).clamp_(max=1.0)
        return state

    def direction(self, grad: torch.Tensor, state: dict) -> torch.Tensor:
        """The step direction from the loss gradient (b, T): sign (L-inf) or unit L2 (L2)."""
        if self.norm == "linf":
            return grad.sign()
        return unit_l2(grad)

    def step(self, s: dict[str, torch.Tensor]) -> torch.Tensor:
        logits, grad = self.input_gradient(s["x_adv"], s["y"], s["t"])
        size = self.step_size(s["radius"])
        if self.norm == "linf":
            new = torch.addcmul(s["x_adv"], size, self.direction(grad, s)).clamp_(min=s["lo"], max=s["hi"])
        else:
            stepped = s["x_adv"] + size * self.direction(grad, s)
            new = self.within_budget(s["x"], stepped - s["x"], s["radius"])
        if self.early_stop:
            fooled = self.is_success(logits, s["y"], s["t"])
            s["x_adv"] = torch.where(fooled[:, None], s["x_adv"], new) if fooled.any() else new
        else:
            fooled = torch.zeros_like(s["known"])
            s["x_adv"] = new
        return self.count_step(s, fooled, self.steps)
