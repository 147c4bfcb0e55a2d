"""Task losses for attacks on pitch trackers, on the attack stage's PGD (budgets, early stop, pool).

:class:`PitchPGD` is :class:`advmir.attacks.pgd.PGD` with a per-frame objective: the "labels" it
is called with are row indices into its per-clip frame goals (the base carries them through its
pool of slots unchanged), so every budget (``snr_db`` per clip, L-inf or L2), the random start, the
projection, batching and the early stop are the attack stage's own.

Goals, per clip and 10 ms frame (``goal_bins`` (N, F) int64 and ``goal_mask`` (N, F) bool):

- ``untargeted``: on reference-voiced frames, the tracker's best bin moves more than 50 cents
  (``tolerance``) from the reference pitch;
- ``targeted``: on the masked frames, the best bin lies within 50 cents of the goal's bin (a
  transposition by +1 or +12 semitones, or another melody); a goal bin of -1 asks for an unvoiced
  frame (confidence below the transcriber's threshold).

Per frame the margin (in log activation) is: targeted, ``log max_{|k-g|<=w} a_k - log max_{|k-g|>w}
a_k`` (positive when the best bin is within the window of width ``w`` bins around goal g) or, for
an unvoiced goal, ``log threshold - log max_k a_k``; untargeted, the same with the window's roles
swapped. PGD ascends the mean over masked frames of ``min(margin, kappa)`` (a frame already well past
its goal stops pulling); a clip counts as fooled, and leaves the pool, when at least
``success_fraction`` of its masked frames have a positive margin.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advmir.attacks.pgd import PGD

GOALS = ("untargeted", "targeted")


class PitchPGD(PGD):
    r"""PGD on a pitch tracker's frames (Madry et al., 2018, with the task objective above).

    Args:
        model (nn.Module): a :class:`advmir.pitch.trackers.PitchTracker`: (B, T) -> (B, F, n_bins).
        goal (str): ``"untargeted"`` or ``"targeted"``.
        goal_bins (Tensor): (N, F) int64, the reference bin (untargeted) or goal bin (targeted; -1:
            unvoiced) of every clip and frame.
        goal_mask (Tensor): (N, F) bool, the frames that count.
        window (int): bins within which the best bin counts as the goal's (50 cents: 2 for CREPE's
            20-cent bins, 1 for PESTO's third-semitones).
        threshold (float): voicing threshold (goal bin -1).
        success_fraction (float): share of masked frames a clip needs on goal to stop early. Default 0.95.
        kappa (float): cap of each frame's margin in the objective. Default 2.0.
        norm, eps, snr_db, envelope, steps, rel_step, alpha, random_start, early_stop, batch_size, seed:
            see :class:`advmir.attacks.pgd.PGD`.

    Shape:
        x: (B, T) float in [-1, 1]; rows: (B,) int64 indices into goal_bins; result.x_adv: (B, T).

    Example::
        >>> attack = PitchPGD(tracker, goal="targeted", goal_bins=bins, goal_mask=mask, window=2, snr_db=30)
        >>> result = attack(x, torch.arange(len(x)))
    """

    name = "pitch_pgd"

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        goal: str,
        goal_bins: torch.Tensor,
        goal_mask: torch.Tensor,
        window: int,
        threshold: float = 0.5,
        success_fraction: float = 0.95,
        kappa: float = 2.0,
        **pgd: Any,
    ) -> None:
        super().__init__(model, **pgd)
        self.goal = self._choice("goal", goal, GOALS)
        self.window = int(self._number("window", window, minimum=0, integer=True))
        self.threshold = float(self._number("threshold", threshold, minimum=0, exclusive_minimum=True))
        self.success_fraction = float(self._number("success_fraction", success_fraction, minimum=0))
        self.kappa = float(self._number("kappa", kappa, minimum=0, exclusive_minimum=True))
        if goal_bins.shape != goal_mask.shape or goal_bins.ndim != 2:
            raise ValueError(
                f"goal_bins and goal_mask must both be (N, F), got {goal_bins.shape}, {goal_mask.shape}"
            )
        self._bins = goal_bins.long()
        self._mask = goal_mask.bool()

    def choose_targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """No class targets: the goals are per frame (-1 everywhere)."""
        return torch.full_like(y, -1)

    def frame_margin(self, activations: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Margin (b, F) per frame, positive where the frame meets its goal (see module docstring)."""
        bins = self._bins.to(activations.device)[rows]
        logs = activations.clamp_min(1e-12).log()
        k = torch.arange(activations.shape[-1], device=activations.device)
        near = (k - bins.clamp_min(0)[..., None]).abs() <= self.window
        inside = logs.masked_fill(~near, float("-inf")).amax(-1)
        outside = logs.masked_fill(near, float("-inf")).amax(-1)
        if self.goal == "untargeted":
            return outside - inside
        unvoiced = torch.log(torch.tensor(self.threshold, device=logs.device)) - logs.amax(-1)
        return torch.where(bins >= 0, inside - outside, unvoiced)

    def _frames_on_goal(self, activations: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Share (b,) of each clip's masked frames that meet their goal."""
        mask = self._mask.to(activations.device)[rows]
        hit = (self.frame_margin(activations, rows) > 0) & mask
        return hit.sum(-1) / mask.sum(-1).clamp_min(1)

    def loss(self, logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mean over masked frames of the capped margin, per clip (b,); ``logits`` are activations."""
        mask = self._mask.to(logits.device)[y].to(logits.dtype)
        margin = self.frame_margin(logits, y).clamp(max=self.kappa)
        return (margin * mask).sum(-1) / mask.sum(-1).clamp_min(1)

    def is_success(self, logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(b,) bool: at least ``success_fraction`` of the clip's masked frames meet their goal."""
        return self._frames_on_goal(logits, y) >= self.success_fraction
