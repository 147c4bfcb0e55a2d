# Real datasets: download (resumed), verify checksums, extract safely, convert to the data contract.
# `real` only matches these names, so results/data/synth_notes/ can only come from
# render_synth_notes. Downloads and extracted archives stay in results/raw/<name>/ (not an output:
# Snakemake never deletes them), so a re-run resumes or reuses what is already verified. A change
# of a dataset's config section re-runs only its own job (params.settings).

# name -> (mem_mb, runtime in minutes) of its download-and-convert job
REAL_DATASETS = {
    "nsynth": (8000, 240),
    "gtzan": (6000, 90),
    "good_sounds": (6000, 180),
    "esc50": (4000, 60),
}


rule download_dataset:
    output:
        waveforms=f"{RESULTS}/data/{{real}}/waveforms.npy",
        manifest=f"{RESULTS}/data/{{real}}/manifest.csv",
        classes=f"{RESULTS}/data/{{real}}/classes.json",
    log:
        f"{RESULTS}/logs/data/{{real}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/data/{{real}}.tsv"
    wildcard_constraints:
        real="|".join(REAL_DATASETS),
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=lambda w: REAL_DATASETS[w.real][0],
        runtime=lambda w: REAL_DATASETS[w.real][1],
    params:
        settings=lambda w: json.dumps(config[w.real], sort_keys=True),
        raw_dir=lambda w: f"{RESULTS}/raw/{w.real}",
        seed=config["seed"],
    shell:
        "python -m advmir download-dataset --dataset {wildcards.real} --raw-dir {params.raw_dir:q}"
        ' --out-dir "$(dirname {output.waveforms:q})" --settings {params.settings:q}'
        " --seed {params.seed} --threads {threads} > {log:q} 2>&1"


# Your own recordings (config section `folder`, overlay config/folder.yaml): every audio file under
# folder.path into the data contract, unusable files listed in skipped.csv. Snakemake does not
# watch a folder: params.listing (a digest of every file's name, size and modification time, no
# audio read; common.smk's folder_listing) changes when a file is added, removed or edited, and
# that re-runs this rule.
rule prepare_folder:
    output:
        waveforms=f"{RESULTS}/data/folder/waveforms.npy",
        manifest=f"{RESULTS}/data/folder/manifest.csv",
        classes=f"{RESULTS}/data/folder/classes.json",
        skipped=f"{RESULTS}/data/folder/skipped.csv",
    log:
        f"{RESULTS}/logs/data/folder.log",
    benchmark:
        f"{RESULTS}/benchmarks/data/folder.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        # lambdas: only a config that lists folder in `datasets` needs its section
        settings=lambda w: json.dumps(config["folder"], sort_keys=True),
        listing=folder_listing,
        seed=config["seed"],
    shell:
        'python -m advmir prepare-folder --out-dir "$(dirname {output.waveforms:q})"'
        " --settings {params.settings:q} --seed {params.seed} --threads {threads} > {log:q} 2>&1"
