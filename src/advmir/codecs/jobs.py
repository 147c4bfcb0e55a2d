"""One (source, codec or room setting) job: transform, keep the artifacts, write them atomically.

Codec output folder ``results/codecs/{dataset}/{source}/{setting}/``:

- ``bitstreams.zip``: every clip's encoded file (stored, not recompressed), ``{index:05d}_{id}.{ext}``;
  unzip and play them. An attack source's matched-noise controls follow as ``noise/{index:05d}_{id}.{ext}``.
- ``bitrates.csv``: one row per clip: bytes, duration, achieved kbps (file bytes * 8 / duration),
  payload kbps (the same for the audio packets only: no container or codec headers), requested kbps
  or quality, whether it honours the request, SNR of the decoded clip; for an attack source also
  ``noise_bytes, noise_achieved_kbps, noise_payload_kbps, noise_decoded_snr_db`` of its control.
- ``decoded.npy``: float32 (N, T), sample-aligned to the source, in the order of its examples.
- ``decoded_noise.npy`` (attack sources only): float32 (N, T), the matched-noise control
  (the attack run's ``matched_noise.npy``, row j the control of example j) through the same setting,
  aligned like ``decoded.npy`` and in its order. Adversarial clips and controls go through one
  engine call, so they share the encoder options, batching and alignment.
- ``setting.json``: the setting, the exact ffmpeg options and version, summary numbers, timing.

Room output folder: ``decoded.npy``, ``decoded_noise.npy`` (attack sources; each control is played
in the same room, at the same distance and with the same channel noise as its example: both are
keyed by the dataset row), ``channel.csv`` (each clip's room, distance, SNR), ``rooms.npz`` (the
bank's impulse responses) and ``setting.json``.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from advmir.codecs.engine import CodecEngine, RoundTrip, ffmpeg_version
from advmir.codecs.registry import CodecSetting, CodecSettingError, honour_problem
from advmir.codecs.room import RoomSetting, simulate
from advmir.io import atomic_path
from advmir.snr import clip_snr_db
from advmir.transfer.sources import SourceAudio

log = logging.getLogger(__name__)

NOISE_FILE = "decoded_noise.npy"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]


def _write_table(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def encode_source(
    source: SourceAudio,
    setting: CodecSetting,
    out_dir: str | Path,
    *,
    dataset: str,
    source_name: str,
    engine: CodecEngine,
    progress: bool = True,
) -> dict[str, Any]:
    """Round-trip every clip of ``source`` (and of its matched-noise control ``source.noise``, when
    given) through ``setting``; write the folder; return the summary.

    ``source.audio`` and ``source.noise`` are float32 (N, T); ``decoded.npy`` and
    ``decoded_noise.npy`` are float32 (N, T) in the same order.

    Raises:
        ClipError: a clip failed (nothing is written).
        CodecSettingError: the bitstreams do not honour the requested bitrate (nothing is written).
    """
    audio, noise = source.audio, source.noise
    ids = source.examples["id"].astype(str).tolist()
    both = _roundtrip_all(source, setting, ids, engine=engine, source_name=source_name, progress=progress)
    result, control = _split(both, len(audio)) if noise is not None else (both, None)
    check_honoured(setting, result, control)
    snr = clip_snr_db(audio, result.decoded)
    noise_snr = clip_snr_db(noise, control.decoded) if control is not None else None
    rows = bitrate_rows(
        source, setting, result, control, snr, noise_snr, dataset=dataset, source_name=source_name
    )
    summary = codec_summary(
        source,
        setting,
        both,
        result,
        control,
        snr,
        noise_snr,
        dataset=dataset,
        source_name=source_name,
        engine=engine,
    )
    _write_codec_folder(out_dir, setting, ids, result, control, rows, summary)
    log.info(
        "%s %s: %d clips%s, %.1f kbps median achieved, SNR %.1f dB median, %.1f clips/s",
        source_name,
        setting.name,
        len(audio),
        " and their matched-noise controls" if control is not None else "",
        float(np.median(result.achieved_kbps)),
        summary["snr_db_median"],
        summary["clips_per_second"],
    )
    return summary


def _roundtrip_all(
    source: SourceAudio,
    setting: CodecSetting,
    ids: list[str],
    *,
    engine: CodecEngine,
    source_name: str,
    progress: bool,
) -> RoundTrip:
    """One engine call for the examples and their controls (same options, batching, alignment):
    the round trip of the N clips of ``source.audio``, then (when given) the N of ``source.noise``."""
    audio, rate, noise = source.audio, source.sample_rate, source.noise
    clips, clip_ids = (
        (audio, ids) if noise is None else (np.concatenate([audio, noise]), ids + [f"noise_{i}" for i in ids])
    )
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(clips), desc=f"{source_name} {setting.name}", unit="clip", mininterval=5)
    try:
        return engine.roundtrip(clips, rate, setting, clip_ids, progress=bar.update if bar else None)
    finally:
        if bar:
            bar.close()


def check_honoured(setting: CodecSetting, result: RoundTrip, control: RoundTrip | None) -> None:
    """Raise ``CodecSettingError`` when the examples' bitstreams (or, after them, the matched-noise
    controls') do not honour ``setting``'s request."""
    problem = honour_problem(setting, result.payload_kbps, result.honoured)
    if not problem and control is not None:
        problem = honour_problem(setting, control.payload_kbps, control.honoured)
        problem = problem and f"matched-noise control: {problem}"
    if problem:
        raise CodecSettingError(problem)


def bitrate_rows(
    source: SourceAudio,
    setting: CodecSetting,
    result: RoundTrip,
    control: RoundTrip | None,
    snr: np.ndarray,
    noise_snr: np.ndarray | None,
    *,
    dataset: str,
    source_name: str,
) -> list[dict[str, Any]]:
    """The rows of ``bitrates.csv``, one per clip of ``source`` (N clips of T samples).

    ``snr`` and ``noise_snr`` are float (N,): each decoded clip's (control's) SNR in dB; the
    ``noise_*`` columns are there only when ``control`` is given.
    """
    examples, rate = source.examples, source.sample_rate
    ids = examples["id"].astype(str).tolist()
    duration = source.audio.shape[1] / rate
    return [
        {
            "dataset": dataset,
            "source": source_name,
            "condition": setting.name,
            "codec": setting.codec,
            "index": i,
            "id": ids[i],
            "row": int(examples["row"].iloc[i]),
            "bytes": len(result.bitstreams[i]),
            "duration_s": round(duration, 6),
            "achieved_kbps": round(float(result.achieved_kbps[i]), 3),
            "payload_kbps": round(float(result.payload_kbps[i]), 3),
            "requested_kbps": setting.bitrate_kbps if setting.bitrate_kbps is not None else "",
            "quality": setting.quality if setting.quality is not None else "",
            "codec_sample_rate": setting.codec_rate(rate),
            "honoured": bool(result.honoured[i]),
            "snr_db": round(float(snr[i]), 3),
            "peak_decoded": round(float(np.abs(result.decoded[i]).max()), 5),
            **(
                {
                    "noise_bytes": len(control.bitstreams[i]),
                    "noise_achieved_kbps": round(float(control.achieved_kbps[i]), 3),
                    "noise_payload_kbps": round(float(control.payload_kbps[i]), 3),
                    "noise_decoded_snr_db": round(float(noise_snr[i]), 3),
                }
                if control is not None
                else {}
            ),
        }
        for i in range(len(source.audio))
    ]


def codec_summary(
    source: SourceAudio,
    setting: CodecSetting,
    both: RoundTrip,
    result: RoundTrip,
    control: RoundTrip | None,
    snr: np.ndarray,
    noise_snr: np.ndarray | None,
    *,
    dataset: str,
    source_name: str,
    engine: CodecEngine,
) -> dict[str, Any]:
    """``setting.json`` of a codec folder: the setting, ffmpeg, summary numbers and timing.

    ``both`` is the whole engine call (examples then controls), ``result``/``control`` its halves;
    ``snr``/``noise_snr`` are float (N,) in dB.
    """
    audio, noise, rate = source.audio, source.noise, source.sample_rate
    n_clips = len(audio) if control is None else 2 * len(audio)
    return {
        "kind": "codec",
        "dataset": dataset,
        "source": source_name,
        "condition": setting.name,
        "label": setting.label(),
        "setting": setting.to_dict(),
        "lossless": setting.lossless,
        "audio_sample_rate": rate,
        "codec_sample_rate": setting.codec_rate(rate),
        "encoder_options": setting.encoder_options(),
        "container": setting.info.muxer,
        "decoder": setting.info.decoder,
        "ffmpeg": engine.ffmpeg,
        "ffmpeg_version": ffmpeg_version(engine.ffmpeg),
        "n_clips": len(audio),
        "clip_samples": int(audio.shape[1]),
        "achieved_kbps_median": round(float(np.median(result.achieved_kbps)), 3),
        "achieved_kbps_mean": round(float(result.achieved_kbps.mean()), 3),
        "achieved_kbps_min": round(float(result.achieved_kbps.min()), 3),
        "achieved_kbps_max": round(float(result.achieved_kbps.max()), 3),
        "payload_kbps_median": round(float(np.median(result.payload_kbps)), 3),
        "honoured": True,
        "clips_honoured": int(result.honoured.sum()),
        "snr_db_median": round(float(np.median(snr)), 3),
        "max_abs_error": float(np.abs(result.decoded - audio).max()),
        "noise_control": control is not None,
        **(
            {
                "noise_payload_kbps_median": round(float(np.median(control.payload_kbps)), 3),
                "noise_decoded_snr_db_median": round(float(np.median(noise_snr)), 3),
                "noise_max_abs_error": float(np.abs(control.decoded - noise).max()),
            }
            if control is not None
            else {}
        ),
        "seconds": round(both.seconds, 3),
        "clips_per_second": round(n_clips / max(both.seconds, 1e-9), 2),
        "workers": engine.workers,
        "batch_size": engine.batch_size,
    }


def _write_codec_folder(
    out_dir: str | Path,
    setting: CodecSetting,
    ids: list[str],
    result: RoundTrip,
    control: RoundTrip | None,
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
) -> None:
    """Write ``decoded.npy`` (and ``decoded_noise.npy``), ``bitstreams.zip``, ``bitrates.csv`` and
    ``setting.json`` into ``out_dir`` atomically."""
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        with open(tmp / "decoded.npy", "wb") as handle:
            np.save(handle, result.decoded)
        if control is not None:
            with open(tmp / NOISE_FILE, "wb") as handle:
                np.save(handle, control.decoded)
        with zipfile.ZipFile(tmp / "bitstreams.zip", "w", compression=zipfile.ZIP_STORED) as archive:
            for prefix, streams in (
                ("", result.bitstreams),
                ("noise/", control.bitstreams if control else []),
            ):
                for i, data in enumerate(streams):
                    info = zipfile.ZipInfo(
                        f"{prefix}{i:05d}_{_safe(ids[i])}.{setting.info.extension}", (2020, 1, 1, 0, 0, 0)
                    )
                    archive.writestr(info, data)
        _write_table(tmp / "bitrates.csv", rows)
        (tmp / "setting.json").write_text(json.dumps(summary, indent=2) + "\n")


def _split(both: RoundTrip, n: int) -> tuple[RoundTrip, RoundTrip]:
    """The round trip of ``2n`` clips as (first n: the examples, last n: their controls)."""

    def part(rows: slice) -> RoundTrip:
        return RoundTrip(
            decoded=both.decoded[rows],
            bitstreams=both.bitstreams[rows],
            achieved_kbps=both.achieved_kbps[rows],
            payload_kbps=both.payload_kbps[rows],
            honoured=both.honoured[rows],
            seconds=both.seconds,
        )

    return part(slice(0, n)), part(slice(n, 2 * n))


def simulate_source(
    source: SourceAudio, setting: RoomSetting, out_dir: str | Path, *, dataset: str, source_name: str
) -> dict[str, Any]:
    """Play every clip of ``source`` (and of its matched-noise control ``source.noise``, when given)
    through the room channel; write the folder; return the summary.

    ``source.audio`` and ``source.noise`` are float32 (N, T); ``decoded.npy`` and
    ``decoded_noise.npy`` are float32 (N, T) in the same order. A control meets its example's room,
    distance and channel noise: the simulation keys all of them by the dataset row.
    """
    start = time.perf_counter()
    audio, examples, rate, noise = source.audio, source.examples, source.sample_rate, source.noise
    keys = examples["row"].to_numpy()
    recorded, records, rirs, rooms = simulate(audio, rate, setting, keys)
    recorded_noise = simulate(noise, rate, setting, keys)[0] if noise is not None else None
    for out in (recorded, recorded_noise):
        if out is not None and (out.shape != audio.shape or not np.isfinite(out).all()):
            raise RuntimeError(f"room setting {setting.name!r}: the simulation returned invalid audio")
    snr = clip_snr_db(audio, recorded)
    noise_snr = clip_snr_db(noise, recorded_noise) if recorded_noise is not None else None
    rows = channel_rows(source, setting, records, snr, noise_snr, dataset=dataset, source_name=source_name)
    seconds = time.perf_counter() - start
    summary = room_summary(
        source, setting, rooms, snr, noise_snr, seconds, dataset=dataset, source_name=source_name
    )
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        with open(tmp / "decoded.npy", "wb") as handle:
            np.save(handle, recorded)
        if recorded_noise is not None:
            with open(tmp / NOISE_FILE, "wb") as handle:
                np.save(handle, recorded_noise)
        np.savez(tmp / "rooms.npz", **{f"rir_{k}": r for k, r in enumerate(rirs)})
        _write_table(tmp / "channel.csv", rows)
        (tmp / "setting.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info(
        "%s %s: %d clips through %d rooms in %.1f s",
        source_name,
        setting.name,
        len(audio),
        len(rirs),
        seconds,
    )
    return summary


def channel_rows(
    source: SourceAudio,
    setting: RoomSetting,
    records: list[dict[str, Any]],
    snr: np.ndarray,
    noise_snr: np.ndarray | None,
    *,
    dataset: str,
    source_name: str,
) -> list[dict[str, Any]]:
    """The rows of ``channel.csv``: one per clip, its simulation record (without ``key``) and its SNR
    against the original; ``snr`` and ``noise_snr`` are float (N,) in dB."""
    examples = source.examples
    keys = examples["row"].to_numpy()
    return [
        {
            "dataset": dataset,
            "source": source_name,
            "condition": setting.name,
            "id": str(examples["id"].iloc[i]),
            "row": int(keys[i]),
            **{k: v for k, v in rec.items() if k != "key"},
            "snr_db_vs_original": round(float(snr[i]), 3),
            **({"noise_snr_db_vs_original": round(float(noise_snr[i]), 3)} if noise_snr is not None else {}),
        }
        for i, rec in enumerate(records)
    ]


def room_summary(
    source: SourceAudio,
    setting: RoomSetting,
    rooms: list[dict[str, Any]],
    snr: np.ndarray,
    noise_snr: np.ndarray | None,
    seconds: float,
    *,
    dataset: str,
    source_name: str,
) -> dict[str, Any]:
    """``setting.json`` of a room folder; ``snr`` and ``noise_snr`` are float (N,) in dB."""
    audio = source.audio
    return {
        "kind": "room",
        "dataset": dataset,
        "source": source_name,
        "condition": setting.name,
        "label": setting.label(),
        "setting": setting.to_dict(),
        "audio_sample_rate": source.sample_rate,
        "n_clips": len(audio),
        "clip_samples": int(audio.shape[1]),
        "rooms": rooms,
        "snr_db_vs_original_median": round(float(np.median(snr)), 3),
        "noise_control": noise_snr is not None,
        **(
            {"noise_snr_db_vs_original_median": round(float(np.median(noise_snr)), 3)}
            if noise_snr is not None
            else {}
        ),
        "seconds": round(seconds, 3),
    }
