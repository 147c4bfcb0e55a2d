"""The matched-noise control: random noise at each adversarial example's own SNR, on the same clip.

A success rate says little on its own: a model that any faint noise flips is brittle, not fooled by
an adversary. So every adversarial example ``x_adv_j = x_j + delta_j`` gets a control
``x_j + n_j``: white Gaussian noise scaled to the same L2 norm as ``delta_j`` (so the same SNR), then
clipped to [-1, 1] like the example (clipping can only lower the noise, so a clipped control's SNR is
at or above the example's). Where ``delta_j`` is zero the control is the clean clip. The control is
scored by the same model and the same rule as the example (:mod:`advmir.attacks.scoring`), and what
an attack achieves beyond it is what the attack adds to plain noise.

The noise of a clip depends only on the run's seed and the clip's row in the dataset: every attack
and model of a seed gets the same noise direction on the same clip, only scaled to its own SNR, and
a run re-done gives the same controls bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch

# Keeps the control's random stream apart from the attacks' (which seed torch with the run seed).
NOISE_STREAM = 0x6E6F697365  # "noise"


def noise_direction(seed: int, row: int, length: int) -> np.ndarray:
    """Unit-L2 white Gaussian noise of clip ``row`` for run seed ``seed``, float64, shape (length,)."""
    noise = np.random.default_rng([NOISE_STREAM, int(seed), int(row)]).standard_normal(length)
    return noise / max(float(np.linalg.norm(noise)), 1e-300)


def matched_noise(x: torch.Tensor, x_adv: torch.Tensor, rows: np.ndarray, seed: int) -> torch.Tensor:
    """Clean clips plus white noise of the L2 norm of each adversarial perturbation, in [-1, 1].

    Args:
        x: clean clips, shape (B, T), in [-1, 1].
        x_adv: adversarial clips of the same rows, shape (B, T).
        rows: row of each clip in the dataset, shape (B,): seeds its noise with ``seed``.
        seed: the run's seed.

    Returns:
        float32 controls, shape (B, T), on the CPU: ``clip(x_j + ||x_adv_j - x_j||_2 u_j, -1, 1)`` with
        ``u_j`` the unit noise of :func:`noise_direction`; exactly ``x_j`` where nothing was perturbed.
    """
    if x.shape != x_adv.shape or x.ndim != 2:
        raise ValueError(f"clips and adversarial clips must both be (B, T), got {tuple(x.shape)} and "
                         f"{tuple(x_adv.shape)}")  # fmt: skip
    rows = np.asarray(rows)
    if rows.shape != (x.shape[0],):
        raise ValueError(f"rows must have shape ({x.shape[0]},), got {rows.shape}")
    x, x_adv = x.detach().cpu(), x_adv.detach().cpu()
    out = x.float().clone()
    for j, row in enumerate(rows):  # float64 one clip at a time: memory stays that of the float32 chunk
        clean = x[j].double()
        norm = (x_adv[j].double() - clean).norm()
        if norm > 0:
            unit = torch.from_numpy(noise_direction(seed, int(row), x.shape[1]))
            out[j] = (clean + norm * unit).clamp_(-1.0, 1.0)
    return out
