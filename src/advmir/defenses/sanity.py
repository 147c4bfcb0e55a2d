"""The gradient-masking sanity checks of one model, each a pass/fail row of defense_sanity.csv.

A robust accuracy is believable only if the attacks behind it behaved as attacks do against a model
that does not hide its gradients (Athalye, Carlini and Wagner 2018, 'Obfuscated Gradients Give a
False Sense of Security' [https://arxiv.org/abs/1802.00420]; Carlini et al. 2019, 'On Evaluating
Adversarial Robustness' [https://arxiv.org/abs/1902.06705]). Success is always the share of the
model's clean-correct clips of the evaluation subset fooled within the budget
(:func:`advmir.defenses.robust.fooled_within`); "white-box" is the ensemble's first attack
(APGD-CE by default), run on every clean-correct clip at every budget by the ensemble evaluation.

Checks (``check`` column; ``value`` is the check's attack, ``reference`` what it is compared with):

- ``iterative_beats_single_step`` (each budget): white-box success >= FGSM's (one step of the full
  box). An iterative attack that does worse than one step is stuck on a masked gradient.
- ``unbounded_succeeds`` (``unbounded_db``, 0 dB by default: perturbations as loud as the clip):
  white-box success >= ``min_success`` (0.98). A model that resists there is not robust, its
  gradients are useless.
- ``more_steps_stable`` (``budget_db``): white-box with ``steps_factor`` times the steps and restarts
  changes success by at most ``tolerance`` (2 points). A number that still moves was not converged.
- ``query_only_not_better`` (``budget_db``): Square (gradient-free; the ensemble's member when it
  has one) does not beat white-box by more than ``tolerance``.
- ``transfer_not_better`` (``budget_db``, defended models only): PGD crafted on the undefended twin
  and scored on the defended model does not beat white-box on the defended model by more than
  ``tolerance``.

``budget_db`` null: the sweep's budget where white-box success is nearest 50% (where a change of a
few points can show; at 0% or 100% these checks could not fail).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from advmir.defenses.robust import EnsembleResult, attack_success, build_member

log = logging.getLogger("advmir.defenses")

SANITY_COLUMNS = [
    "model", "check", "budget_db", "attack", "value", "reference_attack", "reference", "difference",
    "rule", "threshold", "passed", "n",
]  # fmt: skip
CHECKS = (
    "iterative_beats_single_step",
    "unbounded_succeeds",
    "more_steps_stable",
    "query_only_not_better",
    "transfer_not_better",
)
QUERY_ONLY = ("square",)


def reference_budget(first_success: Mapping[float, float], given: float | None) -> float:
    """The budget of the steps, query-only and transfer checks: ``given``, else the budget whose
    white-box success is nearest 0.5 (the quieter one on a tie)."""
    if given is not None:
        return float(given)
    return min(sorted(first_success, reverse=True), key=lambda b: abs(first_success[b] - 0.5))


def _row(
    model: str,
    check: str,
    budget: float,
    attack: str,
    value: float,
    ref_attack: str | None,
    reference: float | None,
    rule: str,
    threshold: float,
    n: int,
) -> dict[str, Any]:
    """One check, decided by ``rule``: ``>= ref`` (value >= reference - threshold), ``>= threshold``,
    ``|diff| <= threshold`` or ``diff <= threshold`` (diff = value - reference)."""
    diff = None if reference is None else value - reference
    eps = 1e-9
    if rule == ">= ref":
        passed = diff >= -threshold - eps
        text = "value >= reference" if threshold == 0 else f"value >= reference - {threshold:g}"
    elif rule == ">= threshold":
        passed, text = value >= threshold - eps, f"value >= {threshold:g}"
    elif rule == "|diff| <= threshold":
        passed, text = abs(diff) <= threshold + eps, f"|value - reference| <= {threshold:g}"
    else:
        passed, text = diff <= threshold + eps, f"value - reference <= {threshold:g}"
    return {
        "model": model,
        "check": check,
        "budget_db": budget,
        "attack": attack,
        "value": round(value, 6),
        "reference_attack": ref_attack,
        "reference": None if reference is None else round(reference, 6),
        "difference": None if diff is None else round(diff, 6),
        "rule": text,
        "threshold": threshold,
        "passed": bool(passed),
        "n": n,
    }


def run_sanity_checks(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    result: EnsembleResult,
    ensemble: Mapping[str, Mapping[str, Any]],
    settings: Mapping[str, Any],
    *,
    seed: int = 0,
    batch_size: int = 64,
    twin: torch.nn.Module | None = None,
    model_name: str = "model",
) -> pd.DataFrame:
    """The checks of the module docstring for ``model`` on clips x (n, T), labels y (n,), given its
    ensemble evaluation ``result``; ``twin``: the undefended twin of a defended model (else the
    transfer check is left out). ``settings``: the config's ``defenses.evaluation.sanity``."""
    tol = float(settings.get("tolerance", 0.02))
    factor = int(settings.get("steps_factor", 2))
    correct = np.flatnonzero(result.clean_correct)
    n = len(correct)
    xc, yc = x[correct], y[correct]
    first_name, first = next(iter(ensemble.items()))

    def success(
        spec: Mapping[str, Any], budget: float, crafting: torch.nn.Module | None = None, **extra: Any
    ) -> float:
        attack = build_member(
            {**spec, "params": {**dict(spec.get("params") or {}), **extra}}, budget, seed, batch_size, model
        )
        fooled = attack_success(model, attack, xc, yc, budget, batch_size, crafting_model=crafting)
        return float(fooled.mean()) if n else 0.0

    rows = []
    for budget, white in sorted(result.first_success.items(), reverse=True):
        fgsm = success({"name": "fgsm"}, budget)
        rows.append(
            _row(
                model_name,
                "iterative_beats_single_step",
                budget,
                first_name,
                white,
                "fgsm",
                fgsm,
                ">= ref",
                0.0,
                n,
            )
        )
    loud = float(settings.get("unbounded_db", 0.0))
    white_loud = success(first, loud)
    rows.append(
        _row(
            model_name,
            "unbounded_succeeds",
            loud,
            first_name,
            white_loud,
            None,
            None,
            ">= threshold",
            float(settings.get("min_success", 0.98)),
            n,
        )
    )

    budget = reference_budget(result.first_success, settings.get("budget_db"))
    white = result.first_success.get(budget)
    if white is None:
        white = success(first, budget)
    probe = build_member(first, budget, seed, batch_size, None)
    more = {k: getattr(probe, k) * factor for k in ("steps", "n_restarts", "n_queries") if hasattr(probe, k)}
    doubled = success(first, budget, **more)
    label = f"{first_name} x{factor} (" + ", ".join(f"{k} {v}" for k, v in more.items()) + ")"
    rows.append(
        _row(
            model_name,
            "more_steps_stable",
            budget,
            label,
            doubled,
            first_name,
            white,
            "|diff| <= threshold",
            tol,
            n,
        )
    )
    query_name, query = next(
        ((k, v) for k, v in ensemble.items() if v["name"] in QUERY_ONLY), ("square", {"name": "square"})
    )
    square = success(query, budget)
    rows.append(
        _row(
            model_name,
            "query_only_not_better",
            budget,
            query_name,
            square,
            first_name,
            white,
            "diff <= threshold",
            tol,
            n,
        )
    )
    if twin is not None:
        pgd = {
            "name": "pgd",
            "params": {"steps": int(settings.get("transfer_steps", 50)), "random_start": True},
        }
        transfer = success(pgd, budget, crafting=twin)
        rows.append(
            _row(
                model_name,
                "transfer_not_better",
                budget,
                "pgd from twin",
                transfer,
                first_name,
                white,
                "diff <= threshold",
                tol,
                n,
            )
        )
    table = pd.DataFrame(rows, columns=SANITY_COLUMNS)
    for r in table.itertuples():
        log.info(
            "sanity %s at %g dB: %s (%s) %s",
            r.check,
            r.budget_db,
            "PASS" if r.passed else "FAIL",
            r.rule,
            f"value {r.value:.3f}" + ("" if pd.isna(r.reference) else f", reference {r.reference:.3f}"),
        )
    return table
