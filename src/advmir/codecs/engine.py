"""Encode -> bitstream -> decode round trips through ffmpeg, many clips per ffmpeg process.

The ffmpeg is pydub's converter, pointed at the static build that imageio-ffmpeg ships
(``AudioSegment.converter = imageio_ffmpeg.get_ffmpeg_exe()``). Starting one ffmpeg per clip and
per direction, as ``AudioSegment.export`` and ``from_file`` do, costs more than the coding
itself, so :class:`CodecEngine` hands a whole batch of clips to one ffmpeg process (one input
and one output per clip, all in a RAM-backed temporary folder) and runs ``workers`` such
processes at once. The encoder options are exactly those pydub's export is given in
:func:`roundtrip_pydub` (the tests check that both write the same bytes), so the batch path is
pydub's path without the per-clip start-up.

Alignment: every codec is written in a container that records its encoder delay and padding
(MP3 with the LAME/Xing header, which needs a seekable output file; AAC in MP4 with an edit
list; WebM for Vorbis; Ogg for Opus; FLAC), and ffmpeg trims both on decoding, so a decoded clip
starts at the original's first sample and has its length. Every decoded clip is checked to have the
original length; the tests check lag 0 by cross-correlation for every codec.

A clip that fails (ffmpeg error, wrong decoded length, non-finite samples) raises
:class:`ClipError` naming the codec, the setting and the clip; it never becomes silence.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from advmir.codecs.registry import CodecSetting, honoured

if TYPE_CHECKING:
    from pydub import AudioSegment

log = logging.getLogger(__name__)

INT32_SCALE = 2.0**31


class FFmpegNotFoundError(RuntimeError):
    """No usable ffmpeg: missing, not executable, or lacking an encoder this stage needs."""


class ClipError(RuntimeError):
    """One clip could not be encoded or decoded; names the codec, the setting and the clip."""

    def __init__(self, setting: CodecSetting, clip: str, reason: str) -> None:
        self.setting = setting
        self.clip = clip
        self.reason = reason
        super().__init__(
            f"{setting.codec} setting {setting.name!r} ({setting.label()}), clip {clip!r}: {reason}"
        )


_FFMPEG_LOCK = threading.Lock()
_FFMPEG_CHECKED: dict[str, set[str]] = {}


def _import_pydub() -> type[AudioSegment]:
    # pydub warns at import when no ffmpeg is on PATH; we set its converter explicitly instead.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        from pydub import AudioSegment
    return AudioSegment


def find_ffmpeg(path: str | os.PathLike | None = None, encoders: Sequence[str] = ()) -> str:
    """Locate a working ffmpeg, check it has ``encoders``, and make it pydub's converter.

    Order: ``path`` if given; else imageio-ffmpeg's choice (``IMAGEIO_FFMPEG_EXE`` if set, else
    the static binary it ships).

    Raises:
        FFmpegNotFoundError: with what was tried and how to fix it.
    """
    import imageio_ffmpeg

    how_to_fix = (
        "Reinstall imageio-ffmpeg in the project's venv (`pip install --force-reinstall imageio-ffmpeg`), "
        "or set IMAGEIO_FFMPEG_EXE to an ffmpeg built with libmp3lame, libvorbis and libopus."
    )
    if path is None:
        try:
            path = imageio_ffmpeg.get_ffmpeg_exe()
        except RuntimeError as exc:
            raise FFmpegNotFoundError(f"no ffmpeg found: {exc}. {how_to_fix}") from None
    path = str(path)
    resolved = path if os.path.sep in path else shutil.which(path)
    if resolved is None or not os.path.isfile(resolved) or not os.access(resolved, os.X_OK):
        if path == os.environ.get("IMAGEIO_FFMPEG_EXE"):
            how_to_fix = "IMAGEIO_FFMPEG_EXE points there: fix or unset it. " + how_to_fix
        raise FFmpegNotFoundError(f"no ffmpeg found at {path!r} (missing or not executable). {how_to_fix}")
    with _FFMPEG_LOCK:
        if resolved not in _FFMPEG_CHECKED:
            try:
                out = subprocess.run(
                    [resolved, "-hide_banner", "-nostdin", "-encoders"],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise FFmpegNotFoundError(
                    f"ffmpeg at {resolved!r} does not run: {exc}. {how_to_fix}"
                ) from None
            if out.returncode != 0:
                raise FFmpegNotFoundError(
                    f"ffmpeg at {resolved!r} failed to list its encoders: {out.stderr.strip()[-300:]}. "
                    + how_to_fix
                )
            names = {line.split()[1] for line in out.stdout.splitlines() if len(line.split()) > 1}
            _FFMPEG_CHECKED[resolved] = names
        available = _FFMPEG_CHECKED[resolved]
    missing = [e for e in encoders if e not in available]
    if missing:
        raise FFmpegNotFoundError(f"ffmpeg at {resolved!r} lacks the encoder(s) {missing}. {how_to_fix}")
    _import_pydub().converter = resolved
    return resolved


def ffmpeg_version(path: str) -> str:
    """First line of ``ffmpeg -version``."""
    out = subprocess.run([path, "-hide_banner", "-version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


def to_int32(clip: np.ndarray) -> np.ndarray:
    """float audio in [-1, 1] -> int32 PCM (what ffmpeg's own float -> s32 conversion gives)."""
    scaled = np.rint(np.asarray(clip, dtype=np.float64) * INT32_SCALE)
    return np.clip(scaled, -(2**31), 2**31 - 1).astype("<i4")


def mp3_frame_bitrates(data: bytes) -> list[int]:
    """Bitrates (kbps) in the headers of the audio frames of an MP3 file (LAME's tag frame skipped)."""
    kbps_v1 = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
    kbps_v2 = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
    rates = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
    found, pos, n = [], 0, len(data)
    if data[:3] == b"ID3" and n >= 10:
        pos = 10 + ((data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9])
    while pos + 4 <= n:
        b1, b2 = data[pos + 1], data[pos + 2]
        if data[pos] != 0xFF or (b1 & 0xE0) != 0xE0:
            pos += 1
            continue
        version, layer = (b1 >> 3) & 3, (b1 >> 1) & 3
        index, rate_index, padding = b2 >> 4, (b2 >> 2) & 3, (b2 >> 1) & 1
        if version == 1 or layer != 1 or index in (0, 15) or rate_index == 3:
            pos += 1
            continue
        kbps = (kbps_v1 if version == 3 else kbps_v2)[index]
        rate = rates[version][rate_index]
        size = (144 if version == 3 else 72) * kbps * 1000 // rate + padding
        # LAME's first frame holds the Xing/Info tag (delay and padding) and may use another bitrate.
        is_tag = not found and (b"Info" in data[pos : pos + size] or b"Xing" in data[pos : pos + size])
        if not is_tag:
            found.append(kbps)
        pos += max(size, 1)
    return found


def payload_bytes(data: bytes, demuxer: str) -> int:
    """Bytes of the audio packets in a bitstream: the file without its container and codec headers
    (Vorbis's codebooks alone are about 4 kB, a quarter of a one-second clip at 64 kbps)."""
    import av

    with av.open(io.BytesIO(data), format=demuxer) as container:
        return int(sum(packet.size for packet in container.demux(audio=0) if packet.size))


@dataclass
class RoundTrip:
    """Result of a batch round trip.

    Attributes:
        decoded: float32 (N, T), sample-aligned to the input.
        bitstreams: the encoded file of each clip, as written by the codec's container.
        achieved_kbps: (N,) file bytes * 8 / clip duration / 1000 of each bitstream.
        payload_kbps: (N,) the same for the audio packets only (no container or codec headers).
        honoured: (N,) whether each clip's bitstream honours the requested setting.
        seconds: wall-clock time of the round trip.
    """

    decoded: np.ndarray
    bitstreams: list[bytes]
    achieved_kbps: np.ndarray
    payload_kbps: np.ndarray
    honoured: np.ndarray
    seconds: float = 0.0


def _tmp_root() -> str | None:
    """A RAM-backed folder for the per-batch files when one is writable, else the system default."""
    for candidate in (os.environ.get("ADVMIR_TMPDIR"), "/dev/shm"):
        if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK):
            return candidate
    return None


class CodecEngine:
    """Batched codec round trips through ffmpeg (pydub's converter).

    Args:
        ffmpeg: path of ffmpeg; None finds it (see :func:`find_ffmpeg`).
        workers: ffmpeg processes run at once (each also threads internally).
        batch_size: clips handed to one ffmpeg process.
        timeout: seconds one ffmpeg process may take before it is killed and reported.
    """

    def __init__(
        self, ffmpeg: str | None = None, workers: int = 2, batch_size: int = 25, timeout: float = 600.0
    ) -> None:
        if workers < 1 or batch_size < 1:
            raise ValueError(f"workers and batch_size must be >= 1, got {workers} and {batch_size}")
        self.ffmpeg = find_ffmpeg(ffmpeg)
        self.workers = workers
        self.batch_size = batch_size
        self.timeout = timeout

    # -- public API -------------------------------------------------------------------------

    def roundtrip(
        self,
        audio: np.ndarray,
        sample_rate: int,
        setting: CodecSetting,
        clip_ids: Sequence[str] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> RoundTrip:
        """Encode every clip of ``audio`` (N, T) float in [-1, 1] with ``setting``, keep the
        bitstreams, decode them, and return the decoded audio (N, T) float32 aligned to the input.

        Raises:
            ClipError: a clip is invalid or failed; the message names codec, setting and clip.
            FFmpegNotFoundError: the ffmpeg lacks this codec's encoder.
        """
        find_ffmpeg(self.ffmpeg, [setting.info.encoder])
        audio = np.asarray(audio)
        ids = self._check_input(audio, setting, clip_ids)
        start = time.perf_counter()
        n, length = audio.shape
        decoded = np.empty((n, length), dtype=np.float32)
        bitstreams: list[bytes] = [b""] * n
        payload = np.zeros(n, dtype=np.int64)

        def work(chunk: np.ndarray) -> int:
            streams = self._encode_chunk(audio, chunk, sample_rate, setting, ids)
            out = self._decode_chunk(streams, chunk, sample_rate, length, setting, ids)
            decoded[chunk] = out
            for k, i in enumerate(chunk):
                bitstreams[i] = streams[k]
                payload[i] = payload_bytes(streams[k], setting.info.demuxer)
            return len(chunk)

        self._map(work, n, progress)
        duration = length / sample_rate
        kbps = np.array([len(b) * 8 / duration / 1000 for b in bitstreams])
        payload_kbps = payload * 8 / duration / 1000
        mp3 = setting.codec == "mp3"  # CBR: every frame header must say the requested bitrate
        ok = np.array(
            [
                honoured(setting, k, mp3_frame_bitrates(b) if mp3 else None)
                for b, k in zip(bitstreams, payload_kbps, strict=True)
            ]
        )
        return RoundTrip(decoded, bitstreams, kbps, payload_kbps, ok, time.perf_counter() - start)

    def encode(
        self,
        audio: np.ndarray,
        sample_rate: int,
        setting: CodecSetting,
        clip_ids: Sequence[str] | None = None,
    ) -> list[bytes]:
        """Encode (N, T) audio; return one bitstream (file bytes) per clip."""
        find_ffmpeg(self.ffmpeg, [setting.info.encoder])
        audio = np.asarray(audio)
        ids = self._check_input(audio, setting, clip_ids)
        out: list[bytes] = [b""] * len(audio)

        def work(chunk: np.ndarray) -> int:
            for k, data in zip(
                chunk, self._encode_chunk(audio, chunk, sample_rate, setting, ids), strict=True
            ):
                out[k] = data
            return len(chunk)

        self._map(work, len(audio), None)
        return out

    def decode(
        self,
        bitstreams: Sequence[bytes],
        sample_rate: int,
        n_samples: int,
        setting: CodecSetting,
        clip_ids: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Decode bitstreams to float32 (N, n_samples) at ``sample_rate``; every clip must decode to
        exactly ``n_samples`` samples."""
        ids = [str(i) for i in (clip_ids if clip_ids is not None else range(len(bitstreams)))]
        out = np.empty((len(bitstreams), n_samples), dtype=np.float32)

        def work(chunk: np.ndarray) -> int:
            out[chunk] = self._decode_chunk(
                [bitstreams[i] for i in chunk], chunk, sample_rate, n_samples, setting, ids
            )
            return len(chunk)

        self._map(work, len(bitstreams), None)
        return out

    # -- internals --------------------------------------------------------------------------

    @staticmethod
    def _check_input(audio: np.ndarray, setting: CodecSetting, clip_ids: Sequence[str] | None) -> list[str]:
        if audio.ndim != 2:
            raise ValueError(f"audio must have shape (N, T), got {audio.shape}")
        ids = [str(i) for i in (clip_ids if clip_ids is not None else range(len(audio)))]
        if len(ids) != len(audio):
            raise ValueError(f"{len(ids)} clip ids for {len(audio)} clips")
        finite = np.isfinite(audio).all(axis=1)
        if not finite.all():
            raise ClipError(setting, ids[int(np.argmin(finite))], "the clip has NaN or infinite samples")
        peaks = np.abs(audio).max(axis=1) if audio.size else np.zeros(len(audio))
        if (peaks > 1.0 + 1e-6).any():
            i = int(np.argmax(peaks))
            raise ClipError(
                setting,
                ids[i],
                f"samples outside [-1, 1] (peak {peaks[i]:.4g}); codec input must be in range",
            )
        return ids

    def _map(self, work: Callable[[np.ndarray], int], n: int, progress: Callable[[int], None] | None) -> None:
        chunks = [np.arange(i, min(i + self.batch_size, n)) for i in range(0, n, self.batch_size)]
        if self.workers == 1 or len(chunks) <= 1:
            for chunk in chunks:
                done = work(chunk)
                if progress:
                    progress(done)
            return
        with ThreadPoolExecutor(self.workers) as pool:
            futures = [pool.submit(work, c) for c in chunks]
            try:
                for fut in futures:
                    done = fut.result()
                    if progress:
                        progress(done)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise

    def _run(self, cmd: list[str]) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(cmd, capture_output=True, timeout=self.timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            return subprocess.CompletedProcess(cmd, -9, b"", f"timed out after {exc.timeout} s".encode())

    def _head(self) -> list[str]:
        return [self.ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]

    def _encode_cmd(self, tmp: Path, n: int, sample_rate: int, setting: CodecSetting) -> list[str]:
        cmd = self._head()
        for k in range(n):
            cmd += [
                "-f",
                "s32le",
                "-ar",
                str(sample_rate),
                "-ch_layout",
                "mono",
                "-i",
                str(tmp / f"in{k}.raw"),
            ]
        rate = setting.codec_rate(sample_rate)
        for k in range(n):
            cmd += ["-map", f"{k}:a"]
            if rate != sample_rate:
                cmd += ["-af", f"aresample={rate}:resampler=soxr:precision=28"]
            cmd += [
                *setting.encoder_options(),
                "-f",
                setting.info.muxer,
                str(tmp / f"enc{k}.{setting.info.extension}"),
            ]
        return cmd

    def _encode_chunk(
        self, audio: np.ndarray, chunk: np.ndarray, sample_rate: int, setting: CodecSetting, ids: list[str]
    ) -> list[bytes]:
        with tempfile.TemporaryDirectory(prefix="advmir-codec-", dir=_tmp_root()) as name:
            tmp = Path(name)
            for k, i in enumerate(chunk):
                to_int32(audio[i]).tofile(tmp / f"in{k}.raw")
            result = self._run(self._encode_cmd(tmp, len(chunk), sample_rate, setting))
            outputs = [tmp / f"enc{k}.{setting.info.extension}" for k in range(len(chunk))]
            if result.returncode == 0 and all(p.is_file() and p.stat().st_size > 0 for p in outputs):
                return [p.read_bytes() for p in outputs]
        if len(chunk) == 1:
            raise ClipError(setting, ids[chunk[0]], "encoding failed: " + _stderr_tail(result))
        # The batch failed: find the clip(s) at fault one by one, so the error names them.
        return [
            self._encode_chunk(audio, chunk[k : k + 1], sample_rate, setting, ids)[0]
            for k in range(len(chunk))
        ]

    def _decode_chunk(
        self,
        streams: Sequence[bytes],
        chunk: np.ndarray,
        sample_rate: int,
        length: int,
        setting: CodecSetting,
        ids: list[str],
    ) -> np.ndarray:
        info = setting.info
        with tempfile.TemporaryDirectory(prefix="advmir-codec-", dir=_tmp_root()) as name:
            tmp = Path(name)
            cmd = self._head()
            for k, data in enumerate(streams):
                path = tmp / f"enc{k}.{info.extension}"
                path.write_bytes(data)
                cmd += ["-f", info.demuxer, "-c:a", info.decoder, "-i", str(path)]
            for k in range(len(streams)):
                cmd += [
                    "-map", f"{k}:a",
                    "-af", f"aresample={sample_rate}:resampler=soxr:precision=28",
                    "-ch_layout", "mono", "-c:a", "pcm_f32le", "-f", "f32le", str(tmp / f"dec{k}.raw"),
                ]  # fmt: skip
            result = self._run(cmd)
            if result.returncode == 0:
                out = np.empty((len(streams), length), dtype=np.float32)
                for k in range(len(streams)):
                    path = tmp / f"dec{k}.raw"
                    clip = np.fromfile(path, dtype="<f4") if path.is_file() else np.empty(0, np.float32)
                    if clip.shape[0] != length:
                        raise ClipError(
                            setting,
                            ids[chunk[k]],
                            f"decoded {clip.shape[0]} samples, expected {length}: the bitstream is damaged "
                            "or the codec's delay is not recorded in its container",
                        )
                    if not np.isfinite(clip).all():
                        raise ClipError(setting, ids[chunk[k]], "decoded audio has NaN or infinite samples")
                    out[k] = clip
                return out
        if len(streams) == 1:
            raise ClipError(setting, ids[chunk[0]], "decoding failed: " + _stderr_tail(result))
        return np.concatenate(
            [
                self._decode_chunk(streams[k : k + 1], chunk[k : k + 1], sample_rate, length, setting, ids)
                for k in range(len(streams))
            ]
        )


def _stderr_tail(result: subprocess.CompletedProcess, lines: int = 6) -> str:
    text = result.stderr.decode(errors="replace") if isinstance(result.stderr, bytes) else str(result.stderr)
    tail = " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])
    return f"ffmpeg exited with code {result.returncode}: {tail or '(no message)'}"


def roundtrip_pydub(clip: np.ndarray, sample_rate: int, setting: CodecSetting) -> tuple[np.ndarray, bytes]:
    """The reference path: one clip through pydub's ``export`` and ``from_file``, one ffmpeg each.

    Same encoder options as :class:`CodecEngine`, so the bitstream is byte-identical; pydub
    decodes to 16-bit WAV, so the decoded clip matches the engine's to 16-bit precision. Slow (two
    ffmpeg start-ups per clip); used by the tests to check the batch engine.

    Returns:
        decoded clip (T,) float32 at ``sample_rate`` and the bitstream bytes.
    """
    import io

    audio_segment = _import_pydub()
    find_ffmpeg(audio_segment.converter if os.path.sep in str(audio_segment.converter) else None)
    info = setting.info
    segment = audio_segment(data=to_int32(clip).tobytes(), sample_width=4, frame_rate=sample_rate, channels=1)
    options = setting.encoder_options()[2:]  # pydub passes the encoder itself as -acodec
    rate = setting.codec_rate(sample_rate)
    if rate != sample_rate:
        options = ["-af", f"aresample={rate}:resampler=soxr:precision=28", *options]
    buffer = io.BytesIO()
    segment.export(buffer, format=info.muxer, codec=info.encoder, parameters=options)
    data = buffer.getvalue()
    decoded = audio_segment.from_file(io.BytesIO(data), format=info.demuxer, codec=info.decoder)
    samples = np.array(decoded.get_array_of_samples(), dtype=np.float64) / float(
        1 << (8 * decoded.sample_width - 1)
    )
    if decoded.frame_rate != sample_rate:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(decoded.frame_rate, sample_rate)
        samples = resample_poly(samples, sample_rate // g, decoded.frame_rate // g)
    return samples.astype(np.float32), data
