"""The attack stage's config schema and rules: the proposed config validates, bad configs are
rejected with a message naming the key, every attack parameter is in the schema, and a dry run of
attacks.smk (with a stand-in for common.smk) builds the expected jobs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from advmir.attacks import ATTACKS, accepted_params

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow/schemas/attacks.schema.yaml").read_text())

PROPOSED = yaml.safe_load(
    """
attack_settings: {eval_size: 200, batch_size: 64, chunk_size: 256, listen: 3, threads: 1}
attacks:
  noise: {name: noise, params: {snr_db: 30}, models: [logmel_cnn, wave_cnn]}
  pgd_linf:
    name: pgd
    params: {norm: linf, snr_db: 30, steps: 100, rel_step: 0.05, random_start: false}
  cw: {name: cw, params: {binary_steps: 4, steps: 25}, models: [logmel_cnn, wave_cnn]}
  mifgsm_surrogate:
    name: mifgsm
    threat: surrogate
    surrogate: surrogate_logmel_cnn
    params: {snr_db: 30, steps: 10, early_stop: false}
    models: [logmel_cnn]
  universal: {name: universal, params: {snr_db: 20, epochs: 5}, models: [logmel_cnn]}
  square: {name: square, params: {snr_db: 30, n_queries: 200}, models: [logmel_cnn]}
  pgd_targeted:
    name: pgd
    params: {snr_db: 20, targeted: map, target_map: {bass: guitar, guitar: bass}}
"""
)


def validate(section: str, value: object) -> None:
    schema = {**SCHEMA, "$ref": f"#/definitions/{section}"}
    jsonschema.Draft202012Validator(schema).validate(value)


def test_proposed_config_validates() -> None:
    validate("attacks", PROPOSED["attacks"])
    validate("attack_settings", PROPOSED["attack_settings"])


@pytest.mark.parametrize(
    "attack,where",
    [
        ({"name": "teleport"}, "teleport"),
        ({"name": "pgd", "params": {"eps": -0.1}}, "-0.1"),
        ({"name": "pgd", "params": {"snr_db": "loud"}}, "loud"),
        ({"name": "deepfool", "params": {"targeted": "random"}}, "random"),
        ({"name": "pgd", "threat": "surrogate", "params": {"snr_db": 30}}, "surrogate"),
        ({"name": "pgd", "params": {"eps": 0.1, "snr_db": 30}}, "eps"),
        ({"name": "pgd", "params": {"snr_db": 30, "stepz": 3}}, "stepz"),
        ({"name": "fgsm", "params": {}}, "eps"),
        ({"name": "pgd", "params": {"snr_db": 30, "targeted": "nearest"}}, "nearest"),
    ],
)
def test_schema_rejects_bad_attacks(attack: dict, where: str) -> None:
    with pytest.raises(jsonschema.ValidationError) as info:
        validate("attacks", {"bad": attack})
    assert where in str(info.value)


def test_every_attack_parameter_is_in_the_schema() -> None:
    in_schema = set(SCHEMA["definitions"]["params"]["properties"])
    for name in ATTACKS:
        assert set(accepted_params(name)) <= in_schema, name
    assert set(SCHEMA["definitions"]["attack"]["properties"]["name"]["enum"]) == set(ATTACKS)


STAND_IN = """
import json

configfile: "config.yaml"

from advmir.config import schema_defaults

# the real Snakefile's validation fills the schema's defaults; this stand-in fills the attack ones
config["attack_settings"] = {
    **schema_defaults("attacks.schema.yaml", "attack_settings"), **config.get("attack_settings", {})
}
RESULTS = config["results"]
DATASETS = list(config["datasets"])
MODELS = dict(config["models"])
GPUS = 0


def dataset_files(wildcards):
    root = f"{RESULTS}/data/{wildcards.dataset}"
    return {k: f"{root}/{k}.{e}" for k, e in (("waveforms", "npy"), ("manifest", "csv"), ("classes", "json"))}


include: "%(rules)s"


rule all:
    input:
        ATTACK_PLAN.targets(),
"""


def test_dry_run_builds_every_job(tmp_path: Path) -> None:
    config = {
        "results": "results",
        "seed": 0,
        "device": "cpu",
        "datasets": ["toy"],
        "models": {"cnn": {}, "wave": {}, "surrogate_cnn": {}},
        **PROPOSED,
    }
    config["attacks"]["noise"]["models"] = ["cnn", "wave"]
    config["attacks"]["cw"]["models"] = ["cnn"]
    config["attacks"]["mifgsm_surrogate"].update(surrogate="surrogate_cnn", models=["cnn"])
    for name in ("universal", "square"):
        config["attacks"][name]["models"] = ["cnn"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "Snakefile").write_text(STAND_IN % {"rules": REPO / "workflow/rules/attacks.smk"})
    for ds_file in ("waveforms.npy", "manifest.csv", "classes.json"):
        (tmp_path / "results/data/toy").mkdir(parents=True, exist_ok=True)
        (tmp_path / "results/data/toy" / ds_file).write_text("")
    for model in config["models"]:
        (tmp_path / f"results/models/toy/{model}").mkdir(parents=True)
        (tmp_path / f"results/models/toy/{model}/model.ckpt").write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--cores", "1", "--directory", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    # noise 2 + pgd_linf 3 (no `models`: every model) + cw 1 + surrogate 1 + universal 1 + square 1
    # + pgd_targeted 3
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.MULTILINE))
    assert jobs["craft_adversarial"] == "12", jobs
    assert "--surrogate-checkpoint results/models/toy/surrogate_cnn/model.ckpt" in out
    assert '"target_map": {"bass": "guitar", "guitar": "bass"}' in out
    assert "summarize_attacks" in out and "plot_attacks" in out
    assert "results/attacks/toy/cnn/pgd_linf/attack.json" in out  # the spectrogram panel's run
