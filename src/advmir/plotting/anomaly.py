"""Figures of anomaly detection, from the tables only: ROC curves (pooled and per fault family), AUC
heatmap, review budget (all faults, and in-generator vs held-out fault implementations)."""

from __future__ import annotations

import argparse
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from advmir.artifacts import read_csv
from advmir.plotting.common import save_figure
from advmir.runtime import setup_logging

HIGHLIGHT = ("ensemble_stack", "ensemble_rank", "multitask")


def _order(metrics: pd.DataFrame) -> list[str]:
    """Detectors by overall ROC-AUC, best first."""
    overall = metrics[metrics["fault"] == "all"].sort_values("roc_auc", ascending=False)
    return list(overall["detector"])


def plot_roc(roc: pd.DataFrame, metrics: pd.DataFrame) -> plt.Figure:
    """One ROC curve per detector (all faults pooled); ensembles and the multi-task net drawn bold."""
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    auc = metrics[metrics["fault"] == "all"].set_index("detector")["roc_auc"]
    palette = sns.color_palette("tab20", n_colors=max(3, len(auc)))
    for k, det in enumerate(_order(metrics)):
        curve = roc[roc["detector"] == det]
        if curve.empty:
            continue
        bold = det in HIGHLIGHT
        ax.plot(
            curve["fpr"],
            curve["tpr"],
            lw=2.4 if bold else 1.0,
            color=palette[k % len(palette)],
            label=f"{det} ({auc[det]:.2f})",
            zorder=3 if bold else 2,
        )
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=0.8)
    ax.axvline(0.1, ls="--", color="grey", lw=0.6)
    ax.set_xlabel("false positive rate (clean clips flagged)")
    ax.set_ylabel("true positive rate (faulty clips found)")
    ax.set_title("ROC, all faults pooled (ROC-AUC in brackets; dashed: pAUC range)")
    if roc.empty:  # a split reviewed without injected faults has nothing to score against
        ax.text(0.5, 0.5, "no injected faults in this split", ha="center", va="center")
    else:
        ax.legend(fontsize=6.5, loc="lower right", ncol=2)
    fig.tight_layout()
    return fig


def plot_auc_heatmap(metrics: pd.DataFrame, value: str = "roc_auc") -> plt.Figure:
    """Detector x fault heatmap of ROC-AUC (``all`` = faults pooled)."""
    order = _order(metrics)
    faults = ["all", *sorted(f for f in metrics["fault"].unique() if f != "all")]
    mat = metrics.pivot(index="detector", columns="fault", values=value).reindex(index=order, columns=faults)
    fig, ax = plt.subplots(figsize=(0.55 * len(faults) + 3, 0.34 * len(order) + 1.8))
    sns.heatmap(
        mat,
        ax=ax,
        vmin=0.5,
        vmax=1.0,
        cmap="viridis",
        annot=True,
        fmt=".2f",
        annot_kws={"size": 6},
        cbar_kws={"label": value.replace("_", "-").upper()},
    )
    ax.set_xlabel("fault")
    ax.set_ylabel("detector")
    ax.tick_params(labelsize=7)
    ax.set_title("ROC-AUC per detector and fault (faulty vs clean clips)")
    fig.tight_layout()
    return fig


def plot_budget(budget: pd.DataFrame, metrics: pd.DataFrame) -> plt.Figure:
    """Share of faults found against the share of the split a curator listens to, best-first."""
    fig, ax = plt.subplots(figsize=(6.5, 5.0))
    order = _order(metrics)
    palette = sns.color_palette("tab20", n_colors=max(3, len(order)))
    if "implementations" in budget:
        budget = budget[budget["implementations"] == "all"]
    for k, det in enumerate(order):
        curve = budget[budget["detector"] == det]
        if curve.empty:
            continue
        bold = det in HIGHLIGHT
        ax.plot(
            100 * curve["budget"],
            100 * curve["found"],
            lw=2.4 if bold else 1.0,
            color=palette[k % len(palette)],
            label=det,
            zorder=3 if bold else 2,
        )
    overall = metrics.loc[metrics["fault"] == "all", ["n_faulty", "n_clean"]]
    if len(overall) and overall["n_faulty"].iloc[0] > 0:
        share = overall["n_faulty"].iloc[0] / overall.iloc[0].sum()
        xs = np.linspace(0, 100, 101)
        ax.plot(xs, np.minimum(100, xs / share), ls="--", color="black", lw=0.8, label="perfect ranking")
        ax.plot(xs, xs, ls=":", color="grey", lw=0.8, label="random order")
    for b in (5, 10):
        ax.axvline(b, ls="--", color="grey", lw=0.5)
    ax.set_xlabel("share of the split reviewed, best-ranked first (%)")
    ax.set_ylabel("share of faulty clips found (%)")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 101)
    ax.set_title("review budget")
    ax.legend(fontsize=6.5, loc="lower right", ncol=2)
    fig.tight_layout()
    return fig


PART_STYLE = {"in_generator": "-", "held_out": "--"}


def _best_base(table: pd.DataFrame, shown: tuple[str, ...]) -> str | None:
    """The detector (not one of ``shown``) with the highest ROC-AUC in ``table``."""
    rest = table[~table["detector"].isin(shown)].drop_duplicates("detector")
    return None if rest.empty else str(rest.sort_values("roc_auc", ascending=False)["detector"].iloc[0])


def plot_family_roc(roc: pd.DataFrame, shown: tuple[str, ...] = HIGHLIGHT) -> plt.Figure:
    """One panel per fault family: ROC of the ensembles, the multi-task net and the family's best
    single detector, implementations seen in fitting solid, held-out ones dashed (ROC-AUC in the legend)."""
    families = sorted(roc["fault_family"].unique()) if len(roc) else []
    cols = 4
    rows = max(1, math.ceil(len(families) / cols))
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.1 * cols, 2.8 * rows), squeeze=False, sharex=True, sharey=True
    )
    colours = dict(zip((*shown, "best single"), sns.color_palette("tab10", len(shown) + 1), strict=True))
    for ax, fam in zip(axes.flat, families, strict=False):
        part = roc[roc["fault_family"] == fam]
        best = _best_base(part[part["implementations"] == "held_out"], shown) or _best_base(part, shown)
        for det in (*shown, best):
            if det is None:
                continue
            colour = colours["best single" if det == best else det]
            for impl, style in PART_STYLE.items():
                curve = part[(part["detector"] == det) & (part["implementations"] == impl)]
                if curve.empty:
                    continue
                ax.plot(
                    curve["fpr"],
                    curve["tpr"],
                    ls=style,
                    color=colour,
                    lw=1.8 if det == "ensemble_stack" else 1.0,
                    label=f"{det}{' held out' if impl == 'held_out' else ''} {curve['roc_auc'].iloc[0]:.2f}",
                )
        ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=0.6)
        n = part.drop_duplicates("implementations").set_index("implementations")["n_faulty"].to_dict()
        ax.set_title(f"{fam} (n={n.get('in_generator', 0)} / {n.get('held_out', 0)} held out)", fontsize=8)
        ax.legend(fontsize=5, loc="lower right")
    for ax in axes.flat[len(families) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("false positive rate", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("true positive rate", fontsize=8)
    if not families:
        axes[0, 0].text(0.5, 0.5, "no injected faults in this split", ha="center", va="center")
    fig.suptitle(
        "ROC per fault family: solid = implementations seen in fitting, dashed = held out", fontsize=9
    )
    fig.tight_layout()
    return fig


def plot_budget_held_out(
    budget: pd.DataFrame, n_faulty: int = 0, shown: tuple[str, ...] = HIGHLIGHT
) -> plt.Figure:
    """Faults found against clips listened to (the whole split ranked), for the ensembles and the
    multi-task net: all faults, in-generator and held-out implementations apart; with ``n_faulty``
    (faulty clips in the split), the perfect ranking's curve."""
    fig, ax = plt.subplots(figsize=(6.5, 5.0))
    colours = dict(zip(shown, sns.color_palette("tab10", len(shown)), strict=True))
    styles = {"all": ":", **PART_STYLE}
    for det in shown:
        for impl, style in styles.items():
            curve = budget[(budget["detector"] == det) & (budget["implementations"] == impl)]
            if curve.empty:
                continue
            ax.plot(
                curve["clips"],
                100 * curve["found"],
                ls=style,
                color=colours[det],
                lw=2.0 if det == "ensemble_stack" else 1.0,
                label=f"{det}, {impl.replace('_', '-')}",
            )
    if len(budget):
        total = int(budget["clips"].max())
        for b in (0.05, 0.10):
            ax.axvline(b * total, ls="--", color="grey", lw=0.5)
        if n_faulty:
            xs = np.linspace(0, total, 101)
            ax.plot(
                xs,
                np.minimum(100, 100 * xs / n_faulty),
                ls="--",
                color="black",
                lw=0.8,
                label="perfect ranking",
            )
    ax.set_xlabel("clips listened to, best-ranked first")
    ax.set_ylabel("share of faulty clips found (%)")
    ax.set_ylim(0, 101)
    ax.set_title("review budget: implementations seen in fitting vs held out")
    ax.legend(fontsize=6.5, loc="lower right")
    fig.tight_layout()
    return fig


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="advmir plot-anomalies", description=__doc__)
    parser.add_argument("--metrics", required=True, help="results/anomaly/DATASET/metrics.csv")
    parser.add_argument("--roc", required=True, help="results/anomaly/DATASET/roc.csv")
    parser.add_argument("--budget", required=True, help="results/anomaly/DATASET/budget.csv")
    parser.add_argument("--roc-out", nargs="+", required=True, help="figure paths (.png and/or .pdf)")
    parser.add_argument("--heatmap-out", nargs="+", required=True)
    parser.add_argument("--budget-out", nargs="+", required=True)
    parser.add_argument("--roc-families", help="results/anomaly/DATASET/roc_families.csv")
    parser.add_argument("--families-out", nargs="+", default=[], help="figure: ROC per fault family")
    parser.add_argument(
        "--held-out-out", nargs="+", default=[], help="figure: review budget, held-out faults"
    )
    args = parser.parse_args(argv)
    setup_logging()
    metrics = read_csv(args.metrics)
    budget = read_csv(args.budget)
    save_figure(plot_roc(read_csv(args.roc), metrics), args.roc_out)
    save_figure(plot_auc_heatmap(metrics), args.heatmap_out)
    save_figure(plot_budget(budget, metrics), args.budget_out)
    if args.families_out:
        if not args.roc_families:
            parser.error("--families-out needs --roc-families")
        save_figure(plot_family_roc(read_csv(args.roc_families)), args.families_out)
    if args.held_out_out:
        overall = metrics.loc[metrics["fault"] == "all", "n_faulty"]
        save_figure(
            plot_budget_held_out(budget, int(overall.iloc[0]) if len(overall) else 0), args.held_out_out
        )
    return 0
