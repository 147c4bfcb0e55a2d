"""The representation-transfer stage: the ensemble and feature-space attacks on the attack base, the
plan's checks, and one job's craft, score and tables on the tiny dataset."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from advmir.attacks import PGD
from advmir.attacks.ensemble import EnsemblePGD, ModelEnsemble
from advmir.attacks.feature import FeaturePGD, FeatureStack
from advmir.attacks.params import AttackParamError
from advmir.models.frontends import build_frontend
from advmir.representation.plan import RepresentationPlan, RepresentationPlanError
from conftest import REPO
from tiny_tones import SR, TinyLogMelCNN, fit_tiny, noisy_tones


@pytest.fixture(scope="module")
def pair(one_torch_thread) -> tuple[dict[str, torch.nn.Module], torch.Tensor, torch.Tensor]:
    """Two tiny log-mel CNNs trained on the tones with different seeds, and 24 test clips."""
    x, y = noisy_tones(400, seed=1)
    models = {}
    for k in range(2):
        torch.manual_seed(k)
        models[f"m{k}"] = fit_tiny(TinyLogMelCNN(), x, y, steps=60)
    xt, yt = noisy_tones(24, seed=7)
    return models, xt, yt


def test_an_ensemble_of_one_is_pgd(pair) -> None:
    models, x, y = pair
    params = {"snr_db": 25, "steps": 6, "loss": "margin", "random_start": True, "seed": 3}
    ours = EnsemblePGD(models["m0"], **params)(x, y)
    theirs = PGD(models["m0"], **params)(x, y)
    assert torch.equal(ours.x_adv, theirs.x_adv)
    assert torch.equal(ours.success, theirs.success)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("aggregate", ["mean", "max"])
def test_ensemble_attack_respects_the_budget_and_beats_noise(pair, norm: str, aggregate: str) -> None:
    models, x, y = pair
    ensemble = ModelEnsemble(models, {"m0": 2.0, "m1": 1.0})
    ensemble.train()
    attack = EnsemblePGD(
        ensemble, norm=norm, snr_db=10, steps=15, aggregate=aggregate, kappa=2.0, decay=1.0, eot_samples=2,
        diversity_prob=0.5, gain_db=2.0, resample_cents=30.0, shift_ms=5.0, sample_rate=SR, early_stop=False,
    )  # fmt: skip
    result = attack(x, y)
    assert ensemble.training  # the ensemble's mode restored
    ensemble.eval()
    assert bool((result.snr_db >= 10 - 0.05).all())
    with torch.no_grad():
        fooled_all = torch.stack([m(result.x_adv).argmax(1) != y for m in models.values()]).all(0)
        noise = x + torch.randn_like(x) * (result.x_adv - x).norm(dim=1, keepdim=True) / x.shape[1] ** 0.5
        noise_fooled = torch.stack([m(noise.clamp(-1, 1)).argmax(1) != y for m in models.values()]).all(0)
    assert torch.equal(result.success, fooled_all)  # success: every member fooled
    assert fooled_all.float().mean() >= noise_fooled.float().mean()
    assert fooled_all.float().mean() >= 0.5


def test_ensemble_loss_mean_weights_and_max_member() -> None:
    ensemble = ModelEnsemble({"a": torch.nn.Identity(), "b": torch.nn.Identity()}, {"a": 3.0, "b": 1.0})
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])  # member a: label by 2; member b: fooled by 1
    y, t = torch.tensor([0]), torch.tensor([-1])
    mean = EnsemblePGD(ensemble, snr_db=30, loss="margin").ensemble_loss(logits, y, t)
    assert torch.allclose(mean, torch.tensor([0.75 * -2.0 + 0.25 * 1.0]))
    worst = EnsemblePGD(ensemble, snr_db=30, loss="margin", aggregate="max").ensemble_loss(logits, y, t)
    assert torch.allclose(worst, torch.tensor([-2.0]))  # member a: the largest margin still to overcome
    capped = EnsemblePGD(ensemble, snr_db=30, loss="margin", kappa=0.5).ensemble_loss(logits, y, t)
    assert torch.allclose(capped, torch.tensor([0.75 * -2.0 + 0.25 * 0.5]))
    attack = EnsemblePGD(ensemble, snr_db=30)
    assert attack.is_success(logits, y, t).tolist() == [False]
    assert attack.is_success(torch.tensor([[[0.0, 2.0], [0.0, 1.0]]]), y, t).tolist() == [True]


def test_input_diversity_is_seeded_and_differentiable(pair) -> None:
    models, x, y = pair
    kwargs = {"snr_db": 20, "steps": 3, "eot_samples": 2, "diversity_prob": 1.0, "gain_db": 3.0,
              "resample_cents": 50.0, "shift_ms": 10.0, "sample_rate": SR, "seed": 5}  # fmt: skip
    first = EnsemblePGD(ModelEnsemble(models), **kwargs)(x, y)
    second = EnsemblePGD(ModelEnsemble(models), **kwargs)(x, y)
    assert torch.equal(first.x_adv, second.x_adv)
    attack = EnsemblePGD(ModelEnsemble(models), **kwargs)
    attack._draws = torch.Generator().manual_seed(0)
    xs = x[:4].clone().requires_grad_(True)
    out = attack.diversify(xs)
    assert not torch.equal(out, xs)
    (grad,) = torch.autograd.grad(out.pow(2).sum(), xs)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize(
    "params", [{"aggregate": "min"}, {"kappa": -1}, {"diversity_prob": 2}, {"eot_samples": 0}, {"decay": -1}]
)
def test_bad_ensemble_parameters_are_named(params: dict) -> None:
    with pytest.raises(AttackParamError, match=next(iter(params))):
        EnsemblePGD(None, snr_db=30, **params)
    with pytest.raises(ValueError, match="weights"):
        ModelEnsemble({"a": torch.nn.Identity()}, {"a": 0.0})


def test_feature_attack_moves_every_front_end_within_the_budget(one_torch_thread) -> None:
    x, y = noisy_tones(8, seed=3)
    stack = FeatureStack({name: build_frontend(name, SR, n_fft=256) for name in ("stft", "logmel")}).eval()
    result = FeaturePGD(stack, snr_db=20, steps=8, seed=1)(x, y)
    assert bool((result.snr_db >= 20 - 0.05).all())
    assert not bool(result.success.any())
    with torch.no_grad():
        clean = stack(x)
        moved = stack.distance(stack(result.x_adv), clean)
        radius = result.x_adv - x
        noise = x + torch.randn_like(x).sign() * radius.abs().amax(dim=1, keepdim=True)
        random = stack.distance(stack(noise.clamp(-1, 1)), clean)
    assert bool((moved > random).all())
    with pytest.raises(AttackParamError, match="targeted"):
        FeaturePGD(stack, snr_db=20, targeted="random")


# ------------------------------------------------------------------------------------------ the plan
def base_config() -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    from advmir.config import SCHEMAS, validate_config

    validate_config(config, SCHEMAS / "config.schema.yaml")
    return config


def plan_of(config: dict) -> RepresentationPlan:
    return RepresentationPlan(config, "results", config["datasets"], config["models"])


def test_default_plan_holds_out_each_representation_of_the_zoo() -> None:
    plan = plan_of(base_config())
    assert plan.held_out == ["logmel", "stft", "filterbank"]
    assert plan.ensemble_members("logmel") == ["stft_cnn", "wave_cnn"]
    # the single-model baselines are config/paper.yaml's (the default run's minutes went to defenses)
    assert "ensemble_no_stft" in plan.sources and not [s for s in plan.sources if s.startswith("single_")]
    config = base_config()
    config["representation_transfer"]["single"] = True
    assert "single_wave_cnn" in plan_of(config).sources
    spec = plan.source_spec("feature_no_logmel")
    assert spec["frontends"] == ["stft", "cqt", "filterbank"] and spec["members"] == {"wave_cnn": 1.0}
    assert plan.inputs("synth_notes", "ensemble_no_filterbank")["members"][-1].endswith("stft_cnn/model.ckpt")
    assert plan.run_files()[0].startswith("results/representation/synth_notes/")


def test_a_stage_switched_off_plans_nothing_whatever_its_members() -> None:
    """An overlay that keeps one model and switches the stage off (the SLURM test's config) must
    not trip over config.yaml's members, which are then no models of the config."""
    config = base_config()
    config["models"] = {"logmel_cnn": config["models"]["logmel_cnn"]}
    config["representation_transfer"]["enabled"] = False
    plan = plan_of(config)
    assert plan.sources == [] and plan.run_files() == [] and plan.held_out == []
    assert json.loads(plan.models_json()) == {"logmel_cnn": "logmel"}


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"members": {"logmel_cnn": 1.0, "nope": 1.0}}, "representation_transfer.members"),
        ({"members": {"logmel_cnn": 1.0, "stft_cnn": -1.0}}, "representation_transfer.members"),
        ({"targets": ["nope"]}, "representation_transfer.targets"),
        ({"codecs": ["mp3_999k"]}, "representation_transfer.codecs"),
        ({"representations": ["cqt"]}, "representation_transfer.representations"),
        ({"attack": {"stepz": 3}}, "representation_transfer.attack"),
        ({"attack": {"aggregate": "min"}}, "representation_transfer.attack"),
        ({"members": ["logmel_cnn", "surrogate_logmel_cnn"]}, "representation_transfer.members"),
    ],
)
def test_the_plan_refuses_by_key(change: dict, key: str) -> None:
    config = base_config()
    config["representation_transfer"] = {**copy.deepcopy(config["representation_transfer"]), **change}
    with pytest.raises(RepresentationPlanError, match=key.replace(".", r"\.")):
        plan_of(config)


def test_paper_config_has_four_representations() -> None:
    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    from advmir.config import SCHEMAS, validate_config

    validate_config(config, SCHEMAS / "config.schema.yaml")
    plan = plan_of(config)
    assert {"logmel", "stft", "cqt", "filterbank"} <= set(plan.held_out)


# -------------------------------------------------------------------------------- a job and its table
def test_one_job_crafts_scores_and_tabulates(tiny_dataset, tmp_path, one_torch_thread) -> None:
    from advmir.datasets.contract import load_dataset
    from advmir.models.zoo import build_model, save_checkpoint
    from advmir.representation.craft import craft_and_score
    from advmir.representation.tables import build_table, summarize

    ds = load_dataset(tiny_dataset)
    specs = {
        "logmel_a": {"frontend": "logmel", "arch": "cnn2d", "arch_args": {"width": 4}},
        "bank_a": {"frontend": "filterbank", "arch": "cnn2d", "arch_args": {"width": 4}},
    }
    ckpts = {}
    for k, (name, spec) in enumerate(specs.items()):
        torch.manual_seed(k)
        model = build_model(spec, len(ds.classes), ds.sample_rate).eval()
        ckpts[name] = tmp_path / f"{name}.ckpt"
        save_checkpoint(ckpts[name], model, ds.classes)
    reps = {"logmel_a": "logmel", "bank_a": "filterbank"}
    runs = []
    for source, spec, members in (
        ("ensemble_no_logmel",
         {"kind": "ensemble", "excluded": "logmel", "members": {"bank_a": 1.0},
          "params": {"steps": 3, "loss": "margin", "kappa": 1.0}},
         {"bank_a": ckpts["bank_a"]}),
        ("feature_no_filterbank",
         {"kind": "feature", "excluded": "filterbank", "frontends": ["stft", "logmel"], "members": {},
          "params": {"steps": 2}},
         {}),
    ):  # fmt: skip
        folder = tmp_path / source / "30db"
        folder.parent.mkdir()
        meta = craft_and_score(
            tiny_dataset, spec, {m: str(c) for m, c in members.items()},
            {n: str(c) for n, c in ckpts.items()}, {"mp3_32k": {"codec": "mp3", "bitrate_kbps": 32}},
            folder, snr_db=30, eval_size=6, seed=0,
        )  # fmt: skip
        assert meta["n"] == 6
        adv = np.load(folder / "adversarial.npy")
        noise = np.load(folder / "matched_noise.npy")
        assert adv.shape == noise.shape == (6, ds.clip_samples)
        examples = pd.read_csv(folder / "examples.csv")
        assert (examples["snr_db"] >= 30 - 0.05).all()
        assert np.allclose(examples["noise_snr_db"], examples["snr_db"], atol=0.5)
        preds = pd.read_csv(folder / "predictions.csv")
        assert set(preds["condition"]) == {"none", "mp3_32k"} and set(preds["target_model"]) == set(ckpts)
        runs.append(folder)
    table = build_table(runs, reps)
    row = table[(table["source_set"] == "ensemble_no_logmel") & (table["condition"] == "none")]
    assert dict(zip(row["target"], row["role"], strict=True)) == {"bank_a": "member", "logmel_a": "held_out"}
    feature = table[table["kind"] == "feature"]
    assert set(feature["role"]) == {"held_out", "seen_representation"}
    summary = summarize(table, ["logmel", "filterbank"])
    held = summary[(summary["measure"] == "held_out") & (summary["condition"] == "none")]
    assert set(zip(held["kind"], held["representation"], strict=True)) == {
        ("ensemble", "logmel"),
        ("feature", "filterbank"),
    }
    assert (summary["n"] <= 6 * summary["n_pairs"]).all()
    assert json.loads((runs[0] / "run.json").read_text())["spec"]["excluded"] == "logmel"
    from advmir.plotting.common import save_figure
    from advmir.plotting.representation import plot_summary

    save_figure(plot_summary(summary), [str(tmp_path / "figure.png")])
    assert (tmp_path / "figure.png").stat().st_size > 0
