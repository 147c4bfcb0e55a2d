"""Command line of the representation-transfer stage.

craft-representation-transfer
    Craft one source (an ensemble, a single model or the feature attack) at one SNR budget on the seeded
    evaluation clips, score it and its matched-noise control on every target, with no transformation and
    after each codec: ``OUT_DIR/`` atomically (:mod:`advmir.representation.craft`).

summarize-representation-transfer
    results/tables/representation_transfer.csv and its summary (:mod:`advmir.representation.tables`).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger("advmir.representation")


def craft(argv: list[str]) -> int:
    """Entry point of ``python -m advmir craft-representation-transfer``."""
    import torch

    from advmir.io import atomic_path, ensure_writable_dir
    from advmir.representation.craft import craft_and_score, parse_named
    from advmir.runtime import resolve_device, seed_everything, setup_logging

    p = argparse.ArgumentParser(prog="python -m advmir craft-representation-transfer", description=__doc__)
    p.add_argument("--dataset-dir", required=True, help="prepared dataset (data contract)")
    p.add_argument("--source", required=True, help="JSON source spec (RepresentationPlan.source_spec)")
    p.add_argument("--member", nargs=2, action="append", default=[], metavar=("MODEL", "CKPT"))
    p.add_argument("--target", nargs=2, action="append", default=[], metavar=("MODEL", "CKPT"), required=True)
    p.add_argument("--conditions", default="{}", help="JSON: codec setting name -> spec, scored after")
    p.add_argument("--snr-db", type=float, required=True, help="the budget")
    p.add_argument("--eval-size", type=int, required=True, help="first N of the seeded evaluation subset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int)
    p.add_argument("--out-dir", required=True)
    args = p.parse_args(argv)
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    out_dir = Path(args.out_dir)
    ensure_writable_dir(out_dir.parent)
    with atomic_path(out_dir) as tmp:
        meta = craft_and_score(
            args.dataset_dir,
            json.loads(args.source),
            parse_named(args.member, "--member"),
            parse_named(args.target, "--target"),
            json.loads(args.conditions),
            tmp,
            snr_db=args.snr_db,
            eval_size=args.eval_size,
            seed=args.seed,
            device=resolve_device(args.device),
        )
    log.info(
        "done: %d clips, %d fool every crafting member, median SNR %s dB, %.1f s; wrote %s",
        meta["n"],
        meta["n_crafted_success"],
        meta["median_snr_db"],
        meta["seconds"],
        out_dir,
    )
    return 0


def summarize(argv: list[str]) -> int:
    """Entry point of ``python -m advmir summarize-representation-transfer``."""
    from advmir.io import write_csv
    from advmir.representation.tables import build_table, parse_reps, summarize
    from advmir.runtime import setup_logging

    p = argparse.ArgumentParser(
        prog="python -m advmir summarize-representation-transfer", description=__doc__
    )
    p.add_argument("--runs", nargs="+", required=True, help="job folders (or files inside them)")
    p.add_argument("--models", required=True, help="JSON: model -> representation")
    p.add_argument("--held-out", nargs="+", required=True, help="held-out representations")
    p.add_argument("--out", required=True, help="results/tables/representation_transfer.csv")
    p.add_argument("--summary-out", required=True, help="results/tables/representation_transfer_summary.csv")
    args = p.parse_args(argv)
    setup_logging()
    runs = [Path(r) if Path(r).is_dir() else Path(r).parent for r in args.runs]
    table = build_table(runs, parse_reps(args.models))
    summary = summarize(table, args.held_out)
    write_csv(args.out, table)
    write_csv(args.summary_out, summary)
    log.info("wrote %s (%d rows) and %s (%d rows)", args.out, len(table), args.summary_out, len(summary))
    return 0
