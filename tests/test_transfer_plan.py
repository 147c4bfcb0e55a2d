"""The job grid of the transfer stage over the codec stage's (advmir.transfer.plan, used by transfer.smk;
the codec stage's own grid and config checks: tests/test_codecs_plan.py)."""

from __future__ import annotations

import copy

import pytest

from advmir.transfer.plan import TransferConfigError, TransferPlan

MODELS = {
    "wave": {"frontend": "waveform", "arch": "cnn1d"},
    "mel": {"frontend": "logmel", "arch": "cnn2d"},
    "sur": {"frontend": "logmel", "arch": "cnn2d", "train_subset": "half_b"},
}
CONFIG = {
    "datasets": ["toy"],
    "toy": {"sample_rate": 16000},
    "models": MODELS,
    "attacks": {
        "pgd": {"name": "pgd", "params": {"eps": 0.002}},
        "eot": {"name": "eot_pgd", "params": {"eps": 0.002}},
        "transfer_pgd": {"name": "pgd", "threat": "surrogate", "surrogate": "sur"},
    },
    "codecs": {
        "settings": {"flac": {"codec": "flac"}, "mp3_32k": {"codec": "mp3", "bitrate_kbps": 32}},
        "rooms": {"room": {"n_rooms": 2}},
    },
    "transfer": {"attacks": ["pgd", "eot"]},
}


def plan(config: dict | None = None, attacked=None) -> TransferPlan:
    return TransferPlan(config or CONFIG, "results", ["toy"], MODELS, attacked)


def jobs(p: TransferPlan) -> dict[str, dict[tuple, str]]:
    """Every job of the two stages with the parameter a change of which re-runs it."""
    codec = {
        ("codec", s, c): p.codec_setting_json(c) if c in p.codec_settings else p.room_setting_json(c)
        for s in p.sources()
        for c in [*p.codec_settings, *p.room_settings]
    }
    evaluate = {
        ("evaluate", a, c): str(p.transfer_inputs("toy", a, c))
        for a in p.transfer_attacks
        for c in p.conditions
    }
    return {**codec, **evaluate}


def test_the_grid_is_one_job_per_source_and_setting():
    p = plan()
    assert p.sources() == ["clean", "wave/pgd", "mel/pgd", "sur/pgd", "wave/eot", "mel/eot", "sur/eot"]
    assert p.conditions == ["none", "flac", "mp3_32k", "room"]
    assert len(p.codec_targets()) == 7  # a room table per source
    # every codec job's bitrates, which the summary reads
    assert p.bitrate_files() == [
        f"results/codecs/toy/{s}/{c}/bitrates.csv" for s in p.sources() for c in ("flac", "mp3_32k")
    ]
    assert sum(1 for k in jobs(p) if k[0] == "evaluate") == 3 * 4


@pytest.mark.parametrize("jobs_mode", ["setting", "source"])
def test_the_summary_runs_after_every_bitrates_file_it_reads(jobs_mode):
    """summarize_transfer lists only the prediction files (the bitrates are 28% of the 10x sweep's
    DAG inputs): that orders it after every codec job only if each bitrates.csv sits beside decoded
    audio that some evaluation job reads (one job writes both)."""
    for config in (CONFIG, {**CONFIG, "transfer": {"attacks": ["pgd"]}}):
        config = copy.deepcopy(config)
        config["codecs"]["jobs"] = jobs_mode
        p = plan(config)
        read = {
            path.rsplit("/", 1)[0]
            for attack in p.transfer_attacks
            for condition in p.conditions
            for key, paths in p.transfer_inputs("toy", attack, condition).items()
            if key == "audio"
            for path in paths
        }
        assert p.bitrate_files() and {f.rsplit("/", 1)[0] for f in p.bitrate_files()} <= read


def test_adding_a_setting_adds_only_its_own_jobs():
    before = jobs(plan())
    config = copy.deepcopy(CONFIG)
    config["codecs"]["settings"]["opus_24k"] = {"codec": "opus", "bitrate_kbps": 24}
    after = jobs(plan(config))
    assert {k: v for k, v in after.items() if k in before} == before  # no existing job changes
    added = set(after) - set(before)
    assert added and all(key[-1] == "opus_24k" for key in added)
    assert len(added) == 7 + 3  # one codec job per source, one evaluation job per attack + clean


def test_inputs_of_evaluation_jobs():
    p = plan()
    none = p.transfer_inputs("toy", "clean", "none")
    assert "audio" not in none and none["examples"] == ["results/codecs/toy/clean/examples.csv"]
    assert p.source_options("clean", None, none["examples"]).startswith("--source clean dataset ")
    mp3 = p.transfer_inputs("toy", "pgd", "mp3_32k")
    assert mp3["audio"][1] == "results/codecs/toy/mel/pgd/mp3_32k/decoded.npy"
    assert mp3["ckpts"] == [f"results/models/toy/{m}/model.ckpt" for m in MODELS]
    assert (
        p.transfer_inputs("toy", "eot", "none")["audio"][0] == "results/attacks/toy/wave/eot/adversarial.npy"
    )


def test_a_per_attack_job_reads_every_condition_of_its_sources():
    """codecs.jobs: source: one evaluation job per attack lists the inputs of all its per-condition
    jobs (each file once), tells the CLI where each source's codec folders are, and writes the same
    prediction files."""
    config = copy.deepcopy(CONFIG)
    config["codecs"]["jobs"] = "source"
    p = plan(config)
    assert p.per_attack and not plan().per_attack
    for attack in p.transfer_attacks:
        merged = p.transfer_inputs("toy", attack)
        one_by_one = [p.transfer_inputs("toy", attack, c) for c in p.conditions]
        files = {f for inputs in one_by_one for paths in inputs.values() for f in paths}
        listed = [f for paths in merged.values() for f in paths]
        assert sorted(set(listed)) == sorted(files) and len(listed) == len(set(listed))
        # the files of condition `none` keep their keys: --source and --noise are built from them
        none = p.transfer_inputs("toy", attack, "none")
        assert all(merged[k] == none[k] for k in none)
    assert p.codec_dir_options("toy", "pgd").split() == [
        word for m in ("wave", "mel", "sur") for word in ("--codec-dir", m, f"results/codecs/toy/{m}/pgd")
    ]
    assert p.codec_dir_options("toy", "clean") == "--codec-dir clean results/codecs/toy/clean"
    assert p.conditions_option() == "--conditions none flac mp3_32k room"
    outputs = [o.format(dataset="toy", attack="pgd") for o in p.attack_outputs()]
    assert outputs == [f for f in p.prediction_files() if "/pgd/" in f]


def test_the_summary_lists_its_inputs_from_the_grid_not_the_command_line():
    """The summary's command carries the grid, not the file lists (which outgrow a command line at
    cluster scale); the CLI's lists from it are the plan's, in order."""
    import shlex

    from advmir.transfer.cli import grid_files

    p = plan()
    words = shlex.split(p.summary_options())
    options = ("--grid", "--transfer-root", "--codecs-root")
    grid, transfer, codecs = (words[words.index(o) + 1] for o in options)
    assert grid_files(grid, transfer, codecs) == (p.prediction_files(), p.bitrate_files())
    assert not any(f in p.summary_options() for f in p.bitrate_files())


def test_attack_sources_carry_their_matched_noise_control():
    p = plan()
    assert "noise" not in p.codec_inputs("toy", "clean") and p.noise_option("clean", None) == ""
    codec = p.codec_inputs("toy", "mel/pgd")
    assert codec["noise"] == "results/attacks/toy/mel/pgd/matched_noise.npy"
    assert p.noise_option("mel/pgd", codec["noise"]) == f"--noise-audio {codec['noise']}"
    none, mp3 = p.transfer_inputs("toy", "pgd", "none"), p.transfer_inputs("toy", "pgd", "mp3_32k")
    assert none["noise"][1] == "results/attacks/toy/mel/pgd/matched_noise.npy"
    assert mp3["noise"][1] == "results/codecs/toy/mel/pgd/mp3_32k/decoded_noise.npy"
    assert len(mp3["noise"]) == len(mp3["audio"]) == 3
    options = p.source_options("pgd", mp3["audio"], mp3["examples"], mp3["noise"])
    assert f"--noise mel {mp3['noise'][1]}" in options and options.count("--noise ") == 3
    clean = p.transfer_inputs("toy", "clean", "mp3_32k")
    assert "noise" not in clean
    assert "--noise" not in p.source_options("clean", clean["audio"], clean["examples"])


def test_attack_stage_models_sources_and_targets_are_honoured():
    config = copy.deepcopy(CONFIG)
    config["transfer"].update(sources=["wave", "sur"], targets=["mel"], max_examples=50)
    p = plan(config, attacked=lambda attack: ["mel", "sur"])
    assert p.sources() == ["clean", "sur/pgd", "sur/eot"]
    assert p.target_models == ["mel"] and p.max_examples_option("pgd") == "--max-examples 50"
    # the clean source is sized by transfer.clean_examples, not cut to the attacks' first 50
    assert p.max_examples_option("clean") == ""
    assert p.clean_rows_file("toy") == "results/codecs/toy/clean/examples.csv"


def test_eot_pair_and_attack_specs():
    p = plan()
    assert p.eot_options() == "--plain-attack pgd --eot-attack eot"
    config = copy.deepcopy(CONFIG)
    config["transfer"] = {}
    assert "transfer_pgd" in plan(config).attack_specs_json()


def test_bad_transfer_configs_fail_when_the_workflow_starts():
    config = {**copy.deepcopy(CONFIG), "transfer": {"targets": ["cqt"]}}
    with pytest.raises(TransferConfigError, match=r"transfer.targets \['cqt'\] are not models"):
        plan(config)


def test_disabled_stage_has_no_jobs():
    config = copy.deepcopy(CONFIG)
    config["codecs"]["enabled"] = False
    p = plan(config)
    assert p.codec_targets() == [] and p.transfer_targets() == [] and p.sources() == ["clean"]


def test_heatmap_conditions_must_be_none_or_a_setting():
    config = copy.deepcopy(CONFIG)
    config["transfer"]["heatmap_conditions"] = ["none", "mp3_32k", "room"]
    assert plan(config).heatmap_conditions() == "none mp3_32k room"
    config["transfer"]["heatmap_conditions"] = ["none", "mp3_128k"]
    with pytest.raises(TransferConfigError, match=r"heatmap_conditions \['mp3_128k'\]"):
        plan(config)
