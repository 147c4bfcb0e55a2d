# Constants and input functions of workflow/rules/attacks.smk (kept apart: `snakemake --lint`
# wants rules and functions in different files).
import json
import os
import re
import shlex

from advmir.attacks import build_attack
from advmir.errors import InputError

# Validation filled every default (workflow/schemas/attacks.schema.yaml): no default here.
ATTACK_SPECS = dict(config["attacks"])
ATTACK_SETTINGS = dict(config["attack_settings"])


def attacked_models(attack):
    """Models an attack is scored on: its `models` list, else every model but its surrogate."""
    spec = ATTACK_SPECS[attack]
    if spec.get("models"):
        return list(spec["models"])
    surrogate = spec.get("surrogate") if spec.get("threat") == "surrogate" else None
    return [m for m in MODELS if m != surrogate]


def attack_runs():
    """Every (dataset, model, attack) job of this stage."""
    return [
        (d, m, a) for d in DATASETS for a in ATTACK_SPECS for m in attacked_models(a)
    ]


def _run_dir(dataset, model, attack):
    return f"{RESULTS}/attacks/{dataset}/{model}/{attack}"


def _check_attack_config():
    """Relations between keys that the schema cannot state; one message lists every problem."""
    problems = []
    for name, spec in ATTACK_SPECS.items():
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            problems.append(
                f"attacks.{name}: names may hold letters, digits and _ only"
            )
        threat = spec.get("threat", "white_box")
        surrogate = spec.get("surrogate")
        if threat == "surrogate" and surrogate not in MODELS:
            problems.append(
                f"attacks.{name}: threat surrogate needs `surrogate:` naming a model of `models` "
                f"({sorted(MODELS)}), got {surrogate!r}"
            )
        if threat != "surrogate" and surrogate is not None:
            problems.append(
                f"attacks.{name}: `surrogate` is set but threat is {threat!r}; set threat: surrogate"
            )
        params = dict(spec.get("params") or {})
        if isinstance(params.get("target_map"), dict):
            # class names are resolved by the job, from the dataset's classes: check the rest now
            params["target_map"] = {0: 1}
        try:  # every attack is built now, without a model: a bad parameter stops `snakemake -n`
            if (
                not workflow.remote_exec
            ):  # (a cluster job's config was checked at submission)
                build_attack(spec.get("name"), params)
        except (InputError, ValueError, TypeError) as exc:
            problems.append(f"attacks.{name}: {exc}")
        unknown = [m for m in spec.get("models") or [] if m not in MODELS]
        if unknown:
            problems.append(
                f"attacks.{name}: models {unknown} are not in `models` ({sorted(MODELS)})"
            )
    panel = ATTACK_SETTINGS["panel"]
    if panel and ATTACK_SPECS:
        attack = panel.get("attack")
        if attack not in ATTACK_SPECS or panel.get("model") not in attacked_models(
            attack
        ):
            problems.append(
                f"attack_settings.panel {panel} must name an attack of `attacks` and one of its models"
            )
    if problems:
        raise ValueError(
            "invalid attacks configuration:\n  - " + "\n  - ".join(problems)
        )


_check_attack_config()


def attack_inputs(wildcards):
    """The dataset, the target model's checkpoint and, for a surrogate attack, the surrogate's."""
    files = dataset_files(wildcards)
    files["checkpoint"] = (
        f"{RESULTS}/models/{wildcards.dataset}/{wildcards.model}/model.ckpt"
    )
    spec = ATTACK_SPECS[wildcards.attack]
    if spec.get("threat") == "surrogate":
        files["surrogate"] = (
            f"{RESULTS}/models/{wildcards.dataset}/{spec['surrogate']}/model.ckpt"
        )
    return files


def attack_spec_json(wildcards):
    """The algorithm and its parameters: a change re-runs this attack's jobs only."""
    spec = ATTACK_SPECS[wildcards.attack]
    return json.dumps(
        {"name": spec["name"], "params": spec.get("params") or {}}, sort_keys=True
    )


def surrogate_option(wildcards, input):
    return (
        f"--surrogate-checkpoint {shlex.quote(input.surrogate)}"
        if "surrogate" in input.keys()
        else ""
    )


def attack_examples(name="examples.csv"):
    return [f"{_run_dir(d, m, a)}/{name}" for d, m, a in attack_runs()]


def attack_panel_run():
    """The run whose listenable examples make the spectrogram panel: attack_settings.panel, else the
    first white-box PGD run, else the first white-box run that is not the noise baseline.
    """
    panel = ATTACK_SETTINGS["panel"]
    if panel:
        return _run_dir(DATASETS[0], panel["model"], panel["attack"])

    def rank(run):
        spec = ATTACK_SPECS[run[2]]
        white = spec.get("threat", "white_box") == "white_box"
        return (not white, spec["name"] != "pgd", spec["name"] == "noise")

    return _run_dir(*min(attack_runs(), key=rank))


ATTACK_FIGURES = (
    "attack_success_vs_snr",
    "attack_snr_distribution",
    "attack_spectrograms",
)


def attack_targets():
    """Final files of the attack stage (none when config["attacks"] is empty)."""
    if not ATTACK_SPECS:
        return []
    return [
        f"{RESULTS}/tables/attacks.csv",
        f"{RESULTS}/figures/listen_examples.html",
    ] + [
        f"{RESULTS}/figures/{name}.{ext}"
        for name in ATTACK_FIGURES
        for ext in ("png", "pdf")
    ]
