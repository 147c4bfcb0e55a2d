# advmir: adversarial attacks and anomaly detection in music information retrieval.
# Table of contents only: the stages live in workflow/rules/, their code in src/advmir/.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/attacks.smk"
include: "workflow/rules/codecs.smk"
include: "workflow/rules/transfer.smk"
include: "workflow/rules/representation.smk"
include: "workflow/rules/defenses.smk"
include: "workflow/rules/anomaly.smk"
include: "workflow/rules/generalisation.smk"
include: "workflow/rules/pitch.smk"


rule all:
    default_target: True
    input:
        get_final_output,
