"""Real-dataset stage, offline: a local HTTP server (with Range support) serves tiny archives made
here in each dataset's own layout; the real download -> verify -> extract -> convert path runs."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from advmir.cli import main
from advmir.datasets import REAL_DATASETS, dataset_module, esc50
from advmir.datasets.contract import load_dataset
from advmir.datasets.download import (
    ChecksumError,
    Policy,
    RemoteFile,
    UnsafeArchiveError,
    extract,
    fetch,
)
from advmir.datasets.resample import fit_length, resample, to_mono

# ---------------------------------------------------------------------------------------------
# a tiny HTTP server with Range requests and an optional dropped connection


class Server:
    """Serves ``files`` (name -> bytes) on 127.0.0.1; ``drop_once[name] = n`` cuts the first
    response of ``name`` after n bytes (the full Content-Length is announced)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.drop_once: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.lstrip("/").split("?")[0]
                rng = self.headers.get("Range")
                server.requests.append((name, rng))
                if name not in server.files:
                    self.send_error(404, "Not Found")
                    return
                data = server.files[name]
                start = 0
                if rng:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                cut = server.drop_once.pop(name, None)
                self.wfile.write(body if cut is None else body[:cut])
                if cut is not None:
                    self.wfile.flush()
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


# ---------------------------------------------------------------------------------------------
# fixture archives in each dataset's real layout


def wav_bytes(seconds: float, rate: int, freq: float, channels: int = 1, fmt: str = "WAV") -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    tone = 0.5 * np.sin(2 * np.pi * freq * t)
    audio = np.stack([tone] * channels, axis=1) if channels > 1 else tone
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format=fmt, subtype="PCM_16")
    return buf.getvalue()


def tar_gz(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


FAMILIES = ["bass", "brass", "flute"]


def nsynth_archive(split: str, instruments: list[tuple[str, int]], pitches=(48, 60, 72)) -> bytes:
    """nsynth-<split>/examples.json + audio/<note_str>.wav; 3 notes per instrument, 0.25 s."""
    examples, entries = {}, {}
    for k, (family, number) in enumerate(instruments):
        instrument = f"{family}_acoustic_{number:03d}"
        for pitch in pitches:
            note = f"{instrument}-{pitch:03d}-100"
            examples[note] = {
                "note": k * 100 + pitch,
                "note_str": note,
                "instrument": number,
                "instrument_str": instrument,
                "pitch": pitch,
                "velocity": 100,
                "sample_rate": 16000,
                "qualities": [0] * 10,
                "qualities_str": ["bright"] if pitch > 70 else [],
                "instrument_family": ["bass", "brass", "flute", "guitar"].index(family),
                "instrument_family_str": family,
                "instrument_source": 0,
                "instrument_source_str": "acoustic",
            }
            entries[f"nsynth-{split}/audio/{note}.wav"] = wav_bytes(
                0.25, 16000, 110 * 2 ** ((pitch - 45) / 12)
            )
    entries[f"nsynth-{split}/examples.json"] = json.dumps(examples).encode()
    return tar_gz(entries)


def nsynth_files() -> dict[str, bytes]:
    valid = [
        (f, n)
        for f in FAMILIES
        for n in (10 + FAMILIES.index(f) * 3, 11 + FAMILIES.index(f) * 3, 12 + FAMILIES.index(f) * 3)
    ]
    return {
        "nsynth-test.jsonwav.tar.gz": nsynth_archive("test", valid[:3], pitches=(50, 62, 74)),
        "nsynth-valid.jsonwav.tar.gz": nsynth_archive("valid", valid),
    }


# blues: 29 train, 0 valid, 12 test; classical: 30 train, 0 valid, 11 test; blues 61..72 are test.
GTZAN_EXCERPTS = [
    "blues.00029",
    "blues.00000",
    "blues.00012",
    "classical.00030",
    "classical.00000",
    "classical.00011",
]


def gtzan_files(extra: dict[str, bytes] | None = None, ext: str = "wav") -> dict[str, bytes]:
    """genres.tar.gz with genres/<genre>/<genre>.000NN.wav, as the archive behind the published
    digests holds (``ext="au"``: Sun audio files in the same tree, as some copies hold)."""
    fmt = ext.upper()
    entries = {
        f"genres/{e.split('.')[0]}/{e}.{ext}": wav_bytes(1.0, 22050, 300 + 40 * i, fmt=fmt)
        for i, e in enumerate(GTZAN_EXCERPTS)
    }
    entries["genres/bextract_single.mf"] = f"genres/blues/blues.00000.{ext}\tblues\n".encode()
    # not part of the fault-filtered split (repetition documented by Sturm): must be left out
    entries[f"genres/pop/pop.00015.{ext}"] = wav_bytes(1.0, 22050, 500, fmt=fmt)
    return {"genres.tar.gz": tar_gz({**entries, **(extra or {})})}


def good_sounds_files() -> dict[str, bytes]:
    sounds, takes, packs, audio = {}, {}, {}, {}
    klasses = [
        "good-sound",
        "bad-pitch",
        "good-sound",
        "bad-timbre",
        "scale-good",
        "good-sound",
        "bad-attack",
        "good-sound",
    ]
    instruments = ["flute", "flute", "flute", "flute", "flute", "cello", "cello", "cello"]
    packs["1"] = {"id": 1, "name": "flute_almudena_reference", "description": "Play reference notes"}
    packs["2"] = {"id": 2, "name": "cello_margarita_reference", "description": "Play reference notes"}
    take_id = 1
    for sid, (klass, instrument) in enumerate(zip(klasses, instruments, strict=True), start=1):
        pack = 1 if instrument == "flute" else 2
        sounds[str(sid)] = {
            "id": sid, "instrument": instrument, "note": "C", "octave": 4, "dynamics": "mf",
            "player": "almudena" if pack == 1 else "margarita", "pack_id": pack, "klass": klass,
            "semitone": 48 + sid, "reference": 1, "pack_filename": f"{sid:04d}.wav",
        }  # fmt: skip
        for mic in ("akg", "neumann"):
            filename = f"sound_files/{packs[str(pack)]['name']}/{mic}/{sid:04d}.wav"
            takes[str(take_id)] = {"id": take_id, "microphone": mic, "filename": filename, "sound_id": sid}
            audio[f"good-sounds/{filename}"] = wav_bytes(
                0.3, 48000, 200 + 30 * sid, channels=2 if mic == "akg" else 1
            )
            take_id += 1
    return {
        "sounds.json": json.dumps(sounds).encode(),
        "takes.json": json.dumps(takes).encode(),
        "packs.json": json.dumps(packs).encode(),
        "good-sounds.zip": zip_bytes(audio),
    }


ESC_CLASSES = ["dog", "rooster", "rain"]
ESC_ZIP = esc50.REMOTE.filename  # GitHub's archive of the pinned commit
ESC_FOLDER = f"ESC-50-{esc50.COMMIT}"


def esc50_files(readme: bytes = b"# ESC-50\n") -> dict[str, bytes]:
    """GitHub's archive of the repository at the pinned commit: ESC-50-<commit>/{audio,meta}/..."""
    rows, entries = [], {}
    for fold in range(1, 6):
        for target, category in enumerate(ESC_CLASSES):
            name = f"{fold}-{1000 + fold * 10 + target}-A-{target}.wav"
            rows.append(f"{name},{fold},{target},{category},{target != 2},{1000 + fold * 10 + target},A")
            entries[f"{ESC_FOLDER}/audio/{name}"] = wav_bytes(0.4, 44100, 250 + 100 * target)
    entries[f"{ESC_FOLDER}/meta/esc50.csv"] = (
        "filename,fold,target,category,esc10,src_file,take\n" + "\n".join(rows) + "\n"
    ).encode()
    entries[f"{ESC_FOLDER}/README.md"] = readme
    return {ESC_ZIP: zip_bytes(entries)}


def run_download(server: Server, tmp: Path, dataset: str, settings: dict, *extra: str) -> int:
    """The command's exit status: 0, or 2 for a known bad input (one line, no traceback)."""
    return main(
        [
            "download-dataset",
            "--dataset", dataset,
            "--raw-dir", str(tmp / "raw" / dataset),
            "--out-dir", str(tmp / "data" / dataset),
            "--sample-rate", "16000",
            "--base-url", server.url,
            "--settings", json.dumps(settings),
            *extra,
        ]
    )  # fmt: skip


def pins(files: dict[str, bytes]) -> dict[str, str]:
    return {name: sha256(data) for name, data in files.items()}


# ---------------------------------------------------------------------------------------------
# full runs, one per dataset


def test_nsynth_full_run(server, tmp_path):
    server.files = nsynth_files()
    settings = {"clip_seconds": 0.25, "checksums": pins(server.files), "valid_fraction": 0.34}
    assert run_download(server, tmp_path, "nsynth", settings) == 0
    ds = load_dataset(tmp_path / "data/nsynth")
    m = ds.manifest
    assert ds.sample_rate == 16000 and ds.waveforms.shape == (36, 4000)
    assert ds.classes[:3] == ["bass", "brass", "flute"] and len(ds.classes) == 11
    assert set(m["split"]) == {"train", "valid", "test"}
    assert (m.loc[m.split == "test", "nsynth_split"] == "test").all()
    # instrument-disjoint train/valid carved out of NSynth-valid
    train, valid = (set(m.loc[m.split == s, "instrument"]) for s in ("train", "valid"))
    assert train and valid and not train & valid
    assert {"pitch", "velocity", "family", "source", "qualities", "source_sample_rate", "pad_samples"} <= set(
        m
    )
    assert (m["source_sample_rate"] == 16000).all() and (m["pad_samples"] == 0).all()
    assert ds.info["license"].startswith("Creative Commons Attribution 4.0")
    shared = set(m.loc[m.split == "test", "instrument"]) & train
    assert ds.info["instruments_shared_by_train_and_test"] == len(shared)
    assert np.abs(ds.float_waveforms(slice(0, 4))).max() > 0.3
    assert not list((tmp_path / "raw/nsynth").glob("*.part"))


@pytest.mark.parametrize("ext", ["wav", "au"])
def test_gtzan_full_run_fault_filtered_segments(server, tmp_path, ext):
    server.files = gtzan_files(ext=ext)
    settings = {"clip_seconds": 0.25, "checksums": pins(server.files)}
    assert run_download(server, tmp_path, "gtzan", settings) == 0
    ds = load_dataset(tmp_path / "data/gtzan")
    m = ds.manifest
    assert ds.waveforms.shape == (24, 4000)  # 6 excerpts x 4 segments of 0.25 s; pop.00015 left out
    assert "pop.00015" in ds.info["excerpts_left_out"]
    assert m.groupby("excerpt")["split"].nunique().max() == 1  # segments of an excerpt stay together
    expected = {
        "blues.00029": "train",
        "blues.00000": "valid",
        "blues.00012": "test",
        "classical.00011": "test",
    }
    for excerpt, split in expected.items():
        assert (m.loc[m.excerpt == excerpt, "split"] == split).all()
    assert (m["source_sample_rate"] == 22050).all()  # resampled from GTZAN's 22,050 Hz
    assert ds.classes[0] == "blues" and len(ds.classes) == 10


def test_gtzan_known_damaged_excerpt_is_skipped_others_fail(server, tmp_path, capsys):
    server.files = gtzan_files({"genres/jazz/jazz.00054.wav": b"not audio"})
    settings = {"clip_seconds": 0.5, "checksums": pins(server.files)}
    assert run_download(server, tmp_path, "gtzan", settings) == 0
    ds = load_dataset(tmp_path / "data/gtzan")
    assert "jazz.00054" not in set(ds.manifest["excerpt"]) and ds.info["excerpts_unreadable"] == [
        "jazz.00054"
    ]
    server.files = gtzan_files({"genres/jazz/jazz.00055.wav": b"not audio"})
    settings = {"clip_seconds": 0.5, "checksums": pins(server.files)}
    assert run_download(server, tmp_path / "2", "gtzan", settings) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "jazz.00055.wav" in err


def test_good_sounds_full_run_keeps_quality_and_bad_class(server, tmp_path):
    server.files = good_sounds_files()
    settings = {
        "clip_seconds": 0.5,
        "checksums": pins(server.files),
        "valid_fraction": 0.25,
        "test_fraction": 0.25,
    }
    assert run_download(server, tmp_path, "good_sounds", settings) == 0
    ds = load_dataset(tmp_path / "data/good_sounds")
    m = ds.manifest
    assert len(m) == 7  # 8 notes, one scale left out; first take (microphone) of each note
    assert set(m["quality"]) == {"good", "bad"}
    assert set(m.loc[m.quality == "bad", "bad_class"]) == {"pitch", "timbre", "attack"}
    assert m.loc[m.quality == "good", "bad_class"].fillna("").eq("").all()
    assert ds.classes == ["cello", "flute"]
    assert (m["source_sample_rate"] == 48000).all() and (m["source_channels"] == 2).all()  # akg takes: stereo
    assert (m["pad_samples"] == 0.2 * 16000).all()  # 0.3 s notes padded to 0.5 s
    assert ds.waveforms.shape == (7, 8000)


def test_good_sounds_all_takes_keep_a_note_in_one_split(server, tmp_path):
    server.files = good_sounds_files()
    settings = {"clip_seconds": 0.25, "checksums": pins(server.files), "takes": "all", "task": "quality"}
    assert run_download(server, tmp_path, "good_sounds", settings) == 0
    m = load_dataset(tmp_path / "data/good_sounds").manifest
    assert len(m) == 14 and set(m["microphone"]) == {"akg", "neumann"}
    assert m.groupby("sound_id")["split"].nunique().max() == 1
    assert list(load_dataset(tmp_path / "data/good_sounds").classes) == ["good", "bad"]


def test_esc50_full_run_folds(server, tmp_path):
    server.files = esc50_files()
    settings = {"clip_seconds": 0.5, "checksums": pins(server.files)}
    assert run_download(server, tmp_path, "esc50", settings) == 0
    ds = load_dataset(tmp_path / "data/esc50")
    m = ds.manifest
    assert ds.classes == ESC_CLASSES
    assert m.groupby("split")["fold"].unique().map(sorted).to_dict() == {
        "train": [1, 2, 3],
        "valid": [4],
        "test": [5],
    }
    assert (m["source_sample_rate"] == 44100).all() and (m["pad_samples"] == round(0.1 * 16000)).all()
    # verified files are neither downloaded nor hashed again
    n_requests = len(server.requests)
    assert run_download(server, tmp_path, "esc50", {**settings, "esc10_only": True}) == 0
    assert len(server.requests) == n_requests
    assert load_dataset(tmp_path / "data/esc50").classes == ["dog", "rooster"]


# ---------------------------------------------------------------------------------------------
# failures: resume, checksum, truncation, traversal, links, moved sources


def test_interrupted_download_resumes_from_part(server, tmp_path, capsys):
    server.files = esc50_files()
    size = len(server.files[ESC_ZIP])
    server.drop_once[ESC_ZIP] = size // 2
    settings = {"clip_seconds": 0.5, "checksums": pins(server.files)}
    assert run_download(server, tmp_path, "esc50", settings) == 2
    err = capsys.readouterr().err
    assert "run the same command again to resume" in err
    part = tmp_path / f"raw/esc50/{ESC_ZIP}.part"
    assert part.stat().st_size == size // 2
    assert not (tmp_path / "data/esc50").exists()
    assert run_download(server, tmp_path, "esc50", settings) == 0
    assert (ESC_ZIP, f"bytes={size // 2}-") in server.requests
    assert not part.exists() and (tmp_path / f"raw/esc50/{ESC_ZIP}").stat().st_size == size
    assert len(load_dataset(tmp_path / "data/esc50").manifest) == 15


def test_checksum_mismatch_stops_and_keeps_the_download(server, tmp_path, capsys):
    server.files = esc50_files()
    settings = {"clip_seconds": 0.5, "checksums": {ESC_ZIP: "sha256:" + "0" * 64}}
    assert run_download(server, tmp_path, "esc50", settings) == 2
    err = capsys.readouterr().err
    assert f"checksum mismatch for {ESC_ZIP}.part" in err and "resumes" in err
    assert "not the one you pinned" in err and f"replace your pin by `esc50: {{checksums: {{{ESC_ZIP}:" in err
    assert not (tmp_path / "data/esc50").exists()
    assert (tmp_path / f"raw/esc50/{ESC_ZIP}.part").exists()
    assert not (tmp_path / f"raw/esc50/{ESC_ZIP.removesuffix('.zip')}").exists()  # nothing extracted
    # the right digest (pinned): the kept bytes are used without downloading again
    n = len(server.requests)
    assert run_download(server, tmp_path, "esc50", {**settings, "checksums": pins(server.files)}) == 0
    assert [r for r in server.requests[n:] if r[1] is None] == []


def _backticked(text: str, start: str) -> str:
    """The first `...` span of ``text`` that begins with ``start``."""
    for span in text.split("`")[1::2]:
        if span.startswith(start):
            return span
    raise AssertionError(f"no `{start}...` in {text!r}")


def test_esc50_archive_rebuilt_upstream_says_what_changed_and_how_to_accept_it(server, tmp_path, capsys):
    """GitHub rebuilds the archive of the pinned commit (other bytes, other digest): the download
    stops before extraction, names the expected and the received digests, says the file changed
    upstream, and gives the config line that accepts it; that line, applied, finishes the run."""
    server.files = esc50_files()  # served in place of the real archive: its digest is not the pinned one
    got = sha256(server.files[ESC_ZIP])
    settings = {"clip_seconds": 0.5}
    assert run_download(server, tmp_path, "esc50", settings) == 2
    err = " ".join(capsys.readouterr().err.split())  # log lines may wrap
    assert f"checksum mismatch for {ESC_ZIP}.part" in err
    assert f"expected {esc50.REMOTE.checksums[0]} (published checksum)" in err
    assert f"got {got}" in err and "changed upstream" in err and "Nothing was extracted" in err
    raw = tmp_path / "raw/esc50"
    assert (raw / f"{ESC_ZIP}.part").exists() and not (raw / ESC_FOLDER).exists()
    assert not (tmp_path / "data/esc50").exists()
    # apply the advice literally: the config line it gives, then run again (no second download)
    accept = yaml.safe_load(_backticked(err, "esc50:"))["esc50"]
    assert accept == {"checksums": {ESC_ZIP: got}}
    n = len(server.requests)
    assert run_download(server, tmp_path, "esc50", {**settings, **accept}) == 0
    assert [r for r in server.requests[n:] if r[1] is None] == []
    assert len(load_dataset(tmp_path / "data/esc50").manifest) == 15
    marker = json.loads((raw / ".verified" / f"{ESC_ZIP}.json").read_text())
    assert marker["verified_by"].startswith("pinned checksum") and f"sha256:{marker['sha256']}" == got


def test_rebuilt_copy_of_a_recorded_archive_says_which_entry_to_delete(server, tmp_path, capsys):
    """Trust on first download (GTZAN's mirror): a later download of a rebuilt archive fails against
    the recorded digest, says so, and names the entry to delete; deleting it records the new one."""
    settings = {"clip_seconds": 0.5, "allow_unpublished_checksums": True}
    server.files = gtzan_files()
    first = sha256(server.files["genres.tar.gz"])
    assert run_download(server, tmp_path, "gtzan", settings) == 0
    raw = tmp_path / "raw/gtzan"
    records = raw / "checksums-recorded.json"
    assert json.loads(records.read_text()) == {"genres.tar.gz": first}
    # upstream rebuilds the archive; this machine downloads it again (the archive was deleted)
    server.files = gtzan_files({"genres/README": b"repacked"})
    second = sha256(server.files["genres.tar.gz"])
    (raw / "genres.tar.gz").unlink()
    assert run_download(server, tmp_path, "gtzan", settings) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "checksum mismatch for genres.tar.gz.part" in err
    assert f"expected {first} (checksum recorded on first download" in err and f"got {second}" in err
    assert "changed upstream since its first download" in err
    assert f'delete the "genres.tar.gz" entry from {records}' in err
    assert json.loads(records.read_text()) == {"genres.tar.gz": first}  # nothing accepted silently
    records.write_text("{}\n")
    assert run_download(server, tmp_path, "gtzan", settings) == 0
    assert json.loads(records.read_text()) == {"genres.tar.gz": second}


def test_a_pin_for_a_file_not_downloaded_is_named(server, tmp_path, capsys):
    """A pin left under the old archive name (ESC-50-master.zip) is said to be unused, not ignored."""
    server.files = esc50_files()
    settings = {"clip_seconds": 0.5, "checksums": {"ESC-50-master.zip": sha256(b"old"), **pins(server.files)}}
    assert run_download(server, tmp_path, "esc50", settings) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "esc50.checksums pins ['ESC-50-master.zip'], which this run does not download" in err


def test_published_checksum_path(tmp_path):
    data = b"hello, nsynth"
    md5 = hashlib.md5(data).hexdigest()
    src = tmp_path / "manual"
    src.mkdir()
    (src / "x.bin").write_bytes(data)
    good = RemoteFile("x.bin", "http://127.0.0.1:9/x.bin", (f"md5:{md5}",), extract=False)
    assert fetch(good, tmp_path / "raw", manual_dir=src) == src / "x.bin"
    bad = RemoteFile("x.bin", "http://127.0.0.1:9/x.bin", ("md5:" + "f" * 32,), extract=False)
    with pytest.raises(ChecksumError, match="left untouched"):
        fetch(bad, tmp_path / "raw2", manual_dir=src)


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_truncated_archive(server, tmp_path, capsys, kind):
    if kind == "tar.gz":
        data = nsynth_files()["nsynth-test.jsonwav.tar.gz"]
        server.files = {**nsynth_files(), "nsynth-test.jsonwav.tar.gz": data[: len(data) // 2]}
        dataset, folder = "nsynth", "nsynth-test.jsonwav"
    else:
        data = esc50_files()[ESC_ZIP]
        server.files = {ESC_ZIP: data[: len(data) * 2 // 3]}
        dataset, folder = "esc50", ESC_ZIP.removesuffix(".zip")
    # the digest pinned is that of the truncated bytes: verification passes, extraction must not
    settings = {"clip_seconds": 0.25, "checksums": pins(server.files)}
    assert run_download(server, tmp_path, dataset, settings) == 2
    err = capsys.readouterr().err
    assert "truncated or corrupt" in err
    raw = tmp_path / "raw" / dataset
    assert not (raw / folder).exists() and not list(raw.glob(".*.extracting"))
    assert not (tmp_path / "data" / dataset).exists()


def _evil_tar(member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    good = nsynth_files()["nsynth-test.jsonwav.tar.gz"]
    buf = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(good), mode="r:gz") as src,
        tarfile.open(fileobj=buf, mode="w:gz") as dst,
    ):
        for info in src:
            dst.addfile(info, src.extractfile(info))
        dst.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return buf.getvalue()


def _member(
    name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", data: bytes = b""
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_member("../evil.txt", data=b"x"), "path traversal"),
        (_member("nsynth-test/../../evil.txt", data=b"x"), "path traversal"),
        (_member("/tmp/advmir-evil.txt", data=b"x"), "absolute path"),
        (_member("nsynth-test/audio/link.wav", tarfile.SYMTYPE, "../../../../evil.txt"), "points outside"),
        (_member("nsynth-test/hard", tarfile.LNKTYPE, "../outside.txt"), "points outside"),
        (_member("nsynth-test/abs", tarfile.SYMTYPE, "/etc/passwd"), "points outside"),
    ],
)
def test_unsafe_tar_entries_are_refused(server, tmp_path, capsys, member, message):
    files = nsynth_files()
    files["nsynth-test.jsonwav.tar.gz"] = _evil_tar(member, b"x" if member.isfile() else b"")
    server.files = files
    assert run_download(server, tmp_path, "nsynth", {"clip_seconds": 0.25, "checksums": pins(files)}) == 2
    err = capsys.readouterr().err
    assert message in err and "refusing to extract" in err
    raw = tmp_path / "raw/nsynth"
    assert not (raw / "nsynth-test.jsonwav").exists() and not list(raw.glob(".*.extracting"))
    assert not (tmp_path / "data/nsynth").exists()
    assert not list(tmp_path.rglob("evil.txt")) and not Path("/tmp/advmir-evil.txt").exists()
    assert (raw / "nsynth-test.jsonwav.tar.gz").exists()  # the verified download stays


def test_link_then_write_through_it_is_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(_member("a/inner", tarfile.SYMTYPE, "."))  # stays inside: allowed by itself
        tar.addfile(_member("a/inner/x.txt", data=b"x"), io.BytesIO(b"x"))
    archive = tmp_path / "links.tar"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(UnsafeArchiveError, match="through the link"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_zip_traversal_and_outside_symlink_refused(tmp_path):
    for name, attr, payload in (("../evil.txt", 0o100644, b"x"), ("d/link", 0o120777, b"../../evil.txt")):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("d/ok.txt", b"fine")
            info = zipfile.ZipInfo(name)
            info.external_attr = attr << 16
            zf.writestr(info, payload)
        archive = tmp_path / "evil.zip"
        archive.write_bytes(buf.getvalue())
        with pytest.raises(UnsafeArchiveError):
            extract(archive, tmp_path / "out")
        assert not (tmp_path / "out").exists() and not list(tmp_path.rglob("evil.txt"))


def test_moved_source_says_where_to_get_it_then_uses_manual_dir(server, tmp_path, capsys):
    files = gtzan_files()
    server.files = {}  # the host answers 404, as a moved source does
    settings = {"clip_seconds": 0.5}
    manual = tmp_path / "manual"
    assert run_download(server, tmp_path, "gtzan", settings, "--manual-dir", str(manual)) == 2
    err = capsys.readouterr().err
    assert "HTTP 404" in err and "huggingface.co/datasets/marsyas/gtzan" in err
    assert f"{tmp_path / 'raw/gtzan'}/ or {manual}/" in err
    manual.mkdir()
    (manual / "genres.tar.gz").write_bytes(files["genres.tar.gz"])
    # this copy matches no published digest: refused unless pinned or explicitly trusted
    assert run_download(server, tmp_path, "gtzan", settings, "--manual-dir", str(manual)) == 2
    err = capsys.readouterr().err
    assert "matches no published checksum" in err and "allow_unpublished_checksums" in err
    trusted = {**settings, "allow_unpublished_checksums": True}
    assert run_download(server, tmp_path, "gtzan", trusted, "--manual-dir", str(manual)) == 0
    recorded = json.loads((tmp_path / "raw/gtzan/checksums-recorded.json").read_text())
    assert recorded == {"genres.tar.gz": sha256(files["genres.tar.gz"])}
    assert len(load_dataset(tmp_path / "data/gtzan").manifest) == 12
    assert [r for r in server.requests if r[0] == "genres.tar.gz"] == [("genres.tar.gz", None)]


def test_recorded_checksum_guards_later_copies(tmp_path):
    remote = RemoteFile("f.bin", "http://127.0.0.1:9/f.bin", unpublished_copies=True, extract=False)
    manual = tmp_path / "m"
    manual.mkdir()
    (manual / "f.bin").write_bytes(b"first")
    trust = Policy(allow_unpublished=True)
    fetch(remote, tmp_path / "raw", manual_dir=manual, policy=trust)
    (manual / "f.bin").write_bytes(b"second copy")
    with pytest.raises(ChecksumError, match="recorded on first download"):
        fetch(remote, tmp_path / "raw", manual_dir=manual, policy=trust)


def test_bad_settings_are_named(server, tmp_path, capsys):
    assert run_download(server, tmp_path, "esc50", {"folds": {"train": [1], "test": [1]}}) == 2
    err = capsys.readouterr().err
    assert "esc50.folds" in err
    assert run_download(server, tmp_path, "nsynth", {"archive": ["test"]}) == 2
    err = capsys.readouterr().err
    assert "unknown nsynth setting(s) ['archive']" in err
    assert server.requests == []


# ---------------------------------------------------------------------------------------------
# resampling


def test_resample_keeps_a_tone_and_its_level():
    rate = 44100
    t = np.arange(rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    out = resample(to_mono(np.stack([tone, tone])), rate, 16000)
    assert out.shape == (16000,) and out.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(out[1000:-1000] * np.hanning(14000)))
    assert abs(np.argmax(spectrum) * 16000 / 14000 - 1000) < 3
    assert abs(np.sqrt(np.mean(out[1000:-1000] ** 2)) - 0.5 / np.sqrt(2)) < 0.01


def test_resample_removes_content_above_the_new_nyquist():
    rate = 48000
    t = np.arange(rate) / rate
    high = np.sin(2 * np.pi * 11000 * t).astype(np.float32)  # above 8 kHz: must not alias down
    out = resample(high, rate, 16000)
    assert np.sqrt(np.mean(out[2000:-2000] ** 2)) < 0.01


def test_fit_length_pads_and_cuts():
    clip, rep = fit_length(np.ones(10, np.float32), 4)
    assert clip.shape == (4,) and rep.cut_samples == 6 and rep.pad_samples == 0
    clip, rep = fit_length(np.ones(3, np.float32), 5)
    assert clip.tolist() == [1, 1, 1, 0, 0] and rep.pad_samples == 2
    clip, rep = fit_length(np.ones(10, np.float32), 4, start=8)
    assert clip.tolist() == [1, 1, 0, 0] and rep.pad_samples == 2


def test_manifest_records_conversion(server, tmp_path):
    server.files = esc50_files()
    assert (
        run_download(server, tmp_path, "esc50", {"clip_seconds": 0.25, "checksums": pins(server.files)}) == 0
    )
    m = pd.read_csv(tmp_path / "data/esc50/manifest.csv")
    assert (m["cut_samples"] == round(0.15 * 16000)).all() and (m["source_channels"] == 1).all()
    info = json.loads((tmp_path / "data/esc50/classes.json").read_text())
    assert info["resampler"].startswith(("torchaudio", "soxr")) and info["clip_samples"] == 4000
    assert "Piczak" in info["citation"]
    assert list(info)[list(info).index("source") :][:5] == [
        "source",
        "title",
        "homepage",
        "license",
        "citation",
    ]


@pytest.mark.parametrize("name", REAL_DATASETS)
def test_each_dataset_declares_its_source_once(name):
    """classes.json's source keys come from the module's SOURCE, in one order for every dataset."""
    module = dataset_module(name)
    source = module.SOURCE
    assert source.name == module.NAME == name
    assert source.info() == {
        "source": name,
        "title": module.TITLE,
        "homepage": module.HOMEPAGE,
        "license": module.LICENSE,
        "citation": module.CITATION,
    }
    assert all(source.info().values()) and source.size == module.SIZE


# ------------------------------------------------------------------------------ convert's pieces


def test_good_sounds_take_rows_count_what_they_leave_out(tmp_path):
    from advmir.datasets.good_sounds import take_rows

    sounds = {
        str(i): {"id": i, "instrument": "flute", "klass": klass, "pack_id": 1, "semitone": 60}
        for i, klass in enumerate(["good-sound", "scale-good", "", "bad-pitch", "bad-timbre"], start=1)
    }
    takes = {
        str(t): {"id": t, "sound_id": t, "filename": f"{t}.wav", "microphone": "akg"} for t in range(1, 7)
    }
    for t in (1, 2, 3, 5):
        (tmp_path / f"{t}.wav").write_bytes(b"")
    rows, skipped = take_rows(sounds, takes, {"1": {"name": "p"}}, tmp_path, include_scales=False)
    assert [r["id"] for r in rows] == ["take00001", "take00005"]  # take 6 has no sound
    assert [(r["quality"], r["bad_class"], r["pack"]) for r in rows] == [
        ("good", "", "p"),
        ("bad", "timbre", "p"),
    ]
    assert skipped == {"no good/bad tag": 1, "scale": 1, "missing file": 1}
    rows, skipped = take_rows(sounds, takes, {}, tmp_path, include_scales=True)
    assert [r["take_id"] for r in rows] == [1, 2, 5] and skipped["scale"] == 0 and rows[0]["pack"] == ""


def test_good_sounds_take_manifest_keeps_the_first_take_of_a_note():
    from advmir.datasets.good_sounds import options, take_manifest

    rows = [
        {
            "id": f"take{t:05d}",
            "sound_id": s,
            "take_id": t,
            "instrument": inst,
            "quality": q,
            "path": Path(f"{t}"),
        }
        for t, s, inst, q in [(4, 2, "cello", "bad"), (1, 1, "flute", "good"), (2, 1, "flute", "good")]
    ]
    table, manifest, classes, column = take_manifest(rows, options({"task": "instrument"}), 0)
    assert table["take_id"].tolist() == [1, 4] and (classes, column) == (["cello", "flute"], "instrument")
    assert list(manifest.columns[:4]) == ["id", "split", "label", "label_idx"] and "path" not in manifest
    assert manifest["label_idx"].tolist() == [1, 0]
    table, manifest, classes, column = take_manifest(rows, options({"task": "quality", "takes": "all"}), 0)
    assert table["take_id"].tolist() == [4, 1, 2] and classes == ["good", "bad"]
    assert manifest["label_idx"].tolist() == [1, 0, 0]


def test_gtzan_excerpt_splits_random_and_fault_filtered():
    from advmir.datasets.gtzan import excerpt_splits, options
    from advmir.datasets.prepare import group_split

    ids = sorted([*GTZAN_EXCERPTS, "pop.00015"])
    opts = options({"split": "random"})
    splits, left_out, description = excerpt_splits(ids, opts, 3)
    genres = [i.split(".")[0] for i in ids]
    assert splits == list(group_split(ids, genres, opts["valid_fraction"], opts["test_fraction"], 3))
    assert left_out == [] and description.startswith("random: seeded by excerpt")
    splits, left_out, description = excerpt_splits(ids, options({"split": "fault_filtered"}), 3)
    assert "pop.00015" in left_out and splits[ids.index("pop.00015")] is None
    assert description.startswith("fault_filtered")


def test_gtzan_segment_rows_cut_clips_and_skip_only_known_damaged_excerpts(tmp_path):
    from advmir.datasets.gtzan import segment_rows

    (tmp_path / "rock.00001.wav").write_bytes(wav_bytes(2.1, 8000, 300))
    (tmp_path / "jazz.00054.wav").write_bytes(b"not audio")
    (tmp_path / "pop.00002.wav").write_bytes(b"not audio")
    excerpts = {p.stem: p for p in tmp_path.iterdir()}
    ids = ["jazz.00054", "pop.00002", "rock.00001"]
    rows, jobs, skipped = segment_rows(excerpts, ids, ["test", None, "train"], 1.0)
    assert [r["id"] for r in rows] == ["rock.00001-00", "rock.00001-01"] and skipped == ["jazz.00054"]
    assert rows[1]["start_seconds"] == 1.0 and rows[1]["label_idx"] == 9 and rows[1]["split"] == "train"
    assert len(jobs) == 1 and jobs[0].rows == (0, 1) and jobs[0].starts == (0.0, 1.0)
    with pytest.raises(ValueError, match=r"pop\.00002\.wav; the archive verified"):
        segment_rows(excerpts, ids, ["test", "valid", "train"], 1.0)


def test_nsynth_assign_splits_divides_valid_by_instrument():
    from advmir.datasets.nsynth import assign_splits, options
    from advmir.datasets.prepare import group_split

    notes = pd.DataFrame(
        {
            "nsynth_split": ["test"] * 2 + ["valid"] * 8,
            "instrument_str": ["t0", "t1"] + [f"v{i // 2}" for i in range(8)],
            "instrument_family": [0, 1, 0, 0, 0, 0, 1, 1, 1, 1],
        }
    )
    mode = assign_splits(notes, options({"archives": ["test", "valid"], "valid_fraction": 0.5}), 0)
    assert mode.startswith("valid_as_train") and notes["split"].iloc[:2].tolist() == ["test", "test"]
    valid = notes.iloc[2:]
    expected = group_split(valid["instrument_str"], valid["instrument_family"], 0.5, 0.0, 0)
    assert valid["split"].tolist() == ["valid" if s == "test" else s for s in expected]
    assert (valid.groupby("instrument_str")["split"].nunique() == 1).all()
    notes = notes.drop(columns="split")
    mode = assign_splits(notes, options({"archives": ["test", "train", "valid"]}), 0)
    assert mode.startswith("official") and notes["split"].equals(notes["nsynth_split"].rename("split"))
