"""Review your own recordings: a folder of ~200 short WAVs made here (mixed sample rates and channel
counts; some clipped, noisy or nearly silent; some unreadable, empty or all zeros) goes to a ranked
review.csv and the report's listening page in one Snakemake call (`review`, what `make review`
runs), with the ensemble fitted on the tiny embedded notes' injected faults."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from advmir.config import merge_config
from conftest import REPO, TINY_SYNTH, run_snakemake, tiny_config

RATES = (8000, 16000, 22050, 44100)
N_FILES = 200
UNUSABLE = {
    "broken_1.wav": "random bytes",
    "broken_2.wav": "random bytes",
    "empty.wav": "",
    "zeros.wav": "zeros",
}


def note(rate: int, seconds: float, freq: float, rng: np.random.Generator) -> np.ndarray:
    """A plucked harmonic tone (T,) at ``rate``, peak about 0.6."""
    t = np.arange(round(rate * seconds)) / rate
    tone = sum(np.sin(2 * np.pi * k * freq * t) / k for k in (1, 2, 3) if k * freq < rate / 2)
    env = (
        np.minimum(1.0, t / 0.01) * np.exp(-4 * t) * np.minimum(1.0, (t[-1] - t) / (0.4 * t[-1]))
    )  # dies away
    x = tone * env
    return 0.6 * x / np.abs(x).max() * rng.uniform(0.7, 1.0)


def fault_of(i: int) -> str:
    return ("clipped", "noisy", "quiet")[i // 10 % 3] if i % 10 == 0 else "none"


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """The folder, and the fault of each usable file (by relative path)."""
    root = tmp_path_factory.mktemp("my_recordings")
    rng = np.random.default_rng(0)
    faults = {}
    for i in range(N_FILES - len(UNUSABLE)):
        rate, channels = RATES[i % 4], 1 + (i // 4) % 2
        x = note(rate, rng.uniform(0.3, 0.5), 110 * 2 ** ((i % 24) / 12), rng)  # lengths unrelated to faults
        fault = fault_of(i)
        if fault == "clipped":
            x = np.clip(4 * x, -0.6, 0.6)
        elif fault == "noisy":
            x = x + rng.normal(0, np.sqrt(np.mean(x**2)) / 10 ** (10 / 20), len(x))  # 10 dB SNR
        elif fault == "quiet":
            x = rng.normal(0, 1e-4, len(x))  # nothing but a -80 dBFS hiss
        rel = f"take_{i:03d}.wav"
        sf.write(root / rel, np.stack([x * (1 - 0.2 * c) for c in range(channels)], axis=1), rate)
        faults[rel] = fault
    (root / "broken_1.wav").write_bytes(rng.bytes(2000))
    (root / "broken_2.wav").write_bytes(b"RIFF" + rng.bytes(400))
    (root / "empty.wav").write_bytes(b"")
    sf.write(root / "zeros.wav", np.zeros(4000), 16000, subtype="PCM_16")
    return root, faults


def review_config(results, folder) -> dict:
    """The tiny workflow config with config/folder.yaml merged on, made smaller (signal checks and the
    multi-task net, no classifier to train: confident learning on a folder's own labels is covered in
    test_anomaly_pipeline), the tiny notes' clip length."""
    config = merge_config(tiny_config(results), yaml.safe_load((REPO / "config/folder.yaml").read_text()))
    config["anomaly"]["detectors"] = ["clipping", "silence", "truncation", "noise_floor", "distortion"]
    config["anomaly"]["faults"]["silence"] = 60
    config["training_codecs"]["enabled"] = False
    config["defenses"]["enabled"] = False
    config["generalisation"]["enabled"] = False
    config["folder"].update(
        {"path": str(folder), "labels": "none", "clip_seconds": TINY_SYNTH["clip_seconds"]}
    )
    return config


@pytest.mark.slow
def test_a_folder_of_recordings_to_review_csv_in_one_command(recordings, tmp_path):
    folder, faults = recordings
    config = review_config(tmp_path / "results", folder)
    proc = run_snakemake(tmp_path, config, "--cores", "2", "review")
    said = proc.stdout + proc.stderr
    assert (
        "rule review_dataset:" in said
        and "rule train_model" not in said
        and "rule craft_adversarial" not in said
    )
    results = tmp_path / "results"
    skipped = pd.read_csv(results / "data/folder/skipped.csv")
    assert set(skipped["path"]) == set(UNUSABLE)  # every unusable file reported, with its reason
    assert (skipped["reason"].str.len() > 0).all()
    review = pd.read_csv(results / "anomaly/folder/reviewed/review.csv", keep_default_na=False)
    assert len(review) == len(faults) and review["rank"].tolist() == list(range(1, len(faults) + 1))
    assert set(review["path"]) == set(faults) and review["p_fault"].between(0, 1).all()
    assert (review["reason_1"] != "").all()
    review["fault"] = review["path"].map(faults)
    faulty = review["fault"] != "none"
    # the faulty files come first: more of them in the top 10% than by chance (10%), and each kind
    # ranks above the median clean file
    top = review.head(len(review) // 10)
    assert (top["fault"] != "none").mean() > 3 * faulty.mean()
    clean_median = review.loc[~faulty, "rank"].median()
    for kind in ("clipped", "noisy", "quiet"):
        assert review.loc[review["fault"] == kind, "rank"].median() < clean_median, kind
    page = (results / "figures/anomaly/folder/review_listen.html").read_text()
    assert page.count("<audio") == config["anomaly"]["review"]["top"]
    assert str(review["path"].iloc[0]) in page


def test_dry_run_refuses_a_review_of_a_dataset_not_in_datasets(tmp_path):
    config = review_config(tmp_path / "results", tmp_path)
    config["datasets"] = ["synth_notes"]
    proc = run_snakemake(tmp_path, config, "-n", "review", check=False)
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "anomaly.review.datasets ['folder'] are not in `datasets`" in said
