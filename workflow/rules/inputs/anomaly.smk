# Constants and input functions of workflow/rules/anomaly.smk (kept apart: `snakemake --lint`
# wants rules and functions in different files).
import shlex

from advmir.anomaly.corruptions import FAULTS, normalize_severities

# Validation filled the schema's defaults (workflow/schemas/anomaly.schema.yaml); what is left
# unset defaults to other keys (valid_fraction: fraction; datasets: `datasets`; models: the first
# model; faults: every fault at its default severity).
ANOMALY = config["anomaly"]
ANOMALY_ENABLED = ANOMALY["enabled"]
ANOMALY_DATASETS = [d for d in ANOMALY.get("datasets", DATASETS) if d in DATASETS]
ANOMALY_FRACTION = {
    "test": float(ANOMALY["fraction"]),
    "valid": float(ANOMALY.get("valid_fraction", ANOMALY["fraction"])),
}
ANOMALY_FAULTS = ANOMALY.get("faults") or {name: None for name in FAULTS}
# Fault implementations kept out of the validation copy (and so out of everything fitted on faults:
# the stacked ensemble, the multi-task net); the test copy marks them held_out.
ANOMALY_HELD_OUT = [
    name for name in ANOMALY.get("held_out", []) if name in ANOMALY_FAULTS
]
ANOMALY_MODELS = list(ANOMALY.get("models") or undefended_models(config)[:1])
ANOMALY_TRAIN_CLIPS = int(ANOMALY["max_train_clips"])
BASE_DETECTORS = [
    "clipping",
    "silence",
    "gaps",
    "truncation",
    "dc_offset",
    "envelope",
    "noise_floor",
    "hum",
    "bandwidth",
    "pitch",
    "noise_bands",
    "distortion",
    "codec_artifacts",
    "isolation_forest",
    "autoencoder",
    "max_softmax",
    "energy",
    "label_errors",
    "duplicates",
]
ANOMALY_DETECTORS = list(ANOMALY["detectors"])
# What the ensembles combine: the configured detectors, and the multi-task net when
# `ensemble_multitask` (it generalises to held-out noise implementations better than the checks)
ANOMALY_ENSEMBLE_INPUTS = ANOMALY_DETECTORS + (
    ["multitask"] if ANOMALY["ensemble_multitask"] else []
)
# The stacked model needs faults in the validation copy; without them the rank average ranks review.csv.
ANOMALY_ENSEMBLES = ["ensemble_rank"] + (
    ["ensemble_stack"] if ANOMALY_FRACTION["valid"] > 0 else []
)
ANOMALY_RANKING = ANOMALY_ENSEMBLES[-1]
# Other datasets ranked by one dataset's saved ensemble (rule review_dataset; `make review`)
REVIEW = ANOMALY["review"]
REVIEW_DATASETS = list(REVIEW["datasets"])
REVIEW_SOURCE = REVIEW["ensemble"] or (ANOMALY_DATASETS[:1] or [None])[0]


def _check_anomaly_config():
    """Refuse a bad `anomaly` section before any job runs; the message names the bad value."""
    for split, fraction in ANOMALY_FRACTION.items():
        if not 0.0 <= fraction <= 1.0:
            key = "fraction" if split == "test" else "valid_fraction"
            raise ValueError(f"anomaly.{key} must be in [0, 1], got {fraction}")
    unknown = [m for m in ANOMALY_MODELS if m not in MODELS]
    if unknown:
        raise ValueError(
            f"anomaly.models {unknown} are not in `models` ({', '.join(MODELS)})"
        )
    unknown = [d for d in ANOMALY_DETECTORS if d not in BASE_DETECTORS]
    if unknown:
        raise ValueError(
            f"anomaly.detectors: unknown {unknown}; known: {', '.join(BASE_DETECTORS)}"
        )
    for dataset in ANOMALY_DATASETS:
        rate = int(config[dataset]["sample_rate"])
        normalize_severities(ANOMALY_FAULTS, rate)
    unknown = [n for n in ANOMALY.get("held_out", []) if n not in FAULTS]
    if unknown:
        raise ValueError(
            f"anomaly.held_out: unknown fault(s) {unknown}; known: {', '.join(FAULTS)}"
        )
    if ANOMALY_FAULTS and all(n in ANOMALY_HELD_OUT for n in ANOMALY_FAULTS):
        raise ValueError(
            "anomaly.held_out holds every fault: leave at least one to fit the ensemble on"
        )

    unknown = [d for d in REVIEW_DATASETS if d not in DATASETS]
    if unknown:
        raise ValueError(
            f"anomaly.review.datasets {unknown} are not in `datasets` ({', '.join(DATASETS)})"
        )
    if REVIEW_DATASETS and REVIEW_SOURCE not in ANOMALY_DATASETS:
        raise ValueError(
            f"anomaly.review.ensemble {REVIEW_SOURCE!r} is not one of the datasets the anomaly"
            f" stage scores (anomaly.datasets: {ANOMALY_DATASETS})"
        )
    if REVIEW_DATASETS and ANOMALY_FRACTION["valid"] <= 0:
        raise ValueError(
            "anomaly.review needs the stacked ensemble: set anomaly.valid_fraction > 0"
        )


if ANOMALY_ENABLED:
    _check_anomaly_config()


def _fault_args(skip=()):
    """`name=sev[,sev]` words for the CLI, in config order (the order fixes the fault assignment),
    leaving out the faults in `skip`."""
    words = []
    for name, sev in ANOMALY_FAULTS.items():
        if name in skip:
            continue
        if sev is None:
            words.append(name)
        else:
            values = sev if isinstance(sev, list) else [sev]
            words.append(f"{name}={','.join(str(v) for v in values)}")
    return " ".join(words)


ANOMALY_FAULT_ARGS = _fault_args()
# what is fitted on faults (the validation copy, the multi-task net) sees only these
ANOMALY_FIT_FAULT_ARGS = _fault_args(skip=ANOMALY_HELD_OUT)


def anomaly_corrupt_args(wildcards):
    """--faults (and --held-out) of corrupt-split: the test copy has every fault, its held-out ones
    marked; the validation copy only the faults the ensemble is fitted on."""
    if wildcards.anomaly_split == "valid":
        return f"--faults {ANOMALY_FIT_FAULT_ARGS}"
    held = " ".join(ANOMALY_HELD_OUT)
    return f"--faults {ANOMALY_FAULT_ARGS}" + (f" --held-out {held}" if held else "")


wildcard_constraints:
    anomaly_split="test|valid",
    detector="|".join(BASE_DETECTORS + ["multitask"]),


def anomaly_set(dataset, split):
    root = f"{RESULTS}/anomaly/{dataset}/corrupted_{split}"
    return [f"{root}/waveforms.npy", f"{root}/manifest.csv", f"{root}/classes.json"]


def anomaly_detector_inputs(wildcards):
    """Dataset, both corrupted sets, and the checkpoints this detector loads."""
    inputs = {
        "dataset": dataset_files(wildcards)["waveforms"],
        "test": anomaly_set(wildcards.dataset, "test"),
        "valid": anomaly_set(wildcards.dataset, "valid"),
    }
    if wildcards.detector in ("max_softmax", "energy", "label_errors"):
        inputs["models"] = [
            f"{RESULTS}/models/{wildcards.dataset}/{m}/model.ckpt"
            for m in ANOMALY_MODELS
        ]
    if wildcards.detector == "autoencoder":
        inputs["autoencoder"] = (
            f"{RESULTS}/anomaly/{wildcards.dataset}/autoencoder/model.ckpt"
        )
    if wildcards.detector == "multitask":
        inputs["multitask"] = (
            f"{RESULTS}/anomaly/{wildcards.dataset}/multitask/model.ckpt"
        )
    return inputs


def review_inputs(wildcards):
    """The dataset to review, and what the saved ensemble of REVIEW_SOURCE needs to score it: that
    dataset (its clean train clips), its classifiers and trained detectors."""
    root = f"{RESULTS}/anomaly/{REVIEW_SOURCE}"
    source = f"{RESULTS}/data/{REVIEW_SOURCE}"
    inputs = {
        "dataset": dataset_files(wildcards)["waveforms"],
        "source": [
            f"{source}/{f}" for f in ("waveforms.npy", "manifest.csv", "classes.json")
        ],
        "ensemble": [f"{root}/ensemble/stack.json", f"{root}/ensemble/calibration.npz"],
    }
    if "autoencoder" in ANOMALY_DETECTORS:
        inputs["autoencoder"] = f"{root}/autoencoder/model.ckpt"
    if "multitask" in ANOMALY_ENSEMBLE_INPUTS:
        inputs["multitask"] = f"{root}/multitask/model.ckpt"
    if {"max_softmax", "energy", "label_errors"} & set(ANOMALY_DETECTORS):
        inputs["models"] = [
            f"{RESULTS}/models/{REVIEW_SOURCE}/{m}/model.ckpt" for m in ANOMALY_MODELS
        ]
    return inputs


def anomaly_detector_args(wildcards, input):
    """Checkpoint options of the score command for this detector."""
    args = []
    if "models" in input.keys():
        args.append(
            "--model "
            + " ".join(
                shlex.quote(f"{m}={p}") for m, p in zip(ANOMALY_MODELS, input.models)
            )
        )
    if "autoencoder" in input.keys():
        args.append(f"--autoencoder {shlex.quote(input.autoencoder)}")
    if "multitask" in input.keys():
        args.append(f"--multitask {shlex.quote(input.multitask)}")
    return " ".join(args)


def anomaly_scores(dataset, folder="scores", detectors=None):
    return [
        f"{RESULTS}/anomaly/{dataset}/{folder}/{d}.csv"
        for d in (detectors or ANOMALY_DETECTORS)
    ]


def anomaly_figures(dataset):
    root = f"{RESULTS}/figures/anomaly/{dataset}"
    return [
        f"{root}/{name}.{ext}"
        for name in (
            "roc",
            "auc_heatmap",
            "review_budget",
            "roc_families",
            "review_budget_held_out",
        )
        for ext in ("png", "pdf")
    ]


def anomaly_targets():
    """Final files of this stage (rule all)."""
    if not ANOMALY_ENABLED or not ANOMALY_DATASETS:
        return []
    targets = [
        f"{RESULTS}/tables/anomaly.csv",
        f"{RESULTS}/tables/anomaly_multitask_vs_ensemble.csv",
        f"{RESULTS}/tables/anomaly_generalisation.csv",
    ]
    for dataset in ANOMALY_DATASETS:
        targets += [f"{RESULTS}/anomaly/{dataset}/review.csv"] + anomaly_figures(
            dataset
        )
    return targets + review_targets()


def review_targets():
    """review.csv and the listening page of every dataset of anomaly.review.datasets."""
    if not ANOMALY_ENABLED:
        return []
    return [
        path
        for d in REVIEW_DATASETS
        for path in (
            f"{RESULTS}/anomaly/{d}/reviewed/review.csv",
            f"{RESULTS}/figures/anomaly/{d}/review_listen.html",
        )
    ]
