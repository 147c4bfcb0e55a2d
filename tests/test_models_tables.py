import pandas as pd
import pytest

from advmir.models.benign import benign_table


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
