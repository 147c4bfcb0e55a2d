"""Shared plotting helpers: a non-interactive backend and atomic multi-format saving."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from advmir.io import atomic_path


def save_figure(fig: plt.Figure, paths: list[str]) -> None:
    """Save ``fig`` to every path (format from the extension), each atomically; then close it."""
    for path in paths:
        fmt = str(path).rsplit(".", 1)[-1]
        with atomic_path(path, suffix="." + fmt) as tmp:
            fig.savefig(tmp, dpi=150, format=fmt, bbox_inches="tight")
    plt.close(fig)
