"""Checks of config.yaml that a JSON schema cannot express (relations between keys)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """The configuration is inconsistent; the message names the keys and what to change."""


# The transfer stage's name of the unattacked clips ({attack} wildcard): no attack may take it.
CLEAN_SOURCE = "clean"
REPO = Path(__file__).resolve().parents[2]
#: The JSON schemas of the config: the one home of every config key's default.
SCHEMAS = REPO / "workflow" / "schemas"


def validate_config(config: dict[str, Any], schema: str | Path) -> None:
    """Validate ``config`` against the JSON schema, filling in the schema's defaults, and raise a
    ConfigError of a few lines: the key, the value, what is allowed.

    Defaults (``default:`` of a property) are filled at every level, also inside an object that is
    present (a `codecs:` section without `threads` gets its default), so the rules read
    ``config[...]`` and hold no default of their own. Snakemake's own error prints the whole failing
    schema and config, hundreds of lines for a misspelt top-level key.
    """
    import jsonschema
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    try:
        validate(config, str(Path(schema).resolve()), set_default=True)
    except WorkflowError as exc:
        if not isinstance(exc.__context__, jsonschema.ValidationError):
            raise
        raise ConfigError(schema_error_message(exc.__context__)) from None


def schema_defaults(schema_file: str, definition: str, *keys: str) -> dict[str, Any]:
    """The defaults of one object of a schema (``definitions.DEFINITION`` of
    ``workflow/schemas/SCHEMA_FILE``, or its property KEYS..., e.g. ``"anomaly", "autoencoder"``):
    what validation fills into that section when a key is missing (the ``default:`` written beside a
    property; a ``$ref``'s target's own default is not used, as in Snakemake's ``validate``). For
    commands run without the workflow, so that they default exactly as the workflow does."""
    import yaml

    schema = yaml.safe_load((SCHEMAS / schema_file).read_text(encoding="utf-8"))
    node = schema["definitions"][definition]
    for key in keys:
        node = node["properties"][key]
    return {key: prop["default"] for key, prop in node["properties"].items() if "default" in prop}


def merge_config(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``overlay`` onto ``base`` in place with Snakemake's own ``update_config`` (how it merges a
    ``--configfile`` onto the config before it: mappings key by key, anything else replaced)."""
    from snakemake.utils import update_config

    update_config(base, overlay)
    return base


def schema_error_message(error: Any) -> str:
    """``invalid configuration at KEY: PROBLEM``, the value and the key's description, each cut
    short; for a failed ``anyOf``/``oneOf`` the most relevant alternative's problem."""
    import jsonschema

    described = [error]
    if error.context:
        error = jsonschema.exceptions.best_match([error, *error.context])
        described.insert(0, error)
    key = ".".join(str(part) for part in error.absolute_path) or "(top level)"
    lines = [f"invalid configuration at {key}: {_cut(error.message)}"]
    if error.absolute_path:
        lines.append(f"  value: {_cut(repr(error.instance))}")
    schemas = [e.schema for e in described if isinstance(e.schema, dict)]
    description = next((s["description"] for s in schemas if s.get("description")), None)
    if error.validator == "additionalProperties" and isinstance(error.schema.get("properties"), dict):
        lines.append(f"  allowed keys: {_cut(', '.join(error.schema['properties']))}")
    elif description:
        lines.append(f"  allowed: {_cut(' '.join(str(description).split()))}")
    return "\n".join(lines)


def _cut(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_device(device: str) -> None:
    """Refuse ``device: cuda`` / ``cuda:N`` that this machine's torch cannot use, before any job."""
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            f"device: {device} but torch finds no CUDA GPU here; set device: auto (a GPU when "
            "present, else the CPU) or device: cpu"
        )
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"device: {device} but torch finds {torch.cuda.device_count()} CUDA GPU(s) "
            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}); set device: auto, cuda or cpu"
        )


def submits_elsewhere(argv: list[str], environ: Mapping[str, str]) -> bool:
    """Whether this Snakemake hands its jobs to an executor (``--executor``/``-e``) or a profile
    (which usually names one): Snakemake tells the Snakefile only after parsing it."""
    flags = ("-e", "--executor", "--profile")
    given = any(a in flags or a.startswith(("--executor=", "--profile=")) for a in argv)
    return given or bool(environ.get("SNAKEMAKE_PROFILE"))


def check_yaml(argv: list[str]) -> int:
    """``python -m advmir check-yaml [--full CONFIG] FILE...``: name the file, line and column of a
    YAML syntax error (Snakemake only says that a config file is not valid YAML). ``--full CONFIG``
    must be a whole config (the Makefile's ``CONFIG``): an overlay given there (no ``results:``
    key) is named with the option it belongs to (``OVERLAY``)."""
    import yaml

    status = 0
    full = None
    if argv[:1] == ["--full"] and len(argv) > 1:
        full, argv = argv[1], argv[1:]
    for name in argv:
        try:
            loaded = yaml.safe_load(Path(name).read_text(encoding="utf-8"))
            if name == full and not (isinstance(loaded, dict) and "results" in loaded):
                print(
                    f"{name}: not a full config (it has no `results:` key): a partial config is an "
                    f"overlay merged onto one, e.g. make run OVERLAY={name}",
                    file=sys.stderr,
                )
                status = 1
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
            print(f"{where}: YAML syntax error: {exc.problem or exc.context}", file=sys.stderr)
            status = 1
        except (OSError, yaml.YAMLError) as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            status = 1
    return status


# Where a defended model's training starts: new weights, or its undefended twin's checkpoint.
INIT_MODES = ("scratch", "twin")


def expand_defenses(config: dict[str, Any]) -> None:
    """Add every defended model of ``defenses.models`` to ``config["models"]`` (after validation,
    before :func:`check_config` and the stage plans), so that to every stage it is a zoo model: its
    spec is its base model's, its training the base model's settings with the defense's ``training``
    overrides and ``adversarial: {mode, budget, ...}``, which makes ``train_model`` train it in that
    mode; with ``init: twin`` also ``init_from: <twin>``, which starts that training from the twin's
    checkpoint (adversarial fine-tuning). Nothing is added when ``defenses.enabled`` is false.

    Raises ConfigError listing every problem: a defense of a model that is not in ``models`` (or of
    another defended model), a name that is already a zoo model's, ``training.adversarial`` given
    inside a defense, a bad adversarial setting (:class:`advmir.defenses.settings.AdversarialConfig`,
    which imports neither torch nor Lightning). Idempotent: a model already expanded is left as it is.
    """
    defenses = config.get("defenses") or {}
    if not defenses.get("enabled"):
        return
    from advmir.defenses.settings import AdversarialConfig, DefenseConfigError

    zoo = {name: spec for name, spec in config["models"].items() if name not in defenses.get("models", {})}
    problems, added = [], {}
    for name, entry in (defenses.get("models") or {}).items():
        where = f"defenses.models.{name}"
        base = entry.get("model")
        if base in zoo and "members" in zoo[base]:
            problems.append(
                f"{where}: {base!r} is an ensemble; defend its members and list the defended models in an "
                "ensemble of their own"
            )
            continue
        if base in zoo and "source" in zoo[base]:
            problems.append(
                f"{where}: {base!r} is a model of your own (source: {zoo[base]['source']}); adversarial "
                "training retrains a model from its recipe, which only the zoo's trained models have"
            )
            continue
        if base not in zoo:
            problems.append(f"{where}: key 'model' must name a model of the zoo {sorted(zoo)}, got {base!r}")
            continue
        own = dict(entry.get("training") or {})
        if "adversarial" in own:
            problems.append(
                f"{where}.training: no 'adversarial' here; the mode and budget are the defense's own keys"
            )
            continue
        init = entry.get("init", "scratch")
        if init not in INIT_MODES:
            problems.append(f"{where}: key 'init' must be one of {list(INIT_MODES)}, got {init!r}")
            continue
        adversarial = {k: v for k, v in entry.items() if k not in ("model", "training", "init")}
        try:
            AdversarialConfig.from_dict(adversarial, section=where)
        except DefenseConfigError as exc:
            problems.append(str(exc))
            continue
        spec = {k: v for k, v in config["models"][base].items() if k != "training"}
        base_own = dict(config["models"][base].get("training") or {})
        training = {**override_training(base_own, own), "adversarial": adversarial}
        if init == "twin":  # adversarial fine-tuning: train_model starts from the twin's checkpoint
            training["init_from"] = base
        expanded = {**spec, "training": training}
        if name in config["models"] and config["models"][name] != expanded:
            problems.append(
                f"{where}: {name!r} is already a model of the zoo; give the defended model another name "
                f"(zoo models: {sorted(zoo)})"
            )
            continue
        added[name] = expanded
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    config["models"].update(added)


def defended_models(config: dict[str, Any]) -> dict[str, str]:
    """Defended model name -> the zoo model it defends (its undefended twin); empty when the
    defenses stage is off."""
    defenses = config.get("defenses") or {}
    if not defenses.get("enabled"):
        return {}
    return {name: entry["model"] for name, entry in (defenses.get("models") or {}).items()}


def external_models(config: dict[str, Any]) -> list[str]:
    """Models of your own (``source:`` torchscript, export or python): imported, never trained."""
    return [name for name, spec in config["models"].items() if "source" in spec]


def ensemble_models(config: dict[str, Any]) -> list[str]:
    """Ensembles (``members:``): assembled from their members' checkpoints, never trained."""
    return [name for name, spec in config["models"].items() if "members" in spec]


def trained_models(config: dict[str, Any]) -> list[str]:
    """Models the workflow trains (rule train_model): the zoo without the models of your own and
    the ensembles."""
    return [name for name, spec in config["models"].items() if "source" not in spec and "members" not in spec]


def model_frontend(models: Mapping[str, Mapping[str, Any]], name: str) -> str:
    """A model's input representation: its front-end; ``external`` for a model of your own; for an
    ensemble its members' shared one, or ``mixed``."""
    spec = models[name]
    if "members" in spec:
        found = {model_frontend(models, m) for m in spec["members"] if m in models}
        return found.pop() if len(found) == 1 else "mixed"
    return "external" if "source" in spec else str(spec.get("frontend"))


def undefended_models(config: dict[str, Any]) -> list[str]:
    """The models a stage's "every model" default means: the zoo without the defended models (they
    join a stage's runs when its `models` list names them)."""
    defended = defended_models(config)
    return [name for name in config["models"] if name not in defended]


def generalisation_named(config: dict[str, Any]) -> list[str]:
    """Every model ``generalisation.models`` names: its list, or the lists of its per-split mapping."""
    given = (config.get("generalisation") or {}).get("models")
    lists = given.values() if isinstance(given, dict) else [given]
    return list(dict.fromkeys(m for names in lists for m in names or []))


def generalisation_models(config: dict[str, Any], split: str | None = None) -> list[str]:
    """Models the generalisation stage trains on ``split`` (None: on any split):
    ``generalisation.models`` (null: the undefended zoo; a mapping: split -> list, a split it does not
    name or names null getting the undefended zoo), then every augmentation defense (mode in
    :data:`advmir.defenses.settings.AUGMENT_MODES`) of one of them, which the augmentation study
    scores on the splits beside its base model. Other defended models run only when named."""
    from advmir.defenses.settings import AUGMENT_MODES

    general = config.get("generalisation") or {}
    trained = set(trained_models(config))
    retrainable = trained | {
        m for m in ensemble_models(config) if set(config["models"][m]["members"]) <= trained
    }
    every = [m for m in undefended_models(config) if m in retrainable]
    given = general.get("models")
    if isinstance(given, dict):
        splits = [split] if split is not None else list(general.get("splits") or given)
        lists = [given.get(s) or every for s in splits]
        models = list(dict.fromkeys(m for names in lists for m in names))
    else:
        models = list(given or every)
    defenses = config.get("defenses") or {}
    for name, entry in (defenses.get("models") or {}).items() if defenses.get("enabled") else ():
        if entry.get("mode") in AUGMENT_MODES and entry.get("model") in models and name not in models:
            models.append(name)
    return models


def check_config(config: dict[str, Any]) -> None:
    """Raise ConfigError listing every cross-key problem found (after schema validation). Expands
    ``defenses.models`` into ``models`` first (:func:`expand_defenses`, idempotent), so the defended
    models are checked like every zoo model."""
    expand_defenses(config)
    problems = _results_problems(str(config["results"]))
    if CLEAN_SOURCE in (config.get("attacks") or {}):
        problems.append(
            f"attacks.{CLEAN_SOURCE}: `{CLEAN_SOURCE}` is the transfer stage's name of the unattacked "
            "clips; give this attack another name"
        )
    for name in config["datasets"]:
        if name not in config:
            problems.append(f"datasets lists {name!r} but the config has no `{name}:` section")
    folder = config.get("folder")
    if "folder" in config["datasets"] and folder:
        where = os.path.expanduser(str(folder.get("path", "")))
        if not os.path.isdir(where):
            problems.append(
                f"folder.path: {folder.get('path')!r} is not an existing folder; set folder.path (e.g. in "
                "config/folder.yaml) to the folder of recordings to prepare"
            )
    notes = config.get("synth_notes")
    if notes:
        if notes.get("note_seconds", 0) > notes.get("clip_seconds", 0):
            problems.append(
                f"synth_notes.note_seconds ({notes['note_seconds']}) must not exceed "
                f"synth_notes.clip_seconds ({notes['clip_seconds']})"
            )
        if notes.get("valid_fraction", 0) + notes.get("test_fraction", 0) >= 1:
            problems.append("synth_notes.valid_fraction + test_fraction must be < 1")
        from advmir.datasets.synth_notes import SynthNotesConfig

        general = config.get("generalisation") or {}
        splits = general.get("splits", []) if general.get("enabled") else []
        for split in dict.fromkeys([notes.get("split", "notes"), *splits]):
            try:
                SynthNotesConfig(**{**notes, "split": split})
            except (TypeError, ValueError) as exc:
                where = "" if split == notes.get("split", "notes") else f" (generalisation split {split!r})"
                problems.append(f"{exc}{where}")
        named = generalisation_named(config)
        unknown = sorted(set(named) - set(config["models"]))
        given = general.get("models")
        keyed = isinstance(given, dict) and general.get("enabled")
        strays = sorted(set(given) - set(splits)) if keyed else []
        if strays:
            problems.append(
                f"generalisation.models: {strays} are not splits of generalisation.splits {list(splits)}; "
                "key the mapping by those splits"
            )
        own = sorted(set(named) & set(external_models(config)))
        own += sorted(
            f"{m} (member {member})"
            for m in set(named) & set(ensemble_models(config))
            for member in config["models"][m]["members"]
            if member in external_models(config)
        )
        if unknown:
            problems.append(
                f"generalisation.models {unknown} are not models of the zoo {list(config['models'])}"
            )
        elif own:
            problems.append(
                f"generalisation.models {own} are models of your own: the generalisation stage retrains "
                "each model on other splits, which only the zoo's trained models can be"
            )
        elif splits:
            for name in generalisation_models(config):
                split_training = split_training_for(config, name)
                if split_training.get("min_epochs", 0) > split_training.get("max_epochs", 1):
                    problems.append(
                        f"generalisation.training: min_epochs ({split_training['min_epochs']}) exceeds "
                        f"max_epochs ({split_training['max_epochs']}) for {name!r}"
                    )
    for name, spec in config["models"].items():
        if "source" in spec:
            problems += _external_problems(name, spec)
            continue
        if "members" in spec:
            problems += _ensemble_problems(config, name, spec)
            continue
        training = merged_training(config, name)
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
                "use waveform with cnn1d, and filterbank/stft/logmel/cqt with cnn2d or crnn"
            )
    problems += _training_codec_problems(config)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


def _ensemble_problems(config: dict[str, Any], name: str, spec: dict[str, Any]) -> list[str]:
    """An ensemble: its members are other models of the zoo (no ensemble of ensembles), one weight each."""
    members, problems = list(spec["members"]), []
    unknown = [m for m in members if m not in config["models"]]
    nested = [m for m in members if m in config["models"] and "members" in config["models"][m]]
    if unknown:
        problems.append(
            f"models.{name}.members: {unknown} are not models of the zoo {sorted(config['models'])}"
        )
    if nested:
        problems.append(
            f"models.{name}.members: {nested} are ensembles themselves; list their members instead"
        )
    if len(set(members)) != len(members):
        problems.append(
            f"models.{name}.members: {members} names a model twice; give it a larger weight instead"
        )
    weights = spec.get("weights")
    if weights is not None and len(weights) != len(members):
        problems.append(
            f"models.{name}.weights: {len(weights)} weights for {len(members)} members; give one per member"
        )
    return problems


def _external_problems(name: str, spec: dict[str, Any]) -> list[str]:
    """A model of your own: the files it names exist (loading it waits for :func:`check_clip_lengths`)."""
    from advmir.models.external import ExternalModelError, InputContract, source_files

    problems = [
        f"models.{name}: {f!r} is not a file"
        for f in source_files(spec)
        if not os.path.isfile(os.path.expanduser(f))
    ]
    try:
        InputContract.from_spec(spec, name)
    except ExternalModelError as exc:
        problems.append(str(exc))
    return problems


def check_clip_lengths(config: dict[str, Any]) -> None:
    """Raise ConfigError when a model cannot take a dataset's clips (after :func:`check_config`).

    One forward pass of each untrained model on a silent clip of each dataset's length, so a clip
    shorter than a front-end's window or too short for the architecture's pooling is refused at
    `snakemake -n`, not in the training job. About a second for the default zoo: the Snakefile runs
    it where the workflow starts, not again in each cluster job."""
    problems = _clip_length_problems(config)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


def _clip_length_problems(config: dict[str, Any]) -> list[str]:
    """One line per (model, dataset) whose forward pass on a silent clip fails. A model of your own
    is loaded and checked first (:func:`advmir.models.external.check_entry`: the file, the factory,
    the weights, its number of classes), one line naming the model if it cannot be used."""
    import torch

    from advmir.models.external import ExternalModelError, check_entry, mapped_labels, wrap
    from advmir.models.zoo import build_model

    problems, checked = [], {}
    for name in external_models(config):  # loaded once, wrapped for every dataset below
        try:
            checked[name] = check_entry(name, config["models"][name])
        except ExternalModelError as exc:
            problems.append(str(exc))
    for dataset in config["datasets"]:
        section = config.get(dataset) or {}
        rate, seconds = int(section.get("sample_rate", 16000)), float(section.get("clip_seconds", 1.0))
        samples = max(1, round(rate * seconds))
        for name in config["models"]:
            spec = config["models"][name]
            if ("source" in spec and name not in checked) or "members" in spec:
                continue  # could not be loaded (said above); an ensemble: its members are checked
            try:
                if "source" in spec:  # the labels its classes map to: the dataset's are not known yet
                    model = wrap(name, spec, mapped_labels(name, spec), rate, checked[name])[0]
                else:
                    model = build_model(model_spec(config, name), n_classes=2, sample_rate=rate).eval()
                with torch.no_grad():
                    model(torch.zeros(1, samples))
            except (RuntimeError, ValueError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                fix = (
                    "check its input_seconds and window"
                    if "source" in spec
                    else f"raise {dataset}.clip_seconds or shorten the model's window "
                    "(frontend_args n_fft, kernel_size or hop_length)"
                )
                problems.append(
                    f"models.{name}: cannot take a {seconds:g} s clip of {dataset} ({samples} samples at "
                    f"{rate} Hz): {first}; {fix}"
                )
    return problems


def _results_problems(results: str) -> list[str]:
    """`results` is emptied by `make clean-results` and written by every rule: never the filesystem
    root, the repository itself or its source code."""
    path = Path(results).expanduser().resolve()
    if path == Path(path.anchor):
        return [f"results: {results!r} is the filesystem root; name a folder of its own, e.g. results"]
    if (REPO / "Snakefile").is_file():
        if path == REPO:
            return [f"results: {results!r} is the repository itself; name a folder in it, e.g. results"]
        if path == REPO / "src" or REPO / "src" in path.parents:
            return [f"results: {results!r} is inside the source code (src/); use e.g. results"]
    return []


def _training_codec_problems(config: dict[str, Any]) -> list[str]:
    codecs = config.get("training_codecs") or {}
    if not codecs.get("enabled"):
        return []
    from advmir.codecs.augment import training_grid
    from advmir.codecs.registry import CodecError

    try:
        training_grid(codecs.get("settings") or {}, (config.get("codecs") or {}).get("settings") or {})
    except CodecError as exc:
        return [str(exc)]
    return []


def override_training(base: dict[str, Any], own: dict[str, Any] | None) -> dict[str, Any]:
    """Training settings ``base`` with the overrides ``own``; ``augment`` merges key by key, so
    ``{augment: {room_prob: 0.45}}`` changes one probability and keeps the rest."""
    own = own or {}
    settings = {**base, **own}
    if "augment" in own:
        settings["augment"] = {**(base.get("augment") or {}), **own["augment"]}
    return settings


def merged_training(config: dict[str, Any], model: str) -> dict[str, Any]:
    """The ``training`` defaults with model ``model``'s overrides (:func:`override_training`)."""
    return override_training(config["training"], config["models"][model].get("training"))


def training_for(config: dict[str, Any], model: str) -> dict[str, Any]:
    """Training settings of one model: the defaults, its overrides, its seed and training subset."""
    spec = config["models"][model]
    settings = merged_training(config, model)
    settings["seed"] = int(spec.get("seed", 0)) + int(config["seed"])
    settings["train_subset"] = spec.get("train_subset", "all")
    return settings


def split_training_for(config: dict[str, Any], model: str) -> dict[str, Any]:
    """Training settings of ``model`` on a generalisation split: its own (:func:`training_for`) with
    ``generalisation.training``'s overrides."""
    overrides = (config.get("generalisation") or {}).get("training")
    return override_training(training_for(config, model), overrides)


#: Training CPU time per clip and epoch relative to logmel_cnn, by front-end and architecture (the
#: default run's benchmark files: stft_cnn 3.1x, wave_cnn 1.9x; CQT 3x and CRNN 1.6x in the README).
# Training step time relative to logmel_cnn at width 32 (benchmarks/train_speed.py, one thread): per
# front-end at width 32 and a 2x2 first pooling; the 2-D architectures scale about linearly with
# width and with the square root of the first pooling's area saved (stft at width 48 with a 4x2 first
# pooling: 2.4; filterbank at 48 and 64: 2.2 and 2.9).
FRONTEND_COST = {"logmel": 1.0, "stft": 2.3, "filterbank": 1.45, "cqt": 3.0, "waveform": 2.0}
ARCH_COST = {"cnn2d": 1.0, "crnn": 1.6, "cnn1d": 1.0}


def _shape_cost(spec: dict[str, Any]) -> float:
    """The width and first-pooling factor of a 2-D architecture's cost (1 at width 32, 2x2)."""
    if spec.get("arch", "cnn2d") not in ("cnn2d", "crnn"):
        return 1.0
    args = spec.get("arch_args") or {}
    pool = args.get("first_pool") or (2, 2)
    return float(args.get("width", 32)) / 32.0 * (4.0 / (float(pool[0]) * float(pool[1]))) ** 0.5


def training_priority(config: dict[str, Any], model: str, split: bool = False) -> int:
    """Snakemake priority of a model's training job: its expected CPU time (epochs x training
    clips' share x front-end, architecture, width and first-pooling cost x adversarial passes), so that among
    the trainings ready at once the longest starts first and does not end the run alone. A
    scheduling hint only: a wrong estimate changes the order of jobs, never a result.
    """
    spec = config["models"][model]
    training = split_training_for(config, model) if split else training_for(config, model)
    share = 0.5 if training.get("train_subset", "all") != "all" else 1.0
    adversarial = training.get("adversarial") or {}
    passes = 1.0 + float(adversarial.get("steps", 0)) if adversarial.get("mode") else 1.0
    cost = (
        float(training["max_epochs"])
        * share
        * FRONTEND_COST.get(spec.get("frontend", "logmel"), 1.0)
        * ARCH_COST.get(spec.get("arch", "cnn2d"), 1.0)
        * _shape_cost(spec)
        * passes
    )
    return max(1, round(cost))


def training_gate_priority(config: dict[str, Any]) -> int:
    """Snakemake priority of a job every training waits on (the codec versions of the training
    clips): above every training's, on the default split and the generalisation splits, so that it
    starts as soon as it can instead of after the other stages' ready jobs."""
    costs = [
        training_priority(config, model, split=split)
        for model in trained_models(config)
        for split in (False, True)
    ]
    return 1 + max(costs, default=0)


def model_spec(config: dict[str, Any], model: str) -> dict[str, Any]:
    """The architecture part of a model's config (what build_model needs)."""
    spec = config["models"][model]
    return {k: spec[k] for k in ("frontend", "arch", "frontend_args", "arch_args") if k in spec}
