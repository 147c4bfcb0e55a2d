"""Audio to the data contract: mono, the configured sample rate, a fixed clip length.

Resampling uses soxr (very high quality) when the ``soxr`` package is installed, else
``torchaudio.transforms.Resample`` with librosa's ``kaiser_best`` windowed-sinc settings
(64 zero crossings, Kaiser beta 14.77, roll-off 0.9476); :func:`resampler_name` says which, and
every prepared dataset records it in ``classes.json``. Never pydub's ``set_frame_rate``: it aliases
(see notes/toolchain.md).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from advmir.datasets.contract import DatasetError

if TYPE_CHECKING:
    from torchaudio.transforms import Resample

_HAVE_SOXR = importlib.util.find_spec("soxr") is not None
KAISER_BEST = {
    "lowpass_filter_width": 64,
    "rolloff": 0.9475937167399596,
    "resampling_method": "sinc_interp_kaiser",
    "beta": 14.769656459379492,
}


def resampler_name() -> str:
    """Which resampler :func:`resample` uses here, for the record."""
    if _HAVE_SOXR:
        import soxr

        return f"soxr {soxr.__version__} (VHQ)"
    import torchaudio

    version = torchaudio.__version__.split("+")[0]
    return f"torchaudio {version} transforms.Resample (Kaiser-windowed sinc, librosa kaiser_best settings)"


def load_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode an audio file (wav, flac, au, aiff, ogg, mp3 via libsndfile).

    Returns:
        audio: float32, shape (channels, samples), in [-1, 1] for integer formats.
        sample_rate: the file's own rate in Hz.
    """
    try:
        if sf.info(str(path)).format == "RAW":  # libsndfile's guess for a file it does not recognise
            raise RuntimeError("not a recognised audio format")
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise DatasetError(f"cannot decode {path}: {exc}") from exc
    if audio.shape[0] == 0:
        raise DatasetError(f"cannot decode {path}: it holds no audio samples")
    return np.ascontiguousarray(audio.T), int(rate)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """(channels, samples) or (samples,) -> (samples,) by averaging the channels."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        return audio
    if audio.ndim != 2:
        raise ValueError(f"audio must have shape (channels, samples) or (samples,), got {audio.shape}")
    return audio.mean(axis=0) if audio.shape[0] > 1 else audio[0]


def resample(audio: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling of a mono signal (samples,) -> (round(samples * target / orig),)."""
    if orig_rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} -> {target_rate}")
    audio = np.asarray(audio, dtype=np.float32)
    if orig_rate == target_rate or audio.size == 0:
        return audio
    if _HAVE_SOXR:
        import soxr

        return soxr.resample(audio, orig_rate, target_rate, quality="VHQ").astype(np.float32, copy=False)
    import torch

    with torch.inference_mode():
        out = _torch_resampler(orig_rate, target_rate)(torch.from_numpy(audio))
    return out.numpy()


def torch_resampler(orig_rate: int, target_rate: int) -> Resample:
    """A new torchaudio Resample module with the settings above, differentiable (an external
    model at another rate reads the dataset's clips through it): (..., T) -> (..., T')."""
    import torchaudio.transforms as T

    g = math.gcd(orig_rate, target_rate)
    return T.Resample(orig_rate // g, target_rate // g, **KAISER_BEST)


@functools.lru_cache(maxsize=8)
def _torch_resampler(orig_rate: int, target_rate: int) -> Resample:
    """:func:`torch_resampler` for one pair of rates, built once (its filter kernel is computed once)."""
    return torch_resampler(orig_rate, target_rate)


@dataclass(frozen=True)
class FitReport:
    """What :func:`fit_length` did to one clip (recorded in the manifest)."""

    pad_samples: int
    cut_samples: int


def fit_length(audio: np.ndarray, length: int, start: int = 0) -> tuple[np.ndarray, FitReport]:
    """The ``length`` samples of ``audio`` from ``start``; zeros appended if it runs out.

    Args:
        audio: (samples,) float32.
        length: clip length in samples.
        start: first sample of the clip (segments of a long excerpt).
    Returns:
        the clip, shape (length,), and how many samples were padded and cut.
    """
    if length <= 0:
        raise ValueError(f"clip length must be positive, got {length} samples")
    piece = audio[start : start + length]
    pad = length - piece.shape[0]
    cut = max(0, audio.shape[0] - (start + length)) if start == 0 else 0
    if pad > 0:
        piece = np.concatenate([piece, np.zeros(pad, dtype=np.float32)])
    return piece.astype(np.float32, copy=False), FitReport(pad_samples=max(pad, 0), cut_samples=cut)


def limit_peak(clip: np.ndarray) -> tuple[np.ndarray, int]:
    """Clamp to [-1, 1] (resampling can overshoot full scale a little); returns the clip and the count."""
    over = int(np.count_nonzero(np.abs(clip) > 1.0))
    if over:
        clip = np.clip(clip, -1.0, 1.0)
    return clip, over


def to_int16(clip: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] -> int16 (the contract divides by 32768 on the way back)."""
    return np.clip(np.round(clip * 32768.0), -32768, 32767).astype(np.int16)
