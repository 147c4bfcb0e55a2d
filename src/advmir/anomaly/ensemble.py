"""Ensembles of detectors: rank average (no labels needed) and a stacked model fitted on validation faults.

The rank average works on within-set quantiles of each detector's score, so scales never need to
match. The stacked model sees, per detector, the evidence ``-log p`` where p is the share of the
validation split's *clean* clips that score at least as high (add-one smoothed: a clip above every
clean one of 700 counts about 6.6, a typical clip about 0.7). Measured against clean clips rather
than within the scored set, the evidence does not shrink when a set holds many faults of one kind
(a within-set quantile does: a quarter of octave errors in a set pushes each one down the ranks),
and a held-out fault implementation that one detector alone sees keeps its full weight. It is a
multinomial logistic regression over the fault types (``none`` for clean clips), fitted on the
corrupted validation split only, and scores ``-log p(none)``: one linear score per fault type gives
the "any detector's own fault fires" structure that a single linear sum of evidence lacks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata


def quantiles(score: np.ndarray) -> np.ndarray:
    """Within-set quantile of each score in (0, 1), ties averaged: (N,) -> (N,)."""
    return rankdata(score) / (len(score) + 1)


def tail_evidence(tables: Mapping[str, pd.DataFrame], ids: Sequence[str]) -> pd.DataFrame:
    """(N, detectors) matrix of -log(1 - q), rows in ``ids`` order."""
    cols = {}
    for det, table in tables.items():
        s = table.set_index("id")["score"].reindex(ids)
        if s.isna().any():
            missing = s.index[s.isna()][0]
            raise ValueError(f"detector {det!r} has no score for clip {missing!r}; rerun its scoring job")
        cols[det] = -np.log(1.0 - quantiles(s.to_numpy()))
    return pd.DataFrame(cols, index=list(ids))


def rank_average(tables: Mapping[str, pd.DataFrame], ids: Sequence[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Mean within-set quantile over detectors; returns (score (N,), per-detector evidence for reasons)."""
    evidence = tail_evidence(tables, ids)
    return (1.0 - np.exp(-evidence)).mean(axis=1).to_numpy(), evidence


def robust_z(score: np.ndarray) -> np.ndarray:
    """(score - median) / (IQR / 1.349), the IQR replaced by the std when it is zero: (N,) -> (N,)."""
    q25, med, q75 = np.percentile(score, [25, 50, 75])
    spread = (q75 - q25) / 1.349 or float(np.std(score)) or 1.0
    return (score - med) / spread


def clean_reference(tables: Mapping[str, pd.DataFrame], manifest: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per detector, the sorted scores (M,) of the clean clips (``is_fault == 0``) of ``manifest``."""
    clean = manifest.loc[manifest["is_fault"] == 0, "id"].astype(str).tolist()
    if not clean:
        raise ValueError("the validation corruption set has no clean clip to calibrate the stacked model on")
    return {
        d: np.sort(t.set_index("id")["score"].reindex(clean).to_numpy(dtype=np.float64))
        for d, t in tables.items()
    }


def clean_evidence(
    tables: Mapping[str, pd.DataFrame], ids: Sequence[str], reference: Mapping[str, np.ndarray]
) -> pd.DataFrame:
    """(N, detectors) matrix of ``-log p``, p = (clean reference scores >= the clip's + 1) / (M + 1)."""
    cols = {}
    for det, ref in reference.items():
        s = tables[det].set_index("id")["score"].reindex(ids)
        if s.isna().any():
            missing = s.index[s.isna()][0]
            raise ValueError(f"detector {det!r} has no score for clip {missing!r}; rerun its scoring job")
        at_least = len(ref) - np.searchsorted(ref, s.to_numpy(dtype=np.float64), side="left")
        cols[det] = -np.log((at_least + 1.0) / (len(ref) + 1.0))
    return pd.DataFrame(cols, index=list(ids))


@dataclass
class Stack:
    """The fitted stacked ensemble: a multinomial logistic regression over fault types and, per
    detector, the calibration it measures evidence against.

    Attributes:
        detectors: detector names, in column order (D).
        classes: fault types (K), ``none`` for clean clips.
        coef: (K, D) weights; intercept: (K,).
        reference: per detector, the sorted scores (M,) of the clean validation clips.
    """

    detectors: list[str]
    classes: list[str]
    coef: np.ndarray
    intercept: np.ndarray
    reference: dict[str, np.ndarray]

    def evidence(self, tables: Mapping[str, pd.DataFrame], ids: Sequence[str]) -> pd.DataFrame:
        """(N, D) ``-log p`` of each clip against the clean reference; a detector missing from
        ``tables`` (not applicable to the set) gives no evidence (0)."""
        there = {d: self.reference[d] for d in self.detectors if d in tables}
        x = clean_evidence(tables, ids, there)
        return x.reindex(columns=self.detectors, fill_value=0.0)

    def proba(self, x: np.ndarray) -> np.ndarray:
        """Fault type probabilities (N, K) of evidence rows (N, D)."""
        logits = x @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)


def fit_stack(
    tables: Mapping[str, pd.DataFrame], manifest: pd.DataFrame, seed: int = 0, c: float = 1.0
) -> Stack:
    """Multinomial logistic regression from detector evidence to the fault type (``none`` = clean).

    Fitted on a corrupted validation split: ``manifest`` has ``id``, ``is_fault`` and ``fault``;
    ``tables`` the validation scores of every detector.
    """
    from sklearn.linear_model import LogisticRegression

    y = manifest["fault"].astype(str).to_numpy()
    if "none" not in y or len(np.unique(y)) < 2:
        raise ValueError(
            "the validation corruption set needs both faulty and clean clips to fit the stacked model"
        )
    reference = clean_reference(tables, manifest)
    x = clean_evidence(tables, manifest["id"].astype(str).tolist(), reference)
    model = LogisticRegression(C=c, max_iter=5000, random_state=seed)
    model.fit(x.to_numpy(), y)
    coef, intercept = model.coef_, model.intercept_
    if len(model.classes_) == 2:  # sklearn's binary form: p(second class) = sigmoid(w x + b)
        coef = np.vstack([np.zeros_like(coef[0]), coef[0]])
        intercept = np.array([0.0, intercept[0]])
    return Stack(list(tables), [str(c) for c in model.classes_], coef, intercept, reference)


def apply_stack(
    stack: Stack, tables: Mapping[str, pd.DataFrame], ids: Sequence[str]
) -> tuple[np.ndarray, pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Stacked score ``-log p(none)`` (N,), each detector's contribution to the most likely fault
    type (N, D), that fault type (N,), and the evidence (N, D) it was computed from."""
    x = stack.evidence(tables, ids)
    probs = stack.proba(x.to_numpy())
    none = stack.classes.index("none")
    score = -np.log(np.maximum(probs[:, none], 1e-300))
    faulty = probs.copy()
    faulty[:, none] = -1.0
    likely = faulty.argmax(axis=1)
    contribution = pd.DataFrame(x.to_numpy() * stack.coef[likely], index=x.index, columns=stack.detectors)
    return score, contribution, np.asarray(stack.classes, dtype=object)[likely], x


STACK_FILE, CALIBRATION_FILE = "stack.json", "calibration.npz"


def save_stack(folder: str | Path, stack: Stack, **info: Any) -> Path:
    """Write the fitted ensemble as a folder, atomically: ``stack.json`` (detectors, fault types,
    weights, ``info``) and ``calibration.npz`` (each detector's sorted clean scores). No pickle."""
    from advmir.io import atomic_path

    folder = Path(folder)
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        meta = {
            "format": 1,
            "detectors": stack.detectors,
            "fault_types": stack.classes,
            "coef": stack.coef.tolist(),
            "intercept": stack.intercept.tolist(),
            **info,
        }
        (tmp / STACK_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        with open(tmp / CALIBRATION_FILE, "wb") as handle:
            np.savez(handle, **{d: stack.reference[d] for d in stack.detectors})
    return folder


def load_stack(folder: str | Path) -> tuple[Stack, dict[str, Any]]:
    """A saved ensemble (:func:`save_stack`) and its info (what it was fitted on)."""
    from advmir.artifacts import ArtifactError, load_npz, read_json

    folder = Path(folder)
    meta = read_json(folder / STACK_FILE, keys=("detectors", "fault_types", "coef", "intercept"))
    reference = load_npz(folder / CALIBRATION_FILE)
    missing = [d for d in meta["detectors"] if d not in reference]
    if missing:
        raise ArtifactError(folder / CALIBRATION_FILE, f"has no calibration for detector(s) {missing}")
    coef = np.asarray(meta["coef"], dtype=np.float64)
    if coef.shape != (len(meta["fault_types"]), len(meta["detectors"])):
        raise ArtifactError(
            folder / STACK_FILE, f"holds weights of shape {coef.shape}, not (fault types, detectors)"
        )
    stack = Stack(
        list(meta["detectors"]),
        list(meta["fault_types"]),
        coef,
        np.asarray(meta["intercept"], dtype=np.float64),
        {d: np.asarray(reference[d], dtype=np.float64) for d in meta["detectors"]},
    )
    info = {k: v for k, v in meta.items() if k not in ("detectors", "fault_types", "coef", "intercept")}
    return stack, info


def flagged_by(
    contribution: pd.DataFrame, tables: Mapping[str, pd.DataFrame]
) -> tuple[np.ndarray, list[str]]:
    """Per clip (rows of ``contribution``, indexed by id): the detector that weighed most, and its reason."""
    detectors = np.asarray(contribution.columns)[contribution.to_numpy().argmax(axis=1)]
    lookup = {
        d: dict(zip(t["id"].astype(str), t["reason"].astype(str), strict=True)) for d, t in tables.items()
    }
    reasons = [lookup[d].get(str(i), "") for d, i in zip(detectors, contribution.index, strict=True)]
    return detectors, reasons
