"""FGSM: one signed-gradient step."""

from __future__ import annotations

import torch

from advmir.attacks.base import Attack


class FGSM(Attack):
    r"""Fast Gradient Sign Method, in 'Explaining and Harnessing Adversarial Examples' (Goodfellow et al.,
    2015) [https://arxiv.org/abs/1412.6572].

    Distance measure: L-inf. ``x_adv = clip(x + eps_i * sign(grad_x loss), -1, 1)``.

    Args:
        model (nn.Module): maps (B, T) waveforms in [-1, 1] to logits (B, C).
        eps, snr_db, envelope: the L-inf budget (exactly one of eps / snr_db); see
            :class:`advmir.attacks.base.Attack`.
        targeted, target_map, batch_size, seed: see :class:`advmir.attacks.base.Attack`.

    Shape:
        x: (B, T) float in [-1, 1]; y: (B,) int64; result.x_adv: (B, T).

    Example::
        >>> attack = FGSM(model, snr_db=30)
        >>> result = attack(x, y)   # result.x_adv, result.success, result.snr_db
    """

    name = "fgsm"
    norm = "linf"

    def _craft_batch(
        self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, radius: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | int, torch.Tensor | int]:
        _, grad = self.input_gradient(x, y, t)
        x_adv = (x + radius * grad.sign()).clamp(-1.0, 1.0)
        ones = torch.ones(x.shape[0], dtype=torch.long, device=x.device)
        return x_adv, ones, ones
