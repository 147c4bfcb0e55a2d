"""Figure of the defenses stage, from results/tables/defenses.csv only: robust accuracy against the
SNR budget, one panel per (dataset, base model), one line per model (the undefended base model and
each of its defenses). Robust accuracy is the ensemble's (a clip counts only if every attack fails),
so each line is the last attack's row at each budget; the dotted line at the left edge of each
colour is the model's clean accuracy on the same clips. The x axis runs from quiet (high SNR, small
perturbations) to loud, so the budget grows to the right.
"""

from __future__ import annotations

import argparse
import logging
import math

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from advmir.artifacts import read_csv
from advmir.plotting.common import save_figure
from advmir.runtime import setup_logging

log = logging.getLogger(__name__)


def ensemble_curves(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, model, budget): the robust accuracy after the whole ensemble (the
    budget's last attack in the table's order), with the base model and defense."""
    keys = ["dataset", "base_model", "model", "defense", "budget_db"]
    return table.groupby(keys, sort=False, as_index=False).last()


def plot_robust_accuracy(table: pd.DataFrame) -> plt.Figure:
    """Robust accuracy vs SNR budget, one panel per (dataset, base model), undefended vs each defense."""
    curves = ensemble_curves(table)
    panels = curves[["dataset", "base_model"]].drop_duplicates().values.tolist()
    cols = min(3, max(len(panels), 1))
    rows = max(math.ceil(len(panels) / cols), 1)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False, sharey=True)
    defenses = sorted(curves["defense"].unique(), key=lambda d: (d != "none", d))
    palette = dict(zip(defenses, sns.color_palette("tab10", len(defenses)), strict=True))
    for k, (dataset, base) in enumerate(panels):
        ax = axes[k // cols, k % cols]
        sel = curves[(curves["dataset"] == dataset) & (curves["base_model"] == base)]
        for model, line in sel.groupby("model", sort=False):
            line = line.sort_values("budget_db", ascending=False)
            defense = line["defense"].iloc[0]
            label = "undefended" if defense == "none" else f"{defense} ({model})"
            ax.plot(
                line["budget_db"], line["robust_accuracy"], marker="o", color=palette[defense], label=label
            )
            ax.axhline(line["clean_accuracy"].iloc[0], color=palette[defense], ls=":", lw=1)
        ax.set_xticks(sorted(sel["budget_db"].unique()))
        ax.invert_xaxis()
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(base + (f" ({dataset})" if curves["dataset"].nunique() > 1 else ""), fontsize=10)
        ax.set_xlabel("SNR budget (dB): larger perturbations to the right")
        if k % cols == 0:
            ax.set_ylabel("robust accuracy (every attack fails)")
        ax.legend(fontsize=7, frameon=False, loc="upper right")
    for k in range(len(panels), rows * cols):
        axes[k // cols, k % cols].axis("off")
    fig.tight_layout()
    return fig


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m advmir plot-defenses", description=__doc__)
    parser.add_argument("--table", required=True, help="results/tables/defenses.csv")
    parser.add_argument("--out", nargs="+", required=True, help="figure paths (.png and/or .pdf)")
    args = parser.parse_args(argv)
    setup_logging()
    table = read_csv(
        args.table,
        columns=(
            "dataset",
            "model",
            "base_model",
            "defense",
            "budget_db",
            "clean_accuracy",
            "robust_accuracy",
        ),
    )
    save_figure(plot_robust_accuracy(table), args.out)
    log.info("wrote %s", ", ".join(args.out))
    return 0
