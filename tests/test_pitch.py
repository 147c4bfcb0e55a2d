"""The pitch stage: differentiable trackers against their libraries, transcription, task attacks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from advmir.pitch.trackers import SAMPLE_RATE, PitchTracker, UnknownTrackerError, build_tracker
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
    # CREPE full costs about 40x tiny per frame: one shorter clip (every frame must agree)
    x = _melody(0.6) if name == "crepe_tiny" else _melody(0.3)[:1]
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


# ------------------------------------------------------------------------------------ dataset
def test_synth_melodies_renders_phrases_with_consistent_annotations(tmp_path):
    from advmir.datasets.contract import load_dataset
    from advmir.datasets.synth_melodies import SynthMelodiesConfig, load_annotations, render_to

    cfg = SynthMelodiesConfig(
        clip_seconds=2.0, phrase_seconds=[1.0, 2.0], note_seconds=[0.15, 0.4], phrases_per_program=2,
        programs=["choir_aahs", "cello"],
    )  # fmt: skip
    render_to(tmp_path / "a", cfg)
    render_to(tmp_path / "b", cfg)
    ds = load_dataset(tmp_path / "a")
    notes, frames = load_annotations(tmp_path / "a")
    assert ds.waveforms.shape == (4, 32000) and ds.sample_rate == 16000
    assert (np.asarray(ds.waveforms) == np.load(tmp_path / "b" / "waveforms.npy")).all()  # seeded
    assert set(notes["id"]) == set(ds.manifest["id"]) == set(frames["id"])
    assert ((notes["offset"] - notes["onset"]) >= 0.15 * 0.55 - 1e-6).all()
    assert notes["offset"].max() <= 2.0
    cello = notes[notes["id"].str.startswith("cello")]
    assert cello["midi"].between(38, 64).all()
    # frame f is voiced exactly when 0.01 f lies within a note, at that note's frequency
    one = ds.manifest["id"].iloc[0]
    f = frames[frames["id"] == one]
    first = notes[notes["id"] == one].iloc[0]
    inside = f[(f["time"] >= first.onset) & (f["time"] < first.offset - 1e-9)]
    assert (inside["voiced"] == 1).all()
    np.testing.assert_allclose(inside["f0_hz"], 440 * 2 ** ((first.midi - 69) / 12), rtol=1e-6)
    assert len(f) == 1 + 32000 // 160
    # the audio sounds where the reference is voiced
    audio = np.asarray(ds.waveforms[0])
    assert np.abs(audio[round(first.onset * 16000) : round(first.offset * 16000)]).max() > 0.05


# ------------------------------------------------------------------------------------ attacks
class ToyTracker(PitchTracker):
    """A tiny differentiable 'tracker': 256-sample frames every 160 samples -> 24 sigmoid bins."""

    family = "crepe"
    n_bins = 24
    midi_range = (48.0, 59.5)

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.weight = torch.nn.Parameter(torch.randn(256, 24, generator=gen) * 0.5)

    def bin_midi(self):
        return 48.0 + torch.arange(24, dtype=torch.float64) / 2

    def forward(self, x):
        frames = torch.nn.functional.pad(x, (128, 128)).unfold(-1, 256, 160)
        return torch.sigmoid(frames @ self.weight)


def test_pitch_pgd_reaches_frame_goals_within_the_snr_budget():
    from advmir.pitch.attack import PitchPGD

    tracker = ToyTracker()
    gen = torch.Generator().manual_seed(1)
    x = (0.3 * torch.randn(3, 1600, generator=gen)).clamp(-1, 1)
    with torch.no_grad():
        clean = tracker(x).argmax(-1)
    goal = (clean + 5) % 24
    mask = torch.ones_like(goal, dtype=torch.bool)
    attack = PitchPGD(tracker, goal="targeted", goal_bins=goal, goal_mask=mask, window=0, snr_db=5, steps=60)
    result = attack(x, torch.arange(3))
    assert (result.snr_db >= 5 - 1e-3).all()
    with torch.no_grad():
        on_goal = attack._frames_on_goal(tracker(result.x_adv), torch.arange(3))
        before = attack._frames_on_goal(tracker(x), torch.arange(3))
    assert (before == 0).all() and on_goal.mean() > 0.8
    assert tracker.weight.requires_grad  # the model's flags restored
    untargeted = PitchPGD(
        tracker, goal="untargeted", goal_bins=clean, goal_mask=mask, window=0, snr_db=5, steps=60
    )
    res = untargeted(x, torch.arange(3))
    with torch.no_grad():
        assert (tracker(res.x_adv).argmax(-1) != clean).float().mean() > 0.8


def test_targets_and_refusals():
    from advmir.pitch.stage import PitchAttackSpec, Reference, goals, in_range, target_of

    tracker = ToyTracker()
    f0 = np.zeros((2, 10))
    f0[:, 2:8] = 440 * 2 ** ((50 - 69) / 12)
    notes = pd.DataFrame(
        {"id": ["a", "b"], "note": [0, 0], "onset": [0.02, 0.02], "offset": [0.08, 0.08], "midi": [50, 50]}
    )
    ref = Reference(["a", "b"], f0, notes, np.array([0, 1]))
    manifest = pd.DataFrame({"id": ["a", "b"], "program_key": ["x", "x"]})
    spec = PitchAttackSpec(goal="shift", semitones=1, budgets_db=[30])
    target = target_of(spec, ref, manifest, tracker)
    assert (target.notes["midi"] == 51).all()
    bins, mask = goals(spec, ref, target, tracker)
    assert (bins[:, 2:8] == 6).all() and (bins[:, :2] == -1).all() and mask.sum() == 12
    assert in_range(spec, target, tracker).all()
    up12 = PitchAttackSpec(goal="shift", semitones=12, budgets_db=[30])
    with pytest.raises(Exception, match=r"outside the tracker's range 48.0-59.5"):
        in_range(up12, target_of(up12, ref, manifest, tracker), tracker)
    ref.f0[1, 2:8] = 440 * 2 ** ((40 - 69) / 12)  # phrase b: its +12 target stays within range
    assert in_range(up12, target_of(up12, ref, manifest, tracker), tracker).tolist() == [False, True]
    with pytest.raises(Exception, match="goal 'shift' needs semitones"):
        PitchAttackSpec(goal="shift", budgets_db=[30])


def test_config_refuses_unknown_trackers_and_decoders():
    import copy

    import yaml

    from advmir.config import SCHEMAS, ConfigError, validate_config
    from advmir.pitch.plan import PitchConfigError, PitchPlan

    config = yaml.safe_load((SCHEMAS.parents[1] / "config.yaml").read_text())
    bad = copy.deepcopy(config)
    bad["pitch"]["trackers"] = {"yin": {}}
    with pytest.raises(ConfigError, match=r"pitch\.trackers"):
        validate_config(bad, SCHEMAS / "config.schema.yaml")
    bad = copy.deepcopy(config)
    bad["pitch"]["trackers"]["pesto"]["decoder"] = "beam"
    with pytest.raises(ConfigError, match="beam"):
        validate_config(bad, SCHEMAS / "config.schema.yaml")
    ok = copy.deepcopy(config)
    ok["pitch"]["trackers"]["pesto"]["decoder"] = "viterbi"
    validate_config(ok, SCHEMAS / "config.schema.yaml")
    with pytest.raises(
        PitchConfigError, match=r"pitch.trackers.pesto.decoder: 'viterbi' is not a decoder of pesto"
    ):
        PitchPlan(ok["pitch"], "results")
    good = copy.deepcopy(config)
    validate_config(good, SCHEMAS / "config.schema.yaml")
    plan = PitchPlan(good["pitch"], "results")
    assert plan.targets() == []  # off by default
    assert json_loads(plan.tracker_json("crepe_tiny")) == {"decoder": "weighted_argmax", "threshold": 0.5}


def json_loads(text):
    import json

    return json.loads(text)


def test_pitch_table_is_tidy(tmp_path):
    from advmir.io import write_csv
    from advmir.pitch.tables import pitch_table

    clean = pd.DataFrame({"id": ["a", "b"], "family": ["voice", "wind"], "raw_pitch_accuracy": [1.0, 0.5]})
    attacked = pd.DataFrame(
        {
            "id": ["a", "b", "a", "b"],
            "family": ["voice", "wind"] * 2,
            "budget_db": [30.0] * 4,
            "condition": ["adversarial"] * 2 + ["noise"] * 2,
            "raw_pitch_accuracy": [0.0, 0.05, 1.0, 0.5],
            "snr_db": [31.0, 33.0, 31.0, 33.0],
        }
    )
    for folder, table in (("crepe_tiny/clean", clean), ("crepe_tiny/untargeted", attacked)):
        (tmp_path / folder).mkdir(parents=True)
        write_csv(tmp_path / folder / "scores.csv", table)
    out = pitch_table(
        [tmp_path / "crepe_tiny/clean/scores.csv", tmp_path / "crepe_tiny/untargeted/scores.csv"]
    )
    assert list(out.columns) == ["model", "attack", "condition", "budget", "family", "metric", "value", "n"]
    row = out[(out.attack == "untargeted") & (out.condition == "adversarial") & (out.family == "all")]
    assert row.set_index("metric").loc["success_rate", "value"] == 1.0
    assert row.set_index("metric").loc["median_snr_db", "value"] == 32.0
    noise = out[(out.condition == "noise") & (out.family == "all")].set_index("metric")
    assert noise.loc["success_rate", "value"] == 0.0 and noise.loc["raw_pitch_accuracy", "n"] == 2


@pytest.mark.parametrize(
    ("trackers", "words"),
    [
        ({"crepe_small": {}}, ["pitch.trackers", "crepe_small"]),
        (
            {"pesto": {"decoder": "viterbi"}},
            ["pitch.trackers.pesto.decoder", "'viterbi' is not a decoder of pesto"],
        ),
    ],
)
def test_dry_run_refuses_an_unknown_tracker_or_decoder(tmp_path, trackers, words):
    import yaml

    from advmir.config import SCHEMAS
    from conftest import run_snakemake

    config = yaml.safe_load((SCHEMAS.parents[1] / "config.yaml").read_text())
    config["results"] = str(tmp_path / "results")
    config["pitch"].update(enabled=True, trackers=trackers)
    proc = run_snakemake(tmp_path, config, "-n", check=False)
    assert proc.returncode != 0
    for word in words:
        assert word in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()
