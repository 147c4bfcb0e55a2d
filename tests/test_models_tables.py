import json

import pandas as pd
import pytest

from advmir.models.benign import benign_table
from advmir.models.cli import summarize


def test_benign_table_joins_noise_and_codecs_against_the_same_clips():
    accuracy = pd.DataFrame(
        {
            "dataset": ["d", "d"],
            "model": ["a", "b"],
            "n_test": [100, 100],
            "test_accuracy": [0.9, 0.8],
            "accuracy_noise30db": [0.85, 0.8],
            "flip_rate_noise30db": [0.06, 0.0],
        }
    )
    codecs = pd.DataFrame(
        {
            "dataset": ["d"] * 4,
            "condition": ["none", "mp3_128k", "room", "none"],
            "target_model": ["a", "a", "a", "b"],
            "codec": ["none", "mp3", "room", "none"],
            "n": [20] * 4,
            "accuracy": [1.0, 0.95, 0.5, 0.9],
            "accuracy_none": [1.0, 1.0, 1.0, 0.9],
        }
    )
    table = benign_table(accuracy, codecs).set_index(["model", "condition"])
    assert table.loc[("a", "noise 30 dB"), "change_points"] == pytest.approx(-5.0)
    assert table.loc[("b", "noise 30 dB"), "change_points"] == 0
    # codec rows are measured against the clean accuracy of their own subset, not the test split's
    assert table.loc[("a", "mp3_128k"), "change_points"] == pytest.approx(-5.0)
    assert table.loc[("a", "mp3_128k"), "kind"] == "codec" and table.loc[("a", "room"), "kind"] == "room"
    assert ("a", "none") not in table.index
    assert len(benign_table(accuracy, None)) == 4


def test_clean_accuracy_table_holds_no_wall_clock_time(tmp_path):
    """Two trainings that differ only in how long they took give byte-identical tables."""
    tables = []
    for seconds in (12.5, 700.0):
        metrics = tmp_path / f"took{seconds:g}" / "synth_notes" / "cnn" / "metrics.json"
        metrics.parent.mkdir(parents=True)
        metrics.write_text(json.dumps({
            "classes": ["a", "b"], "confusion": [[3, 1], [0, 4]],
            "spec": {"frontend": "logmel", "arch": "cnn2d"}, "seed": 0, "train_subset": "all",
            "n_train": 40, "test_accuracy": 0.875, "macro_f1": 0.87,
            "best_epoch": 3, "train_seconds": seconds, "noise": [],
        }))  # fmt: skip
        out = metrics.parents[2] / "clean_accuracy.csv"
        argv = ["--metrics", str(metrics), "--out", str(out), "--confusion-out", str(out.with_name("c.csv"))]
        assert summarize(argv) == 0
        tables.append(out.read_bytes())
    assert tables[0] == tables[1]
    assert "seconds" not in tables[0].decode().splitlines()[0]
