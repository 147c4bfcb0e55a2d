"""``synth_melodies``: monophonic phrases with note and frame-level pitch annotations, rendered locally.

For the pitch stage (:mod:`advmir.pitch`): seeded phrases of a few seconds (notes of 150-600 ms,
legato or detached) played by voice programs (choir aahs, voice oohs, synth voice) and a few
sustained wind and string programs of a General MIDI SoundFont, through the same renderer as
:mod:`advmir.datasets.synth_notes` (tinysoundfont, the fonts of :mod:`advmir.datasets.soundfonts`).
No network; the audio is rendered at run time and never committed.

Ground truth, in the data contract's folder beside the three contract files (readers of the
contract ignore them; :func:`load_annotations` reads them):

- ``notes.csv``: one row per note: ``id`` (the phrase's manifest id), ``note`` (index in the
  phrase), ``onset`` and ``offset`` (seconds, the note-on and note-off times), ``midi`` (int).
- ``frames.csv``: one row per phrase and 10 ms frame: ``id``, ``frame``, ``time`` (seconds, frame
  f at 0.01 f, centred as the trackers' frames are), ``f0_hz`` (0 where unvoiced) and ``voiced``
  (0/1), derived from the notes by :func:`frame_reference`: a frame is voiced when its time lies in
  [onset, offset) of a note, with that note's equal-tempered frequency. The release tail after a
  note-off is unvoiced in the reference (a tracker that follows it counts a voicing false alarm).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from advmir.datasets.contract import DatasetError, write_dataset
from advmir.datasets.soundfonts import font_name, licence_note
from advmir.datasets.synth_notes import _open_synth

log = logging.getLogger(__name__)

HOP_SECONDS = 0.01
ARTICULATIONS = ("legato", "detached")


@dataclass(frozen=True)
class Program:
    """A GM program (0-based), its family, and the MIDI range where it sounds comfortable."""

    program: int
    family: str
    low: int
    high: int


#: the default programs: voices first (the trackers' domain, PESTO's training set is singing)
PROGRAMS: dict[str, Program] = {
    "choir_aahs": Program(52, "voice", 50, 74),
    "voice_oohs": Program(53, "voice", 50, 74),
    "synth_voice": Program(54, "voice", 50, 74),
    "flute": Program(73, "wind", 62, 88),
    "clarinet": Program(71, "wind", 52, 80),
    "oboe": Program(68, "wind", 60, 84),
    "violin": Program(40, "string", 57, 86),
    "cello": Program(42, "string", 38, 64),
}
FAMILIES = ("voice", "wind", "string")


@dataclass
class SynthMelodiesConfig:
    """Settings of the render; mirrors the ``synth_melodies`` section of config.yaml."""

    sample_rate: int = 16000
    clip_seconds: float = 4.0
    phrase_seconds: list[float] = field(default_factory=lambda: [2.0, 4.0])
    note_seconds: list[float] = field(default_factory=lambda: [0.15, 0.6])
    phrases_per_program: int = 12
    programs: list[str] = field(default_factory=lambda: list(PROGRAMS))
    soundfont: str = "TimGM6mb"
    velocity: int = 100
    max_interval: int = 5
    peak: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        unknown = [p for p in self.programs if p not in PROGRAMS]
        if unknown:
            problems.append(f"programs: unknown {unknown}; allowed: {list(PROGRAMS)}")
        lo, hi = self.phrase_seconds
        if not 0 < lo <= hi <= self.clip_seconds:
            problems.append(
                f"phrase_seconds must satisfy 0 < min <= max <= clip_seconds, got {self.phrase_seconds}"
            )
        n_lo, n_hi = self.note_seconds
        if not 0.05 <= n_lo <= n_hi <= lo:
            problems.append(
                f"note_seconds must satisfy 0.05 <= min <= max <= phrase min, got {self.note_seconds}"
            )
        if self.phrases_per_program < 1:
            problems.append(f"phrases_per_program must be >= 1, got {self.phrases_per_program}")
        if problems:
            raise DatasetError("synth_melodies config: " + "; ".join(problems))


def plan_phrases(cfg: SynthMelodiesConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The phrases and their notes, seeded: (phrases, notes) tables (see the module docstring)."""
    rng = np.random.default_rng(cfg.seed)
    phrases, notes = [], []
    for name in cfg.programs:
        prog = PROGRAMS[name]
        for k in range(cfg.phrases_per_program):
            pid = f"{name}-{k:03d}"
            articulation = ARTICULATIONS[k % 2]
            length = rng.uniform(*cfg.phrase_seconds)
            t, pitch, i = 0.0, int(rng.integers(prog.low + 3, prog.high - 2)), 0
            while True:
                dur = rng.uniform(*cfg.note_seconds)
                if t + dur > length:
                    break
                sounding = dur if articulation == "legato" else dur * rng.uniform(0.55, 0.8)
                notes.append({"id": pid, "note": i, "onset": t, "offset": t + sounding, "midi": pitch})
                t += dur
                i += 1
                step = int(rng.integers(-cfg.max_interval, cfg.max_interval + 1))
                pitch = int(np.clip(pitch + (step or 2), prog.low, prog.high))
            phrases.append(
                {
                    "id": pid,
                    "split": "test",
                    "family": prog.family,
                    "program": prog.program,
                    "program_key": name,
                    "articulation": articulation,
                    "n_notes": i,
                    "phrase_seconds": round(t, 4),
                }
            )
    notes_df = pd.DataFrame(notes)
    notes_df[["onset", "offset"]] = notes_df[["onset", "offset"]].round(4)
    return pd.DataFrame(phrases), notes_df


def frame_reference(notes: pd.DataFrame, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """f0 (Hz, 0 where unvoiced) and voicing (bool) per 10 ms frame of one phrase, from its notes.

    Args:
        notes: rows of one phrase with ``onset``, ``offset`` (s) and ``midi``.
        n_frames: frames F of the clip (1 + samples // hop).

    Returns:
        f0 (F,) float64 and voiced (F,) bool.
    """
    times = np.arange(n_frames) * HOP_SECONDS
    f0 = np.zeros(n_frames)
    for r in notes.itertuples(index=False):
        inside = (times >= r.onset - 1e-9) & (times < r.offset - 1e-9)
        f0[inside] = 440.0 * 2.0 ** ((r.midi - 69) / 12.0)
    return f0, f0 > 0


def render_phrase(
    synth: object, sfid: int, program: int, notes: pd.DataFrame, cfg: SynthMelodiesConfig
) -> np.ndarray:
    """One phrase from a silent synth: note-on and note-off at the notes' sample times, mono float32 (T,)."""
    sr = cfg.sample_rate
    n = round(cfg.clip_seconds * sr)
    synth.program_select(0, sfid, 0, program)
    events = []
    for r in notes.itertuples(index=False):
        events.append((round(r.offset * sr), 0, r.midi))  # note-offs first at a shared time: legato
        events.append((round(r.onset * sr), 1, r.midi))
    chunks, now = [], 0
    for at, is_on, midi in sorted(events):
        if at > now:
            chunks.append(np.frombuffer(synth.generate(at - now), dtype=np.float32))
            now = at
        if is_on:
            synth.noteon(0, int(midi), cfg.velocity)
        else:
            synth.noteoff(0, int(midi))
    chunks.append(np.frombuffer(synth.generate(n - now), dtype=np.float32))
    synth.sounds_off()
    synth.generate(256)
    return np.concatenate(chunks).reshape(-1, 2).mean(axis=1).astype(np.float32)[:n]


def render(cfg: SynthMelodiesConfig) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Render every phrase: waveforms (N, T) float32 peak-normalised, manifest, notes, frames."""
    phrases, notes = plan_phrases(cfg)
    synth, sfid = _open_synth(cfg.soundfont, cfg.sample_rate)
    n = round(cfg.clip_seconds * cfg.sample_rate)
    waveforms = np.zeros((len(phrases), n), dtype=np.float32)
    by_phrase = dict(tuple(notes.groupby("id", sort=False)))
    names = {}
    for i, r in enumerate(phrases.itertuples(index=False)):
        names[r.program] = synth.sfpreset_name(sfid, 0, int(r.program))
        audio = render_phrase(synth, sfid, int(r.program), by_phrase[r.id], cfg)
        peak = float(np.abs(audio).max())
        if peak < 1e-4:
            raise DatasetError(f"synth_melodies: {cfg.soundfont} renders program {r.program} as silence")
        waveforms[i] = audio * (cfg.peak / peak)
    phrases["program_name"] = phrases["program"].map(names)
    phrases["soundfont"] = font_name(cfg.soundfont)
    phrases["label"] = phrases["family"]
    classes = [f for f in FAMILIES if f in set(phrases["family"])]
    phrases["label_idx"] = phrases["label"].map({c: i for i, c in enumerate(classes)})
    n_frames = 1 + n // round(HOP_SECONDS * cfg.sample_rate)
    frame_rows = []
    for pid in phrases["id"]:
        f0, voiced = frame_reference(by_phrase[pid], n_frames)
        frame_rows.append(
            pd.DataFrame(
                {
                    "id": pid,
                    "frame": np.arange(n_frames),
                    "time": np.round(np.arange(n_frames) * HOP_SECONDS, 4),
                    "f0_hz": np.round(f0, 4),
                    "voiced": voiced.astype(int),
                }
            )
        )
    cols = ["id", "split", "label", "label_idx", "family", "program", "program_key", "program_name"]
    manifest = phrases[[*cols, "soundfont", "articulation", "n_notes", "phrase_seconds"]]
    return waveforms, manifest, notes, pd.concat(frame_rows, ignore_index=True)


def render_to(out_dir: str | os.PathLike, cfg: SynthMelodiesConfig) -> Path:
    """Render and write the dataset folder (contract files + notes.csv + frames.csv), atomically."""
    waveforms, manifest, notes, frames = render(cfg)
    log.info("rendered %d phrases, %d notes", len(manifest), len(notes))
    classes = [f for f in FAMILIES if f in set(manifest["family"])]
    font = cfg.soundfont
    return write_dataset(
        out_dir,
        waveforms,
        manifest,
        classes,
        cfg.sample_rate,
        extra_tables={"notes.csv": notes, "frames.csv": frames},
        dataset="synth_melodies",
        task="family",
        hop_seconds=HOP_SECONDS,
        annotations={"notes": "notes.csv", "frames": "frames.csv"},
        soundfonts=[font_name(font)],
        licence=licence_note(font),
    )


def load_annotations(root: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The notes and frames tables of a rendered ``synth_melodies`` folder (checked columns)."""
    from advmir.artifacts import read_csv

    root = Path(root)
    notes = read_csv(root / "notes.csv", columns=("id", "note", "onset", "offset", "midi"))
    frames = read_csv(root / "frames.csv", columns=("id", "frame", "time", "f0_hz", "voiced"))
    return notes, frames
