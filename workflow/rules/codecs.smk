# Compression and over-the-air simulation: one job per (dataset, source, setting).
# {source} is `clean` (test clips: rule select_clean_clips) or `{model}/{attack}` (one attack's output);
# {codec} is the name of a codec setting (codecs.settings) or of a room setting (codecs.rooms).
# The job of an attack source also sends the run's matched-noise control (matched_noise.npy)
# through the same setting (decoded_noise.npy); the clean source's rules (encode_clean_with_codec,
# simulate_clean_room) are the same rules without that control.
# A job depends on its own setting's spec only, so adding a setting runs just that setting's jobs.
# codecs.jobs: source replaces the four per-setting rules with transform_source and
# transform_clean_source: one job per (dataset, source) writes every setting's folder.
# The job grid lives in advmir.codecs.plan (tested); built after the attack plan (ATTACK_PLAN.attacked_models).


include: "inputs/codecs.smk"


rule select_clean_clips:
    input:
        unpack(dataset_files),
    output:
        f"{RESULTS}/codecs/{{dataset}}/clean/examples.csv",
    log:
        f"{RESULTS}/logs/codecs/{{dataset}}/clean/examples.log",
    benchmark:
        f"{RESULTS}/benchmarks/codecs/{{dataset}}/clean/examples.tsv"
    conda:
        "../../envs/codecs.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        size=CODEC_PLAN.clean_size_option(),
        seed=config["seed"],
    shell:
        'python -m advmir select-clean-clips --dataset-dir "$(dirname {input.waveforms:q})"'
        " {params.size} --seed {params.seed} --out {output:q} > {log:q} 2>&1"


if CODEC_PLAN.per_source:

    rule transform_source:
        input:
            unpack(
                lambda w: {
                    **dataset_files(w),
                    **CODEC_PLAN.codec_inputs(w.dataset, w.source),
                }
            ),
        output:
            **source_outputs(attack=True),
        log:
            f"{RESULTS}/logs/codecs/{{dataset}}/{{source}}/all_settings.log",
        benchmark:
            f"{RESULTS}/benchmarks/codecs/{{dataset}}/{{source}}/all_settings.tsv"
        wildcard_constraints:
            source=ANY_ATTACK_SOURCE,
        conda:
            "../../envs/codecs.yaml"
        threads: CODEC_PLAN.codec_threads
        resources:
            mem_mb=2000,
            runtime=CODEC_PLAN.source_runtime(),
        params:
            settings=CODEC_PLAN.source_settings_json(),
            audio=lambda w, input: CODEC_PLAN.audio_option(w.source, input.get("audio")),
            noise=lambda w, input: CODEC_PLAN.noise_option(w.source, input.get("noise")),
            subset=lambda w: CODEC_PLAN.max_examples_option(w.source),
            out_root=lambda w: f"{RESULTS}/codecs/{w.dataset}/{w.source}",
        shell:
            'python -m advmir transform-source --dataset-dir "$(dirname {input.waveforms:q})" --examples {input.examples:q}'
            " {params.audio} {params.noise} {params.subset} --source {wildcards.source}"
            " --settings {params.settings:q} --out-root {params.out_root:q} --workers {threads} > {log:q} 2>&1"

    use rule transform_source as transform_clean_source with:
        output:
            **source_outputs(attack=False),
        wildcard_constraints:
            source=CLEAN,

else:

    rule encode_with_codec:
        input:
            unpack(
                lambda w: {
                    **dataset_files(w),
                    **CODEC_PLAN.codec_inputs(w.dataset, w.source),
                }
            ),
        output:
            decoded=decoded_output(DECODED),
            decoded_noise=decoded_output(DECODED_NOISE_FILE),
            bitstreams=f"{CODEC_DIR}/bitstreams.zip",
            bitrates=f"{CODEC_DIR}/bitrates.csv",
            setting=f"{CODEC_DIR}/setting.json",
        log:
            f"{RESULTS}/logs/codecs/{{dataset}}/{{source}}/{{codec}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/codecs/{{dataset}}/{{source}}/{{codec}}.tsv"
        wildcard_constraints:
            source=ATTACK_SOURCES,
            codec=alternatives(list(CODEC_PLAN.codec_settings)),
        conda:
            "../../envs/codecs.yaml"
        threads: CODEC_PLAN.codec_threads
        resources:
            mem_mb=2000,
            runtime=30,
        params:
            setting=lambda w: CODEC_PLAN.codec_setting_json(w.codec),
            audio=lambda w, input: CODEC_PLAN.audio_option(w.source, input.get("audio")),
            noise=lambda w, input: CODEC_PLAN.noise_option(w.source, input.get("noise")),
            subset=lambda w: CODEC_PLAN.max_examples_option(w.source),
        shell:
            'python -m advmir encode-with-codec --dataset-dir "$(dirname {input.waveforms:q})" --examples {input.examples:q}'
            " {params.audio} {params.noise} {params.subset} --source {wildcards.source} --name {wildcards.codec}"
            ' --codec-setting {params.setting:q} --out-dir "$(dirname {output.decoded:q})"'
            " --workers {threads} > {log:q} 2>&1"

    rule simulate_room:
        input:
            unpack(
                lambda w: {
                    **dataset_files(w),
                    **CODEC_PLAN.codec_inputs(w.dataset, w.source),
                }
            ),
        output:
            decoded=decoded_output(DECODED),
            decoded_noise=decoded_output(DECODED_NOISE_FILE),
            channel=f"{CODEC_DIR}/channel.csv",
            rooms=f"{CODEC_DIR}/rooms.npz",
            setting=f"{CODEC_DIR}/setting.json",
        log:
            f"{RESULTS}/logs/codecs/{{dataset}}/{{source}}/{{codec}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/codecs/{{dataset}}/{{source}}/{{codec}}.tsv"
        wildcard_constraints:
            source=ATTACK_SOURCES,
            codec=alternatives(list(CODEC_PLAN.room_settings)),
        conda:
            "../../envs/codecs.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=30,
        params:
            setting=lambda w: CODEC_PLAN.room_setting_json(w.codec),
            audio=lambda w, input: CODEC_PLAN.audio_option(w.source, input.get("audio")),
            noise=lambda w, input: CODEC_PLAN.noise_option(w.source, input.get("noise")),
            subset=lambda w: CODEC_PLAN.max_examples_option(w.source),
        shell:
            'python -m advmir simulate-room --dataset-dir "$(dirname {input.waveforms:q})" --examples {input.examples:q}'
            " {params.audio} {params.noise} {params.subset} --source {wildcards.source} --name {wildcards.codec}"
            ' --room-setting {params.setting:q} --out-dir "$(dirname {output.decoded:q})" > {log:q} 2>&1'

    use rule encode_with_codec as encode_clean_with_codec with:
        output:
            decoded=decoded_output(DECODED),
            bitstreams=f"{CODEC_DIR}/bitstreams.zip",
            bitrates=f"{CODEC_DIR}/bitrates.csv",
            setting=f"{CODEC_DIR}/setting.json",
        wildcard_constraints:
            source=CLEAN,
            codec=alternatives(list(CODEC_PLAN.codec_settings)),

    use rule simulate_room as simulate_clean_room with:
        output:
            decoded=decoded_output(DECODED),
            channel=f"{CODEC_DIR}/channel.csv",
            rooms=f"{CODEC_DIR}/rooms.npz",
            setting=f"{CODEC_DIR}/setting.json",
        wildcard_constraints:
            source=CLEAN,
            codec=alternatives(list(CODEC_PLAN.room_settings)),
