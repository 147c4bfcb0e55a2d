"""Adversarial training, fast against slow: fast_at's robust accuracy and training time against pgd_at's.

Checks the claim "fast_at within 5 points of pgd_at's robust accuracy at <= 0.4x its training
time". Trains the base model (``--model``, default logmel_cnn) twice in this process, one run after
the other, with the workflow's own training settings (``advmir.config.training_for`` of the
validated config, what the train_model rule passes; the codec versions of the training clips when
``training_codecs`` is enabled, loaded as ``python -m advmir train-model`` loads them) plus, as
``advmir.config.expand_defenses`` forms a defended model's training:

- ``adversarial: {mode: pgd_at, snr_db: B, steps: 10}`` (Madry et al., 10 PGD steps per batch)
- ``adversarial: {mode: fast_at, snr_db: B}`` (FGSM from a random start, with its overfitting guard)

at the same seed (B: ``--snr-db``, default 40). ``--max-epochs N`` sets max_epochs to N and
min_epochs to min(min_epochs, N) in both runs, for a shorter comparison. Each model is then
scored as the defenses stage scores it (``advmir.defenses.robust``: saved with the zoo's
``save_checkpoint``, loaded by ``plan_robust`` with the attack stage's seeded evaluation clips,
robust accuracy from ``evaluate_ensemble`` with the config's ``defenses.evaluation.ensemble``) at
B and any other budget of ``--budgets-db``; the sanity checks are not run.

Times: CPU seconds of this process (``time.process_time``; one torch thread, ``--threads``) and wall
seconds around ``train_model``, which after fitting also scores the test split (clean and at three
noise levels, the same few seconds for both modes); ``train_seconds`` is Lightning's fit alone, in
wall seconds. Early stopping and fast_at's guard may end the two runs after different numbers of
epochs, so the time ratio is given per epoch and in total.

Usage::

    .venv/bin/python benchmarks/defense_speed.py [--config config.yaml] [--model logmel_cnn]
        [--dataset-dir results/data/synth_notes] [--codec-clips results/augment/synth_notes]
        [--snr-db 40] [--budgets-db 40 30] [--max-epochs 8] [--eval-size 200] [--threads 1]
        [--out defense_speed.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from advmir.config import SCHEMAS, model_spec, training_for, validate_config  # noqa: E402
from advmir.defenses.plan import DefensePlan  # noqa: E402

MODES = ("pgd_at", "fast_at")
PGD_STEPS = 10
MAX_DROP_POINTS = 5.0  # the claim: fast_at's robust accuracy at most this many points below pgd_at's
MAX_TIME_RATIO = 0.4  # the claim: fast_at's training time at most this share of pgd_at's


def adversarial_settings(mode: str, snr_db: float) -> dict[str, Any]:
    """``training["adversarial"]`` of one mode at the SNR budget ``snr_db``."""
    if mode == "pgd_at":
        return {"mode": mode, "snr_db": snr_db, "steps": PGD_STEPS}
    return {"mode": mode, "snr_db": snr_db}


def train_one(
    dataset: Any, spec: dict, training: dict, device: str, codec_clips: Any
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train one model as the train_model rule does; return it and its metrics with the times."""
    from advmir.models.train import TrainConfig, default_work_dir, train_model
    from advmir.runtime import seed_everything

    cfg = TrainConfig(**training)
    seed_everything(cfg.seed)
    work = default_work_dir()
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        model, metrics, _ = train_model(dataset, spec, cfg, device, work, codec_clips)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    metrics["cpu_seconds"] = time.process_time() - cpu
    metrics["wall_seconds"] = time.perf_counter() - wall
    return model, metrics


def robust_accuracy(
    mode: str,
    model: torch.nn.Module,
    classes: list[str],
    args: argparse.Namespace,
    plan: DefensePlan,
    seed: int,
) -> dict[str, Any]:
    """Robust accuracy at each budget, as the defenses stage's evaluate-robustness computes it."""
    from advmir.defenses.robust import evaluate_ensemble, plan_robust
    from advmir.models.zoo import save_checkpoint
    from advmir.runtime import seed_everything

    folder = Path(tempfile.mkdtemp(prefix="advmir-defense-speed-"))
    try:
        save_checkpoint(folder / "model.ckpt", model, classes, seed=seed)
        seed_everything(seed)
        job = plan_robust(
            args.dataset_dir, folder / "model.ckpt", eval_size=args.eval_size, seed=seed, device=args.device
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    cpu, wall = time.process_time(), time.perf_counter()
    result = evaluate_ensemble(
        job.model,
        job.x,
        job.y,
        plan.ensemble,
        args.budgets_db,
        seed=seed,
        batch_size=plan.batch_size,
        model_name=mode,
        ids=job.ids,
        rows=job.rows,
    )
    return {
        "n_eval": len(job.rows),
        "clean_accuracy_eval": float(result.clean_correct.mean()),
        "robust_accuracy": {f"{b:g}": float(r.mean()) for b, r in result.robust.items()},
        "eval_cpu_seconds": time.process_time() - cpu,
        "eval_wall_seconds": time.perf_counter() - wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.yaml", help="a full config (YAML)")
    parser.add_argument("--model", default="logmel_cnn", help="the zoo model both modes train")
    parser.add_argument("--dataset-dir", default="results/data/synth_notes", help="prepared dataset")
    parser.add_argument(
        "--codec-clips",
        default=None,
        help="folder of codec_train.npy/.csv (default: augment/{dataset} beside the dataset's data/)",
    )
    parser.add_argument("--snr-db", type=float, default=40.0, help="the training budget, and the claim's")
    parser.add_argument("--budgets-db", type=float, nargs="+", default=None, help="evaluation budgets")
    parser.add_argument("--max-epochs", type=int, default=None, help="shorter runs: max_epochs of both")
    parser.add_argument("--eval-size", type=int, default=None, help="default: the defenses stage's")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="write the numbers to this JSON file")
    args = parser.parse_args()

    dataset_dir = Path(args.dataset_dir)
    if not (dataset_dir / "waveforms.npy").is_file():
        sys.exit(
            f"no prepared dataset at {dataset_dir}: run `make run` (or `snakemake --cores all "
            f"{dataset_dir}/waveforms.npy`) first, or give its folder with --dataset-dir"
        )
    config = yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))
    validate_config(config, SCHEMAS / "config.schema.yaml")  # the schema's defaults, as the workflow
    if args.model not in config["models"]:
        sys.exit(f"--model {args.model!r} is not a model of {args.config}: {list(config['models'])}")
    plan = DefensePlan(config, config["results"], config["datasets"], config["models"], build=False)
    if not plan.ensemble:
        sys.exit(f"{args.config} has no defenses.evaluation.ensemble")
    args.eval_size = args.eval_size or plan.eval_size
    args.budgets_db = sorted({args.snr_db, *(args.budgets_db or [])}, reverse=True)
    seed = int(config["seed"])

    from advmir.datasets.contract import load_dataset
    from advmir.models.train import CodecClips
    from advmir.runtime import resolve_device, setup_logging

    setup_logging()
    torch.set_num_threads(max(1, args.threads))
    args.device = resolve_device(args.device)
    dataset = load_dataset(dataset_dir, mmap=False)
    codec_clips = None
    if config["training_codecs"]["enabled"]:
        folder = Path(args.codec_clips or dataset_dir.parent.parent / "augment" / dataset_dir.name)
        if not (folder / "codec_train.npy").is_file():
            sys.exit(
                f"training_codecs is enabled but {folder} has no codec_train.npy: run `snakemake --cores "
                f"all {folder}/codec_train.npy` first, or give its folder with --codec-clips"
            )
        codec_clips = CodecClips.from_folder(folder, dataset.clip_samples)

    base = training_for(config, args.model)
    configured = (base["max_epochs"], base["min_epochs"])
    if args.max_epochs is not None:
        base["max_epochs"] = args.max_epochs
        base["min_epochs"] = min(base["min_epochs"], args.max_epochs)
    spec = model_spec(config, args.model)
    runs: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        training = {**base, "adversarial": adversarial_settings(mode, args.snr_db)}
        model, metrics = train_one(dataset, spec, training, args.device, codec_clips)
        runs[mode] = {
            "epochs_run": metrics["epochs_run"],
            "best_epoch": metrics["best_epoch"],
            "cpu_seconds": metrics["cpu_seconds"],
            "cpu_seconds_per_epoch": metrics["cpu_seconds"] / max(metrics["epochs_run"], 1),
            "wall_seconds": metrics["wall_seconds"],
            "train_seconds": metrics["train_seconds"],
            "craft_seconds": metrics["adversarial"]["craft_seconds"],
            "test_accuracy": metrics["test_accuracy"],
            "guard": metrics["adversarial"].get("guard"),
            **robust_accuracy(mode, model, dataset.classes, args, plan, seed),
        }

    pgd, fast = runs["pgd_at"], runs["fast_at"]
    budget = f"{args.snr_db:g}"
    drop = 100 * (fast["robust_accuracy"][budget] - pgd["robust_accuracy"][budget])
    ratio_epoch = fast["cpu_seconds_per_epoch"] / pgd["cpu_seconds_per_epoch"]
    ratio_total = fast["cpu_seconds"] / pgd["cpu_seconds"]
    ratio_wall = fast["wall_seconds"] / pgd["wall_seconds"]

    print(
        f"{args.model} on {dataset_dir.name}, training budget {budget} dB (pgd_at: {PGD_STEPS} steps), "
        f"seed {base['seed']}, {args.threads} torch thread(s), device {args.device}"
    )
    print(
        f"epochs: max_epochs {base['max_epochs']}, min_epochs {base['min_epochs']}, patience "
        f"{base['patience']} (config: max {configured[0]}, min {configured[1]}); codec clips: "
        f"{'yes' if codec_clips is not None else 'no'}"
    )
    print(
        f"robust accuracy: {pgd['n_eval']} evaluation clips (seed {seed}), ensemble "
        f"{', '.join(plan.ensemble)}, batch {plan.batch_size}"
    )
    robust_cols = [f"robust@{b:g}dB" for b in args.budgets_db]
    header = (
        f"{'mode':<8} {'epochs':>6} {'best':>4} {'train CPU s':>11} {'CPU s/epoch':>11} {'wall s':>8} "
        f"{'fit s':>8} {'clean test':>10} {'clean eval':>10} " + " ".join(f"{c:>12}" for c in robust_cols)
    )
    print(header)
    for mode, r in runs.items():
        robust = " ".join(f"{r['robust_accuracy'][f'{b:g}']:>12.3f}" for b in args.budgets_db)
        print(
            f"{mode:<8} {r['epochs_run']:>6} {r['best_epoch']:>4} {r['cpu_seconds']:>11.1f} "
            f"{r['cpu_seconds_per_epoch']:>11.1f} {r['wall_seconds']:>8.1f} {r['train_seconds']:>8.1f} "
            f"{r['test_accuracy']:>10.3f} {r['clean_accuracy_eval']:>10.3f} {robust}"
        )
    print(
        f"robust evaluation CPU s: pgd_at {pgd['eval_cpu_seconds']:.1f}, "
        f"fast_at {fast['eval_cpu_seconds']:.1f}"
    )
    guard = fast["guard"] or {}
    if guard.get("stopped"):
        print(
            f"note: fast_at's overfitting guard stopped training at epoch {guard['stopped_epoch']} "
            f"(weights of epoch {guard['restored_epoch']} kept)"
        )
    if pgd["epochs_run"] != fast["epochs_run"]:
        print(
            f"note: the runs stopped after different numbers of epochs ({pgd['epochs_run']} and "
            f"{fast['epochs_run']}): compare per epoch"
        )
    print(
        f"fast_at robust accuracy - pgd_at robust accuracy at {budget} dB = {drop:+.1f} points "
        f"(claim: >= -{MAX_DROP_POINTS:g}): {'holds' if drop >= -MAX_DROP_POINTS else 'fails'}"
    )
    for what, ratio in (("per epoch", ratio_epoch), ("total", ratio_total)):
        print(
            f"fast_at / pgd_at training CPU time, {what} = {ratio:.3f} (claim: <= {MAX_TIME_RATIO:g}): "
            f"{'holds' if ratio <= MAX_TIME_RATIO else 'fails'}"
        )
    print(f"(wall time, total: {ratio_wall:.3f})")

    if args.out:
        numbers = {
            "model": args.model,
            "dataset": dataset_dir.name,
            "snr_db": args.snr_db,
            "budgets_db": args.budgets_db,
            "pgd_steps": PGD_STEPS,
            "max_epochs": base["max_epochs"],
            "min_epochs": base["min_epochs"],
            "eval_size": args.eval_size,
            "threads": args.threads,
            "runs": runs,
            "robust_difference_points": drop,
            "cpu_ratio_per_epoch": ratio_epoch,
            "cpu_ratio_total": ratio_total,
            "wall_ratio_total": ratio_wall,
            "torch": torch.__version__,
        }
        Path(args.out).write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
