"""Input-transformation defenses: a zoo model behind a transformation of its input, still a model.

A transformation defense maps the clip before the classifier sees it: ``defended(x) =
model(transform(x))``, waveform (B, T) in [-1, 1] in, logits (B, C) out, so every attack and every
later stage takes it unchanged. The kinds (``defenses.transforms.NAME.kind`` in the config):

- ``mp3``, ``aac``, ``vorbis``, ``opus``: a real codec round trip at one setting of the codec stage
  (``bitrate_kbps`` / ``quality`` / ``sample_rate``, checked by
  :func:`advmir.codecs.registry.parse_setting`, with its messages), through
  :class:`advmir.codecs.differentiable.RealCodec`: ffmpeg forward, identity backward (BPDA,
  Athalye et al. 2018). Deterministic.
- ``quantize``: rounding to ``bits`` bits (2**(bits-1) levels per polarity); straight-through
  gradient (BPDA with the identity).
- ``resample``: down to ``rate_hz`` and back up (torchaudio's windowed-sinc resampler):
  differentiable, no BPDA needed.
- ``lowpass``: zero every FFT bin above ``cutoff_hz`` (a brick-wall filter): differentiable.
- ``noise``: additive white Gaussian noise at ``snr_db`` below each clip's power: random.
- ``random``: a random combination per clip and per call: a codec bitrate drawn from
  ``bitrates_kbps`` of ``codec`` (real codec, BPDA), a gain drawn from ``gain_db`` (dB range), a
  circular shift of up to ``shift_ms`` (either sign): random.

Random kinds are attacked with EOT (expectation over transformation): the adaptive attacker sees
:class:`EOTModel`, the mean of the logits over ``eot_samples`` draws (:mod:`.transform_eval`).

This module holds the settings (:func:`parse_transform`, checked without building anything, so that
``snakemake -n`` refuses a bad one with the key and the allowed values) and the torch modules.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from advmir.codecs.differentiable import RealCodec, _Seeded, straight_through
from advmir.codecs.registry import CODECS, CodecSetting, parse_setting
from advmir.errors import InputError

CODEC_KINDS = tuple(k for k, info in CODECS.items() if not info.lossless)
KINDS = (*CODEC_KINDS, "quantize", "resample", "lowpass", "noise", "random")
RANDOM_KINDS = ("noise", "random")
#: keys of every kind beside ``kind`` and ``model``
KIND_KEYS: dict[str, tuple[str, ...]] = {
    **{k: ("bitrate_kbps", "quality", "sample_rate") for k in CODEC_KINDS},
    "quantize": ("bits",),
    "resample": ("rate_hz",),
    "lowpass": ("cutoff_hz",),
    "noise": ("snr_db",),
    "random": ("codec", "bitrates_kbps", "gain_db", "shift_ms"),
}
SECTION = "defenses.transforms"


class TransformConfigError(InputError, ValueError):
    """A transformation defense the stage cannot build; the message names the key and what it allows."""


@dataclass(frozen=True)
class TransformSetting:
    """One checked transformation defense (see the module docstring for the kinds and keys).

    Attributes:
        name: the config key. kind: one of :data:`KINDS`. model: the zoo model it wraps.
        codecs: the codec settings (one for a codec kind, one per bitrate for ``random``).
        params: the kind's other keys, resolved.
    """

    name: str
    kind: str
    model: str
    codecs: tuple[CodecSetting, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def random(self) -> bool:
        """The transformation draws fresh randomness per call (EOT is the adaptive attack)."""
        return self.kind in RANDOM_KINDS

    @property
    def bpda(self) -> bool:
        """Its backward pass is an approximation (straight-through), not the true gradient."""
        return self.kind in CODEC_KINDS or self.kind in ("quantize", "random")

    def label(self) -> str:
        """Human-readable, e.g. ``MP3 (LAME) 128 kbps`` or ``quantize 8 bits``."""
        if self.kind in CODEC_KINDS:
            return self.codecs[0].label()
        p = self.params
        return {
            "quantize": lambda: f"quantize {p['bits']} bits",
            "resample": lambda: f"resample {p['rate_hz'] / 1000:g} kHz",
            "lowpass": lambda: f"low-pass {p['cutoff_hz'] / 1000:g} kHz",
            "noise": lambda: f"noise {p['snr_db']:g} dB",
            "random": lambda: (
                f"random {p['codec']} {'/'.join(str(b) for b in p['bitrates_kbps'])} kbps, "
                f"gain {p['gain_db'][0]:g}..{p['gain_db'][1]:g} dB, shift <= {p['shift_ms']:g} ms"
            ),
        }[self.kind]()


def _number(where: str, key: str, value: Any, low: float, high: float, allowed: str) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if not ok or not low < float(value) < high:
        raise TransformConfigError(f"{where}: key {key!r} must be a number {allowed}, got {value!r}")
    return float(value)


def _integer(where: str, key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise TransformConfigError(
            f"{where}: key {key!r} must be an integer in [{low}, {high}], got {value!r}"
        )
    return int(value)


def parse_transform(
    name: str, spec: Mapping[str, Any], sample_rate: int, models: Any = None
) -> TransformSetting:
    """Check one ``defenses.transforms`` entry for audio at ``sample_rate``; ``models`` (names), when
    given, are the zoo models it may wrap. Raises :class:`TransformConfigError` or the codec stage's
    :class:`~advmir.codecs.registry.CodecError` (same checks, same messages)."""
    where = f"{SECTION}.{name}"
    if not isinstance(spec, Mapping):
        raise TransformConfigError(f"{where} must be a mapping with 'kind' and 'model', got {spec!r}")
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in KINDS:
        raise TransformConfigError(f"{where}: key 'kind' must be one of {list(KINDS)}, got {kind!r}")
    model = spec.pop("model", None)
    if not isinstance(model, str) or (models is not None and model not in models):
        allowed = sorted(models) if models is not None else "a zoo model name"
        raise TransformConfigError(f"{where}: key 'model' must be one of {allowed}, got {model!r}")
    unknown = sorted(set(spec) - set(KIND_KEYS[kind]))
    if unknown:
        raise TransformConfigError(
            f"{where}: unknown key(s) {unknown} for kind {kind!r}; "
            f"allowed: {['kind', 'model', *KIND_KEYS[kind]]}"
        )
    nyquist = sample_rate / 2
    if kind in CODEC_KINDS:
        setting = parse_setting(name, {"codec": kind, **spec}, sample_rate)
        return TransformSetting(name, kind, model, (setting,))
    params: dict[str, Any] = {}
    if kind == "quantize":
        params["bits"] = _integer(where, "bits", spec.get("bits"), 2, 16)
    elif kind == "resample":
        rate = spec.get("rate_hz")
        if isinstance(rate, bool) or not isinstance(rate, numbers.Integral) or not 1000 <= rate < sample_rate:
            raise TransformConfigError(
                f"{where}: key 'rate_hz' must be an integer in [1000, {sample_rate}) (below the audio's "
                f"{sample_rate} Hz), got {rate!r}"
            )
        params["rate_hz"] = int(rate)
    elif kind == "lowpass":
        params["cutoff_hz"] = _number(
            where, "cutoff_hz", spec.get("cutoff_hz"), 0, nyquist, f"in (0, {nyquist:g})"
        )
    elif kind == "noise":
        params["snr_db"] = _number(where, "snr_db", spec.get("snr_db"), 0, 100, "in (0, 100)")
    else:  # random
        codec = spec.get("codec", "mp3")
        if codec not in CODEC_KINDS:
            raise TransformConfigError(
                f"{where}: key 'codec' must be one of {list(CODEC_KINDS)}, got {codec!r}"
            )
        if CODECS[codec].takes != "bitrate":
            raise TransformConfigError(f"{where}: key 'codec' must be a codec with a bitrate, got {codec!r}")
        rates = spec.get("bitrates_kbps")
        if not isinstance(rates, list | tuple) or not rates:
            raise TransformConfigError(
                f"{where}: key 'bitrates_kbps' must be a non-empty list, got {rates!r}"
            )
        codecs = tuple(
            parse_setting(f"{name}[{k}]", {"codec": codec, "bitrate_kbps": b}, sample_rate)
            for k, b in enumerate(rates)
        )
        gain = spec.get("gain_db", [0.0, 0.0])
        if (
            not isinstance(gain, list | tuple)
            or len(gain) != 2
            or not all(isinstance(g, numbers.Real) and not isinstance(g, bool) for g in gain)
            or not -40 <= gain[0] <= gain[1] <= 0
        ):
            raise TransformConfigError(
                f"{where}: key 'gain_db' must be [low, high] with -40 <= low <= high <= 0 (no clipping), "
                f"got {gain!r}"
            )
        shift = spec.get("shift_ms", 0.0)
        if isinstance(shift, bool) or not isinstance(shift, numbers.Real) or not 0 <= shift <= 100:
            raise TransformConfigError(f"{where}: key 'shift_ms' must be a number in [0, 100], got {shift!r}")
        params = {
            "codec": codec,
            "bitrates_kbps": [int(c.bitrate_kbps or 0) for c in codecs],
            "gain_db": [float(gain[0]), float(gain[1])],
            "shift_ms": float(shift),
        }
        return TransformSetting(name, kind, model, codecs, params)
    return TransformSetting(name, kind, model, (), params)


def transform_problems(transforms: Mapping[str, Any], sample_rate: int, models: Any = None) -> list[str]:
    """Every problem of ``defenses.transforms`` (one message per bad entry)."""
    problems = []
    for name, spec in (transforms or {}).items():
        try:
            parse_transform(name, spec, sample_rate, models)
        except (InputError, ValueError) as exc:
            problems.append(str(exc))
    return problems


# ----------------------------------------------------------------------------------- the modules
class Quantize(nn.Module):
    """Rounding to ``bits`` bits: (B, T) -> (B, T); straight-through gradient."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.levels = float(2 ** (bits - 1))

    def forward(self, x: Tensor) -> Tensor:
        value = (torch.round(x.detach() * self.levels) / self.levels).clamp(-1.0, 1.0)
        return straight_through(x, value)


class Resample(nn.Module):
    """Down to ``rate_hz`` and back to ``sample_rate``: (B, T) -> (B, T); differentiable."""

    def __init__(self, sample_rate: int, rate_hz: int) -> None:
        super().__init__()
        self.sample_rate, self.rate_hz = int(sample_rate), int(rate_hz)

    def forward(self, x: Tensor) -> Tensor:
        import torchaudio.functional as AF

        down = AF.resample(x, self.sample_rate, self.rate_hz)
        up = AF.resample(down, self.rate_hz, self.sample_rate)
        length = x.shape[-1]
        if up.shape[-1] < length:
            up = torch.nn.functional.pad(up, (0, length - up.shape[-1]))
        return up[..., :length]


class LowPass(nn.Module):
    """Brick-wall low-pass at ``cutoff_hz`` (FFT bins above it zeroed): (B, T) -> (B, T); differentiable."""

    def __init__(self, sample_rate: int, cutoff_hz: float) -> None:
        super().__init__()
        self.sample_rate, self.cutoff_hz = int(sample_rate), float(cutoff_hz)

    def forward(self, x: Tensor) -> Tensor:
        length = x.shape[-1]
        spec = torch.fft.rfft(x, dim=-1)
        freqs = torch.fft.rfftfreq(length, 1.0 / self.sample_rate).to(x.device)
        return torch.fft.irfft(spec * (freqs <= self.cutoff_hz).to(spec.dtype), n=length, dim=-1)


class GaussianNoise(_Seeded):
    """White Gaussian noise at ``snr_db`` below each clip's power: (B, T) -> (B, T); random, seeded."""

    def __init__(self, snr_db: float, seed: int = 0) -> None:
        super().__init__(seed)
        self.snr_db = float(snr_db)

    def forward(self, x: Tensor) -> Tensor:
        noise = torch.randn(x.shape, generator=self.generator).to(x.device, x.dtype)
        rms = x.detach().pow(2).mean(dim=-1, keepdim=True).sqrt()
        return x + noise * rms * 10 ** (-self.snr_db / 20)


class RandomCombination(_Seeded):
    """Per clip and per call: gain from ``gain_db``, circular shift of up to ``shift_samples`` (either
    sign), then a real codec round trip at a bitrate drawn from ``codecs`` (BPDA): (B, T) -> (B, T)."""

    def __init__(
        self,
        codecs: tuple[CodecSetting, ...],
        sample_rate: int,
        gain_db: tuple[float, float],
        shift_samples: int,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        self.codec = RealCodec(list(codecs), sample_rate, seed=seed + 1)
        self.gain_db, self.shift_samples = gain_db, int(shift_samples)

    def reseed(self, seed: int) -> None:
        super().reseed(seed)
        self.codec.reseed(int(seed) + 1)

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[0]
        low, high = self.gain_db
        gain_db = low + (high - low) * torch.rand(batch, generator=self.generator, dtype=torch.float64)
        x = x * (10 ** (gain_db / 20)).to(x.device, x.dtype)[:, None]
        if self.shift_samples:
            shifts = torch.randint(
                -self.shift_samples, self.shift_samples + 1, (batch,), generator=self.generator
            )
            x = torch.stack([torch.roll(x[k], int(s)) for k, s in enumerate(shifts)])
        return self.codec(x)


def build_transform(
    setting: TransformSetting, sample_rate: int, seed: int = 0, engine: Any = None
) -> nn.Module:
    """The transformation (B, T) -> (B, T) of ``setting`` for audio at ``sample_rate``."""
    p = setting.params
    if setting.kind in CODEC_KINDS:
        return RealCodec(list(setting.codecs), sample_rate, engine=engine, seed=seed)
    if setting.kind == "quantize":
        return Quantize(p["bits"])
    if setting.kind == "resample":
        return Resample(sample_rate, p["rate_hz"])
    if setting.kind == "lowpass":
        return LowPass(sample_rate, p["cutoff_hz"])
    if setting.kind == "noise":
        return GaussianNoise(p["snr_db"], seed=seed)
    shift = round(p["shift_ms"] * sample_rate / 1000)
    module = RandomCombination(setting.codecs, sample_rate, tuple(p["gain_db"]), shift, seed=seed)
    if engine is not None:
        module.codec.engine = engine
    return module


class DefendedModel(nn.Module):
    """``model(transform(x))``: waveform (B, T) in [-1, 1] -> logits (B, C), a model like any other.

    Args:
        model: the undefended waveform classifier. transform: (B, T) -> (B, T).
        name: the defense's name. random: whether the transform draws randomness per call.
    """

    def __init__(
        self, model: nn.Module, transform: nn.Module, name: str = "defended", random: bool = False
    ) -> None:
        super().__init__()
        self.model, self.transform, self.name, self.random = model, transform, name, random
        self.classes = getattr(model, "classes", None)

    def reseed(self, seed: int) -> None:
        """Restart the transformation's random draws (no-op for a deterministic one)."""
        if hasattr(self.transform, "reseed"):
            self.transform.reseed(int(seed))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.transform(x))


class EOTModel(nn.Module):
    """Expectation over transformation of a random model: mean logits (B, C) over ``samples`` draws.

    The attack ascends a loss of the mean logits, whose gradient is the mean of the draws' gradients
    of the logits (Athalye et al. 2018's EOT on the expected output)."""

    def __init__(self, model: nn.Module, samples: int) -> None:
        super().__init__()
        if int(samples) < 1:
            raise TransformConfigError(f"eot_samples must be an integer >= 1, got {samples!r}")
        self.model, self.samples = model, int(samples)
        self.classes = getattr(model, "classes", None)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([self.model(x) for _ in range(self.samples)]).mean(dim=0)
