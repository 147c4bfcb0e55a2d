"""BIM: the basic iterative method (iterated FGSM, no random start)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from advmir.attacks.pgd import PGD


class BIM(PGD):
    r"""Basic Iterative Method (I-FGSM), in 'Adversarial Examples in the Physical World' (Kurakin et al.,
    2017) [https://arxiv.org/abs/1607.02533].

    Distance measure: L-inf. PGD-L-inf started at the clean clip: ``x_{k+1} = clip_{x, eps}(x_k + alpha
    sign(grad))``, with early stopping per clip.

    Args:
        model (nn.Module): maps (B, T) waveforms in [-1, 1] to logits (B, C).
        eps, snr_db, envelope: the L-inf budget (exactly one of eps / snr_db); see
            :class:`advmir.attacks.base.Attack`.
        rel_step (float | None): step as a fraction of eps_i. Default 1.25 / steps (Kurakin et al.'s
            steps = 1.25 eps / alpha).
        steps, alpha, early_stop, loss: as :class:`advmir.attacks.pgd.PGD`'s.
        targeted, target_map, batch_size, seed: see :class:`advmir.attacks.base.Attack`.

    Shape:
        x: (B, T) float in [-1, 1]; y: (B,) int64; result.x_adv: (B, T).

    Example::
        >>> attack = BIM(model, snr_db=30, steps=10)
        >>> result = attack(x, y)
    """

    name = "bim"
    default_random_start = False
    default_rel_step = 1.25
    # PGD parameters this attack fixes: not accepted from a config.
    fixed_params: ClassVar[dict[str, Any]] = {"norm": "linf", "random_start": False}

    def __init__(self, model: nn.Module | None = None, **pgd: Any) -> None:
        super().__init__(model, **self.fixed_params, **pgd)
