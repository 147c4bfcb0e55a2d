"""Input-transformation defenses: settings refused by key (with the codec stage's messages), the
wrappers (shapes, what each transformation does, straight-through gradients, seeded randomness), and
the three scorings (clean cost, non-adaptive, adaptive with BPDA / EOT) on the tiny tone task."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from advmir.codecs.registry import CodecSettingError
from advmir.config import REPO, ConfigError
from advmir.defenses.plan import DefensePlan, DefensePlanError
from advmir.defenses.transform_eval import SUMMARY_COLUMNS, evaluate_transform, summarize_transform
from advmir.defenses.transforms import (
    DefendedModel,
    EOTModel,
    GaussianNoise,
    LowPass,
    Quantize,
    Resample,
    TransformConfigError,
    build_transform,
    parse_transform,
)
from conftest import checked_config, run_snakemake, tiny_config
from tiny_tones import SR, correct_clips, five_tone_model

SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
ATTACKS = {"pgd": {"name": "pgd", "params": {"steps": 10}}}


def tone(freq: float, n: int = 2, length: int = 2000, sr: int = SR) -> torch.Tensor:
    t = torch.arange(length) / sr
    return 0.5 * torch.sin(2 * math.pi * freq * t).repeat(n, 1)


# ------------------------------------------------------------------------------------ settings
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "mp3", "bitrate_kbps": 320}, r"MP3 at 16000 Hz cannot take 320 kbps.*sample_rate: 44100"),
        ({"kind": "opus", "bitrate_kbps": 4}, r"Opus cannot take 4 kbps"),
        ({"kind": "vorbis", "bitrate_kbps": 64}, r"Vorbis takes no bitrate_kbps \(use quality\)"),
        (
            {"kind": "random", "bitrates_kbps": [128, 320]},
            r"'t\[1\]' \(mp3\): MP3 at 16000 Hz cannot take 320",
        ),
    ],
)
def test_codec_settings_are_checked_as_the_codec_stage_checks_them(spec, message):
    with pytest.raises(CodecSettingError, match=message):
        parse_transform("t", {**spec, "model": "m"}, 16000)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "blur"}, r"defenses.transforms.t: key 'kind' must be one of \['mp3', 'aac'.*'random'\]"),
        ({"kind": "quantize", "bits": 1}, r"key 'bits' must be an integer in \[2, 16\], got 1"),
        ({"kind": "quantize", "bits": 8, "cutoff_hz": 1}, r"unknown key\(s\) \['cutoff_hz'\].*'bits'"),
        ({"kind": "resample", "rate_hz": 16000}, r"key 'rate_hz' must be an integer in \[1000, 16000\)"),
        ({"kind": "lowpass", "cutoff_hz": 9000}, r"key 'cutoff_hz' must be a number in \(0, 8000\)"),
        (
            {"kind": "random", "bitrates_kbps": [64], "gain_db": [0, 6]},
            r"key 'gain_db' must be \[low, high\]",
        ),
        ({"kind": "random", "codec": "vorbis", "bitrates_kbps": [64]}, r"a codec with a bitrate"),
    ],
)
def test_bad_transform_settings_name_the_key_and_what_is_allowed(spec, message):
    with pytest.raises(TransformConfigError, match=message):
        parse_transform("t", {**spec, "model": "m"}, 16000)


def test_a_transform_must_wrap_a_zoo_model():
    with pytest.raises(TransformConfigError, match=r"key 'model' must be one of \['a', 'b'\], got 'c'"):
        parse_transform("t", {"kind": "quantize", "bits": 8, "model": "c"}, 16000, ["a", "b"])
    setting = parse_transform("t", {"kind": "random", "bitrates_kbps": [64, 128], "model": "a"}, 16000, ["a"])
    assert setting.random and setting.bpda and [c.bitrate_kbps for c in setting.codecs] == [64, 128]
    assert not parse_transform("t", {"kind": "lowpass", "cutoff_hz": 4000, "model": "a"}, 16000).bpda


def test_plan_runs_one_job_per_transform_and_refuses_bad_ones_at_start(tmp_path):
    config = tiny_config(tmp_path / "results")
    config["defenses"]["transforms"] = {
        "mp3_128k": {"kind": "mp3", "bitrate_kbps": 128, "model": "logmel_cnn"},
        "noisy": {"kind": "noise", "snr_db": 30, "model": "wave_cnn"},
    }
    seen = checked_config(config)
    plan = DefensePlan(seen, "results", ["synth_notes"], seen["models"])
    assert plan.transform_files() == [
        "results/defenses/synth_notes/transforms/mp3_128k/summary.csv",
        "results/defenses/synth_notes/transforms/noisy/summary.csv",
    ]
    assert (
        plan.transform_checkpoint("synth_notes", "noisy") == "results/models/synth_notes/wave_cnn/model.ckpt"
    )
    assert "results/tables/defense_transforms.csv" in plan.targets()
    assert json.loads(plan.transform_json("mp3_128k"))["bitrate_kbps"] == 128
    assert plan.transform_option("eot_samples") == 20 and plan.transform_budgets_option() == "40 30"
    # a codec setting the codec cannot honour, a model that is not in the zoo: both listed, by key
    seen["defenses"]["transforms"]["mp3_128k"]["bitrate_kbps"] = 320
    seen["defenses"]["transforms"]["noisy"]["model"] = "nope"
    with pytest.raises(DefensePlanError, match=r"(?s)MP3 at 16000 Hz cannot take 320 kbps.*key 'model'"):
        DefensePlan(seen, "results", ["synth_notes"], seen["models"])
    # EOT samples < 1: refused by the schema with the key
    config["defenses"]["transform_evaluation"] = {"eot_samples": 0}
    with pytest.raises(ConfigError, match=r"defenses.transform_evaluation.eot_samples: 0 is less than"):
        checked_config(config)


def test_snakemake_dry_run_plans_the_jobs_and_refuses_a_codec_setting_by_key(tmp_path):
    config = tiny_config(tmp_path / "results")
    config["defenses"]["transforms"] = {
        "mp3_128k": {"kind": "mp3", "bitrate_kbps": 128, "model": "logmel_cnn"}
    }
    out = run_snakemake(tmp_path, config, "-n", "--quiet", "rules").stdout
    assert all(rule in out for rule in ("evaluate_transform", "summarize_transforms", "plot_transforms"))
    config["defenses"]["transforms"]["mp3_128k"]["bitrate_kbps"] = 320
    proc = run_snakemake(tmp_path, config, "-n", check=False)
    assert proc.returncode != 0
    assert "codec setting 'mp3_128k' (mp3): MP3 at 16000 Hz cannot take 320 kbps" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


# ------------------------------------------------------------------------------------- modules
def test_quantize_rounds_forward_and_passes_the_gradient_straight_through():
    x = (torch.rand(3, 100) * 2 - 1).requires_grad_(True)
    out = Quantize(4)(x)
    assert torch.allclose(out * 8, torch.round(out * 8))  # on the 4-bit grid
    assert (out - x).abs().max() <= 1 / 16 + 1e-6
    (grad,) = torch.autograd.grad((out * torch.arange(100.0)).sum(), x)
    assert torch.equal(grad, torch.arange(100.0).expand(3, 100))  # identity backward (BPDA)


def test_lowpass_and_resampling_remove_the_top_band_only():
    low, high = tone(500.0), tone(3000.0)
    for module in (LowPass(SR, 2000.0), Resample(SR, 4000)):
        assert module(low).shape == low.shape
        assert (module(low) - low)[:, 200:-200].pow(2).mean() < 1e-3 * low.pow(2).mean()
        assert module(high)[:, 200:-200].pow(2).mean() < 1e-2 * high.pow(2).mean()
        x = low.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(module(x).sum(), x)  # differentiable: no BPDA needed
        assert grad.abs().sum() > 0


def test_noise_has_the_set_snr_and_is_reproducible_when_reseeded():
    x = tone(440.0, n=4, length=8000)
    noise = GaussianNoise(20.0, seed=3)
    first = noise(x)
    snr = 10 * torch.log10(x.pow(2).mean(1) / (first - x).pow(2).mean(1))
    assert torch.allclose(snr, torch.full_like(snr, 20.0), atol=0.5)
    assert not torch.equal(noise(x), first)  # fresh draws per call
    noise.reseed(3)
    assert torch.equal(noise(x), first)


def test_a_codec_defense_is_a_model_with_a_bpda_gradient():
    model = five_tone_model()
    setting = parse_transform("mp3", {"kind": "mp3", "bitrate_kbps": 64, "model": "m"}, SR)
    defended = DefendedModel(model, build_transform(setting, SR), "mp3")
    x, _ = correct_clips(model, 4)
    x = x.clone().requires_grad_(True)
    logits = defended(x)
    assert logits.shape == (4, 5)
    assert not torch.allclose(defended.transform(x), x)  # a real round trip changed the clip
    (grad,) = torch.autograd.grad(logits[:, 0].sum(), x)
    assert grad.abs().sum() > 0  # the straight-through backward lets the attack through
    eot = EOTModel(DefendedModel(model, GaussianNoise(30.0), "n", True), 3)
    assert eot(x).shape == (4, 5)
    with pytest.raises(TransformConfigError, match="eot_samples must be an integer >= 1"):
        EOTModel(model, 0)


# ------------------------------------------------------------------------------------- scoring
@pytest.fixture(scope="module")
def tiny():
    model = five_tone_model()
    x, y = correct_clips(model, 24)
    return model, x, y


def score(tiny, spec, budgets=(30.0, 15.0), **kw):
    model, x, y = tiny
    setting = parse_transform("t", {**spec, "model": "tiny"}, SR)
    defended = DefendedModel(model, build_transform(setting, SR, seed=0), "t", setting.random)
    rows = evaluate_transform(model, defended, setting, x, y, ATTACKS, list(budgets), batch_size=64, **kw)
    return rows, summarize_transform(rows, "tones")


def test_bpda_breaks_quantisation_that_shatters_the_gradient(tiny):
    """4-bit rounding has a zero gradient almost everywhere: only the straight-through backward lets
    the adaptive attacker in, and then it does about as well as on the undefended model."""
    rows, summary = score(tiny, {"kind": "quantize", "bits": 4})
    assert list(summary.columns) == SUMMARY_COLUMNS and len(summary) == 2
    loud = summary[summary["budget_db"] == 15.0].iloc[0]
    assert loud["success_undefended"] > 0.5
    assert loud["success_adaptive"] >= 0.9 * loud["success_undefended"]
    assert loud["verdict"] == "broken" and loud["broken_by"] == "pgd" and loud["bpda"]
    np.testing.assert_allclose(
        summary["clean_cost"], summary["clean_accuracy_undefended"] - summary["clean_accuracy_defended"]
    )
    for scoring, group in rows.groupby("scoring"):
        # cumulative: a clip not robust at the quieter budget is not robust at the louder one
        acc = group.sort_values("budget_db", ascending=False)["robust_accuracy"].to_numpy()
        assert (np.diff(acc) <= 1e-12).all(), scoring
        assert (group["robust_accuracy"] <= group["clean_accuracy"] + 1e-12).all()


def test_random_defense_is_attacked_with_eot_and_judged_on_a_seeded_draw(tiny):
    rows, summary = score(tiny, {"kind": "noise", "snr_db": 20}, budgets=(15.0,), eot_samples=4)
    adaptive = rows[rows["scoring"] == "adaptive"].iloc[0]
    assert adaptive["eot_samples"] == 4 and not adaptive["bpda"]
    assert (rows[rows["scoring"] != "adaptive"]["eot_samples"] == 1).all()
    again = score(tiny, {"kind": "noise", "snr_db": 20}, budgets=(15.0,), eot_samples=4)[1]
    pd.testing.assert_frame_equal(summary, again)  # seeded: two runs agree
    assert summary.iloc[0]["success_adaptive"] > 0.5


def test_cli_writes_the_table_and_the_figure(tiny, tmp_path):
    from advmir.defenses.cli import summarize_transforms
    from advmir.plotting.defenses import main_transforms

    _, summary = score(tiny, {"kind": "lowpass", "cutoff_hz": 2000}, budgets=(30.0, 15.0))
    run = tmp_path / "lowpass"
    run.mkdir()
    summary.to_csv(run / "summary.csv", index=False)
    out = tmp_path / "defense_transforms.csv"
    assert summarize_transforms(["--runs", str(run), "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == SUMMARY_COLUMNS and list(table["budget_db"]) == [30.0, 15.0]
    png = tmp_path / "f.png"
    assert main_transforms(["--table", str(out), "--out", str(png)]) == 0
    assert png.stat().st_size > 1000


def test_verdict_needs_the_margin_and_more_than_sampling_noise():
    """Robust at a budget only if the adaptive robust accuracy beats the undefended model's by the
    margin and by two standard errors: 6 points on 100 clips is noise, 30 points is not."""

    def rows(undefended: float, adaptive: float, n: int) -> pd.DataFrame:
        base = {"transform": "t", "kind": "mp3", "label": "MP3", "model": "m", "budget_db": 30.0, "order": 0}
        base |= {"attack": "pgd", "n": n, "clean_accuracy": 1.0, "eot_samples": 1, "bpda": True}
        scorings = {"undefended": undefended, "non_adaptive": 0.9, "adaptive": adaptive}
        return pd.DataFrame(
            [
                {**base, "scoring": k, "robust_accuracy": v, "success": 1 - v, "n_fooled": 1}
                for k, v in scorings.items()
            ]
        )

    noisy = summarize_transform(rows(0.49, 0.55, 100), "d", margin=0.05).iloc[0]
    assert noisy["verdict"] == "broken" and noisy["broken_by"] == "pgd"
    assert noisy["adaptive_gain"] == pytest.approx(0.06) and noisy["gain_se"] == pytest.approx(
        0.0705, abs=1e-3
    )
    assert summarize_transform(rows(0.49, 0.55, 10_000), "d", margin=0.05).iloc[0]["verdict"] == "robust"
    assert summarize_transform(rows(0.2, 0.5, 100), "d", margin=0.05).iloc[0]["verdict"] == "robust"
    assert summarize_transform(rows(0.2, 0.5, 100), "d", margin=0.4).iloc[0]["verdict"] == "broken"
    assert summarize_transform(rows(0.2, 0.5, 100), "d").iloc[0]["adaptive_vs_undefended"] == pytest.approx(
        0.625
    )


def test_the_undefended_reference_is_the_same_for_every_defense(tiny):
    """The examples of the undefended model are crafted on every clip in the same batches whatever
    the defense, so two defenses are compared against one reference; the first attack of a budget
    runs on every clean-correct clip (its own success), the next ones on the clips still robust."""
    cols = ["budget_db", "order", "n_attacked", "n_fooled", "robust_accuracy", "success"]
    quantized, _ = score(tiny, {"kind": "quantize", "bits": 6}, budgets=(25.0,))
    lowpassed, _ = score(tiny, {"kind": "lowpass", "cutoff_hz": 1000}, budgets=(25.0,))
    reference = quantized[quantized["scoring"] == "undefended"][cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        reference, lowpassed[lowpassed["scoring"] == "undefended"][cols].reset_index(drop=True)
    )
    first = quantized[(quantized["order"] == 0) & (quantized["scoring"] == "adaptive")].iloc[0]
    assert first["n_attacked"] == first["n_clean_correct"] > 0
