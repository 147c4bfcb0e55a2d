"""The job grid of the codec stage and its config checks (advmir.codecs.plan, used by codecs.smk)."""

from __future__ import annotations

import copy

import pandas as pd
import pytest

from advmir.codecs import CodecSettingError
from advmir.codecs.plan import CodecConfigError, CodecPlan, alternatives

MODELS = {
    "wave": {"frontend": "waveform", "arch": "cnn1d"},
    "mel": {"frontend": "logmel", "arch": "cnn2d"},
}
CONFIG = {
    "datasets": ["toy"],
    "toy": {"sample_rate": 16000},
    "models": MODELS,
    "attacks": {"pgd": {"name": "pgd", "params": {"eps": 0.002}}, "fgsm": {"name": "fgsm"}},
    "codecs": {
        "settings": {"flac": {"codec": "flac"}, "mp3_32k": {"codec": "mp3", "bitrate_kbps": 32}},
        "rooms": {"room": {"n_rooms": 2}},
    },
    "transfer": {"attacks": ["pgd"]},
}


def plan(config: dict | None = None, attacked=None) -> CodecPlan:
    return CodecPlan(config or CONFIG, "results", ["toy"], MODELS, attacked)


def test_one_job_per_source_and_setting():
    p = plan()
    assert p.sources() == ["clean", "wave/pgd", "mel/pgd"]
    targets = p.codec_targets()  # the room tables; the bitrates are the transfer summary's inputs
    assert targets == [f"results/codecs/toy/{s}/room/channel.csv" for s in p.sources()]
    assert p.codec_setting_json("mp3_32k") == '{"bitrate_kbps": 32, "codec": "mp3"}'
    assert p.room_setting_json("room") == '{"n_rooms": 2}'
    assert p.setting_specs["flac"]["kind"] == "codec" and p.setting_specs["flac"]["lossless"]
    assert p.setting_specs["room"]["kind"] == "room"


def test_inputs_and_options_of_a_job():
    p = plan()
    assert p.codec_inputs("toy", "clean") == {"examples": "results/codecs/toy/clean/examples.csv"}
    assert p.clean_size_option() == ""  # every test clip
    assert p.audio_option("clean", None) == "" and p.noise_option("clean", None) == ""
    attack = p.codec_inputs("toy", "wave/pgd")
    assert attack == {
        "examples": "results/attacks/toy/wave/pgd/examples.csv",
        "audio": "results/attacks/toy/wave/pgd/adversarial.npy",
        "noise": "results/attacks/toy/wave/pgd/matched_noise.npy",
    }
    assert p.audio_option("wave/pgd", attack["audio"]) == f"--audio {attack['audio']}"
    assert p.max_examples_option("wave/pgd") == ""
    config = copy.deepcopy(CONFIG)
    config["transfer"].update(sources=["mel"], max_examples=8, rows_file="{results}/rows/{dataset}.csv")
    p = plan(config, attacked=lambda attack: ["wave", "mel"])
    assert p.sources() == ["clean", "mel/pgd"] and p.max_examples_option("mel/pgd") == "--max-examples 8"
    assert p.max_examples_option("clean") == ""
    assert p.clean_rows_file("toy") == "results/rows/toy.csv"


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (
            {"transfer": {"attacks": ["cw"]}},
            CodecConfigError,
            r"transfer.attacks \['cw'\] are not attacks",
        ),
        (
            {"codecs": {"settings": {"room": {"codec": "flac"}}, "rooms": {"room": {}}}},
            CodecConfigError,
            "unique",
        ),
        ({"codecs": {"settings": {"none": {"codec": "flac"}}}}, CodecConfigError, "not `none`"),
        (
            {"transfer": {"sources": ["cqt"]}},
            CodecConfigError,
            r"transfer.sources \['cqt'\] are not models",
        ),
        (
            {"codecs": {"settings": {"opus_1k": {"codec": "opus", "bitrate_kbps": 1}}}},
            CodecSettingError,
            "opus_1k",
        ),
        ({"codecs": {"rooms": {"far": {"distance_m": [1, 30]}}}}, CodecSettingError, "far"),
        (
            {"transfer": {"clean_examples": 10}, "attack_settings": {"eval_size": 200}},
            CodecConfigError,
            r"transfer.clean_examples \(10\) must be at least attack_settings.eval_size \(200\)",
        ),
    ],
)
def test_bad_configs_fail_when_the_workflow_starts(change, error, match):
    config = {**copy.deepcopy(CONFIG), **change}
    with pytest.raises(error, match=match):
        plan(config)


def test_disabled_stage_has_no_jobs():
    config = copy.deepcopy(CONFIG)
    config["codecs"]["enabled"] = False
    p = plan(config)
    assert p.codec_targets() == [] and p.sources() == ["clean"]
    assert alternatives([]) == "(?!x)x" and alternatives(["a.b"]) == r"a\.b"


def test_clean_clips_are_nested_with_the_attack_subset(tiny_dataset, tmp_path):
    from advmir.cli import main
    from advmir.datasets.contract import evaluation_rows, load_dataset

    dataset = load_dataset(tiny_dataset)
    test_rows = dataset.split_indices("test")
    out = tmp_path / "examples.csv"
    command = ["select-clean-clips", "--dataset-dir", str(tiny_dataset), "--seed", "3", "--out", str(out)]
    assert main(command) == 0
    every = pd.read_csv(out)
    assert every["row"].tolist() == test_rows.tolist()  # default: every test clip, sorted
    assert (every["label_idx"].to_numpy() == dataset.manifest["label_idx"].to_numpy()[test_rows]).all()
    size = len(test_rows) // 2
    assert main([*command, "--size", str(size)]) == 0
    half = set(pd.read_csv(out)["row"])
    attacked = set(evaluation_rows(test_rows, size // 2, 3))  # the attack stage's subset, same seed
    assert len(half) == size and attacked <= half
    assert main([*command, "--size", "0"]) == 2  # a bad size: one line, exit 2
