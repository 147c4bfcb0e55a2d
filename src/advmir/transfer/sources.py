"""Where the audio of a transfer source comes from: the clean evaluation subset or one attack's output.

A *source* is ``clean`` or ``{model}/{attack}``. Both cover the same seeded evaluation subset of
the dataset: an attack's ``examples.csv`` lists it (column ``row`` = row in the dataset's
``waveforms.npy``), and the clean source takes its rows from such a file (any attack's
``examples.csv``, or a file with just a ``row`` column).

An attack source also carries its control: ``matched_noise.npy`` of the attack run, row j = the
clean clip of example j plus white Gaussian noise with the L2 norm of that example's adversarial
perturbation (the same SNR), in the order of ``adversarial.npy``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from advmir.artifacts import open_npy, read_csv
from advmir.datasets.contract import Dataset, load_dataset
from advmir.errors import InputError

CLEAN = "clean"
FROM_DATASET = "dataset"


class SourceError(InputError, ValueError):
    """A source's files disagree with each other or with the dataset."""


@dataclass
class SourceAudio:
    """The audio of one source, in the order of its examples table.

    Attributes:
        audio: float32 (N, T) in [-1, 1].
        examples: one row per clip with at least ``id``, ``row``, ``label_idx`` (ground truth from the
            dataset manifest) and ``attack_target`` (-1 when untargeted).
        sample_rate: of the audio.
        noise: float32 (N, T), the matched-noise control of ``audio`` row for row (attack sources;
            None for the clean source).
    """

    audio: np.ndarray
    examples: pd.DataFrame
    sample_rate: int
    noise: np.ndarray | None = None


def read_rows(path: str | os.PathLike, dataset: Dataset) -> pd.DataFrame:
    """The evaluation subset listed in ``path`` (a CSV with a ``row`` column), with ids and labels.

    Returns a frame with ``id, row, label_idx, attack_target`` (``attack_target`` from a ``target``
    column when present: an attack's examples.csv; else -1).
    """
    table = read_csv(path, columns=["row"])
    rows = table["row"].to_numpy()
    if len(rows) == 0:
        raise SourceError(f"{path} lists no rows")
    if not np.issubdtype(rows.dtype, np.integer) or rows.min() < 0 or rows.max() >= len(dataset.manifest):
        raise SourceError(
            f"{path}: rows must be integers in [0, {len(dataset.manifest) - 1}] "
            f"(rows of {dataset.root}/waveforms.npy)"
        )
    if pd.Series(rows).duplicated().any():
        raise SourceError(f"{path}: row {int(pd.Series(rows)[pd.Series(rows).duplicated()].iloc[0])} repeats")
    manifest = dataset.manifest.iloc[rows]
    if "id" in table.columns and not np.array_equal(
        table["id"].astype(str).to_numpy(), manifest["id"].astype(str).to_numpy()
    ):
        raise SourceError(
            f"{path}: ids do not match the dataset manifest at the listed rows; is it from another dataset?"
        )
    out = pd.DataFrame(
        {
            "id": manifest["id"].astype(str).to_numpy(),
            "row": rows.astype(np.int64),
            "label_idx": manifest["label_idx"].to_numpy().astype(np.int64),
            "attack_target": _targets(table, dataset.classes),
        }
    )
    return out


def _targets(table: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """Attack targets as class indices, -1 where untargeted (missing, empty, negative)."""
    if "target" not in table.columns:
        return np.full(len(table), -1, dtype=np.int64)
    index = {name: i for i, name in enumerate(classes)}
    out = np.full(len(table), -1, dtype=np.int64)
    for k, value in enumerate(table["target"].tolist()):
        if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
            continue
        if isinstance(value, str) and value in index:
            out[k] = index[value]
            continue
        try:
            number = int(float(value))
        except (TypeError, ValueError):
            raise SourceError(
                f"attack target {value!r} is neither a class index nor one of {classes}"
            ) from None
        out[k] = number if number >= 0 else -1
    return out


def load_source(
    dataset_dir: str | os.PathLike,
    examples_path: str | os.PathLike,
    audio_path: str | os.PathLike | None = None,
    max_examples: int | None = None,
    noise_path: str | os.PathLike | None = None,
) -> SourceAudio:
    """Audio of one source: ``audio_path`` (an (N, T) ``.npy`` in the order of ``examples_path``), or,
    when it is None or ``"dataset"``, the dataset's clean waveforms at the listed rows.

    ``noise_path``: the source's matched-noise control, an (N, T) ``.npy`` in the same order
    (``matched_noise.npy`` of the attack run, or its ``decoded_noise.npy`` after a codec or room).

    ``max_examples`` keeps the first examples only (the same ones in every source: the attack stage
    lists its seeded evaluation subset in one order); an ``audio_path`` or ``noise_path`` may then
    hold all examples or just the kept ones.
    """
    dataset = load_dataset(dataset_dir)
    examples = read_rows(examples_path, dataset)
    full = len(examples)
    if max_examples is not None:
        if max_examples < 1:
            raise SourceError(f"max_examples must be >= 1, got {max_examples}")
        examples = examples.iloc[:max_examples].reset_index(drop=True)
    if audio_path is None or str(audio_path) == FROM_DATASET:
        audio = np.ascontiguousarray(dataset.float_waveforms(examples["row"].to_numpy()))
    else:
        audio = _load_rows(audio_path, examples_path, full, len(examples), dataset.clip_samples)
    noise = None
    if noise_path is not None:
        noise = _load_rows(noise_path, examples_path, full, len(examples), dataset.clip_samples)
    return SourceAudio(audio, examples, dataset.sample_rate, noise)


def _load_rows(
    path: str | os.PathLike, examples_path: str | os.PathLike, full: int, kept: int, clip_samples: int
) -> np.ndarray:
    """float32 (kept, T) from an (N, T) ``.npy`` listing all ``full`` examples or just the ``kept``."""
    audio = open_npy(path)
    if audio.shape[0] == full and full != kept:
        audio = audio[:kept]
    if audio.shape[0] != kept or audio.shape[1] != clip_samples:
        raise SourceError(
            f"{path} has shape {audio.shape} but {examples_path} lists {kept} examples of "
            f"{clip_samples} samples: the two files must come from the same run"
        )
    return np.array(audio, dtype=np.float32, order="C")  # a copy: the memory map is closed
