"""The jobs of the codec stage, derived from the config (used by codecs.smk).

Kept out of the Snakefiles so that it is tested like any code. The job grid: one job per
(dataset, source, setting): ``source`` is ``clean`` or ``{model}/{attack}``; ``setting`` is a name
of ``codecs.settings`` (encode_with_codec; encode_clean_with_codec for the clean source) or
``codecs.rooms`` (simulate_room; simulate_clean_room). The job of a ``{model}/{attack}`` source also
sends the attack run's matched-noise control (``matched_noise.npy``) through the same setting
(``decoded_noise.npy``).

The sources are chosen by keys of the ``transfer`` section (``attacks``, ``sources``, ``rows_file``,
``max_examples``, ``clean_examples``): the codec stage transforms what the transfer stage scores.
The clean source is a seeded subset of the test split (``clean_examples``; every test clip by
default) nested with the attack stage's evaluation subset, so it holds every attacked clip. The
transfer stage's plan (:class:`advmir.transfer.plan.TransferPlan`) builds on this one.

A job's parameters are its own setting's spec only, so adding or changing a setting runs that
setting's jobs, nothing else. With ``codecs.jobs: source`` the grid is one job per (dataset,
source) for every setting (transform_source; transform_clean_source): the same folders, about 50x
fewer jobs for a sweep at cluster scale, and a changed setting reruns every source's job.
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
MATCHED_NOISE = "matched_noise.npy"  # the attack stage's matched-noise control of adversarial.npy
DECODED = "decoded.npy"  # a source through a codec or room setting
DECODED_NOISE = "decoded_noise.npy"  # that control through a codec or room setting
NONE = "none"  # the transfer stage's condition without a setting: no setting may take its name
JOB_MODES = ("setting", "source")  # codecs.jobs: one job per (source, setting) or per source


class CodecConfigError(ValueError):
    """The codecs section of the config (or the transfer keys choosing the sources) is inconsistent."""


def alternatives(names: Sequence[str]) -> str:
    """A wildcard constraint matching exactly ``names`` (nothing when empty)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


class CodecPlan:
    """Jobs, inputs and parameters of the codec stage.

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
        self.keep_decoded = bool(codecs.get("keep_decoded", True))
        self.jobs = str(codecs.get("jobs", "setting"))
        self.max_examples = transfer.get("max_examples")
        self.clean_examples = transfer.get("clean_examples")
        # the attack stage's subset size (validation fills in its default; None: nothing to check)
        self.eval_size = (config.get("attack_settings") or {}).get("eval_size")
        self._attacked_models = attacked_models
        self.setting_specs = self._check()

    # -- the grid ------------------------------------------------------------------------------

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
        """Raise CodecConfigError listing every problem; else the spec of every setting (kind,
        parameters, label; a codec setting's lossless flag), checked at each dataset's rate."""
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
        missing = [m for m in self.transfer.get("sources") or [] if m not in self.models]
        if missing:
            problems.append(
                f"transfer.sources {missing} are not models of the config ({sorted(self.models)})"
            )
        if (
            self.codec_attacks
            and not self.source_models(self.codec_attacks[0])
            and not self.transfer.get("rows_file")
        ):
            problems.append(
                f"attack {self.codec_attacks[0]!r} has no source model left after transfer.sources"
            )
        if None not in (self.clean_examples, self.eval_size) and self.clean_examples < self.eval_size:
            problems.append(
                f"transfer.clean_examples ({self.clean_examples}) must be at least attack_settings.eval_size "
                f"({self.eval_size}), so the clean source holds every attacked clip (null: every test clip)"
            )
        if self.jobs not in JOB_MODES:
            problems.append(f"codecs.jobs must be one of {list(JOB_MODES)}, got {self.jobs!r}")
        if problems:
            raise CodecConfigError("invalid codecs/transfer configuration:\n  - " + "\n  - ".join(problems))
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
        """The clean source's clips: transfer.rows_file, else the seeded test subset written by the
        rule select_clean_clips."""
        custom = self.transfer.get("rows_file")
        if custom:
            return custom.format(results=self.results, dataset=dataset)
        return f"{self.results}/codecs/{dataset}/{CLEAN}/examples.csv"

    def clean_size_option(self) -> str:
        """``--size`` of select_clean_clips (none: every test clip)."""
        return f"--size {int(self.clean_examples)}" if self.clean_examples else ""

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

    def max_examples_option(self, source: str) -> str:
        """``--max-examples`` of an attack source's jobs (the clean source is sized by its own file)."""
        return f"--max-examples {int(self.max_examples)}" if self.max_examples and source != CLEAN else ""

    def codec_setting_json(self, name: str) -> str:
        return json.dumps(self.codec_settings[name], sort_keys=True)

    def room_setting_json(self, name: str) -> str:
        return json.dumps(self.room_settings[name], sort_keys=True)

    # -- one job per source (codecs.jobs: source) ------------------------------------------------

    @property
    def per_source(self) -> bool:
        """One job per (dataset, source) for every setting, instead of one per setting."""
        return self.jobs == "source"

    def source_outputs(self, *, attack: bool) -> dict[str, list[str]]:
        """The outputs of a per-source job, named like the per-setting rules' outputs and listed
        for every codec setting, then every room setting, as Snakemake patterns with the
        ``{dataset}`` and ``{source}`` wildcards. ``decoded`` and ``decoded_noise`` (attack sources
        only) cover both kinds; ``bitstreams`` and ``bitrates`` the codecs; ``channel`` and ``rooms``
        the rooms; ``setting`` both."""
        root = f"{self.results}/codecs/{{dataset}}/{{source}}"
        names = [*self.codec_settings, *self.room_settings]
        # the files other jobs read first: Snakemake finds a file's producer by trying the rule's
        # output patterns in order, hundreds of them per source at cluster scale
        out = {"decoded": [f"{root}/{n}/{DECODED}" for n in names]}
        if attack:
            out["decoded_noise"] = [f"{root}/{n}/{DECODED_NOISE}" for n in names]
        out["bitrates"] = [f"{root}/{n}/bitrates.csv" for n in self.codec_settings]
        out["bitstreams"] = [f"{root}/{n}/bitstreams.zip" for n in self.codec_settings]
        out["channel"] = [f"{root}/{n}/channel.csv" for n in self.room_settings]
        out["rooms"] = [f"{root}/{n}/rooms.npz" for n in self.room_settings]
        out["setting"] = [f"{root}/{n}/setting.json" for n in names]
        return {key: paths for key, paths in out.items() if paths}

    def source_settings_json(self) -> str:
        """``--settings`` of a per-source job: every codec and room setting by name, with its kind."""
        return json.dumps(
            {
                "codecs": self.codec_settings,
                "rooms": self.room_settings,
            },
            sort_keys=True,
        )

    def source_runtime(self) -> int:
        """Minutes a per-source job may take: the per-setting jobs' limit for every 10 settings."""
        settings = len(self.codec_settings) + len(self.room_settings)
        return 30 * max(1, -(-settings // 10))

    def codec_targets(self) -> list[str]:
        """The stage's final files that no later rule reads: every room channel table. (Every
        codec job's bitrates.csv, beside its bitstreams, is read by the transfer summary, a final
        file whenever a source goes through the codecs; listing them here too only made Snakemake
        look up each one's producer twice: 87,000 files in the 10x sweep of
        benchmarks/sweep_config.py.)"""
        if not self.codec_attacks:
            return []
        return [
            f"{self.results}/codecs/{dataset}/{source}/{name}/channel.csv"
            for dataset in self.datasets
            for source in self.sources()
            for name in self.room_settings
        ]
