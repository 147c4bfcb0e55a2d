# Constants and input functions of workflow/rules/defenses.smk (kept apart: `snakemake --lint`
# wants rules and functions in different files). The job grid and the checks live in
# advmir.defenses.plan (tested); the defended models are already zoo models (advmir.config.expand_defenses).
from advmir.defenses.plan import DefensePlan

# Every ensemble attack is built now, without a model: a bad parameter stops `snakemake -n`.
DEFENSE_PLAN = DefensePlan(
    config, RESULTS, DATASETS, MODELS, build=not workflow.remote_exec
)


def robustness_inputs(wildcards):
    """The dataset, the model's checkpoint and, for a defended model, its undefended twin's."""
    return {
        **dataset_files(wildcards),
        **DEFENSE_PLAN.inputs(wildcards.dataset, wildcards.model),
    }


def twin_option(wildcards, input):
    return (
        f"--twin-checkpoint {shlex.quote(input.twin)}" if "twin" in input.keys() else ""
    )


def defense_info(wildcards):
    return DEFENSE_PLAN.info_json(wildcards.model)


def augmentation_inputs(wildcards):
    """The augmentation study's inputs: the metrics.json of every augmented model and its base
    model; generalisation.csv when the generalisation stage runs; codec_clean_accuracy.csv when
    the codec and transfer stages do (without them, the table has fewer conditions)."""
    files = {"metrics": DEFENSE_PLAN.augmentation_metrics_files()}
    if GENERALISATION_ON:
        files["generalisation"] = f"{RESULTS}/tables/generalisation.csv"
    if TRANSFER_PLAN.transfer_targets():
        files["codecs"] = TRANSFER_TABLES["codec_clean_accuracy"]
    return files


def augmentation_tables(wildcards, input):
    """summarize-augmentation's options of the tables that augmentation_inputs listed."""
    return " ".join(
        f"--{key} {shlex.quote(input[key])}"
        for key in ("generalisation", "codecs")
        if key in input.keys()
    )


def transform_inputs(wildcards):
    """The dataset and the checkpoint of the model the transformation defense wraps."""
    return {
        **dataset_files(wildcards),
        "checkpoint": DEFENSE_PLAN.transform_checkpoint(
            wildcards.dataset, wildcards.transform
        ),
    }


def transform_spec(wildcards):
    return DEFENSE_PLAN.transform_json(wildcards.transform)


def smoothing_inputs(wildcards):
    """The dataset and the checkpoint of the base model the smoothed classifier smooths."""
    return {
        **dataset_files(wildcards),
        "checkpoint": DEFENSE_PLAN.smoothing_checkpoint(
            wildcards.dataset, wildcards.smoothed
        ),
    }


def smoothing_setting(wildcards):
    return DEFENSE_PLAN.smoothing_json(wildcards.smoothed)


def smoothing_info(wildcards):
    return DEFENSE_PLAN.smoothing_info(wildcards.smoothed)


def smoothing_eval_size(wildcards):
    return DEFENSE_PLAN.smoothing_eval_size(wildcards.smoothed)


def detection_inputs(wildcards):
    """The dataset and the checkpoint of the classifier whose adversarial examples are detected."""
    return {
        **dataset_files(wildcards),
        "checkpoint": DEFENSE_PLAN.detection_checkpoint(
            wildcards.dataset, wildcards.model
        ),
    }
