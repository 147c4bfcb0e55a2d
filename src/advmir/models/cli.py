"""``python -m advmir train`` and ``summarize-models``: train one zoo model; tabulate clean accuracy."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import torch

from advmir.data.contract import load_dataset
from advmir.io import atomic_path, write_csv, write_json
from advmir.runtime import resolve_device, seed_everything, setup_logging

log = logging.getLogger(__name__)


def train(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="advmir train", description="Train one model of the zoo.")
    parser.add_argument("--dataset-dir", required=True, help="prepared dataset (data contract)")
    parser.add_argument("--spec", required=True, help="JSON: the model's config (frontend, arch, ...)")
    parser.add_argument("--training", required=True, help="JSON: training settings, model overrides applied")
    parser.add_argument("--out-dir", required=True, help="results/models/{dataset}/{model}")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    args = parser.parse_args(argv)
    setup_logging()

    from advmir.models.train import TrainConfig, default_work_dir, train_model
    from advmir.models.zoo import save_checkpoint

    torch.set_num_threads(max(1, args.threads))
    spec = json.loads(args.spec)
    cfg = TrainConfig(**json.loads(args.training))
    device = resolve_device(args.device)
    seed_everything(cfg.seed)
    dataset = load_dataset(args.dataset_dir, mmap=False)
    log.info("training %s on %s (%s) on %s", spec, dataset.root, cfg, device)
    work = default_work_dir()
    try:
        model, metrics, history = train_model(dataset, spec, cfg, device, work)
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
        m = json.loads(path.read_text())
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
                "train_seconds": m["train_seconds"],
            }
        )
    write_csv(args.out, pd.DataFrame(rows))
    write_csv(args.confusion_out, pd.DataFrame(cells))
    return 0
