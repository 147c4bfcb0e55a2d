# Constants and input functions of workflow/rules/transfer.smk (kept apart: `snakemake --lint`
# wants rules and functions in different files).
from advmir.codecs.plan import alternatives
from advmir.transfer.plan import TransferPlan

TRANSFER_PLAN = TransferPlan(
    config, RESULTS, DATASETS, MODELS, ATTACK_PLAN.attacked_models
)
TRANSFER_TABLES = TRANSFER_PLAN.tables()
