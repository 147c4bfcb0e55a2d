# Constants and input functions of workflow/rules/representation.smk (kept apart: `snakemake --lint`
# wants rules and functions in different files). The job grid and the checks live in
# advmir.representation.plan (tested).
from advmir.codecs.plan import alternatives
from advmir.representation.plan import RepresentationPlan

# Every attack is built now, without a model: a bad parameter or an unknown member stops `snakemake -n`.
REPRESENTATION_PLAN = RepresentationPlan(
    config, RESULTS, DATASETS, MODELS, build=not workflow.remote_exec
)


def representation_inputs(wildcards):
    """The dataset, the checkpoints of the source's members and of every target."""
    return {
        **dataset_files(wildcards),
        **REPRESENTATION_PLAN.inputs(wildcards.dataset, wildcards.source),
    }


def representation_models(wildcards, input):
    """--member and --target options: each model's name beside its checkpoint."""
    spec = REPRESENTATION_PLAN.source_spec(wildcards.source)
    members = " ".join(
        f"--member {m} {shlex.quote(c)}" for m, c in zip(spec["members"], input.members)
    )
    targets = " ".join(
        f"--target {t} {shlex.quote(c)}"
        for t, c in zip(REPRESENTATION_PLAN.targets, input.targets)
    )
    return f"{members} {targets}"
