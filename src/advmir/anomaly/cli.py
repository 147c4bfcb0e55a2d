"""Command line of the anomaly stage: corrupt, train the autoencoder / multi-task net, score, evaluate.

``python -m advmir corrupt-split ...``, ``score-anomalies``, ``evaluate-anomalies``,
``train-anomaly-autoencoder`` and ``train-multitask``; each function takes argv, calls the stage's
library (:mod:`advmir.anomaly.evaluate`, :mod:`advmir.anomaly.corruptions`, the trainers), writes
what it returns atomically and returns an exit code. Options that do not fit together raise
:class:`advmir.errors.UsageError` (one line, exit 2, from :func:`advmir.cli.main`).
"""

from __future__ import annotations

import argparse
import logging
import sys

from advmir.anomaly.corruptions import (
    FAULTS,
    CorruptionConfigError,
    check_request,
    corrupt_clips,
    normalize_severities,
    split_rng,
)
from advmir.anomaly.evaluate import ENSEMBLES, OUTPUTS, train_clips
from advmir.errors import UsageError

log = logging.getLogger("advmir.anomaly")


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


MAX_CLIPS_HELP = "train on at most this many clips (0: all)"


def _defaults(*keys: str) -> dict:
    """The anomaly section's defaults (one home: workflow/schemas/anomaly.schema.yaml): the workflow
    passes every value, a command run by hand defaults as the workflow does."""
    from advmir.config import schema_defaults

    return schema_defaults("anomaly.schema.yaml", "anomaly", *keys)


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
    p.add_argument(
        "--fraction",
        type=float,
        default=_defaults()["fraction"],
        help="share of the split made faulty, in [0, 1]",
    )
    p.add_argument(
        "--held-out",
        nargs="*",
        default=[],
        help="fault implementations the fitted detectors never see: marked held_out=1 in the manifest",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    _common_logging()
    from advmir.datasets.contract import load_dataset, write_dataset

    unknown = sorted(set(args.held_out) - set(FAULTS))
    if unknown:
        raise CorruptionConfigError(
            f"--held-out: unknown fault(s) {unknown}; known faults: {', '.join(FAULTS)}"
        )

    data = load_dataset(args.dataset)
    severities = normalize_severities(parse_faults(args.faults), data.sample_rate)
    rows = data.split_indices(args.split)
    check_request(severities, args.fraction, len(rows), list(data.manifest.columns), args.split)
    if len(rows) == 0:
        raise CorruptionConfigError(f"split {args.split!r} of {args.dataset} is empty")
    waves, manifest = corrupt_clips(
        data.float_waveforms(rows),
        data.manifest.iloc[rows].reset_index(drop=True),
        data.classes,
        data.sample_rate,
        severities,
        args.fraction,
        split_rng(args.seed, args.split),
        held_out=set(args.held_out),
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
        held_out=sorted(args.held_out),
    )
    counts = manifest["fault"].value_counts().to_dict()
    log.info("wrote %s: %d clips, faults %s", args.out, len(manifest), counts)
    return 0


# -------------------------------------------------------------------------------------------- training
def train_autoencoder(argv: list[str]) -> int:
    """Train the log-mel autoencoder on the clean train split."""
    p = argparse.ArgumentParser(
        prog="advmir train-anomaly-autoencoder", description=train_autoencoder.__doc__
    )
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True, help="checkpoint path")
    p.add_argument("--epochs", type=int, default=_defaults("autoencoder")["epochs"])
    p.add_argument("--max-clips", type=int, default=_defaults()["max_train_clips"], help=MAX_CLIPS_HELP)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    _common_logging()
    import torch

    from advmir.anomaly.autoencoder import AEConfig
    from advmir.anomaly.autoencoder import train_autoencoder as fit
    from advmir.io import write_torch

    data, rows = train_clips(args.dataset, args.max_clips, args.seed)
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
    p.add_argument("--epochs", type=int, default=_defaults("multitask")["epochs"])
    p.add_argument("--max-clips", type=int, default=_defaults()["max_train_clips"], help=MAX_CLIPS_HELP)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    _common_logging()
    import torch

    from advmir.anomaly.multitask import MultitaskConfig
    from advmir.anomaly.multitask import train_multitask as fit
    from advmir.io import write_torch
    from advmir.runtime import seed_everything

    severities = normalize_severities(parse_faults(args.faults))
    seed_everything(args.seed)
    data, rows = train_clips(args.dataset, args.max_clips, args.seed)
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
            raise UsageError(f"--model expects NAME=CKPT, got {item!r}")
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
    p.add_argument(
        "--max-reference",
        type=int,
        default=_defaults()["max_train_clips"],
        help="use at most this many train clips (0: all)",
    )
    p.add_argument(
        "--save-ensemble",
        help="ensemble_stack: also write the fitted ensemble to this folder (stack.json, calibration.npz)",
    )
    p.add_argument(
        "--ensemble-info",
        nargs="*",
        default=[],
        help="KEY=VALUE pairs recorded in the saved ensemble's stack.json (e.g. dataset=synth_notes)",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    _common_logging()
    if args.save_ensemble and args.detector != "ensemble_stack":
        raise UsageError("--save-ensemble is for --detector ensemble_stack")
    if args.detector in ENSEMBLES and len(args.out) != 1:
        raise UsageError(
            f"{args.detector} writes one CSV (for the first set); got {len(args.out)} --out files"
        )
    if args.detector not in ENSEMBLES and len(args.sets) != len(args.out):
        raise UsageError(
            f"--sets has {len(args.sets)} folders but --out {len(args.out)} files; give one CSV per set"
        )
    from advmir.anomaly.evaluate import score_ensemble, score_with_detector
    from advmir.datasets.contract import load_dataset
    from advmir.io import write_csv

    sets = [load_dataset(s) for s in args.sets]
    if args.detector in ENSEMBLES:
        info = dict(item.partition("=")[::2] for item in args.ensemble_info)
        tables = [
            score_ensemble(args.detector, args.scores, sets, args.save_ensemble, seed=args.seed, **info)
        ]
    else:
        if not args.dataset:
            raise UsageError(f"detector {args.detector!r} needs --dataset (the clean reference)")
        tables = score_with_detector(
            args.detector,
            args.dataset,
            sets,
            max_reference=args.max_reference,
            seed=args.seed,
            models=_parse_models(args.model),
            autoencoder=args.autoencoder,
            multitask=args.multitask,
        )
    for path, table in zip(args.out, tables, strict=True):
        write_csv(path, table)
        log.info("wrote %s (%d clips)", path, len(table))
    return 0


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
    p.add_argument(
        "--generalisation",
        help="output generalisation.csv (in-generator vs held-out fault implementations, per family)",
    )
    p.add_argument("--severities", help="output severities.csv (ROC-AUC per fault and severity)")
    p.add_argument(
        "--roc-families",
        dest="roc_families",
        help="output roc_families.csv (ROC points per fault family, in-generator and held-out apart)",
    )
    p.add_argument("--combine", nargs="*", default=[], help="NAME=metrics.csv pairs to stack into one table")
    p.add_argument("--table", help="output of --combine, e.g. results/tables/anomaly.csv")
    p.add_argument("--comparison", help="output of --combine: multi-task net vs ensemble, ROC-AUC per fault")
    args = p.parse_args(argv)
    _common_logging()
    from advmir.anomaly.evaluate import combine_metrics, evaluate_set, multitask_vs_ensemble, read_scores
    from advmir.io import write_csv

    if args.combine:
        if not args.table:
            raise UsageError("--combine needs --table")
        table = combine_metrics([(name, path) for name, _, path in (i.partition("=") for i in args.combine)])
        write_csv(args.table, table)
        if args.comparison:
            write_csv(args.comparison, multitask_vs_ensemble(table))
        return 0
    if not (args.set and args.scores and args.metrics):
        raise UsageError("give --set, --scores and --metrics (or --combine with --table)")
    from advmir.datasets.contract import load_dataset

    manifest = load_dataset(args.set).manifest.astype({"id": str})
    paths = {name: getattr(args, name) for name in OUTPUTS if getattr(args, name)}
    for name, table in evaluate_set(manifest, read_scores(args.scores), args.ranking, paths).items():
        write_csv(paths[name], table)
    return 0


# ---------------------------------------------------------------------------------------------- review
def review(argv: list[str]) -> int:
    """Rank every clip of a prepared dataset with a saved ensemble: review.csv with reasons in words."""
    p = argparse.ArgumentParser(prog="advmir review-dataset", description=review.__doc__)
    p.add_argument(
        "--ensemble", required=True, help="saved ensemble folder (results/anomaly/SOURCE/ensemble)"
    )
    p.add_argument("--source", required=True, help="the prepared dataset the ensemble was fitted on")
    p.add_argument("--dataset", required=True, help="the prepared dataset to review")
    p.add_argument("--model", nargs="*", default=[], help="the source's classifiers as NAME=CKPT")
    p.add_argument("--autoencoder", help="the source's autoencoder checkpoint")
    p.add_argument("--multitask", help="the source's multi-task net checkpoint")
    p.add_argument("--max-reference", type=int, default=_defaults()["max_train_clips"])
    p.add_argument("--review", required=True, help="output review.csv (one row per clip, ranked)")
    p.add_argument("--scores", required=True, help="output scores.csv (one row per clip and detector)")
    p.add_argument(
        "--summary", help="output JSON: ROC-AUC and top-10%% shares, when the dataset has is_fault"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--label-check",
        choices=["auto", "source", "cross_validated"],
        default="auto",
        help="how label_errors checks the labels: the ensemble's classifiers (source), a logistic "
        "regression cross-validated on this dataset's own labels, or auto (source when every label "
        "is one of the ensemble's classes)",
    )
    args = p.parse_args(argv)
    _common_logging()
    from advmir.anomaly.review import apply_ensemble, cross_domain
    from advmir.io import write_csv, write_json

    scores, table = apply_ensemble(
        args.ensemble,
        args.source,
        args.dataset,
        models=_parse_models(args.model),
        autoencoder=args.autoencoder,
        multitask=args.multitask,
        max_reference=args.max_reference,
        seed=args.seed,
        label_check=args.label_check,
    )
    write_csv(args.scores, scores)
    write_csv(args.review, table)
    if args.summary:
        if "is_fault" not in table:
            raise UsageError(
                f"--summary needs a dataset with known faults (is_fault); {args.dataset} has none"
            )
        write_json(args.summary, cross_domain(table))
    log.info("wrote %s (%d clips)", args.review, len(table))
    return 0


COMMANDS = {
    "corrupt-split": corrupt,
    "score-anomalies": score,
    "evaluate-anomalies": evaluate,
    "review-dataset": review,
    "train-anomaly-autoencoder": train_autoencoder,
    "train-multitask": train_multitask,
}

if (
    __name__ == "__main__"
):  # python -m advmir.anomaly.cli COMMAND ... (until the lead registers every command)
    raise SystemExit(COMMANDS[sys.argv[1]](sys.argv[2:]))
