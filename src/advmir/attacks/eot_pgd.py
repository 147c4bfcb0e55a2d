"""EOT-PGD: PGD on the expectation over random codec-like and room transformations."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advmir.attacks.pgd import PGD


class EOTPGD(PGD):
    r"""Expectation over Transformation PGD, in 'Synthesizing Robust Adversarial Examples'
    (Athalye et al., 2018) [https://arxiv.org/abs/1707.07397].

    Each step averages the loss gradient over ``eot_samples`` random draws of a differentiable
    transformation of the adversarial clip: a perceptual-codec stand-in (random low-pass and
    spectral rounding with an identity gradient) and simulated rooms (held-out impulse responses,
    band-limiting, noise), from :mod:`advmir.codecs.differentiable`. The examples so made survive
    the transformations that plain PGD's do not. Success (and early stopping) is judged on the
    logits averaged over the same draws, i.e. in expectation over the transformation.

    Args:
        eot_samples (int): transformed copies per step. Default 8.
        rooms (dict | None): ``codecs.rooms``-style specs (name -> room spec) for the room channel;
            None uses one default room bank. Default None.
        codec_proxy (bool): include the codec stand-in. Default True.
        sample_rate (int): of the audio. Default 16000.
        early_stop (bool): Default False: every clip runs all steps (stopping when the untransformed
            clip fools the model would end too early).
        other args: see :class:`advmir.attacks.pgd.PGD`.

    Shape:
        x: (B, T) float in [-1, 1]; y: (B,) int64; result.x_adv: (B, T).

    Example::
        >>> attack = EOTPGD(model, snr_db=30, steps=20, eot_samples=8)
        >>> result = attack(x, y)
    """

    name = "eot_pgd"

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        eot_samples: int = 8,
        rooms: dict[str, dict[str, Any]] | None = None,
        codec_proxy: bool = True,
        sample_rate: int = 16000,
        early_stop: bool = False,
        **pgd: Any,
    ) -> None:
        super().__init__(model, early_stop=early_stop, **pgd)
        self.eot_samples = self._number("eot_samples", eot_samples, minimum=1, integer=True)
        self.sample_rate = self._number("sample_rate", sample_rate, minimum=1000, integer=True)
        self.codec_proxy = self._bool("codec_proxy", codec_proxy)
        self.rooms = dict(rooms) if rooms is not None else {"room": {}}
        self._transform: nn.Module | None = None

    def transform(self, device: torch.device) -> nn.Module:
        """The random transformation (B, T) -> (B, T), built once and reseeded per attack call."""
        if self._transform is None:
            from advmir.codecs.differentiable import build_random_transform

            self._transform = build_random_transform(
                self.sample_rate, codec_proxy=self.codec_proxy, rooms=self.rooms, seed=self.seed
            )
        return self._transform.to(device)

    def _run(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        # reseeded per call (``attack(x, y)`` and ``perturb``), as the start is
        self.transform(x.device).reseed(self.seed)
        return super()._run(x, y, target)

    def input_gradient(
        self, x_adv: torch.Tensor, y: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean logits (B, C) over the draws and the mean gradient (B, T) of the loss w.r.t. x_adv."""
        transform = self.transform(x_adv.device)
        x_adv = x_adv.detach().requires_grad_(True)
        logits_sum = torch.zeros(())
        grad_sum = torch.zeros_like(x_adv)
        for _ in range(self.eot_samples):
            with torch.enable_grad():
                logits = self.model(transform(x_adv))
                (grad,) = torch.autograd.grad(self.ascent_loss(logits, y, t).sum(), x_adv)
            grad_sum += grad
            logits_sum = logits_sum + logits.detach()
        return logits_sum / self.eot_samples, grad_sum / self.eot_samples
