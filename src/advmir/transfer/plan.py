"""The jobs of the codec and transfer stages, derived from the config (used by codecs.smk and transfer.smk).

Kept out of the Snakefiles so that it is tested like any code. The job grid:

- one codec job per (dataset, source, setting): ``source`` is ``clean`` or ``{model}/{attack}``;
  ``setting`` is a name of ``codecs.settings`` (encode_with_codec; encode_clean_with_codec for the
  clean source) or ``codecs.rooms`` (simulate_room; simulate_clean_room). The job of a
  ``{model}/{attack}`` source also sends the attack run's matched-noise control
  (``matched_noise.npy``) through the same setting (``decoded_noise.npy``);
- one evaluation job per (dataset, attack, condition): ``attack`` is an attack or ``clean``,
  ``condition`` is ``none`` or a setting name; it scores every source's examples and, for an attack,
  their matched-noise controls under the same condition;
- one summary and one figure job.

A job's parameters are its own setting's spec only, so adding or changing a setting runs that
setting's jobs and the summary, nothing else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from shlex import quote
from typing import Any

from advmir.codecs.registry import parse_settings
from advmir.codecs.room import parse_room

CLEAN = "clean"
NONE = "none"
MATCHED_NOISE = "matched_noise.npy"  # the attack stage's matched-noise control of adversarial.npy
DECODED_NOISE = "decoded_noise.npy"  # that control through a codec or room setting
TABLES = ("transfer", "codec_clean_accuracy", "transfer_rates", "transfer_matrix", "transfer_representation")
FIGURES = ("bitrate", "heatmaps", "room_eot")


class TransferConfigError(ValueError):
    """The codecs / transfer sections of the config are inconsistent."""


def alternatives(names: Sequence[str]) -> str:
    """A wildcard constraint matching exactly ``names`` (nothing when empty)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


class TransferPlan:
    """Jobs, inputs and parameters of the codec and transfer stages.

    Args:
        config: the workflow config.
        results: results folder (no trailing slash).
        datasets: dataset names.
        models: model name -> spec.
        attacked_models: ``attack -> [model, ...]`` of the attack stage (where its outputs are
            stored); default: the attack's ``models`` key, else every model.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        results: str,
        datasets: Sequence[str],
        models: Mapping[str, Mapping[str, Any]],
        attacked_models: Callable[[str], Sequence[str]] | None = None,
    ) -> None:
        codecs = config.get("codecs") or {}
        transfer = config.get("transfer") or {}
        self.results, self.datasets, self.models = results, list(datasets), dict(models)
        self.config = config
        self.transfer = transfer
        self.enabled = bool(codecs.get("enabled", True))
        self.codec_settings = dict(codecs.get("settings") or {}) if self.enabled else {}
        self.room_settings = dict(codecs.get("rooms") or {}) if self.enabled else {}
        self.attacks = dict(config.get("attacks") or {})
        self.codec_attacks = list(transfer.get("attacks") or self.attacks) if self.enabled else []
        self.codec_threads = int(codecs.get("threads", 1))
        self.transfer_threads = int(transfer.get("threads", 1))
        self.keep_decoded = bool(codecs.get("keep_decoded", True))
        self.max_examples = transfer.get("max_examples")
        self._attacked_models = attacked_models
        self.condition_specs = self._check()

    # -- the grid ------------------------------------------------------------------------------

    @property
    def conditions(self) -> list[str]:
        return [NONE, *self.codec_settings, *self.room_settings]

    @property
    def transfer_attacks(self) -> list[str]:
        return [CLEAN, *self.codec_attacks]

    @property
    def target_models(self) -> list[str]:
        """Models whose predictions are scored (transfer.targets, else every model)."""
        return list(self.transfer.get("targets") or self.models)

    def source_models(self, attack: str) -> list[str]:
        """Models an attack's outputs are stored under, narrowed by transfer.sources."""
        if self._attacked_models is not None:
            models = list(self._attacked_models(attack))
        else:
            models = list((self.attacks.get(attack) or {}).get("models") or self.models)
        chosen = self.transfer.get("sources")
        return [m for m in models if not chosen or m in chosen]

    def sources(self) -> list[str]:
        """``clean`` and every ``{model}/{attack}`` that goes through the codecs."""
        return [CLEAN] + [f"{m}/{a}" for a in self.codec_attacks for m in self.source_models(a)]

    def _check(self) -> dict[str, dict[str, Any]]:
        problems = []
        names = [*self.codec_settings, *self.room_settings]
        clash = sorted({n for n in names if names.count(n) > 1 or n == NONE})
        if clash:
            problems.append(
                f"names must be unique across codecs.settings and codecs.rooms and not `none`: {clash}"
            )
        unknown = [a for a in self.codec_attacks if a not in self.attacks]
        if unknown:
            problems.append(
                f"transfer.attacks {unknown} are not attacks of the config ({sorted(self.attacks)})"
            )
        heatmaps = self.transfer.get("heatmap_conditions") or []
        unknown = [c for c in heatmaps if c not in self.conditions]
        if self.codec_attacks and unknown:
            problems.append(
                f"transfer.heatmap_conditions {unknown} are neither `none` nor settings of "
                f"codecs.settings / codecs.rooms ({self.conditions[1:]})"
            )
        for key in ("sources", "targets"):
            missing = [m for m in self.transfer.get(key) or [] if m not in self.models]
            if missing:
                problems.append(
                    f"transfer.{key} {missing} are not models of the config ({sorted(self.models)})"
                )
        if (
            self.codec_attacks
            and not self.source_models(self.codec_attacks[0])
            and not self.transfer.get("rows_file")
        ):
            problems.append(
                f"attack {self.codec_attacks[0]!r} has no source model left after transfer.sources"
            )
        if problems:
            raise TransferConfigError(
                "invalid codecs/transfer configuration:\n  - " + "\n  - ".join(problems)
            )
        specs: dict[str, dict[str, Any]] = {}
        for dataset in self.datasets:
            rate = int((self.config.get(dataset) or {}).get("sample_rate", 16000))
            for name, setting in parse_settings(self.codec_settings, rate).items():
                spec = {
                    "kind": "codec",
                    **setting.to_dict(),
                    "label": setting.label(),
                    "lossless": setting.lossless,
                }
                spec.pop("name")
                specs[name] = spec
            for name, spec in self.room_settings.items():
                specs[name] = {"kind": "room", "label": parse_room(name, spec, rate).label()}
        return specs

    # -- codec jobs ----------------------------------------------------------------------------

    def clean_rows_file(self, dataset: str) -> str:
        """The clean source's evaluation subset: transfer.rows_file, else the first attack's
        examples.csv (the attack stage evaluates the same seeded subset for every model and attack)."""
        custom = self.transfer.get("rows_file")
        if custom:
            return custom.format(results=self.results, dataset=dataset)
        attack = self.codec_attacks[0]
        return f"{self.results}/attacks/{dataset}/{self.source_models(attack)[0]}/{attack}/examples.csv"

    def codec_inputs(self, dataset: str, source: str) -> dict[str, str]:
        """The source's examples (rows) and, for an attack, its adversarial audio and the
        matched-noise control of that audio."""
        if source == CLEAN:
            return {"examples": self.clean_rows_file(dataset)}
        root = f"{self.results}/attacks/{dataset}/{source}"
        return {
            "examples": f"{root}/examples.csv",
            "audio": f"{root}/adversarial.npy",
            "noise": f"{root}/{MATCHED_NOISE}",
        }

    @staticmethod
    def audio_option(source: str, audio: str | None) -> str:
        return f"--audio {quote(audio)}" if source != CLEAN else ""

    @staticmethod
    def noise_option(source: str, noise: str | None) -> str:
        """``--noise-audio`` of an attack source's codec job (the clean source has no control)."""
        return f"--noise-audio {quote(noise)}" if source != CLEAN else ""

    def max_examples_option(self) -> str:
        return f"--max-examples {int(self.max_examples)}" if self.max_examples else ""

    def codec_setting_json(self, name: str) -> str:
        return json.dumps(self.codec_settings[name], sort_keys=True)

    def room_setting_json(self, name: str) -> str:
        return json.dumps(self.room_settings[name], sort_keys=True)

    def codec_targets(self) -> list[str]:
        """Every kept codec artifact (bitstreams with their bitrates) and room channel table."""
        if not self.codec_attacks:
            return []
        out = []
        for dataset in self.datasets:
            for source in self.sources():
                root = f"{self.results}/codecs/{dataset}/{source}"
                out += [f"{root}/{name}/bitrates.csv" for name in self.codec_settings]
                out += [f"{root}/{name}/channel.csv" for name in self.room_settings]
        return out

    # -- evaluation jobs -----------------------------------------------------------------------

    def transfer_inputs(self, dataset: str, attack: str, condition: str) -> dict[str, list[str]]:
        """Every source's audio under the condition (none: the attack output or the dataset), its
        examples, an attack's matched-noise controls under the condition (none: the attack run's
        matched_noise.npy), and every target checkpoint."""
        codecs, attacks = f"{self.results}/codecs/{dataset}", f"{self.results}/attacks/{dataset}"
        files: dict[str, list[str]] = {}
        if attack == CLEAN:
            files["examples"] = [self.clean_rows_file(dataset)]
            if condition != NONE:
                files["audio"] = [f"{codecs}/{CLEAN}/{condition}/decoded.npy"]
        else:
            runs = [f"{m}/{attack}" for m in self.source_models(attack)]
            files["examples"] = [f"{attacks}/{run}/examples.csv" for run in runs]
            if condition == NONE:
                files["audio"] = [f"{attacks}/{run}/adversarial.npy" for run in runs]
                files["noise"] = [f"{attacks}/{run}/{MATCHED_NOISE}" for run in runs]
            else:
                files["audio"] = [f"{codecs}/{run}/{condition}/decoded.npy" for run in runs]
                files["noise"] = [f"{codecs}/{run}/{condition}/{DECODED_NOISE}" for run in runs]
        files["ckpts"] = [f"{self.results}/models/{dataset}/{t}/model.ckpt" for t in self.target_models]
        return files

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

    # -- summary and figures -------------------------------------------------------------------

    def prediction_files(self) -> list[str]:
        return [
            f"{self.results}/transfer/{d}/{a}/{c}.csv"
            for d in self.datasets
            for a in self.transfer_attacks
            for c in self.conditions
        ]

    def bitrate_files(self) -> list[str]:
        return [
            f"{self.results}/codecs/{d}/{s}/{c}/bitrates.csv"
            for d in self.datasets
            for s in self.sources()
            for c in self.codec_settings
        ]

    def model_specs_json(self) -> str:
        keys = ("frontend", "arch", "train_subset", "seed")
        return json.dumps(
            {m: {k: s[k] for k in keys if k in s} for m, s in self.models.items()}, sort_keys=True
        )

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
