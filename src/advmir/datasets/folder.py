"""A folder of your own recordings in the data contract ("review your own recordings").

Every audio file under ``path`` (recursive; extensions from ``extensions``, case-insensitive) is
decoded (libsndfile through soundfile: WAV, FLAC, Ogg, AIFF and, with libsndfile >= 1.1, MP3; an
MP3 that soundfile cannot read is decoded by the project's ffmpeg, imageio-ffmpeg's), mixed to
mono by averaging its channels, resampled with the project's resampler
(:mod:`advmir.datasets.resample`) and cut or zero-padded to ``clip_seconds``; with
``windows: true`` a long file is cut into consecutive clips instead (each row records its source
file and start second; a last partial clip is kept, zero-padded, when it holds at least half a
clip).

Labels (``labels``):

- ``subfolders``: the first-level subfolder's name (files at the top level are skipped);
- ``{csv: FILE}``: a CSV with columns ``path`` (relative to the folder) and ``label``; further
  columns (pitch, velocity, ...) are kept in the manifest. A relative FILE is taken relative to the
  folder. Labels are read as text, so a column mixing numbers and words is fine;
- ``none``: one class, ``unlabelled``.

Nothing is dropped silently: an unreadable, empty, silent (every sample zero) or non-finite file, a
file the labels CSV does not name, and a CSV row naming a file that is not there are each logged
(one line per file) and listed in ``skipped.csv`` (``path, reason``) beside the manifest; the rest
is prepared. Only a folder where no file could be used is an error, naming the folder, the
extensions searched and the reasons.

Splits: seeded, stratified by label, grouped by source file (the windows of one file share a
split), ``valid_fraction`` and ``test_fraction`` of each label's files.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from advmir.datasets.contract import DatasetError, Source, write_dataset
from advmir.datasets.prepare import STAT_COLUMNS, Settings, group_split, own_defaults
from advmir.datasets.resample import (
    fit_length,
    limit_peak,
    load_audio,
    resample,
    resampler_name,
    to_int16,
    to_mono,
)

log = logging.getLogger(__name__)

NAME = "folder"
SOURCE = Source(
    NAME,
    title="A folder of audio files (advmir.datasets.folder)",
    homepage="",
    license="the recordings' own",
    citation="",
)
UNLABELLED = "unlabelled"
#: manifest columns this adapter writes; a labels CSV column of the same name is refused.
OWN_COLUMNS = (
    "id",
    "split",
    "label",
    "label_idx",
    "path",
    "window",
    "start_seconds",
    "decoder",
    *STAT_COLUMNS,
)
#: The dataset's own options and their defaults (workflow/schemas/datasets.schema.yaml); ``path``
#: is required and has none.
DEFAULTS: dict[str, Any] = {"path": None, **own_defaults(NAME)}


def options(raw: dict[str, Any]) -> dict[str, Any]:
    """The folder section's own options with defaults filled in; DatasetError naming a bad one."""
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise DatasetError(f"unknown folder setting(s) {unknown}; allowed: {sorted(DEFAULTS)}")
    opts = {**DEFAULTS, **raw}
    if not opts["path"]:
        raise DatasetError("folder.path is required: the folder of recordings to prepare")
    labels = opts["labels"]
    if not (labels in ("subfolders", "none") or (isinstance(labels, dict) and set(labels) == {"csv"})):
        raise DatasetError(f"folder.labels must be subfolders, none or {{csv: FILE}}, got {labels!r}")
    exts = [str(e).lower().lstrip(".") for e in opts["extensions"]]
    if not exts:
        raise DatasetError("folder.extensions is empty: name at least one, e.g. [wav, flac]")
    opts["extensions"] = exts
    return opts


@dataclass
class Decoded:
    """One source file after decoding: its clips (or why it was skipped)."""

    rel: str
    clips: list[np.ndarray] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    stats: list[tuple[float, ...]] = field(default_factory=list)
    decoder: str = ""
    reason: str = ""


def find_audio(folder: Path, extensions: list[str]) -> list[str]:
    """Relative POSIX paths of the audio files under ``folder`` (recursive, sorted; hidden skipped)."""
    suffixes = {f".{e}" for e in extensions}
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in suffixes:
                found.append(Path(root, name).relative_to(folder).as_posix())
    return sorted(found)


def decode_with_ffmpeg(path: Path) -> tuple[np.ndarray, int]:
    """Decode any file ffmpeg reads (the project's ffmpeg, imageio-ffmpeg's) through a float WAV.

    Returns (channels, samples) float32 and the file's rate; DatasetError if ffmpeg cannot."""
    import imageio_ffmpeg

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    with tempfile.TemporaryDirectory(prefix="advmir-ffmpeg-") as tmp:
        out = Path(tmp) / "decoded.wav"
        proc = subprocess.run(
            [
                exe,
                "-nostdin",
                "-hide_banner",
                "-v",
                "error",
                "-i",
                str(path),
                "-vn",
                "-c:a",
                "pcm_f32le",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0 or not out.exists():
            raise DatasetError(
                f"cannot decode {path} with ffmpeg: {proc.stderr.strip()[-300:] or 'no output'}"
            )
        return load_audio(out)


def decode(path: Path) -> tuple[np.ndarray, int, str]:
    """(channels, samples) float32, rate, and the decoder used; DatasetError with the reason."""
    if path.stat().st_size == 0:
        raise DatasetError("empty file (0 bytes)")
    try:
        audio, rate = load_audio(path)
        return audio, rate, "soundfile"
    except DatasetError as first:
        if path.suffix.lower() != ".mp3":
            raise
        try:
            audio, rate = decode_with_ffmpeg(path)
        except (DatasetError, OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
            raise DatasetError(f"{first}; ffmpeg: {exc}") from exc
        return audio, rate, "ffmpeg"


def convert_file(folder: Path, rel: str, settings: Settings, windows: bool) -> Decoded:
    """Decode, check, mono, resample and cut one file; a bad file gets a reason, never raises."""
    out = Decoded(rel)
    length = settings.clip_samples
    try:
        audio, rate, out.decoder = decode(folder / rel)
    except (DatasetError, OSError) as exc:
        path = str(folder / rel)
        out.reason = "unreadable: " + str(exc).replace(f"cannot decode {path}: ", "").replace(path, rel)
        return out
    if not np.isfinite(audio).all():
        out.reason = f"{int(np.size(audio) - np.isfinite(audio).sum())} NaN or infinite samples"
        return out
    if not np.any(audio):
        out.reason = "silent: every sample is zero"
        return out
    channels, n_source = audio.shape
    mono = resample(to_mono(audio), rate, settings.sample_rate)
    starts = [0]
    if windows:
        starts = list(range(0, max(len(mono), 1), length))
        if len(starts) > 1 and len(mono) - starts[-1] < length / 2:
            starts.pop()  # a last piece shorter than half a clip
    for start in starts:
        clip, fit = fit_length(mono, length, start=start)
        cut = 0 if windows else fit.cut_samples
        clip, clipped = limit_peak(clip)
        out.clips.append(to_int16(clip) if settings.dtype == "int16" else clip)
        out.starts.append(round(start / settings.sample_rate, 4))
        out.stats.append((rate, channels, round(n_source / rate, 4), fit.pad_samples, cut, clipped))
    return out


def read_labels_csv(csv_path: Path) -> pd.DataFrame:
    """The labels CSV: ``path`` and ``label`` as text (mixed columns are fine), extra columns as read."""
    try:
        table = pd.read_csv(csv_path, dtype={"path": str, "label": str}, keep_default_na=False)
    except FileNotFoundError:
        raise DatasetError(f"folder.labels.csv: {csv_path} does not exist") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"folder.labels.csv: {csv_path} is not a readable CSV ({exc})") from None
    missing = [c for c in ("path", "label") if c not in table.columns]
    if missing:
        raise DatasetError(
            f"folder.labels.csv: {csv_path} lacks the column(s) {missing}; it needs path (relative to "
            f"the folder) and label, got {list(table.columns)}"
        )
    clash = sorted(set(table.columns) & set(OWN_COLUMNS) - {"path", "label"})
    if clash:
        raise DatasetError(
            f"folder.labels.csv: {csv_path} has column(s) {clash}, which the manifest writes itself; "
            "rename them"
        )
    table["path"] = [Path(p.strip()).as_posix() for p in table["path"]]
    table["label"] = table["label"].str.strip()
    return table


def safe_ids(rels: list[str]) -> list[str]:
    """A unique file-name-safe id per relative path (``a/b c.wav`` -> ``a__b_c.wav``)."""
    ids, seen = [], Counter()
    for rel in rels:
        base = re.sub(r"[^A-Za-z0-9._-]", "_", rel.replace("/", "__"))
        seen[base] += 1
        ids.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return ids


def prepare_folder(settings: Settings, out_dir: str | os.PathLike) -> Path:
    """Prepare the folder of ``settings.options["path"]`` into ``out_dir`` (data contract + skipped.csv)."""
    opts = options(settings.options)
    folder = Path(os.path.expanduser(str(opts["path"]))).resolve()
    if not folder.is_dir():
        raise DatasetError(f"folder.path: {folder} is not a folder; set folder.path to your recordings")
    rels = find_audio(folder, opts["extensions"])
    skipped: list[tuple[str, str]] = []
    labels = opts["labels"]
    extra = pd.DataFrame()
    if isinstance(labels, dict):
        csv_path = Path(os.path.expanduser(labels["csv"]))
        csv_path = csv_path if csv_path.is_absolute() else folder / csv_path
        table = read_labels_csv(csv_path)
        dup = table["path"].duplicated()
        for rel in table.loc[dup, "path"]:
            skipped.append((rel, "listed again in the labels CSV; its first row is used"))
        table = table.loc[~dup]
        present = set(rels)
        for rel in table["path"]:
            if rel not in present:
                where = "missing" if not (folder / rel).exists() else "not an audio file of folder.extensions"
                skipped.append((rel, f"listed in labels CSV but {where}"))
        table = table[table["path"].isin(present)]
        empty = table["label"] == ""
        skipped += [(rel, "empty label in labels CSV") for rel in table.loc[empty, "path"]]
        table = table.loc[~empty].set_index("path")
        skipped += [(rel, "not in labels CSV") for rel in rels if rel not in table.index]
        rels = [rel for rel in rels if rel in table.index]
        label_of = table["label"].to_dict()
        extra = table.drop(columns="label")
    elif labels == "subfolders":
        skipped += [
            (rel, "at the top level, not in a subfolder (labels: subfolders)")
            for rel in rels
            if "/" not in rel
        ]
        rels = [rel for rel in rels if "/" in rel]
        label_of = {rel: rel.split("/", 1)[0] for rel in rels}
    else:
        label_of = dict.fromkeys(rels, UNLABELLED)
    for rel, reason in skipped:
        log.warning("skipped %s: %s", rel, reason)
    log.info("decoding %d audio files of %s", len(rels), folder)

    def run(rel: str) -> Decoded:
        return convert_file(folder, rel, settings, bool(opts["windows"]))

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # clips go to a scratch file as each file is decoded (memory holds one file's clips at a time)
    scratch = out_dir.parent / f".scratch-{NAME}-{uuid.uuid4().hex}.raw"
    try:
        return _write(folder, opts, rels, label_of, extra, skipped, settings, out_dir, scratch, run)
    finally:
        scratch.unlink(missing_ok=True)


def _write(
    folder: Path,
    opts: dict[str, Any],
    rels: list[str],
    label_of: dict[str, str],
    extra: pd.DataFrame,
    skipped: list[tuple[str, str]],
    settings: Settings,
    out_dir: Path,
    scratch: Path,
    run: Callable[[str], Decoded],
) -> Path:
    """Decode into ``scratch``, then write the dataset (see :func:`prepare_folder`)."""
    labels = opts["labels"]
    decoded: list[Decoded] = []
    with open(scratch, "wb") as handle:
        if settings.threads > 1:
            import torch

            torch.set_num_threads(1)
            pool = ThreadPoolExecutor(settings.threads)
            results = pool.map(run, rels)
        else:
            pool, results = None, map(run, rels)
        try:
            for item in tqdm(results, total=len(rels), desc="convert", mininterval=5, disable=None):
                for clip in item.clips:
                    handle.write(np.ascontiguousarray(clip, dtype=settings.dtype).tobytes())
                item.clips = []
                decoded.append(item)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    for item in decoded:
        if item.reason:
            log.warning("skipped %s: %s", item.rel, item.reason)
            skipped.append((item.rel, item.reason))
    good = [item for item in decoded if not item.reason]
    skipped_table = pd.DataFrame(skipped, columns=["path", "reason"]).sort_values("path", kind="stable")
    if not good:
        reasons = Counter(reason.split(":")[0] for _, reason in skipped)
        raise DatasetError(
            f"no usable audio file in {folder} (searched recursively for "
            f"{', '.join('.' + e for e in opts['extensions'])}); "
            + (f"skipped: {dict(reasons)}" if reasons else "it holds none")
        )
    rows = []
    for item in good:
        for k, (start, stat) in enumerate(zip(item.starts, item.stats, strict=True)):
            rows.append(
                {
                    "path": item.rel,
                    "window": k,
                    "start_seconds": start,
                    "decoder": item.decoder,
                    **dict(zip(STAT_COLUMNS, stat, strict=True)),
                }
            )
    frame = pd.DataFrame(rows)
    frame["label"] = frame["path"].map(label_of)
    classes = sorted(frame["label"].unique())
    index = {c: i for i, c in enumerate(classes)}
    frame["label_idx"] = frame["label"].map(index).astype(np.int64)
    frame["split"] = group_split(
        frame["path"], frame["label"], opts["valid_fraction"], opts["test_fraction"], settings.seed
    )
    file_ids = dict(zip([i.rel for i in good], safe_ids([i.rel for i in good]), strict=True))
    windows = bool(opts["windows"])
    frame["id"] = [
        f"{file_ids[p]}_w{k:04d}" if windows else file_ids[p]
        for p, k in zip(frame["path"], frame["window"], strict=True)
    ]
    for col in ("source_sample_rate", "source_channels", "pad_samples", "cut_samples", "clipped_samples"):
        frame[col] = frame[col].astype(np.int64)
    manifest = frame[
        ["id", "split", "label", "label_idx", "path", "window", "start_seconds", "decoder", *STAT_COLUMNS]
    ]
    if len(extra.columns):
        manifest = manifest.join(extra, on="path")
    waveforms = np.memmap(
        scratch, dtype=settings.dtype, mode="r", shape=(len(manifest), settings.clip_samples)
    )
    counts = manifest.groupby("split").size().to_dict()
    log.info(
        "writing %d clips of %d files (%s) to %s; %d files skipped (listed in skipped.csv)",
        len(manifest), len(good), counts, out_dir, len(skipped_table),
    )  # fmt: skip
    write_dataset(
        out_dir,
        waveforms,
        manifest,
        classes,
        settings.sample_rate,
        extra_tables={"skipped.csv": skipped_table},
        clip_seconds=settings.clip_seconds,
        resampler=resampler_name(),
        mono="mean of channels",
        fit=(
            "consecutive windows of clip_seconds (last one kept when >= half a clip, zero-padded)"
            if windows
            else "cut at clip end or zero-padded; pad_samples/cut_samples per row in manifest.csv"
        ),
        split_counts={str(k): int(v) for k, v in counts.items()},
        seed=settings.seed,
        **SOURCE.info(),
        folder=str(folder),
        labels=labels if isinstance(labels, str) else {"csv": str(labels["csv"])},
        files_used=len(good),
        files_skipped=len(skipped_table),
    )
    del waveforms
    return out_dir


def listing_digest(path: str | os.PathLike) -> str:
    """sha256 of the names, sizes and modification times of every file under ``path`` (hidden
    ones skipped): the workflow's param of rule prepare_folder, so that a file added, removed or
    changed in the folder (or its labels CSV) re-runs the rule. Reads no audio."""
    import hashlib

    folder = Path(os.path.expanduser(str(path)))
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            entry = Path(root, name)
            try:
                st = entry.stat()
            except OSError:
                continue
            digest.update(
                f"{entry.relative_to(folder).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode()
            )
    return digest.hexdigest()
