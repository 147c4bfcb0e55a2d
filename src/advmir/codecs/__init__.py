"""Lossy and lossless codecs (pydub over a static ffmpeg) and over-the-air simulation.

The codec stage (workflow/rules/codecs.smk) lives here too: its job grid (:mod:`advmir.codecs.plan`),
its (source, setting) jobs (:mod:`advmir.codecs.jobs`) and their commands (:mod:`advmir.codecs.cli`).

Light imports only (no torch): the codec jobs start fast. The differentiable stand-ins used by
EOT attacks live in :mod:`advmir.codecs.differentiable` (imports torch).
"""

from advmir.codecs.engine import ClipError, CodecEngine, FFmpegNotFoundError, find_ffmpeg, roundtrip_pydub
from advmir.codecs.registry import (
    CODECS,
    CodecError,
    CodecSetting,
    CodecSettingError,
    UnknownCodecError,
    parse_setting,
    parse_settings,
)

__all__ = [
    "CODECS",
    "ClipError",
    "CodecEngine",
    "CodecError",
    "CodecSetting",
    "CodecSettingError",
    "FFmpegNotFoundError",
    "UnknownCodecError",
    "find_ffmpeg",
    "parse_setting",
    "parse_settings",
    "roundtrip_pydub",
]
