"""The jobs of the transfer stage, derived from the config (used by transfer.smk).

Kept out of the Snakefiles so that it is tested like any code. Built on the codec stage's plan
(:class:`advmir.codecs.plan.CodecPlan`: its sources and settings are this stage's sources and
conditions). The job grid:

- one evaluation job per (dataset, attack, condition): ``attack`` is an attack or ``clean``,
  ``condition`` is ``none`` or a setting name; it scores every source's examples and, for an attack,
  their matched-noise controls under the same condition;
- one summary and one figure job.

A job's parameters are its own setting's spec only, so adding or changing a setting runs that
setting's jobs and the summary, nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from shlex import quote
from typing import Any

from advmir.codecs.plan import CLEAN, DECODED, DECODED_NOISE, MATCHED_NOISE, NONE, CodecPlan
from advmir.config import model_frontend

TABLES = ("transfer", "codec_clean_accuracy", "transfer_rates", "transfer_matrix", "transfer_representation")
FIGURES = ("bitrate", "heatmaps", "room_eot")


def prediction_paths(
    root: str, datasets: Sequence[str], attacks: Sequence[str], conditions: Sequence[str]
) -> list[str]:
    """``{root}/{dataset}/{attack}/{condition}.csv`` of every cell (root: ``results/transfer``)."""
    return [f"{root}/{d}/{a}/{c}.csv" for d in datasets for a in attacks for c in conditions]


def bitrate_paths(
    root: str, datasets: Sequence[str], sources: Sequence[str], settings: Sequence[str]
) -> list[str]:
    """``{root}/{dataset}/{source}/{setting}/bitrates.csv`` of every codec job (root:
    ``results/codecs``)."""
    return [f"{root}/{d}/{s}/{c}/bitrates.csv" for d in datasets for s in sources for c in settings]


class TransferConfigError(ValueError):
    """The transfer section of the config is inconsistent."""


class TransferPlan(CodecPlan):
    """Jobs, inputs and parameters of the transfer stage, over the codec stage's grid.

    Takes the arguments of :class:`advmir.codecs.plan.CodecPlan`; checks the transfer section of the
    config as well (TransferConfigError listing every problem).
    """

    def _check(self) -> dict[str, dict[str, Any]]:
        specs = super()._check()
        self.transfer_threads = int(self.transfer.get("threads", 1))
        self._check_transfer()
        return specs

    @property
    def condition_specs(self) -> dict[str, dict[str, Any]]:
        """The spec of every condition but ``none``: the codec stage's setting specs."""
        return self.setting_specs

    # -- the grid ------------------------------------------------------------------------------

    @property
    def conditions(self) -> list[str]:
        return [NONE, *self.codec_settings, *self.room_settings]

    @property
    def transfer_attacks(self) -> list[str]:
        return [CLEAN, *self.codec_attacks]

    @property
    def target_models(self) -> list[str]:
        """Models whose predictions are scored (transfer.targets, else every model, the defended ones
        too: scoring is cheap beside crafting, and it gives each defended model's accuracy through
        every codec and room and the transfer of every attack to it)."""
        return list(self.transfer.get("targets") or self.models)

    def _check_transfer(self) -> None:
        problems = []
        heatmaps = self.transfer.get("heatmap_conditions") or []
        unknown = [c for c in heatmaps if c not in self.conditions]
        if self.codec_attacks and unknown:
            problems.append(
                f"transfer.heatmap_conditions {unknown} are neither `none` nor settings of "
                f"codecs.settings / codecs.rooms ({self.conditions[1:]})"
            )
        missing = [m for m in self.transfer.get("targets") or [] if m not in self.models]
        if missing:
            problems.append(
                f"transfer.targets {missing} are not models of the config ({sorted(self.models)})"
            )
        if problems:
            raise TransferConfigError(
                "invalid codecs/transfer configuration:\n  - " + "\n  - ".join(problems)
            )

    # -- evaluation jobs -----------------------------------------------------------------------

    @property
    def per_attack(self) -> bool:
        """One evaluation job per (dataset, attack) for every condition, with the codec stage's
        ``codecs.jobs: source``; else one per (dataset, attack, condition)."""
        return self.per_source

    def transfer_inputs(
        self, dataset: str, attack: str, condition: str | None = None
    ) -> dict[str, list[str]]:
        """Every source's audio under the condition (none: the attack output or the dataset), its
        examples, an attack's matched-noise controls under the condition (none: the attack run's
        matched_noise.npy), and every target checkpoint.

        Condition None: the inputs of a job that scores every condition (:attr:`per_attack`): those
        of ``none`` under ``examples``, ``audio``, ``noise`` and ``ckpts``, and every codec and room
        setting's audio and controls under ``decoded`` and ``decoded_noise``."""
        if condition is not None:
            return self._condition_inputs(dataset, attack, condition)
        files = self._condition_inputs(dataset, attack, NONE)
        for setting in self.conditions[1:]:
            one = self._condition_inputs(dataset, attack, setting)
            files.setdefault("decoded", []).extend(one["audio"])
            if "noise" in one:
                files.setdefault("decoded_noise", []).extend(one["noise"])
        return files

    def _condition_inputs(self, dataset: str, attack: str, condition: str) -> dict[str, list[str]]:
        attacks = f"{self.results}/attacks/{dataset}"
        folders = list(self.codec_folders(dataset, attack).values())
        files: dict[str, list[str]] = {}
        if attack == CLEAN:
            files["examples"] = [self.clean_rows_file(dataset)]
            if condition != NONE:
                files["audio"] = [f"{folders[0]}/{condition}/{DECODED}"]
        else:
            runs = [f"{m}/{attack}" for m in self.source_models(attack)]
            files["examples"] = [f"{attacks}/{run}/examples.csv" for run in runs]
            if condition == NONE:
                files["audio"] = [f"{attacks}/{run}/adversarial.npy" for run in runs]
                files["noise"] = [f"{attacks}/{run}/{MATCHED_NOISE}" for run in runs]
            else:
                files["audio"] = [f"{folder}/{condition}/{DECODED}" for folder in folders]
                files["noise"] = [f"{folder}/{condition}/{DECODED_NOISE}" for folder in folders]
        files["ckpts"] = [f"{self.results}/models/{dataset}/{t}/model.ckpt" for t in self.target_models]
        return files

    def codec_folders(self, dataset: str, attack: str) -> dict[str, str]:
        """Source model (``clean`` for the clean subset) -> the codec stage's folder of its source,
        ``results/codecs/{dataset}/{source}``, which holds every setting's ``{setting}/decoded.npy``."""
        codecs = f"{self.results}/codecs/{dataset}"
        if attack == CLEAN:
            return {CLEAN: f"{codecs}/{CLEAN}"}
        return {m: f"{codecs}/{m}/{attack}" for m in self.source_models(attack)}

    def source_options(
        self,
        attack: str,
        audio: Sequence[str] | None,
        examples: Sequence[str],
        noise: Sequence[str] | None = None,
    ) -> str:
        """``--source MODEL AUDIO EXAMPLES`` per source (AUDIO ``dataset``: the clean waveforms) and
        ``--noise MODEL NOISE`` per attack source (its matched-noise control)."""
        names = [CLEAN] if attack == CLEAN else self.source_models(attack)
        audio = list(audio) if audio else ["dataset"] * len(names)
        options = [
            f"--source {n} {quote(a)} {quote(e)}" for n, a, e in zip(names, audio, examples, strict=True)
        ]
        if attack != CLEAN:
            options += [f"--noise {n} {quote(a)}" for n, a in zip(names, noise or [], strict=True)]
        return " ".join(options)

    def target_options(self, ckpts: Sequence[str]) -> str:
        return " ".join(f"--target {t} {quote(c)}" for t, c in zip(self.target_models, ckpts, strict=True))

    def codec_dir_options(self, dataset: str, attack: str) -> str:
        """``--codec-dir MODEL DIR`` per source of a per-attack job (:meth:`codec_folders`)."""
        folders = self.codec_folders(dataset, attack)
        return " ".join(f"--codec-dir {m} {quote(folder)}" for m, folder in folders.items())

    def conditions_option(self) -> str:
        """``--conditions`` of a per-attack job: ``none`` and every codec and room setting."""
        return "--conditions " + " ".join(quote(c) for c in self.conditions)

    def attack_outputs(self) -> list[str]:
        """The prediction tables a per-attack job writes (one per condition), as Snakemake patterns
        with the ``{dataset}`` and ``{attack}`` wildcards."""
        return [f"{self.results}/transfer/{{dataset}}/{{attack}}/{c}.csv" for c in self.conditions]

    def attack_runtime(self) -> int:
        """Minutes a per-attack job may take: the per-condition jobs' limit for every 5 conditions."""
        return 30 * max(1, -(-len(self.conditions) // 5))

    # -- summary and figures -------------------------------------------------------------------

    def prediction_files(self) -> list[str]:
        root = f"{self.results}/transfer"
        return prediction_paths(root, self.datasets, self.transfer_attacks, self.conditions)

    def bitrate_files(self) -> list[str]:
        """Every codec job's bitrates.csv (clean accuracy per codec beside its bitrate), which the
        summary reads; not its rule's inputs: each is written by a job whose decoded audio some
        evaluation job reads, so the summary's prediction files already order it after them."""
        root = f"{self.results}/codecs"
        return bitrate_paths(root, self.datasets, self.sources(), list(self.codec_settings))

    def summary_options(self) -> str:
        """``--grid``, ``--transfer-root`` and ``--codecs-root`` of the summary: the CLI lists the
        prediction and bitrates files itself (:func:`prediction_paths`, :func:`bitrate_paths`),
        because at cluster scale the lists outgrow a command line (the 10x sweep: 87,152 bitrates
        files, 7.3 MB of paths, above Linux's 2 MB for a command's arguments)."""
        grid = {
            "datasets": self.datasets,
            "attacks": self.transfer_attacks,
            "conditions": self.conditions,
            "sources": self.sources(),
            "codec_settings": list(self.codec_settings),
        }
        return (
            f"--grid {quote(json.dumps(grid))} --transfer-root {quote(f'{self.results}/transfer')}"
            f" --codecs-root {quote(f'{self.results}/codecs')}"
        )

    def model_specs_json(self) -> str:
        keys = ("frontend", "arch", "train_subset", "seed")
        specs = {m: {k: s[k] for k in keys if k in s} for m, s in self.models.items()}
        for m, s in self.models.items():
            if "source" in s:  # a model of your own: its representation is its own
                specs[m] = {"frontend": "external", "arch": s["source"]}
            elif "members" in s:  # an ensemble: its members' shared representation (or mixed)
                specs[m] = {"frontend": model_frontend(self.models, m), "arch": "ensemble"}
        return json.dumps(specs, sort_keys=True)

    def attack_specs_json(self) -> str:
        """Algorithm and threat of every attack (a surrogate attack was crafted on its surrogate)."""
        keys = ("name", "threat", "surrogate")
        specs = {
            a: {k: (self.attacks[a] or {})[k] for k in keys if k in (self.attacks[a] or {})}
            for a in self.codec_attacks
        }
        return json.dumps(specs, sort_keys=True)

    def condition_specs_json(self) -> str:
        return json.dumps(self.condition_specs, sort_keys=True)

    def eot_options(self) -> str:
        """Plain PGD and EOT-PGD of the room figure: transfer.eot_comparison, else the first white-box
        attacks whose algorithm is pgd and eot_pgd."""
        pair = dict(self.transfer.get("eot_comparison") or {})
        for role, algorithm in (("plain", "pgd"), ("eot", "eot_pgd")):
            if role not in pair:
                found = [
                    a
                    for a in self.codec_attacks
                    if (self.attacks[a] or {}).get("name") == algorithm
                    and (self.attacks[a] or {}).get("threat", "white_box") == "white_box"
                ]
                pair[role] = found[0] if found else "none-configured"
        return f"--plain-attack {pair['plain']} --eot-attack {pair['eot']}"

    def heatmap_conditions(self) -> str:
        return " ".join(self.transfer.get("heatmap_conditions") or [NONE, "mp3_128k"])

    def tables(self) -> dict[str, str]:
        return {n: f"{self.results}/tables/{n}.csv" for n in TABLES}

    def figure(self, name: str, ext: str) -> str:
        return f"{self.results}/figures/transfer_{name}.{ext}"

    def transfer_targets(self) -> list[str]:
        """Final files of the transfer stage (none when no attack goes through the codecs)."""
        if not self.codec_attacks:
            return []
        return list(self.tables().values()) + [self.figure(n, e) for n in FIGURES for e in ("png", "pdf")]
