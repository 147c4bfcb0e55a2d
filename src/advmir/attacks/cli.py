"""Command line of the attack stage: ``python -m advmir craft-adversarial`` and
``python -m advmir summarize-attacks``.

craft-adversarial
    Attack a fixed, seeded evaluation subset of a dataset's test split with one attack and write
    ``OUT_DIR/`` atomically (the folder appears whole or not at all): adversarial.npy,
    matched_noise.npy, examples.csv, attack.json, listen/ and, for the universal attack,
    perturbation.npy (:mod:`advmir.attacks.craft` says what each holds). With
    ``--surrogate-checkpoint`` the attack is crafted on the surrogate and scored on the target.

summarize-attacks
    One row per (dataset, model, attack) run with its budget: results/tables/attacks.csv, each success
    rate beside its matched-noise control (:func:`advmir.attacks.craft.summarize_runs`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from advmir.attacks.craft import DEFAULT_LOADER, summarize_runs

log = logging.getLogger("advmir.attacks")


# -------------------------------------------------------------------------------------------- craft
def _craft_parser() -> argparse.ArgumentParser:
    from advmir.config import schema_defaults

    # the workflow passes every value; run by hand, the config's defaults (one home: the schema)
    shared = schema_defaults("attacks.schema.yaml", "attack_settings")
    p = argparse.ArgumentParser(
        prog="python -m advmir craft-adversarial",
        description="Attack a fixed, seeded evaluation subset of a dataset's test split with one attack; "
        "write adversarial.npy, matched_noise.npy, examples.csv, attack.json and listen/ into --out-dir, "
        "atomically.",
    )
    p.add_argument("--dataset-dir", required=True, help="prepared dataset (data contract)")
    p.add_argument("--checkpoint", required=True, help="the target model's model.ckpt")
    p.add_argument("--attack-spec", required=True, help='JSON: {"name": "pgd", "params": {...}}')
    p.add_argument("--eval-size", type=int, required=True, help="clips of the test split to attack")
    p.add_argument("--seed", type=int, default=0, help="seeds the evaluation subset and the attack")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--out-dir", required=True, help="results/attacks/{dataset}/{model}/{attack}")
    p.add_argument("--surrogate-checkpoint", help="craft on this model instead, score on the target")
    p.add_argument(
        "--batch-size",
        type=int,
        help="clips per forward pass, unless the spec's params set batch_size (default: the attack's own)",
    )
    p.add_argument(
        "--chunk-size", type=int, default=shared["chunk_size"], help="clips held in memory at once"
    )
    p.add_argument(
        "--listen", type=int, default=shared["listen"], help="examples written as WAV for listening"
    )
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--model-loader", default=DEFAULT_LOADER, help=argparse.SUPPRESS)
    return p


def craft(argv: list[str]) -> int:
    """Entry point of ``python -m advmir craft-adversarial``; returns an exit code."""
    import torch

    from advmir.attacks.craft import parse_attack_spec, plan_craft, write_craft
    from advmir.io import atomic_path, ensure_writable_dir
    from advmir.runtime import seed_everything, setup_logging

    args = _craft_parser().parse_args(argv)
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    job = plan_craft(
        args.dataset_dir,
        args.checkpoint,
        parse_attack_spec(args.attack_spec),
        eval_size=args.eval_size,
        seed=args.seed,
        device=args.device,
        surrogate_checkpoint=args.surrogate_checkpoint,
        batch_size=args.batch_size,
        model_loader=args.model_loader,
    )
    out_dir = Path(args.out_dir)
    ensure_writable_dir(out_dir.parent)
    with atomic_path(out_dir) as tmp:
        meta = write_craft(job, tmp, out_dir.name, chunk_size=args.chunk_size, listen=args.listen)
    n_correct = meta["n_clean_correct"]
    log.info(
        "done: success %s clean-correct clips (matched noise: %d), median SNR of successes %s dB, %.1f s; "
        "wrote %s",
        f"{meta['n_success']}/{n_correct}" if n_correct else "0/0",
        meta["n_noise_success"],
        meta["median_snr_db"],
        meta["seconds"],
        out_dir,
    )
    return 0


# ---------------------------------------------------------------------------------------- summarize
def summarize(argv: list[str]) -> int:
    """Entry point of ``python -m advmir summarize-attacks``: write results/tables/attacks.csv."""
    from advmir.io import write_csv
    from advmir.runtime import setup_logging

    p = argparse.ArgumentParser(
        prog="python -m advmir summarize-attacks",
        description="Tidy table of attack success: one row per model x attack x budget.",
    )
    runs_help = "craft output folders (or files inside them, e.g. their examples.csv)"
    p.add_argument("--runs", nargs="+", required=True, help=runs_help)
    p.add_argument("--out", required=True, help="results/tables/attacks.csv")
    args = p.parse_args(argv)
    setup_logging()
    table = summarize_runs([Path(r) if Path(r).is_dir() else Path(r).parent for r in args.runs])
    write_csv(args.out, table)
    log.info("wrote %s (%d rows)", args.out, len(table))
    return 0
