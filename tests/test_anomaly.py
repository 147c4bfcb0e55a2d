"""Anomaly stage, signal level: each corruption does what it says; heuristics rank it above the clean clip.

Tiny synthetic notes made here (harmonic tones with an attack-decay envelope), no dataset, no network.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from advmir.anomaly import corruptions as C
from advmir.anomaly import features, heuristics, metrics
from advmir.anomaly.detectors import Reference, ScoreSet, run_detector

SR = 16000
T = SR // 2  # 0.5 s clips keep the tests fast


def note(
    midi: float = 57,
    seconds: float = 0.5,
    decay: float = 6.0,
    release_at: float = 0.35,
    peak: float = 0.8,
    seed: int = 0,
    top: float = 7000.0,
) -> np.ndarray:
    """A harmonic note (partials up to ``top`` Hz, 1/k amplitudes), 5 ms attack, decay, 50 ms release to 0."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    x = sum(
        np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 200) if f0 * k < top
    )
    env = np.minimum(1.0, t / 0.005) * np.exp(-decay * t)
    env *= np.clip(1.0 - (t - release_at) / 0.05, 0.0, 1.0)
    x = x * env
    return (x / np.abs(x).max() * peak).astype(np.float32)


def rng() -> np.random.Generator:
    return np.random.default_rng(123)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def band_power(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    return float(spec[(freqs >= lo) & (freqs < hi)].sum())


# ------------------------------------------------------------------------------- each corruption
def test_clipping_flattens_the_peaks_at_the_original_level():
    x = note()
    y = C.clipping(x, 6.0, rng(), SR)
    peak = np.abs(x).max()
    assert np.isclose(np.abs(y).max(), peak)
    assert (np.abs(y) >= peak * (1 - 1e-6)).sum() > 50 > (np.abs(x) >= peak * (1 - 1e-6)).sum()
    assert heuristics._longest_run(np.abs(y) >= peak * (1 - 1e-6)) >= 3


@pytest.mark.parametrize("fault", ["white_noise", "pink_noise", "hum"])
def test_additive_noise_lands_at_the_requested_snr(fault):
    x = note()
    y = C.FAULTS[fault].func(x, 20.0, rng(), SR)
    noise = y - x
    assert 10 * np.log10(rms(x) ** 2 / rms(noise) ** 2) == pytest.approx(20.0, abs=0.5)
    low, high = band_power(noise, 20, 300), band_power(noise, 2000, 8000)
    if fault == "white_noise":  # flat: 6 kHz of band holds far more than 280 Hz
        assert high > 10 * low
    elif fault == "pink_noise":  # 1/f: per Hz, the low band is far denser
        assert low / 280 > 10 * high / 6000
    else:  # mains lines only
        lines = sum(band_power(noise, f - 3, f + 3) for f in (50, 60, 100, 120, 150, 180, 200, 240))
        assert lines > 0.99 * band_power(noise, 0, SR / 2)


def test_dropout_cuts_three_zero_gaps_of_the_given_length_inside_the_note():
    x = note()
    y = C.dropout(x, 10.0, rng(), SR)
    starts, ends = heuristics._runs(y == 0)
    gaps = [
        (s, e) for s, e in zip(starts, ends, strict=True) if e - s >= 100 and e < len(y)
    ]  # not the silent tail
    assert len(gaps) == 3
    assert all(e - s == 160 for s, e in gaps)
    assert all(np.abs(x[s:e]).max() > 0.01 for s, e in gaps)  # they remove sound, not silence


def test_truncation_ends_the_note_early():
    x = note()
    y = C.truncation(x, 0.5, rng(), SR)
    last_x = np.flatnonzero(np.abs(x) > 1e-4)[-1]
    last_y = np.flatnonzero(y != 0)[-1]
    assert last_y < 0.6 * last_x
    assert np.array_equal(y[:last_y], x[:last_y])
    assert np.abs(y[last_y - 80 : last_y]).max() > 0.05  # cut while still sounding


def test_dc_offset_shifts_the_mean():
    x = note()
    y = C.dc_offset(x, 0.1, rng(), SR)
    assert abs(float(y.mean() - x.mean())) == pytest.approx(0.1 * np.abs(x).max(), rel=0.05)
    assert np.abs(y).max() <= 1.0


def test_wrong_sample_rate_moves_the_pitch():
    x = note(midi=57)
    y = C.wrong_sample_rate(x, 3.0, rng(), SR)
    score, best = features.pitch_mismatch(y[None], SR, np.array([57.0]))
    assert abs(abs(best[0] - 57) - 3.0) <= 0.3
    assert score[0] > 1.0


def test_lowpass_removes_the_band_above_the_cutoff():
    x = note(midi=69)
    y = C.lowpass(x, 1000.0, rng(), SR)
    assert band_power(y, 2000, 8000) < 1e-4 * band_power(x, 2000, 8000)
    assert band_power(y, 0, 800) == pytest.approx(band_power(x, 0, 800), rel=0.1)


def test_codec_is_aligned_and_band_limited():
    x = note(midi=57)
    y = C.codec(x, 8.0, rng(), SR)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.corrcoef(x, y)[0, 1] > 0.8  # aligned (offset 0), not shifted
    assert band_power(y, 5000, 8000) < 0.01 * band_power(x, 5000, 8000)  # 8 kbps LAME low-passes


def test_reversed_and_silence_and_duplicates():
    x = note()
    assert np.array_equal(C.reversed_audio(x, 1, rng(), SR), x[::-1])
    quiet = C.silence(x, 90.0, rng(), SR)
    assert 20 * np.log10(rms(quiet)) == pytest.approx(-90, abs=1)
    assert np.array_equal(C.exact_duplicate(x, 1, rng(), SR), x)
    near = C.near_duplicate(x, 30.0, rng(), SR)
    assert not np.array_equal(near, x)
    lag = int(np.argmax(np.correlate(near[:2000], x[:1000], "valid")))
    assert lag <= SR // 200
    aligned = near[lag:] / (np.dot(near[lag:], x[: T - lag]) / np.dot(x[: T - lag], x[: T - lag]))
    assert 10 * np.log10(np.sum(x[: T - lag] ** 2) / np.sum((aligned - x[: T - lag]) ** 2)) > 25


def test_label_faults_change_only_the_label():
    classes = ["brass", "reed", "string"]
    row = {"id": "a", "label": "reed", "label_idx": 1, "family": "reed", "pitch": 60}
    wrong = C.wrong_family(row, 1, rng(), classes)
    assert wrong["label"] != "reed" and classes[wrong["label_idx"]] == wrong["label"] == wrong["family"]
    moved = C.wrong_pitch(row, 3, rng(), classes)
    assert abs(moved["pitch"] - 60) == 3 and moved["label"] == "reed"
    assert C.wrong_pitch({**row, "pitch": 126}, 3, rng(), classes)["pitch"] == 123  # stays in MIDI range


def test_corrupt_clips_is_balanced_seeded_and_marks_every_fault():
    waves = np.stack([note(midi=48 + k % 24, seed=k) for k in range(40)])
    man = pd.DataFrame(
        {
            "id": [f"c{k}" for k in range(40)],
            "split": "test",
            "label": "reed",
            "label_idx": 1,
            "family": "reed",
            "pitch": [48 + k % 24 for k in range(40)],
        }
    )
    sev = C.normalize_severities(["clipping", "silence", "exact_duplicate", "wrong_pitch"])
    a, ma = C.corrupt_clips(waves, man, ["brass", "reed"], SR, sev, 0.5, C.split_rng(0, "test"))
    b, mb = C.corrupt_clips(waves, man, ["brass", "reed"], SR, sev, 0.5, C.split_rng(0, "test"))
    assert np.array_equal(a, b) and ma.equals(mb)
    assert ma["is_fault"].sum() == 20 and (ma["fault"].value_counts().drop("none") == 5).all()
    dup = ma[ma["fault"] == "exact_duplicate"]
    for row in dup.itertuples():
        src = int(np.flatnonzero(man["id"] == row.source_id)[0])
        assert row.source_id != row.id and np.array_equal(a[row.Index], waves[src])
        assert ma.loc[src, "is_fault"] == 0
    clean = ma["is_fault"] == 0
    assert np.array_equal(a[clean.to_numpy()], waves[clean.to_numpy()])


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "faults, fraction, n, match",
    [
        (["clipping"], 1.5, 100, r"fraction must be in \[0, 1\], got 1.5"),
        (["clipping"], -0.1, 100, r"fraction must be in \[0, 1\]"),
        (["scratches"], 0.3, 100, r"unknown fault 'scratches'; known faults: clipping"),
        (
            {"clipping": 80},
            0.3,
            100,
            r"fault 'clipping': severity 80 is out of range \[0.5, 40\] \(overdrive dB\)",
        ),
        ({"hum": [20, 99]}, 0.3, 100, r"fault 'hum': severity 99 is out of range \[-10, 60\]"),
        ({"lowpass": 9000}, 0.3, 100, r"fault 'lowpass': severity 9000 is out of range \[50, 7840\]"),
        (list(C.FAULTS), 0.1, 50, r"split 'test' has 50 clips: fraction 0.1 makes 5 faulty .* 27 faults"),
        (["clipping"], 1.0, 20, r"at least one clean clip must remain"),
    ],
)
def test_bad_requests_are_refused_with_a_clear_message(faults, fraction, n, match):
    with pytest.raises(C.CorruptionConfigError, match=match):
        sev = C.normalize_severities(
            faults if not isinstance(faults, dict) else {k: v for k, v in faults.items()}, SR
        )
        C.check_request(sev, fraction, n, ["id", "pitch"], "test")


def test_schema_ranges_match_the_fault_registry():
    schema = yaml.safe_load(open("workflow/schemas/anomaly.schema.yaml"))
    faults = schema["definitions"]["anomaly"]["properties"]["faults"]["properties"]
    assert list(faults) == list(C.FAULTS)
    for name, spec in C.FAULTS.items():
        assert (faults[name]["minimum"], faults[name]["maximum"]) == (spec.low, spec.high)
        assert (faults[name]["items"]["minimum"], faults[name]["items"]["maximum"]) == (spec.low, spec.high)
        assert spec.low <= spec.default <= spec.high


# ------------------------------------------------------------------- heuristics rank faults first
@pytest.mark.parametrize(
    "check, fault, severity",
    [
        ("clipping", "clipping", 6.0),
        ("silence", "silence", 90.0),
        ("gaps", "dropout", 20.0),
        ("truncation", "truncation", 0.5),
        ("dc_offset", "dc_offset", 0.1),
        ("envelope", "reversed", 1.0),
        ("noise_floor", "white_noise", 20.0),
        ("noise_floor", "pink_noise", 20.0),
        ("hum", "hum", 20.0),
        ("bandwidth", "lowpass", 1000.0),
        ("bandwidth", "codec", 8.0),
    ],
)
def test_each_heuristic_ranks_a_corrupted_clip_above_its_clean_original(check, fault, severity):
    clean = np.stack([note(midi=m, seed=m) for m in (45, 57, 69)])
    faulty = np.stack([C.FAULTS[fault].func(x, severity, rng(), SR) for x in clean])
    manifest = pd.DataFrame({"id": [f"n{k}" for k in range(6)], "label": "reed", "pitch": [45, 57, 69] * 2})
    ref = Reference(clean, manifest.iloc[:3].reset_index(drop=True), ["reed"], SR)
    (table,) = run_detector(check, ref, [ScoreSet(np.concatenate([clean, faulty]), manifest)])
    score = table["score"].to_numpy()
    assert (score[3:] > score[:3]).all(), table
    assert all(isinstance(r, str) and r for r in table["reason"])


def test_pitch_check_flags_a_wrong_pitch_label():
    clean = np.stack([note(midi=m, seed=m) for m in (45, 57, 69)])
    manifest = pd.DataFrame({"id": list("abcdef"), "label": "reed", "pitch": [45, 57, 69, 47, 55, 71]})
    ref = Reference(clean, manifest.iloc[:3], ["reed"], SR)
    (table,) = run_detector("pitch", ref, [ScoreSet(np.concatenate([clean, clean]), manifest)])
    assert (table["score"].to_numpy()[3:] > table["score"].to_numpy()[:3]).all()
    assert "labelled MIDI 47, sounds like 45.0" in table["reason"][3]


def test_duplicates_find_the_copy_not_a_quieter_take():
    waves = np.stack([note(midi=m, seed=m) for m in (45, 50, 57, 62, 69)])
    copy = waves[1].copy()
    quieter = waves[2] * 10 ** (-6 / 20)  # another velocity of the same note: same sound, 6 dB down
    x = np.concatenate([waves, [copy, quieter]])
    manifest = pd.DataFrame({"id": [f"n{k}" for k in range(7)], "label": "reed"})
    ref = Reference(waves, manifest.iloc[:5], ["reed"], SR)
    (table,) = run_detector("duplicates", ref, [ScoreSet(x, manifest)])
    score = table["score"].to_numpy()
    assert score[5] == score[1] == score.max() and score[6] < score[5] - 1
    assert "n1" in table["reason"][5]


# ------------------------------------------------------------------------------------- metrics
def test_metrics_match_definitions():
    y = np.array([0, 0, 0, 0, 1, 1, 0, 1, 0, 0])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.35, 0.5, 0.8, 0.0, 0.5])
    assert metrics.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))
    # pAUC at FPR <= 0.1 of 7 clean clips: the top floor(0.7) -> 1 clean clip (0.5); 2 of 3 faults beat it
    assert metrics.pauc(y, s, 0.1) == pytest.approx(2 / 3)
    assert metrics.found_within(y == 1, s, 0.1) == pytest.approx(1 / 3)  # top 1 clip of 10
    assert metrics.found_within(y == 1, s, 0.2) == pytest.approx(2 / 3)
    ties = np.ones(10)
    assert metrics.found_within(y == 1, ties, 0.5) == pytest.approx(0.5)  # expected share over tie orders
    manifest = pd.DataFrame({"is_fault": y, "fault": np.where(y == 1, "hum", "none")})
    table = metrics.evaluate(manifest, {"d": s})
    assert list(table["fault"]) == ["all", "hum"] and table["n_faulty"].tolist() == [3, 3]


def test_heuristics_and_features_share_dsp_without_importing_each_other_in_a_circle():
    """heuristics needs only dsp; features builds on dsp and heuristics (one direction)."""
    import subprocess
    import sys

    code = (
        "import sys, advmir.anomaly.heuristics as h, advmir.anomaly.dsp as d; "
        "assert 'advmir.anomaly.features' not in sys.modules; "
        "import advmir.anomaly.features as f; "
        "assert f.power_spectrogram is d.power_spectrogram is h.power_spectrogram"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------- several implementations per fault family
def test_every_family_with_several_implementations_names_existing_faults():
    families: dict[str, list[str]] = {}
    for name, spec in C.FAULTS.items():
        families.setdefault(spec.family, []).append(name)
    for family in ("clipping", "noise", "dropout", "truncation", "codec", "wrong_pitch", "wrong_family"):
        assert len(families[family]) >= 2, (family, families[family])
    assert set(families["noise"]) == {"white_noise", "pink_noise", "brown_noise", "babble_noise"}
    assert C.FAULTS["hum"].family == "hum"  # a fault with one implementation is its own family


def test_soft_clipping_rounds_the_tops_without_flat_runs():
    x = note()
    y = C.soft_clipping(x, 12.0, rng(), SR)
    peak = np.abs(x).max()
    assert np.abs(y).max() < 0.5 * peak  # squashed: tanh(4) / 4 of the peak
    assert heuristics._longest_run(np.abs(y) >= np.abs(y).max() * (1 - 1e-6)) <= 2  # no flat top
    quiet = np.abs(x) < 0.01 * peak
    assert np.allclose(y[quiet], x[quiet], rtol=1e-3, atol=1e-7)  # unity gain for quiet samples
    mild = C.soft_clipping(x, -10.0, rng(), SR)
    assert 10 * np.log10(np.sum(x**2) / np.sum((mild - x) ** 2)) > 30  # -10 dB drive: barely audible


def test_asymmetric_clipping_flattens_one_polarity_only():
    x = note()
    y = C.asymmetric_clipping(x, 6.0, np.random.default_rng(0), SR)
    top, bottom = y.max() < 0.6 * x.max(), y.min() > 0.6 * x.min()
    assert top != bottom  # exactly one side was clipped (at -6 dB of its own peak: 0.5)
    sign = 1.0 if top else -1.0
    assert heuristics._longest_run(sign * y >= (sign * y).max() * (1 - 1e-6)) >= 3
    other = sign * x <= 0
    assert np.array_equal(y[other], x[other])


@pytest.mark.parametrize("fault", ["brown_noise", "babble_noise"])
def test_coloured_noises_land_at_the_requested_snr(fault):
    x = note()
    noise = C.FAULTS[fault].func(x, 20.0, rng(), SR) - x
    assert 10 * np.log10(rms(x) ** 2 / rms(noise) ** 2) == pytest.approx(20.0, abs=0.5)
    if fault == "brown_noise":  # 1/f^2: most power below 100 Hz
        assert band_power(noise, 0, 100) > 0.8 * band_power(noise, 0, SR / 2)
    else:  # voices: the power sits in the speech band
        assert band_power(noise, 80, 4000) > 0.9 * band_power(noise, 0, SR / 2)


def test_dropout_variants_cut_the_gaps_they_promise():
    x = note()
    one = C.dropout_single(x, 30.0, rng(), SR)
    starts, ends = heuristics._runs(one == 0)
    inner = [(s, e) for s, e in zip(starts, ends, strict=True) if e < len(x) and e - s > 100]
    assert len(inner) == 1 and abs((inner[0][1] - inner[0][0]) - 480) <= 32  # 30 ms, minus the fades
    burst = C.dropout_burst(x, 50.0, np.random.default_rng(1), SR)
    removed = (burst == 0) & (np.abs(x) > 1e-3)
    assert 2 * 16 <= removed.sum() <= 6 * 800  # 2-6 gaps of 2-50 ms
    assert not np.array_equal(burst, x)


def test_faded_truncation_fades_out_before_the_cut():
    x = note()
    y = C.truncation_faded(x, 0.5, rng(), SR)
    last = np.flatnonzero(y != 0)[-1]
    assert last < 0.6 * np.flatnonzero(np.abs(x) > 1e-4)[-1]
    tail = np.abs(y[last - 40 : last + 1]).max()
    assert tail < 0.2 * np.abs(x[last - 40 : last + 1]).max()  # faded, not a hard cut


@pytest.mark.parametrize("fault, kbps", [("codec", 32.0), ("codec_aac", 16.0), ("codec_opus", 12.0)])
def test_codec_implementations_run_through_the_engine_aligned(fault, kbps):
    x = note(midi=57)
    y = C.FAULTS[fault].func(x, kbps, rng(), SR)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.corrcoef(x, y)[0, 1] > 0.9  # aligned, lag 0
    assert not np.allclose(x, y, atol=1e-3)


def test_label_fault_implementations():
    classes = ["keyboard", "mallet", "organ"]
    row = {"id": "a", "label": "keyboard", "label_idx": 0, "family": "keyboard", "pitch": 60}
    assert C.swapped_family(row, 1, rng(), classes)["label"] == "mallet"  # the only neighbour
    middle = C.swapped_family({**row, "label": "mallet", "label_idx": 1}, 1, rng(), classes)
    assert middle["label"] in ("keyboard", "organ") and middle["family"] == middle["label"]
    assert abs(C.FAULTS["wrong_interval"].func(row, 12, rng(), classes)["pitch"] - 60) == 12


def test_corrupt_clips_marks_held_out_implementations_and_families():
    waves = np.stack([note(midi=48 + k % 24, seed=k) for k in range(24)])
    man = pd.DataFrame({"id": [f"c{k}" for k in range(24)], "split": "test", "label": "reed", "label_idx": 0})
    sev = C.normalize_severities({"clipping": 6, "soft_clipping": [2, 6], "dc_offset": 0.1})
    _, out = C.corrupt_clips(waves, man, ["reed"], SR, sev, 0.5, C.split_rng(0, "test"), {"soft_clipping"})
    fam = out.set_index("fault")["fault_family"].to_dict()
    assert fam == {
        "none": "none",
        "clipping": "clipping",
        "soft_clipping": "clipping",
        "dc_offset": "dc_offset",
    }
    assert out.loc[out["held_out"] == 1, "fault"].eq("soft_clipping").all()
    assert (out["held_out"] == 1).sum() == 4 and set(
        out.loc[out["fault"] == "soft_clipping", "severity"]
    ) == {
        2.0,
        6.0,
    }


# ------------------------------------------------------------------- detectors of the blind spots
@pytest.mark.parametrize(
    "check, fault, severity",
    [
        ("clipping", "asymmetric_clipping", 3.0),
        ("distortion", "soft_clipping", 12.0),
        ("distortion", "clipping", 6.0),
        ("noise_bands", "white_noise", 40.0),
        ("noise_bands", "babble_noise", 30.0),
        ("noise_bands", "brown_noise", 30.0),
        ("codec_artifacts", "codec", 32.0),
        ("codec_artifacts", "codec_opus", 12.0),
    ],
)
def test_blind_spot_detectors_rank_the_fault_above_clean_notes_like_it(check, fault, severity):
    """Reference-relative checks: the reference holds clean notes within a semitone of each scored one
    (other seeds and decays); partials up to 7.9 kHz, so a codec's low-pass has something to cut."""
    pitches = [47, 59, 67]
    ref_pitches = [p + d for p in pitches for d in (-1, 0, 1)]
    ref_waves = np.stack(
        [note(midi=m, seed=100 + k, decay=5.0 + k % 3, top=7900) for k, m in enumerate(ref_pitches)]
    )
    clean = np.stack([note(midi=m, seed=m, top=7900) for m in pitches])
    faulty = np.stack([C.FAULTS[fault].func(x, severity, rng(), SR) for x in clean])
    ref_man = pd.DataFrame({"id": [f"r{k}" for k in range(9)], "label": "reed", "pitch": ref_pitches})
    manifest = pd.DataFrame({"id": [f"n{k}" for k in range(6)], "label": "reed", "pitch": pitches * 2})
    ref = Reference(ref_waves, ref_man, ["reed"], SR)
    (table,) = run_detector(check, ref, [ScoreSet(np.concatenate([clean, faulty]), manifest)])
    score = table["score"].to_numpy()
    assert score[3:].min() > score[:3].max(), table
    assert all(isinstance(r, str) and r for r in table["reason"])


@pytest.mark.parametrize("offset", [12, -12, 7])
def test_pitch_check_flags_octave_and_fifth_labels(offset):
    """The old check searched +-7.5 semitones and let octaves pass; now both directions count."""
    pitches = [45, 50, 57, 62, 69]
    ref_waves = np.stack([note(midi=m, seed=100 + m) for m in pitches])
    ref = Reference(ref_waves, pd.DataFrame({"label": "reed", "pitch": pitches}), ["reed"], SR)
    clean = np.stack([note(midi=m, seed=m) for m in (52, 60)])
    manifest = pd.DataFrame(
        {"id": list("abcd"), "label": "reed", "pitch": [52, 60, 52 + offset, 60 + offset]}
    )
    (table,) = run_detector("pitch", ref, [ScoreSet(np.concatenate([clean, clean]), manifest)])
    score = table["score"].to_numpy()
    assert score[2:].min() > score[:2].max(), table


def test_reference_z_pools_clips_of_the_same_label_and_pitch():
    ref_man = pd.DataFrame({"label": ["a"] * 4 + ["b"] * 4, "pitch": [60, 61, 62, 80, 60, 61, 62, 63]})
    ref = np.array([[0.0], [1.0], [2.0], [50.0], [10.0], [11.0], [12.0], [13.0]])
    man = pd.DataFrame({"label": ["a", "b", "c"], "pitch": [61, 61, 61]})
    z, expected = heuristics.reference_z(np.array([[4.0], [4.0], [4.0]]), man, ref, ref_man, floor=0.5)
    assert expected[:, 0].tolist() == [1.0, 11.5, 10.5]  # near pitch of a; all of b; everything for c
    assert z[0, 0] == pytest.approx(3.0) and z[1, 0] < 0


# ----------------------------------------------------------------- in-generator vs held-out tables
def test_generalisation_table_separates_held_out_implementations():
    fault = np.array(["none"] * 20 + ["clipping"] * 5 + ["soft_clipping"] * 5)
    manifest = pd.DataFrame(
        {
            "is_fault": (fault != "none").astype(int),
            "fault": fault,
            "fault_family": np.where(fault == "none", "none", "clipping"),
            "held_out": (fault == "soft_clipping").astype(int),
            "severity": np.where(fault == "none", np.nan, 6.0),
        }
    )
    # finds hard clipping perfectly, soft clipping not at all (scores like clean clips)
    score = np.concatenate([np.linspace(0, 1, 20), np.full(5, 5.0), np.linspace(0.01, 0.99, 5)])
    table = metrics.generalisation(manifest, {"flat_tops": score}).set_index(
        ["implementations", "fault_family"]
    )
    assert table.loc[("in_generator", "all"), "roc_auc"] == 1.0
    assert table.loc[("held_out", "clipping"), "roc_auc"] == pytest.approx(0.5, abs=0.05)
    assert table.loc[("held_out", "clipping"), "faults"] == "soft_clipping"
    # top 10% of the 25 clips (clean + held-out) is 3 clips: mostly clean ones
    assert table.loc[("held_out", "all"), "precision_top10"] < 0.5
    assert table.loc[("in_generator", "all"), "precision_top10"] == 1.0
    sev = metrics.by_severity(manifest, {"flat_tops": score})
    assert sev[["fault", "held_out", "n_faulty"]].values.tolist() == [
        ["clipping", 0, 5],
        ["soft_clipping", 1, 5],
    ]
    # a set written before families existed: every fault its own family, nothing held out
    old = metrics.generalisation(manifest.drop(columns=["fault_family", "held_out"]), {"d": score})
    assert set(old["implementations"]) == {"in_generator"} and "soft_clipping" in set(old["fault_family"])


def test_cross_validated_label_check_finds_swapped_labels_of_a_dataset_s_own_classes():
    """Confident learning on the dataset under review, cross-validated on its own labels (no class
    list of another dataset): the swapped labels score highest; a label only one clip carries and a
    dataset with a single label give no evidence, and say why."""
    from advmir.anomaly.detectors import cross_validated_label_errors

    rng = np.random.default_rng(0)
    sr, t = 16000, np.arange(8000) / 16000
    low = [np.sin(2 * np.pi * rng.uniform(100, 200) * t) for _ in range(20)]
    high = [np.sign(np.sin(2 * np.pi * rng.uniform(1500, 3000) * t)) * 0.5 for _ in range(20)]
    x = np.stack(low + high + [low[0] * 0.5]).astype(np.float32) * np.hanning(8000).astype(np.float32)
    labels = ["hum"] * 20 + ["buzz"] * 20 + ["solo"]
    swapped = [3, 11, 25]
    for i in swapped:
        labels[i] = "buzz" if labels[i] == "hum" else "hum"
    value, reasons = cross_validated_label_errors(x, sr, labels, seed=0)
    assert set(np.argsort(value)[-3:]) == set(swapped)
    assert value[-1] == 0.0 and "the only clip labelled 'solo'" in reasons[-1]
    assert "5-fold on this dataset" in reasons[0]
    again, _ = cross_validated_label_errors(x, sr, labels, seed=0)
    np.testing.assert_array_equal(value, again)  # seeded folds
    none, why = cross_validated_label_errors(x, sr, ["unlabelled"] * len(x))
    assert not none.any() and "no label check" in why[0]
