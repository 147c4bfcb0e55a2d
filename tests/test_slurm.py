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
  submitted once, with Snakemake exiting non-zero;
- a sweep of cheap jobs (codecs, rooms, transfer evaluation and its table, on a tiny config whose
  model and attack are made locally first), run from two copies of one folder: locally, and on SLURM
  with the profile's job grouping. `sacct` counts the sbatch submissions and the wall time. In the
  grouped run one member is made to fail: Snakemake must name it, its group job must be FAILED, and
  a rerun must redo exactly the jobs left without outputs. The group jobs must be sized for members
  in series (one member's CPUs, their summed time limit), and the two folders must end with the
  same outputs (bar the timing fields of codec jobs' setting.json).

The first two run on a copy of the profile without its `groups` (each job its own SLURM job, as
they check); the sweep runs the profile with smaller groups (--group-components, so that a tiny
sweep makes several group jobs of each kind). ADVMIR_SLURM_SWEEP_MP3=N sets the sweep's size
(N MP3 settings besides FLAC and one room: 2 * (N + 2) codec jobs, 2 * (N + 3) transfer jobs).

Needs root and apt (or the packages installed); otherwise it is skipped, and the reason printed.
Set ADVMIR_SKIP_SLURM=1 to skip it on purpose. About four minutes once the packages are in, plus
the sweep's 27 jobs: locally, then in groups with a failure and its rerun (about 6 minutes). By
default the sweep does not also run one job per SLURM job: each such job costs about 15 s of
submission and polling here besides its work (6 more minutes for the 27), and the advmir workflow
above already checks every job against its own SLURM job. ADVMIR_SLURM_SWEEP_UNGROUPED=1 runs it
too, prints both wall times (the README's ratio) and compares its bytes as well.
"""

from __future__ import annotations

import hashlib
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


def _ungrouped_profile(folder: Path) -> Path:
    """A copy of the slurm profile without job grouping (every job its own SLURM job), in FOLDER."""
    settings = yaml.safe_load((PROFILE / "config.yaml").read_text())
    for key in ("groups", "group-components"):
        assert settings.pop(key, None), f"the slurm profile has no {key!r}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(settings))
    return folder


def _start_snakemake(
    workdir: Path, *extra: str, venv_on_path: bool, profile: Path = PROFILE, env: dict | None = None
) -> subprocess.Popen:
    """Start Snakemake with PROFILE in WORKDIR; its output goes to WORKDIR/snakemake.{out,err}."""
    command = [
        str(SNAKEMAKE),
        "--profile",
        str(profile),
        "--directory",
        str(workdir),
        *TEST_OVERRIDES,
        *extra,
    ]
    with open(workdir / "snakemake.out", "w") as out, open(workdir / "snakemake.err", "w") as err:
        return subprocess.Popen(
            command, cwd=workdir, stdout=out, stderr=err, text=True, env={**_env(venv_on_path), **(env or {})}
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
    submitted without the venv on PATH. Both with the profile less its job grouping: these tests
    check each job against its own SLURM job (the sweep below checks the grouping).
    """
    ungrouped = _ungrouped_profile(tmp_path_factory.mktemp("slurm-profile") / "slurm")
    advmir = tmp_path_factory.mktemp("slurm-advmir")
    config = tiny_config(advmir / "results")
    config["models"] = dict(list(config["models"].items())[:1])
    config["representation_transfer"]["enabled"] = False  # needs models of two representations
    # the codec versions of the training clips would add a level of the DAG (about 35 s of SLURM
    # submission and polling here) and no kind of rule the four above do not cover
    config["training_codecs"]["enabled"] = False
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
        "advmir": (
            advmir,
            _start_snakemake(advmir, *advmir_args, venv_on_path=False, profile=ungrouped),
        ),
        "probe": (
            probe,
            _start_snakemake(probe, "--config", "fail=1", venv_on_path=False, profile=ungrouped),
        ),
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


# --- The sweep: the profile's job grouping, measured against one SLURM job per job -------------

# MP3 bitrates LAME honours at 16 kHz (advmir.codecs.registry.MP3_MPEG2_KBPS), none a training codec
SWEEP_MP3_KBPS = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
SWEEP_MP3 = int(os.environ.get("ADVMIR_SLURM_SWEEP_MP3", "4"))
# ADVMIR_SLURM_SWEEP_UNGROUPED=1 also runs the sweep one job per SLURM job (about 6 more minutes), to
# measure what grouping saves; its outputs join the byte comparison.
SWEEP_UNGROUPED = os.environ.get("ADVMIR_SLURM_SWEEP_UNGROUPED", "") not in ("", "0")
SWEEP_TARGET = "results/tables/transfer.csv"
# Groups smaller than the profile's (a tiny sweep would make one group of each kind): several group
# jobs of each kind, so that they queue side by side and one of them fails alone.
SWEEP_GROUPS = ("--group-components", "codecs=5", "transfer=5", "report=100")
# The member made to fail: a sitecustomize on PYTHONPATH (which SLURM jobs inherit from the
# submitting shell) ends the python of that one job, before advmir runs; outputs and config stay.
FAILING_RULE, FAILING_CODEC = "encode_clean_with_codec", "mp3_24k"
FAULT = f"""\
import os
import sys

_argv = getattr(sys, "orig_argv", [])
if "encode-with-codec" in _argv and "{FAILING_CODEC}" in _argv and "clean" in _argv:
    print("injected fault: this codec job fails on purpose", file=sys.stderr)
    os._exit(3)
"""
# What a rerun after the failure must redo, and nothing else: the member and what needs its output.
RERUN = {FAILING_RULE: 1, "evaluate_transfer": 1, "summarize_transfer": 1}


def sweep_config() -> dict:
    """The tiny config with one model, one cheap attack (FGSM) and many codec settings: the cheap
    stages make 4 * SWEEP_MP3 + 11 jobs (codecs, rooms, transfer evaluation, its table)."""
    config = tiny_config(Path("results"))
    config["results"] = "results"  # relative: a copy of the folder is a copy of the run
    config["models"] = dict(list(config["models"].items())[:1])
    config["training"].update({"max_epochs": 1, "min_epochs": 1})
    for stage in ("training_codecs", "generalisation", "anomaly", "defenses", "representation_transfer"):
        config[stage]["enabled"] = False
    config["attacks"] = {"fgsm": {"name": "fgsm", "params": {"snr_db": 30}}}
    config["attack_settings"].update({"eval_size": 8, "listen": 0})
    assert 0 < SWEEP_MP3 <= len(SWEEP_MP3_KBPS), f"ADVMIR_SLURM_SWEEP_MP3 must be 1..{len(SWEEP_MP3_KBPS)}"
    # 24 kbps first: the failing member's setting is always in the sweep
    kbps = sorted(SWEEP_MP3_KBPS, key=lambda k: (k != 24, k))[:SWEEP_MP3]
    config["codecs"]["settings"] = {
        "flac": {"codec": "flac"},
        **{f"mp3_{k}k": {"codec": "mp3", "bitrate_kbps": k} for k in kbps},
    }
    config["codecs"]["rooms"] = {"room": dict(config["codecs"]["rooms"]["room"], n_rooms=1)}
    config["codecs"]["jobs"] = "setting"  # a job per (source, setting): the many cheap jobs grouping is for
    config["transfer"].update(
        {"attacks": ["fgsm"], "max_examples": 8, "clean_examples": 8, "heatmap_conditions": ["none"]}
    )
    return config


@dataclass
class Accounting:
    """What sacct says of one Snakemake run's SLURM jobs."""

    rows: list[dict[str, str]]

    @property
    def submissions(self) -> int:
        return len(self.rows)

    @property
    def seconds(self) -> float:
        """First submission to last end."""
        start = min(_epoch(row["Submit"]) for row in self.rows)
        return max(_epoch(row["End"]) for row in self.rows) - start


def _epoch(stamp: str) -> float:
    return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))


def _accounting(run: Run) -> Accounting:
    """sacct's rows of RUN's SLURM jobs (the plugin names each job by the run's SLURM run ID)."""
    run_id = re.findall(r"SLURM run ID: (\S+)", run.result.stderr)
    assert run_id, f"no SLURM run ID in Snakemake's output\n{_log(run)}"
    fields = ("JobIDRaw", "JobName", "State", "AllocCPUS", "Timelimit", "Submit", "End", "Comment")
    out = subprocess.run(
        ["sacct", "--allusers", "-X", "--parsable2", "--noheader", "--starttime", "2000-01-01",
         "--name", run_id[-1], "--format", ",".join(fields)],
        capture_output=True, text=True, check=True, env=_env(venv_on_path=False),
    ).stdout  # fmt: skip
    rows = [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines() if line]
    assert rows, f"sacct lists no job named {run_id[-1]}\n{_log(run)}"
    return Accounting(rows)


# Keys of a codec job's setting.json that time the job (its .sha256 sidecar digests those too)
TIMING_KEYS = ("seconds", "clips_per_second")


def _digests(workdir: Path) -> dict[str, str]:
    """SHA-256 of every output under WORKDIR/results, bar what holds times: logs, benchmarks, the
    timing keys of setting.json files and their .sha256 sidecars."""
    root = workdir / "results"
    digests = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if not path.is_file() or name.split("/")[0] in ("logs", "benchmarks"):
            continue
        if path.name == "setting.json.sha256":
            continue
        data = path.read_bytes()
        if path.name == "setting.json":
            setting = json.loads(data)  # a codec's holds the timing keys, a room's none
            data = json.dumps(
                {k: v for k, v in setting.items() if k not in TIMING_KEYS}, sort_keys=True
            ).encode()
        digests[name] = hashlib.sha256(data).hexdigest()
    return digests


def _run_sweep(workdir: Path, *extra: str, profile: Path = PROFILE, env: dict | None = None) -> Run:
    args = [SWEEP_TARGET, "--snakefile", str(REPO / "Snakefile"), "--configfile", "config.yaml"]
    process = _start_snakemake(
        workdir, *args, "--replace-workflow-config", *extra, venv_on_path=True, profile=profile, env=env
    )
    return _wait_for_all({"sweep": (workdir, process)})["sweep"]


def _dry_run_jobs(workdir: Path) -> dict[str, int]:
    """rule -> count of the jobs a plain `snakemake -n` of the sweep would run in WORKDIR."""
    out = subprocess.run(
        [str(SNAKEMAKE), SWEEP_TARGET, "-n", "--snakefile", str(REPO / "Snakefile"),
         "--configfile", "config.yaml", "--replace-workflow-config", "--quiet", "rules"],
        cwd=workdir, capture_output=True, text=True, env=_env(venv_on_path=True), timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out.stdout + out.stderr, flags=re.MULTILINE))
    return {rule: int(n) for rule, n in counts.items() if rule not in ("total", "count")}


@dataclass
class Sweep:
    local: Path  # the folder the sweep ran in locally, for the bytes
    grouped: Run  # with one member failing
    rerun: Run  # the grouped run again, after the fault was removed
    dry_run_after_failure: dict[str, int]
    missing_after_failure: dict[str, int]
    accounting: dict[str, Accounting]
    planned: dict[str, int]  # rule -> jobs of the sweep
    ungrouped: Run | None  # one job per SLURM job (ADVMIR_SLURM_SWEEP_UNGROUPED=1 only)


@pytest.fixture(scope="module")
def sweep(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Sweep:
    """The sweep's model and attack made locally once, then that folder is copied: the copy runs the
    cheap stages on SLURM in groups (with a fault, then its rerun), the folder itself locally."""
    base = tmp_path_factory.mktemp("slurm-sweep") / "base"
    base.mkdir()
    (base / "config.yaml").write_text(yaml.safe_dump(sweep_config()))
    common = [
        "--snakefile",
        str(REPO / "Snakefile"),
        "--configfile",
        "config.yaml",
        "--replace-workflow-config",
    ]
    local = subprocess.run(
        [str(SNAKEMAKE), SWEEP_TARGET, *common, "--cores", "2", "--quiet", "all",
         "--until", "craft_adversarial", "select_clean_clips"],
        cwd=base, capture_output=True, text=True, env=_env(venv_on_path=True), timeout=600,
    )  # fmt: skip
    assert local.returncode == 0, local.stderr[-3000:]
    planned = _dry_run_jobs(base)
    copies = {name: base.parent / name for name in ("grouped", "ungrouped")[: 1 + SWEEP_UNGROUPED]}
    for copy in copies.values():
        shutil.copytree(base, copy, symlinks=True)
    local = subprocess.run(
        [str(SNAKEMAKE), SWEEP_TARGET, *common, "--cores", "2", "--quiet", "all"],
        cwd=base, capture_output=True, text=True, env=_env(venv_on_path=True), timeout=900,
    )  # fmt: skip
    assert local.returncode == 0, local.stderr[-3000:]
    runs = {}
    if SWEEP_UNGROUPED:
        profile = _ungrouped_profile(base.parent / "profile")
        runs["ungrouped"] = _run_sweep(copies["ungrouped"], profile=profile)
        assert runs["ungrouped"].result.returncode == 0, _log(runs["ungrouped"])

    fault = base.parent / "fault"
    fault.mkdir()
    (fault / "sitecustomize.py").write_text(FAULT)
    pythonpath = os.pathsep.join(p for p in [str(fault), os.environ.get("PYTHONPATH", "")] if p)
    grouped = _run_sweep(copies["grouped"], *SWEEP_GROUPS, env={"PYTHONPATH": pythonpath})
    after_failure = _dry_run_jobs(copies["grouped"])
    missing = _missing_outputs(copies["grouped"], sweep_config())
    rerun = _run_sweep(copies["grouped"], *SWEEP_GROUPS)
    assert rerun.result.returncode == 0, _log(rerun)

    runs.update(grouped=grouped, rerun=rerun)
    accounting = {name: _accounting(run) for name, run in runs.items()}
    for name, acc in accounting.items():
        _announce(
            request.config,
            f"sweep of {sum(planned.values())} jobs, {name}: {acc.submissions} sbatch submissions, "
            f"{acc.seconds:.0f} s from first submission to last end (Snakemake {runs[name].seconds:.0f} s)",
        )
    return Sweep(base, grouped, rerun, after_failure, missing, accounting, planned, runs.get("ungrouped"))


def _missing_outputs(workdir: Path, config: dict) -> dict[str, int]:
    """How many codec jobs (their setting.json) and transfer evaluations (their CSV) have no output."""
    conditions = [*config["codecs"]["settings"], *config["codecs"]["rooms"]]
    sources = {"clean": "clean", "fgsm": "logmel_cnn/fgsm"}
    root = workdir / "results"
    codecs = sum(
        not (root / "codecs" / "synth_notes" / source / c / "setting.json").exists()
        for source in sources.values()
        for c in conditions
    )
    transfer = sum(
        not (root / "transfer" / "synth_notes" / attack / f"{c}.csv").exists()
        for attack in sources
        for c in ["none", *conditions]
    )
    return {"codecs": codecs, "transfer": transfer}


def test_grouping_bundles_the_cheap_jobs_into_a_few_serial_group_jobs(sweep: Sweep) -> None:
    """Codec and room jobs in groups of 5, transfer evaluations in groups of 5, the table alone:
    each group job asks for one CPU (its members run one after another) and the summed runtime of
    its members (2 minutes per codec member, 6 per transfer member, as the profile sets them)."""
    codec_jobs = sum(n for rule, n in sweep.planned.items() if rule.startswith(("encode", "simulate")))
    groups = -(-codec_jobs // 5) + -(-sweep.planned["evaluate_transfer"] // 5) + 1
    rows = sweep.accounting["grouped"].rows + sweep.accounting["rerun"].rows
    # every job of the sweep ran in a group job; the failed run and its rerun submitted each group
    # once, but for the failed one, submitted again (smaller) in the rerun
    submitted = [*re.findall(r"Group job (\w+) \(jobs in", sweep.grouped.result.stderr),
                 *re.findall(r"Group job (\w+) \(jobs in", sweep.rerun.result.stderr)]  # fmt: skip
    assert sorted(set(submitted)) == ["codecs", "report", "transfer"], submitted
    assert len(rows) == len(submitted), (rows, submitted)
    assert groups <= len(rows) <= groups + 3, (len(rows), groups, sweep.planned)
    assert len(rows) * 3 < sum(sweep.planned.values()), len(rows)  # ungrouped: a SLURM job per job
    for row in rows:
        assert row["AllocCPUS"] == "1", row
        kind = row["Comment"].removeprefix("rule_").split("_")[0]
        assert kind in ("codecs", "transfer", "report"), row
        if kind != "report":
            per_member = {"codecs": 2, "transfer": 6}[kind]
            assert _minutes(row["Timelimit"]) % per_member == 0, row
            assert per_member <= _minutes(row["Timelimit"]) <= 5 * per_member, row
    assert max(_minutes(row["Timelimit"]) for row in rows) == 5 * 6, rows  # 5 transfer members


def test_a_failed_member_fails_its_group_and_is_named(sweep: Sweep) -> None:
    run = sweep.grouped
    assert run.result.returncode != 0, _log(run)
    failed = [row for row in sweep.accounting["grouped"].rows if row["State"] != "COMPLETED"]
    assert len(failed) == 1 and failed[0]["State"] == "FAILED", sweep.accounting["grouped"].rows
    assert failed[0]["Comment"].startswith("rule_codecs"), failed
    # Snakemake names the failed member: its rule and its codec setting
    errors = re.findall(r"Error in rule (\w+):\n((?:    .*\n)+)", run.result.stderr)
    named = [(rule, text) for rule, text in errors if rule == FAILING_RULE and FAILING_CODEC in text]
    assert named, _log(run)


def test_a_rerun_redoes_only_what_the_failure_left_undone(sweep: Sweep) -> None:
    missing = sweep.missing_after_failure
    redo = sweep.dry_run_after_failure
    assert 1 <= missing["codecs"] <= 5, missing  # the failed member, at most its group's others
    assert redo.get(FAILING_RULE, 0) >= 1, redo
    assert sum(n for rule, n in redo.items() if rule.startswith(("encode", "simulate"))) == missing["codecs"]
    assert redo.get("evaluate_transfer", 0) == missing["transfer"], (redo, missing)
    assert redo.get("summarize_transfer") == 1, redo
    # every codec job of the other groups is done: the rerun does not redo them
    assert sum(redo.values()) < sum(sweep.planned.values()), redo
    acc = sweep.accounting["rerun"]
    assert {row["State"] for row in acc.rows} == {"COMPLETED"}, acc.rows
    assert acc.submissions <= 5, acc.rows


def test_the_sweep_without_grouping_is_one_slurm_job_per_job(sweep: Sweep) -> None:
    if sweep.ungrouped is None:
        pytest.skip("set ADVMIR_SLURM_SWEEP_UNGROUPED=1 to run the sweep one job per SLURM job")
    acc = sweep.accounting["ungrouped"]
    assert acc.submissions == sum(sweep.planned.values()), (acc.submissions, sweep.planned)
    assert {row["State"] for row in acc.rows} == {"COMPLETED"}, acc.rows


def test_grouped_slurm_and_local_runs_write_the_same_bytes(sweep: Sweep) -> None:
    local = _digests(sweep.local)
    assert len(local) > 4 * sum(sweep.planned.values()), len(local)
    for run in filter(None, (sweep.grouped, sweep.ungrouped)):
        other = _digests(run.workdir)
        differ = sorted(k for k in local.keys() | other.keys() if local.get(k) != other.get(k))
        assert not differ, (run.workdir.name, differ[:20])
