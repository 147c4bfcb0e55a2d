"""good-sounds: single notes of 12 instruments, played well and deliberately badly (MTG / Korg).

Files: ``good-sounds.zip`` (``good-sounds/sound_files/<pack>/<microphone>/NNNN.wav``, 48 kHz)
and the database exported as JSON (as mirdata uses it): ``sounds.json`` (one entry per played
note: instrument, note, octave, semitone, player, ``klass``...), ``takes.json`` (one entry per
recorded file: microphone, filename relative to ``good-sounds/``) and ``packs.json``.

Labels. ``klass`` holds space-separated tags: ``good-sound`` for a good note, ``bad-<dimension>``
(or ``bad`` and a dimension tag) for a note badly played on purpose, ``scale-good`` /
``scale-bad`` for scales. Every row keeps ``klass`` as found, plus ``quality`` (good / bad) and
``bad_class`` (the bad dimension(s), empty for good notes): the ground truth of anomaly scoring.
``task`` picks the label: ``instrument`` (default; 12 classes) or ``quality``. Scales are left out
unless ``include_scales``; notes with neither a good nor a bad tag are left out and counted.

Takes. A note was often recorded by several microphones at once; ``takes: first`` keeps one file
per note (the lowest take id), ``all`` keeps every microphone. Splits are seeded and by note
(``sound_id``), stratified by label, so the takes of one note never straddle two splits.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from advmir.datasets.contract import DatasetError, Source
from advmir.datasets.download import RemoteFile
from advmir.datasets.prepare import Job, Settings, check_options, group_split, own_defaults, write_prepared

log = logging.getLogger(__name__)

NAME = "good_sounds"
TITLE = "good-sounds"
HOMEPAGE = "https://www.upf.edu/web/mtg/good-sounds"
LICENSE = "Creative Commons Attribution Share Alike 4.0 International (CC BY-SA 4.0)"
SIZE = "single notes and scales of 12 instruments, up to 4 microphones; sizes not verified here"
CITATION = """@inproceedings{romani2015real,
  title = {A Real-Time System for Measuring Sound Goodness in Instrumental Sounds},
  author = {Romani Picas, Oriol and Parra Rodriguez, Hector and Dabiri, Dara and Tokuda, Hiroshi
            and Hariya, Wataru and Oishi, Koji and Serra, Xavier},
  booktitle = {Audio Engineering Society Convention 138},
  year = {2015},
}"""
#: What classes.json says of the source (written by write_prepared).
SOURCE = Source(NAME, TITLE, HOMEPAGE, LICENSE, CITATION, SIZE)

# Zenodo publishes an md5 for every file; these are the values mirdata's good_sounds loader pins.
_META = "https://zenodo.org/records/4588740/files"
REMOTES = {
    "sounds": RemoteFile(
        "sounds.json",
        f"{_META}/sounds.json?download=1",
        ("md5:a60d90a964fd567ebc2e4b4e3f2990f2",),
        extract=False,
    ),
    "takes": RemoteFile(
        "takes.json",
        f"{_META}/takes.json?download=1",
        ("md5:318e840031397314907e7f9420f2abeb",),
        extract=False,
    ),
    "packs": RemoteFile(
        "packs.json",
        f"{_META}/packs.json?download=1",
        ("md5:3b512c280f8be64ccb59b0b294e84610",),
        extract=False,
    ),
    "audio": RemoteFile(
        "good-sounds.zip",
        "https://zenodo.org/records/820937/files/good-sounds.zip?download=1",
        ("md5:2137bbb2d32c1d60aa51e1301225f541",),
    ),
}

#: The dataset's own options and their defaults (workflow/schemas/datasets.schema.yaml).
DEFAULTS: dict[str, Any] = own_defaults(NAME)


def options(raw: dict[str, Any]) -> dict[str, Any]:
    opts = check_options(NAME, raw, DEFAULTS)
    if opts["task"] not in ("instrument", "quality"):
        raise DatasetError(f"good_sounds.task must be instrument or quality, got {opts['task']!r}")
    if opts["takes"] not in ("first", "all"):
        raise DatasetError(f"good_sounds.takes must be first or all, got {opts['takes']!r}")
    return opts


def remotes(opts: dict[str, Any]) -> list[RemoteFile]:
    return list(REMOTES.values())


def parse_klass(klass: str | None) -> tuple[str | None, str, bool]:
    """``klass`` tags -> (quality good/bad/None, bad sub-class(es) joined by '+', is a scale)."""
    tags = (klass or "").replace(",", " ").split()
    scale = any(t.startswith("scale") for t in tags)
    if any(t in ("good-sound", "good", "scale-good") for t in tags):
        return "good", "", scale
    bad = [t for t in tags if t == "bad" or t.startswith(("bad-", "scale-bad"))]
    if not bad:
        return None, "", scale
    dims = [t.removeprefix("bad-") for t in tags if t.startswith("bad-")]
    dims += [t for t in tags if not t.startswith(("bad", "scale", "good")) and t not in ("minor", "major")]
    return "bad", "+".join(dict.fromkeys(dims)), scale


def _audio_root(folder: Path) -> Path:
    for candidate in (folder / "good-sounds", folder):
        if (candidate / "sound_files").is_dir():
            return candidate
    found = sorted(folder.rglob("sound_files"))
    if not found:
        raise DatasetError(f"no sound_files/ folder under {folder}: not the good-sounds audio archive")
    return found[0].parent


def convert(files: dict[str, Path], settings: Settings, out_dir: Path, scratch_dir: Path) -> Path:
    opts = options(settings.options)
    sounds = json.loads(files["sounds.json"].read_text())
    takes = json.loads(files["takes.json"].read_text())
    packs = json.loads(files["packs.json"].read_text())
    root = _audio_root(files["good-sounds.zip"])
    rows, skipped = take_rows(sounds, takes, packs, root, include_scales=opts["include_scales"])
    if any(skipped.values()):
        log.info("left out: %s", skipped)
    if not rows:
        raise DatasetError(f"no usable good-sounds notes found (left out: {skipped})")
    table, manifest, classes, column = take_manifest(rows, opts, settings.seed)
    jobs = [Job(path=p, rows=(i,)) for i, p in enumerate(table["path"])]
    info = {
        "task": opts["task"],
        "takes": opts["takes"],
        "split_mode": (
            f"seeded by note (sound_id), stratified by {column} (valid {opts['valid_fraction']}, "
            f"test {opts['test_fraction']})"
        ),
        "left_out": skipped,
    }
    return write_prepared(SOURCE, out_dir, jobs, manifest, classes, settings, scratch_dir, **info)


def take_rows(
    sounds: dict[str, dict[str, Any]],
    takes: dict[str, dict[str, Any]],
    packs: dict[str, dict[str, Any]],
    root: Path,
    *,
    include_scales: bool,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """One row per usable take (in take id order, its audio file under ``root``), and how many takes
    were left out and why (no good/bad tag, a scale when ``include_scales`` is off, a missing file)."""
    rows = []
    skipped = {"no good/bad tag": 0, "scale": 0, "missing file": 0}
    for take in sorted(takes.values(), key=lambda t: int(t["id"])):
        sound = sounds.get(str(take["sound_id"]))
        if sound is None:
            continue
        quality, bad_class, scale = parse_klass(sound.get("klass"))
        if scale and not include_scales:
            skipped["scale"] += 1
            continue
        if quality is None:
            skipped["no good/bad tag"] += 1
            continue
        path = root / take["filename"]
        if not path.exists():
            skipped["missing file"] += 1
            continue
        pack = packs.get(str(sound.get("pack_id")), {}).get("name", "")
        rows.append(
            {
                "id": f"take{int(take['id']):05d}",
                "sound_id": int(sound["id"]),
                "take_id": int(take["id"]),
                "instrument": sound.get("instrument"),
                "note": sound.get("note"),
                "octave": sound.get("octave"),
                "pitch": sound.get("semitone"),
                "dynamics": sound.get("dynamics"),
                "player": sound.get("player"),
                "microphone": take.get("microphone"),
                "pack": pack,
                "klass": sound.get("klass"),
                "quality": quality,
                "bad_class": bad_class,
                "reference": sound.get("reference"),
                "path": path,
            }
        )
    return rows, skipped


def take_manifest(
    rows: list[dict[str, Any]], opts: dict[str, Any], seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, list[str], str]:
    """The takes kept (the first of each note when ``opts["takes"]`` is ``first``), their manifest
    (``id, split, label, label_idx`` first; split seeded by note, stratified by the label), the class
    names and the label column (``instrument`` or ``quality``)."""
    table = pd.DataFrame(rows)
    if opts["takes"] == "first":
        table = table.sort_values("take_id").drop_duplicates("sound_id").sort_values("take_id")
    table = table.reset_index(drop=True)
    column = "instrument" if opts["task"] == "instrument" else "quality"
    classes = sorted(table[column].unique()) if column == "instrument" else ["good", "bad"]
    index = {c: i for i, c in enumerate(classes)}
    table["split"] = group_split(
        table["sound_id"], table[column], opts["valid_fraction"], opts["test_fraction"], seed
    )
    manifest = table.drop(columns=["path"]).assign(
        label=table[column], label_idx=table[column].map(index).astype(int)
    )
    manifest = manifest[
        [
            "id",
            "split",
            "label",
            "label_idx",
            *[c for c in manifest if c not in {"id", "split", "label", "label_idx"}],
        ]
    ]
    return table, manifest, classes, column
