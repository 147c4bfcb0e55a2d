"""Checks of config.yaml that a JSON schema cannot express (relations between keys)."""

from __future__ import annotations

from typing import Any

TRAINING_KEYS = (
    "max_epochs",
    "min_epochs",
    "batch_size",
    "learning_rate",
    "weight_decay",
    "patience",
    "label_smoothing",
    "augment",
)


class ConfigError(ValueError):
    """The configuration is inconsistent; the message names the keys and what to change."""


def check_config(config: dict[str, Any]) -> None:
    """Raise ConfigError listing every cross-key problem found (after schema validation)."""
    problems = []
    for name in config["datasets"]:
        if name not in config:
            problems.append(f"datasets lists {name!r} but the config has no `{name}:` section")
    notes = config.get("synth_notes")
    if notes:
        if notes.get("note_seconds", 0) > notes.get("clip_seconds", 0):
            problems.append(
                f"synth_notes.note_seconds ({notes['note_seconds']}) must not exceed "
                f"synth_notes.clip_seconds ({notes['clip_seconds']})"
            )
        if notes.get("valid_fraction", 0) + notes.get("test_fraction", 0) >= 1:
            problems.append("synth_notes.valid_fraction + test_fraction must be < 1")
        from advmir.data.synth_notes import SynthNotesConfig

        general = config.get("generalisation") or {}
        splits = general.get("splits", []) if general.get("enabled") else []
        for split in dict.fromkeys([notes.get("split", "notes"), *splits]):
            try:
                SynthNotesConfig(**{**notes, "split": split})
            except (TypeError, ValueError) as exc:
                where = "" if split == notes.get("split", "notes") else f" (generalisation split {split!r})"
                problems.append(f"{exc}{where}")
        unknown = sorted(set(general.get("models") or []) - set(config["models"]))
        if unknown:
            problems.append(
                f"generalisation.models {unknown} are not models of the zoo {list(config['models'])}"
            )
    for name, spec in config["models"].items():
        training = {**config["training"], **spec.get("training", {})}
        if training.get("min_epochs", 0) > training.get("max_epochs", 1):
            problems.append(
                f"models.{name}: training.min_epochs ({training['min_epochs']}) exceeds "
                f"max_epochs ({training['max_epochs']})"
            )
        try:
            from advmir.models.augment import AugmentConfig

            AugmentConfig.from_dict(training.get("augment"))
        except ValueError as exc:
            problems.append(f"models.{name}: {exc}")
        one_d = spec["frontend"] == "waveform"
        if one_d != (spec["arch"] == "cnn1d"):
            problems.append(
                f"models.{name}: front-end {spec['frontend']!r} cannot feed arch {spec['arch']!r}; "
                "use waveform with cnn1d, and stft/logmel/cqt with cnn2d or crnn"
            )
    problems += _training_codec_problems(config)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


def _training_codec_problems(config: dict[str, Any]) -> list[str]:
    codecs = config.get("training_codecs") or {}
    if not codecs.get("enabled"):
        return []
    from advmir.codecs.augment import check_disjoint, parse_training_settings
    from advmir.codecs.registry import CodecError

    try:
        training = parse_training_settings(codecs.get("settings") or {})
        evaluation = (config.get("codecs") or {}).get("settings") or {}
        check_disjoint(training, parse_training_settings(evaluation) if evaluation else [])
    except CodecError as exc:
        return [str(exc)]
    return []


def training_for(config: dict[str, Any], model: str) -> dict[str, Any]:
    """Training settings of one model: the defaults, its overrides, its seed and training subset."""
    spec = config["models"][model]
    settings = {**config["training"], **spec.get("training", {})}
    settings["seed"] = int(spec.get("seed", 0)) + int(config["seed"])
    settings["train_subset"] = spec.get("train_subset", "all")
    return settings


def model_spec(config: dict[str, Any], model: str) -> dict[str, Any]:
    """The architecture part of a model's config (what build_model needs)."""
    spec = config["models"][model]
    return {k: spec[k] for k in ("frontend", "arch", "frontend_args", "arch_args") if k in spec}
