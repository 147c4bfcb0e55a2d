"""NSynth: four-second notes of about 1,000 instruments, with family, source, pitch and velocity.

Archives (jsonwav): ``nsynth-{split}/examples.json`` (note_str -> annotations) and
``nsynth-{split}/audio/<note_str>.wav`` (16 kHz, 16-bit mono, 64,000 samples).

Splits. NSynth's own train / valid / test are instrument-disjoint between train and the other
two. Two modes, chosen by ``archives``:

- ``[test, valid]`` (default; about 1.3 GB of downloads instead of 22 GB): NSynth-test is the test
  split. NSynth-valid is divided by instrument (seeded, stratified by family) into our train and
  valid splits (``valid_fraction`` of its instruments), so no instrument is shared between our
  train and valid. NSynth keeps its train instruments out of valid and test, but not valid's out
  of test: where they are shared, test measures unseen notes of seen instruments (like
  synth_notes' ``notes`` split) rather than unseen instruments. ``classes.json`` records the
  number of instruments our train and test actually share
  (``instruments_shared_by_train_and_test``).
- ``[train, valid, test]``: NSynth's official splits unchanged (unseen instruments at test).

NSynth-valid and -test may hold no ``synth_lead`` note (not checked here); the class list is
always the eleven NSynth families in NSynth's order, so label_idx equals ``instrument_family``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from advmir.datasets.contract import DatasetError, Source
from advmir.datasets.download import RemoteFile
from advmir.datasets.prepare import Job, Settings, check_options, group_split, own_defaults, write_prepared

log = logging.getLogger(__name__)

NAME = "nsynth"
TITLE = "NSynth (jsonwav)"
HOMEPAGE = "https://magenta.tensorflow.org/datasets/nsynth"
LICENSE = "Creative Commons Attribution 4.0 International (CC BY 4.0)"
SIZE = "test 4,096 notes, valid 12,678, train 289,205; archives about 0.35 GB + 1 GB + 22 GB (approx.)"
CITATION = """@InProceedings{pmlr-v70-engel17a,
  title = {Neural Audio Synthesis of Musical Notes with {W}ave{N}et Autoencoders},
  author = {Engel, Jesse and Resnick, Cinjon and Roberts, Adam and Dieleman, Sander and
            Norouzi, Mohammad and Eck, Douglas and Simonyan, Karen},
  booktitle = {Proceedings of the 34th International Conference on Machine Learning},
  pages = {1068--1077},
  year = {2017},
  volume = {70},
  series = {Proceedings of Machine Learning Research},
  publisher = {PMLR},
}"""
#: What classes.json says of the source (written by write_prepared).
SOURCE = Source(NAME, TITLE, HOMEPAGE, LICENSE, CITATION, SIZE)

_BASE = "http://download.magenta.tensorflow.org/datasets/nsynth"
# md5 as used by the HEAR 2021 benchmark (hearbenchmark/hear-preprocess, nsynth_pitch.py); Magenta
# publishes none itself.
REMOTES = {
    split: RemoteFile(
        filename=f"nsynth-{split}.jsonwav.tar.gz",
        url=f"{_BASE}/nsynth-{split}.jsonwav.tar.gz",
        checksums=(f"md5:{md5}",),
    )
    for split, md5 in (
        ("test", "5e6f8719bf7e16ad0a00d518b78af77d"),
        ("valid", "87e94a00a19b6dbc99cf6d4c0c0cae87"),
        ("train", "fde6665a93865503ba598b9fac388660"),
    )
}

FAMILIES = (
    "bass",
    "brass",
    "flute",
    "guitar",
    "keyboard",
    "mallet",
    "organ",
    "reed",
    "string",
    "synth_lead",
    "vocal",
)
SOURCES = ("acoustic", "electronic", "synthetic")

#: The dataset's own options and their defaults (workflow/schemas/datasets.schema.yaml).
DEFAULTS: dict[str, Any] = own_defaults(NAME)


def options(raw: dict[str, Any]) -> dict[str, Any]:
    """Validated NSynth options with defaults."""
    opts = check_options(NAME, raw, DEFAULTS)
    archives = sorted(set(opts["archives"]))
    if archives not in (["test", "valid"], ["test", "train", "valid"]):
        raise DatasetError(
            f"nsynth.archives must be [test, valid] or [train, valid, test], got {opts['archives']}"
        )
    if opts["task"] not in ("family", "source", "pitch", "velocity"):
        raise DatasetError(f"nsynth.task must be family, source, pitch or velocity, got {opts['task']!r}")
    if not 0 < opts["valid_fraction"] < 1:
        raise DatasetError(f"nsynth.valid_fraction must be within (0, 1), got {opts['valid_fraction']}")
    opts["archives"] = archives
    return opts


def remotes(opts: dict[str, Any]) -> list[RemoteFile]:
    return [REMOTES[split] for split in ("test", "valid", "train") if split in opts["archives"]]


def _examples(folder: Path) -> tuple[Path, dict[str, dict]]:
    found = sorted(folder.glob("*/examples.json")) or sorted(folder.glob("examples.json"))
    if not found:
        raise DatasetError(
            f"no examples.json under {folder}: not an NSynth jsonwav archive "
            "(expected nsynth-<split>/examples.json and nsynth-<split>/audio/*.wav)"
        )
    return found[0].parent, json.loads(found[0].read_text())


def convert(files: dict[str, Path], settings: Settings, out_dir: Path, scratch_dir: Path) -> Path:
    """Write NSynth into the data contract; ``files`` maps archive names to extracted folders."""
    opts = options(settings.options)
    notes = read_notes(files, opts["archives"])
    mode = assign_splits(notes, opts, settings.seed)
    if opts["max_per_split"]:
        notes = _subsample(notes, int(opts["max_per_split"]), settings.seed)
    missing = [p for p in notes["path"] if not p.exists()]
    if missing:
        raise DatasetError(
            f"{len(missing)} NSynth audio files listed in examples.json are missing, e.g. {missing[0]}"
        )
    manifest, classes = note_manifest(notes, opts["task"])
    jobs = [Job(path=p, rows=(i,)) for i, p in enumerate(notes["path"])]
    overlap = _overlap(manifest)
    log.info("instruments shared by train and test: %d", overlap)
    info = {
        "task": opts["task"],
        "split_mode": mode,
        "instruments_shared_by_train_and_test": overlap,
        "archives": opts["archives"],
    }
    return write_prepared(SOURCE, out_dir, jobs, manifest, classes, settings, scratch_dir, **info)


def read_notes(files: dict[str, Path], archives: list[str]) -> pd.DataFrame:
    """The notes of the ``archives`` (NSynth splits) from their ``examples.json``, sorted by
    (``nsynth_split``, ``note_str``), with their audio ``path``."""
    frames = []
    for split in archives:
        root, examples = _examples(files[REMOTES[split].filename])
        frame = pd.DataFrame.from_dict(examples, orient="index")
        frame["nsynth_split"] = split
        frame["path"] = [root / "audio" / f"{note}.wav" for note in frame["note_str"]]
        frames.append(frame)
    notes = pd.concat(frames, ignore_index=True).sort_values(["nsynth_split", "note_str"], kind="stable")
    return notes.reset_index(drop=True)


def assign_splits(notes: pd.DataFrame, opts: dict[str, Any], seed: int) -> str:
    """Set ``notes["split"]`` (in place): the official splits when all three archives are read, else
    NSynth-test as test and NSynth-valid divided by instrument into train and valid (seeded); return
    the split's description."""
    if opts["archives"] == ["test", "train", "valid"]:
        notes["split"] = notes["nsynth_split"]
        return "official: NSynth train/valid/test (instrument-disjoint between train and valid/test)"
    notes["split"] = "test"
    from_valid = notes["nsynth_split"] == "valid"
    sub = notes.loc[from_valid]
    assigned = group_split(sub["instrument_str"], sub["instrument_family"], opts["valid_fraction"], 0.0, seed)
    notes.loc[from_valid, "split"] = np.where(assigned == "test", "valid", assigned)
    return (
        "valid_as_train: NSynth-test is test; NSynth-valid divided by instrument into train and "
        f"valid ({opts['valid_fraction']:.0%} of its instruments, seeded)"
    )


def note_manifest(notes: pd.DataFrame, task: str) -> tuple[pd.DataFrame, list[str]]:
    """The manifest of ``notes`` (``id, split, label, label_idx`` and the note's metadata) and the
    class names of ``task``."""
    classes, labels = _labels(notes, task)
    manifest = pd.DataFrame(
        {
            "id": notes["note_str"],
            "split": notes["split"],
            "label": [classes[i] for i in labels],
            "label_idx": labels,
            "nsynth_split": notes["nsynth_split"],
            "instrument": notes["instrument_str"],
            "family": [FAMILIES[i] for i in notes["instrument_family"]],
            "source": [SOURCES[i] for i in notes["instrument_source"]],
            "pitch": notes["pitch"].astype(int),
            "velocity": notes["velocity"].astype(int),
            "qualities": ["|".join(q) for q in notes.get("qualities_str", [[]] * len(notes))],
        }
    )
    return manifest, classes


def _labels(notes: pd.DataFrame, task: str) -> tuple[list[str], list[int]]:
    if task == "family":
        return list(FAMILIES), notes["instrument_family"].astype(int).tolist()
    if task == "source":
        return list(SOURCES), notes["instrument_source"].astype(int).tolist()
    values = notes[task].astype(int)
    present = sorted(values.unique())
    classes = [f"{v:03d}" for v in present]
    index = {v: i for i, v in enumerate(present)}
    return classes, [index[v] for v in values]


def _subsample(notes: pd.DataFrame, cap: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    keep = []
    for _, rows in notes.groupby("split", sort=True):
        idx = rows.index.to_numpy()
        keep.append(np.sort(rng.choice(idx, size=cap, replace=False)) if len(idx) > cap else idx)
    return notes.loc[np.sort(np.concatenate(keep))].reset_index(drop=True)


def _overlap(manifest: pd.DataFrame) -> int:
    train = set(manifest.loc[manifest["split"] == "train", "instrument"])
    test = set(manifest.loc[manifest["split"] == "test", "instrument"])
    return len(train & test)
