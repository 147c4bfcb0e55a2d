"""The anomaly stage's runs: score sets with a detector or an ensemble, evaluate the scores, build
the review list, stack the per-dataset tables and compare the multi-task net with the ensemble.

The command line (:mod:`advmir.anomaly.cli`) parses options, calls one function here and writes
what it returns. Score tables have one row per clip: ``id``, ``score`` (higher = more suspicious),
``reason`` and, for ensembles, ``detector`` (the base detector that weighed most for the clip)
and, for the stacked ensemble, ``likely_fault``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from advmir.artifacts import read_csv
from advmir.errors import InputError

if TYPE_CHECKING:
    from advmir.datasets.contract import Dataset

ENSEMBLES = ("ensemble_rank", "ensemble_stack")
REVIEW_COLUMNS = ("label", "pitch", "is_fault", "fault", "severity")  # manifest columns review.csv keeps
OUTPUTS = (
    "metrics",
    "roc",
    "budget",
    "review",
    "generalisation",
    "severities",
    "roc_families",
)  # evaluate_set


class AnomalyInputError(InputError, ValueError):
    """Score files, sets or checkpoints that do not fit together."""


# ------------------------------------------------------------------------------------------ scoring
def train_clips(dataset: str | Path, max_clips: int, seed: int) -> tuple[Dataset, np.ndarray]:
    """The dataset and the rows (n,) of its train split to learn clean audio from: all of them, or a
    seeded sorted subset of ``max_clips`` (0: all)."""
    from advmir.datasets.contract import load_dataset

    data = load_dataset(dataset)
    rows = data.split_indices("train")
    if len(rows) == 0:
        raise AnomalyInputError(f"{dataset} has no train split to learn clean audio from")
    if max_clips and len(rows) > max_clips:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_clips, replace=False))
    return data, rows


def score_with_detector(
    detector: str,
    dataset: str | Path,
    sets: Sequence[Dataset],
    *,
    max_reference: int = 0,
    seed: int = 0,
    models: Mapping[str, str] | None = None,
    autoencoder: str | None = None,
    multitask: str | None = None,
) -> list[pd.DataFrame]:
    """Fit base ``detector`` on the clean train split of ``dataset`` (at most ``max_reference`` clips,
    0: all) and score every set: one table (id, score, reason) per set, in order.

    ``models`` maps names to classifier checkpoints; ``autoencoder`` and ``multitask`` are
    checkpoint paths of the detectors that need them.
    """
    from advmir.anomaly.detectors import NEEDS_REFERENCE, NEEDS_TORCH, Reference, ScoreSet, run_detector

    data, rows = train_clips(dataset, max_reference, seed)
    if detector not in NEEDS_REFERENCE:
        rows = rows[:0]  # only the class list and sample rate are used
    if detector in NEEDS_TORCH:
        import torch

        from advmir.runtime import seed_everything

        seed_everything(seed)
        torch.set_num_threads(1)
    loaded = load_classifiers(models)
    ref = Reference(
        waveforms=data.float_waveforms(rows),
        manifest=data.manifest.iloc[rows].reset_index(drop=True),
        classes=data.classes,
        sample_rate=data.sample_rate,
        seed=seed,
        models=loaded,
        autoencoder=autoencoder,
        multitask=multitask,
    )
    for s in sets:
        if s.sample_rate != data.sample_rate:
            raise AnomalyInputError(
                f"{s.root} is sampled at {s.sample_rate} Hz, the reference {dataset} at"
                f" {data.sample_rate} Hz: prepare it at the reference's rate (e.g. folder.sample_rate)"
            )
    score_sets = [
        ScoreSet(s.float_waveforms(slice(None)), in_classes(s.manifest, data.classes)) for s in sets
    ]
    return run_detector(detector, ref, score_sets)


def load_classifiers(models: Mapping[str, str] | None) -> dict[str, Any]:
    """Name -> classifier (waveform (B, T) -> logits (B, C)) on the CPU, from checkpoint paths."""
    if not models:
        return {}
    from advmir.models.zoo import load_model

    return {name: load_model(path, device="cpu") for name, path in models.items()}


def in_classes(manifest: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """``manifest`` with ``label_idx`` re-indexed by label name into ``classes`` (-1: a label that is
    not one of them, e.g. a folder's own labels against the embedded dataset's families)."""
    index = {str(c): i for i, c in enumerate(classes)}
    mapped = manifest["label"].astype(str).map(index).fillna(-1).astype(int)
    if (mapped.to_numpy() == manifest["label_idx"].to_numpy()).all():
        return manifest
    return manifest.assign(label_idx=mapped.to_numpy())


def read_scores(paths: Sequence[str | Path]) -> dict[str, pd.DataFrame]:
    """``scores/{detector}.csv`` files -> ``{detector: table}``, ids as strings."""
    return {
        Path(q).stem: read_csv(q, ["id", "score"], keep_default_na=False).astype({"id": str}) for q in paths
    }


def score_ensemble(
    kind: str,
    score_paths: Sequence[str | Path],
    sets: Sequence[Dataset],
    save: str | Path | None = None,
    **stack_info: Any,
) -> pd.DataFrame:
    """Combine base detectors' scores of ``sets[0]`` into ensemble ``kind`` (one of
    :data:`ENSEMBLES`): one table (id, score, detector, reason[, likely_fault, reason_1..3]) in the
    set's order.

    With two sets, ``score_paths`` are the first set's CSVs, then as many of the second
    (validation) set's; ``ensemble_stack`` needs them, to fit its weights on the validation set,
    and writes the fitted ensemble to the folder ``save`` (with ``stack_info``) when given.
    """
    from advmir.anomaly import ensemble

    if len(sets) == 2:  # scores of the first set, then of the second (validation) set
        if len(score_paths) % 2:
            raise AnomalyInputError(
                "with --sets TEST VALID give --scores TEST_CSVs... VALID_CSVs... (as many of each)"
            )
        half = len(score_paths) // 2
        test_paths, valid_paths = score_paths[:half], score_paths[half:]
    elif kind == "ensemble_stack":
        raise AnomalyInputError(
            "ensemble_stack needs --sets TEST VALID and --scores TEST_CSVs... VALID_CSVs..."
        )
    else:
        test_paths, valid_paths = score_paths, []
    tables = read_scores(test_paths)
    ids = sets[0].manifest["id"].astype(str).tolist()
    if kind == "ensemble_rank":
        value, contribution = ensemble.rank_average(tables, ids)
    else:
        valid = read_scores(valid_paths)
        if set(valid) != set(tables):
            raise AnomalyInputError(
                f"validation scores {sorted(valid)} do not match test scores {sorted(tables)}"
            )
        stack = ensemble.fit_stack(valid, sets[1].manifest)
        if save is not None:
            ensemble.save_stack(save, stack, **stack_info)
        value, contribution, likely, evidence = ensemble.apply_stack(stack, tables, ids)
    detectors, reasons = ensemble.flagged_by(contribution, tables)
    # `detector`: the base detector that weighed most for the clip; `reason`: what it said
    table = pd.DataFrame({"id": ids, "score": value, "detector": detectors, "reason": reasons})
    if kind == "ensemble_stack":
        from advmir.anomaly.review import curator_reasons

        table["likely_fault"] = likely
        table = pd.concat([table, curator_reasons(contribution, evidence, tables)], axis=1)
    return table


# --------------------------------------------------------------------------------------- evaluation
def aligned_scores(manifest: pd.DataFrame, tables: Mapping[str, pd.DataFrame]) -> dict[str, np.ndarray]:
    """Each detector's scores (N,) float64 in the order of ``manifest`` (N rows, string ids)."""
    scores = {}
    for det, t in tables.items():
        s = t.set_index("id")["score"].reindex(manifest["id"])
        if s.isna().any():
            raise AnomalyInputError(
                f"{det}: no score for clip {s.index[s.isna()][0]!r}; rerun its scoring job"
            )
        scores[det] = s.to_numpy(dtype=np.float64)
    return scores


def review_table(manifest: pd.DataFrame, tables: Mapping[str, pd.DataFrame], ranking: str) -> pd.DataFrame:
    """review.csv: every clip of ``manifest``, most suspicious first by detector ``ranking`` (the first
    table's if it has none): rank, id, ranked_by, score, detector, reason[, likely_fault, the
    stack's reasons in words reason_1..3], and the manifest's :data:`REVIEW_COLUMNS`."""
    ranking = ranking if ranking in tables else next(iter(tables))
    t = tables[ranking].set_index("id").loc[manifest["id"]].reset_index()
    detector = t["detector"] if "detector" in t else ranking
    review = pd.DataFrame({"id": t["id"], "score": t["score"], "detector": detector, "reason": t["reason"]})
    for column in ("likely_fault", *(c for c in t.columns if c.startswith("reason_"))):
        if column in t:
            review[column] = t[column].to_numpy()
    extra = [c for c in REVIEW_COLUMNS if c in manifest.columns]
    review = review.merge(manifest[["id", *extra]], on="id", how="left")
    review = review.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    review.insert(0, "rank", np.arange(1, len(review) + 1))
    review.insert(2, "ranked_by", ranking)
    return review


def evaluate_set(
    manifest: pd.DataFrame,
    tables: Mapping[str, pd.DataFrame],
    ranking: str,
    outputs: Collection[str] = OUTPUTS,
) -> dict[str, pd.DataFrame]:
    """The tables of ``outputs`` (of :data:`OUTPUTS`) for one corrupted set: ``metrics`` (per detector
    and fault, :func:`advmir.anomaly.metrics.evaluate`), ``roc`` (ROC points, all faults pooled),
    ``budget`` (faults found against share reviewed), ``review`` (:func:`review_table`),
    ``generalisation`` (in-generator vs held-out fault implementations per family,
    :func:`advmir.anomaly.metrics.generalisation`), ``severities`` (ROC-AUC per fault and severity)
    and ``roc_families`` (ROC points per fault family, in-generator and held-out apart).

    Args:
        manifest: the set's manifest (N rows; ``id`` as strings, ``is_fault``, ``fault``, ``severity``).
        tables: ``{detector: scores table}`` (:func:`read_scores`), each with a score for every clip.
        ranking: the detector whose ranking makes review.csv.
    """
    from advmir.anomaly import metrics

    unknown = sorted(set(outputs) - set(OUTPUTS))
    if unknown:
        raise ValueError(f"unknown output(s) {unknown}; known: {list(OUTPUTS)}")
    scores = aligned_scores(manifest, tables)
    make = {
        "metrics": lambda: metrics.evaluate(manifest, scores),
        "roc": lambda: metrics.roc_points(manifest, scores),
        "budget": lambda: metrics.budget_curve(manifest, scores),
        "review": lambda: review_table(manifest, tables, ranking),
        "generalisation": lambda: metrics.generalisation(manifest, scores),
        "severities": lambda: metrics.by_severity(manifest, scores),
        "roc_families": lambda: metrics.family_roc_points(manifest, scores),
    }
    return {name: make[name]() for name in OUTPUTS if name in outputs}


def combine_metrics(parts: Sequence[tuple[str, str | Path]]) -> pd.DataFrame:
    """Stack per-dataset metrics.csv files (``(dataset, path)`` pairs, in order) into one table,
    ``dataset`` first."""
    table = pd.concat([read_csv(path).assign(dataset=name) for name, path in parts], ignore_index=True)
    return table[["dataset", *[c for c in table.columns if c != "dataset"]]]


def multitask_vs_ensemble(table: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and fault: ROC-AUC of the ensemble (stacked if present) beside the multi-task net's."""
    rows: list[dict[str, Any]] = []
    for dataset, part in table.groupby("dataset", sort=False):
        auc = part.pivot(index="fault", columns="detector", values="roc_auc")
        ens = next((e for e in reversed(ENSEMBLES) if e in auc.columns), None)
        if ens is None or "multitask" not in auc.columns:
            continue
        for fault, row in auc.iterrows():
            diff = row["multitask"] - row[ens]
            better = "tie" if abs(diff) < 0.005 else "multitask" if diff > 0 else "ensemble"
            rows.append(
                {
                    "dataset": dataset,
                    "fault": fault,
                    "ensemble": ens,
                    "ensemble_roc_auc": row[ens],
                    "multitask_roc_auc": row["multitask"],
                    "better": better,
                }
            )
    return pd.DataFrame(
        rows, columns=["dataset", "fault", "ensemble", "ensemble_roc_auc", "multitask_roc_auc", "better"]
    )
