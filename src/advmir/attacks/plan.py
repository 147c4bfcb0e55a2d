"""The jobs of the attack stage, derived from the validated config (used by attacks.smk).

Built once when the workflow starts, like :class:`advmir.codecs.plan.CodecPlan`: it checks the
relations between keys that the schema cannot state and builds every configured attack without a
model (:func:`advmir.attacks.build_attack`), so a bad per-attack parameter stops ``snakemake -n``
before any job runs. The codec and transfer plans take :meth:`AttackPlan.attacked_models` from it.

The job grid: one job per (dataset, model, attack); ``attack`` is a key of ``attacks``, scored on
its ``models`` (default: every model but its own surrogate).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from shlex import quote
from typing import Any

from advmir.attacks import build_attack
from advmir.config import defended_models
from advmir.errors import InputError

#: The stage's figures, each written as png and pdf by plot_attacks.
FIGURES = ("attack_success_vs_snr", "attack_snr_distribution", "attack_spectrograms")


class AttackConfigError(InputError, ValueError):
    """The attacks section of the config is inconsistent; the message lists every problem."""


class AttackPlan:
    """Jobs, inputs and parameters of the attack stage.

    Args:
        config: the validated workflow config (schema defaults filled in).
        results: results folder (no trailing slash).
        datasets: dataset names.
        models: model name -> spec.
        build: build every attack now (False in a cluster job: the submitting run checked them).
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
        self.specs: dict[str, dict[str, Any]] = dict(config.get("attacks") or {})
        self.settings: dict[str, Any] = dict(config.get("attack_settings") or {})
        self.enabled = bool(self.specs)
        self.defended = set(defended_models(dict(config)))
        self._check(build)

    # -- the grid ------------------------------------------------------------------------------

    def attacked_models(self, attack: str) -> list[str]:
        """Models an attack is scored on: its ``models`` list, else every model but its surrogate and
        the defended models (:func:`advmir.config.undefended_models`: they run when named)."""
        spec = self.specs[attack]
        if spec.get("models"):
            return list(spec["models"])
        surrogate = spec.get("surrogate") if spec.get("threat") == "surrogate" else None
        return [m for m in self.models if m != surrogate and m not in self.defended]

    def runs(self) -> list[tuple[str, str, str]]:
        """Every (dataset, model, attack) job of the stage."""
        return [(d, m, a) for d in self.datasets for a in self.specs for m in self.attacked_models(a)]

    def run_dir(self, dataset: str, model: str, attack: str) -> str:
        return f"{self.results}/attacks/{dataset}/{model}/{attack}"

    def run_files(self, name: str = "examples.csv") -> list[str]:
        """One file of every run (its examples.csv by default)."""
        return [f"{self.run_dir(*run)}/{name}" for run in self.runs()]

    def attack_constraint(self) -> str:
        """The {attack} wildcard: exactly the configured attack names."""
        return "|".join(map(re.escape, self.specs)) or "no-attack-configured"

    def _check(self, build: bool) -> None:
        """Raise AttackConfigError listing every problem of the attacks section."""
        problems = []
        for name, spec in self.specs.items():
            problems += [f"attacks.{name}: {p}" for p in self._spec_problems(name, spec, build)]
        panel = self.settings.get("panel")
        if panel and self.specs:
            attack = panel.get("attack")
            if attack not in self.specs or panel.get("model") not in self.attacked_models(attack):
                problems.append(
                    f"attack_settings.panel {panel} must name an attack of `attacks` and one of its models"
                )
        if problems:
            raise AttackConfigError("invalid attacks configuration:\n  - " + "\n  - ".join(problems))

    def _spec_problems(self, name: str, spec: Mapping[str, Any], build: bool) -> list[str]:
        problems = []
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            problems.append("names may hold letters, digits and _ only")
        threat, surrogate = spec.get("threat", "white_box"), spec.get("surrogate")
        if threat == "surrogate" and surrogate not in self.models:
            problems.append(
                f"threat surrogate needs `surrogate:` naming a model of `models` ({sorted(self.models)}), "
                f"got {surrogate!r}"
            )
        if threat != "surrogate" and surrogate is not None:
            problems.append(f"`surrogate` is set but threat is {threat!r}; set threat: surrogate")
        unknown = [m for m in spec.get("models") or [] if m not in self.models]
        if unknown:
            problems.append(f"models {unknown} are not in `models` ({sorted(self.models)})")
        params = dict(spec.get("params") or {})
        if isinstance(params.get("target_map"), dict):
            # class names are resolved by the job, from the dataset's classes: check the rest now
            params["target_map"] = {0: 1}
        if build:  # every attack is built now, without a model: a bad parameter stops `snakemake -n`
            try:
                build_attack(spec.get("name"), params)
            except (InputError, ValueError, TypeError) as exc:
                problems.append(str(exc))
        return problems

    # -- one job -------------------------------------------------------------------------------

    def inputs(self, dataset: str, model: str, attack: str) -> dict[str, str]:
        """The target model's checkpoint and, for a surrogate attack, the surrogate's."""
        models = f"{self.results}/models/{dataset}"
        files = {"checkpoint": f"{models}/{model}/model.ckpt"}
        spec = self.specs[attack]
        if spec.get("threat") == "surrogate":
            files["surrogate"] = f"{models}/{spec['surrogate']}/model.ckpt"
        return files

    def spec_json(self, attack: str) -> str:
        """The algorithm and its parameters: a change re-runs this attack's jobs only."""
        spec = self.specs[attack]
        return json.dumps({"name": spec["name"], "params": spec.get("params") or {}}, sort_keys=True)

    @staticmethod
    def surrogate_option(surrogate: str | None) -> str:
        return f"--surrogate-checkpoint {quote(surrogate)}" if surrogate else ""

    # -- summary and figures -------------------------------------------------------------------

    def panel_run(self) -> str:
        """The run whose listenable examples make the spectrogram panel: attack_settings.panel,
        else the first white-box PGD run, else the first white-box run that is not the noise floor."""
        panel = self.settings.get("panel")
        if panel:
            return self.run_dir(self.datasets[0], panel["model"], panel["attack"])

        def rank(run: tuple[str, str, str]) -> tuple[bool, bool, bool]:
            spec = self.specs[run[2]]
            white = spec.get("threat", "white_box") == "white_box"
            return (not white, spec["name"] != "pgd", spec["name"] == "noise")

        return self.run_dir(*min(self.runs(), key=rank))

    def figure(self, name: str, ext: str) -> str:
        return f"{self.results}/figures/{name}.{ext}"

    def targets(self) -> list[str]:
        """Final files of the stage (none when no attack is configured)."""
        if not self.enabled:
            return []
        return [
            f"{self.results}/tables/attacks.csv",
            f"{self.results}/figures/listen_examples.html",
            *[self.figure(name, ext) for name in FIGURES for ext in ("png", "pdf")],
        ]
