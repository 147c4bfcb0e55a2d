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
from advmir.datasets.contract import Dataset, load_dataset
from advmir.io import atomic_path, write_csv, write_json, write_torch
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
    parser.add_argument(
        "--init-checkpoint",
        default=None,
        help="model.ckpt to start from when training.init_from is set (default: the init_from model's "
        "model.ckpt beside --out-dir, as the workflow lays the zoo out)",
    )
    args = parser.parse_args(argv)
    setup_logging()

    from advmir.models.train import CodecClips, TrainConfig, default_work_dir, train_model
    from advmir.models.zoo import load_checkpoint, save_checkpoint

    torch.set_num_threads(max(1, args.threads))
    spec = json.loads(args.spec)
    cfg = TrainConfig(**json.loads(args.training))
    device = resolve_device(args.device)
    seed_everything(cfg.seed)
    dataset = load_dataset(args.dataset_dir, mmap=False)
    codec_clips = CodecClips.from_folder(args.codec_clips, dataset.clip_samples) if args.codec_clips else None
    start = args.init_checkpoint
    if cfg.init_from is not None and start is None:  # the twin's folder beside this model's
        start = str(Path(args.out_dir).parent / cfg.init_from / "model.ckpt")
    init = load_checkpoint(start) if start else None
    log.info("training %s on %s (%s) on %s", spec, dataset.root, cfg, device)
    if init is not None:
        log.info("starting from %s's weights (%s)", cfg.init_from, start)
    work = default_work_dir()
    try:
        model, metrics, history = train_model(dataset, spec, cfg, device, work, codec_clips, init)
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


def _contract_clips(dataset: Dataset, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded subset of ``n`` test clips (valid, then train, if the test split is empty): their rows
    (n,) and waveforms (n, T)."""
    for split in ("test", "valid", "train"):
        rows = dataset.split_indices(split)
        if len(rows):
            break
    rng = np.random.default_rng([seed, 0xC4EC])
    rows = np.sort(rng.choice(rows, size=min(n, len(rows)), replace=False))
    return rows, dataset.float_waveforms(rows)


def _test_metrics(model: torch.nn.Module, dataset: Dataset, rows: np.ndarray, device: str, seed: int) -> dict:
    """Metrics of a model that is not trained here (imported, assembled) on the test clips ``rows``:
    accuracy (``test_accuracy``), macro-F1, confusion, and the white-noise check (``noise``)."""
    from advmir.models.train import classification_metrics, noise_robustness, predict

    labels = dataset.manifest["label_idx"].to_numpy()[rows]
    audio = dataset.float_waveforms(rows)
    with torch.no_grad():
        metrics = classification_metrics(
            labels, predict(model, audio, device).argmax(1), len(dataset.classes)
        )
        metrics["noise"] = noise_robustness(model, audio, labels, device, seed=seed)
    metrics["test_accuracy"] = metrics.pop("accuracy")
    return metrics


def _write_untrained(out_dir: str, payload: dict, metrics: dict) -> None:
    """A zoo model's folder for a model not trained here: checkpoint, metrics, an empty history."""
    with atomic_path(Path(out_dir)) as tmp:
        tmp.mkdir()
        write_torch(tmp / "model.ckpt", payload)
        write_json(tmp / "metrics.json", metrics)
        write_csv(tmp / "history.csv", pd.DataFrame(columns=["epoch"]))


def import_model(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="advmir import-model",
        description="Import a model of your own (TorchScript or Python factory) as a zoo model of a dataset: "
        "check its contract on the dataset's clips, score it on the test split, write its checkpoint.",
    )
    parser.add_argument("--dataset-dir", required=True, help="prepared dataset (data contract)")
    parser.add_argument("--name", required=True, help="the model's name in the config's `models`")
    parser.add_argument("--spec", required=True, help="JSON: the model's config entry (source, path, ...)")
    parser.add_argument("--out-dir", required=True, help="results/models/{dataset}/{model}")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the check clips and the noise control")
    parser.add_argument("--check-clips", type=int, default=64, help="test clips the contract is checked on")
    args = parser.parse_args(argv)
    setup_logging()
    from advmir.models.check import check_contract
    from advmir.models.external import ExternalModelError, external_payload, wrap

    seed_everything(args.seed)
    device = resolve_device(args.device)
    spec = json.loads(args.spec)
    dataset = load_dataset(args.dataset_dir, mmap=False)
    model, match, model_classes = wrap(args.name, spec, dataset.classes, dataset.sample_rate)
    log.info("model classes %s -> dataset labels %s", model_classes, match.label_index)
    if match.unmatched_classes:
        log.warning("model classes left out (no dataset label): %s", match.unmatched_classes)
    if match.unmatched_labels:
        log.warning(
            "dataset labels the model cannot predict (their clips are not scored): %s", match.unmatched_labels
        )
    labels = dataset.manifest["label_idx"].to_numpy()
    can = model.predictable()
    rows, clips = _contract_clips(dataset, args.check_clips, args.seed)
    findings = check_contract(model, clips, labels[rows], len(dataset.classes), can[labels[rows]])
    for f in findings:
        log.info("%s", f.line())
    failed = [f for f in findings if not f.ok]
    if failed:
        raise ExternalModelError(
            args.name,
            "fails the model contract on "
            f"{len(rows)} clips of {dataset.root.name}: "
            + "; ".join(f"{f.check}: {f.detail}" for f in failed),
        )
    model = model.to(device)
    test_rows = dataset.split_indices("test")
    scored = test_rows[can[labels[test_rows]]]
    metrics = _test_metrics(model, dataset, scored, device, args.seed)
    metrics.update(
        {
            "n_train": 0,
            "n_valid": 0,
            "n_test": len(scored),
            "n_test_unscored": int(len(test_rows) - len(scored)),
            "best_epoch": -1,
            "classes": dataset.classes,
            "spec": {"frontend": "external", "arch": spec["source"]},
            "seed": args.seed,
            "train_subset": "none",
            "device": device,
            "external": {
                "model_classes": model_classes,
                "unmatched_classes": match.unmatched_classes,
                "unmatched_labels": match.unmatched_labels,
                "contract": [f.__dict__ for f in findings],
            },
        }
    )
    _write_untrained(
        args.out_dir, external_payload(args.name, spec, model.cpu(), match, model_classes), metrics
    )
    log.info(
        "imported %s: test accuracy %.4f on %d clips of matched labels (%d of unmatched labels not scored)",
        args.name, metrics["test_accuracy"], len(scored), metrics["n_test_unscored"],
    )  # fmt: skip
    return 0


def assemble_ensemble(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="advmir assemble-ensemble",
        description="Assemble an ensemble (the weighted mean of its members' softmax) from its members' "
        "checkpoints as a zoo model of a dataset: score it on the test split, write its checkpoint.",
    )
    parser.add_argument("--dataset-dir", required=True, help="prepared dataset (data contract)")
    parser.add_argument(
        "--member", nargs=2, action="append", required=True, metavar=("NAME", "CHECKPOINT"),
        help="one member: its name and model.ckpt (its metrics.json beside it); repeat, in order",
    )  # fmt: skip
    parser.add_argument("--weights", default=None, help="JSON list: one weight per member (default: equal)")
    parser.add_argument("--frontend", required=True, help="the members' shared front-end, or mixed")
    parser.add_argument("--out-dir", required=True, help="results/models/{dataset}/{model}")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise control")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    args = parser.parse_args(argv)
    setup_logging()
    from advmir.errors import InputError
    from advmir.models.ensemble import ensemble_payload, load_ensemble
    from advmir.models.zoo import load_checkpoint, model_from_payload

    torch.set_num_threads(max(1, args.threads))
    seed_everything(args.seed)
    device = resolve_device(args.device)
    dataset = load_dataset(args.dataset_dir, mmap=False)
    payloads = {name: load_checkpoint(path) for name, path in args.member}
    members = {
        name: read_json(Path(path).parent / "metrics.json", keys=("test_accuracy", "n_train"))
        for name, path in args.member
    }
    for name, payload in payloads.items():
        if list(payload["classes"]) != list(dataset.classes):
            raise InputError(
                f"ensemble member {name!r} predicts {payload['classes']}, not the classes of "
                f"{dataset.root.name} ({dataset.classes}): train it on this dataset"
            )
    try:
        payload = ensemble_payload(
            payloads, json.loads(args.weights) if args.weights else None, args.frontend
        )
    except ValueError as exc:
        raise InputError(f"cannot assemble the ensemble: {exc}") from None
    model = load_ensemble(payload, model_from_payload).to(device)
    rows = dataset.split_indices("test")
    metrics = _test_metrics(model, dataset, rows, device, args.seed)
    metrics.update(
        {
            "n_train": max(int(m["n_train"]) for m in members.values()),
            "n_valid": 0,
            "n_test": len(rows),
            "best_epoch": -1,
            "classes": dataset.classes,
            "spec": {"frontend": args.frontend, "arch": "ensemble"},
            "seed": -1,
            "train_subset": "+".join(sorted({str(m.get("train_subset", "all")) for m in members.values()})),
            "device": device,
            "members": {
                name: {"weight": w, "test_accuracy": members[name]["test_accuracy"]}
                for name, w in zip(payload["spec"]["members"], payload["spec"]["weights"], strict=True)
            },
        }
    )
    _write_untrained(args.out_dir, payload, metrics)
    log.info(
        "ensemble of %s: test accuracy %.4f on %d clips (members: %s)",
        ", ".join(payloads), metrics["test_accuracy"], len(rows),
        ", ".join(f"{n} {m['test_accuracy']:.4f}" for n, m in members.items()),
    )  # fmt: skip
    return 0


def check_model(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="advmir check-model",
        description="Load one model of the config, run it on a few clips of the dataset and check the "
        "contract "
        "every stage relies on (shapes, finite scores, determinism, batch independence, input gradient, "
        "input scale). Exit 0 when every check passes, 1 when one fails.",
    )
    parser.add_argument("model", help="the model's name in the config's `models`")
    parser.add_argument(
        "--configfile", nargs="+", default=["config.yaml"],
        help="config.yaml and overlays (as snakemake --configfile), merged in order",
    )  # fmt: skip
    parser.add_argument(
        "--dataset", default=None, help="the dataset to check on (default: the config's first)"
    )
    parser.add_argument("--clips", type=int, default=32, help="clips to run")
    args = parser.parse_args(argv)
    setup_logging()
    import yaml

    from advmir.config import SCHEMAS, ConfigError, expand_defenses, merge_config, validate_config
    from advmir.models.check import check_contract
    from advmir.models.external import mapped_labels, wrap

    config: dict = {}
    for path in args.configfile:
        merge_config(config, yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {})
    validate_config(config, SCHEMAS / "config.schema.yaml")
    if args.model not in config["models"]:
        # a defended model is a zoo model once its defense is expanded; other defenses are no concern
        # of this check (config.yaml's name logmel_cnn, which an overlay of your own zoo may not have)
        expand_defenses(config)
    if args.model not in config["models"]:
        raise ConfigError(
            f"check-model: {args.model!r} is not a model of the config ({', '.join(config['models'])})"
        )
    dataset_name = args.dataset or config["datasets"][0]
    spec = config["models"][args.model]
    root = Path(config["results"]) / "data" / dataset_name
    prepared = (root / "manifest.csv").is_file()
    if prepared:
        dataset = load_dataset(root, mmap=False)
        rows, clips = _contract_clips(dataset, args.clips, int(config["seed"]))
        labels, names, rate = (
            dataset.manifest["label_idx"].to_numpy()[rows],
            dataset.classes,
            dataset.sample_rate,
        )
        where = f"{len(rows)} clips of {root}"
    else:
        section = config.get(dataset_name) or {}
        rate = int(section.get("sample_rate", 16000))
        samples = max(1, round(rate * float(section.get("clip_seconds", 1.0))))
        clips = _tones(args.clips, samples, rate, int(config["seed"]))
        labels, names = None, None
        where = (
            f"{len(clips)} seeded synthetic tones ({root} is not prepared yet: no accuracy or scale check)"
        )
    if "source" in spec:
        model, match, _ = wrap(args.model, spec, names or mapped_labels(args.model, spec), rate)
        scorable = model.predictable()[labels] if labels is not None else None
        n_classes = len(model.classes)
        print(f"{args.model}: {spec['source']} model at {spec['sample_rate']} Hz on {where}")
        if match.unmatched_classes:
            print(f"  model classes left out (no dataset label): {', '.join(match.unmatched_classes)}")
        if match.unmatched_labels:
            print(
                "  dataset labels it cannot predict (their clips are not scored): "
                + ", ".join(match.unmatched_labels)
            )
    else:
        model, state = _zoo_model(config, args.model, dataset_name, len(names or [0, 1]), rate)
        n_classes, scorable = (len(names) if names else None), None
        print(f"{args.model}: {state} zoo model on {where}")
    findings = check_contract(model, clips, labels, n_classes, scorable)
    for f in findings:
        print("  " + f.line())
    failed = [f.check for f in findings if not f.ok]
    print(f"{args.model}: " + (f"FAILED {', '.join(failed)}" if failed else "every check passed"))
    return 1 if failed else 0


def _zoo_model(
    config: dict, name: str, dataset: str, n_classes: int, rate: int
) -> tuple[torch.nn.Module, str]:
    """A zoo model (or ensemble) of the config: its checkpoint when trained, else built untrained
    (an ensemble: of its members, each trained or not): ``(model in eval mode, "trained" | "untrained")``."""
    from advmir.config import model_spec
    from advmir.models.zoo import build_model, load_model

    ckpt = Path(config["results"]) / "models" / dataset / name / "model.ckpt"
    if ckpt.is_file():
        return load_model(ckpt), "trained"
    spec = config["models"][name]
    if "members" in spec:
        from advmir.models.ensemble import SoftmaxEnsemble, normalised_weights

        members = {m: _zoo_model(config, m, dataset, n_classes, rate)[0] for m in spec["members"]}
        weights = normalised_weights(spec["members"], spec.get("weights"))
        return SoftmaxEnsemble(members, weights, {"members": list(spec["members"])}).eval(), "untrained"
    return build_model(model_spec(config, name), n_classes, rate).eval(), "untrained"


def _tones(n: int, samples: int, rate: int, seed: int) -> np.ndarray:
    """(n, samples) seeded harmonic tones at -12 dBFS with a decay: unlabelled probe clips."""
    rng = np.random.default_rng([seed, 0x70E5])
    t = np.arange(samples) / rate
    out = np.zeros((n, samples), np.float32)
    for i in range(n):
        f0 = 55.0 * 2 ** rng.uniform(0, 5)
        tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6) if f0 * k < rate / 2)
        out[i] = 0.25 * tone * np.exp(-t * rng.uniform(1, 6)) / 1.5
    return out
