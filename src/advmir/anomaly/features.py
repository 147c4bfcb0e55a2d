"""Audio features shared by the detectors: summary features, duplicate embeddings, pitch (over the
spectrograms of :mod:`advmir.anomaly.dsp`).

All functions take waveforms (N, T) float32 and work in NumPy, in batches, on CPU.
"""

from __future__ import annotations

import numpy as np

from advmir.anomaly import heuristics
from advmir.anomaly.dsp import EPS, db, frame_rms, mel_filterbank, mel_power, power_db, power_spectrogram


def summary_features(x: np.ndarray, sample_rate: int, batch: int = 256) -> tuple[np.ndarray, list[str]]:
    """Per-clip feature vector for the isolation forest and the label model: (N, D) and D names.

    Level-normalised log-mel statistics (mean, std, 10th percentile over time, 32 bands), spectral
    centroid / flatness / rolloff statistics, envelope shape, and the signal heuristics' values.
    Computed in batches of ``batch`` clips to bound memory.
    """
    parts = [_summary_features(x[i : i + batch], sample_rate) for i in range(0, len(x), batch)]
    if not parts:
        raise ValueError("no clips to compute features of")
    return np.concatenate([p[0] for p in parts]), parts[0][1]


def _summary_features(x: np.ndarray, sample_rate: int) -> tuple[np.ndarray, list[str]]:
    spec = power_spectrogram(x)  # (N, F, K)
    mel64 = power_db(np.einsum("nfk,mk->nmf", spec, mel_filterbank(sample_rate, 1024, 64)))
    mel = power_db(np.einsum("nfk,mk->nmf", spec, mel_filterbank(sample_rate, 1024, 32)))
    top = mel.max(axis=(1, 2), keepdims=True)
    rel = np.maximum(mel - top, -100.0)
    freqs = np.linspace(0, sample_rate / 2, spec.shape[-1])
    total = spec.sum(axis=-1) + EPS
    weight = total / total.sum(axis=1, keepdims=True)
    centroid = (spec * freqs).sum(axis=-1) / total
    flatness = np.exp(np.mean(np.log(spec + EPS), axis=-1)) / (spec.mean(axis=-1) + EPS)
    cum = np.cumsum(spec, axis=-1) / total[..., None]
    rolloff = freqs[np.argmax(cum >= 0.95, axis=-1)]
    env = db(frame_rms(x, sample_rate // 100))
    env = env - env.max(axis=1, keepdims=True)

    def wmean(v: np.ndarray) -> np.ndarray:
        return (v * weight).sum(axis=1)

    stats = {
        "mel_mean": rel.mean(axis=2),
        "mel_std": rel.std(axis=2),
        "mel_p10": np.percentile(rel, 10, axis=2),
    }
    cols = {
        **{f"{name}_{i}": value[:, i] for name, value in stats.items() for i in range(rel.shape[1])},
        "centroid": np.log2(wmean(centroid) + 50),
        "flatness": np.log10(wmean(flatness) + EPS),
        "rolloff": np.log2(wmean(rolloff) + 50),
        "env_mean": env.mean(axis=1),
        "env_std": env.std(axis=1),
        "env_peak_pos": np.argmax(env, axis=1) / env.shape[1],
        "env_end": env[:, -5:].mean(axis=1),
        "level": db(np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=1))),
    }
    for name in ("clipping", "silence", "gaps", "truncation", "dc_offset", "envelope", "hum"):
        cols[f"h_{name}"] = heuristics.CHECKS[name](x, sample_rate)[0]
    cols["h_noise_floor"] = heuristics.noise_floor(x, sample_rate, mel_db=mel64)[0]
    names = list(cols)
    return np.stack([np.asarray(cols[k], dtype=np.float64) for k in names], axis=1), names


def duplicate_embedding(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Loudness-compressed mel power pooled to 32 bands x 10 segments: (N, 320), level kept.

    Compression by the power 0.3 keeps the absolute level (a copy at a different gain is farther
    away than one at the same gain) while letting quiet detail count.
    """
    mel = mel_power(x, sample_rate, n_mels=32, n_fft=512, hop=160)  # (N, 32, frames)
    frames = mel.shape[2] // 10 * 10
    pooled = mel[:, :, :frames].reshape(len(x), 32, 10, -1).mean(axis=3)
    return (pooled**0.3).reshape(len(x), -1)


def midi_to_hz(midi: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2 ** ((np.asarray(midi, dtype=np.float64) - 69) / 12)


def harmonic_salience(
    x: np.ndarray, sample_rate: int, candidates_midi: np.ndarray, n_harmonics: int = 8, n_fft: int = 8192
) -> np.ndarray:
    """Harmonic-sum salience of candidate pitches: (N, T), (C,) -> (N, C).

    The long-term magnitude spectrum (compressed by a square root, whitened by its smoothed
    envelope) is summed at the first ``n_harmonics`` multiples of each candidate, weighted
    0.85 ** (k - 1).
    """
    n_fft = min(n_fft, x.shape[1])
    hop = n_fft // 4
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=1)[:, ::hop]
    spec = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=-1))  # (N, F, K)
    energy = (spec**2).sum(axis=-1)
    w = energy / (energy.sum(axis=1, keepdims=True) + EPS)
    mag = np.sqrt((spec * w[..., None]).sum(axis=1))  # (N, K)
    kernel = np.ones(31) / 31
    env = np.apply_along_axis(lambda m: np.convolve(m, kernel, mode="same"), 1, mag) + EPS
    white = np.maximum(mag / env - 1.0, 0.0)
    bin_hz = sample_rate / n_fft
    f0 = midi_to_hz(candidates_midi)
    out = np.zeros((len(x), len(f0)))
    nyq_bin = white.shape[1] - 1
    for k in range(1, n_harmonics + 1):
        bins = f0 * k / bin_hz
        valid = bins < nyq_bin - 1
        idx = np.clip(np.round(bins).astype(int), 1, nyq_bin - 1)
        # the max over +-1 bin tolerates slight detuning and the window's spread
        val = np.maximum(np.maximum(white[:, idx - 1], white[:, idx]), white[:, idx + 1])
        out += np.where(valid, 0.85 ** (k - 1) * val, 0.0)
    return out


def pitch_mismatch(
    x: np.ndarray,
    sample_rate: int,
    labelled_midi: np.ndarray,
    window: float = 7.5,
    tolerance: float = 0.35,
    step: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """How much better a pitch near the label explains the spectrum than the labelled pitch.

    Candidates within +-``window`` semitones of each clip's label (so octave ambiguity, which is
    common for organ stops and mallets, does not count), salience as in :func:`harmonic_salience`.
    Returns (score (N,) = log of best / labelled salience, >= 0; best pitch (N,) in MIDI).
    """
    offsets = np.arange(-window, window + step / 2, step)
    scores, best = np.zeros(len(x)), np.zeros(len(x))
    for n, midi in enumerate(np.asarray(labelled_midi, dtype=np.float64)):
        sal = harmonic_salience(x[n : n + 1], sample_rate, midi + offsets)[0]
        at_label = sal[np.abs(offsets) <= tolerance].max()
        scores[n] = np.log((sal.max() + 1e-3) / (at_label + 1e-3))
        best[n] = midi + offsets[np.argmax(sal)]
    return scores, best
