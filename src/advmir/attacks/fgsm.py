"""FGSM: one signed-gradient step."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advmir.attacks.base import Attack
from advmir.attacks.budgets import Budget


class FGSM(Attack):
    r"""Fast Gradient Sign Method, in 'Explaining and Harnessing Adversarial Examples' (Goodfellow et al.,
    2015) [https://arxiv.org/abs/1412.6572].

    Distance measure: L-inf. ``x_adv = clip(x + eps_i * sign(grad_x loss), -1, 1)``.

    Args:
        model (nn.Module): maps (B, T) waveforms in [-1, 1] to logits (B, C).
        eps (float | None): absolute L-inf budget (full scale 1.0). Default None.
        snr_db (float | None): per-clip budget, eps_i = rms(x_i) 10^(-snr_db/20). Default None.
            Exactly one of eps / snr_db.
        envelope (float): shape of the L-inf box with snr_db, from 0 (flat, eps_i = rms(x_i)
            10^(-snr_db/20)) to 1 (follows the clip's local loudness); see budgets.py. Default 0.0.
        targeted, target_map, batch_size, seed: see :class:`advmir.attacks.base.Attack`.

    Shape:
        x: (B, T) float in [-1, 1]; y: (B,) int64; result.x_adv: (B, T).

    Example::
        >>> attack = FGSM(model, snr_db=30)
        >>> result = attack(x, y)   # result.x_adv, result.success, result.snr_db
    """

    name = "fgsm"
    norm = "linf"

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        eps: float | None = None,
        snr_db: float | None = None,
        envelope: float = 0.0,
        **common: Any,
    ) -> None:
        super().__init__(model, **common)
        self.budget = Budget.create(self.name, "linf", eps=eps, snr_db=snr_db, envelope=envelope)

    def _craft_batch(
        self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, radius: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | int, torch.Tensor | int]:
        _, grad = self.input_gradient(x, y, t)
        x_adv = (x + radius * grad.sign()).clamp(-1.0, 1.0)
        ones = torch.ones(x.shape[0], dtype=torch.long, device=x.device)
        return x_adv, ones, ones
