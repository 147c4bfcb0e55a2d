"""The pitch stage's jobs: clean tracking of ``synth_melodies`` and task attacks, scored by ``mir_eval``.

- :func:`clean_scores`: one row per phrase with every score of the tracker against the reference.
- :func:`attack_scores`: for one tracker and one attack setting (a goal and its budgets), the seeded
  attack subset is attacked at each SNR budget with :class:`advmir.pitch.attack.PitchPGD`; each
  adversarial phrase and its matched-noise control (:func:`advmir.attacks.controls.matched_noise`:
  white noise of the same L2 norm on the same phrase) are tracked, transcribed and scored against
  the reference (did the tracker stop hearing the melody?) and, for targeted goals, against the
  target (did it hear the target?).

Goals (``PitchAttackSpec.goal``): ``untargeted``; ``shift`` (the melody transposed by
``semitones``); ``melody`` (the melody of the next attacked phrase of the same program, or of the
next attacked phrase when its program has no other: its notes and its silences). A phrase whose
target leaves the tracker's range is not attacked and is named in the log with the range; a goal
that leaves it for every phrase is refused.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from advmir.attacks.controls import matched_noise
from advmir.datasets.contract import Dataset, evaluation_rows
from advmir.errors import InputError
from advmir.pitch.attack import PitchPGD
from advmir.pitch.evaluate import score_clips, track_clips
from advmir.pitch.trackers import PitchTracker, hz_to_midi
from advmir.pitch.transcribe import Transcriber

log = logging.getLogger(__name__)

GOALS = ("untargeted", "shift", "melody")


@dataclass(frozen=True)
class PitchAttackSpec:
    """One attack setting of ``pitch.attacks``: a goal, its SNR budgets and PGD's settings."""

    goal: str
    budgets_db: list[float]
    semitones: int = 0
    steps: int = 50
    norm: str = "linf"
    success_fraction: float = 0.95
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.goal not in GOALS:
            raise InputError(f"pitch.attacks: goal {self.goal!r} is not one of {list(GOALS)}")
        if self.goal == "shift" and self.semitones == 0:
            raise InputError("pitch.attacks: goal 'shift' needs semitones != 0")


@dataclass
class Reference:
    """Reference of N phrases: ids (N,), f0 (N, F) Hz (0: unvoiced), notes table, rows in the dataset."""

    ids: list[str]
    f0: np.ndarray
    notes: pd.DataFrame
    rows: np.ndarray


def reference(dataset: Dataset, notes: pd.DataFrame, frames: pd.DataFrame, rows: np.ndarray) -> Reference:
    """The references of dataset ``rows`` (sorted) from the annotations (see synth_melodies)."""
    ids = dataset.manifest["id"].to_numpy()[rows].tolist()
    n_frames = int(frames["frame"].max()) + 1
    f0 = frames.set_index(["id", "frame"])["f0_hz"].unstack().loc[ids].to_numpy(dtype=np.float64)
    if f0.shape[1] != n_frames:
        raise InputError(f"frames.csv: phrases have unequal frame counts ({f0.shape[1]} != {n_frames})")
    return Reference(ids, f0, notes[notes["id"].isin(ids)], np.asarray(rows))


def target_of(
    spec: PitchAttackSpec, ref: Reference, manifest: pd.DataFrame, tracker: PitchTracker
) -> Reference:
    """The target melody of every phrase for a targeted goal (f0 and notes), checked against the
    tracker's range; the reference itself for ``untargeted``."""
    if spec.goal == "untargeted":
        return ref
    if spec.goal == "shift":
        f0 = ref.f0 * 2.0 ** (spec.semitones / 12.0)
        notes = ref.notes.assign(midi=ref.notes["midi"] + spec.semitones)
    else:  # the next phrase of the same program (cyclic) in the attacked subset
        keys = manifest.set_index("id").loc[ref.ids, "program_key"].to_numpy()
        order = np.arange(len(ref.ids))
        partner = order.copy()
        for key in set(keys):
            members = order[keys == key]
            # the next phrase of the same program; a program alone in the subset takes the next phrase
            partner[members] = np.roll(members, -1) if len(members) > 1 else (members + 1) % len(order)
        f0 = ref.f0[partner]
        by_id = dict(tuple(ref.notes.groupby("id", sort=False)))
        notes = pd.concat(
            [by_id[ref.ids[p]].assign(id=cid) for cid, p in zip(ref.ids, partner, strict=True)],
            ignore_index=True,
        )
    return Reference(ref.ids, f0, notes, ref.rows)


def in_range(spec: PitchAttackSpec, target: Reference, tracker: PitchTracker) -> np.ndarray:
    """bool (N,): the phrase's target melody lies within the tracker's pitch range. Phrases outside
    are left out of the attack and named in the log with the range; none inside is an error."""
    lo, hi = tracker.midi_range
    keep = np.ones(len(target.ids), dtype=bool)
    for i, f0 in enumerate(target.f0):
        midi = hz_to_midi(f0[f0 > 0])
        if len(midi) and (midi.min() < lo or midi.max() > hi):
            keep[i] = False
            log.warning(
                "%s: target melody reaches MIDI %.1f-%.1f, outside the tracker's range %.1f-%.1f "
                "(goal %s, semitones %s): not attacked",
                target.ids[i], midi.min(), midi.max(), lo, hi, spec.goal, spec.semitones,
            )  # fmt: skip
    if not keep.any():
        raise InputError(
            f"pitch.attacks: every target melody lies outside the tracker's range {lo:.1f}-{hi:.1f} (MIDI; "
            f"goal {spec.goal}, semitones {spec.semitones})"
        )
    return keep


def subset(ref: Reference, keep: np.ndarray) -> Reference:
    """The phrases of ``ref`` where ``keep`` (N,) is True."""
    ids = [i for i, k in zip(ref.ids, keep, strict=True) if k]
    return Reference(ids, ref.f0[keep], ref.notes[ref.notes["id"].isin(ids)], ref.rows[keep])


def goals(
    spec: PitchAttackSpec, ref: Reference, target: Reference, tracker: PitchTracker
) -> tuple[torch.Tensor, torch.Tensor]:
    """Goal bins (N, F) int64 (-1: unvoiced wanted) and the frames that count (N, F) bool."""
    goal_f0 = ref.f0 if spec.goal == "untargeted" else target.f0
    voiced = goal_f0 > 0
    midi = np.where(voiced, hz_to_midi(np.where(voiced, goal_f0, 440.0)), 0.0)
    bins = tracker.midi_to_bin(torch.from_numpy(midi))
    bins = torch.where(torch.from_numpy(voiced), bins, torch.full_like(bins, -1))
    mask = ref.f0 > 0
    if spec.goal == "melody":
        mask = mask | voiced
    return bins, torch.from_numpy(mask)


def clean_scores(
    tracker: PitchTracker,
    clips: np.ndarray,
    ref: Reference,
    decoder: str,
    transcriber: Transcriber,
    batch_size: int,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Scores of the clean phrases (one row per phrase), their pitch (N, F) and confidence (N, F)."""
    midi, conf = track_clips(tracker, clips, decoder, batch_size)
    return score_clips(ref.ids, ref.f0, ref.notes, midi, conf, transcriber), midi, conf


def attack_scores(
    tracker: PitchTracker,
    dataset: Dataset,
    ref: Reference,
    spec: PitchAttackSpec,
    decoder: str,
    transcriber: Transcriber,
    window: int,
    batch_size: int,
    seed: int,
) -> tuple[pd.DataFrame, dict[float, np.ndarray]]:
    """Attack ``ref``'s phrases at every budget of ``spec``; score them and their matched noise.

    Returns:
        rows: one per (budget, phrase, condition ``adversarial`` | ``noise``): the scores against the
            reference, ``target_*`` scores against the target (targeted goals), snr_db, iterations,
            seconds, and ``frames_on_goal`` (the attack's own per-frame success share).
        adversarial: budget -> adversarial phrases (n, T) float32.
    """
    target = target_of(spec, ref, dataset.manifest, tracker)
    keep = in_range(spec, target, tracker)
    ref, target = subset(ref, keep), subset(target, keep)
    bins, mask = goals(spec, ref, target, tracker)
    clips = dataset.float_waveforms(ref.rows)
    x = torch.from_numpy(np.array(clips))
    idx = torch.arange(len(ref.ids))
    rows, adversarial = [], {}
    for budget in spec.budgets_db:
        attack = PitchPGD(
            tracker,
            goal="untargeted" if spec.goal == "untargeted" else "targeted",
            goal_bins=bins,
            goal_mask=mask,
            window=window,
            threshold=transcriber.threshold,
            success_fraction=spec.success_fraction,
            norm=spec.norm,
            snr_db=float(budget),
            steps=spec.steps,
            batch_size=batch_size,
            seed=seed,
            **spec.params,
        )
        t0 = time.perf_counter()
        result = attack(x, idx)
        log.info("budget %s dB: %d phrases in %.0f s", budget, len(idx), time.perf_counter() - t0)
        noise = matched_noise(x, result.x_adv, ref.rows, seed)
        adversarial[float(budget)] = result.x_adv.numpy()
        for condition, audio in (("adversarial", result.x_adv), ("noise", noise)):
            table = _scored(tracker, audio.numpy(), ref, target, spec, decoder, transcriber, batch_size)
            with torch.no_grad():
                share = torch.cat(
                    [attack._frames_on_goal(tracker(audio[i : i + batch_size]), idx[i : i + batch_size])
                     for i in range(0, len(idx), batch_size)]
                )  # fmt: skip
            snr = 10 * np.log10(
                (x.double() ** 2).sum(1) / ((audio.double() - x.double()) ** 2).sum(1).clamp_min(1e-30)
            )
            table.insert(1, "condition", condition)
            table.insert(1, "budget_db", float(budget))
            table["frames_on_goal"] = share.numpy()
            table["snr_db"] = snr.numpy()
            table["iterations"] = result.iterations.numpy()
            table["seconds"] = result.seconds.numpy()
            rows.append(table)
    return pd.concat(rows, ignore_index=True), adversarial


def _scored(
    tracker: PitchTracker,
    audio: np.ndarray,
    ref: Reference,
    target: Reference,
    spec: PitchAttackSpec,
    decoder: str,
    transcriber: Transcriber,
    batch_size: int,
) -> pd.DataFrame:
    midi, conf = track_clips(tracker, audio, decoder, batch_size)
    table = score_clips(ref.ids, ref.f0, ref.notes, midi, conf, transcriber)
    if spec.goal != "untargeted":
        on_target = score_clips(ref.ids, target.f0, target.notes, midi, conf, transcriber)
        keep = [
            "raw_pitch_accuracy",
            "voicing_recall",
            "voicing_false_alarm",
            "note_onset_f",
            "note_onset_offset_f",
        ]
        table = table.join(on_target[keep].add_prefix("target_"))
    return table


def attack_subset(dataset: Dataset, size: int | None, seed: int) -> np.ndarray:
    """The seeded, nested subset of test phrases attacked (:func:`evaluation_rows`)."""
    return evaluation_rows(dataset.split_indices("test"), size, seed)
