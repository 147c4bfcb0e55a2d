"""The jobs of the pitch stage, derived from the validated config (used by workflow/rules/pitch.smk).

One clean job per tracker (``track_pitch``), one attack job per (tracker, attack) (``attack_pitch``),
then the table and the figure. Built once when the workflow starts; it refuses what the schema
cannot relate (a decoder a tracker does not have, an attack spec PGD or the stage refuses) before
any job runs, naming the key.
"""

from __future__ import annotations

import json
from typing import Any

from advmir.errors import InputError

DATASET = "synth_melodies"
FIGURE = "pitch_rpa_vs_snr"


class PitchConfigError(InputError, ValueError):
    """The pitch section of the config is inconsistent."""


class PitchPlan:
    """Jobs, paths and parameters of the pitch stage.

    Args:
        pitch: the validated ``pitch`` section.
        results: the results folder.
    """

    def __init__(self, pitch: dict[str, Any], results: str) -> None:
        from advmir.pitch.stage import PitchAttackSpec
        from advmir.pitch.trackers import DECODERS, TRACKERS

        self.enabled = bool(pitch["enabled"])
        self.results = results
        self.trackers: dict[str, dict[str, Any]] = dict(pitch["trackers"])
        self.attacks: dict[str, dict[str, Any]] = dict(pitch["attacks"])
        self.transcription = dict(pitch["transcription"])
        self.eval_size = pitch["eval_size"]
        self.attack_size = pitch["attack_size"]
        self.batch_size = int(pitch["batch_size"])
        self.threads = int(pitch["threads"])
        problems = []
        for name, spec in self.trackers.items():
            if name not in TRACKERS:
                problems.append(f"pitch.trackers.{name}: unknown tracker; allowed: {list(TRACKERS)}")
                continue
            family = TRACKERS[name][0]
            if spec["decoder"] not in DECODERS[family]:
                problems.append(
                    f"pitch.trackers.{name}.decoder: {spec['decoder']!r} is not a decoder of {family}; "
                    f"allowed: {list(DECODERS[family])}"
                )
        for name, spec in self.attacks.items():
            try:
                PitchAttackSpec(**spec)
            except (InputError, TypeError) as exc:
                problems.append(f"pitch.attacks.{name}: {exc}")
        if problems:
            raise PitchConfigError("; ".join(problems))

    def folder(self, tracker: str, attack: str) -> str:
        return f"{self.results}/pitch/{DATASET}/{tracker}/{attack}"

    def score_files(self) -> list[str]:
        """Every job's scores.csv (clean and attacks)."""
        files = [f"{self.folder(t, 'clean')}/scores.csv" for t in self.trackers]
        files += [f"{self.folder(t, a)}/scores.csv" for t in self.trackers for a in self.attacks]
        return files

    def table(self) -> str:
        return f"{self.results}/tables/pitch.csv"

    def figures(self) -> list[str]:
        return [f"{self.results}/figures/{FIGURE}.{ext}" for ext in ("png", "pdf")]

    def targets(self) -> list[str]:
        """What rule all needs from this stage: nothing when it is off."""
        if not self.enabled:
            return []
        return [self.table(), *self.figures()]

    def tracker_json(self, tracker: str) -> str:
        return json.dumps(self.trackers[tracker], sort_keys=True)

    def attack_json(self, attack: str) -> str:
        return json.dumps(self.attacks[attack], sort_keys=True)

    def transcription_json(self) -> str:
        return json.dumps(self.transcription, sort_keys=True)

    def constraint(self, names: list[str] | dict) -> str:
        """A wildcard constraint matching exactly these names."""
        return "|".join(sorted(names)) or "^$"
