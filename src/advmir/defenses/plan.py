"""The jobs of the defenses stage, derived from the validated config (used by defenses.smk).

Built once when the workflow starts, like :class:`advmir.attacks.plan.AttackPlan`. The defended
models themselves need no job of this stage: :func:`advmir.config.expand_defenses` has added each
to ``config["models"]`` (its base model's spec, the base model's training with the defense's
overrides and ``adversarial``), so the zoo's ``train_model`` trains it and every stage may name it.
This plan holds the robust evaluation: one job per (dataset, evaluated model), then the tables and
the figure; and, when a defended model is trained for accuracy (a mode of
:data:`advmir.defenses.settings.AUGMENT_MODES`), the augmentation study's table and figure, which
read what other stages wrote (each model's metrics.json, generalisation.csv,
codec_clean_accuracy.csv). Randomized smoothing (``defenses.smoothing``,
:mod:`advmir.defenses.smoothing`): one certification job per (dataset, smoothed classifier), then
certified.csv and its figure. Adversarial-example detection (``defenses.detection``, with its own
``enabled``; :mod:`advmir.defenses.detection`): one job per (dataset, classifier of
``detection.models``), then detection.csv, detection_roc.csv and the ROC figure. It checks what the
schema cannot relate (the evaluated, smoothed and detection models, the evaluation size, the detector
names, each ensemble or detection attack built at an SNR budget without a model, see
:func:`advmir.defenses.robust.ensemble_problems`), so ``snakemake -n`` refuses a bad setting.

A defended model of a noise mode (``gaussian``: the base model of a smoothed classifier) is left
out of the default robust evaluation: its numbers are the smoothing's certificates; name it in
``evaluation.models`` to attack the base model too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from advmir.config import defended_models, schema_defaults
from advmir.defenses.settings import (
    AUGMENT_MODES,
    NOISE_MODES,
    DetectionConfig,
    SmoothingConfig,
    smoothing_problems,
)
from advmir.errors import InputError

TABLES = ("defenses", "defense_sanity")
FIGURE = "defense_robustness"
AUGMENTATION = "defense_augmentation"  # the augmentation study's table and figure
TRANSFORMS = "defense_transforms"  # the transformation defenses' table and figure
SMOOTHING = "certified"  # randomized smoothing's table and figure
DETECTION = ("detection", "detection_roc")  # adversarial-example detection's tables; the figure: the second


class DefensePlanError(InputError, ValueError):
    """The defenses section of the config is inconsistent; the message lists every problem."""


class DefensePlan:
    """Jobs, inputs and parameters of the defenses stage.

    Args:
        config: the validated config, ``defenses.models`` already expanded into ``models``.
        results: results folder (no trailing slash).
        datasets: dataset names.
        models: model name -> spec (the zoo, defended models included).
        build: build every ensemble attack now (False in a cluster job: the submitting run did).
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        results: str,
        datasets: Sequence[str],
        models: Mapping[str, Mapping[str, Any]],
        build: bool = True,
    ) -> None:
        self.results, self.datasets, self.models = results, list(datasets), dict(models)
        section = dict(config.get("defenses") or {})
        self.enabled = bool(section.get("enabled"))
        self.defenses: dict[str, dict[str, Any]] = dict(section.get("models") or {}) if self.enabled else {}
        self.base_of = defended_models(dict(config))
        self.evaluation: dict[str, Any] = dict(section.get("evaluation") or {})
        settings = dict(config.get("attack_settings") or {})
        self.eval_size = self.evaluation.get("eval_size") or settings["eval_size"]
        self.batch_size = self.evaluation.get("batch_size") or settings["batch_size"]
        self.threads = int(self.evaluation.get("threads", 1))
        self.ensemble: dict[str, dict[str, Any]] = {
            name: {"name": spec["name"], "params": dict(spec.get("params") or {})}
            for name, spec in (self.evaluation.get("ensemble") or {}).items()
        }
        self.budgets = [float(b) for b in self.evaluation.get("budgets_db") or []]
        self.sanity: dict[str, Any] = dict(self.evaluation.get("sanity") or {})
        # input-transformation defenses (advmir.defenses.transforms), scored three ways
        self.transforms: dict[str, dict[str, Any]] = (
            dict(section.get("transforms") or {}) if self.enabled else {}
        )
        self.transform_evaluation: dict[str, Any] = dict(section.get("transform_evaluation") or {})
        self.transform_eval_size = self.transform_evaluation.get("eval_size") or settings["eval_size"]
        self.transform_attacks: dict[str, dict[str, Any]] = {
            name: {"name": spec["name"], "params": dict(spec.get("params") or {})}
            for name, spec in (self.transform_evaluation.get("attacks") or {}).items()
        }
        # randomized smoothing (advmir.defenses.smoothing): one certification per (dataset, entry)
        self.smoothing: dict[str, dict[str, Any]] = (
            dict(section.get("smoothing") or {}) if self.enabled else {}
        )
        self.smoothing_evaluation: dict[str, Any] = {
            **schema_defaults("defenses.schema.yaml", "smoothing_evaluation"),
            **dict(section.get("smoothing_evaluation") or {}),
        }
        self.smoothing_default_size = int(settings["eval_size"])
        self.attack_batch_size = int(settings["batch_size"])
        self.sample_rates = {d: int((config.get(d) or {}).get("sample_rate", 16000)) for d in self.datasets}
        # the split synth_notes' zoo trains on: its generalisation rows are the models' test split
        self.default_split = str((config.get("synth_notes") or {}).get("split", "notes"))
        # adversarial-example detection (advmir.defenses.detection): one job per (dataset, classifier)
        self.detection_section: dict[str, Any] = dict(section.get("detection") or {})
        self.detection_on = self.enabled and bool(self.detection_section.get("enabled"))
        self.detection: DetectionConfig | None = None
        if self.enabled:
            self._check(build)

    # -- the grid ------------------------------------------------------------------------------

    @property
    def evaluated_models(self) -> list[str]:
        """``evaluation.models``, else every defended model and its base model (zoo order), but a
        noise mode's (the base of a smoothed classifier, certified instead)."""
        if not self.enabled:
            return []
        given = self.evaluation.get("models")
        if given:
            return list(given)
        attacked = {m for m in self.base_of if self.defenses[m].get("mode") not in NOISE_MODES}
        wanted = attacked | {self.base_of[m] for m in attacked}
        return [m for m in self.models if m in wanted]

    @property
    def augmented_models(self) -> list[str]:
        """Defended models trained for accuracy (mode in AUGMENT_MODES), in config order."""
        return [name for name, entry in self.defenses.items() if entry.get("mode") in AUGMENT_MODES]

    def augmentation_pairs(self) -> str:
        """``--pair MODEL BASE`` of every augmented model (summarize-augmentation's options)."""
        return " ".join(f"--pair {m} {self.base_of[m]}" for m in self.augmented_models)

    def augmentation_metrics_files(self) -> list[str]:
        """metrics.json of every augmented model and of its base model, on every dataset."""
        models = dict.fromkeys(m for a in self.augmented_models for m in (a, self.base_of[a]))
        return [f"{self.results}/models/{d}/{m}/metrics.json" for d in self.datasets for m in models]

    def run_dir(self, dataset: str, model: str) -> str:
        return f"{self.results}/defenses/{dataset}/{model}"

    def run_files(self, name: str = "robustness.csv") -> list[str]:
        return [f"{self.run_dir(d, m)}/{name}" for d in self.datasets for m in self.evaluated_models]

    def metrics_files(self) -> list[str]:
        return [
            f"{self.results}/models/{d}/{m}/metrics.json"
            for d in self.datasets
            for m in self.evaluated_models
        ]

    def _check(self, build: bool) -> None:
        problems = []
        unknown = [m for m in self.evaluation.get("models") or [] if m not in self.models]
        if unknown:
            problems.append(
                f"defenses.evaluation.models {unknown} must be models of the zoo or of defenses.models "
                f"({sorted(self.models)})"
            )
        if not self.evaluated_models and not self.transforms and not self.smoothing and not self.detection_on:
            problems.append(
                "defenses.enabled is true but nothing is evaluated: add defenses.models, "
                "defenses.transforms or defenses.smoothing, or switch on defenses.detection"
            )
        problems += self._transform_problems()
        problems += smoothing_problems(self.smoothing, self.models)
        sanity_budget = self.sanity.get("budget_db")
        if sanity_budget is not None and float(sanity_budget) not in self.budgets:
            problems.append(
                f"defenses.evaluation.sanity.budget_db ({sanity_budget}) must be one of "
                f"defenses.evaluation.budgets_db {self.budgets} (or null)"
            )
        if build:
            from advmir.defenses.robust import ensemble_problems

            problems += ensemble_problems(self.ensemble, "defenses.evaluation.ensemble")
            if self.transforms:
                problems += ensemble_problems(self.transform_attacks, "defenses.transform_evaluation.attacks")
        if self.detection_on:
            problems += self._detection_problems(build)
        if problems:
            raise DefensePlanError("invalid defenses configuration:\n  - " + "\n  - ".join(problems))

    def _detection_problems(self, build: bool) -> list[str]:
        """``defenses.detection`` checked (names, models, budgets, squeezers for every sample rate,
        each attack built at an SNR budget without a model); sets :attr:`detection` when sound."""
        from advmir.defenses.settings import DETECTION_SECTION

        section = self.detection_section
        problems = DetectionConfig.problems(section, self.models, list(self.sample_rates.values()))
        if build and not problems:
            from advmir.defenses.robust import ensemble_problems

            setting = DetectionConfig.from_dict(section, self.models, list(self.sample_rates.values()))
            problems += ensemble_problems(setting.attacks, f"{DETECTION_SECTION}.attacks")
            adaptive = {"gradient": setting.adaptive["gradient"]}
            if setting.adaptive.get("query") is not None:
                adaptive["query"] = setting.adaptive["query"]
            problems += ensemble_problems(adaptive, f"{DETECTION_SECTION}.adaptive")
        if not problems:
            self.detection = DetectionConfig.from_dict(section, self.models, list(self.sample_rates.values()))
        return problems

    def _transform_problems(self) -> list[str]:
        """Each transformation defense checked for every dataset's sample rate (a codec setting with
        the codec stage's checks and messages), and the EOT samples."""
        from advmir.defenses.transforms import transform_problems

        problems: list[str] = []
        for rate in dict.fromkeys(self.sample_rates.values()):
            for problem in transform_problems(self.transforms, rate, self.models):
                if problem not in problems:
                    problems.append(problem)
        eot = self.transform_evaluation.get("eot_samples", 20)
        if isinstance(eot, bool) or not isinstance(eot, int) or eot < 1:
            problems.append(f"defenses.transform_evaluation.eot_samples must be an integer >= 1, got {eot!r}")
        return problems

    # -- the transformation defenses -------------------------------------------------------------

    def transform_dir(self, dataset: str, name: str) -> str:
        return f"{self.results}/defenses/{dataset}/transforms/{name}"

    def transform_files(self, name: str = "summary.csv") -> list[str]:
        return [f"{self.transform_dir(d, t)}/{name}" for d in self.datasets for t in self.transforms]

    def transform_checkpoint(self, dataset: str, name: str) -> str:
        """The checkpoint of the model that the transformation defense ``name`` wraps."""
        return f"{self.results}/models/{dataset}/{self.transforms[name]['model']}/model.ckpt"

    def transform_json(self, name: str) -> str:
        return json.dumps(self.transforms[name], sort_keys=True)

    def transform_attacks_json(self) -> str:
        return json.dumps(self.transform_attacks)

    def transform_budgets_option(self) -> str:
        return " ".join(f"{float(b):g}" for b in self.transform_evaluation.get("budgets_db") or [40, 30])

    def transform_option(self, key: str) -> Any:
        """A transform_evaluation setting (eot_samples, margin) as the schema defaulted it."""
        return self.transform_evaluation.get(key, {"eot_samples": 20, "margin": 0.05}.get(key))

    def transform_constraint(self) -> str:
        return "|".join(self.transforms) or "no-transform-defense"

    def transform_targets(self) -> list[str]:
        """The transformation defenses' table and figure (none without a transformation defense)."""
        if not self.transforms:
            return []
        return [self.table(TRANSFORMS), *(self.figure(ext, TRANSFORMS) for ext in ("png", "pdf"))]

    # -- randomized smoothing --------------------------------------------------------------------

    def smoothing_setting(self, name: str) -> SmoothingConfig:
        """The checked entry ``defenses.smoothing.NAME``."""
        return SmoothingConfig.from_dict(name, self.smoothing[name], self.models)

    def smoothing_dir(self, dataset: str, name: str) -> str:
        return f"{self.results}/defenses/{dataset}/smoothing/{name}"

    def smoothing_files(self, name: str = "smoothing.json") -> list[str]:
        return [f"{self.smoothing_dir(d, s)}/{name}" for d in self.datasets for s in self.smoothing]

    def smoothing_checkpoint(self, dataset: str, name: str) -> str:
        """The checkpoint of the base model that the smoothed classifier ``name`` smooths."""
        return f"{self.results}/models/{dataset}/{self.smoothing[name]['model']}/model.ckpt"

    def smoothing_json(self, name: str) -> str:
        return json.dumps(self.smoothing_setting(name).entry(), sort_keys=True)

    def smoothing_eval_size(self, name: str) -> int:
        """Clips certified: the entry's ``eval_size``, else the attack stage's."""
        return self.smoothing_setting(name).eval_size or self.smoothing_default_size

    def smoothing_info(self, name: str) -> str:
        """What smoothing.json records of the base model: its defense mode and training sigma."""
        model = self.smoothing[name]["model"]
        entry = self.defenses.get(model) or {}
        info = {"defense": entry.get("mode", "none"), "train_sigma": entry.get("sigma")}
        return json.dumps(info, sort_keys=True)

    def smoothing_snr_option(self) -> str:
        return " ".join(f"{float(s):g}" for s in self.smoothing_evaluation["snr_db"])

    def smoothing_threads(self) -> int:
        return int(self.smoothing_evaluation["threads"])

    def smoothing_constraint(self) -> str:
        return "|".join(self.smoothing) or "no-smoothing"

    def smoothing_targets(self) -> list[str]:
        """Randomized smoothing's table and figure (none without a smoothed classifier)."""
        if not self.smoothing:
            return []
        return [self.table(SMOOTHING), *(self.figure(ext, SMOOTHING) for ext in ("png", "pdf"))]

    # -- adversarial-example detection ----------------------------------------------------------

    @property
    def detection_models(self) -> list[str]:
        """The classifiers whose adversarial examples are detected (none when detection is off)."""
        return list(self.detection.models) if self.detection_on and self.detection else []

    def detection_dir(self, dataset: str, model: str) -> str:
        return f"{self.results}/defenses/{dataset}/detection/{model}"

    def detection_files(self, name: str = "summary.csv") -> list[str]:
        return [f"{self.detection_dir(d, m)}/{name}" for d in self.datasets for m in self.detection_models]

    def detection_checkpoint(self, dataset: str, model: str) -> str:
        return f"{self.results}/models/{dataset}/{model}/model.ckpt"

    def detection_json(self) -> str:
        """The resolved section (evaluate-detection's ``--setting``; ``{}`` when detection is off)."""
        return json.dumps(self.detection.entry(), sort_keys=True) if self.detection else "{}"

    def detection_option(self, key: str) -> Any:
        """eval_size and batch_size (null: the attack stage's), threads (1 when detection is off)."""
        value = getattr(self.detection, key) if self.detection else (1 if key == "threads" else None)
        if value is None:
            return {"eval_size": self.smoothing_default_size, "batch_size": self.attack_batch_size}[key]
        return value

    def detection_constraint(self) -> str:
        return "|".join(self.detection_models) or "no-detection-model"

    def detection_targets(self) -> list[str]:
        """Detection's tables and figure (none when it is off)."""
        if not self.detection_models:
            return []
        return [
            *(self.table(t) for t in DETECTION),
            *(self.figure(ext, DETECTION[1]) for ext in ("png", "pdf")),
        ]

    # -- one job -------------------------------------------------------------------------------

    def inputs(self, dataset: str, model: str) -> dict[str, str]:
        """The model's checkpoint and, for a defended model, its undefended twin's."""
        root = f"{self.results}/models/{dataset}"
        files = {"checkpoint": f"{root}/{model}/model.ckpt"}
        if model in self.base_of:
            files["twin"] = f"{root}/{self.base_of[model]}/model.ckpt"
        return files

    def info_json(self, model: str) -> str:
        """What robustness.json records of the model: its base model, defense and training budget."""
        entry = self.defenses.get(model) or {}
        info = {
            "base_model": self.base_of.get(model, model),
            "defense": entry.get("mode", "none"),
            "defense_snr_db": entry.get("snr_db"),
            "defense_eps": entry.get("eps"),
        }
        return json.dumps(info, sort_keys=True)

    def ensemble_json(self) -> str:
        return json.dumps(self.ensemble)

    def sanity_json(self) -> str:
        return json.dumps(self.sanity, sort_keys=True)

    def budgets_option(self) -> str:
        return " ".join(f"{b:g}" for b in self.budgets)

    def model_constraint(self) -> str:
        return "|".join(self.evaluated_models) or "no-model-evaluated"

    # -- summary and figures -------------------------------------------------------------------

    def table(self, name: str) -> str:
        return f"{self.results}/tables/{name}.csv"

    def figure(self, ext: str, name: str = FIGURE) -> str:
        return f"{self.results}/figures/{name}.{ext}"

    def augmentation_targets(self) -> list[str]:
        """The augmentation study's table and figure (none without an augmented model)."""
        if not self.augmented_models:
            return []
        return [self.table(AUGMENTATION), *(self.figure(ext, AUGMENTATION) for ext in ("png", "pdf"))]

    def targets(self) -> list[str]:
        """Final files of the stage (none when it is disabled)."""
        if not self.enabled:
            return []
        robust = [*[self.table(t) for t in TABLES], self.figure("png"), self.figure("pdf")]
        return [
            *(robust if self.evaluated_models else []),
            *self.augmentation_targets(),
            *self.transform_targets(),
            *self.smoothing_targets(),
            *self.detection_targets(),
        ]
