import hashlib
import json

import numpy as np
import pytest

from advmir.data.contract import DataContractError, load_dataset, write_dataset
from advmir.data.synth_notes import FAMILIES, SoundFontError, SynthNotesConfig, plan_notes, render, render_to
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


def test_missing_and_corrupt_soundfont(tmp_path):
    with pytest.raises(SoundFontError, match="not found"):
        render(SynthNotesConfig(**{**TINY_SYNTH, "soundfont": str(tmp_path / "none.sf2")}))
    bad = tmp_path / "bad.sf2"
    bad.write_bytes(b"RIFF0000sfbk" + b"\0" * 100)
    with pytest.raises(SoundFontError, match=r"corrupt|cannot read"):
        render(SynthNotesConfig(**{**TINY_SYNTH, "soundfont": str(bad)}))
    assert not (tmp_path / "out").exists()


def test_families_cover_nsynth():
    assert len(FAMILIES) >= 10
    assert all(len(f.programs) >= 4 and f.low < f.high for f in FAMILIES.values())


def test_contract_rejects_bad_data(tmp_path, tiny_dataset):
    ds = load_dataset(tiny_dataset, mmap=False)
    with pytest.raises(DataContractError, match="rows"):
        write_dataset(tmp_path / "x", ds.waveforms[:-1], ds.manifest, ds.classes, 16000)
    loud = ds.waveforms * 2
    with pytest.raises(DataContractError, match=r"\[-1, 1\]"):
        write_dataset(tmp_path / "x", loud, ds.manifest, ds.classes, 16000)
    assert not (tmp_path / "x").exists()
