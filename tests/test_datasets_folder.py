"""The folder dataset (advmir.datasets.folder): a folder of ~200 recordings made here (mixed sample
rates, channel counts and sample formats, some faulty, some unreadable) into the data contract,
with every unusable file listed in skipped.csv; labels from subfolders and from a CSV; windows;
and the overlay's refusal of a folder that does not exist."""

from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from advmir.config import merge_config
from advmir.datasets.contract import DatasetError, load_dataset
from advmir.datasets.folder import decode_with_ffmpeg, listing_digest, prepare_folder
from advmir.datasets.prepare import Settings
from conftest import REPO, announce, run_snakemake

RATES = (8000, 16000, 22050, 44100)
LABELS = ("drums", "piano", "voice")
N_GENERATED = 190
BAD = {
    "piano/broken.wav": "unreadable",
    "voice/broken.flac": "unreadable",
    "drums/empty.wav": "empty file",
    "drums/silent.wav": "silent",
    "voice/nan.wav": "NaN",
    "loose.wav": "top level",
}


def tone(rate: int, seconds: float, freq: float, channels: int = 1) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    mono = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([mono * (1 - 0.3 * c) for c in range(channels)], axis=1)


def settings(path, **options) -> Settings:
    return Settings(
        sample_rate=16000,
        clip_seconds=options.pop("clip_seconds", 0.5),
        seed=options.pop("seed", 0),
        options={"path": str(path), **options},
    )


@pytest.fixture(scope="module")
def recordings(tmp_path_factory, request):
    """~200 files: generated tones (4 rates, mono/stereo, int16/float) in three subfolders, a FLAC,
    an MP3 when the project's ffmpeg can encode one, a stereo file to check the mix, and the bad
    files of BAD. Returns (folder, relative paths expected in the manifest)."""
    root = tmp_path_factory.mktemp("recordings")
    rng = np.random.default_rng(0)
    good = []
    for i in range(N_GENERATED):
        label, rate = LABELS[i % 3], RATES[i % 4]
        channels, subtype = 1 + (i // 4) % 2, ("PCM_16", "FLOAT")[(i // 8) % 2]
        rel = f"{label}/take_{i:03d}.wav"
        (root / label).mkdir(exist_ok=True)
        seconds = 0.3 + 0.1 * (i % 5)  # shorter and longer than the 0.5 s clip
        sf.write(root / rel, tone(rate, seconds, 110 + 5 * i, channels), rate, subtype=subtype)
        good.append(rel)
    sf.write(root / "piano/good.flac", tone(44100, 0.4, 330, 2), 44100)
    good.append("piano/good.flac")
    stereo = np.zeros((8000, 2))
    stereo[:, 0] = tone(16000, 0.5, 440)[:, 0]
    sf.write(root / "voice/stereo_check.wav", stereo, 16000, subtype="FLOAT")
    good.append("voice/stereo_check.wav")
    # the bad ones
    (root / "piano/broken.wav").write_bytes(rng.bytes(3000))
    (root / "voice/broken.flac").write_bytes(rng.bytes(500))
    (root / "drums/empty.wav").write_bytes(b"")
    sf.write(root / "drums/silent.wav", np.zeros(4000), 16000, subtype="PCM_16")
    nan = tone(16000, 0.3, 220)
    nan[100:200] = np.nan
    sf.write(root / "voice/nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(root / "loose.wav", tone(16000, 0.3, 220), 16000)
    (root / "notes.txt").write_text("not audio, not listed\n")
    try:
        import imageio_ffmpeg

        sf.write(root / "mp3.wav.tmp", tone(22050, 0.6, 523), 22050, format="WAV")
        ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
        subprocess.run(
            [ffmpeg, "-nostdin", "-v", "error", "-f", "wav", "-i", str(root / "mp3.wav.tmp"),
             "-c:a", "libmp3lame", "-b:a", "64k", str(root / "voice/take.mp3")],
            check=True, capture_output=True,
        )  # fmt: skip
        good.append("voice/take.mp3")
    except (ImportError, RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        announce(request.config, "folder", f"SKIPPED the MP3 file: no ffmpeg could encode one ({exc})")
    finally:
        (root / "mp3.wav.tmp").unlink(missing_ok=True)
    return root, sorted(good)


@pytest.fixture(scope="module")
def prepared(recordings, tmp_path_factory):
    folder, _ = recordings
    out = tmp_path_factory.mktemp("prepared") / "folder"
    prepare_folder(settings(folder), out)
    return out


def test_folder_becomes_the_data_contract(recordings, prepared):
    _, good = recordings
    assert len(good) + len(BAD) >= 195
    ds = load_dataset(prepared)
    man = ds.manifest
    assert sorted(man["path"]) == good  # one row per readable file, none lost
    assert ds.sample_rate == 16000 and ds.waveforms.shape == (len(good), 8000)
    assert set(man["source_sample_rate"]) >= set(RATES) and set(man["source_channels"]) == {1, 2}
    assert (man["label"] == man["path"].str.split("/").str[0]).all()
    assert ds.classes == sorted(LABELS)
    assert set(man["split"]) == {"train", "valid", "test"}
    # cut or padded, recorded per row: 0.3 s at 16 kHz pads 3200 samples, 0.7 s cuts 3200
    assert man.loc[man["source_seconds"].round(2) == 0.3, "pad_samples"].eq(3200).all()
    assert man.loc[man["source_seconds"].round(2) == 0.7, "cut_samples"].eq(3200).all()
    # stereo is the mean of the channels: left a tone, right silent -> half the tone
    row = int(np.flatnonzero(man["path"] == "voice/stereo_check.wav")[0])
    np.testing.assert_allclose(ds.waveforms[row], tone(16000, 0.5, 440)[:, 0] / 2, atol=1e-6)
    assert man.loc[row, "source_channels"] == 2
    if "voice/take.mp3" in good:
        mp3 = int(np.flatnonzero(man["path"] == "voice/take.mp3")[0])
        assert man.loc[mp3, "source_sample_rate"] == 22050 and np.abs(ds.waveforms[mp3]).max() > 0.3


def test_every_unusable_file_is_listed_with_its_reason(prepared):
    skipped = pd.read_csv(prepared / "skipped.csv")
    assert sorted(skipped["path"]) == sorted(BAD)
    reasons = dict(zip(skipped["path"], skipped["reason"], strict=True))
    for rel, word in BAD.items():
        assert word in reasons[rel], (rel, reasons[rel])
    info = yaml.safe_load((prepared / "classes.json").read_text())
    assert info["files_skipped"] == len(BAD) and info["source"] == "folder"


def test_same_seed_same_bytes(recordings, prepared, tmp_path):
    folder, _ = recordings
    again = prepare_folder(settings(folder), tmp_path / "again")
    for name in ("waveforms.npy", "manifest.csv", "classes.json", "skipped.csv"):
        assert (again / name).read_bytes() == (prepared / name).read_bytes(), name
    other = prepare_folder(settings(folder, seed=1), tmp_path / "other")
    assert (
        pd.read_csv(other / "manifest.csv")["split"].tolist()
        != pd.read_csv(prepared / "manifest.csv")["split"].tolist()
    )


def test_labels_from_a_csv(tmp_path):
    """path + label (numbers and words mixed: read as text) + an extra column kept; a row naming a
    missing file and a file the CSV does not name are reported, the rest prepared."""
    for i in range(6):
        sf.write(tmp_path / f"n{i}.wav", tone(16000, 0.5, 200 + 50 * i), 16000)
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "sub/n6.wav", tone(8000, 0.5, 300), 8000)
    table = pd.DataFrame(
        {
            "path": ["n0.wav", "n1.wav", "n2.wav", "n3.wav", "n4.wav", "sub/n6.wav", "gone.wav"],
            "label": ["1", "two", "1", "two", "3", "3", "1"],
            "pitch": [60, 61, 62, 63, 64, 65, 66],
        }
    )
    table.to_csv(tmp_path / "labels.csv", index=False)
    out = prepare_folder(settings(tmp_path, labels={"csv": "labels.csv"}), tmp_path.parent / "csv_out")
    ds = load_dataset(out)
    assert ds.classes == ["1", "3", "two"]
    assert sorted(ds.manifest["path"]) == ["n0.wav", "n1.wav", "n2.wav", "n3.wav", "n4.wav", "sub/n6.wav"]
    assert ds.manifest.set_index("path").loc["n3.wav", "pitch"] == 63
    skipped = pd.read_csv(out / "skipped.csv").set_index("path")["reason"].to_dict()
    assert skipped == {"gone.wav": "listed in labels CSV but missing", "n5.wav": "not in labels CSV"}


def test_labels_none_is_one_class(tmp_path):
    for i in range(4):
        sf.write(tmp_path / f"x{i}.wav", tone(16000, 0.2, 300 + i), 16000)
    ds = load_dataset(prepare_folder(settings(tmp_path, labels="none"), tmp_path.parent / "none_out"))
    assert ds.classes == ["unlabelled"] and len(ds.manifest) == 4


def test_windows_cut_long_files_and_keep_each_file_in_one_split(tmp_path):
    folder = tmp_path / "rec"
    lengths = {}
    for i in range(30):
        label = ("a", "b")[i % 2]
        (folder / label).mkdir(parents=True, exist_ok=True)
        seconds = (1.2, 0.3, 2.0)[i % 3]
        sf.write(folder / label / f"f{i:02d}.wav", tone(22050, seconds, 200 + i), 22050)
        lengths[f"{label}/f{i:02d}.wav"] = seconds
    out = prepare_folder(settings(folder, windows=True), tmp_path / "out")
    man = load_dataset(out).manifest
    per_file = man.groupby("path").size().to_dict()
    # 0.5 s windows; a last piece shorter than half a clip is dropped: 1.2 s -> 2, 0.3 s -> 1, 2.0 s -> 4
    assert per_file == {p: {1.2: 2, 0.3: 1, 2.0: 4}[s] for p, s in lengths.items()}
    two = man[man["path"] == "a/f02.wav"]
    assert two["start_seconds"].tolist() == [0.0, 0.5, 1.0, 1.5] and two["id"].is_unique
    assert man.groupby("path")["split"].nunique().eq(1).all()
    assert set(man["split"]) == {"train", "valid", "test"}


def test_a_folder_with_no_usable_audio_is_a_clear_error(tmp_path):
    (tmp_path / "readme.txt").write_text("no audio here")
    with pytest.raises(DatasetError, match=r"no usable audio file in .*\.wav, \.flac.*it holds none"):
        prepare_folder(settings(tmp_path, labels="none"), tmp_path.parent / "nothing")
    (tmp_path / "bad.wav").write_bytes(b"\x00" * 100)
    with pytest.raises(DatasetError, match=r"skipped: \{'unreadable'"):
        prepare_folder(settings(tmp_path, labels="none"), tmp_path.parent / "nothing")
    assert not (tmp_path.parent / "nothing").exists()


def test_ffmpeg_decodes_what_soundfile_cannot(recordings, request):
    folder, good = recordings
    if "voice/take.mp3" not in good:
        announce(request.config, "folder", "SKIPPED: no MP3 made (no ffmpeg)")
        pytest.skip("no MP3 made")
    audio, rate = decode_with_ffmpeg(folder / "voice/take.mp3")
    assert rate == 22050 and audio.shape[0] == 1 and np.abs(audio).max() > 0.3


def test_listing_digest_changes_with_the_folder(tmp_path):
    sf.write(tmp_path / "a.wav", tone(16000, 0.1, 300), 16000)
    first = listing_digest(tmp_path)
    assert listing_digest(tmp_path) == first
    sf.write(tmp_path / "b.wav", tone(16000, 0.1, 300), 16000)
    assert listing_digest(tmp_path) != first


def overlay_config(tmp_path, path: str) -> dict:
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    config = merge_config(base, yaml.safe_load((REPO / "config/folder.yaml").read_text()))
    config["results"] = str(tmp_path / "results")
    config["folder"]["path"] = path
    return config


def test_overlay_refuses_a_folder_that_does_not_exist(tmp_path):
    overlay = yaml.safe_load((REPO / "config/folder.yaml").read_text())
    assert set(overlay) == {"datasets", "folder", "anomaly"} and overlay["datasets"] == [
        "synth_notes",
        "folder",
    ]
    assert overlay["anomaly"]["review"]["datasets"] == ["folder"]
    proc = run_snakemake(tmp_path, overlay_config(tmp_path, str(tmp_path / "nowhere")), "-n", check=False)
    assert proc.returncode != 0
    said = proc.stdout + proc.stderr
    assert "folder.path" in said and "is not an existing folder" in said


def test_overlay_dry_run_lists_prepare_folder(tmp_path):
    (tmp_path / "rec").mkdir()
    target = f"{tmp_path}/results/data/folder/skipped.csv"
    out = run_snakemake(tmp_path, overlay_config(tmp_path, str(tmp_path / "rec")), "-n", target).stdout
    assert "rule prepare_folder:" in out
