"""Damaged intermediates: digests written beside artifacts, checks when a stage reads them, and
`python -m advmir verify-results` over a results folder. Tiny synthetic results, built in each test
with the stages' own writers (no workflow run)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from advmir import cli, verify
from advmir.artifacts import ArtifactError, load_torch, open_npy, read_csv, read_json, sidecar
from advmir.datasets.contract import load_dataset, write_dataset
from advmir.io import atomic_path, write_csv, write_json
from advmir.models.zoo import load_checkpoint, save_checkpoint
from advmir.transfer.sources import load_source

N, T, CLASSES = 6, 400, ["low", "high"]
EVAL_ROWS = [3, 4, 5]


def build_results(root: Path) -> dict[str, Path]:
    """A results folder with one output of each stage, written the way the stages write them."""
    t = np.arange(T) / 16000
    waves = np.stack([0.5 * np.sin(2 * np.pi * (200 + 100 * i) * t) for i in range(N)]).astype(np.float32)
    manifest = pd.DataFrame(
        {
            "id": [f"c{i}" for i in range(N)],
            "split": ["train", "train", "valid", "test", "test", "test"],
            "label": [CLASSES[i % 2] for i in range(N)],
            "label_idx": [i % 2 for i in range(N)],
        }
    )
    data = write_dataset(root / "data" / "tones", waves, manifest, CLASSES, 16000)

    model = torch.nn.Linear(64, 2)
    torch.nn.init.ones_(model.weight)
    model.spec = {"frontend": "waveform", "arch": "cnn1d", "n_classes": 2, "sample_rate": 16000}
    with atomic_path(root / "models" / "tones" / "cnn") as tmp:
        tmp.mkdir()
        save_checkpoint(tmp / "model.ckpt", model, CLASSES, seed=0)
        write_json(tmp / "metrics.json", {"classes": CLASSES, "test_accuracy": 1.0})
        write_csv(tmp / "history.csv", pd.DataFrame({"epoch": [0], "val_acc": [1.0]}))

    clean = waves[EVAL_ROWS]
    examples = pd.DataFrame({"id": [f"c{r}" for r in EVAL_ROWS], "row": EVAL_ROWS, "success": True})
    run = root / "attacks" / "tones" / "cnn" / "pgd"
    with atomic_path(run) as tmp:
        tmp.mkdir()
        np.save(tmp / "adversarial.npy", clean * 0.9)
        np.save(tmp / "matched_noise.npy", clean * 0.8)
        examples.to_csv(tmp / "examples.csv", index=False)
        meta = {"model": "cnn", "attack": "pgd", "threat": "white_box", "surrogate": None}
        (tmp / "attack.json").write_text(json.dumps(meta))

    codec = root / "codecs" / "tones" / "cnn" / "pgd" / "mp3"
    with atomic_path(codec) as tmp:
        tmp.mkdir()
        np.save(tmp / "decoded.npy", clean * 0.7)
        np.save(tmp / "decoded_noise.npy", clean * 0.6)
        examples[["id"]].assign(kbps=32.0).to_csv(tmp / "bitrates.csv", index=False)
        setting = {"kind": "codec", "n_clips": 3, "clip_samples": T, "noise_control": True}
        (tmp / "setting.json").write_text(json.dumps(setting))

    predictions = examples[["id"]].assign(source_model="cnn", target_model="cnn", pred=0)
    write_csv(root / "transfer" / "tones" / "pgd" / "mp3.csv", predictions)
    write_csv(root / "tables" / "clean_accuracy.csv", pd.DataFrame({"dataset": ["tones"], "model": ["cnn"]}))
    return {
        "data": data,
        "waveforms": data / "waveforms.npy",
        "model.ckpt": root / "models" / "tones" / "cnn" / "model.ckpt",
        "examples": run / "examples.csv",
        "adversarial.npy": run / "adversarial.npy",
        "matched_noise": run / "matched_noise.npy",
        "decoded.npy": codec / "decoded.npy",
        "decoded_noise": codec / "decoded_noise.npy",
    }


@pytest.fixture
def results(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    root = tmp_path / "results"
    return root, build_results(root)


# ------------------------------------------------------------------------------------------ damage
def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def delete(path: Path) -> None:
    path.unlink()


def garble(path: Path) -> None:
    """Change 64 bytes in place, to other finite values: size and structure stay as they were."""
    data = bytearray(path.read_bytes())
    ones = np.ones(16, np.float32).tobytes()
    at = data.find(ones) if path.suffix == ".ckpt" else len(data) - 64
    assert at >= 0
    data[at : at + 64] = np.full(16, 0.25, np.float32).tobytes()
    path.write_bytes(bytes(data))


def read_as_a_stage(kind: str, files: dict[str, Path]) -> None:
    """Read the artifact ``kind`` with the function its stage reads it with."""
    if kind == "waveforms":
        load_dataset(files["data"])
    elif kind == "model.ckpt":
        load_checkpoint(files["model.ckpt"])
    elif kind == "adversarial.npy":
        load_source(files["data"], files["examples"], files["adversarial.npy"], None, files["matched_noise"])
    else:
        load_source(files["data"], files["examples"], files["decoded.npy"], None, files["decoded_noise"])


KINDS = ["waveforms", "model.ckpt", "adversarial.npy", "decoded.npy"]
DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncate": (truncate, r"truncated|not a readable checkpoint|differs from the digest"),
    "delete": (delete, r"is missing"),
    "garble": (garble, r"differs from the digest|not a readable checkpoint"),
}


# ------------------------------------------------------------------------------------------- tests
def test_atomic_writes_put_a_sha256sum_digest_beside_each_artifact(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    write_csv(table, pd.DataFrame({"a": [1, 2]}))
    digest = hashlib.sha256(table.read_bytes()).hexdigest()
    assert sidecar(table).read_text() == f"{digest}  t.csv\n"  # `sha256sum -c t.csv.sha256` format
    write_csv(table, pd.DataFrame({"a": [3]}))  # a rewrite replaces the digest with the file
    assert sidecar(table).read_text().split()[0] == hashlib.sha256(table.read_bytes()).hexdigest()
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "u.json") as tmp:
        tmp.write_text("{}")
        raise RuntimeError("boom")
    with atomic_path(tmp_path / "folder") as tmp:
        tmp.mkdir()
        np.save(tmp / "x.npy", np.zeros((2, 3), np.float32))
        (tmp / "notes.txt").write_text("not an artifact")
    names = sorted(p.name for p in tmp_path.rglob("*"))
    assert names == ["folder", "notes.txt", "t.csv", "t.csv.sha256", "x.npy", "x.npy.sha256"]


def test_digests_stay_consistent_through_failed_and_repeated_jobs(tmp_path: Path) -> None:
    """A failed write leaves file and digest as they were; a file Snakemake removed before re-running
    its job (the digest stays behind) gets a new digest with its new content; a folder output is
    replaced whole, digests included."""
    table = tmp_path / "t.csv"
    write_csv(table, pd.DataFrame({"a": [1]}))
    before = sidecar(table).read_text()
    with pytest.raises(RuntimeError), atomic_path(table) as tmp:
        tmp.write_text("a\n2\n")
        raise RuntimeError("the job failed")
    assert sidecar(table).read_text() == before and read_csv(table)["a"].tolist() == [1]
    table.unlink()
    write_csv(table, pd.DataFrame({"a": [5, 6]}))
    assert read_csv(table)["a"].tolist() == [5, 6]
    folder = tmp_path / "run"
    for name in ("old.json", "new.json"):
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            (tmp / name).write_text("{}")
    assert sorted(p.name for p in folder.iterdir()) == ["new.json", "new.json.sha256"]
    assert not list(tmp_path.rglob("*.tmp"))


def test_clean_artifacts_pass(results: tuple[Path, dict[str, Path]], capsys: pytest.CaptureFixture) -> None:
    root, files = results
    for kind in KINDS:
        read_as_a_stage(kind, files)
    assert verify.main([str(root)]) == 0
    out = capsys.readouterr().out
    assert "intact" in out and "0 written without a digest" in out


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("kind", KINDS)
def test_damage_is_one_line_naming_the_file_and_its_rebuild_command(
    results: tuple[Path, dict[str, Path]], kind: str, damage: str, capsys: pytest.CaptureFixture
) -> None:
    root, files = results
    path = files[kind]
    harm, problem = DAMAGE[damage]
    read_as_a_stage(kind, files)  # read whole once: this process must not trust that read later
    harm(path)
    rebuild = f"rebuild it with: snakemake --cores all --forcerun {path}"
    with pytest.raises(ArtifactError, match=problem) as caught:
        read_as_a_stage(kind, files)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and message.endswith(rebuild)

    assert verify.main([str(root)]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"{path}: ")]
    assert len(lines) == 1 and lines[0].endswith(rebuild)


def test_a_stage_command_fails_with_one_line(
    results: tuple[Path, dict[str, Path]], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The truncated checkpoint of an attack job: one line on stderr, no traceback, exit status 2."""
    _, files = results
    truncate(files["model.ckpt"])
    argv = ["craft-adversarial", "--dataset-dir", str(files["data"])]
    argv += ["--checkpoint", str(files["model.ckpt"])]
    argv += ["--attack-spec", '{"name": "fgsm", "params": {"snr_db": 30}}', "--eval-size", "2"]
    argv += ["--device", "cpu", "--out-dir", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert str(files["model.ckpt"]) in err[0] and f"--forcerun {files['model.ckpt']}" in err[0]
    assert not (tmp_path / "out").exists()


def test_a_damaged_dataset_ends_a_job_without_a_traceback(results: tuple[Path, dict[str, Path]]) -> None:
    _, files = results
    garble(files["waveforms"])
    out = files["data"].parent / "corrupted"
    proc = subprocess.run(
        [sys.executable, "-m", "advmir", "corrupt-split", "--dataset", str(files["data"]), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith(f"--forcerun {files['waveforms']}")


def test_an_artifact_downstream_outputs_were_built_from_is_reported_missing(
    results: tuple[Path, dict[str, Path]], capsys: pytest.CaptureFixture
) -> None:
    """A deleted model folder (digests and all) and codec folder: Snakemake would say "Nothing to be
    done", since the attack runs, transfer tables and clean_accuracy.csv built from them exist."""
    import shutil

    root, files = results
    shutil.rmtree(files["model.ckpt"].parent)
    shutil.rmtree(files["decoded.npy"].parent)
    assert verify.main([str(root)]) == 1
    out = capsys.readouterr().out
    for path in (files["model.ckpt"], files["decoded.npy"], files["decoded_noise"]):
        line = next(line for line in out.splitlines() if line.startswith(f"{path}: "))
        assert "is missing, but" in line and line.endswith(f"--forcerun {path}")
    last = out.strip().splitlines()[-1]
    assert "rebuild them all with: snakemake --cores all --forcerun" in last
    assert str(files["model.ckpt"]) in last


def test_temporary_decoded_audio_may_be_gone_and_the_rebuild_names_the_config(
    results: tuple[Path, dict[str, Path]], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root, files = results
    config = tmp_path / "other.yaml"
    config.write_text(yaml.safe_dump({"results": str(root), "codecs": {"keep_decoded": False}}))
    delete(files["decoded.npy"])  # as Snakemake removes a temp() output: its digest stays behind
    delete(files["decoded_noise"])
    assert verify.main(["--config", str(config)]) == 0
    truncate(files["adversarial.npy"])
    assert verify.main(["--config", str(config)]) == 1
    out = capsys.readouterr().out
    expected = f"snakemake --cores all --configfile {config} --replace-workflow-config --forcerun"
    assert f"{expected} {files['adversarial.npy']}" in out


def test_artifacts_without_a_digest_are_checked_by_structure(
    results: tuple[Path, dict[str, Path]], capsys: pytest.CaptureFixture
) -> None:
    """Results written before digests existed: no digest files; a NaN or a cut still shows."""
    root, files = results
    for side in root.rglob("*.sha256"):
        side.unlink()
    assert verify.main([str(root)]) == 0
    assert "0 by their digest" in capsys.readouterr().out
    with open(files["adversarial.npy"], "r+b") as handle:
        handle.seek(-8, 2)
        handle.write(np.full(2, np.nan, np.float32).tobytes())
    with pytest.raises(ArtifactError, match=r"NaN or infinite values \(first at row 2\)"):
        open_npy(files["adversarial.npy"])
    truncate(files["waveforms"])
    with pytest.raises(ArtifactError, match="is truncated"):
        load_dataset(files["data"])
    assert verify.main([str(root)]) == 1


def test_each_reader_names_what_its_artifact_lacks(tmp_path: Path) -> None:
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    (tmp_path / "info.json").write_text('{"a": 1}')
    torch.save({"epoch": 1}, tmp_path / "model.ckpt")
    with pytest.raises(ArtifactError, match=r"table.csv: lacks the column\(s\) \['c', 'd'\]"):
        read_csv(tmp_path / "table.csv", columns=("a", "c", "d"))
    with pytest.raises(ArtifactError, match=r"info.json: lacks the key\(s\) \['b'\]"):
        read_json(tmp_path / "info.json", keys=("a", "b"))
    with pytest.raises(
        ArtifactError, match=r"model.ckpt: is not a checkpoint of this kind: it lacks \['state_dict'\]"
    ):
        load_torch(tmp_path / "model.ckpt")
    assert read_json(tmp_path / "info.json", keys=("a",)) == {"a": 1}


def test_a_killed_jobs_temporary_files_are_noted_not_failed(
    results: tuple[Path, dict[str, Path]], capsys: pytest.CaptureFixture
) -> None:
    root, files = results
    leftover = files["model.ckpt"].parent.parent / ".cnn.abc123.tmp"
    leftover.mkdir()
    (leftover / "model.ckpt.sha256").write_text("0" * 64 + "  model.ckpt\n")  # half-written, ignored
    assert verify.main([str(root)]) == 0
    assert f"note: {leftover} is the temporary file of a job" in capsys.readouterr().out
