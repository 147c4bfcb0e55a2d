"""Command line of the pitch stage: ``track-pitch``, ``attack-pitch``, ``summarize-pitch``.

Each parses its options, calls one function of :mod:`advmir.pitch.stage` (or
:mod:`advmir.pitch.tables`) and writes what it returns, atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from advmir.runtime import seed_everything, setup_logging

log = logging.getLogger(__name__)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", required=True, help="the synth_melodies folder, e.g. results/data/synth_melodies"
    )
    p.add_argument("--tracker", required=True, help="crepe_tiny, crepe_full or pesto")
    p.add_argument(
        "--settings", required=True, help='JSON of the tracker\'s entry: {"decoder": ..., "threshold": ...}'
    )
    p.add_argument(
        "--transcription", default="{}", help="JSON of pitch.transcription (median_frames, min_note_seconds)"
    )
    p.add_argument(
        "--eval-size", type=int, default=None, help="phrases (a seeded, nested subset of the test split)"
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", required=True)


def _load(args: argparse.Namespace) -> tuple:
    import torch

    from advmir.datasets.contract import load_dataset
    from advmir.datasets.synth_melodies import load_annotations
    from advmir.errors import InputError
    from advmir.pitch.stage import attack_subset, reference
    from advmir.pitch.trackers import SAMPLE_RATE, build_tracker
    from advmir.pitch.transcribe import Transcriber

    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    dataset = load_dataset(args.data)
    if dataset.sample_rate != SAMPLE_RATE:
        raise InputError(
            f"{args.data}: sample rate {dataset.sample_rate} Hz; the pitch trackers take {SAMPLE_RATE} Hz: "
            "render synth_melodies at 16000 Hz"
        )
    notes, frames = load_annotations(args.data)
    rows = attack_subset(dataset, args.eval_size, args.seed)
    ref = reference(dataset, notes, frames, rows)
    settings = json.loads(args.settings)
    tracker = build_tracker(args.tracker)
    transcriber = Transcriber(threshold=float(settings["threshold"]), **json.loads(args.transcription))
    return dataset, ref, tracker, transcriber, settings


def track(argv: list[str]) -> int:
    """``python -m advmir track-pitch``: clean pitch tracks and scores of one tracker."""
    from advmir.io import write_csv, write_npy
    from advmir.pitch.stage import clean_scores

    p = argparse.ArgumentParser(prog="advmir track-pitch", description=track.__doc__)
    _common(p)
    args = p.parse_args(argv)
    setup_logging()
    dataset, ref, tracker, transcriber, settings = _load(args)
    clips = dataset.float_waveforms(ref.rows)
    scores, midi, conf = clean_scores(tracker, clips, ref, settings["decoder"], transcriber, args.batch_size)
    scores = scores.merge(dataset.manifest[["id", "family", "program_key"]], on="id")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_npy(out / "pitch.npy", midi.astype(np.float32))
    write_npy(out / "confidence.npy", conf.astype(np.float32))
    write_csv(out / "scores.csv", scores)
    log.info("%s clean: %s", args.tracker, scores.mean(numeric_only=True).round(3).to_dict())
    return 0


def attack(argv: list[str]) -> int:
    """``python -m advmir attack-pitch``: one attack setting on one tracker, scored beside matched noise."""
    from advmir.io import write_csv, write_npy
    from advmir.pitch.stage import PitchAttackSpec, attack_scores

    p = argparse.ArgumentParser(prog="advmir attack-pitch", description=attack.__doc__)
    _common(p)
    p.add_argument("--attack", required=True, help="JSON of the pitch.attacks entry")
    args = p.parse_args(argv)
    setup_logging()
    dataset, ref, tracker, transcriber, settings = _load(args)
    spec = PitchAttackSpec(**json.loads(args.attack))
    window = 2 if tracker.family == "crepe" else 1  # bins within 50 cents
    scores, adversarial = attack_scores(
        tracker, dataset, ref, spec, settings["decoder"], transcriber, window, args.batch_size, args.seed
    )
    scores = scores.merge(dataset.manifest[["id", "family", "program_key"]], on="id")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_npy(out / "adversarial.npy", np.stack([adversarial[float(b)] for b in spec.budgets_db]))
    write_csv(out / "scores.csv", scores)
    return 0


def summarize(argv: list[str]) -> int:
    """``python -m advmir summarize-pitch``: results/tables/pitch.csv from every job's scores.csv."""
    from advmir.io import write_csv
    from advmir.pitch.tables import pitch_table

    p = argparse.ArgumentParser(prog="advmir summarize-pitch", description=summarize.__doc__)
    p.add_argument(
        "--scores",
        nargs="+",
        required=True,
        help="results/pitch/synth_melodies/{tracker}/{attack}/scores.csv",
    )
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    setup_logging()
    write_csv(args.out, pitch_table([Path(s) for s in args.scores]))
    return 0
