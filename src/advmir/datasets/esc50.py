"""ESC-50: 2,000 five-second environmental recordings, 50 classes, five folds.

Archive: GitHub's zip of the karolpiczak/ESC-50 repository, ``ESC-50-master/meta/esc50.csv``
(filename, fold, target, category, esc10, src_file, take) and ``ESC-50-master/audio/*.wav``
(44.1 kHz mono). Clips cut from one Freesound recording share a fold, so folds never leak.

Splits: folds 1-3 train, fold 4 valid, fold 5 test by default (``folds`` changes it; for the
paper's five-fold cross-validation, run one config per test fold). ``esc10_only`` keeps the
ESC-10 subset (10 classes, CC BY).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from advmir.datasets.download import RemoteFile
from advmir.datasets.prepare import Job, Settings, check_options, write_prepared

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

# md5 from soundata's esc50 loader. GitHub builds this zip from the master branch on request: a
# new commit there changes it; pin the digest of your copy in the config if it no longer matches.
REMOTE = RemoteFile(
    filename="ESC-50-master.zip",
    url="https://github.com/karolpiczak/ESC-50/archive/master.zip",
    checksums=("md5:7771e4b9d86d0945acce719c7a59305a",),
    manual="download https://github.com/karolpiczak/ESC-50/archive/master.zip (GitHub: Code > Download ZIP)",
)

CLIP_SECONDS = 5.0
DEFAULTS: dict[str, Any] = {
    "folds": {"train": [1, 2, 3], "valid": [4], "test": [5]},
    "esc10_only": False,
}


def options(raw: dict[str, Any]) -> dict[str, Any]:
    opts = check_options(NAME, raw, DEFAULTS)
    folds = opts["folds"]
    if set(folds) != {"train", "valid", "test"}:
        raise ValueError(f"esc50.folds needs exactly train, valid and test, got {sorted(folds)}")
    flat = [int(f) for split in ("train", "valid", "test") for f in folds[split]]
    if sorted(flat) != sorted(set(flat)) or not set(flat) <= {1, 2, 3, 4, 5} or not folds["test"]:
        raise ValueError(f"esc50.folds must use folds 1-5 at most once each, with a test fold; got {folds}")
    return opts


def remotes(opts: dict[str, Any]) -> list[RemoteFile]:
    return [REMOTE]


def convert(files: dict[str, Path], settings: Settings, out_dir: Path, scratch_dir: Path) -> Path:
    opts = options(settings.options)
    folder = files[REMOTE.filename]
    metas = sorted(folder.glob("*/meta/esc50.csv")) or sorted(folder.glob("meta/esc50.csv"))
    if not metas:
        raise ValueError(f"no meta/esc50.csv under {folder}: not the ESC-50 repository archive")
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
        raise ValueError(f"{len(missing)} files listed in esc50.csv are missing, e.g. {missing[0]}")
    jobs = [Job(path=p, rows=(i,)) for i, p in enumerate(paths)]
    return write_prepared(
        out_dir,
        jobs,
        manifest,
        classes,
        settings,
        scratch_dir,
        source=NAME,
        title=TITLE,
        homepage=HOMEPAGE,
        license=LICENSE,
        citation=CITATION,
        task="category",
        split_mode=f"folds {opts['folds']}",
    )
