"""Audio features shared by the detectors: summary features, duplicate embeddings, pitch (over the
spectrograms of :mod:`advmir.anomaly.dsp`).

All functions take waveforms (N, T) float32 and work in NumPy, in batches, on CPU.
"""

from __future__ import annotations

import itertools

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


FLOOR_BANDS_HZ = (31.25, 62.5, 125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0)  # lower edges, one octave each


def band_floors(x: np.ndarray, sample_rate: int, batch: int = 128) -> np.ndarray:
    """Noise floor per octave band: (N, T) -> (N, len(FLOOR_BANDS_HZ)) dB re the clip's loudest bin.

    Per STFT bin (1024 points), the 20th percentile of its level over time; per octave band, the
    median over its bins. Between a note's partials, below its fundamental and after it decays a
    clean bin falls silent; stationary noise of any colour holds it up in the bands it covers.
    Bands above the Nyquist frequency are -200 dB.
    """
    freqs = np.fft.rfftfreq(1024, 1 / sample_rate)
    out = np.full((len(x), len(FLOOR_BANDS_HZ)), -200.0)
    for i in range(0, len(x), batch):
        level = power_db(power_spectrogram(np.asarray(x[i : i + batch], dtype=np.float32), 1024, 256))
        floor = np.percentile(level, 20, axis=1) - level.max(axis=(1, 2))[:, None]  # (B, K)
        for j, lo in enumerate(FLOOR_BANDS_HZ):
            band = (freqs >= lo) & (freqs < 2 * lo)
            if band.any():
                out[i : i + batch, j] = np.median(floor[:, band], axis=1)
    return out


def distortion_measures(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Waveform-shape measures of saturation: (N, T) -> (N, 2).

    Column 0, crest drop: median crest factor (peak / RMS, dB) of 20 ms frames 9-24 dB below the
    loudest frame minus that of frames within 3 dB of it. A note keeps its waveform shape as it
    decays, so the two agree; a saturator flattens only the loud frames. Column 1, top share: the
    share of samples of the loudest 100 ms above 90% of its peak (rounded, squashed tops sit there).
    """
    hop = max(1, sample_rate // 50)
    n = x.shape[1] // hop
    frames = np.asarray(x[:, : n * hop], dtype=np.float64).reshape(len(x), n, hop)
    rms = np.sqrt(np.mean(frames**2, axis=2)) + EPS
    crest = db(np.abs(frames).max(axis=2) / rms)
    level = db(rms / rms.max(axis=1, keepdims=True))
    drop = np.zeros(len(x))
    for k in range(len(x)):
        loud, mid = level[k] > -3, (level[k] > -24) & (level[k] < -9)
        drop[k] = np.median(crest[k][mid if mid.any() else loud]) - np.median(crest[k][loud])
    span = max(1, sample_rate // 10)
    m = x.shape[1] // span
    seg = np.asarray(x[:, : m * span], dtype=np.float64).reshape(len(x), m, span)
    loudest = seg[np.arange(len(x)), np.sqrt(np.mean(seg**2, axis=2)).argmax(axis=1)]
    rel = np.abs(loudest) / (np.abs(loudest).max(axis=1, keepdims=True) + EPS)
    return np.stack([drop, (rel > 0.9).mean(axis=1)], axis=1)


def codec_measures(x: np.ndarray, sample_rate: int, batch: int = 128) -> np.ndarray:
    """Low-bitrate codec artefacts: (N, T) -> (N, 4).

    Column 0, spectral holes: among the bins of loud frames (within 30 dB of the loudest) that
    their neighbours say should sound (median of 5 bins within 50 dB of the frame's peak), the
    share lying 20 dB or more below that median: a coder that runs out of bits zeroes bands for a
    frame or two. Columns 1-3, the band edge: the level change (dB) between adjacent bands at the top
    of the spectrum (0.68-0.8, 0.8-0.88, 0.88-0.94, 0.94-1 of the Nyquist frequency); a coder's
    low-pass is a cliff there, a note's own roll-off a slope.
    """
    from scipy.ndimage import median_filter

    nyquist = sample_rate / 2
    freqs = np.fft.rfftfreq(512, 1 / sample_rate)
    inside = (freqs > 300) & (freqs < 0.94 * nyquist)
    edges = np.array([0.68, 0.8, 0.88, 0.94, 1.0001]) * nyquist
    out = np.zeros((len(x), 4))
    for i in range(0, len(x), batch):
        power = power_spectrogram(np.asarray(x[i : i + batch], dtype=np.float32), 512, 128)
        level = power_db(power)
        frame_top = level.max(axis=2)
        loud = (frame_top > frame_top.max(axis=1, keepdims=True) - 30)[..., None]
        expected = median_filter(level, size=(1, 5, 1), mode="nearest")
        should = (expected > frame_top[..., None] - 50) & inside & loud
        holes = should & (level < expected - 20)
        out[i : i + batch, 0] = holes.sum(axis=(1, 2)) / np.maximum(should.sum(axis=(1, 2)), 1)
        spectrum = power.mean(axis=1)
        bands = [
            power_db(spectrum[:, (freqs >= lo) & (freqs < hi)].mean(axis=1))
            for lo, hi in itertools.pairwise(edges)
        ]
        out[i : i + batch, 1:] = np.stack([b - a for a, b in itertools.pairwise(bands)], axis=1)
    return out


def midi_to_hz(midi: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2 ** ((np.asarray(midi, dtype=np.float64) - 69) / 12)


def whitened_spectrum(x: np.ndarray, n_fft: int = 8192, batch: int = 64) -> np.ndarray:
    """Long-term magnitude spectrum, square-root compressed and whitened by its smoothed envelope:
    (N, T) -> (N, min(n_fft, T) // 2 + 1), the input of :func:`salience`."""
    n_fft = min(n_fft, x.shape[1])
    hop = n_fft // 4
    kernel = np.ones(31) / 31
    out = []
    for i in range(0, len(x), batch):
        frames = np.lib.stride_tricks.sliding_window_view(np.asarray(x[i : i + batch]), n_fft, axis=1)[
            :, ::hop
        ]
        spec = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=-1))  # (B, F, K)
        energy = (spec**2).sum(axis=-1)
        w = energy / (energy.sum(axis=1, keepdims=True) + EPS)
        mag = np.sqrt((spec * w[..., None]).sum(axis=1))  # (B, K)
        env = np.apply_along_axis(lambda m: np.convolve(m, kernel, mode="same"), 1, mag) + EPS
        out.append(np.maximum(mag / env - 1.0, 0.0))
    return np.concatenate(out) if out else np.zeros((0, n_fft // 2 + 1))


def salience(
    white: np.ndarray, sample_rate: int, candidates_midi: np.ndarray, n_harmonics: int = 8
) -> np.ndarray:
    """Harmonic-sum salience of candidate pitches on whitened spectra: (N, K), (C,) -> (N, C).

    The spectrum is summed at the first ``n_harmonics`` multiples of each candidate, weighted
    0.85 ** (k - 1), taking the largest of +-1 bin (slight detuning, the window's spread).
    """
    bin_hz = sample_rate / (2 * (white.shape[1] - 1))
    f0 = midi_to_hz(candidates_midi)
    out = np.zeros((len(white), len(f0)))
    nyq_bin = white.shape[1] - 1
    for k in range(1, n_harmonics + 1):
        bins = f0 * k / bin_hz
        valid = bins < nyq_bin - 1
        idx = np.clip(np.round(bins).astype(int), 1, nyq_bin - 1)
        val = np.maximum(np.maximum(white[:, idx - 1], white[:, idx]), white[:, idx + 1])
        out += np.where(valid, 0.85 ** (k - 1) * val, 0.0)
    return out


def harmonic_salience(
    x: np.ndarray, sample_rate: int, candidates_midi: np.ndarray, n_harmonics: int = 8, n_fft: int = 8192
) -> np.ndarray:
    """Harmonic-sum salience of candidate pitches: (N, T), (C,) -> (N, C) (:func:`salience` of
    :func:`whitened_spectrum`)."""
    return salience(whitened_spectrum(x, n_fft), sample_rate, candidates_midi, n_harmonics)


def octave_evidence(
    x: np.ndarray, sample_rate: int, labelled_midi: np.ndarray, white: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Evidence that a pitch label is an octave off, which :func:`pitch_mismatch` cannot see.

    Returns (label too high (N,), label too low (N,)): the log ratio of the harmonic salience an octave
    below the label to the salience at the label (a note an octave lower explains every partial the
    label does, and the odd ones between); and the log ratio of the label's even to its odd harmonics
    (a label an octave too low finds partials only at its even multiples). ``white``: the clips'
    :func:`whitened_spectrum` when already computed.
    """
    white = whitened_spectrum(x) if white is None else white
    ks = np.arange(1, 9)
    weight = 0.85 ** (ks - 1)
    high, low = np.zeros(len(white)), np.zeros(len(white))
    for n, midi in enumerate(np.asarray(labelled_midi, dtype=np.float64)):
        row = white[n : n + 1]
        at = salience(row, sample_rate, np.array([midi - 12.0, midi]))[0]
        each = salience(row, sample_rate, midi + 12 * np.log2(ks), n_harmonics=1)[0] * weight
        high[n] = np.log((at[0] + 1e-3) / (at[1] + 1e-3))
        low[n] = np.log((each[1::2].sum() + 1e-3) / (each[0::2].sum() + 1e-3))
    return high, low


def pitch_mismatch(
    x: np.ndarray,
    sample_rate: int,
    labelled_midi: np.ndarray,
    window: float = 7.5,
    tolerance: float = 0.35,
    step: float = 0.1,
    white: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """How much better a pitch near the label explains the spectrum than the labelled pitch.

    Candidates within +-``window`` semitones of each clip's label (octaves are left to
    :func:`octave_evidence`), salience as in :func:`harmonic_salience`; ``white``: the clips'
    :func:`whitened_spectrum` when already computed.
    Returns (score (N,) = log of best / labelled salience, >= 0; best pitch (N,) in MIDI).
    """
    white = whitened_spectrum(x) if white is None else white
    offsets = np.arange(-window, window + step / 2, step)
    scores, best = np.zeros(len(white)), np.zeros(len(white))
    for n, midi in enumerate(np.asarray(labelled_midi, dtype=np.float64)):
        sal = salience(white[n : n + 1], sample_rate, midi + offsets)[0]
        at_label = sal[np.abs(offsets) <= tolerance].max()
        scores[n] = np.log((sal.max() + 1e-3) / (at_label + 1e-3))
        best[n] = midi + offsets[np.argmax(sal)]
    return scores, best
