"""Artifacts passed between stages: a SHA-256 digest is written beside each, and each is checked when read.

Every file a stage writes through :func:`advmir.io.atomic_path` whose suffix is in
:data:`DIGESTED_SUFFIXES` gets a sidecar ``<file>.sha256`` (the ``sha256sum`` format, so
``sha256sum -c model.ckpt.sha256`` works in its folder), written in the same atomic step as the file.
A file without a sidecar (written before digests existed) is checked by its structure only.

Each reader calls one function here (:func:`open_npy`, :func:`load_torch`, :func:`read_csv`,
:func:`read_json`, :func:`load_npz`). A missing or damaged file raises :class:`ArtifactError`, whose
message is one line: the file, what is wrong, and the Snakemake command that rebuilds it and
everything built from it. Snakemake alone cannot do that: it judges a file by its time stamp, so a
truncated file counts as up to date, and a deleted intermediate whose consumers exist is not rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from advmir.errors import InputError

DIGEST_SUFFIX = ".sha256"
DIGESTED_SUFFIXES = (".npy", ".npz", ".ckpt", ".csv", ".json")
_CHUNK = 16 * 2**20  # bytes hashed (and scanned for NaN) at once; a multiple of every itemsize
_HEX = re.compile(r"[0-9a-f]{64}")
# arrays this process has scanned whole, by (path, inode, size, mtime, digest file, what was checked):
# a job that opens one dataset several times (a transfer job, once per source model) reads it once
_SCANNED: set[tuple[Any, ...]] = set()


class ArtifactError(InputError):
    """A missing or damaged artifact; ``str()`` is one line naming the file, the fault and the fix."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}; rebuild it with: {rebuild_command([self.path])}")


def rebuild_command(paths: Iterable[str | os.PathLike], snakemake_args: Sequence[str] = ()) -> str:
    """The Snakemake call that re-creates ``paths`` and re-runs every job downstream of them.

    ``--forcerun`` takes files as well as rules; run it where the workflow runs (the folder that
    holds ``results/``). ``snakemake_args``: e.g. ``--configfile`` options of another config.
    """
    return shlex.join(["snakemake", "--cores", "all", *snakemake_args, "--forcerun", *map(str, paths)])


# ------------------------------------------------------------------------------------------ digests
def sidecar(path: str | os.PathLike) -> Path:
    """The digest file of ``path``: ``<path>.sha256``."""
    path = Path(path)
    return path.with_name(path.name + DIGEST_SUFFIX)


def is_digested(path: str | os.PathLike) -> bool:
    """Whether files named like ``path`` get a digest (by suffix; digest files never do)."""
    return Path(path).suffix in DIGESTED_SUFFIXES


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, as hex."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            sha.update(block)
    return sha.hexdigest()


def write_sidecar(path: str | os.PathLike, digest: str, to: str | os.PathLike | None = None) -> Path:
    """Write the digest file of ``path`` (to ``<path>.sha256``, or to ``to``) holding ``digest``."""
    side = Path(to) if to is not None else sidecar(path)
    side.write_text(f"{digest}  {Path(path).name}\n")
    return side


def write_folder_digests(folder: str | os.PathLike) -> None:
    """A sidecar for every digested file under ``folder`` (hidden files skipped)."""
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and is_digested(path) and not path.name.startswith("."):
            write_sidecar(path, file_digest(path))


def recorded_digest(path: str | os.PathLike) -> str | None:
    """The digest recorded beside ``path``, or None when it has no sidecar."""
    side = sidecar(path)
    try:
        words = side.read_text().split()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(path, f"its digest file {side.name} cannot be read ({exc})") from None
    if not words or not _HEX.fullmatch(words[0]):
        raise ArtifactError(path, f"its digest file {side.name} is damaged")
    return words[0]


def check_digest(path: str | os.PathLike, actual: str | None = None) -> bool:
    """Compare ``path`` with its recorded digest; True when checked, False when it has none.

    ``actual``: the file's digest when the caller has already computed it.
    """
    expected = recorded_digest(path)
    if expected is None:
        return False
    if (actual or file_digest(path)) != expected:
        raise ArtifactError(
            path,
            f"its content differs from the digest written with it ({sidecar(path).name}): "
            "it was damaged or changed after it was written",
        )
    return True


def require(path: str | os.PathLike) -> Path:
    """``path`` as a Path, after checking that it is a file."""
    path = Path(path)
    if path.is_dir():
        raise ArtifactError(path, "is a folder, not a file")
    if not path.exists():
        raise ArtifactError(path, "is missing")
    return path


def _require_all(path: Path, wanted: Sequence[str], present: Collection[str], fault: str) -> None:
    """ArtifactError ``"<path> <fault> [missing, ...]"`` unless every one of ``wanted`` is in ``present``."""
    missing = [k for k in wanted if k not in present]
    if missing:
        raise ArtifactError(path, f"{fault} {missing}")


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception's message (torch's run on for lines)."""
    text = str(exc).strip().splitlines()
    return (text[0].split(". ")[0] if text else type(exc).__name__)[:200]


# ------------------------------------------------------------------------------------------ readers
def open_npy(
    path: str | os.PathLike,
    *,
    dtypes: Sequence[str] = ("float32",),
    rows: int | None = None,
    cols: int | None = None,
    finite: bool = True,
    peak: float | None = None,
    mmap: bool = True,
) -> np.ndarray:
    """Check an (N, T) ``.npy`` and open it (memory-mapped unless ``mmap`` is False).

    Checked in one pass over the file: the header, a size that matches it (truncation), the dtype,
    ``rows`` and ``cols`` when given, finite values (float arrays, when ``finite``), ``|x| <= peak``
    when given, and the recorded digest.
    """
    path = require(path)
    allowed = [np.dtype(d) for d in dtypes]
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(handle)
            offset = handle.tell()
    except (ValueError, OSError, EOFError) as exc:
        raise ArtifactError(path, f"is not a readable .npy array ({_first_line(exc)})") from None
    want = f"{' or '.join(map(str, allowed))} of shape ({rows or 'N'}, {cols or 'T'})"
    if len(shape) != 2 or dtype not in allowed:
        raise ArtifactError(path, f"holds {dtype} of shape {shape}, expected {want}")
    size = path.stat().st_size - offset
    expected = int(np.prod(shape)) * dtype.itemsize
    if size < expected:
        raise ArtifactError(
            path, f"is truncated: its header describes {shape} {dtype} ({expected} bytes), it holds {size}"
        )
    if size > expected:
        raise ArtifactError(
            path, f"has {size - expected} bytes beyond the {shape} {dtype} array it describes"
        )
    if (rows is not None and shape[0] != rows) or (cols is not None and shape[1] != cols):
        raise ArtifactError(path, f"has shape {shape}, expected {want}")
    stat, side = path.stat(), sidecar(path)
    side_mtime = side.stat().st_mtime_ns if side.exists() else None
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, side_mtime, finite, peak)
    if key not in _SCANNED:
        _scan_npy(path, offset, shape, fortran, dtype, finite, peak)
        _SCANNED.add(key)
    return np.load(path, mmap_mode="r" if mmap else None)


def _scan_npy(
    path: Path,
    offset: int,
    shape: tuple[int, ...],
    fortran: bool,
    dtype: np.dtype,
    finite: bool,
    peak: float | None,
) -> None:
    """One pass over an .npy: its digest, and (float arrays) finite values and ``|x| <= peak``."""
    sha = hashlib.sha256()
    scan = dtype.kind == "f" and (finite or peak is not None)
    seen = 0
    with open(path, "rb") as handle:
        sha.update(handle.read(offset))
        while block := handle.read(_CHUNK):
            sha.update(block)
            if scan:
                values = np.frombuffer(block, dtype=dtype)
                bad = ~np.isfinite(values)
                if finite and bad.any():
                    where = "" if fortran else f" (first at row {(seen + int(np.argmax(bad))) // shape[1]})"
                    raise ArtifactError(path, f"holds NaN or infinite values{where}")
                if peak is not None and values.size and float(np.abs(values).max()) > peak:
                    raise ArtifactError(path, f"holds samples outside [-{peak:g}, {peak:g}]")
                seen += values.size
    check_digest(path, sha.hexdigest())


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive, after its digest."""
    path = require(path)
    try:
        with np.load(path) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as exc:  # zipfile.BadZipFile, ValueError, EOFError, OSError, ...
        raise ArtifactError(path, f"is not a readable .npz archive ({_first_line(exc)})") from None
    check_digest(path)
    return arrays


def load_torch(path: str | os.PathLike, *, keys: Sequence[str] = ("state_dict",)) -> dict[str, Any]:
    """A checkpoint dict read with ``torch.load(weights_only=True)``: it must hold ``keys``, and
    every floating-point tensor of its ``state_dict`` must be finite."""
    import torch

    path = require(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or garbled zip: RuntimeError, EOFError, UnpicklingError, ...
        raise ArtifactError(path, f"is not a readable checkpoint ({_first_line(exc)})") from None
    if not isinstance(payload, dict):
        raise ArtifactError(path, f"holds a {type(payload).__name__}, not a checkpoint dict")
    _require_all(path, keys, payload, "is not a checkpoint of this kind: it lacks")
    for name, value in (payload.get("state_dict") or {}).items():
        if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
            raise ArtifactError(path, f"holds NaN or infinite weights ({name})")
    check_digest(path)
    return payload


def read_csv(path: str | os.PathLike, columns: Sequence[str] = (), **kwargs: Any) -> pd.DataFrame:
    """A CSV table (``kwargs`` go to :func:`pandas.read_csv`) that must hold ``columns``."""
    path = require(path)
    try:
        frame = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise ArtifactError(path, f"is not a readable CSV table ({_first_line(exc)})") from None
    _require_all(path, columns, frame.columns, "lacks the column(s)")
    check_digest(path)
    return frame


def read_json(path: str | os.PathLike, keys: Sequence[str] = ()) -> dict[str, Any]:
    """A JSON object that must hold ``keys``."""
    path = require(path)
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(path, f"is not readable JSON ({_first_line(exc)})") from None
    if not isinstance(obj, dict):
        raise ArtifactError(path, f"holds a JSON {type(obj).__name__}, expected an object")
    _require_all(path, keys, obj, "lacks the key(s)")
    check_digest(path)
    return obj
