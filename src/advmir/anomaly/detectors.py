"""Detectors: each gives every clip of a scored set a score (higher = more suspicious) and a reason.

A detector is fitted once on the clean reference (the dataset's train split, plus trained models
or checkpoints where it needs them) and then scores one or more sets, e.g. the corrupted test and
validation splits, so the stacked ensemble sees the same detector on both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from advmir.anomaly import features, heuristics

log = logging.getLogger(__name__)


@dataclass
class ScoreSet:
    """One set of clips to score: waveforms (N, T) float32 and their manifest rows."""

    waveforms: np.ndarray
    manifest: pd.DataFrame


@dataclass
class Reference:
    """What detectors may learn from: clean train clips (N, T), their manifest, the class list."""

    waveforms: np.ndarray
    manifest: pd.DataFrame
    classes: list[str]
    sample_rate: int
    seed: int = 0
    models: Mapping[str, Any] = field(default_factory=dict)  # name -> nn.Module, waveform -> logits
    autoencoder: str | None = None  # checkpoint path
    multitask: str | None = None  # checkpoint path


Result = tuple[np.ndarray, list[str]]
Fitted = Callable[[ScoreSet], Result]


def _heuristic(name: str) -> Callable[[Reference], Fitted]:
    def fit(ref: Reference) -> Fitted:
        check = heuristics.CHECKS[name]
        if name == "bandwidth":
            reference = (heuristics.bandwidth_hz(ref.waveforms, ref.sample_rate), ref.manifest)
            return lambda s: check(s.waveforms, ref.sample_rate, s.manifest, reference)
        return lambda s: check(s.waveforms, ref.sample_rate)

    fit.__doc__ = heuristics.CHECKS[name].__doc__
    return fit


def fit_pitch(ref: Reference) -> Fitted:
    """Pitch-label check: how much better a pitch within +-7.5 semitones of the label fits the spectrum."""

    def score(s: ScoreSet) -> Result:
        if "pitch" not in s.manifest.columns:
            return np.zeros(len(s.manifest)), ["no pitch labels in the manifest"] * len(s.manifest)
        labelled = s.manifest["pitch"].to_numpy(dtype=np.float64)
        value, best = features.pitch_mismatch(s.waveforms, ref.sample_rate, labelled)
        return value, [
            f"labelled MIDI {p:.0f}, sounds like {b:.1f}" for p, b in zip(labelled, best, strict=True)
        ]

    return score


def _robust_scale(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    center = np.median(train, axis=0)
    spread = np.percentile(train, 75, axis=0) - np.percentile(train, 25, axis=0)
    return center, np.where(spread > 1e-9, spread, np.std(train, axis=0) + 1e-6)


def fit_isolation_forest(ref: Reference) -> Fitted:
    """Isolation forest (scikit-learn, 300 trees) on summary audio features of clean train clips."""
    from sklearn.ensemble import IsolationForest

    train, names = features.summary_features(ref.waveforms, ref.sample_rate)
    center, spread = _robust_scale(train)
    forest = IsolationForest(n_estimators=300, random_state=ref.seed, n_jobs=1)
    forest.fit(np.clip((train - center) / spread, -50, 50))

    def score(s: ScoreSet) -> Result:
        z = np.clip((features.summary_features(s.waveforms, ref.sample_rate)[0] - center) / spread, -50, 50)
        worst = np.abs(z).argmax(axis=1)
        return -forest.score_samples(z), [
            f"most unusual feature {names[j]} (robust z {z[n, j]:+.1f})" for n, j in enumerate(worst)
        ]

    return score


def fit_autoencoder(ref: Reference) -> Fitted:
    """Log-mel dense autoencoder (DCASE 2020 Task 2 baseline recipe), mean reconstruction error."""
    from advmir.anomaly.autoencoder import load_autoencoder, reconstruction_errors

    if ref.autoencoder is None:
        raise ValueError(
            "detector 'autoencoder' needs --autoencoder CKPT (the train_anomaly_autoencoder rule)"
        )
    ckpt = load_autoencoder(ref.autoencoder)
    p99 = float(np.percentile(ckpt["train_errors"], 99))

    def score(s: ScoreSet) -> Result:
        err, worst = reconstruction_errors(ckpt, s.waveforms, ref.sample_rate)
        return err, [
            f"reconstruction error {e:.1f} ({e / p99:.1f}x the clean 99th percentile), worst at {t:.2f} s"
            for e, t in zip(err, worst, strict=True)
        ]

    return score


def model_logits(models: Mapping[str, Any], x: np.ndarray, batch: int = 64) -> dict[str, np.ndarray]:
    """Logits (N, C) of each model on waveforms (N, T)."""
    import torch

    out = {}
    with torch.no_grad():
        for name, model in models.items():
            out[name] = np.concatenate(
                [
                    model(torch.from_numpy(np.asarray(x[i : i + batch], dtype=np.float32))).float().numpy()
                    for i in range(0, len(x), batch)
                ]
            )
    return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _confidence(kind: str) -> Callable[[Reference], Fitted]:
    def fit(ref: Reference) -> Fitted:
        if not ref.models:
            raise ValueError(f"detector {kind!r} needs at least one trained classifier (--model NAME=CKPT)")

        def score(s: ScoreSet) -> Result:
            logits = model_logits(ref.models, s.waveforms)
            mean_logits = np.mean(list(logits.values()), axis=0)
            probs = np.mean([_softmax(v) for v in logits.values()], axis=0)
            top = probs.argmax(axis=1)
            if kind == "max_softmax":
                value = 1.0 - probs.max(axis=1)
            else:  # energy (Liu et al. 2020): E(x) = -logsumexp(logits); higher energy = less familiar
                m = mean_logits.max(axis=1, keepdims=True)
                value = -(m[:, 0] + np.log(np.exp(mean_logits - m).sum(axis=1)))
            return value, [
                f"classifiers' best guess {ref.classes[t]!r} at p={probs[n, t]:.2f}"
                for n, t in enumerate(top)
            ]

        return score

    fit.__doc__ = {
        "max_softmax": "1 - maximum softmax probability (Hendrycks & Gimpel 2017), mean over models.",
        "energy": "Energy score -logsumexp(logits) (Liu et al. 2020) of the models' mean logits.",
    }[kind]
    return fit


def fit_label_errors(ref: Reference) -> Fitted:
    """Confident learning (cleanlab): quality of each clip's given label from out-of-sample probabilities.

    Probabilities: a logistic regression on summary features fitted on the clean train split (so
    out-of-sample for the scored split), averaged with the trained classifiers' softmax when given.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, _ = features.summary_features(ref.waveforms, ref.sample_rate)
    n_classes = len(ref.classes)
    lr = make_pipeline(StandardScaler(), LogisticRegression(C=0.2, max_iter=500))
    lr.fit(train, ref.manifest["label_idx"].to_numpy())

    def score(s: ScoreSet) -> Result:
        x, _ = features.summary_features(s.waveforms, ref.sample_rate)
        probs = np.full((len(x), n_classes), 1e-6)
        probs[:, lr.classes_] = lr.predict_proba(x)
        parts = [probs / probs.sum(axis=1, keepdims=True)]
        parts += [_softmax(v) for v in model_logits(ref.models, s.waveforms).values()] if ref.models else []
        probs = np.mean(parts, axis=0)
        given = s.manifest["label_idx"].to_numpy()
        quality = get_label_quality_scores(given, probs, method="self_confidence")
        present = np.unique(given)
        issues = np.zeros(len(given), dtype=bool)
        if len(present) == n_classes:  # cleanlab's thresholds need every class present
            issues = find_label_issues(given, probs, filter_by="prune_by_noise_rate")
        top = probs.argmax(axis=1)
        return 1.0 - quality, [
            f"labelled {ref.classes[g]!r} (p={probs[n, g]:.2f}), "
            f"sounds like {ref.classes[t]!r} (p={probs[n, t]:.2f})"
            + ("; cleanlab flags it" if issues[n] else "")
            for n, (g, t) in enumerate(zip(given, top, strict=True))
        ]

    return score


def fit_duplicates(ref: Reference) -> Fitted:
    """Near-duplicates: smallest relative distance to another clip of the set (level-aware embedding)."""

    def score(s: ScoreSet) -> Result:
        emb = features.duplicate_embedding(s.waveforms, ref.sample_rate).astype(np.float64)
        norms = np.linalg.norm(emb, axis=1)
        sq = (emb**2).sum(axis=1)
        dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * emb @ emb.T, 0.0))
        dist /= 0.5 * (norms[:, None] + norms[None, :]) + 1e-9
        np.fill_diagonal(dist, np.inf)
        nearest = dist.argmin(axis=1)
        d = dist[np.arange(len(emb)), nearest] if len(emb) > 1 else np.ones(len(emb))
        ids = s.manifest["id"].astype(str).to_numpy()
        return -np.log10(d + 1e-4), [
            f"{100 * v:.2f}% away from {ids[j]}" for v, j in zip(d, nearest, strict=True)
        ]

    return score


def fit_multitask(ref: Reference) -> Fitted:
    """Multi-task net: 1 - p(no audio fault) * p(family head agrees with the given label)."""
    from advmir.anomaly.multitask import load_multitask, predict

    if ref.multitask is None:
        raise ValueError("detector 'multitask' needs --multitask CKPT (the train_multitask rule)")
    model, ckpt = load_multitask(ref.multitask)
    faults = ckpt["faults"]

    def score(s: ScoreSet) -> Result:
        fam, fault = predict(model, s.waveforms)
        given = s.manifest["label_idx"].to_numpy()
        p_label = fam[np.arange(len(given)), given]
        value = 1.0 - fault[:, 0] * p_label
        reasons = []
        for n in range(len(given)):
            k = int(fault[n, 1:].argmax()) + 1
            if 1.0 - fault[n, 0] >= 1.0 - p_label[n]:
                reasons.append(f"fault head: {faults[k]} (p={fault[n, k]:.2f})")
            else:
                reasons.append(
                    f"family head: labelled {ref.classes[given[n]]!r} at p={p_label[n]:.2f}, "
                    f"sounds like {ref.classes[int(fam[n].argmax())]!r}"
                )
        return value, reasons

    return score


DETECTORS: dict[str, Callable[[Reference], Fitted]] = {
    **{name: _heuristic(name) for name in heuristics.CHECKS},
    "pitch": fit_pitch,
    "isolation_forest": fit_isolation_forest,
    "autoencoder": fit_autoencoder,
    "max_softmax": _confidence("max_softmax"),
    "energy": _confidence("energy"),
    "label_errors": fit_label_errors,
    "duplicates": fit_duplicates,
    "multitask": fit_multitask,
}
NEEDS_REFERENCE = ("bandwidth", "isolation_forest", "label_errors")  # fitted on clean train clips
NEEDS_TORCH = ("autoencoder", "max_softmax", "energy", "label_errors", "multitask")


def run_detector(name: str, ref: Reference, sets: Sequence[ScoreSet]) -> list[pd.DataFrame]:
    """Fit detector ``name`` on ``ref`` and score every set: one table (id, score, reason) per set."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
    scorer = DETECTORS[name](ref)
    out = []
    for s in sets:
        value, reasons = scorer(s)
        value = np.nan_to_num(np.asarray(value, dtype=np.float64), nan=0.0, posinf=1e6, neginf=-1e6)
        out.append(pd.DataFrame({"id": s.manifest["id"].to_numpy(), "score": value, "reason": reasons}))
    return out
