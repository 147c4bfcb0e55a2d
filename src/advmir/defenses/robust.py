"""Robust accuracy of one model under an AutoAttack-style ensemble, at a sweep of SNR budgets.

Why an ensemble: a defense that only masks gradients (a saturated softmax, a shattered gradient)
holds against the attack it was tuned on and falls to another. Croce and Hein 2020, 'Reliable
evaluation of adversarial robustness with an ensemble of diverse parameter-free attacks'
[https://arxiv.org/abs/2003.01690], count a clip as robust only if every attack of a diverse
ensemble fails on it: APGD-CE, APGD-T (targeted DLR, shift- and scale-invariant), the minimum-norm
FAB-T (``fab_t``; CW may stand in) and the query-only Square attack, which needs no gradient.

What :func:`evaluate_ensemble` does, for clips x (n, T) of the attack stage's seeded evaluation
subset (:func:`advmir.datasets.contract.evaluation_rows`, the same clips as every attack run):

- a clip the model gets wrong clean is not robust at any budget;
- budgets go from the quietest (highest SNR) to the loudest: the L-inf box (or L2 ball) at a lower
  SNR contains the one at a higher SNR, so an example found at 40 dB is one at 30 dB too, and a clip
  not robust at 40 dB is not robust at 30 dB. Robust accuracy can only fall as the budget grows;
- at each budget the attacks run in the ensemble's order, each on the clips still robust (the first
  attack on every clean-correct clip, so its own success at each budget is known: the sanity checks
  of :mod:`advmir.defenses.sanity` compare with it). A clip is fooled when the model's prediction on
  the example is not its label and the example is within the budget (SNR >= budget, to the attack
  stage's float tolerance): the rule of :func:`advmir.attacks.scoring.fooled`, on the model itself.

Each (budget, attack) row holds the robust accuracy after that attack (cumulative: every attack
up to it at this budget and every attack at the quieter budgets), the clips attacked and fooled,
the attack's steps and restarts, and its seconds (wall time: in the model's robustness.csv only,
never in the summary table, which two runs must write byte for byte alike).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from advmir.errors import InputError

log = logging.getLogger("advmir.defenses")

#: budget keys the ensemble's params may not hold: the budget comes from budgets_db
BUDGET_KEYS = ("eps", "snr_db", "envelope")
ROBUST_COLUMNS = [
    "model", "budget_db", "order", "attack", "algorithm", "steps", "restarts", "queries_max",
    "n", "n_clean_correct", "n_attacked", "n_fooled", "clean_accuracy", "robust_accuracy", "seconds",
]  # fmt: skip
CLIP_COLUMNS = ["id", "row", "label", "clean_pred", "budget_db", "attack", "attacked", "fooled", "robust"]


class RobustEvaluationError(InputError, ValueError):
    """An ensemble or budget setting that cannot be run; the message names it and what is allowed."""


def parse_ensemble(text: str) -> dict[str, dict[str, Any]]:
    """``--ensemble`` JSON: ``{name: {"name": algorithm, "params": {...}}, ...}``, in order."""
    try:
        ensemble = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RobustEvaluationError(f"--ensemble is not valid JSON ({exc}): {text!r}") from None
    if not isinstance(ensemble, dict) or not ensemble:
        raise RobustEvaluationError(
            f"--ensemble must be a non-empty JSON object name -> attack, got {text!r}"
        )
    problems = ensemble_problems(ensemble)
    if problems:
        raise RobustEvaluationError("; ".join(problems))
    return {
        name: {"name": spec["name"], "params": dict(spec.get("params") or {})}
        for name, spec in ensemble.items()
    }


def ensemble_problems(ensemble: Mapping[str, Any], where: str = "ensemble") -> list[str]:
    """Every problem of an ensemble: a missing algorithm, a budget in params, a parameter the
    attack refuses (each member is built, without a model, at an SNR budget)."""
    from advmir.attacks import build_attack

    problems = []
    for name, spec in ensemble.items():
        if not isinstance(spec, Mapping) or "name" not in spec:
            problems.append(f"{where}.{name}: must be a mapping with a 'name' (an attack algorithm)")
            continue
        params = dict(spec.get("params") or {})
        given = [k for k in BUDGET_KEYS if k in params]
        if given:
            problems.append(f"{where}.{name}.params: remove {given}: the budget comes from budgets_db")
            continue
        if params.get("targeted"):
            problems.append(
                f"{where}.{name}.params: 'targeted' is not allowed; robust accuracy is untargeted"
            )
            continue
        try:
            build_attack(spec["name"], {**params, "snr_db": 30.0})
        except (InputError, ValueError, TypeError) as exc:
            problems.append(f"{where}.{name}: {exc}")
    return problems


def build_member(
    spec: Mapping[str, Any], budget_db: float, seed: int, batch_size: int | None, model: Any
) -> Any:
    """One ensemble attack at the SNR budget ``budget_db`` on ``model`` (seed and batch size unless its
    params set them)."""
    from advmir.attacks import build_attack

    params = {**dict(spec.get("params") or {}), "snr_db": float(budget_db)}
    params.setdefault("seed", int(seed))
    if batch_size:
        params.setdefault("batch_size", int(batch_size))
    return build_attack(spec["name"], params, model)


@torch.no_grad()
def predict_labels(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> np.ndarray:
    """Predicted class (n,) of ``model`` on clips x (n, T)."""
    from advmir.attacks.scoring import predict

    if x.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    return predict(model, x, batch_size)[0]


def fooled_within(
    model: torch.nn.Module,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    budget_db: float,
    batch_size: int,
) -> np.ndarray:
    """(n,) bool: ``model`` misclassifies x_adv (n, T) (untargeted: prediction != label y (n,)) and the
    perturbation is within the budget (SNR >= budget_db, to the attack stage's tolerance)."""
    from advmir.attacks.budgets import snr_db
    from advmir.attacks.scoring import SNR_TOLERANCE_DB, fooled

    if x.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    pred = predict_labels(model, x_adv, batch_size)
    label = y.cpu().numpy()
    within = snr_db(x.cpu(), x_adv.cpu()).numpy() >= budget_db - SNR_TOLERANCE_DB
    return fooled(pred, label, np.full_like(label, -1)) & within


def attack_success(
    model: torch.nn.Module,
    attack: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    budget_db: float,
    batch_size: int,
    crafting_model: torch.nn.Module | None = None,
) -> np.ndarray:
    """(n,) bool: ``attack`` (crafted on ``crafting_model``, default ``model``) fools ``model`` on
    clips x (n, T) with labels y (n,) within ``budget_db``."""
    if x.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    attack.model = crafting_model if crafting_model is not None else model
    result = attack(x, y)
    return fooled_within(model, x, result.x_adv, y, budget_db, batch_size)


def _counts(attack: Any) -> dict[str, Any]:
    """The effort of an attack as the tables report it: steps, restarts, query budget (or None)."""
    steps = getattr(attack, "steps", None)
    restarts = getattr(attack, "n_restarts", None)
    if attack.name in ("apgd_t", "fab_t"):  # one run per target class, n_restarts each
        restarts = int(attack.n_restarts) * int(attack.n_target_classes)
    return {"steps": steps, "restarts": restarts, "queries_max": getattr(attack, "n_queries", None)}


@dataclass
class EnsembleResult:
    """What :func:`evaluate_ensemble` returns.

    Attributes:
        rows: one row per (budget, attack), :data:`ROBUST_COLUMNS`.
        clips: one row per (clip, budget, attack), :data:`CLIP_COLUMNS`.
        clean_correct: (n,) bool, the model is right on the clean clip.
        first_success: budget -> the first attack's own success (share of clean-correct clips it
            fooled, run on all of them).
        robust: budget -> (n,) bool, robust after the whole ensemble at that budget.
    """

    rows: pd.DataFrame
    clips: pd.DataFrame
    clean_correct: np.ndarray
    first_success: dict[float, float] = field(default_factory=dict)
    robust: dict[float, np.ndarray] = field(default_factory=dict)


def evaluate_ensemble(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    ensemble: Mapping[str, Mapping[str, Any]],
    budgets_db: list[float],
    *,
    seed: int = 0,
    batch_size: int = 64,
    model_name: str = "model",
    ids: np.ndarray | None = None,
    rows: np.ndarray | None = None,
) -> EnsembleResult:
    """Robust accuracy of ``model`` on clips x (n, T) with labels y (n,) under ``ensemble`` (name ->
    {name, params}, in order) at each SNR budget of ``budgets_db`` (see the module docstring)."""
    n = x.shape[0]
    ids = np.asarray(ids if ids is not None else np.arange(n)).astype(str)
    rows = np.asarray(rows if rows is not None else np.arange(n))
    clean_pred = predict_labels(model, x, batch_size)
    label = y.cpu().numpy()
    clean_correct = clean_pred == label
    robust = clean_correct.copy()
    out, clips = [], []
    result = EnsembleResult(pd.DataFrame(), pd.DataFrame(), clean_correct)
    for budget in sorted({float(b) for b in budgets_db}, reverse=True):
        for order, (name, spec) in enumerate(ensemble.items()):
            attack = build_member(spec, budget, seed, batch_size, model)
            todo = clean_correct.copy() if order == 0 else robust.copy()
            idx = np.flatnonzero(todo)
            start = time.perf_counter()
            fooled_idx = attack_success(model, attack, x[idx], y[idx], budget, batch_size)
            seconds = time.perf_counter() - start
            fooled = np.zeros(n, dtype=bool)
            fooled[idx] = fooled_idx
            if order == 0:
                result.first_success[budget] = float(fooled.sum() / max(clean_correct.sum(), 1))
            robust &= ~fooled
            out.append(
                {
                    "model": model_name,
                    "budget_db": budget,
                    "order": order,
                    "attack": name,
                    "algorithm": spec["name"],
                    **_counts(attack),
                    "n": n,
                    "n_clean_correct": int(clean_correct.sum()),
                    "n_attacked": len(idx),
                    "n_fooled": int(fooled.sum()),
                    "clean_accuracy": float(clean_correct.mean()) if n else float("nan"),
                    "robust_accuracy": float(robust.mean()) if n else float("nan"),
                    "seconds": round(seconds, 3),
                }
            )
            clips.append(
                pd.DataFrame(
                    {
                        "id": ids,
                        "row": rows,
                        "label": label,
                        "clean_pred": clean_pred,
                        "budget_db": budget,
                        "attack": name,
                        "attacked": todo,
                        "fooled": fooled,
                        "robust": robust.copy(),
                    }
                )
            )
            log.info(
                "%s at %g dB: %s fooled %d of %d clips attacked; robust accuracy %.3f (%.1f s)",
                model_name,
                budget,
                name,
                int(fooled.sum()),
                len(idx),
                robust.mean() if n else 0.0,
                seconds,
            )
        result.robust[budget] = robust.copy()
    result.rows = pd.DataFrame(out, columns=ROBUST_COLUMNS)
    result.clips = pd.concat(clips, ignore_index=True) if clips else pd.DataFrame(columns=CLIP_COLUMNS)
    return result


# ------------------------------------------------------------------------------------------ a job
@dataclass
class RobustJob:
    """Everything one evaluation needs, checked: the model (and its undefended twin, for a defended
    model), the evaluation clips x (n, T) and labels y (n,) of the dataset's test split."""

    model: torch.nn.Module
    twin: torch.nn.Module | None
    x: torch.Tensor
    y: torch.Tensor
    ids: np.ndarray
    rows: np.ndarray
    name: str
    info: dict[str, Any]


def plan_robust(
    dataset_dir: str | Path,
    checkpoint: str | Path,
    *,
    eval_size: int,
    seed: int = 0,
    device: str = "auto",
    twin_checkpoint: str | Path | None = None,
    info: dict[str, Any] | None = None,
) -> RobustJob:
    """Load the dataset's evaluation subset (the attack stage's: same size, same seed, same clips)
    and the model(s); refuse a model trained on other classes."""
    from advmir.attacks.craft import read_rows
    from advmir.datasets.contract import evaluation_rows, load_dataset
    from advmir.models.zoo import load_model
    from advmir.runtime import resolve_device

    if eval_size < 1:
        raise RobustEvaluationError(f"--eval-size must be >= 1, got {eval_size}")
    dataset = load_dataset(dataset_dir)
    rows = evaluation_rows(dataset.split_indices("test"), eval_size, seed)
    target = resolve_device(device)
    model = load_model(checkpoint, target)
    twin = load_model(twin_checkpoint, target) if twin_checkpoint else None
    for which, loaded in (("model", model), ("twin", twin)):
        classes = getattr(loaded, "classes", None) if loaded is not None else None
        if classes is not None and list(classes) != list(dataset.classes):
            raise RobustEvaluationError(
                f"the {which} was trained on classes {list(classes)} but {dataset_dir} has {dataset.classes}"
            )
    x = torch.from_numpy(read_rows(dataset.root / "waveforms.npy", rows)).to(target)
    y = torch.from_numpy(dataset.manifest["label_idx"].to_numpy()[rows].astype(np.int64)).to(target)
    ids = dataset.manifest["id"].astype(str).to_numpy()[rows]
    meta = {
        "dataset": dataset.root.name,
        "eval_size": eval_size,
        "n_eval": len(rows),
        "seed": seed,
        **(info or {}),
    }
    return RobustJob(model, twin, x, y, ids, rows, Path(checkpoint).parent.name, meta)


def write_robust(
    job: RobustJob,
    folder: Path,
    ensemble: Mapping[str, Mapping[str, Any]],
    budgets_db: list[float],
    sanity: Mapping[str, Any] | None,
    *,
    seed: int,
    batch_size: int,
) -> dict[str, Any]:
    """Run the ensemble (and the sanity checks unless ``sanity`` is None or disabled) and write
    robustness.csv, clips.csv, sanity.csv and robustness.json into the new ``folder``. Returns the
    json's content."""
    from advmir.defenses.sanity import SANITY_COLUMNS, run_sanity_checks

    start = time.perf_counter()
    result = evaluate_ensemble(
        job.model,
        job.x,
        job.y,
        ensemble,
        budgets_db,
        seed=seed,
        batch_size=batch_size,
        model_name=job.name,
        ids=job.ids,
        rows=job.rows,
    )
    if sanity and sanity.get("enabled", True):
        checks = run_sanity_checks(
            job.model,
            job.x,
            job.y,
            result,
            ensemble,
            sanity,
            seed=seed,
            batch_size=batch_size,
            twin=job.twin,
            model_name=job.name,
        )
    else:
        checks = pd.DataFrame(columns=SANITY_COLUMNS)
    folder.mkdir()
    result.rows.to_csv(folder / "robustness.csv", index=False)
    result.clips.to_csv(folder / "clips.csv", index=False)
    checks.to_csv(folder / "sanity.csv", index=False)
    meta = {
        **job.info,
        "model": job.name,
        "ensemble": {k: dict(v) for k, v in ensemble.items()},
        "budgets_db": sorted({float(b) for b in budgets_db}, reverse=True),
        "sanity": dict(sanity or {}),
        "n_clean_correct": int(result.clean_correct.sum()),
        "clean_accuracy": float(result.clean_correct.mean()) if len(result.clean_correct) else None,
        "robust_accuracy": {str(b): float(r.mean()) for b, r in result.robust.items()},
        "sanity_passed": bool(checks["passed"].all()) if len(checks) else None,
        "seconds": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
    }
    (folder / "robustness.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
