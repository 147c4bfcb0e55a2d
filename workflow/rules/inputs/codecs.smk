# Constants and input functions of workflow/rules/codecs.smk (kept apart: `snakemake --lint`
# wants rules and functions in different files).
from advmir.codecs.plan import CLEAN, DECODED_NOISE, CodecPlan, alternatives

CODEC_PLAN = CodecPlan(config, RESULTS, DATASETS, MODELS, ATTACK_PLAN.attacked_models)
CODEC_DIR = f"{RESULTS}/codecs/{{dataset}}/{{source}}/{{codec}}"
DECODED = f"{CODEC_DIR}/decoded.npy"
# an attack source's matched-noise control through the same setting (the clean source has none)
DECODED_NOISE_FILE = f"{CODEC_DIR}/{DECODED_NOISE}"
ATTACK_SOURCES = alternatives([s for s in CODEC_PLAN.sources() if s != CLEAN])
# transform_source's constraint: any MODEL/ATTACK by its shape. Its ~5 outputs per setting are as
# many patterns, each matched against every input file the DAG resolves: with the named
# alternatives above in each (1,675 sources in the 10x sweep) that matching, not the job count,
# dominated the dry run.
ANY_ATTACK_SOURCE = "[^/]+/[^/]+"


def decoded_output(path):
    """Decoded audio is temporary unless codecs.keep_decoded (the bitstreams always stay)."""
    return path if CODEC_PLAN.keep_decoded else temp(path)


def source_outputs(attack):
    """A per-source job's outputs (codecs.jobs: source), decoded audio temporary like decoded_output's."""
    outputs = CODEC_PLAN.source_outputs(attack=attack)
    for key in ("decoded", "decoded_noise"):
        if key in outputs:
            outputs[key] = decoded_output(outputs[key])
    return outputs
