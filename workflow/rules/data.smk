rule render_synth_notes:
    output:
        waveforms=f"{RESULTS}/data/synth_notes/waveforms.npy",
        manifest=f"{RESULTS}/data/synth_notes/manifest.csv",
        classes=f"{RESULTS}/data/synth_notes/classes.json",
    log:
        f"{RESULTS}/logs/data/synth_notes.log",
    benchmark:
        f"{RESULTS}/benchmarks/data/synth_notes.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
    params:
        # a lambda: only a config that lists synth_notes in `datasets` needs its section
        settings=lambda w: json.dumps(config["synth_notes"], sort_keys=True),
        seed=config["seed"],
    shell:
        'python -m advmir render-synth-notes --out-dir "$(dirname {output.waveforms:q})"'
        " --settings {params.settings:q} --seed {params.seed} > {log:q} 2>&1"
