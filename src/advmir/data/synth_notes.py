"""``synth_notes``: a note-level instrument dataset rendered locally from a General MIDI SoundFont.

In the spirit of NSynth (Engel et al., 2017, https://magenta.tensorflow.org/datasets/nsynth):
single notes, held then released, from several General MIDI programs per instrument
family, over a playable pitch range per family and several velocities. The SoundFont is
``TimGM6mb.sf2`` (Tim Brechbill; GPL-2), which ships inside the ``pretty_midi`` wheel, so
rendering needs no network. It is rendered at run time and never committed.

Split modes:

- ``notes``: every program appears in training; valid/test hold (pitch, velocity) pairs
  never seen in training (per family).
- ``instruments``: programs in valid/test never appear in training (as NSynth's splits).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm import tqdm

if TYPE_CHECKING:
    from tinysoundfont import Synth

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Family:
    """One instrument family: GM programs (curated order, most typical first) and a playable range."""

    programs: tuple[int, ...]
    low: int
    high: int


# Programs are ordered so that the first k of each family are distinct, typical members of it
# (k = `programs_per_family`); the ranges are where the family's instruments actually play.
FAMILIES: dict[str, Family] = {
    "keyboard": Family((0, 4, 6, 1, 7, 5, 2, 3), 36, 96),
    "mallet": Family((12, 11, 13, 8, 14, 9, 10, 15), 48, 96),
    "organ": Family((16, 19, 21, 17, 20, 18, 23, 22), 36, 84),
    "guitar": Family((24, 25, 27, 26, 29, 30, 28, 31), 40, 84),
    "bass": Family((33, 32, 34, 38, 35, 36, 37, 39), 28, 60),
    "string": Family((40, 42, 48, 41, 44, 49, 43, 110), 36, 84),
    "brass": Family((56, 57, 60, 58, 61, 59, 62, 63), 36, 76),
    "reed": Family((65, 68, 71, 66, 70, 64, 69, 67), 40, 80),
    "flute": Family((73, 72, 75, 74, 77, 79, 78, 76), 60, 96),
    "synth_lead": Family((81, 80, 87, 84, 86, 82, 83, 90), 40, 84),
    "vocal": Family((52, 53, 85, 54, 91), 48, 79),
}

TASKS = ("family", "program", "pitch", "velocity")


class SoundFontError(RuntimeError):
    """The SoundFont is missing, unreadable, or lacks a program the config asks for."""


@dataclass
class SynthNotesConfig:
    """Settings of the render; mirrors the ``synth_notes`` section of config.yaml."""

    sample_rate: int = 16000
    clip_seconds: float = 1.0
    note_seconds: float = 0.75
    families: list[str] = field(default_factory=lambda: list(FAMILIES))
    programs_per_family: int = 4
    programs: dict[str, list[int]] = field(default_factory=dict)
    pitch_step: int = 1
    velocities: list[int] = field(default_factory=lambda: [50, 80, 110])
    split: str = "notes"
    valid_fraction: float = 0.15
    test_fraction: float = 0.15
    task: str = "family"
    peak: float = 0.9
    seed: int = 0
    soundfont: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.sample_rate <= 0:
            problems.append(f"sample_rate must be positive, got {self.sample_rate}")
        if self.clip_seconds <= 0:
            problems.append(f"clip_seconds must be positive, got {self.clip_seconds}")
        if not 0 < self.note_seconds <= self.clip_seconds:
            problems.append(f"note_seconds must be in (0, clip_seconds], got {self.note_seconds}")
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown:
            problems.append(f"unknown families {unknown}; allowed: {list(FAMILIES)}")
        for fam, progs in self.programs.items():
            if fam not in FAMILIES:
                problems.append(f"programs: unknown family {fam!r}; allowed: {list(FAMILIES)}")
            bad = [p for p in progs if not 0 <= int(p) <= 127]
            if bad:
                problems.append(f"programs[{fam}]: GM programs are 0..127, got {bad}")
        if self.split not in ("notes", "instruments"):
            problems.append(f"split must be 'notes' or 'instruments', got {self.split!r}")
        if self.task not in TASKS:
            problems.append(f"task must be one of {list(TASKS)}, got {self.task!r}")
        if not (0 <= self.valid_fraction < 1 and 0 < self.test_fraction < 1):
            problems.append("valid_fraction and test_fraction must be in [0, 1)")
        if self.valid_fraction + self.test_fraction >= 1:
            problems.append("valid_fraction + test_fraction must leave some training data (< 1)")
        bad_vel = [v for v in self.velocities if not 1 <= v <= 127]
        if bad_vel:
            problems.append(f"velocities must be in 1..127, got {bad_vel}")
        if self.split == "instruments":
            short = [f for f in self.families if len(self.family_programs(f)) < 3]
            if short:
                problems.append(
                    f"split 'instruments' needs >= 3 programs per family (train/valid/test); "
                    f"{short} have fewer"
                )
        if problems:
            raise ValueError("synth_notes config: " + "; ".join(problems))

    def family_programs(self, family: str) -> list[int]:
        """The GM programs rendered for ``family``."""
        if family in self.programs:
            return [int(p) for p in self.programs[family]]
        return list(FAMILIES[family].programs[: self.programs_per_family])


def default_soundfont() -> Path:
    """Path of ``TimGM6mb.sf2`` inside the installed ``pretty_midi`` package."""
    import pretty_midi

    return Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"


def _open_synth(soundfont: Path, sample_rate: int, programs: list[int]) -> tuple[Synth, int]:
    import tinysoundfont

    if not soundfont.is_file():
        raise SoundFontError(
            f"SoundFont not found at {soundfont}. Reinstall pretty_midi (it ships TimGM6mb.sf2) "
            "or set synth_notes.soundfont to a General MIDI .sf2 file."
        )
    synth = tinysoundfont.Synth(samplerate=sample_rate)
    try:
        sfid = synth.sfload(str(soundfont))
    except Exception as exc:  # tinysoundfont raises its own exception type or OSError
        raise SoundFontError(
            f"cannot read SoundFont {soundfont}: {exc}. The file is corrupt or not an sf2/sf3 file; "
            "reinstall pretty_midi or point synth_notes.soundfont at a valid General MIDI SoundFont."
        ) from exc
    missing = [p for p in programs if synth.sfpreset_name(sfid, 0, p) is None]
    if missing:
        raise SoundFontError(f"SoundFont {soundfont} has no preset for GM programs {missing} (bank 0).")
    return synth, sfid


def render_note(
    synth: Synth, sfid: int, program: int, pitch: int, velocity: int, n_samples: int, hold: int
) -> np.ndarray:
    """Render one note from a silent synth: held for ``hold`` samples, then released.

    Returns:
        float32 mono audio, shape (n_samples,).
    """
    synth.program_select(0, sfid, 0, program)
    synth.noteon(0, pitch, velocity)
    head = np.frombuffer(synth.generate(hold), dtype=np.float32)
    synth.noteoff(0, pitch)
    tail = np.frombuffer(synth.generate(n_samples - hold), dtype=np.float32)
    synth.sounds_off()
    synth.generate(256)  # flush the voice so the next note starts from silence
    stereo = np.concatenate([head, tail]).reshape(-1, 2)
    return stereo.mean(axis=1).astype(np.float32)


def plan_notes(cfg: SynthNotesConfig) -> pd.DataFrame:
    """The table of notes to render, with their split: one row per (family, program, pitch, velocity)."""
    rng = np.random.default_rng(cfg.seed)
    rows = []
    for family in cfg.families:
        fam = FAMILIES[family]
        programs = cfg.family_programs(family)
        pitches = list(range(fam.low, fam.high + 1, cfg.pitch_step))
        pairs = [(p, v) for p in pitches for v in cfg.velocities]
        names = ("test", "valid", "train")
        if cfg.split == "notes":  # hold out (pitch, velocity) pairs; every program plays the rest
            n_test = max(1, round(cfg.test_fraction * len(pairs)))
            n_valid = round(cfg.valid_fraction * len(pairs))
            ranks = np.argsort(rng.permutation(len(pairs)))
            pair_split = {
                pair: names[int(r >= n_test) + int(r >= n_test + n_valid)]
                for pair, r in zip(pairs, ranks, strict=True)
            }
            cells = [(prog, pair, pair_split[pair]) for prog in programs for pair in pairs]
        else:  # hold out whole programs: one for test, one for valid, the rest train
            order = [programs[i] for i in rng.permutation(len(programs))]
            prog_split = {prog: names[min(k, 2)] for k, prog in enumerate(order)}
            cells = [(prog, pair, prog_split[prog]) for prog in programs for pair in pairs]
        rows += [
            {"family": family, "program": prog, "pitch": pair[0], "velocity": pair[1], "split": split}
            for prog, pair, split in cells
        ]
    plan = pd.DataFrame(rows)
    plan.insert(
        0,
        "id",
        [
            f"{r.family}-p{r.program:03d}-n{r.pitch:03d}-v{r.velocity:03d}"
            for r in plan.itertuples(index=False)
        ],
    )
    return plan


def render(cfg: SynthNotesConfig) -> tuple[np.ndarray, pd.DataFrame, list[str]]:
    """Render the dataset in memory.

    Returns:
        waveforms: float32, shape (N, clip_samples), peak-normalised per (program, pitch) so that
            velocity still sets the level.
        manifest: id, split, label, label_idx, family, program, program_name, pitch, velocity.
        classes: label names in index order.
    """
    plan = plan_notes(cfg)
    soundfont = Path(cfg.soundfont) if cfg.soundfont else default_soundfont()
    synth, sfid = _open_synth(soundfont, cfg.sample_rate, sorted(set(plan["program"])))
    n = round(cfg.clip_seconds * cfg.sample_rate)
    hold = round(cfg.note_seconds * cfg.sample_rate)
    waveforms = np.zeros((len(plan), n), dtype=np.float32)
    for i, r in enumerate(tqdm(plan.itertuples(index=False), total=len(plan), desc="render", mininterval=2)):
        waveforms[i] = render_note(synth, sfid, r.program, r.pitch, r.velocity, n, hold)
    # The font has a few holes (e.g. no AltoSax sample at MIDI 64): drop silent notes, say which.
    silent = np.abs(waveforms).max(axis=1) < 1e-4
    if silent.any():
        dropped = plan.loc[silent, "id"].tolist()
        log.warning("dropping %d notes the SoundFont renders as silence: %s", len(dropped), dropped)
        mute = sorted(set(plan["program"]) - set(plan.loc[~silent, "program"]))
        if mute:
            raise SoundFontError(f"programs {mute} render only silence; choose other programs.")
        waveforms = waveforms[~silent]
        plan = plan[~silent].reset_index(drop=True)
    # One gain per (program, pitch): the loudest velocity peaks at cfg.peak, the others keep their level.
    for rows in plan.groupby(["program", "pitch"]).indices.values():
        waveforms[rows] *= cfg.peak / float(np.abs(waveforms[rows]).max())
    names = {p: synth.sfpreset_name(sfid, 0, p) for p in set(plan["program"])}
    plan["program_name"] = plan["program"].map(names)
    classes = _classes(cfg, plan)
    plan["label"] = plan[cfg.task].astype(str)
    plan["label_idx"] = plan["label"].map({c: i for i, c in enumerate(classes)})
    cols = ["id", "split", "label", "label_idx", "family", "program", "program_name", "pitch", "velocity"]
    return waveforms, plan[cols], classes


def _classes(cfg: SynthNotesConfig, plan: pd.DataFrame) -> list[str]:
    if cfg.task == "family":
        return list(cfg.families)
    return [str(v) for v in sorted(set(plan[cfg.task]))]


def render_to(out_dir: str | os.PathLike, cfg: SynthNotesConfig) -> Path:
    """Render and write the dataset folder in the data contract, atomically."""
    from advmir.data.contract import write_dataset

    waveforms, manifest, classes = render(cfg)
    counts = manifest["split"].value_counts().to_dict()
    log.info("rendered %d notes (%s) of %d classes", len(manifest), counts, len(classes))
    return write_dataset(
        out_dir,
        waveforms,
        manifest,
        classes,
        cfg.sample_rate,
        dataset="synth_notes",
        task=cfg.task,
        split_mode=cfg.split,
        soundfont=(Path(cfg.soundfont).name if cfg.soundfont else "TimGM6mb.sf2"),
        licence="rendered from TimGM6mb.sf2 (GPL-2, Tim Brechbill); see README",
    )
