"""Shared fixtures: tiny synthetic audio, a tiny rendered dataset, and a whole-workflow runner."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# A few seconds of rendering and training: three families, coarse pitches, one velocity.
TINY_SYNTH = {
    "sample_rate": 16000,
    "clip_seconds": 0.5,
    "note_seconds": 0.35,
    "families": ["bass", "flute", "mallet"],
    "programs_per_family": 3,
    "programs": {},
    "pitch_step": 3,
    "velocities": [100],
    "split": "notes",
    "valid_fraction": 0.2,
    "test_fraction": 0.2,
    "task": "family",
    "soundfonts": ["TimGM6mb", "Merlin"],
}


# `make test` runs the suite on pytest-xdist workers (`-n 2 --no-loadscope-reorder`). Each module
# stays on one worker, so its module fixtures are built once; the modules that read the session's
# whole-workflow run share a worker, so it is built once; and the two longest groups (that run, and
# the SLURM cluster's) are sent first, so that neither ends the suite alone. (xdist's own
# `--dist loadgroup` marks no longer reach its scheduler under pytest 9.2: it renames
# `Item._nodeid`, which pytest no longer reads; hence a scheduler of our own.)
SHARED_GROUPS = {"test_workflow": "tiny_workflow", "test_report": "tiny_workflow"}
LONGEST_FIRST = ("tiny_workflow", "test_slurm")


def worker_group(nodeid: str) -> str:
    """The worker group of a test: its module's name, or the group the module shares."""
    module = Path(nodeid.split("::", 1)[0]).stem
    return SHARED_GROUPS.get(module, module)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest groups first; the order within and among the others is kept (a stable sort)."""
    first = {name: rank for rank, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: first.get(worker_group(item.nodeid), len(first)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """pytest-xdist's scheduler, with :func:`worker_group` as the unit of work a worker takes whole."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return worker_group(nodeid)

    return ModuleGroups(config, log)


@pytest.fixture(scope="module")
def one_torch_thread():
    """The machine is shared: one torch thread for the module that asks for it, restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def best_lag(decoded: np.ndarray, original: np.ndarray) -> int:
    """Lag (samples) maximising the cross-correlation of two 1-D signals; positive: decoded is late."""
    n = len(decoded) + len(original)
    corr = np.fft.irfft(np.fft.rfft(decoded, n) * np.conj(np.fft.rfft(original, n)), n)
    k = int(np.argmax(corr))
    return k if k < n // 2 else k - n


def held_out_clips(dataset_dir: Path, n: int | None = None):
    """The prepared dataset at ``dataset_dir``, its first ``n`` test clips (all when None) as a float
    tensor (n, T) and their labels (n,) int64: ``(dataset, x, y)``."""
    import torch

    from advmir.datasets.contract import load_dataset

    ds = load_dataset(dataset_dir, mmap=False)
    rows = ds.split_indices("test")[:n]
    x = torch.from_numpy(ds.float_waveforms(rows))
    y = torch.from_numpy(ds.manifest["label_idx"].to_numpy()[rows]).long()
    return ds, x, y


def tiny_config(results: Path) -> dict:
    """A whole-workflow config that runs in about a minute on 2 cores."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["results"] = str(results)
    config["device"] = "cpu"
    config["synth_notes"] = dict(TINY_SYNTH)
    config["training"].update(
        {"max_epochs": 8, "min_epochs": 8, "patience": 8, "batch_size": 16, "learning_rate": 0.005}
    )
    config["models"] = {
        "logmel_cnn": {"frontend": "logmel", "arch": "cnn2d", "seed": 0, "arch_args": {"width": 8}},
        "wave_cnn": {"frontend": "waveform", "arch": "cnn1d", "seed": 0, "arch_args": {"width": 8}},
    }
    config["attacks"] = {
        "pgd": {"name": "pgd", "params": {"norm": "linf", "snr_db": 30, "steps": 5}},
        "fgsm": {"name": "fgsm", "params": {"snr_db": 30}, "models": ["logmel_cnn"]},
        "eot_pgd": {
            "name": "eot_pgd",
            "params": {"snr_db": 30, "steps": 3, "eot_samples": 2},
            "models": ["logmel_cnn"],
        },
    }
    config["attack_settings"] = {"eval_size": 12, "batch_size": 8, "listen": 1, "threads": 1}
    config["codecs"]["settings"] = {
        "flac": {"codec": "flac"},
        "mp3_32k": {"codec": "mp3", "bitrate_kbps": 32},
    }
    config["codecs"]["rooms"]["room"]["n_rooms"] = 2
    config["training"]["augment"]["n_rooms"] = 2
    config["training_codecs"]["settings"] = {"mp3_48k": {"codec": "mp3", "bitrate_kbps": 48}}
    config["generalisation"] = {"enabled": True, "splits": ["soundfont"], "models": ["logmel_cnn"]}
    config["transfer"].update(
        {
            "attacks": ["pgd", "eot_pgd"],
            "sources": None,  # config.yaml names its own zoo's sources
            "max_examples": 12,
            "heatmap_conditions": ["none", "mp3_32k"],
        }
    )
    config["anomaly"].update(
        {
            "fraction": 0.3,
            "valid_fraction": 0.3,
            "faults": {"clipping": 6, "white_noise": 20, "truncation": 0.5, "wrong_family": None},
            "detectors": ["clipping", "truncation", "noise_floor", "max_softmax", "label_errors"],
            "models": ["logmel_cnn"],
            "max_train_clips": 64,
            "autoencoder": {"epochs": 1},
            "multitask": {"epochs": 1},
        }
    )
    # Two representations in the tiny zoo (log-mel, raw waveform): each held out once, a few steps.
    config["representation_transfer"] = {
        "enabled": True,
        "members": ["logmel_cnn", "wave_cnn"],
        "eval_size": 6,
        "codecs": ["mp3_32k"],
        "attack": {"steps": 3, "loss": "margin", "kappa": 1.0},
        "feature": {"enabled": True, "frontends": ["stft", "logmel"], "steps": 2},
    }
    # One tiny defended model (fast_at, a short guard) and a small ensemble on the attack stage's 12
    # clips; one tiny augmented model (adv_aug, two epochs fine-tuned from its twin, on every split)
    # for the augmentation table only: the robust evaluation names the other two.
    config["defenses"] = {
        "enabled": True,
        "models": {
            "logmel_cnn_fast_at": {
                "model": "logmel_cnn",
                "mode": "fast_at",
                "snr_db": 30,
                "guard_clips": 16,
                "guard_steps": 2,
                "training": {"max_epochs": 4, "min_epochs": 4},
            },
            "logmel_cnn_adv_aug": {
                "model": "logmel_cnn",
                "mode": "adv_aug",
                "snr_db": 45,
                "init": "twin",
                "training": {"max_epochs": 2, "min_epochs": 2},
            },
        },
        "evaluation": {
            "models": ["logmel_cnn", "logmel_cnn_fast_at"],
            "budgets_db": [40, 20],
            "ensemble": {
                "apgd_ce": {"name": "apgd_ce", "params": {"steps": 5}},
                "apgd_t": {"name": "apgd_t", "params": {"steps": 5, "n_target_classes": 2}},
                "square": {"name": "square", "params": {"n_queries": 20}},
            },
            "sanity": {"transfer_steps": 5},
        },
    }
    return config


def checked_config(config: dict) -> dict:
    """A copy of ``config`` as the workflow sees it: validated (defaults filled), checked, defenses
    expanded into the zoo."""
    from advmir.config import SCHEMAS, check_config, validate_config

    config = copy.deepcopy(config)
    validate_config(config, SCHEMAS / "config.schema.yaml")
    check_config(config)
    return config


def zoo_models(config: dict) -> list[str]:
    """Every model the workflow trains for ``config``: the zoo and the defended models."""
    defenses = config.get("defenses") or {}
    return [*config["models"], *(defenses.get("models") or {} if defenses.get("enabled") else {})]


@pytest.fixture
def sines() -> np.ndarray:
    """Four 0.25 s sines at 16 kHz (220, 440, 880, 1760 Hz), float32, shape (4, 4000)."""
    t = np.arange(4000) / 16000
    return np.stack([0.5 * np.sin(2 * np.pi * f * t) for f in (220, 440, 880, 1760)]).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synth_notes config rendered once per session, in the data contract."""
    from advmir.datasets.synth_notes import SynthNotesConfig, render_to

    out = tmp_path_factory.mktemp("data") / "synth_notes"
    render_to(out, SynthNotesConfig(**TINY_SYNTH))
    return out


#: The tiny workflow's ensemble: the two zoo models of two representations.
ENSEMBLE = "tiny_ens"
#: The tiny workflow's model of your own: its classes include one the tiny data does not have.
OWN_MODEL = "my_model"
OWN_CLASSES = ["bass", "flute", "mallet", "organ"]


def own_model_entry(dataset_dir: Path, folder: Path) -> dict:
    """A model of your own for the tiny config: the TorchScript export of a tiny log-mel CNN at
    22.05 kHz with 2-s input, trained here on the tiny data (tests/tiny_external.py)."""
    from tiny_external import RATE, SECONDS, export, train_external

    folder.mkdir(parents=True, exist_ok=True)
    path = export(train_external(dataset_dir, OWN_CLASSES), folder / "my_model.pt")
    return {
        "source": "torchscript",
        "path": str(path),
        "sample_rate": RATE,
        "input_seconds": SECONDS,
        "classes": list(OWN_CLASSES),
    }


@pytest.fixture(scope="session")
def tiny_workflow(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> tuple[Path, dict]:
    """The whole workflow run once per session on the tiny config, plus a model of your own
    (:func:`own_model_entry`) and an ensemble of the two zoo models (:data:`ENSEMBLE`, also on the
    generalisation split), which every stage treats as zoo models: (work folder, config)."""
    work = tmp_path_factory.mktemp("workflow")
    config = tiny_config(work / "results")
    config["models"][OWN_MODEL] = own_model_entry(tiny_dataset, work / "own")
    config["models"][ENSEMBLE] = {"members": ["logmel_cnn", "wave_cnn"]}
    config["generalisation"]["models"].append(ENSEMBLE)
    run_snakemake(work, config, "--cores", "2")
    return work, config


def snakemake_command(workdir: Path, config: dict, *args: str) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run the repo's Snakefile in ``workdir`` with ``config``
    (written to workdir/config.yaml), jobs calling this interpreter's ``python -m advmir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(workdir / "config.yaml"),
        *args,
    ]  # fmt: skip
    return cmd, env


def run_snakemake(workdir: Path, config: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the repo's Snakefile in ``workdir`` with ``config`` (written to workdir/config.yaml)."""
    cmd, env = snakemake_command(workdir, config, *args)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def announce(config: pytest.Config, tag: str, message: str) -> None:
    """Print ``[tag] message`` past pytest's output capture, so that it shows even without -rs."""
    capture = config.pluginmanager.get_plugin("capturemanager")
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if capture is None or reporter is None:
        print(f"[{tag}] {message}", file=sys.__stderr__)
        return
    with capture.global_and_fixture_disabled():
        reporter.ensure_newline()
        reporter.write_line(f"[{tag}] {message}", yellow=True)


def skip_loudly(config: pytest.Config, tag: str, reason: str) -> None:
    """Skip the test and print the reason where a person reads the run, never silently."""
    announce(config, tag, f"SKIPPED: {reason}")
    pytest.skip(reason)
