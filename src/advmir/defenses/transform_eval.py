"""A transformation defense scored three ways, on the same seeded clips and SNR budgets.

For clips x (n, T) of the attack stage's seeded evaluation subset and each budget (quietest first,
cumulative as in :func:`advmir.defenses.robust.evaluate_ensemble`: a clip not robust at 40 dB is not
robust at 30 dB), with the attacks of ``attacks`` (name -> {name, params}, run in order, each on the
clips still robust, the first on every clean-correct clip so that its own success is known; the
attack stage's PGD / APGD built by :func:`advmir.defenses.robust.build_member`):

- ``undefended``: the attacks crafted on the undefended model (on every clip, in the same batches
  whatever the defense, so this reference is the same for every defense) and judged on it (its
  success is the reference of the adaptive attack);
- ``non_adaptive``: the same adversarial examples (crafted on the undefended model, the attacker
  ignores the defense), judged on the defended model;
- ``adaptive``: the attacks crafted on the defended model itself: through the straight-through
  backward of a codec or of rounding (BPDA), and for a random defense on :class:`EOTModel` (mean
  logits over ``eot_samples`` draws, EOT); restarts as the attack's params say (APGD's
  ``n_restarts``). Judged on the defended model.

Clean accuracy: the undefended model's and the defended model's on the clean clips (a clip the model
gets wrong clean is never robust). A random defense is judged on one seeded draw per evaluation
(reseeded to ``seed`` before each judgement, so two runs agree).

The verdict of a budget: ``robust`` only if the adaptive robust accuracy exceeds the undefended
model's (``adaptive_gain``) by at least ``margin`` and by more than two standard errors of that
difference (``gain_se``, two binomial proportions on n clips: with 100 clips a gain of a few points is
sampling noise); else ``broken``, and ``broken_by`` names the adaptive attack that fooled the most
clips there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from advmir.defenses.robust import _counts, build_member, fooled_within, predict_labels
from advmir.defenses.transforms import DefendedModel, EOTModel, TransformSetting

log = logging.getLogger("advmir.defenses")

SCORINGS = ("undefended", "non_adaptive", "adaptive")
ROW_COLUMNS = [
    "transform", "kind", "label", "model", "budget_db", "scoring", "order", "attack", "algorithm",
    "steps", "restarts", "eot_samples", "bpda", "n", "n_clean_correct", "n_attacked", "n_fooled",
    "clean_accuracy", "robust_accuracy", "success", "seconds",
]  # fmt: skip
SUMMARY_COLUMNS = [
    "dataset", "transform", "kind", "label", "model", "budget_db", "n", "clean_accuracy_undefended",
    "clean_accuracy_defended", "clean_cost", "robust_undefended", "robust_non_adaptive",
    "robust_adaptive", "success_undefended", "success_non_adaptive", "success_adaptive",
    "adaptive_vs_undefended", "adaptive_gain", "gain_se", "bpda", "eot_samples", "broken_by", "verdict",
]  # fmt: skip


def _judge(defended: DefendedModel, seed: int, *args: Any) -> np.ndarray:
    defended.reseed(seed)
    return fooled_within(defended, *args)


def evaluate_transform(
    model: torch.nn.Module,
    defended: DefendedModel,
    setting: TransformSetting,
    x: torch.Tensor,
    y: torch.Tensor,
    attacks: Mapping[str, Mapping[str, Any]],
    budgets_db: list[float],
    *,
    eot_samples: int = 20,
    seed: int = 0,
    batch_size: int = 64,
) -> pd.DataFrame:
    """Rows (:data:`ROW_COLUMNS`) of the three scorings of ``defended`` (``model`` behind
    ``setting``'s transformation) on clips x (n, T), labels y (n,), per budget and attack (see the
    module docstring). ``robust_accuracy`` and ``success`` are cumulative over the attacks so far."""
    n = x.shape[0]
    label = y.cpu().numpy()
    clean = {"undefended": predict_labels(model, x, batch_size) == label}
    defended.reseed(seed)
    clean["non_adaptive"] = clean["adaptive"] = predict_labels(defended, x, batch_size) == label
    robust = {s: clean[s].copy() for s in SCORINGS}
    eot = int(eot_samples) if setting.random else 1
    attacker = EOTModel(defended, eot) if setting.random else defended
    common = {"transform": setting.name, "kind": setting.kind, "label": setting.label(), "n": n}
    rows = []
    for budget in sorted({float(b) for b in budgets_db}, reverse=True):
        for order, (name, spec) in enumerate(attacks.items()):
            # the first attack on every clean-correct clip (its own success), the others on the clips
            # still robust; the examples of the undefended model on every clip, in the same batches
            # whatever the defense: the undefended reference is the same for every defense
            attacked = {s: (clean[s] if order == 0 else robust[s]).copy() for s in SCORINGS}
            start = time.perf_counter()
            fooled = {s: np.zeros(n, dtype=bool) for s in SCORINGS}
            attack = build_member(spec, budget, seed, batch_size, model)
            if n:
                x_adv = attack(x, y).x_adv
                fooled["undefended"] = fooled_within(model, x, x_adv, y, budget, batch_size)
                fooled["non_adaptive"] = _judge(defended, seed, x, x_adv, y, budget, batch_size)
            crafted = time.perf_counter() - start
            # adaptive: crafted on the defended model (BPDA through its backward, EOT if random)
            idx_a = np.flatnonzero(attacked["adaptive"])
            start = time.perf_counter()
            attack_a = build_member(spec, budget, seed, batch_size, attacker)
            if idx_a.size:
                defended.reseed(seed + 1 + order)  # the attacker's draws are not the judge's
                x_adv = attack_a(x[idx_a], y[idx_a]).x_adv
                fooled["adaptive"][idx_a] = _judge(
                    defended, seed, x[idx_a], x_adv, y[idx_a], budget, batch_size
                )
            seconds = {
                "undefended": crafted,
                "non_adaptive": crafted,
                "adaptive": time.perf_counter() - start,
            }
            for scoring in SCORINGS:
                hit = fooled[scoring] & attacked[scoring]
                robust[scoring] &= ~fooled[scoring]
                n_clean = int(clean[scoring].sum())
                adaptive = scoring == "adaptive"
                rows.append(
                    {
                        **common,
                        "model": setting.model,
                        "budget_db": budget,
                        "scoring": scoring,
                        "order": order,
                        "attack": name,
                        "algorithm": spec["name"],
                        **{
                            k: v
                            for k, v in _counts(attack_a if adaptive else attack).items()
                            if k != "queries_max"
                        },
                        "eot_samples": eot if adaptive else 1,
                        "bpda": bool(setting.bpda and adaptive),
                        "n_clean_correct": n_clean,
                        "n_attacked": int(attacked[scoring].sum()),
                        "n_fooled": int(hit.sum()),
                        "clean_accuracy": float(clean[scoring].mean()) if n else float("nan"),
                        "robust_accuracy": float(robust[scoring].mean()) if n else float("nan"),
                        "success": float((clean[scoring] & ~robust[scoring]).sum() / max(n_clean, 1)),
                        "seconds": round(seconds[scoring], 3),
                    }
                )
            log.info(
                "%s at %g dB, %s: robust accuracy undefended %.3f, non-adaptive %.3f, adaptive %.3f "
                "(%.1f s + %.1f s)",
                setting.name,
                budget,
                name,
                robust["undefended"].mean(),
                robust["non_adaptive"].mean(),
                robust["adaptive"].mean(),
                crafted,
                seconds["adaptive"],
            )
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


def summarize_transform(rows: pd.DataFrame, dataset: str, margin: float = 0.05) -> pd.DataFrame:
    """One row per (transform, budget) of :data:`SUMMARY_COLUMNS` from :func:`evaluate_transform`'s
    rows: clean cost, robust accuracy and success of each scoring after every attack, the adaptive
    attack's success over the undefended model's, and the verdict (see the module docstring)."""
    out = []
    for (transform, budget), group in rows.groupby(["transform", "budget_db"], sort=False):
        last = {s: g.iloc[-1] for s, g in group.sort_values("order").groupby("scoring", sort=False)}
        adaptive = group[group["scoring"] == "adaptive"]
        u, na, a = last["undefended"], last["non_adaptive"], last["adaptive"]
        broken_by = (
            str(adaptive.loc[adaptive["n_fooled"].idxmax(), "attack"]) if adaptive["n_fooled"].sum() else ""
        )
        n = max(int(u["n"]), 1)
        p_u, p_a = float(u["robust_accuracy"]), float(a["robust_accuracy"])
        gain = p_a - p_u
        se = float(np.sqrt((p_u * (1 - p_u) + p_a * (1 - p_a)) / n))
        robust = gain >= margin and gain > 2 * se
        out.append(
            {
                "dataset": dataset,
                "transform": transform,
                "kind": u["kind"],
                "label": u["label"],
                "model": u["model"],
                "budget_db": budget,
                "n": int(u["n"]),
                "clean_accuracy_undefended": u["clean_accuracy"],
                "clean_accuracy_defended": a["clean_accuracy"],
                "clean_cost": u["clean_accuracy"] - a["clean_accuracy"],
                "robust_undefended": u["robust_accuracy"],
                "robust_non_adaptive": na["robust_accuracy"],
                "robust_adaptive": a["robust_accuracy"],
                "success_undefended": u["success"],
                "success_non_adaptive": na["success"],
                "success_adaptive": a["success"],
                "adaptive_vs_undefended": a["success"] / u["success"] if u["success"] > 0 else float("nan"),
                "adaptive_gain": gain,
                "gain_se": se,
                "bpda": bool(a["bpda"]),
                "eot_samples": int(a["eot_samples"]),
                "broken_by": broken_by,
                "verdict": "robust" if robust else "broken",
            }
        )
    table = pd.DataFrame(out, columns=SUMMARY_COLUMNS)
    numeric = table.select_dtypes("float").columns
    table[numeric] = table[numeric].round(4)
    return table
