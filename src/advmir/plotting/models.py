"""Figure: clean test accuracy per model, beside each model's confusion matrix (from the tables)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from advmir.artifacts import read_csv
from advmir.plotting.common import save_figure
from advmir.runtime import setup_logging


def plot_clean_accuracy(accuracy: pd.DataFrame, confusion: pd.DataFrame) -> plt.Figure:
    """Bar chart of test accuracy and macro-F1 per model, then one row-normalised confusion matrix each."""
    models = list(accuracy["model"])
    n = len(models) + 1
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    long = accuracy.melt(id_vars="model", value_vars=["test_accuracy", "macro_f1"], var_name="metric")
    ax = axes[0, 0]
    sns.barplot(data=long, y="model", x="value", hue="metric", ax=ax, orient="h")
    ax.set_xlim(0, 1)
    ax.set_xlabel("test score")
    ax.set_ylabel("")
    ax.set_title("clean test accuracy")
    # Below the axes: inside, it hides the bars (every score is near 1).
    sns.move_legend(ax, "upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, title=None, frameon=False)
    for k, model in enumerate(models, start=1):
        ax = axes[k // cols, k % cols]
        cells = confusion[confusion["model"] == model]
        order = list(dict.fromkeys(cells["true"]))
        mat = cells.pivot(index="true", columns="predicted", values="count").loc[order, order]
        mat = mat.div(mat.sum(axis=1).clip(lower=1), axis=0)
        sns.heatmap(mat, ax=ax, vmin=0, vmax=1, cmap="viridis", cbar=False, square=True)
        acc = float(accuracy.loc[accuracy["model"] == model, "test_accuracy"].iloc[0])
        ax.set_title(f"{model} ({acc:.1%})", fontsize=9)
        ax.tick_params(labelsize=6)
    for k in range(n, rows * cols):
        axes[k // cols, k % cols].axis("off")
    fig.tight_layout()
    return fig


def plot_benign(table: pd.DataFrame) -> plt.Figure:
    """Heatmap of accuracy change (points) per model (rows) and benign condition (columns), each cell
    annotated with the accuracy; the clean column shows the clean accuracy itself."""
    order = list(dict.fromkeys(table.sort_values("kind", key=lambda k: k.map(KIND_ORDER))["condition"]))
    change = table.pivot_table(index="model", columns="condition", values="change_points")[order]
    acc = table.pivot_table(index="model", columns="condition", values="accuracy")[order]
    labels = acc.map(lambda v: f"{v:.1%}")
    for col in order[1:]:
        labels[col] = [f"{c:+.1f}\n{a:.0%}" for c, a in zip(change[col], acc[col], strict=True)]
    fig, ax = plt.subplots(figsize=(1.0 * len(order) + 2.5, 0.55 * len(change) + 1.6))
    sns.heatmap(change, annot=labels, fmt="", cmap="RdBu", center=0, vmin=-30, vmax=30, ax=ax,
                cbar_kws={"label": "accuracy change (points)"}, annot_kws={"fontsize": 7})  # fmt: skip
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.set_title("clean accuracy under benign conditions (change vs the same clips clean)")
    plt.setp(ax.get_xticklabels(), rotation=35, ha="right")
    fig.tight_layout()
    return fig


KIND_ORDER = {"clean": 0, "noise": 1, "codec": 2, "room": 3}


def plot_generalisation(table: pd.DataFrame) -> plt.Figure:
    """Bars of test accuracy per model and split mode, with chance as a dashed line."""
    fig, ax = plt.subplots(figsize=(7, 0.5 * table["model"].nunique() * table["split"].nunique() + 1.5))
    sns.barplot(data=table, y="model", x="test_accuracy", hue="split", ax=ax, orient="h")
    ax.axvline(float(table["chance"].max()), color="black", linestyle="--", linewidth=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_xlabel("test accuracy")
    ax.set_ylabel("")
    ax.set_title("generalisation: unseen notes, unseen GM programs, an unseen SoundFont")
    sns.move_legend(ax, "center left", bbox_to_anchor=(1.01, 0.5), title=None, frameon=False)
    fig.tight_layout()
    return fig


def _plot_table(argv: list[str], prog: str, plot: Callable[[pd.DataFrame], plt.Figure], table: str) -> int:
    """CLI of a figure drawn from one table: ``--table`` and ``--out`` paths."""
    parser = argparse.ArgumentParser(prog=prog, description=plot.__doc__)
    parser.add_argument("--table", required=True, help=table)
    parser.add_argument("--out", nargs="+", required=True, help="figure paths (.png and/or .pdf)")
    args = parser.parse_args(argv)
    setup_logging()
    save_figure(plot(read_csv(args.table)), args.out)
    return 0


def main_benign(argv: list[str]) -> int:
    return _plot_table(argv, "advmir plot-benign", plot_benign, "results/tables/benign_accuracy.csv")


def main_generalisation(argv: list[str]) -> int:
    return _plot_table(
        argv, "advmir plot-generalisation", plot_generalisation, "results/tables/generalisation.csv"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="advmir plot-models", description=__doc__)
    parser.add_argument("--accuracy", required=True, help="results/tables/clean_accuracy.csv")
    parser.add_argument("--confusion", required=True, help="results/tables/confusion.csv")
    parser.add_argument("--out", nargs="+", required=True, help="figure paths (.png and/or .pdf)")
    args = parser.parse_args(argv)
    setup_logging()
    fig = plot_clean_accuracy(read_csv(args.accuracy), read_csv(args.confusion))
    save_figure(fig, args.out)
    return 0
