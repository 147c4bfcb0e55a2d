"""Command line of the defenses stage: ``python -m advmir evaluate-robustness``,
``python -m advmir summarize-defenses`` and ``python -m advmir summarize-augmentation`` (the figures
are ``plot-defenses`` and ``plot-augmentation``, in advmir.plotting).

evaluate-robustness
    Robust accuracy of one model under the ensemble at each SNR budget, on the attack stage's
    seeded evaluation subset, and its sanity checks (:mod:`advmir.defenses.robust`,
    :mod:`advmir.defenses.sanity`); writes ``OUT_DIR/`` atomically: robustness.csv, clips.csv,
    sanity.csv, robustness.json.

summarize-defenses
    results/tables/defenses.csv and defense_sanity.csv (:mod:`advmir.defenses.tables`).

summarize-augmentation
    results/tables/defense_augmentation.csv: each augmented model beside its base model, clean, on
    the other split modes and through each codec and room (:mod:`advmir.defenses.augmentation`).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger("advmir.defenses")


def evaluate(argv: list[str]) -> int:
    """Entry point of ``python -m advmir evaluate-robustness``; returns an exit code."""
    import torch

    from advmir.config import schema_defaults
    from advmir.defenses.robust import parse_ensemble, plan_robust, write_robust
    from advmir.io import atomic_path, ensure_writable_dir
    from advmir.runtime import seed_everything, setup_logging

    # run by hand, the config's defaults (one home: the schema)
    defaults = schema_defaults("defenses.schema.yaml", "evaluation")
    p = argparse.ArgumentParser(
        prog="python -m advmir evaluate-robustness",
        description="Robust accuracy of one model under an attack ensemble at SNR budgets, and its "
        "gradient-masking sanity checks; writes robustness.csv, clips.csv, sanity.csv, robustness.json.",
    )
    p.add_argument("--dataset-dir", required=True, help="prepared dataset (data contract)")
    p.add_argument("--checkpoint", required=True, help="the evaluated model's model.ckpt")
    p.add_argument("--twin-checkpoint", help="a defended model's undefended twin (the transfer check)")
    p.add_argument("--ensemble", default=json.dumps(defaults["ensemble"]), help="JSON name -> {name, params}")
    p.add_argument("--budgets-db", nargs="+", type=float, default=defaults["budgets_db"], help="SNR budgets")
    p.add_argument(
        "--sanity", default="{}", help='JSON of the sanity settings ("{}": defaults; enabled false: none)'
    )
    p.add_argument("--info", default="{}", help="JSON recorded in robustness.json (base_model, defense, ...)")
    p.add_argument(
        "--eval-size", type=int, required=True, help="clips of the attack stage's evaluation subset"
    )
    p.add_argument("--seed", type=int, default=0, help="seeds the evaluation subset and the attacks")
    p.add_argument("--batch-size", type=int, default=64, help="clips per forward pass")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--out-dir", required=True, help="results/defenses/{dataset}/{model}")
    args = p.parse_args(argv)
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    ensemble = parse_ensemble(args.ensemble)
    job = plan_robust(
        args.dataset_dir,
        args.checkpoint,
        eval_size=args.eval_size,
        seed=args.seed,
        device=args.device,
        twin_checkpoint=args.twin_checkpoint,
        info=json.loads(args.info),
    )
    out_dir = Path(args.out_dir)
    ensure_writable_dir(out_dir.parent)
    with atomic_path(out_dir) as tmp:
        meta = write_robust(
            job,
            tmp,
            ensemble,
            args.budgets_db,
            json.loads(args.sanity),
            seed=args.seed,
            batch_size=args.batch_size,
        )
    log.info(
        "done: robust accuracy %s, sanity passed %s, %.1f s; wrote %s",
        meta["robust_accuracy"],
        meta["sanity_passed"],
        meta["seconds"],
        out_dir,
    )
    return 0


def summarize(argv: list[str]) -> int:
    """Entry point of ``python -m advmir summarize-defenses``: defenses.csv and defense_sanity.csv."""
    from advmir.defenses.tables import summarize_defenses
    from advmir.io import write_csv
    from advmir.runtime import setup_logging

    p = argparse.ArgumentParser(
        prog="python -m advmir summarize-defenses",
        description="Tidy tables of robust accuracy (defenses.csv) and sanity checks (defense_sanity.csv).",
    )
    p.add_argument("--runs", nargs="+", required=True, help="evaluation folders (or files inside them)")
    p.add_argument("--metrics", nargs="*", default=[], help="metrics.json of the evaluated models")
    p.add_argument("--out", required=True, help="results/tables/defenses.csv")
    p.add_argument("--sanity-out", required=True, help="results/tables/defense_sanity.csv")
    args = p.parse_args(argv)
    setup_logging()
    runs = [Path(r) if Path(r).is_dir() else Path(r).parent for r in args.runs]
    metrics = {Path(m).parent.name: Path(m) for m in args.metrics}
    table, sanity = summarize_defenses(runs, metrics)
    write_csv(args.out, table)
    write_csv(args.sanity_out, sanity)
    failed = sanity[~sanity["passed"].astype(bool)] if len(sanity) else sanity
    log.info(
        "wrote %s (%d rows) and %s (%d checks, %d failed)",
        args.out,
        len(table),
        args.sanity_out,
        len(sanity),
        len(failed),
    )
    for r in failed.itertuples():
        log.warning("sanity check failed: %s %s at %s dB (%s)", r.model, r.check, r.budget_db, r.rule)
    return 0


def summarize_augmentation(argv: list[str]) -> int:
    """Entry point of ``python -m advmir summarize-augmentation``: defense_augmentation.csv."""
    import pandas as pd

    from advmir.artifacts import read_csv, read_json
    from advmir.defenses.augmentation import AUGMENTATION_COLUMNS, augmentation_table
    from advmir.io import write_csv
    from advmir.runtime import setup_logging

    p = argparse.ArgumentParser(
        prog="python -m advmir summarize-augmentation",
        description="Accuracy of each augmented model (adv_aug) beside its base model: the test split, "
        "the other split modes, each codec and room (defense_augmentation.csv).",
    )
    p.add_argument(
        "--pair", nargs=2, action="append", default=[], metavar=("MODEL", "BASE"),
        help="an augmented model and its base model (repeat)",
    )  # fmt: skip
    p.add_argument(
        "--metrics", nargs="*", default=[],
        help="results/models/{dataset}/{model}/metrics.json of both models of every pair, per dataset",
    )  # fmt: skip
    p.add_argument("--generalisation", help="results/tables/generalisation.csv (absent: no split rows)")
    p.add_argument(
        "--generalisation-dataset", default="synth_notes", help="the dataset whose split modes it holds"
    )
    p.add_argument(
        "--default-split",
        default="notes",
        help="synth_notes.split: its generalisation rows are the clean row",
    )
    p.add_argument("--codecs", help="results/tables/codec_clean_accuracy.csv (absent: no codec or room rows)")
    p.add_argument("--out", required=True, help="results/tables/defense_augmentation.csv")
    args = p.parse_args(argv)
    setup_logging()
    metrics: dict[str, dict[str, dict]] = {}
    for path in map(Path, args.metrics):
        metrics.setdefault(path.parent.parent.name, {})[path.parent.name] = read_json(
            path, keys=("test_accuracy",)
        )
    general = codecs = None
    if args.generalisation:
        general = read_csv(args.generalisation, columns=("split", "model", "test_accuracy", "n_test"))
    if args.codecs:
        codecs = read_csv(
            args.codecs,
            columns=("dataset", "condition", "kind", "condition_label", "target_model", "n", "accuracy"),
        )
    pairs = dict(args.pair)
    tables = [
        augmentation_table(
            pairs,
            metrics[dataset],
            general if dataset == args.generalisation_dataset else None,
            codecs,
            dataset,
            default_split=args.default_split,
        )
        for dataset in sorted(metrics)
    ]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=AUGMENTATION_COLUMNS)
    write_csv(args.out, table)
    log.info("wrote %s (%d rows, %d augmented models)", args.out, len(table), table["model"].nunique())
    return 0
