"""The codecs this stage knows, the settings each can honour, and the ffmpeg options that realise them.

A *codec setting* is one named entry of ``codecs.settings`` in the config, e.g.
``mp3_128k: {codec: mp3, bitrate_kbps: 128}``; its name is the ``{codec}`` wildcard of the
workflow. Every setting is checked here before anything is encoded: a setting the encoder
would silently change (LAME writes 160 kbps when asked for 320 kbps at 16 kHz) is refused
with a message that names the codec, the setting and what to do instead. After encoding, the
achieved bitrate is measured from the bitstream (see :mod:`advmir.codecs.engine`), so a
setting is never relabelled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from advmir.errors import InputError


class CodecError(InputError, ValueError):
    """Base class of codec configuration errors."""


class UnknownCodecError(CodecError):
    """A setting names a codec this stage does not know."""


class CodecSettingError(CodecError):
    """A setting asks a codec for something it cannot honour."""


# Sample rates and CBR bitrates of MPEG audio layer III. MPEG-1 (32-48 kHz) goes to 320 kbps;
# MPEG-2/2.5 (8-24 kHz) stops at 160 kbps, and LAME silently writes 160 kbps when asked for more.
MP3_MPEG1_RATES = (32000, 44100, 48000)
MP3_MPEG2_RATES = (8000, 11025, 12000, 16000, 22050, 24000)
MP3_MPEG1_KBPS = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
MP3_MPEG2_KBPS = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
# Measured with the static ffmpeg of imageio-ffmpeg on note clips: the native AAC encoder
# delivers about 4 bits per mono sample at most (64 kbps at 16 kHz: asking 80 or 96 kbps still
# gives about 66 kbps). libopus writes 4.6 kbps when asked for 1 kbps, refuses more than
# 256 kbps for mono, and below about 10 kbps switches to narrowband SILK, whose decoded output is
# shifted by about 2 samples (not sample-aligned); 10 kbps is the lowest setting accepted here (wideband,
# best lag 0 on 40 note clips; 8 kbps was 1 sample off).
AAC_MAX_BITS_PER_SAMPLE = 4.0
OPUS_KBPS = (10, 256)
VORBIS_QUALITY = (-1.0, 10.0)
# A setting is honoured when the median bitrate of its audio packets (bytes * 8 / clip duration,
# container and codec headers left out) is at least this fraction of the request.
HONOUR_FRACTION = 0.85


@dataclass(frozen=True)
class CodecInfo:
    """How one codec is driven through ffmpeg: encoder, container, and the decoder named when reading."""

    name: str
    title: str
    encoder: str
    muxer: str
    demuxer: str
    decoder: str
    extension: str
    lossless: bool
    takes: str  # "bitrate", "quality" or "none"


CODECS: dict[str, CodecInfo] = {
    "mp3": CodecInfo("mp3", "MP3 (LAME)", "libmp3lame", "mp3", "mp3", "mp3float", "mp3", False, "bitrate"),
    # MP4 (not ADTS): its edit list carries the 1024-sample priming, so decoding is sample-aligned.
    # Vorbis in WebM, not Ogg: ffmpeg's Ogg demuxer drops the last 256 samples of some one-page
    # streams (the granule position is right; seen at q2 and q4 on note clips). Opus is decoded by
    # ffmpeg's own decoder: libopus's decoder shifts low-bitrate (SILK, hybrid) output by about one
    # sample at 12-32 kbps; ffmpeg's gives lag 0 there.
    "aac": CodecInfo("aac", "AAC (ffmpeg)", "aac", "ipod", "mov", "aac", "m4a", False, "bitrate"),
    "vorbis": CodecInfo(
        "vorbis", "Vorbis", "libvorbis", "webm", "matroska", "vorbis", "webm", False, "quality"
    ),
    "opus": CodecInfo("opus", "Opus", "libopus", "opus", "ogg", "opus", "opus", False, "bitrate"),
    "flac": CodecInfo("flac", "FLAC", "flac", "flac", "flac", "flac", "flac", True, "none"),
}


@dataclass(frozen=True)
class CodecSetting:
    """One validated codec setting.

    Attributes:
        name: the config key and ``{codec}`` wildcard, e.g. ``mp3_128k``.
        codec: a key of :data:`CODECS`.
        bitrate_kbps: requested bitrate (mp3, aac, opus), else None.
        quality: requested quality (vorbis, -1..10), else None.
        sample_rate: rate the codec runs at; None means the audio's own rate. Audio at another
            rate is resampled (soxr) before encoding and back after decoding.
    """

    name: str
    codec: str
    bitrate_kbps: int | None = None
    quality: float | None = None
    sample_rate: int | None = None

    @property
    def info(self) -> CodecInfo:
        return CODECS[self.codec]

    @property
    def lossless(self) -> bool:
        return self.info.lossless

    def codec_rate(self, audio_rate: int) -> int:
        """Sample rate the encoder runs at for audio at ``audio_rate``."""
        return int(self.sample_rate or audio_rate)

    def label(self) -> str:
        """Human-readable setting, e.g. ``MP3 (LAME) 128 kbps``."""
        parts = [self.info.title]
        if self.bitrate_kbps is not None:
            parts.append(f"{self.bitrate_kbps} kbps")
        if self.quality is not None:
            parts.append(f"q{self.quality:g}")
        if self.sample_rate is not None:
            parts.append(f"@ {self.sample_rate / 1000:g} kHz")
        return " ".join(parts)

    def encoder_options(self) -> list[str]:
        """ffmpeg output options of the encoder (the same for pydub's export and the batch engine).

        ``-fflags +bitexact`` keeps encoder version strings and random Ogg serial numbers out of
        the bitstream, so the same audio always gives the same bytes.
        """
        opts = ["-c:a", self.info.encoder]
        if self.codec == "mp3":
            opts += ["-b:a", f"{self.bitrate_kbps}k", "-id3v2_version", "0", "-write_xing", "1"]
        elif self.codec == "aac":
            opts += ["-b:a", f"{self.bitrate_kbps}k"]
        elif self.codec == "opus":
            opts += ["-b:a", f"{self.bitrate_kbps}k"]
        elif self.codec == "vorbis":
            opts += ["-q:a", f"{self.quality:g}"]
        elif self.codec == "flac":
            # 32-bit FLAC (experimental in ffmpeg's encoder) keeps every bit of the 32-bit input,
            # so the lossless control reproduces float audio to within 2**-32.
            opts += ["-sample_fmt", "s32", "-bits_per_raw_sample", "32", "-strict", "experimental"]
        return [*opts, "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact"]

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _fail(name: str, codec: str, message: str) -> CodecSettingError:
    return CodecSettingError(f"codec setting {name!r} ({codec}): {message}")


def parse_setting(name: str, spec: Mapping[str, Any], audio_rate: int | None = None) -> CodecSetting:
    """Validate one config entry and return it as a :class:`CodecSetting`.

    Args:
        name: the setting's name (config key).
        spec: ``{codec: ..., bitrate_kbps: ..., quality: ..., sample_rate: ...}``.
        audio_rate: sample rate of the audio to encode; needed to check a setting without its own
            ``sample_rate`` (the codec then runs at the audio's rate). None skips rate checks.

    Raises:
        UnknownCodecError: the codec is not one of :data:`CODECS`.
        CodecSettingError: the codec cannot take the setting; the message says what can.
    """
    spec = dict(spec)
    codec = spec.pop("codec", None)
    if codec not in CODECS:
        raise UnknownCodecError(
            f"codec setting {name!r}: unknown codec {codec!r}; known codecs: {sorted(CODECS)}"
        )
    info = CODECS[codec]
    bitrate = spec.pop("bitrate_kbps", None)
    quality = spec.pop("quality", None)
    rate = spec.pop("sample_rate", None)
    if spec:
        raise _fail(
            name, codec, f"unknown keys {sorted(spec)}; allowed: codec, bitrate_kbps, quality, sample_rate"
        )
    if info.takes == "bitrate" and bitrate is None:
        raise _fail(name, codec, f"{info.title} needs bitrate_kbps")
    if info.takes != "bitrate" and bitrate is not None:
        raise _fail(
            name,
            codec,
            f"{info.title} takes no bitrate_kbps" + (" (use quality)" if codec == "vorbis" else ""),
        )
    if info.takes == "quality" and quality is None:
        raise _fail(
            name, codec, f"{info.title} needs quality in [{VORBIS_QUALITY[0]:g}, {VORBIS_QUALITY[1]:g}]"
        )
    if info.takes != "quality" and quality is not None:
        raise _fail(name, codec, f"{info.title} takes no quality")
    if bitrate is not None:
        if isinstance(bitrate, bool) or not float(bitrate).is_integer() or bitrate <= 0:
            raise _fail(name, codec, f"bitrate_kbps must be a positive whole number, got {bitrate!r}")
        bitrate = int(bitrate)
    if rate is not None:
        if isinstance(rate, bool) or not float(rate).is_integer() or rate <= 0:
            raise _fail(name, codec, f"sample_rate must be a positive whole number of Hz, got {rate!r}")
        rate = int(rate)
    setting = CodecSetting(
        name=name,
        codec=codec,
        bitrate_kbps=bitrate,
        quality=None if quality is None else float(quality),
        sample_rate=rate,
    )
    check_setting(setting, audio_rate)
    return setting


def check_setting(setting: CodecSetting, audio_rate: int | None = None) -> None:
    """Raise CodecSettingError when the codec cannot honour ``setting`` for audio at ``audio_rate``."""
    name, codec = setting.name, setting.codec
    rate = setting.sample_rate or audio_rate
    kbps = setting.bitrate_kbps
    if codec == "mp3":
        if kbps > max(MP3_MPEG1_KBPS):
            raise _fail(
                name, codec, f"MP3 cannot take {kbps} kbps: the format stops at 320 kbps (at 32-48 kHz)"
            )
        if kbps < min(MP3_MPEG2_KBPS):
            raise _fail(
                name, codec, f"MP3 cannot take {kbps} kbps: the lowest MP3 bitrate is 8 kbps (at <= 24 kHz)"
            )
        if rate is None:
            return
        if rate not in MP3_MPEG1_RATES + MP3_MPEG2_RATES:
            raise _fail(
                name,
                codec,
                f"MP3 cannot run at {rate} Hz; its sample rates are {MP3_MPEG2_RATES + MP3_MPEG1_RATES}",
            )
        allowed = MP3_MPEG1_KBPS if rate in MP3_MPEG1_RATES else MP3_MPEG2_KBPS
        if kbps not in allowed:
            hint = ""
            if rate in MP3_MPEG2_RATES and kbps > max(MP3_MPEG2_KBPS) and kbps in MP3_MPEG1_KBPS:
                hint = (
                    f"; LAME caps MP3 at {max(MP3_MPEG2_KBPS)} kbps below 32 kHz and would silently write "
                    f"{max(MP3_MPEG2_KBPS)} kbps. Add `sample_rate: 44100` to encode {kbps} kbps at 44.1 kHz"
                )
            raise _fail(
                name,
                codec,
                f"MP3 at {rate} Hz cannot take {kbps} kbps; valid CBR bitrates there: {allowed}{hint}",
            )
    elif codec == "aac":
        if rate is not None and rate not in AAC_RATES:
            raise _fail(name, codec, f"AAC cannot run at {rate} Hz; its sample rates are {AAC_RATES}")
        if kbps < 8:
            raise _fail(name, codec, f"AAC cannot take {kbps} kbps; the lowest is 8 kbps")
        if rate is not None:
            limit = int(AAC_MAX_BITS_PER_SAMPLE * rate / 1000)
            if kbps > limit:
                raise _fail(
                    name,
                    codec,
                    f"ffmpeg's AAC encoder cannot deliver {kbps} kbps at {rate} Hz (at most about {limit} "
                    "kbps for mono there; more is clamped); lower the bitrate or add `sample_rate: 44100`",
                )
    elif codec == "opus":
        if rate is not None and rate not in OPUS_RATES:
            raise _fail(name, codec, f"Opus cannot run at {rate} Hz; its sample rates are {OPUS_RATES}")
        low, high = OPUS_KBPS
        if not low <= kbps <= high:
            raise _fail(
                name,
                codec,
                f"Opus cannot take {kbps} kbps; {low} to {high} kbps is supported for mono (libopus writes "
                "more than asked below 6 kbps, drops to narrowband below 10 kbps where its output is "
                "not sample-aligned, and refuses more than 256 kbps)",
            )
    elif codec == "vorbis":
        low, high = VORBIS_QUALITY
        if not low <= setting.quality <= high:
            raise _fail(
                name, codec, f"Vorbis quality must be in [{low:g}, {high:g}], got {setting.quality:g}"
            )


def parse_settings(
    specs: Mapping[str, Mapping[str, Any]], audio_rate: int | None = None
) -> dict[str, CodecSetting]:
    """Validate every entry of ``codecs.settings``; raise one CodecError listing every problem."""
    settings, problems = {}, []
    for name, spec in specs.items():
        try:
            settings[name] = parse_setting(name, spec, audio_rate)
        except CodecError as exc:
            problems.append(str(exc))
    if problems:
        raise CodecSettingError("invalid codec settings:\n  - " + "\n  - ".join(problems))
    return settings


def honoured(setting: CodecSetting, achieved_kbps: float, frame_kbps: Sequence[int] | None = None) -> bool:
    """Whether a bitstream honours the request (always True for quality-driven and lossless codecs).

    The one rule, for one clip and for a whole setting (:func:`honour_problem`): an MP3 stream whose
    frame headers were read (``frame_kbps``, each frame's bitrate) honours it when every frame says
    the requested bitrate (CBR); any other, when ``achieved_kbps`` (its audio packets' bitrate) is at
    least :data:`HONOUR_FRACTION` of the request.
    """
    if setting.codec == "mp3" and frame_kbps is not None:
        return bool(frame_kbps) and all(f == setting.bitrate_kbps for f in frame_kbps)
    if setting.bitrate_kbps is None:
        return True
    return achieved_kbps >= HONOUR_FRACTION * setting.bitrate_kbps


def honour_problem(setting: CodecSetting, payload_kbps: np.ndarray, clip_ok: np.ndarray) -> str | None:
    """Why the bitstreams of a setting's clips do not honour it (None when they do).

    Args:
        setting: the codec setting.
        payload_kbps: each clip's audio-packet bitrate, shape (N,).
        clip_ok: whether each clip honours it by :func:`honoured`, shape (N,) bool; for MP3 the
            setting needs every clip, for the others the median bitrate must pass.
    """
    if setting.bitrate_kbps is None:
        return None
    if setting.codec == "mp3" and not clip_ok.all():
        bad = int(np.argmin(clip_ok))
        return (
            f"codec setting {setting.name!r} (mp3): the MP3 frame headers of {int((~clip_ok).sum())} clip(s) "
            f"(first: clip {bad}) do not say {setting.bitrate_kbps} kbps; LAME did not honour the setting. "
            "Check the sample rate (LAME caps MP3 at 160 kbps below 32 kHz)."
        )
    median_kbps = float(np.median(payload_kbps))
    if not honoured(setting, median_kbps):
        return (
            f"codec setting {setting.name!r} ({setting.codec}): the audio packets carry {median_kbps:.1f} "
            f"kbps (median over {len(payload_kbps)} clips, bytes * 8 / duration), less than "
            f"{HONOUR_FRACTION:.0%} of the requested {setting.bitrate_kbps} kbps: the encoder cannot honour "
            "this setting here. Lower "
            "bitrate_kbps or raise sample_rate; the setting is not relabelled."
        )
    return None
