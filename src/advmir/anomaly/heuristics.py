"""Signal heuristics: one interpretable number per clip per check, each with a reason.

Every check maps waveforms (N, T) float32 to ``(score (N,), reasons [N])`` with a higher score
meaning more suspicious. They need no training, except ``bandwidth``, which compares a clip with
clean reference clips of the same family and nearby pitch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from advmir.anomaly.dsp import EPS, db, frame_rms, log_mel, power_spectrogram

Check = Callable[..., tuple[np.ndarray, list[str]]]


def clipping(x: np.ndarray, sample_rate: int) -> tuple[np.ndarray, list[str]]:
    """Samples sitting exactly at the clip's positive or negative extreme, and the longest flat run there.

    Clean audio reaches its extremes once or twice; a clipped clip sits there for hundreds of samples.
    Each polarity is checked on its own, so a clip flattened on one side only (an overloaded
    single-ended stage) counts too. Score, for the worse polarity: log2 of the count of samples at
    the extreme, plus log2 of the longest run.
    """
    scores, reasons = np.zeros(len(x)), []
    for n, row in enumerate(x):
        best = (-1.0, 0, 0.0, 0)
        for side in (row, -row):
            peak = float(side.max())
            at = (side >= peak * (1 - 1e-6)) & (peak > 1e-4)
            count, longest = int(at.sum()), _longest_run(at)
            value = np.log2(1 + count) + np.log2(1 + longest)
            if value > best[0]:
                best = (value, count, peak, longest)
        scores[n] = best[0]
        reasons.append(f"{best[1]} samples at the extreme level {best[2]:.3f}, longest flat run {best[3]}")
    return scores, reasons


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and (exclusive) ends of the runs of True in a 1-D mask."""
    padded = np.concatenate([[0], mask.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return edges[::2], edges[1::2]


def _longest_run(mask: np.ndarray) -> int:
    starts, ends = _runs(mask)
    return int((ends - starts).max()) if len(starts) else 0


def silence(x: np.ndarray, sample_rate: int) -> tuple[np.ndarray, list[str]]:
    """Level of the loudest 32 ms frame in dBFS, negated: an empty take has no loud frame."""
    loudest = db(frame_rms(x, max(1, sample_rate * 32 // 1000)).max(axis=1))
    return -loudest, [f"loudest 32 ms frame at {v:.0f} dBFS" for v in loudest]


def gaps(x: np.ndarray, sample_rate: int) -> tuple[np.ndarray, list[str]]:
    """Total length of digital-zero gaps (>= 1 ms) inside the sounding note.

    A gap counts when the 5 ms on both sides are within 40 dB of the clip's peak: the trailing
    silence after a note decays, or quiet int16 tails, do not.
    """
    min_gap, side = max(2, sample_rate // 1000), max(1, sample_rate // 200)
    peak = np.max(np.abs(x), axis=1)
    totals = np.zeros(len(x))
    for n, row in enumerate(x):
        starts, ends = _runs(row == 0)
        total = 0
        for s, e in zip(starts, ends, strict=True):
            if e - s < min_gap or s < side or e + side > len(row):
                continue
            before, after = np.abs(row[s - side : s]).max(), np.abs(row[e : e + side]).max()
            if min(before, after) > 0.01 * peak[n]:
                total += e - s
        totals[n] = total * 1000 / sample_rate
    return np.log1p(totals), [f"{t:.0f} ms of zero gaps inside the note" for t in totals]


def truncation(x: np.ndarray, sample_rate: int) -> tuple[np.ndarray, list[str]]:
    """How loud the clip is where its sound stops, in dB re its peak frame.

    A note decays before it ends; a cut note stops at full level, and when the cut is followed by
    digital silence (not the clip's end) the score gets +20.
    """
    hop = max(1, sample_rate // 200)
    levels = frame_rms(x, hop)
    scores, reasons = np.zeros(len(x)), []
    for n, lv in enumerate(levels):
        top = lv.max()
        if top <= EPS:
            scores[n] = -120.0
            reasons.append("no sound")
            continue
        sounding = np.flatnonzero(lv > top * 1e-4)
        last = int(sounding[-1])
        end_db = float(db(lv[last] / top))
        # the last frame may be cut mid-way; the one before it shows the level at the cut
        if last > 0:
            end_db = max(end_db, float(db(lv[last - 1] / top)))
        followed = (len(lv) - 1 - last) >= 2 and np.all(lv[last + 1 :] <= top * 1e-6)
        scores[n] = end_db + (20.0 if followed else 0.0)
        when = (last + 1) * hop / sample_rate
        reasons.append(
            f"sound stops at {when:.2f} s at {end_db:.0f} dB re peak" + (" then silence" if followed else "")
        )
    return scores, reasons


def dc_offset(x: np.ndarray, sample_rate: int) -> tuple[np.ndarray, list[str]]:
    """Constant offset: the smallest |mean| of the clip's four quarters, relative to its peak (log10).

    A note's own asymmetry moves the mean only while it sounds; an offset stays in every quarter.
    """
    quarters = x[:, : x.shape[1] // 4 * 4].astype(np.float64).reshape(len(x), 4, -1).mean(axis=2)
    pick = np.argmin(np.abs(quarters), axis=1)
    offset = quarters[np.arange(len(x)), pick]
    ratio = np.abs(offset) / (np.max(np.abs(x), axis=1) + EPS)
    return np.log10(ratio + 1e-6), [
        f"DC offset {m:+.4f} ({100 * r:.1f}% of peak) throughout" for m, r in zip(offset, ratio, strict=True)
    ]


def envelope(x: np.ndarray, sample_rate: int) -> tuple[np.ndarray, list[str]]:
    """Time asymmetry of the envelope: log of rise time over fall time (10 ms frames).

    Rise: from the first frame within 60 dB of the peak to the first within 6 dB; fall: from the
    last frame within 6 dB to the last within 60 dB. A played note starts fast and fades slowly;
    reversed audio fades in and stops dead.
    """
    hop = max(1, sample_rate // 100)
    levels = db(frame_rms(x, hop))
    scores, reasons = np.zeros(len(x)), []
    for n, lv in enumerate(levels - levels.max(axis=1, keepdims=True)):
        sounding, loud = np.flatnonzero(lv > -60), np.flatnonzero(lv > -6)
        rise = loud[0] - sounding[0] + 1
        fall = sounding[-1] - loud[-1] + 1
        scores[n] = np.log(rise / fall)
        reasons.append(f"rises over {10 * rise} ms, falls over {10 * fall} ms")
    return scores, reasons


def noise_floor(
    x: np.ndarray, sample_rate: int, mel_db: np.ndarray | None = None
) -> tuple[np.ndarray, list[str]]:
    """Floor of the log-mel spectrogram: per band the 10th percentile over time, mean over bands, dB re peak.

    A decaying note leaves the high bands and its tail near-empty; broadband noise fills them.
    ``mel_db``: the clips' 64-band log-mel (N, 64, frames) when already computed.
    """
    mel = log_mel(x, sample_rate, n_mels=64, n_fft=1024, hop=256) if mel_db is None else mel_db
    rel = np.percentile(mel, 10, axis=2).mean(axis=1) - mel.max(axis=(1, 2))
    return rel, [f"noise floor {v:.0f} dB re the loudest mel bin" for v in rel]


def hum(x: np.ndarray, sample_rate: int) -> tuple[np.ndarray, list[str]]:
    """Steady mains lines: how little 50 or 60 Hz and 3 harmonics decay over the clip.

    Per line, the level in its quietest 20% of 256 ms frames minus its loudest frame (dB), averaged
    over the four harmonics; the larger of 50 and 60 Hz. A note whose partial sits on a mains line
    decays; hum stays put. Measured on the clip resampled to 1 kHz (3.9 Hz bins).
    """
    from scipy.signal import resample_poly

    low_rate = 1000
    y = resample_poly(x, low_rate, sample_rate, axis=1)
    n_fft = min(256, y.shape[1])
    frames = np.lib.stride_tricks.sliding_window_view(y, n_fft, axis=1)[:, :: n_fft // 8]
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=-1)) ** 2  # (N, F, K)
    per_mains = []
    for mains in (50.0, 60.0):
        bins = [round(k * mains * n_fft / low_rate) for k in range(1, 5)]
        line_db = 10 * np.log10(power[:, :, bins] + EPS)  # (N, F, 4)
        per_mains.append((np.percentile(line_db, 20, axis=1) - line_db.max(axis=1)).mean(axis=-1))
    per_mains = np.stack(per_mains, axis=1)
    score = per_mains.max(axis=1)
    which = np.where(per_mains.argmax(axis=1) == 0, 50, 60)
    return score, [
        f"{w} Hz mains lines stay within {-v:.0f} dB of their peak through the clip"
        for w, v in zip(which, score, strict=True)
    ]


def bandwidth_hz(x: np.ndarray, sample_rate: int, drop_db: float = 50.0, batch: int = 256) -> np.ndarray:
    """Highest frequency where the long-term spectrum is within ``drop_db`` of its maximum: (N,) Hz."""
    n_fft = 1024
    out = np.zeros(len(x))
    kernel = np.ones(5) / 5  # smooth over 5 bins (78 Hz) so one harmonic gap does not end the band
    for i in range(0, len(x), batch):
        power = power_spectrogram(x[i : i + batch], n_fft=n_fft, hop=256).mean(axis=1)  # (B, K)
        power = np.apply_along_axis(lambda p: np.convolve(p, kernel, mode="same"), 1, power)
        rel = 10 * np.log10(power / (power.max(axis=1, keepdims=True) + EPS) + EPS)
        above = rel > -drop_db
        last = np.where(above.any(axis=1), above.shape[1] - 1 - np.argmax(above[:, ::-1], axis=1), 0)
        out[i : i + batch] = last * sample_rate / n_fft
    return out


def reference_z(
    own: np.ndarray,
    manifest: pd.DataFrame,
    reference: np.ndarray,
    ref_manifest: pd.DataFrame,
    floor: float | np.ndarray,
    min_pool: int = 3,
    pitch_window: float = 3.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Measures of clips against clean clips of the same label and nearby pitch.

    Args:
        own: (N, D) measures of the scored clips, rows of ``manifest`` (``label``, optional ``pitch``).
        reference: (M, D) the same measures of clean clips, rows of ``ref_manifest``.
        floor: smallest spread, per measure or one for all (a tight pool must not make noise extreme).
        min_pool: fewest clips a pool may have: nearby pitch (+-``pitch_window``) of the same label,
            else the same label, else every reference clip.
    Returns:
        (z (N, D) = (own - pool median) / max(pool MAD, floor), the pool medians (N, D)).
    """
    own, reference = np.atleast_2d(own.T).T, np.atleast_2d(reference.T).T
    expected, z = np.zeros(own.shape), np.zeros(own.shape)
    ref_label = ref_manifest["label"].to_numpy()
    has_pitch = "pitch" in manifest.columns and "pitch" in ref_manifest.columns
    ref_pitch = ref_manifest["pitch"].to_numpy(dtype=np.float64) if has_pitch else None
    labels = manifest["label"].to_numpy()
    pitches = manifest["pitch"].to_numpy(dtype=np.float64) if has_pitch else None
    for n in range(len(own)):
        same = ref_label == labels[n]
        if has_pitch:
            near = same & (np.abs(ref_pitch - pitches[n]) <= pitch_window)
            same = near if near.sum() >= min_pool else same
        pool = reference[same] if same.sum() >= min_pool else reference
        expected[n] = np.median(pool, axis=0)
        spread = np.maximum(np.median(np.abs(pool - expected[n]), axis=0), floor)
        z[n] = (own[n] - expected[n]) / spread
    return z, expected


def bandwidth(
    x: np.ndarray,
    sample_rate: int,
    manifest: pd.DataFrame | None = None,
    reference: tuple[np.ndarray, pd.DataFrame] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """How much narrower the clip's band is than clean clips of its family and nearby pitch.

    Score: (reference median - own) log2 bandwidth, in octaves, divided by the reference spread
    (:func:`reference_z`). Without a reference the score is minus the bandwidth in octaves.
    """
    own = np.log2(bandwidth_hz(x, sample_rate) + 50.0)
    if reference is None or manifest is None:
        return -own, [f"bandwidth {2**o - 50:.0f} Hz" for o in own]
    ref_bw, ref_man = reference
    z, expected = reference_z(own[:, None], manifest, np.log2(ref_bw + 50.0)[:, None], ref_man, 0.1)
    score, expected = -z[:, 0], expected[:, 0]
    return score, [
        f"bandwidth {2**o - 50:.0f} Hz, clean {row_label} notes near this pitch reach {2**e - 50:.0f} Hz"
        for o, e, row_label in zip(own, expected, manifest["label"], strict=True)
    ]


CHECKS: dict[str, Check] = {
    "clipping": clipping,
    "silence": silence,
    "gaps": gaps,
    "truncation": truncation,
    "dc_offset": dc_offset,
    "envelope": envelope,
    "noise_floor": noise_floor,
    "hum": hum,
    "bandwidth": bandwidth,
}
