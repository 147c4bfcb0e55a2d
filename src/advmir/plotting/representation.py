"""Figure of the representation-transfer stage (results/tables/representation_transfer_summary.csv).

plot-representation-transfer: success on the held-out representation against the SNR budget, one
panel per (condition, held-out representation), one colour per kind of source (single-model PGD,
ensemble, feature-space), each beside its matched-noise control (dashed). The x axis runs from quiet
(high SNR) to loud.
"""

from __future__ import annotations

import argparse
import logging

import matplotlib.pyplot as plt
import pandas as pd

from advmir.artifacts import read_csv
from advmir.plotting.common import save_figure
from advmir.runtime import setup_logging

log = logging.getLogger(__name__)

KIND_LABELS = {"single": "single-model PGD", "ensemble": "ensemble (LORO)", "feature": "feature-space (LORO)"}
KIND_COLOURS = {"single": "tab:grey", "ensemble": "tab:blue", "feature": "tab:orange"}
COLUMNS = ("dataset", "kind", "measure", "representation", "condition", "budget_db", "n", "success",
           "noise_success")  # fmt: skip


def plot_summary(summary: pd.DataFrame) -> plt.Figure:
    """Held-out success vs SNR budget, panels (condition x held-out representation)."""
    held = summary[summary["measure"] == "held_out"]
    conditions = sorted(dict.fromkeys(held["condition"]), key=lambda c: c != "none") or ["none"]
    reps = sorted(held["representation"].unique()) or ["-"]
    fig, axes = plt.subplots(
        len(conditions),
        len(reps),
        figsize=(3.8 * len(reps), 3.2 * len(conditions)),
        squeeze=False,
        sharey=True,
    )
    for i, condition in enumerate(conditions):
        for j, rep in enumerate(reps):
            ax = axes[i, j]
            sel = held[(held["condition"] == condition) & (held["representation"] == rep)]
            for kind, line in sel.groupby("kind", sort=False):
                line = line.groupby("budget_db", as_index=False)[["success", "noise_success", "n"]].agg(
                    {"success": "mean", "noise_success": "mean", "n": "sum"}
                )
                line = line.sort_values("budget_db", ascending=False)
                colour = KIND_COLOURS.get(kind, "tab:green")
                ax.plot(
                    line["budget_db"], line["success"], "o-", color=colour, label=KIND_LABELS.get(kind, kind)
                )
                ax.plot(line["budget_db"], line["noise_success"], "x--", color=colour, alpha=0.6)
            ax.set_title(f"held out: {rep} ({condition})", fontsize=9)
            ax.set_xlabel("SNR budget (dB)")
            ax.set_ylim(-0.02, 1.02)
            ax.invert_xaxis()
            if j == 0:
                ax.set_ylabel("success on held-out models")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="upper left", title="dashed: matched noise", title_fontsize=7)
    fig.tight_layout()
    return fig


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m advmir plot-representation-transfer", description=__doc__
    )
    parser.add_argument("--summary", required=True, help="results/tables/representation_transfer_summary.csv")
    parser.add_argument("--out", nargs="+", required=True, help="figure paths (.png and/or .pdf)")
    args = parser.parse_args(argv)
    setup_logging()
    summary = read_csv(args.summary, columns=COLUMNS)
    save_figure(plot_summary(summary), args.out)
    log.info("wrote %s", ", ".join(args.out))
    return 0
