"""The jobs of the representation-transfer stage, derived from the config (used by representation.smk).

For each held-out representation R (a front-end of the zoo: stft, logmel, filterbank, cqt,
waveform) the stage crafts, on the same seeded clips and at each SNR budget:

- ``ensemble_no_R``: :class:`advmir.attacks.ensemble.EnsemblePGD` on every member whose front-end is
  not R (the members and their weights: ``representation_transfer.members``);
- ``feature_no_R``: :class:`advmir.attacks.feature.FeaturePGD` on every front-end of ``feature.frontends``
  but R (a learned filterbank is taken from a zoo model that has one);
- ``single_M`` for every member M: the same attack as the ensembles' on M alone (single-model
  transfer with the same steps and levers, the baseline);

and scores every source's examples and their matched-noise controls on every target model, with no
transformation and after each codec setting of ``codecs``. One job per (dataset, source, budget);
then one table and one figure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from advmir.config import model_frontend
from advmir.errors import InputError

SECTION = "representation_transfer"
KINDS = ("ensemble", "feature", "single")
GENERIC_FRONTENDS = ("stft", "logmel", "cqt")  # built without a model; filterbank is learned, from a model
TABLE = "representation_transfer"
FIGURE = "representation_transfer"


class RepresentationPlanError(InputError, ValueError):
    """The representation_transfer section does not fit the rest of the config."""


class RepresentationPlan:
    """Jobs, inputs and parameters of the representation-transfer stage.

    Args:
        config: the validated config (defended models already expanded into ``models``).
        results: results folder (no trailing slash).
        datasets: dataset names.
        models: model name -> spec (the zoo).
        build: build the attacks now (a bad parameter stops ``snakemake -n``); False in cluster jobs.
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
        section = dict(config.get(SECTION) or {})
        self.section = section
        self.enabled = bool(section.get("enabled"))
        self.budgets = [float(b) for b in section.get("budgets_db") or []]
        self.eval_size = int(section.get("eval_size") or 0)
        self.seed = int(config.get("seed", 0))
        self.threads = int(section.get("threads", 1))
        self.attack_params: dict[str, Any] = dict(section.get("attack") or {})
        self.feature: dict[str, Any] = dict(section.get("feature") or {})
        self.single = bool(section.get("single", True))
        self.codec_specs: dict[str, Any] = dict((config.get("codecs") or {}).get("settings") or {})
        self.condition_names = list(section.get("codecs") or [])
        self.sample_rates = {d: int((config.get(d) or {}).get("sample_rate", 16000)) for d in self.datasets}
        given = section.get("members")
        if isinstance(given, Mapping):
            self.weights = {str(m): float(w) for m, w in given.items()}
        else:
            self.weights = {str(m): 1.0 for m in (given or [])}
        self.targets_given = section.get("targets")
        if self.enabled:
            self._check(build)
        else:  # off: no jobs, and no member to look up (an overlay may have dropped their models)
            self.weights, self.targets_given = {}, []

    # -- the grid ------------------------------------------------------------------------------

    def rep(self, model: str) -> str:
        return model_frontend(self.models, model)

    @property
    def members(self) -> list[str]:
        return list(self.weights)

    @property
    def targets(self) -> list[str]:
        """Scored models: ``targets``, else every model of the zoo."""
        return list(self.targets_given or self.models)

    @property
    def held_out(self) -> list[str]:
        """Held-out representations: ``representations``, else every members' representation that
        some target reads and some member does not."""
        given = self.section.get("representations")
        if given:
            return list(given)
        reps = dict.fromkeys(self.rep(m) for m in self.members)
        return [r for r in reps if any(self.rep(m) != r for m in self.members)]

    def ensemble_members(self, held_out: str) -> list[str]:
        return [m for m in self.members if self.rep(m) != held_out]

    def feature_frontends(self, held_out: str) -> list[str]:
        return [f for f in self.feature.get("frontends") or [] if f != held_out]

    @property
    def feature_on(self) -> bool:
        return bool(self.feature.get("enabled", True)) and bool(self.feature.get("frontends"))

    def filterbank_model(self) -> str | None:
        """The zoo model whose learned filterbank the feature attack uses (a member first)."""
        for name in [*self.members, *self.models]:
            if (
                self.models[name].get("frontend") == "filterbank"
            ):  # a trained zoo model's (an ensemble has none)
                return name
        return None

    @property
    def sources(self) -> list[str]:
        """Every crafted source: ensemble_no_R, feature_no_R per held-out R, single_M per member;
        none while the stage is off (its members need not be models of the config then)."""
        if not self.enabled:
            return []
        out = [f"ensemble_no_{r}" for r in self.held_out]
        if self.feature_on:
            out += [f"feature_no_{r}" for r in self.held_out]
        if self.single:
            out += [f"single_{m}" for m in self.members]
        return out

    def budget_names(self) -> list[str]:
        return [budget_name(b) for b in self.budgets]

    def source_spec(self, source: str) -> dict[str, Any]:
        """What the job of ``source`` crafts: kind, excluded representation, members with weights (or
        front-ends), the attack's parameters (without the budget: the job adds it)."""
        kind, _, rest = source.partition("_")
        if kind == "single":
            return {
                "kind": "single",
                "excluded": "",
                "members": {rest: 1.0},
                "params": self.attack_params,
            }
        held = rest.removeprefix("no_")
        if kind == "ensemble":
            members = {m: self.weights[m] for m in self.ensemble_members(held)}
            return {"kind": "ensemble", "excluded": held, "members": members, "params": self.attack_params}
        frontends = self.feature_frontends(held)
        filterbank = self.filterbank_model() if "filterbank" in frontends else None
        params = {k: v for k, v in self.feature.items() if k not in ("enabled", "frontends")}
        return {
            "kind": "feature",
            "excluded": held,
            "frontends": frontends,
            "members": {filterbank: 1.0} if filterbank else {},
            "params": params,
        }

    def source_json(self, source: str) -> str:
        return json.dumps(self.source_spec(source), sort_keys=True)

    def conditions_json(self) -> str:
        """The codec settings to score after: name -> spec."""
        return json.dumps({c: self.codec_specs[c] for c in self.condition_names}, sort_keys=True)

    # -- files ---------------------------------------------------------------------------------

    def run_dir(self, dataset: str, source: str, budget: str) -> str:
        return f"{self.results}/representation/{dataset}/{source}/{budget}"

    def inputs(self, dataset: str, source: str) -> dict[str, list[str]]:
        """The checkpoints of the source's members and of every target."""
        ckpt = f"{self.results}/models/{dataset}/{{}}/model.ckpt"
        return {
            "members": [ckpt.format(m) for m in self.source_spec(source)["members"]],
            "targets": [ckpt.format(t) for t in self.targets],
        }

    def run_files(self, name: str = "predictions.csv") -> list[str]:
        return [
            f"{self.run_dir(d, s, b)}/{name}"
            for d in self.datasets
            for s in self.sources
            for b in self.budget_names()
        ]

    def models_json(self) -> str:
        """Each target's and member's representation, for the table."""
        names = dict.fromkeys([*self.members, *self.targets])
        return json.dumps({m: self.rep(m) for m in names}, sort_keys=True)

    def table(self, name: str = TABLE) -> str:
        return f"{self.results}/tables/{name}.csv"

    def figure(self, ext: str) -> str:
        return f"{self.results}/figures/{FIGURE}.{ext}"

    def targets_files(self) -> list[str]:
        """Final files of the stage (none when it is off)."""
        if not self.enabled:
            return []
        return [self.table(), self.table(f"{TABLE}_summary"), self.figure("png"), self.figure("pdf")]

    # -- checks --------------------------------------------------------------------------------

    def _check(self, build: bool) -> None:
        problems = []
        where = f"{SECTION}.members"
        unknown = [m for m in self.members if m not in self.models]
        if unknown:
            problems.append(f"{where}: {unknown} are not models of the config ({sorted(self.models)})")
        if not self.members:
            problems.append(f"{where}: name at least two models of different representations")
        bad = {m: w for m, w in self.weights.items() if not w > 0}
        if bad:
            problems.append(f"{where}: weights must be > 0, got {bad}")
        unknown_targets = [m for m in self.targets_given or [] if m not in self.models]
        if unknown_targets:
            problems.append(
                f"{SECTION}.targets: {unknown_targets} are not models of the config ({sorted(self.models)})"
            )
        unknown_codecs = [c for c in self.condition_names if c not in self.codec_specs]
        if unknown_codecs:
            problems.append(
                f"{SECTION}.codecs: {unknown_codecs} are not settings of codecs.settings "
                f"({sorted(self.codec_specs)})"
            )
        if problems:  # the rest needs known models
            raise RepresentationPlanError(f"invalid {SECTION} configuration:\n  - " + "\n  - ".join(problems))
        ensembles = [m for m in self.members if "members" in self.models[m]]
        if ensembles:
            problems.append(
                f"{where}: {ensembles} are ensembles; name their members (this is an ensemble attack)"
            )
        if len({self.rep(m) for m in self.members}) < 2:
            problems.append(
                f"{where}: the members read one representation only "
                f"({sorted({self.rep(m) for m in self.members})}); name models of at least two"
            )
        target_reps = {self.rep(t) for t in self.targets}
        for r in self.held_out:
            if r not in target_reps:
                problems.append(
                    f"{SECTION}.representations: no target model reads {r!r} "
                    f"(targets read {sorted(target_reps)})"
                )
            if not self.ensemble_members(r):
                problems.append(f"{where}: every member reads {r!r}; holding it out leaves no ensemble")
        if self.feature_on and "filterbank" in self.feature["frontends"] and self.filterbank_model() is None:
            problems.append(
                f"{SECTION}.feature.frontends: 'filterbank' is learned, but no model of the zoo has "
                "frontend: filterbank; remove it or add such a model"
            )
        if not self.budgets:
            problems.append(f"{SECTION}.budgets_db: give at least one SNR budget")
        if build and not problems:
            problems += self._build_problems()
        if problems:
            raise RepresentationPlanError(f"invalid {SECTION} configuration:\n  - " + "\n  - ".join(problems))

    def _build_problems(self) -> list[str]:
        """Build each attack without a model: a parameter it does not take is named now."""
        from advmir.attacks.ensemble import EnsemblePGD
        from advmir.attacks.feature import FeaturePGD
        from advmir.attacks.params import AttackParamError
        from advmir.codecs.registry import CodecError, parse_setting

        problems = []
        for key, cls, params in (
            ("attack", EnsemblePGD, self.attack_params),
            (
                "feature",
                FeaturePGD,
                self.source_spec(f"feature_no_{self.held_out[0]}")["params"] if self.held_out else {},
            ),
        ):
            try:
                cls(None, snr_db=self.budgets[0], **params)
            except (AttackParamError, TypeError) as exc:
                problems.append(f"{SECTION}.{key}: {exc}")
        for dataset in self.datasets:
            for name in self.condition_names:
                try:
                    parse_setting(name, self.codec_specs[name], self.sample_rates[dataset])
                except CodecError as exc:
                    problems.append(f"{SECTION}.codecs: {exc}")
        return problems


def budget_name(snr_db: float) -> str:
    """The folder name of an SNR budget: ``30db`` (``32.5db``)."""
    return f"{snr_db:g}db"
