"""The attack stage's command line: craft (white-box, surrogate, universal, targeted), summarize, plot;
and the library behind craft (:mod:`advmir.attacks.craft`) called directly.

A tiny dataset in the data contract (noisy tones of three classes, 0.25 s at 8 kHz) and two tiny
zoo models (log-mel CNN, width 8) trained for a few steps, saved as real checkpoints.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from advmir.attacks import AttackParamError
from advmir.attacks.cli import craft, summarize
from advmir.attacks.craft import (
    AttackSpecError,
    parse_attack_spec,
    plan_craft,
    resolve_target_map,
    summarize_runs,
    write_craft,
    write_listen,
)
from advmir.attacks.scoring import EXAMPLE_COLUMNS, success_rates
from advmir.cli import main
from advmir.datasets.contract import evaluation_rows, load_dataset, write_dataset

SR, T = 8000, 2000
CLASSES = ["low", "mid", "high"]
FREQS = (300.0, 700.0, 1500.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the machine is shared


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    n = 150
    labels = rng.integers(0, 3, n)
    t = np.arange(T) / SR
    freqs = np.asarray(FREQS)[labels] * (1 + 0.03 * (rng.random(n) - 0.5))
    tones = 0.15 * np.sin(2 * np.pi * freqs[:, None] * t[None] + rng.random((n, 1)) * 2 * np.pi)
    audio = ((0.5 + 0.5 * rng.random((n, 1))) * (tones + 0.2 * rng.standard_normal((n, T)))).clip(-1, 1)
    split = np.array(["train"] * 90 + ["valid"] * 20 + ["test"] * 40)
    manifest = pd.DataFrame({
        "id": [f"clip{i:03d}" for i in range(n)], "split": split,
        "label": [CLASSES[k] for k in labels], "label_idx": labels,
    })  # fmt: skip
    out = tmp_path_factory.mktemp("data") / "tones"
    return write_dataset(out, audio.astype(np.float32), manifest, CLASSES, SR)


def _train(dataset_dir: Path, out: Path, seed: int, rows: slice) -> Path:
    from advmir.models.zoo import build_model, save_checkpoint

    ds = load_dataset(dataset_dir)
    train = ds.split_indices("train")[rows]
    x = torch.from_numpy(ds.float_waveforms(train))
    y = torch.from_numpy(ds.manifest["label_idx"].to_numpy()[train])
    torch.manual_seed(seed)
    spec = {
        "frontend": "logmel",
        "arch": "cnn2d",
        "frontend_args": {"n_fft": 256, "hop_length": 64, "n_mels": 32},
        "arch_args": {"width": 8},
    }
    model = build_model(spec, 3, SR)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(40):
        idx = torch.randint(0, len(x), (32,))
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = out / "model.ckpt"
    save_checkpoint(path, model.eval(), CLASSES)
    return path


@pytest.fixture(scope="module")
def checkpoints(dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "cnn": _train(dataset_dir, root / "cnn", 0, slice(None)),
        "surrogate": _train(dataset_dir, root / "surrogate", 1, slice(0, 45)),
    }


def _craft(dataset_dir: Path, ckpt: Path, out: Path, spec: dict, *extra: str, size: int = 16) -> Path:
    argv = [
        "--dataset-dir", str(dataset_dir), "--checkpoint", str(ckpt), "--attack-spec", json.dumps(spec),
        "--eval-size", str(size), "--seed", "0", "--device", "cpu", "--out-dir", str(out),
        "--threads", "1", "--batch-size", "8", *extra,
    ]  # fmt: skip
    assert craft(argv) == 0
    return out


@pytest.fixture(scope="module")
def runs(dataset_dir: Path, checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("attacks") / "tones" / "cnn"
    cnn = checkpoints["cnn"]
    return {
        "pgd": _craft(dataset_dir, cnn, root / "pgd", {"name": "pgd", "params": {"snr_db": 10}}),
        "surrogate": _craft(
            dataset_dir,
            cnn,
            root / "pgd_surrogate",
            {"name": "pgd", "params": {"snr_db": 10}},
            "--surrogate-checkpoint",
            str(checkpoints["surrogate"]),
        ),
        "universal": _craft(
            dataset_dir, cnn, root / "universal", {"name": "universal", "params": {"snr_db": 5, "epochs": 3}}
        ),
        "targeted": _craft(
            dataset_dir,
            cnn,
            root / "pgd_map",
            {
                "name": "pgd",
                "params": {
                    "snr_db": 10,
                    "targeted": "map",
                    "target_map": {"low": "mid", "mid": "high", "high": "low"},
                },
            },
        ),
    }


def test_craft_writes_a_complete_run(runs: dict, dataset_dir: Path) -> None:
    run = runs["pgd"]
    assert sorted(p.name for p in run.iterdir()) == [
        "adversarial.npy",
        "adversarial.npy.sha256",
        "attack.json",
        "attack.json.sha256",
        "examples.csv",
        "examples.csv.sha256",
        "listen",
        "matched_noise.npy",
        "matched_noise.npy.sha256",
    ]
    assert (run / "listen" / "panel.npz").exists() and (run / "listen" / "panel.npz.sha256").exists()
    ex = pd.read_csv(run / "examples.csv")
    assert list(ex.columns) == EXAMPLE_COLUMNS and len(ex) == 16
    adv = np.load(run / "adversarial.npy")
    assert adv.shape == (16, T) and adv.dtype == np.float32 and np.abs(adv).max() <= 1
    # row j of adversarial.npy is the clip of examples.csv row j, and its metrics are recomputable
    ds = load_dataset(dataset_dir)
    clean = ds.float_waveforms(ex["row"].to_numpy()).astype(np.float64)
    snr = 10 * np.log10((clean**2).sum(1) / ((adv - clean) ** 2).sum(1))
    assert np.allclose(snr, ex["snr_db"], atol=1e-3)
    assert (ex["snr_db"] >= 10 - 1e-3).all()
    assert (ds.manifest["split"].to_numpy()[ex["row"]] == "test").all()
    assert (ex["id"].to_numpy() == ds.manifest["id"].to_numpy()[ex["row"]]).all()
    # success only on clean-correct clips; untargeted: the target is -1
    assert not (ex["success"] & ~ex["clean_correct"]).any()
    assert (ex["success"] == (ex["clean_correct"] & (ex["adv_pred"] != ex["label"]))).all()
    assert (ex["target"] == -1).all() and ex["success"].any()
    meta = json.loads((run / "attack.json").read_text())
    assert meta["threat"] == "white_box" and meta["algorithm"] == "pgd" and meta["attack"] == "pgd"
    assert meta["n_clean_correct"] == int(ex["clean_correct"].sum())
    assert meta["params"]["budget"] == {"norm": "linf", "eps": None, "snr_db": 10.0, "envelope": 0.0}
    wavs = sorted(p.name for p in (run / "listen").glob("*.wav"))
    assert len(wavs) == 9 and all(
        w.endswith(("_clean.wav", "_adversarial.wav", "_perturbation_x10.wav")) for w in wavs
    )


def test_every_run_attacks_the_same_seeded_subset(runs: dict) -> None:
    rows = [pd.read_csv(run / "examples.csv")["row"].tolist() for run in runs.values()]
    assert all(r == rows[0] for r in rows)
    test_rows = np.arange(110, 150)
    small, large = evaluation_rows(test_rows, 10, 0), evaluation_rows(test_rows, 20, 0)
    assert set(small) <= set(large) and list(small) == sorted(small)
    assert not np.array_equal(evaluation_rows(test_rows, 10, 1), small)


def test_surrogate_run_is_scored_on_the_target(runs: dict) -> None:
    meta = json.loads((runs["surrogate"] / "attack.json").read_text())
    assert meta["threat"] == "surrogate" and meta["surrogate"] == "surrogate" and meta["model"] == "cnn"
    white = pd.read_csv(runs["pgd"] / "examples.csv")
    grey = pd.read_csv(runs["surrogate"] / "examples.csv")
    assert (white["clean_pred"] == grey["clean_pred"]).all()  # clean predictions: the target's


def test_universal_run_saves_its_perturbation(runs: dict) -> None:
    run = runs["universal"]
    v = np.load(run / "perturbation.npy")
    assert v.shape == (T,) and math.isclose(float(np.linalg.norm(v)), 1.0, rel_tol=1e-4)
    ex = pd.read_csv(run / "examples.csv")
    assert (ex["snr_db"] >= 5 - 1e-3).all() and (ex["iterations"] == 0).all()
    meta = json.loads((run / "attack.json").read_text())
    assert meta["fit"]["n_train"] == 90 and meta["fit"]["fit_steps"] > 0


def test_targeted_map_by_class_names(runs: dict) -> None:
    ex = pd.read_csv(runs["targeted"] / "examples.csv")
    assert (ex["target"] == (ex["label"] + 1) % 3).all()
    assert (ex["success"] == (ex["clean_correct"] & (ex["adv_pred"] == ex["target"]))).all()


@pytest.mark.parametrize(
    "spec,words",
    [
        ({"name": "teleport", "params": {}}, ["unknown attack", "teleport"]),
        ({"name": "pgd", "params": {"eps": -1}}, ["pgd", "eps"]),
        ({"name": "fgsm", "params": {"snr_db": "quiet"}}, ["fgsm", "snr_db"]),
        ({"name": "deepfool", "params": {"targeted": "random"}}, ["deepfool", "targeted"]),
    ],
)
def test_bad_specs_fail_before_any_work(spec: dict, words: list[str], dataset_dir, tmp_path: Path) -> None:
    out = tmp_path / "never"
    with pytest.raises(AttackParamError) as info:
        _craft(dataset_dir, tmp_path / "no-such-model.ckpt", out, spec)
    assert all(w in str(info.value) for w in words)
    assert not out.exists() and not any(tmp_path.iterdir())


def test_summarize_and_plot(runs: dict, tmp_path: Path) -> None:
    from advmir.plotting.attacks import main as plot_main

    table_path = tmp_path / "tables" / "attacks.csv"
    assert summarize(["--runs", *map(str, runs.values()), "--out", str(table_path)]) == 0
    table = pd.read_csv(table_path)
    assert len(table) == 4 and set(table["attack"]) == {"pgd", "pgd_surrogate", "universal", "pgd_map"}
    row = table.set_index("attack").loc["pgd"]
    ex = pd.read_csv(runs["pgd"] / "examples.csv")
    n_correct = ex["clean_correct"].sum()
    assert row["n_eval"] == 16 and row["n_clean_correct"] == n_correct
    assert math.isclose(row["success_rate"], ex["success"].sum() / n_correct)
    assert math.isclose(row["noise_success_rate"], ex["noise_success"].sum() / n_correct)
    assert row["n_noise_success"] == ex["noise_success"].sum()
    # every success rate beside its control, in rate units
    assert np.allclose(table["excess_over_noise"], table["success_rate"] - table["noise_success_rate"])
    for b in (30, 40):
        assert table[f"success_rate_snr{b}"].between(0, 1).all()
        assert (table[f"success_rate_snr{b}"] <= table["success_rate"] + 1e-12).all()
        assert (table[f"noise_success_rate_snr{b}"] <= table["noise_success_rate"] + 1e-12).all()
    fooled_above_30 = ex["success"] & (ex["snr_db"] >= 30 - 0.05)
    assert math.isclose(row["success_rate_snr30"], fooled_above_30.sum() / n_correct)
    assert row["budget_snr_db"] == 10 and row["norm"] == "linf" and row["threat"] == "white_box"
    figs = {k: [str(tmp_path / f"{k}.png"), str(tmp_path / f"{k}.pdf")] for k in ("succ", "dist", "spec")}
    argv = ["--table", str(table_path), "--runs", *map(str, runs.values()), "--panel", str(runs["pgd"]),
            "--success-vs-snr", *figs["succ"], "--snr-distribution", *figs["dist"],
            "--spectrograms", *figs["spec"]]  # fmt: skip
    assert plot_main(argv) == 0
    for paths in figs.values():
        assert all(Path(p).stat().st_size > 1000 for p in paths)


def _clean_clips(dataset_dir: Path, ex: pd.DataFrame) -> np.ndarray:
    return load_dataset(dataset_dir).float_waveforms(ex["row"].to_numpy()).astype(np.float64)


@pytest.mark.parametrize("run", ["pgd", "surrogate", "universal", "targeted"])
def test_matched_noise_is_stored_and_scored_like_the_examples(
    run: str, runs: dict, dataset_dir: Path, checkpoints: dict[str, Path]
) -> None:
    from advmir.models.zoo import load_model

    ex = pd.read_csv(runs[run] / "examples.csv")
    noise = np.load(runs[run] / "matched_noise.npy")
    adv = np.load(runs[run] / "adversarial.npy")
    assert noise.shape == adv.shape == (16, T) and noise.dtype == np.float32 and np.abs(noise).max() <= 1
    clean = _clean_clips(dataset_dir, ex)
    # row j is the control of adversarial row j: the same SNR unless clipping took some noise away
    snr = 10 * np.log10((clean**2).sum(1) / ((noise - clean) ** 2).sum(1))
    assert np.allclose(snr, ex["noise_snr_db"], atol=1e-3)
    clipped = (np.abs(noise) >= 1 - 1e-6).any(axis=1)
    assert (np.abs(ex["noise_snr_db"] - ex["snr_db"])[~clipped] < 0.1).all() and (~clipped).sum() >= 12
    assert (ex["noise_snr_db"][clipped] >= ex["snr_db"][clipped] - 0.1).all()
    assert not np.allclose(noise - clean, adv - clean, atol=1e-4)  # noise, not the perturbation
    # scored on the target model (also for the surrogate threat), by the attack's own success rule
    target = load_model(checkpoints["cnn"], torch.device("cpu"))
    with torch.no_grad():
        pred = target(torch.from_numpy(noise)).argmax(1).numpy()
    assert (pred == ex["noise_pred"]).all()
    targeted = ex["target"] >= 0
    fooled = np.where(targeted, ex["noise_pred"] == ex["target"], ex["noise_pred"] != ex["label"])
    assert (ex["noise_success"] == (ex["clean_correct"] & fooled)).all()
    assert targeted.all() if run == "targeted" else not targeted.any()


def test_matched_noise_is_the_same_for_every_attack_of_a_seed(runs: dict, dataset_dir: Path) -> None:
    """One noise direction per (seed, clip): attacks differ only in how loud their control is."""
    ex = pd.read_csv(runs["pgd"] / "examples.csv")
    clean = _clean_clips(dataset_dir, ex)
    a = np.load(runs["pgd"] / "matched_noise.npy") - clean
    b = np.load(runs["universal"] / "matched_noise.npy") - clean
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert (cosine > 0.95).mean() >= 0.75  # clipping aside, the same direction


def test_success_rates_count_thresholds_with_a_tolerance() -> None:
    ex = pd.DataFrame({
        "clean_correct": [True, True, True, True, True, False],
        "success":       [True, True, True, False, True, False],
        "snr_db":        [29.96, 29.9, 41.0, 50.0, 35.0, 60.0],
        "noise_success": [False, True, True, True, False, True],
        "noise_snr_db":  [29.96, 29.9, 41.0, 50.0, 35.0, np.inf],
    })  # fmt: skip
    rates = success_rates(ex)
    assert rates["success_rate"] == 4 / 5 and rates["noise_success_rate"] == 3 / 5
    assert math.isclose(rates["excess_over_noise"], 1 / 5)
    assert rates["success_rate_snr30"] == 3 / 5  # 29.96 counts (0.05 dB tolerance), 29.9 does not
    assert rates["success_rate_snr40"] == 1 / 5
    assert rates["noise_success_rate_snr30"] == 2 / 5 and rates["noise_success_rate_snr40"] == 2 / 5
    assert math.isnan(success_rates(ex.assign(clean_correct=False))["noise_success_rate"])
    with pytest.raises(ValueError, match="re-run"):
        success_rates(ex.drop(columns=["noise_success"]))


def test_attacks_table_holds_no_wall_clock_time(tmp_path: Path) -> None:
    """Two runs of one config that differ only in how long they took give byte-identical tables
    (the times stay in attack.json and examples.csv)."""
    tables = []
    for seconds in (1.5, 99.0):
        run = tmp_path / f"took{seconds:g}" / "pgd"
        run.mkdir(parents=True)
        meta = {"dataset": "tones", "model": "cnn", "attack": "pgd", "algorithm": "pgd",
                "threat": "white_box", "params": {"norm": "linf", "budget": {"snr_db": 30}},
                "eval_size": 2, "seed": 0, "seconds": seconds}  # fmt: skip
        (run / "attack.json").write_text(json.dumps(meta))
        examples = pd.DataFrame({"clean_correct": [True, True], "success": [True, False],
                                 "snr_db": [31.0, 35.0], "noise_snr_db": [31.0, 35.0],
                                 "noise_success": [False, False], "iterations": [3, 5],
                                 "queries": [0, 0], "seconds": [seconds / 2] * 2})  # fmt: skip
        examples.to_csv(run / "examples.csv", index=False)
        assert summarize(["--runs", str(run), "--out", str(run.parent / "attacks.csv")]) == 0
        tables.append((run.parent / "attacks.csv").read_bytes())
        assert len(summarize_runs([run, run])) == 1  # a run named twice counts once
    assert tables[0] == tables[1]
    assert "seconds" not in tables[0].decode().splitlines()[0]


# ------------------------------------------------------------------------- the library behind craft
def test_write_craft_is_the_command_without_its_options(runs: dict, dataset_dir: Path, checkpoints, tmp_path):
    """plan_craft + write_craft on the pgd run's settings write the same run as the command."""
    from advmir.runtime import seed_everything

    seed_everything(0)
    spec = parse_attack_spec(json.dumps({"name": "pgd", "params": {"snr_db": 10}}))
    job = plan_craft(
        dataset_dir, str(checkpoints["cnn"]), spec, eval_size=16, seed=0, device="cpu", batch_size=8
    )
    assert job.threat == "white_box" and job.attack.model is job.target_model and len(job.rows) == 16
    meta = write_craft(job, tmp_path / "pgd", "pgd")
    cli_run = runs["pgd"]
    for name in ("adversarial.npy", "matched_noise.npy", "listen/panel.npz"):
        assert (tmp_path / "pgd" / name).read_bytes() == (cli_run / name).read_bytes(), name
    ours, theirs = (
        pd.read_csv(d / "examples.csv").drop(columns="seconds") for d in (tmp_path / "pgd", cli_run)
    )
    pd.testing.assert_frame_equal(ours, theirs)
    cli_meta = json.loads((cli_run / "attack.json").read_text())
    varying = {"seconds", "checkpoint"}
    assert {k: v for k, v in meta.items() if k not in varying} == {
        k: v for k, v in cli_meta.items() if k not in varying
    }


def test_plan_craft_refuses_known_bad_inputs(dataset_dir: Path, checkpoints, tmp_path: Path) -> None:
    spec = {"name": "fgsm", "params": {"snr_db": 20}}
    with pytest.raises(AttackSpecError, match="--eval-size must be >= 1"):
        plan_craft(dataset_dir, str(checkpoints["cnn"]), spec, eval_size=0)
    other = load_dataset(dataset_dir)
    renamed = write_dataset(tmp_path / "renamed", other.float_waveforms(np.arange(150)),
                            other.manifest.assign(label=lambda f: f["label"] + "_x"),
                            [c + "_x" for c in CLASSES], SR)  # fmt: skip
    with pytest.raises(AttackSpecError, match="the target model was trained on classes"):
        plan_craft(renamed, str(checkpoints["cnn"]), spec, eval_size=4)
    for text, words in (
        ("{", "not valid JSON"),
        ('{"params": {}}', '"name"'),
        ('{"name": "pgd", "x": 1}', "x"),
    ):
        with pytest.raises(AttackSpecError, match=words):
            parse_attack_spec(text)
    with pytest.raises(AttackSpecError, match="'violet'"):
        resolve_target_map({"target_map": {"low": "violet"}}, CLASSES)
    assert resolve_target_map({"target_map": {"low": "high", "1": 0}}, CLASSES)["target_map"] == {0: 2, 1: 0}


def test_write_listen_puts_successes_first(tmp_path: Path) -> None:
    import soundfile as sf

    frame = pd.DataFrame({"id": ["a/b", "c", "d"], "success": [False, True, False]})
    clean = {j: np.full(64, 0.1 * (j + 1), np.float32) for j in range(3)}
    written = write_listen(tmp_path / "listen", frame, lambda j: clean[j] + 0.01, clean.__getitem__, SR, 2)
    assert written == ["c", "a_b"]  # the success first; a path separator never reaches a file name
    panel = np.load(tmp_path / "listen" / "panel.npz")
    assert panel["ids"].tolist() == written and panel["clean"].shape == panel["adversarial"].shape == (2, 64)
    perturbation, rate = sf.read(tmp_path / "listen" / "c_perturbation_x10.wav")
    assert rate == SR and np.allclose(perturbation, 0.1, atol=1e-6)
    assert write_listen(tmp_path / "none", frame, clean.__getitem__, clean.__getitem__, SR, 0) == []
    assert not (tmp_path / "none").exists()


def test_known_bad_input_is_one_line_and_exit_2(dataset_dir: Path, tmp_path: Path, capsys) -> None:
    argv = ["craft-adversarial", "--dataset-dir", str(dataset_dir), "--checkpoint", str(tmp_path / "x.ckpt"),
            "--attack-spec", json.dumps({"name": "pgd", "params": {"eps": -1}}), "--eval-size", "4",
            "--out-dir", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("advmir craft-adversarial: error: pgd") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
