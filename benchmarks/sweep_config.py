"""A sweep about ten times the size of config/paper.yaml, for planning cluster runs and timing DAG builds.

    python benchmarks/sweep_config.py [--base config/paper.yaml] [--out sweep10x.yaml]
        [--seeds 2] [--budgets 20 30 40] [--no-extra-codecs] [--codec-jobs source|setting]

From the base config it adds:
- models: every zoo model (surrogates and ensembles aside) under `--seeds` more seeds (`NAME_sK`);
- budgets: every attack with an SNR budget again at each of `--budgets` it does not already
  use (`NAME_dbB`), with the same models, threat and surrogate;
- codec settings: more bitrates of each codec (`--extra-codecs`, on by default), none equal to a
  training_codecs setting (check_config refuses those);
- `codecs.jobs: source` (`--codec-jobs`, the default): one codec-stage job per source for all its
  settings instead of one per (source, setting): 6,652 jobs instead of 97,081, and `snakemake -n`
  takes 3.5 CPU minutes here instead of 9.4 (README, cluster section).

The codec and transfer stages grow with models x attacks x settings, so the default (2 more seeds,
budgets 20/30/40 dB, 27 more codec settings) gives about 10x the jobs of config/paper.yaml
(`snakemake -n` prints the count). Everything else (datasets, training, defenses, anomaly) is the
base's. The output is a full config: run it with `--configfile OUT --replace-workflow-config`.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

# More settings per codec, each one the codec honours (advmir.codecs.registry): MP3 above 160 kbps
# and AAC above 64 kbps need 44.1 kHz; Opus from 10 kbps; Vorbis quality -1..10.
EXTRA_CODECS = {
    "mp3_8k": {"codec": "mp3", "bitrate_kbps": 8},
    "mp3_16k": {"codec": "mp3", "bitrate_kbps": 16},
    "mp3_40k": {"codec": "mp3", "bitrate_kbps": 40},
    "mp3_56k": {"codec": "mp3", "bitrate_kbps": 56},
    "mp3_144k": {"codec": "mp3", "bitrate_kbps": 144},
    "mp3_112k_44k": {"codec": "mp3", "bitrate_kbps": 112, "sample_rate": 44100},
    "mp3_224k": {"codec": "mp3", "bitrate_kbps": 224, "sample_rate": 44100},
    "mp3_128k_44k": {"codec": "mp3", "bitrate_kbps": 128, "sample_rate": 44100},
    "aac_16k": {"codec": "aac", "bitrate_kbps": 16},
    "aac_24k": {"codec": "aac", "bitrate_kbps": 24},
    "aac_80k": {"codec": "aac", "bitrate_kbps": 80, "sample_rate": 44100},
    "aac_112k": {"codec": "aac", "bitrate_kbps": 112, "sample_rate": 44100},
    "aac_160k": {"codec": "aac", "bitrate_kbps": 160, "sample_rate": 44100},
    "aac_176k": {"codec": "aac", "bitrate_kbps": 176, "sample_rate": 44100},
    "vorbis_q5": {"codec": "vorbis", "quality": 5},
    "vorbis_q7": {"codec": "vorbis", "quality": 7},
    "vorbis_q9": {"codec": "vorbis", "quality": 9},
    "vorbis_q10": {"codec": "vorbis", "quality": 10},
    "opus_28k": {"codec": "opus", "bitrate_kbps": 28},
    "opus_56k": {"codec": "opus", "bitrate_kbps": 56},
    "opus_80k": {"codec": "opus", "bitrate_kbps": 80},
    "opus_96k": {"codec": "opus", "bitrate_kbps": 96},
    "opus_128k": {"codec": "opus", "bitrate_kbps": 128},
    "opus_160k": {"codec": "opus", "bitrate_kbps": 160},
    "opus_192k": {"codec": "opus", "bitrate_kbps": 192},
    "opus_256k": {"codec": "opus", "bitrate_kbps": 256},
    "opus_18k": {"codec": "opus", "bitrate_kbps": 18},
}


def _same_setting(a: dict, b: dict) -> bool:
    keys = ("codec", "bitrate_kbps", "quality", "sample_rate")
    return all(a.get(k) == b.get(k) for k in keys)


def scale_config(
    base: dict,
    seeds: int = 2,
    budgets: tuple[float, ...] = (20, 30, 40),
    extra_codecs: bool = True,
    codec_jobs: str = "source",
) -> dict:
    """BASE grown by more model seeds, attack budgets and codec settings (see the module docstring)."""
    config = copy.deepcopy(base)
    models = config["models"]
    for name, spec in list(models.items()):
        if spec.get("train_subset") or "members" in spec:  # surrogates keep their one seed; ensembles
            continue  # are assembled from seeds that are there
        for k in range(1, seeds + 1):
            models[f"{name}_s{k}"] = {**copy.deepcopy(spec), "seed": int(spec.get("seed", 0)) + 10 * k}
    attacks = config["attacks"]
    for name, spec in list(attacks.items()):
        snr = spec.get("params", {}).get("snr_db")
        if snr is None:
            continue
        for budget in budgets:
            if float(budget) == float(snr):
                continue
            variant = copy.deepcopy(spec)
            variant["params"]["snr_db"] = budget
            attacks[f"{name}_db{budget:g}"] = variant
    if extra_codecs:
        settings = config["codecs"]["settings"]
        training = list(config.get("training_codecs", {}).get("settings", {}).values())
        for name, setting in EXTRA_CODECS.items():
            taken = [*settings.values(), *training]
            if name not in settings and not any(_same_setting(setting, t) for t in taken):
                settings[name] = dict(setting)
    config["codecs"]["jobs"] = codec_jobs
    config["results"] = str(config["results"]).rstrip("/") + "_10x"
    return config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=REPO / "config" / "paper.yaml")
    parser.add_argument("--out", type=Path, default=Path("sweep10x.yaml"))
    parser.add_argument("--seeds", type=int, default=2, help="more seeds of every zoo model")
    parser.add_argument("--budgets", type=float, nargs="*", default=[20, 30, 40], help="SNR budgets in dB")
    parser.add_argument("--no-extra-codecs", dest="extra_codecs", action="store_false")
    parser.add_argument(
        "--codec-jobs",
        choices=["source", "setting"],
        default="source",
        help="codecs.jobs of the sweep: one codec job per source (default) or per (source, setting)",
    )
    args = parser.parse_args(argv)
    base = yaml.safe_load(args.base.read_text())
    config = scale_config(base, args.seeds, tuple(args.budgets), args.extra_codecs, args.codec_jobs)
    args.out.write_text(yaml.safe_dump(config, sort_keys=False))
    print(
        f"{args.out}: {len(config['models'])} models (base {len(base['models'])}), "
        f"{len(config['attacks'])} attacks (base {len(base['attacks'])}), "
        f"{len(config['codecs']['settings'])} codec settings (base {len(base['codecs']['settings'])})"
    )


if __name__ == "__main__":
    main()
