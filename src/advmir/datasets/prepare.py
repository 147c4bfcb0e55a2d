"""Shared conversion of decoded source files into the data contract.

A dataset adapter lists :class:`Job` s (one source file, one or more clips cut from it) and a
manifest with one row per clip; :func:`render_clips` decodes, mixes to mono, resamples, cuts or
pads every clip into a scratch memory map, and :func:`write_prepared` adds what was done to each
clip to the manifest and writes the dataset atomically through ``advmir.datasets.contract``, with
the dataset's :class:`~advmir.datasets.contract.Source` (declared once in its module) in
classes.json.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from advmir.datasets.contract import DatasetError, Source, write_dataset
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

STAT_COLUMNS = (
    "source_sample_rate",
    "source_channels",
    "source_seconds",
    "pad_samples",
    "cut_samples",
    "clipped_samples",
)


@dataclass(frozen=True)
class Settings:
    """What every real dataset shares.

    Args:
        sample_rate: target rate in Hz.
        clip_seconds: length of every clip.
        seed: seed of every random split or subsample.
        dtype: ``float32`` or ``int16`` storage of waveforms.npy.
        threads: decoding threads.
        options: the dataset's own settings (its config section minus the shared keys).
    """

    sample_rate: int = 16000
    clip_seconds: float = 4.0
    seed: int = 0
    dtype: str = "float32"
    threads: int = 1
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1000 <= self.sample_rate <= 192000:
            raise DatasetError(f"sample_rate must be within [1000, 192000] Hz, got {self.sample_rate}")
        if not 0 < self.clip_seconds <= 60:
            raise DatasetError(f"clip_seconds must be within (0, 60], got {self.clip_seconds}")
        if self.dtype not in ("float32", "int16"):
            raise DatasetError(f"dtype must be float32 or int16, got {self.dtype!r}")
        if self.threads < 1:
            raise DatasetError(f"threads must be >= 1, got {self.threads}")

    @property
    def clip_samples(self) -> int:
        return round(self.clip_seconds * self.sample_rate)


@dataclass(frozen=True)
class Job:
    """One source file and the manifest rows of the clips cut from it.

    Args:
        path: the audio file.
        rows: manifest row indices, one per clip.
        starts: start of each clip in seconds of the source (0.0 for a whole-file clip).
        optional: drop the rows (with a warning) instead of failing if the file cannot be decoded;
            for files known to be damaged in some copies of a dataset.
    """

    path: Path
    rows: tuple[int, ...]
    starts: tuple[float, ...] = (0.0,)
    optional: bool = False


def render_clips(
    jobs: Sequence[Job], n_rows: int, settings: Settings, scratch_dir: Path
) -> tuple[np.ndarray, pd.DataFrame, np.ndarray, Path]:
    """Decode every job into a scratch memory map.

    Returns:
        waveforms: memory map (n_rows, clip_samples) of ``settings.dtype``.
        stats: one row per clip, columns STAT_COLUMNS.
        ok: bool (n_rows,), False for rows of optional files that failed to decode.
        scratch: path of the memory map file (delete it when done).
    """
    length = settings.clip_samples
    scratch_dir.mkdir(parents=True, exist_ok=True)
    scratch = scratch_dir / f".scratch-{uuid.uuid4().hex}.npy"
    waves = np.lib.format.open_memmap(scratch, mode="w+", dtype=settings.dtype, shape=(n_rows, length))
    stats = np.zeros((n_rows, len(STAT_COLUMNS)), dtype=np.float64)
    ok = np.ones(n_rows, dtype=bool)

    def run(job: Job) -> None:
        try:
            audio, rate = load_audio(job.path)
        except ValueError as exc:
            if job.optional:
                log.warning("skipping %s (known to be damaged in some copies): %s", job.path.name, exc)
                ok[list(job.rows)] = False
                return
            raise DatasetError(f"{exc}. The archive verified, so the file is damaged at the source.") from exc
        channels, n_source = audio.shape
        mono = resample(to_mono(audio), rate, settings.sample_rate)
        for row, start in zip(job.rows, job.starts, strict=True):
            clip, fit = fit_length(mono, length, start=round(start * settings.sample_rate))
            clip, clipped = limit_peak(clip)
            waves[row] = to_int16(clip) if settings.dtype == "int16" else clip
            stats[row] = (rate, channels, n_source / rate, fit.pad_samples, fit.cut_samples, clipped)

    try:
        if settings.threads > 1:
            import torch

            torch.set_num_threads(1)
            with ThreadPoolExecutor(settings.threads) as pool:
                for _ in tqdm(
                    pool.map(run, jobs), total=len(jobs), desc="convert", mininterval=5, disable=None
                ):
                    pass
        else:
            for job in tqdm(jobs, desc="convert", mininterval=5, disable=None):
                run(job)
        waves.flush()
    except BaseException:
        del waves
        scratch.unlink(missing_ok=True)
        raise
    frame = pd.DataFrame(stats, columns=list(STAT_COLUMNS))
    for col in ("source_sample_rate", "source_channels", "pad_samples", "cut_samples", "clipped_samples"):
        frame[col] = frame[col].astype(np.int64)
    frame["source_seconds"] = frame["source_seconds"].round(4)
    return waves, frame, ok, scratch


def write_prepared(
    source: Source,
    out_dir: str | os.PathLike,
    jobs: Sequence[Job],
    manifest: pd.DataFrame,
    classes: list[str],
    settings: Settings,
    scratch_dir: Path,
    **info: Any,
) -> Path:
    """Render ``jobs`` and write the dataset (waveforms.npy, manifest.csv, classes.json) atomically.

    ``manifest`` has one row per clip (row i <-> the clip whose Job lists i) with at least
    ``id, split, label, label_idx``; the per-clip conversion record (STAT_COLUMNS) is appended.
    classes.json holds, after the conversion settings, ``source.info()`` and then ``info`` (the
    run's own keys: task, split mode, ...).
    """
    info = {**source.info(), **info}
    manifest = manifest.reset_index(drop=True)
    waves, stats, ok, scratch = render_clips(jobs, len(manifest), settings, scratch_dir)
    try:
        manifest = pd.concat([manifest, stats], axis=1)
        if not ok.all():
            dropped = manifest.loc[~ok, "id"].tolist()
            log.warning("dropped %d clips of undecodable files: %s", len(dropped), dropped[:10])
            info["dropped_clips"] = dropped
            waveforms = np.asarray(waves[ok])
            manifest = manifest.loc[ok].reset_index(drop=True)
        else:
            waveforms = waves
        n_clipped = int(manifest["clipped_samples"].gt(0).sum())
        if n_clipped:
            log.info("%d clips had samples beyond full scale after resampling; clamped", n_clipped)
        counts = manifest.groupby("split").size().to_dict()
        log.info("writing %d clips (%s) to %s", len(manifest), counts, out_dir)
        write_dataset(
            out_dir,
            waveforms,
            manifest,
            classes,
            settings.sample_rate,
            clip_seconds=settings.clip_seconds,
            resampler=resampler_name(),
            mono="mean of channels",
            fit="cut at clip end or zero-padded; pad_samples/cut_samples per row in manifest.csv",
            split_counts={str(k): int(v) for k, v in counts.items()},
            seed=settings.seed,
            **info,
        )
    finally:
        del waves
        scratch.unlink(missing_ok=True)
    return Path(out_dir)


def group_split(
    groups: Sequence[Any],
    labels: Sequence[Any],
    valid_fraction: float,
    test_fraction: float,
    seed: int,
) -> np.ndarray:
    """Seeded split that keeps each group in one split, stratified by the group's label.

    Args:
        groups: group of each row (excerpt, instrument, sound); all rows of a group share a split.
        labels: label of each row; a group's first label stratifies it.
        valid_fraction, test_fraction: shares of the groups of each label (at least one group per
            split whenever the label has three groups or more).
    Returns:
        array of "train"/"valid"/"test", one per row.
    """
    if valid_fraction < 0 or test_fraction < 0 or valid_fraction + test_fraction >= 1:
        raise DatasetError(
            f"valid_fraction ({valid_fraction}) and test_fraction ({test_fraction}) must be >= 0 "
            "and sum to less than 1"
        )
    frame = pd.DataFrame({"group": list(groups), "label": list(labels)})
    first = frame.drop_duplicates("group").sort_values(["label", "group"], kind="stable")
    rng = np.random.default_rng(seed)
    assignment: dict[Any, str] = {}
    for _, members in first.groupby("label", sort=True):
        names = members["group"].tolist()
        rng.shuffle(names)
        n = len(names)
        n_test = _share(n, test_fraction)
        n_valid = min(n - n_test - 1, _share(n, valid_fraction))
        for i, name in enumerate(names):
            assignment[name] = "test" if i < n_test else "valid" if i < n_test + n_valid else "train"
    return frame["group"].map(assignment).to_numpy(dtype=object)


def _share(n: int, fraction: float) -> int:
    if fraction <= 0 or n < 3:
        return 0
    return min(n - 2, max(1, round(n * fraction)))


#: keys of a dataset's config section handled by the shared machinery (advmir.datasets.cli); the
#: rest are the dataset's own options.
SHARED_KEYS = (
    "sample_rate",
    "clip_seconds",
    "dtype",
    "base_url",
    "manual_dir",
    "checksums",
    "allow_unpublished_checksums",
)


def section_defaults(name: str) -> dict[str, Any]:
    """Defaults of a real dataset's config section, read from its one home: the `default:` of each
    key in workflow/schemas/datasets.schema.yaml (what validation fills in for the workflow)."""
    from advmir.config import schema_defaults

    return schema_defaults("datasets.schema.yaml", name)


def settings_from_section(
    name: str,
    settings_json: str,
    *,
    seed: int,
    threads: int,
    sample_rate: int | None = None,
    clip_seconds: float | None = None,
) -> tuple[Settings, dict[str, Any]]:
    """The :class:`Settings` of a command's ``--settings`` (JSON of the dataset's config section;
    the workflow passes the whole validated section, and run by hand a missing key takes its schema
    default), and the section's other SHARED_KEYS (base_url, checksums, ...) that it holds.
    ``sample_rate`` and ``clip_seconds`` override the section's when given. The dataset's own
    options are ``settings.options``. Raises UsageError when the JSON is not an object."""
    import json

    from advmir.errors import UsageError

    given = json.loads(settings_json) if settings_json else {}
    if not isinstance(given, dict):
        raise UsageError(f"--settings must be a JSON object, got {settings_json!r}")
    section = {**section_defaults(name), **given}
    shared = {k: section.pop(k) for k in SHARED_KEYS if k in section}
    settings = Settings(
        sample_rate=int(sample_rate or shared["sample_rate"]),
        clip_seconds=float(clip_seconds or shared["clip_seconds"]),
        seed=seed,
        dtype=shared["dtype"],
        threads=threads,
        options=section,
    )
    return settings, shared


def own_defaults(name: str) -> dict[str, Any]:
    """The dataset's own options (not SHARED_KEYS) with their schema defaults."""
    return {k: v for k, v in section_defaults(name).items() if k not in SHARED_KEYS}


def check_options(name: str, options: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The dataset's options with defaults filled in; ValueError naming any unknown key."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise DatasetError(f"unknown {name} setting(s) {unknown}; allowed: {sorted(defaults)}")
    return {**defaults, **options}
