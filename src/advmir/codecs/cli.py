"""Command line of the codec stage: ``python -m advmir select-clean-clips | encode-with-codec |
simulate-room``.

One (source, setting) job each -> ``results/codecs/{dataset}/{source}/{setting}/``
(:mod:`advmir.codecs.jobs`); an attack source's matched-noise control (``--noise-audio``) goes
through the same setting.

- ``encode_with_codec``: a codec setting (``--codec-setting``) through ffmpeg (rules
  encode_with_codec, encode_clean_with_codec).
- ``simulate_room``: a room setting (``--room-setting``) (rules simulate_room, simulate_clean_room).
- ``transform_source``: every codec and room setting of one source, one after another
  (``codecs.jobs: source``; rules transform_source, transform_clean_source): the same folders.
- ``select_clean_clips``: the clean source's test clips (rule select_clean_clips), a seeded subset
  nested with the attack stage's evaluation subset.

Light imports only (no torch): the codec stage's rules run in the codecs environment.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

from advmir.errors import InputError, UsageError
from advmir.runtime import setup_logging

log = logging.getLogger(__name__)


class CodecJobError(InputError):
    """A job's source or setting cannot be encoded or played; names the source and the setting."""


@contextlib.contextmanager
def _job(args: argparse.Namespace, name: str) -> Iterator[None]:
    """The known failures of one (source, setting ``name``) job as one :class:`CodecJobError`."""
    from advmir.codecs.engine import ClipError, FFmpegNotFoundError
    from advmir.codecs.registry import CodecError
    from advmir.transfer.sources import SourceError

    if args.noise_audio and not args.audio:
        raise UsageError(
            f"{args.source} {name}: --noise-audio needs --audio (the clean source has no control)"
        )
    try:
        yield
    except (CodecError, ClipError, FFmpegNotFoundError, SourceError) as exc:
        raise CodecJobError(f"{args.source} {name}: {exc}") from None


def _parser(prog: str, description: str | None, *, named: bool = True) -> argparse.ArgumentParser:
    """The options every job of a source shares (and ``--name``, a per-setting job's)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--dataset-dir", required=True, help="prepared dataset (data contract)")
    parser.add_argument(
        "--examples",
        required=True,
        help="the source's examples.csv (attack) or any file with a `row` column (clean)",
    )
    parser.add_argument(
        "--audio", default=None, help="(N, T) .npy in the order of --examples; omit for clean audio"
    )
    parser.add_argument(
        "--source", required=True, help="source name: clean or MODEL/ATTACK (recorded in the tables)"
    )
    parser.add_argument(
        "--noise-audio",
        default=None,
        help="the attack run's matched_noise.npy ((N, T), the control of --audio row for row): sent "
        "through the same setting into decoded_noise.npy",
    )
    if named:
        parser.add_argument("--name", required=True, help="the setting's name (config key), e.g. mp3_128k")
    return parser


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    """The codec engine's options (:class:`advmir.codecs.engine.CodecEngine`)."""
    parser.add_argument("--workers", type=int, default=2, help="ffmpeg processes at once")
    parser.add_argument("--batch-size", type=int, default=25, help="clips per ffmpeg process")
    parser.add_argument("--ffmpeg", default=None, help="ffmpeg to use (default: imageio-ffmpeg's)")


def _add_subset_and_out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-examples", type=int, default=None, help="only the first N examples")
    parser.add_argument("--out-dir", required=True, help="results/codecs/{dataset}/{source}/{setting}")


def encode_with_codec(argv: list[str]) -> int:
    """Round-trip one source through one codec setting and keep the artifacts."""
    parser = _parser("advmir encode-with-codec", encode_with_codec.__doc__)
    parser.add_argument(
        "--codec-setting", required=True, help='JSON, e.g. {"codec": "mp3", "bitrate_kbps": 128}'
    )
    _add_subset_and_out(parser)
    _add_engine_options(parser)
    args = parser.parse_args(argv)
    setup_logging()

    from advmir.codecs.engine import CodecEngine
    from advmir.codecs.jobs import encode_source
    from advmir.codecs.registry import parse_setting
    from advmir.transfer.sources import load_source

    with _job(args, args.name):
        source = load_source(args.dataset_dir, args.examples, args.audio, args.max_examples, args.noise_audio)
        setting = parse_setting(args.name, json.loads(args.codec_setting), source.sample_rate)
        engine = CodecEngine(args.ffmpeg, workers=args.workers, batch_size=args.batch_size)
        encode_source(
            source,
            setting,
            args.out_dir,
            dataset=Path(args.dataset_dir).name,
            source_name=args.source,
            engine=engine,
        )
    return 0


def simulate_room(argv: list[str]) -> int:
    """Play one source in one room setting (impulse responses, distance, channel noise) and keep the
    artifacts."""
    parser = _parser("advmir simulate-room", simulate_room.__doc__)
    parser.add_argument("--room-setting", required=True, help='JSON, e.g. {"n_rooms": 6, "snr_db": 30}')
    _add_subset_and_out(parser)
    args = parser.parse_args(argv)
    setup_logging()

    from advmir.codecs.jobs import simulate_source
    from advmir.codecs.room import parse_room
    from advmir.transfer.sources import load_source

    with _job(args, args.name):
        source = load_source(args.dataset_dir, args.examples, args.audio, args.max_examples, args.noise_audio)
        setting = parse_room(args.name, json.loads(args.room_setting), source.sample_rate)
        simulate_source(
            source, setting, args.out_dir, dataset=Path(args.dataset_dir).name, source_name=args.source
        )
    return 0


def transform_source(argv: list[str]) -> int:
    """Send one source through every codec and room setting of ``--settings`` (``codecs.jobs:
    source``): the source is read once, each setting's folder is written as its own job would write
    it (``OUT_ROOT/{setting}/``), one after another."""
    parser = _parser("advmir transform-source", transform_source.__doc__, named=False)
    parser.add_argument(
        "--settings",
        required=True,
        help='JSON {"codecs": {name: codec setting}, "rooms": {name: room setting}}',
    )
    parser.add_argument("--max-examples", type=int, default=None, help="only the first N examples")
    parser.add_argument("--out-root", required=True, help="results/codecs/{dataset}/{source}")
    _add_engine_options(parser)
    args = parser.parse_args(argv)
    setup_logging()

    try:
        settings = json.loads(args.settings)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--settings is not JSON: {exc}") from None
    if not isinstance(settings, dict) or set(settings) - {"codecs", "rooms"}:
        raise UsageError('--settings must be a JSON object with the keys "codecs" and "rooms"')
    codecs, rooms = settings.get("codecs") or {}, settings.get("rooms") or {}
    if not codecs and not rooms:
        raise UsageError("--settings names no codec or room setting: nothing to do")

    from advmir.codecs.engine import CodecEngine
    from advmir.codecs.jobs import encode_source, simulate_source
    from advmir.codecs.registry import parse_setting
    from advmir.codecs.room import parse_room
    from advmir.transfer.sources import load_source

    dataset, root = Path(args.dataset_dir).name, Path(args.out_root)
    engine = CodecEngine(args.ffmpeg, workers=args.workers, batch_size=args.batch_size)
    with _job(args, "(loading)"):
        source = load_source(args.dataset_dir, args.examples, args.audio, args.max_examples, args.noise_audio)
    for position, (name, spec) in enumerate([*codecs.items(), *rooms.items()], start=1):
        log.info("setting %d of %d: %s", position, len(codecs) + len(rooms), name)
        with _job(args, name):
            if name in codecs:
                setting = parse_setting(name, spec, source.sample_rate)
                encode_source(
                    source, setting, root / name, dataset=dataset, source_name=args.source, engine=engine
                )
            else:
                room = parse_room(name, spec, source.sample_rate)
                simulate_source(source, room, root / name, dataset=dataset, source_name=args.source)
    return 0


def select_clean_clips(argv: list[str]) -> int:
    """Write the clean source's clips: a seeded subset of the test split (examples.csv: row, id,
    label_idx), nested with the attack stage's evaluation subset of the same seed."""
    parser = argparse.ArgumentParser(prog="advmir select-clean-clips", description=select_clean_clips.__doc__)
    parser.add_argument("--dataset-dir", required=True, help="prepared dataset (data contract)")
    parser.add_argument("--size", type=int, default=None, help="clips (default: every test clip)")
    parser.add_argument("--seed", type=int, required=True, help="the workflow's seed (the attack stage's)")
    parser.add_argument("--out", required=True, help="results/codecs/{dataset}/clean/examples.csv")
    args = parser.parse_args(argv)
    setup_logging()

    from advmir.datasets.contract import evaluation_rows, load_dataset
    from advmir.io import write_csv

    if args.size is not None and args.size < 1:
        raise UsageError(f"--size must be >= 1 (or omitted for every test clip), got {args.size}")
    dataset = load_dataset(args.dataset_dir)
    test_rows = dataset.split_indices("test")
    if len(test_rows) == 0:
        raise InputError(f"{args.dataset_dir} has no test clips: the clean source needs a test split")
    rows = evaluation_rows(test_rows, args.size, args.seed)
    table = dataset.manifest.iloc[rows][["id", "label_idx"]].assign(row=rows)
    write_csv(args.out, table[["row", "id", "label_idx"]])
    log.info("clean source: %d of %d test clips -> %s", len(rows), len(test_rows), args.out)
    return 0
