# Constants and input functions of workflow/rules/attacks.smk (kept apart: `snakemake --lint`
# wants rules and functions in different files). The job grid and the checks live in
# advmir.attacks.plan (tested); validation filled every default (workflow/schemas/attacks.schema.yaml).
import os
import shlex

from advmir.attacks.plan import AttackPlan

# Every attack is built now, without a model: a bad parameter stops `snakemake -n` (a cluster
# job's config was checked by the run that submitted it).
ATTACK_PLAN = AttackPlan(
    config, RESULTS, DATASETS, MODELS, build=not workflow.remote_exec
)
ATTACK_SETTINGS = ATTACK_PLAN.settings


def attack_inputs(wildcards):
    """The dataset, the target model's checkpoint and, for a surrogate attack, the surrogate's."""
    return {
        **dataset_files(wildcards),
        **ATTACK_PLAN.inputs(wildcards.dataset, wildcards.model, wildcards.attack),
    }


def attack_spec_json(wildcards):
    return ATTACK_PLAN.spec_json(wildcards.attack)


def surrogate_option(wildcards, input):
    return ATTACK_PLAN.surrogate_option(input.get("surrogate"))


def run_dirs(wildcards, input):
    return " ".join(shlex.quote(os.path.dirname(f)) for f in input)
