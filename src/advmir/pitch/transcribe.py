"""Frames -> notes, and the scores of ``mir_eval`` (frame level and note level).

A tracker gives a pitch (MIDI, fractional) and a voicing confidence per 10 ms frame. A frame is
voiced when its confidence reaches the tracker's threshold. Notes: the voiced pitch track is median
filtered (``median_frames``), rounded to semitones, and cut into runs of one semitone; runs shorter
than ``min_note_seconds`` are dropped (a glitch between two notes is not a note). Each note's pitch
is the median of its frames' fractional pitch.

Scores (Salamon et al. 2014 for melody, Raffel et al. 2014 for ``mir_eval``):

- frame level, ``mir_eval.melody`` on the 10 ms grid: raw pitch accuracy and raw chroma accuracy
  (within 50 cents, over reference-voiced frames, whatever the estimated voicing), voicing recall
  and voicing false alarm, overall accuracy;
- note level, ``mir_eval.transcription``: onset F-measure (onset within 50 ms, pitch within 50
  cents) and onset-offset F-measure (offset within 20% of the note or 50 ms).
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.ndimage import median_filter

HOP_SECONDS = 0.01


@dataclass(frozen=True)
class Transcriber:
    """Settings of frames -> notes.

    Args:
        threshold: voicing confidence at which a frame counts as voiced, in [0, 1].
        median_frames: odd length of the median filter on the voiced pitch track (1: none).
        min_note_seconds: shortest note kept.
    """

    threshold: float = 0.5
    median_frames: int = 5
    min_note_seconds: float = 0.05

    def voiced(self, confidence: np.ndarray) -> np.ndarray:
        """bool (F,) per frame of confidence (F,)."""
        return np.asarray(confidence) >= self.threshold

    def notes(self, midi: np.ndarray, confidence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Notes of one clip from its pitch (F,) MIDI and confidence (F,).

        Returns:
            intervals (n, 2) seconds [onset, offset) and pitches (n,) MIDI (fractional).
        """
        voiced = self.voiced(confidence)
        smooth = np.asarray(midi, dtype=np.float64).copy()
        if self.median_frames > 1:
            smooth = median_filter(smooth, size=self.median_frames, mode="nearest")
        semis = np.where(voiced, np.round(smooth), -1).astype(np.int64)
        change = np.flatnonzero(np.diff(np.concatenate([[-1], semis, [-1]])) != 0)
        intervals, pitches = [], []
        for start, end in itertools.pairwise(change):
            if semis[start] < 0 or (end - start) * HOP_SECONDS < self.min_note_seconds:
                continue
            intervals.append((start * HOP_SECONDS, end * HOP_SECONDS))
            pitches.append(float(np.median(np.asarray(midi)[start:end])))
        return np.asarray(intervals, dtype=np.float64).reshape(-1, 2), np.asarray(pitches)


def _hz(midi: np.ndarray) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def melody_scores(ref_f0: np.ndarray, est_midi: np.ndarray, est_voiced: np.ndarray) -> dict[str, float]:
    """``mir_eval.melody`` scores of one clip on the 10 ms grid.

    Args:
        ref_f0: reference f0 in Hz (F,), 0 where unvoiced.
        est_midi: estimated pitch (F,) MIDI (a pitch on every frame).
        est_voiced: estimated voicing (F,) bool (an unvoiced frame keeps its pitch guess, as
            ``mir_eval`` reads a negative frequency, so raw pitch accuracy ignores voicing).

    Returns:
        raw_pitch_accuracy, raw_chroma_accuracy, voicing_recall, voicing_false_alarm, overall_accuracy.
    """
    import mir_eval

    ref_f0 = np.asarray(ref_f0, dtype=np.float64)
    est = _hz(est_midi) * np.where(est_voiced, 1.0, -1.0)
    ref_v, ref_c, est_v, est_c = mir_eval.melody.to_cent_voicing(
        np.arange(len(ref_f0)) * HOP_SECONDS, ref_f0, np.arange(len(est)) * HOP_SECONDS, est
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vr, vfa = mir_eval.melody.voicing_measures(ref_v, est_v)
        return {
            "raw_pitch_accuracy": float(mir_eval.melody.raw_pitch_accuracy(ref_v, ref_c, est_v, est_c)),
            "raw_chroma_accuracy": float(mir_eval.melody.raw_chroma_accuracy(ref_v, ref_c, est_v, est_c)),
            "voicing_recall": float(vr),
            "voicing_false_alarm": float(vfa),
            "overall_accuracy": float(mir_eval.melody.overall_accuracy(ref_v, ref_c, est_v, est_c)),
        }


def note_scores(
    ref_intervals: np.ndarray, ref_midi: np.ndarray, est_intervals: np.ndarray, est_midi: np.ndarray
) -> dict[str, float]:
    """``mir_eval.transcription`` F-measures of one clip: onset (50 ms, 50 cents) and onset-offset."""
    import mir_eval

    if len(est_intervals) == 0 or len(ref_intervals) == 0:
        return {"note_onset_f": 0.0, "note_onset_offset_f": 0.0}
    args = (np.asarray(ref_intervals), _hz(ref_midi), np.asarray(est_intervals), _hz(est_midi))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        on = mir_eval.transcription.precision_recall_f1_overlap(*args, offset_ratio=None)[2]
        onoff = mir_eval.transcription.precision_recall_f1_overlap(*args, offset_ratio=0.2)[2]
    return {"note_onset_f": float(on), "note_onset_offset_f": float(onoff)}


def score_clip(
    ref_f0: np.ndarray,
    ref_notes: pd.DataFrame,
    est_midi: np.ndarray,
    confidence: np.ndarray,
    transcriber: Transcriber,
) -> dict[str, float]:
    """Every frame and note score of one clip against a reference (f0 (F,) Hz; notes with
    ``onset, offset, midi``): see :func:`melody_scores` and :func:`note_scores`."""
    scores = melody_scores(ref_f0, est_midi, transcriber.voiced(confidence))
    intervals, pitches = transcriber.notes(est_midi, confidence)
    ref_int = ref_notes[["onset", "offset"]].to_numpy(dtype=np.float64)
    scores.update(note_scores(ref_int, ref_notes["midi"].to_numpy(), intervals, pitches))
    scores["n_notes_estimated"] = float(len(pitches))
    return scores
