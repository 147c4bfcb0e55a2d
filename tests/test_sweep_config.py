"""benchmarks/sweep_config.py: the sweep about ten times config/paper.yaml is a valid config."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

from advmir.config import check_config, validate_config

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def _sweep_config_module():
    spec = importlib.util.spec_from_file_location("sweep_config", REPO / "benchmarks" / "sweep_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_10x_sweep_grows_models_budgets_and_codecs_and_passes_the_config_checks(tmp_path: Path) -> None:
    module = _sweep_config_module()
    out = tmp_path / "sweep.yaml"
    module.main(["--out", str(out)])
    base = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    sweep = yaml.safe_load(out.read_text())
    zoo = [
        name
        for name, spec in base["models"].items()
        if not spec.get("train_subset") and "members" not in spec
    ]
    assert any("members" in spec for spec in base["models"].values())  # an ensemble is not copied by seed
    assert len(sweep["models"]) == len(base["models"]) + 2 * len(zoo)
    assert all(f"{name}_s2" in sweep["models"] for name in zoo)
    # every attack with an SNR budget is there at each of 20, 30 and 40 dB, under one name or another
    for name, spec in base["attacks"].items():
        if "snr_db" in spec["params"]:
            budgets = {
                a["params"]["snr_db"]
                for n, a in sweep["attacks"].items()
                if n == name or n.startswith(f"{name}_db")
            }
            assert {20, 30, 40} <= budgets, (name, budgets)
    assert len(sweep["codecs"]["settings"]) > 2 * len(base["codecs"]["settings"])
    assert sweep["results"] == "results/paper_10x"
    # the schema and every cross-key check accept it (no codec setting equal to a training one,
    # bitrates the codecs honour, models of every attack known)
    validate_config(sweep, SCHEMA)
    check_config(sweep)
