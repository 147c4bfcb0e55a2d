"""Command line of the anomaly stage: corrupt, train the autoencoder / multi-task net, score, evaluate.

``python -m advmir corrupt-split ...``, ``score-anomalies``, ``evaluate-anomalies``,
``train-anomaly-autoencoder`` and ``train-multitask``; each function takes argv and returns an exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from advmir.anomaly.corruptions import (
    FAULTS,
    CorruptionConfigError,
    check_request,
    corrupt_clips,
    normalize_severities,
    split_rng,
)
from advmir.artifacts import read_csv

if TYPE_CHECKING:
    from advmir.datasets.contract import Dataset

log = logging.getLogger("advmir.anomaly")
ENSEMBLES = ("ensemble_rank", "ensemble_stack")


def _fail(message: str) -> int:
    print(f"advmir: error: {message}", file=sys.stderr)
    return 2


def parse_faults(items: list[str]) -> dict[str, list[float] | None]:
    """``["clipping=6", "hum=20,30", "reversed"]`` -> ``{"clipping": [6.0], ...}`` (None = default)."""
    out: dict[str, list[float] | None] = {}
    for item in items:
        name, _, values = item.partition("=")
        try:
            out[name] = [float(v) for v in values.split(",")] if values else None
        except ValueError:
            raise CorruptionConfigError(
                f"fault {item!r}: severities must be numbers, e.g. clipping=6 or hum=20,30"
            ) from None
    return out


def _common_logging() -> None:
    from advmir.runtime import setup_logging

    setup_logging()


# --------------------------------------------------------------------------------------------- corrupt
def corrupt(argv: list[str]) -> int:
    """Write a copy of one split with known faults injected, in the data contract."""
    p = argparse.ArgumentParser(prog="advmir corrupt-split", description=corrupt.__doc__)
    p.add_argument("--dataset", required=True, help="prepared dataset folder (results/data/NAME)")
    p.add_argument("--split", default="test", help="split to copy and corrupt (default: test)")
    p.add_argument("--out", required=True, help="output folder, e.g. results/anomaly/NAME/corrupted_test")
    p.add_argument(
        "--faults",
        nargs="+",
        default=list(FAULTS),
        help="faults as NAME or NAME=SEV[,SEV...] (default: all faults at default severity)",
    )
    p.add_argument("--fraction", type=float, default=0.3, help="share of the split made faulty, in [0, 1]")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    _common_logging()
    from advmir.datasets.contract import DataContractError, load_dataset, write_dataset

    try:
        data = load_dataset(args.dataset)
        severities = normalize_severities(parse_faults(args.faults), data.sample_rate)
        rows = data.split_indices(args.split)
        check_request(severities, args.fraction, len(rows), list(data.manifest.columns), args.split)
        if len(rows) == 0:
            raise CorruptionConfigError(f"split {args.split!r} of {args.dataset} is empty")
    except (CorruptionConfigError, DataContractError) as exc:
        return _fail(str(exc))
    waves, manifest = corrupt_clips(
        data.float_waveforms(rows),
        data.manifest.iloc[rows].reset_index(drop=True),
        data.classes,
        data.sample_rate,
        severities,
        args.fraction,
        split_rng(args.seed, args.split),
    )
    write_dataset(
        args.out,
        waves,
        manifest,
        data.classes,
        data.sample_rate,
        source=str(args.dataset),
        corrupted_split=args.split,
        fraction=args.fraction,
        seed=args.seed,
        severities=severities,
    )
    counts = manifest["fault"].value_counts().to_dict()
    log.info("wrote %s: %d clips, faults %s", args.out, len(manifest), counts)
    return 0


# -------------------------------------------------------------------------------------------- training
def _train_clips(dataset: str, max_clips: int, seed: int) -> tuple[Dataset, np.ndarray]:
    from advmir.datasets.contract import load_dataset

    data = load_dataset(dataset)
    rows = data.split_indices("train")
    if len(rows) == 0:
        raise ValueError(f"{dataset} has no train split to learn clean audio from")
    if max_clips and len(rows) > max_clips:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_clips, replace=False))
    return data, rows


def train_autoencoder(argv: list[str]) -> int:
    """Train the log-mel autoencoder on the clean train split."""
    p = argparse.ArgumentParser(
        prog="advmir train-anomaly-autoencoder", description=train_autoencoder.__doc__
    )
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True, help="checkpoint path")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--max-clips", type=int, default=0, help="train on at most this many clips (0: all)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    _common_logging()
    import torch

    from advmir.anomaly.autoencoder import AEConfig
    from advmir.anomaly.autoencoder import train_autoencoder as fit
    from advmir.io import write_torch

    data, rows = _train_clips(args.dataset, args.max_clips, args.seed)
    torch.set_num_threads(1)
    ckpt = fit(data.float_waveforms(rows), data.sample_rate, AEConfig(epochs=args.epochs), args.seed)
    write_torch(args.out, ckpt)
    return 0


def train_multitask(argv: list[str]) -> int:
    """Train the multi-task net (family head + fault head) with faults applied on the fly."""
    p = argparse.ArgumentParser(prog="advmir train-multitask", description=train_multitask.__doc__)
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True, help="checkpoint path")
    p.add_argument(
        "--faults", nargs="+", default=list(FAULTS), help="as for corrupt; audio faults are trained"
    )
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--max-clips", type=int, default=0, help="train on at most this many clips (0: all)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    _common_logging()
    import torch

    from advmir.anomaly.multitask import MultitaskConfig
    from advmir.anomaly.multitask import train_multitask as fit
    from advmir.io import write_torch
    from advmir.runtime import seed_everything

    try:
        severities = normalize_severities(parse_faults(args.faults))
    except CorruptionConfigError as exc:
        return _fail(str(exc))
    seed_everything(args.seed)
    data, rows = _train_clips(args.dataset, args.max_clips, args.seed)
    torch.set_num_threads(1)
    labels = data.manifest["label_idx"].to_numpy()[rows]
    ckpt = fit(
        data.float_waveforms(rows),
        labels,
        len(data.classes),
        data.sample_rate,
        severities,
        MultitaskConfig(epochs=args.epochs),
        args.seed,
    )
    write_torch(args.out, ckpt)
    return 0


# ----------------------------------------------------------------------------------------------- score
def _parse_models(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--model expects NAME=CKPT, got {item!r}")
        out[name] = path
    return out


def score(argv: list[str]) -> int:
    """Score corrupted sets with one detector (or combine detectors' scores into an ensemble)."""
    from advmir.anomaly.detectors import DETECTORS

    p = argparse.ArgumentParser(prog="advmir score-anomalies", description=score.__doc__)
    p.add_argument("--detector", required=True, choices=[*DETECTORS, *ENSEMBLES])
    p.add_argument("--dataset", help="prepared dataset (its train split is the clean reference)")
    p.add_argument("--sets", nargs="+", required=True, help="corrupted set folders to score")
    p.add_argument("--out", nargs="+", required=True, help="one scores CSV per set")
    p.add_argument("--model", nargs="*", default=[], help="trained classifiers as NAME=CKPT")
    p.add_argument("--autoencoder", help="autoencoder checkpoint")
    p.add_argument("--multitask", help="multi-task net checkpoint")
    p.add_argument(
        "--scores",
        nargs="*",
        default=[],
        help="ensembles: base detectors' CSVs of the first set, then of the validation set if stacking",
    )
    p.add_argument("--max-reference", type=int, default=0, help="use at most this many train clips (0: all)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    _common_logging()
    if args.detector in ENSEMBLES and len(args.out) != 1:
        return _fail(f"{args.detector} writes one CSV (for the first set); got {len(args.out)} --out files")
    if args.detector not in ENSEMBLES and len(args.sets) != len(args.out):
        return _fail(
            f"--sets has {len(args.sets)} folders but --out {len(args.out)} files; give one CSV per set"
        )
    from advmir.datasets.contract import load_dataset
    from advmir.io import write_csv

    sets = [load_dataset(s) for s in args.sets]
    if args.detector in ENSEMBLES:
        tables = _ensemble(args.detector, args.scores, sets)
    else:
        if not args.dataset:
            return _fail(f"detector {args.detector!r} needs --dataset (the clean reference)")
        tables = _base_detector(args, sets)
    for path, table in zip(args.out, tables, strict=True):
        write_csv(path, table)
        log.info("wrote %s (%d clips)", path, len(table))
    return 0


def _base_detector(args: argparse.Namespace, sets: list[Dataset]) -> list[pd.DataFrame]:
    from advmir.anomaly.detectors import NEEDS_REFERENCE, NEEDS_TORCH, Reference, ScoreSet, run_detector

    data, rows = _train_clips(args.dataset, args.max_reference, args.seed)
    if args.detector not in NEEDS_REFERENCE:
        rows = rows[:0]  # only the class list and sample rate are used
    models = {}
    if args.detector in NEEDS_TORCH:
        import torch

        from advmir.runtime import seed_everything

        seed_everything(args.seed)
        torch.set_num_threads(1)
    if args.model:
        from advmir.models.zoo import load_model

        models = {name: load_model(path, device="cpu") for name, path in _parse_models(args.model).items()}
    ref = Reference(
        waveforms=data.float_waveforms(rows),
        manifest=data.manifest.iloc[rows].reset_index(drop=True),
        classes=data.classes,
        sample_rate=data.sample_rate,
        seed=args.seed,
        models=models,
        autoencoder=args.autoencoder,
        multitask=args.multitask,
    )
    for s in sets:
        if s.classes != data.classes or s.sample_rate != data.sample_rate:
            raise ValueError(f"{s.root} does not match {args.dataset} (classes or sample rate differ)")
    score_sets = [ScoreSet(s.float_waveforms(slice(None)), s.manifest) for s in sets]
    return run_detector(args.detector, ref, score_sets)


def _read_scores(paths: list[str]) -> dict[str, pd.DataFrame]:
    """``scores/{detector}.csv`` files -> ``{detector: table}``, ids as strings."""
    return {
        Path(q).stem: read_csv(q, ["id", "score"], keep_default_na=False).astype({"id": str}) for q in paths
    }


def _ensemble(kind: str, score_paths: list[str], sets: list[Dataset]) -> list[pd.DataFrame]:
    from advmir.anomaly import ensemble

    if len(sets) == 2:  # scores of the first set, then of the second (validation) set
        if len(score_paths) % 2:
            raise ValueError(
                "with --sets TEST VALID give --scores TEST_CSVs... VALID_CSVs... (as many of each)"
            )
        half = len(score_paths) // 2
        test_paths, valid_paths = score_paths[:half], score_paths[half:]
    elif kind == "ensemble_stack":
        raise ValueError("ensemble_stack needs --sets TEST VALID and --scores TEST_CSVs... VALID_CSVs...")
    else:
        test_paths, valid_paths = score_paths, []
    tables = _read_scores(test_paths)
    ids = sets[0].manifest["id"].astype(str).tolist()
    if kind == "ensemble_rank":
        value, contribution = ensemble.rank_average(tables, ids)
    else:
        valid = _read_scores(valid_paths)
        if set(valid) != set(tables):
            raise ValueError(f"validation scores {sorted(valid)} do not match test scores {sorted(tables)}")
        model, dets = ensemble.fit_stack(valid, sets[1].manifest)
        value, contribution, likely = ensemble.apply_stack(model, dets, tables, ids)
    detectors, reasons = ensemble.flagged_by(contribution, tables)
    # `detector`: the base detector that weighed most for the clip; `reason`: what it said
    table = pd.DataFrame({"id": ids, "score": value, "detector": detectors, "reason": reasons})
    if kind == "ensemble_stack":
        table["likely_fault"] = likely
    return [table]


# -------------------------------------------------------------------------------------------- evaluate
def evaluate(argv: list[str]) -> int:
    """Metrics of every detector on a corrupted split, review list, ROC and budget tables (or --combine)."""
    p = argparse.ArgumentParser(prog="advmir evaluate-anomalies", description=evaluate.__doc__)
    p.add_argument("--set", help="corrupted split folder (with is_fault, fault, severity)")
    p.add_argument("--scores", nargs="*", default=[], help="scores/{detector}.csv files")
    p.add_argument("--ranking", default="ensemble_stack", help="detector whose ranking makes review.csv")
    p.add_argument("--metrics", help="output metrics.csv")
    p.add_argument("--review", help="output review.csv")
    p.add_argument("--roc", help="output roc.csv (ROC points, all faults pooled)")
    p.add_argument("--budget", help="output budget.csv (faults found against share reviewed)")
    p.add_argument("--combine", nargs="*", default=[], help="NAME=metrics.csv pairs to stack into one table")
    p.add_argument("--table", help="output of --combine, e.g. results/tables/anomaly.csv")
    p.add_argument("--comparison", help="output of --combine: multi-task net vs ensemble, ROC-AUC per fault")
    args = p.parse_args(argv)
    _common_logging()
    from advmir.io import write_csv

    if args.combine:
        if not args.table:
            return _fail("--combine needs --table")
        parts = []
        for item in args.combine:
            name, _, path = item.partition("=")
            parts.append(read_csv(path).assign(dataset=name))
        table = pd.concat(parts, ignore_index=True)
        write_csv(args.table, table[["dataset", *[c for c in table.columns if c != "dataset"]]])
        if args.comparison:
            write_csv(args.comparison, multitask_vs_ensemble(table))
        return 0
    if not (args.set and args.scores and args.metrics):
        return _fail("give --set, --scores and --metrics (or --combine with --table)")
    from advmir.anomaly import metrics
    from advmir.datasets.contract import load_dataset

    manifest = load_dataset(args.set).manifest.astype({"id": str})
    tables = _read_scores(args.scores)
    scores = {}
    for det, t in tables.items():
        s = t.set_index("id")["score"].reindex(manifest["id"])
        if s.isna().any():
            return _fail(f"{det}: no score for clip {s.index[s.isna()][0]!r}; rerun its scoring job")
        scores[det] = s.to_numpy(dtype=np.float64)
    write_csv(args.metrics, metrics.evaluate(manifest, scores))
    if args.roc:
        write_csv(args.roc, metrics.roc_points(manifest, scores))
    if args.budget:
        write_csv(args.budget, metrics.budget_curve(manifest, scores))
    if args.review:
        ranking = args.ranking if args.ranking in tables else next(iter(tables))
        t = tables[ranking].set_index("id").loc[manifest["id"]].reset_index()
        detector = t["detector"] if "detector" in t else ranking
        review = pd.DataFrame(
            {"id": t["id"], "score": t["score"], "detector": detector, "reason": t["reason"]}
        )
        if "likely_fault" in t:
            review["likely_fault"] = t["likely_fault"].to_numpy()
        extra = [c for c in ("label", "pitch", "is_fault", "fault", "severity") if c in manifest.columns]
        review = review.merge(manifest[["id", *extra]], on="id", how="left")
        review = review.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
        review.insert(0, "rank", np.arange(1, len(review) + 1))
        review.insert(2, "ranked_by", ranking)
        write_csv(args.review, review)
    return 0


def multitask_vs_ensemble(table: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and fault: ROC-AUC of the ensemble (stacked if present) beside the multi-task net's."""
    rows = []
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


COMMANDS = {
    "corrupt-split": corrupt,
    "score-anomalies": score,
    "evaluate-anomalies": evaluate,
    "train-anomaly-autoencoder": train_autoencoder,
    "train-multitask": train_multitask,
}

if (
    __name__ == "__main__"
):  # python -m advmir.anomaly.cli COMMAND ... (until the lead registers every command)
    raise SystemExit(COMMANDS[sys.argv[1]](sys.argv[2:]))
