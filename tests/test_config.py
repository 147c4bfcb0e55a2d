import copy
import re
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from advmir.config import ConfigError, check_config
from conftest import run_snakemake

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")


@pytest.fixture
def config():
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_default_config_is_valid(config):
    validate(config, SCHEMA)
    check_config(config)


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        (("synth_notes", "split"), "random", ["random", "notes", "instruments"]),
        (("synth_notes", "families"), ["bass", "kazoo"], ["kazoo", "keyboard"]),
        (("synth_notes", "sample_rate"), 0, ["sample_rate", "1000"]),
        (("synth_notes", "clip_seconds"), -1.0, ["clip_seconds"]),
        (("training", "max_epochs"), "ten", ["max_epochs", "ten"]),
        (("device",), "tpu", ["device", "tpu"]),
        (("models", "logmel_cnn", "frontend"), "mfcc", ["mfcc", "logmel"]),
        (("synth_notes", "velocity"), [1], ["velocity"]),
    ],
)
def test_schema_names_the_bad_key(config, path, value, words):
    bad = copy.deepcopy(config)
    node = bad
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(WorkflowError) as info:
        validate(bad, SCHEMA)
    message = str(info.value)
    for word in words:
        assert word in message


def test_cross_key_checks(config):
    bad = copy.deepcopy(config)
    bad["synth_notes"]["note_seconds"] = 2.0
    bad["models"]["wave_cnn"]["arch"] = "cnn2d"
    bad["datasets"] = ["synth_notes", "gtzan"]
    with pytest.raises(ConfigError) as info:
        check_config(bad)
    message = str(info.value)
    assert "note_seconds" in message and "wave_cnn" in message and "gtzan" in message


def test_paper_config_dry_run_lists_the_full_sweep(tmp_path):
    """config/paper.yaml: every model, every (model, attack) cell and every codec setting is a job."""
    paper = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    paper["results"] = str(tmp_path / "results")
    out = run_snakemake(tmp_path, paper, "-n").stdout
    counts = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", out, re.M)}
    cells = sum(
        len(a.get("models") or [m for m in paper["models"] if m != a.get("surrogate")])
        for a in paper["attacks"].values()
    )
    assert counts["train_model"] == len(paper["models"])
    assert counts["craft_adversarial"] == cells, counts
    # every codec setting on the clean set and on each attack sent through the codecs
    sent = paper["transfer"]["attacks"] or paper["attacks"]
    assert counts["encode_with_codec"] >= len(paper["codecs"]["settings"]) * (1 + len(sent))
    assert counts["total"] > 1000, counts


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda c: c["training"]["augment"].update(noise_snr_db=[60, 20]), ["noise_snr_db is inverted"]),
        (lambda c: c["training"].update(min_epochs=20, max_epochs=10), ["min_epochs (20) exceeds"]),
        (
            lambda c: c["training_codecs"]["settings"].update(again={"codec": "mp3", "bitrate_kbps": 128}),
            ["['again']", "equal evaluation settings"],
        ),
        (lambda c: c["synth_notes"].update(soundfonts=["TimGM6mb"]), ["soundfont", "needs >= 2 soundfonts"]),
        (lambda c: c["generalisation"].update(models=["cqt_cnn"]), ["generalisation.models", "cqt_cnn"]),
        (lambda c: c["synth_notes"].update(programs={"bass": [33]}, families=["reed", "flute"]), ["'bass'"]),
    ],
)
def test_cross_key_checks_of_training_and_data(config, change, words):
    bad = copy.deepcopy(config)
    change(bad)
    validate(bad, SCHEMA)  # each is schema-valid: only the cross-key check can catch it
    with pytest.raises(ConfigError) as info:
        check_config(bad)
    for word in words:
        assert word in str(info.value)


def test_dry_run_refuses_an_inverted_noise_range_before_any_job(tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["results"] = str(tmp_path / "results")
    config["training"]["augment"]["noise_snr_db"] = [60, 20]
    proc = run_snakemake(tmp_path, config, "-n", check=False)
    assert proc.returncode != 0
    assert "noise_snr_db is inverted" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()
