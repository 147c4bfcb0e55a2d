"""Real datasets: download, verify, extract safely, and convert into the data contract.

One module per dataset (constants: citation, licence, homepage, remote files with checksums;
and an adapter ``convert``), over the shared machinery of :mod:`advmir.datasets.download`,
:mod:`advmir.datasets.resample` and :mod:`advmir.datasets.prepare`.
``python -m advmir download --dataset NAME ...`` runs one of them (see :mod:`advmir.datasets.cli`).
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: Real datasets, each fetched by its own Snakemake rule ``download_<name>``.
REAL_DATASETS = ("nsynth", "gtzan", "good_sounds", "esc50")


def dataset_module(name: str) -> ModuleType:
    """The module of one real dataset; ValueError naming the allowed names."""
    if name not in REAL_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; real datasets are {list(REAL_DATASETS)}")
    return importlib.import_module(f"advmir.datasets.{name}")
