"""Figures of the defenses stage, each from one table.

plot-defenses (results/tables/defenses.csv): robust accuracy against the SNR budget, one panel per
(dataset, base model), one line per model (the undefended base model and each of its defenses).
Robust accuracy is the ensemble's (a clip counts only if every attack fails), so each line is the
last attack's row at each budget; the dotted line at the left edge of each colour is the model's
clean accuracy on the same clips. The x axis runs from quiet (high SNR, small perturbations) to
loud, so the budget grows to the right.

plot-transforms (results/tables/defense_transforms.csv): one panel per transformation defense,
robust accuracy against the SNR budget: non-adaptive dashed, adaptive (BPDA / EOT) solid, the
undefended model grey.

plot-certified (results/tables/certified.csv): randomized smoothing, certified accuracy against the
SNR in dB, one line per smoothed classifier (and dataset), the smoothed classifier's clean accuracy
dotted in its colour.

plot-detection (results/tables/detection.csv and detection_roc.csv): adversarial-example detection,
ROC curves, one panel per (dataset, model, budget, detector): each non-adaptive attack solid, the
adaptive attack on that detector red, the random-noise control grey dashed; the AUCs in the title.

plot-augmentation (results/tables/defense_augmentation.csv): the augmentation study, one panel per
(dataset, augmented model): its accuracy and its base model's under each condition (a row each, in
the table's order), joined by a line, the change in points written at the right.
"""

from __future__ import annotations

import argparse
import logging
import math

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.transforms import ScaledTranslation

from advmir.artifacts import read_csv
from advmir.plotting.common import save_figure, table_figure_command
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


#: which clips a condition scores: the test split, another split mode's, the codec stage's subset
CLIP_SET = {"clean": 0, "split": 1, "none": 2, "codec": 2, "room": 2}
AUGMENTATION_COLUMNS = (
    "dataset", "model", "base_model", "condition", "condition_kind", "condition_label", "n",
    "accuracy_base", "accuracy", "change_points", "defense", "defense_snr_db", "defense_eps",
)  # fmt: skip


def _settings_label(row: pd.Series) -> str:
    """The augmented model's mode and budget, e.g. ``adv_aug, 45 dB, 1 step, weight 1, separate BN``."""
    parts = [str(row["defense"])]
    if pd.notna(row.get("defense_snr_db")):
        parts.append(f"{row['defense_snr_db']:g} dB")
    elif pd.notna(row.get("defense_eps")):
        parts.append(f"eps {row['defense_eps']:g}")
    if pd.notna(row.get("steps")):
        parts.append(f"{int(row['steps'])} step{'s' if int(row['steps']) != 1 else ''}")
    if pd.notna(row.get("weight")):
        parts.append(f"weight {row['weight']:g}")
    if pd.notna(row.get("separate_bn")):
        parts.append("separate BN" if str(row["separate_bn"]) == "True" else "shared BN")
    return ", ".join(parts)


def plot_augmentation(table: pd.DataFrame) -> plt.Figure:
    """Accuracy by condition, base model vs augmented model, one panel per (dataset, augmented model);
    the change (points, signed) at the right of each row, a dashed line between clip sets."""
    panels = table[["dataset", "model"]].drop_duplicates().values.tolist()
    cols = min(2, max(len(panels), 1))
    rows = max(math.ceil(len(panels) / cols), 1)
    height = max((table.groupby(["dataset", "model"]).size().max() if len(table) else 1) * 0.42 + 1.4, 2.5)
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, height * rows), squeeze=False)
    base_colour, aug_colour = sns.color_palette("tab10", 2)
    several = table["dataset"].nunique() > 1
    for k, (dataset, model) in enumerate(panels):
        ax = axes[k // cols, k % cols]
        sel = table[(table["dataset"] == dataset) & (table["model"] == model)].reset_index(drop=True)
        y = list(range(len(sel)))
        labels = [f"{r.condition_label} (n={int(r.n)})" if pd.notna(r.n) else str(r.condition_label)
                  for r in sel.itertuples()]  # fmt: skip
        ax.hlines(y, sel["accuracy_base"], sel["accuracy"], color="0.6", lw=1.5, zorder=1)
        base = sel["base_model"].iloc[0]
        ax.scatter(sel["accuracy_base"], y, color=base_colour, zorder=2, label=f"{base} (base)")
        ax.scatter(sel["accuracy"], y, color=aug_colour, marker="D", zorder=3, label=f"{model} (augmented)")
        for i, change in enumerate(sel["change_points"]):
            ax.annotate(
                f"{change:+.2f}",
                xy=(1.01, i),
                xycoords=("axes fraction", "data"),
                va="center",
                fontsize=8,
                color=aug_colour if change > 0 else (base_colour if change < 0 else "0.3"),
            )
        # a dashed line between clip sets: the test split, the other split modes, the codec subset
        clips = sel["condition_kind"].map(CLIP_SET).fillna(len(CLIP_SET)).tolist()
        for i in range(1, len(clips)):
            if clips[i] != clips[i - 1]:
                ax.axhline(i - 0.5, color="0.75", ls="--", lw=0.8)
        ax.set_yticks(y)
        ax.set_yticklabels(labels, fontsize=8)
        ax.set_ylim(len(sel) - 0.5, -0.5)
        low = float(min(sel["accuracy_base"].min(), sel["accuracy"].min()))
        ax.set_xlim(max(0.0, low - 0.05), 1.01)
        ax.grid(alpha=0.3, axis="x")
        ax.set_xlabel("accuracy")
        title = f"{model} vs {base}" + (f" ({dataset})" if several else "")
        ax.set_title(f"{title}\n{_settings_label(sel.iloc[0])}; change in points at right", fontsize=9)
        # below the x label: inside, it would hide the points of some row
        below = ax.transAxes + ScaledTranslation(0, -0.45, fig.dpi_scale_trans)
        ax.legend(
            fontsize=7,
            frameon=False,
            loc="upper center",
            bbox_to_anchor=(0.5, 0),
            bbox_transform=below,
            ncol=2,
        )
    for k in range(len(panels), rows * cols):
        axes[k // cols, k % cols].axis("off")
    if not panels:
        axes[0, 0].text(0.5, 0.5, "no augmented model", ha="center", va="center")
    fig.tight_layout()
    return fig


def main_augmentation(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m advmir plot-augmentation", description=__doc__)
    parser.add_argument("--table", required=True, help="results/tables/defense_augmentation.csv")
    parser.add_argument("--out", nargs="+", required=True, help="figure paths (.png and/or .pdf)")
    args = parser.parse_args(argv)
    setup_logging()
    table = read_csv(args.table, columns=AUGMENTATION_COLUMNS)
    save_figure(plot_augmentation(table), args.out)
    log.info("wrote %s", ", ".join(args.out))
    return 0


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


TRANSFORM_COLUMNS = (
    "dataset", "transform", "label", "model", "budget_db", "clean_accuracy_defended",
    "robust_undefended", "robust_non_adaptive", "robust_adaptive", "verdict",
)  # fmt: skip


def plot_transforms(table: pd.DataFrame) -> plt.Figure:
    """Robust accuracy vs SNR budget, one panel per (dataset, transformation defense): non-adaptive
    dashed, adaptive solid, the undefended model grey; the defended clean accuracy dotted."""
    panels = table[["dataset", "transform"]].drop_duplicates().values.tolist()
    cols = min(4, max(len(panels), 1))
    rows = max(math.ceil(len(panels) / cols), 1)
    fig, axes = plt.subplots(rows, cols, figsize=(3.8 * cols, 3.2 * rows), squeeze=False, sharey=True)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for k, (dataset, transform) in enumerate(panels):
        ax = axes[k // cols, k % cols]
        sel = table[(table["dataset"] == dataset) & (table["transform"] == transform)]
        sel = sel.sort_values("budget_db", ascending=False)
        x = sel["budget_db"]
        ax.plot(x, sel["robust_undefended"], color="0.6", marker="o", label="undefended")
        ax.plot(x, sel["robust_non_adaptive"], color="C0", ls="--", marker="o", label="non-adaptive")
        ax.plot(x, sel["robust_adaptive"], color="C3", ls="-", marker="o", label="adaptive (BPDA/EOT)")
        ax.axhline(sel["clean_accuracy_defended"].iloc[0], color="C0", ls=":", lw=1)
        verdicts = ", ".join(f"{v} at {b:g}" for b, v in zip(sel["budget_db"], sel["verdict"], strict=True))
        ax.set_title(f"{sel['label'].iloc[0]} ({sel['model'].iloc[0]})\n{verdicts} dB", fontsize=8)
        ax.set_xticks(sorted(x.unique()))
        ax.invert_xaxis()
        ax.set_xlabel("SNR budget (dB)")
        ax.set_ylim(0, 1.02)
        if k % cols == 0:
            ax.set_ylabel("robust accuracy")
    if panels:
        axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def main_transforms(argv: list[str]) -> int:
    return table_figure_command(
        argv, "python -m advmir plot-transforms", plot_transforms,
        "results/tables/defense_transforms.csv", TRANSFORM_COLUMNS,
    )  # fmt: skip


CERTIFIED_COLUMNS = (
    "dataset",
    "model",
    "base_model",
    "sigma",
    "n",
    "snr_db",
    "certified_accuracy",
    "clean_accuracy",
)


def plot_certified(table: pd.DataFrame) -> plt.Figure:
    """Certified accuracy vs SNR (dB), one line per (dataset, smoothed classifier); its clean accuracy
    (PREDICT) dotted in the same colour. The SNR falls to the right: larger perturbations certified."""
    table = table.copy()
    several = table["dataset"].nunique() > 1
    table["line"] = [
        f"{r.model} ({r.base_model}, sigma {r.sigma:g}, n {int(r.n)})" + (f", {r.dataset}" if several else "")
        for r in table.itertuples()
    ]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    lines = list(dict.fromkeys(table["line"]))
    palette = dict(zip(lines, sns.color_palette("tab10", max(len(lines), 1)), strict=False))
    if len(table):
        sns.lineplot(
            data=table, x="snr_db", y="certified_accuracy", hue="line", hue_order=lines, palette=palette,
            marker="o", ax=ax, errorbar=None,
        )  # fmt: skip
        for line, sel in table.groupby("line", sort=False):
            ax.axhline(sel["clean_accuracy"].iloc[0], color=palette[line], ls=":", lw=1)
        ax.set_xticks(sorted(table["snr_db"].unique()))
        ax.legend(fontsize=7, frameon=False, loc="upper right", title=None)
    else:
        ax.text(0.5, 0.5, "no smoothed classifier", ha="center", va="center", transform=ax.transAxes)
    ax.invert_xaxis()
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_xlabel("SNR (dB): larger certified perturbations to the right")
    ax.set_ylabel("certified accuracy")
    ax.set_title("Randomized smoothing: certified accuracy (dotted: smoothed clean accuracy)", fontsize=9)
    fig.tight_layout()
    return fig


def main_certified(argv: list[str]) -> int:
    return table_figure_command(
        argv, "python -m advmir plot-certified", plot_certified, "results/tables/certified.csv",
        CERTIFIED_COLUMNS,
    )  # fmt: skip


DETECTION_COLUMNS = (
    "dataset", "model", "detector", "phase", "attack", "algorithm", "budget_db", "roc_auc", "n_examples",
)  # fmt: skip
DETECTION_ROC_COLUMNS = ("dataset", "model", "detector", "phase", "attack", "budget_db", "fpr", "tpr")


def plot_detection(table: pd.DataFrame, roc: pd.DataFrame) -> plt.Figure:
    """ROC curves of every detector, before and after the adaptive attack: one row of panels per
    (dataset, model, budget), one panel per detector; each non-adaptive attack a solid line (its
    successful examples against clean clips), the adaptive attack on that detector red, the
    random-noise control grey dashed; the title gives the AUCs (before -> after)."""
    cells = table[["dataset", "model", "budget_db"]].drop_duplicates().values.tolist()
    detectors = list(dict.fromkeys(table["detector"]))
    rows, cols = max(len(cells), 1), max(len(detectors), 1)
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.6 * cols, 2.7 * rows), squeeze=False, sharex=True, sharey=True
    )
    styles = {"control": {"color": "0.6", "ls": "--"}, "adaptive": {"color": "C3", "ls": "-"}}
    attacks = list(dict.fromkeys(table.loc[table["phase"] == "non_adaptive", "attack"]))
    colours = {a: f"C{k % 3}" if k < 3 else f"C{k + 1}" for k, a in enumerate(attacks)}
    for i, (dataset, model, budget) in enumerate(cells):
        for j, det in enumerate(detectors):
            ax = axes[i, j]
            ax.plot([0, 1], [0, 1], color="0.85", lw=0.8)
            sel = table[
                (table["dataset"] == dataset) & (table["model"] == model) & (table["budget_db"] == budget)
                & (table["detector"] == det)
            ]  # fmt: skip
            title = []
            for r in sel.itertuples():
                pts = roc[
                    (roc["dataset"] == dataset) & (roc["model"] == model) & (roc["budget_db"] == budget)
                    & (roc["detector"] == det) & (roc["phase"] == r.phase) & (roc["attack"] == r.attack)
                ]  # fmt: skip
                style = styles.get(r.phase, {"color": colours.get(r.attack, "C0"), "ls": "-"})
                name = f"adaptive {r.algorithm}" if r.phase == "adaptive" else r.attack
                label = f"{name} ({r.roc_auc:.2f}, n={int(r.n_examples)})"
                if len(pts):
                    ax.plot(pts["fpr"], pts["tpr"], lw=1.2, label=label, **style)
                if r.phase != "control":
                    title.append(f"{r.roc_auc:.2f}")
            ax.set_title(f"{det}, {budget:g} dB\nAUC {' -> '.join(title)}", fontsize=8)
            ax.legend(fontsize=5.5, loc="lower right", frameon=False)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.01)
            if i == rows - 1:
                ax.set_xlabel("false positive rate (clean)", fontsize=7)
            if j == 0:
                ax.set_ylabel(f"{model}\ntrue positive rate", fontsize=7)
            ax.tick_params(labelsize=6)
    fig.suptitle(
        "Adversarial-example detection: ROC before (attack crafted on the classifier) and after the "
        "adaptive attack (red); grey dashed: random noise at the same SNR",
        fontsize=8,
    )
    fig.tight_layout()
    return fig


def main_detection(argv: list[str]) -> int:
    """Entry point of ``python -m advmir plot-detection``."""
    parser = argparse.ArgumentParser(
        prog="python -m advmir plot-detection", description=plot_detection.__doc__
    )
    parser.add_argument("--table", required=True, help="results/tables/detection.csv")
    parser.add_argument("--roc", required=True, help="results/tables/detection_roc.csv")
    parser.add_argument("--out", nargs="+", required=True, help="figure paths (.png and/or .pdf)")
    args = parser.parse_args(argv)
    setup_logging()
    table = read_csv(args.table, columns=DETECTION_COLUMNS)
    roc = read_csv(args.roc, columns=DETECTION_ROC_COLUMNS)
    save_figure(plot_detection(table, roc), args.out)
    log.info("wrote %s", ", ".join(args.out))
    return 0
