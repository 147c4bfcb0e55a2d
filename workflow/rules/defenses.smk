# Defenses: adversarially trained twins of zoo models, and the robust evaluation that judges them.
# A defended model (a key of config["defenses"]["models"]) is a zoo model: advmir.config.expand_defenses
# added it to config["models"] with its base model's spec and training plus `adversarial`, so
# train_model (models.smk) trains it and any stage may name it. This file holds the evaluation: one
# job per (dataset, evaluated model): robust accuracy under the ensemble at each SNR budget on the
# attack stage's seeded evaluation subset, and the gradient-masking sanity checks; then the tables
# (defenses.csv, defense_sanity.csv) and the figure. With a defended model trained for accuracy
# (adv_aug), the augmentation study: its accuracy beside its base model's by condition
# (defense_augmentation.csv, from the models' metrics.json, generalisation.csv and
# codec_clean_accuracy.csv) and its figure. Input transformations scored three ways
# (defense_transforms.csv), randomized smoothing: certified accuracy vs SNR (certified.csv), and
# adversarial-example detection: ROC-AUC before and after an adaptive attack (detection.csv).


include: "inputs/defenses.smk"


rule evaluate_robustness:
    input:
        unpack(robustness_inputs),
    output:
        table=f"{RESULTS}/defenses/{{dataset}}/{{model}}/robustness.csv",
        clips=f"{RESULTS}/defenses/{{dataset}}/{{model}}/clips.csv",
        sanity=f"{RESULTS}/defenses/{{dataset}}/{{model}}/sanity.csv",
        meta=f"{RESULTS}/defenses/{{dataset}}/{{model}}/robustness.json",
    log:
        f"{RESULTS}/logs/defenses/{{dataset}}/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/defenses/{{dataset}}/{{model}}.tsv"
    wildcard_constraints:
        model=DEFENSE_PLAN.model_constraint(),
    conda:
        "../../envs/torch.yaml"
    threads: DEFENSE_PLAN.threads
    resources:
        mem_mb=3000,
        runtime=120,
        gpu=GPUS,
    params:
        twin=twin_option,
        info=defense_info,
        ensemble=DEFENSE_PLAN.ensemble_json(),
        budgets=DEFENSE_PLAN.budgets_option(),
        sanity=DEFENSE_PLAN.sanity_json(),
        eval_size=DEFENSE_PLAN.eval_size,
        batch_size=DEFENSE_PLAN.batch_size,
        seed=config["seed"],
        device=config["device"],
    shell:
        'python -m advmir evaluate-robustness --dataset-dir "$(dirname {input.waveforms:q})"'
        " --checkpoint {input.checkpoint:q} {params.twin} --info {params.info:q}"
        " --ensemble {params.ensemble:q} --budgets-db {params.budgets} --sanity {params.sanity:q}"
        " --eval-size {params.eval_size} --batch-size {params.batch_size} --seed {params.seed}"
        " --device {params.device} --threads {threads}"
        ' --out-dir "$(dirname {output.table:q})" > {log:q} 2>&1'


rule summarize_defenses:
    input:
        runs=DEFENSE_PLAN.run_files("robustness.json"),
        metrics=DEFENSE_PLAN.metrics_files(),
    output:
        table=report(
            DEFENSE_PLAN.table("defenses"),
            caption="../report/defenses_table.rst",
            category="5. Defenses",
            labels={"table": "robust accuracy"},
        ),
        sanity=report(
            DEFENSE_PLAN.table("defense_sanity"),
            caption="../report/defense_sanity.rst",
            category="5. Defenses",
            labels={"table": "sanity checks"},
        ),
    log:
        f"{RESULTS}/logs/tables/defenses.log",
    benchmark:
        f"{RESULTS}/benchmarks/tables/defenses.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m advmir summarize-defenses --runs {input.runs:q} --metrics {input.metrics:q}"
        " --out {output.table:q} --sanity-out {output.sanity:q} > {log:q} 2>&1"


rule plot_defenses:
    input:
        DEFENSE_PLAN.table("defenses"),
    output:
        png=report(
            DEFENSE_PLAN.figure("png"),
            caption="../report/defense_robustness.rst",
            category="5. Defenses",
            labels={"figure": "robust accuracy vs SNR budget"},
        ),
        pdf=DEFENSE_PLAN.figure("pdf"),
    log:
        f"{RESULTS}/logs/figures/defense_robustness.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/defense_robustness.tsv"
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m advmir plot-defenses --table {input:q} --out {output.png:q} {output.pdf:q} > {log:q} 2>&1"


rule summarize_augmentation:
    input:
        unpack(augmentation_inputs),
    output:
        report(
            DEFENSE_PLAN.table("defense_augmentation"),
            caption="../report/defense_augmentation.rst",
            category="5. Defenses",
            labels={"table": "augmentation: accuracy by condition"},
        ),
    log:
        f"{RESULTS}/logs/tables/defense_augmentation.log",
    benchmark:
        f"{RESULTS}/benchmarks/tables/defense_augmentation.tsv"
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        pairs=DEFENSE_PLAN.augmentation_pairs(),
        tables=augmentation_tables,
        default_split=DEFENSE_PLAN.default_split,
    shell:
        "python -m advmir summarize-augmentation {params.pairs} --metrics {input.metrics:q}"
        " {params.tables} --default-split {params.default_split:q} --out {output:q} > {log:q} 2>&1"


rule plot_augmentation:
    input:
        DEFENSE_PLAN.table("defense_augmentation"),
    output:
        png=report(
            DEFENSE_PLAN.figure("png", "defense_augmentation"),
            caption="../report/defense_augmentation.rst",
            category="5. Defenses",
            labels={"figure": "augmentation: accuracy by condition"},
        ),
        pdf=DEFENSE_PLAN.figure("pdf", "defense_augmentation"),
    log:
        f"{RESULTS}/logs/figures/defense_augmentation.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/defense_augmentation.tsv"
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m advmir plot-augmentation --table {input:q} --out {output.png:q} {output.pdf:q}"
        " > {log:q} 2>&1"


# Input-transformation defenses (advmir.defenses.transforms): a zoo model behind a codec,
# quantisation, resampling, low-pass, noise or a random combination, scored clean, non-adaptively
# (attacks crafted on the undefended model) and adaptively (through the defense: BPDA, EOT).
rule evaluate_transform:
    input:
        unpack(transform_inputs),
    output:
        summary=f"{RESULTS}/defenses/{{dataset}}/transforms/{{transform}}/summary.csv",
        rows=f"{RESULTS}/defenses/{{dataset}}/transforms/{{transform}}/transform.csv",
        meta=f"{RESULTS}/defenses/{{dataset}}/transforms/{{transform}}/transform.json",
    log:
        f"{RESULTS}/logs/defenses/{{dataset}}/transforms/{{transform}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/defenses/{{dataset}}/transforms/{{transform}}.tsv"
    wildcard_constraints:
        transform=DEFENSE_PLAN.transform_constraint(),
    conda:
        "../../envs/torch.yaml"
    threads: DEFENSE_PLAN.threads
    resources:
        mem_mb=3000,
        runtime=120,
        gpu=GPUS,
    params:
        spec=transform_spec,
        attacks=DEFENSE_PLAN.transform_attacks_json(),
        budgets=DEFENSE_PLAN.transform_budgets_option(),
        eot_samples=DEFENSE_PLAN.transform_option("eot_samples"),
        margin=DEFENSE_PLAN.transform_option("margin"),
        eval_size=DEFENSE_PLAN.transform_eval_size,
        batch_size=DEFENSE_PLAN.batch_size,
        seed=config["seed"],
        device=config["device"],
    shell:
        'python -m advmir evaluate-transform --dataset-dir "$(dirname {input.waveforms:q})"'
        " --checkpoint {input.checkpoint:q} --name {wildcards.transform:q} --transform {params.spec:q}"
        " --attacks {params.attacks:q} --budgets-db {params.budgets} --eot-samples {params.eot_samples}"
        " --margin {params.margin} --eval-size {params.eval_size} --batch-size {params.batch_size}"
        " --seed {params.seed} --device {params.device} --threads {threads}"
        ' --out-dir "$(dirname {output.summary:q})" > {log:q} 2>&1'


rule summarize_transforms:
    input:
        DEFENSE_PLAN.transform_files("summary.csv"),
    output:
        report(
            DEFENSE_PLAN.table("defense_transforms"),
            caption="../report/defense_transforms.rst",
            category="5. Defenses",
            labels={"table": "transformation defenses"},
        ),
    log:
        f"{RESULTS}/logs/tables/defense_transforms.log",
    benchmark:
        f"{RESULTS}/benchmarks/tables/defense_transforms.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m advmir summarize-transforms --runs {input:q} --out {output:q} > {log:q} 2>&1"


rule plot_transforms:
    input:
        DEFENSE_PLAN.table("defense_transforms"),
    output:
        png=report(
            DEFENSE_PLAN.figure("png", "defense_transforms"),
            caption="../report/defense_transforms.rst",
            category="5. Defenses",
            labels={"figure": "transformation defenses: non-adaptive vs adaptive"},
        ),
        pdf=DEFENSE_PLAN.figure("pdf", "defense_transforms"),
    log:
        f"{RESULTS}/logs/figures/defense_transforms.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/defense_transforms.tsv"
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m advmir plot-transforms --table {input:q} --out {output.png:q} {output.pdf:q}"
        " > {log:q} 2>&1"


# Randomized smoothing (advmir.defenses.smoothing, Cohen et al. 2019): a model (a gaussian-mode
# defended model, trained with noise at the sigma it is certified with) smoothed with Gaussian noise;
# per clip the smoothed prediction and the certified L2 radius, as the SNR down to which it holds.
rule certify_smoothed:
    input:
        unpack(smoothing_inputs),
    output:
        clips=f"{RESULTS}/defenses/{{dataset}}/smoothing/{{smoothed}}/certified.csv",
        meta=f"{RESULTS}/defenses/{{dataset}}/smoothing/{{smoothed}}/smoothing.json",
    log:
        f"{RESULTS}/logs/defenses/{{dataset}}/smoothing/{{smoothed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/defenses/{{dataset}}/smoothing/{{smoothed}}.tsv"
    wildcard_constraints:
        smoothed=DEFENSE_PLAN.smoothing_constraint(),
    conda:
        "../../envs/torch.yaml"
    threads: DEFENSE_PLAN.smoothing_threads()
    resources:
        mem_mb=2000,
        runtime=120,
        gpu=GPUS,
    params:
        setting=smoothing_setting,
        info=smoothing_info,
        snr_db=DEFENSE_PLAN.smoothing_snr_option(),
        eval_size=smoothing_eval_size,
        seed=config["seed"],
        device=config["device"],
    shell:
        'python -m advmir certify-smoothed --dataset-dir "$(dirname {input.waveforms:q})"'
        " --checkpoint {input.checkpoint:q} --name {wildcards.smoothed:q} --setting {params.setting:q}"
        " --info {params.info:q} --snr-db {params.snr_db} --eval-size {params.eval_size}"
        " --seed {params.seed} --device {params.device} --threads {threads}"
        ' --out-dir "$(dirname {output.clips:q})" > {log:q} 2>&1'


rule summarize_certified:
    input:
        DEFENSE_PLAN.smoothing_files("smoothing.json"),
    output:
        report(
            DEFENSE_PLAN.table("certified"),
            caption="../report/certified.rst",
            category="5. Defenses",
            labels={"table": "randomized smoothing: certified accuracy"},
        ),
    log:
        f"{RESULTS}/logs/tables/certified.log",
    benchmark:
        f"{RESULTS}/benchmarks/tables/certified.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        snr_db=DEFENSE_PLAN.smoothing_snr_option(),
    shell:
        "python -m advmir summarize-certified --runs {input:q} --snr-db {params.snr_db}"
        " --out {output:q} > {log:q} 2>&1"


rule plot_certified:
    input:
        DEFENSE_PLAN.table("certified"),
    output:
        png=report(
            DEFENSE_PLAN.figure("png", "certified"),
            caption="../report/certified.rst",
            category="5. Defenses",
            labels={"figure": "randomized smoothing: certified accuracy vs SNR"},
        ),
        pdf=DEFENSE_PLAN.figure("pdf", "certified"),
    log:
        f"{RESULTS}/logs/figures/certified.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/certified.tsv"
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m advmir plot-certified --table {input:q} --out {output.png:q} {output.pdf:q}"
        " > {log:q} 2>&1"


# Adversarial-example detection (advmir.defenses.detection): feature squeezing, the anomaly stage's
# detectors and its stacked ensemble retrained on clean vs adversarial clips, a log-mel detector
# network; ROC-AUC on the attack stage's seeded test clips before and after an adaptive attacker.
rule evaluate_detection:
    input:
        unpack(detection_inputs),
    output:
        summary=f"{RESULTS}/defenses/{{dataset}}/detection/{{model}}/summary.csv",
        roc=f"{RESULTS}/defenses/{{dataset}}/detection/{{model}}/roc.csv",
        meta=f"{RESULTS}/defenses/{{dataset}}/detection/{{model}}/detection.json",
    log:
        f"{RESULTS}/logs/defenses/{{dataset}}/detection/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/defenses/{{dataset}}/detection/{{model}}.tsv"
    wildcard_constraints:
        model=DEFENSE_PLAN.detection_constraint(),
    conda:
        "../../envs/torch.yaml"
    threads: DEFENSE_PLAN.detection_option("threads")
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=GPUS,
    params:
        setting=DEFENSE_PLAN.detection_json(),
        eval_size=DEFENSE_PLAN.detection_option("eval_size"),
        batch_size=DEFENSE_PLAN.detection_option("batch_size"),
        seed=config["seed"],
        device=config["device"],
    shell:
        'python -m advmir evaluate-detection --dataset-dir "$(dirname {input.waveforms:q})"'
        " --checkpoint {input.checkpoint:q} --setting {params.setting:q} --eval-size {params.eval_size}"
        " --batch-size {params.batch_size} --seed {params.seed} --device {params.device} --threads {threads}"
        ' --out-dir "$(dirname {output.summary:q})" > {log:q} 2>&1'


rule summarize_detection:
    input:
        DEFENSE_PLAN.detection_files("summary.csv"),
    output:
        table=report(
            DEFENSE_PLAN.table("detection"),
            caption="../report/detection_table.rst",
            category="5. Defenses",
            labels={"table": "adversarial-example detection: ROC-AUC"},
        ),
        roc=DEFENSE_PLAN.table("detection_roc"),
    log:
        f"{RESULTS}/logs/tables/detection.log",
    benchmark:
        f"{RESULTS}/benchmarks/tables/detection.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m advmir summarize-detection --runs {input:q} --out {output.table:q}"
        " --roc-out {output.roc:q} > {log:q} 2>&1"


rule plot_detection:
    input:
        table=DEFENSE_PLAN.table("detection"),
        roc=DEFENSE_PLAN.table("detection_roc"),
    output:
        png=report(
            DEFENSE_PLAN.figure("png", "detection_roc"),
            caption="../report/detection_roc.rst",
            category="5. Defenses",
            labels={"figure": "detection ROC before and after the adaptive attack"},
        ),
        pdf=DEFENSE_PLAN.figure("pdf", "detection_roc"),
    log:
        f"{RESULTS}/logs/figures/detection_roc.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/detection_roc.tsv"
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m advmir plot-detection --table {input.table:q} --roc {input.roc:q}"
        " --out {output.png:q} {output.pdf:q} > {log:q} 2>&1"
