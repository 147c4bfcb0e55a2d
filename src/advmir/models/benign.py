"""Clean accuracy of every model under benign conditions: what a listener would not notice.

One tidy table joins the training stage's noise check (white noise at 40, 30 and 20 dB SNR on
the whole test split, ``metrics.json``) and the codec stage's clean-through-codec accuracy (each
codec setting and room on the transfer subset, ``codec_clean_accuracy.csv``), so every model's
robustness to benign change is read in one place, beside the clean accuracy of the same clips.
"""

from __future__ import annotations

import re

import pandas as pd

COLUMNS = ["dataset", "model", "condition", "kind", "n", "accuracy", "accuracy_clean", "change_points"]


def benign_table(accuracy: pd.DataFrame, codecs: pd.DataFrame | None) -> pd.DataFrame:
    """One row per (dataset, model, condition): accuracy, the clean accuracy of the same clips, and
    the change in points (100 x difference).

    Args:
        accuracy: clean_accuracy.csv (``test_accuracy``, ``accuracy_noise{snr}db`` columns, ``n_test``).
        codecs: codec_clean_accuracy.csv (``condition``, ``target_model``, ``accuracy``,
            ``accuracy_none``, ``n``), or None when the codec stage is off.
    """
    rows = []
    for r in accuracy.itertuples(index=False):
        rec = r._asdict()
        base = {"dataset": rec["dataset"], "model": rec["model"], "n": rec.get("n_test")}
        rows.append({**base, "condition": "clean", "kind": "clean", "accuracy": rec["test_accuracy"]})
        for key, value in rec.items():
            match = re.fullmatch(r"accuracy_noise([0-9.]+)db", key)
            if match:
                rows.append({**base, "condition": f"noise {match[1]} dB", "kind": "noise", "accuracy": value})
    table = pd.DataFrame(rows)
    table["accuracy_clean"] = table.groupby(["dataset", "model"])["accuracy"].transform("first")
    if codecs is not None and len(codecs):
        lossy = codecs[codecs["condition"] != "none"]
        kind = lossy["codec"].fillna("room") if "codec" in lossy else "codec"
        table = pd.concat(
            [
                table,
                pd.DataFrame(
                    {
                        "dataset": lossy["dataset"],
                        "model": lossy["target_model"],
                        "condition": lossy["condition"],
                        "kind": ["room" if k == "room" else "codec" for k in kind],
                        "n": lossy["n"],
                        "accuracy": lossy["accuracy"],
                        "accuracy_clean": lossy["accuracy_none"],
                    }
                ),
            ],
            ignore_index=True,
        )
    table["change_points"] = ((table["accuracy"] - table["accuracy_clean"]) * 100).round(2)
    return table[COLUMNS]
