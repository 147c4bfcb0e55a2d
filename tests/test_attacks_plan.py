"""The attack stage's plan: its job grid, inputs and the checks that run when the workflow starts."""

from __future__ import annotations

import copy
import json

import pytest

from advmir.attacks.plan import AttackConfigError, AttackPlan

MODELS = {"mel": {"frontend": "logmel"}, "wave": {"frontend": "filterbank"}, "sur": {"frontend": "logmel"}}
CONFIG = {
    "attacks": {
        "pgd": {"name": "pgd", "params": {"snr_db": 30, "steps": 5}},
        "grey": {"name": "mifgsm", "threat": "surrogate", "surrogate": "sur", "params": {"snr_db": 30}},
        "noise": {"name": "noise", "params": {"snr_db": 30}, "models": ["wave"]},
    },
    "attack_settings": {"eval_size": 20, "panel": None},
}


def plan(config: dict | None = None, build: bool = True) -> AttackPlan:
    return AttackPlan(config or CONFIG, "results", ["toy"], MODELS, build=build)


def test_grid_scores_every_model_but_a_surrogate_on_itself():
    p = plan()
    assert p.attacked_models("pgd") == ["mel", "wave", "sur"]
    assert p.attacked_models("grey") == ["mel", "wave"]  # not the surrogate it is crafted on
    assert p.attacked_models("noise") == ["wave"]
    assert len(p.runs()) == 3 + 2 + 1
    assert p.run_files("attack.json")[0] == "results/attacks/toy/mel/pgd/attack.json"
    assert p.attack_constraint() == "pgd|grey|noise"


def test_inputs_spec_and_panel():
    p = plan()
    assert p.inputs("toy", "mel", "grey") == {
        "checkpoint": "results/models/toy/mel/model.ckpt",
        "surrogate": "results/models/toy/sur/model.ckpt",
    }
    assert "surrogate" not in p.inputs("toy", "mel", "pgd")
    assert json.loads(p.spec_json("pgd")) == {"name": "pgd", "params": {"snr_db": 30, "steps": 5}}
    assert (
        p.surrogate_option(None) == ""
        and p.surrogate_option("a b.ckpt") == "--surrogate-checkpoint 'a b.ckpt'"
    )
    assert p.panel_run() == "results/attacks/toy/mel/pgd"  # the first white-box PGD run
    assert "results/tables/attacks.csv" in p.targets()


def test_no_attacks_no_jobs():
    p = plan({"attacks": {}, "attack_settings": {}})
    assert not p.enabled and p.runs() == [] and p.targets() == []
    assert p.attack_constraint() == "no-attack-configured"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"pgd": {"name": "pgd", "params": {"snr_db": 30, "stepz": 5}}}, r"attacks\.pgd: .*stepz"),
        ({"pgd": {"name": "pgdd", "params": {}}}, r"attacks\.pgd: .*pgdd"),
        (
            {"grey": {"name": "mifgsm", "threat": "surrogate", "surrogate": "cqt"}},
            r"attacks\.grey: threat surrogate",
        ),
        ({"pgd": {"name": "pgd", "surrogate": "sur"}}, r"attacks\.pgd: `surrogate` is set"),
        ({"noise": {"name": "noise", "models": ["cqt"]}}, r"attacks\.noise: models \['cqt'\]"),
        ({"bad-name": {"name": "noise"}}, r"attacks\.bad-name: names may hold"),
    ],
)
def test_bad_attack_configs_are_refused_before_any_job(change, match):
    config = copy.deepcopy(CONFIG)
    config["attacks"].update(change)
    with pytest.raises(AttackConfigError, match=match):
        plan(config)


def test_a_cluster_job_does_not_rebuild_the_attacks():
    config = copy.deepcopy(CONFIG)
    config["attacks"]["pgd"]["params"]["stepz"] = 5
    assert plan(config, build=False).runs()  # checked by the run that submitted it


def test_class_names_in_a_target_map_wait_for_the_dataset():
    config = copy.deepcopy(CONFIG)
    config["attacks"]["pgd"]["params"].update(targeted="map", target_map={"keyboard": "organ"})
    assert plan(config).spec_json("pgd")  # names are resolved by the job, not refused here


def test_panel_must_name_an_attack_and_one_of_its_models():
    config = copy.deepcopy(CONFIG)
    config["attack_settings"]["panel"] = {"attack": "noise", "model": "mel"}
    with pytest.raises(AttackConfigError, match=r"attack_settings\.panel"):
        plan(config)
    config["attack_settings"]["panel"] = {"attack": "noise", "model": "wave"}
    assert plan(config).panel_run() == "results/attacks/toy/wave/noise"
