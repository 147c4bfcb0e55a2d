"""The whole workflow on a tiny config, in a temporary folder, through Snakemake."""

import copy
import difflib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ENSEMBLE, run_snakemake, snakemake_command, tiny_config, zoo_models

pytestmark = pytest.mark.slow


@pytest.fixture
def finished_run(tiny_workflow):
    return tiny_workflow


def test_artifacts(finished_run):
    work, config = finished_run
    results = work / "results"
    table = pd.read_csv(results / "tables/clean_accuracy.csv")
    assert set(table["model"]) == set(zoo_models(config))
    assert table["test_accuracy"].between(0, 1).all()
    assert (table["test_accuracy"] > 0.5).all(), table
    for model in config["models"]:
        folder = results / "models/synth_notes" / model
        metrics = json.loads((folder / "metrics.json").read_text())
        assert np.asarray(metrics["confusion"]).shape == (3, 3)
        # a model of your own is imported and an ensemble assembled, neither trained: no epochs
        trained = not {"source", "members"} & set(config["models"][model])
        assert len(pd.read_csv(folder / "history.csv")) >= (1 if trained else 0)
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
    assert set(general["split"]) == {"notes", "soundfont"}
    # the augmentation defense of logmel_cnn is trained on the splits beside it, the fast_at one not
    assert set(general["model"]) == {"logmel_cnn", "logmel_cnn_adv_aug", ENSEMBLE}
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


def test_defenses_tables(finished_run):
    """The defended model is trained as a zoo model (in adversarial mode) and evaluated beside its
    undefended twin; the tables hold the columns the issue names."""
    work, config = finished_run
    results = work / "results"
    metrics = json.loads((results / "models/synth_notes/logmel_cnn_fast_at/metrics.json").read_text())
    assert metrics["adversarial"]["mode"] == "fast_at" and metrics["adversarial"]["guard"]["guard_clips"] > 0
    table = pd.read_csv(results / "tables/defenses.csv")
    columns = ["model", "defense", "budget_db", "attack", "restarts", "steps", "clean_accuracy",
               "robust_accuracy", "n", "train_epochs", "train_cost"]  # fmt: skip
    assert set(columns) <= set(table.columns), table.columns
    assert set(table["model"]) == {"logmel_cnn", "logmel_cnn_fast_at"}
    assert set(table["defense"]) == {"none", "fast_at"} and set(table["base_model"]) == {"logmel_cnn"}
    assert set(table["attack"]) == set(config["defenses"]["evaluation"]["ensemble"])
    assert set(table["budget_db"]) == {40.0, 20.0}
    assert (table["n"] == config["attack_settings"]["eval_size"]).all()
    assert (table["robust_accuracy"] <= table["clean_accuracy"] + 1e-9).all()
    for _, rows in table.groupby("model", sort=False):
        assert (np.diff(rows["robust_accuracy"].to_numpy()) <= 1e-9).all(), rows  # quiet budget first
    defended = table[table["model"] == "logmel_cnn_fast_at"]
    assert (defended["train_cost"] == 2 * defended["train_epochs"]).all()  # FGSM: one step per batch
    sanity = pd.read_csv(results / "tables/defense_sanity.csv")
    assert {"model", "check", "value", "threshold", "passed"} <= set(sanity.columns)
    checks = sanity.groupby("model")["check"].agg(set)
    assert "transfer_not_better" in checks["logmel_cnn_fast_at"]
    assert "transfer_not_better" not in checks["logmel_cnn"]
    assert sanity["passed"].isin([True, False]).all()
    assert (results / "figures/defense_robustness.png").stat().st_size > 10_000


def test_augmentation_table(finished_run):
    """The augmented model (adv_aug) beside its base model in defense_augmentation.csv: the test
    split always, and every split mode and codec condition on which both were scored."""
    work, _ = finished_run
    results = work / "results"
    aug, base = "logmel_cnn_adv_aug", "logmel_cnn"
    metrics = {
        m: json.loads((results / f"models/synth_notes/{m}/metrics.json").read_text()) for m in (aug, base)
    }
    assert metrics[aug]["adversarial"]["mode"] == "adv_aug" and metrics[aug]["adversarial"]["separate_bn"]
    # fine-tuned from its twin (init: twin): on the default split and on each split, that split's twin
    assert metrics[aug]["init_from"] == base and "init_from" not in metrics[base]
    logs = [results / f"logs/models/synth_notes/{aug}.log", *results.glob(f"logs/generalisation/*/{aug}.log")]
    starts = {
        log.parent.name: log.read_text().split("starting from logmel_cnn's weights (")[1].split(")")[0]
        for log in logs
    }
    assert starts.pop("synth_notes") == str(results / f"models/synth_notes/{base}/model.ckpt")
    assert starts and all(f"/{split}/models/{base}/model.ckpt" in path for split, path in starts.items())
    table = pd.read_csv(results / "tables/defense_augmentation.csv")
    assert set(table["model"]) == {aug} and set(table["base_model"]) == {base}
    clean = table.set_index("condition").loc["clean"]
    assert clean["accuracy"] == round(metrics[aug]["test_accuracy"], 4)
    assert clean["accuracy_base"] == round(metrics[base]["test_accuracy"], 4)
    assert clean["n"] == metrics[aug]["n_test"] and clean["defense"] == "adv_aug"
    assert clean["train_cost"] == 3 * clean["train_epochs"]  # one FGSM step, the adversarial and clean update
    assert np.allclose(table["change_points"], 100 * (table["accuracy"] - table["accuracy_base"]), atol=0.011)
    general = pd.read_csv(results / "tables/generalisation.csv")
    splits = {f"split:{s}" for s in general.loc[general["model"] == aug, "split"] if s != "notes"}
    codecs = pd.read_csv(results / "tables/codec_clean_accuracy.csv")
    scored = set(codecs.loc[codecs["target_model"] == aug, "condition"])
    assert set(table["condition"]) == {"clean"} | splits | scored
    assert (results / "figures/defense_augmentation.png").stat().st_size > 10_000


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


def table_files(results: Path) -> dict[str, bytes]:
    """Every file under ``results/tables`` (relative name -> bytes)."""
    folder = results / "tables"
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_same_tables(results: Path, reference: Path, expected: Iterable[str] | None = None) -> None:
    """Every table of ``results`` is byte-identical to the reference's of the same name, and the
    ``expected`` ones (default: all of the reference's) are there; a difference shows its first lines."""
    got, want = table_files(results), table_files(reference)
    missing = sorted(set(want if expected is None else expected) - set(got))
    assert not missing, f"tables missing from {results}: {missing}"
    assert set(got) <= set(want), f"tables the reference run has not: {sorted(set(got) - set(want))}"
    differ = [name for name in got if got[name] != want[name]]
    if differ:
        first = differ[0]
        diff = difflib.unified_diff(
            want[first].decode(errors="replace").splitlines(),
            got[first].decode(errors="replace").splitlines(),
            "reference",
            "this run",
            lineterm="",
            n=0,
        )
        raise AssertionError(
            f"tables differ from the reference run: {differ}; {first}:\n" + "\n".join(list(diff)[:12])
        )


def test_a_second_fresh_run_gives_byte_identical_tables(tiny_workflow, tmp_path):
    """The tiny config run again from nothing, in another folder: every file under results/tables
    is byte for byte the session's run's (no wall-clock column, no path, no unseeded draw)."""
    reference, config = tiny_workflow
    config = copy.deepcopy(config)
    config["results"] = str(tmp_path / "results")
    run_snakemake(tmp_path, config, "--cores", "2")
    assert len(table_files(tmp_path / "results")) >= 12
    assert_same_tables(tmp_path / "results", reference / "results")
    # the figures (no creation date, seeded jitter) and the checkpoints (no temporary name) too
    built = sorted((reference / "results").glob("figures/**/*.pdf")) + sorted(
        (reference / "results").glob("models/**/model.ckpt")
    )
    assert len(built) >= 4
    differ = [
        str(p.relative_to(reference))
        for p in built
        if p.read_bytes() != (tmp_path / p.relative_to(reference)).read_bytes()
    ]
    assert not differ, f"not byte-identical between two fresh runs: {differ}"


@dataclass(frozen=True)
class KillPoint:
    """Where a run is killed: while a job of one stage works.

    Args:
        commands: the stage's commands (``python -m advmir COMMAND``); a job of one of them must be
            running at the kill.
        logs: glob (under results/logs) of the logs of the stage's jobs.
        under_way: text a job writes to its log once it works on its data ("": the log exists).
        seed: folders of results/ copied first from the uninterrupted run (mtimes kept), so that only
            the stage and what follows it run here (what precedes it is not what is tested).
        tables: the tables the killed run is asked for (the stage's and those that follow from it).
    """

    commands: tuple[str, ...]
    logs: str
    under_way: str
    seed: tuple[str, ...]
    tables: tuple[str, ...]


TRANSFER_TABLES = (
    "codec_clean_accuracy.csv",
    "transfer.csv",
    "transfer_matrix.csv",
    "transfer_rates.csv",
    "transfer_representation.csv",
)
KILL_POINTS = {
    # mid-training: Lightning's epoch bar is in the log, no checkpoint written yet
    "training": KillPoint(
        ("train-model",), "models/synth_notes/*.log", "Epoch", (), ("clean_accuracy.csv", "confusion.csv")
    ),
    # the model loaded and the clips read: crafting under way
    "attack": KillPoint(
        ("craft-adversarial",),
        "attacks/synth_notes/*/*.log",
        "clips of synth_notes",
        ("data", "augment", "models"),
        ("attacks.csv",),
    ),
    # a codec or room job started (each is a few seconds; the log is opened when it starts): one per
    # source through every setting (codecs.jobs: source, the default) or one per (source, setting)
    "codec": KillPoint(
        ("transform-source", "encode-with-codec", "simulate-room"),
        "codecs/synth_notes/**/*.log",
        "",
        ("data", "augment", "models", "attacks"),
        ("benign_accuracy.csv", *TRANSFER_TABLES),
    ),
}


def stage_processes(session: int, commands: tuple[str, ...]) -> list[int]:
    """PIDs of ``python -m advmir COMMAND`` processes (COMMAND one of ``commands``) in process group
    ``session``."""
    names = {command.encode() for command in commands}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            if os.getpgid(int(entry.name)) != session:
                continue
        except (OSError, ProcessLookupError):
            continue
        if any(a == b"advmir" and b in names for a, b in itertools.pairwise(args)):
            found.append(int(entry.name))
    return found


def kill_while_stage_runs(proc: subprocess.Popen, logs: Path, point: KillPoint, timeout: float = 240) -> None:
    """SIGKILL Snakemake and all its jobs (its process group) once a job of the stage is under way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        started = [log for log in logs.glob(point.logs) if point.under_way in log.read_text(errors="replace")]
        if started and any(
            Path(f"/proc/{pid}").exists() for pid in stage_processes(proc.pid, point.commands)
        ):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
        time.sleep(0.02)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(
            f"the run ended or timed out before a `{' / '.join(point.commands)}` job could be interrupted"
        )
    deadline = time.monotonic() + 30  # the killed jobs are gone before anything reruns
    while stage_processes(proc.pid, point.commands) and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.parametrize("stage", list(KILL_POINTS))
def test_sigkill_then_rerun_gives_byte_identical_tables(tiny_workflow, tmp_path, stage):
    """Kill Snakemake and its jobs (SIGKILL) while a job of ``stage`` works; unlock and rerun as
    `make run` does (--rerun-incomplete): the run completes and its tables are byte-identical to
    the uninterrupted run's (the session's). The stages before ``stage`` are copied from that run,
    so each case runs only its stage and what follows it."""
    reference, config = tiny_workflow
    point = KILL_POINTS[stage]
    work = tmp_path / "killed"
    results = work / "results"
    config = copy.deepcopy(config)
    config["results"] = str(results)
    for folder in point.seed:
        shutil.copytree(reference / "results" / folder, results / folder)
    targets = [f"{config['results']}/tables/{name}" for name in point.tables]
    cmd, env = snakemake_command(work, config, "--cores", "2", *targets)
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    kill_while_stage_runs(proc, results / "logs", point)
    assert not all((results / "tables" / name).exists() for name in point.tables)
    if stage == "training":
        assert len(list((results / "models/synth_notes").glob("*/model.ckpt"))) < len(zoo_models(config))
    # a killed job's hidden temporary (the atomic write it had begun) may stay: nothing reads it
    left_by_kill = set(results.rglob("*.tmp"))
    assert all(path.name.startswith(".") for path in left_by_kill), left_by_kill

    run_snakemake(work, config, "--unlock")
    run_snakemake(work, config, "--cores", "2", "--rerun-incomplete", *targets)
    assert_same_tables(results, reference / "results", point.tables)
    if stage == "training":
        for model in config["models"]:
            a = json.loads((results / f"models/synth_notes/{model}/metrics.json").read_text())
            b = json.loads((reference / f"results/models/synth_notes/{model}/metrics.json").read_text())
            assert a["confusion"] == b["confusion"], model
    assert set(results.rglob("*.tmp")) <= left_by_kill, "the rerun left temporary files of its own"


def test_own_model_through_every_stage(finished_run):
    """The TorchScript model at 22.05 kHz with 2-s input (tests/conftest.py: own_model_entry) is
    imported, attacked through the resampler with its noise control, passed through the codecs and
    scored for transfer as source and as target, like every zoo model."""
    from conftest import OWN_MODEL

    work, _ = finished_run
    results = work / "results"
    metrics = json.loads((results / f"models/synth_notes/{OWN_MODEL}/metrics.json").read_text())
    assert metrics["external"]["unmatched_classes"] == ["organ"]
    assert metrics["external"]["unmatched_labels"] == []
    assert all(check["ok"] for check in metrics["external"]["contract"])
    accuracy = pd.read_csv(results / "tables/clean_accuracy.csv").set_index("model")
    assert accuracy.loc[OWN_MODEL, "frontend"] == "external"
    assert accuracy.loc[OWN_MODEL, "test_accuracy"] > 0.5
    attacks = pd.read_csv(results / "tables/attacks.csv")
    pgd = attacks[(attacks["model"] == OWN_MODEL) & (attacks["attack"] == "pgd")]
    assert len(pgd) == 1 and pgd["n_clean_correct"].iloc[0] > 0
    row = pgd.iloc[0]
    assert 0 <= row["noise_success_rate"] <= 1 and row["success_rate"] > row["noise_success_rate"], row
    transfer = pd.read_csv(results / "tables/transfer.csv")
    assert {OWN_MODEL} <= set(transfer["source_model"]) and {OWN_MODEL} <= set(transfer["target_model"])
    crossed = transfer[(transfer["source_model"] == OWN_MODEL) & (transfer["target_model"] != OWN_MODEL)]
    assert len(crossed) and set(crossed["condition"]) >= {"none", "mp3_32k"}
    codecs = pd.read_csv(results / "tables/codec_clean_accuracy.csv")
    assert set(codecs.loc[codecs["target_model"] == OWN_MODEL, "condition"]) >= {"none", "flac", "mp3_32k"}


def test_ensemble_through_every_stage(finished_run):
    """The ensemble of logmel_cnn and wave_cnn is assembled (not trained) on the default split and on
    the generalisation split from its members trained there, scores the mean of their softmax, and is
    attacked with its noise control and scored for transfer like every zoo model."""
    import torch

    from advmir.datasets.contract import load_dataset
    from advmir.models.zoo import load_model

    work, _ = finished_run
    results = work / "results"
    for root in (results / "models/synth_notes", results / "generalisation/synth_notes/soundfont/models"):
        data = root.parent / "data" if "generalisation" in str(root) else results / "data/synth_notes"
        metrics = json.loads((root / ENSEMBLE / "metrics.json").read_text())
        assert list(metrics["members"]) == ["logmel_cnn", "wave_cnn"]
        dataset = load_dataset(data, mmap=False)
        rows = dataset.split_indices("test")
        x = torch.from_numpy(dataset.float_waveforms(rows))
        with torch.no_grad():
            mean = sum(load_model(root / m / "model.ckpt")(x).softmax(-1) for m in metrics["members"]) / 2
        labels = dataset.manifest["label_idx"].to_numpy()[rows]
        assert metrics["test_accuracy"] == pytest.approx(float((mean.argmax(1).numpy() == labels).mean()))
    accuracy = pd.read_csv(results / "tables/clean_accuracy.csv").set_index("model")
    assert accuracy.loc[ENSEMBLE, ["frontend", "arch"]].tolist() == ["mixed", "ensemble"]
    attacks = pd.read_csv(results / "tables/attacks.csv")
    pgd = attacks[(attacks["model"] == ENSEMBLE) & (attacks["attack"] == "pgd")].iloc[0]
    assert pgd["n_clean_correct"] > 0 and pgd["success_rate"] > pgd["noise_success_rate"], pgd
    transfer = pd.read_csv(results / "tables/transfer.csv")
    assert {ENSEMBLE} <= set(transfer["source_model"]) and {ENSEMBLE} <= set(transfer["target_model"])


def test_a_model_of_your_own_that_cannot_load_stops_before_any_job(tmp_path):
    """A `.pt` that is not TorchScript, and a factory that returns no module: refused at the DAG,
    each naming the model and the problem, nothing written."""
    config = tiny_config(tmp_path / "results")
    (tmp_path / "weights.pt").write_bytes(b"not a zip archive")
    config["models"]["broken_ts"] = {
        "source": "torchscript", "path": str(tmp_path / "weights.pt"), "sample_rate": 16000,
        "classes": ["bass"],
    }  # fmt: skip
    config["models"]["broken_py"] = {
        "source": "python", "factory": "collections:OrderedDict", "sample_rate": 16000, "classes": ["bass"],
    }  # fmt: skip
    proc = run_snakemake(tmp_path, config, "--cores", "1", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "models.broken_ts" in out and "not a TorchScript model" in out, out[-2000:]
    assert "models.broken_py" in out and "not a torch.nn.Module" in out, out[-2000:]
    assert not (tmp_path / "results").exists()
