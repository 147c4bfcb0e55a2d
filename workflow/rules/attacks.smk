# Adversarial generation: one job per (dataset, model, attack), then a tidy table and figures.
# {attack} is a key of config["attacks"]: an algorithm (`name`), its `params`, a `threat` (white_box:
# craft and score on {model}; surrogate: craft on the model named by `surrogate`, score on {model})
# and optionally the `models` it runs on (default: every model but its own surrogate).
# config["attack_settings"] holds what every attack shares (evaluation size, batch, listening files).
# The evaluation subset is the same for every model and attack: seeded by config["seed"].
# Every run also writes its control, matched_noise.npy (white noise at each example's SNR, on the same
# clips) and scores it like the examples, so attacks.csv states each success beside noise's.


include: "inputs/attacks.smk"


rule craft_adversarial:
    input:
        unpack(attack_inputs),
    output:
        adversarial=f"{RESULTS}/attacks/{{dataset}}/{{model}}/{{attack}}/adversarial.npy",
        matched_noise=f"{RESULTS}/attacks/{{dataset}}/{{model}}/{{attack}}/matched_noise.npy",
        examples=f"{RESULTS}/attacks/{{dataset}}/{{model}}/{{attack}}/examples.csv",
        meta=f"{RESULTS}/attacks/{{dataset}}/{{model}}/{{attack}}/attack.json",
    log:
        f"{RESULTS}/logs/attacks/{{dataset}}/{{model}}/{{attack}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/attacks/{{dataset}}/{{model}}/{{attack}}.tsv"
    wildcard_constraints:
        attack=ATTACK_PLAN.attack_constraint(),
    conda:
        "../../envs/torch.yaml"
    threads: ATTACK_SETTINGS["threads"]
    resources:
        mem_mb=3000,
        runtime=60,
        gpu=GPUS,
    params:
        spec=attack_spec_json,
        surrogate=surrogate_option,
        eval_size=ATTACK_SETTINGS["eval_size"],
        seed=config["seed"],
        batch_size=ATTACK_SETTINGS["batch_size"],
        chunk_size=ATTACK_SETTINGS["chunk_size"],
        listen=ATTACK_SETTINGS["listen"],
        device=config["device"],
    shell:
        'python -m advmir craft-adversarial --dataset-dir "$(dirname {input.waveforms:q})" --checkpoint {input.checkpoint:q}'
        " {params.surrogate} --attack-spec {params.spec:q} --eval-size {params.eval_size}"
        " --seed {params.seed} --device {params.device} --batch-size {params.batch_size}"
        " --chunk-size {params.chunk_size} --listen {params.listen} --threads {threads}"
        ' --out-dir "$(dirname {output.examples:q})" > {log:q} 2>&1'


rule summarize_attacks:
    input:
        examples=ATTACK_PLAN.run_files(),
        meta=ATTACK_PLAN.run_files("attack.json"),
    output:
        f"{RESULTS}/tables/attacks.csv",
    log:
        f"{RESULTS}/logs/tables/attacks.log",
    benchmark:
        f"{RESULTS}/benchmarks/tables/attacks.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m advmir summarize-attacks --runs {input.examples:q} --out {output:q} > {log:q} 2>&1"


rule plot_attacks:
    input:
        table=f"{RESULTS}/tables/attacks.csv",
        examples=ATTACK_PLAN.run_files(),
        panel=f"{ATTACK_PLAN.panel_run()}/attack.json" if ATTACK_PLAN.enabled else [],
    output:
        success_png=report(
            f"{RESULTS}/figures/attack_success_vs_snr.png",
            caption="../report/attack_success_vs_snr.rst",
            category="2. Attacks",
            labels={"figure": "success vs SNR budget"},
        ),
        success_pdf=f"{RESULTS}/figures/attack_success_vs_snr.pdf",
        snr_png=report(
            f"{RESULTS}/figures/attack_snr_distribution.png",
            caption="../report/attack_snr_distribution.rst",
            category="2. Attacks",
            labels={"figure": "SNR of successful examples"},
        ),
        snr_pdf=f"{RESULTS}/figures/attack_snr_distribution.pdf",
        spec_png=report(
            f"{RESULTS}/figures/attack_spectrograms.png",
            caption="../report/attack_spectrograms.rst",
            category="2. Attacks",
            labels={"figure": "spectrograms"},
        ),
        spec_pdf=f"{RESULTS}/figures/attack_spectrograms.pdf",
    log:
        f"{RESULTS}/logs/figures/attacks.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/attacks.tsv"
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        panel=lambda wildcards, input: os.path.dirname(input.panel),
    shell:
        "python -m advmir plot-attacks --table {input.table:q} --runs {input.examples:q} --panel {params.panel:q}"
        " --success-vs-snr {output.success_png:q} {output.success_pdf:q}"
        " --snr-distribution {output.snr_png:q} {output.snr_pdf:q}"
        " --spectrograms {output.spec_png:q} {output.spec_pdf:q} > {log:q} 2>&1"


rule listening_page:
    input:
        ATTACK_PLAN.run_files(),
    output:
        report(
            f"{RESULTS}/figures/listen_examples.html",
            caption="../report/listen_examples.rst",
            category="2. Attacks",
            labels={"figure": "listen"},
        ),
    log:
        f"{RESULTS}/logs/figures/listen_examples.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/listen_examples.tsv"
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        runs=run_dirs,
    shell:
        "python -m advmir listening-page --runs {params.runs} --out {output:q} > {log:q} 2>&1"
