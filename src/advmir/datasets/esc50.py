"""ESC-50: 2,000 five-second environmental recordings, 50 classes, five folds.

Archive: GitHub's zip of the karolpiczak/ESC-50 repository at a pinned commit (:data:`COMMIT`),
``ESC-50-<commit>/meta/esc50.csv`` (filename, fold, target, category, esc10, src_file, take) and
``ESC-50-<commit>/audio/*.wav`` (44.1 kHz mono). Clips cut from one Freesound recording share a
fold, so folds never leak.

Why a commit and not ``master.zip``: GitHub builds ``archive/master.zip`` from the branch head on
request, so every commit to the repository (a README edit is enough) changes its bytes and digest;
soundata's published md5 of it stopped matching in 2025 (soundata issue #208, fixed by pinning a
commit in PR #209). An archive of a fixed commit holds fixed files; GitHub could still rebuild its
container (zip headers, compression), and the mismatch error then says how to accept the new one.

Splits: folds 1-3 train, fold 4 valid, fold 5 test by default (``folds`` changes it; for the
paper's five-fold cross-validation, run one config per test fold). ``esc10_only`` keeps the
ESC-10 subset (10 classes, CC BY).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from advmir.datasets.contract import DatasetError, Source
from advmir.datasets.download import RemoteFile
from advmir.datasets.prepare import Job, Settings, check_options, own_defaults, write_prepared

log = logging.getLogger(__name__)

NAME = "esc50"
TITLE = "ESC-50: Dataset for Environmental Sound Classification"
HOMEPAGE = "https://github.com/karolpiczak/ESC-50"
LICENSE = "Creative Commons Attribution-NonCommercial 3.0 Unported (CC BY-NC 3.0); ESC-10 subset CC BY 3.0"
SIZE = "2,000 clips x 5 s, 50 classes; archive about 0.6 GB (approx.)"
CITATION = """@inproceedings{piczak2015dataset,
  title = {{ESC}: {Dataset} for {Environmental Sound Classification}},
  author = {Piczak, Karol J.},
  booktitle = {Proceedings of the 23rd {Annual ACM Conference} on {Multimedia}},
  pages = {1015--1018},
  year = {2015},
  publisher = {ACM Press},
  doi = {10.1145/2733373.2806390},
}"""
#: What classes.json says of the source (written by write_prepared).
SOURCE = Source(NAME, TITLE, HOMEPAGE, LICENSE, CITATION, SIZE)

#: The commit of karolpiczak/ESC-50 whose archive is fetched (the master head through 2025).
COMMIT = "33c8ce9eb2cf0b1c2f8bcf322eb349b6be34dbb6"
# sha256 of GitHub's zip of COMMIT (645,832,161 bytes), reported identically by several independent
# public projects that pin this archive; not checked against a download here (no network). A
# rebuilt archive fails with both digests and the config line that accepts it
# (`esc50: {checksums: {<filename>: sha256:...}}`).
REMOTE = RemoteFile(
    filename=f"ESC-50-{COMMIT}.zip",
    url=f"https://github.com/karolpiczak/ESC-50/archive/{COMMIT}.zip",
    checksums=("sha256:661183a6f53ef04f12c9bd618fed0ddc1713280d6c94a5a5431e844ba6f6a21f",),
    manual=(
        f"download https://github.com/karolpiczak/ESC-50/archive/{COMMIT}.zip, the archive of the "
        "pinned commit (not master.zip or GitHub's Download ZIP button: their bytes change with every "
        "commit to the repository)"
    ),
)

#: The dataset's own options and their defaults (workflow/schemas/datasets.schema.yaml).
DEFAULTS: dict[str, Any] = own_defaults(NAME)


def options(raw: dict[str, Any]) -> dict[str, Any]:
    opts = check_options(NAME, raw, DEFAULTS)
    folds = opts["folds"]
    if set(folds) != {"train", "valid", "test"}:
        raise DatasetError(f"esc50.folds needs exactly train, valid and test, got {sorted(folds)}")
    flat = [int(f) for split in ("train", "valid", "test") for f in folds[split]]
    if sorted(flat) != sorted(set(flat)) or not set(flat) <= {1, 2, 3, 4, 5} or not folds["test"]:
        raise DatasetError(f"esc50.folds must use folds 1-5 at most once each, with a test fold; got {folds}")
    return opts


def remotes(opts: dict[str, Any]) -> list[RemoteFile]:
    return [REMOTE]


def convert(files: dict[str, Path], settings: Settings, out_dir: Path, scratch_dir: Path) -> Path:
    opts = options(settings.options)
    folder = files[REMOTE.filename]
    metas = sorted(folder.glob("*/meta/esc50.csv")) or sorted(folder.glob("meta/esc50.csv"))
    if not metas:
        raise DatasetError(f"no meta/esc50.csv under {folder}: not the ESC-50 repository archive")
    root = metas[0].parent.parent
    meta = pd.read_csv(metas[0])
    fold_split = {int(f): split for split, fs in opts["folds"].items() for f in fs}
    meta["split"] = meta["fold"].map(fold_split)
    meta = meta.dropna(subset=["split"])
    names = meta.drop_duplicates("target").sort_values("target")
    if opts["esc10_only"]:
        meta = meta[meta["esc10"].astype(str) == "True"]
        names = names[names["esc10"].astype(str) == "True"]
    classes = names["category"].tolist()
    index = {c: i for i, c in enumerate(classes)}
    meta = meta.sort_values("filename").reset_index(drop=True)
    manifest = pd.DataFrame(
        {
            "id": meta["filename"].str.removesuffix(".wav"),
            "split": meta["split"],
            "label": meta["category"],
            "label_idx": meta["category"].map(index).astype(int),
            "fold": meta["fold"].astype(int),
            "target": meta["target"].astype(int),
            "esc10": meta["esc10"].astype(str) == "True",
            "src_file": meta["src_file"],
            "take": meta["take"],
        }
    )
    paths = [root / "audio" / name for name in meta["filename"]]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise DatasetError(f"{len(missing)} files listed in esc50.csv are missing, e.g. {missing[0]}")
    jobs = [Job(path=p, rows=(i,)) for i, p in enumerate(paths)]
    info = {"task": "category", "split_mode": f"folds {opts['folds']}"}
    return write_prepared(SOURCE, out_dir, jobs, manifest, classes, settings, scratch_dir, **info)
