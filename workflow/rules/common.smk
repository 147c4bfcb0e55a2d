import json
import os
import sys

from snakemake.utils import validate

from advmir.config import check_config, model_spec, training_for

# Jobs call `python -m advmir`: make that the python running Snakemake (the venv's), also inside
# cluster jobs, which inherit the submitting environment but not an activated venv.
os.environ.update(
    PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
)

validate(config, schema="../schemas/config.schema.yaml")
check_config(config)

RESULTS = config["results"].rstrip("/")
DATASETS = list(config["datasets"])
MODELS = dict(config["models"])
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


def model_params(wildcards):
    """JSON of the model's spec; a change re-runs this model and what depends on it only."""
    return json.dumps(model_spec(config, wildcards.model), sort_keys=True)


def training_params(wildcards):
    return json.dumps(training_for(config, wildcards.model), sort_keys=True)


def model_targets():
    return [
        f"{RESULTS}/tables/clean_accuracy.csv",
        f"{RESULTS}/figures/clean_accuracy.png",
        f"{RESULTS}/figures/clean_accuracy.pdf",
    ]


def all_targets(wildcards):
    """Final files of every stage; a stage adds itself by defining a `*_targets` function."""
    targets = model_targets()
    for name in (
        "attack_targets",
        "codec_targets",
        "transfer_targets",
        "anomaly_targets",
    ):
        if name in globals():
            targets += globals()[name]()
    return targets
