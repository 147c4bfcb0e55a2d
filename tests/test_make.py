"""`make unlock-stale`'s liveness check (workflow/scripts/live_snakemake.py): a Snakemake process
works in a folder by its current directory or its --directory, started as bin/snakemake or as
`python -m snakemake` (the way the tests start it)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "workflow" / "scripts" / "live_snakemake.py"
SLEEP = "import time; time.sleep(60)"


def live(folder: Path) -> list[int]:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(folder)], capture_output=True, text=True, check=True
    )
    return [int(pid) for pid in out.stdout.split()]


@pytest.mark.parametrize(
    ("argv", "where"),
    [
        # `python -m snakemake` in the folder (what pgrep on 'bin/snakemake' missed)
        (["-c", SLEEP, "-m", "snakemake", "--cores", "1"], "cwd"),
        # started elsewhere with --directory FOLDER, before Snakemake changes into it
        (["-c", SLEEP, "-m", "snakemake", "--directory", "{work}"], "elsewhere"),
        (["-c", SLEEP, "-m", "snakemake", "-d", "{work}"], "elsewhere"),
    ],
)
def test_a_snakemake_process_is_live_in_its_folder_only(tmp_path, argv, where):
    work, other = tmp_path / "work", tmp_path / "other"
    work.mkdir()
    other.mkdir()
    args = [a.format(work=work) for a in argv]
    proc = subprocess.Popen([sys.executable, *args], cwd=work if where == "cwd" else other)
    try:
        deadline = time.monotonic() + 10
        while proc.pid not in live(work) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.pid in live(work)
        if where == "cwd":
            assert proc.pid not in live(other)
    finally:
        proc.kill()
        proc.wait()
    assert proc.pid not in live(work)


def test_other_python_processes_are_not_snakemake(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SLEEP, "-m", "advmir"], cwd=tmp_path)
    try:
        time.sleep(0.2)
        assert proc.pid not in live(tmp_path)
    finally:
        proc.kill()
        proc.wait()


def unlock_stale(folder: Path) -> subprocess.CompletedProcess:
    """`make unlock-stale` in ``folder`` (its Snakemake stubbed by `true`), as `make run` calls it."""
    return subprocess.run(
        ["make", "-s", "-f", str(REPO / "Makefile"), "-C", str(folder), "unlock-stale",
         f"BIN={Path(sys.executable).parent}", "SMK=true"],
        capture_output=True, text=True,
    )  # fmt: skip


def test_make_unlock_stale_keeps_the_lock_of_a_live_python_m_snakemake(tmp_path):
    (tmp_path / ".snakemake" / "locks").mkdir(parents=True)
    (tmp_path / ".snakemake" / "locks" / "0.input.lock").write_text("x")
    (tmp_path / "workflow").mkdir()
    (tmp_path / "workflow" / "scripts").symlink_to(SCRIPT.parent)
    proc = subprocess.Popen([sys.executable, "-c", SLEEP, "-m", "snakemake", "--cores", "1"], cwd=tmp_path)
    try:
        time.sleep(0.2)
        kept = unlock_stale(tmp_path)
    finally:
        proc.kill()
        proc.wait()
    assert kept.returncode == 0 and "removing" not in kept.stdout, kept
    removed = unlock_stale(tmp_path)
    assert removed.returncode == 0 and "removing a stale Snakemake lock" in removed.stdout, removed


def test_make_unlock_stale_keeps_the_lock_when_the_check_fails(tmp_path):
    (tmp_path / ".snakemake" / "locks").mkdir(parents=True)
    (tmp_path / ".snakemake" / "locks" / "0.input.lock").write_text("x")
    failed = unlock_stale(tmp_path)  # no workflow/scripts/live_snakemake.py here
    assert failed.returncode != 0 and "removing" not in failed.stdout, failed
