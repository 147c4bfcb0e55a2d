# Constants and input functions of workflow/rules/codecs.smk (kept apart: `snakemake --lint`
# wants rules and functions in different files).
from advmir.transfer.plan import TransferPlan, alternatives

TRANSFER_PLAN = TransferPlan(
    config, RESULTS, DATASETS, MODELS, globals().get("attacked_models")
)
codec_targets = TRANSFER_PLAN.codec_targets
CODEC_DIR = f"{RESULTS}/codecs/{{dataset}}/{{source}}/{{codec}}"
DECODED = f"{CODEC_DIR}/decoded.npy"
