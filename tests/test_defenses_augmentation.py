"""The augmentation study's table (defense_augmentation.csv) and figure, from hand-built tables in
the layouts of metrics.json, generalisation.csv and codec_clean_accuracy.csv."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from advmir.cli import main
from advmir.defenses.augmentation import AUGMENTATION_COLUMNS, augmentation_table
from advmir.defenses.tables import training_cost
from advmir.errors import InputError
from advmir.io import write_csv, write_json

AUG, BASE, OTHER = "cnn_adv_aug", "cnn", "wave_cnn"
ADVERSARIAL = {
    "mode": "adv_aug",
    "budget": {"norm": "linf", "eps": None, "snr_db": 45.0, "envelope": 0.0},
    "norm": "linf",
    "steps": 1,
    "rel_step": 1.25,
    "alpha": None,
    "weight": 1.0,
    "separate_bn": True,
    "craft_seconds": 3.2,
    "auxiliary_batch_norms": 4,
}


def metrics(accuracy: float, n_test: int = 200, adversarial: dict | None = None) -> dict:
    out = {"test_accuracy": accuracy, "n_test": n_test, "epochs_run": 10, "train_seconds": 12.3}
    return {**out, "adversarial": adversarial} if adversarial else out


METRICS = {AUG: metrics(0.9, adversarial=ADVERSARIAL), BASE: metrics(0.9025), OTHER: metrics(0.8)}


def generalisation(drop: tuple[str, str] | None = None) -> pd.DataFrame:
    """generalisation.csv: the default split (notes) and two others; ``drop``: (split, model) left out."""
    rows = [
        ("notes", BASE, 0.9025, 200), ("notes", AUG, 0.9, 200),
        ("instruments", BASE, 0.55, 180), ("instruments", AUG, 0.6, 180), ("instruments", OTHER, 0.5, 180),
        ("soundfont", BASE, 0.8, 300), ("soundfont", AUG, 0.8, 300),
    ]  # fmt: skip
    table = pd.DataFrame(rows, columns=["split", "model", "test_accuracy", "n_test"])
    table = table.assign(macro_f1=table["test_accuracy"], chance=0.3333, n_train=500, best_epoch=3)
    if drop:
        table = table[~((table["split"] == drop[0]) & (table["model"] == drop[1]))]
    return table.reset_index(drop=True)


CONDITIONS = [  # condition, kind, label, correct (base, augmented) of 60 clips
    ("none", "none", "no transformation", (57, 57)),
    ("flac", "codec", "FLAC", (57, 57)),
    ("mp3_32k", "codec", "MP3 (LAME) 32 kbps", (56, 54)),
    ("room", "room", "room x2, 0.5-2 m, SNR 30 dB", (45, 51)),
]


def codecs(dataset: str = "synth_notes", drop: tuple[str, str] | None = None) -> pd.DataFrame:
    """codec_clean_accuracy.csv rows of BASE, AUG and OTHER (the main columns)."""
    rows = []
    for condition, kind, label, (base, aug) in CONDITIONS:
        for model, correct in ((BASE, base), (AUG, aug), (OTHER, 40)):
            if drop == (condition, model):
                continue
            rows.append(
                {
                    "dataset": dataset, "condition": condition, "kind": kind,
                    "codec": "none" if kind == "none" else condition.split("_")[0], "condition_label": label,
                    "bitrate_kbps": 32.0 if condition == "mp3_32k" else None, "target_model": model,
                    "target_frontend": "logmel", "n": 60, "correct": correct, "accuracy": correct / 60,
                }
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_one_row_per_condition_with_the_signed_change():
    table = augmentation_table({AUG: BASE}, METRICS, generalisation(), codecs(), "synth_notes")
    assert list(table.columns) == AUGMENTATION_COLUMNS
    # the default split's rows (notes) are the clean row: not repeated
    assert list(table["condition"]) == [
        "clean", "split:instruments", "split:soundfont", "none", "flac", "mp3_32k", "room",
    ]  # fmt: skip
    assert list(table["condition_kind"]) == ["clean", "split", "split", "none", "codec", "codec", "room"]
    assert list(table["n"]) == [200, 180, 300, 60, 60, 60, 60]
    change = dict(zip(table["condition"], table["change_points"], strict=True))
    assert change == {
        "clean": -0.25, "split:instruments": 5.0, "split:soundfont": 0.0, "none": 0.0, "flac": 0.0,
        "mp3_32k": -3.33, "room": 10.0,
    }  # fmt: skip
    tiny = augmentation_table({AUG: BASE}, {**METRICS, BASE: metrics(0.9000001)}, None, None, "synth_notes")
    assert "-0.0" not in tiny.to_csv(index=False)  # a change that rounds to zero is written unsigned
    room = table.set_index("condition").loc["room"]
    assert room["accuracy_base"] == 0.75 and room["accuracy"] == 0.85
    assert room["condition_label"].startswith("room x2")
    assert set(table["model"]) == {AUG} and set(table["base_model"]) == {BASE}
    assert set(table["dataset"]) == {"synth_notes"}
    settings = table.iloc[0]
    assert (settings["defense"], settings["defense_norm"], settings["defense_snr_db"]) == (
        "adv_aug",
        "linf",
        45.0,
    )
    assert pd.isna(settings["defense_eps"])
    assert (settings["steps"], settings["weight"], settings["separate_bn"]) == (1, 1.0, True)
    assert (settings["train_epochs"], settings["train_cost"]) == (10, 30.0)  # (1 step + 2) x 10 epochs


def test_missing_inputs_leave_the_clean_row(caplog):
    with caplog.at_level(logging.INFO, logger="advmir.defenses"):
        table = augmentation_table({AUG: BASE}, METRICS, None, None, "synth_notes")
    assert list(table["condition"]) == ["clean"]
    assert "no split rows" in caplog.text and "no codec or room rows" in caplog.text
    only_codecs = augmentation_table({AUG: BASE}, METRICS, None, codecs(), "synth_notes")
    assert list(only_codecs["condition"]) == ["clean", "none", "flac", "mp3_32k", "room"]


def test_a_model_absent_from_a_table_loses_only_those_rows(caplog):
    with caplog.at_level(logging.INFO, logger="advmir.defenses"):
        table = augmentation_table(
            {AUG: BASE},
            METRICS,
            generalisation(drop=("soundfont", AUG)),
            codecs(drop=("mp3_32k", BASE)),
            "synth_notes",
        )
    assert list(table["condition"]) == ["clean", "split:instruments", "none", "flac", "room"]
    assert "['soundfont']" in caplog.text and "['mp3_32k']" in caplog.text
    # another model, without a soundfont run: no soundfont row
    other = augmentation_table({OTHER: BASE}, METRICS, generalisation(), codecs(), "synth_notes")
    assert list(other["condition"]) == ["clean", "split:instruments", "none", "flac", "mp3_32k", "room"]
    # codec rows of another dataset are not this one's
    elsewhere = augmentation_table({AUG: BASE}, METRICS, None, codecs("gtzan"), "synth_notes")
    assert list(elsewhere["condition"]) == ["clean"]


def test_a_model_without_metrics_is_refused_by_name():
    with pytest.raises(InputError, match=BASE):
        augmentation_table({AUG: BASE}, {AUG: METRICS[AUG]}, None, None, "synth_notes")
    empty = augmentation_table({}, METRICS, None, None, "synth_notes")
    assert len(empty) == 0 and list(empty.columns) == AUGMENTATION_COLUMNS


@pytest.mark.parametrize(
    ("adversarial", "cost"),
    [
        (None, 10.0),  # an ordinary model: one pass per epoch
        ({"mode": "fast_at", "steps": 1}, 20.0),
        ({"mode": "pgd_at", "steps": 10}, 110.0),
        ({"mode": "adv_aug", "steps": 1}, 30.0),  # one crafting step, the adversarial and the clean update
        ({"mode": "adv_aug", "steps": 5}, 70.0),
        ({"mode": "trades", "steps": 10}, 120.0),  # the clean and the adversarial forward-backward
    ],
)
def test_training_cost_counts_the_clean_batch_of_the_augmentation_modes(adversarial, cost):
    assert training_cost(metrics(0.9, adversarial=adversarial)) == (10, cost)
    assert training_cost({"test_accuracy": 0.9}) == (None, None)


def write_inputs(root, datasets=("synth_notes", "gtzan")):
    """metrics.json in results/models/{dataset}/{model}/ and the two tables, through advmir.io."""
    paths = []
    for dataset in datasets:
        for model in (AUG, BASE):
            path = root / "models" / dataset / model / "metrics.json"
            path.parent.mkdir(parents=True)
            write_json(path, METRICS[model])
            paths.append(str(path))
    (root / "tables").mkdir()
    write_csv(root / "tables/generalisation.csv", generalisation())
    write_csv(root / "tables/codec_clean_accuracy.csv", pd.concat([codecs(d) for d in datasets]))
    return paths


def test_cli_writes_every_dataset_and_the_same_bytes_twice(tmp_path):
    paths = write_inputs(tmp_path)
    tables = tmp_path / "tables"
    args = [
        "summarize-augmentation", "--pair", AUG, BASE, "--metrics", *paths,
        "--generalisation", str(tables / "generalisation.csv"),
        "--codecs", str(tables / "codec_clean_accuracy.csv"),
    ]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "a.csv")]) == 0
    assert main([*reversed_metrics(args), "--out", str(tmp_path / "b.csv")]) == 0
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv.sha256").exists()  # written atomically, with its digest
    table = pd.read_csv(tmp_path / "a.csv")
    per_dataset = table.groupby("dataset", sort=False)["condition"].agg(list).to_dict()
    # generalisation.csv holds synth_notes' split modes only
    assert per_dataset == {
        "gtzan": ["clean", "none", "flac", "mp3_32k", "room"],
        "synth_notes": ["clean", "split:instruments", "split:soundfont", "none", "flac", "mp3_32k", "room"],
    }
    assert main(["summarize-augmentation", "--pair", AUG, BASE, "--metrics", *paths[:2],
                 "--out", str(tmp_path / "c.csv")]) == 0  # fmt: skip
    assert list(pd.read_csv(tmp_path / "c.csv")["condition"]) == ["clean"]


def reversed_metrics(args: list[str]) -> list[str]:
    """``args`` with the --metrics paths in the opposite order (the table must not depend on it)."""
    start = args.index("--metrics") + 1
    end = args.index("--generalisation")
    return [*args[:start], *reversed(args[start:end]), *args[end:]]


def test_figure_has_a_panel_per_augmented_model_and_a_deterministic_pdf(tmp_path):
    from advmir.plotting.defenses import plot_augmentation

    one = augmentation_table({AUG: BASE}, METRICS, generalisation(), codecs(), "synth_notes")
    two = augmentation_table({OTHER: BASE}, METRICS, generalisation(), codecs(), "synth_notes")
    table = pd.concat([one, two], ignore_index=True)
    write_csv(tmp_path / "t.csv", table)
    fig = plot_augmentation(pd.read_csv(tmp_path / "t.csv"))
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 2
    assert [t.get_text() for t in panels[0].get_yticklabels()][:2] == [
        "test split (n=200)",
        "instruments split (unseen GM programs) (n=180)",
    ]
    assert "+10.00" in [t.get_text() for t in panels[0].texts]  # the room's change, signed
    for name in ("a", "b"):
        assert main(["plot-augmentation", "--table", str(tmp_path / "t.csv"),
                     "--out", str(tmp_path / f"{name}.png"), str(tmp_path / f"{name}.pdf")]) == 0  # fmt: skip
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes()
    assert (tmp_path / "a.png").stat().st_size > 10_000
