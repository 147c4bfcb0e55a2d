"""Print the PIDs of live Snakemake processes that work in a folder, one per line (Linux /proc).

    python workflow/scripts/live_snakemake.py FOLDER

`make unlock-stale` removes Snakemake's lock only when this prints nothing. A process counts when
its command line runs Snakemake (a `.../snakemake` script, or `python -m snakemake`) and either its
current directory or its `--directory`/`-d` is FOLDER: Snakemake changes into `--directory` soon
after it starts, so both are checked. Erring towards "live" only keeps a stale lock; erring the
other way would unlock a running workflow.
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path


def runs_snakemake(argv: list[str]) -> bool:
    """``.../snakemake ...`` (the console script, maybe under its python) or ``python -m snakemake``."""
    if any(Path(arg).name == "snakemake" for arg in argv[:2]):
        return True
    pairs = itertools.pairwise(argv)
    return "-msnakemake" in argv or any(a == "-m" and b == "snakemake" for a, b in pairs)


def directory_option(argv: list[str]) -> str | None:
    """The value of the last ``--directory``/``-d`` option, if any."""
    found = None
    for i, arg in enumerate(argv):
        if arg in ("--directory", "-d") and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith("--directory="):
            found = arg.split("=", 1)[1]
    return found


def live_pids(folder: str | Path, proc: Path = Path("/proc")) -> list[int]:
    """PIDs of Snakemake processes working in ``folder`` (this process excluded)."""
    target = Path(folder).resolve()
    pids = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = [a for a in (entry / "cmdline").read_bytes().decode(errors="replace").split("\0") if a]
        except OSError:  # gone meanwhile
            continue
        if not runs_snakemake(argv):
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:  # another user's process: its --directory alone tells
            cwd = None
        directory = directory_option(argv)
        places = {cwd} if cwd else set()
        if directory and (cwd or Path(directory).is_absolute()):
            places.add(((cwd or Path("/")) / directory).resolve())
        if target in places:
            pids.append(int(entry.name))
    return sorted(pids)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    for pid in live_pids(argv[0]):
        print(pid)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
