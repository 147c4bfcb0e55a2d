"""Robust evaluation (advmir.defenses.robust) and the sanity checks (advmir.defenses.sanity) on a tiny
waveform CNN trained on the tiny dataset in this module (about 5 s)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from advmir.attacks import build_attack
from advmir.defenses.robust import attack_success, ensemble_problems, evaluate_ensemble
from advmir.defenses.sanity import CHECKS, _row, run_sanity_checks
from advmir.models.train import TrainConfig, train_model
from conftest import held_out_clips

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = {"frontend": "waveform", "arch": "cnn1d", "arch_args": {"width": 8}}
FAST = {"max_epochs": 6, "min_epochs": 6, "patience": 6, "batch_size": 16, "learning_rate": 0.005}
ENSEMBLE = {
    "apgd_ce": {"name": "apgd_ce", "params": {"steps": 10}},
    "apgd_t": {"name": "apgd_t", "params": {"steps": 5, "n_target_classes": 2}},
    "square": {"name": "square", "params": {"n_queries": 50}},
}
BUDGETS = [40, 30, 20, 10]


@pytest.fixture(scope="module")
def clips(tiny_dataset):
    return held_out_clips(tiny_dataset, 32)


@pytest.fixture(scope="module")
def model(clips, tmp_path_factory):
    ds, _, _ = clips
    trained, _, _ = train_model(ds, SPEC, TrainConfig(seed=0, **FAST), "cpu", tmp_path_factory.mktemp("m"))
    return trained.eval()


@pytest.fixture(scope="module")
def evaluated(model, clips):
    _, x, y = clips
    return evaluate_ensemble(model, x, y, ENSEMBLE, BUDGETS, seed=0, batch_size=16)


def test_robust_accuracy_never_rises_along_the_ensemble_or_the_budget(evaluated):
    rows = evaluated.rows
    assert len(rows) == len(BUDGETS) * len(ENSEMBLE)
    assert list(rows["budget_db"].drop_duplicates()) == sorted(BUDGETS, reverse=True)  # quiet first
    clean = rows["clean_accuracy"].iloc[0]
    assert clean > 0.5, "the tiny model should learn the tiny task"
    assert (np.diff(rows["robust_accuracy"].to_numpy()) <= 1e-12).all(), rows
    assert (rows["robust_accuracy"] <= clean + 1e-12).all()
    final = rows.groupby("budget_db", sort=False)["robust_accuracy"].last()
    assert final.loc[10.0] < clean, "at 10 dB the ensemble should fool some clips"
    assert final.loc[10.0] <= final.loc[40.0]
    # each attack after the first runs only on the clips still robust
    for _, group in rows.groupby("budget_db", sort=False):
        attacked = group["n_attacked"].to_numpy()
        assert attacked[0] == group["n_clean_correct"].iloc[0]
        robust_before = np.round(group["robust_accuracy"].to_numpy()[:-1] * group["n"].iloc[0]).astype(int)
        assert (attacked[1:] == robust_before).all(), group


def test_clips_table_agrees_with_the_rows(evaluated):
    clips = evaluated.clips
    last = clips.groupby(["budget_db", "attack"], sort=False)["robust"].mean().reset_index()
    merged = evaluated.rows.merge(last, on=["budget_db", "attack"])
    assert np.allclose(merged["robust_accuracy"], merged["robust"])
    # a clip misclassified clean is never robust, and no attack is run on it
    wrong = clips["label"] != clips["clean_pred"]
    assert not clips.loc[wrong, "robust"].any() and not clips.loc[wrong, "attacked"].any()


def test_a_clip_is_robust_only_if_every_attack_fails(model, clips):
    """Deterministic attacks (no random start, so a clip's example does not depend on the clips beside
    it): the ensemble's robust clips are exactly those that every attack, run on its own on every
    clean-correct clip, fails on; and at least one clip falls to the second attack alone."""
    _, x, y = clips
    ensemble = {
        "fgsm": {"name": "fgsm", "params": {}},
        "pgd": {"name": "pgd", "params": {"steps": 8, "random_start": False}},
    }
    budget = 25.0
    result = evaluate_ensemble(model, x, y, ensemble, [budget], seed=0, batch_size=8)
    correct = result.clean_correct
    alone = {}
    for name, spec in ensemble.items():
        attack = build_attack(spec["name"], {**spec["params"], "snr_db": budget, "batch_size": 8})
        fooled = np.zeros(len(y), dtype=bool)
        fooled[correct] = attack_success(model, attack, x[correct], y[correct], budget, 8)
        alone[name] = fooled
    expected = correct & ~alone["fgsm"] & ~alone["pgd"]
    assert (result.robust[budget] == expected).all()
    assert 0 < expected.sum() < correct.sum() or alone["pgd"].sum() > alone["fgsm"].sum()


def test_sanity_checks_pass_on_an_honest_model(model, clips, evaluated):
    _, x, y = clips
    settings = {
        "tolerance": 0.1,
        "steps_factor": 2,
        "min_success": 0.98,
        "unbounded_db": 0,
        "transfer_steps": 10,
    }
    table = run_sanity_checks(model, x, y, evaluated, ENSEMBLE, settings, seed=0, batch_size=16, twin=model)
    assert set(table["check"]) == set(CHECKS)
    assert (
        table.loc[table["check"] == "iterative_beats_single_step", "budget_db"].sort_values()
        == sorted(BUDGETS)
    ).all()
    recomputed = [
        _row(r.model, r.check, r.budget_db, r.attack, r.value, r.reference_attack,
             None if pd.isna(r.reference) else r.reference, rule_of(r.rule), r.threshold, r.n)["passed"]
        for r in table.itertuples()
    ]  # fmt: skip
    assert list(table["passed"]) == recomputed
    loud = table[table["check"] == "unbounded_succeeds"].iloc[0]
    assert loud["passed"] and loud["value"] >= 0.98, loud  # at 0 dB APGD-CE fools (about) every clip
    assert table.loc[table["check"] == "iterative_beats_single_step", "passed"].all(), table


def rule_of(text: str) -> str:
    if text.startswith("value >= reference"):
        return ">= ref"
    if text.startswith("value >="):
        return ">= threshold"
    return "|diff| <= threshold" if text.startswith("|") else "diff <= threshold"


class MaskedGradients(nn.Module):
    """The model behind a rounding of its input: gradients are zero almost everywhere (the classic
    gradient masking of an input-quantisation defense), its outputs barely change."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 512) / 512)


def test_sanity_checks_catch_masked_gradients(model, clips):
    """Behind the rounding, APGD-CE climbs nothing, even at 0 dB, and the query-only attack does better:
    the checks fail where the honest model's passed."""
    _, x, y = clips
    masked = MaskedGradients(model).eval()
    budgets = [20, 10]
    result = evaluate_ensemble(masked, x, y, ENSEMBLE, budgets, seed=0, batch_size=16)
    table = run_sanity_checks(masked, x, y, result, ENSEMBLE, {"tolerance": 0.02}, seed=0, batch_size=16)
    loud = table[table["check"] == "unbounded_succeeds"].iloc[0]
    assert not loud["passed"] and loud["value"] < 0.5, table  # the honest model: 1.0 (test above)
    square = table[table["check"] == "query_only_not_better"].iloc[0]
    assert square["value"] > square["reference"], table  # gradient-free beats gradient-based


@pytest.mark.parametrize(
    ("rule", "value", "reference", "threshold", "passed"),
    [
        ("|diff| <= threshold", 0.50, 0.53, 0.02, False),
        ("|diff| <= threshold", 0.50, 0.51, 0.02, True),
        ("diff <= threshold", 0.60, 0.50, 0.02, False),
        ("diff <= threshold", 0.40, 0.50, 0.02, True),
        (">= ref", 0.40, 0.50, 0.0, False),
        (">= threshold", 0.97, None, 0.98, False),
        (">= threshold", 1.0, None, 0.98, True),
    ],
)
def test_thresholds_are_applied(rule, value, reference, threshold, passed):
    assert _row("m", "c", 30.0, "a", value, "r", reference, rule, threshold, 10)["passed"] is passed


def test_bad_ensembles_are_named():
    problems = ensemble_problems(
        {
            "a": {"name": "apgd_ce", "params": {"snr_db": 30}},
            "b": {"name": "apgd_ce", "params": {"stepz": 3}},
            "c": {"name": "nope"},
        },
        "defenses.evaluation.ensemble",
    )
    text = "\n".join(problems)
    assert "defenses.evaluation.ensemble.a.params" in text and "budgets_db" in text
    assert "defenses.evaluation.ensemble.b" in text and "stepz" in text
    assert "defenses.evaluation.ensemble.c" in text and "known attacks" in text
