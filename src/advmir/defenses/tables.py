"""The defenses stage's tables, from each evaluated model's folder (results/defenses/{dataset}/{model}/)
and its metrics.json (results/models/{dataset}/{model}/):

- defenses.csv: one row per (dataset, model, budget, attack): the defense (``none`` for an
  undefended model) and its training budget, the attack's steps and restarts, clean and cumulative
  robust accuracy on the n evaluation clips, and the training cost.
- defense_sanity.csv: one row per (dataset, model, check) of :mod:`advmir.defenses.sanity`.

Training cost is ``train_epochs`` (epochs run) and ``train_cost``: forward-backward passes over the
training set, in clean epochs (epochs x (1 + attack steps per batch); 2 per epoch for fast_at, 11 for
10-step pgd_at; adv_aug and trades train on the clean batch and its adversarial copy, so epochs x
(steps + 2): 3 per epoch for adv_aug's one default step, 12 for 10-step trades), the
hardware-independent measure. Wall-clock seconds (metrics.json's ``train_seconds``, the rule's
benchmark file) stay out of the tables: two runs of one config must write them byte for byte alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from advmir.artifacts import read_csv, read_json
from advmir.defenses.settings import AUGMENT_MODES

DEFENSE_COLUMNS = [
    "dataset", "model", "base_model", "defense", "defense_snr_db", "defense_eps", "budget_db", "attack",
    "algorithm", "restarts", "steps", "queries_max", "clean_accuracy", "robust_accuracy", "n",
    "n_clean_correct", "train_epochs", "train_cost",
]  # fmt: skip
INFO_COLUMNS = ["dataset", "model", "base_model", "defense"]


def training_cost(metrics: dict[str, Any]) -> tuple[int | None, float | None]:
    """(epochs run, cost in clean epochs) of a model's metrics.json: per epoch, one pass per attack
    step (crafting) and one for the update, plus one for the clean batch in the modes that update on
    the clean batch and its adversarial copy (adv_aug and trades: steps + 2; TRADES' no-gradient
    forward pass for the clean probabilities is not counted)."""
    epochs = metrics.get("epochs_run")
    if epochs is None:
        return None, None
    adversarial = metrics.get("adversarial") or {}
    steps = int(adversarial.get("steps") or 0) if adversarial else 0
    updates = 2 if adversarial.get("mode") in (*AUGMENT_MODES, "trades") else 1
    return int(epochs), float(epochs * (steps + updates))


def summarize_defenses(runs: list[Path], metrics: dict[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """defenses.csv and defense_sanity.csv from evaluation folders ``runs`` and ``metrics`` (model
    name -> its metrics.json), sorted by dataset, model, budget (quietest first) and attack order."""
    tables, checks = [], []
    for run in dict.fromkeys(runs):
        meta = read_json(run / "robustness.json", keys=("dataset", "model"))
        info = {
            "dataset": meta["dataset"],
            "model": meta["model"],
            "base_model": meta.get("base_model") or meta["model"],
            "defense": meta.get("defense") or "none",
        }
        epochs, cost = (None, None)
        if meta["model"] in metrics:
            epochs, cost = training_cost(read_json(metrics[meta["model"]]))
        rows = read_csv(run / "robustness.csv", columns=("budget_db", "attack", "robust_accuracy"))
        rows = rows.assign(
            **info,
            defense_snr_db=meta.get("defense_snr_db"),
            defense_eps=meta.get("defense_eps"),
            train_epochs=epochs,
            train_cost=cost,
        )
        tables.append(rows)
        sanity = read_csv(run / "sanity.csv")
        checks.append(sanity.drop(columns=["model"], errors="ignore").assign(**info))
    table = (
        pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=[*DEFENSE_COLUMNS, "order"])
    )
    table = table.sort_values(
        ["dataset", "base_model", "model", "budget_db", "order"],
        ascending=[True, True, True, False, True],
        kind="stable",
    )
    table = table[DEFENSE_COLUMNS].reset_index(drop=True)
    sanity = pd.concat(checks, ignore_index=True) if checks else pd.DataFrame(columns=INFO_COLUMNS)
    front = [c for c in INFO_COLUMNS if c in sanity]
    sanity = sanity[front + [c for c in sanity.columns if c not in front]]
    sanity = sanity.sort_values(["dataset", "base_model", "model"], kind="stable").reset_index(drop=True)
    return table, sanity
