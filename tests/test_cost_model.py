"""benchmarks/cost_model.py: dry-run parsing, per-job scaling from benchmark files, list scheduling."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _module(name: str):
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


cm = _module("cost_model")

DRY_RUN = """Building DAG of jobs...
[Sun Dec  6 16:29:44 2026]
rule render:
    output: R/data/x/waveforms.npy
    log: R/logs/data/x.log
    jobid: 1
    benchmark: R/benchmarks/data/x.tsv
    reason: Forced execution
    wildcards: dataset=x
    resources: tmpdir=/tmp, runtime=5
[Sun Dec  6 16:29:44 2026]
rule train:
    input: R/data/x/waveforms.npy
    output: R/models/x/a/model.ckpt
    jobid: 2
    benchmark: R/benchmarks/models/x/a.tsv
    wildcards: dataset=x, model=a
    threads: 2
    resources: tmpdir=/tmp, runtime=60, gpu=0, mem_mb=3000
[Sun Dec  6 16:29:44 2026]
rule train:
    input: R/data/x/waveforms.npy
    output: R/models/x/b/model.ckpt
    jobid: 3
    benchmark: R/benchmarks/models/x/b.tsv
    wildcards: dataset=x, model=b
    threads: 2
    resources: tmpdir=/tmp, runtime=60, gpu=0, mem_mb=3000
[Sun Dec  6 16:29:44 2026]
localrule all:
    input: R/models/x/a/model.ckpt, R/models/x/b/model.ckpt
    jobid: 0
    reason: Forced execution
    resources: tmpdir=/tmp
Job stats:
"""


def _write_bench(root: Path, path: str, s: float, cpu: float) -> None:
    tsv = root / "benchmarks" / path
    tsv.parent.mkdir(parents=True, exist_ok=True)
    tsv.write_text(
        "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
        f"{s}\t0:00:01\t100.0\t200.0\t50.0\t60.0\t0.0\t0.0\t90.0\t{cpu}\n"
    )


def test_a_dry_run_gives_rules_wildcards_threads_gpu_rules_and_job_dependencies() -> None:
    jobs = cm.parse_dry_run(DRY_RUN, "R")
    assert [j.rule for j in jobs] == ["render", "train", "train", "all"]
    render, train_a, _, final = jobs
    assert render.benchmark == "data/x.tsv" and render.deps == [] and not render.gpu
    assert train_a.wildcards == {"dataset": "x", "model": "a"}
    assert train_a.threads == 2 and train_a.gpu and train_a.deps == [0]
    assert final.benchmark is None and final.deps == [1, 2]


def test_measured_files_are_labelled_by_their_rule_even_from_another_config(tmp_path: Path) -> None:
    jobs = cm.parse_dry_run(DRY_RUN, "R")
    # models/x/c.tsv is no job of this dry run: matched by the train rule's template
    labels = cm.label_measured(["data/x.tsv", "models/x/c.tsv", "unknown/file.tsv"], jobs)
    assert list(labels["rule"]) == ["render", "train"]
    assert labels["wildcards"].iloc[1] == {"dataset": "x", "model": "c"}


def _measured(tmp_path: Path, rows: list[tuple[str, str, tuple, float, float]]) -> cm.Rates:
    import pandas as pd

    table = pd.DataFrame(rows, columns=["path", "rule", "key", "size", "s"])
    table["cpu_time"] = table["s"] * 0.5
    return cm.Rates.from_table(table, overhead_quantile=0.0)


def test_a_job_scales_by_its_size_beyond_the_fixed_start_and_prefers_the_most_specific_key(
    tmp_path: Path,
) -> None:
    rates = _measured(
        tmp_path,
        [
            ("tables/t.tsv", "table", (), 1.0, 2.0),  # the shortest job: the fixed start, 2 s
            ("attacks/a.tsv", "craft", ("pgd", "logmel"), 100.0, 12.0),  # 0.1 s per unit
            ("attacks/b.tsv", "craft", ("pgd", "wave"), 100.0, 22.0),  # 0.2 s per unit
            ("attacks/c.tsv", "craft", ("cw", "logmel"), 100.0, 102.0),  # 1 s per unit
        ],
    )
    assert rates.overhead_s == pytest.approx(2.0)
    wall, cpu, how = rates.predict("craft", ("pgd", "wave"), 300.0)
    assert (wall, how) == (pytest.approx(2.0 + 0.2 * 300), "exact")
    assert cpu == pytest.approx(1.0 + 0.1 * 300)  # CPU seconds scale the same way (half the wall here)
    wall, _, how = rates.predict("craft", ("pgd", "cqt"), 100.0)  # no cqt measured: every pgd job
    assert (wall, how) == (pytest.approx(2.0 + 15.0), "key[:1]")
    wall, _, how = rates.predict("craft", ("fgsm", "cqt"), 100.0)  # no fgsm either: the whole rule
    assert how == "rule" and wall == pytest.approx(2.0 + 100 * (0.1 + 0.2 + 1.0) / 3)
    _, _, how = rates.predict("never_ran", (), 1.0)
    assert how == "unmeasured"


def _prediction(durations: list[float], deps: list[list[int]], gpu: list[bool] | None = None, threads=None):
    gpu = gpu or [False] * len(durations)
    threads = threads or [1] * len(durations)
    jobs = [
        cm.Job("r", {}, [], [], f"s/{i}.tsv", threads=threads[i], gpu=gpu[i], deps=deps[i])
        for i in range(len(durations))
    ]
    return cm.Prediction(
        jobs,
        durations,
        durations,
        [d if g else 0.0 for d, g in zip(durations, gpu, strict=True)],
        ["exact"] * len(jobs),
    )


def test_the_schedule_respects_dependencies_cores_nodes_and_gpus() -> None:
    # four independent 1-hour jobs, then one that reads all four
    pred = _prediction([3600.0] * 4 + [1800.0], [[], [], [], [], [0, 1, 2, 3]])
    assert cm.simulate(pred, nodes=1, cores=1)["wall_h"] == pytest.approx(4.5)
    assert cm.simulate(pred, nodes=1, cores=2)["wall_h"] == pytest.approx(2.5)
    two_nodes = cm.simulate(pred, nodes=2, cores=2)
    assert two_nodes["wall_h"] == pytest.approx(1.5)
    assert two_nodes["core_h"] == pytest.approx(4.5)
    # a job that wants 2 threads holds 2 cores: two of them cannot share a 2-core node
    wide = _prediction([3600.0, 3600.0], [[], []], threads=[2, 2])
    assert cm.simulate(wide, nodes=1, cores=2)["wall_h"] == pytest.approx(2.0)
    assert cm.simulate(wide, nodes=1, cores=2)["core_h"] == pytest.approx(4.0)
    # GPU rules: their variable part divided by the assumed speed-up, one job per GPU
    gpu = _prediction([3600.0, 3600.0, 3600.0], [[], [], []], gpu=[True, True, False])
    result = cm.simulate(gpu, nodes=1, cores=4, gpus=1, gpu_speedup=10.0)
    assert result["wall_h"] == pytest.approx(1.0)
    assert result["gpu_h"] == pytest.approx(0.2)
    assert cm.simulate(gpu, nodes=1, cores=4, gpus=0)["gpu_h"] == 0.0


def test_the_longest_path_goes_first() -> None:
    # two cores; two 1000 s jobs, and a 100 s job that a 2000 s job reads: the chain starts first
    pred = _prediction([1000.0, 1000.0, 100.0, 2000.0], [[], [], [], [2]])
    assert cm.simulate(pred, nodes=1, cores=2)["wall_h"] == pytest.approx(2100 / 3600)


def test_a_config_change_scales_the_attack_and_codec_jobs_measured_on_another(tmp_path: Path) -> None:
    """End to end on the default config's rules: synthetic benchmark files of a run of config.yaml,
    a prediction for the same config with twice the attack clips and steps."""
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    measured = cm.load_config_dict(copy.deepcopy(base))
    bigger = copy.deepcopy(base)
    bigger["attack_settings"]["eval_size"] = 400
    bigger["attacks"]["pgd"]["params"]["steps"] = 200
    bigger["transfer"]["max_examples"] = 200
    predicted = cm.load_config_dict(bigger)
    results = tmp_path / "results"
    _write_bench(results, "tables/attacks.tsv", 1.0, 1.0)  # the fixed start
    _write_bench(results, "attacks/synth_notes/logmel_cnn/pgd.tsv", 21.0, 20.0)
    _write_bench(results, "codecs/synth_notes/logmel_cnn/pgd/mp3_32k.tsv", 5.0, 3.0)
    measured_jobs = [
        cm.Job(
            "craft_adversarial",
            {"dataset": "synth_notes", "model": "logmel_cnn", "attack": "pgd"},
            [],
            [],
            "attacks/synth_notes/logmel_cnn/pgd.tsv",
        ),
        cm.Job(
            "encode_with_codec",
            {"dataset": "synth_notes", "source": "logmel_cnn/pgd", "codec": "mp3_32k"},
            [],
            [],
            "codecs/synth_notes/logmel_cnn/pgd/mp3_32k.tsv",
        ),
        cm.Job("summarize_attacks", {}, ["a"], [], "tables/attacks.tsv"),
    ]
    table = cm.measured_table(results, measured_jobs, measured_jobs, cm.Sizer(measured))
    rates = cm.Rates.from_table(table, overhead_quantile=0.0)
    prediction = cm.predict(measured_jobs, cm.Sizer(predicted), rates)
    attack, codec, summary = prediction.wall_s
    assert attack == pytest.approx(1.0 + 20.0 * 2 * 2)  # twice the clips, twice the steps
    assert codec == pytest.approx(1.0 + 4.0 * 2)  # twice the transferred clips
    assert summary == pytest.approx(1.0)


def test_a_per_source_codec_job_costs_its_settings_and_one_start(tmp_path: Path) -> None:
    """codecs.jobs: source: one transform_source job does the work of every per-setting job of its
    source, predicted from the measured per-setting jobs, with the fixed start paid once."""
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    measured = cm.load_config_dict(copy.deepcopy(base))
    per_source = copy.deepcopy(base)
    per_source["codecs"]["jobs"] = "source"
    predicted = cm.load_config_dict(per_source)
    results = tmp_path / "results"
    _write_bench(results, "tables/attacks.tsv", 1.0, 1.0)  # the fixed start
    _write_bench(results, "codecs/synth_notes/logmel_cnn/pgd/mp3_32k.tsv", 5.0, 3.0)
    _write_bench(results, "codecs/synth_notes/logmel_cnn/pgd/room.tsv", 9.0, 8.0)
    source = {"dataset": "synth_notes", "source": "logmel_cnn/pgd"}
    measured_jobs = [
        cm.Job(
            "encode_with_codec",
            {**source, "codec": "mp3_32k"},
            [],
            [],
            "codecs/synth_notes/logmel_cnn/pgd/mp3_32k.tsv",
        ),
        cm.Job(
            "simulate_room", {**source, "codec": "room"}, [], [], "codecs/synth_notes/logmel_cnn/pgd/room.tsv"
        ),
        cm.Job("summarize_attacks", {}, ["a"], [], "tables/attacks.tsv"),
    ]
    table = cm.measured_table(results, measured_jobs, measured_jobs, cm.Sizer(measured))
    rates = cm.Rates.from_table(table, overhead_quantile=0.0)
    job = cm.Job("transform_source", source, [], [], "codecs/synth_notes/logmel_cnn/pgd/all_settings.tsv")
    parts = cm.per_setting_jobs(job, predicted)
    codecs, rooms = base["codecs"]["settings"], base["codecs"]["rooms"]
    assert [p.wildcards["codec"] for p in parts] == [*codecs, *rooms]
    assert {p.rule for p in parts} == {"encode_with_codec", "simulate_room"}
    (wall,) = cm.predict([job], cm.Sizer(predicted), rates).wall_s
    # every codec setting at the measured codec job's 4 s of work (one measured codec), the room's 8 s
    assert wall == pytest.approx(1.0 + 4.0 * len(codecs) + 8.0 * len(rooms))


def test_a_per_source_codec_job_is_scaled_from_measured_per_source_jobs(tmp_path: Path) -> None:
    """A measured run in codecs.jobs: source mode (the default) prices per-source jobs by its own
    per-source jobs, scaled by clips x settings (twice the settings: twice the work)."""
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    base["codecs"]["jobs"] = "source"
    measured = cm.load_config_dict(copy.deepcopy(base))
    more = copy.deepcopy(base)
    for part in ("settings", "rooms"):  # each setting and room again under another name
        more["codecs"][part].update({f"{name}_again": spec for name, spec in base["codecs"][part].items()})
    results = tmp_path / "results"
    _write_bench(results, "tables/attacks.tsv", 1.0, 1.0)  # the fixed start
    _write_bench(results, "codecs/synth_notes/logmel_cnn/pgd/all_settings.tsv", 31.0, 25.0)
    source = {"dataset": "synth_notes", "source": "logmel_cnn/pgd"}
    job = cm.Job("transform_source", source, [], [], "codecs/synth_notes/logmel_cnn/pgd/all_settings.tsv")
    measured_jobs = [job, cm.Job("summarize_attacks", {}, ["a"], [], "tables/attacks.tsv")]
    table = cm.measured_table(results, measured_jobs, measured_jobs, cm.Sizer(measured))
    rates = cm.Rates.from_table(table, overhead_quantile=0.0)
    assert rates.measures("transform_source")
    same, doubled = (cm.predict([job], cm.Sizer(cm.load_config_dict(cfg)), rates) for cfg in (base, more))
    assert same.wall_s[0] == pytest.approx(31.0) and same.matched == ["exact"]
    assert doubled.wall_s[0] == pytest.approx(1.0 + 30.0 * 2)


def test_a_per_attack_transfer_job_costs_its_conditions_or_its_measured_kind(tmp_path: Path) -> None:
    """codecs.jobs: source: one transfer job per attack does every per-condition job's work. From a
    run measured per condition it costs their variable parts and one start; from a run measured per
    attack, its own kind scaled by the conditions (twice the settings and rooms: twice the work, but
    for condition `none`)."""
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    base["codecs"]["jobs"] = "setting"
    per_attack = copy.deepcopy(base)
    per_attack["codecs"]["jobs"] = "source"
    conditions = cm.transfer_conditions(per_attack)
    assert conditions[0] == "none" and len(conditions) == 1 + sum(map(len, cm.codec_settings(base)))
    results = tmp_path / "results"
    _write_bench(results, "tables/attacks.tsv", 1.0, 1.0)  # the fixed start
    _write_bench(results, "transfer/synth_notes/pgd/mp3_32k.tsv", 4.0, 3.0)
    attack = {"dataset": "synth_notes", "attack": "pgd"}
    summary = cm.Job("summarize_attacks", {}, ["a"], [], "tables/attacks.tsv")
    measured_jobs = [
        cm.Job(
            "evaluate_transfer",
            {**attack, "condition": "mp3_32k"},
            [],
            [],
            "transfer/synth_notes/pgd/mp3_32k.tsv",
        ),
        summary,
    ]
    sizer = cm.Sizer(cm.load_config_dict(copy.deepcopy(base)))
    rates = cm.Rates.from_table(cm.measured_table(results, measured_jobs, measured_jobs, sizer), 0.0)
    job = cm.Job(cm.PER_ATTACK, attack, [], [], "transfer/synth_notes/pgd/all_conditions.tsv")
    parts = cm.per_setting_jobs(job, per_attack)
    assert [p.wildcards["condition"] for p in parts] == conditions and {p.rule for p in parts} == {
        "evaluate_transfer"
    }
    (wall,) = cm.predict([job], cm.Sizer(cm.load_config_dict(per_attack)), rates).wall_s
    assert wall == pytest.approx(1.0 + 3.0 * len(conditions))  # each condition at the measured 3 s of work

    _write_bench(results, "transfer/synth_notes/pgd/all_conditions.tsv", 1.0 + 3.0 * len(conditions), 9.0)
    measured_jobs = [job, summary]
    sizer = cm.Sizer(cm.load_config_dict(copy.deepcopy(per_attack)))
    rates = cm.Rates.from_table(cm.measured_table(results, measured_jobs, measured_jobs, sizer), 0.0)
    assert rates.measures(cm.PER_ATTACK)
    more = copy.deepcopy(per_attack)
    for part in ("settings", "rooms"):
        more["codecs"][part].update({f"{name}_again": spec for name, spec in base["codecs"][part].items()})
    (doubled,) = cm.predict([job], cm.Sizer(cm.load_config_dict(more)), rates).wall_s
    assert doubled == pytest.approx(1.0 + 3.0 * (2 * len(conditions) - 1))


def test_read_benchmarks_is_the_one_reader_of_stage_times(tmp_path: Path) -> None:
    st = _module("stage_times")
    _write_bench(tmp_path, "attacks/d/m/pgd.tsv", 10.0, 8.0)
    _write_bench(tmp_path, "attacks/d/m/fgsm.tsv", 2.0, 1.0)
    table = st.read_benchmarks(tmp_path)
    assert sorted(table["path"]) == ["attacks/d/m/fgsm.tsv", "attacks/d/m/pgd.tsv"]
    stages = st.stage_times(tmp_path)
    assert stages.loc[0, "jobs"] == 2 and stages.loc[0, "wall_s"] == 12.0 and stages.loc[0, "cpu_s"] == 9.0


def test_compare_gives_the_error_of_a_prediction_per_stage(tmp_path: Path) -> None:
    pred = _prediction([10.0, 20.0, 30.0], [[], [], [0]])
    for i, s in enumerate([10.0, 10.0, 40.0]):  # s/0.tsv, s/1.tsv, s/2.tsv: stage "s"
        _write_bench(tmp_path, f"s/{i}.tsv", s, s / 2)
    table = cm.compare(pred, tmp_path).set_index("stage")
    assert table.at["s", "jobs"] == 3 and table.at["all", "wall_s"] == 60.0
    assert table.at["all", "wall_err_%"] == pytest.approx(0.0)
    assert table.at["all", "cpu_err_%"] == pytest.approx(100.0)  # predicted 60 CPU s, measured 30


def test_the_validation_config_is_a_valid_config() -> None:
    from advmir.config import check_config

    config = cm.load_config(REPO / "benchmarks" / "cost_validation.yaml")
    check_config(config)
    assert len(config["codecs"]["settings"]) == 10 and config["attack_settings"]["eval_size"] == 300
