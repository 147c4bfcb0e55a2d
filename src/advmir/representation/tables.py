"""Tables of the representation-transfer stage, from the jobs' predictions.

A success counts only on a clip the target classifies right when clean *under the same condition*
(no transformation, or the codec), and follows the attack stage's rule
(:func:`advmir.attacks.scoring.success_rule`); the matched-noise control is scored by the same target,
rule and clips. ``representation_transfer.csv`` has one row per (source, target, condition, budget)
with the target's role:

- ``member``: the source crafted on it (white-box);
- ``held_out``: it reads the representation the source set excludes (leave-one-representation-out);
- ``unseen_representation``: it reads a representation no source model reads (a single model's
  transfer to another representation);
- ``seen_representation``: another model of a representation the source reads.

``representation_transfer_summary.csv`` pools the pairs per (kind, held-out representation R,
condition, budget): ``held_out`` rows pool every source that never read R scored on every target of R
(``ensemble_no_R``, ``feature_no_R``, and each single model of another representation), and
``white_box`` rows pool each ensemble's and single model's success on its own members.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from advmir.artifacts import read_csv, read_json
from advmir.attacks.scoring import success_rule
from advmir.representation.craft import EXAMPLE_COLUMNS, PREDICTION_COLUMNS

COLUMNS = [
    "dataset", "source_set", "kind", "excluded_representation", "source_representations", "target",
    "target_representation", "role", "condition", "budget_db", "n", "n_success", "success",
    "n_noise_success", "noise_success", "excess_over_noise", "median_snr_db",
]  # fmt: skip
SUMMARY_COLUMNS = [
    "dataset", "kind", "measure", "representation", "condition", "budget_db", "n_pairs", "n", "n_success",
    "success", "n_noise_success", "noise_success", "excess_over_noise",
]  # fmt: skip


def rates(n: int, n_success: int, n_noise: int) -> dict[str, Any]:
    """Counts and rates over ``n`` counted clips: success, the matched noise's, and their difference."""
    nan = float("nan")
    return {
        "n": n,
        "n_success": n_success,
        "success": n_success / n if n else nan,
        "n_noise_success": n_noise,
        "noise_success": n_noise / n if n else nan,
        "excess_over_noise": (n_success - n_noise) / n if n else nan,
    }


def role(
    target: str, members: Sequence[str], source_reps: Sequence[str], excluded: str, reps: Mapping[str, str]
) -> str:
    """The target's role for a source crafted on ``members`` (models) reading ``source_reps`` and
    excluding representation ``excluded`` (module doc)."""
    if target in members:
        return "member"
    rep = reps[target]
    if excluded and rep == excluded:
        return "held_out"
    return "seen_representation" if rep in source_reps else "unseen_representation"


def run_rows(run_dir: Path, reps: Mapping[str, str]) -> pd.DataFrame:
    """Rows of representation_transfer.csv of one job folder."""
    meta = read_json(run_dir / "run.json", keys=("spec", "snr_db", "dataset"))
    examples = read_csv(run_dir / "examples.csv", columns=EXAMPLE_COLUMNS)
    preds = read_csv(run_dir / "predictions.csv", columns=PREDICTION_COLUMNS)
    spec = meta["spec"]
    members = list(spec["members"]) if spec["kind"] != "feature" else []
    source_reps = sorted({reps[m] for m in members} if members else set(spec.get("frontends") or []))
    table = preds.merge(examples[["row", "label", "snr_db"]], on="row", how="left", validate="many_to_one")
    target = np.full(len(table), -1)
    table["success"] = success_rule(table["pred"], table["label"], target, table["clean_pred"])
    table["noise_success"] = success_rule(table["noise_pred"], table["label"], target, table["clean_pred"])
    table["counted"] = table["clean_pred"] == table["label"]
    out = []
    for (name, condition), part in table.groupby(["target_model", "condition"], sort=False):
        counted = part[part["counted"]]
        n = len(counted)
        n_success, n_noise = int(counted["success"].sum()), int(counted["noise_success"].sum())
        snr = part["snr_db"][np.isfinite(part["snr_db"])]
        out.append(
            {
                "dataset": meta["dataset"],
                "source_set": run_dir.parent.name,
                "kind": spec["kind"],
                "excluded_representation": spec.get("excluded", ""),
                "source_representations": "+".join(source_reps),
                "target": name,
                "target_representation": reps[name],
                "role": role(name, members, source_reps, spec.get("excluded", ""), reps),
                "condition": condition,
                "budget_db": float(meta["snr_db"]),
                **rates(n, n_success, n_noise),
                "median_snr_db": float(snr.median()) if len(snr) else float("nan"),
            }
        )
    return pd.DataFrame(out, columns=COLUMNS)


def build_table(run_dirs: Sequence[Path], reps: Mapping[str, str]) -> pd.DataFrame:
    """representation_transfer.csv from every job folder, sorted."""
    frames = [run_rows(Path(d), reps) for d in dict.fromkeys(run_dirs)]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    keys = ["dataset", "kind", "source_set", "budget_db", "condition", "target"]
    return table.sort_values(keys, kind="stable").reset_index(drop=True)


def summarize(table: pd.DataFrame, held_out: Sequence[str]) -> pd.DataFrame:
    """representation_transfer_summary.csv: the pooled held-out and white-box rates (module doc)."""
    rows: list[dict[str, Any]] = []

    def pool(part: pd.DataFrame, **keys: Any) -> None:
        n, s, z = int(part["n"].sum()), int(part["n_success"].sum()), int(part["n_noise_success"].sum())
        rows.append({**keys, "n_pairs": len(part), **rates(n, s, z)})

    for (dataset, kind, condition, budget), part in table.groupby(
        ["dataset", "kind", "condition", "budget_db"], sort=True
    ):
        for rep in held_out:
            if kind == "single":
                pick = part[
                    (part["target_representation"] == rep)
                    & ~part["source_representations"].str.split("+").map(lambda reps, r=rep: r in reps)
                ]
            else:
                pick = part[(part["excluded_representation"] == rep) & (part["role"] == "held_out")]
            if len(pick):
                pool(pick, dataset=dataset, kind=kind, measure="held_out", representation=rep,
                     condition=condition, budget_db=budget)  # fmt: skip
        members = part[part["role"] == "member"]
        if kind == "ensemble":
            for excluded, sub in members.groupby("excluded_representation", sort=True):
                pool(sub, dataset=dataset, kind=kind, measure="white_box",
                     representation=f"all_but_{excluded}", condition=condition, budget_db=budget)  # fmt: skip
        elif len(members):
            pool(members, dataset=dataset, kind=kind, measure="white_box", representation="own",
                 condition=condition, budget_db=budget)  # fmt: skip
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def parse_reps(text: str) -> dict[str, str]:
    return {str(k): str(v) for k, v in json.loads(text).items()}
