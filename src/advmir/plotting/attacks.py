"""Figures of the attack stage, from results/tables/attacks.csv and each run's examples.csv.

- success vs SNR budget: per attack (panel) and model (colour), the share of clean-correct clips the
  attack fooled with a perturbation at least b dB below the clip, against b. An example that fooled
  the model at SNR s also counts for every budget b <= s, so each line is a lower bound of the
  success at that budget from one run; the marker is the run's own budget and success rate. Beside
  each attack line, dashed in the same colour, its control: the same clips with white noise at each
  example's own SNR (matched_noise.npy), counted the same way; the open marker is its rate at the
  run's budget.
- SNR distribution of the successful examples, per attack and model.
- spectrogram panel: clean, adversarial and perturbation of a few listenable examples of one run.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from advmir.artifacts import load_npz, read_csv, read_json
from advmir.plotting.common import save_figure
from advmir.runtime import setup_logging

log = logging.getLogger(__name__)


def load_examples(run_dirs: list[Path]) -> pd.DataFrame:
    """Every run's examples.csv, with dataset, model, attack, algorithm and threat columns added."""
    frames = []
    for run in run_dirs:
        meta = read_json(run / "attack.json", keys=("dataset", "model", "attack", "algorithm", "threat"))
        ex = read_csv(run / "examples.csv")
        for key in ("dataset", "model", "attack", "algorithm", "threat"):
            ex[key] = meta[key]
        frames.append(ex)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def success_curves(examples: pd.DataFrame, grid: np.ndarray) -> pd.DataFrame:
    """Share of clean-correct clips fooled at SNR >= b for each b of ``grid``, per dataset, model, attack:
    by the adversarial examples (``success_rate``) and by their matched noise (``noise_success_rate``,
    NaN for runs without the control)."""

    def rate(correct: pd.DataFrame, success: str, snr: str) -> np.ndarray:
        if success not in correct or correct[success].isna().all():  # a run from before the control
            return np.full(len(grid), np.nan)
        fooled = correct.loc[correct[success].astype(bool), snr].to_numpy()
        return (fooled[None, :] >= grid[:, None]).sum(axis=1) / len(correct)

    rows = []
    for (dataset, model, attack), ex in examples.groupby(["dataset", "model", "attack"], sort=True):
        correct = ex[ex["clean_correct"]]
        if correct.empty:
            continue
        curve = {"dataset": dataset, "model": model, "attack": attack, "budget_db": grid}
        curve["success_rate"] = rate(correct, "success", "snr_db")
        curve["noise_success_rate"] = rate(correct, "noise_success", "noise_snr_db")
        rows.append(pd.DataFrame(curve))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def plot_success_vs_snr(table: pd.DataFrame, examples: pd.DataFrame) -> plt.Figure:
    """One panel per (dataset, attack): success rate against the SNR budget, one colour per model: the
    attack (solid line, filled dot at the run's budget) and its matched-noise control (dashed line,
    open dot)."""
    finite = examples.loc[np.isfinite(examples["snr_db"]) & examples["success"], "snr_db"]
    top = float(np.ceil(finite.max() / 5) * 5 + 5) if len(finite) else 60.0
    grid = np.linspace(0.0, max(top, 10.0), 241)
    curves = success_curves(examples, grid)
    panels = table[["dataset", "attack"]].drop_duplicates().values.tolist()
    cols = min(3, max(len(panels), 1))
    rows = max(math.ceil(len(panels) / cols), 1)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False, sharey=True)
    models = sorted(table["model"].unique())
    palette = dict(zip(models, sns.color_palette("tab10", len(models)), strict=True))
    for k, (dataset, attack) in enumerate(panels):
        ax = axes[k // cols, k % cols]
        sel = curves[(curves["dataset"] == dataset) & (curves["attack"] == attack)] if len(curves) else curves
        for model, line in sel.groupby("model") if len(sel) else []:
            ax.plot(line["budget_db"], line["success_rate"], color=palette[model], label=model, lw=1.5)
            ax.plot(line["budget_db"], line["noise_success_rate"], color=palette[model], lw=1.2, ls="--")
        points = table[(table["dataset"] == dataset) & (table["attack"] == attack)]
        for _, p in points.iterrows():
            if pd.isna(p["budget_snr_db"]):
                continue
            if pd.notna(p["success_rate"]):
                ax.plot(p["budget_snr_db"], p["success_rate"], "o", color=palette[p["model"]], ms=6, mec="k")
            if pd.notna(p.get("noise_success_rate")):
                ax.plot(p["budget_snr_db"], p["noise_success_rate"], "o", mfc="none", mec=palette[p["model"]],
                        ms=6, mew=1.5)  # fmt: skip
        info = points.iloc[0]
        ax.set_title(f"{attack} ({info['algorithm']}, {info['threat']})" + (
            f"\n{dataset}" if table["dataset"].nunique() > 1 else ""), fontsize=9)  # fmt: skip
        ax.set_xlabel("SNR budget b (dB): perturbation at least b dB below the clip")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if k % cols == 0:
            ax.set_ylabel("success rate (clean-correct clips)")
    for k in range(len(panels), rows * cols):
        axes[k // cols, k % cols].axis("off")
    handles = [plt.Line2D([], [], color=palette[m], lw=2, label=m) for m in models]
    handles.append(
        plt.Line2D([], [], color="grey", lw=1.5, marker="o", mec="k", label="attack (dot: run budget)")
    )
    handles.append(plt.Line2D([], [], color="grey", lw=1.2, ls="--", marker="o", mfc="none",
                              label="matched noise (same clips, same SNR)"))  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), frameon=False,
               bbox_to_anchor=(0.5, -0.02 - 0.03 * math.ceil(len(handles) / 4)))  # fmt: skip
    fig.tight_layout()
    return fig


def plot_snr_distribution(examples: pd.DataFrame) -> plt.Figure:
    """Box and strip plot of the SNR (dB) of successful examples, per attack (x) and model (hue)."""
    ok = examples[examples["success"] & np.isfinite(examples["snr_db"])].copy()
    ok["panel"] = ok["dataset"] + ": " + ok["attack"] if examples["dataset"].nunique() > 1 else ok["attack"]
    order = sorted(examples["attack"].unique()) if examples["dataset"].nunique() == 1 else None
    width = max(6.0, 1.3 * examples["attack"].nunique() * max(1, examples["model"].nunique()) ** 0.5)
    fig, ax = plt.subplots(figsize=(width, 4.2))
    if ok.empty:
        ax.text(0.5, 0.5, "no successful examples", ha="center", va="center", transform=ax.transAxes)
    else:
        hue_order = sorted(ok["model"].unique())
        sns.boxplot(data=ok, x="panel", y="snr_db", hue="model", order=order, hue_order=hue_order, ax=ax,
                    showfliers=False, fill=False, linewidth=1)  # fmt: skip
        np.random.seed(0)  # noqa: NPY002 - the strip plot's jitter comes from NumPy's global generator: the same each run
        sns.stripplot(data=ok, x="panel", y="snr_db", hue="model", order=order, hue_order=hue_order, ax=ax,
                      dodge=True, size=2, alpha=0.5, legend=False)  # fmt: skip
        ax.legend(title="model", fontsize=7, title_fontsize=8, loc="best")
    ax.set_xlabel("attack")
    ax.set_ylabel("SNR of successful examples (dB)")
    ax.grid(axis="y", alpha=0.3)
    ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    return fig


def _spectrogram_db(audio: np.ndarray, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """Magnitude STFT in dB (a full-scale sine peaks near 0 dB), shape (n_fft // 2 + 1, frames)."""
    audio = np.pad(np.asarray(audio, dtype=np.float64), n_fft // 2)
    window = np.hanning(n_fft + 1)[:-1]
    frames = np.lib.stride_tricks.sliding_window_view(audio, n_fft)[::hop] * window
    spec = np.abs(np.fft.rfft(frames, axis=1)).T / window.sum() * 2
    return 20 * np.log10(spec + 1e-10)


def plot_spectrogram_panel(run_dir: Path, n_examples: int = 2) -> plt.Figure:
    """Rows: clean, adversarial, perturbation (adversarial - clean); one column per listen/ example."""
    meta = read_json(run_dir / "attack.json", keys=("model", "attack", "algorithm", "threat"))
    examples = read_csv(run_dir / "examples.csv", columns=["id"]).set_index("id")
    panel_file = run_dir / "listen" / "panel.npz"
    panel = load_npz(panel_file) if panel_file.exists() else None
    names = [str(n) for n in panel["ids"]][:n_examples] if panel is not None else []
    classes = meta.get("classes") or []
    cols = max(len(names), 1)
    fig, axes = plt.subplots(3, cols, figsize=(4.6 * cols, 8.0), squeeze=False, layout="constrained")
    if not names:
        axes[0, 0].text(0.5, 0.5, "no listenable examples in this run", ha="center", va="center")

    def cls(i: int) -> str:
        return classes[i] if 0 <= i < len(classes) else str(i)

    # one colour scale for the whole figure: the loudest clean bin is 0 dB on the bar's top
    vmax = max(float(_spectrogram_db(c).max()) for c in panel["clean"][: len(names)]) if names else 0.0
    for col, name in enumerate(names):
        clean = panel["clean"][col].astype(np.float64)
        adv = panel["adversarial"][col].astype(np.float64)
        rate = int(panel["sample_rate"])
        row = examples.loc[name] if name in examples.index else None
        specs = [_spectrogram_db(clean), _spectrogram_db(adv), _spectrogram_db(adv - clean)]
        extent = (0, len(clean) / rate, 0, rate / 2000)
        titles = ["clean", "adversarial", "perturbation"]
        if row is not None:
            titles[0] = f"{name}\nclean: {cls(int(row['label']))}, predicted {cls(int(row['clean_pred']))}"
            titles[1] = f"adversarial: predicted {cls(int(row['adv_pred']))} ({row['adv_conf']:.2f})"
            titles[2] = f"perturbation: SNR {row['snr_db']:.1f} dB"
        for r, (spec, title) in enumerate(zip(specs, titles, strict=True)):
            ax = axes[r, col]
            im = ax.imshow(spec, origin="lower", aspect="auto", extent=extent, cmap="magma",
                           vmin=vmax - 100, vmax=vmax)  # fmt: skip
            ax.set_title(title, fontsize=8)
            ax.set_ylabel("kHz" if col == 0 else "")
            if r == 2:
                ax.set_xlabel("time (s)")
            else:
                ax.tick_params(labelbottom=False)
    if names:
        fig.colorbar(im, ax=axes.ravel().tolist(), label="dB (one scale for every panel)", shrink=0.6)
    fig.suptitle(f"{meta['model']} / {meta['attack']} ({meta['algorithm']}, {meta['threat']})", fontsize=10)
    return fig


def main(argv: list[str]) -> int:
    """Entry point of ``python -m advmir plot-attacks``."""
    p = argparse.ArgumentParser(prog="python -m advmir plot-attacks", description=__doc__.split("\n\n")[0])
    p.add_argument("--table", required=True, help="results/tables/attacks.csv")
    p.add_argument("--runs", nargs="+", required=True, help="craft output folders (or files inside them)")
    p.add_argument("--panel", help="the run whose listenable examples make the spectrogram panel")
    p.add_argument("--success-vs-snr", nargs="+", required=True, help="figure paths (.png and/or .pdf)")
    p.add_argument("--snr-distribution", nargs="+", required=True, help="figure paths (.png and/or .pdf)")
    p.add_argument("--spectrograms", nargs="+", required=True, help="figure paths (.png and/or .pdf)")
    args = p.parse_args(argv)
    setup_logging()
    runs = list(dict.fromkeys(Path(r) if Path(r).is_dir() else Path(r).parent for r in args.runs))
    table = read_csv(args.table)
    examples = load_examples(runs)
    save_figure(plot_success_vs_snr(table, examples), args.success_vs_snr)
    save_figure(plot_snr_distribution(examples), args.snr_distribution)
    panel = Path(args.panel) if args.panel else runs[0]
    panel = panel if panel.is_dir() else panel.parent
    save_figure(plot_spectrogram_panel(panel), args.spectrograms)
    log.info("wrote the attack figures")
    return 0
