# Anomaly scoring: corrupt the test and valid splits with known faults (valid without the held-out
# fault implementations), score every clip with each detector (one job per detector), combine them
# (rank average; stacked model fitted on valid only),
# train the log-mel autoencoder and the multi-task net as their own jobs, evaluate and plot.
# The `anomaly` section is validated by workflow/schemas/anomaly.schema.yaml; severities against
# each fault's range (and the sample rate) by advmir.anomaly.corruptions when the workflow starts.


include: "inputs/anomaly.smk"


rule corrupt_split:
    input:
        unpack(dataset_files),
    output:
        waveforms=f"{RESULTS}/anomaly/{{dataset}}/corrupted_{{anomaly_split}}/waveforms.npy",
        manifest=f"{RESULTS}/anomaly/{{dataset}}/corrupted_{{anomaly_split}}/manifest.csv",
        classes=f"{RESULTS}/anomaly/{{dataset}}/corrupted_{{anomaly_split}}/classes.json",
    log:
        f"{RESULTS}/logs/anomaly/{{dataset}}/corrupted_{{anomaly_split}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/anomaly/{{dataset}}/corrupted_{{anomaly_split}}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    params:
        faults=anomaly_corrupt_args,
        fraction=lambda wildcards: ANOMALY_FRACTION[wildcards.anomaly_split],
        seed=config["seed"],
    shell:
        'python -m advmir corrupt-split --dataset "$(dirname {input.waveforms:q})" --split {wildcards.anomaly_split}'
        ' --out "$(dirname {output.waveforms:q})" {params.faults} --fraction {params.fraction}'
        " --seed {params.seed} > {log:q} 2>&1"


rule train_anomaly_autoencoder:
    input:
        unpack(dataset_files),
    output:
        f"{RESULTS}/anomaly/{{dataset}}/autoencoder/model.ckpt",
    log:
        f"{RESULTS}/logs/anomaly/{{dataset}}/autoencoder/model.log",
    benchmark:
        f"{RESULTS}/benchmarks/anomaly/{{dataset}}/autoencoder/model.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
    params:
        epochs=ANOMALY["autoencoder"]["epochs"],
        max_clips=ANOMALY_TRAIN_CLIPS,
        seed=config["seed"],
    shell:
        'python -m advmir train-anomaly-autoencoder --dataset "$(dirname {input.waveforms:q})" --out {output:q}'
        " --epochs {params.epochs} --max-clips {params.max_clips} --seed {params.seed} > {log:q} 2>&1"


rule train_multitask:
    input:
        unpack(dataset_files),
    output:
        f"{RESULTS}/anomaly/{{dataset}}/multitask/model.ckpt",
    log:
        f"{RESULTS}/logs/anomaly/{{dataset}}/multitask/model.log",
    benchmark:
        f"{RESULTS}/benchmarks/anomaly/{{dataset}}/multitask/model.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        faults=ANOMALY_FIT_FAULT_ARGS,
        epochs=ANOMALY["multitask"]["epochs"],
        max_clips=ANOMALY_TRAIN_CLIPS,
        seed=config["seed"],
    shell:
        'python -m advmir train-multitask --dataset "$(dirname {input.waveforms:q})" --out {output:q}'
        " --faults {params.faults} --epochs {params.epochs} --max-clips {params.max_clips}"
        " --seed {params.seed} > {log:q} 2>&1"


rule score_anomalies:
    input:
        unpack(anomaly_detector_inputs),
    output:
        test=f"{RESULTS}/anomaly/{{dataset}}/scores/{{detector}}.csv",
        valid=f"{RESULTS}/anomaly/{{dataset}}/valid_scores/{{detector}}.csv",
    log:
        f"{RESULTS}/logs/anomaly/{{dataset}}/scores/{{detector}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/anomaly/{{dataset}}/scores/{{detector}}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        checkpoints=anomaly_detector_args,
        max_reference=ANOMALY_TRAIN_CLIPS,
        seed=config["seed"],
    shell:
        'python -m advmir score-anomalies --detector {wildcards.detector} --dataset "$(dirname {input.dataset:q})"'
        ' --sets "$(dirname {input.test[0]:q})" "$(dirname {input.valid[0]:q})" --out {output.test:q} {output.valid:q}'
        " {params.checkpoints} --max-reference {params.max_reference} --seed {params.seed} > {log:q} 2>&1"


rule combine_anomaly_scores:
    input:
        test_set=lambda wildcards: anomaly_set(wildcards.dataset, "test"),
        valid_set=lambda wildcards: anomaly_set(wildcards.dataset, "valid"),
        test=lambda wildcards: anomaly_scores(
            wildcards.dataset, detectors=ANOMALY_ENSEMBLE_INPUTS
        ),
        valid=lambda wildcards: anomaly_scores(
            wildcards.dataset, "valid_scores", ANOMALY_ENSEMBLE_INPUTS
        ),
    output:
        f"{RESULTS}/anomaly/{{dataset}}/scores/{{ensemble}}.csv",
    log:
        f"{RESULTS}/logs/anomaly/{{dataset}}/scores/{{ensemble}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/anomaly/{{dataset}}/scores/{{ensemble}}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        seed=config["seed"],
    shell:
        "python -m advmir score-anomalies --detector {wildcards.ensemble}"
        ' --sets "$(dirname {input.test_set[0]:q})" "$(dirname {input.valid_set[0]:q})" --out {output:q}'
        " --scores {input.test:q} {input.valid:q} --seed {params.seed} > {log:q} 2>&1"


rule evaluate_anomalies:
    input:
        test_set=lambda wildcards: anomaly_set(wildcards.dataset, "test"),
        scores=lambda wildcards: anomaly_scores(
            wildcards.dataset,
            detectors=ANOMALY_DETECTORS + ["multitask"] + ANOMALY_ENSEMBLES,
        ),
    output:
        metrics=f"{RESULTS}/anomaly/{{dataset}}/metrics.csv",
        review=f"{RESULTS}/anomaly/{{dataset}}/review.csv",
        roc=f"{RESULTS}/anomaly/{{dataset}}/roc.csv",
        budget=f"{RESULTS}/anomaly/{{dataset}}/budget.csv",
        generalisation=f"{RESULTS}/anomaly/{{dataset}}/generalisation.csv",
        severities=f"{RESULTS}/anomaly/{{dataset}}/severities.csv",
    log:
        f"{RESULTS}/logs/anomaly/{{dataset}}/metrics.log",
    benchmark:
        f"{RESULTS}/benchmarks/anomaly/{{dataset}}/metrics.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        ranking=ANOMALY_RANKING,
    shell:
        'python -m advmir evaluate-anomalies --set "$(dirname {input.test_set[0]:q})" --scores {input.scores:q}'
        " --ranking {params.ranking} --metrics {output.metrics:q} --review {output.review:q}"
        " --roc {output.roc:q} --budget {output.budget:q} --generalisation {output.generalisation:q}"
        " --severities {output.severities:q} > {log:q} 2>&1"


rule summarize_anomalies:
    input:
        expand(f"{RESULTS}/anomaly/{{dataset}}/metrics.csv", dataset=ANOMALY_DATASETS),
        expand(
            f"{RESULTS}/anomaly/{{dataset}}/generalisation.csv",
            dataset=ANOMALY_DATASETS,
        ),
    output:
        table=f"{RESULTS}/tables/anomaly.csv",
        comparison=f"{RESULTS}/tables/anomaly_multitask_vs_ensemble.csv",
        generalisation=f"{RESULTS}/tables/anomaly_generalisation.csv",
    log:
        f"{RESULTS}/logs/tables/anomaly.log",
    benchmark:
        f"{RESULTS}/benchmarks/tables/anomaly.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        pairs=" ".join(
            shlex.quote(f"{d}={RESULTS}/anomaly/{d}/metrics.csv")
            for d in ANOMALY_DATASETS
        ),
        generalisation_pairs=" ".join(
            shlex.quote(f"{d}={RESULTS}/anomaly/{d}/generalisation.csv")
            for d in ANOMALY_DATASETS
        ),
    shell:
        "(python -m advmir evaluate-anomalies --combine {params.pairs} --table {output.table:q}"
        " --comparison {output.comparison:q}"
        " && python -m advmir evaluate-anomalies --combine {params.generalisation_pairs}"
        " --table {output.generalisation:q}) > {log:q} 2>&1"


rule plot_anomalies:
    input:
        metrics=f"{RESULTS}/anomaly/{{dataset}}/metrics.csv",
        roc=f"{RESULTS}/anomaly/{{dataset}}/roc.csv",
        budget=f"{RESULTS}/anomaly/{{dataset}}/budget.csv",
    output:
        roc_png=report(
            f"{RESULTS}/figures/anomaly/{{dataset}}/roc.png",
            caption="../report/anomaly_roc.rst",
            category="6. Anomaly scoring",
            labels={"dataset": "{dataset}", "figure": "ROC curves"},
        ),
        roc_pdf=f"{RESULTS}/figures/anomaly/{{dataset}}/roc.pdf",
        heatmap_png=report(
            f"{RESULTS}/figures/anomaly/{{dataset}}/auc_heatmap.png",
            caption="../report/anomaly_auc_heatmap.rst",
            category="6. Anomaly scoring",
            labels={"dataset": "{dataset}", "figure": "AUC per detector and fault"},
        ),
        heatmap_pdf=f"{RESULTS}/figures/anomaly/{{dataset}}/auc_heatmap.pdf",
        budget_png=report(
            f"{RESULTS}/figures/anomaly/{{dataset}}/review_budget.png",
            caption="../report/anomaly_review_budget.rst",
            category="6. Anomaly scoring",
            labels={"dataset": "{dataset}", "figure": "review budget"},
        ),
        budget_pdf=f"{RESULTS}/figures/anomaly/{{dataset}}/review_budget.pdf",
    log:
        f"{RESULTS}/logs/figures/anomaly/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/anomaly/{{dataset}}.tsv"
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m advmir plot-anomalies --metrics {input.metrics:q} --roc {input.roc:q} --budget {input.budget:q}"
        " --roc-out {output.roc_png:q} {output.roc_pdf:q} --heatmap-out {output.heatmap_png:q} {output.heatmap_pdf:q}"
        " --budget-out {output.budget_png:q} {output.budget_pdf:q} > {log:q} 2>&1"
