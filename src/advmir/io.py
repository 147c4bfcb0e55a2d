"""Atomic file and folder writes: nothing half-written is ever left under its final name.

Every artifact written here carries its SHA-256 digest beside it (``<file>.sha256``, see
:mod:`advmir.artifacts`), so that a later stage, or ``python -m advmir verify-results``, can tell a
damaged file from a sound one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from advmir.artifacts import (
    DIGEST_SUFFIX,
    file_digest,
    is_digested,
    sidecar,
    write_folder_digests,
    write_sidecar,
)
from advmir.errors import InputError


class OutputError(InputError, RuntimeError):
    """An output location cannot be written."""


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) and check that files can be written in it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise OutputError(
            f"cannot write to {path}: {exc.strerror or exc}. "
            "Choose a writable `results` folder in the config or fix the folder's permissions."
        ) from exc
    return path


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str = "", digest: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` only on success.

    Works for files and folders alike: whatever the caller creates at the yielded
    path replaces ``final`` in one rename, and is removed if the block raises.

    With ``digest`` (the default), every artifact written (a suffix of
    :data:`advmir.artifacts.DIGESTED_SUFFIXES`) gets its digest file: inside a folder, before the
    folder's one rename; beside a single file, the old digest file is removed before the file is
    renamed and the new one renamed in after it, so that an interruption leaves at worst no digest
    (the file is then checked by its structure only), never a wrong one.
    """
    final = Path(final)
    ensure_writable_dir(final.parent)
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=suffix + ".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    side_tmp: Path | None = None
    try:
        yield tmp
        if digest and tmp.is_dir():
            write_folder_digests(tmp)
        elif digest and is_digested(final) and tmp.is_file():
            side_tmp = write_sidecar(final, file_digest(tmp), to=f"{tmp}{DIGEST_SUFFIX}.tmp")
            sidecar(final).unlink(missing_ok=True)
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if side_tmp is not None:
            os.replace(side_tmp, sidecar(final))
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if side_tmp is not None:
            side_tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_csv(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    """Write a table as CSV without the index, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write one array as ``.npy``, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array)


def write_torch(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` with ``torch.save``, atomically.

    Saved through an open handle: given a path, torch names the zip's records after the file, here
    a random temporary name, so two saves of the same object would differ byte for byte.
    """
    import torch

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
