"""One job of the representation-transfer stage: craft one source's examples at one budget on the seeded
evaluation clips, then score them and their matched-noise controls on every target model, with no
transformation and after each codec setting (a real ffmpeg round trip through the codec stage's
engine; the clean clips go through the same codec, so a codec that breaks the model is told apart
from one that removes the attack).

Writes into an empty folder (the command line hands it a temporary one and renames it whole):

- ``adversarial.npy`` and ``matched_noise.npy``: float32 (n, T), row j the example and control of
  examples.csv row j;
- ``examples.csv``: ``row, id, label, snr_db, noise_snr_db, iterations, crafted_success`` (the last:
  the crafting ensemble's own verdict, every member fooled; False for the feature attack);
- ``predictions.csv``: one row per (example, target, condition): ``clean_pred, pred, noise_pred``;
- ``run.json``: the source spec, the attack's resolved parameters, counts and seconds.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from advmir.attacks.budgets import perturbation_metrics
from advmir.attacks.controls import matched_noise
from advmir.attacks.craft import read_rows
from advmir.attacks.scoring import predict
from advmir.errors import InputError

log = logging.getLogger("advmir.representation")

NONE = "none"
EXAMPLE_COLUMNS = ["row", "id", "label", "snr_db", "noise_snr_db", "iterations", "crafted_success"]
PREDICTION_COLUMNS = ["row", "target_model", "condition", "clean_pred", "pred", "noise_pred"]


class RepresentationJobError(InputError, ValueError):
    """A job's spec, members or targets do not fit the dataset."""


def build_source_attack(
    spec: Mapping[str, Any], members: Mapping[str, nn.Module], snr_db: float, sample_rate: int, seed: int
) -> Any:
    """The attack of a source spec (:meth:`advmir.representation.plan.RepresentationPlan.source_spec`)
    at ``snr_db``: an :class:`~advmir.attacks.ensemble.EnsemblePGD` on the members (ensemble, single),
    or a :class:`~advmir.attacks.feature.FeaturePGD` on the front-ends (feature; ``filterbank`` is the
    learned one of the spec's member, the others are built with their default settings)."""
    from advmir.attacks.ensemble import EnsemblePGD, ModelEnsemble
    from advmir.attacks.feature import FeaturePGD, FeatureStack
    from advmir.models.frontends import build_frontend

    params = {**dict(spec.get("params") or {}), "snr_db": snr_db, "seed": seed}
    if spec["kind"] == "feature":
        frontends: dict[str, nn.Module] = {}
        for name in spec["frontends"]:
            if name == "filterbank":
                (owner,) = list(members.values())
                frontends[name] = owner.frontend
            else:
                frontends[name] = build_frontend(name, sample_rate).eval()
        return FeaturePGD(FeatureStack(frontends), **params)
    weights = {m: float(w) for m, w in spec["members"].items()}
    params.setdefault("sample_rate", sample_rate)
    return EnsemblePGD(ModelEnsemble(dict(members), weights), **params)


def craft_and_score(
    dataset_dir: str | Path,
    spec: Mapping[str, Any],
    members: Mapping[str, str],
    targets: Mapping[str, str],
    conditions: Mapping[str, Mapping[str, Any]],
    folder: Path,
    *,
    snr_db: float,
    eval_size: int,
    seed: int,
    device: str = "cpu",
    batch_size: int = 64,
) -> dict[str, Any]:
    """Craft and score one (source, budget) job and write it into the empty ``folder`` (module docstring).

    Args:
        dataset_dir: the prepared dataset.
        spec: the source spec (kind, excluded, members with weights, frontends, params).
        members: member name -> checkpoint (the ensemble's; the feature attack's filterbank owner).
        targets: target name -> checkpoint.
        conditions: codec setting name -> spec, scored after besides ``none``.
        snr_db: the budget.
        eval_size: the first ``eval_size`` clips of the attack stage's seeded evaluation subset.
    Returns:
        run.json's content.
    """
    from advmir.codecs.engine import CodecEngine
    from advmir.codecs.registry import parse_setting
    from advmir.datasets.contract import evaluation_rows, load_dataset
    from advmir.models.zoo import load_model

    dataset = load_dataset(dataset_dir)
    if set(members) != set(spec["members"]):
        raise RepresentationJobError(
            f"the spec names members {sorted(spec['members'])}, "
            f"but checkpoints were given for {sorted(members)}"
        )
    loaded = {name: load_model(path, device) for name, path in {**members, **targets}.items()}
    for name, model in loaded.items():
        classes = getattr(model, "classes", None)
        if classes is not None and list(classes) != list(dataset.classes):
            raise RepresentationJobError(
                f"model {name} was trained on classes {list(classes)}, {dataset_dir} has {dataset.classes}"
            )
    settings = {n: parse_setting(n, s, dataset.sample_rate) for n, s in conditions.items()}
    rows = evaluation_rows(dataset.split_indices("test"), eval_size, seed)
    x = torch.from_numpy(read_rows(dataset.root / "waveforms.npy", rows))
    y = torch.from_numpy(dataset.manifest["label_idx"].to_numpy()[rows].astype(np.int64))
    ids = dataset.manifest["id"].astype(str).to_numpy()[rows]

    attack = build_source_attack(spec, {m: loaded[m] for m in members}, snr_db, dataset.sample_rate, seed)
    attack.model.to(device)
    t0 = time.perf_counter()
    result = attack(x.to(device), y.to(device)).cpu()
    seconds = time.perf_counter() - t0
    control = matched_noise(x, result.x_adv, rows, seed)
    log.info("%s at %g dB: %d clips crafted in %.1f s", spec["kind"], snr_db, len(rows), seconds)

    audio = {"clean": x.numpy(), "adv": result.x_adv.numpy(), "noise": control.numpy()}
    versions = {NONE: audio}
    if settings:
        engine = CodecEngine(workers=1)
        for name, setting in settings.items():
            versions[name] = {
                k: engine.roundtrip(v, dataset.sample_rate, setting, clip_ids=list(ids)).decoded
                for k, v in audio.items()
            }
            log.info("%s: round trips done", name)
    frames = []
    for target in targets:
        for condition, clips in versions.items():
            preds = {k: predict(loaded[target], torch.from_numpy(v), batch_size)[0] for k, v in clips.items()}
            frames.append(
                pd.DataFrame(
                    {
                        "row": rows,
                        "target_model": target,
                        "condition": condition,
                        "clean_pred": preds["clean"],
                        "pred": preds["adv"],
                        "noise_pred": preds["noise"],
                    }
                )
            )
    examples = pd.DataFrame(
        {
            "row": rows,
            "id": ids,
            "label": y.numpy(),
            "snr_db": result.snr_db.numpy(),
            "noise_snr_db": perturbation_metrics(x, control)["snr_db"].numpy(),
            "iterations": result.iterations.numpy(),
            "crafted_success": result.success.numpy(),
        }
    )
    folder.mkdir()
    np.save(folder / "adversarial.npy", audio["adv"].astype(np.float32))
    np.save(folder / "matched_noise.npy", audio["noise"].astype(np.float32))
    examples[EXAMPLE_COLUMNS].to_csv(folder / "examples.csv", index=False)
    pd.concat(frames, ignore_index=True)[PREDICTION_COLUMNS].to_csv(folder / "predictions.csv", index=False)
    meta = {
        "spec": dict(spec),
        "snr_db": snr_db,
        "params": attack.describe(),
        "n": len(rows),
        "n_crafted_success": int(result.success.sum()),
        "median_snr_db": float(np.median(result.snr_db.numpy())) if len(rows) else None,
        "seconds": seconds,
        "dataset": dataset.root.name,
        "seed": seed,
    }
    (folder / "run.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def parse_named(pairs: Sequence[Sequence[str]], what: str) -> dict[str, str]:
    """``[(name, path), ...]`` from repeated ``--member``/``--target`` options, names unique."""
    out: dict[str, str] = {}
    for name, path in pairs:
        if name in out:
            raise RepresentationJobError(f"{what} {name} is given twice")
        out[name] = path
    return out
