"""Random noise of a given budget: the baseline every attack must beat."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advmir.attacks.base import Attack
from advmir.attacks.budgets import Budget


class RandomNoise(Attack):
    r"""Random noise at the edge of the budget: the baseline an attack must beat (not an attack).

    Distance measure: L-inf (random +-eps_i on every sample, so SNR = snr_db exactly) or L2 (Gaussian
    noise scaled to the radius). Uses no gradient and one query. Untargeted only.

    Args:
        model (nn.Module): maps (B, T) waveforms in [-1, 1] to logits (B, C).
        norm (str): ``"linf"`` or ``"l2"``. Default ``"linf"``.
        eps (float | None): absolute budget. Default None.
        snr_db (float | None): per-clip budget in dB. Default None. Exactly one of eps / snr_db.
        envelope (float): shape of the L-inf box with snr_db, from 0 (flat, eps_i = rms(x_i)
            10^(-snr_db/20)) to 1 (follows the clip's local loudness); see budgets.py. Default 0.0.
        batch_size, seed: see :class:`advmir.attacks.base.Attack`.

    Shape:
        x: (B, T) float in [-1, 1]; y: (B,) int64; result.x_adv: (B, T).

    Example::
        >>> baseline = RandomNoise(model, snr_db=30)
        >>> result = baseline(x, y)   # result.success: clips that noise alone flips
    """

    name = "noise"
    supports_targeted = False

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        norm: str = "linf",
        eps: float | None = None,
        snr_db: float | None = None,
        envelope: float = 0.0,
        **common: Any,
    ) -> None:
        super().__init__(model, **common)
        self.budget = Budget.create(self.name, norm, eps=eps, snr_db=snr_db, envelope=envelope)
        self.norm = norm

    def _craft_batch(
        self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, radius: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | int, torch.Tensor | int]:
        if self.norm == "linf":
            bits = torch.randint(0, 2, x.shape, generator=self._gen, device=x.device)
            delta = (bits.to(x.dtype) * 2 - 1) * radius
        else:
            noise = torch.randn(x.shape, generator=self._gen, device=x.device, dtype=x.dtype)
            delta = noise / noise.norm(dim=1, keepdim=True).clamp_min(1e-20) * radius
        return (x + delta).clamp(-1.0, 1.0), 0, 1
