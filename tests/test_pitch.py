"""The pitch stage: differentiable trackers against their libraries, transcription, task attacks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from advmir.pitch.trackers import SAMPLE_RATE, UnknownTrackerError, build_tracker
from advmir.pitch.transcribe import Transcriber, melody_scores, note_scores

torch.set_num_threads(1)


def _melody(seconds: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Two harmonic tones with a little noise, then silence: (2, T) in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    clips = []
    for f0 in (220.0, 311.1):
        f = torch.where(t < seconds / 2, torch.tensor(f0), torch.tensor(f0 * 2 ** (3 / 12)))
        phase = 2 * torch.pi * torch.cumsum(f, 0) / SAMPLE_RATE
        x = sum(0.3 / k * torch.sin(k * phase) for k in (1, 2, 3))
        x = x * (t < 0.85 * seconds) + 0.003 * torch.randn(t.shape, generator=gen)
        clips.append(x)
    return torch.stack(clips).clamp(-1, 1).float()


@pytest.mark.parametrize("name", ["crepe_tiny", "crepe_full"])
def test_crepe_wrapper_matches_torchcrepe_predict(name):
    import torchcrepe

    tracker = build_tracker(name)
    x = _melody(0.6)
    with torch.no_grad():
        ours = tracker(x).argmax(-1)
    for row in range(x.shape[0]):
        captured = []

        def decoder(probabilities, captured=captured):
            bins, pitch = torchcrepe.decode.argmax(probabilities)
            captured.append(bins)
            return bins, pitch

        torchcrepe.predict(x[row : row + 1], SAMPLE_RATE, 160, model=tracker.capacity, decoder=decoder)
        theirs = torch.cat(captured, dim=-1).reshape(-1)
        assert theirs.shape == ours[row].shape
        assert (theirs == ours[row]).float().mean() >= 0.999


def test_pesto_wrapper_matches_pesto_predict():
    import pesto

    tracker = build_tracker("pesto")
    x = _melody(0.6)
    with torch.no_grad():
        ours, confidence = tracker.track(x)
    _, _, their_conf, theirs = pesto.predict(x, SAMPLE_RATE, step_size=10.0, convert_to_freq=False)
    assert theirs.shape == ours.shape
    assert (theirs.argmax(-1) == ours.argmax(-1)).float().mean() >= 0.999
    torch.testing.assert_close(confidence, their_conf)


@pytest.mark.parametrize("name", ["crepe_tiny", "pesto"])
def test_tracker_gradient_reaches_the_waveform(name):
    tracker = build_tracker(name)
    for p in tracker.parameters():
        p.requires_grad_(False)
    x = _melody(0.3).requires_grad_(True)
    activations = tracker(x)
    assert activations.shape[:2] == (2, tracker.n_frames(x.shape[1]))
    (grad,) = torch.autograd.grad(activations.amax(-1).log().sum(), x)
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0


def test_decoders_give_the_tone_pitch():
    tracker = build_tracker("crepe_tiny")
    x = _melody(0.6)
    with torch.no_grad():
        activations = tracker(x)
    for decoder in ("argmax", "weighted_argmax", "viterbi"):
        midi = tracker.decode(activations, decoder)
        # frames 5-20 of clip 0: 220 Hz = MIDI 57
        assert np.abs(midi[0, 5:20].numpy() - 57).max() < 0.5, decoder
    with pytest.raises(UnknownTrackerError, match="decoder 'nearest'"):
        tracker.decode(activations, "nearest")
    with pytest.raises(UnknownTrackerError, match="unknown pitch tracker 'yin'"):
        build_tracker("yin")


def test_transcriber_and_scores_on_a_known_track():
    midi = np.r_[np.full(30, 60.0), np.full(30, 62.0), np.full(20, 40.0)]
    confidence = np.r_[np.ones(60), np.zeros(20)]
    intervals, pitches = Transcriber(threshold=0.5).notes(midi, confidence)
    np.testing.assert_allclose(intervals, [[0.0, 0.3], [0.3, 0.6]])
    np.testing.assert_allclose(pitches, [60, 62])
    ref_f0 = 440 * 2 ** ((np.r_[np.full(30, 60.0), np.full(30, 62.0)] - 69) / 12)
    ref_f0 = np.r_[ref_f0, np.zeros(20)]
    perfect = melody_scores(ref_f0, midi, confidence > 0.5)
    assert perfect["raw_pitch_accuracy"] == 1.0 and perfect["voicing_false_alarm"] == 0.0
    shifted = melody_scores(ref_f0, midi + 1, confidence > 0.5)
    assert shifted["raw_pitch_accuracy"] == 0.0
    notes = note_scores(intervals, pitches, intervals, pitches)
    assert notes == {"note_onset_f": 1.0, "note_onset_offset_f": 1.0}
    assert note_scores(intervals, pitches, intervals, pitches + 1)["note_onset_f"] == 0.0
