"""Known faults injected into clean note recordings, one function per fault.

Audio faults map one clip ``x`` (T,) float32 in [-1, 1] to a faulty clip of the same shape and
range: ``fault(x, severity, rng, sample_rate) -> y``. The two duplicate faults take the *source*
clip (the one being copied) as ``x``. The two label faults change the manifest row instead:
``fault(row, severity, rng, classes) -> row``.

Every fault has a :class:`FaultSpec`: what its severity means, the allowed range (checked before
any work), the default, and a training range for the multi-task net's on-the-fly corruptions.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import signal

from advmir.errors import InputError

AudioFault = Callable[[np.ndarray, float, np.random.Generator, int], np.ndarray]
LabelFault = Callable[[dict, float, np.random.Generator, Sequence[str]], dict]


class CorruptionConfigError(InputError, ValueError):
    """A corruption request is invalid (fraction, fault name, severity, split size)."""


# ----------------------------------------------------------------------------------------- helpers
def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _fit_range(y: np.ndarray, limit: float = 0.999) -> np.ndarray:
    """Scale ``y`` down (never up) so it fits in [-limit, limit]; float32 out."""
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak > limit:
        y = y * (limit / peak)
    return y.astype(np.float32)


def _noise_at_snr(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Add ``noise`` scaled to ``snr_db`` below the RMS of ``x`` (dividing by 10^(snr/20): see advmir.snr)."""
    level = max(_rms(x), 1e-6) / 10 ** (snr_db / 20)
    return _fit_range(x + noise * (level / max(_rms(noise), 1e-12)))


def sounding_region(x: np.ndarray, threshold_db: float = -60.0, hop: int = 80) -> tuple[int, int]:
    """First and last sample (exclusive) where 5 ms frame RMS is within ``threshold_db`` of the loudest."""
    n = len(x) // hop
    frames = np.sqrt(np.mean(np.square(x[: n * hop].reshape(n, hop), dtype=np.float64), axis=1)) + 1e-12
    loud = np.flatnonzero(20 * np.log10(frames / frames.max()) > threshold_db)
    if loud.size == 0:
        return 0, len(x)
    return int(loud[0] * hop), int(min(len(x), (loud[-1] + 1) * hop))


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with a 1/f power spectrum, shape (n,)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(len(spectrum), dtype=np.float64)
    freqs[0] = 1.0
    return np.fft.irfft(spectrum / np.sqrt(freqs), n)


# -------------------------------------------------------------------------------------- audio faults
def clipping(x: np.ndarray, severity: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Overdrive by ``severity`` dB, then hard-clip at the clip's original peak (flat tops)."""
    peak = float(np.max(np.abs(x)))
    return np.clip(x * 10 ** (severity / 20), -peak, peak).astype(np.float32)


def white_noise(x: np.ndarray, severity: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Add white Gaussian noise at an SNR of ``severity`` dB (re the clip's RMS)."""
    return _noise_at_snr(x, rng.standard_normal(len(x)), severity)


def pink_noise_fault(
    x: np.ndarray, severity: float, rng: np.random.Generator, sample_rate: int
) -> np.ndarray:
    """Add pink (1/f) noise at an SNR of ``severity`` dB (re the clip's RMS)."""
    return _noise_at_snr(x, pink_noise(len(x), rng), severity)


def hum(x: np.ndarray, severity: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Add mains hum (50 or 60 Hz and 3 harmonics, random phases) at an SNR of ``severity`` dB."""
    mains = 50.0 if rng.random() < 0.5 else 60.0
    t = np.arange(len(x)) / sample_rate
    buzz = sum(np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 5))
    return _noise_at_snr(x, buzz, severity)


def dropout(x: np.ndarray, severity: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Zero out three gaps of ``severity`` ms each, placed where the note sounds."""
    y = x.copy()
    gap = max(1, round(severity * sample_rate / 1000))
    start, end = sounding_region(x, threshold_db=-30.0)
    end = max(end, start + 4 * gap)
    slots = np.array_split(np.arange(start, min(len(x), end) - gap), 3)
    for slot in slots:
        if slot.size:
            at = int(rng.choice(slot))
            y[at : at + gap] = 0.0
    return y


def truncation(x: np.ndarray, severity: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Cut the note short: silence everything after ``1 - severity`` of its sounding part."""
    start, end = sounding_region(x)
    cut = start + round((1.0 - severity) * (end - start))
    y = x.copy()
    y[max(cut, start + 1) :] = 0.0
    return y


def dc_offset(x: np.ndarray, severity: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Add a constant offset of ``severity`` times the clip's peak (random sign)."""
    peak = float(np.max(np.abs(x)))
    return _fit_range(x + np.sign(rng.random() - 0.5) * severity * max(peak, 1e-3))


def wrong_sample_rate(
    x: np.ndarray, severity: float, rng: np.random.Generator, sample_rate: int
) -> np.ndarray:
    """Play the clip at the wrong rate: pitch (and speed) shifted by ``severity`` semitones, random sign."""
    ratio = 2.0 ** (np.sign(rng.random() - 0.5) * severity / 12)  # > 1: played too fast, higher
    n_out = max(1, round(len(x) / ratio))
    y = signal.resample(x.astype(np.float64), n_out)
    out = np.zeros(len(x))
    out[: min(len(x), n_out)] = y[: len(x)]
    return _fit_range(out)


def lowpass(x: np.ndarray, severity: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Low-pass at ``severity`` Hz (8th-order Butterworth, zero phase): a band-limited take."""
    sos = signal.butter(8, severity, btype="low", fs=sample_rate, output="sos")
    return _fit_range(signal.sosfiltfilt(sos, x.astype(np.float64)))


MP3_BITRATES = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)


def codec(x: np.ndarray, severity: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Round-trip through MP3 (LAME, in memory via PyAV) at ``severity`` kbps (snapped to a LAME rate)."""
    import av

    kbps = min(MP3_BITRATES, key=lambda b: abs(b - severity))
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=sample_rate)
        stream.bit_rate = kbps * 1000
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(x[None, :].astype(np.float32), format="flt", layout="mono")
        frame.sample_rate = sample_rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    buf.seek(0)
    with av.open(buf, "r", format="mp3") as inp:
        decoded = np.concatenate([f.to_ndarray().reshape(-1) for f in inp.decode(audio=0)])
    # Measured: MP3 decoded from a seekable buffer is aligned (offset 0) and 16,000 samples long.
    y = np.zeros(len(x), dtype=np.float64)
    y[: min(len(x), len(decoded))] = decoded[: len(x)]
    return _fit_range(y)


def reversed_audio(x: np.ndarray, severity: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Time-reverse the clip (severity unused)."""
    return x[::-1].astype(np.float32).copy()


def silence(x: np.ndarray, severity: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Replace the note by faint white noise ``severity`` dB below full scale (an empty take)."""
    return (rng.standard_normal(len(x)) * 10 ** (-severity / 20)).astype(np.float32)


def exact_duplicate(x: np.ndarray, severity: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A bit-exact copy of the source clip ``x`` (severity unused)."""
    return x.astype(np.float32).copy()


def near_duplicate(x: np.ndarray, severity: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A re-take of the source ``x``: shifted <= 5 ms, gain within +-0.5 dB, noise at ``severity`` dB SNR."""
    shift = int(rng.integers(0, sample_rate // 200 + 1))
    y = np.zeros_like(x, dtype=np.float64)
    y[shift:] = x[: len(x) - shift]
    y *= 10 ** (rng.uniform(-0.5, 0.5) / 20)
    return _noise_at_snr(y, rng.standard_normal(len(x)), severity)


# -------------------------------------------------------------------------------------- label faults
def wrong_family(row: dict, severity: float, rng: np.random.Generator, classes: Sequence[str]) -> dict:
    """Give the clip another class label, uniformly among the others (severity unused)."""
    row = dict(row)
    others = [i for i in range(len(classes)) if i != int(row["label_idx"])]
    new = int(rng.choice(others))
    row["label_idx"], row["label"] = new, classes[new]
    if "family" in row:
        row["family"] = classes[new]
    return row


def wrong_pitch(row: dict, severity: float, rng: np.random.Generator, classes: Sequence[str]) -> dict:
    """Move the ``pitch`` label (MIDI) by ``severity`` semitones up or down, staying in 0..127."""
    row = dict(row)
    step = round(severity)
    pitch = int(row["pitch"])
    up = pitch + step <= 127 and (pitch - step < 0 or rng.random() < 0.5)
    row["pitch"] = pitch + step if up else pitch - step
    return row


# ------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class FaultSpec:
    """One fault: its function, what the severity means and which values are allowed."""

    name: str
    kind: str  # "audio", "label" or "duplicate"
    func: Callable[..., Any]
    unit: str
    low: float
    high: float
    default: float
    train_range: tuple[float, float]
    description: str


def _spec(
    name: str,
    kind: str,
    func: Callable[..., Any],
    unit: str,
    low: float,
    high: float,
    default: float,
    train_range: tuple[float, float] | None = None,
) -> FaultSpec:
    train = train_range if train_range is not None else (default, default)
    return FaultSpec(name, kind, func, unit, low, high, default, train, (func.__doc__ or "").strip())


FAULTS: dict[str, FaultSpec] = {
    s.name: s
    for s in [
        _spec("clipping", "audio", clipping, "overdrive dB", 0.5, 40, 6, (3, 12)),
        _spec("white_noise", "audio", white_noise, "SNR dB", -10, 60, 20, (12, 30)),
        _spec("pink_noise", "audio", pink_noise_fault, "SNR dB", -10, 60, 20, (12, 30)),
        _spec("hum", "audio", hum, "SNR dB", -10, 60, 20, (12, 30)),
        _spec("dropout", "audio", dropout, "gap ms (3 gaps)", 1, 300, 20, (5, 60)),
        _spec(
            "truncation", "audio", truncation, "share of the sounding note cut", 0.05, 0.95, 0.5, (0.3, 0.8)
        ),
        _spec("dc_offset", "audio", dc_offset, "offset / peak", 0.001, 1.0, 0.1, (0.05, 0.3)),
        _spec("wrong_sample_rate", "audio", wrong_sample_rate, "semitones", 0.1, 24, 2, (1, 5)),
        # the upper bound is 0.49 x the dataset's sample rate, checked per dataset (23,520 Hz at 48 kHz)
        _spec("lowpass", "audio", lowpass, "cutoff Hz", 50, 0.49 * 48000, 2000, (1000, 3000)),
        _spec("codec", "audio", codec, "MP3 kbps", 8, 160, 8, (8, 16)),
        _spec("reversed", "audio", reversed_audio, "unused", 1, 1, 1),
        _spec("silence", "audio", silence, "dB below full scale", 30, 140, 90, (60, 120)),
        _spec("wrong_family", "label", wrong_family, "unused", 1, 1, 1),
        _spec("wrong_pitch", "label", wrong_pitch, "semitones", 1, 24, 2),
        _spec("exact_duplicate", "duplicate", exact_duplicate, "unused", 1, 1, 1),
        _spec("near_duplicate", "duplicate", near_duplicate, "SNR dB", 10, 80, 30),
    ]
}
AUDIO_FAULTS = tuple(n for n, s in FAULTS.items() if s.kind == "audio")


def normalize_severities(
    faults: Sequence[str] | Mapping[str, float | Sequence[float] | None],
    sample_rate: int | None = None,
) -> dict[str, list[float]]:
    """Check fault names and severities; return ``{fault: [severity, ...]}`` (defaults filled in).

    ``faults`` is a list of names (default severities) or a mapping name -> severity, list of
    severities, or None (default). Raises CorruptionConfigError naming the bad value.
    """
    items = faults.items() if isinstance(faults, Mapping) else ((name, None) for name in faults)
    out: dict[str, list[float]] = {}
    for name, sev in items:
        if name not in FAULTS:
            raise CorruptionConfigError(f"unknown fault {name!r}; known faults: {', '.join(FAULTS)}")
        spec = FAULTS[name]
        values = [spec.default] if sev is None else list(sev) if isinstance(sev, (list, tuple)) else [sev]
        if not values:
            raise CorruptionConfigError(f"fault {name!r}: empty severity list; give a value or omit it")
        high = spec.high
        if name == "lowpass" and sample_rate is not None:
            high = min(high, 0.49 * sample_rate)
        for v in values:
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v):
                raise CorruptionConfigError(f"fault {name!r}: severity must be a number, got {v!r}")
            if not spec.low <= v <= high:
                raise CorruptionConfigError(
                    f"fault {name!r}: severity {v:g} is out of range [{spec.low:g}, {high:g}] ({spec.unit})"
                )
        out[name] = [float(v) for v in values]
    if not out:
        raise CorruptionConfigError("no faults configured; name at least one of: " + ", ".join(FAULTS))
    return out


def check_request(
    severities: Mapping[str, list[float]], fraction: float, n_clips: int, columns: Sequence[str], split: str
) -> int:
    """Check a corruption request against a split; return the number of faulty clips.

    Raises CorruptionConfigError when the fraction is outside [0, 1], a fault needs a manifest
    column the dataset lacks, or the split is too small to give every fault at least one clip
    and keep a clean clip to copy from and compare with.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
        raise CorruptionConfigError(f"fault fraction must be in [0, 1], got {fraction!r}")
    if "wrong_pitch" in severities and "pitch" not in columns:
        raise CorruptionConfigError(
            "fault 'wrong_pitch' needs a `pitch` column in manifest.csv; drop the fault"
        )
    n_faulty = round(fraction * n_clips)
    if n_faulty == 0:
        return 0
    if n_faulty < len(severities) or n_clips - n_faulty < 1:
        raise CorruptionConfigError(
            f"split {split!r} has {n_clips} clips: fraction {fraction} makes {n_faulty} faulty and "
            f"{n_clips - n_faulty} clean, but {len(severities)} faults need at least one clip each and at "
            "least one clean clip must remain; change the fraction, configure fewer faults or use a larger "
            "split"
        )
    return n_faulty


def split_rng(seed: int, split: str) -> np.random.Generator:
    """A generator of its own for each (seed, split), so test and valid get different faults."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(split.encode())]))


def corrupt_clips(
    waveforms: np.ndarray,
    manifest: pd.DataFrame,
    classes: Sequence[str],
    sample_rate: int,
    severities: Mapping[str, list[float]],
    fraction: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Inject one known fault into a ``fraction`` of the clips, the faults balanced.

    Args:
        waveforms: float32 (N, T) in [-1, 1], one split.
        manifest: its N rows.
        severities: ``{fault: [severity, ...]}`` from :func:`normalize_severities`; a fault's clips
            cycle through its severities.
    Returns:
        waveforms (N, T) float32 and the manifest with ``is_fault, fault, severity, source_id``
        (``fault`` is ``"none"`` on clean rows; ``source_id`` names the clip the audio came from).
    """
    n = len(manifest)
    n_faulty = check_request(severities, fraction, n, list(manifest.columns), "given")
    order = rng.permutation(n)
    faulty, clean = order[:n_faulty], order[n_faulty:]
    names = list(severities)
    assigned = [names[i % len(names)] for i in range(n_faulty)]
    rng.shuffle(assigned)
    counts = dict.fromkeys(names, 0)
    sources = rng.permutation(clean)
    n_dup = 0

    out_wave = np.array(waveforms, dtype=np.float32, copy=True)
    rows = manifest.to_dict("records")
    for row in rows:
        row.update(is_fault=0, fault="none", severity=np.nan, source_id=row["id"])
    for i, name in zip(faulty, assigned, strict=True):
        spec = FAULTS[name]
        sev = severities[name][counts[name] % len(severities[name])]
        counts[name] += 1
        row = rows[i]
        if spec.kind == "label":
            row.update(spec.func(row, sev, rng, classes))
        elif spec.kind == "duplicate":
            src = int(sources[n_dup % len(sources)])
            n_dup += 1
            copied = {k: v for k, v in rows[src].items() if k not in ("id", "split")}
            row.update(copied, source_id=rows[src]["id"])
            out_wave[i] = spec.func(out_wave[src], sev, rng, sample_rate)
        else:
            out_wave[i] = spec.func(out_wave[i], sev, rng, sample_rate)
        row.update(is_fault=1, fault=name, severity=sev)
    return out_wave, pd.DataFrame(rows)
