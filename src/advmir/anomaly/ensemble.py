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

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.stats import rankdata

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression


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


def fit_stack(
    tables: Mapping[str, pd.DataFrame], manifest: pd.DataFrame, seed: int = 0, c: float = 1.0
) -> tuple[LogisticRegression, list[str]]:
    """Multinomial logistic regression from detector evidence to the fault type (``none`` = clean).

    Fitted on a corrupted validation split: ``manifest`` has ``id``, ``is_fault`` and ``fault``.
    Returns (model, detector names in column order); the model keeps the clean clips' scores it
    measures evidence against as ``model.clean_reference_``.
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
    model.clean_reference_ = reference
    return model, list(tables)


def apply_stack(
    model: LogisticRegression,
    detectors: Sequence[str],
    tables: Mapping[str, pd.DataFrame],
    ids: Sequence[str],
) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """Stacked score ``-log p(none)`` (N,), each detector's contribution to the most likely fault
    type (N, detectors), and that fault type (N,)."""
    x = clean_evidence({d: tables[d] for d in detectors}, ids, model.clean_reference_)
    probs = model.predict_proba(x.to_numpy())
    classes = list(model.classes_)
    none = classes.index("none")
    score = -np.log(np.maximum(probs[:, none], 1e-300))
    faulty = probs.copy()
    faulty[:, none] = -1.0
    likely = faulty.argmax(axis=1)
    contribution = pd.DataFrame(x.to_numpy() * model.coef_[likely], index=x.index, columns=list(detectors))
    return score, contribution, np.asarray(classes, dtype=object)[likely]


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
