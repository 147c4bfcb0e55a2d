# Constants and input functions of workflow/rules/transfer.smk (kept apart: `snakemake --lint`
# wants rules and functions in different files).
from advmir.codecs.plan import alternatives
from advmir.transfer.plan import TransferPlan

TRANSFER_PLAN = TransferPlan(
    config, RESULTS, DATASETS, MODELS, ATTACK_PLAN.attacked_models
)
TRANSFER_TABLES = TRANSFER_PLAN.tables()


def transfer_job_inputs(wildcards):
    """The dataset and the inputs of one evaluation job: one condition's, or every condition's
    (a per-attack job has no {condition} wildcard)."""
    return {
        **dataset_files(wildcards),
        **TRANSFER_PLAN.transfer_inputs(
            wildcards.dataset, wildcards.attack, wildcards.get("condition")
        ),
    }
