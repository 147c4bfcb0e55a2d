"""Anomaly stage end to end on a tiny synthetic dataset: CLI, learned detectors, ensembles, figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from advmir.anomaly import cli, ensemble
from advmir.anomaly import evaluate as run
from advmir.anomaly.autoencoder import AEConfig, reconstruction_errors, train_autoencoder
from advmir.anomaly.detectors import Reference, ScoreSet, run_detector
from advmir.anomaly.multitask import MultitaskConfig, load_multitask, predict, train_multitask
from advmir.cli import main
from advmir.datasets.contract import load_dataset, write_dataset
from advmir.plotting import anomaly as plots

torch.set_num_threads(1)  # tiny nets: threads only contend on a shared machine

SR = 16000
T = SR // 2
CLASSES = ["bright", "dark"]


def tone(midi: int, bright: bool, seed: int) -> np.ndarray:
    """A decaying harmonic note; ``bright`` ones have strong upper partials (the two 'families')."""
    rng = np.random.default_rng(seed)
    t = np.arange(T) / SR
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    tilt = 1.0 if bright else 2.5
    x = sum(
        np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) / k**tilt for k in range(1, 60) if f0 * k < 7000
    )
    x = x * np.minimum(1, t / 0.005) * np.exp(-5 * t) * np.clip(1 - (t - 0.35) / 0.05, 0, 1)
    return (x / np.abs(x).max() * rng.uniform(0.3, 0.9)).astype(np.float32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    rows, waves = [], []
    for split, n in (("train", 48), ("valid", 36), ("test", 36)):
        for k in range(n):
            bright = k % 2 == 0
            midi = 45 + (k * 7 + len(rows)) % 30
            waves.append(tone(midi, bright, seed=len(rows)))
            rows.append(
                {
                    "id": f"{split}{k}",
                    "split": split,
                    "label": CLASSES[not bright],
                    "label_idx": int(not bright),
                    "family": CLASSES[not bright],
                    "pitch": midi,
                }
            )
    root = tmp_path_factory.mktemp("data") / "tiny"
    write_dataset(root, np.stack(waves), pd.DataFrame(rows), CLASSES, SR)
    return str(root)


class TinyClassifier(nn.Module):
    """Waveform (B, T) -> logits (B, 2) from the share of energy above 2 kHz (brightness)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.fft.rfft(x).abs() ** 2
        high = spec[:, spec.shape[1] // 4 :].sum(1) / (spec.sum(1) + 1e-9)
        z = 40 * (high - 0.02)
        return torch.stack([z, -z], dim=1)


def test_corrupt_cli_refuses_bad_input_before_writing(dataset, tmp_path, capsys):
    """A known bad input ends the command with one line naming it and exit status 2 (advmir.cli.main)."""
    out = tmp_path / "c"
    cases = [
        (["--fraction", "1.5"], "fraction must be in [0, 1], got 1.5"),
        (["--faults", "hiss"], "unknown fault 'hiss'"),
        (["--faults", "clipping=99"], "severity 99 is out of range [0.5, 40]"),
        (["--fraction", "0.2"], "split 'test' has 36 clips"),  # 7 clips, 27 faults
        (["--faults", "clipping", "--held-out", "clippng"], "--held-out: unknown fault(s) ['clippng']"),
    ]
    for extra, words in cases:
        assert main(["corrupt-split", "--dataset", dataset, "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert words in err and err.startswith("advmir corrupt-split: error:") and "Traceback" not in err
    assert not out.exists()


def test_learned_detectors_train_and_score(dataset):
    data = load_dataset(dataset)
    train = data.split_indices("train")
    x, labels = data.float_waveforms(train), data.manifest["label_idx"].to_numpy()[train]
    ae = train_autoencoder(x, SR, AEConfig(epochs=2, hidden=16, batch_size=64))
    err, worst = reconstruction_errors(ae, x[:4], SR)
    assert err.shape == (4,) and np.isfinite(err).all() and (worst >= 0).all()
    ckpt = train_multitask(
        x,
        labels,
        2,
        SR,
        {"clipping": [6.0], "silence": [90.0], "wrong_family": [1.0]},
        MultitaskConfig(epochs=1, channels=(4, 8), batch_size=16),
    )
    assert ckpt["faults"] == ["none", "clipping", "silence"]
    path = data.root / "mt.ckpt"
    torch.save(ckpt, path)
    model, _ = load_multitask(path)
    fam, fault = predict(model, x[:5])
    assert fam.shape == (5, 2) and fault.shape == (5, 3) and np.allclose(fault.sum(1), 1, atol=1e-5)


def test_confidence_and_label_errors_use_the_classifier(dataset):
    data = load_dataset(dataset)
    train, test = data.split_indices("train"), data.split_indices("test")
    man = data.manifest.iloc[test].reset_index(drop=True)
    wrong = man.copy()
    wrong.loc[:5, "label_idx"] = 1 - wrong.loc[:5, "label_idx"]
    wrong.loc[:5, "label"] = [CLASSES[i] for i in wrong.loc[:5, "label_idx"]]
    ref = Reference(
        data.float_waveforms(train),
        data.manifest.iloc[train].reset_index(drop=True),
        CLASSES,
        SR,
        models={"tiny": TinyClassifier()},
    )
    x = data.float_waveforms(test)
    (labels,) = run_detector("label_errors", ref, [ScoreSet(x, wrong)])
    assert labels["score"][:6].min() > labels["score"][6:].max()
    assert "labelled" in labels["reason"][0]
    silent = np.concatenate([x, np.zeros((4, T), np.float32)])
    man_silent = pd.concat([man, man.iloc[:4].assign(id=lambda f: f["id"] + "_s")], ignore_index=True)
    for kind in ("max_softmax", "energy"):
        (table,) = run_detector(kind, ref, [ScoreSet(silent, man_silent)])
        assert table["score"].notna().all() and len(table) == len(man_silent)


def test_stacked_ensemble_learns_which_detector_marks_which_fault():
    rng = np.random.default_rng(0)

    def split(n):
        fault = np.array(["none"] * (n // 2) + ["hum"] * (n // 4) + ["clipping"] * (n - n // 2 - n // 4))
        ids = [f"c{k}" for k in range(n)]
        tables = {
            "hum_check": pd.DataFrame(
                {"id": ids, "score": rng.normal(size=n) + 4 * (fault == "hum"), "reason": "h"}
            ),
            "clip_check": pd.DataFrame(
                {"id": ids, "score": rng.normal(size=n) + 4 * (fault == "clipping"), "reason": "c"}
            ),
            "noise": pd.DataFrame({"id": ids, "score": rng.normal(size=n), "reason": "n"}),
        }
        return tables, pd.DataFrame({"id": ids, "fault": fault, "is_fault": (fault != "none").astype(int)})

    valid, valid_man = split(200)
    test, test_man = split(200)
    stack = ensemble.fit_stack(valid, valid_man)
    score, contribution, likely, _ = ensemble.apply_stack(stack, test, test_man["id"].tolist())
    from advmir.anomaly.metrics import roc_auc

    assert roc_auc(test_man["is_fault"], score) > 0.95
    hum = test_man["fault"] == "hum"
    assert (likely[hum.to_numpy()] == "hum").mean() > 0.8
    assert (contribution.idxmax(axis=1)[hum.to_numpy()] == "hum_check").mean() > 0.8
    rank, _ = ensemble.rank_average(test, test_man["id"].tolist())
    assert 0.5 < roc_auc(test_man["is_fault"], rank) < 1.0
    # evidence is measured against the validation split's clean clips, not within the scored set: a
    # set where most clips carry the same fault still ranks them above its clean ones
    ids = [f"h{k}" for k in range(100)]
    hum = np.arange(100) >= 20
    crowded = {
        "hum_check": pd.DataFrame({"id": ids, "score": rng.normal(size=100) + 4 * hum, "reason": "h"}),
        "clip_check": pd.DataFrame({"id": ids, "score": rng.normal(size=100), "reason": "c"}),
        "noise": pd.DataFrame({"id": ids, "score": rng.normal(size=100), "reason": "n"}),
    }
    score, _, likely, _ = ensemble.apply_stack(stack, crowded, ids)
    assert roc_auc(hum, score) > 0.95 and (likely[hum] == "hum").mean() > 0.8
    assert set(stack.reference) == set(stack.detectors) and len(stack.reference["noise"]) == 100


def test_cli_end_to_end(dataset, tmp_path):
    out = tmp_path / "anomaly"
    faults = ["clipping", "silence", "dropout", "exact_duplicate", "wrong_family"]
    # the test copy also holds a held-out implementation of clipping, which the valid copy lacks
    for split, extra in (
        ("test", ["asymmetric_clipping=6", "--held-out", "asymmetric_clipping"]),
        ("valid", []),
    ):
        assert (
            cli.corrupt(
                [
                    "--dataset",
                    dataset,
                    "--split",
                    split,
                    "--out",
                    str(out / f"corrupted_{split}"),
                    "--fraction",
                    "0.5",
                    "--seed",
                    "3",
                    "--faults",
                    *faults,
                    *extra,
                ]
            )
            == 0
        )
    corrupted = load_dataset(out / "corrupted_test")
    assert set(corrupted.manifest["fault"]) == {"none", "asymmetric_clipping", *faults}
    assert set(load_dataset(out / "corrupted_valid").manifest["fault"]) == {"none", *faults}
    assert {"is_fault", "fault", "fault_family", "held_out", "severity", "source_id"} <= set(
        corrupted.manifest.columns
    )
    held = corrupted.manifest[corrupted.manifest["held_out"] == 1]
    assert set(held["fault"]) == {"asymmetric_clipping"} and set(held["fault_family"]) == {"clipping"}
    sets = [str(out / "corrupted_test"), str(out / "corrupted_valid")]
    detectors = ["clipping", "silence", "gaps", "duplicates", "label_errors", "isolation_forest"]
    for det in detectors:
        assert (
            cli.score(
                [
                    "--detector",
                    det,
                    "--dataset",
                    dataset,
                    "--sets",
                    *sets,
                    "--out",
                    str(out / "scores" / f"{det}.csv"),
                    str(out / "valid" / f"{det}.csv"),
                ]
            )
            == 0
        )
    test_csvs = [str(out / "scores" / f"{d}.csv") for d in detectors]
    valid_csvs = [str(out / "valid" / f"{d}.csv") for d in detectors]
    assert (
        cli.score(
            [
                "--detector",
                "ensemble_rank",
                "--sets",
                sets[0],
                "--out",
                str(out / "scores" / "ensemble_rank.csv"),
                "--scores",
                *test_csvs,
            ]
        )
        == 0
    )
    assert (
        cli.score(
            [
                "--detector",
                "ensemble_stack",
                "--sets",
                *sets,
                "--out",
                str(out / "scores" / "ensemble_stack.csv"),
                "--scores",
                *test_csvs,
                *valid_csvs,
                "--save-ensemble",
                str(out / "ensemble"),
                "--ensemble-info",
                "dataset=tiny",
            ]
        )
        == 0
    )
    all_csvs = [
        *test_csvs,
        str(out / "scores" / "ensemble_rank.csv"),
        str(out / "scores" / "ensemble_stack.csv"),
    ]
    assert (
        cli.evaluate(
            [
                "--set",
                sets[0],
                "--scores",
                *all_csvs,
                "--metrics",
                str(out / "metrics.csv"),
                "--review",
                str(out / "review.csv"),
                "--roc",
                str(out / "roc.csv"),
                "--budget",
                str(out / "budget.csv"),
                "--generalisation",
                str(out / "generalisation.csv"),
                "--severities",
                str(out / "severities.csv"),
                "--roc-families",
                str(out / "roc_families.csv"),
            ]
        )
        == 0
    )
    assert "robust_z" in pd.read_csv(out / "scores" / "clipping.csv").columns
    general = pd.read_csv(out / "generalisation.csv").set_index(
        ["detector", "implementations", "fault_family"]
    )
    # the flat-top check finds one-sided clipping too, and the stack (never fitted on it) follows
    assert general.loc[("clipping", "held_out", "clipping"), "roc_auc"] > 0.9
    assert general.loc[("ensemble_stack", "held_out", "all"), "faults"] == "asymmetric_clipping"
    assert general.loc[("ensemble_stack", "in_generator", "all"), "n_faulty"] == corrupted.manifest[
        "is_fault"
    ].sum() - len(held)
    severities = pd.read_csv(out / "severities.csv")
    assert set(severities.loc[severities["fault"] == "asymmetric_clipping", "severity"]) == {6.0}
    metrics = pd.read_csv(out / "metrics.csv")
    auc = metrics.set_index(["detector", "fault"])["roc_auc"]
    assert auc["clipping", "clipping"] == 1.0 and auc["silence", "silence"] == 1.0
    assert auc["duplicates", "exact_duplicate"] > 0.9 and auc["label_errors", "wrong_family"] > 0.9
    assert auc["ensemble_stack", "all"] > 0.9
    review = pd.read_csv(out / "review.csv", keep_default_na=False)
    assert review["rank"].tolist() == list(range(1, len(corrupted.manifest) + 1))
    assert set(review["detector"]) <= set(detectors) and (review["reason"] != "").all()
    top = review.head(int(corrupted.manifest["is_fault"].sum()))
    assert top["is_fault"].mean() > 0.8
    assert review["reason_1"].str.contains(": ").all()  # "clipped: ..." in a curator's words
    _check_saved_ensemble(out, dataset, sets[0])
    combine = ["--combine", f"tiny={out / 'metrics.csv'}", "--table", str(out / "table.csv")]
    assert cli.evaluate([*combine, "--comparison", str(out / "vs.csv")]) == 0
    assert pd.read_csv(out / "table.csv")["dataset"].eq("tiny").all()
    table = pd.read_csv(out / "table.csv")
    with_mt = pd.concat([table, table[table["detector"] == "clipping"].assign(detector="multitask")])
    versus = run.multitask_vs_ensemble(with_mt)
    assert versus.loc[versus["fault"] == "clipping", "better"].item() == "tie"  # both perfect on clipping
    assert (versus["ensemble"] == "ensemble_stack").all()
    _plot({k: str(out / f"{k}.csv") for k in ("metrics", "roc", "budget")}, out, ("roc", "heat", "budget"))
    assert all((out / f"{name}.png").stat().st_size > 1000 for name in ("roc", "heat", "budget"))
    # per fault family, held-out implementations apart; the budget curve counts held-out faults alone
    families = pd.read_csv(out / "roc_families.csv")
    held_clip = families[
        (families["fault_family"] == "clipping") & (families["implementations"] == "held_out")
    ]
    assert set(held_clip["n_faulty"]) == {len(held)} and (held_clip["tpr"].between(0, 1)).all()
    budget = pd.read_csv(out / "budget.csv")
    assert set(budget["implementations"]) == {"all", "in_generator", "held_out"}
    assert budget.groupby(["detector", "implementations"])["clips"].max().eq(len(corrupted.manifest)).all()
    argv = [f"--{k}={out / f'{k}.csv'}" for k in ("metrics", "roc", "budget")]
    figs = [f"--{k}-out={out / f'{k}.png'}" for k in ("roc", "heatmap", "budget", "families", "held-out")]
    assert plots.main([*argv, f"--roc-families={out / 'roc_families.csv'}", *figs]) == 0
    assert (out / "families.png").stat().st_size > 1000 and (out / "held-out.png").stat().st_size > 1000


def _check_saved_ensemble(out, dataset: str, test_set: str) -> None:
    """The saved ensemble (JSON + npz, no pickle) applied by review-dataset to the test copy, as to
    any other prepared dataset, ranks it exactly as the stage's own ensemble_stack scores did."""
    stack, info = ensemble.load_stack(out / "ensemble")
    assert info["dataset"] == "tiny" and sorted(p.name for p in (out / "ensemble").iterdir()) == [
        "calibration.npz",
        "calibration.npz.sha256",
        "stack.json",
        "stack.json.sha256",
    ]
    files = {
        k: str(out / "applied" / f"{k}.{e}")
        for k, e in (("review", "csv"), ("scores", "csv"), ("summary", "json"))
    }
    argv = ["--ensemble", str(out / "ensemble"), "--source", dataset, "--dataset", test_set]
    assert cli.review([*argv, *(f"--{k}={v}" for k, v in files.items())]) == 0
    applied = pd.read_csv(files["review"], keep_default_na=False).set_index("id")
    own = pd.read_csv(out / "scores" / "ensemble_stack.csv").set_index("id")
    assert np.allclose(applied.loc[own.index, "score"], own["score"])
    assert applied["rank"].tolist() == list(range(1, len(own) + 1)) and applied["p_fault"].between(0, 1).all()
    top = applied[applied["rank"] <= 5]
    assert top["reason_1"].str.contains(r"clean clips this extreme: ").all()
    clipped = applied[(applied["fault"] == "clipping") & (applied["rank"] <= len(applied) // 2)]
    assert clipped["reason_1"].str.startswith("clipped: ").any()
    scores = pd.read_csv(files["scores"])
    assert set(scores["detector"]) == set(stack.detectors) and len(scores) == len(own) * len(stack.detectors)
    summary = json.loads(Path(files["summary"]).read_text())
    assert summary["roc_auc"] > 0.9 and summary["n_clips"] == len(own)
    # a dataset with labels of its own (a folder with `labels: none`): confident learning cannot speak
    # about them and gives no evidence; the other detectors rank it as before
    theirs = load_dataset(test_set)
    relabelled = theirs.manifest.assign(label="unlabelled", label_idx=0)
    write_dataset(
        out / "own_labels",
        theirs.float_waveforms(slice(None)),
        relabelled,
        ["unlabelled"],
        theirs.sample_rate,
    )
    argv[-1] = str(out / "own_labels")
    assert cli.review([*argv, f"--review={out / 'own.csv'}", f"--scores={out / 'own_scores.csv'}"]) == 0
    assert "label_errors" not in set(pd.read_csv(out / "own_scores.csv")["detector"])
    assert pd.read_csv(out / "own.csv")["rank"].tolist() == list(range(1, len(own) + 1))
    # labels of its own that are not the ensemble's classes (a folder labelled by subfolders):
    # confident learning checks them out of sample, cross-validated on the dataset itself, and the
    # swapped labels score above the clean clips' (label_check auto; `source` has nothing to check)
    renamed = theirs.manifest.assign(label="take_" + theirs.manifest["label"].astype(str))
    classes = sorted(renamed["label"].unique())
    renamed["label_idx"] = renamed["label"].map({c: i for i, c in enumerate(classes)})
    write_dataset(out / "renamed", theirs.float_waveforms(slice(None)), renamed, classes, theirs.sample_rate)
    argv[-1] = str(out / "renamed")
    assert cli.review([*argv, f"--review={out / 'ren.csv'}", f"--scores={out / 'ren_scores.csv'}"]) == 0
    checked = pd.read_csv(out / "ren_scores.csv").query("detector == 'label_errors'").set_index("id")
    assert len(checked) == len(own) and checked["reason"].str.contains("-fold on this dataset").any()
    faults = theirs.manifest.set_index(theirs.manifest["id"].astype(str))["fault"].reindex(checked.index)
    swapped = faults.isin(["wrong_family", "swapped_family"]).to_numpy()
    assert swapped.any() and (faults == "none").any()
    assert checked["score"][swapped].mean() > checked["score"][(faults == "none").to_numpy()].mean()
    by_source = [
        *argv,
        "--label-check",
        "source",
        f"--review={out / 'src.csv'}",
        f"--scores={out / 'src_s.csv'}",
    ]
    assert cli.review(by_source) == 0
    assert "label_errors" not in set(pd.read_csv(out / "src_s.csv")["detector"])


def _plot(tables: dict[str, str], folder, names: tuple[str, str, str]) -> None:
    """The anomaly figures (ROC, heat map, budget) of metrics/roc/budget ``tables`` as PNGs ``names``."""
    figs = [str(folder / f"{name}.png") for name in names]
    argv = ["--metrics", tables["metrics"], "--roc", tables["roc"], "--budget", tables["budget"]]
    assert plots.main([*argv, "--roc-out", figs[0], "--heatmap-out", figs[1], "--budget-out", figs[2]]) == 0


def test_review_of_a_split_without_injected_faults(dataset, tmp_path):
    """fraction 0: the split is copied as is; review.csv still ranks every clip with a reason."""
    clean = tmp_path / "clean_test"
    assert cli.corrupt(["--dataset", dataset, "--out", str(clean), "--fraction", "0"]) == 0
    assert load_dataset(clean).manifest["is_fault"].sum() == 0
    csvs = []
    for det in ("clipping", "duplicates"):
        csvs.append(str(tmp_path / f"{det}.csv"))
        assert (
            cli.score(["--detector", det, "--dataset", dataset, "--sets", str(clean), "--out", csvs[-1]]) == 0
        )
    assert (
        cli.score(
            [
                "--detector",
                "ensemble_rank",
                "--sets",
                str(clean),
                "--out",
                str(tmp_path / "ensemble_rank.csv"),
                "--scores",
                *csvs,
            ]
        )
        == 0
    )
    out = {k: str(tmp_path / f"{k}.csv") for k in ("metrics", "review", "roc", "budget")}
    args = [
        "--set",
        str(clean),
        "--scores",
        *csvs,
        str(tmp_path / "ensemble_rank.csv"),
        "--ranking",
        "ensemble_rank",
    ]
    assert cli.evaluate([*args, *[f"--{k}={v}" for k, v in out.items()]]) == 0
    review = pd.read_csv(out["review"], keep_default_na=False)
    assert (
        len(review) == 36
        and (review["ranked_by"] == "ensemble_rank").all()
        and (review["reason"] != "").all()
    )
    assert pd.read_csv(out["metrics"])["roc_auc"].isna().all()
    _plot(out, tmp_path, ("a", "b", "c"))


# --------------------------------------------------------------------- the library behind the CLI
def _scores(ids: list[str], values: list[float], **extra: list) -> pd.DataFrame:
    return pd.DataFrame({"id": ids, "score": values, "reason": [f"r{v}" for v in values], **extra})


def test_review_table_ranks_every_clip_by_the_chosen_detector():
    manifest = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "is_fault": [0, 1, 1],
            "fault": ["none", "hum", "x"],
            "severity": [0.0, 20.0, 1.0],
            "pitch": [60, 61, 62],
            "other": [1, 2, 3],
        }
    )
    tables = {
        "clipping": _scores(["c", "b", "a"], [0.5, 0.9, 0.1]),
        "ensemble_stack": _scores(
            ["a", "b", "c"], [0.2, 0.3, 0.8], detector=["x", "y", "z"], likely_fault=["none", "hum", "x"]
        ),
    }
    review = run.review_table(manifest, tables, "ensemble_stack")
    assert list(review.columns) == [
        "rank",
        "id",
        "ranked_by",
        "score",
        "detector",
        "reason",
        "likely_fault",
        "pitch",
        "is_fault",
        "fault",
        "severity",
    ]
    assert review["id"].tolist() == ["c", "b", "a"] and review["rank"].tolist() == [1, 2, 3]
    assert review["detector"].tolist() == ["z", "y", "x"] and (review["ranked_by"] == "ensemble_stack").all()
    # a ranking detector that was not scored: the first table's, named as its own detector
    fallback = run.review_table(manifest, tables, "ensemble_rank")
    assert fallback["id"].tolist() == ["b", "c", "a"] and (fallback["detector"] == "clipping").all()
    assert "likely_fault" not in fallback


def test_evaluate_set_makes_only_the_tables_asked_for_and_names_a_missing_score():
    manifest = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "is_fault": [0, 1, 0, 1],
            "fault": ["none", "hum", "none", "hum"],
            "severity": [0.0, 20.0, 0.0, 30.0],
        }
    )
    tables = {"hum_check": _scores(["a", "b", "c", "d"], [0.1, 0.9, 0.2, 0.8])}
    out = run.evaluate_set(manifest, tables, "hum_check", ["metrics", "review"])
    assert list(out) == ["metrics", "review"]
    auc = out["metrics"].set_index(["detector", "fault"])["roc_auc"]
    assert auc["hum_check", "hum"] == 1.0
    assert set(run.evaluate_set(manifest, tables, "hum_check")) == set(run.OUTPUTS)
    partial = {"hum_check": _scores(["a", "b", "c"], [0.1, 0.9, 0.2])}
    with pytest.raises(run.AnomalyInputError, match="hum_check: no score for clip 'd'; rerun"):
        run.evaluate_set(manifest, partial, "hum_check", ["metrics"])


def test_combine_metrics_and_ensemble_inputs(tmp_path):
    for name, auc in (("one", 0.9), ("two", 0.7)):
        pd.DataFrame(
            {"detector": ["ensemble_rank", "multitask"], "fault": ["hum", "hum"], "roc_auc": [auc, 0.8]}
        ).to_csv(tmp_path / f"{name}.csv", index=False)
    table = run.combine_metrics([("one", tmp_path / "one.csv"), ("two", tmp_path / "two.csv")])
    assert table.columns[0] == "dataset" and table["dataset"].tolist() == ["one", "one", "two", "two"]
    versus = run.multitask_vs_ensemble(table)
    assert versus["better"].tolist() == ["ensemble", "multitask"]
    assert (versus["ensemble"] == "ensemble_rank").all()
    with pytest.raises(run.AnomalyInputError, match="ensemble_stack needs --sets TEST VALID"):
        run.score_ensemble("ensemble_stack", [tmp_path / "one.csv"], [object()])  # type: ignore[list-item]
    with pytest.raises(run.AnomalyInputError, match="as many of each"):
        run.score_ensemble("ensemble_rank", [tmp_path / "one.csv"], [object(), object()])  # type: ignore[list-item]


def test_score_with_detector_refuses_a_set_of_another_rate(dataset, tmp_path):
    data = load_dataset(dataset)
    rows = data.split_indices("test")[:4]
    other = write_dataset(
        tmp_path / "other",
        data.float_waveforms(rows),
        data.manifest.iloc[rows].reset_index(drop=True),
        CLASSES,
        SR // 2,
    )
    with pytest.raises(run.AnomalyInputError, match=r"sampled at 8000 Hz, the reference .* at 16000 Hz"):
        run.score_with_detector("clipping", dataset, [load_dataset(other)])
    (table,) = run.score_with_detector("clipping", dataset, [load_dataset(dataset)])
    assert len(table) == len(data.manifest) and list(table.columns) == ["id", "score", "robust_z", "reason"]
