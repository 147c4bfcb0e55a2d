# Transfer evaluation: every target model's prediction on every example, per (attack, condition);
# then the tidy tables and figures. {attack} is an attack name or `clean` (the clean subset);
# {condition} is `none` or a codec / room setting name. An attack's examples are scored beside their
# matched-noise controls under the same condition. With codecs.jobs: source, one job per attack
# scores every condition (evaluate_transfer_all_conditions: the targets load once, and the DAG has
# a job per attack, not per (attack, condition)); the prediction files are the same. The job grid
# lives in advmir.transfer.plan (tested; built on the codec stage's advmir.codecs.plan); built
# after the attack plan (ATTACK_PLAN.attacked_models).


include: "inputs/transfer.smk"


if TRANSFER_PLAN.per_attack:

    rule evaluate_transfer_all_conditions:
        input:
            unpack(transfer_job_inputs),
        output:
            TRANSFER_PLAN.attack_outputs(),
        log:
            f"{RESULTS}/logs/transfer/{{dataset}}/{{attack}}/all_conditions.log",
        benchmark:
            f"{RESULTS}/benchmarks/transfer/{{dataset}}/{{attack}}/all_conditions.tsv"
        wildcard_constraints:
            attack=alternatives(TRANSFER_PLAN.transfer_attacks),
        conda:
            "../../envs/torch.yaml"
        threads: TRANSFER_PLAN.transfer_threads
        resources:
            mem_mb=4000,
            runtime=TRANSFER_PLAN.attack_runtime(),
            gpu=GPUS,
        params:
            sources=lambda w, input: TRANSFER_PLAN.source_options(
                w.attack, input.get("audio"), input.examples, input.get("noise")
            ),
            codec_dirs=lambda w: TRANSFER_PLAN.codec_dir_options(w.dataset, w.attack),
            conditions=TRANSFER_PLAN.conditions_option(),
            targets=lambda w, input: TRANSFER_PLAN.target_options(input.ckpts),
            subset=lambda w: TRANSFER_PLAN.max_examples_option(w.attack),
            out_dir=lambda w: f"{RESULTS}/transfer/{w.dataset}/{w.attack}",
            device=config["device"],
        shell:
            'python -m advmir evaluate-transfer --dataset-dir "$(dirname {input.waveforms:q})"'
            " --attack {wildcards.attack} {params.conditions} {params.sources} {params.codec_dirs}"
            " {params.targets} {params.subset} --out-dir {params.out_dir:q} --device {params.device}"
            " --threads {threads} > {log:q} 2>&1"

else:

    rule evaluate_transfer:
        input:
            unpack(transfer_job_inputs),
        output:
            f"{RESULTS}/transfer/{{dataset}}/{{attack}}/{{condition}}.csv",
        log:
            f"{RESULTS}/logs/transfer/{{dataset}}/{{attack}}/{{condition}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/transfer/{{dataset}}/{{attack}}/{{condition}}.tsv"
        wildcard_constraints:
            attack=alternatives(TRANSFER_PLAN.transfer_attacks),
            condition=alternatives(TRANSFER_PLAN.conditions),
        conda:
            "../../envs/torch.yaml"
        threads: TRANSFER_PLAN.transfer_threads
        resources:
            mem_mb=4000,
            runtime=30,
            gpu=GPUS,
        params:
            sources=lambda w, input: TRANSFER_PLAN.source_options(
                w.attack, input.get("audio"), input.examples, input.get("noise")
            ),
            targets=lambda w, input: TRANSFER_PLAN.target_options(input.ckpts),
            subset=lambda w: TRANSFER_PLAN.max_examples_option(w.attack),
            device=config["device"],
        shell:
            'python -m advmir evaluate-transfer --dataset-dir "$(dirname {input.waveforms:q})"'
            " --attack {wildcards.attack} --condition {wildcards.condition} {params.sources} {params.targets}"
            " {params.subset} --out {output:q} --device {params.device} --threads {threads} > {log:q} 2>&1"


rule summarize_transfer:
    # The summary also reads every codec job's bitrates.csv (TRANSFER_PLAN.bitrate_files()), not
    # listed: each is an output of a job whose decoded audio a prediction file was scored on, so the
    # predictions already order this job after them and rerun it when they rerun. Listed, they were
    # 87,152 of the 10x sweep's 314,937 input files to resolve (28% of its dry run's DAG work).
    input:
        predictions=TRANSFER_PLAN.prediction_files(),
    output:
        **TRANSFER_TABLES,
    log:
        f"{RESULTS}/logs/tables/transfer.log",
    benchmark:
        f"{RESULTS}/benchmarks/tables/transfer.tsv"
    # torch's environment: the success rule is the attack stage's (advmir.attacks.scoring)
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    # the CLI lists the inputs itself from the grid (a sweep's lists outgrow a command line)
    params:
        files=TRANSFER_PLAN.summary_options(),
        models=TRANSFER_PLAN.model_specs_json(),
        attacks=TRANSFER_PLAN.attack_specs_json(),
        conditions=TRANSFER_PLAN.condition_specs_json(),
    shell:
        "python -m advmir summarize-transfer {params.files}"
        " --models {params.models:q} --attacks {params.attacks:q} --conditions {params.conditions:q}"
        " --transfer-out {output.transfer:q} --clean-out {output.codec_clean_accuracy:q}"
        " --rates-out {output.transfer_rates:q} --matrix-out {output.transfer_matrix:q}"
        " --representation-out {output.transfer_representation:q} > {log:q} 2>&1"


rule plot_transfer:
    input:
        rates=TRANSFER_TABLES["transfer_rates"],
        clean=TRANSFER_TABLES["codec_clean_accuracy"],
    output:
        bitrate=report(
            TRANSFER_PLAN.figure("bitrate", "png"),
            caption="../report/transfer_bitrate.rst",
            category="4. Compression and transfer",
            labels={"figure": "success vs bitrate"},
        ),
        bitrate_pdf=TRANSFER_PLAN.figure("bitrate", "pdf"),
        heatmaps=report(
            TRANSFER_PLAN.figure("heatmaps", "png"),
            caption="../report/transfer_heatmaps.rst",
            category="4. Compression and transfer",
            labels={"figure": "transfer heatmaps"},
        ),
        heatmaps_pdf=TRANSFER_PLAN.figure("heatmaps", "pdf"),
        room=report(
            TRANSFER_PLAN.figure("room_eot", "png"),
            caption="../report/transfer_room_eot.rst",
            category="4. Compression and transfer",
            labels={"figure": "room: PGD vs EOT-PGD"},
        ),
        room_pdf=TRANSFER_PLAN.figure("room_eot", "pdf"),
    log:
        f"{RESULTS}/logs/figures/transfer.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/transfer.tsv"
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        heatmaps=TRANSFER_PLAN.heatmap_conditions(),
        rooms=" ".join(TRANSFER_PLAN.room_settings),
        eot=TRANSFER_PLAN.eot_options(),
    shell:
        "python -m advmir plot-transfer --rates {input.rates:q} --clean {input.clean:q}"
        " --heatmap-conditions {params.heatmaps} --rooms {params.rooms} {params.eot}"
        " --out-bitrate {output.bitrate:q} {output.bitrate_pdf:q} --out-heatmaps {output.heatmaps:q} {output.heatmaps_pdf:q}"
        " --out-room {output.room:q} {output.room_pdf:q} > {log:q} 2>&1"
