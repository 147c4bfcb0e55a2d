"""Models of your own (advmir.models.external, advmir.models.check): the wrapper, import-model,
check-model and the refusals, on a tiny log-mel CNN at 22.05 kHz trained on the tiny data."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio
import yaml

from advmir.cli import main
from advmir.datasets.contract import load_dataset
from advmir.datasets.resample import KAISER_BEST
from advmir.models.check import check_contract
from advmir.models.external import ExternalModelError, check_entry, match_classes, wrap
from advmir.models.zoo import load_model
from conftest import REPO, TINY_SYNTH
from tiny_external import (
    RATE,
    SAMPLES,
    SECONDS,
    ArgmaxInside,
    Int16Input,
    NoisyInference,
    export,
    train_external,
)

CLASSES = ["bass", "flute", "mallet", "organ"]


@pytest.fixture(scope="module")
def net(tiny_dataset, one_torch_thread):
    return train_external(tiny_dataset, CLASSES)


@pytest.fixture(scope="module")
def scripted(net, tmp_path_factory) -> Path:
    return export(net, tmp_path_factory.mktemp("own") / "net.pt")


def entry(path: Path, **extra) -> dict:
    return {"source": "torchscript", "path": str(path), "sample_rate": RATE, "input_seconds": SECONDS,
            "classes": list(CLASSES), **extra}  # fmt: skip


def import_args(dataset: Path, name: str, spec: dict, out: Path) -> list[str]:
    """argv of ``import-model`` (CPU)."""
    return ["import-model", "--dataset-dir", str(dataset), "--name", name, "--spec", json.dumps(spec),
            "--out-dir", str(out), "--device", "cpu"]  # fmt: skip


def test_wrapper_resamples_inside_the_gradient_path(tiny_dataset, net, scripted):
    """The wrapper's scores are the model's own on the resampled, padded clip; the gradient reaches
    the 16 kHz waveform; the class with no dataset label is never predicted."""
    dataset = load_dataset(tiny_dataset, mmap=False)
    model, match, _ = wrap("mine", entry(scripted), dataset.classes, dataset.sample_rate)
    assert match.unmatched_classes == ["organ"] and match.unmatched_labels == []
    x = torch.from_numpy(dataset.float_waveforms(dataset.split_indices("test")[:6]))
    by_hand = torchaudio.functional.resample(x, dataset.sample_rate, RATE, **KAISER_BEST)
    by_hand = torch.nn.functional.pad(by_hand, (0, SAMPLES - by_hand.shape[1]))
    with torch.no_grad():
        want = net(by_hand)[:, :3]
        got = model(x)
    assert got.shape == (6, 3)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    xg = x.clone().requires_grad_(True)
    model(xg)[:, 0].sum().backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0


def test_sliding_windows_pool_scores(scripted):
    """window: slide cuts a long clip into input-length windows every hop and pools their scores."""
    model, _, _ = wrap("mine", entry(scripted, window="slide", hop_seconds=0.5), CLASSES[:3], RATE)
    x = 0.1 * torch.randn(2, int(RATE * 3.2))
    windows = model.windows(x)
    assert windows.shape == (2, 4, SAMPLES)  # starts 0, 0.5, 1.0 s and the last 1.2 s
    torch.testing.assert_close(windows[:, -1], x[:, -SAMPLES:])
    with torch.no_grad():
        own = torch.stack([model.inner(windows[:, i]) for i in range(4)], 1).mean(1)[:, :3]
        torch.testing.assert_close(model(x), own, atol=1e-5, rtol=1e-5)


def test_class_map_partial_match_and_unknown_labels():
    match = match_classes(
        "m", ["piano", "bass", "voice"], {"piano": "keyboard", "voice": None}, ["bass", "keyboard", "reed"]
    )
    assert match.label_index == [1, 0, -1]
    assert match.unmatched_classes == ["voice"] and match.unmatched_labels == ["reed"]
    with pytest.raises(ExternalModelError, match=r"models\.m: class_map maps to \['brass'\]"):
        match_classes("m", ["piano"], {"piano": "brass"}, ["bass", "keyboard"])
    with pytest.raises(ExternalModelError, match="not among the model's classes"):
        match_classes("m", ["piano"], {"guitar": "bass"}, ["bass"])
    with pytest.raises(ExternalModelError, match="none of the model's classes"):
        match_classes("m", ["speech", "noise"], {}, ["bass"])


def test_import_model_with_partly_matching_classes(tiny_dataset, scripted, tmp_path):
    """`mallet` mapped to no label: mallet clips are left out of the scored test clips and reported;
    the checkpoint loads with load_model (weights_only) and never predicts mallet."""
    spec = entry(scripted, class_map={"mallet": None})
    out = tmp_path / "mine"
    code = main(import_args(tiny_dataset, "mine", spec, out))
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    dataset = load_dataset(tiny_dataset, mmap=False)
    test = dataset.manifest.iloc[dataset.split_indices("test")]
    assert metrics["external"]["unmatched_classes"] == ["mallet", "organ"]
    assert metrics["external"]["unmatched_labels"] == ["mallet"]
    assert metrics["n_test"] == int((test["label"] != "mallet").sum()) and metrics["n_test_unscored"] > 0
    assert metrics["test_accuracy"] > 0.8
    model = load_model(out / "model.ckpt")
    with torch.no_grad():
        pred = model(torch.from_numpy(dataset.float_waveforms(dataset.split_indices("test")))).argmax(1)
    assert dataset.classes.index("mallet") not in set(pred.tolist())


def check_results(module: torch.nn.Module, tiny_dataset: Path, tmp_path: Path, **extra) -> tuple[dict, list]:
    dataset = load_dataset(tiny_dataset, mmap=False)
    model, _, _ = wrap(
        "mine", entry(export(module, tmp_path / "m.pt"), **extra), dataset.classes, dataset.sample_rate
    )
    rows = dataset.split_indices("test")[:24]
    labels = dataset.manifest["label_idx"].to_numpy()[rows]
    findings = check_contract(model, dataset.float_waveforms(rows), labels, len(dataset.classes))
    return {f.check: f.ok for f in findings}, findings


def test_contract_passes_a_good_model(net, tiny_dataset, tmp_path):
    ok, findings = check_results(net, tiny_dataset, tmp_path)
    assert all(ok.values()), [f.line() for f in findings]


@pytest.mark.parametrize(
    ("broken", "fails", "says"),
    [
        (NoisyInference, "deterministic", "random in eval mode"),
        (ArgmaxInside, "gradient", "non-differentiable step"),
        (Int16Input, "scale", "multiply scale by 32768"),
    ],
)
def test_contract_catches_a_broken_model(net, tiny_dataset, tmp_path, broken, fails, says):
    """Randomness at inference, an argmax inside, an int16-scale model declared as [-1, 1]: each
    fails its own check with a message that says what to do; the rest still pass."""
    ok, findings = check_results(broken(net), tiny_dataset, tmp_path)
    assert not ok[fails], [f.line() for f in findings]
    assert says in next(f.detail for f in findings if f.check == fails)
    if broken is Int16Input:  # declared right, it passes
        ok, findings = check_results(broken(net), tiny_dataset, tmp_path, scale=32768.0)
        assert all(ok.values()), [f.line() for f in findings]


def test_import_model_refuses_a_model_that_fails_its_contract(net, tiny_dataset, tmp_path, capsys):
    spec = entry(export(ArgmaxInside(net), tmp_path / "argmax.pt"))
    code = main(import_args(tiny_dataset, "mine", spec, tmp_path / "out"))
    assert code == 2
    assert "models.mine: fails the model contract" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


FACTORY = """
import torch
from torch import nn


class Linear(nn.Module):
    def __init__(self, n_classes, width=8):
        super().__init__()
        self.proj = nn.Conv1d(1, width, 256, stride=128)
        self.out = nn.Linear(width, n_classes)

    def forward(self, x):
        return self.out(torch.relu(self.proj(x[:, None])).mean(-1))


def build(n_classes=3, width=8):
    return Linear(n_classes, width)


def broken(**kwargs):
    raise RuntimeError("no weights here")


def not_a_module(**kwargs):
    return {"weights": 1}
"""


@pytest.fixture
def factory_dir(tmp_path) -> Path:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "my_models.py").write_text(FACTORY)
    return tmp_path / "code"


def python_entry(code: Path, **extra) -> dict:
    return {"source": "python", "factory": "my_models:build", "code_dir": str(code), "sample_rate": 16000,
            "classes": ["bass", "flute", "mallet"], "factory_args": {"n_classes": 3}, **extra}  # fmt: skip


def test_python_factory_with_weights_round_trips(factory_dir, tiny_dataset, tmp_path):
    sys.path.insert(0, str(factory_dir))
    try:
        import my_models
    finally:
        sys.path.remove(str(factory_dir))
    torch.manual_seed(3)
    module = my_models.build(3)
    torch.save(module.state_dict(), tmp_path / "weights.pt")
    spec = python_entry(factory_dir, weights=str(tmp_path / "weights.pt"))
    assert main(import_args(tiny_dataset, "py", spec, tmp_path / "py")) == 0
    loaded = load_model(tmp_path / "py" / "model.ckpt")
    x = 0.1 * torch.randn(3, 8000)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), module.eval()(x))


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"factory": "my_models:broken"}, "raised RuntimeError: no weights here"),
        ({"factory": "my_models:not_a_module"}, "returned a dict, not a torch.nn.Module"),
        ({"factory": "my_models:missing"}, "cannot import factory"),
        ({"factory_args": {"n_classes": 3, "width": 4}, "weights": "WEIGHTS"}, "does not fit"),
        ({"classes": ["bass", "flute"]}, "returns 3 scores per input but classes lists 2"),
    ],
)
def test_bad_python_models_are_refused_naming_the_model(factory_dir, tmp_path, change, says):
    torch.save({"proj.weight": torch.zeros(8, 1, 256)}, tmp_path / "w.pt")
    spec = python_entry(factory_dir, **change)
    if spec.get("weights") == "WEIGHTS":
        spec["weights"] = str(tmp_path / "w.pt")
    with pytest.raises(ExternalModelError, match=r"^models\.py: ") as err:
        check_entry("py", spec)
    assert says in str(err.value)


def test_a_state_dict_is_not_a_torchscript_file(net, tmp_path):
    torch.save(net.state_dict(), tmp_path / "state.pt")
    with pytest.raises(ExternalModelError, match="is not a TorchScript model"):
        check_entry("mine", entry(tmp_path / "state.pt"))


def test_check_model_command(net, scripted, tiny_dataset, tmp_path):
    """check-model on a config: every check printed; exit 1 naming the failed check for a model
    with an argmax inside; the dataset not prepared yet: synthetic tones, no accuracy check."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    results = tmp_path / "results"
    (results / "data").mkdir(parents=True)
    (results / "data" / "synth_notes").symlink_to(tiny_dataset)
    config.update(results=str(results), synth_notes=dict(TINY_SYNTH))
    config["models"] = {
        "mine": entry(scripted),
        "argmax": entry(export(ArgmaxInside(net), tmp_path / "a.pt")),
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = [sys.executable, "-m", "advmir", "check-model", "--configfile", str(tmp_path / "config.yaml"), "--"]
    good = subprocess.run([*run, "mine"], capture_output=True, text=True, cwd=tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    assert (
        "every check passed" in good.stdout
        and "model classes left out (no dataset label): organ" in good.stdout
    )
    assert good.stdout.count("PASS") == 5
    bad = subprocess.run([*run, "argmax"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 1 and "FAIL  gradient" in bad.stdout and "FAILED gradient" in bad.stdout
    config["results"] = str(tmp_path / "elsewhere")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    fresh = subprocess.run([*run, "mine"], capture_output=True, text=True, cwd=tmp_path)
    assert fresh.returncode == 0 and "synthetic tones" in fresh.stdout, fresh.stdout + fresh.stderr
    assert np.any(["unlabelled clips" in line for line in fresh.stdout.splitlines()])


def test_imported_model_feeds_the_classifier_based_detectors(tiny_dataset, scripted, tmp_path):
    """max_softmax and label_errors with the imported model as their classifier: one finite score
    per clip; a clip whose label was swapped scores above the clean clips on label_errors."""
    from advmir.anomaly.evaluate import score_with_detector

    assert main(import_args(tiny_dataset, "mine", entry(scripted), tmp_path / "mine")) == 0
    dataset = load_dataset(tiny_dataset, mmap=False)
    models = {"mine": str(tmp_path / "mine" / "model.ckpt")}
    (softmax,) = score_with_detector("max_softmax", tiny_dataset, [dataset], models=models, max_reference=32)
    assert len(softmax) == len(dataset.manifest) and np.isfinite(softmax["score"]).all()
    swapped = dataset.manifest.copy()
    test = dataset.split_indices("test")[:6]
    swapped.loc[test, "label_idx"] = (swapped.loc[test, "label_idx"] + 1) % len(dataset.classes)
    swapped.loc[test, "label"] = [dataset.classes[i] for i in swapped.loc[test, "label_idx"]]
    relabelled = dataclasses.replace(dataset, manifest=swapped)
    (errors,) = score_with_detector(
        "label_errors", tiny_dataset, [relabelled], models=models, max_reference=32
    )
    others = np.setdiff1d(dataset.split_indices("test"), test)
    assert errors["score"].to_numpy()[test].min() > np.median(errors["score"].to_numpy()[others])


def test_torch_export_program(net, scripted, tiny_dataset, tmp_path):
    """source: export (a .pt2 of torch.export with a dynamic batch): imported like TorchScript, the
    same scores and a gradient at the input."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(net, (torch.zeros(2, SAMPLES),), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "net.pt2")
    spec = {**entry(tmp_path / "net.pt2"), "source": "export"}
    assert main(import_args(tiny_dataset, "exp", spec, tmp_path / "exp")) == 0
    exported = load_model(tmp_path / "exp" / "model.ckpt")
    dataset = load_dataset(tiny_dataset, mmap=False)
    traced, _, _ = wrap("mine", entry(scripted), dataset.classes, dataset.sample_rate)
    x = torch.from_numpy(dataset.float_waveforms(dataset.split_indices("test")[:5])).requires_grad_(True)
    torch.testing.assert_close(exported(x), traced(x), atol=1e-4, rtol=1e-4)
    (grad,) = torch.autograd.grad(exported(x)[:, 1].sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_stages_that_retrain_refuse_a_model_of_your_own(scripted, tmp_path):
    """Adversarial training and the generalisation splits retrain a model from its recipe: naming a
    model of your own there is refused by key; by default the generalisation stage leaves it out,
    while attacks and transfer take it like every model."""
    from advmir.config import SCHEMAS, ConfigError, check_config, generalisation_models, validate_config
    from conftest import tiny_config

    config = tiny_config(tmp_path / "results")
    config["models"]["mine"] = entry(scripted)
    config["generalisation"]["models"] = None
    seen = json.loads(json.dumps(config))
    validate_config(seen, SCHEMAS / "config.schema.yaml")
    check_config(seen)
    assert "mine" not in generalisation_models(seen) and "logmel_cnn" in generalisation_models(seen)
    bad = json.loads(json.dumps(config))
    bad["defenses"]["models"]["mine_fast_at"] = {"model": "mine", "mode": "fast_at", "snr_db": 30}
    bad["generalisation"]["models"] = ["mine"]
    validate_config(bad, SCHEMAS / "config.schema.yaml")
    with pytest.raises(ConfigError) as err:
        check_config(bad)
    assert "defenses.models.mine_fast_at: 'mine' is a model of your own" in str(err.value)
    del bad["defenses"]["models"]["mine_fast_at"]
    with pytest.raises(ConfigError, match=r"generalisation.models \['mine'\] are models of your own"):
        check_config(bad)


def test_a_transformation_defense_wraps_a_model_of_your_own(tiny_dataset, scripted):
    """defenses.transforms may name a model of your own; the defended model (8-bit rounding,
    straight-through) still passes a gradient to the 16 kHz waveform."""
    from advmir.defenses.transforms import DefendedModel, build_transform, parse_transform

    setting = parse_transform("q8", {"kind": "quantize", "bits": 8, "model": "mine"}, 16000, ["mine"])
    dataset = load_dataset(tiny_dataset, mmap=False)
    model, _, _ = wrap("mine", entry(scripted), dataset.classes, dataset.sample_rate)
    defended = DefendedModel(model, build_transform(setting, 16000), "q8").eval()
    x = torch.from_numpy(dataset.float_waveforms(dataset.split_indices("test")[:4])).requires_grad_(True)
    (grad,) = torch.autograd.grad(defended(x).logsumexp(1).sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
