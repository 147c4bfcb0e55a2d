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
from advmir.anomaly.ensemble import robust_z

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


PITCH_REFERENCE_CLIPS = 300  # clean train clips that calibrate the pitch check's three measures
PITCH_MIN_SPREAD = (
    0.2  # in log salience ratio: a reference of near-identical notes must not make noise extreme
)


def pitch_measures(x: np.ndarray, sample_rate: int, labelled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pitch check's measures (N, 3): near the label (+-7.5 semitones), label an octave too high,
    label an octave too low (see :mod:`advmir.anomaly.features`); and the best pitch near the label (N,)."""
    white = features.whitened_spectrum(x)  # one long FFT pass serves both
    near, best = features.pitch_mismatch(x, sample_rate, labelled, white=white)
    high, low = features.octave_evidence(x, sample_rate, labelled, white=white)
    return np.stack([near, high, low], axis=1), best


def fit_pitch(ref: Reference) -> Fitted:
    """Pitch-label check: the largest of three measures, each as a robust z against clean train clips:
    how much better a pitch within +-7.5 semitones of the label fits the spectrum (steps, fifths),
    and the evidence that the label is an octave too high or too low."""
    center, spread = np.zeros(3), np.ones(3)
    if "pitch" in ref.manifest.columns and len(ref.manifest):
        k = min(len(ref.manifest), PITCH_REFERENCE_CLIPS)
        rows = np.sort(np.random.default_rng(ref.seed).choice(len(ref.manifest), k, replace=False))
        train, _ = pitch_measures(
            np.asarray(ref.waveforms[rows], dtype=np.float32),
            ref.sample_rate,
            ref.manifest["pitch"].to_numpy(dtype=np.float64)[rows],
        )
        # the clean 95th percentile is the unit: a one-sided tail, not a symmetric spread
        center = np.median(train, axis=0)
        spread = np.maximum(np.percentile(train, 95, axis=0) - center, PITCH_MIN_SPREAD)

    def score(s: ScoreSet) -> Result:
        if "pitch" not in s.manifest.columns:
            return np.zeros(len(s.manifest)), ["no pitch labels in the manifest"] * len(s.manifest)
        labelled = s.manifest["pitch"].to_numpy(dtype=np.float64)
        measures, best = pitch_measures(s.waveforms, ref.sample_rate, labelled)
        z = (measures - center) / spread
        which = z.argmax(axis=1)
        # a pitch found near the label explains the clip better than octave talk, when it is one
        which[(z[:, 0] >= 1.0) & (np.abs(best - labelled) >= 0.5)] = 0
        says = {
            0: lambda p, b: f"labelled MIDI {p:.0f}, sounds like {b:.1f}",
            1: lambda p, b: f"labelled MIDI {p:.0f}, sounds an octave lower (MIDI {p - 12:.0f})",
            2: lambda p, b: f"labelled MIDI {p:.0f}, its odd harmonics are missing: an octave higher?",
        }
        return z.max(axis=1), [says[w](p, b) for w, p, b in zip(which, labelled, best, strict=True)]

    return score


REFERENCE_CLIPS = 600  # clean train clips that the reference-relative checks compare with


def _against_reference(
    measure: Callable[[np.ndarray, int], np.ndarray],
    floor: float | np.ndarray,
    combine: Callable[[np.ndarray], np.ndarray],
    explain: Callable[[np.ndarray, np.ndarray, int], str],
) -> Callable[[Reference], Fitted]:
    """A detector from per-clip measures (N, D): each measure as a z against clean train clips of the
    same label and nearby pitch (:func:`advmir.anomaly.heuristics.reference_z`), the z's combined by
    ``combine`` (N, D) -> (N,) into the score; ``explain(own row, expected row, worst column)`` says why."""

    def fit(ref: Reference) -> Fitted:
        k = min(len(ref.manifest), REFERENCE_CLIPS)
        rows = np.sort(np.random.default_rng(ref.seed).choice(len(ref.manifest), k, replace=False))
        ref_values = measure(np.asarray(ref.waveforms[rows], dtype=np.float32), ref.sample_rate)
        ref_manifest = ref.manifest.iloc[rows].reset_index(drop=True)

        def score(s: ScoreSet) -> Result:
            own = measure(s.waveforms, ref.sample_rate)
            z, expected = heuristics.reference_z(own, s.manifest, ref_values, ref_manifest, floor)
            value = combine(z)
            worst = np.argmax(z, axis=1)
            return value, [explain(own[n], expected[n], int(worst[n])) for n in range(len(own))]

        return score

    return fit


def _noise_reason(bands: Sequence[int]) -> Callable[[np.ndarray, np.ndarray, int], str]:
    def explain(own: np.ndarray, expected: np.ndarray, worst: int) -> str:
        j = bands[int(np.argmax(own[list(bands)] - expected[list(bands)]))]
        lo = features.FLOOR_BANDS_HZ[j]
        return (
            f"noise floor {own[j]:.0f} dB in {lo:g}-{2 * lo:g} Hz, clean notes like it {expected[j]:.0f} dB"
        )

    return explain


_ALL_BANDS = tuple(range(len(features.FLOOR_BANDS_HZ)))

fit_noise_bands = _against_reference(
    features.band_floors, 3.0, lambda z: z.max(axis=1), _noise_reason(_ALL_BANDS)
)
fit_noise_bands.__doc__ = (
    "Coloured noise: the octave band whose noise floor (features.band_floors) rises most above clean "
    "notes of the same family and nearby pitch (robust z, spread at least 3 dB)."
)
fit_distortion = _against_reference(
    features.distortion_measures,
    np.array([0.5, 0.01]),
    lambda z: z.max(axis=1),
    lambda own, exp, j: (
        f"loud frames' crest factor {own[0]:.1f} dB below the quieter frames' (clean: {exp[0]:.1f} dB)"
        if j == 0
        else f"{100 * own[1]:.0f}% of the loudest 100 ms within 10% of its peak (clean: {100 * exp[1]:.0f}%)"
    ),
)
fit_distortion.__doc__ = (
    "Saturation (hard, soft or one-sided clipping): loud frames flatter than the same note's quiet ones, "
    "and squashed tops, against clean notes of the same family and pitch (features.distortion_measures)."
)
fit_codec_artifacts = _against_reference(
    features.codec_measures,
    np.array([0.002, 1.0, 1.0, 1.0]),
    lambda z: np.maximum(z[:, 0], -z[:, 1:].min(axis=1)),
    lambda own, exp, j: (
        f"{100 * own[0]:.1f}% of the sounding spectrum in holes (clean notes like it: {100 * exp[0]:.1f}%)"
        if own[0] > exp[0] and j == 0
        else f"spectrum falls {-own[1:].min():.0f} dB at one band edge near the top "
        f"(clean: {-exp[1:].min():.0f} dB)"
    ),
)
fit_codec_artifacts.__doc__ = (
    "Low-bitrate coding: spectral holes in loud frames and a cliff at the top of the band, against "
    "clean notes of the same family and pitch (features.codec_measures)."
)


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
        known = given >= 0  # -1: a label that is not one of the reference's classes
        value = np.zeros(len(given))
        issues = np.zeros(len(given), dtype=bool)
        if known.any():
            value[known] = 1.0 - get_label_quality_scores(
                given[known], probs[known], method="self_confidence"
            )
            if len(np.unique(given[known])) == n_classes:  # cleanlab's thresholds need every class present
                issues[known] = find_label_issues(given[known], probs[known], filter_by="prune_by_noise_rate")
        top = probs.argmax(axis=1)
        return value, [
            f"labelled {ref.classes[g]!r} (p={probs[n, g]:.2f}), "
            f"sounds like {ref.classes[t]!r} (p={probs[n, t]:.2f})"
            + ("; cleanlab flags it" if issues[n] else "")
            if g >= 0
            else f"label {s.manifest['label'].iloc[n]!r} is not a class the models know; sounds like "
            f"{ref.classes[t]!r} (p={probs[n, t]:.2f})"
            for n, (g, t) in enumerate(zip(given, top, strict=True))
        ]

    return score


#: folds of the out-of-sample label check on the dataset under review
CV_FOLDS = 5


def cross_validated_label_errors(
    waveforms: np.ndarray,
    sample_rate: int,
    labels: Sequence[str],
    *,
    models: Mapping[str, Any] | None = None,
    folds: int = CV_FOLDS,
    seed: int = 0,
) -> Result:
    """Confident learning on the dataset under review, with its own labels: out-of-sample
    probabilities from a k-fold cross-validated logistic regression fitted on that dataset.

    No class list of another dataset is assumed, so a folder labelled by its own subfolders gets a
    label check, and a dataset that merely sounds different from the one the classifiers were
    trained on is not one big label error. Features: the summary features, plus the classifiers'
    logits when ``models`` are given (a timbre representation learnt elsewhere; its classes need
    not be the labels).

    Args:
        waveforms: (N, T) float32 clips.
        labels: (N,) each clip's given label.
        folds: at most this many folds; fewer when the rarest label (of those with two or more
            clips) has fewer clips.

    Returns:
        ``1 - p(given label)`` out of sample (N,) (cleanlab's self-confidence), 0 for a clip whose
        label only it carries (no other clip to learn it from), and a reason per clip.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray([str(v) for v in labels], dtype=object)
    names, counts = np.unique(labels, return_counts=True)
    learnable = set(names[counts >= 2])
    keep = np.array([v in learnable for v in labels])
    value = np.zeros(len(labels))
    if len(learnable) < 2:
        return value, ["fewer than two labels with two clips each: no label check"] * len(labels)
    reasons = [f"the only clip labelled {v!r}: no other clip to check it against" for v in labels]
    x, _ = features.summary_features(waveforms, sample_rate)
    if models:
        x = np.concatenate([x, *model_logits(models, waveforms).values()], axis=1)
    x, y_names = x[keep], labels[keep]
    classes = sorted(learnable)
    y = np.searchsorted(classes, y_names)
    k = int(min(folds, np.bincount(y).min()))
    probs = np.zeros((len(y), len(classes)))
    for train, test in StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y):
        lr = make_pipeline(StandardScaler(), LogisticRegression(C=0.2, max_iter=1000))
        lr.fit(x[train], y[train])
        probs[np.ix_(test, lr.classes_)] = lr.predict_proba(x[test])
    probs = np.maximum(probs, 1e-6)
    probs /= probs.sum(axis=1, keepdims=True)
    value[keep] = 1.0 - get_label_quality_scores(y, probs, method="self_confidence")
    issues = find_label_issues(y, probs, filter_by="prune_by_noise_rate")
    top = probs.argmax(axis=1)
    for j, n in enumerate(np.flatnonzero(keep)):
        reasons[n] = (
            f"labelled {classes[y[j]]!r} (p={probs[j, y[j]]:.2f} out of sample, {k}-fold on this dataset), "
            f"sounds like {classes[top[j]]!r} (p={probs[j, top[j]]:.2f})"
            + ("; cleanlab flags it" if issues[j] else "")
        )
    return value, reasons


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
        # a label the family head does not know (-1) is no evidence: the fault head alone speaks
        p_label = np.where(given >= 0, fam[np.arange(len(given)), np.maximum(given, 0)], 1.0)
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
    "noise_bands": fit_noise_bands,
    "distortion": fit_distortion,
    "codec_artifacts": fit_codec_artifacts,
    "isolation_forest": fit_isolation_forest,
    "autoencoder": fit_autoencoder,
    "max_softmax": _confidence("max_softmax"),
    "energy": _confidence("energy"),
    "label_errors": fit_label_errors,
    "duplicates": fit_duplicates,
    "multitask": fit_multitask,
}
NEEDS_REFERENCE = (
    "bandwidth",
    "pitch",
    "noise_bands",
    "distortion",
    "codec_artifacts",
    "isolation_forest",
    "label_errors",
)  # fitted on clean train clips
NEEDS_TORCH = ("autoencoder", "max_softmax", "energy", "label_errors", "multitask")


def run_detector(name: str, ref: Reference, sets: Sequence[ScoreSet]) -> list[pd.DataFrame]:
    """Fit detector ``name`` on ``ref`` and score every set: one table (id, score, robust_z, reason) per
    set. ``robust_z`` is the score against the set's own distribution (median / IQR,
    :func:`advmir.anomaly.ensemble.robust_z`), comparable across detectors and datasets."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
    scorer = DETECTORS[name](ref)
    out = []
    for s in sets:
        value, reasons = scorer(s)
        value = np.nan_to_num(np.asarray(value, dtype=np.float64), nan=0.0, posinf=1e6, neginf=-1e6)
        out.append(
            pd.DataFrame(
                {
                    "id": s.manifest["id"].to_numpy(),
                    "score": value,
                    "robust_z": robust_z(value),
                    "reason": reasons,
                }
            )
        )
    return out
