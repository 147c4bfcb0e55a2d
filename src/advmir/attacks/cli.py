"""Command line of the attack stage: ``python -m advmir craft-adversarial`` and
``python -m advmir summarize-attacks``.

craft-adversarial
    Attack a fixed, seeded evaluation subset of a dataset's test split with one attack and write
    ``OUT_DIR/`` atomically (the folder appears whole or not at all):

    - ``adversarial.npy``: float32 (n_eval, T), row j is the adversarial clip of examples.csv row j;
      streamed to disk chunk by chunk, so memory stays flat as the evaluation set grows.
    - ``matched_noise.npy``: float32 (n_eval, T), row j is the control of adversarial row j: the clean
      clip plus white noise at the same SNR (:mod:`advmir.attacks.controls`), streamed the same way.
    - ``examples.csv``: one row per example: id, row (in the dataset), label, target (-1 when
      untargeted), clean_pred, clean_conf, adv_pred, adv_conf, clean_correct, success, snr_db, linf, l2,
      iterations, queries, seconds, and the control's noise_snr_db, noise_pred, noise_success. Labels
      and predictions are class indices (names in attack.json). ``success`` and ``noise_success``
      follow one rule (:mod:`advmir.attacks.scoring`) and count only examples the *target* model got
      right when clean.
    - ``attack.json``: the spec, resolved parameters, threat model, counts and timings.
    - ``listen/*.wav``: a few examples as clean, adversarial and perturbation x10 (float WAV), and the
      same clips in ``listen/panel.npz`` (ids, clean, adversarial, sample_rate) for figures.
    - ``perturbation.npy`` (universal attack only): the perturbation fitted on the train split.

    With ``--surrogate-checkpoint`` the attack is crafted on the surrogate and scored on the target
    (the limited-knowledge threat model); so is the control.

summarize-attacks
    One row per (dataset, model, attack) run with its budget: results/tables/attacks.csv, each success
    rate beside its matched-noise control (see :func:`advmir.attacks.scoring.success_rates`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from advmir.artifacts import read_csv, read_json
from advmir.attacks.scoring import EXAMPLE_COLUMNS, score_chunk, success_rates

log = logging.getLogger("advmir.attacks")

SPEC_KEYS = {"name", "params", "threat", "surrogate", "models"}
DEFAULT_LOADER = "advmir.models.zoo:load_model"
# the columns of examples.csv that attacks.csv is computed from
SUMMARY_COLUMNS = ("clean_correct", "success", "snr_db", "noise_success", "iterations", "queries")


# ------------------------------------------------------------------------------------------ helpers
def parse_attack_spec(text: str) -> dict[str, Any]:
    """Parse ``--attack-spec`` JSON: ``{"name": ..., "params": {...}}`` (+ threat, surrogate, models)."""
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--attack-spec is not valid JSON ({exc}): {text!r}") from None
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f'--attack-spec must be a JSON object with a "name", got {text!r}')
    extra = sorted(set(spec) - SPEC_KEYS)
    if extra:
        raise ValueError(f"--attack-spec has unknown key(s) {extra}; allowed: {sorted(SPEC_KEYS)}")
    params = spec.get("params") or {}
    if not isinstance(params, dict):
        raise ValueError(f'--attack-spec "params" must be an object, got {params!r}')
    return {**spec, "params": params}


def resolve_target_map(params: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    """Turn class names in ``params["target_map"]`` into indices (indices pass through)."""
    if not isinstance(params.get("target_map"), dict):
        return params

    def index(value: Any) -> int:
        if isinstance(value, str) and not value.lstrip("-").isdigit():
            if value not in classes:
                raise ValueError(f"target_map names class {value!r}, which is not one of {classes}")
            return classes.index(value)
        return int(value)

    mapped = {index(k): index(v) for k, v in params["target_map"].items()}
    return {**params, "target_map": mapped}


def evaluation_rows(test_rows: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A fixed, seeded subset of ``test_rows`` of ``size`` rows, sorted.

    Subsets are nested: the first ``size`` rows of one seeded permutation, so a larger evaluation set
    contains the smaller one, and every model and attack sees the same clips for the same seed.
    """
    if size < 1:
        raise ValueError(f"--eval-size must be >= 1, got {size}")
    if size > len(test_rows):
        log.warning("eval size %d exceeds the %d test clips; using all of them", size, len(test_rows))
    order = np.random.default_rng(seed).permutation(len(test_rows))
    return np.sort(np.asarray(test_rows)[order[:size]])


def load_loader(path: str) -> Callable[..., torch.nn.Module]:
    """Import ``module:function``, the function that loads a checkpoint (default: the model zoo's)."""
    module, _, func = path.partition(":")
    return getattr(importlib.import_module(module), func)


def read_rows(path: Path, rows: np.ndarray | slice) -> np.ndarray:
    """Rows of the (N, T) array in ``path`` as float32 in [-1, 1], through a memory map opened for
    this read only: pages it touched leave the process with it, so memory stays flat as reads add up."""
    from advmir.datasets.contract import to_float32

    array = np.load(path, mmap_mode="r")
    try:
        return to_float32(np.asarray(array[rows]))
    finally:
        del array


class RowView:
    """Rows of an (N, T) .npy seen as an array of their own: ``view[i]`` is row ``rows[i]`` of the file,
    float32, read through :func:`read_rows`."""

    def __init__(self, path: Path, rows: np.ndarray) -> None:
        self.path, self.rows = Path(path), np.asarray(rows)
        length = np.load(self.path, mmap_mode="r").shape[1]
        self.shape = (len(self.rows), length)

    def __getitem__(self, index: Any) -> np.ndarray:
        return read_rows(self.path, self.rows[index])


def write_listen(
    folder: Path,
    frame: pd.DataFrame,
    adv_of: Callable[[int], np.ndarray],
    clean_of: Callable[[int], np.ndarray],
    sample_rate: int,
    count: int,
) -> list[str]:
    """Write clean / adversarial / perturbation x10 WAVs of ``count`` examples (successes first).

    24-bit PCM: its step (-138 dBFS) is far below any perturbation here, and unlike float WAV it
    carries no time-stamped PEAK chunk, so two runs write the same bytes.
    """
    import soundfile as sf

    if count <= 0 or frame.empty:
        return []
    folder.mkdir()
    order = list(frame.index[frame["success"]]) + list(frame.index[~frame["success"]])
    written, cleans, advs = [], [], []
    for j in order[:count]:
        clean, adv = clean_of(j), adv_of(j)
        name = str(frame.at[j, "id"]).replace(os.sep, "_")
        sf.write(folder / f"{name}_clean.wav", clean, sample_rate, subtype="PCM_24")
        sf.write(folder / f"{name}_adversarial.wav", adv, sample_rate, subtype="PCM_24")
        sf.write(
            folder / f"{name}_perturbation_x10.wav",
            np.clip(10 * (adv - clean), -1, 1),
            sample_rate,
            subtype="PCM_24",
        )
        written.append(name)
        cleans.append(clean)
        advs.append(adv)
    # the same clips for figures, readable with numpy alone
    np.savez(
        folder / "panel.npz",
        ids=np.asarray(written),
        clean=np.stack(cleans),
        adversarial=np.stack(advs),
        sample_rate=sample_rate,
    )
    return written


def _finite_median(values: pd.Series) -> float | None:
    values = values[np.isfinite(values)]
    return float(values.median()) if len(values) else None


# -------------------------------------------------------------------------------------------- craft
def _craft_parser() -> argparse.ArgumentParser:
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
        help="clips per forward pass, unless the spec's params set batch_size (default 64)",
    )
    p.add_argument("--chunk-size", type=int, default=256, help="clips held in memory at once")
    p.add_argument("--listen", type=int, default=3, help="examples written as WAV for listening")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--model-loader", default=DEFAULT_LOADER, help=argparse.SUPPRESS)
    return p


def craft(argv: list[str]) -> int:
    """Entry point of ``python -m advmir craft-adversarial``; returns an exit code."""
    from advmir.attacks import Universal, build_attack
    from advmir.datasets.contract import load_dataset
    from advmir.io import atomic_path, ensure_writable_dir
    from advmir.runtime import resolve_device, seed_everything, setup_logging

    args = _craft_parser().parse_args(argv)
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    spec = parse_attack_spec(args.attack_spec)
    if args.eval_size < 1:
        raise ValueError(f"--eval-size must be >= 1, got {args.eval_size}")
    dataset = load_dataset(args.dataset_dir)
    params = resolve_target_map(dict(spec["params"]), dataset.classes)
    if args.batch_size is not None:
        params.setdefault("batch_size", args.batch_size)
    params.setdefault("seed", args.seed)
    attack = build_attack(spec["name"], params)  # rejects bad names and parameters before any work
    out_dir = Path(args.out_dir)
    ensure_writable_dir(out_dir.parent)

    device = resolve_device(args.device)
    loader = load_loader(args.model_loader)
    target_model = loader(args.checkpoint, device)
    crafting_model = loader(args.surrogate_checkpoint, device) if args.surrogate_checkpoint else target_model
    for which, model in (("target", target_model), ("surrogate", crafting_model)):
        classes = getattr(model, "classes", None)
        if classes is not None and list(classes) != list(dataset.classes):
            raise ValueError(
                f"the {which} model was trained on classes {list(classes)} but {args.dataset_dir} has "
                f"{dataset.classes}; attack it on the dataset it was trained on"
            )
    attack.model = crafting_model
    threat = "surrogate" if args.surrogate_checkpoint else "white_box"

    rows = evaluation_rows(dataset.split_indices("test"), args.eval_size, args.seed)
    labels_all = dataset.manifest["label_idx"].to_numpy()
    ids_all = dataset.manifest["id"].astype(str).to_numpy()
    n, length = len(rows), dataset.clip_samples
    log.info(
        "%s (%s) on %s: %d clips of %s, batch %d",
        spec["name"],
        threat,
        Path(args.checkpoint).parent.name,
        n,
        dataset.root.name,
        attack.batch_size,
    )

    fit_info: dict[str, Any] = {}
    waveforms_path = dataset.root / "waveforms.npy"
    t_start = time.perf_counter()
    if isinstance(attack, Universal):
        train_rows = dataset.split_indices("train")
        attack.fit(RowView(waveforms_path, train_rows), labels_all[train_rows])
        fit_info = dict(attack.fit_info)
        log.info("universal perturbation fitted: %s", fit_info)

    from tqdm import tqdm

    frames: list[pd.DataFrame] = []
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        # each file is created (header, size) through open_memmap, then each chunk is written through a
        # map opened for it alone: written pages leave the process with it, so memory stays flat
        adv_path, noise_path = tmp / "adversarial.npy", tmp / "matched_noise.npy"
        for path in (adv_path, noise_path):
            created = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, length))
            del created
        bs = attack.batch_size
        # One tick per finished clip, also into the rule's log file (not a terminal: disable=False).
        bar = tqdm(total=n, desc=f"craft {spec['name']}", unit="clip", mininterval=5, disable=False)
        attack.on_clips_done = bar.update
        for start in range(0, n, args.chunk_size):
            chunk = rows[start : start + args.chunk_size]
            x = torch.from_numpy(read_rows(waveforms_path, chunk))
            y = torch.from_numpy(labels_all[chunk].astype(np.int64))
            result = attack(x, y).cpu()
            scores, control = score_chunk(target_model, x, y, result, chunk, ids_all[chunk], args.seed, bs)
            for path, audio in ((adv_path, result.x_adv), (noise_path, control)):
                stored = np.load(path, mmap_mode="r+")
                stored[start : start + len(chunk)] = audio.numpy()
                stored.flush()
                del stored
            frames.append(scores)
            del x, result, control
            _return_freed_memory()
        bar.close()
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=EXAMPLE_COLUMNS)
        frame.to_csv(tmp / "examples.csv", index=False)
        listened = write_listen(
            tmp / "listen",
            frame,
            lambda j: read_rows(adv_path, slice(j, j + 1))[0],
            lambda j: read_rows(waveforms_path, rows[j : j + 1])[0],
            dataset.sample_rate,
            args.listen,
        )
        if isinstance(attack, Universal):
            np.save(tmp / "perturbation.npy", attack.applied_perturbation())
        seconds_total = time.perf_counter() - t_start
        n_correct = int(frame["clean_correct"].sum())
        n_success = int(frame["success"].sum())
        n_noise_success = int(frame["noise_success"].sum())
        meta = {
            "attack": out_dir.name,
            "algorithm": spec["name"],
            "spec": spec,
            "params": attack.describe(),
            "threat": threat,
            "dataset": dataset.root.name,
            "model": Path(args.checkpoint).parent.name,
            "checkpoint": str(args.checkpoint),
            "surrogate": Path(args.surrogate_checkpoint).parent.name if args.surrogate_checkpoint else None,
            "surrogate_checkpoint": args.surrogate_checkpoint,
            "split": "test",
            "eval_size": args.eval_size,
            "n_eval": n,
            "seed": args.seed,
            "classes": list(dataset.classes),
            "sample_rate": dataset.sample_rate,
            "n_clean_correct": n_correct,
            "n_success": n_success,
            "success_rate": n_success / n_correct if n_correct else None,
            "n_noise_success": n_noise_success,
            "noise_success_rate": n_noise_success / n_correct if n_correct else None,
            "median_snr_db": _finite_median(frame.loc[frame["success"], "snr_db"]),
            "seconds": seconds_total,
            "fit": fit_info,
            "listen": listened,
            "device": str(device),
            "torch": torch.__version__,
        }
        (tmp / "attack.json").write_text(json.dumps(meta, indent=2, default=_json_default) + "\n")
    rate = f"{n_success}/{n_correct}" if n_correct else "0/0"
    log.info(
        "done: success %s clean-correct clips (matched noise: %d), median SNR of successes %s dB, %.1f s; "
        "wrote %s",
        rate,
        n_noise_success,
        meta["median_snr_db"],
        seconds_total,
        out_dir,
    )
    return 0


def _return_freed_memory() -> None:
    """Give the heap's free memory back to the system (glibc ``malloc_trim``), once per chunk.

    glibc keeps freed blocks of the chunk's large tensors in its heap, where later chunks fragment
    them: without this, a job's resident memory creeps up chunk after chunk instead of staying flat.
    (A low fixed mmap threshold would do it too, but costs about 40% more time in page faults.)"""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


# ---------------------------------------------------------------------------------------- summarize
def summarize_run(run_dir: Path) -> dict[str, Any]:
    """One row of attacks.csv from a craft output folder: counts and each success rate beside the
    rate of its matched-noise control (:func:`advmir.attacks.scoring.success_rates`). No wall-clock
    time: two runs of one config give the same table (times stay in attack.json, examples.csv and
    the rule's benchmark file)."""
    meta = read_json(run_dir / "attack.json", keys=("dataset", "model", "attack", "algorithm", "threat"))
    ex = read_csv(run_dir / "examples.csv", columns=SUMMARY_COLUMNS)
    correct = ex[ex["clean_correct"]]
    success = ex[ex["success"]]
    budget = meta["params"].get("budget") or {}
    n_correct = len(correct)
    rates = success_rates(ex)
    return {
        "dataset": meta["dataset"],
        "model": meta["model"],
        "attack": meta["attack"],
        "algorithm": meta["algorithm"],
        "threat": meta["threat"],
        "surrogate": meta.get("surrogate"),
        "norm": meta["params"].get("norm"),
        "budget_eps": budget.get("eps"),
        "budget_snr_db": budget.get("snr_db"),
        "targeted": meta["params"].get("targeted") or "none",
        "n_eval": len(ex),
        "n_clean_correct": n_correct,
        "n_success": len(success),
        "success_rate": rates["success_rate"],
        "median_snr_db": _finite_median(success["snr_db"]),
        "n_noise_success": int(ex["noise_success"].sum()),
        **{k: v for k, v in rates.items() if k != "success_rate"},
        "mean_iterations": float(correct["iterations"].mean()) if n_correct else float("nan"),
        "mean_queries": float(correct["queries"].mean()) if n_correct else float("nan"),
        "eval_size": meta["eval_size"],
        "seed": meta["seed"],
    }


def summarize(argv: list[str]) -> int:
    """Entry point of ``python -m advmir summarize-attacks``: write results/tables/attacks.csv."""
    from advmir.io import write_csv
    from advmir.runtime import setup_logging

    p = argparse.ArgumentParser(
        prog="python -m advmir summarize-attacks",
        description="Tidy table of attack success: one row per model x attack x budget.",
    )
    p.add_argument(
        "--runs",
        nargs="+",
        required=True,
        help="craft output folders (or files inside them, e.g. their examples.csv)",
    )
    p.add_argument("--out", required=True, help="results/tables/attacks.csv")
    args = p.parse_args(argv)
    setup_logging()
    dirs = [Path(r) if Path(r).is_dir() else Path(r).parent for r in args.runs]
    table = pd.DataFrame([summarize_run(d) for d in dict.fromkeys(dirs)])
    table = table.sort_values(["dataset", "model", "attack"], kind="stable").reset_index(drop=True)
    write_csv(args.out, table)
    log.info("wrote %s (%d rows)", args.out, len(table))
    return 0
