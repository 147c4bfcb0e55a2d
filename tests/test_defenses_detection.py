"""Adversarial-example detection (advmir.defenses.detection): the config's refusals by key, the
combined margin of the adaptive attacker, the detectors on tiny real models (the anomaly stage's
formulas, feature squeezing's straight-through gradient), an adaptive attack that evades what a
non-adaptive one does not, and the commands end to end on the tiny dataset, in a dry run too."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from advmir.config import ConfigError
from advmir.defenses.detection import (
    ConfidenceDetector,
    Guarded,
    SqueezeDetector,
    adaptive_attack,
    auc_standard_error,
    build_squeezers,
    joint_margin,
    score_clips,
    threshold_at,
)
from advmir.defenses.detection_eval import SUMMARY_COLUMNS, DetectionJob, evaluate_detection
from advmir.defenses.plan import DefensePlan, DefensePlanError
from advmir.defenses.settings import DetectionConfig
from conftest import checked_config, run_snakemake, tiny_config
from tiny_tones import FIVE_FREQS, SR, correct_clips, five_tone_model, noisy_tones

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def detection_config(tmp_path) -> dict:
    """The tiny workflow's config with detection switched on (small sizes for its 48 validation clips)."""
    config = tiny_config(tmp_path / "results")
    config["defenses"]["detection"] = {
        "enabled": True,
        "models": ["logmel_cnn"],
        "budgets_db": [20],
        "attacks": {"pgd": {"name": "pgd", "params": {"steps": 5, "loss": "margin"}}},
        "detectors": ["squeeze", "stack", "max_softmax"],
        "squeezers": {"q6": {"kind": "quantize", "bits": 6}},
        "eval_size": 8,
        "train_size": 24,
        "calibration_size": 20,
        "reference_size": 40,
    }
    return config


# -- the config ---------------------------------------------------------------------------------------

REFUSALS = [
    (
        {"detectors": ["squeeze", "nope"]},
        ["defenses.detection.detectors", "'nope'", "allowed", "isolation_forest"],
    ),
    ({"detectors": ["label_errors"]}, ["'label_errors'", "true label", "allowed"]),
    ({"detectors": ["stack", "logmel_net"]}, ["'stack' combines", "at least one more"]),
    ({"budgets_db": ["forty"]}, ["defenses.detection.budgets_db", "forty"]),
    ({"models": ["nope_cnn"]}, ["defenses.detection.models", "nope_cnn", "logmel_cnn"]),
    ({"attacks": {"pgd": {"name": "pgdx"}}}, ["defenses.detection.attacks.pgd.name", "pgdx", "'pgd'"]),
    (
        {"attacks": {"pgd": {"name": "pgd", "params": {"stepz": 3}}}},
        ["defenses.detection.attacks.pgd", "stepz"],
    ),
    ({"squeezers": {"n": {"kind": "noise", "snr_db": 30}}}, ["defenses.detection.squeezers.n", "'noise'"]),
    ({"squeezers": {"m": {"kind": "mp3", "bitrate_kbps": 320}}}, ["320 kbps"]),
    ({"fpr": 0.7}, ["defenses.detection.fpr", "0.7"]),
    ({"adaptive": {"gradient": {"name": "square"}}}, ["defenses.detection.adaptive.gradient.name", "square"]),
    (
        {"adaptive": {"gradient": {"name": "pgd", "params": {"loss": "ce"}}}},
        ["defenses.detection.adaptive.gradient.params", "'loss' must be 'margin'"],
    ),
    ({"adaptive": {"detectors": ["energy"]}}, ["defenses.detection.adaptive.detectors", "energy"]),
]


@pytest.mark.parametrize(("change", "words"), REFUSALS)
def test_bad_detection_settings_are_refused_by_key(tmp_path, change, words):
    """Each refused by the schema or the plan's check, before any job, naming the key and what it allows."""
    config = detection_config(tmp_path)
    config["defenses"]["detection"].update(change)
    with pytest.raises((ConfigError, DefensePlanError)) as info:
        seen = checked_config(config)
        DefensePlan(seen, "results", ["synth_notes"], seen["models"])
    for word in words:
        assert word in str(info.value), str(info.value)


def test_the_python_check_refuses_what_the_schema_refuses():
    """The command line checks the section too (run by hand, without the workflow's schema)."""
    problems = DetectionConfig.problems(
        {"enabled": True, "budgets_db": ["forty", 200], "detectors": ["pitch"], "net": {"epochs": 0}},
        models=["m"],
    )
    text = "\n".join(problems)
    for word in ("'forty' is not a number", "200 is not a number in (0, 100]", "'pitch'", "net.epochs"):
        assert word in text, text


def test_plan_runs_one_job_per_model_and_resolves_the_defaults(tmp_path):
    seen = checked_config(detection_config(tmp_path))
    plan = DefensePlan(seen, "results", ["synth_notes"], seen["models"])
    assert plan.detection_files() == ["results/defenses/synth_notes/detection/logmel_cnn/summary.csv"]
    assert (
        plan.detection_checkpoint("synth_notes", "logmel_cnn")
        == "results/models/synth_notes/logmel_cnn/model.ckpt"
    )
    entry = json.loads(plan.detection_json())
    assert entry["fpr"] == 0.05 and entry["net"]["top_db"] == 80  # the schema's defaults
    assert entry["adaptive"]["gradient"]["name"] == "pgd" and entry["adaptive"]["query"]["name"] == "square"
    assert DetectionConfig.from_dict({"enabled": True, "models": ["m"], **entry}).entry() == entry
    assert (
        plan.detection_option("eval_size") == 8 and plan.detection_option("batch_size") == 8
    )  # attack stage's
    assert {"results/tables/detection.csv", "results/figures/detection_roc.png"} <= set(plan.targets())
    seen["defenses"]["detection"]["enabled"] = False
    assert not DefensePlan(seen, "results", ["synth_notes"], seen["models"]).detection_targets()


def test_dry_run_refuses_a_bad_detector_by_name(tmp_path):
    """The refusal reaches ``snakemake -n`` before any job (one Snakemake call: the rules themselves
    are planned in the whole-workflow test's config of tests/test_workflow.py)."""
    config = detection_config(tmp_path)
    config["defenses"]["detection"]["detectors"] = ["squeeze", "nope"]
    proc = run_snakemake(tmp_path, config, "-n", check=False)
    assert proc.returncode != 0
    assert "defenses.detection.detectors: unknown detector 'nope'; allowed:" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


# -- the pieces ---------------------------------------------------------------------------------------


def test_joint_margin_is_negative_exactly_when_fooled_and_unflagged():
    cls = torch.tensor([-1.0, -1.0, 2.0, 2.0, 0.5, -3.0])
    det = torch.tensor([-2.0, 3.0, -2.0, 1.0, 0.0, -0.5])
    m = joint_margin(cls, det)
    assert torch.equal(m < 0, (cls < 0) & (det < 0))
    # while either holds, CW's sum of two hinges; below zero, the larger (closer to zero) of the two
    torch.testing.assert_close(m[1:4], (cls.clamp_min(0) + det.clamp_min(0))[1:4])
    torch.testing.assert_close(m[[0, 5]], torch.tensor([-1.0, -0.5]))


def test_threshold_flags_at_most_the_target_share_and_auc_se():
    scores = np.arange(100, dtype=float)
    thr = threshold_at(scores, 0.05)
    assert thr == 94 and (scores > thr).mean() == 0.05 and (scores >= thr).mean() > 0.05
    assert auc_standard_error(0.5, 50, 50) == pytest.approx(0.0577, abs=1e-3)  # Hanley-McNeil's table
    assert auc_standard_error(1.0, 50, 50) == 0.0


def test_confidence_detectors_are_the_anomaly_stages_formulas_with_a_gradient():
    from advmir.anomaly.detectors import DETECTORS, Reference, ScoreSet

    model = five_tone_model()
    x, _ = noisy_tones(12, 3, FIVE_FREQS)
    manifest = pd.DataFrame({"id": [f"c{i}" for i in range(12)], "label": "a", "label_idx": 0})
    ref = Reference(x.numpy(), manifest, [f"f{i}" for i in range(5)], SR, models={"m": model})
    for kind in ("max_softmax", "energy"):
        ours = score_clips(ConfidenceDetector(model, kind), x, 5)
        theirs, _ = DETECTORS[kind](ref)(ScoreSet(x.numpy(), manifest))
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
        xg = x[:2].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(ConfidenceDetector(model, kind)(xg).sum(), xg)
        assert grad.abs().sum() > 0


def test_feature_squeezing_scores_a_change_and_passes_a_straight_through_gradient():
    model = five_tone_model()
    x, _ = correct_clips(model, 6)
    squeezers = build_squeezers({"q3": {"kind": "quantize", "bits": 3}}, SR, seed=0)
    score = SqueezeDetector(model, squeezers)
    assert score(x).shape == (6,) and (score(x) >= 0).all() and (score(x) <= 2).all()
    # rounding to 16 bits barely moves the clip: its score is near zero, 3 bits's is not
    fine = SqueezeDetector(model, build_squeezers({"q16": {"kind": "quantize", "bits": 16}}, SR, seed=0))
    assert float(fine(x).max()) < 1e-3 < float(score(x).max())
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(score(xg).sum(), xg)  # BPDA: the rounding's backward is the identity
    assert grad.abs().sum() > 0


def max_softmax_at_5_percent(model: torch.nn.Module) -> tuple[ConfidenceDetector, float, float]:
    """MODEL's max-softmax detector, its threshold at 5% FPR on 64 clean noisy tones, and the
    spread (std) of their scores: (detector, threshold, spread)."""
    detector = ConfidenceDetector(model, "max_softmax")
    clean_cal, _ = noisy_tones(64, 21, FIVE_FREQS)
    cal = score_clips(detector, clean_cal, 64)
    return detector, threshold_at(cal, 0.05), float(np.std(cal))


def test_the_adaptive_attacker_evades_a_detector_the_plain_attack_trips():
    """On max-softmax, its threshold at 5% of clean clips (below 0.5): plain PGD's examples sit just
    past the decision boundary, where no class has more than half the probability, and are all
    flagged. PGD on the combined margin with a small weight c crosses the boundary and goes on to a
    confident misclassification below the threshold; with a large c the detector's gradient (towards
    the true class, the top one before the boundary) holds it back: why CW search c, and why
    ``adaptive.weights`` starts small. Its early stop is the joint success."""
    from advmir.defenses.robust import build_member, fooled_within

    torch.manual_seed(0)
    model = five_tone_model()
    x, y = correct_clips(model, 24)
    detector, thr, spread = max_softmax_at_5_percent(model)
    assert thr < 0.5
    spec = {"name": "pgd", "params": {"steps": 40, "loss": "margin"}}
    plain = build_member(spec, 15.0, 0, 64, model)(x, y).x_adv
    fooled = fooled_within(model, x, plain, y, 15.0, 64)
    assert fooled.mean() > 0.9 and (fooled & (score_clips(detector, plain, 64) <= thr)).sum() == 0
    evasion = {}
    for c in (0.1, 10.0):
        guarded = Guarded(model, detector, thr, spread=spread, weight=c)
        result = adaptive_attack(spec, 15.0, 0, 64, guarded)(x, y)
        fooled_a = fooled_within(model, x, result.x_adv, y, 15.0, 64)
        evading = fooled_a & (score_clips(detector, result.x_adv, 64) <= thr)
        np.testing.assert_array_equal(result.success.numpy(), evading)  # success: fooled and unflagged
        evasion[c] = evading.mean()
    assert evasion[0.1] > 0.9 and evasion[10.0] < 0.5


def test_the_weight_search_keeps_each_clips_best_example_and_retries_only_the_flagged():
    """weight_search tries the weights from the smallest up; the second weight only on the clips the
    first fooled but left flagged; each clip keeps an evading example where one was found; a clip
    not attacked keeps its clean copy; the counts add up."""
    from advmir.defenses.detection_eval import weight_search
    from advmir.defenses.robust import fooled_within

    torch.manual_seed(0)
    model = five_tone_model()
    x, y = correct_clips(model, 16)
    detector, thr, spread = max_softmax_at_5_percent(model)
    spec = {"name": "pgd", "params": {"steps": 40, "loss": "margin"}}
    attacked = np.ones(16, dtype=bool)
    attacked[0] = False
    x_adv, fooled, tried, evading = weight_search(
        model, detector, x, y, attacked, thr, spread, spec, 15.0, [10.0, 0.1],
        seed=0, batch_size=64, progress=False,
    )  # fmt: skip
    # the first weight tried is the smallest, on every attacked clip; the same attack run alone
    first = adaptive_attack(spec, 15.0, 0, 64, Guarded(model, detector, thr, spread, 0.1))(x[1:], y[1:])
    fooled_first = fooled_within(model, x[1:], first.x_adv, y[1:], 15.0, 64)
    flagged_first = score_clips(detector, first.x_adv, 64) > thr
    assert tried == [15, int((fooled_first & flagged_first).sum())]
    assert evading[0] == int((fooled_first & ~flagged_first).sum()) > 0
    assert torch.equal(x_adv[0], x[0]) and not fooled[0]
    np.testing.assert_array_equal(fooled, fooled_within(model, x, x_adv, y, 15.0, 64) & attacked)
    flagged = score_clips(detector, x_adv, 64) > thr
    assert int((fooled & ~flagged).sum()) == sum(evading)
    # a clip that evaded at the first weight keeps that example
    evaded_first = np.flatnonzero(fooled_first & ~flagged_first) + 1
    torch.testing.assert_close(x_adv[evaded_first], first.x_adv[evaded_first - 1])


# -- end to end ----------------------------------------------------------------------------------------


def test_evaluate_detection_rows_and_controls_on_the_tone_task():
    """Every detector scored before, on the noise control and after; the adaptive row carries the
    non-adaptive AUC; two runs agree (seeded)."""
    model = five_tone_model()
    x, y = noisy_tones(16, 7, FIVE_FREQS)
    xt, yt = noisy_tones(40, 11, FIVE_FREQS)
    xc, _ = noisy_tones(24, 13, FIVE_FREQS)
    xr, yr = noisy_tones(30, 17, FIVE_FREQS)
    classes = [f"f{int(f)}" for f in FIVE_FREQS]
    ref = pd.DataFrame(
        {"id": [f"r{i}" for i in range(30)], "label": [classes[i] for i in yr], "label_idx": yr}
    )
    job = DetectionJob(
        model, classes, x, y, np.array([f"t{i}" for i in range(16)]), np.arange(16), xt, yt, xc,
        xr.numpy(), ref, SR, {"dataset": "tones", "model": "tiny"},
    )  # fmt: skip
    setting = DetectionConfig.from_dict(
        {
            "enabled": True, "models": ["tiny"], "budgets_db": [20],
            "attacks": {"pgd": {"name": "pgd", "params": {"steps": 10, "loss": "margin"}}},
            "detectors": ["squeeze", "stack", "logmel_net", "noise_floor"],
            "squeezers": {
                "q6": {"kind": "quantize", "bits": 6}, "lp": {"kind": "lowpass", "cutoff_hz": 2000},
            },
            "train_size": 40, "calibration_size": 24, "reference_size": 30,
            "net": {"epochs": 2, "width": 4},
            "adaptive": {
                "detectors": ["squeeze", "logmel_net", "stack"],
                "gradient": {"name": "pgd", "params": {"steps": 10}},
                "query": {"name": "square", "params": {"n_queries": 4}},
            },
        },
        ["tiny"],
        (SR,),
    )  # fmt: skip
    result = evaluate_detection(job, setting, seed=0, batch_size=64, progress=False)
    assert not any(m.training for m in model.modules())  # the classifier is still in eval mode
    rows = result.rows
    assert list(rows.columns) == SUMMARY_COLUMNS
    assert rows.groupby("phase").size().to_dict() == {"non_adaptive": 4, "control": 4, "adaptive": 3}
    assert set(rows.loc[rows["phase"] == "adaptive", "algorithm"]) == {"pgd", "square"}
    control = rows[rows["phase"] == "control"]
    assert (control["n_examples"] == 16).all()  # every noisy clip is a positive
    before = rows[rows["phase"] == "non_adaptive"].set_index("detector")
    for r in rows[rows["phase"] == "adaptive"].itertuples():
        assert r.auc_before == before.loc[r.detector, "roc_auc"] and r.before_attack == "pgd"
        assert r.tpr_before == before.loc[r.detector, "tpr"] or np.isnan(r.tpr_before)
        search = result.meta["adaptive_weight_search"][r.detector]["20"]
        assert search["tried"][0] == r.n_attacked and sum(search["newly_evading"]) == round(
            r.evasion * r.n_attacked
        )
    assert rows["roc_auc"].dropna().between(0, 1).all() and (rows["fpr"] <= 0.25).all()
    assert result.meta["n_train_adversarial"] > 0 and set(result.thresholds) == set(setting.detectors)
    assert set(result.roc["detector"]) == set(setting.detectors)
    again = evaluate_detection(job, setting, seed=0, batch_size=64, progress=False)
    pd.testing.assert_frame_equal(rows, again.rows)


def test_commands_evaluate_summarize_and_plot(tiny_dataset, tmp_path):
    from advmir.cli import main
    from advmir.datasets.contract import load_dataset
    from advmir.models.train import TrainConfig, train_model
    from advmir.models.zoo import save_checkpoint

    ds = load_dataset(tiny_dataset)
    spec = {"frontend": "logmel", "arch": "cnn2d", "arch_args": {"width": 4}}
    model, _, _ = train_model(
        ds,
        spec,
        TrainConfig(seed=0, max_epochs=4, min_epochs=4, batch_size=16, learning_rate=0.005),
        "cpu",
        tmp_path / "w",
    )
    checkpoint = tmp_path / "models" / "tiny" / "model.ckpt"
    save_checkpoint(checkpoint, model, ds.classes)
    setting = {
        "budgets_db": [10], "attacks": {"pgd": {"name": "pgd", "params": {"steps": 3}}},
        "detectors": ["max_softmax", "noise_floor", "stack", "logmel_net"], "train_size": 24,
        "calibration_size": 20, "reference_size": 20, "net": {"epochs": 1, "width": 4},
        "adaptive": {
            "detectors": ["max_softmax", "logmel_net"], "gradient": {"name": "pgd", "params": {"steps": 3}},
        },
    }  # fmt: skip
    out = tmp_path / "defenses" / "synth_notes" / "detection" / "tiny"
    argv = [
        "evaluate-detection", "--dataset-dir", str(tiny_dataset), "--checkpoint", str(checkpoint),
        "--setting", json.dumps(setting), "--eval-size", "6", "--batch-size", "16", "--device", "cpu",
        "--threads", "1", "--out-dir", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    meta = json.loads((out / "detection.json").read_text())
    assert meta["n_eval"] == 6 and meta["n_train"] == 24 and meta["n_calibration"] == 20
    assert (out / "logmel_net.ckpt").exists() and (out / "stack" / "stack.json").exists()
    from advmir.models.zoo import load_model

    assert load_model(out / "logmel_net.ckpt").classes == ["clean", "adversarial"]  # weights_only load
    table, roc = tmp_path / "detection.csv", tmp_path / "detection_roc.csv"
    assert main(["summarize-detection", "--runs", str(out), "--out", str(table), "--roc-out", str(roc)]) == 0
    rows = pd.read_csv(table)
    assert list(rows.columns) == SUMMARY_COLUMNS and set(rows["phase"]) == {
        "non_adaptive",
        "control",
        "adaptive",
    }
    assert "seconds" not in rows  # wall time stays in detection.json: tables are reproducible
    png = tmp_path / "detection_roc.png"
    assert main(["plot-detection", "--table", str(table), "--roc", str(roc), "--out", str(png)]) == 0
    assert png.stat().st_size > 1000
    # a detector name that does not exist, refused by the command too, by key
    bad = [*argv[:6], json.dumps({**setting, "detectors": ["nope"]}), *argv[7:]]
    assert main(bad) == 2
