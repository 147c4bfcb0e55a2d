"""GTZAN genre collection: 1,000 excerpts of 30 s, 10 genres, cut into fixed-length segments.

Archive ``genres.tar.gz``: ``genres/<genre>/<genre>.000NN.wav`` (22,050 Hz, 16-bit mono), as in
the archive behind the pinned digests (the file list of mirdata's gtzan_genre index, torchaudio's
and TFDS's loaders all read ``.wav``); Kaggle's copy has
``Data/genres_original/<genre>/<genre>.000NN.wav``. Copies that hold the excerpts as Sun ``.au``
files in the same tree are read too. Any of these layouts is found.

Segments: each excerpt gives ``floor(duration / clip_seconds)`` consecutive segments (a last one
short by under 2 % is zero-padded, recorded in pad_samples); all segments of one excerpt are in
the same split. Splits:

- ``fault_filtered`` (default): the artist-filtered split of Kereliuk, Sturm & Larsen (2015)
  that leaves out the 70 faulty excerpts Sturm documented (443 / 197 / 290 excerpts).
- ``random``: seeded, stratified by genre, by excerpt (valid_fraction / test_fraction); artists
  may repeat across splits, which inflates accuracy (Sturm 2013).

``jazz.00054`` cannot be decoded in several copies of GTZAN; it is skipped with a warning.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd
import soundfile as sf

from advmir.datasets._gtzan_splits import FAULT_FILTERED, excerpt_numbers
from advmir.datasets.contract import DatasetError, Source
from advmir.datasets.download import RemoteFile
from advmir.datasets.prepare import Job, Settings, check_options, group_split, own_defaults, write_prepared

log = logging.getLogger(__name__)

NAME = "gtzan"
TITLE = "GTZAN genre collection"
HOMEPAGE = "http://marsyas.info/index.html"
LICENSE = (
    "No licence published; distributed by its author for research use. Excerpts are copyrighted "
    "recordings: do not redistribute the audio."
)
SIZE = "1,000 excerpts x 30 s, 10 genres; archive about 1.2 GB (approx.)"
CITATION = """@article{tzanetakis2002musical,
  title = {Musical genre classification of audio signals},
  author = {Tzanetakis, George and Cook, Perry},
  journal = {IEEE Transactions on Speech and Audio Processing},
  volume = {10}, number = {5}, pages = {293--302}, year = {2002},
}
@article{kereliuk2015deep,
  title = {Deep Learning and Music Adversaries},
  author = {Kereliuk, Corey and Sturm, Bob L. and Larsen, Jan},
  journal = {IEEE Transactions on Multimedia},
  volume = {17}, number = {11}, pages = {2059--2071}, year = {2015},
}"""
#: What classes.json says of the source (written by write_prepared).
SOURCE = Source(NAME, TITLE, HOMEPAGE, LICENSE, CITATION, SIZE)

GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
KNOWN_DAMAGED = frozenset({"jazz.00054"})

# The original archive (http://opihi.cs.uvic.ca/sound/genres.tar.gz, now offline; .wav excerpts):
# md5 from mirdata's gtzan_genre loader, sha256 from torchaudio.datasets.GTZAN. The Hugging Face
# mirror below publishes no checksum, and whether its file is byte-identical to the original is not
# known here: a copy matching neither digest is trusted on first download only when the config allows
# it (see unpublished_copies), its sha256 recorded and every later copy held to it.
REMOTE = RemoteFile(
    filename="genres.tar.gz",
    url="https://huggingface.co/datasets/marsyas/gtzan/resolve/main/data/genres.tar.gz",
    checksums=(
        "md5:5b3d6dddb579ab49814ab86dba69e7c7",
        "sha256:24347e0223d2ba798e0a558c4c172d9d4a19c00bb7963fe055d183dadb4ef2c6",
    ),
    unpublished_copies=True,
    manual=(
        "GTZAN's original host (opihi.cs.uvic.ca, linked from marsyas.info) is offline. Get "
        "genres.tar.gz from the marsyas mirror on the Hugging Face Hub "
        "(https://huggingface.co/datasets/marsyas/gtzan, file data/genres.tar.gz) or the original "
        "archive from a colleague's copy"
    ),
)

#: The dataset's own options and their defaults (workflow/schemas/datasets.schema.yaml).
DEFAULTS: dict[str, Any] = own_defaults(NAME)
_FILE = re.compile(r"^(" + "|".join(GENRES) + r")\.(\d{5})\.(au|wav)$")


def options(raw: dict[str, Any]) -> dict[str, Any]:
    opts = check_options(NAME, raw, DEFAULTS)
    if opts["split"] not in ("fault_filtered", "random"):
        raise DatasetError(f"gtzan.split must be fault_filtered or random, got {opts['split']!r}")
    return opts


def remotes(opts: dict[str, Any]) -> list[RemoteFile]:
    return [REMOTE]


def find_excerpts(folder: Path) -> dict[str, Path]:
    """Excerpt id (``blues.00012``) -> audio file, in any of GTZAN's known layouts."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        match = _FILE.match(path.name)
        if match and path.is_file():
            found.setdefault(f"{match[1]}.{match[2]}", path)
    if not found:
        raise DatasetError(
            f"no GTZAN excerpts under {folder} (expected genres/<genre>/<genre>.000NN.wav, or .au)"
        )
    return found


def convert(files: dict[str, Path], settings: Settings, out_dir: Path, scratch_dir: Path) -> Path:
    opts = options(settings.options)
    excerpts = find_excerpts(files[REMOTE.filename])
    ids = sorted(excerpts)
    splits, left_out, description = excerpt_splits(ids, opts, settings.seed)
    rows, jobs, skipped = segment_rows(excerpts, ids, splits, settings.clip_seconds)
    manifest = pd.DataFrame(rows)
    info = {
        "task": "genre",
        "split_mode": description,
        "excerpts_left_out": left_out,
        "excerpts_unreadable": skipped,
    }
    return write_prepared(SOURCE, out_dir, jobs, manifest, list(GENRES), settings, scratch_dir, **info)


def excerpt_splits(
    ids: list[str], opts: dict[str, Any], seed: int
) -> tuple[list[str | None], list[str], str]:
    """The split of every excerpt id (``genre.NNNNN``; None: left out as faulty by the fault-filtered
    split), the ids left out, and the split's description."""
    genres = [i.split(".")[0] for i in ids]
    if opts["split"] == "fault_filtered":
        lookup = {
            f"{genre}.{n:05d}": split
            for split, per_genre in FAULT_FILTERED.items()
            for genre, spec in per_genre.items()
            for n in excerpt_numbers(spec)
        }
        splits = [lookup.get(i) for i in ids]
        left_out = [i for i, s in zip(ids, splits, strict=True) if s is None]
        log.info("fault-filtered split: %d excerpts left out as faulty", len(left_out))
        description = "fault_filtered: Kereliuk, Sturm & Larsen (2015) artist-filtered split, 930 excerpts"
    else:
        splits = list(group_split(ids, genres, opts["valid_fraction"], opts["test_fraction"], seed))
        left_out = []
        description = (
            f"random: seeded by excerpt, stratified by genre (valid {opts['valid_fraction']}, "
            f"test {opts['test_fraction']}); artists may repeat across splits"
        )
    return splits, left_out, description


def segment_rows(
    excerpts: dict[str, Path], ids: list[str], splits: list[str | None], clip_seconds: float
) -> tuple[list[dict[str, Any]], list[Job], list[str]]:
    """The manifest rows (one per ``clip_seconds`` segment of every excerpt with a split), one
    :class:`Job` per excerpt, and the known-damaged excerpts skipped because they cannot be read.

    Raises:
        ValueError: an excerpt that cannot be read and is not known to be damaged.
    """
    rows: list[dict[str, Any]] = []
    jobs: list[Job] = []
    skipped: list[str] = []
    for excerpt, split in zip(ids, splits, strict=True):
        if split is None:
            continue
        path = excerpts[excerpt]
        try:
            info = sf.info(str(path))
            seconds = info.frames / info.samplerate if info.format != "RAW" else 0.0
        except (sf.LibsndfileError, RuntimeError):
            seconds = 0.0
        if seconds <= 0:
            if excerpt not in KNOWN_DAMAGED:
                raise DatasetError(
                    f"cannot read {path}; the archive verified, so it is damaged at the source"
                )
            log.warning("skipping %s: cannot be read (known to be damaged in some copies)", excerpt)
            skipped.append(excerpt)
            continue
        n_segments = max(1, int(seconds / clip_seconds + 0.02))
        first = len(rows)
        genre = excerpt.split(".")[0]
        for seg in range(n_segments):
            rows.append(
                {
                    "id": f"{excerpt}-{seg:02d}",
                    "split": split,
                    "label": genre,
                    "label_idx": GENRES.index(genre),
                    "excerpt": excerpt,
                    "segment": seg,
                    "start_seconds": round(seg * clip_seconds, 4),
                    "file": path.name,
                }
            )
        starts = tuple(seg * clip_seconds for seg in range(n_segments))
        jobs.append(
            Job(
                path=path,
                rows=tuple(range(first, first + n_segments)),
                starts=starts,
                optional=excerpt in KNOWN_DAMAGED,
            )
        )
    return rows, jobs, skipped
