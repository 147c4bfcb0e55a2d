"""Crafting one attack run (the evaluation subset, the disk streaming, the scoring and the
metadata) and summarizing runs into attacks.csv.

:func:`plan_craft` checks everything a run needs (the spec, the dataset, the models) before any
work; :func:`write_craft` attacks the fixed, seeded evaluation subset of the dataset's test split
and writes the run into an empty folder (the command line,
:func:`advmir.attacks.cli.craft`, hands it a temporary folder and renames it whole):

- ``adversarial.npy``: float32 (n_eval, T), row j is the adversarial clip of examples.csv row j;
  streamed to disk chunk by chunk, so memory stays flat as the evaluation set grows.
- ``matched_noise.npy``: float32 (n_eval, T), row j is the control of adversarial row j: the clean
  clip plus white noise at the same SNR (:mod:`advmir.attacks.controls`), streamed the same way.
- ``examples.csv``: one row per example (:data:`advmir.attacks.scoring.EXAMPLE_COLUMNS`); labels
  and predictions are class indices (names in attack.json). ``success`` and ``noise_success``
  follow one rule (:mod:`advmir.attacks.scoring`) and count only examples the *target* model got
  right when clean.
- ``attack.json``: the spec, resolved parameters, threat model, counts and timings.
- ``listen/*.wav``: a few examples as clean, adversarial and perturbation x10 (24-bit PCM WAV), and
  the same clips in ``listen/panel.npz`` (ids, clean, adversarial, sample_rate) for figures.
- ``perturbation.npy`` (universal attack only): the perturbation fitted on the train split.

With a surrogate checkpoint the attack is crafted on the surrogate and scored on the target (the
limited-knowledge threat model); so is the control.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from advmir.artifacts import read_csv, read_json
from advmir.attacks.scoring import EXAMPLE_COLUMNS, score_chunk, success_rates
from advmir.errors import InputError

if TYPE_CHECKING:
    from advmir.attacks.base import Attack
    from advmir.datasets.contract import Dataset

log = logging.getLogger("advmir.attacks")

SPEC_KEYS = {"name", "params", "threat", "surrogate", "models"}
DEFAULT_LOADER = "advmir.models.zoo:load_model"
# the columns of examples.csv that attacks.csv is computed from
SUMMARY_COLUMNS = ("clean_correct", "success", "snr_db", "noise_success", "iterations", "queries")


class AttackSpecError(InputError, ValueError):
    """``--attack-spec`` is not a valid spec, or the models do not fit the dataset."""


# ------------------------------------------------------------------------------------------ inputs
def parse_attack_spec(text: str) -> dict[str, Any]:
    """Parse ``--attack-spec`` JSON: ``{"name": ..., "params": {...}}`` (+ threat, surrogate, models)."""
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AttackSpecError(f"--attack-spec is not valid JSON ({exc}): {text!r}") from None
    if not isinstance(spec, dict) or "name" not in spec:
        raise AttackSpecError(f'--attack-spec must be a JSON object with a "name", got {text!r}')
    extra = sorted(set(spec) - SPEC_KEYS)
    if extra:
        raise AttackSpecError(f"--attack-spec has unknown key(s) {extra}; allowed: {sorted(SPEC_KEYS)}")
    params = spec.get("params") or {}
    if not isinstance(params, dict):
        raise AttackSpecError(f'--attack-spec "params" must be an object, got {params!r}')
    return {**spec, "params": params}


def resolve_target_map(params: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    """Turn class names in ``params["target_map"]`` into indices (indices pass through)."""
    if not isinstance(params.get("target_map"), dict):
        return params

    def index(value: Any) -> int:
        if isinstance(value, str) and not value.lstrip("-").isdigit():
            if value not in classes:
                raise AttackSpecError(f"target_map names class {value!r}, which is not one of {classes}")
            return classes.index(value)
        return int(value)

    mapped = {index(k): index(v) for k, v in params["target_map"].items()}
    return {**params, "target_map": mapped}


def load_loader(path: str) -> Callable[..., torch.nn.Module]:
    """Import ``module:function``, the function that loads a checkpoint (default: the model zoo's)."""
    module, _, func = path.partition(":")
    return getattr(importlib.import_module(module), func)


def read_rows(path: Path, rows: np.ndarray | slice) -> np.ndarray:
    """Rows of the (N, T) array in ``path`` as float32 (len(rows), T) in [-1, 1], through a memory
    map opened for this read only: pages it touched leave the process with it, so memory stays flat
    as reads add up."""
    from advmir.datasets.contract import to_float32

    array = np.load(path, mmap_mode="r")
    try:
        return to_float32(np.asarray(array[rows]))
    finally:
        del array


class RowView:
    """Rows of an (N, T) .npy seen as an array of their own: ``view[i]`` is row ``rows[i]`` of the file,
    float32, read through :func:`read_rows`; ``shape`` is (len(rows), T)."""

    def __init__(self, path: Path, rows: np.ndarray) -> None:
        self.path, self.rows = Path(path), np.asarray(rows)
        length = np.load(self.path, mmap_mode="r").shape[1]
        self.shape = (len(self.rows), length)

    def __getitem__(self, index: Any) -> np.ndarray:
        return read_rows(self.path, self.rows[index])


# ------------------------------------------------------------------------------------------ outputs
def write_listen(
    folder: Path,
    frame: pd.DataFrame,
    adv_of: Callable[[int], np.ndarray],
    clean_of: Callable[[int], np.ndarray],
    sample_rate: int,
    count: int,
) -> list[str]:
    """Write clean / adversarial / perturbation x10 WAVs of ``count`` examples (successes first).

    ``adv_of(j)`` and ``clean_of(j)`` give example j's clips, float32 (T,). Also writes the same clips
    as ``panel.npz`` (ids (k,), clean (k, T), adversarial (k, T), sample_rate). Returns the ids written.

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


def finite_median(values: pd.Series) -> float | None:
    """Median of the finite values (an unperturbed clip's SNR is +inf), None if there are none."""
    values = values[np.isfinite(values)]
    return float(values.median()) if len(values) else None


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


# -------------------------------------------------------------------------------------------- a run
@dataclass
class CraftJob:
    """Everything one run needs, checked: the attack (its ``model`` the crafting model), the target
    model that scores it, and the evaluation rows (n_eval,) of the dataset's test split."""

    spec: dict[str, Any]
    attack: Attack
    dataset: Dataset
    target_model: torch.nn.Module
    rows: np.ndarray
    threat: str
    checkpoint: str
    surrogate_checkpoint: str | None
    eval_size: int
    seed: int
    device: torch.device


def plan_craft(
    dataset_dir: str | Path,
    checkpoint: str,
    spec: dict[str, Any],
    *,
    eval_size: int,
    seed: int = 0,
    device: str = "auto",
    surrogate_checkpoint: str | None = None,
    batch_size: int | None = None,
    model_loader: str = DEFAULT_LOADER,
) -> CraftJob:
    """Check the spec (from :func:`parse_attack_spec`) and load the dataset and models: bad names and
    parameters fail here, before any model is loaded; ``batch_size`` applies unless the spec sets it.
    """
    from advmir.attacks import build_attack
    from advmir.datasets.contract import evaluation_rows, load_dataset
    from advmir.runtime import resolve_device

    if eval_size < 1:
        raise AttackSpecError(f"--eval-size must be >= 1, got {eval_size}")
    dataset = load_dataset(dataset_dir)
    test_rows = dataset.split_indices("test")
    if eval_size > len(test_rows):
        log.warning("eval size %d exceeds the %d test clips; using all of them", eval_size, len(test_rows))
    params = resolve_target_map(dict(spec["params"]), dataset.classes)
    if batch_size is not None:
        params.setdefault("batch_size", batch_size)
    params.setdefault("seed", seed)
    attack = build_attack(spec["name"], params)  # rejects bad names and parameters before any work
    target_device = resolve_device(device)
    loader = load_loader(model_loader)
    target_model = loader(checkpoint, target_device)
    crafting_model = loader(surrogate_checkpoint, target_device) if surrogate_checkpoint else target_model
    for which, model in (("target", target_model), ("surrogate", crafting_model)):
        classes = getattr(model, "classes", None)
        if classes is not None and list(classes) != list(dataset.classes):
            raise AttackSpecError(
                f"the {which} model was trained on classes {list(classes)} but {dataset_dir} has "
                f"{dataset.classes}; attack it on the dataset it was trained on"
            )
    attack.model = crafting_model
    return CraftJob(
        spec=spec,
        attack=attack,
        dataset=dataset,
        target_model=target_model,
        rows=evaluation_rows(test_rows, eval_size, seed),
        threat="surrogate" if surrogate_checkpoint else "white_box",
        checkpoint=checkpoint,
        surrogate_checkpoint=surrogate_checkpoint,
        eval_size=eval_size,
        seed=seed,
        device=target_device,
    )


def write_craft(
    job: CraftJob, folder: Path, name: str, *, chunk_size: int = 256, listen: int = 3
) -> dict[str, Any]:
    """Attack ``job``'s evaluation rows chunk by chunk and write the run into the empty ``folder``
    (created here; see the module docstring for its files). ``name`` is the run's attack name
    (its folder's final name); ``listen`` examples are written as WAV. Returns attack.json's content.
    """
    from tqdm import tqdm

    from advmir.attacks import Universal

    attack, dataset, rows, spec = job.attack, job.dataset, job.rows, job.spec
    labels_all = dataset.manifest["label_idx"].to_numpy()
    ids_all = dataset.manifest["id"].astype(str).to_numpy()
    n, length = len(rows), dataset.clip_samples
    log.info(
        "%s (%s) on %s: %d clips of %s, batch %d",
        spec["name"],
        job.threat,
        Path(job.checkpoint).parent.name,
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

    frames: list[pd.DataFrame] = []
    folder.mkdir()
    # each file is created (header, size) through open_memmap, then each chunk is written through a
    # map opened for it alone: written pages leave the process with it, so memory stays flat
    adv_path, noise_path = folder / "adversarial.npy", folder / "matched_noise.npy"
    for path in (adv_path, noise_path):
        created = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, length))
        del created
    bs = attack.batch_size
    # One tick per finished clip, also into the rule's log file (not a terminal: disable=False).
    bar = tqdm(total=n, desc=f"craft {spec['name']}", unit="clip", mininterval=5, disable=False)
    attack.on_clips_done = bar.update
    for start in range(0, n, chunk_size):
        chunk = rows[start : start + chunk_size]
        x = torch.from_numpy(read_rows(waveforms_path, chunk))
        y = torch.from_numpy(labels_all[chunk].astype(np.int64))
        result = attack(x, y).cpu()
        scores, control = score_chunk(job.target_model, x, y, result, chunk, ids_all[chunk], job.seed, bs)
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
    frame.to_csv(folder / "examples.csv", index=False)
    listened = write_listen(
        folder / "listen",
        frame,
        lambda j: read_rows(adv_path, slice(j, j + 1))[0],
        lambda j: read_rows(waveforms_path, rows[j : j + 1])[0],
        dataset.sample_rate,
        listen,
    )
    if isinstance(attack, Universal):
        np.save(folder / "perturbation.npy", attack.applied_perturbation())
    seconds_total = time.perf_counter() - t_start
    meta = run_metadata(job, name, frame, seconds=seconds_total, fit=fit_info, listened=listened)
    (folder / "attack.json").write_text(json.dumps(meta, indent=2, default=_json_default) + "\n")
    return meta


def run_metadata(
    job: CraftJob,
    name: str,
    frame: pd.DataFrame,
    *,
    seconds: float,
    fit: dict[str, Any],
    listened: list[str],
) -> dict[str, Any]:
    """attack.json of a run: the spec, resolved parameters, threat model, counts of ``frame`` (its
    examples.csv) and timings."""
    n_correct = int(frame["clean_correct"].sum())
    n_success = int(frame["success"].sum())
    n_noise_success = int(frame["noise_success"].sum())
    surrogate = job.surrogate_checkpoint
    return {
        "attack": name,
        "algorithm": job.spec["name"],
        "spec": job.spec,
        "params": job.attack.describe(),
        "threat": job.threat,
        "dataset": job.dataset.root.name,
        "model": Path(job.checkpoint).parent.name,
        "checkpoint": str(job.checkpoint),
        "surrogate": Path(surrogate).parent.name if surrogate else None,
        "surrogate_checkpoint": surrogate,
        "split": "test",
        "eval_size": job.eval_size,
        "n_eval": len(job.rows),
        "seed": job.seed,
        "classes": list(job.dataset.classes),
        "sample_rate": job.dataset.sample_rate,
        "n_clean_correct": n_correct,
        "n_success": n_success,
        "success_rate": n_success / n_correct if n_correct else None,
        "n_noise_success": n_noise_success,
        "noise_success_rate": n_noise_success / n_correct if n_correct else None,
        "median_snr_db": finite_median(frame.loc[frame["success"], "snr_db"]),
        "seconds": seconds,
        "fit": fit,
        "listen": listened,
        "device": str(job.device),
        "torch": torch.__version__,
    }


# ---------------------------------------------------------------------------------------- summaries
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
        "median_snr_db": finite_median(success["snr_db"]),
        "n_noise_success": int(ex["noise_success"].sum()),
        **{k: v for k, v in rates.items() if k != "success_rate"},
        "mean_iterations": float(correct["iterations"].mean()) if n_correct else float("nan"),
        "mean_queries": float(correct["queries"].mean()) if n_correct else float("nan"),
        "eval_size": meta["eval_size"],
        "seed": meta["seed"],
    }


def summarize_runs(run_dirs: list[Path]) -> pd.DataFrame:
    """attacks.csv: one row per craft output folder (:func:`summarize_run`; a folder named twice
    counts once), sorted by dataset, model and attack."""
    table = pd.DataFrame([summarize_run(d) for d in dict.fromkeys(run_dirs)])
    return table.sort_values(["dataset", "model", "attack"], kind="stable").reset_index(drop=True)
