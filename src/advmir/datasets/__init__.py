"""Datasets in the data contract: the embedded one rendered locally, and real ones downloaded.

- :mod:`advmir.datasets.contract`: the data contract every dataset is written in and every later
  stage reads (waveforms.npy + manifest.csv + classes.json).
- :mod:`advmir.datasets.synth_notes` (with :mod:`advmir.datasets.soundfonts`): the embedded note
  dataset, rendered from General MIDI SoundFonts (``python -m advmir render-synth-notes``).
- Real datasets: download, verify, extract safely, and convert into the data contract. One module
  per dataset (constants: citation, licence, homepage, remote files with checksums; and an adapter
  ``convert``), over the shared machinery of :mod:`advmir.datasets.download`,
  :mod:`advmir.datasets.resample` and :mod:`advmir.datasets.prepare`.
  ``python -m advmir download-dataset --dataset NAME ...`` runs one of them.
- :mod:`advmir.datasets.folder`: any folder of your own audio files, labels from subfolders, a CSV
  or none (``python -m advmir prepare-folder``); unusable files are listed in ``skipped.csv``.

The commands live in :mod:`advmir.datasets.cli`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: Real datasets, each fetched by the Snakemake rule ``download_dataset``.
REAL_DATASETS = ("nsynth", "gtzan", "good_sounds", "esc50")
#: Datasets made on this machine: the embedded one (rule render_synth_notes) and the user's own
#: folder of recordings (rule prepare_folder).
LOCAL_DATASETS = ("synth_notes", "folder")


def dataset_module(name: str) -> ModuleType:
    """The module of one real dataset; ValueError naming the allowed names."""
    if name not in REAL_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; real datasets are {list(REAL_DATASETS)}")
    return importlib.import_module(f"advmir.datasets.{name}")
