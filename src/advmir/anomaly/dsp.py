"""Signal-processing helpers shared by the features and the heuristics: spectrograms, mel
filters, frame RMS and decibels.

All functions take waveforms (N, T) (or arrays of levels) and work in NumPy, on CPU.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-10


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 20.0, fmax: float | None = None
) -> np.ndarray:
    """Triangular HTK mel filters, shape (n_mels, n_fft // 2 + 1)."""
    fmax = fmax or sample_rate / 2

    def hz_to_mel(f: float | np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m: float | np.ndarray) -> np.ndarray:
        return 700.0 * (10 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower = (freqs[None, :] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    upper = (edges[2:, None] - freqs[None, :]) / (edges[2:, None] - edges[1:-1, None])
    return np.maximum(0.0, np.minimum(lower, upper))


def power_spectrogram(x: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """Hann-window power spectrogram: (N, T) -> (N, frames, n_fft // 2 + 1), centred with zero padding."""
    pad = n_fft // 2
    x = np.pad(np.asarray(x, dtype=np.float32), ((0, 0), (pad, pad)))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=1)[:, ::hop]
    spec = np.fft.rfft(frames * np.hanning(n_fft).astype(np.float32), axis=-1)
    return (spec.real**2 + spec.imag**2).astype(np.float32)


def mel_power(
    x: np.ndarray, sample_rate: int, n_mels: int = 64, n_fft: int = 1024, hop: int = 256, batch: int = 256
) -> np.ndarray:
    """Mel power spectrogram, (N, T) -> (N, n_mels, frames), in batches to bound memory."""
    fb = mel_filterbank(sample_rate, n_fft, n_mels).astype(np.float32)
    out = [
        np.einsum("nfk,mk->nmf", power_spectrogram(x[i : i + batch], n_fft, hop), fb)
        for i in range(0, len(x), batch)
    ]
    return np.concatenate(out) if out else np.zeros((0, n_mels, 0), np.float32)


def power_db(power: np.ndarray) -> np.ndarray:
    """A power spectrogram of any shape in dB, floor -120 dB: ``10 log10(power + 1e-12)``, same shape."""
    return 10 * np.log10(power + 1e-12)


def log_mel(
    x: np.ndarray, sample_rate: int, n_mels: int = 64, n_fft: int = 1024, hop: int = 256
) -> np.ndarray:
    """Log-mel in dB (floor -120 dB): (N, T) -> (N, n_mels, frames)."""
    return power_db(mel_power(x, sample_rate, n_mels, n_fft, hop))


def frame_rms(x: np.ndarray, hop: int) -> np.ndarray:
    """RMS of non-overlapping frames: (N, T) -> (N, T // hop)."""
    n = x.shape[-1] // hop
    frames = x[..., : n * hop].reshape(*x.shape[:-1], n, hop).astype(np.float64)
    return np.sqrt(np.mean(frames**2, axis=-1))


def db(x: np.ndarray | float) -> np.ndarray:
    """Amplitude (RMS, peak, ratio) in dB, ``20 log10(max(x, EPS))``, same shape."""
    return 20 * np.log10(np.maximum(x, EPS))
