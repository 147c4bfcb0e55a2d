"""Adversarial-example detection scored: ROC-AUC before and after an adaptive attacker.

One job per (dataset, classifier), :func:`evaluate_detection`, on four disjoint sets of clips:

- the scored clips: the attack stage's seeded evaluation subset of the test split (``eval_size``);
- the detector-training clips: ``train_size`` validation clips (seeded) and their adversarial copies
  (every attack of ``attacks`` at every budget, crafted on the classifier, the successful ones
  pooled): logmel_net and the stack learn clean vs adversarial from them;
- the calibration clips: ``calibration_size`` other validation clips, clean: each detector's
  threshold flags a share ``fpr`` of them (:func:`advmir.defenses.detection.threshold_at`), and their
  robust spread is the unit of the adaptive attacker's detector term;
- the reference: ``reference_size`` clean train clips, on which the anomaly detectors are fitted as
  the anomaly stage fits them.

Then, per detector, three kinds of rows (``phase``), each at every budget:

- ``non_adaptive``: each attack of ``attacks`` crafted on the classifier alone; the positives are its
  successful examples (clean-correct clips it fools within the budget), the negatives every clean
  scored clip: ROC-AUC (and Hanley-McNeil's standard error), the detection rate at the threshold
  (``tpr``), and ``evasion``, the share of clean-correct clips fooled *and* not flagged;
- ``control``: random +-eps noise filling the same L-inf box (the attack stage's ``noise``), every
  noisy clip a positive: how much of a detector's AUC is "a perturbation is there" rather than "an
  adversarial one";
- ``adaptive``: the attacker who knows the detector (:class:`advmir.defenses.detection.Guarded`,
  the combined loss of Carlini and Wagner 2017), on the clean-correct clips: ``adaptive.gradient``
  (PGD on the combined margin) on a detector with a gradient, ``adaptive.query`` (Square) on one
  without, searching the weight c of the detector's term per clip (:func:`weight_search`): each
  clip's example is its best across the weights tried (fooled and not flagged, else fooled).
  Positives: the examples that fool the classifier within the budget, flagged or not, so the
  "after" ROC-AUC is over every clip the adaptive attack fooled; ``tpr`` is the share of them still
  flagged at the threshold and ``evasion`` the share of clean-correct clips fooled and not flagged.
  ``auc_before``, ``tpr_before`` and ``evasion_before`` repeat the detector's non-adaptive numbers
  on the first attack of ``attacks`` at that budget (``before_attack``): the before and after of one
  row. An attacker stopped at its first success sits just below the threshold, so the "after" AUC
  can stay high while the detection rate at the operating point falls to zero: read both.

``fpr`` in a row is the share of clean *scored* clips above the calibration threshold (near the
target when the calibration clips look like the test clips). Wall time stays in detection.json.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from advmir.defenses.detection import (
    Detector,
    Guarded,
    adaptive_attack,
    auc_standard_error,
    fit_detectors,
    is_differentiable,
    robust_spread,
    score_clips,
    threshold_at,
)
from advmir.defenses.settings import DefenseConfigError, DetectionConfig
from advmir.errors import InputError

log = logging.getLogger("advmir.defenses")

PHASES = ("non_adaptive", "control", "adaptive")
SUMMARY_COLUMNS = [
    "dataset", "model", "detector", "differentiable", "phase", "attack", "algorithm", "budget_db",
    "n_clean", "n_attacked", "n_examples", "success", "roc_auc", "auc_se", "threshold", "fpr_target",
    "fpr", "tpr", "evasion", "before_attack", "auc_before", "tpr_before", "evasion_before",
]  # fmt: skip
ROUNDED_COLUMNS = [
    "success", "roc_auc", "auc_se", "fpr", "tpr", "evasion", "auc_before", "tpr_before", "evasion_before",
]  # fmt: skip
ROC_COLUMNS = ["dataset", "model", "detector", "phase", "attack", "budget_db", "fpr", "tpr"]
CLIP_COLUMNS = ["id", "row", "detector", "phase", "attack", "budget_db", "score", "fooled", "flagged"]


class DetectionError(InputError, ValueError):
    """A detection job that cannot run as configured; the message says what to change."""


@dataclass
class DetectionJob:
    """Everything one detection job needs, loaded and checked.

    Attributes:
        model: the classifier (B, T) -> (B, C), eval mode. classes: its class names.
        x, y, ids, rows: the scored test clips (n, T), labels (n,), ids and dataset rows (n,).
        x_train, y_train: the detector-training validation clips (m, T) and labels (m,).
        x_cal: the calibration validation clips (k, T).
        reference, reference_manifest: clean train clips (r, T) float32 and their manifest rows.
        sample_rate: Hz. info: what detection.json records of the job.
    """

    model: torch.nn.Module
    classes: list[str]
    x: torch.Tensor
    y: torch.Tensor
    ids: np.ndarray
    rows: np.ndarray
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_cal: torch.Tensor
    reference: np.ndarray
    reference_manifest: pd.DataFrame
    sample_rate: int
    info: dict[str, Any]


def plan_detection(
    dataset_dir: str | Path,
    checkpoint: str | Path,
    setting: DetectionConfig,
    *,
    eval_size: int,
    seed: int = 0,
    device: str = "auto",
) -> DetectionJob:
    """Load the classifier and the four sets of clips (module docstring): the test clips are the
    attack stage's (:func:`advmir.defenses.robust.plan_robust`), the validation and train clips
    seeded subsets (``seed + 1`` and ``seed + 2``, so they do not follow the test subset's order)."""
    from advmir.attacks.craft import read_rows
    from advmir.datasets.contract import load_dataset
    from advmir.defenses.robust import plan_robust

    job = plan_robust(dataset_dir, checkpoint, eval_size=eval_size, seed=seed, device=device)
    dataset = load_dataset(dataset_dir)
    valid = dataset.split_indices("valid")
    wanted = setting.train_size + setting.calibration_size
    if len(valid) < wanted:
        raise DetectionError(
            f"defenses.detection: train_size + calibration_size ({setting.train_size} + "
            f"{setting.calibration_size}) exceed the {len(valid)} validation clips of {dataset.root}; "
            "lower them"
        )
    order = np.random.default_rng(seed + 1).permutation(valid)
    train_rows = np.sort(order[: setting.train_size])
    cal_rows = np.sort(order[setting.train_size : wanted])
    train = dataset.split_indices("train")
    ref_rows = np.sort(np.random.default_rng(seed + 2).permutation(train)[: setting.reference_size])
    waveforms = dataset.root / "waveforms.npy"
    target = job.x.device
    labels = dataset.manifest["label_idx"].to_numpy()
    return DetectionJob(
        model=job.model,
        classes=list(dataset.classes),
        x=job.x,
        y=job.y,
        ids=job.ids,
        rows=job.rows,
        x_train=torch.from_numpy(read_rows(waveforms, train_rows)).to(target),
        y_train=torch.from_numpy(labels[train_rows].astype(np.int64)).to(target),
        x_cal=torch.from_numpy(read_rows(waveforms, cal_rows)).to(target),
        reference=read_rows(waveforms, ref_rows),
        reference_manifest=dataset.manifest.iloc[ref_rows].reset_index(drop=True),
        sample_rate=int(dataset.sample_rate),
        info={
            **job.info,
            "model": job.name,
            "n_train": len(train_rows),
            "n_calibration": len(cal_rows),
            "n_reference": len(ref_rows),
        },
    )


def _progress(attack: Any, total: int, desc: str, progress: bool) -> Any:
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="clip", file=sys.stderr, mininterval=30, disable=not progress)
    attack.on_clips_done = bar.update
    return bar


def craft(
    model: torch.nn.Module,
    attack: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    budget_db: float,
    batch_size: int,
    desc: str,
    progress: bool = True,
) -> tuple[torch.Tensor, np.ndarray]:
    """Run ``attack`` on clips x (n, T) with labels y (n,): the examples (n, T) and (n,) bool, whether
    each fools ``model`` within the budget (:func:`advmir.defenses.robust.fooled_within`)."""
    from advmir.defenses.robust import fooled_within

    if x.shape[0] == 0:
        return x.clone(), np.zeros(0, dtype=bool)
    bar = _progress(attack, x.shape[0], desc, progress)
    try:
        x_adv = attack(x, y).x_adv
    finally:
        bar.close()
        attack.on_clips_done = None
    return x_adv, fooled_within(model, x, x_adv, y, budget_db, batch_size)


def weight_search(
    model: torch.nn.Module,
    detector: Detector,
    x: torch.Tensor,
    y: torch.Tensor,
    attacked: np.ndarray,
    threshold: float,
    spread: float,
    spec: Mapping[str, Any],
    budget_db: float,
    weights: Sequence[float],
    *,
    seed: int,
    batch_size: int,
    desc: str = "adaptive",
    progress: bool = True,
) -> tuple[torch.Tensor, np.ndarray, list[int], list[int]]:
    """The adaptive attacker's search over the weight c of the detector's hinge (Carlini and Wagner
    search c per clip), on the clips x (n, T) with labels y (n,) where ``attacked`` (n,) bool.

    The weights are tried from the smallest up. A clip is attacked at the next weight only while its
    best example so far fools the classifier but is flagged (score above ``threshold``): a larger c
    weighs the detector's hinge more, which is what such a clip needs. A clip the attack did not fool
    at a smaller c is not tried again: a larger c only holds the attack back further from the
    classifier's boundary (CW lower c after that failure, and the search starts at the lowest). Each
    clip keeps its best example across the weights tried: one that fools the classifier and is not
    flagged, else one that fools it, else the first attempt.

    Returns:
        x_adv (n, T): each clip's kept example (x where not ``attacked``); fooled (n,) bool: it fools
        ``model`` within the budget (False where not ``attacked``); per weight (ascending), the clips
        tried and how many of them were newly evading (fooled, not flagged).
    """
    n = x.shape[0]
    x_adv = x.clone()
    fooled = np.zeros(n, dtype=bool)
    rank = np.full(n, -1)  # per clip, its best so far: 2 evading, 1 fooled but flagged, 0 neither
    tried, evading = [], []
    for c in sorted(float(w) for w in weights):
        todo = np.flatnonzero(attacked & ((rank == -1) | (rank == 1)))
        tried.append(int(todo.size))
        if not todo.size:
            evading.append(0)
            continue
        attack = adaptive_attack(
            spec, budget_db, seed, batch_size, Guarded(model, detector, threshold, spread, c)
        )
        sub = torch.from_numpy(todo).to(x.device)
        x_try, fooled_try = craft(
            model, attack, x[sub], y[sub], budget_db, batch_size, f"{desc} c={c:g}", progress
        )
        flagged = score_clips(detector, x_try, batch_size) > threshold
        new_rank = np.where(fooled_try & ~flagged, 2, fooled_try.astype(int))
        better = new_rank > rank[todo]
        keep = torch.from_numpy(np.flatnonzero(better)).to(x.device)
        x_adv[sub[keep]] = x_try[keep]
        fooled[todo[better]] = fooled_try[better]
        rank[todo[better]] = new_rank[better]
        evading.append(int((new_rank == 2).sum()))
    return x_adv, fooled, tried, evading


def _roc_auc(neg: np.ndarray, pos: np.ndarray) -> float:
    from advmir.anomaly.metrics import roc_auc

    labels = np.r_[np.zeros(len(neg), dtype=bool), np.ones(len(pos), dtype=bool)]
    return roc_auc(labels, np.r_[neg, pos])


def _roc_points(neg: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.metrics import roc_curve

    if not len(neg) or not len(pos):
        return np.zeros(0), np.zeros(0)
    labels = np.r_[np.zeros(len(neg), dtype=bool), np.ones(len(pos), dtype=bool)]
    fpr, tpr, _ = roc_curve(labels, np.r_[neg, pos])
    return fpr, tpr


@dataclass
class DetectionResult:
    """What :func:`evaluate_detection` returns: the summary rows (:data:`SUMMARY_COLUMNS`), the ROC
    points (:data:`ROC_COLUMNS`), the per-clip scores (:data:`CLIP_COLUMNS`), the fitted detectors,
    their thresholds and spreads, and what detection.json records (counts, seconds)."""

    rows: pd.DataFrame
    roc: pd.DataFrame
    clips: pd.DataFrame
    detectors: dict[str, Detector]
    thresholds: dict[str, float]
    spreads: dict[str, float]
    meta: dict[str, Any]


def evaluate_detection(
    job: DetectionJob,
    setting: DetectionConfig,
    *,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = True,
) -> DetectionResult:
    """Fit, calibrate and score every detector of ``setting`` for ``job``'s classifier, before and
    after the adaptive attacker (see the module docstring)."""
    from advmir.attacks import build_attack
    from advmir.defenses.robust import build_member, predict_labels

    model, n = job.model, job.x.shape[0]
    seconds: dict[str, float] = {}
    budgets = sorted(set(setting.budgets_db), reverse=True)
    label = job.y.cpu().numpy()
    clean_correct = predict_labels(model, job.x, batch_size) == label
    train_correct = predict_labels(model, job.x_train, batch_size) == job.y_train.cpu().numpy()

    # 1. the detector-training examples: every attack at every budget on the validation clips
    start = time.perf_counter()
    pooled, counts = [], {}
    for name, spec in setting.attacks.items():
        for budget in budgets:
            attack = build_member(spec, budget, seed, batch_size, model)
            x_adv, fooled = craft(
                model,
                attack,
                job.x_train,
                job.y_train,
                budget,
                batch_size,
                f"train {name} {budget:g} dB",
                progress,
            )
            ok = fooled & train_correct
            pooled.append(x_adv[torch.from_numpy(ok).to(x_adv.device)])
            counts[f"{name}@{budget:g}"] = int(ok.sum())
    x_train_adv = torch.cat(pooled) if pooled else job.x_train[:0]
    seconds["craft_train"] = time.perf_counter() - start
    log.info("detector-training examples: %s successful of %d clips each", counts, len(job.x_train))
    trained = {"stack", "logmel_net"} & set(setting.detectors)
    if trained and len(x_train_adv) < 2:
        raise DetectionError(
            f"defenses.detection: {sorted(trained)} learn from successful adversarial examples, but the "
            f"attacks fooled the classifier on {len(x_train_adv)} of the {len(job.x_train)} training clips "
            "(raise train_size or the budget, or leave them out)"
        )

    # 2. fit, 3. calibrate
    start = time.perf_counter()
    detectors = fit_detectors(
        setting, model, job.classes, job.sample_rate,
        reference=(job.reference, job.reference_manifest), x_train_clean=job.x_train,
        x_train_adv=x_train_adv, seed=seed, batch_size=batch_size, progress=progress,
    )  # fmt: skip
    seconds["fit"] = time.perf_counter() - start
    calibration = {d: score_clips(det, job.x_cal, batch_size) for d, det in detectors.items()}
    thresholds = {d: threshold_at(s, setting.fpr) for d, s in calibration.items()}
    spreads = {d: robust_spread(s) for d, s in calibration.items()}
    clean = {d: score_clips(det, job.x, batch_size) for d, det in detectors.items()}

    rows: list[dict[str, Any]] = []
    roc: list[pd.DataFrame] = []
    clips: list[pd.DataFrame] = [
        _clip_frame(job, d, "clean", "", float("nan"), clean[d], np.zeros(n, bool), thresholds[d])
        for d in detectors
    ]
    common = {"dataset": job.info["dataset"], "model": job.info["model"], "fpr_target": setting.fpr}

    def score_set(
        detector: str, phase: str, attack: str, algorithm: str, budget: float, x_set: torch.Tensor,
        attacked: np.ndarray, fooled: np.ndarray, positive: np.ndarray, **extra: Any,
    ) -> dict[str, Any]:  # fmt: skip
        """One row, its ROC points and per-clip scores for the examples x_set (n, T)."""
        scores = score_clips(detectors[detector], x_set, batch_size)
        pos, neg, thr = scores[positive], clean[detector], thresholds[detector]
        auc = _roc_auc(neg, pos)
        flagged = scores > thr
        fpr, tpr = _roc_points(neg, pos)
        roc.append(
            pd.DataFrame(
                {**common, "detector": detector, "phase": phase, "attack": attack, "budget_db": budget,
                 "fpr": fpr, "tpr": tpr}
            )[ROC_COLUMNS]
        )  # fmt: skip
        clips.append(_clip_frame(job, detector, phase, attack, budget, scores, fooled, thr, keep=attacked))
        row = {
            **common,
            "detector": detector,
            "differentiable": is_differentiable(detector),
            "phase": phase,
            "attack": attack,
            "algorithm": algorithm,
            "budget_db": budget,
            "n_clean": len(neg),
            "n_attacked": int(attacked.sum()),
            "n_examples": int(positive.sum()),
            "success": float(fooled[attacked].mean()) if attacked.any() else float("nan"),
            "roc_auc": auc,
            "auc_se": auc_standard_error(auc, len(pos), len(neg)),
            "threshold": thr,
            "fpr": float((neg > thr).mean()) if len(neg) else float("nan"),
            "tpr": float(flagged[positive].mean()) if positive.any() else float("nan"),
            "evasion": float((fooled & ~flagged)[attacked].mean()) if attacked.any() else float("nan"),
            **extra,
        }
        rows.append(row)
        # counts for the log, not columns (n_examples * tpr and n_attacked * evasion)
        return {
            **row,
            "n_flagged": int(flagged[positive].sum()),
            "n_evading": int((fooled & ~flagged)[attacked].sum()),
        }

    # 4. the non-adaptive attacks and the noise control on the scored clips
    start = time.perf_counter()
    before: dict[tuple[str, float], dict[str, Any]] = {}
    first = next(iter(setting.attacks))
    for name, spec in setting.attacks.items():
        for budget in budgets:
            attack = build_member(spec, budget, seed, batch_size, model)
            x_adv, fooled = craft(
                model, attack, job.x, job.y, budget, batch_size, f"{name} {budget:g} dB", progress
            )
            fooled &= clean_correct
            for d in detectors:
                row = score_set(
                    d, "non_adaptive", name, spec["name"], budget, x_adv, clean_correct, fooled, fooled
                )
                if name == first:
                    before[(d, budget)] = row
            log.info(
                "%s at %g dB: %d of %d clean-correct clips fooled; ROC-AUC %s",
                name, budget, int(fooled.sum()), int(clean_correct.sum()),
                {d: round(r["roc_auc"], 3) for d, r in zip(detectors, rows[-len(detectors):], strict=True)},
            )  # fmt: skip
    for budget in budgets:
        noise = build_attack("noise", {"snr_db": budget, "seed": seed, "batch_size": batch_size}, model)
        x_noise, fooled = craft(
            model, noise, job.x, job.y, budget, batch_size, f"noise {budget:g} dB", progress
        )
        everyone = np.ones(n, dtype=bool)
        for d in detectors:
            score_set(
                d,
                "control",
                "noise",
                "noise",
                budget,
                x_noise,
                clean_correct,
                fooled & clean_correct,
                everyone,
            )
    seconds["non_adaptive"] = time.perf_counter() - start

    # 5. the adaptive attacker, per detector and budget, on the clean-correct clips
    start = time.perf_counter()
    search: dict[str, dict[str, dict[str, list[int]]]] = {}
    for d in setting.adaptive_detectors:
        spec = setting.adaptive["gradient"] if is_differentiable(d) else setting.adaptive["query"]
        if spec is None:
            continue
        for budget in budgets:
            x_adv, fooled, tried, evading = weight_search(
                model, detectors[d], job.x, job.y, clean_correct, thresholds[d], spreads[d], spec, budget,
                setting.adaptive["weights"], seed=seed, batch_size=batch_size,
                desc=f"adaptive {d} {budget:g} dB", progress=progress,
            )  # fmt: skip
            search.setdefault(d, {})[f"{budget:g}"] = {"tried": tried, "newly_evading": evading}
            ref = before[(d, budget)]
            row = score_set(
                d, "adaptive", "adaptive", spec["name"], budget, x_adv, clean_correct, fooled, fooled,
                before_attack=first, auc_before=ref["roc_auc"], tpr_before=ref["tpr"],
                evasion_before=ref["evasion"],
            )  # fmt: skip
            log.info(
                "adaptive %s on %s at %g dB: %d of %d clean-correct clips fooled, %d of them flagged at "
                "the %g-FPR threshold (detection rate %.3f, %.3f before), %d evading; ROC-AUC %.3f -> "
                "%.3f, evasion %.3f -> %.3f (weights %s: clips tried %s, newly evading %s)",
                spec["name"], d, budget, row["n_examples"], row["n_attacked"], row["n_flagged"], setting.fpr,
                row["tpr"], ref["tpr"], row["n_evading"], ref["roc_auc"], row["roc_auc"],
                ref["evasion"], row["evasion"], sorted(setting.adaptive["weights"]), tried, evading,
            )  # fmt: skip
    seconds["adaptive"] = time.perf_counter() - start

    table = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    table[ROUNDED_COLUMNS] = table[ROUNDED_COLUMNS].astype(float).round(4)
    table["threshold"] = table["threshold"].astype(float).round(6)
    meta = {
        **job.info,
        "n_eval": n,
        "n_clean_correct": int(clean_correct.sum()),
        "n_train_clean_correct": int(train_correct.sum()),
        "n_train_adversarial": len(x_train_adv),
        "train_examples": counts,
        "thresholds": thresholds,
        "spreads": spreads,
        "adaptive_weight_search": search,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    return DetectionResult(
        table,
        pd.concat(roc, ignore_index=True) if roc else pd.DataFrame(columns=ROC_COLUMNS),
        pd.concat(clips, ignore_index=True),
        detectors,
        thresholds,
        spreads,
        meta,
    )


def _clip_frame(
    job: DetectionJob,
    detector: str,
    phase: str,
    attack: str,
    budget: float,
    scores: np.ndarray,
    fooled: np.ndarray,
    threshold: float,
    keep: np.ndarray | None = None,
) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "id": job.ids,
            "row": job.rows,
            "detector": detector,
            "phase": phase,
            "attack": attack,
            "budget_db": budget,
            "score": scores,
            "fooled": fooled,
            "flagged": scores > threshold,
        }
    )[CLIP_COLUMNS]
    return frame if keep is None else frame[keep]


def write_detection(
    job: DetectionJob,
    folder: Path,
    setting: DetectionConfig,
    *,
    seed: int,
    batch_size: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Run :func:`evaluate_detection` and write into the new ``folder``: summary.csv, roc.csv,
    clips.csv, detection.json, and the trained detectors (logmel_net.ckpt, a zoo checkpoint with
    classes clean / adversarial; stack/, the anomaly stage's ensemble format). Returns the json."""
    from advmir.anomaly.ensemble import save_stack
    from advmir.defenses.detection import DETECTOR_CLASSES, NetDetector, StackDetector
    from advmir.models.zoo import save_checkpoint

    start = time.perf_counter()
    result = evaluate_detection(job, setting, seed=seed, batch_size=batch_size, progress=progress)
    meta = {
        **result.meta,
        "setting": setting.entry(),
        "seconds_total": round(time.perf_counter() - start, 1),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    folder.mkdir()
    result.rows.to_csv(folder / "summary.csv", index=False)
    result.roc.to_csv(folder / "roc.csv", index=False)
    result.clips.to_csv(folder / "clips.csv", index=False)
    for name, detector in result.detectors.items():
        if isinstance(detector, NetDetector):
            save_checkpoint(
                folder / f"{name}.ckpt", detector.net.cpu(), DETECTOR_CLASSES, top_db=setting.net["top_db"]
            )
        elif isinstance(detector, StackDetector):
            save_stack(folder / name, detector.stack, members=list(detector.members))
    (folder / "detection.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def detection_tables(runs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """results/tables/detection.csv and detection_roc.csv: every run's summary rows and ROC points,
    in a fixed order (two runs of one config write them byte for byte alike)."""
    from advmir.artifacts import read_csv

    runs = list(dict.fromkeys(runs))
    summaries = [read_csv(run / "summary.csv", columns=SUMMARY_COLUMNS) for run in runs]
    rocs = [read_csv(run / "roc.csv", columns=ROC_COLUMNS) for run in runs]
    table = pd.concat(summaries, ignore_index=True) if summaries else pd.DataFrame(columns=SUMMARY_COLUMNS)
    roc = pd.concat(rocs, ignore_index=True) if rocs else pd.DataFrame(columns=ROC_COLUMNS)
    order = {p: k for k, p in enumerate(PHASES)}
    table = table.assign(_phase=table["phase"].map(order)).sort_values(
        ["dataset", "model", "budget_db", "_phase", "attack", "detector"],
        ascending=[True, True, False, True, True, True],
        kind="stable",
    )
    return table.drop(columns="_phase")[SUMMARY_COLUMNS].reset_index(drop=True), roc[ROC_COLUMNS]


def parse_setting(text: str, models: Any = None, sample_rate: int = 16000) -> DetectionConfig:
    """``--setting`` JSON of evaluate-detection, checked as the workflow checks the config."""
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DetectionError(f"--setting is not valid JSON ({exc}): {text!r}") from None
    if isinstance(values, dict):
        values = {"enabled": True, "models": ["-"], **values}
    try:
        return DetectionConfig.from_dict(values, models, (sample_rate,))
    except DefenseConfigError as exc:
        raise DetectionError(str(exc)) from None
