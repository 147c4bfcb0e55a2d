"""MI-FGSM: iterative FGSM with momentum on the normalised gradient."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advmir.attacks.bim import BIM


class MIFGSM(BIM):
    r"""Momentum Iterative FGSM, in 'Boosting Adversarial Attacks with Momentum' (Dong et al., 2018)
    [https://arxiv.org/abs/1710.06081]. Known to transfer better than BIM/PGD.

    Distance measure: L-inf. ``g_{k+1} = mu g_k + grad / mean|grad|``; ``x_{k+1} = clip_{x, eps}(x_k +
    alpha sign(g_{k+1}))``; starts at the clean clip; early stopping per clip.

    Args:
        model (nn.Module): maps (B, T) waveforms in [-1, 1] to logits (B, C).
        decay (float): momentum factor mu. Default 1.0.
        rel_step (float | None): step as a fraction of eps_i. Default 1 / steps (the paper's eps / T).
        early_stop (bool): stop stepping a clip once it fools the model. Default True. (For transfer
            attacks set it False: a clip that barely fools the source transfers worse.)
        eps, snr_db, envelope, steps, alpha, loss, targeted, target_map, batch_size, seed: see
            :class:`advmir.attacks.bim.BIM`.

    Shape:
        x: (B, T) float in [-1, 1]; y: (B,) int64; result.x_adv: (B, T).

    Example::
        >>> attack = MIFGSM(model, snr_db=30, steps=10, decay=1.0)
        >>> result = attack(x, y)
    """

    name = "mifgsm"
    default_rel_step = 1.0

    def __init__(self, model: nn.Module | None = None, *, decay: float = 1.0, **bim: Any) -> None:
        super().__init__(model, **bim)
        self.decay = self._number("decay", decay, minimum=0.0)

    def init_state(
        self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, radius: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return {**super().init_state(x, y, t, radius), "momentum": torch.zeros_like(x)}

    def direction(self, grad: torch.Tensor, state: dict) -> torch.Tensor:
        state["momentum"] = accumulate_momentum(state["momentum"], grad, self.decay)
        return state["momentum"].sign()


def accumulate_momentum(momentum: torch.Tensor, grad: torch.Tensor, decay: float) -> torch.Tensor:
    """MI-FGSM's momentum update: ``decay * momentum + grad / mean|grad|`` per clip, (B, T) -> (B, T)."""
    return decay * momentum + grad / grad.abs().mean(dim=1, keepdim=True).clamp_min(1e-20)
