"""Rewrite config/{nsynth,gtzan,good_sounds,esc50}.yaml from config.yaml, keeping each file's dataset block.

Each dataset config is config.yaml with the `datasets:` line and the `synth_notes` block swapped for
that dataset's block (tests/test_datasets_workflow.py fails when they drift). Run after editing
config.yaml:  python workflow/scripts/sync_dataset_configs.py
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NAMES = ("nsynth", "gtzan", "good_sounds", "esc50")


def block(text: str, key: str) -> str:
    """The top-level block of ``key`` with the comment lines right above it."""
    match = re.search(rf"((?:^#.*\n)*)^{key}:.*\n(?:^(?:[ \t].*|\s*)\n)*", text, flags=re.M)
    if not match:
        raise SystemExit(f"no top-level `{key}:` block found")
    return match.group(0).rstrip("\n") + "\n"


def main() -> None:
    base = (REPO / "config.yaml").read_text()
    synth = block(base, "synth_notes")
    body = base.split("\n", 2)[2] if base.startswith("# advmir default") else base
    for name in NAMES:
        path = REPO / "config" / f"{name}.yaml"
        own = path.read_text()
        header = "".join(own.splitlines(keepends=True)[:3])
        text = body.replace(synth, block(own, name)).replace("datasets: [synth_notes]", f"datasets: [{name}]")
        path.write_text(header + text)


if __name__ == "__main__":
    main()
