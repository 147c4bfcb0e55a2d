"""Shared plotting helpers: a non-interactive backend and atomic multi-format saving."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from advmir.io import atomic_path


def save_figure(fig: plt.Figure, paths: list[str]) -> None:
    """Save ``fig`` to every path (format from the extension), each atomically; then close it.

    PDFs are written without a creation date, SVGs without a date and with fixed ids, so that one
    figure gives the same bytes in every run.
    """
    for path in paths:
        fmt = str(path).rsplit(".", 1)[-1]
        metadata = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(fmt)
        with atomic_path(path, suffix="." + fmt) as tmp, matplotlib.rc_context({"svg.hashsalt": "advmir"}):
            fig.savefig(tmp, dpi=150, format=fmt, bbox_inches="tight", metadata=metadata)
    plt.close(fig)
