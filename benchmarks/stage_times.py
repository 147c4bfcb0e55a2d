"""Time and peak memory per stage, summed from the rules' benchmark files of a finished run.

    python benchmarks/stage_times.py [results]

Prints one row per stage (the first folder under results/benchmarks/): jobs, summed wall seconds,
summed CPU seconds, and the largest max RSS of any job. On N cores the stage's wall time is about
its CPU seconds / N when its jobs run in parallel. :func:`read_benchmarks` is the one reader of
benchmark files (benchmarks/cost_model.py predicts other configs' costs from it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def read_benchmarks(results: Path) -> pd.DataFrame:
    """One row per benchmark file of results/benchmarks/**.tsv (the last measurement of each).

    Columns: ``path`` (relative to results/benchmarks, POSIX, with its .tsv), ``stage`` (its first
    folder), ``s`` (wall seconds), ``cpu_time`` (CPU seconds; NaN when the file has none) and
    ``max_rss_mb``.
    """
    rows = []
    root = Path(results) / "benchmarks"
    for tsv in sorted(root.rglob("*.tsv")):
        bench = pd.read_csv(tsv, sep="\t")
        relative = tsv.relative_to(root)
        rows.append(
            {
                "path": relative.as_posix(),
                "stage": relative.parts[0],
                "s": float(bench["s"].iloc[-1]),
                "cpu_time": float(bench.get("cpu_time", pd.Series([float("nan")])).iloc[-1]),
                "max_rss_mb": float(bench["max_rss"].iloc[-1]),
            }
        )
    return pd.DataFrame(rows, columns=["path", "stage", "s", "cpu_time", "max_rss_mb"])


def stage_times(results: Path) -> pd.DataFrame:
    """One row per stage from results/benchmarks/STAGE/**.tsv."""
    table = read_benchmarks(results)
    if table.empty:
        return table
    return (
        table.groupby("stage")
        .agg(
            jobs=("s", "size"),
            wall_s=("s", "sum"),
            cpu_s=("cpu_time", "sum"),
            max_rss_mb=("max_rss_mb", "max"),
        )
        .round(1)
        .reset_index()
    )


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "results")
    print(stage_times(root).to_string(index=False))
