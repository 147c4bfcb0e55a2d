"""A page of listenable examples for the report: clean, adversarial and amplified perturbation.

Snakemake's report shows a WAV only as a download link, so the examples are embedded as
``<audio>`` players (base64 data URIs) in one self-contained HTML page flagged for the report.
"""

from __future__ import annotations

import argparse
import base64
import html
from pathlib import Path

from advmir.artifacts import read_csv
from advmir.io import atomic_path
from advmir.runtime import setup_logging

KINDS = ("clean", "adversarial", "perturbation_x10")


def _player(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<audio controls preload="auto" src="data:audio/wav;base64,{data}"></audio>'


def listening_page(runs: list[Path], per_run: int = 1) -> str:
    """HTML with ``per_run`` examples of every attack run folder (…/{model}/{attack}/)."""
    rows = []
    for run in runs:
        model, attack = run.parent.name, run.name
        examples = read_csv(run / "examples.csv", columns=["id"]).set_index("id")
        ids = sorted({p.name.rsplit("_", 1)[0] for p in (run / "listen").glob("*_clean.wav")})
        for clip in ids[:per_run]:
            files = [run / "listen" / f"{clip}_{kind}.wav" for kind in KINDS]
            if not all(f.exists() for f in files):
                continue
            row = examples.loc[clip] if clip in examples.index else None
            verdict = (
                ""
                if row is None
                else (f"{'fooled' if bool(row['success']) else 'not fooled'}, SNR {row['snr_db']:.1f} dB")
            )
            cells = "".join(f"<td>{_player(f)}</td>" for f in files)
            rows.append(
                f"<tr><td>{html.escape(model)}</td><td>{html.escape(attack)}</td>"
                f"<td>{html.escape(clip)}<br><small>{html.escape(verdict)}</small></td>{cells}</tr>"
            )
    head = "".join(f"<th>{h}</th>" for h in ("model", "attack", "clip", *KINDS))
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Listen</title>"
        "<style>body{font-family:sans-serif}td,th{padding:4px 8px;border-bottom:1px solid #ddd}"
        "audio{width:220px}</style></head><body><h2>Adversarial examples: listen</h2>"
        f"<table><tr>{head}</tr>{''.join(rows)}</table></body></html>\n"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="advmir listening-page", description=__doc__)
    parser.add_argument("--runs", nargs="+", required=True, help="attack run folders (with listen/)")
    parser.add_argument("--per-run", type=int, default=1, help="examples per run")
    parser.add_argument("--out", required=True, help="HTML page to write")
    args = parser.parse_args(argv)
    setup_logging()
    page = listening_page([Path(r) for r in args.runs], args.per_run)
    with atomic_path(args.out, suffix=".html") as tmp:
        tmp.write_text(page)
    return 0
