"""envs/*.yaml, the conda environment of each rule group, stay in step with pyproject.toml.

Users who run `snakemake --software-deployment-method conda` get these environments instead of the
venv. Every Python package in them comes from PyPI (the `pip:` list) with exactly the pin that
pyproject.toml gives it (or, for packages installed without their dependencies, the Makefile's
NODEPS), each environment carries the packages its rules import, and every dependency of
pyproject.toml lives in at least one environment.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
ENVS = REPO / "envs"

# What the rules of each group import (besides the standard library).
CARRIES = {
    "torch": {  # data, models, attacks, anomaly, transfer
        "torch", "torchaudio", "pytorch-lightning", "numpy", "pandas", "scipy", "scikit-learn",
        "cleanlab", "pretty-midi", "tinysoundfont", "soundfile", "pydub", "imageio-ffmpeg", "av",
        "pyroomacoustics", "tqdm", "jsonschema", "pyyaml", "torchcrepe", "pesto-pitch", "mir-eval",
    },
    "codecs": {
        "numpy", "pandas", "scipy", "soundfile", "pydub", "imageio-ffmpeg", "av", "pyroomacoustics",
        "tqdm", "jsonschema", "pyyaml",
    },
    "plot": {"numpy", "pandas", "matplotlib", "seaborn", "tqdm", "jsonschema", "pyyaml"},
}  # fmt: skip
# Run Snakemake itself; no rule imports them.
DRIVER_ONLY = {"snakemake", "snakemake-executor-plugin-slurm"}
# Conda packages allowed outside the pip list: the interpreter, pip, and native helpers that no
# PyPI pin covers.
CONDA_ALLOWED = {"python", "pip", "pyaudio"}


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _by_name(requirements: list[str]) -> dict[str, Requirement]:
    parsed = [Requirement(r) for r in requirements]
    return {canonicalize_name(r.name): r for r in parsed}


def _pinned() -> dict[str, Requirement]:
    """pyproject's dependencies plus the Makefile's NODEPS (installed with pip --no-deps)."""
    pins = _by_name(_pyproject()["project"]["dependencies"])
    makefile = REPO / "Makefile"
    match = re.search(r"^NODEPS\s*:?=\s*(.+)$", makefile.read_text(), re.M) if makefile.exists() else None
    if match:
        pins.update(_by_name(match.group(1).split()))
    return pins


def _env_files() -> list[Path]:
    return sorted(ENVS.glob("*.yaml"))


def _load(path: Path) -> tuple[list[str], dict[str, Requirement]]:
    """(conda dependencies, pip requirements by canonical name) of one environment file."""
    env = yaml.safe_load(path.read_text())
    conda: list[str] = []
    pip: list[str] = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            assert set(dep) == {"pip"}, f"{path.name}: unexpected entry {dep}"
            pip += dep["pip"]
        else:
            conda.append(str(dep))
    names = [canonicalize_name(Requirement(r).name) for r in pip]
    duplicates = {n for n in names if names.count(n) > 1}
    assert not duplicates, f"{path.name} lists {sorted(duplicates)} twice"
    return conda, _by_name(pip)


def test_every_group_has_an_environment_file() -> None:
    assert {p.stem for p in _env_files()} == set(CARRIES)


@pytest.mark.parametrize("name", sorted(CARRIES))
def test_environment_header(name: str) -> None:
    env = yaml.safe_load((ENVS / f"{name}.yaml").read_text())
    assert env["name"] == f"advmir-{name}"
    assert env["channels"][0] == "conda-forge" and "defaults" not in env["channels"]
    conda, _ = _load(ENVS / f"{name}.yaml")
    pythons = [dep for dep in conda if re.match(r"python\b", dep)]
    assert len(pythons) == 1, f"{name}.yaml must pin python exactly once: {pythons}"
    version = pythons[0].split("=", 1)[1].lstrip("=")
    requires = SpecifierSet(_pyproject()["project"]["requires-python"])
    assert Version(version) in requires, f"{name}.yaml: python {version} outside requires-python {requires}"
    assert "pip" in conda


@pytest.mark.parametrize("name", sorted(CARRIES))
def test_packages_are_pinned_as_in_pyproject(name: str) -> None:
    pins = _pinned()
    conda, pip = _load(ENVS / f"{name}.yaml")
    for dep in conda:
        package = canonicalize_name(re.split(r"[=<>!~ ]", dep, maxsplit=1)[0])
        assert package in CONDA_ALLOWED, (
            f"{name}.yaml installs {dep!r} with conda; list Python packages under pip: with the pin of "
            "pyproject.toml, or add a native helper to CONDA_ALLOWED in this test"
        )
    for package, requirement in pip.items():
        assert package in pins, (
            f"{name}.yaml needs {requirement}, which pyproject.toml's dependencies do not list: add it there"
        )
        expected = pins[package]
        assert requirement.specifier == expected.specifier, (
            f"{name}.yaml pins {requirement}, pyproject.toml pins {expected}: make them the same"
        )
        assert requirement.extras == expected.extras and requirement.marker == expected.marker, (
            f"{name}.yaml: {requirement} differs from pyproject.toml's {expected}"
        )


@pytest.mark.parametrize("name", sorted(CARRIES))
def test_environment_carries_what_its_rules_import(name: str) -> None:
    _, pip = _load(ENVS / f"{name}.yaml")
    missing = CARRIES[name] - set(pip)
    assert not missing, f"{name}.yaml lacks {sorted(missing)}"


def test_every_pyproject_dependency_lives_in_an_environment() -> None:
    carried = set().union(*(set(_load(path)[1]) for path in _env_files()))
    needed = set(_by_name(_pyproject()["project"]["dependencies"])) - DRIVER_ONLY
    orphans = needed - carried
    assert not orphans, (
        f"pyproject.toml depends on {sorted(orphans)}, which no envs/*.yaml carries: add each to the "
        "environment of the rules that import it (and to CARRIES in this test)"
    )


def test_rules_name_existing_environments() -> None:
    rules = sorted((REPO / "workflow" / "rules").glob("*.smk"))
    named = []
    for smk in rules:
        for env in re.findall(r"^\s*conda:\s*\n\s*\"([^\"]+)\"", smk.read_text(), re.M):
            named.append(env)
            path = (smk.parent / env).resolve()
            assert path.parent == ENVS and path.exists(), f"{smk.name}: conda env {env} is not in envs/"
    if rules:
        assert named, "no rule names a conda environment"
