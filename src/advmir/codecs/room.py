"""Over-the-air simulation: a small loudspeaker plays the clip into a room and a microphone records it.

One *room setting* (an entry of ``codecs.rooms`` in the config; its name is used like a codec
setting's) describes a seeded bank of ``n_rooms`` shoebox rooms (pyroomacoustics image-source
impulse responses) with random dimensions, wall absorption and loudspeaker-microphone distance
within the given ranges. Each clip is played in one room of the bank:

1. convolve with the room impulse response (RIR), its direct path moved to sample 0 so the
   recording stays sample-aligned with the original (the propagation delay is dropped, the
   reverberation is kept; the tail past the clip's end is cut as a fixed-length recorder would);
2. add white noise at ``snr_db`` below the reverberant signal (room and microphone noise);
3. band-limit as a small loudspeaker and microphone would (``band_hz``: zero-phase Butterworth
   magnitude, order 4 at each edge);
4. match the RMS level to the original (a recorder's gain), so only the channel differs.

The room and the noise of a clip depend only on the seed and the clip's dataset row, so the clean
and the adversarial version of one example meet the same room and the same noise.
:mod:`advmir.codecs.differentiable` applies the same channel in torch, with its own rooms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from advmir.codecs.registry import CodecSettingError
from advmir.snr import amplitude_ratio

SPEED_OF_SOUND = 343.0
BAND_ORDER = 4
MAX_RIR_SECONDS = 1.5


@dataclass(frozen=True)
class RoomSetting:
    """A validated room setting.

    Attributes:
        name: config key, used like a codec setting's name (``{codec}`` wildcard).
        n_rooms: size of the seeded bank of rooms a clip is played in.
        room_dim_m: ((x, y, z) smallest, (x, y, z) largest) room dimensions in metres.
        absorption: (low, high) energy absorption of the walls (0 = mirror, 1 = open air).
        distance_m: (low, high) loudspeaker-microphone distance in metres.
        snr_db: additive noise level below the reverberant signal, in dB.
        band_hz: (low, high) -3 dB edges of the loudspeaker + microphone band-pass.
        max_order: cap on the image-source reflection order (the order is otherwise chosen, by
            Sabine's formula, to cover the room's reverberation time).
        seed: seed of the room bank and of every clip's room choice and noise.
    """

    name: str
    n_rooms: int = 6
    room_dim_m: tuple[tuple[float, float, float], tuple[float, float, float]] = (
        (3.0, 3.0, 2.4),
        (8.0, 6.0, 3.5),
    )
    absorption: tuple[float, float] = (0.2, 0.6)
    distance_m: tuple[float, float] = (0.5, 2.0)
    snr_db: float = 30.0
    band_hz: tuple[float, float] = (200.0, 6000.0)
    max_order: int = 60
    seed: int = 0

    def label(self) -> str:
        return (
            f"room x{self.n_rooms}, {self.distance_m[0]:g}-{self.distance_m[1]:g} m, "
            f"SNR {self.snr_db:g} dB, {self.band_hz[0]:g}-{self.band_hz[1]:g} Hz"
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["room_dim_m"] = [list(v) for v in self.room_dim_m]
        for key in ("absorption", "distance_m", "band_hz"):
            out[key] = list(out[key])
        return out


def _range(name: str, key: str, value: Any, low: float, high: float) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise CodecSettingError(f"room setting {name!r}: {key} must be [low, high], got {value!r}") from None
    if not low <= a <= b <= high:
        raise CodecSettingError(
            f"room setting {name!r}: {key} must satisfy {low:g} <= low <= high <= {high:g}, got {value!r}"
        )
    return a, b


def parse_room(name: str, spec: Mapping[str, Any], sample_rate: int | None = None) -> RoomSetting:
    """Validate one ``codecs.rooms`` entry; ``sample_rate`` (if given) bounds ``band_hz``."""
    spec = dict(spec)
    known = {f for f in RoomSetting.__dataclass_fields__ if f != "name"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise CodecSettingError(f"room setting {name!r}: unknown keys {unknown}; allowed: {sorted(known)}")
    default = RoomSetting(name)
    n_rooms = int(spec.get("n_rooms", default.n_rooms))
    if n_rooms < 1:
        raise CodecSettingError(f"room setting {name!r}: n_rooms must be >= 1, got {n_rooms}")
    dims = spec.get("room_dim_m", default.room_dim_m)
    try:
        small, large = (tuple(float(v) for v in corner) for corner in dims)
        if len(small) != 3 or len(large) != 3:
            raise ValueError
    except (TypeError, ValueError):
        raise CodecSettingError(
            f"room setting {name!r}: room_dim_m must be [[x, y, z] smallest, [x, y, z] largest], got {dims!r}"
        ) from None
    if any(lo < 1.5 or lo > hi for lo, hi in zip(small, large, strict=True)):
        raise CodecSettingError(
            f"room setting {name!r}: room_dim_m needs 1.5 m <= smallest <= largest per axis, got {dims!r}"
        )
    absorption = _range(name, "absorption", spec.get("absorption", default.absorption), 0.01, 1.0)
    distance = _range(name, "distance_m", spec.get("distance_m", default.distance_m), 0.1, 20.0)
    if distance[1] > min(small[:2]) - 0.6:
        raise CodecSettingError(
            f"room setting {name!r}: distance_m up to {distance[1]:g} m does not fit the smallest room "
            f"({small[0]:g} x {small[1]:g} m, 0.3 m from the walls); shorten the distance or enlarge "
            "room_dim_m"
        )
    nyquist = sample_rate / 2 if sample_rate else 1e6
    band = _range(name, "band_hz", spec.get("band_hz", default.band_hz), 1.0, nyquist)
    snr = float(spec.get("snr_db", default.snr_db))
    if not -20 <= snr <= 120:
        raise CodecSettingError(f"room setting {name!r}: snr_db must be in [-20, 120] dB, got {snr}")
    max_order = int(spec.get("max_order", default.max_order))
    if not 0 <= max_order <= 150:
        raise CodecSettingError(f"room setting {name!r}: max_order must be in [0, 150], got {max_order}")
    seed = int(spec.get("seed", default.seed))
    return RoomSetting(name, n_rooms, (small, large), absorption, distance, snr, band, max_order, seed)


def band_response(
    n_fft: int, sample_rate: int, band_hz: Sequence[float], order: int = BAND_ORDER
) -> np.ndarray:
    """Zero-phase band-pass magnitude on the ``rfft`` bins of length ``n_fft``: (n_fft // 2 + 1,).

    Butterworth magnitude of ``order`` at each edge (-3 dB at ``band_hz``), no phase: the filtered
    clip stays sample-aligned.
    """
    low, high = band_hz
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    with np.errstate(divide="ignore"):
        highpass = 1.0 / np.sqrt(1.0 + (low / np.maximum(freqs, 1e-9)) ** (2 * order))
    lowpass = 1.0 / np.sqrt(1.0 + (freqs / high) ** (2 * order))
    return highpass * lowpass


def fft_size(n: int) -> int:
    """A fast FFT length >= n (5-smooth)."""
    from scipy.fft import next_fast_len

    return int(next_fast_len(n, real=True))


def make_rooms(setting: RoomSetting, sample_rate: int) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """The seeded bank of rooms: aligned RIRs (direct path at sample 0) and each room's description."""
    import pyroomacoustics as pra

    rng = np.random.default_rng([setting.seed, 0x200])
    small, large = (np.array(v) for v in setting.room_dim_m)
    rirs, rooms = [], []
    for index in range(setting.n_rooms):
        dims = rng.uniform(small, large)
        absorption = float(rng.uniform(*setting.absorption))
        distance = float(rng.uniform(*setting.distance_m))
        for _ in range(1000):
            mic = np.array(
                [rng.uniform(0.5, dims[0] - 0.5), rng.uniform(0.5, dims[1] - 0.5), rng.uniform(1.0, 1.8)]
            )
            angle = rng.uniform(0, 2 * np.pi)
            source = mic + distance * np.array([np.cos(angle), np.sin(angle), 0.0])
            if np.all(source[:2] > 0.3) and np.all(source[:2] < dims[:2] - 0.3):
                break
        else:  # pragma: no cover - parse_room keeps the distance within the smallest room
            raise CodecSettingError(
                f"room setting {setting.name!r}: cannot place a {distance:.2f} m pair in {dims}"
            )
        volume, surface = (
            float(np.prod(dims)),
            2.0 * float(dims[0] * dims[1] + dims[0] * dims[2] + dims[1] * dims[2]),
        )
        rt60 = 0.161 * volume / (surface * absorption)
        _, order = pra.inverse_sabine(rt60, dims)
        order = int(min(order, setting.max_order))
        room = pra.ShoeBox(dims, fs=sample_rate, materials=pra.Material(absorption), max_order=order)
        room.add_source(source)
        room.add_microphone(mic)
        room.compute_rir()
        rir = np.asarray(room.rir[0][0], dtype=np.float64)
        direct = int(np.argmax(np.abs(rir)))
        rir = rir[direct : direct + int(MAX_RIR_SECONDS * sample_rate)]
        rirs.append((rir / rir[0]).astype(np.float32))
        rooms.append(
            {
                "room": index,
                "dim_x_m": round(float(dims[0]), 3),
                "dim_y_m": round(float(dims[1]), 3),
                "dim_z_m": round(float(dims[2]), 3),
                "absorption": round(absorption, 4),
                "distance_m": round(distance, 3),
                "rt60_sabine_s": round(rt60, 3),
                "max_order": order,
                "rir_samples": len(rir),
            }
        )
    return rirs, rooms


def clip_draws(setting: RoomSetting, key: int, length: int) -> tuple[int, np.ndarray]:
    """Room index and unit white noise (length,) of the clip with dataset row ``key``."""
    rng = np.random.default_rng([setting.seed, 0x300, int(key)])
    return int(rng.integers(setting.n_rooms)), rng.standard_normal(length)


def apply_channel(
    clip: np.ndarray, rir: np.ndarray, noise: np.ndarray, snr_db: float, band: np.ndarray, n_fft: int
) -> np.ndarray:
    """One clip (T,) through the channel: RIR, noise at ``snr_db``, band-pass, level matched. -> (T,)."""
    length = clip.shape[0]
    reverberant = np.fft.irfft(np.fft.rfft(clip, n_fft) * np.fft.rfft(rir, n_fft), n_fft)[:length]
    level = np.sqrt(np.mean(reverberant**2))
    recorded = reverberant + noise * level * amplitude_ratio(snr_db)
    filtered = np.fft.irfft(np.fft.rfft(recorded, n_fft) * band, n_fft)[:length]
    rms_in, rms_out = np.sqrt(np.mean(clip**2)), np.sqrt(np.mean(filtered**2))
    return filtered * (rms_in / rms_out if rms_out > 0 else 0.0)


def simulate(
    audio: np.ndarray, sample_rate: int, setting: RoomSetting, keys: Sequence[int]
) -> tuple[np.ndarray, list[dict[str, Any]], list[np.ndarray], list[dict[str, Any]]]:
    """Play every clip of ``audio`` (N, T) through the room channel.

    Args:
        keys: one integer per clip (its dataset row) that fixes its room and noise.

    Returns:
        recorded audio (N, T) float32 aligned to the input; one record per clip (room, SNR, ...);
        the bank's RIRs; the bank's room descriptions.
    """
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim != 2 or len(keys) != len(audio):
        raise ValueError(
            f"audio must be (N, T) with one key per clip, got {audio.shape} and {len(keys)} keys"
        )
    rirs, rooms = make_rooms(setting, sample_rate)
    length = audio.shape[1]
    n_fft = fft_size(length + max(len(r) for r in rirs) + 2048)
    band = band_response(n_fft, sample_rate, setting.band_hz)
    out = np.empty(audio.shape, dtype=np.float32)
    records = []
    for i, (clip, key) in enumerate(zip(audio, keys, strict=True)):
        index, noise = clip_draws(setting, key, length)
        out[i] = apply_channel(clip, rirs[index], noise, setting.snr_db, band, n_fft)
        records.append({"index": i, "key": int(key), **rooms[index], "snr_db": setting.snr_db})
    return out, records, rirs, rooms
