"""Known faults injected into clean note recordings, one function per fault.

Audio faults map one clip ``x`` (T,) float32 in [-1, 1] to a faulty clip of the same shape and
range: ``fault(x, severity, rng, sample_rate) -> y``. The two duplicate faults take the *source*
clip (the one being copied) as ``x``. The two label faults change the manifest row instead:
``fault(row, severity, rng, classes) -> row``.

Every fault has a :class:`FaultSpec`: what its severity means, the allowed range (checked before
any work), the default, and a training range for the multi-task net's on-the-fly corruptions.

Faults are *implementations* grouped in *families* (``FaultSpec.family``): hard, soft (tanh) and
one-sided clipping are three ways to clip, white, pink, brown and babble-like noise four ways to
add noise, and so on. A detector tuned to one implementation (flat tops, a white floor) can look
perfect on its own generator and miss the next; the workflow therefore fits the stacked ensemble
and the multi-task net on some implementations of each family (the validation copy) and reports
the held-out ones separately (``held_out`` in the corrupted test manifest).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Collection, Mapping, Sequence
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


def soft_clipping(x: np.ndarray, severity: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Drive the clip into a tanh saturator at ``severity`` dB re its peak, unity gain for quiet
    samples: ``peak * tanh(g u) / g`` with ``u = x / peak``, ``g = 10^(severity / 20)`` (rounded tops,
    odd harmonics, no flat run; -10 dB is about 3% peak compression, barely audible)."""
    peak = max(float(np.max(np.abs(x))), 1e-6)
    drive = 10 ** (severity / 20)
    return (np.tanh(drive * x / peak) / drive * peak).astype(np.float32)


def asymmetric_clipping(
    x: np.ndarray, severity: float, rng: np.random.Generator, sample_rate: int
) -> np.ndarray:
    """Hard-clip one polarity only (random sign) at ``severity`` dB below that polarity's peak (an
    overloaded single-ended stage: flat tops on one side, even harmonics)."""
    sign = 1.0 if rng.random() < 0.5 else -1.0
    side = sign * x
    limit = float(side.max()) * 10 ** (-severity / 20)
    return (sign * np.minimum(side, limit)).astype(np.float32)


def white_noise(x: np.ndarray, severity: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Add white Gaussian noise at an SNR of ``severity`` dB (re the clip's RMS)."""
    return _noise_at_snr(x, rng.standard_normal(len(x)), severity)


def pink_noise_fault(
    x: np.ndarray, severity: float, rng: np.random.Generator, sample_rate: int
) -> np.ndarray:
    """Add pink (1/f) noise at an SNR of ``severity`` dB (re the clip's RMS)."""
    return _noise_at_snr(x, pink_noise(len(x), rng), severity)


def brown_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with a 1/f^2 power spectrum (a random walk without its DC drift), shape (n,)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(len(spectrum), dtype=np.float64)
    spectrum[0] = 0.0
    freqs[0] = 1.0
    return np.fft.irfft(spectrum / freqs, n)


def brown_noise_fault(
    x: np.ndarray, severity: float, rng: np.random.Generator, sample_rate: int
) -> np.ndarray:
    """Add brown (1/f^2, rumble-like) noise at an SNR of ``severity`` dB (re the clip's RMS)."""
    return _noise_at_snr(x, brown_noise(len(x), rng), severity)


def babble_noise(x: np.ndarray, severity: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Add babble-like noise at an SNR of ``severity`` dB: six 'voices', each a buzz of harmonics on a
    gliding 90-300 Hz fundamental, syllable-rate (3-6 Hz) amplitude modulated."""
    t = np.arange(len(x)) / sample_rate
    babble = np.zeros(len(x))
    for _ in range(6):
        f0 = rng.uniform(90, 300) * (
            1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t + rng.uniform(0, 6.3))
        )
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        n_harm = int(min(30, sample_rate / 2 / 330))
        voice = sum(np.sin(k * phase + rng.uniform(0, 6.3)) / k for k in range(1, n_harm + 1))
        syllables = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 6.3)))
        babble += voice * syllables**2
    return _noise_at_snr(x, babble, severity)


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


def _zero_gaps(x: np.ndarray, lengths: Sequence[int], rng: np.random.Generator, fade: int = 0) -> np.ndarray:
    """Zero gaps of ``lengths`` samples at random places inside the sounding note (faded over ``fade``
    samples on both sides when > 0)."""
    y = x.astype(np.float64).copy()
    start, end = sounding_region(x, threshold_db=-30.0)
    for gap in lengths:
        last = max(start + 1, min(len(x), max(end, start + 2 * gap)) - gap)
        at = int(rng.integers(start, last))
        gain = np.ones(len(x))
        gain[at : at + gap] = 0.0
        if fade:
            ramp = np.linspace(1.0, 0.0, fade + 2)[1:-1]
            lo = max(0, at - fade)
            gain[lo:at] = np.minimum(gain[lo:at], ramp[fade - (at - lo) :])
            hi = min(len(x), at + gap + fade)
            gain[at + gap : hi] = np.minimum(gain[at + gap : hi], ramp[::-1][: hi - at - gap])
        y *= gain
    return y.astype(np.float32)


def dropout_single(x: np.ndarray, severity: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """One gap of ``severity`` ms, faded in and out over 1 ms, at a random place in the sounding note."""
    gap = max(1, round(severity * sample_rate / 1000))
    return _zero_gaps(x, [gap], rng, fade=max(1, sample_rate // 1000))


def dropout_burst(x: np.ndarray, severity: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Two to six gaps, each 2 ms to ``severity`` ms long (drawn log-uniformly), anywhere in the note."""
    longest = max(2.0, severity)
    lengths = np.exp(rng.uniform(np.log(2.0), np.log(longest), int(rng.integers(2, 7))))
    return _zero_gaps(x, [max(1, round(v * sample_rate / 1000)) for v in lengths], rng)


def truncation_faded(
    x: np.ndarray, severity: float, rng: np.random.Generator, sample_rate: int
) -> np.ndarray:
    """Cut the note short like :func:`truncation`, but with a 5-50 ms fade-out (an edited take)."""
    start, end = sounding_region(x)
    cut = max(start + 1, start + round((1.0 - severity) * (end - start)))
    fade = int(rng.uniform(0.005, 0.05) * sample_rate)
    y = x.astype(np.float64).copy()
    lo = max(start, cut - fade)
    y[lo:cut] *= np.linspace(1.0, 0.0, cut - lo + 1)[:-1]
    y[cut:] = 0.0
    return y.astype(np.float32)


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


CODEC_KBPS = (8, 10, 12, 16, 20, 24, 32, 40, 48, 64)  # the rates AAC and Opus faults snap to


def codec_setting(codec_name: str, kbps: float, sample_rate: int) -> Any:
    """The :class:`advmir.codecs.registry.CodecSetting` of a codec fault at ``kbps``, snapped to the
    nearest common rate (one ffmpeg batch per rate, so severities drawn from a range cost a few
    batches, not one per clip): MP3 to the CBR rates of its MPEG version at this sample rate, Opus
    and AAC to :data:`CODEC_KBPS`. Opus takes at least 10 kbps (below, libopus's narrowband mode is
    not sample-aligned); AAC at most 4 bits a sample."""
    from advmir.codecs import registry

    if codec_name == "mp3":
        mpeg1 = sample_rate in registry.MP3_MPEG1_RATES
        grid: Sequence[int] = registry.MP3_MPEG1_KBPS if mpeg1 else registry.MP3_MPEG2_KBPS
    else:
        grid = CODEC_KBPS
    rate = min(grid, key=lambda b: abs(b - kbps))
    if codec_name == "opus":
        rate = max(registry.OPUS_KBPS[0], rate)
    elif codec_name == "aac":
        rate = min(rate, int(registry.AAC_MAX_BITS_PER_SAMPLE * sample_rate / 1000))
    return registry.parse_setting(
        f"{codec_name}_{rate}k", {"codec": codec_name, "bitrate_kbps": rate}, sample_rate
    )


def codec_roundtrip_batch(
    x: np.ndarray, codec_name: str, kbps: Sequence[float], sample_rate: int
) -> np.ndarray:
    """Encode and decode clips (N, T) with ``codec_name`` (mp3, aac, opus), clip n at ``kbps[n]``,
    through the codec stage's engine (:class:`advmir.codecs.engine.CodecEngine`: sample-aligned,
    many clips per ffmpeg process); (N, T) float32 out, each clip scaled into range if it overshoots."""
    clips = np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0)
    settings = [codec_setting(codec_name, k, sample_rate) for k in kbps]
    out = np.empty_like(clips)
    for name in dict.fromkeys(s.name for s in settings):
        rows = [n for n, s in enumerate(settings) if s.name == name]
        setting = settings[rows[0]]
        decoded = _codec_engine().roundtrip(clips[rows], sample_rate, setting).decoded
        for k, n in enumerate(rows):
            out[n] = _fit_range(decoded[k])
    return out


def codec_roundtrip(x: np.ndarray, codec_name: str, kbps: float, sample_rate: int) -> np.ndarray:
    """One clip (T,) through :func:`codec_roundtrip_batch`."""
    return codec_roundtrip_batch(np.asarray(x)[None, :], codec_name, [kbps], sample_rate)[0]


_ENGINE: list[Any] = []  # one engine per process: finding and checking ffmpeg costs a subprocess


def _codec_engine() -> Any:
    from advmir.codecs.engine import CodecEngine

    if not _ENGINE:
        _ENGINE.append(CodecEngine(workers=1, batch_size=25))
    return _ENGINE[0]


def codec(x: np.ndarray, severity: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Round-trip through MP3 (LAME, CBR) at ``severity`` kbps (snapped to a rate LAME takes)."""
    return codec_roundtrip(x, "mp3", severity, sample_rate)


def codec_aac(x: np.ndarray, severity: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Round-trip through AAC (ffmpeg's encoder, in MP4) at ``severity`` kbps."""
    return codec_roundtrip(x, "aac", severity, sample_rate)


def codec_opus(x: np.ndarray, severity: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Round-trip through Opus (libopus, in Ogg) at ``severity`` kbps (10 kbps at least)."""
    return codec_roundtrip(x, "opus", severity, sample_rate)


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


def swapped_family(row: dict, severity: float, rng: np.random.Generator, classes: Sequence[str]) -> dict:
    """Give the clip the label of a neighbouring class in the class list (a slip to the next row of a
    lookup table: keyboard <-> mallet, guitar <-> bass, brass <-> reed, ...; severity unused)."""
    row = dict(row)
    here = int(row["label_idx"])
    steps = [s for s in (-1, 1) if 0 <= here + s < len(classes)]
    new = here + int(rng.choice(steps))
    row["label_idx"], row["label"] = new, classes[new]
    if "family" in row:
        row["family"] = classes[new]
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
    family: str  # the fault family this implementation belongs to (e.g. soft_clipping: clipping)


def _spec(
    name: str,
    kind: str,
    func: Callable[..., Any],
    unit: str,
    low: float,
    high: float,
    default: float,
    train_range: tuple[float, float] | None = None,
    family: str | None = None,
) -> FaultSpec:
    train = train_range if train_range is not None else (default, default)
    doc = (func.__doc__ or "").strip()
    return FaultSpec(name, kind, func, unit, low, high, default, train, doc, family or name)


FAULTS: dict[str, FaultSpec] = {
    s.name: s
    for s in [
        _spec("clipping", "audio", clipping, "overdrive dB", 0.5, 40, 6, (3, 12)),
        _spec("white_noise", "audio", white_noise, "SNR dB", -10, 60, 20, (12, 30), "noise"),
        _spec("pink_noise", "audio", pink_noise_fault, "SNR dB", -10, 60, 20, (12, 30), "noise"),
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
        # further implementations of the families above (held out from fitting by default)
        _spec("soft_clipping", "audio", soft_clipping, "drive dB re peak", -20, 40, 6, (0, 12), "clipping"),
        _spec(
            "asymmetric_clipping",
            "audio",
            asymmetric_clipping,
            "dB below peak",
            0.1,
            20,
            3,
            (1, 6),
            "clipping",
        ),
        _spec("brown_noise", "audio", brown_noise_fault, "SNR dB", -10, 60, 35, (20, 40), "noise"),
        _spec("babble_noise", "audio", babble_noise, "SNR dB", -10, 60, 25, (15, 35), "noise"),
        _spec("dropout_single", "audio", dropout_single, "gap ms (1 gap)", 1, 300, 20, (5, 60), "dropout"),
        _spec("dropout_burst", "audio", dropout_burst, "longest gap ms", 2, 300, 50, (10, 100), "dropout"),
        _spec(
            "truncation_faded",
            "audio",
            truncation_faded,
            "share of the sounding note cut",
            0.05,
            0.95,
            0.5,
            (0.3, 0.8),
            "truncation",
        ),
        _spec("codec_aac", "audio", codec_aac, "AAC kbps", 8, 64, 16, (12, 24), "codec"),
        _spec("codec_opus", "audio", codec_opus, "Opus kbps", 10, 64, 12, (10, 16), "codec"),
        _spec("swapped_family", "label", swapped_family, "unused", 1, 1, 1, None, "wrong_family"),
        _spec("wrong_interval", "label", wrong_pitch, "semitones", 1, 24, 12, None, "wrong_pitch"),
    ]
}
CODEC_FAULTS = {"codec": "mp3", "codec_aac": "aac", "codec_opus": "opus"}  # batched through one ffmpeg


def apply_audio_faults(
    x: np.ndarray,
    faults: Sequence[str],
    severities: Sequence[float],
    rng: np.random.Generator,
    sample_rate: int,
) -> np.ndarray:
    """Apply audio fault ``faults[n]`` at ``severities[n]`` to clip ``x[n]`` (N, T); (N, T) float32.

    Clips are done in order (the same draws from ``rng`` as one call per clip), except the codec
    faults, which use no randomness and go through the engine in batches afterwards.
    """
    out = np.array(x, dtype=np.float32, copy=True)
    deferred: dict[str, list[int]] = {}
    for n, (name, sev) in enumerate(zip(faults, severities, strict=True)):
        if name in CODEC_FAULTS:
            deferred.setdefault(name, []).append(n)
        else:
            out[n] = FAULTS[name].func(out[n], float(sev), rng, sample_rate)
    for name, rows in deferred.items():
        out[rows] = codec_roundtrip_batch(
            out[rows], CODEC_FAULTS[name], [severities[n] for n in rows], sample_rate
        )
    return out


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
    for name in severities:
        if FAULTS[name].func is wrong_pitch and "pitch" not in columns:
            raise CorruptionConfigError(
                f"fault {name!r} needs a `pitch` column in manifest.csv; drop the fault"
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
    held_out: Collection[str] = (),
) -> tuple[np.ndarray, pd.DataFrame]:
    """Inject one known fault into a ``fraction`` of the clips, the faults balanced.

    Args:
        waveforms: float32 (N, T) in [-1, 1], one split.
        manifest: its N rows.
        severities: ``{fault: [severity, ...]}`` from :func:`normalize_severities`; a fault's clips
            cycle through its severities.
        held_out: fault implementations that the fitted detectors never saw (marked, not changed).
    Returns:
        waveforms (N, T) float32 and the manifest with ``is_fault, fault, fault_family, held_out,
        severity, source_id`` (``fault`` and ``fault_family`` are ``"none"`` on clean rows,
        ``held_out`` is 1 on clips of a held-out implementation; ``source_id`` names the clip the
        audio came from).
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
    codec_rows: list[tuple[int, str, float]] = []

    out_wave = np.array(waveforms, dtype=np.float32, copy=True)
    rows = manifest.to_dict("records")
    for row in rows:
        row.update(
            is_fault=0, fault="none", fault_family="none", held_out=0, severity=np.nan, source_id=row["id"]
        )
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
        elif name in CODEC_FAULTS:
            codec_rows.append((i, name, sev))
        else:
            out_wave[i] = spec.func(out_wave[i], sev, rng, sample_rate)
        row.update(
            is_fault=1, fault=name, fault_family=spec.family, held_out=int(name in held_out), severity=sev
        )
    if codec_rows:  # no randomness in them: batched through the engine after the rest
        at = [i for i, _, _ in codec_rows]
        out_wave[at] = apply_audio_faults(
            out_wave[at], [f for _, f, _ in codec_rows], [v for _, _, v in codec_rows], rng, sample_rate
        )
    return out_wave, pd.DataFrame(rows)
