import json
import os
import shlex
import sys

from advmir.config import (
    check_clip_lengths,
    check_config,
    check_device,
    ensemble_models,
    expand_defenses,
    external_models,
    generalisation_models,
    model_frontend,
    model_spec,
    submits_elsewhere,
    split_training_for,
    trained_models,
    training_for,
    training_gate_priority,
    training_priority,
    undefended_models,
    validate_config,
)

# Jobs call `python -m advmir`: make that the python running Snakemake (the venv's), also inside
# cluster jobs, which inherit the submitting environment but not an activated venv.
os.environ.update(
    PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
)

# A short error naming the key (Snakemake's validate prints the whole schema and config). It fills
# in every default of the schema: the rules read config[...] and hold no default of their own.
validate_config(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml")
# Each defended model of defenses.models joins config["models"] (a zoo model to every stage).
expand_defenses(config)
check_config(config)
# Checks that build models run where the workflow starts, not again in each cluster job (which
# parses this file again; the config it gets was checked by the run that submitted it).
if not workflow.remote_exec:
    check_clip_lengths(config)
# A cluster run submits from a node that may have no GPU (its jobs run on GPU nodes) and its jobs
# parse this file again on nodes of every kind: only a local run checks the device here.
if not workflow.remote_exec and not submits_elsewhere(sys.argv, os.environ):
    check_device(config["device"])

RESULTS = config["results"].rstrip("/")
DATASETS = list(config["datasets"])
MODELS = dict(config["models"])
# Models of your own (`source:` torchscript or python) are imported (rule import_model), the rest trained.
EXTERNAL_MODELS = external_models(config)
# Ensembles (`members:`) are assembled from their members' checkpoints (rule assemble_ensemble).
ENSEMBLE_MODELS = ensemble_models(config)
TRAINED_MODELS = trained_models(config)
TRAINING_CODECS = dict(config["training_codecs"])
# GPU requests go to the cluster only when the config asks for CUDA explicitly.
GPUS = 1 if config["device"].startswith("cuda") else 0


wildcard_constraints:
    dataset="|".join(DATASETS),
    model="|".join(MODELS),


def dataset_files(wildcards):
    """The three files of a prepared dataset (data contract)."""
    root = f"{RESULTS}/data/{wildcards.dataset}"
    return {
        "waveforms": f"{root}/waveforms.npy",
        "manifest": f"{root}/manifest.csv",
        "classes": f"{root}/classes.json",
    }


def init_from(model):
    """The model whose checkpoint a training starts from (a defense's init: twin), or None."""
    return (config["models"][model].get("training") or {}).get("init_from")


def training_inputs(wildcards):
    """The dataset, plus the codec versions of its training clips when training_codecs is enabled,
    plus the twin's checkpoint when the model starts from it (init: twin; train-model reads it
    from the twin's folder beside the model's own)."""
    files = dataset_files(wildcards)
    if TRAINING_CODECS["enabled"]:
        root = f"{RESULTS}/augment/{wildcards.dataset}"
        files.update(
            codec_audio=f"{root}/codec_train.npy", codec_table=f"{root}/codec_train.csv"
        )
    twin = init_from(wildcards.model)
    if twin:
        files["init"] = f"{RESULTS}/models/{wildcards.dataset}/{twin}/model.ckpt"
    return files


def folder_listing(wildcards):
    """Digest of the names, sizes and times of the files of folder.path (rule prepare_folder's
    params: a file added, removed or edited re-runs it)."""
    from advmir.datasets.folder import listing_digest

    return listing_digest(config["folder"]["path"])


def model_params(wildcards):
    """JSON of the model's spec; a change re-runs this model and what depends on it only."""
    return json.dumps(model_spec(config, wildcards.model), sort_keys=True)


def external_inputs(wildcards):
    """The dataset, plus the files a model of your own is made of (an edit re-imports it)."""
    from advmir.models.external import source_files

    return {
        **dataset_files(wildcards),
        "sources": source_files(MODELS[wildcards.model]),
    }


def external_params(wildcards):
    """JSON of a model of your own's config entry; a change re-imports it."""
    return json.dumps(MODELS[wildcards.model], sort_keys=True)


def ensemble_inputs(wildcards):
    """The dataset (of a generalisation split, on one) and each member's checkpoint and metrics."""
    if "split" in wildcards.keys():
        files = split_dataset_files(wildcards.split)
        models = f"{GENERALISATION_DIR}/{wildcards.split}/models"
    else:
        files = dataset_files(wildcards)
        models = f"{RESULTS}/models/{wildcards.dataset}"
    for member in MODELS[wildcards.model]["members"]:
        files[f"ckpt_{member}"] = f"{models}/{member}/model.ckpt"
        files[f"metrics_{member}"] = f"{models}/{member}/metrics.json"
    return files


def ensemble_params(wildcards, input):
    """--member NAME CHECKPOINT per member, in order, the weights and the shared front-end."""
    spec = MODELS[wildcards.model]
    args = [f"--member {m} {shlex.quote(input[f'ckpt_{m}'])}" for m in spec["members"]]
    if spec.get("weights"):
        args.append(f"--weights {shlex.quote(json.dumps(spec['weights']))}")
    args.append(f"--frontend {model_frontend(MODELS, wildcards.model)}")
    return " ".join(args)


def training_params(wildcards):
    """A model's training settings (JSON); on a generalisation split, with generalisation.training."""
    if "split" in wildcards.keys():
        return json.dumps(split_training_for(config, wildcards.model), sort_keys=True)
    return json.dumps(training_for(config, wildcards.model), sort_keys=True)


def model_priority(wildcards):
    """The longest training first (advmir.config.training_priority): a scheduling hint."""
    return training_priority(config, wildcards.model, split="split" in wildcards.keys())


def benign_inputs(wildcards):
    """Clean accuracy (with the noise check), plus the clean-through-codec table when codecs run."""
    files = {"accuracy": f"{RESULTS}/tables/clean_accuracy.csv"}
    if TRANSFER_PLAN.transfer_targets():
        files["codecs"] = TRANSFER_TABLES["codec_clean_accuracy"]
    return files


def model_targets():
    return [
        f"{RESULTS}/tables/clean_accuracy.csv",
        f"{RESULTS}/figures/clean_accuracy.png",
        f"{RESULTS}/figures/clean_accuracy.pdf",
        f"{RESULTS}/tables/benign_accuracy.csv",
        f"{RESULTS}/figures/benign_accuracy.png",
        f"{RESULTS}/figures/benign_accuracy.pdf",
    ]


def get_final_output(wildcards):
    """Final files of every stage (rule all); an optional stage lists none when it is disabled.

    Called when the DAG is built, after every rule file is included (order does not matter).
    """
    return [
        *model_targets(),
        *ATTACK_PLAN.targets(),
        *CODEC_PLAN.codec_targets(),
        *TRANSFER_PLAN.transfer_targets(),
        *REPRESENTATION_PLAN.targets_files(),
        *DEFENSE_PLAN.targets(),
        *anomaly_targets(),
        *generalisation_targets(),
        *PITCH_PLAN.targets(),
    ]
