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

evaluate-transform
    One input-transformation defense scored clean, non-adaptively and adaptively (BPDA, EOT)
    (:mod:`advmir.defenses.transform_eval`); writes ``OUT_DIR/``: transform.csv, summary.csv,
    transform.json.

summarize-transforms
    results/tables/defense_transforms.csv: every transformation defense's summary rows.

summarize-augmentation
    results/tables/defense_augmentation.csv: each augmented model beside its base model, clean, on
    the other split modes and through each codec and room (:mod:`advmir.defenses.augmentation`).

certify-smoothed
    Randomized smoothing of one model: each clip's prediction and certified L2 radius (CERTIFY,
    PREDICT; :mod:`advmir.defenses.smoothing`); writes ``OUT_DIR/`` atomically: certified.csv,
    smoothing.json.

summarize-certified
    results/tables/certified.csv: certified accuracy of every smoothed classifier at each SNR.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger("advmir.defenses")


def _evaluation_parser(prog: str, description: str, checkpoint: str) -> argparse.ArgumentParser:
    """The parser of an evaluation command, with its dataset and checkpoint options."""
    p = argparse.ArgumentParser(prog=f"python -m advmir {prog}", description=description)
    p.add_argument("--dataset-dir", required=True, help="prepared dataset (data contract)")
    p.add_argument("--checkpoint", required=True, help=checkpoint)
    return p


def _evaluation_options(p: argparse.ArgumentParser, seeds: str) -> None:
    """The options of every evaluation command of the stage: the clips, the seed, the device, threads."""
    p.add_argument(
        "--eval-size", type=int, required=True, help="clips of the attack stage's evaluation subset"
    )
    p.add_argument("--seed", type=int, default=0, help=f"seeds the evaluation subset and {seeds}")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--threads", type=int, help="torch CPU threads")


def _plan(args: argparse.Namespace, **kw: object) -> object:
    """The dataset's evaluation clips and the model of an evaluation command's options
    (:func:`advmir.defenses.robust.plan_robust`; ``kw``: its other arguments)."""
    from advmir.defenses.robust import plan_robust

    return plan_robust(
        args.dataset_dir, args.checkpoint, eval_size=args.eval_size, seed=args.seed, device=args.device, **kw
    )


def _start(args: argparse.Namespace) -> None:
    """Logging, torch threads and seeds of an evaluation command (after parsing)."""
    import torch

    from advmir.runtime import seed_everything, setup_logging

    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)


def evaluate(argv: list[str]) -> int:
    """Entry point of ``python -m advmir evaluate-robustness``; returns an exit code."""

    from advmir.config import schema_defaults
    from advmir.defenses.robust import parse_ensemble, write_robust
    from advmir.io import atomic_path, ensure_writable_dir

    # run by hand, the config's defaults (one home: the schema)
    defaults = schema_defaults("defenses.schema.yaml", "evaluation")
    p = _evaluation_parser(
        "evaluate-robustness",
        "Robust accuracy of one model under an attack ensemble at SNR budgets, and its gradient-masking "
        "sanity checks; writes robustness.csv, clips.csv, sanity.csv, robustness.json.",
        "the evaluated model's model.ckpt",
    )
    p.add_argument("--twin-checkpoint", help="a defended model's undefended twin (the transfer check)")
    p.add_argument("--ensemble", default=json.dumps(defaults["ensemble"]), help="JSON name -> {name, params}")
    p.add_argument("--budgets-db", nargs="+", type=float, default=defaults["budgets_db"], help="SNR budgets")
    p.add_argument(
        "--sanity", default="{}", help='JSON of the sanity settings ("{}": defaults; enabled false: none)'
    )
    p.add_argument("--info", default="{}", help="JSON recorded in robustness.json (base_model, defense, ...)")
    _evaluation_options(p, "the attacks")
    p.add_argument("--batch-size", type=int, default=64, help="clips per forward pass")
    p.add_argument("--out-dir", required=True, help="results/defenses/{dataset}/{model}")
    args = p.parse_args(argv)
    _start(args)
    ensemble = parse_ensemble(args.ensemble)
    job = _plan(args, twin_checkpoint=args.twin_checkpoint, info=json.loads(args.info))
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


def evaluate_transform(argv: list[str]) -> int:
    """Entry point of ``python -m advmir evaluate-transform``: one transformation defense scored three
    ways (clean cost, non-adaptive, adaptive with BPDA / EOT); writes OUT_DIR/ atomically:
    transform.csv (every attack's row), summary.csv (one row per budget), transform.json."""
    import time

    import torch

    from advmir.config import schema_defaults
    from advmir.defenses.robust import parse_ensemble
    from advmir.defenses.transform_eval import evaluate_transform as score
    from advmir.defenses.transform_eval import summarize_transform
    from advmir.defenses.transforms import (
        DefendedModel,
        TransformConfigError,
        build_transform,
        parse_transform,
    )
    from advmir.io import atomic_path, ensure_writable_dir

    defaults = schema_defaults("defenses.schema.yaml", "transform_evaluation")
    p = _evaluation_parser(
        "evaluate-transform",
        "A transformation defense (codec, quantisation, resampling, low-pass, noise, random combination) "
        "wrapped around a model, scored clean, non-adaptively (PGD on the undefended model) and adaptively "
        "(the attack through the defense: BPDA, EOT, restarts).",
        "the undefended model's model.ckpt",
    )
    p.add_argument("--name", required=True, help="the defense's name (defenses.transforms key)")
    p.add_argument("--transform", required=True, help='JSON of the defense, e.g. {"kind": "mp3", ...}')
    p.add_argument("--attacks", default=json.dumps(defaults["attacks"]), help="JSON name -> {name, params}")
    p.add_argument("--budgets-db", nargs="+", type=float, default=defaults["budgets_db"], help="SNR budgets")
    p.add_argument(
        "--eot-samples", type=int, default=defaults["eot_samples"], help="EOT draws (random kinds)"
    )
    p.add_argument(
        "--margin", type=float, default=defaults["margin"], help="robust verdict: gain over undefended"
    )
    _evaluation_options(p, "the attacks and draws")
    p.add_argument("--batch-size", type=int, default=64, help="clips per forward pass")
    p.add_argument("--out-dir", required=True, help="results/defenses/{dataset}/transforms/{name}")
    args = p.parse_args(argv)
    if args.eot_samples < 1:
        raise TransformConfigError(f"--eot-samples must be an integer >= 1, got {args.eot_samples}")
    _start(args)
    attacks = parse_ensemble(args.attacks)
    rate = int(json.loads((Path(args.dataset_dir) / "classes.json").read_text())["sample_rate"])
    setting = parse_transform(args.name, json.loads(args.transform), rate)
    job = _plan(args)
    defended = DefendedModel(
        job.model, build_transform(setting, rate, seed=args.seed), args.name, setting.random
    )
    start = time.perf_counter()
    rows = score(
        job.model,
        defended,
        setting,
        job.x,
        job.y,
        attacks,
        args.budgets_db,
        eot_samples=args.eot_samples,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    summary = summarize_transform(rows, job.info["dataset"], args.margin)
    out_dir = Path(args.out_dir)
    ensure_writable_dir(out_dir.parent)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        rows.to_csv(tmp / "transform.csv", index=False)
        summary.to_csv(tmp / "summary.csv", index=False)
        meta = {
            **job.info,
            "transform": args.name,
            "spec": json.loads(args.transform),
            "label": setting.label(),
            "attacks": attacks,
            "eot_samples": args.eot_samples if setting.random else 1,
            "seconds": round(time.perf_counter() - start, 1),
            "torch": torch.__version__,
        }
        (tmp / "transform.json").write_text(json.dumps(meta, indent=2) + "\n")
    for r in summary.itertuples():
        log.info(
            "%s at %g dB: clean %.3f -> %.3f; robust undefended %.3f, non-adaptive %.3f, adaptive %.3f "
            "(adaptive success / undefended %.2f): %s",
            r.transform, r.budget_db, r.clean_accuracy_undefended, r.clean_accuracy_defended,
            r.robust_undefended, r.robust_non_adaptive, r.robust_adaptive, r.adaptive_vs_undefended,
            r.verdict,
        )  # fmt: skip
    return 0


def summarize_transforms(argv: list[str]) -> int:
    """Entry point of ``python -m advmir summarize-transforms``: defense_transforms.csv, the summary
    rows of every transformation defense (clean cost, non-adaptive, adaptive, verdict)."""
    import pandas as pd

    from advmir.artifacts import read_csv
    from advmir.defenses.transform_eval import SUMMARY_COLUMNS
    from advmir.io import write_csv
    from advmir.runtime import setup_logging

    p = argparse.ArgumentParser(
        prog="python -m advmir summarize-transforms",
        description="One table of every transformation defense: clean cost, non-adaptive and adaptive "
        "robust accuracy per SNR budget, and which attack broke it (defense_transforms.csv).",
    )
    p.add_argument(
        "--runs", nargs="+", required=True, help="evaluate-transform folders (or files inside them)"
    )
    p.add_argument("--out", required=True, help="results/tables/defense_transforms.csv")
    args = p.parse_args(argv)
    setup_logging()
    runs = [Path(r) if Path(r).is_dir() else Path(r).parent for r in args.runs]
    tables = [read_csv(run / "summary.csv", columns=SUMMARY_COLUMNS) for run in runs]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=SUMMARY_COLUMNS)
    table = table.sort_values(
        ["dataset", "model", "transform", "budget_db"], ascending=[True, True, True, False]
    )
    write_csv(args.out, table[SUMMARY_COLUMNS])
    log.info("wrote %s (%d rows, %d defenses)", args.out, len(table), table["transform"].nunique())
    return 0


def certify_smoothed(argv: list[str]) -> int:
    """Entry point of ``python -m advmir certify-smoothed``: one smoothed classifier certified on the
    attack stage's seeded evaluation clips; writes OUT_DIR/ atomically: certified.csv, smoothing.json."""

    from advmir.config import schema_defaults
    from advmir.defenses.settings import SmoothingConfig
    from advmir.defenses.smoothing import write_smoothing
    from advmir.io import atomic_path, ensure_writable_dir

    defaults = schema_defaults("defenses.schema.yaml", "smoothing_evaluation")
    p = _evaluation_parser(
        "certify-smoothed",
        "Randomized smoothing (Cohen et al. 2019) of one model: per clip, the smoothed prediction, the "
        "certified L2 radius and the SNR down to which it holds.",
        "the base model's model.ckpt",
    )
    p.add_argument("--name", required=True, help="the smoothed classifier's name (defenses.smoothing key)")
    p.add_argument(
        "--setting", required=True, help='JSON of the entry, e.g. {"model": "m", "sigma": 0.01, "n": 1000}'
    )
    p.add_argument("--info", default="{}", help="JSON recorded in smoothing.json (defense, train_sigma)")
    p.add_argument("--snr-db", nargs="+", type=float, default=defaults["snr_db"], help="SNRs of the summary")
    _evaluation_options(p, "the noise")
    p.add_argument("--out-dir", required=True, help="results/defenses/{dataset}/smoothing/{name}")
    args = p.parse_args(argv)
    _start(args)
    setting = SmoothingConfig.from_dict(args.name, json.loads(args.setting))
    job = _plan(args, info={**json.loads(args.info), "name": args.name})
    out_dir = Path(args.out_dir)
    ensure_writable_dir(out_dir.parent)
    with atomic_path(out_dir) as tmp:
        meta = write_smoothing(job, tmp, setting, args.snr_db, seed=args.seed)
    log.info(
        "done: %s (sigma %g, n %d): clean accuracy %.3f (abstain %.3f), base %.3f clean / %.3f noisy; "
        "certified accuracy %s; %.2f s per clip; wrote %s",
        args.name, setting.sigma, setting.n, meta["clean_accuracy"], meta["predict_abstain_rate"],
        meta["base_clean_accuracy"], meta["base_noisy_accuracy"], meta["certified_accuracy"],
        meta["seconds_per_clip"], out_dir,
    )  # fmt: skip
    return 0


def summarize_certified(argv: list[str]) -> int:
    """Entry point of ``python -m advmir summarize-certified``: certified.csv, one row per (dataset,
    smoothed classifier, SNR)."""
    from advmir.config import schema_defaults
    from advmir.defenses.smoothing import certified_table
    from advmir.io import write_csv
    from advmir.runtime import setup_logging

    defaults = schema_defaults("defenses.schema.yaml", "smoothing_evaluation")
    p = argparse.ArgumentParser(
        prog="python -m advmir summarize-certified",
        description="Certified accuracy of every smoothed classifier at each SNR (certified.csv).",
    )
    p.add_argument("--runs", nargs="+", required=True, help="certify-smoothed folders (or files inside them)")
    p.add_argument(
        "--snr-db", nargs="+", type=float, default=defaults["snr_db"], help="SNRs (dB) of the rows"
    )
    p.add_argument("--out", required=True, help="results/tables/certified.csv")
    args = p.parse_args(argv)
    setup_logging()
    runs = [Path(r) if Path(r).is_dir() else Path(r).parent for r in args.runs]
    table = certified_table(runs, args.snr_db)
    write_csv(args.out, table)
    log.info("wrote %s (%d rows, %d smoothed classifiers)", args.out, len(table), table["model"].nunique())
    return 0


def evaluate_detection(argv: list[str]) -> int:
    """Entry point of ``python -m advmir evaluate-detection``: the detectors of one classifier fitted,
    calibrated and scored before and after the adaptive attacker; writes OUT_DIR/ atomically:
    summary.csv, roc.csv, clips.csv, detection.json, logmel_net.ckpt, stack/."""
    from advmir.defenses.detection_eval import parse_setting, plan_detection, write_detection
    from advmir.io import atomic_path, ensure_writable_dir

    p = _evaluation_parser(
        "evaluate-detection",
        "Adversarial-example detection (feature squeezing, the anomaly detectors and their stacked "
        "ensemble retrained on clean vs adversarial clips, a log-mel detector network): ROC-AUC on clean "
        "test clips vs successful adversarial examples of each attack at each budget, beside random noise "
        "of the same SNR, then against an adaptive attacker who must fool the classifier and stay below "
        "the detector's threshold (Carlini and Wagner 2017's combined loss).",
        "the classifier's model.ckpt",
    )
    p.add_argument(
        "--setting", default="{}",
        help='JSON of defenses.detection without enabled and models (missing keys: the schema\'s defaults)',
    )  # fmt: skip
    _evaluation_options(p, "the attacks, the detectors' fitting and the subsets")
    p.add_argument("--batch-size", type=int, default=64, help="clips per forward pass")
    p.add_argument("--out-dir", required=True, help="results/defenses/{dataset}/detection/{model}")
    args = p.parse_args(argv)
    _start(args)
    rate = int(json.loads((Path(args.dataset_dir) / "classes.json").read_text())["sample_rate"])
    setting = parse_setting(args.setting, sample_rate=rate)
    job = plan_detection(
        args.dataset_dir,
        args.checkpoint,
        setting,
        eval_size=args.eval_size,
        seed=args.seed,
        device=args.device,
    )
    out_dir = Path(args.out_dir)
    ensure_writable_dir(out_dir.parent)
    with atomic_path(out_dir) as tmp:
        meta = write_detection(job, tmp, setting, seed=args.seed, batch_size=args.batch_size)
    log.info("done in %.1f s (%s); wrote %s", meta["seconds_total"], meta["seconds"], out_dir)
    return 0


def summarize_detection(argv: list[str]) -> int:
    """Entry point of ``python -m advmir summarize-detection``: detection.csv (one row per detector,
    phase, attack and budget) and detection_roc.csv (their ROC points)."""
    from advmir.defenses.detection_eval import detection_tables
    from advmir.io import write_csv
    from advmir.runtime import setup_logging

    p = argparse.ArgumentParser(
        prog="python -m advmir summarize-detection",
        description="ROC-AUC of every adversarial-example detector before and after the adaptive attack, "
        "beside the noise control (detection.csv), and the ROC curves (detection_roc.csv).",
    )
    p.add_argument(
        "--runs", nargs="+", required=True, help="evaluate-detection folders (or files inside them)"
    )
    p.add_argument("--out", required=True, help="results/tables/detection.csv")
    p.add_argument("--roc-out", required=True, help="results/tables/detection_roc.csv")
    args = p.parse_args(argv)
    setup_logging()
    runs = [Path(r) if Path(r).is_dir() else Path(r).parent for r in args.runs]
    table, roc = detection_tables(runs)
    write_csv(args.out, table)
    write_csv(args.roc_out, roc)
    adaptive = table[table["phase"] == "adaptive"]
    for r in adaptive.itertuples():
        log.info(
            "%s %s at %g dB: ROC-AUC %.3f before (%s), %.3f after (%s: %d of %d clips fooled, detection "
            "rate %.3f at the threshold, %.3f before)",
            r.model, r.detector, r.budget_db, r.auc_before, r.before_attack, r.roc_auc, r.algorithm,
            r.n_examples, r.n_attacked, r.tpr, r.tpr_before,
        )  # fmt: skip
    log.info("wrote %s (%d rows) and %s (%d points)", args.out, len(table), args.roc_out, len(roc))
    return 0
