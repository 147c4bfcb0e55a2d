"""The data contract every dataset is written in and every later stage reads.

A prepared dataset is a folder with three files:

- ``waveforms.npy``: float32 (or int16) array of shape (N, T), opened memory-mapped.
- ``manifest.csv``: row i describes waveform i; columns ``id, split, label, label_idx``
  plus whatever the source has (pitch, velocity, instrument, family, ...).
- ``classes.json``: ``{"classes": [...], "sample_rate": int, "clip_samples": int, ...}``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from advmir.artifacts import open_npy, read_csv, read_json
from advmir.errors import InputError
from advmir.io import atomic_path

REQUIRED_COLUMNS = ("id", "split", "label", "label_idx")
SPLITS = ("train", "valid", "test")
WAVEFORM_DTYPES = ("float32", "int16")


class DataContractError(InputError, ValueError):
    """A prepared dataset does not follow the data contract."""


class DatasetError(InputError, ValueError):
    """A dataset's settings, archive or source files do not fit; names the setting or file and the fix."""


@dataclass
class Dataset:
    """A prepared dataset: waveforms (N, T) memory-mapped, its manifest and class list."""

    root: Path
    waveforms: np.ndarray
    manifest: pd.DataFrame
    classes: list[str]
    sample_rate: int
    info: dict[str, Any]

    @property
    def clip_samples(self) -> int:
        return int(self.waveforms.shape[1])

    def split_indices(self, split: str) -> np.ndarray:
        """Row indices of one split, in manifest order."""
        return np.flatnonzero(self.manifest["split"].to_numpy() == split)

    def float_waveforms(self, rows: np.ndarray | slice) -> np.ndarray:
        """Waveforms of ``rows`` as float32 in [-1, 1], shape (n, T)."""
        return to_float32(np.asarray(self.waveforms[rows]))


def to_float32(audio: np.ndarray) -> np.ndarray:
    """int16 or float audio -> float32 in [-1, 1]."""
    if audio.dtype == np.int16:
        return audio.astype(np.float32) / 32768.0
    return audio.astype(np.float32, copy=False)


@dataclass(frozen=True)
class Source:
    """What a real dataset's module declares once about its source: its ``SOURCE``, built from the
    module's constants (as mirdata's loaders declare theirs), which
    :func:`advmir.datasets.prepare.write_prepared` writes into classes.json.

    Args:
        name: the dataset's name (its module and config section), classes.json's ``source``.
        title, homepage, license, citation: written into classes.json as they are.
        size: clips and download size, for readers (not written).
    """

    name: str
    title: str
    homepage: str
    license: str
    citation: str
    size: str = ""

    def info(self) -> dict[str, str]:
        """The keys of classes.json that describe the source, in their order there."""
        return {
            "source": self.name,
            "title": self.title,
            "homepage": self.homepage,
            "license": self.license,
            "citation": self.citation,
        }


def validate_arrays(waveforms: np.ndarray, manifest: pd.DataFrame, classes: list[str]) -> None:
    """Check the contract on in-memory data; raise DataContractError naming the fault."""
    if waveforms.ndim != 2:
        raise DataContractError(f"waveforms must have shape (N, T), got {waveforms.shape}")
    if waveforms.dtype not in (np.float32, np.int16):
        raise DataContractError(f"waveforms must be float32 or int16, got {waveforms.dtype}")
    missing = [c for c in REQUIRED_COLUMNS if c not in manifest.columns]
    if missing:
        raise DataContractError(f"manifest.csv lacks required columns {missing}")
    if len(manifest) != waveforms.shape[0]:
        raise DataContractError(
            f"manifest.csv has {len(manifest)} rows but waveforms.npy has {waveforms.shape[0]}"
        )
    if manifest["id"].duplicated().any():
        dup = manifest.loc[manifest["id"].duplicated(), "id"].iloc[0]
        raise DataContractError(f"manifest ids must be unique; {dup!r} repeats")
    bad_split = sorted(set(manifest["split"]) - set(SPLITS))
    if bad_split:
        raise DataContractError(f"unknown split values {bad_split}; allowed: {list(SPLITS)}")
    idx = manifest["label_idx"].to_numpy()
    if len(idx) and (idx.min() < 0 or idx.max() >= len(classes)):
        raise DataContractError(f"label_idx outside [0, {len(classes) - 1}]")
    names = np.asarray(classes, dtype=object)[idx]
    if not np.array_equal(names, manifest["label"].to_numpy(dtype=object)):
        raise DataContractError("manifest label does not match classes[label_idx]")
    if waveforms.dtype == np.float32 and waveforms.size:
        peak = float(np.abs(waveforms).max())
        if not np.isfinite(peak) or peak > 1.0:
            raise DataContractError(f"float waveforms must be finite and in [-1, 1], peak is {peak}")


def write_dataset(
    out_dir: str | os.PathLike,
    waveforms: np.ndarray,
    manifest: pd.DataFrame,
    classes: list[str],
    sample_rate: int,
    extra_tables: dict[str, pd.DataFrame] | None = None,
    **info: Any,
) -> Path:
    """Validate and write a dataset folder atomically (the folder appears whole or not at all).

    Args:
        out_dir: the dataset folder, e.g. ``results/data/synth_notes``.
        waveforms: float32 in [-1, 1] or int16, shape (N, T).
        manifest: one row per waveform with at least ``id, split, label, label_idx``.
        classes: label names in index order.
        sample_rate: samples per second of every waveform.
        extra_tables: more CSV files written into the same folder in the same rename, by file name
            (e.g. the folder dataset's ``skipped.csv``); readers of the contract ignore them.
        **info: more keys for classes.json (source, citation, licence, split mode, ...).
    """
    validate_arrays(waveforms, manifest, classes)
    out_dir = Path(out_dir)
    meta = {
        "classes": list(classes),
        "sample_rate": int(sample_rate),
        "clip_samples": int(waveforms.shape[1]),
        **info,
    }
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        with open(tmp / "waveforms.npy", "wb") as handle:
            np.save(handle, waveforms)
        manifest.to_csv(tmp / "manifest.csv", index=False)
        (tmp / "classes.json").write_text(json.dumps(meta, indent=2) + "\n")
        for name, table in (extra_tables or {}).items():
            if name in ("waveforms.npy", "manifest.csv", "classes.json") or "/" in name:
                raise ValueError(f"extra table {name!r} would replace a file of the data contract")
            table.to_csv(tmp / name, index=False)
    return out_dir


def load_dataset(root: str | os.PathLike, mmap: bool = True) -> Dataset:
    """Open a prepared dataset; waveforms are memory-mapped unless ``mmap`` is False.

    Each file is checked as it is read (:mod:`advmir.artifacts`): a missing or damaged one raises
    :class:`~advmir.artifacts.ArtifactError` naming it and the command that rebuilds it.
    """
    root = Path(root)
    manifest = read_csv(root / "manifest.csv", columns=REQUIRED_COLUMNS)
    info = read_json(root / "classes.json", keys=("classes", "sample_rate"))
    waveforms = open_npy(
        root / "waveforms.npy", dtypes=WAVEFORM_DTYPES, rows=len(manifest), peak=1.0, mmap=mmap
    )
    return Dataset(
        root=root,
        waveforms=waveforms,
        manifest=manifest,
        classes=list(info["classes"]),
        sample_rate=int(info["sample_rate"]),
        info=info,
    )


def evaluation_rows(test_rows: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """A fixed, seeded subset of ``test_rows`` (shape (N,)) of ``size`` rows, sorted: shape (size,).

    Subsets are nested: the first ``size`` rows of one seeded permutation, so a larger subset
    contains the smaller one. The attack stage evaluates ``attack_settings.eval_size`` of them (the
    same clips for every model and attack); the codec stage's clean source
    (``transfer.clean_examples``) takes at least as many, so it holds every attacked clip.
    ``size`` None, or larger than N: every test row.
    """
    if size is not None and size < 1:
        raise ValueError(f"an evaluation subset needs size >= 1, got {size}")
    order = np.random.default_rng(seed).permutation(len(test_rows))
    return np.sort(np.asarray(test_rows)[order[:size]])
