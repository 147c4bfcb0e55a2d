# Pitch: task attacks on pretrained pitch trackers (CREPE, PESTO) on the embedded melody dataset
# synth_melodies. Jobs: render the dataset; per tracker, its clean pitch tracks and scores; per
# (tracker, attack), the attack at each SNR budget beside matched noise, scored with mir_eval; then
# results/tables/pitch.csv and the figure. The grid is advmir.pitch.plan.PitchPlan, built here once
# from the validated config (it refuses a decoder a tracker lacks, or a bad attack, at `snakemake -n`).
from advmir.pitch.plan import PitchPlan

PITCH_PLAN = PitchPlan(config["pitch"], RESULTS)


rule render_synth_melodies:
    output:
        waveforms=f"{RESULTS}/data/synth_melodies/waveforms.npy",
        manifest=f"{RESULTS}/data/synth_melodies/manifest.csv",
        classes=f"{RESULTS}/data/synth_melodies/classes.json",
        notes=f"{RESULTS}/data/synth_melodies/notes.csv",
        frames=f"{RESULTS}/data/synth_melodies/frames.csv",
    log:
        f"{RESULTS}/logs/data/synth_melodies.log",
    benchmark:
        f"{RESULTS}/benchmarks/data/synth_melodies.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        settings=json.dumps(config["synth_melodies"], sort_keys=True),
        seed=config["seed"],
    shell:
        'python -m advmir render-synth-melodies --out-dir "$(dirname {output.waveforms:q})"'
        " --settings {params.settings:q} --seed {params.seed} > {log:q} 2>&1"


rule track_pitch:
    input:
        waveforms=rules.render_synth_melodies.output.waveforms,
        manifest=rules.render_synth_melodies.output.manifest,
        notes=rules.render_synth_melodies.output.notes,
        frames=rules.render_synth_melodies.output.frames,
    output:
        scores=f"{RESULTS}/pitch/synth_melodies/{{tracker}}/clean/scores.csv",
        pitch=f"{RESULTS}/pitch/synth_melodies/{{tracker}}/clean/pitch.npy",
    log:
        f"{RESULTS}/logs/pitch/synth_melodies/{{tracker}}/clean.log",
    benchmark:
        f"{RESULTS}/benchmarks/pitch/synth_melodies/{{tracker}}/clean.tsv"
    wildcard_constraints:
        tracker=PITCH_PLAN.constraint(PITCH_PLAN.trackers),
    conda:
        "../../envs/torch.yaml"
    threads: PITCH_PLAN.threads
    resources:
        mem_mb=3000,
        runtime=30,
    params:
        settings=lambda w: PITCH_PLAN.tracker_json(w.tracker),
        transcription=PITCH_PLAN.transcription_json(),
        eval_size=PITCH_PLAN.eval_size or 1000000,
        batch_size=PITCH_PLAN.batch_size,
        seed=config["seed"],
    shell:
        'python -m advmir track-pitch --data "$(dirname {input.waveforms:q})" --tracker {wildcards.tracker}'
        " --settings {params.settings:q} --transcription {params.transcription:q}"
        " --eval-size {params.eval_size} --batch-size {params.batch_size} --seed {params.seed}"
        ' --threads {threads} --out-dir "$(dirname {output.scores:q})" > {log:q} 2>&1'


rule attack_pitch:
    input:
        waveforms=rules.render_synth_melodies.output.waveforms,
        manifest=rules.render_synth_melodies.output.manifest,
        notes=rules.render_synth_melodies.output.notes,
        frames=rules.render_synth_melodies.output.frames,
    output:
        scores=f"{RESULTS}/pitch/synth_melodies/{{tracker}}/{{attack}}/scores.csv",
        adversarial=f"{RESULTS}/pitch/synth_melodies/{{tracker}}/{{attack}}/adversarial.npy",
    log:
        f"{RESULTS}/logs/pitch/synth_melodies/{{tracker}}/{{attack}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pitch/synth_melodies/{{tracker}}/{{attack}}.tsv"
    wildcard_constraints:
        tracker=PITCH_PLAN.constraint(PITCH_PLAN.trackers),
        attack=PITCH_PLAN.constraint(PITCH_PLAN.attacks),
    conda:
        "../../envs/torch.yaml"
    threads: PITCH_PLAN.threads
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=GPUS,
    params:
        settings=lambda w: PITCH_PLAN.tracker_json(w.tracker),
        attack=lambda w: PITCH_PLAN.attack_json(w.attack),
        transcription=PITCH_PLAN.transcription_json(),
        attack_size=PITCH_PLAN.attack_size or 1000000,
        batch_size=PITCH_PLAN.batch_size,
        seed=config["seed"],
    shell:
        'python -m advmir attack-pitch --data "$(dirname {input.waveforms:q})" --tracker {wildcards.tracker}'
        " --settings {params.settings:q} --attack {params.attack:q}"
        " --transcription {params.transcription:q} --eval-size {params.attack_size}"
        " --batch-size {params.batch_size} --seed {params.seed} --threads {threads}"
        ' --out-dir "$(dirname {output.scores:q})" > {log:q} 2>&1'


rule summarize_pitch:
    input:
        PITCH_PLAN.score_files(),
    output:
        PITCH_PLAN.table(),
    log:
        f"{RESULTS}/logs/tables/pitch.log",
    benchmark:
        f"{RESULTS}/benchmarks/tables/pitch.tsv"
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m advmir summarize-pitch --scores {input:q} --out {output:q} > {log:q} 2>&1"


rule plot_pitch:
    input:
        PITCH_PLAN.table(),
    output:
        png=report(
            f"{RESULTS}/figures/pitch_rpa_vs_snr.png",
            caption="../report/pitch_rpa_vs_snr.rst",
            category="Pitch",
            labels={"figure": "raw pitch accuracy vs SNR"},
        ),
        pdf=f"{RESULTS}/figures/pitch_rpa_vs_snr.pdf",
    log:
        f"{RESULTS}/logs/figures/pitch_rpa_vs_snr.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/pitch_rpa_vs_snr.tsv"
    conda:
        "../../envs/plot.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m advmir plot-pitch --table {input:q} --out {output.png:q} {output.pdf:q} > {log:q} 2>&1"
