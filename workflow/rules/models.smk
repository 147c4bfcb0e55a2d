rule encode_training_codecs:
    input:
        unpack(dataset_files),
    output:
        audio=f"{RESULTS}/augment/{{dataset}}/codec_train.npy",
        table=f"{RESULTS}/augment/{{dataset}}/codec_train.csv",
    log:
        f"{RESULTS}/logs/augment/{{dataset}}/codec_train.log",
    benchmark:
        f"{RESULTS}/benchmarks/augment/{{dataset}}/codec_train.tsv"
    # every training waits on this job: before them all (a scheduling hint)
    priority: training_gate_priority(config)
    conda:
        "../../envs/codecs.yaml"
    threads: TRAINING_CODECS["threads"]
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        # a lambda: `settings` is required only when training_codecs is enabled (this rule's jobs)
        settings=lambda w: json.dumps(TRAINING_CODECS["settings"], sort_keys=True),
        evaluation=json.dumps(config["codecs"]["settings"], sort_keys=True),
        seed=config["seed"],
    shell:
        'python -m advmir encode-training-codecs --dataset-dir "$(dirname {input.waveforms:q})"'
        " --settings {params.settings:q} --evaluation {params.evaluation:q} --seed {params.seed}"
        ' --out-dir "$(dirname {output.audio:q})" --workers {threads} > {log:q} 2>&1'


rule train_model:
    input:
        unpack(training_inputs),
    output:
        ckpt=f"{RESULTS}/models/{{dataset}}/{{model}}/model.ckpt",
        metrics=f"{RESULTS}/models/{{dataset}}/{{model}}/metrics.json",
        history=f"{RESULTS}/models/{{dataset}}/{{model}}/history.csv",
    log:
        f"{RESULTS}/logs/models/{{dataset}}/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/models/{{dataset}}/{{model}}.tsv"
    wildcard_constraints:
        model="|".join(TRAINED_MODELS) or "(?!)",
    # the longest training first, so that it does not end the run alone (a scheduling hint)
    priority: model_priority
    conda:
        "../../envs/torch.yaml"
    # One thread: these small models gain little from a second one, and two jobs side by side
    # train about 1.6x as many models per hour on 2 cores as one job with two threads.
    threads: 1
    resources:
        mem_mb=6000,
        runtime=120,
        gpu=GPUS,
    params:
        spec=model_params,
        training=training_params,
        device=config["device"],
        codecs=lambda w, input: (
            f"--codec-clips {shlex.quote(os.path.dirname(input.codec_audio))}"
            if "codec_audio" in input.keys()
            else ""
        ),
    shell:
        'python -m advmir train-model --dataset-dir "$(dirname {input.waveforms:q})" --spec {params.spec:q}'
        ' --training {params.training:q} --out-dir "$(dirname {output.ckpt:q})" --device {params.device}'
        " {params.codecs} --threads {threads} > {log:q} 2>&1"


# A model of your own (models.NAME.source: torchscript or python): its contract checked on the
# dataset's clips (advmir.models.check), scored on the test split, written in the zoo's layout.
rule import_model:
    input:
        unpack(external_inputs),
    output:
        ckpt=f"{RESULTS}/models/{{dataset}}/{{model}}/model.ckpt",
        metrics=f"{RESULTS}/models/{{dataset}}/{{model}}/metrics.json",
        history=f"{RESULTS}/models/{{dataset}}/{{model}}/history.csv",
    log:
        f"{RESULTS}/logs/models/{{dataset}}/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/models/{{dataset}}/{{model}}.tsv"
    wildcard_constraints:
        model="|".join(EXTERNAL_MODELS) or "(?!)",  # none: never matches
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=GPUS,
    params:
        spec=external_params,
        device=config["device"],
        seed=config["seed"],
    shell:
        'python -m advmir import-model --dataset-dir "$(dirname {input.waveforms:q})" --name {wildcards.model}'
        ' --spec {params.spec:q} --out-dir "$(dirname {output.ckpt:q})" --device {params.device}'
        " --seed {params.seed} > {log:q} 2>&1"


# An ensemble (models.NAME.members): its members' checkpoints in one, scored on the test split,
# written in the zoo's layout (no training of its own).
rule assemble_ensemble:
    input:
        unpack(ensemble_inputs),
    output:
        ckpt=f"{RESULTS}/models/{{dataset}}/{{model}}/model.ckpt",
        metrics=f"{RESULTS}/models/{{dataset}}/{{model}}/metrics.json",
        history=f"{RESULTS}/models/{{dataset}}/{{model}}/history.csv",
    log:
        f"{RESULTS}/logs/models/{{dataset}}/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/models/{{dataset}}/{{model}}.tsv"
    wildcard_constraints:
        model="|".join(ENSEMBLE_MODELS) or "(?!)",  # none: never matches
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=GPUS,
    params:
        members=ensemble_params,
        device=config["device"],
        seed=config["seed"],
    shell:
        'python -m advmir assemble-ensemble --dataset-dir "$(dirname {input.waveforms:q})" {params.members}'
        ' --out-dir "$(dirname {output.ckpt:q})" --device {params.device} --seed {params.seed}'
        " --threads {threads} > {log:q} 2>&1"


rule summarize_models:
    input:
        expand(
            f"{RESULTS}/models/{{dataset}}/{{model}}/metrics.json",
            dataset=DATASETS,
            model=MODELS,
        ),
    output:
        accuracy=f"{RESULTS}/tables/clean_accuracy.csv",
        confusion=f"{RESULTS}/tables/confusion.csv",
    log:
        f"{RESULTS}/logs/tables/clean_accuracy.log",
    benchmark:
        f"{RESULTS}/benchmarks/tables/clean_accuracy.tsv"
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m advmir summarize-models --metrics {input:q} --out {output.accuracy:q}"
        " --confusion-out {output.confusion:q} > {log:q} 2>&1"


rule plot_models:
    input:
        accuracy=f"{RESULTS}/tables/clean_accuracy.csv",
        confusion=f"{RESULTS}/tables/confusion.csv",
    output:
        png=report(
            f"{RESULTS}/figures/clean_accuracy.png",
            caption="../report/clean_accuracy.rst",
            category="1. Models",
            labels={"figure": "clean accuracy"},
        ),
        pdf=f"{RESULTS}/figures/clean_accuracy.pdf",
    log:
        f"{RESULTS}/logs/figures/clean_accuracy.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/clean_accuracy.tsv"
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m advmir plot-models --accuracy {input.accuracy:q} --confusion {input.confusion:q}"
        " --out {output.png:q} {output.pdf:q} > {log:q} 2>&1"


rule summarize_benign:
    input:
        unpack(benign_inputs),
    output:
        f"{RESULTS}/tables/benign_accuracy.csv",
    log:
        f"{RESULTS}/logs/tables/benign_accuracy.log",
    benchmark:
        f"{RESULTS}/benchmarks/tables/benign_accuracy.tsv"
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        codecs=lambda w, input: (
            f"--codecs {shlex.quote(input.codecs)}" if "codecs" in input.keys() else ""
        ),
    shell:
        "python -m advmir summarize-benign --accuracy {input.accuracy:q} {params.codecs}"
        " --out {output:q} > {log:q} 2>&1"


rule plot_benign:
    input:
        f"{RESULTS}/tables/benign_accuracy.csv",
    output:
        png=report(
            f"{RESULTS}/figures/benign_accuracy.png",
            caption="../report/benign_accuracy.rst",
            category="1. Models",
            labels={"figure": "benign conditions"},
        ),
        pdf=f"{RESULTS}/figures/benign_accuracy.pdf",
    log:
        f"{RESULTS}/logs/figures/benign_accuracy.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/benign_accuracy.tsv"
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m advmir plot-benign --table {input:q} --out {output.png:q} {output.pdf:q} > {log:q} 2>&1"
