"""Lossy-codec versions of the training clips, made once per dataset for training augmentation.

Every training clip is assigned one setting of the training codec grid (seeded, uniform), and the
codec engine round-trips each group of clips through its setting. The training grid is disjoint
from the evaluation grid of the codec stage (``codecs.settings``; :func:`training_grid` refuses an
overlap), so the codec-survival numbers are measured on settings no model trained on. The
training loop swaps a clip for its codec version with probability ``training.augment.codec_prob``.

Output: ``codec_train.npy`` float32 (M, T), row k the decoded version of dataset row
``rows[k]``; ``codec_train.csv`` with one row per clip: ``row, id, setting, achieved_kbps``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from advmir.codecs.registry import CodecSetting, CodecSettingError, parse_setting, parse_settings
from advmir.datasets.contract import Dataset

log = logging.getLogger(__name__)


def training_grid(
    specs: Mapping[str, Mapping[str, Any]],
    evaluation: Mapping[str, Mapping[str, Any]],
    sample_rate: int | None = None,
) -> list[CodecSetting]:
    """The training codec grid (``training_codecs.settings``), validated, and refused if a setting
    equals one of the evaluation grid (``codecs.settings``: same codec and parameters)."""
    if not specs:
        raise CodecSettingError("training_codecs.settings is empty; list settings or set enabled: false")
    training = [parse_setting(name, spec, sample_rate) for name, spec in specs.items()]
    key = lambda s: (s.codec, s.bitrate_kbps, s.quality, s.sample_rate)  # noqa: E731
    evaluated = {key(e) for e in parse_settings(evaluation, sample_rate).values()}
    shared = sorted({s.name for s in training if key(s) in evaluated})
    if shared:
        raise CodecSettingError(
            f"training_codecs.settings {shared} equal evaluation settings of codecs.settings: "
            "training on them would flatter the codec-survival numbers; choose other bitrates"
        )
    return training


def encode_training_clips(
    dataset: Dataset, settings: list[CodecSetting], seed: int, workers: int = 1
) -> tuple[np.ndarray, pd.DataFrame]:
    """Round-trip every training clip through one seeded, randomly chosen setting.

    Returns:
        decoded: float32 (M, T), M = training clips; table: row, id, setting, achieved_kbps.
    """
    from advmir.codecs.engine import CodecEngine

    rows = dataset.split_indices("train")
    rng = np.random.default_rng([seed, 0xC0DE])
    choice = rng.integers(len(settings), size=len(rows))
    engine = CodecEngine(workers=workers)
    decoded = np.empty((len(rows), dataset.clip_samples), dtype=np.float32)
    kbps = np.zeros(len(rows))
    ids = dataset.manifest["id"].to_numpy()
    for k, setting in enumerate(settings):
        members = np.flatnonzero(choice == k)
        if not len(members):
            continue
        audio = dataset.float_waveforms(rows[members])
        result = engine.roundtrip(audio, dataset.sample_rate, setting, clip_ids=list(ids[rows[members]]))
        decoded[members] = np.clip(result.decoded, -1.0, 1.0)
        kbps[members] = result.achieved_kbps
        log.info("%s: %d clips, median %.1f kbps", setting.label(), len(members), np.median(kbps[members]))
    table = pd.DataFrame(
        {
            "row": rows,
            "id": ids[rows],
            "setting": [settings[c].name for c in choice],
            "achieved_kbps": np.round(kbps, 2),
        }
    )
    return decoded, table
