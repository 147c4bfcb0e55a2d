# Constants and input functions of workflow/rules/generalisation.smk.
import shlex

GENERALISATION = dict(config["generalisation"])
GENERALISATION_DIR = f"{RESULTS}/generalisation/synth_notes"
GENERALISATION_ON = GENERALISATION["enabled"] and "synth_notes" in DATASETS
GENERALISATION_SPLITS = [
    s
    for s in (GENERALISATION["splits"] if GENERALISATION_ON else [])
    if s != config["synth_notes"]["split"]
]
# null: the undefended zoo; with each augmentation defense (adv_aug) of those models (another
# defended model is trained on other splits only when named); a mapping: a list per split
GENERALISATION_MODELS = {
    split: generalisation_models(config, split) for split in GENERALISATION_SPLITS
}


def split_dataset_files(split):
    """The three files of a generalisation split's prepared dataset (data contract)."""
    root = f"{GENERALISATION_DIR}/{split}/data"
    return {
        "waveforms": f"{root}/waveforms.npy",
        "manifest": f"{root}/manifest.csv",
        "classes": f"{root}/classes.json",
    }


def split_training_inputs(wildcards):
    """The split's dataset, plus the codec versions of synth_notes' training clips (keyed by id),
    plus the twin's checkpoint on the same split when the model starts from it (init: twin).
    """
    files = split_dataset_files(wildcards.split)
    if TRAINING_CODECS["enabled"]:
        codecs = f"{RESULTS}/augment/synth_notes"
        files.update(
            codec_audio=f"{codecs}/codec_train.npy",
            codec_table=f"{codecs}/codec_train.csv",
        )
    twin = init_from(wildcards.model)
    if twin:
        files["init"] = (
            f"{GENERALISATION_DIR}/{wildcards.split}/models/{twin}/model.ckpt"
        )
    return files


def generalisation_metrics(wildcards):
    """metrics.json of each model on the default split and on every other split mode."""
    default = config["synth_notes"]["split"]
    every = dict.fromkeys(
        m for models in GENERALISATION_MODELS.values() for m in models
    )
    files = {
        f"{default}__{m}": f"{RESULTS}/models/synth_notes/{m}/metrics.json"
        for m in every
    }
    for split in GENERALISATION_SPLITS:
        for m in GENERALISATION_MODELS[split]:
            files[f"{split}__{m}"] = (
                f"{GENERALISATION_DIR}/{split}/models/{m}/metrics.json"
            )
    return files


def generalisation_runs(input):
    return " ".join(
        f"--run {key.split('__')[0]} {key.split('__')[1]} {shlex.quote(path)}"
        for key, path in input.items()
    )


def generalisation_targets():
    if not GENERALISATION_ON:
        return []
    return [f"{RESULTS}/tables/generalisation.csv"] + [
        f"{RESULTS}/figures/generalisation.{ext}" for ext in ("png", "pdf")
    ]
