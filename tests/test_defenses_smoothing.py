"""Randomized smoothing (advmir.defenses.smoothing) and its base model's training mode (gaussian):
the statistics against known values, CERTIFY and PREDICT on tiny real models whose noisy
predictions are known in closed form, the SNR arithmetic, the config's refusals, the rules in a dry
run, and the commands end to end on the tiny dataset."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import norm
from torch import nn

from advmir.config import ConfigError
from advmir.defenses.plan import DefensePlan, DefensePlanError
from advmir.defenses.settings import DefenseConfigError, SmoothingConfig
from advmir.defenses.smoothing import (
    ABSTAIN,
    Smooth,
    certified_accuracy,
    certified_at,
    certify_clips,
    clip_generator,
    lower_confidence_bound,
    max_radius,
    radius,
    snr_threshold_db,
)
from conftest import checked_config, run_snakemake, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T = 400  # samples of the synthetic clips


class SumSign(nn.Module):
    """A real linear classifier: logits (B, 2) = [s, -s] with s the sum of the clip's samples (B, T).
    On a silent clip plus Gaussian noise, s is symmetric about 0: the two classes split evenly."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[1.0], [-1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.sum(dim=1, keepdim=True))


class Constant(nn.Module):
    """A real linear classifier that ignores its input: every clip (B, T) is class ``k`` of ``c``."""

    def __init__(self, c: int = 3, k: int = 1) -> None:
        super().__init__()
        self.linear = nn.Linear(1, c)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.copy_(torch.eye(c)[k])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x[:, :1] * 0)


def setting(**kw: object) -> SmoothingConfig:
    return SmoothingConfig.from_dict("s", {"model": "m", "sigma": 0.1, **kw})


# -- the statistics -----------------------------------------------------------------------------


def test_clopper_pearson_lower_bound_against_known_values():
    # the exact (Clopper-Pearson) 95% interval of 50 successes in 100 is [0.3983, 0.6017]: its lower
    # end is the one-sided bound at alpha = 0.025
    assert lower_confidence_bound(50, 100, 0.025) == pytest.approx(0.3983, abs=1e-4)
    # all n successes: Beta(n, 1)'s alpha quantile is alpha^(1/n); none: 0
    assert lower_confidence_bound(1000, 1000, 0.001) == pytest.approx(0.001 ** (1 / 1000), rel=1e-12)
    assert lower_confidence_bound(0, 100, 0.001) == 0.0
    # the bound is below the estimate and tightens with n
    assert lower_confidence_bound(90, 100, 0.001) < lower_confidence_bound(900, 1000, 0.001) < 0.9


def test_radius_is_sigma_times_the_normal_quantile_and_abstains_below_one_half():
    assert radius(float(norm.cdf(1.0)), 0.02) == pytest.approx(0.02, rel=1e-9)
    assert radius(float(norm.cdf(2.0)), 0.5) == pytest.approx(1.0, rel=1e-9)
    assert radius(0.5, 0.1) == 0.0 and radius(0.4999, 0.1) == 0.0
    # the README's arithmetic: n = 1,000, alpha = 0.001 caps the radius at 2.46 sigma
    assert max_radius(1000, 0.001, 1.0) == pytest.approx(2.4633, abs=1e-4)
    assert max_radius(100, 0.001, 1.0) == pytest.approx(1.5005, abs=1e-4)


def test_certified_snr_threshold_arithmetic():
    # a clip of norm 1 and a radius 50 dB below it: certified at 50 dB and above, not below
    r = 10 ** (-50 / 20)
    assert snr_threshold_db(r, 1.0) == pytest.approx(50.0, abs=1e-9)
    assert certified_at(r, 1.0, 50.1) and not certified_at(r, 1.0, 49.9)
    assert snr_threshold_db(0.0, 1.0) == math.inf  # no certificate: no SNR is covered
    thresholds = snr_threshold_db(np.array([0.1, 0.0, 1.0]), np.array([1.0, 1.0, 10.0]))
    assert np.allclose(thresholds[[0, 2]], [20.0, 20.0]) and thresholds[1] == np.inf
    # 1 s at 16 kHz of RMS r and noise of std sigma at per-sample SNR s = 20 log10(r / sigma): the
    # largest radius certifies down to s + 20 log10(sqrt(16,000) / 2.4633) = s + 34.2 dB
    rms, sigma = 0.1, 0.1 * 10 ** (-16 / 20)
    threshold = snr_threshold_db(max_radius(1000, 0.001, sigma), rms * math.sqrt(16000))
    assert threshold == pytest.approx(16 + 34.21, abs=0.01)


# -- CERTIFY and PREDICT on tiny real models ------------------------------------------------------


def test_an_even_split_abstains_in_certify_and_predict():
    smooth = Smooth(SumSign(), 2, sigma=0.5, batch_size=64)
    silent = torch.zeros(T)
    counts = smooth.sample_counts(silent, 1000, clip_generator(0, 0, 0))
    assert abs(counts[0] - 500) < 80, counts  # the noise's sum is symmetric: about half each
    cert = smooth.certify(silent, 100, 1000, 0.001, clip_generator(0, 0, 0))
    assert cert.prediction == ABSTAIN and cert.radius == 0.0 and cert.p_lower < 0.5
    assert smooth.predict(silent, 1000, 0.001, clip_generator(0, 0, 1)) == ABSTAIN


def test_a_constant_classifier_certifies_the_closed_form_radius():
    """Every noisy copy is class 1: n_A = n, so p_A_lower = alpha^(1/n) and R = sigma Phi^-1(alpha^(1/n))."""
    sigma, n, alpha = 0.03, 1000, 0.001
    smooth = Smooth(Constant(), 3, sigma=sigma, batch_size=300)
    x = torch.randn(T, generator=torch.Generator().manual_seed(1)) * 0.1
    cert = smooth.certify(x, 100, n, alpha, clip_generator(0, 7, 0))
    assert (cert.prediction, cert.top, cert.n_top) == (1, 1, n)
    assert cert.counts.tolist() == [0, n, 0]
    assert cert.radius == pytest.approx(sigma * norm.ppf(alpha ** (1 / n)), rel=1e-9)
    assert cert.radius == pytest.approx(max_radius(n, alpha, sigma))
    assert smooth.predict(x, 100, alpha, clip_generator(0, 7, 1)) == 1


def test_a_far_clip_is_certified_and_the_noise_is_seeded():
    """SumSign on a clip whose sum is far above the noise's spread: class 0 with radius near the cap;
    the same seed gives the same rows, another seed other noise."""
    ones = torch.ones(3, T) * torch.tensor([[0.05], [0.0], [0.0]])  # far from the boundary, silent twice
    labels = torch.tensor([0, 0, 1])
    s = setting(sigma=0.05, n0=20, n=200, batch_size=50)
    run = lambda seed: certify_clips(  # noqa: E731
        SumSign(), ones, labels, np.array([3, 4, 5]), np.array(["a", "b", "c"]), s, n_classes=2, seed=seed,
        progress=False,
    )  # fmt: skip
    first, again, other = run(0), run(0), run(1)
    pd.testing.assert_frame_equal(first, again)
    assert not first[["n_top", "n_label"]].equals(other[["n_top", "n_label"]])
    far = first.iloc[0]
    assert far["prediction"] == 0 and far["correct"] and far["n_top"] == 200
    assert far["radius"] == pytest.approx(max_radius(200, 0.001, 0.05))
    assert far["norm"] == pytest.approx(0.05 * math.sqrt(T))
    assert far["snr_threshold_db"] == pytest.approx(snr_threshold_db(far["radius"], far["norm"]))
    assert first.loc[1:, "abstain"].all() and (first.loc[1:, "snr_threshold_db"] == math.inf).all()
    # certified accuracy: the far clip only, from its threshold upwards
    assert certified_accuracy(first, far["snr_threshold_db"] + 0.01) == pytest.approx(1 / 3)
    assert certified_accuracy(first, far["snr_threshold_db"] - 0.01) == 0.0


# -- the gaussian training mode ---------------------------------------------------------------------


def test_gaussian_mode_trains_on_seeded_noisy_clips(tiny_dataset, tmp_path):
    from advmir.defenses.adversarial import build_adversarial
    from advmir.models.train import TrainConfig, train_model

    mode = build_adversarial({"mode": "gaussian", "sigma": 0.05}, seed=3)
    assert mode.attack is None and mode.cfg.as_dict() == {"mode": "gaussian", "sigma": 0.05}
    x, y = torch.zeros(4, T), torch.tensor([0, 1, 0, 1])
    criterion = nn.CrossEntropyLoss()
    model = SumSign()
    loss, logits = mode.training_loss(model, x, y, criterion)
    noise = torch.randn((4, T), generator=torch.Generator().manual_seed(_first_batch_seed(3)))
    assert torch.allclose(logits, model(0.05 * noise)) and torch.isclose(loss, criterion(logits, y))
    # validation under the same noise level, the same noisy clips in every epoch, apart from training's
    val = mode.validation_input(x, 2)
    assert torch.equal(val, mode.validation_input(x, 2)) and not torch.equal(val, mode.validation_input(x, 3))
    assert float(val.std()) == pytest.approx(0.05, rel=0.05) and not torch.allclose(val, 0.05 * noise)
    adversarial = build_adversarial({"mode": "pgd_at", "eps": 0.01, "steps": 1}, seed=3)
    assert torch.equal(adversarial.validation_input(x, 2), x)  # other modes validate on clean clips
    spec = {"frontend": "waveform", "arch": "cnn1d", "arch_args": {"width": 4}}
    fast = {"max_epochs": 1, "min_epochs": 1, "patience": 1, "batch_size": 32}
    from advmir.datasets.contract import load_dataset

    cfg = TrainConfig(seed=0, adversarial={"mode": "gaussian", "sigma": 0.01}, **fast)
    _, metrics, _ = train_model(load_dataset(tiny_dataset), spec, cfg, "cpu", tmp_path)
    assert metrics["adversarial"] == {"mode": "gaussian", "sigma": 0.01, "craft_seconds": 0.0}


def _first_batch_seed(seed: int) -> int:
    return int(np.random.SeedSequence([seed, 0]).generate_state(1)[0])


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"mode": "gaussian"}, ["'sigma'", "(0, 1]"]),
        ({"mode": "gaussian", "sigma": 0}, ["'sigma'", "(0, 1]", "got 0"]),
        ({"mode": "gaussian", "sigma": 0.01, "snr_db": 40}, ["snr_db", "gaussian", "allowed"]),
        ({"mode": "pgd_at", "eps": 0.01, "sigma": 0.01}, ["sigma", "pgd_at", "allowed"]),
    ],
)
def test_bad_gaussian_settings_are_refused_by_name(values, words):
    from advmir.defenses.settings import AdversarialConfig

    with pytest.raises(DefenseConfigError) as info:
        AdversarialConfig.from_dict(values)
    for word in words:
        assert word in str(info.value), str(info.value)


# -- the config, the plan and the dry run -------------------------------------------------------------


def smoothing_config(tmp_path) -> dict:
    """The tiny workflow's config with a gaussian-mode model and its smoothed classifier."""
    config = tiny_config(tmp_path / "results")
    config["defenses"]["models"]["logmel_cnn_gaussian"] = {
        "model": "logmel_cnn",
        "mode": "gaussian",
        "sigma": 0.02,
        "training": {"max_epochs": 2, "min_epochs": 2},
    }
    config["defenses"]["smoothing"] = {
        "smoothed": {"model": "logmel_cnn_gaussian", "sigma": 0.02, "n": 100, "n0": 10, "eval_size": 4}
    }
    return config


def test_plan_certifies_each_smoothed_classifier(tmp_path):
    seen = checked_config(smoothing_config(tmp_path))
    plan = DefensePlan(seen, "results", ["synth_notes"], seen["models"])
    assert plan.smoothing_files() == ["results/defenses/synth_notes/smoothing/smoothed/smoothing.json"]
    assert plan.smoothing_checkpoint("synth_notes", "smoothed") == (
        "results/models/synth_notes/logmel_cnn_gaussian/model.ckpt"
    )
    entry = json.loads(plan.smoothing_json("smoothed"))
    assert (entry["n0"], entry["n"], entry["alpha"], entry["n_predict"]) == (10, 100, 0.001, 100)
    assert SmoothingConfig.from_dict("smoothed", entry).entry() == entry  # what certify-smoothed parses
    assert json.loads(plan.smoothing_info("smoothed")) == {"defense": "gaussian", "train_sigma": 0.02}
    assert plan.smoothing_eval_size("smoothed") == 4
    assert plan.smoothing_snr_option().startswith("70 65 60")  # the schema's default grid
    assert {"results/tables/certified.csv", "results/figures/certified.png"} <= set(plan.targets())
    # the gaussian model is certified, not attacked by the robust evaluation's default
    seen["defenses"]["evaluation"]["models"] = None
    plan = DefensePlan(seen, "results", ["synth_notes"], seen["models"])
    assert (
        "logmel_cnn_gaussian" not in plan.evaluated_models and "logmel_cnn_fast_at" in plan.evaluated_models
    )


SMOOTHING_REFUSALS = [
    ({"n": 50}, ["defenses.smoothing.smoothed.n", "50", "100"]),
    ({"alpha": 0.5}, ["defenses.smoothing.smoothed.alpha", "0.5"]),
    ({"alpha": 0}, ["defenses.smoothing.smoothed.alpha", "0"]),
    ({"sigma": 0}, ["defenses.smoothing.smoothed.sigma", "0"]),
    ({"sigma": -0.1}, ["defenses.smoothing.smoothed.sigma", "-0.1"]),
    ({"n0": 0}, ["defenses.smoothing.smoothed.n0", "0", "1"]),
    ({"model": "nope"}, ["defenses.smoothing.smoothed", "'model'", "nope", "logmel_cnn_gaussian"]),
]


@pytest.mark.parametrize(("change", "words"), SMOOTHING_REFUSALS)
def test_bad_smoothing_settings_are_refused_by_key(tmp_path, change, words):
    config = smoothing_config(tmp_path)
    config["defenses"]["smoothing"]["smoothed"].update(change)
    with pytest.raises((ConfigError, DefensePlanError)) as info:
        seen = checked_config(config)
        DefensePlan(seen, "results", ["synth_notes"], seen["models"])
    for word in words:
        assert word in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"n": 99}, ["n", "an integer >= 100", "99"]),
        ({"alpha": 0.7}, ["alpha", "(0, 0.5)", "0.7"]),
        ({"sigma": 0.0}, ["sigma", "(0, 1]"]),
        ({"n0": 0}, ["n0", ">= 1"]),
        ({"model": "nope"}, ["'model'", "nope"]),
        ({"nn": 3}, ["unknown", "nn", "allowed"]),
    ],
)
def test_the_python_check_refuses_what_the_schema_refuses(change, words):
    """The command line checks the entry too (run by hand, without the workflow's schema)."""
    with pytest.raises(DefenseConfigError) as info:
        SmoothingConfig.from_dict("smoothed", {"model": "m", "sigma": 0.1, **change}, models=["m"])
    assert str(info.value).startswith("defenses.smoothing.smoothed")
    for word in words:
        assert word in str(info.value), str(info.value)


def test_dry_run_plans_the_rules_and_refuses_a_bad_entry_by_key(tmp_path):
    config = smoothing_config(tmp_path)
    out = run_snakemake(tmp_path, config, "-n").stdout
    counts = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", out, re.M)}
    assert counts["certify_smoothed"] == 1 and counts["summarize_certified"] == 1
    assert counts["plot_certified"] == 1
    assert "logmel_cnn_gaussian" in out  # trained by train_model, a zoo model
    config["defenses"]["smoothing"]["smoothed"]["model"] = "nope"
    proc = run_snakemake(tmp_path, config, "-n", check=False)
    assert proc.returncode != 0
    assert "defenses.smoothing.smoothed: key 'model'" in proc.stdout + proc.stderr
    config["defenses"]["smoothing"]["smoothed"].update(model="logmel_cnn_gaussian", n=10)
    proc = run_snakemake(tmp_path, config, "-n", check=False)
    assert proc.returncode != 0 and "defenses.smoothing.smoothed.n" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


# -- the commands end to end ------------------------------------------------------------------------


def test_commands_certify_summarize_and_plot(tiny_dataset, tmp_path):
    from advmir.cli import main
    from advmir.datasets.contract import load_dataset
    from advmir.io import write_csv, write_json
    from advmir.models.train import TrainConfig, train_model
    from advmir.models.zoo import save_checkpoint
    from advmir.verify import Verification

    ds = load_dataset(tiny_dataset)
    spec = {"frontend": "logmel", "arch": "cnn2d", "arch_args": {"width": 4}}
    cfg = TrainConfig(
        seed=0, adversarial={"mode": "gaussian", "sigma": 0.01}, max_epochs=2, min_epochs=2, batch_size=32
    )
    model, metrics, history = train_model(ds, spec, cfg, "cpu", tmp_path / "work")
    checkpoint = tmp_path / "models" / "synth_notes" / "tiny_gaussian" / "model.ckpt"
    save_checkpoint(checkpoint, model, ds.classes)
    write_json(checkpoint.parent / "metrics.json", metrics)
    write_csv(checkpoint.parent / "history.csv", history)
    entry = {"model": "tiny_gaussian", "sigma": 0.01, "n0": 10, "n": 100, "batch_size": 50}
    out = tmp_path / "defenses" / "synth_notes" / "smoothing" / "tiny"
    argv = [
        "certify-smoothed", "--dataset-dir", str(tiny_dataset), "--checkpoint", str(checkpoint),
        "--name", "tiny", "--setting", json.dumps(entry), "--info", '{"train_sigma": 0.01}',
        "--snr-db", "60", "40", "--eval-size", "3", "--device", "cpu", "--threads", "1",
        "--out-dir", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    clips = pd.read_csv(out / "certified.csv")
    meta = json.loads((out / "smoothing.json").read_text())
    assert len(clips) == 3 and meta["n_clips"] == 3 and meta["passes_per_clip"] == 210
    assert meta["sigma"] == 0.01 and meta["train_sigma"] == 0.01 and meta["eval_size"] == 3
    assert set(meta["certified_accuracy"]) == {"60", "40"} and meta["seconds_per_clip"] > 0
    assert (clips["radius"] <= max_radius(100, 0.001, 0.01) + 1e-12).all()
    again = tmp_path / "again"
    assert main([*argv[:-1], str(again)]) == 0
    pd.testing.assert_frame_equal(clips, pd.read_csv(again / "certified.csv"))  # seeded
    table_path = tmp_path / "certified.csv"
    assert (
        main(["summarize-certified", "--runs", str(out), "--snr-db", "60", "50", "--out", str(table_path)])
        == 0
    )
    table = pd.read_csv(table_path)
    assert table["snr_db"].tolist() == [60.0, 50.0] and set(table["model"]) == {"tiny"}
    assert "seconds_per_clip" not in table  # wall time stays in smoothing.json: tables are reproducible
    assert table["certified_accuracy"].iloc[0] >= table["certified_accuracy"].iloc[1]  # SNR falls: harder
    figure = tmp_path / "certified.png"
    assert main(["plot-certified", "--table", str(table_path), "--out", str(figure)]) == 0
    assert figure.stat().st_size > 0
    # verify-results checks the run's files and the checkpoint of the model it smooths
    problems = Verification(tmp_path).run().problems
    assert not [p for p in problems if "defenses" in p.parts or "models" in p.parts], problems
    (out / "certified.csv").write_text("damaged")
    assert out / "certified.csv" in Verification(tmp_path).run().problems
