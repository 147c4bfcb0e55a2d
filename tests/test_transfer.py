"""Transfer stage: the counting rule of the tables (adversarial examples beside their matched-noise
controls), and encode -> evaluate -> summarize -> plot through the command line on a tiny synthetic
dataset with tiny real models (untrained, so predictions are arbitrary but deterministic)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from advmir.cli import main
from advmir.codecs import cli as codecs_cli
from advmir.datasets.contract import write_dataset
from advmir.errors import UsageError
from advmir.transfer import cli
from advmir.transfer.tables import (
    TransferTableError,
    adversarial_changes,
    build_tables,
    clean_changes,
    join_clean,
    lossless_changes,
    lossless_problem,
    rate_matrix,
    score_and_relate,
    summarize_predictions,
)

SR = 16000
MODELS = {
    "wave_a": {"frontend": "waveform", "arch": "cnn1d", "arch_args": {"width": 4}},
    "wave_b": {"frontend": "waveform", "arch": "cnn1d", "arch_args": {"width": 4}},
    "mel_a": {"frontend": "logmel", "arch": "cnn2d", "arch_args": {"width": 4}, "train_subset": "half_b"},
}


# ------------------------------------------------------------------------------ tables


def _predictions() -> pd.DataFrame:
    """Two examples (rows 5, 6; labels 0, 1), one source model, two targets, conditions none and mp3.

    The matched noise of row 5 flips wave_a (under both conditions); no other control flips anything.
    """
    rows = []

    def add(attack, condition, source, row, label, target_model, pred, attack_target=-1, noise_pred=-1):
        rows.append(
            {
                "dataset": "d",
                "attack": attack,
                "condition": condition,
                "source_model": source,
                "index": row - 5,
                "id": f"x{row}",
                "row": row,
                "label_idx": label,
                "attack_target": attack_target,
                "target_model": target_model,
                "pred": pred,
                "conf": 0.9,
                "noise_pred": noise_pred,
                "noise_conf": 0.8 if noise_pred >= 0 else np.nan,
            }
        )

    for condition in ("none", "mp3"):
        for target in ("wave_a", "mel_a"):
            add("clean", condition, "clean", 5, 0, target, 0)
            # the codec breaks the clean version of row 6 for mel_a: that example cannot count there
            add(
                "clean",
                condition,
                "clean",
                6,
                1,
                target,
                2 if (condition == "mp3" and target == "mel_a") else 1,
            )
            add(
                "pgd", condition, "wave_a", 5, 0, target, 1, noise_pred=2 if target == "wave_a" else 0
            )  # fooled
            add("pgd", condition, "wave_a", 6, 1, target, 2 if target == "wave_a" else 1, noise_pred=1)
    return pd.DataFrame(rows)


def test_success_counts_only_examples_whose_clean_version_survives():
    conditions = {"mp3": {"kind": "codec", "codec": "mp3", "bitrate_kbps": 128, "label": "MP3 128"}}
    tables = build_tables(_predictions(), MODELS, conditions)
    rates = tables["rates"].set_index(["condition", "target_model"])
    assert rates.loc[("none", "wave_a"), ["n", "n_counted", "n_success"]].tolist() == [2, 2, 2]
    assert rates.loc[("mp3", "mel_a"), ["n", "n_counted", "n_success"]].tolist() == [2, 1, 1]
    assert rates.loc[("mp3", "mel_a"), "success_rate"] == 1.0
    assert rates.loc[("none", "mel_a"), "success_rate"] == 0.5
    assert rates.loc[("none", "wave_a"), "relation"] == "self"
    assert rates.loc[("none", "mel_a"), "relation"] == "cross_representation"
    transfer = tables["transfer"]
    assert len(transfer) == 2 * 2 * 2  # examples x targets x conditions (one source, one attack)
    assert set(transfer.columns) >= {
        "source_frontend",
        "target_frontend",
        "clean_correct",
        "success",
        "counted",
    }
    clean = tables["clean"].set_index(["condition", "target_model"])
    assert (
        clean.loc[("mp3", "mel_a"), "accuracy"] == 0.5
        and clean.loc[("mp3", "mel_a"), "n_changed_vs_none"] == 1
    )
    matrix = tables["matrix"]
    assert list(matrix.columns[6:]) == ["wave_a", "mel_a"]  # grouped by representation: waveform first
    assert list(dict.fromkeys(matrix["quantity"])) == [
        "success_rate",
        "noise_success_rate",
        "excess_over_noise",
    ]
    rep = tables["representation"]
    assert set(rep["relation"]) == {"self", "cross_representation"}


def test_targeted_success_needs_the_target():
    preds = _predictions()
    preds.loc[preds["attack"] == "pgd", "attack_target"] = 2
    tables = build_tables(preds, MODELS, {"mp3": {"kind": "codec", "codec": "mp3"}})
    rates = tables["rates"].set_index(["condition", "target_model"])
    assert rates.loc[("none", "wave_a"), "n_success"] == 1  # only row 6 went to class 2


def test_excess_over_noise_is_the_rate_minus_the_matched_noise_rate():
    tables = build_tables(_predictions(), MODELS, {"mp3": {"kind": "codec", "codec": "mp3"}})
    rates = tables["rates"].set_index(["condition", "target_model"])
    wave = rates.loc[("none", "wave_a")]
    assert (wave["n_counted"], wave["n_success"], wave["n_noise_success"]) == (2, 2, 1)
    assert (wave["success_rate"], wave["noise_success_rate"], wave["excess_over_noise"]) == (1.0, 0.5, 0.5)
    mel = rates.loc[("mp3", "mel_a")]  # row 6 not counted (its clean version breaks), nothing flips by noise
    assert (mel["noise_success_rate"], mel["excess_over_noise"]) == (0.0, 1.0)
    np.testing.assert_allclose(
        rates["excess_over_noise"], rates["success_rate"] - rates["noise_success_rate"]
    )
    transfer = tables["transfer"].set_index(["condition", "row", "target_model"])
    assert transfer.loc[("none", 5, "wave_a"), "noise_success"]
    assert not transfer.loc[("none", 5, "mel_a"), "noise_success"]
    rep = tables["representation"].set_index(["condition", "relation"])
    assert rep.loc[("none", "self"), "pooled_excess_over_noise"] == 0.5
    matrix = tables["matrix"].set_index(["condition", "quantity"])
    assert matrix.loc[("none", "excess_over_noise"), "wave_a"] == 0.5


def test_noise_success_uses_the_attack_success_rule():
    """Targeted: the control succeeds only by hitting the target, on clips the target got right."""
    preds = _predictions()
    attack = preds["attack"] == "pgd"
    preds.loc[attack, "attack_target"] = 2
    preds.loc[attack & (preds["row"] == 5), "noise_pred"] = 1  # flips the label, misses the target
    preds.loc[attack & (preds["row"] == 6), "noise_pred"] = 2  # hits the target
    tables = build_tables(preds, MODELS, {"mp3": {"kind": "codec", "codec": "mp3"}})
    rates = tables["rates"].set_index(["condition", "target_model"])
    assert rates.loc[("none", "wave_a"), "n_noise_success"] == 1
    assert rates.loc[("none", "wave_a"), "noise_success_rate"] == 0.5
    assert rates.loc[("mp3", "mel_a"), "n_noise_success"] == 0  # row 6 is not counted under mp3 on mel_a


def test_predictions_without_their_noise_control_are_refused():
    preds = _predictions()
    preds.loc[(preds["attack"] == "pgd") & (preds["condition"] == "mp3"), "noise_pred"] = -1
    with pytest.raises(TransferTableError, match=r"no matched-noise prediction for wave_a/pgd under 'mp3'"):
        build_tables(preds, MODELS, {"mp3": {"kind": "codec", "codec": "mp3"}})
    with pytest.raises(TransferTableError, match="matched-noise"):
        build_tables(preds.drop(columns=["noise_pred"]), MODELS, {"mp3": {"kind": "codec", "codec": "mp3"}})


def test_missing_clean_predictions_are_reported():
    preds = _predictions()
    preds = preds[~((preds["attack"] == "clean") & (preds["row"] == 6) & (preds["condition"] == "mp3"))]
    with pytest.raises(TransferTableError, match=r"no clean prediction for row 6 of d under 'mp3'"):
        build_tables(preds, MODELS, {"mp3": {"kind": "codec", "codec": "mp3"}})


def test_lossless_changes_are_flagged():
    preds = _predictions()
    preds.loc[preds["condition"] == "mp3", "condition"] = "flac"
    tables = build_tables(preds, MODELS, {"flac": {"kind": "codec", "codec": "flac"}})
    bad = lossless_changes(tables["clean"])
    assert list(bad["target_model"]) == ["mel_a"]
    assert lossless_problem(tables["clean"]) == (
        "the lossless control changed predictions (it must change none): flac on mel_a. The codec path "
        "is broken; run summarize-transfer with --allow-lossless-changes to inspect the tables"
    )
    assert lossless_problem(build_tables(_predictions(), MODELS, {"mp3": {"codec": "mp3"}})["clean"]) is None


def test_join_clean_adds_the_clean_prediction_and_refuses_a_disagreeing_label():
    preds = _predictions()
    clean, adv = preds[preds["attack"] == "clean"], preds[preds["attack"] != "clean"]
    table = join_clean(adv, clean).set_index(["condition", "row", "target_model"])
    assert table.loc[("mp3", 6, "mel_a"), ["clean_pred", "clean_correct"]].tolist() == [2, False]
    assert table.loc[("mp3", 6, "wave_a"), ["clean_pred", "clean_correct"]].tolist() == [1, True]
    assert table["clean_pred"].dtype == np.int64 and table["noise_pred"].dtype == np.int64
    with pytest.raises(TransferTableError, match="repeat a"):
        join_clean(adv, pd.concat([clean, clean.iloc[:1]]))
    with pytest.raises(TransferTableError, match="labels of the clean and adversarial"):
        join_clean(adv, clean.assign(label_idx=clean["label_idx"] + 1))


def test_score_and_relate_credits_a_surrogate_attack_to_its_surrogate():
    preds = _predictions()
    clean, adv = preds[preds["attack"] == "clean"], preds[preds["attack"] != "clean"]
    attacks = {"pgd": {"threat": "surrogate", "surrogate": "mel_a"}}
    table = score_and_relate(join_clean(adv, clean), MODELS, attacks).set_index(
        ["condition", "row", "target_model"]
    )
    row = table.loc[("none", 5, "wave_a")]
    assert (row["threat"], row["crafted_on"], row["source_frontend"], row["source_role"]) == (
        "surrogate",
        "mel_a",
        "logmel",
        "surrogate",
    )
    assert row["relation"] == "cross_representation" and table.loc[("none", 5, "mel_a"), "relation"] == "self"
    assert row["success"] and row["noise_success"] and row["counted"]
    assert not table.loc[("mp3", 6, "mel_a"), "counted"]


def test_clean_and_adversarial_changes_count_flips_against_no_transformation():
    preds = _predictions()
    clean, adv = preds[preds["attack"] == "clean"], preds[preds["attack"] != "clean"]
    changes = clean_changes(clean).set_index(["condition", "target_model"])
    mel = changes.loc[("mp3", "mel_a")]
    assert (mel["n"], mel["correct"], mel["n_changed_vs_none"]) == (2, 1, 1)
    assert (mel["accuracy_none"], mel["accuracy_change"]) == (1.0, -0.5)
    flips = adversarial_changes(adv.assign(pred=np.where(adv["condition"] == "mp3", 1, adv["pred"])))
    flips = flips.set_index(["condition", "target_model"])
    assert flips.loc[("none", "wave_a"), "n_adversarial_changed_vs_none"] == 0
    assert flips.loc[("mp3", "wave_a"), ["n_adversarial", "n_adversarial_changed_vs_none"]].tolist() == [2, 1]
    assert flips.loc[("mp3", "mel_a"), "n_adversarial_changed_vs_none"] == 0


def test_rate_matrix_orders_targets_by_representation_and_quantities_by_rates():
    rates = build_tables(_predictions(), MODELS, {"mp3": {"codec": "mp3"}})["rates"]
    matrix = rate_matrix(rates, MODELS)
    assert list(matrix.columns) == [
        "dataset", "attack", "condition", "source_model", "crafted_on", "quantity", "wave_a", "mel_a"
    ]  # fmt: skip
    assert matrix["condition"].tolist() == ["mp3"] * 3 + ["none"] * 3
    assert matrix["quantity"].tolist() == ["success_rate", "noise_success_rate", "excess_over_noise"] * 2
    assert matrix["mel_a"].tolist()[3:] == [0.5, 0.0, 0.5]


def test_summarize_predictions_reads_the_tables_it_is_given(tmp_path):
    preds = _predictions()
    paths = []
    for condition, part in preds.groupby("condition"):
        paths.append(tmp_path / f"{condition}.csv")
        part.to_csv(paths[-1], index=False)
    bitrates = tmp_path / "bitrates.csv"
    pd.DataFrame(
        {"dataset": "d", "source": ["clean", "clean", "wave_a/pgd", "wave_a/pgd"], "condition": "mp3",
         "row": [5, 6, 5, 6], "achieved_kbps": [130.0, 126.0, 131.0, 127.0]}
    ).to_csv(bitrates, index=False)  # fmt: skip
    conditions = {"mp3": {"kind": "codec", "codec": "mp3"}}
    tables = summarize_predictions(paths, [bitrates], MODELS, conditions, {})
    expected = build_tables(preds.sort_values("condition", kind="stable"), MODELS, conditions)
    assert tables["rates"][RATES_COLUMNS].equals(expected["rates"][RATES_COLUMNS])
    transfer = tables["transfer"].set_index(["condition", "row", "target_model"])
    assert transfer.loc[("mp3", 6, "wave_a"), ["payload_kbps", "clean_achieved_kbps"]].tolist() == [
        127.0,
        126.0,
    ]
    assert np.isnan(transfer.loc[("none", 6, "wave_a"), "payload_kbps"])
    assert tables["clean"].set_index("condition").loc["mp3", "achieved_kbps_median"].tolist() == [
        128.0,
        128.0,
    ]
    assert summarize_predictions(paths, [], MODELS, conditions, {})["transfer"]["achieved_kbps"].isna().all()


@pytest.mark.parametrize("option", ["--source", "--noise", "--target"])
def test_a_model_named_twice_is_refused_before_anything_loads(tmp_path, option):
    """A repeated name would silently replace the earlier checkpoint or audio (the last one wins)."""
    sources = [["--source", "wave_a", "a.npy", "a.csv"]] * (2 if option == "--source" else 1)
    noise = [["--noise", "wave_a", "n.npy"]] * (2 if option == "--noise" else 1)
    targets = [["--target", "mel_a", "m.ckpt"], ["--target", "mel_a" if option == "--target" else "x", "k"]]
    argv = ["--dataset-dir", str(tmp_path), "--attack", "pgd", "--condition", "none"]
    argv += ["--out", str(tmp_path / "out.csv")] + [w for pair in sources + noise + targets for w in pair]
    with pytest.raises(UsageError, match=rf"pgd none: {option} \['(wave|mel)_a'\] given more than once"):
        cli.evaluate(argv)
    assert not (tmp_path / "out.csv").exists()


RATES_COLUMNS = ["condition", "target_model", "n", "n_counted", "n_success", "success_rate"]


def test_check_noise_sources_names_missing_and_stray_controls():
    from advmir.transfer.predict import check_noise_sources

    check_noise_sources(["clean"], {}, attack="clean", condition="none")
    check_noise_sources(
        ["wave_a", "mel_a"], {"wave_a": "a.npy", "mel_a": "b.npy"}, attack="pgd", condition="none"
    )
    with pytest.raises(
        UsageError, match=r"^pgd mp3: .* missing for \['mel_a'\], not a source or `clean`: \[\]"
    ):
        check_noise_sources(["wave_a", "mel_a"], {"wave_a": "a.npy"}, attack="pgd", condition="mp3")
    with pytest.raises(UsageError, match=r"missing for \[\], not a source or `clean`: \['clean', 'x'\]"):
        check_noise_sources(["clean"], {"clean": "a.npy", "x": "b.npy"}, attack="pgd", condition="mp3")


# ------------------------------------------------------------------------------ command line


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    """A 12-clip dataset, one attack output on wave_a (with its matched-noise control, as the attack
    stage writes it), and three tiny real model checkpoints."""
    from advmir.models.zoo import build_model, save_checkpoint

    root = tmp_path_factory.mktemp("transfer")
    rng = np.random.default_rng(0)
    n, length = 12, 4000
    t = np.arange(length) / SR
    labels = np.arange(n) % 3
    audio = np.stack(
        [
            0.5 * np.sin(2 * np.pi * (200 * (1 + label) + 7 * i) * t) + 0.05 * rng.standard_normal(length)
            for i, label in enumerate(labels)
        ]
    ).astype(np.float32)
    classes = ["low", "mid", "high"]
    manifest = pd.DataFrame(
        {
            "id": [f"clip{i:02d}" for i in range(n)],
            "split": ["test"] * n,
            "label": [classes[k] for k in labels],
            "label_idx": labels,
        }
    )
    dataset = write_dataset(root / "data" / "toy", audio, manifest, classes, SR)
    rows = np.array([1, 3, 4, 7, 8, 10])
    attack = root / "attacks" / "toy" / "wave_a" / "pgd"
    attack.mkdir(parents=True)
    adversarial = np.clip(audio[rows] + 0.02 * np.sign(rng.standard_normal((len(rows), length))), -1, 1)
    np.save(attack / "adversarial.npy", adversarial.astype(np.float32))
    # the control: each clean clip plus white Gaussian noise of its perturbation's L2 norm
    norms = np.linalg.norm(adversarial - audio[rows], axis=1, keepdims=True)
    direction = rng.standard_normal((len(rows), length))
    noise = audio[rows] + norms * direction / np.linalg.norm(direction, axis=1, keepdims=True)
    np.save(attack / "matched_noise.npy", np.clip(noise, -1, 1).astype(np.float32))
    pd.DataFrame(
        {
            "id": manifest["id"].to_numpy()[rows],
            "row": rows,
            "label": labels[rows],
            "target": -1,
            "clean_pred": 0,
            "clean_conf": 0.5,
            "adv_pred": 0,
            "adv_conf": 0.5,
            "clean_correct": True,
            "success": True,
            "snr_db": 20.0,
            "linf": 0.02,
            "l2": 1.0,
            "iterations": 1,
            "queries": 1,
            "seconds": 0.0,
        }
    ).to_csv(attack / "examples.csv", index=False)
    torch.manual_seed(0)
    ckpts = {}
    for name, spec in MODELS.items():
        model = build_model({k: v for k, v in spec.items() if k != "train_subset"}, 3, SR)
        ckpts[name] = root / "models" / name / "model.ckpt"
        ckpts[name].parent.mkdir(parents=True)
        save_checkpoint(ckpts[name], model, classes)
    return {"root": root, "dataset": dataset, "attack": attack, "ckpts": ckpts, "rows": rows}


CONDITIONS = {
    "flac": {"codec": "flac"},
    "mp3_32k": {"codec": "mp3", "bitrate_kbps": 32},
    "room": {"n_rooms": 2, "room_dim_m": [[3, 3, 2.5], [4, 4, 3]], "distance_m": [0.5, 1.0], "snr_db": 30},
}


def _encode(ws: dict, source: str, name: str) -> Path:
    out = ws["root"] / "codecs" / "toy" / source / name
    spec = json.dumps(CONDITIONS[name])
    args = ["--dataset-dir", str(ws["dataset"]), "--source", source, "--name", name, "--out-dir", str(out)]
    args += ["--examples", str(ws["attack"] / "examples.csv")]
    if source != "clean":
        args += ["--audio", str(ws["attack"] / "adversarial.npy")]
        args += ["--noise-audio", str(ws["attack"] / "matched_noise.npy")]
    if name == "room":
        assert codecs_cli.simulate_room([*args, "--room-setting", spec]) == 0
    else:
        assert codecs_cli.encode_with_codec([*args, "--codec-setting", spec, "--workers", "2"]) == 0
    return out


def _evaluate(ws: dict, attack: str, condition: str) -> Path:
    out = ws["root"] / "transfer" / "toy" / attack / f"{condition}.csv"
    examples = str(ws["attack"] / "examples.csv")
    source_model = "clean" if attack == "clean" else "wave_a"
    audio = (
        ("dataset" if attack == "clean" else str(ws["attack"] / "adversarial.npy"))
        if condition == "none"
        else str(
            ws["root"]
            / "codecs"
            / "toy"
            / ("clean" if attack == "clean" else "wave_a/pgd")
            / condition
            / "decoded.npy"
        )
    )
    args = [
        "--dataset-dir",
        str(ws["dataset"]),
        "--attack",
        attack,
        "--condition",
        condition,
        "--out",
        str(out),
    ]
    args += ["--source", source_model, audio, examples, "--device", "cpu"]
    if attack != "clean":
        noise = Path(audio).parent / ("matched_noise.npy" if condition == "none" else "decoded_noise.npy")
        args += ["--noise", source_model, str(noise)]
    for name, ckpt in ws["ckpts"].items():
        args += ["--target", name, str(ckpt)]
    assert cli.evaluate(args) == 0
    return out


def test_encode_evaluate_summarize_plot(workspace):
    ws = workspace
    for source in ("clean", "wave_a/pgd"):
        for name in CONDITIONS:
            _encode(ws, source, name)
    folder = ws["root"] / "codecs" / "toy" / "wave_a" / "pgd" / "mp3_32k"
    decoded = np.load(folder / "decoded.npy")
    assert decoded.shape == (6, 4000) and decoded.dtype == np.float32
    decoded_noise = np.load(folder / "decoded_noise.npy")
    assert decoded_noise.shape == decoded.shape and decoded_noise.dtype == np.float32
    assert not (ws["root"] / "codecs" / "toy" / "clean" / "mp3_32k" / "decoded_noise.npy").exists()
    with zipfile.ZipFile(folder / "bitstreams.zip") as archive:
        names = archive.namelist()
        assert len(names) == 12 and names[0] == "00000_clip01.mp3" and names[6] == "noise/00000_clip01.mp3"
        assert archive.read(names[0])[:3] in (b"\xff\xfb", b"ID3") or archive.read(names[0])[0] == 0xFF
    bitrates = pd.read_csv(folder / "bitrates.csv")
    assert list(bitrates["row"]) == list(ws["rows"]) and bitrates["honoured"].all()
    assert (bitrates["achieved_kbps"] > 32).all()  # file bytes, container included
    assert (bitrates["noise_achieved_kbps"] > 32).all()
    setting = json.loads((folder / "setting.json").read_text())
    assert setting["encoder_options"][:4] == ["-c:a", "libmp3lame", "-b:a", "32k"] and setting["honoured"]
    channel = pd.read_csv(ws["root"] / "codecs" / "toy" / "clean" / "room" / "channel.csv")
    assert set(channel.columns) >= {"room", "distance_m", "absorption", "snr_db", "rt60_sabine_s"}

    predictions = [_evaluate(ws, attack, c) for attack in ("clean", "pgd") for c in ("none", *CONDITIONS)]
    tables = {k: ws["root"] / "tables" / f"{k}.csv" for k in ("transfer", "clean", "rates", "matrix", "rep")}
    bitrate_files = sorted((ws["root"] / "codecs").rglob("bitrates.csv"))
    conditions = {
        "flac": {"kind": "codec", "codec": "flac", "label": "FLAC"},
        "mp3_32k": {"kind": "codec", "codec": "mp3", "bitrate_kbps": 32, "label": "MP3 32"},
        "room": {"kind": "room", "label": "room"},
    }
    args = ["--predictions", *map(str, predictions), "--bitrates", *map(str, bitrate_files)]
    args += ["--models", json.dumps(MODELS), "--conditions", json.dumps(conditions)]
    args += ["--transfer-out", str(tables["transfer"]), "--clean-out", str(tables["clean"])]
    args += ["--rates-out", str(tables["rates"]), "--matrix-out", str(tables["matrix"])]
    args += ["--representation-out", str(tables["rep"])]
    assert cli.summarize(args) == 0

    transfer = pd.read_csv(tables["transfer"])
    assert len(transfer) == 6 * 3 * 4  # examples x targets x conditions (one source model, one attack)
    flac = transfer[transfer["condition"] == "flac"].set_index(["row", "target_model"])
    none = transfer[transfer["condition"] == "none"].set_index(["row", "target_model"])
    assert (flac["pred"] == none.loc[flac.index, "pred"]).all()  # the lossless control changes nothing
    assert (flac["clean_pred"] == none.loc[flac.index, "clean_pred"]).all()
    clean = pd.read_csv(tables["clean"])
    assert (clean.loc[clean["condition"] == "flac", "n_changed_vs_none"] == 0).all()
    assert clean.loc[clean["condition"] == "mp3_32k", "achieved_kbps_median"].iloc[0] > 32
    mp3 = transfer[transfer["condition"] == "mp3_32k"]
    assert mp3["achieved_kbps"].notna().all() and mp3["clean_achieved_kbps"].notna().all()
    assert mp3["noise_payload_kbps"].notna().all()
    assert (flac["noise_pred"] == none.loc[flac.index, "noise_pred"]).all()  # the control too
    # the predictions on the controls are their own, and the rates follow them
    raw = pd.read_csv(ws["root"] / "transfer" / "toy" / "pgd" / "mp3_32k.csv")
    assert (raw["noise_pred"] >= 0).all() and raw["noise_conf"].notna().all()
    assert (pd.read_csv(ws["root"] / "transfer" / "toy" / "clean" / "mp3_32k.csv")["noise_pred"] == -1).all()
    rates = pd.read_csv(tables["rates"]).set_index(["condition", "target_model"])
    hits = (
        (transfer["noise_success"] & transfer["counted"])
        .groupby([transfer["condition"], transfer["target_model"]])
        .sum()
    )
    counted = transfer.groupby(["condition", "target_model"])["counted"].sum()
    expected = (hits / counted.where(counted > 0)).reindex(rates.index)
    np.testing.assert_allclose(rates["noise_success_rate"], expected)
    np.testing.assert_allclose(rates["excess_over_noise"], rates["success_rate"] - expected)

    # the workflow's form: the CLI lists the same files itself from the grid, and the tables agree
    grid = {
        "datasets": ["toy"],
        "attacks": ["clean", "pgd"],
        "conditions": ["none", *CONDITIONS],
        "sources": ["clean", "wave_a/pgd"],
        "codec_settings": [c for c in CONDITIONS if c != "room"],
    }
    grid_args = ["--grid", json.dumps(grid), "--transfer-root", str(ws["root"] / "transfer")]
    grid_args += ["--codecs-root", str(ws["root"] / "codecs")]
    by_grid = {k: ws["root"] / "grid" / f"{k}.csv" for k in tables}
    outs = ["--transfer-out", "--clean-out", "--rates-out", "--matrix-out", "--representation-out"]
    grid_args += [w for option, k in zip(outs, tables, strict=True) for w in (option, str(by_grid[k]))]
    specs = ["--models", json.dumps(MODELS), "--conditions", json.dumps(conditions)]
    assert cli.summarize([*grid_args, *specs]) == 0
    for k in tables:
        pd.testing.assert_frame_equal(pd.read_csv(by_grid[k]), pd.read_csv(tables[k]), check_like=True)
    with pytest.raises(UsageError, match="--grid must be a JSON object"):
        cli.summarize(["--grid", '{"datasets": ["toy"]}', *grid_args[2:], *specs])

    from advmir.plotting.transfer import main as plot

    figures = ws["root"] / "figures"
    outs = {
        k: [str(figures / f"transfer_{k}.png"), str(figures / f"transfer_{k}.pdf")] for k in ("b", "h", "r")
    }
    argv = [
        "--rates",
        str(tables["rates"]),
        "--clean",
        str(tables["clean"]),
        "--heatmap-conditions",
        "none",
        "mp3_32k",
    ]
    argv += ["--rooms", "room", "--plain-attack", "pgd", "--eot-attack", "eot_pgd"]
    argv += ["--out-bitrate", *outs["b"], "--out-heatmaps", *outs["h"], "--out-room", *outs["r"]]
    assert plot(argv) == 0
    assert all(Path(p).stat().st_size > 1000 for paths in outs.values() for p in paths)


def test_one_job_per_source_writes_what_the_per_setting_jobs_write(workspace, tmp_path):
    """codecs.jobs: source: transform-source sends the source through every setting in one process
    and writes each setting's folder as the per-setting job does (same audio, controls, bitstreams,
    channel); a setting it cannot encode fails the job with the setting's name."""
    ws, source = workspace, "wave_a/pgd"
    out_root = tmp_path / "codecs" / "toy" / source
    settings = {
        "codecs": {k: v for k, v in CONDITIONS.items() if k != "room"},
        "rooms": {"room": CONDITIONS["room"]},
    }
    args = [
        "--dataset-dir",
        str(ws["dataset"]),
        "--source",
        source,
        "--examples",
        str(ws["attack"] / "examples.csv"),
    ]
    args += [
        "--audio",
        str(ws["attack"] / "adversarial.npy"),
        "--noise-audio",
        str(ws["attack"] / "matched_noise.npy"),
    ]
    assert (
        main(["transform-source", *args, "--settings", json.dumps(settings), "--out-root", str(out_root)])
        == 0
    )
    for name in CONDITIONS:
        alone, batched = _encode(ws, source, name), out_root / name
        for array in ("decoded.npy", "decoded_noise.npy"):
            np.testing.assert_array_equal(np.load(batched / array), np.load(alone / array))
        if name == "room":
            pd.testing.assert_frame_equal(
                pd.read_csv(batched / "channel.csv"), pd.read_csv(alone / "channel.csv")
            )
        else:
            with (
                zipfile.ZipFile(batched / "bitstreams.zip") as a,
                zipfile.ZipFile(alone / "bitstreams.zip") as b,
            ):
                assert a.namelist() == b.namelist()
                assert all(a.read(n) == b.read(n) for n in a.namelist())
            batched_rates, alone_rates = (
                pd.read_csv(batched / "bitrates.csv"),
                pd.read_csv(alone / "bitrates.csv"),
            )
            pd.testing.assert_frame_equal(batched_rates, alone_rates)
        timing = ("seconds", "clips_per_second")
        summaries = [json.loads((folder / "setting.json").read_text()) for folder in (batched, alone)]
        assert summaries[0]["condition"] == name
        assert [{k: v for k, v in d.items() if k not in timing} for d in summaries[:1]] == [
            {k: v for k, v in summaries[1].items() if k not in timing}
        ]

    bad = {"codecs": {"mp3_bad": {"codec": "mp3", "bitrate_kbps": 7}}, "rooms": {}}
    with pytest.raises(codecs_cli.CodecJobError, match="mp3_bad"):
        codecs_cli.transform_source(
            [*args, "--settings", json.dumps(bad), "--out-root", str(tmp_path / "bad")]
        )
    with pytest.raises(UsageError, match="--settings"):
        codecs_cli.transform_source(
            [*args, "--settings", "{codecs: mp3}", "--out-root", str(tmp_path / "bad")]
        )
    with pytest.raises(UsageError, match="nothing to do"):
        codecs_cli.transform_source([*args, "--settings", "{}", "--out-root", str(tmp_path / "bad")])


def test_the_noise_control_goes_through_the_same_codec_and_room(workspace):
    """decoded_noise.npy is matched_noise.npy through the same setting, row for row, aligned like
    decoded.npy: the same bitstreams as a round trip of the controls alone, the lossless control
    returns them, and each control meets its example's room."""
    from advmir.codecs.engine import CodecEngine
    from advmir.codecs.registry import parse_setting
    from advmir.codecs.room import parse_room, simulate

    ws = workspace
    noise = np.load(ws["attack"] / "matched_noise.npy")
    folders = {name: _encode(ws, "wave_a/pgd", name) for name in CONDITIONS}

    flac = np.load(folders["flac"] / "decoded_noise.npy")
    np.testing.assert_allclose(flac, noise, atol=2.0**-14)  # aligned, and in the order of the rows
    assert np.abs(np.load(folders["flac"] / "decoded.npy") - flac).max() > 1e-3  # not the examples

    setting = parse_setting("mp3_32k", CONDITIONS["mp3_32k"], SR)
    alone = CodecEngine(workers=1, batch_size=4).roundtrip(noise, SR, setting)
    np.testing.assert_array_equal(np.load(folders["mp3_32k"] / "decoded_noise.npy"), alone.decoded)
    with zipfile.ZipFile(folders["mp3_32k"] / "bitstreams.zip") as archive:
        controls = [archive.read(n) for n in archive.namelist() if n.startswith("noise/")]
    assert controls == alone.bitstreams
    bitrates = pd.read_csv(folders["mp3_32k"] / "bitrates.csv")
    np.testing.assert_allclose(bitrates["noise_payload_kbps"], alone.payload_kbps, atol=1e-3)

    room = parse_room("room", CONDITIONS["room"], SR)
    # keyed by the dataset rows, as the examples are: each control meets its example's room and noise
    expected = simulate(noise, SR, room, ws["rows"])[0]
    np.testing.assert_array_equal(np.load(folders["room"] / "decoded_noise.npy"), expected)
    assert "noise_snr_db_vs_original" in pd.read_csv(folders["room"] / "channel.csv").columns
    summary = json.loads((folders["room"] / "setting.json").read_text())
    assert summary["noise_control"] is True


def test_one_job_per_attack_writes_what_the_per_condition_jobs_write(workspace, tmp_path, capsys):
    """codecs.jobs: source: evaluate-transfer --conditions scores every condition with the targets
    loaded once and writes the per-condition jobs' prediction files byte for byte; a missing
    condition's audio stops it before any model loads, naming the file, and writes nothing."""
    ws = workspace
    conditions = ["none", "mp3_32k", "room"]
    for attack, source in (("clean", "clean"), ("pgd", "wave_a/pgd")):
        model = source.split("/")[0]
        for c in conditions[1:]:
            if not (ws["root"] / "codecs" / "toy" / source / c / "decoded.npy").exists():
                _encode(ws, source, c)
        out_dir = tmp_path / attack
        args = ["--dataset-dir", str(ws["dataset"]), "--attack", attack, "--conditions", *conditions]
        examples = str(ws["attack"] / "examples.csv")
        if attack == "clean":
            args += ["--source", "clean", "dataset", examples]
        else:
            args += ["--source", model, str(ws["attack"] / "adversarial.npy"), examples]
            args += ["--noise", model, str(ws["attack"] / "matched_noise.npy")]
        args += ["--codec-dir", model, str(ws["root"] / "codecs" / "toy" / source)]
        args += [w for name, ckpt in ws["ckpts"].items() for w in ("--target", name, str(ckpt))]
        assert main(["evaluate-transfer", *args, "--out-dir", str(out_dir), "--device", "cpu"]) == 0
        for c in conditions:
            assert (out_dir / f"{c}.csv").read_bytes() == _evaluate(ws, attack, c).read_bytes(), (attack, c)

    missing = tmp_path / "missing"
    args[args.index("--conditions") + 1 : args.index("--conditions") + 1] = ["aac_1k"]
    assert main(["evaluate-transfer", *args, "--out-dir", str(missing), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "aac_1k/decoded.npy" in err and "missing" in err
    assert not missing.exists()


def test_evaluate_refuses_an_attack_source_without_its_control(workspace, capsys):
    ws = workspace
    args = ["--dataset-dir", str(ws["dataset"]), "--attack", "pgd", "--condition", "none"]
    args += ["--source", "wave_a", str(ws["attack"] / "adversarial.npy"), str(ws["attack"] / "examples.csv")]
    args += ["--target", "wave_a", str(ws["ckpts"]["wave_a"]), "--out", str(ws["root"] / "x.csv")]
    assert main(["evaluate-transfer", *args]) == 2
    assert "missing for ['wave_a']" in capsys.readouterr().err


def test_encode_refuses_a_setting_it_cannot_honour(workspace, capsys):
    ws = workspace
    out = ws["root"] / "codecs" / "toy" / "clean" / "opus_1k"
    args = [
        "--dataset-dir",
        str(ws["dataset"]),
        "--source",
        "clean",
        "--name",
        "opus_1k",
        "--out-dir",
        str(out),
    ]
    args += [
        "--examples",
        str(ws["attack"] / "examples.csv"),
        "--codec-setting",
        '{"codec": "opus", "bitrate_kbps": 1}',
    ]
    assert main(["encode-with-codec", *args]) == 2
    assert "clean opus_1k: codec setting 'opus_1k' (opus): Opus cannot take 1 kbps" in capsys.readouterr().err
    assert not out.exists()


def test_encode_refuses_mismatched_source_files(workspace, tmp_path, capsys):
    ws = workspace
    np.save(tmp_path / "short.npy", np.zeros((2, 4000), np.float32))
    args = [
        "--dataset-dir",
        str(ws["dataset"]),
        "--source",
        "wave_a/pgd",
        "--name",
        "flac",
        "--out-dir",
        str(tmp_path / "o"),
    ]
    args += ["--examples", str(ws["attack"] / "examples.csv"), "--audio", str(tmp_path / "short.npy")]
    args += ["--codec-setting", '{"codec": "flac"}']
    assert main(["encode-with-codec", *args]) == 2
    assert "short.npy has shape (2, 4000) but" in capsys.readouterr().err


def test_surrogate_attack_counts_as_crafted_on_its_surrogate():
    preds = _predictions()
    attacks = {"pgd": {"name": "pgd", "threat": "surrogate", "surrogate": "mel_a"}}
    tables = build_tables(preds, MODELS, {"mp3": {"kind": "codec", "codec": "mp3"}}, attacks=attacks)
    rates = tables["rates"].set_index(["condition", "target_model"])
    assert rates.loc[("none", "mel_a"), "relation"] == "self"
    assert rates.loc[("none", "wave_a"), "relation"] == "cross_representation"
    assert set(rates["crafted_on"]) == {"mel_a"} and set(rates["source_role"]) == {"surrogate"}


def test_max_examples_keeps_the_first_examples_of_every_source(workspace):
    from advmir.transfer.sources import load_source

    ws = workspace
    examples = ws["attack"] / "examples.csv"
    clean = load_source(ws["dataset"], examples, None, max_examples=4)
    adversarial = load_source(ws["dataset"], examples, ws["attack"] / "adversarial.npy", max_examples=4)
    assert clean.audio.shape == adversarial.audio.shape == (4, 4000)
    assert list(clean.examples["row"]) == list(adversarial.examples["row"]) == list(ws["rows"][:4])
