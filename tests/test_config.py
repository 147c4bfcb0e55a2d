import copy
import re
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from advmir.config import (
    ConfigError,
    check_config,
    check_device,
    check_yaml,
    submits_elsewhere,
    training_for,
    validate_config,
)
from conftest import run_snakemake, skip_loudly

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")


@pytest.fixture
def config():
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_default_config_is_valid(config):
    validate(config, SCHEMA)
    check_config(config)


def with_value(config: dict, path: tuple, value) -> dict:
    """A deep copy of ``config`` with the key at ``path`` set to ``value``."""
    bad = copy.deepcopy(config)
    node = bad
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return bad


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        (("synth_notes", "split"), "random", ["random", "notes", "instruments"]),
        (("synth_notes", "families"), ["bass", "kazoo"], ["kazoo", "keyboard"]),
        (("synth_notes", "sample_rate"), 0, ["sample_rate", "1000"]),
        (("synth_notes", "clip_seconds"), -1.0, ["clip_seconds"]),
        (("training", "max_epochs"), "ten", ["max_epochs", "ten"]),
        (("device",), "tpu", ["device", "tpu"]),
        (("models", "logmel_cnn", "frontend"), "mfcc", ["mfcc", "logmel"]),
        (("synth_notes", "velocity"), [1], ["velocity"]),
    ],
)
def test_schema_names_the_bad_key(config, path, value, words):
    bad = with_value(config, path, value)
    with pytest.raises(WorkflowError) as info:
        validate(bad, SCHEMA)
    message = str(info.value)
    for word in words:
        assert word in message


def test_cross_key_checks(config):
    bad = copy.deepcopy(config)
    bad["synth_notes"]["note_seconds"] = 2.0
    bad["models"]["wave_cnn"]["arch"] = "cnn1d"  # a 2-D (filterbank) front-end under a 1-D net
    bad["datasets"] = ["synth_notes", "gtzan"]
    with pytest.raises(ConfigError) as info:
        check_config(bad)
    message = str(info.value)
    assert "note_seconds" in message and "wave_cnn" in message and "gtzan" in message


def test_paper_config_dry_run_lists_the_full_sweep(tmp_path):
    """config/paper.yaml: every model, every (model, attack) cell, every codec setting and every
    defended model's training and robust evaluation is a job."""
    paper = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    paper["results"] = str(tmp_path / "results")
    out = run_snakemake(tmp_path, paper, "-n").stdout
    counts = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", out, re.M)}
    cells = sum(
        len(a.get("models") or [m for m in paper["models"] if m != a.get("surrogate")])
        for a in paper["attacks"].values()
    )
    # the defended models are zoo models too (attacks without `models` run on the undefended zoo);
    # an ensemble is assembled, not trained
    defended = paper["defenses"]["models"]
    ensembles = [m for m, spec in paper["models"].items() if "members" in spec]
    assert counts["train_model"] == len(paper["models"]) - len(ensembles) + len(defended)
    assert counts["assemble_ensemble"] == len(ensembles) >= 1
    attacked = [d for d in defended.values() if d["mode"] != "gaussian"]  # gaussian: certified instead
    assert counts["evaluate_robustness"] == len(attacked) + len({d["model"] for d in attacked})
    assert counts["certify_smoothed"] == len(paper["defenses"]["smoothing"]) >= 1
    assert counts["evaluate_detection"] == len(paper["defenses"]["detection"]["models"]) >= 1
    assert counts["craft_adversarial"] == cells, counts
    # every codec setting on the clean set and on each attack sent through the codecs
    sent = paper["transfer"]["attacks"] or paper["attacks"]
    assert counts["encode_with_codec"] >= len(paper["codecs"]["settings"]) * (1 + len(sent))
    # the pitch stage: each tracker clean, and each tracker x attack
    assert counts["track_pitch"] == len(paper["pitch"]["trackers"]) == 3
    assert counts["attack_pitch"] == len(paper["pitch"]["trackers"]) * len(paper["pitch"]["attacks"])
    assert counts["total"] > 1000, counts


def test_the_longest_training_has_the_highest_priority(config):
    """Snakemake starts the ready training with the highest priority first: the default zoo's
    costliest (wave_cnn and stft_cnn at width 48: about 440 and 410 CPU s) before logmel_cnn and its
    surrogate, and a defended model's adversarial passes count."""
    from advmir.config import expand_defenses, training_gate_priority, training_priority

    zoo = {
        m: training_priority(config, m)
        for m in ("stft_cnn", "wave_cnn", "logmel_cnn", "surrogate_logmel_cnn")
    }
    # the surrogate: half the clips for twice the epochs, logmel_cnn's cost
    assert min(zoo["wave_cnn"], zoo["stft_cnn"]) > zoo["logmel_cnn"] >= zoo["surrogate_logmel_cnn"] >= 1
    assert training_priority(config, "logmel_cnn", split=True) >= 1
    defended = copy.deepcopy(config)
    defended["defenses"]["enabled"] = True
    defended["defenses"]["models"] = {
        "logmel_pgd": {"model": "logmel_cnn", "mode": "pgd_at", "snr_db": 40, "steps": 5}
    }
    expand_defenses(defended)
    assert training_priority(defended, "logmel_pgd") > 5 * zoo["logmel_cnn"]
    # the codec versions of the training clips, which every training waits on, come before them all
    gate = training_gate_priority(defended)
    assert gate > training_priority(defended, "logmel_pgd") and gate > zoo["wave_cnn"]


def test_codec_jobs_per_source_cut_the_same_work_into_one_job_per_source(tmp_path, config):
    """codecs.jobs: source: one job per (dataset, source) for every codec and room setting, and one
    transfer evaluation per (dataset, attack) for every condition instead of one per condition;
    an unknown mode is refused by the schema."""
    counts = {}
    for mode in ("setting", "source"):
        cfg = copy.deepcopy(config)
        cfg["codecs"]["jobs"] = mode
        cfg["results"] = str(tmp_path / mode / "results")
        (tmp_path / mode).mkdir()
        out = run_snakemake(tmp_path / mode, cfg, "-n").stdout
        counts[mode] = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", out, re.M)}
    per_setting, per_source = counts["setting"], counts["source"]
    settings = len(config["codecs"]["settings"]) + len(config["codecs"]["rooms"])
    assert per_source["transform_clean_source"] == 1 and per_source["transform_source"] >= 1
    assert "encode_with_codec" not in per_source and "transform_source" not in per_setting
    sources = per_source["transform_source"] + per_source["transform_clean_source"]
    codec_jobs = sum(
        per_setting[r]
        for r in ("encode_with_codec", "encode_clean_with_codec", "simulate_room", "simulate_clean_room")
    )
    assert codec_jobs == sources * settings
    attacks = per_source["evaluate_transfer_all_conditions"]
    assert "evaluate_transfer" not in per_source and "evaluate_transfer_all_conditions" not in per_setting
    assert per_setting["evaluate_transfer"] == attacks * (settings + 1)  # + condition `none`
    evaluations = per_setting["evaluate_transfer"] - attacks
    assert per_source["total"] == per_setting["total"] - codec_jobs + sources - evaluations
    with pytest.raises(WorkflowError, match="jobs"):
        validate(with_value(config, ("codecs", "jobs"), "cell"), SCHEMA)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda c: c["training"]["augment"].update(noise_snr_db=[60, 20]), ["noise_snr_db is inverted"]),
        (lambda c: c["training"].update(min_epochs=20, max_epochs=10), ["min_epochs (20) exceeds"]),
        (
            lambda c: c["training_codecs"]["settings"].update(again={"codec": "mp3", "bitrate_kbps": 128}),
            ["['again']", "equal evaluation settings"],
        ),
        (lambda c: c["synth_notes"].update(soundfonts=["TimGM6mb"]), ["soundfont", "needs >= 2 soundfonts"]),
        (lambda c: c["generalisation"].update(models=["cqt_cnn"]), ["generalisation.models", "cqt_cnn"]),
        (lambda c: c["synth_notes"].update(programs={"bass": [33]}, families=["reed", "flute"]), ["'bass'"]),
    ],
)
def test_cross_key_checks_of_training_and_data(config, change, words):
    bad = copy.deepcopy(config)
    change(bad)
    validate(bad, SCHEMA)  # each is schema-valid: only the cross-key check can catch it
    with pytest.raises(ConfigError) as info:
        check_config(bad)
    for word in words:
        assert word in str(info.value)


def test_dry_run_refuses_an_inverted_noise_range_before_any_job(tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["results"] = str(tmp_path / "results")
    config["training"]["augment"]["noise_snr_db"] = [60, 20]
    proc = run_snakemake(tmp_path, config, "-n", check=False)
    assert proc.returncode != 0
    assert "noise_snr_db is inverted" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_a_model_overrides_one_augmentation_key_and_keeps_the_others(config):
    config["models"]["logmel_cnn"]["training"] = {"max_epochs": 3, "augment": {"room_prob": 0.9}}
    own, other = training_for(config, "logmel_cnn"), training_for(config, "wave_cnn")
    assert own["max_epochs"] == 3 and own["augment"]["room_prob"] == 0.9
    assert {k: v for k, v in own["augment"].items() if k != "room_prob"} == {
        k: v for k, v in config["training"]["augment"].items() if k != "room_prob"
    }
    assert other["augment"] == config["training"]["augment"]
    config["models"]["logmel_cnn"]["training"]["augment"]["noise_snr_db"] = [60, 20]
    with pytest.raises(ConfigError, match=r"models\.logmel_cnn: .*noise_snr_db is inverted"):
        check_config(config)


def test_generalisation_training_overrides_the_split_models_only(config):
    from advmir.config import split_training_for

    config["generalisation"]["training"] = {"max_epochs": 5, "min_epochs": 2, "augment": {"eq_prob": 0.0}}
    split = split_training_for(config, "stft_cnn")
    assert (split["max_epochs"], split["min_epochs"], split["augment"]["eq_prob"]) == (5, 2, 0.0)
    assert split["augment"]["room_prob"] == training_for(config, "stft_cnn")["augment"]["room_prob"]
    assert training_for(config, "stft_cnn")["max_epochs"] == config["training"]["max_epochs"]
    config["generalisation"]["training"] = {"max_epochs": 5}  # below the default min_epochs
    expected = r"generalisation\.training: min_epochs \(\d+\) exceeds max_epochs \(5\)"
    with pytest.raises(ConfigError, match=expected):
        check_config(config)


def test_augmentation_defenses_join_the_generalisation_models_and_every_model_is_a_transfer_target(config):
    """An adv_aug defense of a generalisation model is trained on the splits too (the augmentation
    study scores it there); a robust-training defense is not, unless named. The transfer stage
    scores every model, defended ones too."""
    from advmir.config import generalisation_models
    from advmir.transfer.plan import TransferPlan

    config["defenses"]["enabled"] = True
    config["defenses"]["models"]["logmel_cnn_adv_aug"] = {
        "model": "logmel_cnn",
        "mode": "adv_aug",
        "snr_db": 45,
    }
    config["defenses"]["models"]["stft_cnn_adv_aug"] = {"model": "stft_cnn", "mode": "adv_aug", "snr_db": 45}
    validate_config(config, SCHEMA)
    check_config(config)
    # config.yaml names models per split: a list for each, the union on the default split
    assert generalisation_models(config, "soundfont") == ["logmel_cnn", "logmel_cnn_adv_aug"]
    instruments = ["logmel_cnn", "logmel_cnn_seed1", "logmel_cnn_ens", "logmel_cnn_adv_aug"]
    assert generalisation_models(config, "instruments") == generalisation_models(config) == instruments
    stray = copy.deepcopy(config)
    stray["generalisation"]["models"]["instrument"] = ["logmel_cnn"]
    with pytest.raises(ConfigError, match=r"generalisation.models: \['instrument'\] are not splits"):
        check_config(stray)
    config["generalisation"]["models"] = ["logmel_cnn", "logmel_cnn_fast_at_ft"]
    assert generalisation_models(config) == ["logmel_cnn", "logmel_cnn_fast_at_ft", "logmel_cnn_adv_aug"]
    plan = TransferPlan(config, "r", ["synth_notes"], config["models"])
    assert set(plan.target_models) == set(config["models"]) and "logmel_cnn_fast_at_ft" in plan.target_models
    config["defenses"]["enabled"] = False
    assert generalisation_models(config) == ["logmel_cnn", "logmel_cnn_fast_at_ft"]


FGSM_STEPS = {"name": "fgsm", "params": {"snr_db": 30, "steps": 5}}
PGD_L2_ENVELOPE = {"name": "pgd", "params": {"snr_db": 30, "steps": 10, "envelope": 0.5, "norm": "l2"}}


@pytest.mark.parametrize(
    ("section", "change", "words"),
    [
        # the schema allows `steps` (other attacks take it), FGSM does not: refused by name at DAG time
        ("attacks", {"fgsm_steps": FGSM_STEPS}, ["fgsm_steps", "steps"]),
        # a value each key allows, in a combination PGD refuses (a loudness envelope is L-inf only)
        ("attacks", {"pgd_l2_envelope": PGD_L2_ENVELOPE}, ["pgd_l2_envelope", "envelope"]),
        # AAC at 16 kHz delivers at most 64 kbps: 320 cannot be honoured
        ("codecs", {"aac_320k": {"codec": "aac", "bitrate_kbps": 320}}, ["aac_320k", "320"]),
    ],
)
def test_dry_run_refuses_a_parameter_the_attack_or_codec_cannot_take(tmp_path, section, change, words):
    """Each attack is built and each codec setting checked when the DAG is built: `snakemake -n`
    stops with the attack or setting and the parameter named, before any job."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["results"] = str(tmp_path / "results")
    if section == "attacks":
        config["attacks"].update(change)
    else:
        config["codecs"]["settings"].update(change)
    proc = run_snakemake(tmp_path, config, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    for word in words:
        assert word in out, out[-2000:]
    assert "Job stats" not in out and not (tmp_path / "results").exists()


SHORT_CASES = [
    (("synth_notes", "split"), "random", ["synth_notes.split", "random", "instruments"]),
    (("synth_notes", "sample_rate"), 0, ["synth_notes.sample_rate", "1000"]),
    (("device",), "tpu", ["device", "tpu", "cuda:N"]),
    (("synth_notes", "velocity"), [1], ["synth_notes", "velocity"]),
    (("traning",), {}, ["top level", "traning"]),
    (("seed",), 2**32, ["seed", "4294967295"]),
    (("attacks", "pgd", "params", "snr_db"), -5, ["attacks.pgd.params.snr_db", "-5", "minimum of 0"]),
    (("attacks", "pgd", "params", "snr_db"), 150, ["attacks.pgd.params.snr_db", "maximum of 100"]),
    (("attacks", "pgd", "params"), {"steps": 3}, ["attacks.pgd.params", "eps or snr_db"]),
]


@pytest.mark.parametrize(("path", "value", "words"), SHORT_CASES)
def test_schema_error_is_a_few_lines_naming_the_key(config, path, value, words):
    bad = with_value(config, path, value)
    with pytest.raises(ConfigError) as info:
        validate_config(bad, SCHEMA)
    message = str(info.value)
    assert len(message.splitlines()) <= 4, message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda c: c["attacks"].update(clean={"name": "noise", "params": {"snr_db": 30}}), ["attacks.clean"]),
        (lambda c: c.update(results="/"), ["results", "filesystem root"]),
        (lambda c: c.update(results=str(REPO)), ["results", "repository itself"]),
        (lambda c: c.update(results=str(REPO / "src/advmir/out")), ["results", "src/"]),
        (lambda c: c.update(results=str(REPO / "src")), ["results", "src/"]),
    ],
)
def test_reserved_attack_name_and_unsafe_results_are_refused(config, change, words):
    bad = copy.deepcopy(config)
    change(bad)
    validate(bad, SCHEMA)
    with pytest.raises(ConfigError) as info:
        check_config(bad)
    for word in words:
        assert word in str(info.value)


def test_results_folders_of_their_own_are_accepted(config, tmp_path):
    for results in ("results", str(tmp_path / "my results"), str(REPO / "results_paper")):
        check_config({**config, "results": results})


def test_cuda_without_a_gpu_is_refused(monkeypatch):
    import torch

    check_device("auto")
    check_device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match=rf"device: {device} .*set device: auto .* cpu"):
            check_device(device)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    check_device("cuda:0")
    with pytest.raises(ConfigError, match=r"cuda:3 .* 1 CUDA GPU"):
        check_device("cuda:3")


@pytest.mark.parametrize(
    ("argv", "environ", "elsewhere"),
    [
        (["snakemake", "--cores", "2"], {}, False),
        (["snakemake", "--profile", "workflow/profiles/slurm"], {}, True),
        (["snakemake", "--executor=slurm"], {}, True),
        (["snakemake", "-e", "slurm"], {}, True),
        (["snakemake", "-n"], {"SNAKEMAKE_PROFILE": "slurm"}, True),
    ],
)
def test_a_cluster_submission_is_told_apart(argv, environ, elsewhere):
    assert submits_elsewhere(argv, environ) is elsewhere


def test_yaml_syntax_error_names_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("results: results\nseed: [0\ndevice: auto\n")
    assert check_yaml([str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3:" in err and "YAML" in err
    good = tmp_path / "good.yaml"
    good.write_text("results: results\n")
    assert check_yaml([str(good)]) == 0


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda c: c.update(traning={}), ["traning", "top level"]),
        (lambda c: c["attacks"]["pgd"]["params"].update(snr_db=-20), ["attacks.pgd.params.snr_db", "-20"]),
    ],
)
def test_dry_run_schema_error_is_short(tmp_path, change, words):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["results"] = str(tmp_path / "results")
    change(config)
    proc = run_snakemake(tmp_path, config, "-n", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr  # Snakemake 9 prints its errors on stdout
    assert len(out.splitlines()) < 30, out
    for word in words:
        assert word in out
    assert not (tmp_path / "results").exists()


def test_dry_run_refuses_cuda_without_a_gpu(tmp_path, request):
    import torch

    if torch.cuda.is_available():
        skip_loudly(request.config, "test_config", "this machine has a CUDA GPU")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config.update(results=str(tmp_path / "results"), device="cuda")
    proc = run_snakemake(tmp_path, config, "-n", check=False)
    assert proc.returncode != 0
    assert "device: cuda" in proc.stdout + proc.stderr and "device: auto" in proc.stdout + proc.stderr


def test_an_overlay_given_as_the_full_config_is_named_with_its_option(capsys):
    """`make run CONFIG=config/nsynth.yaml` (an overlay where a whole config belongs): one line that
    says it is an overlay and how to run it, not the schema's "'results' is a required property"."""
    overlay = str(REPO / "config" / "nsynth.yaml")
    assert check_yaml(["--full", overlay]) == 1
    assert f"make run OVERLAY={overlay}" in capsys.readouterr().err
    assert check_yaml(["--full", str(REPO / "config.yaml"), overlay]) == 0


def test_the_lowpass_bound_follows_the_sample_rate(config):
    """A 10 kHz low-pass fault is valid on 44.1 kHz audio (the schema's bound is not fixed for
    16 kHz); on 16 kHz audio it is refused with the rate's own bound."""
    from advmir.anomaly.corruptions import CorruptionConfigError, normalize_severities

    ok = with_value(config, ("anomaly", "faults"), {"lowpass": 10000})
    validate_config(ok, SCHEMA)
    assert normalize_severities({"lowpass": 10000}, 44100) == {"lowpass": [10000.0]}
    with pytest.raises(CorruptionConfigError, match=r"\[50, 7840\]"):
        normalize_severities({"lowpass": 10000}, 16000)


def test_dry_run_refuses_a_clip_shorter_than_a_models_window(tmp_path):
    """A clip shorter than the log-mel's 1024-sample window failed in the training job, after the
    data stage had run; now `snakemake -n` names the model, the dataset and the key to change."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["results"] = str(tmp_path / "results")
    config["synth_notes"].update(clip_seconds=0.02, note_seconds=0.01)
    proc = run_snakemake(tmp_path, config, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "models.logmel_cnn: cannot take a 0.02 s clip of synth_notes (320 samples" in out, out[-2000:]
    assert "synth_notes.clip_seconds" in out and not (tmp_path / "results").exists()
