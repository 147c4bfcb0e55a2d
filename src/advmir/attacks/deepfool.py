"""DeepFool: the minimal L2 step to the linearised nearest decision boundary, iterated."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advmir.attacks.base import IterativeAttack


class DeepFool(IterativeAttack):
    r"""DeepFool, in 'DeepFool: a simple and accurate method to fool deep neural networks'
    (Moosavi-Dezfooli et al., 2016) [https://arxiv.org/abs/1511.04599].

    Distance measure: L2 (a minimum-norm attack). Each step linearises the logits around the current
    clip, moves to the nearest boundary among the ``n_candidates`` most likely other classes, and
    accumulates; the total is scaled by (1 + overshoot). Untargeted only. An optional budget (eps or
    snr_db) projects the result onto the per-clip L2 ball; without one the perturbation is unbounded.

    Args:
        model (nn.Module): maps (B, T) waveforms in [-1, 1] to logits (B, C).
        steps (int): maximum iterations. Default 50.
        overshoot (float): relative overshoot past the boundary. Default 0.02.
        n_candidates (int): other classes considered per step (most likely first). Default 10.
        eps, snr_db: an optional L2 budget (the ball of radius eps, or ||x|| 10^(-snr_db/20)); see
            :class:`advmir.attacks.base.Attack`. Default None (unbounded).
        batch_size, seed: see :class:`advmir.attacks.base.Attack`. Not targeted.

    Shape:
        x: (B, T) float in [-1, 1]; y: (B,) int64; result.x_adv: (B, T).

    Example::
        >>> attack = DeepFool(model, steps=50, overshoot=0.02)
        >>> result = attack(x, y)   # result.snr_db: how far each clip is from the boundary
    """

    name = "deepfool"
    norm = "l2"
    supports_targeted = False
    budget_params = ("eps", "snr_db")
    budget_required = False

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        steps: int = 50,
        overshoot: float = 0.02,
        n_candidates: int = 10,
        **common: Any,
    ) -> None:
        super().__init__(model, **common)
        self.steps = self._number("steps", steps, minimum=1, integer=True)
        self.overshoot = self._number("overshoot", overshoot, minimum=0.0)
        self.n_candidates = self._number("n_candidates", n_candidates, minimum=1, integer=True)

    def init_state(
        self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, radius: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return {"x_adv": x.clone(), "r_total": torch.zeros_like(x)}

    def step(self, s: dict[str, torch.Tensor]) -> torch.Tensor:
        x_adv = s["x_adv"].detach().requires_grad_(True)
        y = s["y"]
        with torch.enable_grad():
            logits = self.model(x_adv)
            fooled = self.is_success(logits, y, s["t"])  # untargeted only: t is -1
            k = min(self.n_candidates, logits.shape[1] - 1)
            ranked = logits.detach().scatter(1, y[:, None], float("-inf")).topk(k, dim=1).indices
            own = logits.gather(1, y[:, None])[:, 0]
            (g_own,) = torch.autograd.grad(own.sum(), x_adv, retain_graph=True)
            best_ratio = torch.full_like(own, float("inf")).detach()
            best_step = torch.zeros_like(x_adv)
            for j in range(k):
                other = logits.gather(1, ranked[:, j : j + 1])[:, 0]
                (g_other,) = torch.autograd.grad(other.sum(), x_adv, retain_graph=j < k - 1)
                w = g_other - g_own
                f = (other - own).detach()
                w_norm = w.norm(dim=1).clamp_min(1e-12)
                ratio = f.abs() / w_norm
                better = ratio < best_ratio
                step = ((f.abs() + 1e-4) / w_norm.pow(2))[:, None] * w
                best_ratio = torch.where(better, ratio, best_ratio)
                best_step = torch.where(better[:, None], step, best_step)
        with torch.no_grad():
            move = ~fooled
            r_total = torch.where(move[:, None], s["r_total"] + best_step, s["r_total"])
            new = self.within_budget(s["x"], (1 + self.overshoot) * r_total, s["radius"])
            s["r_total"] = r_total
            s["x_adv"] = torch.where(move[:, None], new, s["x_adv"])
            return self.count_step(s, fooled, self.steps)
