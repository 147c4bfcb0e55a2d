"""Real-dataset configs and rules: each overlay merged onto config.yaml validates and dry-runs, and
one real rule run against a local server (no network)."""

from __future__ import annotations

import copy
import hashlib
import json

import jsonschema
import pytest
import yaml

from advmir.config import merge_config, schema_defaults, validate_config
from advmir.datasets import REAL_DATASETS
from advmir.datasets.contract import load_dataset
from conftest import REPO, run_snakemake
from test_datasets import Server, esc50_files

SCHEMA = yaml.safe_load((REPO / "workflow/schemas/datasets.schema.yaml").read_text())
INCLUDED = "datasets.smk" in (REPO / "Snakefile").read_text()
needs_rules = pytest.mark.skipif(
    not INCLUDED, reason="the Snakefile does not include workflow/rules/datasets.smk yet"
)


def merged(name: str) -> dict:
    """config.yaml with the overlay config/<name>.yaml merged onto it, as `make run OVERLAY=...`."""
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    return merge_config(base, yaml.safe_load((REPO / f"config/{name}.yaml").read_text()))


@pytest.mark.parametrize("name", REAL_DATASETS)
def test_config_is_an_overlay_that_validates(name):
    """config/<name>.yaml holds only the dataset (nothing to drift from config.yaml); merged onto
    config.yaml it is a valid config."""
    overlay = yaml.safe_load((REPO / f"config/{name}.yaml").read_text())
    assert set(overlay) == {"datasets", name} and overlay["datasets"] == [name]
    jsonschema.Draft202012Validator(SCHEMA).validate({name: overlay[name]})
    config = merged(name)
    validate_config(config, REPO / "workflow/schemas/config.schema.yaml")
    assert config["datasets"] == [name]


@pytest.mark.parametrize("name", REAL_DATASETS)
def test_standalone_defaults_are_the_schema_defaults(name):
    """download-dataset run by hand defaults as the workflow does: from the schema (NSynth: int16)."""
    from advmir.datasets import dataset_module
    from advmir.datasets.prepare import SHARED_KEYS

    filled: dict = {name: {}}
    validate_config(filled, REPO / "workflow/schemas/datasets.schema.yaml")  # fills the defaults
    defaults = schema_defaults("datasets.schema.yaml", name)
    assert defaults == filled[name]
    assert dataset_module(name).DEFAULTS == {k: v for k, v in defaults.items() if k not in SHARED_KEYS}
    assert schema_defaults("datasets.schema.yaml", "nsynth")["dtype"] == "int16"


@needs_rules
@pytest.mark.parametrize("name", REAL_DATASETS)
def test_dry_run_lists_the_download_job(tmp_path, name):
    config = merged(name)
    config["results"] = str(tmp_path / "results")
    out = run_snakemake(tmp_path, config, "-n").stdout
    assert "rule download_dataset:" in out and f"data/{name}/waveforms.npy" in out


@needs_rules
def test_download_rule_runs_against_a_local_server(tmp_path):
    srv = Server()
    try:
        srv.files = esc50_files()
        config = merged("esc50")
        config["results"] = str(tmp_path / "results")
        config["esc50"].update(
            clip_seconds=0.5,
            base_url=srv.url,
            checksums={n: "sha256:" + hashlib.sha256(d).hexdigest() for n, d in srv.files.items()},
        )
        target = f"{config['results']}/data/esc50/waveforms.npy"
        run_snakemake(tmp_path, config, "--cores", "1", target)
        ds = load_dataset(tmp_path / "results/data/esc50")
        assert ds.waveforms.shape == (15, 8000)
        assert (tmp_path / "results/logs/data/esc50.log").stat().st_size > 0
        assert (tmp_path / "results/benchmarks/data/esc50.tsv").exists()
        # another esc50 setting re-runs the download rule, which reuses the verified archive
        changed = copy.deepcopy(config)
        changed["esc50"]["esc10_only"] = True
        n = len(srv.requests)
        run_snakemake(tmp_path, changed, "--cores", "1", target)
        assert len(srv.requests) == n
        assert json.loads((tmp_path / "results/data/esc50/classes.json").read_text())["classes"] == [
            "dog",
            "rooster",
        ]
    finally:
        srv.close()
