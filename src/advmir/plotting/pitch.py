"""Figure of the pitch stage: raw pitch accuracy vs SNR budget per tracker, beside matched noise."""

from __future__ import annotations

import argparse

import matplotlib.pyplot as plt
import pandas as pd

from advmir.artifacts import read_csv
from advmir.plotting.common import save_figure


def rpa_vs_snr(table: pd.DataFrame) -> plt.Figure:
    """One panel per tracker: raw pitch accuracy (against the reference, all families) of each attack
    (solid) and of its matched-noise control (dashed) against the SNR budget; the clean accuracy as a
    grey line. For targeted goals the target's raw pitch accuracy is drawn too (dotted)."""
    rows = table[table["family"] == "all"]
    models = sorted(rows["model"].unique())
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models, strict=True):
        part = rows[rows["model"] == model]
        clean = part[(part["attack"] == "clean") & (part["metric"] == "raw_pitch_accuracy")]["value"]
        if len(clean):
            ax.axhline(float(clean.iloc[0]), color="grey", lw=1, label="clean")
        attacks = sorted(a for a in part["attack"].unique() if a != "clean")
        for i, attack in enumerate(attacks):
            colour = f"C{i}"
            a = part[part["attack"] == attack]
            for condition, style in (("adversarial", "-o"), ("noise", "--")):
                line = a[(a["condition"] == condition) & (a["metric"] == "raw_pitch_accuracy")].sort_values(
                    "budget"
                )
                label = attack if condition == "adversarial" else None
                ax.plot(line["budget"], line["value"], style, color=colour, label=label, ms=4)
            target = a[(a["condition"] == "adversarial") & (a["metric"] == "target_raw_pitch_accuracy")]
            if len(target):
                target = target.sort_values("budget")
                ax.plot(target["budget"], target["value"], ":^", color=colour, ms=4)
        ax.set_title(model)
        ax.set_xlabel("SNR budget (dB)")
        ax.invert_xaxis()
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("raw pitch accuracy (50 cents)")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def main(argv: list[str]) -> int:
    """``python -m advmir plot-pitch``: the figure from results/tables/pitch.csv."""
    p = argparse.ArgumentParser(prog="advmir plot-pitch", description=main.__doc__)
    p.add_argument("--table", required=True)
    p.add_argument("--out", nargs="+", required=True, help="figure paths (.png, .pdf)")
    args = p.parse_args(argv)
    table = read_csv(
        args.table, columns=("model", "attack", "condition", "budget", "family", "metric", "value", "n")
    )
    save_figure(rpa_vs_snr(table), args.out)
    return 0
