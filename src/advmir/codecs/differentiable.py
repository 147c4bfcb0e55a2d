"""Random codec-like and room transformations in torch, for EOT (expectation over transformation) attacks.

An EOT attack averages the loss gradient over random draws of a transformation, so that its
adversarial examples survive the transformation (Athalye et al., "Synthesizing robust adversarial
examples", ICML 2018, https://arxiv.org/abs/1707.07397). Everything here maps a batch (B, T) of
float waveforms to (B, T) and draws fresh random parameters per example and per call from its own
seeded generator:

- :class:`CodecProxy`: a differentiable stand-in for a perceptual codec: a random low-pass, and
  quantisation of the STFT with a step that follows the local spectral envelope (noise shaped like
  the signal, as a masking model would allow) at a random noise-to-signal ratio; the rounding is
  straight-through (forward rounds, backward is the identity), so small coefficients vanish as in a
  real codec while the gradient still flows.
- :class:`RealCodec`: the real codec (ffmpeg round trip via :class:`~advmir.codecs.CodecEngine`)
  forward, identity backward (BPDA / straight-through). Exact but slow (a CPU round trip per call).
- :class:`RoomChannel`: the over-the-air channel of :mod:`advmir.codecs.room` (RIR, noise at the
  set SNR, loudspeaker+microphone band-pass, level match) with its own bank of rooms: built from the
  evaluation setting but another seed, so EOT never sees the rooms it is scored in.
- :class:`RandomTransform`: picks one of the above (or the identity) per example.

Usage by an attack::

    from advmir.codecs.differentiable import build_random_transform
    transform = build_random_transform(16000, rooms=config["codecs"]["rooms"], seed=0)
    loss = sum(F.cross_entropy(model(transform(x_adv)), y) for _ in range(k)) / k

``random_transform(x)`` is the same with defaults (codec proxy + one default room), for quick use.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advmir.codecs.registry import CodecSetting, parse_setting
from advmir.codecs.room import RoomSetting, band_response, fft_size, make_rooms, parse_room
from advmir.snr import amplitude_ratio

# Held-out rooms: the EOT bank of a room setting uses seed + this offset.
EOT_ROOM_SEED_OFFSET = 1000


def _uniform(generator: torch.Generator, n: int, low: float, high: float) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


class _StraightThrough(torch.autograd.Function):
    """Forward: ``value`` (computed outside autograd); backward: the gradient passes to ``x`` unchanged."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, value: Tensor) -> Tensor:
        return value

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def straight_through(x: Tensor, value: Tensor) -> Tensor:
    """``value`` in the forward pass, identity gradient to ``x`` in the backward pass."""
    return _StraightThrough.apply(x, value.to(dtype=x.dtype, device=x.device))


class _Seeded(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        self.generator = torch.Generator().manual_seed(int(seed))

    def reseed(self, seed: int) -> None:
        """Restart the random draws (an attack calls this with its own seed for reproducible runs)."""
        self.generator.manual_seed(int(seed))


class CodecProxy(_Seeded):
    """Differentiable perceptual-codec stand-in: (B, T) -> (B, T).

    Args:
        sample_rate: Hz.
        cutoff_hz: (low, high) range of the random low-pass edge (codecs at low bitrates cut the top band).
        nsr_db: (low, high) range of the random noise-to-signal ratio of the quantisation, in dB. The
            default gives an SNR of 13-27 dB (10th-90th percentile) on synth_notes test clips, the
            range real codecs give there (Opus 12 kbps about 13 dB, MP3 32-128 kbps about 24-25 dB,
            AAC 32-64 kbps 23-27 dB, Vorbis q0-q8 20-35 dB, medians).
        n_fft, hop: STFT frame and hop (Hann window).
        smooth_bins: width of the frequency smoothing of the magnitude that sets the step.
        seed: seed of the random draws.
    """

    def __init__(
        self,
        sample_rate: int,
        cutoff_hz: tuple[float, float] = (4000.0, 8000.0),
        nsr_db: tuple[float, float] = (-20.0, -3.0),
        n_fft: int = 512,
        hop: int = 128,
        smooth_bins: int = 9,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        nyquist = sample_rate / 2
        if not 0 < cutoff_hz[0] <= cutoff_hz[1] <= nyquist:
            raise ValueError(f"cutoff_hz must satisfy 0 < low <= high <= {nyquist:g}, got {cutoff_hz}")
        if nsr_db[0] > nsr_db[1]:
            raise ValueError(f"nsr_db must be (low, high), got {nsr_db}")
        self.sample_rate, self.cutoff_hz, self.nsr_db = sample_rate, cutoff_hz, nsr_db
        self.n_fft, self.hop, self.smooth_bins = n_fft, hop, smooth_bins
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("freqs", torch.fft.rfftfreq(n_fft, 1.0 / sample_rate), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        batch, length = x.shape
        cutoff = _uniform(self.generator, batch, *self.cutoff_hz).to(x.device, x.dtype)
        nsr = _uniform(self.generator, batch, *self.nsr_db).to(x.device, x.dtype)
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window.to(x.dtype), return_complex=True)
        # Smooth low-pass (half a kHz wide) so the gradient of the cutoff region is not a cliff.
        gain = torch.sigmoid((cutoff[:, None] - self.freqs.to(x.dtype)[None, :]) / 100.0)
        spec = spec * gain[:, :, None]
        envelope = (
            F.avg_pool1d(
                spec.abs().transpose(1, 2).reshape(-1, 1, spec.shape[1]),
                self.smooth_bins,
                stride=1,
                padding=self.smooth_bins // 2,
                count_include_pad=False,
            )
            .reshape(batch, spec.shape[2], spec.shape[1])
            .transpose(1, 2)
        )
        step = (envelope * (10 ** (nsr / 20) * np.sqrt(12.0))[:, None, None]).detach().clamp_min(1e-8)
        parts = torch.view_as_real(spec)
        rounded = torch.round(parts / step[..., None]) * step[..., None]
        parts = parts + (rounded - parts).detach()
        out = torch.istft(torch.view_as_complex(parts.contiguous()), self.n_fft, self.hop,
                          window=self.window.to(x.dtype), length=length)  # fmt: skip
        return out


class RealCodec(_Seeded):
    """A real codec round trip forward (one setting drawn per example), identity gradient backward.

    Args:
        settings: codec settings to draw from (e.g. the config's lossy settings).
        sample_rate: of the audio.
        engine: a :class:`~advmir.codecs.CodecEngine` (built on first use when None).
    """

    def __init__(
        self, settings: Sequence[CodecSetting], sample_rate: int, engine: Any = None, seed: int = 0
    ) -> None:
        super().__init__(seed)
        if not settings:
            raise ValueError("RealCodec needs at least one codec setting")
        self.settings, self.sample_rate, self.engine = list(settings), sample_rate, engine

    def forward(self, x: Tensor) -> Tensor:
        if self.engine is None:
            from advmir.codecs.engine import CodecEngine

            self.engine = CodecEngine(workers=2, batch_size=16)
        choice = torch.randint(len(self.settings), (x.shape[0],), generator=self.generator)
        audio = x.detach().clamp(-1, 1).cpu().numpy().astype(np.float32)
        out = np.empty_like(audio)
        for k, setting in enumerate(self.settings):
            idx = np.flatnonzero(choice.numpy() == k)
            if idx.size:
                out[idx] = self.engine.roundtrip(audio[idx], self.sample_rate, setting).decoded
        return straight_through(x, torch.from_numpy(out))


def apply_channel_torch(
    x: Tensor, rirs: Tensor, noise: Tensor, snr_db: Tensor, band: Tensor, n_fft: int
) -> Tensor:
    """Batched, differentiable twin of :func:`advmir.codecs.room.apply_channel`.

    Args:
        x: (B, T) clips; rirs: (B, L) aligned impulse responses; noise: (B, T) unit white noise;
        snr_db: (B,); band: (n_fft // 2 + 1,) zero-phase band-pass magnitude.
    """
    length = x.shape[1]
    reverberant = torch.fft.irfft(torch.fft.rfft(x, n_fft) * torch.fft.rfft(rirs, n_fft), n_fft)[:, :length]
    level = reverberant.pow(2).mean(dim=1, keepdim=True).sqrt()
    recorded = reverberant + noise * level * amplitude_ratio(snr_db[:, None])
    filtered = torch.fft.irfft(torch.fft.rfft(recorded, n_fft) * band, n_fft)[:, :length]
    rms_in = x.pow(2).mean(dim=1, keepdim=True).sqrt()
    rms_out = filtered.pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(1e-12)
    return filtered * rms_in / rms_out


class RoomChannel(_Seeded):
    """Over-the-air channel with a bank of rooms: (B, T) -> (B, T), differentiable.

    Args:
        setting: a room setting (its ranges, SNR and band); its rooms are drawn with its own seed, so
            pass a setting with another seed than the evaluation (see :func:`build_random_transform`).
        sample_rate: of the audio.
        snr_db: optional (low, high) range of a random SNR instead of the setting's fixed one.
    """

    def __init__(
        self, setting: RoomSetting, sample_rate: int, snr_db: tuple[float, float] | None = None, seed: int = 0
    ) -> None:
        super().__init__(seed)
        rirs, _ = make_rooms(setting, sample_rate)
        bank = torch.zeros(len(rirs), max(len(r) for r in rirs))
        for k, rir in enumerate(rirs):
            bank[k, : len(rir)] = torch.from_numpy(rir)
        self.register_buffer("rirs", bank, persistent=False)
        self.setting, self.sample_rate = setting, sample_rate
        self.snr_db = snr_db or (setting.snr_db, setting.snr_db)
        self._bands: dict[int, Tensor] = {}

    def _band(self, n_fft: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        if n_fft not in self._bands:
            self._bands[n_fft] = torch.from_numpy(
                band_response(n_fft, self.sample_rate, self.setting.band_hz)
            )
        return self._bands[n_fft].to(device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        batch, length = x.shape
        n_fft = fft_size(length + self.rirs.shape[1] + 2048)
        index = torch.randint(self.rirs.shape[0], (batch,), generator=self.generator)
        noise = torch.randn(batch, length, generator=self.generator).to(x.device, x.dtype)
        snr = _uniform(self.generator, batch, *self.snr_db).to(x.device, x.dtype)
        rirs = self.rirs[index.to(self.rirs.device)].to(x.dtype)
        return apply_channel_torch(x, rirs, noise, snr, self._band(n_fft, x.device, x.dtype), n_fft)


class RandomTransform(_Seeded):
    """One random transformation per example: (B, T) -> (B, T).

    Args:
        transforms: name -> module mapping (B, T) -> (B, T).
        weights: name -> relative probability (default: equal).
        p_identity: probability of leaving an example unchanged.
        seed: seed of the choices; :meth:`reseed` reseeds this and every member.
    """

    def __init__(
        self,
        transforms: Mapping[str, nn.Module],
        weights: Mapping[str, float] | None = None,
        p_identity: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        if not transforms and p_identity <= 0:
            raise ValueError("RandomTransform needs at least one transformation or p_identity > 0")
        if not 0 <= p_identity <= 1:
            raise ValueError(f"p_identity must be in [0, 1], got {p_identity}")
        self.names = list(transforms)
        self.members = nn.ModuleDict(dict(transforms))
        raw = torch.tensor([float((weights or {}).get(n, 1.0)) for n in self.names], dtype=torch.float64)
        if (raw < 0).any() or (len(raw) and raw.sum() <= 0):
            raise ValueError(f"weights must be >= 0 with a positive sum, got {dict(weights or {})}")
        probs = raw / raw.sum() * (1 - p_identity) if len(raw) else raw
        self.register_buffer(
            "probs", torch.cat([torch.tensor([p_identity], dtype=torch.float64), probs]), persistent=False
        )
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(int(seed))
        for k, name in enumerate(self.names):
            member = self.members[name]
            if hasattr(member, "reseed"):
                member.reseed(int(seed) + 7919 * (k + 1))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2:
            raise ValueError(f"expected a waveform batch (B, T), got shape {tuple(x.shape)}")
        choice = torch.multinomial(self.probs.cpu(), x.shape[0], replacement=True, generator=self.generator)
        out = x.clone()
        for k, name in enumerate(self.names, start=1):
            idx = torch.nonzero(choice == k).flatten().to(x.device)
            if idx.numel():
                out = out.index_copy(0, idx, self.members[name](x.index_select(0, idx)))
        return out


def build_random_transform(
    sample_rate: int,
    *,
    codec_proxy: bool | Mapping[str, Any] = True,
    rooms: Mapping[str, Mapping[str, Any]] | None = None,
    real_codecs: Mapping[str, Mapping[str, Any]] | None = None,
    weights: Mapping[str, float] | None = None,
    p_identity: float = 0.0,
    seed: int = 0,
) -> RandomTransform:
    """A :class:`RandomTransform` from config-like specs.

    Args:
        sample_rate: of the audio.
        codec_proxy: True for the default :class:`CodecProxy`, a dict of its keyword arguments, or False.
        rooms: ``codecs.rooms`` of the config (name -> room spec); each becomes a :class:`RoomChannel`
            whose rooms are drawn with the spec's seed + 1000 (held out from the evaluation rooms).
        real_codecs: ``codecs.settings`` (name -> codec spec) to use straight-through (slow); lossless
            settings are skipped.
        weights: member name -> relative probability; members are ``codec_proxy``, ``real_codec`` and
            ``room:NAME``.
        p_identity: probability of no transformation.
        seed: seed of every random draw.
    """
    members: dict[str, nn.Module] = {}
    if codec_proxy:
        kwargs = dict(codec_proxy) if isinstance(codec_proxy, Mapping) else {}
        members["codec_proxy"] = CodecProxy(sample_rate, **kwargs)
    for name, spec in (rooms or {}).items():
        setting = parse_room(name, spec, sample_rate)
        held_out = dataclasses.replace(setting, seed=setting.seed + EOT_ROOM_SEED_OFFSET)
        members[f"room:{name}"] = RoomChannel(held_out, sample_rate)
    if real_codecs:
        settings = [parse_setting(n, s, sample_rate) for n, s in real_codecs.items()]
        lossy = [s for s in settings if not s.lossless]
        if lossy:
            members["real_codec"] = RealCodec(lossy, sample_rate)
    return RandomTransform(members, weights=weights, p_identity=p_identity, seed=seed)


_DEFAULTS: dict[int, RandomTransform] = {}


def random_transform(x: Tensor, sample_rate: int = 16000) -> Tensor:
    """Random codec-like or room transformation of every clip of ``x`` (B, T) -> (B, T), differentiable.

    Uses a default :class:`RandomTransform` (codec proxy + a default room, seed 0), built once per
    sample rate. For control over the draws build one with :func:`build_random_transform`.
    """
    if sample_rate not in _DEFAULTS:
        _DEFAULTS[sample_rate] = build_random_transform(sample_rate, rooms={"room": {}}, seed=0)
    return _DEFAULTS[sample_rate].to(x.device)(x)
