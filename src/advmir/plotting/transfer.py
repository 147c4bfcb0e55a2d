"""Figures of the transfer stage, drawn from the tables only.

- success rate against the achieved bitrate, one line per codec, per attack (white-box and transfer),
  beside the same for the matched-noise control (dashed), above the clean accuracy of the targets at
  the same bitrates;
- transfer heatmaps (source x target models, grouped by input representation) with no
  transformation and after chosen codec settings (default MP3 128 kbps): each cell the excess of
  the success rate over the matched-noise control's, annotated with both rates;
- success after the room simulation for PGD against EOT-PGD, each bar with its control's rate.

Success rates count only examples whose clean version, through the same transformation, the target
classifies correctly (see :mod:`advmir.transfer.tables`); the matched-noise control (the clean clip
plus white noise at the example's own SNR, through the same transformation) is counted the same way.
"""

from __future__ import annotations

import argparse
import logging

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from advmir.artifacts import read_csv
from advmir.plotting.common import save_figure
from advmir.runtime import setup_logging

log = logging.getLogger(__name__)

LOSSY = ("mp3", "aac", "vorbis", "opus")
CODEC_STYLE = {
    "mp3": ("tab:blue", "o"),
    "aac": ("tab:orange", "s"),
    "vorbis": ("tab:green", "^"),
    "opus": ("tab:red", "D"),
}
FRONTEND_ORDER = ("waveform", "stft", "logmel", "cqt")


def _pooled(frame: pd.DataFrame, hits: str = "n_success") -> float:
    """Pooled rate of the rows of ``frame``: ``hits`` (n_success, or n_noise_success for the
    control) over the counted clips."""
    counted = frame["n_counted"].sum()
    return float(frame[hits].sum() / counted) if counted else float("nan")


def _noise_kbps(frame: pd.DataFrame) -> float:
    """Mean achieved payload kbps of the controls (of the examples when the table lacks it)."""
    kbps = frame["noise_payload_kbps"] if "noise_payload_kbps" in frame else frame["payload_kbps"]
    return float(kbps.mean())


def _panels(rates: pd.DataFrame) -> list[tuple[str, str]]:
    return list(rates[["dataset", "attack"]].drop_duplicates().itertuples(index=False, name=None))


def _bitrate_axis(ax: plt.Axes) -> None:
    """Log-scaled kbps axis with plain numbers at the usual bitrates."""
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator([8, 16, 32, 64, 128, 256, 512, 1024]))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())


def _empty(message: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    ax.axis("off")
    return fig


def plot_bitrate(rates: pd.DataFrame, clean: pd.DataFrame) -> plt.Figure:
    """Success rate against achieved bitrate, one line per codec (solid: the attack; dashed with open
    markers: its matched-noise control at the controls' own bitrate); columns: (dataset, attack).

    Rows: white-box (target = source), transfer (target != source), and the clean accuracy of the
    targets (mean over targets) at the bitrate of the clean clips.
    """
    panels = _panels(rates)
    if not panels or rates["codec"].isin(LOSSY).sum() == 0:
        return _empty("no lossy codec settings in the tables")
    fig, axes = plt.subplots(3, len(panels), figsize=(4.0 * len(panels), 9.0), squeeze=False, sharex=True)
    groups = (("self", "white-box (target = source)"), ("transfer", "transfer (target ≠ source)"))
    for col, (dataset, attack) in enumerate(panels):
        sub = rates[(rates["dataset"] == dataset) & (rates["attack"] == attack)]
        for row, (group, title) in enumerate(groups):
            part = sub[sub["relation"] == "self"] if group == "self" else sub[sub["relation"] != "self"]
            _draw_success(axes[row, col], part)
            axes[row, col].set_title(f"{attack} ({dataset})\n{title}" if row == 0 else title, fontsize=9)
            if col == 0:
                axes[row, col].set_ylabel("success rate")
        _draw_clean_accuracy(axes[2, col], clean[clean["dataset"] == dataset])
        if col == 0:
            axes[2, col].set_ylabel("clean accuracy")
    _bitrate_legend(fig, axes, len(panels))
    return fig


def _draw_success(ax: plt.Axes, part: pd.DataFrame) -> None:
    """On ``ax``: the pooled success rate of the rate rows ``part`` against the payload bitrate, one
    line per lossy codec (dashed, open: the matched-noise control), FLAC as crosses and no codec as
    horizontal lines."""
    none = part[part["condition"] == "none"]
    if len(none):
        ax.axhline(_pooled(none), color="grey", ls=":", lw=1, label="no codec")
        ax.axhline(
            _pooled(none, "n_noise_success"),
            color="grey",
            ls="-.",
            lw=1,
            label="no codec, matched noise",
        )
    for codec in LOSSY:
        cells = part[part["codec"] == codec]
        if cells.empty:
            continue
        color, marker = CODEC_STYLE[codec]
        by_condition = [c for _, c in cells.groupby("condition")]
        points = sorted((float(c["payload_kbps"].mean()), _pooled(c)) for c in by_condition)
        ax.plot(*zip(*points, strict=True), color=color, marker=marker, label=codec)
        noise = sorted((_noise_kbps(c), _pooled(c, "n_noise_success")) for c in by_condition)
        ax.plot(*zip(*noise, strict=True), color=color, marker=marker, ls="--", mfc="none", alpha=0.8)
    lossless = part[part["codec"] == "flac"]
    if len(lossless):
        ax.plot(lossless["payload_kbps"].mean(), _pooled(lossless), "kx", ms=8, label="flac (lossless)")
        ax.plot(
            _noise_kbps(lossless),
            _pooled(lossless, "n_noise_success"),
            "k+",
            ms=8,
            label="flac, matched noise",
        )
    ax.set_ylim(-0.02, 1.02)
    _bitrate_axis(ax)
    ax.grid(alpha=0.3)


def _draw_clean_accuracy(ax: plt.Axes, acc: pd.DataFrame) -> None:
    """On ``ax``: the targets' mean clean accuracy (rows of the clean table ``acc``) against the clean
    clips' median payload bitrate, one line per lossy codec."""
    none = acc[acc["condition"] == "none"]
    if len(none):
        ax.axhline(none["accuracy"].mean(), color="grey", ls=":", lw=1, label="no codec")
    for codec in LOSSY:
        cells = acc[acc["codec"] == codec]
        if cells.empty:
            continue
        points = sorted(
            (float(c["payload_kbps_median"].mean()), float(c["accuracy"].mean()))
            for _, c in cells.groupby("condition")
        )
        color, marker = CODEC_STYLE[codec]
        ax.plot(*zip(*points, strict=True), color=color, marker=marker, label=codec)
    ax.set_ylim(-0.02, 1.02)
    _bitrate_axis(ax)
    ax.grid(alpha=0.3)
    ax.set_title("clean accuracy of the targets (mean)", fontsize=9)
    ax.set_xlabel("achieved kbps (audio packets)")


def _bitrate_legend(fig: plt.Figure, axes: np.ndarray, n_panels: int) -> None:
    """One legend above ``axes`` (shape (3, n_panels)): the first panel's entries, the matched-noise
    style, then any other panel's new labels."""
    from matplotlib.lines import Line2D

    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles.append(Line2D([], [], color="grey", marker="o", mfc="none", ls="--"))
    labels.append("matched noise (dashed, open)")
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    ncol = min(len(labels), 3 * n_panels)
    fig.tight_layout(rect=(0, 0, 1, 0.96 if ncol == len(labels) else 0.93))
    fig.legend(handles, labels, loc="upper center", ncol=ncol, fontsize=8)


def _order(part: pd.DataFrame) -> tuple[list[str], dict[str, str]]:
    frontends = dict(zip(part["crafted_on"], part["source_frontend"], strict=False))
    frontends.update(zip(part["target_model"], part["target_frontend"], strict=False))

    def key(name: str) -> tuple[int, str]:
        f = frontends.get(name, "")
        return (FRONTEND_ORDER.index(f) if f in FRONTEND_ORDER else len(FRONTEND_ORDER)), name

    return sorted(frontends, key=key), frontends


def _grid(cells: pd.Series, sources: list[str], targets: list[str]) -> np.ndarray:
    """(sources, targets) float matrix of a (crafted_on, target_model)-indexed series."""
    wide = cells.unstack("target_model")
    return wide.reindex(index=sources, columns=targets).to_numpy(dtype=float)


def plot_heatmaps(rates: pd.DataFrame, conditions: list[str]) -> plt.Figure:
    """Source x target matrices of the excess of the success rate over the matched-noise control's
    (``excess_over_noise``), grouped by representation; each cell also reads ``rate | noise rate``.

    Rows: (dataset, attack); columns: conditions.
    """
    panels = _panels(rates)
    conditions = [c for c in conditions if c in set(rates["condition"])]
    if not panels or not conditions:
        return _empty("no rates for the heatmap conditions")
    names, frontends = _order(rates)
    n = len(names)
    size = max(3.2, 0.6 * n + 1.0)
    # Each row as tall as its matrix (one attack may have one source model, another all of them)
    # plus room for the rotated target names.
    rows = [
        rates.loc[(rates["dataset"] == d) & (rates["attack"] == a), "crafted_on"].nunique() for d, a in panels
    ]
    heights = [0.6 * k + 2.2 for k in rows]
    fig, axes = plt.subplots(
        len(panels),
        len(conditions),
        figsize=(size * len(conditions) + 2.5, sum(heights)),
        squeeze=False,
        layout="constrained",
        gridspec_kw={"height_ratios": heights},
    )
    image = None
    for r, (dataset, attack) in enumerate(panels):
        for c, condition in enumerate(conditions):
            ax = axes[r, c]
            part = rates[
                (rates["dataset"] == dataset)
                & (rates["attack"] == attack)
                & (rates["condition"] == condition)
            ]
            cells = part.groupby(["crafted_on", "target_model"])[
                ["success_rate", "noise_success_rate", "excess_over_noise"]
            ].mean()
            matrix = cells["excess_over_noise"].unstack("target_model")
            sources = [m for m in names if m in matrix.index]
            targets = [m for m in names if m in matrix.columns]

            values, rate, noise = (
                _grid(cells[c], sources, targets)
                for c in ("excess_over_noise", "success_rate", "noise_success_rate")
            )
            image = ax.imshow(values, vmin=-1, vmax=1, cmap="RdBu_r", aspect="equal")
            for i in range(len(sources)):
                for j in range(len(targets)):
                    if np.isfinite(values[i, j]):
                        ax.text(j, i, f"{values[i, j]:+.2f}\n{rate[i, j]:.2f}|{noise[i, j]:.2f}", ha="center",
                                va="center", fontsize=6, linespacing=1.1,
                                color="white" if abs(values[i, j]) > 0.6 else "black")  # fmt: skip
            for axis_names, line in ((sources, ax.axhline), (targets, ax.axvline)):
                for k in range(1, len(axis_names)):
                    if frontends.get(axis_names[k]) != frontends.get(axis_names[k - 1]):
                        line(k - 0.5, color="black", lw=1.5)
            ax.set_xticks(range(len(targets)), targets, rotation=60, ha="right", fontsize=7)
            labels = [f"{m} [{frontends.get(m, '?')}]" for m in sources] if c == 0 else []
            ax.set_yticks(range(len(sources)), labels, fontsize=7)
            label = part["condition_label"].iloc[0] if len(part) else condition
            ax.set_title(f"{attack} ({dataset}): {label}", fontsize=9)
            ax.set_xlabel("target model")
            if c == 0:
                ax.set_ylabel("source model (crafted on)")
    if image is not None:
        fig.colorbar(
            image,
            ax=axes,
            shrink=0.6,
            label="excess over matched noise: success rate − noise success rate\n"
            "(clean-correct examples; cells: excess, then rate | noise rate)",
        )
    return fig


def plot_room_eot(rates: pd.DataFrame, plain: str | None, eot: str | None, rooms: list[str]) -> plt.Figure:
    """Success after the room simulation (and with none): plain PGD against EOT-PGD, white-box and
    transfer; a black tick on each bar marks its matched-noise control's rate."""
    available = set(rates["attack"])
    missing = [name for name in (plain, eot) if not name or name not in available]
    if missing or not rooms:
        what = "no room settings" if not rooms else f"attack(s) {missing} not in the tables"
        return _empty(
            f"room: PGD vs EOT-PGD not drawn: {what} (set transfer.eot_comparison and codecs.rooms)"
        )
    datasets = list(dict.fromkeys(rates["dataset"]))
    conditions = ["none", *[r for r in rooms if r in set(rates["condition"])]]
    fig, axes = plt.subplots(
        len(datasets), 2, figsize=(4.5 + 1.2 * len(conditions), 3.6 * len(datasets)), squeeze=False
    )
    width = 0.38
    for r, dataset in enumerate(datasets):
        for c, (group, title) in enumerate(
            (("self", "white-box (target = source)"), ("transfer", "transfer (target ≠ source)"))
        ):
            ax = axes[r, c]
            sub = rates[rates["dataset"] == dataset]
            sub = sub[sub["relation"] == "self"] if group == "self" else sub[sub["relation"] != "self"]
            for k, (attack, color) in enumerate(((plain, "tab:grey"), (eot, "tab:purple"))):
                cells = [sub[(sub["attack"] == attack) & (sub["condition"] == cond)] for cond in conditions]
                heights = [_pooled(cell) for cell in cells]
                xs = np.arange(len(conditions)) + (k - 0.5) * width
                ax.bar(xs, heights, width, color=color, label=attack)
                noise = [_pooled(cell, "n_noise_success") for cell in cells]
                ax.plot(xs, noise, "_", color="black", ms=14, mew=2,
                        label="matched noise" if k == 0 else None)  # fmt: skip
                for x, h in zip(xs, heights, strict=True):
                    if np.isfinite(h):
                        ax.text(x, h + 0.02, f"{h:.2f}", ha="center", fontsize=7)
            ax.set_xticks(range(len(conditions)), conditions, rotation=20)
            ax.set_ylim(0, 1.1)
            ax.set_ylabel("success rate")
            ax.set_title(f"{dataset}: {title}", fontsize=9)
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="advmir plot-transfer", description=__doc__)
    parser.add_argument("--rates", required=True, help="results/tables/transfer_rates.csv")
    parser.add_argument("--clean", required=True, help="results/tables/codec_clean_accuracy.csv")
    parser.add_argument("--heatmap-conditions", nargs="+", default=["none", "mp3_128k"])
    parser.add_argument("--rooms", nargs="*", default=[], help="room setting names")
    parser.add_argument("--plain-attack", default=None, help="e.g. pgd")
    parser.add_argument("--eot-attack", default=None, help="e.g. eot_pgd")
    parser.add_argument("--out-bitrate", nargs="+", required=True)
    parser.add_argument("--out-heatmaps", nargs="+", required=True)
    parser.add_argument("--out-room", nargs="+", required=True)
    args = parser.parse_args(argv)
    setup_logging()
    rates = read_csv(args.rates)
    clean = read_csv(args.clean)
    save_figure(plot_bitrate(rates, clean), args.out_bitrate)
    save_figure(plot_heatmaps(rates, args.heatmap_conditions), args.out_heatmaps)
    save_figure(plot_room_eot(rates, args.plain_attack, args.eot_attack, args.rooms), args.out_room)
    return 0
