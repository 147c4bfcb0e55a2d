rule train_model:
    input:
        unpack(dataset_files),
    output:
        ckpt=f"{RESULTS}/models/{{dataset}}/{{model}}/model.ckpt",
        metrics=f"{RESULTS}/models/{{dataset}}/{{model}}/metrics.json",
        history=f"{RESULTS}/models/{{dataset}}/{{model}}/history.csv",
    log:
        f"{RESULTS}/logs/models/{{dataset}}/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/models/{{dataset}}/{{model}}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=120,
        gpu=GPUS,
    params:
        spec=model_params,
        training=training_params,
        device=config["device"],
    shell:
        "python -m advmir train --dataset-dir $(dirname {input.waveforms}) --spec {params.spec:q}"
        " --training {params.training:q} --out-dir $(dirname {output.ckpt}) --device {params.device}"
        " --threads {threads} > {log} 2>&1"


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
        "python -m advmir summarize-models --metrics {input} --out {output.accuracy}"
        " --confusion-out {output.confusion} > {log} 2>&1"


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
        "python -m advmir plot-models --accuracy {input.accuracy} --confusion {input.confusion}"
        " --out {output.png} {output.pdf} > {log} 2>&1"
