"""``python -m advmir verify-results [RESULTS] [--config CONFIG]``: check every artifact of a results folder.

Each artifact is checked as the stage that reads it would check it (:mod:`advmir.artifacts`: its
digest when it has one, and its structure: shape, dtype, length, finite values, columns, keys), and
the files of one output agree with each other (rows of ``adversarial.npy`` = rows of
``examples.csv``, ...). An artifact is reported *missing* when its folder exists without it, when its
digest file remains without it, or when an output built from it exists (a deleted ``model.ckpt``
while its attack runs or ``clean_accuracy.csv`` exist): Snakemake then says "Nothing to be done",
since the outputs downstream are newer than everything still there.

Each damaged or missing artifact is printed on one line with what is wrong and the command that
rebuilds it and everything built from it (``snakemake --forcerun FILE``); the exit status is 1 when
anything is damaged or missing, else 0.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from advmir.artifacts import (
    DIGEST_SUFFIX,
    ArtifactError,
    check_digest,
    load_npz,
    load_torch,
    open_npy,
    read_csv,
    read_json,
    rebuild_command,
    sidecar,
)

DATASET_FILES = ("waveforms.npy", "manifest.csv", "classes.json")
MODEL_FILES = ("model.ckpt", "metrics.json", "history.csv")
ATTACK_FILES = ("adversarial.npy", "matched_noise.npy", "examples.csv", "attack.json")
DECODED = ("decoded.npy", "decoded_noise.npy")
# folders of a results folder that hold no stage artifacts (logs, timings, figures, raw downloads)
SKIPPED = {"logs", "benchmarks", "figures", "raw"}


class Verification:
    """The artifacts of one results folder, each checked once; the problems are collected.

    Args:
        root: the results folder.
        keep_decoded: whether decoded audio is kept (``codecs.keep_decoded``); when False a missing
            ``decoded.npy`` / ``decoded_noise.npy`` is expected (Snakemake removed it as temporary).
    """

    def __init__(self, root: str | Path, keep_decoded: bool = True) -> None:
        self.root = Path(root)
        self.keep_decoded = keep_decoded
        self.problems: dict[Path, str] = {}
        self.results: dict[Path, Any] = {}
        self.with_digest = 0
        self.structure_only = 0

    # ------------------------------------------------------------------------------------ checks
    def check(self, path: Path, reader: Callable[..., Any], **expect: Any) -> Any:
        """Read ``path`` with ``reader`` (a reader of :mod:`advmir.artifacts`) once; its result, or
        None when the file is missing or damaged (recorded as a problem)."""
        if path in self.results or path in self.problems:
            return self.results.get(path)
        try:
            result = reader(path, **expect)
        except ArtifactError as exc:
            self.problems[path] = exc.problem
            return None
        if sidecar(path).exists():
            self.with_digest += 1
        else:
            self.structure_only += 1
        # arrays are opened memory-mapped: keep only a marker, not thousands of maps
        self.results[path] = True if reader is open_npy else result
        return self.results[path]

    def expect(self, path: Path, because: Path) -> None:
        """``because`` was built from ``path``: report ``path`` when it is missing."""
        if not path.exists() and path not in self.problems:
            self.problems[path] = f"is missing, but {because} was built from it"

    def tolerated(self, path: Path) -> bool:
        """A missing file that is expected to be missing (temporary decoded audio)."""
        return not self.keep_decoded and path.name in DECODED and not path.exists()

    # ----------------------------------------------------------------------------- output kinds
    def dataset(self, folder: Path, because: Path | None = None) -> None:
        from advmir.datasets.contract import REQUIRED_COLUMNS, WAVEFORM_DTYPES

        if because is not None and not folder.exists():
            for name in DATASET_FILES:
                self.expect(folder / name, because)
            return
        manifest = self.check(folder / "manifest.csv", read_csv, columns=REQUIRED_COLUMNS)
        self.check(folder / "classes.json", read_json, keys=("classes", "sample_rate"))
        rows = len(manifest) if manifest is not None else None
        self.check(folder / "waveforms.npy", open_npy, dtypes=WAVEFORM_DTYPES, rows=rows, peak=1.0)

    def model(self, folder: Path, because: Path | None = None) -> None:
        from advmir.models.zoo import load_checkpoint

        if because is not None and not folder.exists():
            for name in MODEL_FILES:
                self.expect(folder / name, because)
            return
        self.check(folder / "model.ckpt", load_checkpoint)
        self.check(folder / "metrics.json", read_json, keys=("classes", "test_accuracy"))
        self.check(folder / "history.csv", read_csv)

    def attack(self, run: Path) -> None:
        models = self.root / "models" / run.parent.parent.name
        examples = self.check(run / "examples.csv", read_csv, columns=("id", "row", "success"))
        meta = self.check(run / "attack.json", read_json, keys=("model", "attack", "threat"))
        rows = len(examples) if examples is not None else None
        for name in ("adversarial.npy", "matched_noise.npy"):
            self.check(run / name, open_npy, rows=rows)
        if (run / "listen" / "panel.npz").exists() or sidecar(run / "listen" / "panel.npz").exists():
            self.check(run / "listen" / "panel.npz", load_npz)
        self.model(models / run.parent.name, run / "attack.json")
        if meta and meta.get("surrogate"):
            self.model(models / str(meta["surrogate"]), run / "attack.json")

    def codec(self, folder: Path, source: str) -> None:
        setting = self.check(folder / "setting.json", read_json, keys=("kind", "n_clips", "clip_samples"))
        shape = {"rows": setting["n_clips"], "cols": setting["clip_samples"]} if setting else {}
        decoded = ["decoded.npy"] + (
            ["decoded_noise.npy"] if setting and setting.get("noise_control") else []
        )
        for name in decoded:
            if not self.tolerated(folder / name):
                self.check(folder / name, open_npy, **shape)
        if setting and setting["kind"] == "room":
            self.check(folder / "channel.csv", read_csv, columns=("id",))
            self.check(folder / "rooms.npz", load_npz)
        elif setting:
            self.check(folder / "bitrates.csv", read_csv, columns=("id",))
        if source != "clean":
            run = self.root / "attacks" / folder.parent.parent.parent.name / source
            for name in ATTACK_FILES:
                self.expect(run / name, folder / "setting.json")

    def transfer(self, table: Path) -> None:
        frame = self.check(table, read_csv, columns=("source_model", "target_model"), dtype={"id": str})
        if frame is None:
            return
        dataset, attack, condition = table.parent.parent.name, table.parent.name, table.stem
        for target in sorted(set(frame["target_model"].astype(str))):
            self.model(self.root / "models" / dataset / target, table)
        for source in sorted(set(frame["source_model"].astype(str))):
            if condition == "none":
                if source != "clean":
                    for name in ("adversarial.npy", "matched_noise.npy", "examples.csv"):
                        self.expect(self.root / "attacks" / dataset / source / attack / name, table)
                continue
            run = "clean" if source == "clean" else f"{source}/{attack}"
            folder = self.root / "codecs" / dataset / run / condition
            for name in DECODED[: 1 if source == "clean" else 2]:
                if self.keep_decoded:
                    self.expect(folder / name, table)

    def defense(self, folder: Path) -> None:
        """One robust evaluation (results/defenses/{dataset}/{model}/) and the checkpoints it was built
        from (the model's, and a defended model's undefended twin's)."""
        models = self.root / "models" / folder.parent.name
        meta = self.check(folder / "robustness.json", read_json, keys=("model", "budgets_db"))
        self.check(folder / "robustness.csv", read_csv, columns=("budget_db", "attack", "robust_accuracy"))
        self.check(folder / "clips.csv", read_csv, columns=("id", "budget_db", "attack", "robust"))
        self.check(folder / "sanity.csv", read_csv)
        self.model(models / folder.name, folder / "robustness.json")
        if meta and meta.get("base_model") not in (None, folder.name):
            self.model(models / str(meta["base_model"]), folder / "robustness.json")

    def transform(self, folder: Path) -> None:
        """One transformation defense (results/defenses/{dataset}/transforms/{name}/)."""
        self.check(folder / "transform.json", read_json, keys=("transform", "spec"))
        self.check(folder / "transform.csv", read_csv, columns=("budget_db", "scoring", "robust_accuracy"))
        self.check(folder / "summary.csv", read_csv, columns=("transform", "budget_db", "verdict"))

    def smoothing(self, folder: Path) -> None:
        """One smoothed classifier (results/defenses/{dataset}/smoothing/{name}/) and the checkpoint of
        the model it smooths."""
        meta = self.check(folder / "smoothing.json", read_json, keys=("name", "model", "sigma"))
        self.check(folder / "certified.csv", read_csv, columns=("id", "correct", "radius", "norm"))
        if meta:
            self.model(self.root / "models" / folder.parent.parent.name / str(meta["model"]), folder)

    def anomaly(self, folder: Path) -> None:
        for split in ("test", "valid"):
            if (folder / f"corrupted_{split}").exists() or (folder / "scores").exists():
                self.dataset(folder / f"corrupted_{split}", because=folder / "scores")
        for name in ("autoencoder", "multitask"):
            ckpt = folder / name / "model.ckpt"
            if (folder / name).exists():
                self.check(ckpt, load_torch)
            if (folder / "scores" / f"{name}.csv").exists():
                self.expect(ckpt, folder / "scores" / f"{name}.csv")
        for sub in ("scores", "valid_scores"):
            for table in sorted((folder / sub).glob("*.csv")):
                self.check(table, read_csv, columns=("id", "score"), keep_default_na=False)
        for table in sorted(folder.glob("*.csv")):
            self.check(table, read_csv)

    # ------------------------------------------------------------------------------------ the walk
    def run(self) -> Verification:
        """Check every artifact under the results folder; returns self."""
        root = self.root
        for dataset_dir in _dirs(root / "data"):
            self.dataset(dataset_dir)
        for stage in ("models", "attacks", "codecs", "transfer", "defenses", "anomaly", "augment"):
            for dataset_dir in _dirs(root / stage):
                self.dataset(root / "data" / dataset_dir.name, because=dataset_dir)
        for folder in _dirs(root / "augment"):
            table = self.check(folder / "codec_train.csv", read_csv, columns=("id",))
            rows = len(table) if table is not None else None
            self.check(folder / "codec_train.npy", open_npy, rows=rows)
        for dataset_dir in _dirs(root / "models"):
            for folder in _dirs(dataset_dir):
                self.model(folder)
        for split in _dirs(root / "generalisation" / "synth_notes"):
            models = list(_dirs(split / "models"))
            self.dataset(split / "data", because=models[0] if models else None)
            for folder in models:
                self.model(folder)
        for dataset_dir in _dirs(root / "attacks"):
            for run in (r for m in _dirs(dataset_dir) for r in _dirs(m)):
                self.attack(run)
        for dataset_dir in _dirs(root / "codecs"):
            for source_dir in _dirs(dataset_dir):
                if source_dir.name == "clean":
                    for folder in _dirs(source_dir):
                        self.codec(folder, "clean")
                    continue
                for attack_dir in _dirs(source_dir):
                    for folder in _dirs(attack_dir):
                        self.codec(folder, f"{source_dir.name}/{attack_dir.name}")
        for dataset_dir in _dirs(root / "transfer"):
            for table in sorted(dataset_dir.glob("*/*.csv")):
                self.transfer(table)
        kinds = {"transforms": self.transform, "smoothing": self.smoothing}  # a folder per defense
        for dataset_dir in _dirs(root / "defenses"):
            for folder in _dirs(dataset_dir):
                if folder.name in kinds:
                    for run in _dirs(folder):
                        kinds[folder.name](run)
                else:
                    self.defense(folder)
        for folder in _dirs(root / "anomaly"):
            self.anomaly(folder)
        for table in sorted((root / "tables").glob("*.csv")):
            frame = self.check(table, read_csv)
            if (
                table.name == "clean_accuracy.csv"
                and frame is not None
                and {"dataset", "model"} <= set(frame)
            ):
                for dataset, model in frame[["dataset", "model"]].astype(str).itertuples(index=False):
                    self.model(root / "models" / dataset / model, table)
        self._leftover_digests()
        return self

    def _leftover_digests(self) -> None:
        """Every other file with a digest: compared with it; a digest without its file: missing."""
        for side in sorted(_walk(self.root, f"*{DIGEST_SUFFIX}")):
            path = side.with_name(side.name[: -len(DIGEST_SUFFIX)])
            if path in self.results or path in self.problems:
                continue
            if not path.exists():
                if not self.tolerated(path):
                    self.problems[path] = f"is missing (its digest file {side.name} remains)"
                continue
            self.check(path, check_digest)

    def leftovers(self) -> list[Path]:
        """Temporary files of jobs that were killed (or still run): ``.NAME.XXXX.tmp``."""
        return sorted(_walk(self.root, ".*.tmp"))


def _dirs(folder: Path) -> Iterator[Path]:
    """Sub-folders of ``folder`` (none when it does not exist), hidden ones skipped, sorted."""
    if folder.is_dir():
        yield from sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _walk(root: Path, pattern: str) -> Iterator[Path]:
    """Paths matching ``pattern`` under ``root``, outside the folders of :data:`SKIPPED` and outside
    hidden folders (the temporary folders of jobs that run or were killed)."""
    for top in _dirs(root):
        if top.name not in SKIPPED:
            for path in top.rglob(pattern):
                if not any(part.startswith(".") for part in path.relative_to(top).parts[:-1]):
                    yield path


def verify_results(root: str | Path, keep_decoded: bool = True) -> Verification:
    """Check every artifact of the results folder ``root``; see :class:`Verification`."""
    return Verification(root, keep_decoded).run()


def main(argv: list[str]) -> int:
    """Entry point of ``python -m advmir verify-results``; exit status 1 when anything is damaged."""
    import yaml

    p = argparse.ArgumentParser(prog="python -m advmir verify-results", description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="?", help="the results folder (default: the config's `results`)")
    p.add_argument(
        "--config",
        help="the workflow's config: its `results` folder, whether decoded audio is kept "
        "(codecs.keep_decoded), and the --configfile of the rebuild command",
    )
    p.add_argument(
        "--overlay",
        nargs="*",
        default=[],
        help="overlays merged onto the config, as the workflow merges them (e.g. config/nsynth.yaml)",
    )
    args = p.parse_args(argv)
    from advmir.config import merge_config

    config: dict[str, Any] = {}
    config_path = args.config or (None if args.results and not args.overlay else "config.yaml")
    for path in [config_path, *args.overlay] if config_path else []:
        try:
            merge_config(config, yaml.safe_load(Path(path).read_text()) or {})
        except (OSError, yaml.YAMLError) as exc:
            print(f"advmir verify-results: error: cannot read the config {path}: {exc}")
            return 2
    root = Path(args.results or str(config.get("results", "results")).rstrip("/"))
    keep_decoded = bool((config.get("codecs") or {}).get("keep_decoded", True))
    smk_args: list[str] = []
    if config_path not in (None, "config.yaml") or args.overlay:
        smk_args = ["--configfile", str(config_path), *args.overlay, "--replace-workflow-config"]
    if not root.is_dir():
        print(f"{root}: no results folder; nothing to verify")
        return 0
    check = verify_results(root, keep_decoded)
    for path, problem in check.problems.items():
        print(f"{path}: {problem}; rebuild it with: {rebuild_command([path], smk_args)}")
    for path in check.leftovers():
        print(f"note: {path} is the temporary file of a job that was killed or still runs (safe to delete)")
    checked = check.with_digest + check.structure_only
    if not check.problems:
        print(
            f"{root}: {checked} artifacts intact ({check.with_digest} by their digest and structure, "
            f"{check.structure_only} written without a digest, by their structure only)"
        )
        return 0
    print(
        f"{root}: {len(check.problems)} artifact(s) damaged or missing, {checked} intact; "
        f"rebuild them all with: {rebuild_command(check.problems, smk_args)}"
    )
    return 1
