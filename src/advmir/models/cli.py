"""``python -m advmir train-model`` and ``summarize-models``: train one zoo model; tabulate clean accuracy."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from advmir.artifacts import read_csv, read_json
from advmir.datasets.contract import load_dataset
from advmir.io import atomic_path, write_csv, write_json
from advmir.runtime import resolve_device, seed_everything, setup_logging

log = logging.getLogger(__name__)
# what the tables read from a model's metrics.json
METRICS_KEYS = ("classes", "test_accuracy")


def train(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="advmir train-model", description="Train one model of the zoo.")
    parser.add_argument("--dataset-dir", required=True, help="prepared dataset (data contract)")
    parser.add_argument("--spec", required=True, help="JSON: the model's config (frontend, arch, ...)")
    parser.add_argument("--training", required=True, help="JSON: training settings, model overrides applied")
    parser.add_argument("--out-dir", required=True, help="results/models/{dataset}/{model}")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument(
        "--codec-clips", default=None, help="folder with codec_train.npy/.csv (encode-training-codecs)"
    )
    args = parser.parse_args(argv)
    setup_logging()

    from advmir.models.train import CodecClips, TrainConfig, default_work_dir, train_model
    from advmir.models.zoo import save_checkpoint

    torch.set_num_threads(max(1, args.threads))
    spec = json.loads(args.spec)
    cfg = TrainConfig(**json.loads(args.training))
    device = resolve_device(args.device)
    seed_everything(cfg.seed)
    dataset = load_dataset(args.dataset_dir, mmap=False)
    codec_clips = CodecClips.from_folder(args.codec_clips, dataset.clip_samples) if args.codec_clips else None
    log.info("training %s on %s (%s) on %s", spec, dataset.root, cfg, device)
    work = default_work_dir()
    try:
        model, metrics, history = train_model(dataset, spec, cfg, device, work, codec_clips)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    metrics["spec"] = {k: spec[k] for k in ("frontend", "arch")}
    metrics["seed"] = cfg.seed
    metrics["train_subset"] = cfg.train_subset
    out = Path(args.out_dir)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        save_checkpoint(tmp / "model.ckpt", model, dataset.classes, **{k: metrics[k] for k in ("seed",)})
        write_json(tmp / "metrics.json", metrics)
        write_csv(tmp / "history.csv", history)
    log.info("test accuracy %.4f, macro-F1 %.4f", metrics["test_accuracy"], metrics["macro_f1"])
    return 0


def noise_columns(metrics: dict) -> dict[str, float]:
    """``accuracy_noise{snr}db`` and ``flip_rate_noise{snr}db`` of a model's metrics.json."""
    out = {}
    for row in metrics.get("noise", []):
        snr = f"{row['snr_db']:g}"
        out[f"accuracy_noise{snr}db"] = round(row["accuracy"], 4)
        out[f"flip_rate_noise{snr}db"] = round(row["flip_rate"], 4)
    return out


def summarize_benign(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="advmir summarize-benign",
        description="Clean accuracy of every model under each benign condition (noise, codecs, rooms).",
    )
    parser.add_argument("--accuracy", required=True, help="results/tables/clean_accuracy.csv")
    parser.add_argument("--codecs", default=None, help="results/tables/codec_clean_accuracy.csv")
    parser.add_argument("--out", required=True, help="results/tables/benign_accuracy.csv")
    args = parser.parse_args(argv)
    setup_logging()
    from advmir.models.benign import benign_table

    codecs = read_csv(args.codecs) if args.codecs else None
    write_csv(args.out, benign_table(read_csv(args.accuracy), codecs))
    return 0


def summarize_generalisation(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="advmir summarize-generalisation",
        description="Test accuracy of models trained on each split mode (notes, instruments, soundfont).",
    )
    parser.add_argument(
        "--run", nargs=3, action="append", required=True, metavar=("SPLIT", "MODEL", "METRICS"),
        help="one trained model: its split mode, name and metrics.json (repeat)",
    )  # fmt: skip
    parser.add_argument("--out", required=True, help="results/tables/generalisation.csv")
    args = parser.parse_args(argv)
    setup_logging()
    rows = []
    for split, model, path in args.run:
        m = read_json(path, keys=METRICS_KEYS)
        rows.append(
            {
                "split": split,
                "model": model,
                "test_accuracy": round(m["test_accuracy"], 4),
                "macro_f1": round(m["macro_f1"], 4),
                "chance": round(1 / len(m["classes"]), 4),
                "n_train": m["n_train"],
                "n_test": m["n_test"],
                "best_epoch": m["best_epoch"],
                **noise_columns(m),
            }
        )
    write_csv(args.out, pd.DataFrame(rows))
    return 0


def encode_training_codecs(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="advmir encode-training-codecs",
        description="Lossy-codec versions of every training clip, for training augmentation.",
    )
    parser.add_argument("--dataset-dir", required=True, help="prepared dataset (data contract)")
    parser.add_argument("--settings", required=True, help="JSON: training_codecs.settings")
    parser.add_argument("--evaluation", default="{}", help="JSON: codecs.settings (must not overlap)")
    parser.add_argument("--out-dir", required=True, help="results/augment/{dataset}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="ffmpeg processes at once")
    args = parser.parse_args(argv)
    setup_logging()
    from advmir.codecs.augment import encode_training_clips, training_grid

    dataset = load_dataset(args.dataset_dir)
    # a setting the codec cannot take: CodecError, one line and exit 2 (advmir.cli.main)
    settings = training_grid(json.loads(args.settings), json.loads(args.evaluation), dataset.sample_rate)
    decoded, table = encode_training_clips(dataset, settings, args.seed, args.workers)
    out = Path(args.out_dir)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        np.save(tmp / "codec_train.npy", decoded)
        write_csv(tmp / "codec_train.csv", table)
    log.info("wrote %d codec versions of training clips to %s", len(table), out)
    return 0


def summarize(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="advmir summarize-models", description="Tidy clean-accuracy table.")
    parser.add_argument(
        "--metrics", nargs="+", required=True, help="results/models/{dataset}/{model}/metrics.json"
    )
    parser.add_argument("--out", required=True, help="results/tables/clean_accuracy.csv")
    parser.add_argument("--confusion-out", required=True, help="results/tables/confusion.csv (tidy)")
    args = parser.parse_args(argv)
    setup_logging()
    rows, cells = [], []
    for path in map(Path, args.metrics):
        m = read_json(path, keys=METRICS_KEYS)
        dataset, model = path.parent.parent.name, path.parent.name
        for i, true in enumerate(m["classes"]):
            for j, pred in enumerate(m["classes"]):
                cells.append(
                    {
                        "dataset": dataset,
                        "model": model,
                        "true": true,
                        "predicted": pred,
                        "count": m["confusion"][i][j],
                    }
                )
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "frontend": m["spec"]["frontend"],
                "arch": m["spec"]["arch"],
                "seed": m["seed"],
                "train_subset": m["train_subset"],
                "n_train": m["n_train"],
                "test_accuracy": round(m["test_accuracy"], 4),
                "macro_f1": round(m["macro_f1"], 4),
                "best_epoch": m["best_epoch"],
                **noise_columns(m),
            }
        )
    write_csv(args.out, pd.DataFrame(rows))
    write_csv(args.confusion_out, pd.DataFrame(cells))
    return 0
