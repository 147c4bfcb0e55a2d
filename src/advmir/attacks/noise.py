"""Random noise of a given budget: the baseline every attack must beat."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advmir.attacks.base import Attack, unit_l2


class RandomNoise(Attack):
    r"""Random noise at the edge of the budget: the baseline an attack must beat (not an attack).

    Distance measure: L-inf (random +-eps_i on every sample, so SNR = snr_db exactly) or L2 (Gaussian
    noise scaled to the radius). Uses no gradient and one query. Untargeted only.

    Args:
        model (nn.Module): maps (B, T) waveforms in [-1, 1] to logits (B, C).
        norm (str): ``"linf"`` or ``"l2"``. Default ``"linf"``.
        eps, snr_db, envelope: the budget in ``norm`` (exactly one of eps / snr_db); see
            :class:`advmir.attacks.base.Attack`.
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
        **common: Any,
    ) -> None:
        self.norm = norm  # the budget's norm: the base checks it and builds the budget
        super().__init__(model, **common)

    def _craft_batch(
        self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, radius: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | int, torch.Tensor | int]:
        if self.norm == "linf":
            delta = self.random_signs(x.shape, x) * radius
        else:
            noise = torch.randn(x.shape, generator=self._gen, device=x.device, dtype=x.dtype)
            delta = unit_l2(noise) * radius
        return (x + delta).clamp(-1.0, 1.0), 0, 1
