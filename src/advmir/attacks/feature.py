"""A feature-space attack: move the clip's representations away from the clean clip's, no classifier.

If a perturbation changes what every front-end sees (STFT, log-mel, CQT, a learned filterbank), a
classifier on any of them has to read a different input, whichever classifier it is. This attack
ascends the summed relative distance between the perturbed and the clean clip's features in several
front-ends at once; it never queries a classifier, so what it achieves on one is pure transfer.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from advmir.attacks.pgd import PGD


class FeatureStack(nn.Module):
    """Several front-ends of one waveform, flattened side by side: (B, T) -> (B, D).

    Args:
        frontends: name -> front-end mapping (B, T) -> (B, ...) (e.g. a zoo model's ``frontend``:
            (B, 1, F, frames)); each output is flattened, and they are concatenated in this order.

    Attributes:
        names: the front-ends' names; ``slices`` their columns in the output (set by the first call).
    """

    def __init__(self, frontends: Mapping[str, nn.Module]) -> None:
        super().__init__()
        if not frontends:
            raise ValueError("a feature stack needs at least one front-end")
        self.names = list(frontends)
        self.frontends = nn.ModuleList(frontends[n] for n in self.names)
        self.slices: list[slice] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [frontend(x).flatten(1) for frontend in self.frontends]
        starts = torch.tensor([0, *[p.shape[1] for p in parts]]).cumsum(0).tolist()
        self.slices = [slice(a, b) for a, b in itertools.pairwise(starts)]
        return torch.cat(parts, dim=1)

    def distance(self, features: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """Per clip (B,): the mean over front-ends of ``||f - f_clean||^2 / ||f_clean - mean f_clean||^2``,
        each front-end's change relative to the clean clip's own spread in it (so no front-end
        outweighs another by its size or units). ``features`` and ``clean``: (B, D) from :meth:`forward`."""
        total = features.new_zeros(features.shape[0])
        for part in self.slices:
            ref = clean[:, part]
            spread = (ref - ref.mean(dim=1, keepdim=True)).pow(2).sum(dim=1).clamp_min(1e-12)
            total = total + (features[:, part] - ref).pow(2).sum(dim=1) / spread
        return total / len(self.slices)


class FeaturePGD(PGD):
    r"""PGD in feature space: ascend :meth:`FeatureStack.distance` between the features of the
    perturbed clip and of the clean clip in every front-end of the stack, with no classifier (as the
    feature-disruption attacks of Ganeshan et al. 2019 and Inkawhich et al. 2019 do inside one
    network, here across representations).

    Distance measure: PGD's (L-inf or L2; every budget kind). It starts from a random point of the
    budget (at the clean clip the distance's gradient is zero) and runs all ``steps``: nothing tells it
    when a classifier is fooled, so ``success`` is always False; score the examples on classifiers.
    Untargeted only.

    Args:
        model (FeatureStack): the front-ends, (B, T) -> (B, D).
        norm, eps, snr_db, envelope, steps, rel_step, alpha, random_start, batch_size, seed: see
            :class:`advmir.attacks.pgd.PGD` (``random_start`` defaults to True).

    Shape:
        x: (B, T) float in [-1, 1]; y: (B,) int64 (unused but for the base's checks); result.x_adv: (B, T).

    Example::
        >>> stack = FeatureStack({"stft": stft_frontend, "cqt": cqt_frontend})
        >>> result = FeaturePGD(stack, snr_db=30, steps=50)(x, y)
    """

    name = "feature_pgd"
    supports_targeted = False

    def __init__(self, model: nn.Module | None = None, **pgd: Any) -> None:
        super().__init__(model, early_stop=False, **pgd)
        self._clean: torch.Tensor | None = None

    def init_state(
        self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, radius: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        state = super().init_state(x, y, t, radius)
        with torch.no_grad():
            state["clean_features"] = self.model(x)
        return state

    def step(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        self._clean = state["clean_features"]  # the reference of this pool, for input_gradient
        return super().step(state)

    def input_gradient(
        self, x_adv: torch.Tensor, y: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, D) at x_adv and the gradient (B, T) of their distance to the clean features."""
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            features = self.model(x_adv)
            (grad,) = torch.autograd.grad(self.model.distance(features, self._clean).sum(), x_adv)
        return features.detach(), grad

    def is_success(self, logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Always False (B,): no classifier is attacked."""
        return torch.zeros(y.shape[0], dtype=torch.bool, device=y.device)
