"""The anomaly ensemble across SoundFonts: fitted on one font's notes, applied to the other font's.

Issue 17 asks for the stacked ensemble trained on one SoundFont's data and applied to the other
font's corrupted notes with held-out fault implementations: ROC-AUC, and the share of the other
font's clean clips in the top 10% beside the same share in-domain.

Two runs are needed:

1. ``--fitted``: the anomaly stage on one font alone, e.g. config.yaml with ``synth_notes.soundfonts:
   [TimGM6mb]`` and ``generalisation.enabled: false``, results in their own folder, targets
   ``RESULTS/anomaly/synth_notes/{metrics.csv,ensemble/stack.json}``. Everything it fits (the
   reference clips, the classifier, the autoencoder, the multi-task net, the stack) sees that font only.
2. ``--other``: a default run's corrupted test copy (both fonts, held-out implementations marked);
   only the clips of ``--font`` are kept, written as a prepared dataset under ``--out``, and ranked by
   the fitted run's saved ensemble (:func:`advmir.anomaly.review.apply_ensemble`).

Prints one JSON line per set: the fitted run's own corrupted test (in-domain) and the other font's,
each with ROC-AUC (all faults, held-out implementations only), top-10% precision, and the share of
clean clips that land in the top 10%.

Usage::

    .venv/bin/python benchmarks/anomaly_cross_font.py --fitted measure/tim \\
        --other results/anomaly/synth_notes/corrupted_test --font Merlin --out measure/xd
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from advmir.anomaly.metrics import roc_auc
from advmir.anomaly.review import apply_ensemble, cross_domain
from advmir.datasets.contract import load_dataset, write_dataset
from advmir.io import write_csv
from advmir.runtime import setup_logging


def numbers(table: pd.DataFrame) -> dict:
    """:func:`cross_domain` of a scored corrupted set, plus the ROC-AUC on held-out implementations."""
    out = cross_domain(table)
    held = (table["held_out"] == 1).to_numpy()
    clean = (table["is_fault"] == 0).to_numpy()
    keep = held | clean
    out["roc_auc_held_out"] = roc_auc(held[keep], table["score"].to_numpy()[keep])
    out["n_held_out"] = int(held.sum())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fitted", required=True, type=Path, help="results folder of the one-font run")
    p.add_argument("--other", required=True, type=Path, help="a corrupted test copy holding the other font")
    p.add_argument("--font", required=True, help="the other font's name (manifest column soundfont)")
    p.add_argument("--out", required=True, type=Path, help="folder for the subset and its review")
    p.add_argument("--model", default="logmel_cnn", help="the fitted run's classifier for its detectors")
    p.add_argument("--max-reference", type=int, default=1500)
    args = p.parse_args()
    setup_logging()
    anomaly = args.fitted / "anomaly/synth_notes"
    own = load_dataset(anomaly / "corrupted_test").manifest.astype({"id": str})
    scores = pd.read_csv(anomaly / "scores/ensemble_stack.csv").astype({"id": str})
    print(json.dumps({"set": "in-domain", **numbers(own.merge(scores[["id", "score"]], on="id"))}))

    other = load_dataset(args.other)
    rows = (other.manifest["soundfont"] == args.font).to_numpy().nonzero()[0]
    subset = args.out / f"{args.font}_test"
    if not subset.exists():
        manifest = other.manifest.iloc[rows].reset_index(drop=True)
        write_dataset(subset, other.float_waveforms(rows), manifest, other.classes, other.sample_rate)
    _, review = apply_ensemble(
        anomaly / "ensemble",
        args.fitted / "data/synth_notes",
        subset,
        models={args.model: str(args.fitted / f"models/synth_notes/{args.model}/model.ckpt")},
        autoencoder=str(anomaly / "autoencoder/model.ckpt"),
        multitask=str(anomaly / "multitask/model.ckpt"),
        max_reference=args.max_reference,
    )
    write_csv(args.out / f"{args.font}_review.csv", review)
    print(json.dumps({"set": f"other font ({args.font})", **numbers(review)}))


if __name__ == "__main__":
    main()
