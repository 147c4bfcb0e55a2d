# Generalisation of the zoo beyond its presets: the same recipe trained on the other split modes of
# synth_notes (instruments: unseen GM programs; soundfont: an unseen SoundFont), beside the default
# split's models. Switched by generalisation.enabled; models and splits from the config.


include: "inputs/generalisation.smk"


rule render_synth_notes_split:
    output:
        waveforms=f"{GENERALISATION_DIR}/{{split}}/data/waveforms.npy",
        manifest=f"{GENERALISATION_DIR}/{{split}}/data/manifest.csv",
        classes=f"{GENERALISATION_DIR}/{{split}}/data/classes.json",
    log:
        f"{RESULTS}/logs/generalisation/{{split}}/data.log",
    benchmark:
        f"{RESULTS}/benchmarks/generalisation/{{split}}/data.tsv"
    wildcard_constraints:
        split=alternatives(GENERALISATION_SPLITS),
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
    params:
        settings=lambda w: json.dumps(
            {**config["synth_notes"], "split": w.split}, sort_keys=True
        ),
        seed=config["seed"],
    shell:
        'python -m advmir render-synth-notes --out-dir "$(dirname {output.waveforms:q})"'
        " --settings {params.settings:q} --seed {params.seed} > {log:q} 2>&1"


use rule train_model as train_model_on_split with:
    input:
        unpack(split_training_inputs),
    output:
        ckpt=f"{GENERALISATION_DIR}/{{split}}/models/{{model}}/model.ckpt",
        metrics=f"{GENERALISATION_DIR}/{{split}}/models/{{model}}/metrics.json",
        history=f"{GENERALISATION_DIR}/{{split}}/models/{{model}}/history.csv",
    log:
        f"{RESULTS}/logs/generalisation/{{split}}/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/generalisation/{{split}}/{{model}}.tsv"
    # these replace the rule's own: the model's kind is constrained again
    wildcard_constraints:
        split=alternatives(GENERALISATION_SPLITS),
        model=alternatives(TRAINED_MODELS),


use rule assemble_ensemble as assemble_ensemble_on_split with:
    input:
        unpack(ensemble_inputs),
    output:
        ckpt=f"{GENERALISATION_DIR}/{{split}}/models/{{model}}/model.ckpt",
        metrics=f"{GENERALISATION_DIR}/{{split}}/models/{{model}}/metrics.json",
        history=f"{GENERALISATION_DIR}/{{split}}/models/{{model}}/history.csv",
    log:
        f"{RESULTS}/logs/generalisation/{{split}}/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/generalisation/{{split}}/{{model}}.tsv"
    wildcard_constraints:
        split=alternatives(GENERALISATION_SPLITS),
        model=alternatives(ENSEMBLE_MODELS),


rule summarize_generalisation:
    input:
        unpack(generalisation_metrics),
    output:
        f"{RESULTS}/tables/generalisation.csv",
    log:
        f"{RESULTS}/logs/tables/generalisation.log",
    benchmark:
        f"{RESULTS}/benchmarks/tables/generalisation.tsv"
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        runs=lambda w, input: generalisation_runs(input),
    shell:
        "python -m advmir summarize-generalisation {params.runs} --out {output:q} > {log:q} 2>&1"


rule plot_generalisation:
    input:
        f"{RESULTS}/tables/generalisation.csv",
    output:
        png=report(
            f"{RESULTS}/figures/generalisation.png",
            caption="../report/generalisation.rst",
            category="1. Models",
            labels={"figure": "generalisation"},
        ),
        pdf=f"{RESULTS}/figures/generalisation.pdf",
    log:
        f"{RESULTS}/logs/figures/generalisation.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/generalisation.tsv"
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m advmir plot-generalisation --table {input:q} --out {output.png:q} {output.pdf:q}"
        " > {log:q} 2>&1"
