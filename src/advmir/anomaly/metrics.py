"""Metrics of a detector's scores against the known faults: ROC-AUC, pAUC, AP and review budgets.

pAUC follows the DCASE 2020 Task 2 definition: the share of (faulty, clean) pairs ranked
correctly among the ``floor(p * N_clean)`` highest-scored clean clips, i.e. the area under the ROC
curve for FPR in [0, p] divided by p (not McClish-standardised). Ties count one half everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

BUDGETS = (0.05, 0.10)


def roc_auc(is_fault: np.ndarray, score: np.ndarray) -> float:
    """Probability that a faulty clip outscores a clean one (ties count 1/2); NaN without both kinds."""
    y = np.asarray(is_fault, dtype=bool)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, score))


def pauc(is_fault: np.ndarray, score: np.ndarray, max_fpr: float = 0.1) -> float:
    """DCASE pAUC: AUC against the top ``floor(max_fpr * N_clean)`` clean clips only (at least one)."""
    y = np.asarray(is_fault, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    pos, neg = score[y], np.sort(score[~y])[::-1]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    top = neg[: max(1, math.floor(max_fpr * len(neg)))]
    wins = (pos[:, None] > top[None, :]).sum() + 0.5 * (pos[:, None] == top[None, :]).sum()
    return float(wins / (len(pos) * len(top)))


def average_precision(is_fault: np.ndarray, score: np.ndarray) -> float:
    y = np.asarray(is_fault, dtype=bool)
    if y.sum() == 0 or (~y).sum() == 0:
        return float("nan")
    return float(average_precision_score(y, score))


def found_within(target: np.ndarray, score: np.ndarray, budget: float) -> float:
    """Share of ``target`` clips among the top ``ceil(budget * N)`` of all N clips (expected over ties)."""
    target = np.asarray(target, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    if target.sum() == 0:
        return float("nan")
    k = math.ceil(budget * len(score))
    if k <= 0:
        return 0.0
    threshold = np.sort(score)[::-1][k - 1]
    above, tied = score > threshold, score == threshold
    share_of_ties = (k - above.sum()) / tied.sum()
    return float((target & above).sum() + share_of_ties * (target & tied).sum()) / float(target.sum())


def precision_within(target: np.ndarray, score: np.ndarray, budget: float) -> float:
    """Share of ``target`` clips in the top ``ceil(budget * N)`` of all N clips (the review list's
    precision; expected over ties); NaN when the list is empty."""
    k = math.ceil(budget * len(score))
    if k <= 0 or not np.asarray(target, dtype=bool).any():
        return float("nan")
    return found_within(target, score, budget) * float(np.sum(target)) / k


def fault_columns(manifest: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fault, fault_family, held_out) arrays of a corrupted manifest; a set written before fault
    families existed has each fault its own family and nothing held out."""
    fault = manifest["fault"].astype(str).to_numpy()
    family = manifest["fault_family"].astype(str).to_numpy() if "fault_family" in manifest else fault
    held = manifest["held_out"].to_numpy() == 1 if "held_out" in manifest else np.zeros(len(fault), bool)
    return fault, family, held


def generalisation(
    manifest: pd.DataFrame, scores: Mapping[str, np.ndarray], budget: float = 0.10, max_fpr: float = 0.1
) -> pd.DataFrame:
    """Per detector, fault implementations seen in fitting (``in_generator``) or not (``held_out``),
    and fault family (``all`` pools them): ROC-AUC, pAUC, AP, precision and recall of the top
    ``budget`` review list. Each row ranks its own faulty clips among all clean clips (the other
    faulty clips left out), so ``held_out`` rows are what a curator would get on faults the
    fitted models never saw."""
    fault, family, held = fault_columns(manifest)
    clean = manifest["is_fault"].to_numpy() == 0
    pct = round(100 * budget)
    rows = []
    for det, score in scores.items():
        score = np.asarray(score, dtype=np.float64)
        for part, in_part in (("in_generator", ~held & ~clean), ("held_out", held)):
            for fam in ["all", *sorted(set(family[in_part]))]:
                target = in_part & ((family == fam) if fam != "all" else True)
                if not target.any():
                    continue
                keep = target | clean
                rows.append(
                    {
                        "detector": det,
                        "implementations": part,
                        "fault_family": fam,
                        "faults": " ".join(sorted(set(fault[target]))),
                        "n_faulty": int(target.sum()),
                        "n_clean": int(clean.sum()),
                        "roc_auc": roc_auc(target[keep], score[keep]),
                        "pauc": pauc(target[keep], score[keep], max_fpr),
                        "average_precision": average_precision(target[keep], score[keep]),
                        f"precision_top{pct}": precision_within(target[keep], score[keep], budget),
                        f"found_top{pct}": found_within(target[keep], score[keep], budget),
                    }
                )
    return pd.DataFrame(rows)


def by_severity(manifest: pd.DataFrame, scores: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """ROC-AUC of every detector per fault implementation and severity, against all clean clips:
    tidy (detector, fault, fault_family, held_out, severity, n_faulty, roc_auc)."""
    fault, family, held = fault_columns(manifest)
    clean = manifest["is_fault"].to_numpy() == 0
    severity = pd.to_numeric(manifest["severity"], errors="coerce").to_numpy()
    cells = sorted({(f, s) for f, s in zip(fault[~clean], severity[~clean], strict=True)})
    rows = []
    for det, score in scores.items():
        score = np.asarray(score, dtype=np.float64)
        for f, sev in cells:
            target = ~clean & (fault == f) & (severity == sev)
            keep = target | clean
            rows.append(
                {
                    "detector": det,
                    "fault": f,
                    "fault_family": family[target][0],
                    "held_out": int(held[target][0]),
                    "severity": sev,
                    "n_faulty": int(target.sum()),
                    "roc_auc": roc_auc(target[keep], score[keep]),
                }
            )
    return pd.DataFrame(rows)


def evaluate(
    manifest: pd.DataFrame,
    scores: Mapping[str, np.ndarray],
    budgets: Sequence[float] = BUDGETS,
    max_fpr: float = 0.1,
) -> pd.DataFrame:
    """Tidy metrics: one row per detector x fault (``all`` pools every fault) on a corrupted split,
    with the fault's family and whether it was held out of fitting (1) or not (0).

    For a fault, positives are its clips and negatives the clean clips; clips of other faults are
    left out. Review budgets rank the whole split (what a curator would listen to).
    """
    fault, family, held = fault_columns(manifest)
    clean = manifest["is_fault"].to_numpy() == 0
    groups = ["all", *sorted(set(fault[~clean]))]
    family_of = dict(zip(fault, family, strict=True))
    held_of = dict(zip(fault, held.astype(int), strict=True))
    rows = []
    for det, score in scores.items():
        score = np.asarray(score, dtype=np.float64)
        for g in groups:
            target = ~clean if g == "all" else fault == g
            keep = target | clean
            row = {
                "detector": det,
                "fault": g,
                "fault_family": "all" if g == "all" else family_of[g],
                "held_out": np.nan if g == "all" else held_of[g],
                "n_faulty": int(target.sum()),
                "n_clean": int(clean.sum()),
                "roc_auc": roc_auc(target[keep], score[keep]),
                "pauc": pauc(target[keep], score[keep], max_fpr),
                "average_precision": average_precision(target[keep], score[keep]),
            }
            for b in budgets:
                row[f"found_top{round(100 * b)}"] = found_within(target, score, b)
            rows.append(row)
    return pd.DataFrame(rows)


def roc_points(manifest: pd.DataFrame, scores: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """ROC curve of every detector on all faults pooled: tidy (detector, fpr, tpr)."""
    y = manifest["is_fault"].to_numpy() == 1
    frames = []
    if y.all() or not y.any():
        return pd.DataFrame(columns=["detector", "fpr", "tpr"])
    for det, score in scores.items():
        fpr, tpr, _ = roc_curve(y, score)
        frames.append(pd.DataFrame({"detector": det, "fpr": fpr, "tpr": tpr}))
    return pd.concat(frames, ignore_index=True)


def budget_curve(manifest: pd.DataFrame, scores: Mapping[str, np.ndarray], steps: int = 50) -> pd.DataFrame:
    """Share of faults found against the share of the split reviewed (the whole split ranked, as a
    curator listens to it): tidy (detector, implementations, budget, clips, found), where
    ``implementations`` counts all faults (``all``), those of implementations seen in fitting
    (``in_generator``) or only the held-out ones (``held_out``, when the split has any), and
    ``clips`` is the number of clips listened to."""
    y = manifest["is_fault"].to_numpy() == 1
    _, _, held = fault_columns(manifest)
    parts = {"all": y, "in_generator": y & ~held, "held_out": y & held}
    budgets = np.linspace(0, 1, steps + 1)
    rows = [
        {
            "detector": det,
            "implementations": part,
            "budget": b,
            "clips": math.ceil(b * len(y)),
            "found": found_within(target, score, b),
        }
        for det, score in scores.items()
        for part, target in parts.items()
        if part == "all" or target.any()
        for b in budgets
    ]
    return pd.DataFrame(rows)


def family_roc_points(manifest: pd.DataFrame, scores: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """ROC curve of every detector per fault family, in-generator and held-out implementations apart,
    each family's faulty clips against all clean clips: tidy (detector, fault_family, implementations,
    n_faulty, roc_auc, fpr, tpr)."""
    _, family, held = fault_columns(manifest)
    clean = manifest["is_fault"].to_numpy() == 0
    frames = []
    for det, score in scores.items():
        score = np.asarray(score, dtype=np.float64)
        for fam in sorted(set(family[~clean])):
            for part, in_part in (("in_generator", ~held), ("held_out", held)):
                target = ~clean & in_part & (family == fam)
                if not target.any() or not clean.any():
                    continue
                keep = target | clean
                fpr, tpr, _ = roc_curve(target[keep], score[keep])
                frames.append(
                    pd.DataFrame(
                        {
                            "detector": det,
                            "fault_family": fam,
                            "implementations": part,
                            "n_faulty": int(target.sum()),
                            "roc_auc": roc_auc(target[keep], score[keep]),
                            "fpr": fpr,
                            "tpr": tpr,
                        }
                    )
                )
    columns = ["detector", "fault_family", "implementations", "n_faulty", "roc_auc", "fpr", "tpr"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
