"""The slurm profile on a real single-node SLURM cluster on 127.0.0.1.

tests/slurm/cluster.sh installs the Debian packages when they are missing, starts munged, MariaDB,
slurmdbd, slurmctld and slurmd (so that the executor plugin polls job states with `sacct`, its
default), and stops every daemon by its PID when this module ends. Snakemake runs with
workflow/profiles/slurm plus the test cluster's account and short status intervals:

- the advmir workflow on the tiny config of conftest.py (one model; the targets of the models stage,
  so that one rule of each kind runs: render, train, summarize, plot): `sacct` must list every job
  as its own completed SLURM job, with the CPUs, memory and time limit Snakemake gave it;
- a three-rule workflow written here, submitted from a shell whose PATH lacks the venv: its jobs
  must run this venv's python inside their SLURM job, and its failing rule must be FAILED in `sacct`,
  submitted once, with Snakemake exiting non-zero.

Needs root and apt (or the packages installed); otherwise it is skipped, and the reason printed.
Set ADVMIR_SKIP_SLURM=1 to skip it on purpose. About two minutes once the packages are in.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import announce, skip_loudly, tiny_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SH = REPO / "tests" / "slurm" / "cluster.sh"
PROFILE = REPO / "workflow" / "profiles" / "slurm"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
VENV_BIN = str(Path(sys.executable).parent)
ACCOUNT = "ci"  # made by cluster.sh
PARTITION = "debug"
CANNOT_RUN = 3  # cluster.sh exit status: this machine cannot host the cluster
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")
SNAKEMAKE_TIMEOUT = 600  # seconds; a hung status loop fails the test instead of hanging CI

# The command-line overrides that turn the profile into a test run: the test cluster's account and
# partition, small defaults, and a first status check after 2 s instead of 40.
TEST_OVERRIDES = [
    "--default-resources", f"slurm_account={ACCOUNT}", f"slurm_partition={PARTITION}",
    "mem_mb=500", "runtime=5",
    "--slurm-init-seconds-before-status-checks", "2",
    "--seconds-between-status-checks", "1",
    "--max-status-checks-per-second", "10",
    "--latency-wait", "5",
    "--jobs", "4",
    "--verbose",  # the plugin names its status command (sacct) only at debug level
]  # fmt: skip
# One rule of each kind of the advmir workflow; later stages add many jobs, which test_workflow.py
# covers without a cluster.
ADVMIR_TARGETS = ("tables/clean_accuracy.csv", "figures/clean_accuracy.png")
ADVMIR_RULES = {"render_synth_notes", "train_model", "summarize_models", "plot_models"}

# Three rules with distinct resources, so that sacct can tell each request apart; `combine`
# fails on purpose when the config says so. Each job records what it saw from inside SLURM.
SNAKEFILE = """\
import os
import sys

# A SLURM job runs its shell with the environment of the submitting shell (sbatch --export=ALL),
# where `python` need not be this venv's: put the interpreter that runs Snakemake first.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]


rule all:
    input:
        "combined.json",


rule probe_small:
    output:
        "small.json",
    log:
        "logs/small.log",
    resources:
        mem_mb=300,
        runtime=3,
    threads: 1
    shell:
        "python probe.py {output} 2> {log}"


rule probe_large:
    output:
        "large.json",
    log:
        "logs/large.log",
    resources:
        mem_mb=700,
        runtime=4,
    threads: 1
    shell:
        "python probe.py {output} 2> {log}"


rule combine:
    input:
        "small.json",
        "large.json",
    output:
        "combined.json",
    params:
        fail=int(config.get("fail", 0)),
    log:
        "logs/combined.log",
    resources:
        mem_mb=600,
        runtime=2,
    threads: 2
    shell:
        "if [ {params.fail} = 1 ]; then echo 'failing on purpose' > {log}; exit 3; fi; "
        "python probe.py {output} 2> {log}"
"""

PROBE = """\
import json
import os
import sys

with open(sys.argv[1], "w") as handle:
    json.dump(
        {
            "job_id": os.environ.get("SLURM_JOB_ID"),
            "cpus_per_task": os.environ.get("SLURM_CPUS_PER_TASK"),
            "prefix": sys.prefix,
        },
        handle,
    )
"""

# rule -> (threads, mem_mb, runtime in minutes), as SNAKEFILE writes them
REQUESTED = {"probe_small": (1, 300, 3), "probe_large": (1, 700, 4), "combine": (2, 600, 2)}
SACCT_FIELDS = ("JobIDRaw", "JobName", "Comment", "State", "ExitCode", "AllocCPUS", "ReqMem", "Timelimit",
                "Account", "Partition")  # fmt: skip


@dataclass
class Cluster:
    base: Path
    pids: dict[str, int]
    timings: dict[str, float]


@dataclass
class Run:
    workdir: Path
    result: subprocess.CompletedProcess[str]
    seconds: float


def _announce(config: pytest.Config, message: str) -> None:
    announce(config, "test_slurm", message)


def _skip(config: pytest.Config, reason: str) -> None:
    skip_loudly(config, "test_slurm", reason)


def _cannot_run_reason() -> str | None:
    """Why this machine cannot host the test cluster, or None if it can (as far as we can tell)."""
    if os.environ.get("ADVMIR_SKIP_SLURM"):
        return "ADVMIR_SKIP_SLURM is set"
    if not sys.platform.startswith("linux"):
        return f"needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "needs root: it installs Debian packages, runs slurmd and links /etc/slurm/slurm.conf"
    if shutil.which("bash") is None:
        return "needs bash for tests/slurm/cluster.sh"
    tools = ("munged", "slurmctld", "slurmd", "slurmdbd", "sbatch", "sacct", "sacctmgr", "mariadbd",
             "mariadb-install-db", "mariadb")  # fmt: skip
    installed = all(shutil.which(t) for t in tools)
    if not installed and shutil.which("apt-get") is None:
        return "SLURM/munge/MariaDB are not installed and there is no apt-get to install them"
    if not SNAKEMAKE.exists():
        return f"no snakemake next to {sys.executable}"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed in this Python environment"
    conf = Path("/etc/slurm/slurm.conf")
    if conf.exists() and not conf.is_symlink():
        return f"{conf} is a real SLURM config; the test will not replace it"
    return None


def _is_alive(pid: int, name: str) -> bool:
    """PID runs and still is NAME (Debian's daemons are NAME-wlm behind an alternatives link)."""
    try:
        exe = Path(os.readlink(f"/proc/{pid}/exe")).name.removesuffix(" (deleted)")
    except OSError:
        return False
    return exe in (name, f"{name}-wlm")


def _read_pids(base: Path) -> dict[str, int]:
    pids = {}
    for name in DAEMONS:
        pid_file = base / "pids" / f"{name}.pid"
        if pid_file.exists():
            pids[name] = int(pid_file.read_text().strip())
    return pids


def _env(venv_on_path: bool) -> dict[str, str]:
    """The environment to submit from: with the venv activated (as `make` runs), or not.

    SLURM_* variables are dropped (the test may itself run inside a SLURM job). Without the venv on
    PATH, as for a user who types .venv/bin/snakemake, jobs find the venv's python only if the
    workflow puts it there.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != VENV_BIN]
    env["PATH"] = os.pathsep.join([VENV_BIN, *path] if venv_on_path else path)
    return env


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = _cannot_run_reason()
    if reason:
        _skip(request.config, reason)
    base = tmp_path_factory.mktemp("slurm-cluster")
    started = time.monotonic()
    pids: dict[str, int] = {}
    timings: dict[str, float] = {}
    try:
        proc = subprocess.run(
            ["bash", str(CLUSTER_SH), "start", str(base)],
            capture_output=True, text=True, timeout=900, env=_env(venv_on_path=False),
        )  # fmt: skip
        pids = _read_pids(base)
        if proc.returncode == CANNOT_RUN:
            lines = [ln for ln in proc.stderr.splitlines() if "CANNOT RUN" in ln]
            _skip(request.config, lines[-1].split("CANNOT RUN: ", 1)[-1] if lines else proc.stderr)
        assert proc.returncode == 0, f"cluster.sh start failed ({proc.returncode}):\n{proc.stderr}"
        timings["cluster_start"] = time.monotonic() - started
        _announce(request.config, f"cluster up in {timings['cluster_start']:.1f} s under {base}")
        yield Cluster(base=base, pids=pids, timings=timings)
    finally:
        stopped = time.monotonic()
        pids = {**pids, **_read_pids(base)}
        stop = subprocess.run(
            ["bash", str(CLUSTER_SH), "stop", str(base)], capture_output=True, text=True, timeout=120
        )
        survivors = {name: pid for name, pid in pids.items() if _is_alive(pid, name)}
        for pid in survivors.values():  # last resort, still by PID only
            os.kill(pid, signal.SIGKILL)
        if pids:
            timings["cluster_stop"] = time.monotonic() - stopped
            _announce(request.config, "seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
        assert stop.returncode == 0, f"cluster.sh stop failed:\n{stop.stderr}"
        assert not survivors, f"daemons survived cluster.sh stop and were killed: {survivors}"
        assert not Path("/etc/slurm/slurm.conf").is_symlink() or not os.readlink(
            "/etc/slurm/slurm.conf"
        ).startswith(str(base)), "cluster.sh stop left the /etc/slurm/slurm.conf symlink"


def _start_snakemake(workdir: Path, *extra: str, venv_on_path: bool) -> subprocess.Popen:
    """Start Snakemake with the slurm profile in WORKDIR; its output goes to WORKDIR/snakemake.{out,err}."""
    command = [
        str(SNAKEMAKE),
        "--profile",
        str(PROFILE),
        "--directory",
        str(workdir),
        *TEST_OVERRIDES,
        *extra,
    ]
    with open(workdir / "snakemake.out", "w") as out, open(workdir / "snakemake.err", "w") as err:
        return subprocess.Popen(
            command, cwd=workdir, stdout=out, stderr=err, text=True, env=_env(venv_on_path)
        )


def _wait_for_all(processes: dict[str, tuple[Path, subprocess.Popen]]) -> dict[str, Run]:
    """Wait for every Snakemake process (SIGTERM after SNAKEMAKE_TIMEOUT) and collect its Run."""
    started = time.monotonic()
    ended: dict[str, float] = {}
    try:
        while len(ended) < len(processes):
            for name, (_, process) in processes.items():
                if name not in ended and process.poll() is not None:
                    ended[name] = time.monotonic()
            if time.monotonic() - started > SNAKEMAKE_TIMEOUT:
                break
            time.sleep(0.5)
    finally:  # timed out or interrupted: stop what still runs (Snakemake cancels its SLURM jobs)
        for name, (_, process) in processes.items():
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=60)
                ended[name] = time.monotonic()
    runs = {}
    for name, (workdir, process) in processes.items():
        out, err = (workdir / "snakemake.out").read_text(), (workdir / "snakemake.err").read_text()
        result = subprocess.CompletedProcess(process.args, process.returncode, out, err)
        runs[name] = Run(workdir=workdir, result=result, seconds=ended[name] - started)
    return runs


def _sacct() -> dict[str, dict[str, str]]:
    """SLURM job id -> sacct fields, for every job the test cluster's accounting knows (no steps)."""
    out = subprocess.run(
        ["sacct", "--allusers", "-X", "--parsable2", "--noheader", "--starttime", "2000-01-01",
         "--format", ",".join(SACCT_FIELDS)],
        capture_output=True, text=True, check=True, env=_env(venv_on_path=False),
    ).stdout  # fmt: skip
    rows = [dict(zip(SACCT_FIELDS, line.split("|"), strict=True)) for line in out.splitlines() if line]
    return {row["JobIDRaw"]: row for row in rows}


def _log(run: Run) -> str:
    tail = run.result.stderr[-6000:]
    return f"exit {run.result.returncode} after {run.seconds:.0f} s\n--- Snakemake stderr (tail) ---\n{tail}"


@dataclass
class Job:
    """One job as Snakemake announced it, and the SLURM job it was submitted as."""

    rule: str
    threads: int
    mem_mb: int
    runtime: int  # minutes
    slurm_id: str


def _submitted_jobs(run: Run) -> list[Job]:
    """Every job of RUN that went to SLURM, with the resources Snakemake printed for it.

    Snakemake prints a block per job (`rule NAME:`, then indented `jobid:`, `threads:` when not 1,
    `resources:`), and the plugin a line `Job N has been submitted with SLURM jobid M`.
    """
    blocks: dict[str, dict] = {}
    current: dict | None = None
    for line in [*run.result.stderr.splitlines(), ""]:
        match = re.fullmatch(r"(local)?rule (\w+):", line)
        if match:
            current = {"rule": match.group(2), "local": bool(match.group(1)), "threads": "1"}
        elif current is not None and line.startswith("    "):
            key, _, value = line.strip().partition(": ")
            current[key] = value
        elif current is not None:
            if "jobid" in current:
                blocks[current["jobid"]] = current
            current = None
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", run.result.stderr))
    remote = {jobid for jobid, block in blocks.items() if not block["local"]}
    assert remote == set(submitted), f"jobs {sorted(remote)} announced, {sorted(submitted)} submitted"
    jobs = []
    for jobid, slurm_id in submitted.items():
        block = blocks[jobid]
        res = dict(item.split("=", 1) for item in block["resources"].split(", "))
        threads, mem_mb, runtime = int(block["threads"]), int(res["mem_mb"]), int(res["runtime"])
        jobs.append(Job(block["rule"], threads, mem_mb, runtime, slurm_id))
    return jobs


def _minutes(timelimit: str) -> int:
    """sacct's Timelimit ([D-]HH:MM:SS) in minutes."""
    days, _, clock = timelimit.rpartition("-")
    hours, minutes, seconds = (int(x) for x in clock.split(":"))
    return (int(days or 0) * 24 + hours) * 60 + minutes + (seconds > 0)


def _megabytes(reqmem: str) -> float:
    """sacct's ReqMem (e.g. 600M, 6G, 2000Mn) in MB."""
    match = re.fullmatch(r"([\d.]+)([KMGT])[nc]?", reqmem)
    assert match, f"unexpected ReqMem {reqmem!r}"
    return float(match.group(1)) * {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}[match.group(2)]


def _check_against_sacct(run: Run, jobs: list[Job], state: str = "COMPLETED") -> dict[str, dict[str, str]]:
    """Each job is one SLURM job of RUN's id in STATE, with the CPUs, memory and time it asked for."""
    accounting = _sacct()
    run_id = re.search(r"SLURM run ID: (\S+)", run.result.stderr)
    assert run_id, f"no SLURM run ID in Snakemake's output\n{_log(run)}"
    rows = {}
    for job in jobs:
        row = accounting.get(job.slurm_id)
        assert row is not None, f"sacct does not know SLURM job {job.slurm_id} ({job.rule})"
        assert row["JobName"] == run_id.group(1) and row["Comment"].startswith(f"rule_{job.rule}"), row
        if state == "COMPLETED":
            assert (row["State"], row["ExitCode"]) == ("COMPLETED", "0:0"), (job, row)
        assert int(row["AllocCPUS"]) == job.threads, (job, row)
        assert _megabytes(row["ReqMem"]) == job.mem_mb, (job, row)
        assert _minutes(row["Timelimit"]) == job.runtime, (job, row)
        assert (row["Account"], row["Partition"]) == (ACCOUNT, PARTITION), (job, row)
        rows[job.slurm_id] = row
    return rows


@pytest.fixture(scope="module")
def runs(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> dict[str, Run]:
    """Both workflows at once (the cluster queues their jobs side by side), to keep the test short.

    advmir: the repo's workflow on the tiny config with its first model and one epoch, submitted
    with the venv on PATH, as `make` does. probe: the three-rule workflow with `combine` failing,
    submitted without the venv on PATH.
    """
    advmir = tmp_path_factory.mktemp("slurm-advmir")
    config = tiny_config(advmir / "results")
    config["models"] = dict(list(config["models"].items())[:1])
    config["training"].update({"max_epochs": 1, "min_epochs": 1})
    (advmir / "config.yaml").write_text(yaml.safe_dump(config))
    targets = [str(advmir / "results" / target) for target in ADVMIR_TARGETS]
    probe = tmp_path_factory.mktemp("slurm-probe")
    (probe / "Snakefile").write_text(SNAKEFILE)
    (probe / "probe.py").write_text(PROBE)

    # Targets first: --configfile takes every word after it.
    advmir_args = [
        *targets,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--configfile",
        str(advmir / "config.yaml"),
    ]
    processes = {
        "advmir": (advmir, _start_snakemake(advmir, *advmir_args, venv_on_path=False)),
        "probe": (probe, _start_snakemake(probe, "--config", "fail=1", venv_on_path=False)),
    }
    finished = _wait_for_all(processes)
    for name, run in finished.items():
        cluster.timings[f"{name}_workflow"] = run.seconds
        _announce(request.config, f"{name} workflow: {run.seconds:.1f} s (exit {run.result.returncode})")
    return finished


@pytest.fixture(scope="module")
def advmir_run(runs: dict[str, Run]) -> Run:
    run = runs["advmir"]
    assert run.result.returncode == 0, _log(run)
    return run


@pytest.fixture(scope="module")
def probe_run(runs: dict[str, Run]) -> Run:
    return runs["probe"]


def test_advmir_jobs_ran_as_slurm_jobs_with_their_resources(advmir_run: Run) -> None:
    jobs = _submitted_jobs(advmir_run)
    assert ADVMIR_RULES <= {job.rule for job in jobs}, sorted({job.rule for job in jobs})
    _check_against_sacct(advmir_run, jobs)
    for target in ADVMIR_TARGETS:
        assert (advmir_run.workdir / "results" / target).stat().st_size > 0


def test_the_plugin_polled_sacct(advmir_run: Run) -> None:
    assert "command=sacct" in advmir_run.result.stderr, _log(advmir_run)


def test_probe_jobs_ran_in_slurm_with_the_submitting_python(probe_run: Run) -> None:
    jobs = [job for job in _submitted_jobs(probe_run) if job.rule != "combine"]
    assert {job.rule for job in jobs} == {"probe_small", "probe_large"}, _log(probe_run)
    for job in jobs:
        assert (job.threads, job.mem_mb, job.runtime) == REQUESTED[job.rule], job
    _check_against_sacct(probe_run, jobs)
    for job in jobs:
        seen = json.loads((probe_run.workdir / f"{job.rule.removeprefix('probe_')}.json").read_text())
        # Inside the SLURM job that sacct lists, with its CPUs, and this venv's python although the
        # submitting shell's PATH did not have it (the Snakefile put it there).
        assert seen["job_id"] == job.slurm_id, (job, seen)
        assert seen["cpus_per_task"] == str(job.threads), (job, seen)
        assert Path(seen["prefix"]).resolve() == Path(sys.prefix).resolve(), seen


def test_a_failing_rule_is_failed_in_slurm_and_not_retried(probe_run: Run) -> None:
    assert probe_run.result.returncode != 0, _log(probe_run)
    failing = [job for job in _submitted_jobs(probe_run) if job.rule == "combine"]
    assert len(failing) == 1, f"combine was submitted {len(failing)} times"  # once: no retry
    assert (failing[0].threads, failing[0].mem_mb, failing[0].runtime) == REQUESTED["combine"]
    row = _check_against_sacct(probe_run, failing, state="FAILED")[failing[0].slurm_id]
    assert row["State"] == "FAILED" and row["ExitCode"] != "0:0", row
    assert "SLURM status is: 'FAILED'" in probe_run.result.stderr, _log(probe_run)
    assert "failing on purpose" in (probe_run.workdir / "logs" / "combined.log").read_text()
    assert not (probe_run.workdir / "combined.json").exists(), "Snakemake kept the output of a failed job"
