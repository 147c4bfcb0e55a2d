"""``python -m advmir evaluate-transfer | summarize-transfer``.

The codec and room jobs whose outputs this stage scores are the codec stage's (:mod:`advmir.codecs.cli`).

- ``evaluate``: one (attack, condition) -> ``results/transfer/{dataset}/{attack}/{condition}.csv``: every
  target model's prediction on every example of every source model and on its matched-noise control
  (attack ``clean``: the clean subset, no control). With ``--conditions``, one job scores several
  conditions (the targets are loaded once) and writes one such file per condition into ``--out-dir``.
- ``summarize``: every prediction table -> ``results/tables/transfer.csv`` and its aggregates.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from advmir.errors import InputError, UsageError
from advmir.runtime import setup_logging

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


class LosslessChangeError(InputError):
    """A lossless codec changed a prediction: the codec path is broken (the tables are written)."""


def evaluate(argv: list[str]) -> int:
    """Every target model's prediction on every example of every source, under one condition or several."""
    parser = argparse.ArgumentParser(prog="advmir evaluate-transfer", description=evaluate.__doc__)
    parser.add_argument("--dataset-dir", required=True)
    parser.add_argument("--attack", required=True, help="attack name, or `clean` for the clean subset")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--condition", help="`none` or a codec/room setting name")
    which.add_argument(
        "--conditions",
        nargs="+",
        help="several conditions in one job: --source/--noise give the audio without a condition, "
        "--codec-dir where each source's codec and room outputs are",
    )
    parser.add_argument(
        "--source",
        nargs=3,
        action="append",
        required=True,
        metavar=("MODEL", "AUDIO", "EXAMPLES"),
        help="source model (`clean` for clean audio), its (N, T) .npy (or `dataset`: the clean waveforms) "
        "and its examples.csv / rows file; repeat per source model",
    )
    parser.add_argument(
        "--noise",
        nargs=2,
        action="append",
        default=[],
        metavar=("MODEL", "AUDIO"),
        help="the matched-noise control of source MODEL, (N, T) in the order of its audio (the attack "
        "run's matched_noise.npy, or decoded_noise.npy after a codec or room); required for every "
        "source but `clean`",
    )
    parser.add_argument(
        "--codec-dir",
        nargs=2,
        action="append",
        default=[],
        metavar=("MODEL", "DIR"),
        help="with --conditions: the codec stage's folder of source MODEL (results/codecs/{dataset}/"
        "{source}), holding {condition}/decoded.npy and, for an attack source, decoded_noise.npy",
    )
    parser.add_argument("--target", nargs=2, action="append", required=True, metavar=("MODEL", "CKPT"))
    parser.add_argument("--max-examples", type=int, default=None, help="only the first N examples")
    parser.add_argument("--out", help="with --condition: results/transfer/{dataset}/{attack}/{condition}.csv")
    parser.add_argument(
        "--out-dir", help="with --conditions: results/transfer/{dataset}/{attack} ({condition}.csv each)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    setup_logging()

    import torch

    from advmir.io import write_csv
    from advmir.models.zoo import load_model
    from advmir.runtime import resolve_device
    from advmir.transfer.predict import check_unique, condition_inputs, evaluate_condition
    from advmir.transfer.sources import FROM_DATASET

    conditions = [args.condition] if args.condition else list(args.conditions)
    if (args.condition and not args.out) or (args.conditions and not args.out_dir):
        raise UsageError("--condition writes --out, --conditions writes into --out-dir: give the one needed")
    where = {"attack": args.attack, "condition": " ".join(conditions)}
    check_unique([s[0] for s in args.source], "--source", **where)
    check_unique([n[0] for n in args.noise], "--noise", **where)
    check_unique([t[0] for t in args.target], "--target", **where)
    check_unique([d[0] for d in args.codec_dir], "--codec-dir", **where)
    check_unique(conditions, "--conditions", **where)
    torch.set_num_threads(max(1, args.threads))
    device = resolve_device(args.device)
    if args.condition:  # --source and --noise give this condition's audio
        inputs = {args.condition: ([tuple(x) for x in args.source], dict(args.noise))}
    else:
        noise, codec_dirs = dict(args.noise), dict(args.codec_dir)
        inputs = {c: condition_inputs(c, args.source, noise, codec_dirs) for c in conditions}
    # every condition's audio is there before the first model loads
    missing = [
        path
        for sources, noise in inputs.values()
        for path in [*(audio for _, audio, _ in sources), *noise.values()]
        if path != FROM_DATASET and not Path(path).is_file()
    ]
    if missing:
        raise InputError(
            f"{args.attack}: {len(missing)} audio files of the sources are missing, e.g. {missing[:3]}; "
            "run the attack and codec jobs that write them first"
        )
    targets = {name: load_model(ckpt, device) for name, ckpt in args.target}
    for number, (condition, (sources, noise)) in enumerate(inputs.items(), start=1):
        table = evaluate_condition(
            args.dataset_dir,
            sources,
            noise,
            targets,
            attack=args.attack,
            condition=condition,
            max_examples=args.max_examples,
            batch_size=args.batch_size,
            device=device,
        )
        out = args.out if args.condition else Path(args.out_dir) / f"{condition}.csv"
        write_csv(out, table)
        log.info("condition %d of %d: wrote %d predictions to %s", number, len(inputs), len(table), out)
    return 0


def summarize(argv: list[str]) -> int:
    """Tidy transfer table, clean accuracy per codec, and the aggregated matrices."""
    parser = argparse.ArgumentParser(prog="advmir summarize-transfer", description=summarize.__doc__)
    files = parser.add_mutually_exclusive_group(required=True)
    files.add_argument("--predictions", nargs="+", help="results/transfer/{dataset}/{attack}/{condition}.csv")
    files.add_argument(
        "--grid",
        help="JSON with datasets, attacks, conditions, sources and codec_settings: read every cell's "
        "predictions under --transfer-root and every codec job's bitrates under --codecs-root "
        "(the workflow's form: a sweep's file lists outgrow a command line)",
    )
    parser.add_argument("--bitrates", nargs="*", default=[], help="results/codecs/.../bitrates.csv")
    parser.add_argument("--transfer-root", default="results/transfer", help="with --grid")
    parser.add_argument("--codecs-root", default="results/codecs", help="with --grid")
    parser.add_argument(
        "--models", required=True, help="JSON: model name -> spec (frontend, arch, train_subset)"
    )
    parser.add_argument("--conditions", required=True, help="JSON: condition name -> spec (kind, codec, ...)")
    parser.add_argument(
        "--attacks",
        default="{}",
        help="JSON: attack name -> spec (name, threat, surrogate); default white-box",
    )
    parser.add_argument("--transfer-out", required=True, help="results/tables/transfer.csv")
    parser.add_argument("--clean-out", required=True, help="results/tables/codec_clean_accuracy.csv")
    parser.add_argument("--rates-out", required=True, help="results/tables/transfer_rates.csv")
    parser.add_argument("--matrix-out", required=True, help="results/tables/transfer_matrix.csv")
    parser.add_argument(
        "--representation-out", required=True, help="results/tables/transfer_representation.csv"
    )
    parser.add_argument(
        "--allow-lossless-changes",
        action="store_true",
        help="do not fail when a lossless codec changed a prediction (it never should)",
    )
    args = parser.parse_args(argv)
    setup_logging()

    from advmir.io import write_csv
    from advmir.transfer.tables import lossless_problem, summarize_predictions

    predictions, bitrates = args.predictions, args.bitrates
    if args.grid:
        predictions, bitrates = grid_files(args.grid, args.transfer_root, args.codecs_root)
    tables = summarize_predictions(
        predictions,
        bitrates,
        json.loads(args.models),
        json.loads(args.conditions),
        json.loads(args.attacks),
    )
    write_csv(args.transfer_out, tables["transfer"])
    write_csv(args.clean_out, tables["clean"])
    write_csv(args.rates_out, tables["rates"])
    write_csv(args.matrix_out, tables["matrix"])
    write_csv(args.representation_out, tables["representation"])
    _log_summary(tables)
    problem = lossless_problem(tables["clean"])
    if problem and not args.allow_lossless_changes:
        raise LosslessChangeError(problem)
    return 0


def grid_files(grid: str, transfer_root: str, codecs_root: str) -> tuple[list[str], list[str]]:
    """The prediction and bitrates files of a ``--grid``: the plan's ``prediction_files()`` (the
    workflow rule's inputs) and ``bitrate_files()``, in the same order.

    Raises:
        UsageError: the grid is not JSON or lacks a key.
    """
    from advmir.transfer.plan import bitrate_paths, prediction_paths

    keys = ("datasets", "attacks", "conditions", "sources", "codec_settings")
    try:
        spec = json.loads(grid)
        datasets, attacks, conditions, sources, settings = (list(spec[k]) for k in keys)
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise UsageError(f"--grid must be a JSON object with {list(keys)}: {error}") from error
    return (
        prediction_paths(transfer_root, datasets, attacks, conditions),
        bitrate_paths(codecs_root, datasets, sources, settings),
    )


def _log_summary(tables: dict[str, pd.DataFrame]) -> None:
    """Log the lossless controls' changes and the pooled rates under no transformation."""
    clean = tables["clean"]
    for row in clean[clean["lossless"].astype(bool)].itertuples():
        log.info(
            "lossless control %s, target %s: %d of %d clean and %d of %d adversarial predictions changed "
            "(max confidence change %.2g)",
            row.condition, row.target_model, row.n_changed_vs_none, row.n, row.n_adversarial_changed_vs_none,
            row.n_adversarial, row.max_conf_change_vs_none,
        )  # fmt: skip
    rep = tables["representation"]
    for row in rep[rep["condition"] == "none"].itertuples():
        log.info(
            "%s %s, no transformation: %s / %s -> %.3f pooled success, %.3f matched noise, %+.3f excess "
            "(%d pairs)",
            row.dataset, row.attack, row.relation, row.source_role, row.pooled_success_rate,
            row.pooled_noise_success_rate, row.pooled_excess_over_noise, row.n_pairs,
        )  # fmt: skip
