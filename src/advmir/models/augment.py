"""On-the-fly training augmentation: the conditions a real recording has, seeded and cheap on CPU.

A model that only ever heard clean renderings reads a quiet noise floor, a lossy codec or a room
as another instrument: random noise at 30 dB SNR flipped up to 76% of the old zoo's correct
predictions. Each training batch therefore goes through, per clip and with its own probability:

1. a lossy-codec version of the clip (precomputed once by the codec engine, rule
   ``encode_training_codecs``, at settings disjoint from the evaluation grid),
2. a small detune (resampling by +-``detune_cents``),
3. a room impulse response from a seeded bank of shoebox rooms (pyroomacoustics). The bank's seed
   (``room_seed``) is not the codec stage's evaluation room seed: the rooms differ,
4. random EQ: a smooth gain curve of +-``eq_db`` over log frequency, and band-limiting (a
   low-pass in ``lowpass_hz`` and a high-pass in ``highpass_hz``),
5. gain (+-``gain_db``),
6. background noise (white, pink or brown) at an SNR drawn uniformly in ``noise_snr_db``,
7. a time shift of up to +-``shift_seconds`` (zero fill),

then a clamp to [-1, 1]. All draws come from one ``torch.Generator`` seeded by the model's seed.
Filters act on the ``rfft`` of the clip (zero phase) and keep the clip's RMS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from advmir.snr import amplitude_ratio

NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectral slope 1 / f^k


@dataclass
class AugmentConfig:
    """Probabilities and ranges of each augmentation; mirrors ``training.augment`` in config.yaml."""

    gain_db: float = 6.0
    shift_seconds: float = 0.05
    noise_prob: float = 0.5
    noise_snr_db: tuple[float, float] = (20.0, 60.0)
    noise_colours: list[str] = field(default_factory=lambda: list(NOISE_COLOURS))
    room_prob: float = 0.25
    n_rooms: int = 32
    room_seed: int = 1009
    eq_prob: float = 0.3
    eq_db: float = 6.0
    lowpass_hz: tuple[float, float] = (3000.0, 8000.0)
    highpass_hz: tuple[float, float] = (20.0, 300.0)
    detune_prob: float = 0.3
    detune_cents: float = 30.0
    codec_prob: float = 0.3

    def __post_init__(self) -> None:
        problems = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_prob") and not (_is_number(value) and 0 <= value <= 1):
                problems.append(f"{f.name} must be a probability in [0, 1], got {value!r}")
        for key in ("noise_snr_db", "lowpass_hz", "highpass_hz"):
            value = getattr(self, key)
            if not (isinstance(value, list | tuple) and len(value) == 2 and all(map(_is_number, value))):
                problems.append(f"{key} must be [low, high] (two numbers), got {value!r}")
            elif value[0] > value[1]:
                problems.append(f"{key} is inverted: [low, high] needs low <= high, got {list(value)}")
            else:
                setattr(self, key, (float(value[0]), float(value[1])))
        unknown = sorted(set(self.noise_colours) - set(NOISE_COLOURS))
        if unknown or not self.noise_colours:
            problems.append(f"noise_colours must be a non-empty subset of {list(NOISE_COLOURS)}")
        for key in ("gain_db", "shift_seconds", "eq_db", "detune_cents"):
            if not (_is_number(getattr(self, key)) and getattr(self, key) >= 0):
                problems.append(f"{key} must be a number >= 0, got {getattr(self, key)!r}")
        if problems:
            raise ValueError("training.augment: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> AugmentConfig:
        """Build from the config's dict, naming unknown keys."""
        values = dict(values or {})
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(
                f"training.augment: unknown keys {unknown}; allowed: {[f.name for f in fields(cls)]}"
            )
        return cls(**values)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def room_bank(cfg: AugmentConfig, sample_rate: int) -> Tensor:
    """The training rooms' impulse responses, direct path at sample 0: (n_rooms, L) float32.

    Drawn with :func:`advmir.codecs.room.make_rooms` from ``cfg.room_seed``, a seed the codec
    stage's evaluation rooms do not use.
    """
    if cfg.n_rooms < 1 or cfg.room_prob == 0:
        return torch.zeros(0, 1)
    from advmir.codecs.room import make_rooms, parse_room

    setting = parse_room(
        "training_rooms",
        {"n_rooms": cfg.n_rooms, "absorption": [0.1, 0.7], "distance_m": [0.3, 2.0], "seed": cfg.room_seed},
        sample_rate,
    )
    rirs, _ = make_rooms(setting, sample_rate)
    length = max(len(r) for r in rirs)
    bank = np.zeros((len(rirs), length), dtype=np.float32)
    for i, rir in enumerate(rirs):
        bank[i, : len(rir)] = rir
    return torch.from_numpy(bank)


def _rms(x: Tensor) -> Tensor:
    return x.pow(2).mean(dim=-1, keepdim=True).sqrt()


def _keep_rms(new: Tensor, old: Tensor) -> Tensor:
    return new * (_rms(old) / _rms(new).clamp_min(1e-12))


def _pick(prob: float, batch: int, gen: torch.Generator) -> Tensor:
    """Boolean mask (batch,) of the clips an augmentation of probability ``prob`` applies to."""
    return torch.rand(batch, generator=gen) < prob


def coloured_noise(shape: tuple[int, int], slope: Tensor, gen: torch.Generator) -> Tensor:
    """Unit-RMS noise of power spectrum 1 / f^slope per row: slope (B,) -> noise (B, T)."""
    batch, length = shape
    white = torch.randn(batch, length, generator=gen)
    spec = torch.fft.rfft(white)
    freqs = torch.arange(spec.shape[-1], dtype=torch.float32).clamp_min(1.0)
    spec = spec * freqs.unsqueeze(0).pow(-slope.unsqueeze(1) / 2)
    noise = torch.fft.irfft(spec, n=length)
    return noise / _rms(noise).clamp_min(1e-12)


def add_noise(x: Tensor, snr_db: Tensor, slope: Tensor, gen: torch.Generator) -> Tensor:
    """``x`` (B, T) plus coloured noise at per-clip ``snr_db`` (B,) (10 log10 of signal / noise power)."""
    noise = coloured_noise(tuple(x.shape), slope, gen).to(x.device)
    scale = _rms(x) * amplitude_ratio(snr_db.to(x.device)).unsqueeze(1)
    return x + noise * scale


def detune(x: Tensor, cents: Tensor) -> Tensor:
    """Resample each clip (B, T) by 2^(cents/1200) with linear interpolation, same length (zero fill)."""
    length = x.shape[1]
    ratio = (2 ** (cents / 1200)).to(x.device).unsqueeze(1)
    pos = torch.arange(length, device=x.device, dtype=x.dtype).unsqueeze(0) * ratio
    low = pos.floor().long()
    frac = pos - low
    valid = (low + 1) < length
    low = low.clamp(0, length - 2)
    out = x.gather(1, low) * (1 - frac) + x.gather(1, low + 1) * frac
    return out * valid


def reverberate(x: Tensor, rirs: Tensor) -> Tensor:
    """Convolve each clip (B, T) with its impulse response (B, L); keep length and RMS."""
    length = x.shape[1]
    n_fft = 1 << math.ceil(math.log2(length + rirs.shape[1]))
    wet = torch.fft.irfft(torch.fft.rfft(x, n_fft) * torch.fft.rfft(rirs.to(x.device), n_fft), n_fft)
    return _keep_rms(wet[:, :length], x)


def equalise(
    x: Tensor, sample_rate: int, cfg: AugmentConfig, gen: torch.Generator, points: int = 8
) -> Tensor:
    """Random smooth EQ (+-eq_db at ``points`` log-spaced frequencies, interpolated) and a band-pass
    with random edges (Butterworth magnitude, order 4), zero phase, RMS kept: (B, T) -> (B, T)."""
    batch, length = x.shape
    spec = torch.fft.rfft(x)
    freqs = torch.fft.rfftfreq(length, 1.0 / sample_rate).clamp_min(1.0)
    log_f = torch.log(freqs)
    knots = torch.linspace(math.log(50.0), math.log(sample_rate / 2), points)
    gains_db = (torch.rand(batch, points, generator=gen) * 2 - 1) * cfg.eq_db
    idx = torch.bucketize(log_f, knots).clamp(1, points - 1)
    w = ((log_f - knots[idx - 1]) / (knots[idx] - knots[idx - 1])).clamp(0, 1)
    curve_db = gains_db[:, idx - 1] * (1 - w) + gains_db[:, idx] * w
    low = cfg.highpass_hz[0] + torch.rand(batch, 1, generator=gen) * (cfg.highpass_hz[1] - cfg.highpass_hz[0])
    high = cfg.lowpass_hz[0] + torch.rand(batch, 1, generator=gen) * (cfg.lowpass_hz[1] - cfg.lowpass_hz[0])
    band = 1 / torch.sqrt(1 + (low / freqs) ** 8) / torch.sqrt(1 + (freqs / high) ** 8)
    response = (10 ** (curve_db / 20) * band).to(x.device)
    return _keep_rms(torch.fft.irfft(spec * response, n=length), x)


def shift(x: Tensor, max_shift: int, gen: torch.Generator) -> Tensor:
    """Delay or advance each clip (B, T) by up to ``max_shift`` samples, zero fill."""
    if max_shift <= 0:
        return x
    batch, length = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (batch,), generator=gen)
    idx = torch.arange(length).unsqueeze(0) - shifts.unsqueeze(1)
    valid = (idx >= 0) & (idx < length)
    idx = idx.clamp(0, length - 1).to(x.device)
    return torch.gather(x, 1, idx) * valid.to(x.device)


class Augmenter:
    """Applies :class:`AugmentConfig` to training batches.

    Args:
        cfg: probabilities and ranges.
        sample_rate: of the clips.
        seed: seeds the generator (the model's training seed).
    """

    def __init__(self, cfg: AugmentConfig, sample_rate: int, seed: int) -> None:
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.gen = torch.Generator().manual_seed(seed)
        self.rirs = room_bank(cfg, sample_rate)
        self.slopes = torch.tensor([NOISE_COLOURS[c] for c in cfg.noise_colours])

    def __call__(self, x: Tensor, x_codec: Tensor | None = None, has_codec: Tensor | None = None) -> Tensor:
        """Augment a batch. x: (B, T) in [-1, 1]; x_codec: (B, T) codec versions where ``has_codec``
        (B,) bool is true. Returns (B, T) in [-1, 1]."""
        cfg, gen, batch = self.cfg, self.gen, x.shape[0]
        if x_codec is not None and has_codec is not None and cfg.codec_prob > 0:
            use = (_pick(cfg.codec_prob, batch, gen) & has_codec.cpu()).to(x.device)
            x = torch.where(use.unsqueeze(1), x_codec, x)
        x = x.clone()
        if cfg.detune_prob > 0 and cfg.detune_cents > 0:
            use = _pick(cfg.detune_prob, batch, gen)
            cents = (torch.rand(batch, generator=gen) * 2 - 1) * cfg.detune_cents
            if use.any():
                x[use.to(x.device)] = detune(x[use.to(x.device)], cents[use])
        if cfg.room_prob > 0 and len(self.rirs):
            use = _pick(cfg.room_prob, batch, gen)
            which = torch.randint(len(self.rirs), (batch,), generator=gen)
            if use.any():
                x[use.to(x.device)] = reverberate(x[use.to(x.device)], self.rirs[which[use]])
        if cfg.eq_prob > 0:
            use = _pick(cfg.eq_prob, batch, gen)
            if use.any():
                x[use.to(x.device)] = equalise(x[use.to(x.device)], self.sample_rate, cfg, gen)
        gains = 10 ** ((torch.rand(batch, 1, generator=gen) * 2 - 1) * cfg.gain_db / 20)
        x = x * gains.to(x.device)
        if cfg.noise_prob > 0:
            use = _pick(cfg.noise_prob, batch, gen)
            low, high = cfg.noise_snr_db
            snr = low + torch.rand(batch, generator=gen) * (high - low)
            slope = self.slopes[torch.randint(len(self.slopes), (batch,), generator=gen)]
            if use.any():
                idx = use.to(x.device)
                x[idx] = add_noise(x[idx], snr[use], slope[use], gen)
        x = shift(x, int(cfg.shift_seconds * self.sample_rate), gen)
        return x.clamp(-1.0, 1.0)
