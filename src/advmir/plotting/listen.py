"""Pages of listenable clips for the report: clean, adversarial and amplified perturbation of each
attack; the top clips of a review list with their reasons.

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
    return _player_bytes(path.read_bytes())


def _player_bytes(wav: bytes) -> str:
    data = base64.b64encode(wav).decode("ascii")
    return f'<audio controls preload="auto" src="data:audio/wav;base64,{data}"></audio>'


def _page(title: str, heading: str, table: str, note: str = "") -> str:
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif}td,th{padding:4px 8px;border-bottom:1px solid #ddd;"
        "vertical-align:top}audio{width:220px}</style></head>"
        f"<body><h2>{html.escape(heading)}</h2>{note}<table>{table}</table></body></html>\n"
    )


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
    return _page("Listen", "Adversarial examples: listen", f"<tr>{head}</tr>{''.join(rows)}")


def review_page(dataset: Path, review: Path, top: int = 20) -> str:
    """HTML with the ``top`` clips of a review list (review.csv of ``dataset``): rank, clip (and its
    file), p_fault, the reasons in words, and a player of the clip as prepared (mono, resampled)."""
    import io

    import soundfile as sf

    from advmir.datasets.contract import load_dataset

    data = load_dataset(dataset)
    table = read_csv(review, columns=["rank", "id"], keep_default_na=False).sort_values("rank").head(top)
    row_of = {str(i): n for n, i in enumerate(data.manifest["id"].astype(str))}
    reasons = [c for c in table.columns if c.startswith("reason_")] or ["reason"]
    rows = []
    for _, r in table.iterrows():
        buf = io.BytesIO()
        sf.write(buf, data.float_waveforms([row_of[str(r["id"])]])[0], data.sample_rate, format="WAV")
        shown = "path" in r and str(r["path"]) != str(r["id"])  # a folder's clip id is often its path
        where = f"<br><small>{html.escape(str(r['path']))}</small>" if shown else ""
        p = f"{float(r['p_fault']):.2f}" if "p_fault" in r else f"{float(r['score']):.2f}"
        said = "<br>".join(html.escape(str(r[c])) for c in reasons if str(r.get(c, "")))
        rows.append(
            f"<tr><td>{int(r['rank'])}</td><td>{html.escape(str(r['id']))}{where}</td><td>{p}</td>"
            f"<td>{said}</td><td>{_player_bytes(buf.getvalue())}</td></tr>"
        )
    head = "".join(f"<th>{h}</th>" for h in ("rank", "clip", "p_fault", "why", "listen"))
    note = (
        f"<p>The {len(rows)} most suspicious clips of {html.escape(dataset.name)}, as prepared "
        "(mono, resampled, cut or padded); the full ranked list is review.csv.</p>"
    )
    return _page("Review", "Listen first: the most suspicious clips", f"<tr>{head}</tr>{''.join(rows)}", note)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="advmir listening-page", description=__doc__)
    parser.add_argument("--runs", nargs="+", help="attack run folders (with listen/)")
    parser.add_argument("--per-run", type=int, default=1, help="examples per run")
    parser.add_argument("--review", help="a review.csv: a page of its top clips instead (with --dataset)")
    parser.add_argument("--dataset", help="the prepared dataset the review list ranks")
    parser.add_argument("--top", type=int, default=20, help="clips of the review list to play")
    parser.add_argument("--out", required=True, help="HTML page to write")
    args = parser.parse_args(argv)
    setup_logging()
    if args.review:
        if not args.dataset:
            parser.error("--review needs --dataset")
        page = review_page(Path(args.dataset), Path(args.review), args.top)
    elif args.runs:
        page = listening_page([Path(r) for r in args.runs], args.per_run)
    else:
        parser.error("give --runs or --review")
    with atomic_path(args.out, suffix=".html") as tmp:
        tmp.write_text(page)
    return 0
