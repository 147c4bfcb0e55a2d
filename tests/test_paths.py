"""A results folder whose path holds a space: every shell command quotes its paths."""

from __future__ import annotations

import shlex

import pandas as pd

from conftest import TINY_SYNTH, run_snakemake, tiny_config


def test_every_shell_command_quotes_its_paths(tmp_path):
    """Dry run of the whole tiny workflow: split as the shell splits them, no command cuts a path
    at the space of `my results`."""
    config = tiny_config(tmp_path / "my results")
    out = run_snakemake(tmp_path, config, "-n", "-p").stdout
    commands = [line.split("Shell command: ", 1)[1] for line in out.splitlines() if "Shell command: " in line]
    assert len(commands) > 30, out[-2000:]
    cut = [c for c in commands if any(word.endswith(f"{tmp_path}/my") for word in shlex.split(c))]
    assert not cut, cut[:3]
    assert not (tmp_path / "my results").exists()


def test_the_data_rule_runs_in_a_results_folder_with_a_space(tmp_path):
    config = {**tiny_config(tmp_path / "my results"), "synth_notes": dict(TINY_SYNTH)}
    target = tmp_path / "my results" / "data" / "synth_notes" / "manifest.csv"
    run_snakemake(tmp_path, config, "--cores", "1", str(target))
    assert len(pd.read_csv(target)) > 0
    assert (tmp_path / "my results" / "logs" / "data" / "synth_notes.log").exists()
    assert not (tmp_path / "my").exists()
