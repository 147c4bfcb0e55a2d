"""Codec round-trip speed: the codec stage's batched engine against an in-process PyAV round trip.

Both encode the same clips with LAME at the same MP3 setting, keep each clip's bitstream, and
decode it back to float32 at the clip's sample rate. The stage's number is round trips per
second of :class:`advmir.codecs.CodecEngine` (pydub's ffmpeg, many clips per process, ``workers``
processes at once); the reference is PyAV (libav inside the Python process, no process start-up
at all), one clip after another. Target: ratio >= 0.8.

    .venv/bin/python benchmarks/codec_speed.py                       # 200 synthetic 1 s clips
    .venv/bin/python benchmarks/codec_speed.py --dataset-dir results/data/synth_notes --clips 200

Runs are interleaved (stage, PyAV, stage, PyAV, ...) so that load from other users of a shared
machine falls on both; the median of the repeats is reported.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time

import numpy as np

from advmir.codecs import CodecEngine, parse_setting
from advmir.snr import energy_ratio_db


def synthetic_clips(n: int, sample_rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """(n, T) float32 decaying harmonic tones with a little noise, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    clips = np.empty((n, t.size), dtype=np.float32)
    for i in range(n):
        f0 = rng.uniform(80, 1000)
        tone = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 6))
        clip = tone * np.exp(-t * rng.uniform(1, 6)) + 0.01 * rng.standard_normal(t.size)
        clips[i] = 0.8 * clip / np.abs(clip).max()
    return clips


def pyav_roundtrip(clip: np.ndarray, sample_rate: int, bitrate_kbps: int) -> tuple[np.ndarray, bytes]:
    """One clip through PyAV: libmp3lame into an in-memory MP3 file, then mp3float back."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=sample_rate, layout="mono")
        stream.bit_rate = bitrate_kbps * 1000
        frame = av.AudioFrame.from_ndarray(clip[None, :], format="flt", layout="mono")
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    data = buffer.getvalue()
    pieces = []
    with av.open(io.BytesIO(data), "r", format="mp3") as container:
        for frame in container.decode(audio=0):
            pieces.append(frame.to_ndarray().reshape(-1))
    return np.concatenate(pieces).astype(np.float32), data


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-error ratio of ``test`` against ``reference`` over all clips, in dB."""
    signal, error = np.sum(reference.astype(np.float64) ** 2), np.sum((test - reference) ** 2.0)
    return float(energy_ratio_db(signal, error))


def lame_version(data: bytes) -> str:
    """The LAME version written in an MP3's encoder tag (the static ffmpeg and PyAV bundle different ones)."""
    start = data.find(b"LAME")
    if start < 0:
        return "unknown"
    return data[start : start + 20].split(b"\xaa")[0].split(b"U")[0].decode("ascii", "replace").strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset-dir", help="take the first --clips test clips of a prepared dataset")
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=1.0, help="clip length of synthetic clips")
    parser.add_argument("--sample-rate", type=int, default=16000, help="of synthetic clips")
    parser.add_argument("--bitrate", type=int, default=128, help="MP3 kbps")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="also write the result as JSON here")
    args = parser.parse_args(argv)

    if args.dataset_dir:
        from advmir.datasets.contract import load_dataset

        dataset = load_dataset(args.dataset_dir)
        rows = dataset.split_indices("test")[: args.clips]
        clips, sample_rate = dataset.float_waveforms(rows), dataset.sample_rate
        source = f"{args.dataset_dir} (test rows {rows[0]}..{rows[-1]})"
    else:
        sample_rate = args.sample_rate
        clips = synthetic_clips(args.clips, sample_rate, args.seconds)
        source = "synthetic"
    setting = parse_setting(
        f"mp3_{args.bitrate}k", {"codec": "mp3", "bitrate_kbps": args.bitrate}, sample_rate
    )
    engine = CodecEngine(workers=args.workers, batch_size=args.batch_size)
    n, length = clips.shape

    # Warm-up: page in ffmpeg and libav once, outside the timings.
    engine.roundtrip(clips[:4], sample_rate, setting)
    for clip in clips[:4]:
        pyav_roundtrip(clip, sample_rate, args.bitrate)

    stage_rates, pyav_rates = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = engine.roundtrip(clips, sample_rate, setting)
        stage_rates.append(n / (time.perf_counter() - start))
        start = time.perf_counter()
        reference = [pyav_roundtrip(clip, sample_rate, args.bitrate) for clip in clips]
        pyav_rates.append(n / (time.perf_counter() - start))

    lengths = {len(decoded) for decoded, _ in reference}
    pyav_decoded = np.stack([decoded[:length] for decoded, _ in reference]) if lengths == {length} else None
    stage, pyav = statistics.median(stage_rates), statistics.median(pyav_rates)
    report = {
        "clips": n,
        "clip_samples": length,
        "sample_rate": sample_rate,
        "source": source,
        "setting": setting.label(),
        "cores": os.cpu_count(),
        "workers": args.workers,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "stage_clips_per_s": round(stage, 1),
        "pyav_clips_per_s": round(pyav, 1),
        "ratio": round(stage / pyav, 3),
        "target_ratio": 0.8,
        "stage_runs": [round(r, 1) for r in stage_rates],
        "pyav_runs": [round(r, 1) for r in pyav_rates],
        "pyav_decoded_lengths": sorted(lengths),
        # Same encoder, same quality: the SNR of each decoded set against the original clips.
        "snr_db_stage": round(snr_db(clips, result.decoded), 2),
        "snr_db_pyav": None if pyav_decoded is None else round(snr_db(clips, pyav_decoded), 2),
        "mean_achieved_kbps": round(float(result.achieved_kbps.mean()), 1),
        "lame_stage": lame_version(result.bitstreams[0]),
        "lame_pyav": lame_version(reference[0][1]),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    return 0 if report["ratio"] >= 0.8 else 1


if __name__ == "__main__":
    sys.exit(main())
