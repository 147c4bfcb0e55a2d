"""Review a dataset with a saved ensemble, and say why each clip is on the list in a curator's words.

The anomaly stage fits its stacked ensemble on one dataset (the corrupted valid split of, by
default, the embedded notes) and saves it (:func:`advmir.anomaly.ensemble.save_stack`:
``results/anomaly/{dataset}/ensemble/``). :func:`apply_ensemble` ranks any other prepared dataset
with it, e.g. a folder of your own recordings: every detector of the ensemble is fitted on the
ensemble's dataset exactly as in the stage (its clean train clips, its classifiers and trained
detectors), scores every clip of the new dataset, each score becomes evidence against the saved
calibration (the share of clean validation clips that score as high), and the saved weights turn
the evidence into ``p_fault``.

Confident learning (``label_errors``) checks the labels of the dataset under review: with the
ensemble's classifiers and reference clips when every label is one of the ensemble's classes
(``label_check: source``), else with out-of-sample probabilities of a logistic regression
cross-validated on the dataset under review itself (``cross_validated``: a folder labelled by its
own subfolders; the features are the summary features and the ensemble's classifiers' logits);
``auto`` (the default) picks between the two that way. A detector that cannot speak about the new
dataset gives no evidence (0) instead of a guess: confident learning with fewer than two labels of
two clips each (``labels: none``). The pitch check gives none without a ``pitch`` column, and the
multi-task net's family head none for a label it does not know (its fault head still speaks).

Each clip's reasons are the detectors that pushed it up most (their weight times their evidence
for the fault type the stack finds most likely), in words (:data:`HEADLINES`), with the detector's
own evidence and how rare such a score is among clean clips.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from advmir.anomaly.evaluate import AnomalyInputError, in_classes, score_with_detector

log = logging.getLogger(__name__)

#: What a detector's flag means, in a curator's words (the detector's own reason follows it).
HEADLINES = {
    "clipping": "clipped",
    "distortion": "distorted (saturated)",
    "silence": "silent or nearly",
    "gaps": "dropouts",
    "truncation": "cut off",
    "dc_offset": "DC offset",
    "envelope": "odd loudness envelope",
    "noise_floor": "noisy",
    "noise_bands": "noise",
    "hum": "mains hum",
    "bandwidth": "muffled (band-limited)",
    "codec_artifacts": "lossy-codec artefacts",
    "pitch": "pitch label wrong?",
    "isolation_forest": "unusual sound",
    "autoencoder": "unusual spectrum",
    "max_softmax": "the classifiers are unsure what it is",
    "energy": "unfamiliar to the classifiers",
    "label_errors": "label wrong?",
    "duplicates": "duplicate",
    "multitask": "fault network",
}
N_REASONS = 3
#: evidence a second or third reason needs: a score that at most 5% of clean clips reach
EVIDENT = -np.log(0.05)
#: detectors that need the dataset's labels to be the ensemble's classes
NEEDS_KNOWN_LABELS = ("label_errors",)


def _rarity(evidence: float) -> str:
    share = 100.0 * float(np.exp(-evidence))
    return f"{share:.1f}%" if share >= 0.1 else "<0.1%"


def curator_reasons(
    contribution: pd.DataFrame,
    evidence: pd.DataFrame,
    tables: Mapping[str, pd.DataFrame],
    n: int = N_REASONS,
) -> pd.DataFrame:
    """Per clip, up to ``n`` reasons in words: ``reason_1..n`` columns (N rows, ``contribution``'s
    order). The first is the detector that pushed the clip up most; the others only detectors that
    pushed it up too with a score at most 5% of clean clips reach (empty otherwise).

    Args:
        contribution: (N, D) each detector's push towards the most likely fault (weight x evidence).
        evidence: (N, D) ``-log p`` against the clean calibration clips (p = share as high).
        tables: ``{detector: scores table}`` with ``id`` and ``reason``.
    """
    said = {
        d: dict(zip(t["id"].astype(str), t["reason"].astype(str), strict=True)) for d, t in tables.items()
    }
    order = np.argsort(-contribution.to_numpy(), axis=1, kind="stable")
    names = np.asarray(contribution.columns)
    rows = []
    for k, clip in enumerate(contribution.index):
        words = []
        for j in order[k]:
            det = names[j]
            weak = contribution.iat[k, j] <= 0 or evidence.at[clip, det] < EVIDENT
            if det not in said or (words and weak):  # the first reason always, more only when telling
                continue
            reason = said[det].get(str(clip), "")
            rare = _rarity(evidence.at[clip, det])
            words.append(f"{HEADLINES.get(det, det)}: {reason} (clean clips this extreme: {rare}; {det})")
            if len(words) == n:
                break
        rows.append(words + [""] * (n - len(words)))
    return pd.DataFrame(rows, columns=[f"reason_{i + 1}" for i in range(n)])


def apply_ensemble(
    ensemble: str | Path,
    source: str | Path,
    target: str | Path,
    *,
    models: Mapping[str, str] | None = None,
    autoencoder: str | None = None,
    multitask: str | None = None,
    max_reference: int = 0,
    seed: int = 0,
    label_check: str = "auto",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rank every clip of the prepared dataset ``target`` with the saved ensemble ``ensemble``
    (fitted on ``source``, whose clean train clips, classifiers ``models`` and checkpoints refit its
    detectors). ``label_check``: how ``label_errors`` checks the labels (``auto``, ``source`` or
    ``cross_validated``: the module docstring).

    Returns:
        (scores: one row per (clip, detector) with score, robust_z within ``target``, evidence and
        reason; review: one row per clip, most suspicious first: rank, id, p_fault, score,
        likely_fault, reason_1..3, and the target manifest's columns).
    """
    from advmir.anomaly import ensemble as ens
    from advmir.datasets.contract import load_dataset

    stack, info = ens.load_stack(ensemble)
    data = load_dataset(target)
    manifest = data.manifest.astype({"id": str})
    ids = manifest["id"].tolist()
    source_classes = load_dataset(source).classes
    known = in_classes(manifest, source_classes)["label_idx"].to_numpy() >= 0
    check = _label_check(label_check, manifest, known)
    tables = {}
    for det in stack.detectors:
        if det in NEEDS_KNOWN_LABELS and check is None:
            log.info("%s: %s has fewer than two labels of two clips each: no evidence", det, target)
            continue
        if det in NEEDS_KNOWN_LABELS and check == "cross_validated":
            tables[det] = _cross_validated_labels(data, manifest, models, seed)
            log.info(
                "scored %d clips with %s, cross-validated on %s's own labels", len(manifest), det, target
            )
            continue
        needs = {"multitask": multitask, "autoencoder": autoencoder}
        if det in needs and needs[det] is None:
            raise AnomalyInputError(f"the ensemble combines {det!r}: give its checkpoint (--{det})")
        (table,) = score_with_detector(
            det,
            source,
            [data],
            max_reference=max_reference,
            seed=seed,
            models=models if det in ("max_softmax", "energy", "label_errors") else None,
            autoencoder=autoencoder,
            multitask=multitask,
        )
        tables[det] = table.astype({"id": str})
        log.info("scored %d clips with %s", len(table), det)
    score, contribution, likely, evidence = ens.apply_stack(stack, tables, ids)
    probs = stack.proba(evidence.to_numpy())
    p_fault = 1.0 - probs[:, stack.classes.index("none")]
    reasons = curator_reasons(contribution, evidence, tables)
    review = pd.concat(
        [
            pd.DataFrame({"id": ids, "p_fault": p_fault, "score": score, "likely_fault": likely}),
            reasons,
            manifest.drop(columns=["id"]).reset_index(drop=True),
        ],
        axis=1,
    )
    review = review.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    review.insert(0, "rank", np.arange(1, len(review) + 1))
    scores = pd.concat(
        [
            t.assign(detector=det, evidence=evidence[det].reindex(t["id"]).to_numpy())[
                ["id", "detector", "score", "robust_z", "evidence", "reason"]
            ]
            for det, t in tables.items()
        ],
        ignore_index=True,
    )
    log.info(
        "ranked %d clips of %s with the ensemble of %s", len(review), target, info.get("dataset", ensemble)
    )
    return scores, review


LABEL_CHECKS = ("auto", "source", "cross_validated")


def _label_check(mode: str, manifest: pd.DataFrame, known: np.ndarray) -> str | None:
    """How ``label_errors`` checks ``manifest``'s labels: ``source``, ``cross_validated`` or None
    (nothing to check)."""
    if mode not in LABEL_CHECKS:
        raise AnomalyInputError(f"label_check must be one of {list(LABEL_CHECKS)}, got {mode!r}")
    counts = manifest["label"].astype(str).value_counts()
    checkable = int((counts >= 2).sum()) >= 2
    if mode == "source" or (mode == "auto" and known.all()):
        return "source" if known.any() else None
    return "cross_validated" if checkable else None


def _cross_validated_labels(
    data: Any, manifest: pd.DataFrame, models: Mapping[str, str] | None, seed: int
) -> pd.DataFrame:
    """The ``label_errors`` table (id, score, robust_z, reason) of ``data`` from its own labels."""
    import torch

    from advmir.anomaly.detectors import cross_validated_label_errors
    from advmir.anomaly.ensemble import robust_z
    from advmir.anomaly.evaluate import load_classifiers

    torch.set_num_threads(1)
    value, reasons = cross_validated_label_errors(
        data.float_waveforms(slice(None)),
        data.sample_rate,
        manifest["label"].astype(str).tolist(),
        models=load_classifiers(models),
        seed=seed,
    )
    return pd.DataFrame(
        {"id": manifest["id"], "score": value, "robust_z": robust_z(value), "reason": reasons}
    )


def cross_domain(review: pd.DataFrame, budget: float = 0.10) -> dict[str, float]:
    """On a reviewed corrupted set (``is_fault`` known): ROC-AUC of ``score``, the top-``budget``
    list's precision, and the share of clean clips that land in the top ``budget``."""
    from advmir.anomaly.metrics import found_within, precision_within, roc_auc

    y = review["is_fault"].to_numpy() == 1
    s = review["score"].to_numpy(dtype=np.float64)
    return {
        "n_clips": len(y),
        "n_faulty": int(y.sum()),
        "roc_auc": roc_auc(y, s),
        f"precision_top{round(100 * budget)}": precision_within(y, s, budget),
        f"clean_share_in_top{round(100 * budget)}": found_within(~y, s, budget),
    }


def top_clips(review: pd.DataFrame, n: int) -> Sequence[str]:
    """Ids of the ``n`` highest-ranked clips of a review table."""
    return review.sort_values("rank")["id"].astype(str).head(n).tolist()
