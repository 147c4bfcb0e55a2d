"""The signal-to-noise ratio, in one place, for numpy arrays and torch tensors alike.

For a clip ``x`` and a perturbation (or noise, or coding error) ``d``:

    SNR(x, d) = 10 log10( sum x^2 / sum d^2 )  dB,

and noise at a given SNR ``s`` below a signal of RMS ``r`` has RMS ``r * 10^(-s/20)``.

The stages measure and set SNR through these functions: the attacks' budgets and metrics
(:mod:`advmir.attacks.budgets`, :mod:`advmir.attacks.cw`), the codec and room jobs
(:mod:`advmir.codecs.jobs`, :mod:`advmir.codecs.room`, :mod:`advmir.codecs.differentiable`) and
the training augmentation (:mod:`advmir.models.augment`). (The anomaly stage's fault injection,
:mod:`advmir.anomaly.corruptions`, divides by ``10^(s/20)`` instead of multiplying by
``10^(-s/20)``: equal in exact arithmetic, not always in the last bit, so it keeps its own line
rather than change its corrupted sets.) This module imports no torch (the codec stage runs without
it): a torch tensor is computed with its own methods, a numpy array with numpy, so each caller gets
the numbers its own library gives.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np

Values = TypeVar("Values")  # a float, a numpy array or a torch tensor


def energy_ratio_db(signal: Any, noise: Any) -> Any:
    """``10 log10(signal / noise)`` elementwise, of energies (sums of squares) of any shape: numpy
    arrays and scalars with numpy, torch tensors with torch; x/0 gives +inf, 0/0 NaN."""
    ratio = signal / noise
    if isinstance(ratio, (np.ndarray, np.generic, float, int)):
        return 10.0 * np.log10(ratio)
    return 10.0 * ratio.log10()


def clip_snr_db(reference: np.ndarray, test: np.ndarray, floor: float = 1e-30) -> np.ndarray:
    """SNR in dB (N,) of clips ``test`` (N, T) against ``reference`` (N, T), in float64, each energy
    floored at ``floor`` (a silent or unchanged clip gives a large finite number, never inf/NaN)."""
    signal = np.sum(reference.astype(np.float64) ** 2, axis=1)
    error = np.sum((test.astype(np.float64) - reference) ** 2, axis=1)
    with np.errstate(divide="ignore"):
        return energy_ratio_db(np.maximum(signal, floor), np.maximum(error, floor))


def amplitude_ratio(snr_db: Values) -> Values:
    """``10^(-snr_db/20)``: the RMS (or L2 norm) of noise at ``snr_db`` below a signal of RMS 1.
    ``snr_db``: a float, a numpy array or a torch tensor (any shape; the result has its shape)."""
    return 10.0 ** (-snr_db / 20.0)  # type: ignore[operator]
