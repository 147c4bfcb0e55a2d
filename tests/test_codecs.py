"""Codec registry and round trips through the static ffmpeg: alignment, bitrates, the lossless
control, pydub equivalence and clear errors. Synthetic audio only; each test takes well under a second
or two."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from advmir.codecs import (
    CODECS,
    ClipError,
    CodecEngine,
    CodecSettingError,
    FFmpegNotFoundError,
    UnknownCodecError,
    find_ffmpeg,
    parse_setting,
    parse_settings,
    roundtrip_pydub,
)
from advmir.codecs.engine import RoundTrip, mp3_frame_bitrates
from conftest import best_lag

REPO = Path(__file__).resolve().parents[1]
SR = 16000

# The default grid and the paper grid proposed for config.yaml / config/paper.yaml.
GRID = {
    "flac": {"codec": "flac"},
    "mp3_32k": {"codec": "mp3", "bitrate_kbps": 32},
    "mp3_64k": {"codec": "mp3", "bitrate_kbps": 64},
    "mp3_96k": {"codec": "mp3", "bitrate_kbps": 96},
    "mp3_128k": {"codec": "mp3", "bitrate_kbps": 128},
    "mp3_160k": {"codec": "mp3", "bitrate_kbps": 160},
    "mp3_192k": {"codec": "mp3", "bitrate_kbps": 192, "sample_rate": 44100},
    "mp3_256k": {"codec": "mp3", "bitrate_kbps": 256, "sample_rate": 44100},
    "mp3_320k": {"codec": "mp3", "bitrate_kbps": 320, "sample_rate": 44100},
    "aac_32k": {"codec": "aac", "bitrate_kbps": 32},
    "aac_48k": {"codec": "aac", "bitrate_kbps": 48},
    "aac_64k": {"codec": "aac", "bitrate_kbps": 64},
    "aac_96k": {"codec": "aac", "bitrate_kbps": 96, "sample_rate": 44100},
    "aac_128k": {"codec": "aac", "bitrate_kbps": 128, "sample_rate": 44100},
    "vorbis_q0": {"codec": "vorbis", "quality": 0},
    "vorbis_q2": {"codec": "vorbis", "quality": 2},
    "vorbis_q4": {"codec": "vorbis", "quality": 4},
    "vorbis_q6": {"codec": "vorbis", "quality": 6},
    "vorbis_q8": {"codec": "vorbis", "quality": 8},
    "opus_12k": {"codec": "opus", "bitrate_kbps": 12},
    "opus_16k": {"codec": "opus", "bitrate_kbps": 16},
    "opus_24k": {"codec": "opus", "bitrate_kbps": 24},
    "opus_32k": {"codec": "opus", "bitrate_kbps": 32},
    "opus_48k": {"codec": "opus", "bitrate_kbps": 48},
    "opus_64k": {"codec": "opus", "bitrate_kbps": 64},
}


def _configured_settings() -> dict:
    """Every codec setting of the repo's configs too, so a setting added there is tested here."""
    settings = dict(GRID)
    for path in [REPO / "config.yaml", *sorted((REPO / "config").glob("*.yaml"))]:
        if path.exists():
            config = yaml.safe_load(path.read_text()) or {}
            settings.update(((config.get("codecs") or {}).get("settings")) or {})
    return settings


SETTINGS = _configured_settings()
LOSSY = sorted(name for name, spec in SETTINGS.items() if spec["codec"] != "flac")


def broadband_clips(n: int = 3, length: int = 8000, seed: int = 0) -> np.ndarray:
    """(n, length) float32: a chirp, a decaying harmonic tone and noise bursts, peak 0.8.

    Not periodic, so the cross-correlation with a shifted copy has one clear peak.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(length) / SR
    clips = []
    for _ in range(n):
        f0 = rng.uniform(100, 400)
        chirp = np.sin(2 * np.pi * (f0 + rng.uniform(500, 2500) * t) * t)
        tone = sum(np.sin(2 * np.pi * f0 * k * 1.01 * t) / k for k in range(1, 6)) * np.exp(-4 * t)
        bursts = rng.standard_normal(length) * (rng.random(length // 400).repeat(400)[:length] > 0.6)
        clip = 0.5 * chirp + 0.4 * tone + 0.2 * bursts
        clips.append(0.8 * clip / np.abs(clip).max())
    return np.asarray(clips, dtype=np.float32)


@pytest.fixture(scope="module")
def engine() -> CodecEngine:
    return CodecEngine(workers=2, batch_size=2)


@pytest.fixture(scope="module")
def clips() -> np.ndarray:
    return broadband_clips()


# ------------------------------------------------------------------------------ settings


def test_every_grid_setting_is_valid_at_16khz():
    settings = parse_settings(SETTINGS, SR)
    assert set(settings) == set(SETTINGS)


def assert_refused(name: str, spec: dict, fix: str) -> None:
    """parse_setting refuses the setting: the message starts with its name (and its codec, when
    known), then says what to fix (``fix``, a regular expression)."""
    with pytest.raises((CodecSettingError, UnknownCodecError), match=fix) as info:
        parse_setting(name, spec, SR)
    codec = f" ({spec['codec']}): " if spec["codec"] in CODECS else ": "
    assert str(info.value).startswith(f"codec setting '{name}'{codec}"), str(info.value)


@pytest.mark.parametrize(
    ("name", "spec", "fix"),
    [
        ("wav_1", {"codec": "wav"}, r"unknown codec 'wav'; known codecs: \['aac', 'flac'"),
        ("vorbis_q11", {"codec": "vorbis", "quality": 11}, r"Vorbis quality must be in \[-1, 10\], got 11"),
        ("mp3", {"codec": "mp3"}, r"MP3 \(LAME\) needs bitrate_kbps"),
        ("flac_x", {"codec": "flac", "level": 5}, r"unknown keys \['level'\]"),
        (
            "opus_8khz",
            {"codec": "opus", "bitrate_kbps": 24, "sample_rate": 44100},
            r"Opus cannot run at 44100 Hz",
        ),
    ],
)
def test_bad_settings_name_codec_setting_and_fix(name, spec, fix):
    assert_refused(name, spec, fix)


@pytest.mark.parametrize(
    ("codec", "kbps", "fix"),
    [
        ("opus", 1, r"Opus cannot take 1 kbps; 10 to 256"),
        ("mp3", 500, r"MP3 cannot take 500 kbps: the format stops at 320"),
        ("mp3", 192, r"silently write 160 kbps. Add `sample_rate: 44100`"),
        ("mp3", 100, r"MP3 at 16000 Hz cannot take 100 kbps; valid CBR bitrates there"),
        ("aac", 96, r"ffmpeg's AAC encoder cannot deliver 96 kbps at 16000 Hz"),
        ("vorbis", 128, r"Vorbis takes no bitrate_kbps \(use quality\)"),
    ],
)
def test_bad_bitrates_name_codec_setting_and_fix(codec, kbps, fix):
    """The setting ``{codec}_{kbps}k`` (``bitrate_kbps: kbps``) for audio at SR (16 kHz)."""
    assert_refused(f"{codec}_{kbps}k", {"codec": codec, "bitrate_kbps": kbps}, fix)


def test_parse_settings_lists_every_problem():
    with pytest.raises(CodecSettingError) as info:
        parse_settings({"opus_1k": {"codec": "opus", "bitrate_kbps": 1}, "x": {"codec": "ogg"}}, SR)
    assert "opus_1k" in str(info.value) and "'x': unknown codec 'ogg'" in str(info.value)


def test_unknown_codec_is_a_codec_setting_error_subclass_of_value_error():
    with pytest.raises(ValueError):
        parse_setting("x", {"codec": "wma"})


# ------------------------------------------------------------------------------ alignment


@pytest.mark.parametrize("name", LOSSY)
def test_decoded_clean_audio_is_sample_aligned(name, engine, clips):
    """Every lossy setting: same length as the original and best cross-correlation lag 0."""
    setting = parse_setting(name, SETTINGS[name], SR)
    result = engine.roundtrip(clips, SR, setting)
    assert result.decoded.shape == clips.shape and result.decoded.dtype == np.float32
    lags = [best_lag(result.decoded[i], clips[i]) for i in range(len(clips))]
    assert lags == [0] * len(clips), f"{name}: lags {lags}"
    assert result.honoured.all(), f"{name}: achieved {result.payload_kbps} kbps"
    # a real codec changes the audio, but keeps it recognisable
    snr = 10 * np.log10((clips**2).sum() / ((result.decoded - clips) ** 2).sum())
    assert 3 < snr < 80, f"{name}: SNR {snr:.1f} dB"


def test_flac_control_is_exact(engine, clips):
    setting = parse_setting("flac", {"codec": "flac"}, SR)
    result = engine.roundtrip(clips, SR, setting)
    # 32-bit FLAC keeps the 32-bit input: float audio comes back within 2**-32 (exact above 2**-8)
    assert np.abs(result.decoded - clips).max() <= 2.0**-32
    big = np.abs(clips) >= 2.0**-8
    np.testing.assert_array_equal(result.decoded[big], clips[big])
    pcm16 = (np.round(clips * 32767) / 32768).astype(np.float32)
    np.testing.assert_array_equal(engine.roundtrip(pcm16, SR, setting).decoded, pcm16)


# ------------------------------------------------------------------------------ bitrates


def test_achieved_bitrate_is_measured_from_the_bitstream(engine, clips):
    setting = parse_setting("mp3_64k", {"codec": "mp3", "bitrate_kbps": 64}, SR)
    result = engine.roundtrip(clips, SR, setting)
    duration = clips.shape[1] / SR
    for data, kbps, payload in zip(result.bitstreams, result.achieved_kbps, result.payload_kbps, strict=True):
        assert kbps == pytest.approx(len(data) * 8 / duration / 1000)
        assert payload <= kbps
        assert set(mp3_frame_bitrates(data)) == {64}


def test_lame_relabelling_is_detected_from_frame_headers(engine, clips):
    """LAME writes 160 kbps frames when asked for 192 kbps at 16 kHz; the frame check catches it."""
    import dataclasses

    honest = parse_setting("mp3_160k", {"codec": "mp3", "bitrate_kbps": 160}, SR)
    forged = dataclasses.replace(honest, name="mp3_192k", bitrate_kbps=192)  # bypasses the registry
    result = engine.roundtrip(clips[:1], SR, forged)
    assert set(mp3_frame_bitrates(result.bitstreams[0])) == {160}
    assert not result.honoured.any()


def test_same_bitstreams_whatever_the_batching(clips):
    setting = parse_setting("opus_24k", {"codec": "opus", "bitrate_kbps": 24}, SR)
    one = CodecEngine(workers=1, batch_size=1).roundtrip(clips, SR, setting)
    many = CodecEngine(workers=2, batch_size=3).roundtrip(clips, SR, setting)
    assert one.bitstreams == many.bitstreams
    np.testing.assert_array_equal(one.decoded, many.decoded)


@pytest.mark.parametrize("name", ["mp3_128k", "aac_64k", "vorbis_q2", "opus_24k", "flac"])
def test_engine_writes_the_bytes_pydub_writes(name, engine, clips):
    """The batched engine is pydub's path (same converter, same options) without per-clip start-ups."""
    setting = parse_setting(name, SETTINGS[name], SR)
    result = engine.roundtrip(clips[:1], SR, setting)
    decoded, data = roundtrip_pydub(clips[0], SR, setting)
    assert data == result.bitstreams[0]
    if setting.codec == "opus":  # pydub gets Opus at 48 kHz; resampled by scipy here, by soxr in the engine
        assert np.corrcoef(decoded[: clips.shape[1]], result.decoded[0])[0, 1] > 0.999
    else:  # pydub decodes to 16-bit WAV
        assert np.abs(decoded[: clips.shape[1]] - result.decoded[0]).max() <= 2.0**-14


# ------------------------------------------------------------------------------ failures


def test_corrupt_bitstream_names_codec_setting_and_clip(engine, clips):
    setting = parse_setting("mp3_128k", {"codec": "mp3", "bitrate_kbps": 128}, SR)
    streams = engine.encode(clips, SR, setting, ["a", "b", "c"])
    streams[1] = b"\x00" * 200
    with pytest.raises(
        ClipError, match=r"mp3 setting 'mp3_128k' \(MP3 \(LAME\) 128 kbps\), clip 'b': decoding failed"
    ):
        engine.decode(streams, SR, clips.shape[1], setting, ["a", "b", "c"])


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("mp3_128k", r"clip 'c': decoded \d+ samples, expected 8000: the bitstream is damaged"),
        ("vorbis_q4", r"clip 'c': decod(ed \d+ samples, expected 8000|ing failed: ffmpeg exited)"),
    ],
)
def test_truncated_bitstream_never_becomes_a_short_or_padded_clip(name, match, engine, clips):
    setting = parse_setting(name, SETTINGS[name], SR)
    streams = engine.encode(clips, SR, setting, ["a", "b", "c"])
    streams[2] = streams[2][: len(streams[2]) // 2]
    with pytest.raises(ClipError, match=match):
        engine.decode(streams, SR, clips.shape[1], setting, ["a", "b", "c"])


def test_invalid_input_clip_is_named(engine, clips):
    setting = parse_setting("opus_24k", {"codec": "opus", "bitrate_kbps": 24}, SR)
    bad = clips.copy()
    bad[1, 10] = np.nan
    with pytest.raises(ClipError, match=r"clip 'y': the clip has NaN or infinite samples"):
        engine.roundtrip(bad, SR, setting, ["x", "y", "z"])
    loud = clips.copy()
    loud[2] *= 2
    with pytest.raises(ClipError, match=r"clip 'z': samples outside \[-1, 1\] \(peak 1.6\)"):
        engine.roundtrip(loud, SR, setting, ["x", "y", "z"])


def test_no_ffmpeg_found_says_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(
        FFmpegNotFoundError, match=r"no ffmpeg found at '.*nowhere/ffmpeg'.*IMAGEIO_FFMPEG_EXE"
    ):
        find_ffmpeg(tmp_path / "nowhere" / "ffmpeg")
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(tmp_path / "missing-ffmpeg"))
    with pytest.raises(FFmpegNotFoundError, match="no ffmpeg found"):
        CodecEngine()


def test_ffmpeg_without_an_encoder_is_refused(tmp_path):
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\necho ' A....D flac  FLAC'\n")
    fake.chmod(0o755)
    with pytest.raises(FFmpegNotFoundError, match=r"lacks the encoder\(s\) \['libopus'\]"):
        find_ffmpeg(fake, ["flac", "libopus"])


def test_ffmpeg_failing_on_one_clip_is_reported_for_that_clip(tmp_path, clips):
    """An ffmpeg that fails whenever a given input is among its inputs: the batch fails, the engine
    retries clip by clip and names the clip at fault."""
    real = find_ffmpeg()
    flaky = tmp_path / "ffmpeg"
    marker = np.asarray(clips[1][:4])
    flaky.write_text(
        "#!/bin/sh\n"
        'for arg in "$@"; do case "$arg" in *.raw) '
        f'if [ -f "$arg" ] && cmp -s -n 16 "$arg" {tmp_path / "poison"}; '
        'then echo "boom on $arg" >&2; exit 1; fi;; '
        "esac; done\n"
        f'exec {real} "$@"\n'
    )
    flaky.chmod(0o755)
    from advmir.codecs.engine import to_int32

    to_int32(marker).tofile(tmp_path / "poison")
    engine = CodecEngine(str(flaky), workers=1, batch_size=3)
    setting = parse_setting("mp3_64k", {"codec": "mp3", "bitrate_kbps": 64}, SR)
    with pytest.raises(ClipError, match=r"clip 'second': encoding failed: ffmpeg exited with code 1: boom"):
        engine.roundtrip(clips, SR, setting, ["first", "second", "third"])
    assert shutil.which("cmp")


def test_config_sections_validate_against_the_stage_schema():
    import jsonschema

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "codecs.schema.yaml").read_text())
    wrapper = {
        "$schema": schema["$schema"],
        "definitions": schema["definitions"],
        "type": "object",
        "properties": {
            "codecs": {"$ref": "#/definitions/codecs"},
            "transfer": {"$ref": "#/definitions/transfer"},
        },
    }
    good = {
        "codecs": {
            "enabled": True,
            "threads": 1,
            "settings": GRID,
            "rooms": {"room": {"n_rooms": 6, "snr_db": 30}},
        },
        "transfer": {"attacks": None, "max_examples": 100, "heatmap_conditions": ["none", "mp3_128k"]},
    }
    jsonschema.validate(good, wrapper)
    bad = {"codecs": {"settings": {"x": {"codec": "wma"}}}}
    with pytest.raises(jsonschema.ValidationError, match="'wma' is not one of"):
        jsonschema.validate(bad, wrapper)


def _fake_roundtrip(n: int, kbps: float, honoured: bool = True) -> RoundTrip:
    return RoundTrip(
        decoded=np.full((n, 8), 0.25, np.float32),
        bitstreams=[b"x" * (10 + i) for i in range(n)],
        achieved_kbps=np.full(n, kbps + 1.0),
        payload_kbps=np.full(n, kbps),
        honoured=np.full(n, honoured),
        seconds=2.0,
    )


def test_check_honoured_names_the_matched_noise_control_when_only_it_fails():
    from advmir.codecs.jobs import check_honoured

    setting = parse_setting("mp3_32k", {"codec": "mp3", "bitrate_kbps": 32}, SR)
    check_honoured(setting, _fake_roundtrip(3, 32.0), _fake_roundtrip(3, 32.0))
    with pytest.raises(CodecSettingError, match=r"^matched-noise control: codec setting 'mp3_32k'"):
        check_honoured(setting, _fake_roundtrip(3, 32.0), _fake_roundtrip(3, 32.0, honoured=False))
    with pytest.raises(CodecSettingError, match=r"^codec setting 'mp3_32k'"):
        check_honoured(setting, _fake_roundtrip(3, 32.0, honoured=False), None)


def test_bitrate_rows_and_summary_carry_the_control_columns_only_with_a_control(engine):
    import pandas as pd

    from advmir.codecs.jobs import bitrate_rows, codec_summary
    from advmir.transfer.sources import SourceAudio

    examples = pd.DataFrame({"id": ["a", "b"], "row": [7, 3]})
    audio = np.zeros((2, 8), np.float32)
    setting = parse_setting("mp3_32k", {"codec": "mp3", "bitrate_kbps": 32}, SR)
    snr = np.array([10.0, 20.0])
    clean = bitrate_rows(SourceAudio(audio, examples, SR), setting, _fake_roundtrip(2, 32.0), None, snr, None,
                         dataset="d", source_name="clean")  # fmt: skip
    assert [r["row"] for r in clean] == [7, 3] and [r["bytes"] for r in clean] == [10, 11]
    assert clean[0]["duration_s"] == 0.0005 and clean[1]["snr_db"] == 20.0 and "noise_bytes" not in clean[0]
    source = SourceAudio(audio, examples, SR, noise=audio)
    result, control = _fake_roundtrip(2, 32.0), _fake_roundtrip(2, 33.0)
    rows = bitrate_rows(source, setting, result, control, snr, snr + 1, dataset="d", source_name="pgd")
    assert rows[1]["noise_payload_kbps"] == 33.0 and rows[1]["noise_decoded_snr_db"] == 21.0
    summary = codec_summary(source, setting, result, result, control, snr, snr + 1, dataset="d",
                            source_name="pgd", engine=engine)  # fmt: skip
    assert summary["clips_per_second"] == 2.0 and summary["noise_payload_kbps_median"] == 33.0
    assert summary["snr_db_median"] == 15.0 and summary["max_abs_error"] == 0.25
