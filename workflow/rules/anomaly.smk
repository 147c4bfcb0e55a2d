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
        test=lambda wildcards: anomaly_scores(
            wildcards.dataset, detectors=ANOMALY_ENSEMBLE_INPUTS
        ),
    output:
        f"{RESULTS}/anomaly/{{dataset}}/scores/ensemble_rank.csv",
    log:
        f"{RESULTS}/logs/anomaly/{{dataset}}/scores/ensemble_rank.log",
    benchmark:
        f"{RESULTS}/benchmarks/anomaly/{{dataset}}/scores/ensemble_rank.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        seed=config["seed"],
    shell:
        "python -m advmir score-anomalies --detector ensemble_rank"
        ' --sets "$(dirname {input.test_set[0]:q})" --out {output:q}'
        " --scores {input.test:q} --seed {params.seed} > {log:q} 2>&1"


# The stacked ensemble: fitted on the valid copy's scores, saved (weights and each detector's clean
# calibration, JSON + npz) for rule review_dataset, and applied to the test copy.
rule fit_anomaly_ensemble:
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
        scores=f"{RESULTS}/anomaly/{{dataset}}/scores/ensemble_stack.csv",
        stack=f"{RESULTS}/anomaly/{{dataset}}/ensemble/stack.json",
        calibration=f"{RESULTS}/anomaly/{{dataset}}/ensemble/calibration.npz",
    log:
        f"{RESULTS}/logs/anomaly/{{dataset}}/scores/ensemble_stack.log",
    benchmark:
        f"{RESULTS}/benchmarks/anomaly/{{dataset}}/scores/ensemble_stack.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        seed=config["seed"],
        held_out=" ".join(ANOMALY_HELD_OUT) or "none",
    shell:
        "python -m advmir score-anomalies --detector ensemble_stack"
        ' --sets "$(dirname {input.test_set[0]:q})" "$(dirname {input.valid_set[0]:q})" --out {output.scores:q}'
        " --scores {input.test:q} {input.valid:q} --seed {params.seed}"
        ' --save-ensemble "$(dirname {output.stack:q})"'
        " --ensemble-info dataset={wildcards.dataset} 'held_out={params.held_out}' > {log:q} 2>&1"


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
        roc_families=f"{RESULTS}/anomaly/{{dataset}}/roc_families.csv",
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
        " --severities {output.severities:q} --roc-families {output.roc_families:q} > {log:q} 2>&1"


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
        roc_families=f"{RESULTS}/anomaly/{{dataset}}/roc_families.csv",
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
        families_png=report(
            f"{RESULTS}/figures/anomaly/{{dataset}}/roc_families.png",
            caption="../report/anomaly_roc_families.rst",
            category="6. Anomaly scoring",
            labels={"dataset": "{dataset}", "figure": "ROC per fault family"},
        ),
        families_pdf=f"{RESULTS}/figures/anomaly/{{dataset}}/roc_families.pdf",
        held_out_png=report(
            f"{RESULTS}/figures/anomaly/{{dataset}}/review_budget_held_out.png",
            caption="../report/anomaly_review_budget_held_out.rst",
            category="6. Anomaly scoring",
            labels={
                "dataset": "{dataset}",
                "figure": "review budget, held-out faults",
            },
        ),
        held_out_pdf=f"{RESULTS}/figures/anomaly/{{dataset}}/review_budget_held_out.pdf",
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
        " --budget-out {output.budget_png:q} {output.budget_pdf:q} --roc-families {input.roc_families:q}"
        " --families-out {output.families_png:q} {output.families_pdf:q}"
        " --held-out-out {output.held_out_png:q} {output.held_out_pdf:q} > {log:q} 2>&1"


# Another prepared dataset (e.g. your own folder) ranked by the saved ensemble of
# anomaly.review.ensemble: every clip, most suspicious first, with reasons in words.
rule review_dataset:
    input:
        unpack(review_inputs),
    output:
        review=f"{RESULTS}/anomaly/{{dataset}}/reviewed/review.csv",
        scores=f"{RESULTS}/anomaly/{{dataset}}/reviewed/scores.csv",
    log:
        f"{RESULTS}/logs/anomaly/{{dataset}}/reviewed.log",
    benchmark:
        f"{RESULTS}/benchmarks/anomaly/{{dataset}}/reviewed.tsv"
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
        label_check=config["anomaly"]["review"].get("label_check", "auto"),
    shell:
        'python -m advmir review-dataset --ensemble "$(dirname {input.ensemble[0]:q})"'
        ' --source "$(dirname {input.source[0]:q})" --dataset "$(dirname {input.dataset:q})"'
        " {params.checkpoints} --max-reference {params.max_reference} --seed {params.seed}"
        " --label-check {params.label_check}"
        " --review {output.review:q} --scores {output.scores:q} > {log:q} 2>&1"


rule review_listening_page:
    input:
        unpack(dataset_files),
        review=f"{RESULTS}/anomaly/{{dataset}}/reviewed/review.csv",
    output:
        report(
            f"{RESULTS}/figures/anomaly/{{dataset}}/review_listen.html",
            caption="../report/anomaly_review_listen.rst",
            category="6. Anomaly scoring",
            labels={"dataset": "{dataset}", "figure": "listen: review list"},
        ),
    log:
        f"{RESULTS}/logs/figures/anomaly/{{dataset}}/review_listen.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/anomaly/{{dataset}}/review_listen.tsv"
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        top=REVIEW["top"],
    shell:
        'python -m advmir listening-page --review {input.review:q} --dataset "$(dirname {input.waveforms:q})"'
        " --top {params.top} --out {output:q} > {log:q} 2>&1"


# `make review`: only the review lists and their listening pages (and what they need).
rule review:
    input:
        review_targets(),
