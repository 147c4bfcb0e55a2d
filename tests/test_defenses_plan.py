"""The defenses stage's config and plan: defended models join the zoo, bad settings are refused by key
when the workflow starts (validate_config + check_config, and `snakemake -n`)."""

from __future__ import annotations

import copy
import json
import sys

import pytest

from advmir.attacks.plan import AttackPlan
from advmir.config import (
    REPO,
    ConfigError,
    check_config,
    defended_models,
    expand_defenses,
    merged_training,
    model_spec,
    training_for,
    undefended_models,
)
from advmir.defenses.plan import DefensePlan, DefensePlanError
from conftest import checked_config, run_snakemake, tiny_config

SCHEMA = REPO / "workflow/schemas/config.schema.yaml"


@pytest.fixture
def config(tmp_path):
    return tiny_config(tmp_path / "results")


def test_a_defended_model_is_a_zoo_model(config):
    config["models"]["logmel_cnn"]["training"] = {"augment": {"room_prob": 0.4}, "batch_size": 8}
    config["defenses"]["models"]["logmel_cnn_fast_at"]["training"]["augment"] = {"eq_prob": 0.1}
    seen = checked_config(config)
    assert list(seen["models"]) == ["logmel_cnn", "wave_cnn", "logmel_cnn_fast_at", "logmel_cnn_adv_aug"]
    assert model_spec(seen, "logmel_cnn_fast_at") == model_spec(seen, "logmel_cnn")
    training = training_for(seen, "logmel_cnn_fast_at")
    base = training_for(seen, "logmel_cnn")
    assert training["adversarial"] == {
        "mode": "fast_at", "snr_db": 30, "guard_clips": 16, "guard_steps": 2,
    }  # fmt: skip
    assert "adversarial" not in base
    assert training["seed"] == base["seed"] and training["batch_size"] == 8  # the base model's
    assert training["max_epochs"] == 4  # the defense's own override
    assert training["augment"]["room_prob"] == 0.4 and training["augment"]["eq_prob"] == 0.1
    assert merged_training(seen, "logmel_cnn")["augment"]["eq_prob"] != 0.1
    assert defended_models(seen) == {"logmel_cnn_fast_at": "logmel_cnn", "logmel_cnn_adv_aug": "logmel_cnn"}
    assert undefended_models(seen) == ["logmel_cnn", "wave_cnn"]
    before = copy.deepcopy(seen)
    expand_defenses(seen)  # idempotent: the workflow and check_config both call it
    check_config(seen)
    assert seen == before


def test_disabled_stage_adds_nothing(config):
    config["defenses"]["enabled"] = False
    seen = checked_config(config)
    assert "logmel_cnn_fast_at" not in seen["models"]
    plan = DefensePlan(seen, "r", ["synth_notes"], seen["models"])
    assert plan.targets() == [] and plan.evaluated_models == []


def test_every_model_defaults_mean_the_undefended_zoo(config):
    config["attacks"]["pgd"].pop("models", None)
    seen = checked_config(config)
    attacks = AttackPlan(seen, "r", ["synth_notes"], seen["models"])
    assert attacks.attacked_models("pgd") == ["logmel_cnn", "wave_cnn"]
    seen["attacks"]["pgd"]["models"] = ["logmel_cnn_fast_at"]  # named: it runs
    attacks = AttackPlan(seen, "r", ["synth_notes"], seen["models"])
    assert attacks.attacked_models("pgd") == ["logmel_cnn_fast_at"]


def test_plan_grid_inputs_and_targets(config):
    seen = checked_config(config)
    plan = DefensePlan(seen, "results", ["synth_notes"], seen["models"])
    assert plan.evaluated_models == ["logmel_cnn", "logmel_cnn_fast_at"]
    assert plan.inputs("synth_notes", "logmel_cnn_fast_at") == {
        "checkpoint": "results/models/synth_notes/logmel_cnn_fast_at/model.ckpt",
        "twin": "results/models/synth_notes/logmel_cnn/model.ckpt",
    }
    assert "twin" not in plan.inputs("synth_notes", "logmel_cnn")
    assert json.loads(plan.info_json("logmel_cnn_fast_at"))["defense"] == "fast_at"
    assert json.loads(plan.info_json("logmel_cnn"))["defense"] == "none"
    assert plan.eval_size == seen["attack_settings"]["eval_size"]  # the attack stage's clips
    assert list(json.loads(plan.ensemble_json())) == ["apgd_ce", "apgd_t", "square"]
    assert plan.budgets_option() == "40 20"
    assert "results/tables/defenses.csv" in plan.targets()
    assert "results/tables/defense_sanity.csv" in plan.targets()
    sanity = json.loads(plan.sanity_json())
    assert sanity["steps_factor"] == 2 and sanity["min_success"] == 0.98  # schema defaults


def test_augmentation_study_only_with_an_augmented_model(config):
    """The augmentation table and figure are targets only when a defended model is trained in an
    augmentation mode (adv_aug); its inputs are both models' metrics.json on every dataset."""
    seen = checked_config(config)
    plan = DefensePlan(seen, "results", ["synth_notes"], seen["models"])
    assert plan.augmented_models == ["logmel_cnn_adv_aug"]
    assert plan.augmentation_pairs() == "--pair logmel_cnn_adv_aug logmel_cnn"
    assert plan.augmentation_metrics_files() == [
        "results/models/synth_notes/logmel_cnn_adv_aug/metrics.json",
        "results/models/synth_notes/logmel_cnn/metrics.json",
    ]
    augmentation = [
        "results/tables/defense_augmentation.csv",
        "results/figures/defense_augmentation.png",
        "results/figures/defense_augmentation.pdf",
    ]
    assert set(augmentation) <= set(plan.targets()) and plan.default_split == "notes"
    assert plan.evaluated_models == ["logmel_cnn", "logmel_cnn_fast_at"]  # evaluation.models names them
    del config["defenses"]["models"]["logmel_cnn_adv_aug"]
    seen = checked_config(config)
    plan = DefensePlan(seen, "results", ["synth_notes"], seen["models"])
    assert plan.augmented_models == [] and not set(augmentation) & set(plan.targets())
    assert "results/tables/defenses.csv" in plan.targets()


CLASH = {"model": "logmel_cnn", "mode": "fast_at", "snr_db": 30}  # named like a zoo model


def defense(config: dict) -> dict:
    return config["defenses"]["models"]["logmel_cnn_fast_at"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda c: defense(c).update(model="no_such_model"),
         ["defenses.models.logmel_cnn_fast_at", "model", "wave_cnn"]),
        (lambda c: c["defenses"]["models"].update(wave_cnn=CLASH),
         ["defenses.models.wave_cnn", "already a model"]),
        (lambda c: defense(c).update(snr_db="loud"), ["defenses.models.logmel_cnn_fast_at.snr_db", "number"]),
        (lambda c: defense(c).update(snr_db=500), ["defenses.models.logmel_cnn_fast_at.snr_db", "100"]),
        (lambda c: defense(c).update(eps=0.01), ["defenses.models.logmel_cnn_fast_at", "exactly one budget"]),
        (lambda c: defense(c).update(guard_drop=1.5), ["guard_drop", "(0, 1)"]),
        (lambda c: defense(c).update(guard_drop=0), ["guard_drop"]),
        (lambda c: defense(c).update(mode="trades", beta=0, guard_clips=None, guard_steps=None),
         ["defenses.models.logmel_cnn_fast_at", "beta"]),
        (lambda c: defense(c).update(mode="trades", beta=-1.0), ["beta"]),
        (lambda c: defense(c).update(mode="adversarial"), ["mode", "pgd_at", "fast_at", "trades"]),
        (lambda c: defense(c).update(steps=3), ["defenses.models.logmel_cnn_fast_at", "steps", "fast_at"]),
        (lambda c: defense(c)["training"].update(adversarial={"mode": "pgd_at", "eps": 0.1}),
         ["defenses.models.logmel_cnn_fast_at.training", "adversarial"]),
        (lambda c: defense(c).update(init="pretrained"),
         ["defenses.models.logmel_cnn_fast_at.init", "scratch", "twin"]),
    ],
)  # fmt: skip
def test_bad_defenses_are_refused_by_key(config, change, words):
    change(config)
    if defense(config).get("guard_clips", 0) is None:  # trades takes no guard keys
        for key in ("guard_clips", "guard_steps"):
            defense(config).pop(key)
    with pytest.raises(ConfigError) as info:
        checked_config(config)
    for word in words:
        assert word in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda e: e["ensemble"].update(fmn={"name": "fmn"}),
         ["defenses.evaluation.ensemble.fmn.name", "apgd_t"]),
        (lambda e: e["ensemble"]["apgd_ce"]["params"].update(stepz=3),
         ["defenses.evaluation.ensemble.apgd_ce", "stepz", "accepts"]),
        (lambda e: e["ensemble"]["square"]["params"].update(snr_db=30),
         ["defenses.evaluation.ensemble.square.params", "budgets_db"]),
        (lambda e: e.update(models=["nope"]), ["defenses.evaluation.models", "nope"]),
        (lambda e: e["sanity"].update(budget_db=35), ["sanity.budget_db", "budgets_db"]),
        (lambda e: e.update(budgets_db=["loud"]), ["defenses.evaluation.budgets_db.0", "number"]),
    ],
)  # fmt: skip
def test_bad_evaluations_are_refused_by_key(config, change, words):
    change(config["defenses"]["evaluation"])
    with pytest.raises((ConfigError, DefensePlanError)) as info:
        seen = checked_config(config)
        DefensePlan(seen, "r", ["synth_notes"], seen["models"])
    for word in words:
        assert word in str(info.value), str(info.value)


def test_config_check_imports_no_lightning(config, tmp_path):
    """The defenses' checks run at DAG time without pytorch_lightning."""
    import subprocess

    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    code = (
        "import sys, json; from advmir.config import expand_defenses; "
        f"c = json.loads(open({str(path)!r}).read()); expand_defenses(c); "
        "from advmir.defenses.plan import DefensePlan; "
        "assert 'pytorch_lightning' not in sys.modules, 'lightning imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_dry_run_refuses_a_bad_defense(tmp_path, config):
    defense(config)["model"] = "no_such_model"
    proc = run_snakemake(tmp_path, config, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "defenses.models.logmel_cnn_fast_at" in out and "no_such_model" in out and "wave_cnn" in out
    assert not (tmp_path / "results").exists()


def test_fine_tuning_a_twin_trains_from_its_checkpoint(tmp_path, config):
    """init: twin: the defended model's training names its twin (training.init_from) and its job
    reads the twin's checkpoint, on the default split and on a generalisation split (the twin trained
    on that split); init: scratch (the default) reads none."""
    assert "init" not in defense(config)  # scratch, the default
    assert "init_from" not in training_for(checked_config(config), "logmel_cnn_fast_at")
    defense(config)["init"] = "twin"
    seen = checked_config(config)
    assert training_for(seen, "logmel_cnn_fast_at")["init_from"] == "logmel_cnn"
    assert "init_from" not in training_for(seen, "logmel_cnn")
    config["generalisation"]["models"] = ["logmel_cnn"]
    assert config["defenses"]["models"]["logmel_cnn_adv_aug"]["init"] == "twin"  # adv_aug joins the split
    out = run_snakemake(tmp_path, config, "-n", "--forceall").stdout
    inputs = {}  # a training job's output folder -> its input line
    for line in out.splitlines():
        if line.strip().startswith("input:"):
            last = line
        if line.strip().startswith("output:") and "/model.ckpt" in line:
            inputs[line.split("/model.ckpt")[0].split()[-1]] = last
    results = config["results"]
    fast = inputs[f"{results}/models/synth_notes/logmel_cnn_fast_at"]
    assert f"{results}/models/synth_notes/logmel_cnn/model.ckpt" in fast
    aug = "/logmel_cnn_adv_aug"
    splits = {k: v for k, v in inputs.items() if "/generalisation/" in k and k.endswith(aug)}
    assert splits, sorted(inputs)
    for folder, line in splits.items():
        assert f"{folder.rsplit('/', 1)[0]}/logmel_cnn/model.ckpt" in line, line
    plain = inputs[f"{results}/models/synth_notes/wave_cnn"]
    assert "model.ckpt" not in plain
