# Representation transfer (question 7): one job per (dataset, source, budget) crafts a source's
# examples on the seeded evaluation clips and scores them, and their matched-noise controls, on every
# target with no transformation and after each codec of representation_transfer.codecs. {source} is
# ensemble_no_R (the members that do not read R), feature_no_R (the front-ends but R) or single_M;
# {budget} is an SNR budget such as 30db. The job grid lives in advmir.representation.plan (tested).


include: "inputs/representation.smk"


rule craft_representation_transfer:
    input:
        unpack(representation_inputs),
    output:
        predictions=f"{RESULTS}/representation/{{dataset}}/{{source}}/{{budget}}/predictions.csv",
        examples=f"{RESULTS}/representation/{{dataset}}/{{source}}/{{budget}}/examples.csv",
        meta=f"{RESULTS}/representation/{{dataset}}/{{source}}/{{budget}}/run.json",
    log:
        f"{RESULTS}/logs/representation/{{dataset}}/{{source}}/{{budget}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/representation/{{dataset}}/{{source}}/{{budget}}.tsv"
    wildcard_constraints:
        source=alternatives(REPRESENTATION_PLAN.sources),
        budget=alternatives(REPRESENTATION_PLAN.budget_names()),
    conda:
        "../../envs/torch.yaml"
    threads: REPRESENTATION_PLAN.threads
    resources:
        mem_mb=3000,
        runtime=60,
        gpu=GPUS,
    params:
        source=lambda w: REPRESENTATION_PLAN.source_json(w.source),
        models=representation_models,
        conditions=REPRESENTATION_PLAN.conditions_json(),
        snr_db=lambda w: w.budget.removesuffix("db"),
        eval_size=REPRESENTATION_PLAN.eval_size,
        seed=config["seed"],
        device=config["device"],
    shell:
        'python -m advmir craft-representation-transfer --dataset-dir "$(dirname {input.waveforms:q})"'
        " --source {params.source:q} {params.models} --conditions {params.conditions:q}"
        " --snr-db {params.snr_db} --eval-size {params.eval_size} --seed {params.seed}"
        " --device {params.device} --threads {threads}"
        ' --out-dir "$(dirname {output.predictions:q})" > {log:q} 2>&1'


rule summarize_representation_transfer:
    input:
        predictions=REPRESENTATION_PLAN.run_files(),
        examples=REPRESENTATION_PLAN.run_files("examples.csv"),
        meta=REPRESENTATION_PLAN.run_files("run.json"),
    output:
        table=REPRESENTATION_PLAN.table(),
        summary=REPRESENTATION_PLAN.table("representation_transfer_summary"),
    log:
        f"{RESULTS}/logs/tables/representation_transfer.log",
    benchmark:
        f"{RESULTS}/benchmarks/tables/representation_transfer.tsv"
    # torch's environment: the success rule is the attack stage's (advmir.attacks.scoring)
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        models=REPRESENTATION_PLAN.models_json(),
        held_out=" ".join(REPRESENTATION_PLAN.held_out),
    shell:
        "python -m advmir summarize-representation-transfer --runs {input.predictions:q}"
        " --models {params.models:q} --held-out {params.held_out}"
        " --out {output.table:q} --summary-out {output.summary:q} > {log:q} 2>&1"


rule plot_representation_transfer:
    input:
        summary=REPRESENTATION_PLAN.table("representation_transfer_summary"),
    output:
        png=report(
            REPRESENTATION_PLAN.figure("png"),
            caption="../report/representation_transfer.rst",
            category="4. Compression and transfer",
            labels={"figure": "leave-one-representation-out transfer"},
        ),
        pdf=REPRESENTATION_PLAN.figure("pdf"),
    log:
        f"{RESULTS}/logs/figures/representation_transfer.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/representation_transfer.tsv"
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m advmir plot-representation-transfer --summary {input.summary:q}"
        " --out {output.png:q} {output.pdf:q} > {log:q} 2>&1"
