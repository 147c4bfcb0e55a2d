"""Ensemble PGD: one waveform perturbation crafted on several models at once, with the levers of
transfer (momentum, input diversity).

A perturbation that fools one model rarely fools a model that reads the waveform through another
representation; one crafted on models of several representations at once has to find a direction
they share. :class:`ModelEnsemble` stacks the members' logits, (B, T) -> (B, M, C), and
:class:`EnsemblePGD` ascends a combination of the members' losses on the attack base (budgets,
projection, batching, early stop and refill are PGD's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from advmir.attacks.mifgsm import accumulate_momentum
from advmir.attacks.pgd import PGD
from advmir.attacks.scoring import fooled
from advmir.models.augment import detune, shift

AGGREGATES = ("mean", "max")


class ModelEnsemble(nn.Module):
    """Models of one dataset's classes seen as one: waveform (B, T) -> stacked logits (B, M, C).

    Args:
        members: member name -> model mapping (B, T) -> logits (B, C); every member the same C.
        weights: member name -> weight > 0 (missing: 1.0). Stored normalised to sum 1, buffer (M,).
    """

    def __init__(self, members: Mapping[str, nn.Module], weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.names = list(members)
        self.members = nn.ModuleList(members[n] for n in self.names)
        raw = torch.tensor([float((weights or {}).get(n, 1.0)) for n in self.names], dtype=torch.float32)
        if not bool((raw > 0).all()):
            raise ValueError(
                f"member weights must be > 0, got {dict(zip(self.names, raw.tolist(), strict=True))}"
            )
        self.register_buffer("weights", raw / raw.sum(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members], dim=1)


class EnsemblePGD(PGD):
    r"""PGD on an ensemble of models (Liu et al., 'Delving into Transferable Adversarial Examples and
    Black-box Attacks', ICLR 2017 [https://arxiv.org/abs/1611.02770]), optionally with MI-FGSM's
    momentum (Dong et al., 2018 [https://arxiv.org/abs/1710.06081]) and input diversity inside EOT
    (Xie et al., 'Improving Transferability of Adversarial Examples with Input Diversity', CVPR 2019
    [https://arxiv.org/abs/1803.06978]): the known levers of transfer.

    Distance measure: PGD's (L-inf or L2; every budget kind). The model is a :class:`ModelEnsemble`
    (logits (B, M, C)); a plain model (logits (B, C)) is an ensemble of one. Each step ascends, per
    clip, the members' losses (PGD's ``loss``: cross-entropy or the logit margin) combined by
    ``aggregate``:

    - ``mean``: the weighted mean over members;
    - ``max``: the loss of the member with the largest weighted margin still to overcome (the one the
      clip fools least), so effort goes where the ensemble still resists.

    An example fools the ensemble when it fools every member; with ``early_stop`` a clip leaves the
    batch then. Momentum (``decay`` > 0) accumulates the L1-normalised gradient as MI-FGSM does; the
    step follows its sign (L-inf) or its unit L2 direction. Input diversity: each of ``eot_samples``
    draws per step transforms each clip with probability ``diversity_prob`` by a random gain within
    +-``gain_db``, a resampling by up to +-``resample_cents`` (linear interpolation, same length) and
    a time shift of up to +-``shift_ms`` (zero fill), and the gradient is the mean over the draws.

    Args:
        model (nn.Module): a :class:`ModelEnsemble`, or one model (B, T) -> (B, C).
        aggregate (str): ``"mean"`` or ``"max"``. Default ``"mean"``.
        decay (float): momentum factor; 0 is plain PGD. Default 0.0.
        eot_samples (int): random draws per step. Default 1.
        diversity_prob (float): chance that a draw transforms a clip, in [0, 1]. Default 0.0.
        gain_db, resample_cents, shift_ms (float): ranges of the draws (0: that transformation off).
            Defaults 0.0.
        sample_rate (int): of the audio (for ``shift_ms``). Default 16000.
        kappa (float | None): cap on each member's loss (with ``loss="margin"``: a member fooled by
            ``kappa`` logits stops pulling, so the step serves the members not yet fooled; CW's
            confidence). Default None (no cap).
        norm, eps, snr_db, envelope, steps, rel_step, alpha, random_start, early_stop, loss, targeted,
            target_map, batch_size, seed: see :class:`advmir.attacks.pgd.PGD`.

    Shape:
        x: (B, T) float in [-1, 1]; y: (B,) int64; result.x_adv: (B, T).

    Example::
        >>> attack = EnsemblePGD(ModelEnsemble({"a": m1, "b": m2}), snr_db=30, steps=50, decay=1.0)
        >>> result = attack(x, y)   # result.success: every member fooled
    """

    name = "ensemble_pgd"

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        aggregate: str = "mean",
        decay: float = 0.0,
        eot_samples: int = 1,
        diversity_prob: float = 0.0,
        gain_db: float = 0.0,
        resample_cents: float = 0.0,
        shift_ms: float = 0.0,
        sample_rate: int = 16000,
        kappa: float | None = None,
        **pgd: Any,
    ) -> None:
        super().__init__(model, **pgd)
        self.kappa = self._number("kappa", kappa, minimum=0.0, optional=True)
        self.aggregate = self._choice("aggregate", aggregate, AGGREGATES)
        self.decay = self._number("decay", decay, minimum=0.0)
        self.eot_samples = self._number("eot_samples", eot_samples, minimum=1, integer=True)
        self.diversity_prob = self._number("diversity_prob", diversity_prob, minimum=0.0, maximum=1.0)
        self.gain_db = self._number("gain_db", gain_db, minimum=0.0, maximum=20.0)
        self.resample_cents = self._number("resample_cents", resample_cents, minimum=0.0, maximum=1200.0)
        self.shift_ms = self._number("shift_ms", shift_ms, minimum=0.0, maximum=1000.0)
        self.sample_rate = self._number("sample_rate", sample_rate, minimum=1000, integer=True)

    # ------------------------------------------------------------------------------ members
    @staticmethod
    def member_logits(logits: torch.Tensor) -> torch.Tensor:
        """Logits as (B, M, C): an ensemble's unchanged, a single model's (B, C) as M = 1."""
        return logits if logits.dim() == 3 else logits.unsqueeze(1)

    def member_weights(self, m: int, like: torch.Tensor) -> torch.Tensor:
        """The members' normalised weights (M,), on the device and dtype of ``like``."""
        weights = getattr(self.model, "weights", None)
        if weights is None or weights.numel() != m:
            return torch.full((m,), 1.0 / m, dtype=like.dtype, device=like.device)
        return weights.to(device=like.device, dtype=like.dtype)

    def target_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Weighted mean of the members' logits (B, C): what random and least-likely targets use."""
        logits = self.member_logits(self.predict_logits(x))
        return (logits * self.member_weights(logits.shape[1], logits)[None, :, None]).sum(dim=1)

    def is_success(self, logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(B,) bool: every member is fooled (:func:`advmir.attacks.scoring.fooled` per member)."""
        logits = self.member_logits(logits)
        b, m, _ = logits.shape
        preds = logits.argmax(dim=2)
        return fooled(preds, y[:, None].expand(b, m), t[:, None].expand(b, m)).all(dim=1)

    def ensemble_loss(self, logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-clip value (B,) to ascend from member logits (B, M, C): the members' losses combined by
        ``aggregate``."""
        logits = self.member_logits(logits)
        b, m, c = logits.shape
        flat = self.ascent_loss(logits.reshape(b * m, c), y.repeat_interleave(m), t.repeat_interleave(m))
        losses = flat.view(b, m)
        if self.kappa is not None:  # a member fooled by kappa logits gives way to the others
            losses = losses.clamp(max=self.kappa)
        weights = self.member_weights(m, losses)
        if self.aggregate == "mean":
            return (losses * weights).sum(dim=1)
        # the member with the largest weighted margin still to overcome (margin > 0: not fooled)
        with torch.no_grad():
            margins = self.margin(logits.reshape(b * m, c), y.repeat_interleave(m), t.repeat_interleave(m))
            worst = (margins.view(b, m) * weights).argmax(dim=1)
        return losses.gather(1, worst[:, None])[:, 0]

    # -------------------------------------------------------------------------- diversity
    def _run(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        # the draws of input diversity: a CPU generator of their own, reseeded per call
        self._draws = torch.Generator().manual_seed(self.seed + 104729)
        return super()._run(x, y, target)

    def diversify(self, x: torch.Tensor) -> torch.Tensor:
        """One random draw of input diversity on clips x (B, T) -> (B, T), differentiable in x."""
        if self.diversity_prob <= 0:
            return x
        b, gen = x.shape[0], self._draws
        use = (torch.rand(b, generator=gen) < self.diversity_prob).to(x.device)
        out = x
        if self.gain_db > 0:
            gain_db = (torch.rand(b, generator=gen) * 2 - 1) * self.gain_db
            out = out * (10 ** (gain_db / 20)).to(x.device, x.dtype)[:, None]
        if self.resample_cents > 0:
            out = detune(out, (torch.rand(b, generator=gen) * 2 - 1) * self.resample_cents)
        max_shift = round(self.shift_ms * self.sample_rate / 1000)
        if max_shift > 0:
            out = shift(out, max_shift, gen)
        return torch.where(use[:, None], out, x)

    def input_gradient(
        self, x_adv: torch.Tensor, y: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Member logits (B, M, C) (the mean over draws) and the mean gradient (B, T) of the ensemble
        loss w.r.t. x_adv."""
        x_adv = x_adv.detach().requires_grad_(True)
        logits_sum: torch.Tensor | None = None
        grad_sum = torch.zeros_like(x_adv)
        for _ in range(self.eot_samples):
            with torch.enable_grad():
                logits = self.member_logits(self.model(self.diversify(x_adv)))
                (grad,) = torch.autograd.grad(self.ensemble_loss(logits, y, t).sum(), x_adv)
            grad_sum += grad
            logits_sum = logits.detach() if logits_sum is None else logits_sum + logits.detach()
        return logits_sum / self.eot_samples, grad_sum / self.eot_samples

    # --------------------------------------------------------------------------- momentum
    def init_state(
        self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, radius: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        state = super().init_state(x, y, t, radius)
        if self.decay > 0:
            state["momentum"] = torch.zeros_like(x)
        return state

    def direction(self, grad: torch.Tensor, state: dict) -> torch.Tensor:
        if self.decay > 0:
            state["momentum"] = accumulate_momentum(state["momentum"], grad, self.decay)
            grad = state["momentum"]
        return super().direction(grad, state)
