# Constants and input functions of workflow/rules/transfer.smk (kept apart: `snakemake --lint`
# wants rules and functions in different files).
transfer_targets = TRANSFER_PLAN.transfer_targets
TRANSFER_TABLES = TRANSFER_PLAN.tables()
