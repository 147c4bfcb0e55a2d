"""The whole workflow on a tiny config, in a temporary folder, through Snakemake."""

import copy
import json
import os
import signal
import subprocess
import time

import numpy as np
import pandas as pd
import pytest

from conftest import run_snakemake, snakemake_command, tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture
def finished_run(tiny_workflow):
    return tiny_workflow


def test_artifacts(finished_run):
    work, config = finished_run
    results = work / "results"
    table = pd.read_csv(results / "tables/clean_accuracy.csv")
    assert set(table["model"]) == set(config["models"])
    assert table["test_accuracy"].between(0, 1).all()
    assert (table["test_accuracy"] > 0.5).all(), table
    for model in config["models"]:
        folder = results / "models/synth_notes" / model
        metrics = json.loads((folder / "metrics.json").read_text())
        assert np.asarray(metrics["confusion"]).shape == (3, 3)
        assert len(pd.read_csv(folder / "history.csv")) >= 1
        assert (results / f"logs/models/synth_notes/{model}.log").stat().st_size > 0
        assert (results / f"benchmarks/models/synth_notes/{model}.tsv").exists()
    figures = sorted(str(p.relative_to(results / "figures")) for p in (results / "figures").rglob("*.png"))
    names = (
        "clean_accuracy",
        "benign_accuracy",
        "generalisation",
        "attack_success_vs_snr",
        "transfer_bitrate",
    )
    for name in (*names, "anomaly/synth_notes/roc"):
        assert f"{name}.png" in figures, figures
    for figure in figures:
        assert (results / "figures" / figure).stat().st_size > 10_000
        assert (results / "figures" / figure).with_suffix(".pdf").exists()
    assert not list(results.rglob("*.tmp")), "temporary files left behind"


def test_models_tables_hold_their_controls(finished_run):
    work, _ = finished_run
    tables = work / "results/tables"
    accuracy = pd.read_csv(tables / "clean_accuracy.csv")
    for snr in (40, 30, 20):
        assert accuracy[f"flip_rate_noise{snr}db"].between(0, 1).all()
    benign = pd.read_csv(tables / "benign_accuracy.csv")
    assert {"clean", "noise 30 dB", "flac", "mp3_32k", "room"} <= set(benign["condition"])
    assert set(benign["kind"]) == {"clean", "noise", "codec", "room"}
    flac = benign[benign["condition"] == "flac"]
    assert (flac["change_points"] == 0).all(), flac  # the lossless control changes nothing
    general = pd.read_csv(tables / "generalisation.csv")
    assert set(general["split"]) == {"notes", "soundfont"} and set(general["model"]) == {"logmel_cnn"}
    data = pd.read_csv(work / "results/generalisation/synth_notes/soundfont/data/manifest.csv")
    assert set(data.loc[data.split == "test", "soundfont"]) == {"Merlin"}
    assert set(data.loc[data.split != "test", "soundfont"]) == {"TimGM6mb"}
    codec_clips = pd.read_csv(work / "results/augment/synth_notes/codec_train.csv")
    manifest = pd.read_csv(work / "results/data/synth_notes/manifest.csv")
    assert sorted(codec_clips["id"]) == sorted(manifest.loc[manifest.split == "train", "id"])


def test_stage_tables(finished_run):
    work, config = finished_run
    tables = work / "results/tables"
    attacks = pd.read_csv(tables / "attacks.csv")
    assert {"pgd", "fgsm", "eot_pgd"} <= set(attacks["attack"])
    assert attacks["success_rate"].between(0, 1).all()
    examples = pd.read_csv(work / "results/attacks/synth_notes/logmel_cnn/pgd/examples.csv")
    assert len(examples) == config["attack_settings"]["eval_size"]
    ok = examples[examples["success"]]
    assert (ok["snr_db"] >= 30 - 1e-3).all()
    transfer = pd.read_csv(tables / "transfer.csv")
    assert {"none", "flac", "mp3_32k", "room"} <= set(transfer["condition"])
    # the lossless control changes no prediction
    key = ["attack", "source_model", "target_model", "id"]
    flac = transfer[transfer["condition"] == "flac"].set_index(key)
    none = transfer[transfer["condition"] == "none"].set_index(key)
    shared = flac.index.intersection(none.index)
    assert len(shared) > 0
    assert (flac.loc[shared, "pred"] == none.loc[shared, "pred"]).all()
    # every adversarial prediction beside its matched-noise control's, through the same condition
    assert (transfer["noise_pred"] >= 0).all() and transfer["noise_success"].isin([True, False]).all()
    assert (flac.loc[shared, "noise_pred"] == none.loc[shared, "noise_pred"]).all()
    rates = pd.read_csv(tables / "transfer_rates.csv")
    assert rates["noise_success_rate"].dropna().between(0, 1).all()
    assert np.allclose(
        rates["excess_over_noise"], rates["success_rate"] - rates["noise_success_rate"], equal_nan=True
    )
    for condition in ("mp3_32k", "room"):
        folder = work / f"results/codecs/synth_notes/logmel_cnn/pgd/{condition}"
        assert np.load(folder / "decoded_noise.npy").shape == np.load(folder / "decoded.npy").shape
    anomaly = pd.read_csv(tables / "anomaly.csv")
    assert anomaly["roc_auc"].dropna().between(0, 1).all()
    review = pd.read_csv(work / "results/anomaly/synth_notes/review.csv")
    assert len(review) > 0 and review["reason"].notna().all()


def test_rerun_has_nothing_to_do(finished_run):
    work, config = finished_run
    proc = run_snakemake(work, config, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_changing_one_model_reruns_only_it(finished_run):
    work, config = finished_run
    changed = copy.deepcopy(config)
    changed["models"]["wave_cnn"]["training"] = {"learning_rate": 0.001}
    proc = run_snakemake(work, changed, "-n", "--quiet", "rules")
    out = proc.stdout + proc.stderr
    assert "train_model" in out and "render_synth_notes" not in out
    jobs = run_snakemake(work, changed, "-n").stdout
    outputs = [line for line in jobs.splitlines() if line.strip().startswith("output:")]
    assert any("models/synth_notes/wave_cnn/model.ckpt" in line for line in outputs)
    assert any("attacks/synth_notes/wave_cnn/pgd/" in line for line in outputs)
    for untouched in (
        "models/synth_notes/logmel_cnn/",
        "attacks/synth_notes/logmel_cnn/",
        "data/synth_notes/",
    ):
        assert not any(untouched in line for line in outputs), untouched


def test_bad_config_stops_before_any_job(tmp_path):
    config = tiny_config(tmp_path / "results")
    config["synth_notes"]["split"] = "random"
    proc = run_snakemake(tmp_path, config, "--cores", "1", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "random" in out and "instruments" in out
    assert not (tmp_path / "results").exists()


def test_sigkill_during_training_then_rerun_gives_the_same_tables(tiny_workflow, tmp_path):
    """Kill Snakemake and its jobs (SIGKILL) while a model trains; unlock and rerun as `make run`
    does: the run completes and its models and table equal those of the uninterrupted run."""
    reference, config = tiny_workflow
    work = tmp_path / "killed"
    config = copy.deepcopy(config)
    config["results"] = str(work / "results")
    target = f"{config['results']}/tables/clean_accuracy.csv"
    cmd, env = snakemake_command(work, config, "--cores", "2", target)
    models = work / "results/models/synth_notes"
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    # Wait until a model is in its training epochs (Lightning's bar in its log), none done yet.
    logs = work / "results/logs/models/synth_notes"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any("Epoch" in log.read_text(errors="replace") for log in logs.glob("*.log")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before training could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (work / "results/tables/clean_accuracy.csv").exists()
    assert len(list(models.glob("*/model.ckpt"))) < len(config["models"])

    run_snakemake(work, config, "--unlock")
    run_snakemake(work, config, "--cores", "2", "--rerun-incomplete", target)
    columns = ["model", "test_accuracy", "macro_f1"]
    resumed = pd.read_csv(work / "results/tables/clean_accuracy.csv")[columns]
    uninterrupted = pd.read_csv(reference / "results/tables/clean_accuracy.csv")[columns]
    pd.testing.assert_frame_equal(resumed, uninterrupted)
    for model in config["models"]:
        a = json.loads((models / model / "metrics.json").read_text())
        b = json.loads((reference / f"results/models/synth_notes/{model}/metrics.json").read_text())
        assert a["confusion"] == b["confusion"], model
    assert not list((work / "results").rglob("*.tmp")), "temporary files left behind"
