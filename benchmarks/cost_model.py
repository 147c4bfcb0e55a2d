"""Predict the wall time and core-hours of a config on a cluster, from a finished run's benchmark files.

    python benchmarks/cost_model.py --config config/paper.yaml [--config sweep10x.yaml]
        [--measured results] [--measured-config config.yaml] [--nodes 1 4 16] [--cores 32]
        [--gpus 0 4] [--gpu-speedup 10] [--dry-run FILE ...] [--stages] [--compare RESULTS]

How it predicts:
1. Jobs. ``snakemake -n -F`` of each config (or a saved copy of that output, ``--dry-run``) lists
   every job with its rule, wildcards, inputs, outputs, benchmark file and threads; a job depends on
   the jobs whose outputs it reads (job-level dependencies, the DAG's).
2. Per-job cost. The measured run's benchmark files (read by ``stage_times.read_benchmarks``) are
   matched to rules and wildcards by the benchmark paths of the two dry runs. Each job gets a size
   in work units from its config (``job_size``: clips x steps for an attack, epochs x training clips
   (x the defense's cost factor) for training, clips for a codec job, clips x scored models for a
   transfer evaluation, clips for the data and anomaly rules, input files for tables and figures).
   A predicted job costs ``overhead + rate x size``: ``rate`` is (wall - overhead) / size, averaged
   over the measured jobs of its rule with the most specific matching key (``job_key``: the attack
   class and the model's front-end and architecture, the codec, the detector, ...; less specific
   keys when nothing matches), ``overhead`` the fixed start of a job (Python, imports, reading the
   data), taken as the 10th percentile of the measured jobs' wall. CPU seconds scale the same way.
3. Schedule. A list-scheduling simulation on M nodes of C cores and G GPUs each: a job starts when
   every job it reads from has finished, on the first node with its threads free (and a GPU, for the
   rules that declare a ``gpu`` resource, when G > 0); the ready job with the longest path of work
   after it goes first. Wall time is the simulated makespan; core-hours are the cores a job holds x
   its time, summed.

Assumptions (none measured on the predicted configs):
- Work is linear in the size above. Early stopping (training, iterative attacks) makes real runs
  shorter: the epochs and steps are the configured maxima, so predictions of those are upper bounds
  whenever the measured run stopped later than the new one would.
- A job takes its measured time whatever its declared threads (no speed-up from more threads); it
  holds its declared threads for that time.
- A GPU divides the variable part of a GPU rule's time (training, attacks, robust evaluation) by
  ``--gpu-speedup`` (default 10, an ASSUMPTION, not measured here: this machine has no GPU).
- No queueing, no start-up of SLURM jobs, no file-system contention; Snakemake's own per-job work
  is ``--job-overhead`` seconds (default 0).
- Defended training costs the base model's times the factor ``DEFENSE_FACTOR`` (measured by
  benchmarks/defense_speed.py and the README: fast_at 2x, adv_aug 3x, pgd_at and trades steps + 1;
  gaussian 1x, assumed: clean training plus one noise draw per batch).
"""

from __future__ import annotations

import argparse
import heapq
import inspect
import json
import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stage_times import read_benchmarks

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"

# Training cost of a defended model relative to its base model, per epoch (see the module docstring).
DEFENSE_FACTOR = {"fast_at": 2.0, "adv_aug": 3.0, "gaussian": 1.0}  # gaussian: clean training plus noise
# A rule the measured run never ran is costed at another rule's rate per work unit when the two do
# the same kind of work (robust and transformation-defense evaluations run attacks: clips x steps).
PROXY = {"evaluate_transform": "craft_adversarial", "evaluate_robustness": "craft_adversarial"}
# Attack parameters that multiply an attack's work per clip.
ITERATION_PARAMS = ("steps", "binary_steps", "n_restarts", "eot_samples", "n_queries", "epochs")


@dataclass
class Job:
    """One job of a Snakemake dry run."""

    rule: str
    wildcards: dict[str, str]
    inputs: list[str]
    outputs: list[str]
    benchmark: str | None  # relative to RESULTS/benchmarks
    threads: int = 1
    gpu: bool = False
    deps: list[int] = field(default_factory=list)


# ---------------------------------------------------------------------------------------- jobs


def run_dry_run(configfile: Path, results: str) -> str:
    """The text of ``snakemake -n -F`` of CONFIGFILE (every job, as if nothing had run)."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        "-F",
        "--cores",  # so that the listing shows each job's declared threads, uncapped
        "1024",
        "--configfile",
        str(configfile),
        "--replace-workflow-config",
        "--config",
        f"results={results}",
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"dry run of {configfile} failed:\n{done.stderr[-2000:]}")
    return done.stdout + done.stderr


def _split_paths(value: str) -> list[str]:
    return [p.strip() for p in value.split(", ") if p.strip()]


def parse_dry_run(text: str, results: str) -> list[Job]:
    """The jobs of a ``snakemake -n`` listing, with job-level dependencies (``Job.deps``)."""
    jobs: list[Job] = []
    prefix = str(results).rstrip("/") + "/benchmarks/"
    current: dict[str, Any] | None = None

    def close() -> None:
        if current is None:
            return
        bench = current.get("benchmark")
        if bench is not None:  # relative to RESULTS/benchmarks, whatever RESULTS the dry run had
            bench = bench[len(prefix) :] if bench.startswith(prefix) else bench.split("benchmarks/", 1)[-1]
        resources = current.get("resources", "")
        jobs.append(
            Job(
                rule=current["rule"],
                wildcards=current.get("wildcards", {}),
                inputs=current.get("input", []),
                outputs=current.get("output", []),
                benchmark=bench,
                threads=int(current.get("threads", 1)),
                gpu=bool(re.search(r"(^|, )gpu=", resources)),
            )
        )

    for line in text.splitlines():
        head = re.match(r"^(?:local)?rule (\S+):$", line)
        if head:
            close()
            current = {"rule": head.group(1)}
            continue
        if current is None or not line.startswith("    "):
            continue
        key, _, value = line.strip().partition(": ")
        if key in ("input", "output"):
            current[key] = _split_paths(value)
        elif key == "benchmark":
            current["benchmark"] = value.strip()
        elif key == "threads":
            current["threads"] = int(value)
        elif key == "resources":
            current["resources"] = value
        elif key == "wildcards":
            current["wildcards"] = dict(part.split("=", 1) for part in value.split(", ") if "=" in part)
    close()
    producer = {out: i for i, job in enumerate(jobs) for out in job.outputs}
    for job in jobs:
        job.deps = sorted({producer[p] for p in job.inputs if p in producer})
    return jobs


def _template(job: Job) -> str | None:
    """The job's benchmark path with each wildcard value replaced by its name, e.g.
    ``attacks/{dataset}/{model}/{attack}.tsv``."""
    if job.benchmark is None:
        return None
    parts = job.benchmark.split("/")
    named = {v: k for k, v in sorted(job.wildcards.items(), key=lambda kv: -len(kv[1]))}
    out = []
    for part in parts:
        stem, dot, ext = part.rpartition(".") if part.endswith(".tsv") else (part, "", "")
        out.append((f"{{{named[stem]}}}" if stem in named else stem) + (dot + ext))
    return "/".join(out)


def label_measured(paths: list[str], known: list[Job]) -> pd.DataFrame:
    """Rule and wildcards of each measured benchmark path, from the jobs of dry runs (``known``).

    A path one of those jobs writes is labelled with it; another path is matched against the
    benchmark templates of the known rules (a measured job of an older config). When two rules share
    a template (a codec and a room setting), the rule with a known job sharing the most wildcard
    values wins. Paths that match no rule are left out.
    """
    exact = {job.benchmark: job for job in known if job.benchmark}
    templates: dict[str, set[str]] = defaultdict(set)
    values: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for job in known:
        tpl = _template(job)
        if tpl:
            templates[tpl].add(job.rule)
            for k, v in job.wildcards.items():
                values[job.rule][k].add(v)
    rows = []
    for path in paths:
        if path in exact:
            job = exact[path]
            rows.append({"path": path, "rule": job.rule, "wildcards": dict(job.wildcards)})
            continue
        for tpl, rules in templates.items():
            names = re.findall(r"\{(\w+)\}", tpl)
            pattern = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>.+?)", re.escape(tpl)) + "$"
            if len(set(names)) != len(names):
                continue
            hit = re.match(pattern, path)
            if not hit:
                continue
            wildcards = hit.groupdict()
            rule = max(
                sorted(rules),
                key=lambda r: sum(v in values[r].get(k, ()) for k, v in wildcards.items()),
            )
            rows.append({"path": path, "rule": rule, "wildcards": wildcards})
            break
    return pd.DataFrame(rows, columns=["path", "rule", "wildcards"])


# ---------------------------------------------------------------------------------------- sizes


def load_config_dict(config: dict[str, Any]) -> dict[str, Any]:
    """CONFIG validated with the schema's defaults filled in and its defended models expanded."""
    from advmir.config import expand_defenses, validate_config

    validate_config(config, SCHEMA)
    expand_defenses(config)
    return config


def load_config(configfile: Path) -> dict[str, Any]:
    """:func:`load_config_dict` of a config file."""
    return load_config_dict(yaml.safe_load(Path(configfile).read_text()))


def _notes_per_split(config: dict[str, Any], split: str | None = None) -> dict[str, int]:
    """Notes per split of the synth_notes dataset the config renders (no rendering)."""
    from advmir.datasets.synth_notes import SynthNotesConfig, plan_notes

    notes = dict(config["synth_notes"])
    if split is not None:
        notes["split"] = split
    plan = plan_notes(SynthNotesConfig(seed=int(config["seed"]), **notes))
    counts = plan["split"].value_counts().to_dict()
    counts["all"] = len(plan)
    return counts


def _attack_defaults(name: str) -> dict[str, Any]:
    """Default constructor arguments of attack class NAME (over its bases)."""
    from advmir.attacks import ATTACKS

    defaults: dict[str, Any] = {}
    for cls in reversed(ATTACKS[name].__mro__):
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        for param in inspect.signature(init).parameters.values():
            if param.default is not inspect.Parameter.empty:
                defaults[param.name] = param.default
    return defaults


def attack_iterations(spec: dict[str, Any], n_classes: int) -> float:
    """Work per clip of one attack setting: the product of its iteration parameters (steps, binary
    steps, restarts, EOT samples, queries, epochs) and target classes, defaults filled in."""
    params = {**_attack_defaults(spec["name"]), **(spec.get("params") or {})}
    work = 1.0
    for key in ITERATION_PARAMS:
        if isinstance(params.get(key), int | float) and not isinstance(params.get(key), bool):
            work *= float(params[key])
    if isinstance(params.get("n_target_classes"), int):
        work *= min(params["n_target_classes"], n_classes - 1)
    return work


class Sizer:
    """Size in work units (``size``) and matching key (``key``) of a job under one config."""

    def __init__(
        self,
        config: dict[str, Any],
        fallback: dict[str, Any] | None = None,
        epochs_run: dict[str, int] | None = None,
    ) -> None:
        """CONFIG sizes the jobs; FALLBACK defines the models and attacks CONFIG lacks (a measured
        job of an older config); EPOCHS_RUN replaces a model's max_epochs by the epochs it ran."""
        self.config = config
        self.fallback = fallback or {}
        self.epochs_run = epochs_run or {}
        self._notes: dict[str | None, dict[str, int]] = {}

    def notes(self, split: str | None = None) -> dict[str, int]:
        if split not in self._notes:
            if "synth_notes" in self.config:
                self._notes[split] = _notes_per_split(self.config, split)
            else:  # a real dataset: sizes unknown before download, every job at its measured size
                self._notes[split] = defaultdict(lambda: 1)
        return self._notes[split]

    def _entry(self, section: str, name: str) -> dict[str, Any]:
        entries = self.config.get(section) or {}
        if name in entries:
            return entries[name]
        return (self.fallback.get(section) or {})[name]

    def model(self, name: str) -> dict[str, Any]:
        return self._entry("models", name)

    def _training(self, model: str, split: bool = False) -> dict[str, Any]:
        from advmir.config import override_training

        spec = self.model(model)
        settings = override_training(self.config["training"], spec.get("training"))
        if split:
            settings = override_training(settings, (self.config.get("generalisation") or {}).get("training"))
        return settings

    def _train_size(self, model: str, split: str | None = None) -> float:
        spec = self.model(model)
        training = self._training(model, split is not None)
        clips = self.notes(split).get("train", 1) * (0.5 if spec.get("train_subset", "all") != "all" else 1.0)
        adversarial = training.get("adversarial") or {}
        mode = adversarial.get("mode")
        factor = DEFENSE_FACTOR.get(mode, float(adversarial.get("steps", 10)) + 1.0) if mode else 1.0
        epochs = self.epochs_run.get(model) if split is None else None
        return float(epochs or training["max_epochs"]) * clips * factor

    def _model_key(self, model: str) -> tuple:
        spec = self.model(model)
        args = json.dumps([spec.get("frontend_args"), spec.get("arch_args")], sort_keys=True)
        return (spec.get("frontend"), spec.get("arch"), args)

    def _kind(self, condition: str) -> str:
        codecs = self.config.get("codecs") or {}
        if condition in (codecs.get("rooms") or {}) or condition in (
            self.fallback.get("codecs", {}).get("rooms") or {}
        ):
            return "room"
        settings = {
            **(self.fallback.get("codecs", {}).get("settings") or {}),
            **(codecs.get("settings") or {}),
        }
        setting = settings.get(condition)
        if setting is None:
            return condition
        return f"{setting['codec']}@{setting.get('sample_rate', 'native')}"

    def _settings_mix(self) -> str:
        """What a per-source job's work per setting depends on most: its share of rooms (a room
        costs several codec settings), rounded, as a key."""
        settings, rooms = codec_settings(self.config)
        return f"rooms {len(rooms) / max(len(settings) + len(rooms), 1):.1f}"

    def _eval_clips(self) -> int:
        return min(int(self.config["attack_settings"]["eval_size"]), self.notes().get("test", 10**9))

    def _transfer_clips(self, source_is_clean: bool) -> int:
        transfer = self.config.get("transfer") or {}
        if source_is_clean:
            clean = transfer.get("clean_examples")
            return min(int(clean), self.notes().get("test", 10**9)) if clean else self.notes().get("test", 1)
        top = transfer.get("max_examples")
        return min(self._eval_clips(), int(top)) if top else self._eval_clips()

    def _n_classes(self) -> int:
        return len(self.config.get("synth_notes", {}).get("families", [])) or 10

    def key(self, job: Job) -> tuple:
        """What must agree for a measured job to stand for this one, most important first."""
        w, rule = job.wildcards, job.rule
        if rule in ("train_model", "train_model_on_split"):
            return self._model_key(w["model"])
        if rule == "craft_adversarial":
            return (self._entry("attacks", w["attack"])["name"], *self._model_key(w["model"]))
        if rule in ("encode_with_codec", "simulate_room", "encode_clean_with_codec", "simulate_clean_room"):
            return (self._kind(w["codec"]),)
        if rule in PER_SOURCE:
            return (self._settings_mix(),)
        if rule == "evaluate_transfer":
            return (w["attack"] == "clean", self._kind(w["condition"]))
        if rule == PER_ATTACK:
            return (w["attack"] == "clean",)
        if rule == "score_anomalies":
            return (w.get("detector"),)
        return tuple(sorted(w.items()))

    def size(self, job: Job) -> float:
        """Work units of the job (see the module docstring); 1 for a rule it does not model."""
        w, rule, cfg = job.wildcards, job.rule, self.config
        if rule in ("render_synth_notes", "render_synth_notes_split"):
            return float(self.notes(w.get("split")).get("all", 1))
        if rule == "encode_training_codecs":
            settings = (cfg.get("training_codecs") or {}).get("settings") or {}
            return float(self.notes().get("train", 1) * max(len(settings), 1))
        if rule == "train_model":
            return self._train_size(w["model"])
        if rule == "train_model_on_split":
            return self._train_size(w["model"], w["split"])
        if rule == "craft_adversarial":
            return self._eval_clips() * attack_iterations(
                self._entry("attacks", w["attack"]), self._n_classes()
            )
        if rule in ("encode_clean_with_codec", "simulate_clean_room"):
            return float(self._transfer_clips(True))
        if rule in ("encode_with_codec", "simulate_room"):
            clean = w["source"] == "clean"
            return float(self._transfer_clips(clean) * (1 if clean else 2))  # + the matched-noise control
        if rule in PER_SOURCE:  # every codec setting and room of one source, in one job
            clean = rule == "transform_clean_source"
            settings = sum(len(names) for names in codec_settings(cfg))
            return float(self._transfer_clips(clean) * (1 if clean else 2) * max(settings, 1))
        if rule in ("evaluate_transfer", PER_ATTACK):  # a per-attack job: every condition
            targets = (cfg.get("transfer") or {}).get("targets") or list(cfg["models"])
            clean = w["attack"] == "clean"
            conditions = 1 if rule == "evaluate_transfer" else len(transfer_conditions(cfg))
            return float(self._transfer_clips(clean) * (1 if clean else 2) * len(targets) * conditions)
        if rule in ("corrupt_split", "score_anomalies", "combine_anomaly_scores", "evaluate_anomalies"):
            return float(self.notes().get("test", 1) + self.notes().get("valid", 1))
        if rule in ("train_anomaly_autoencoder", "train_multitask"):
            anomaly = cfg.get("anomaly") or {}
            section = "autoencoder" if rule == "train_anomaly_autoencoder" else "multitask"
            clips = int(anomaly.get("max_train_clips") or 0) or self.notes().get("train", 1)
            return float((anomaly.get(section) or {}).get("epochs", 1)) * min(
                clips, self.notes().get("train", 1)
            )
        if rule == "evaluate_robustness":
            evaluation = cfg["defenses"]["evaluation"]
            ensemble = evaluation.get("ensemble") or {}
            work = sum(attack_iterations(spec, self._n_classes()) for spec in ensemble.values())
            clips = evaluation.get("eval_size") or self._eval_clips()
            return float(clips) * len(evaluation.get("budgets_db", [1])) * max(work, 1.0)
        if rule == "evaluate_transform":
            evaluation = cfg["defenses"]["transform_evaluation"]
            work = sum(attack_iterations(spec, self._n_classes()) for spec in evaluation["attacks"].values())
            clips = evaluation.get("eval_size") or self._eval_clips()
            return float(clips) * len(evaluation["budgets_db"]) * max(work, 1.0)
        return float(max(len(job.inputs), 1))


# ---------------------------------------------------------------------------------------- costs


def measured_table(
    measured: Path, measured_jobs: list[Job], other_jobs: list[Job], sizer: Sizer
) -> pd.DataFrame:
    """The measured run's benchmark files with rule, key and size. MEASURED_JOBS are its config's
    dry-run jobs; OTHER_JOBS (the predicted configs') label files of rules that config lacks. Rows
    whose size or key cannot be computed under the measured config are left out."""
    bench = read_benchmarks(measured)
    labels = label_measured(list(bench["path"]), measured_jobs + other_jobs)
    table = bench.merge(labels, on="path")
    inputs = {job.benchmark: job.inputs for job in measured_jobs if job.benchmark}
    keys, sizes = [], []
    for row in table.itertuples(index=False):
        job = Job(row.rule, row.wildcards, inputs.get(row.path, []), [], row.path)
        try:
            keys.append(sizer.key(job))
            sizes.append(sizer.size(job))
        except (KeyError, TypeError, ValueError):
            keys.append(None)
            sizes.append(float("nan"))
    table["key"] = keys
    table["size"] = sizes
    return table.dropna(subset=["size"]).reset_index(drop=True)


def epochs_run(measured: Path) -> dict[str, int]:
    """Epochs each model of a finished run trained (rows of its history.csv), by model name."""
    return {
        history.parent.name: len(pd.read_csv(history))
        for history in sorted((Path(measured) / "models").glob("*/*/history.csv"))
    }


@dataclass
class Rates:
    """Per-rule cost rates from a measured table: wall and CPU seconds per work unit, per key."""

    table: pd.DataFrame
    overhead_s: float

    @classmethod
    def from_table(cls, table: pd.DataFrame, overhead_quantile: float = 0.1) -> Rates:
        """Rates of a :func:`measured_table`; the fixed start of a job is the OVERHEAD_QUANTILE
        quantile of the measured walls (a few jobs end in under a second, doing nothing)."""
        overhead = float(table["s"].quantile(overhead_quantile)) if len(table) else 0.0
        table = table.copy()
        table["wall_rate"] = (table["s"] - overhead).clip(lower=0) / table["size"]
        cpu_overhead = overhead * (table["cpu_time"] / table["s"]).median()
        table["cpu_rate"] = (table["cpu_time"] - cpu_overhead).clip(lower=0) / table["size"]
        table.attrs["cpu_overhead"] = cpu_overhead
        return cls(table, overhead)

    def measures(self, rule: str) -> bool:
        """Whether the measured run has jobs of RULE."""
        return bool((self.table["rule"] == rule).any())

    def predict(self, rule: str, key: tuple, size: float) -> tuple[float, float, str]:
        """(wall s, CPU s, how it was matched) of one job."""
        rows = self.table[self.table["rule"] == rule]
        how = "rule"
        if rows.empty and rule in PROXY:
            rows = self.table[self.table["rule"] == PROXY[rule]]
            key, how = (), f"proxy:{PROXY[rule]}"
        if rows.empty:
            # an unmeasured rule: the median measured job, flagged
            median = self.table["s"].median()
            return float(median), float(self.table["cpu_time"].median()), "unmeasured"
        for depth in range(len(key), 0, -1):
            same = rows[rows["key"].map(lambda k, d=depth: k is not None and tuple(k[:d]) == tuple(key[:d]))]
            if not same.empty:
                rows, how = same, ("exact" if depth == len(key) else f"key[:{depth}]")
                break
        wall = self.overhead_s + float(rows["wall_rate"].mean()) * size
        cpu = self.table.attrs.get("cpu_overhead", 0.0) + float(rows["cpu_rate"].mean()) * size
        return wall, cpu, how


@dataclass
class Prediction:
    """The jobs of one config with their predicted costs."""

    jobs: list[Job]
    wall_s: list[float]  # per job, on a CPU core
    cpu_s: list[float]
    gpu_part_s: list[float]  # the part of wall_s a GPU divides (0 for CPU rules)
    matched: list[str]

    def matches(self) -> str:
        """Job-hours per kind of match: ``exact`` (a measured job with the same key), ``key[:k]``
        (the first k key parts agree), ``rule`` (any measured job of the rule), ``proxy:RULE``,
        ``unmeasured`` (the median measured job)."""
        hours: dict[str, float] = defaultdict(float)
        for wall, how in zip(self.wall_s, self.matched, strict=True):
            if how != "none":
                hours["key[:k]" if how.startswith("key[") else how] += wall / 3600
        return ", ".join(f"{how} {h:.1f}" for how, h in sorted(hours.items(), key=lambda kv: -kv[1]))

    def stages(self) -> pd.DataFrame:
        """Jobs, summed wall seconds and CPU seconds per stage (first folder of the benchmark path)."""
        rows = [
            {
                "stage": (job.benchmark or "(no benchmark)").split("/")[0],
                "rule": job.rule,
                "wall_s": wall,
                "cpu_s": cpu,
                "unmeasured": how == "unmeasured",
            }
            for job, wall, cpu, how in zip(self.jobs, self.wall_s, self.cpu_s, self.matched, strict=True)
            if job.benchmark
        ]
        table = pd.DataFrame(rows)
        return (
            table.groupby("stage")
            .agg(
                jobs=("wall_s", "size"),
                wall_h=("wall_s", "sum"),
                cpu_h=("cpu_s", "sum"),
                unmeasured=("unmeasured", "sum"),
            )
            .assign(wall_h=lambda t: t.wall_h / 3600, cpu_h=lambda t: t.cpu_h / 3600)
            .round(2)
            .reset_index()
        )


# codecs.jobs: source -> the per-setting rules whose work one such job does (codec, room)
PER_SOURCE = {
    "transform_source": ("encode_with_codec", "simulate_room"),
    "transform_clean_source": ("encode_clean_with_codec", "simulate_clean_room"),
}


def codec_settings(config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The codec settings and the rooms (names) a per-source job sends its source through."""
    codecs = config.get("codecs") or {}
    return list(codecs.get("settings") or {}), list(codecs.get("rooms") or {})


# codecs.jobs: source -> one transfer evaluation per attack does the per-condition jobs' work
PER_ATTACK = "evaluate_transfer_all_conditions"


def transfer_conditions(config: dict[str, Any]) -> list[str]:
    """The conditions a per-attack transfer job scores: none, every codec setting, every room."""
    codecs, rooms = codec_settings(config)
    return ["none", *codecs, *rooms]


def per_setting_jobs(job: Job, config: dict[str, Any]) -> list[Job]:
    """The per-setting jobs (codecs.jobs: setting) that do the work of one per-source codec job,
    or the per-condition jobs that do the work of one per-attack transfer job."""
    if job.rule == PER_ATTACK:
        return [
            Job(
                "evaluate_transfer",
                {**job.wildcards, "condition": condition},
                job.inputs,
                [],
                job.benchmark,
                job.threads,
            )
            for condition in transfer_conditions(config)
        ]
    codec_rule, room_rule = PER_SOURCE[job.rule]
    codecs, rooms = codec_settings(config)
    settings = [(codec_rule, name) for name in codecs] + [(room_rule, name) for name in rooms]
    return [
        Job(rule, {**job.wildcards, "codec": name}, job.inputs, [], job.benchmark, job.threads)
        for rule, name in settings
    ]


def predict(jobs: list[Job], sizer: Sizer, rates: Rates) -> Prediction:
    """Per-job wall and CPU seconds of JOBS (jobs without a benchmark file cost nothing).

    A per-source codec job (``codecs.jobs: source``) is predicted from the measured run's
    per-source jobs when it has them (clips x settings); else it costs its per-setting jobs'
    variable parts and one fixed start, predicted from the measured per-setting jobs. A per-attack
    transfer job likewise, from per-attack jobs (clips x targets x conditions) or its per-condition
    jobs."""
    walls, cpus, gpu_parts, matched = [], [], [], []
    cache: dict[tuple, tuple[float, float, str]] = {}

    def one(job: Job) -> tuple[float, float, str]:
        key, size = sizer.key(job), sizer.size(job)
        memo = (job.rule, key, size)
        if memo not in cache:
            cache[memo] = rates.predict(job.rule, key, size)
        return cache[memo]

    for job in jobs:
        if job.benchmark is None:
            walls.append(0.0)
            cpus.append(0.0)
            gpu_parts.append(0.0)
            matched.append("none")
            continue
        bundled = job.rule in PER_SOURCE or job.rule == PER_ATTACK  # one job doing several's work
        if bundled and not rates.measures(job.rule):
            parts = [one(part) for part in per_setting_jobs(job, sizer.config)]
            starts = max(len(parts) - 1, 0)
            wall = sum(p[0] for p in parts) - starts * rates.overhead_s
            cpu = sum(p[1] for p in parts) - starts * rates.table.attrs.get("cpu_overhead", 0.0)
            hows = [p[2] for p in parts]
            how = max(hows, key=hows.count) if hows else "unmeasured"  # the commonest, first on ties
        else:
            wall, cpu, how = one(job)
        walls.append(wall)
        cpus.append(cpu)
        gpu_parts.append(max(wall - rates.overhead_s, 0.0) if job.gpu else 0.0)
        matched.append(how)
    return Prediction(jobs, walls, cpus, gpu_parts, matched)


def durations(
    prediction: Prediction, gpus: int = 0, gpu_speedup: float = 10.0, job_overhead_s: float = 0.0
) -> list[float]:
    """Seconds of each job on a node with GPUS GPUs (a GPU rule's variable part / GPU_SPEEDUP)."""
    return [
        (w - p + p / gpu_speedup if gpus > 0 and job.gpu else w) + (job_overhead_s if job.benchmark else 0.0)
        for w, p, job in zip(prediction.wall_s, prediction.gpu_part_s, prediction.jobs, strict=True)
    ]


def _children(jobs: list[Job]) -> list[list[int]]:
    children: list[list[int]] = [[] for _ in jobs]
    for i, job in enumerate(jobs):
        for d in job.deps:
            children[d].append(i)
    return children


def _ranks(jobs: list[Job], children: list[list[int]], duration: list[float]) -> list[float]:
    """Longest path of work (seconds) from each job to the end, itself included."""
    indegree = [len(job.deps) for job in jobs]
    order, frontier = [], [i for i, d in enumerate(indegree) if d == 0]
    while frontier:
        i = frontier.pop()
        order.append(i)
        for c in children[i]:
            indegree[c] -= 1
            if indegree[c] == 0:
                frontier.append(c)
    if len(order) != len(jobs):
        raise ValueError("the job graph has a cycle")
    rank = [0.0] * len(jobs)
    for i in reversed(order):
        rank[i] = duration[i] + max((rank[c] for c in children[i]), default=0.0)
    return rank


def longest_chain(
    prediction: Prediction, gpus: int = 0, gpu_speedup: float = 10.0
) -> list[tuple[Job, float]]:
    """The chain of dependent jobs with the most work (each with its seconds): no number of nodes
    finishes the config faster than its sum."""
    duration = durations(prediction, gpus, gpu_speedup)
    children = _children(prediction.jobs)
    rank = _ranks(prediction.jobs, children, duration)
    heads = [i for i, job in enumerate(prediction.jobs) if not job.deps]
    i = max(heads, key=lambda h: rank[h])
    chain = [i]
    while children[i]:
        i = max(children[i], key=lambda c: rank[c])
        chain.append(i)
    return [(prediction.jobs[i], duration[i]) for i in chain if duration[i] > 0]


def simulate(
    prediction: Prediction,
    nodes: int,
    cores: int,
    gpus: int = 0,
    gpu_speedup: float = 10.0,
    job_overhead_s: float = 0.0,
) -> dict[str, float]:
    """List-schedule the jobs on NODES nodes of CORES cores and GPUS GPUs; the makespan and totals.

    A job is ready when the jobs it reads from have finished; among ready jobs the one with the
    longest path of work after it starts first, on the first node with its threads (capped at
    CORES) free, and, for a GPU rule when GPUS > 0, a free GPU (its variable time divided by
    GPU_SPEEDUP). CPU jobs and GPU jobs wait in separate queues, so a waiting GPU job does not hold
    back CPU jobs. Returns hours: ``wall_h`` (makespan), ``chain_h`` (the longest chain of dependent
    jobs, a floor no number of nodes beats), ``core_h`` (threads x time), ``gpu_h``.
    """
    jobs = prediction.jobs
    n = len(jobs)
    on_gpu = [gpus > 0 and job.gpu for job in jobs]
    duration = durations(prediction, gpus, gpu_speedup, job_overhead_s)
    threads = [min(max(job.threads, 1), cores) for job in jobs]
    children = _children(jobs)
    waiting = [len(job.deps) for job in jobs]
    rank = _ranks(jobs, children, duration)
    free_cores = [cores] * nodes
    free_gpus = [gpus] * nodes
    queues: dict[bool, list[tuple[float, int]]] = {False: [], True: []}
    for i in range(n):
        if waiting[i] == 0:
            heapq.heappush(queues[on_gpu[i]], (-rank[i], i))
    running: list[tuple[float, int, int]] = []
    now, done = 0.0, 0
    while done < n:
        for gpu_queue in (True, False):
            queue = queues[gpu_queue]
            while queue:
                _, i = queue[0]
                node = next(
                    (
                        k
                        for k in range(nodes)
                        if free_cores[k] >= threads[i] and (not gpu_queue or free_gpus[k] >= 1)
                    ),
                    None,
                )
                if node is None:
                    break
                heapq.heappop(queue)
                free_cores[node] -= threads[i]
                free_gpus[node] -= int(gpu_queue)
                heapq.heappush(running, (now + duration[i], i, node))
        if not running:
            raise ValueError("a job fits on no node")
        now, i, node = heapq.heappop(running)
        finished = [(i, node)]
        while running and running[0][0] <= now:
            _, j, k = heapq.heappop(running)
            finished.append((j, k))
        for j, k in finished:
            done += 1
            free_cores[k] += threads[j]
            free_gpus[k] += int(on_gpu[j])
            for c in children[j]:
                waiting[c] -= 1
                if waiting[c] == 0:
                    heapq.heappush(queues[on_gpu[c]], (-rank[c], c))
    return {
        "wall_h": now / 3600,
        "chain_h": max(rank, default=0.0) / 3600,
        "core_h": sum(t * d for t, d in zip(threads, duration, strict=True)) / 3600,
        "gpu_h": sum(d for d, g in zip(duration, on_gpu, strict=True) if g) / 3600,
    }


def compare(prediction: Prediction, results: Path) -> pd.DataFrame:
    """Predicted against measured job seconds per stage, for a config that has since been run into
    RESULTS (its benchmark files matched by path): summed wall and CPU seconds, error in %."""
    measured = read_benchmarks(results).set_index("path")
    rows = [
        {
            "stage": job.benchmark.split("/")[0],
            "pred_wall_s": wall,
            "wall_s": measured.at[job.benchmark, "s"],
            "pred_cpu_s": cpu,
            "cpu_s": measured.at[job.benchmark, "cpu_time"],
        }
        for job, wall, cpu in zip(prediction.jobs, prediction.wall_s, prediction.cpu_s, strict=True)
        if job.benchmark in measured.index
    ]
    table = (
        pd.DataFrame(rows)
        .groupby("stage")
        .agg(
            jobs=("wall_s", "size"),
            pred_wall_s=("pred_wall_s", "sum"),
            wall_s=("wall_s", "sum"),
            pred_cpu_s=("pred_cpu_s", "sum"),
            cpu_s=("cpu_s", "sum"),
        )
    )
    table.loc["all"] = table.sum()
    table["wall_err_%"] = 100 * (table["pred_wall_s"] / table["wall_s"] - 1)
    table["cpu_err_%"] = 100 * (table["pred_cpu_s"] / table["cpu_s"] - 1)
    return table.round(1).reset_index()


# ---------------------------------------------------------------------------------------- CLI


def jobs_of(configfile: Path, dry_run: Path | None, results: str) -> list[Job]:
    """The jobs of CONFIGFILE: from a saved ``snakemake -n -F`` listing, or a fresh dry run."""
    text = dry_run.read_text() if dry_run else run_dry_run(configfile, results)
    return parse_dry_run(text, results)


def cost_table(
    prediction: Prediction,
    nodes: list[int],
    cores: list[int],
    gpus: list[int],
    gpu_speedup: float,
    job_overhead_s: float = 0.0,
) -> pd.DataFrame:
    """One row per (GPUs per node, cores per node, nodes): predicted wall hours (and the longest
    chain's), core-hours and GPU-hours."""
    rows = []
    for g in gpus:
        for c in cores:
            for m in nodes:
                sim = simulate(prediction, m, c, g, gpu_speedup, job_overhead_s)
                rows.append({"nodes": m, "cores/node": c, "GPUs/node": g, **sim})
    return pd.DataFrame(rows).round(2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, action="append", required=True, help="config(s) to predict")
    parser.add_argument(
        "--dry-run",
        type=Path,
        action="append",
        default=[],
        help="saved `snakemake -n -F` output per --config",
    )
    parser.add_argument(
        "--measured", type=Path, default=REPO / "results", help="results folder of a finished run"
    )
    parser.add_argument(
        "--measured-config", type=Path, default=REPO / "config.yaml", help="the config of that run"
    )
    parser.add_argument(
        "--measured-dry-run", type=Path, help="saved `snakemake -n -F` output of --measured-config"
    )
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--cores", type=int, nargs="+", default=[32], help="cores per node")
    parser.add_argument(
        "--gpus", type=int, nargs="+", default=[0, 4], help="GPUs per node (one table row each)"
    )
    parser.add_argument(
        "--gpu-speedup", type=float, default=10.0, help="ASSUMED speed-up of GPU rules on a GPU"
    )
    parser.add_argument(
        "--job-overhead", type=float, default=0.0, help="seconds of Snakemake's own work per job"
    )
    parser.add_argument("--stages", action="store_true", help="also print the per-stage totals")
    parser.add_argument(
        "--compare",
        type=Path,
        help="results folder of a run of the (single) --config: prediction vs measured",
    )
    args = parser.parse_args(argv)
    if args.dry_run and len(args.dry_run) != len(args.config):
        parser.error("give one --dry-run per --config")

    measured_config = load_config(args.measured_config)
    measured_jobs = jobs_of(args.measured_config, args.measured_dry_run, "measured_run")
    predicted = []
    for k, configfile in enumerate(args.config):
        config = load_config(configfile)
        dry = args.dry_run[k] if args.dry_run else None
        predicted.append((configfile, config, jobs_of(configfile, dry, "predicted_run")))
    fallback: dict[str, Any] = {}
    for _, config, _ in predicted:  # names the measured config lacks (a measured job of an older config)
        for section in ("models", "attacks"):
            fallback.setdefault(section, {}).update(config.get(section) or {})
        fallback.setdefault("codecs", {"settings": {}, "rooms": {}})
        for part in ("settings", "rooms"):
            fallback["codecs"][part].update((config.get("codecs") or {}).get(part) or {})
    measured_sizer = Sizer(measured_config, fallback, epochs_run(args.measured))
    other_jobs = [job for _, _, jobs in predicted for job in jobs]
    table = measured_table(args.measured, measured_jobs, other_jobs, measured_sizer)
    rates = Rates.from_table(table)
    print(
        f"measured run {args.measured}: {len(table)} benchmark files matched to rules; per-job overhead "
        f"{rates.overhead_s:.1f} s; GPU speed-up {args.gpu_speedup:g}x (ASSUMED, not measured)"
    )
    for configfile, config, jobs in predicted:
        prediction = predict(jobs, Sizer(config), rates)
        unmeasured = sorted(
            {j.rule for j, how in zip(jobs, prediction.matched, strict=True) if how == "unmeasured"}
        )
        print(
            f"\n{configfile}: {sum(1 for j in jobs if j.benchmark)} jobs with a benchmark file, "
            f"{sum(prediction.wall_s) / 3600:.1f} job-hours on one core, "
            f"{sum(prediction.cpu_s) / 3600:.1f} CPU-hours"
            + (
                f"; rules never measured (median job time used): {', '.join(unmeasured)}"
                if unmeasured
                else ""
            )
        )
        print("job-hours by how each job was matched to measured jobs:", prediction.matches())
        if args.stages:
            print(prediction.stages().to_string(index=False))
            for g in sorted({0, max(args.gpus)}):
                chain = longest_chain(prediction, g, args.gpu_speedup)
                print(
                    f"longest chain ({g} GPUs/node): "
                    + " -> ".join(
                        f"{job.rule}[{','.join(job.wildcards.values())}] {d / 3600:.2f} h" for job, d in chain
                    )
                )
        if args.compare:
            print(compare(prediction, args.compare).to_string(index=False))
        print(
            cost_table(
                prediction, args.nodes, args.cores, args.gpus, args.gpu_speedup, args.job_overhead
            ).to_string(index=False)
        )


if __name__ == "__main__":
    main()
