"""Run a tracker over clips and score its pitch tracks and transcriptions against references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from advmir.pitch.trackers import PitchTracker
from advmir.pitch.transcribe import Transcriber, score_clip


@torch.no_grad()
def track_clips(
    tracker: PitchTracker, clips: np.ndarray, decoder: str, batch_size: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Pitch (N, F) MIDI float64 and voicing confidence (N, F) of clips (N, T) in [-1, 1], in batches."""
    midis, confs = [], []
    for i in range(0, len(clips), batch_size):
        x = torch.from_numpy(np.array(clips[i : i + batch_size], dtype=np.float32))
        activations, confidence = tracker.track(x)
        midis.append(tracker.decode(activations, decoder).numpy())
        confs.append(confidence.double().numpy())
    return np.concatenate(midis), np.concatenate(confs)


def score_clips(
    ids: list[str],
    ref_f0: np.ndarray,
    ref_notes: pd.DataFrame,
    midi: np.ndarray,
    confidence: np.ndarray,
    transcriber: Transcriber,
) -> pd.DataFrame:
    """One row per clip: ``id`` and every score of :func:`advmir.pitch.transcribe.score_clip`.

    Args:
        ids: clip ids (N,), keys of ``ref_notes["id"]``.
        ref_f0: reference f0 (N, F) in Hz, 0 where unvoiced.
        ref_notes: reference notes of every clip (``id, onset, offset, midi``).
        midi, confidence: the tracker's pitch and confidence (N, F).
    """
    by_id = dict(tuple(ref_notes.groupby("id", sort=False)))
    rows = []
    for i, cid in enumerate(ids):
        notes = by_id.get(cid, ref_notes.iloc[:0])
        rows.append({"id": cid, **score_clip(ref_f0[i], notes, midi[i], confidence[i], transcriber)})
    return pd.DataFrame(rows)
