"""Ensembles of zoo models (advmir.models.ensemble): the mean of the members' softmax, its checkpoint
(read with weights_only=True), assemble-ensemble on the tiny data, and the config's refusals."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from advmir.artifacts import ArtifactError
from advmir.cli import main
from advmir.config import (
    SCHEMAS,
    ConfigError,
    check_config,
    ensemble_models,
    generalisation_models,
    model_frontend,
    trained_models,
    validate_config,
)
from advmir.datasets.contract import load_dataset
from advmir.io import write_torch
from advmir.models.ensemble import SoftmaxEnsemble, ensemble_payload
from advmir.models.zoo import build_model, load_checkpoint, load_model, save_checkpoint
from conftest import tiny_config

SPECS = {
    "log": {"frontend": "logmel", "arch": "cnn2d", "arch_args": {"width": 8}},
    "wave": {"frontend": "waveform", "arch": "cnn1d", "arch_args": {"width": 8}},
}


@pytest.fixture(scope="module")
def members(tiny_dataset, tmp_path_factory, one_torch_thread) -> dict[str, Path]:
    """Two differently seeded members of two representations, saved as zoo checkpoints of the tiny data."""
    dataset = load_dataset(tiny_dataset, mmap=False)
    root = tmp_path_factory.mktemp("members")
    out = {}
    for seed, (name, spec) in enumerate(SPECS.items()):
        torch.manual_seed(seed)
        model = build_model(spec, len(dataset.classes), dataset.sample_rate)
        (root / name).mkdir()
        save_checkpoint(root / name / "model.ckpt", model, dataset.classes, seed=seed)
        (root / name / "metrics.json").write_text(json.dumps({"test_accuracy": 0.5, "n_train": 10}))
        out[name] = root / name / "model.ckpt"
    return out


def test_scores_are_the_log_of_the_weighted_mean_probability(members, tiny_dataset):
    """softmax of the ensemble's scores is sum_m w_m softmax(member_m); the gradient reaches the waveform."""
    nets = {name: load_model(path) for name, path in members.items()}
    ensemble = SoftmaxEnsemble(nets, [3.0, 1.0], {}).eval()
    x = torch.from_numpy(load_dataset(tiny_dataset).float_waveforms(np.arange(6)))
    with torch.no_grad():
        want = 0.75 * nets["log"](x).softmax(-1) + 0.25 * nets["wave"](x).softmax(-1)
        got = ensemble(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got.softmax(-1), want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got.exp().sum(-1), torch.ones(6), atol=1e-5, rtol=0)
    xg = x.clone().requires_grad_(True)
    ensemble(xg)[:, 0].sum().backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="positive"):
        SoftmaxEnsemble(nets, [1.0, 0.0], {})


def test_checkpoint_round_trips_and_refuses_damage(members, tmp_path):
    """The ensemble checkpoint holds each member whole; load_model rebuilds it (weights_only=True);
    NaN weights in a member, a member of other classes and an ensemble as member are refused."""
    payloads = {name: load_checkpoint(path) for name, path in members.items()}
    payload = ensemble_payload(payloads, None, "mixed")
    assert payload["spec"]["weights"] == [0.5, 0.5] and payload["spec"]["members"] == ["log", "wave"]
    write_torch(tmp_path / "ens.ckpt", payload)
    model = load_model(tmp_path / "ens.ckpt")
    assert isinstance(model, SoftmaxEnsemble) and not model.training
    assert model.classes == payloads["log"]["classes"]
    x = torch.randn(3, 16000).clamp(-1, 1)
    with torch.no_grad():
        want = torch.stack([load_model(p)(x).softmax(-1) for p in members.values()]).mean(0)
        torch.testing.assert_close(model(x).softmax(-1), want, atol=1e-6, rtol=1e-5)

    broken = copy.deepcopy(payload)
    first = next(iter(broken["members"]["wave"]["state_dict"]))
    broken["members"]["wave"]["state_dict"][first] = torch.full_like(
        broken["members"]["wave"]["state_dict"][first], float("nan")
    )
    write_torch(tmp_path / "nan.ckpt", broken)
    with pytest.raises(ArtifactError, match="NaN or infinite weights \\(member 'wave'"):
        load_model(tmp_path / "nan.ckpt")
    other = copy.deepcopy(payloads)
    other["wave"]["classes"] = list(reversed(other["wave"]["classes"]))
    with pytest.raises(ValueError, match="predict different classes"):
        ensemble_payload(other, None, "mixed")
    with pytest.raises(ValueError, match="itself an ensemble"):
        ensemble_payload({"a": payloads["log"], "b": payload}, None, "mixed")


def test_assemble_ensemble_scores_the_mean_softmax(members, tiny_dataset, tmp_path):
    """assemble-ensemble writes the zoo layout; its test accuracy is the weighted mean softmax's,
    computed here by hand from the members."""
    out = tmp_path / "ens"
    argv = ["assemble-ensemble", "--dataset-dir", str(tiny_dataset), "--frontend", "mixed",
            "--weights", "[2, 1]", "--out-dir", str(out), "--device", "cpu"]  # fmt: skip
    for name, path in members.items():
        argv += ["--member", name, str(path)]
    assert main(argv) == 0
    assert {"history.csv", "metrics.json", "model.ckpt"} <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    dataset = load_dataset(tiny_dataset, mmap=False)
    rows = dataset.split_indices("test")
    x = torch.from_numpy(dataset.float_waveforms(rows))
    with torch.no_grad():
        p = sum(w * load_model(members[n])(x).softmax(-1) for n, w in (("log", 2 / 3), ("wave", 1 / 3)))
    want = float((p.argmax(1).numpy() == dataset.manifest["label_idx"].to_numpy()[rows]).mean())
    assert metrics["test_accuracy"] == pytest.approx(want)
    assert metrics["n_test"] == len(rows) and metrics["spec"] == {"frontend": "mixed", "arch": "ensemble"}
    assert metrics["members"]["log"]["weight"] == pytest.approx(2 / 3)
    assert [row["snr_db"] for row in metrics["noise"]] == [40.0, 30.0, 20.0]


def test_assemble_ensemble_refuses_members_of_another_dataset(members, tiny_dataset, tmp_path, capsys):
    """A member trained on other classes than the dataset's: one line naming it, exit 2, no output."""
    payload = load_checkpoint(members["wave"])
    payload["classes"] = [f"other_{c}" for c in payload["classes"]]
    (tmp_path / "other").mkdir()
    write_torch(tmp_path / "other" / "model.ckpt", payload)
    (tmp_path / "other" / "metrics.json").write_text(json.dumps({"test_accuracy": 0.5, "n_train": 10}))
    argv = ["assemble-ensemble", "--dataset-dir", str(tiny_dataset), "--frontend", "mixed", "--out-dir",
            str(tmp_path / "ens"), "--device", "cpu", "--member", "log", str(members["log"]),
            "--member", "other", str(tmp_path / "other" / "model.ckpt")]  # fmt: skip
    assert main(argv) == 2
    assert "ensemble member 'other' predicts" in capsys.readouterr().err
    assert not (tmp_path / "ens").exists()


def checked(config: dict) -> dict:
    config = json.loads(json.dumps(config))
    validate_config(config, SCHEMAS / "config.schema.yaml")
    check_config(config)
    return config


def test_config_ensembles_are_assembled_not_trained(tmp_path):
    """An ensemble is no training job; its representation is its members' shared one (or mixed);
    generalisation's default takes it when its members are trained models."""
    config = tiny_config(tmp_path / "results")
    config["models"]["log_seed1"] = {**config["models"]["logmel_cnn"], "seed": 1}
    config["models"]["pair"] = {"members": ["logmel_cnn", "log_seed1"]}
    config["models"]["mixed"] = {"members": ["logmel_cnn", "wave_cnn"], "weights": [2, 1]}
    config["generalisation"]["models"] = None
    seen = checked(config)
    assert ensemble_models(seen) == ["pair", "mixed"]
    assert "pair" not in trained_models(seen) and "log_seed1" in trained_models(seen)
    assert (
        model_frontend(seen["models"], "pair") == "logmel"
        and model_frontend(seen["models"], "mixed") == "mixed"
    )
    assert {"pair", "mixed", "logmel_cnn", "log_seed1"} <= set(generalisation_models(seen))


@pytest.mark.parametrize(
    "entry, says",
    [
        ({"members": ["logmel_cnn", "nope"]}, r"models.bad.members: \['nope'\] are not models of the zoo"),
        (
            {"members": ["logmel_cnn", "wave_cnn"], "weights": [1]},
            "models.bad.weights: 1 weights for 2 members",
        ),
        ({"members": ["logmel_cnn", "logmel_cnn"]}, "names a model twice"),
        ({"members": ["logmel_cnn", "pair"]}, r"\['pair'\] are ensembles themselves"),
    ],
)
def test_bad_ensembles_are_refused_by_key(tmp_path, entry, says):
    config = tiny_config(tmp_path / "results")
    config["models"]["pair"] = {"members": ["logmel_cnn", "wave_cnn"]}
    config["models"]["bad"] = entry
    with pytest.raises(ConfigError, match=says):
        checked(config)


def test_schema_refuses_a_one_member_ensemble_and_a_bad_weight(tmp_path):
    config = tiny_config(tmp_path / "results")
    config["models"]["bad"] = {"members": ["logmel_cnn"]}
    with pytest.raises(ConfigError, match=r"models\.bad\.members"):
        checked(config)
    config["models"]["bad"] = {"members": ["logmel_cnn", "wave_cnn"], "weights": [1, -1]}
    with pytest.raises(ConfigError, match=r"models\.bad\.weights"):
        checked(config)


def test_an_ensemble_is_not_defended_and_not_an_attack_member(tmp_path):
    """Adversarial training retrains a recipe, which an ensemble has not; the representation stage's
    ensemble attack takes the members themselves."""
    config = tiny_config(tmp_path / "results")
    config["models"]["pair"] = {"members": ["logmel_cnn", "wave_cnn"]}
    bad = copy.deepcopy(config)
    bad["defenses"]["models"]["pair_fast_at"] = {"model": "pair", "mode": "fast_at", "snr_db": 30}
    with pytest.raises(ConfigError, match="'pair' is an ensemble; defend its members"):
        checked(bad)
    from advmir.representation.plan import RepresentationPlan, RepresentationPlanError

    bad = copy.deepcopy(config)
    bad["representation_transfer"]["members"] = ["logmel_cnn", "wave_cnn", "pair"]
    seen = checked(bad)
    with pytest.raises(RepresentationPlanError, match=r"\['pair'\] are ensembles"):
        RepresentationPlan(seen, str(tmp_path), ["synth_notes"], seen["models"])


def test_check_model_runs_an_ensemble_trained_or_not(members, tiny_dataset, tmp_path):
    """check-model on an ensemble: built from its members' checkpoints when they are trained
    (here: one is, one is not), every check of the contract run on the dataset's clips."""
    import shutil
    import subprocess
    import sys

    import yaml

    from conftest import REPO, TINY_SYNTH

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    results = tmp_path / "results"
    (results / "data").mkdir(parents=True)
    (results / "data" / "synth_notes").symlink_to(tiny_dataset)
    (results / "models" / "synth_notes" / "log").mkdir(parents=True)
    shutil.copy(members["log"], results / "models" / "synth_notes" / "log" / "model.ckpt")
    config.update(results=str(results), synth_notes=dict(TINY_SYNTH))
    config["models"] = {**SPECS, "pair": {"members": ["log", "wave"], "weights": [1, 3]}}
    config["generalisation"]["models"] = None
    config["attacks"] = {}
    config["representation_transfer"]["enabled"] = False
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [
        sys.executable,
        "-m",
        "advmir",
        "check-model",
        "--configfile",
        str(tmp_path / "config.yaml"),
        "--",
        "pair",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert "pair: untrained zoo model on" in run.stdout, run.stdout + run.stderr
    for check in ("output", "deterministic", "gradient"):
        assert any(line.strip().startswith("PASS") and check in line for line in run.stdout.splitlines()), (
            run.stdout
        )
