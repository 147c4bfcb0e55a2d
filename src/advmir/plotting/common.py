"""Shared plotting helpers: a non-interactive backend, atomic multi-format saving, and the command of a
figure drawn from one table."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from advmir.io import atomic_path

log = logging.getLogger(__name__)


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


def table_figure_command(
    argv: list[str],
    prog: str,
    plot: Callable[..., plt.Figure],
    table_help: str,
    columns: Sequence[str],
) -> int:
    """A figure command: read ``--table`` (checked for ``columns``), draw it with ``plot`` (whose
    docstring is the description) and save it to every ``--out`` path; returns the exit code."""
    from advmir.artifacts import read_csv
    from advmir.runtime import setup_logging

    parser = argparse.ArgumentParser(prog=prog, description=plot.__doc__)
    parser.add_argument("--table", required=True, help=table_help)
    parser.add_argument("--out", nargs="+", required=True, help="figure paths (.png and/or .pdf)")
    args = parser.parse_args(argv)
    setup_logging()
    save_figure(plot(read_csv(args.table, columns=columns)), args.out)
    log.info("wrote %s", ", ".join(args.out))
    return 0
