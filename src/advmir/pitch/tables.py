"""results/tables/pitch.csv: one row per (model, attack, condition, budget, family, metric).

Columns: ``model`` (tracker), ``attack`` (``clean`` or the name in ``pitch.attacks``),
``condition`` (``clean``, ``adversarial`` or its control ``noise``: white noise of the same L2 norm on
the same phrase), ``budget`` (SNR budget in dB; empty for clean), ``family`` (program family, or
``all``), ``metric``, ``value`` (the mean over phrases; ``median_snr_db`` the median) and ``n``
(phrases). Metrics: the ``mir_eval`` scores against the reference (``raw_pitch_accuracy``, ...),
against the target for targeted goals (``target_raw_pitch_accuracy``, ``target_note_onset_f``,
...), ``frames_on_goal`` (the attack's own per-frame criterion), ``success_rate`` (share of phrases
where the goal holds on at least 90% of the voiced frames by ``mir_eval``: raw pitch accuracy
<= 0.10 untargeted, target raw pitch accuracy >= 0.90 targeted) and ``median_snr_db``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from advmir.artifacts import read_csv

SUCCESS_SHARE = 0.9
METRICS = (
    "raw_pitch_accuracy",
    "raw_chroma_accuracy",
    "voicing_recall",
    "voicing_false_alarm",
    "overall_accuracy",
    "note_onset_f",
    "note_onset_offset_f",
    "target_raw_pitch_accuracy",
    "target_note_onset_f",
    "target_note_onset_offset_f",
    "frames_on_goal",
)


def success(scores: pd.DataFrame) -> pd.Series:
    """Per phrase: the goal holds on >= 90% of voiced frames (``mir_eval``'s raw pitch accuracy)."""
    if "target_raw_pitch_accuracy" in scores and scores["target_raw_pitch_accuracy"].notna().any():
        return scores["target_raw_pitch_accuracy"] >= SUCCESS_SHARE
    return scores["raw_pitch_accuracy"] <= 1.0 - SUCCESS_SHARE


def _rows(scores: pd.DataFrame, keys: dict) -> list[dict]:
    rows = []
    for family, part in [("all", scores), *scores.groupby("family")]:
        base = {**keys, "family": family, "n": len(part)}
        for metric in METRICS:
            if metric in part:
                rows.append({**base, "metric": metric, "value": float(part[metric].mean())})
        if "snr_db" in part:
            rows.append({**base, "metric": "median_snr_db", "value": float(np.median(part["snr_db"]))})
            rows.append({**base, "metric": "success_rate", "value": float(success(part).mean())})
    return rows


def pitch_table(paths: list[Path]) -> pd.DataFrame:
    """The tidy table from each job's scores.csv (``.../{tracker}/{attack}/scores.csv``)."""
    rows = []
    for path in paths:
        model, attack = path.parent.parent.name, path.parent.name
        scores = read_csv(path, columns=("id", "family"))
        if attack == "clean":
            rows += _rows(scores, {"model": model, "attack": attack, "condition": "clean", "budget": np.nan})
            continue
        for (budget, condition), part in scores.groupby(["budget_db", "condition"]):
            rows += _rows(part, {"model": model, "attack": attack, "condition": condition, "budget": budget})
    cols = ["model", "attack", "condition", "budget", "family", "metric", "value", "n"]
    return pd.DataFrame(rows)[cols].sort_values(cols[:6], kind="stable").reset_index(drop=True)
