"""Randomized smoothing on the waveform: a certified L2 radius per clip, reported in SNR terms.

Cohen, Rosenfeld and Kolter 2019, 'Certified Adversarial Robustness via Randomized Smoothing'
[https://arxiv.org/abs/1902.02918], after the reference implementation locuslab/smoothing
(code/core.py: ``Smooth.predict`` and ``Smooth.certify``, followed step by step here). For a base
model f (waveform in, logits out) and a noise level sigma, the smoothed classifier is

    g(x) = argmax_c P(f(x + e) = c),   e ~ N(0, sigma^2 I).

If g's top class has probability p_A >= 1/2 at x, g predicts it at every x + d with
||d||_2 < sigma Phi^-1(p_A) (their Theorem 1; Phi^-1 is the standard normal quantile).

- CERTIFY: n0 noisy copies select the top class c_A (their count's argmax), n fresh copies count
  it (n_A), the one-sided Clopper-Pearson lower bound of n_A / n at confidence 1 - alpha gives
  p_A_lower (the reference's ``proportion_confint(n_A, n, alpha=2 * alpha, method="beta")[0]``) and
  the radius R = sigma Phi^-1(p_A_lower); when p_A_lower < 1/2 it abstains. With probability at
  least 1 - alpha over the noise, a certificate it returns is true.
- PREDICT: n copies; the top class unless a two-sided binomial test of its count against the
  runner-up's, at alpha, cannot reject a tie (then it abstains). With probability at least
  1 - alpha it returns g(x) or abstains.

The gain policy: x is the clip as the model sees it, the dataset's peak-normalised waveform (T,) at
full scale 1.0, no gain applied; the radius is in that scale (the same clip played 6 dB louder is
another x, with its own certificate). ``sigma`` is absolute and the same for every clip: a sigma
chosen from the clip (its RMS, its peak) would make the smoothing itself depend on x, so x and
x + d would be smoothed with different noise and Theorem 1 would not cover x + d: such a
certificate is void. The noisy copies are not clipped to [-1, 1] (nor are the training clips of
the ``gaussian`` mode, :mod:`advmir.defenses.adversarial`, that trains f at this sigma).

In SNR terms (the attack stage's SNR, 10 log10(sum x^2 / sum d^2)): a radius R protects every
perturbation d at or above 20 log10(||x||_2 / R) dB, the clip's ``snr_threshold_db``. A clip is
certified at S dB when g classifies it correctly and R >= ||x||_2 10^(-S/20) (:func:`certified_at`).

The arithmetic that sets sigma and n: with all n samples in c_A the bound is alpha^(1/n), so R is
at most sigma Phi^-1(alpha^(1/n)) (:func:`max_radius`): 2.46 sigma at n = 1,000, alpha = 0.001 (1.50
at n = 100, 3.20 at n = 10,000). A 1-s clip at 16 kHz has ||x||_2 = rms(x) sqrt(16,000), so
certifying it at S dB needs 2.46 sigma >= rms(x) 126.5 10^(-S/20): noise of per-sample SNR
20 log10(rms(x) / sigma) <= S - 42.0 + 7.8 = S - 34.2 dB, that the base model must get right
nearly always. 50 dB asks f to work at about 16 dB, 40 dB at about 6 dB.

Seeding: each clip's noise comes from its own ``torch.Generator``, seeded from the run's seed and
the clip's row of the dataset (CERTIFY's and PREDICT's from different streams), drawn on the CPU:
the same seed, settings and clip give the same numbers in any run and on any device.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import beta, binomtest, norm
from torch import Tensor, nn

from advmir.defenses.settings import SmoothingConfig
from advmir.snr import amplitude_ratio, energy_ratio_db

log = logging.getLogger("advmir.defenses")

ABSTAIN = -1
CLIP_COLUMNS = [
    "id", "row", "label", "prediction", "abstain", "correct", "n_top", "p_a_lower", "radius", "norm",
    "snr_threshold_db", "predicted", "predict_abstain", "predict_correct", "base_prediction", "n_label",
]  # fmt: skip
#: the streams of a clip's generator seeds: CERTIFY (selection, then estimation) and PREDICT
CERTIFY_STREAM, PREDICT_STREAM = 0, 1


def lower_confidence_bound(n_a: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound of a binomial proportion from ``n_a`` of
    ``n``: the alpha quantile of Beta(n_a, n - n_a + 1), 0 when n_a = 0 (= statsmodels'
    ``proportion_confint(n_a, n, alpha=2 * alpha, method="beta")[0]``, the reference's)."""
    if n_a <= 0:
        return 0.0
    return float(beta.ppf(alpha, n_a, n - n_a + 1))


def radius(p_lower: float, sigma: float) -> float:
    """The certified L2 radius sigma Phi^-1(p_lower); 0.0 when p_lower < 1/2 (CERTIFY abstains)."""
    return float(sigma * norm.ppf(p_lower)) if p_lower >= 0.5 else 0.0


def max_radius(n: int, alpha: float, sigma: float) -> float:
    """The largest radius CERTIFY can return with n samples: every sample in the top class."""
    return radius(lower_confidence_bound(n, n, alpha), sigma)


def snr_threshold_db(radius: Any, norm: Any) -> Any:
    """20 log10(norm / radius): the lowest SNR (dB) of a perturbation the radius covers, for a clip
    of L2 norm ``norm`` (floats or arrays of one shape); +inf where the radius is 0 (no certificate)."""
    r, x = np.asarray(radius, dtype=np.float64), np.asarray(norm, dtype=np.float64)
    with np.errstate(divide="ignore"):
        out = np.where(r > 0, energy_ratio_db(x**2, np.where(r > 0, r, 1.0) ** 2), np.inf)
    return out if out.ndim else float(out)


def certified_at(radius: Any, norm: Any, snr_db: float) -> Any:
    """Whether a radius covers every perturbation at ``snr_db`` or above of a clip of L2 norm ``norm``:
    radius >= norm 10^(-snr_db/20) (floats or arrays of one shape; the correctness of the prediction
    is the caller's to add)."""
    return np.asarray(radius, dtype=np.float64) >= np.asarray(norm, dtype=np.float64) * amplitude_ratio(
        float(snr_db)
    )


def clip_generator(seed: int, row: int, stream: int) -> torch.Generator:
    """A CPU generator for one clip (its dataset ``row``) and one stream (CERTIFY or PREDICT)."""
    state = np.random.SeedSequence([int(seed), int(row), int(stream)]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


@dataclass(frozen=True)
class Certificate:
    """CERTIFY's answer for one clip.

    Attributes:
        prediction: the certified class, or :data:`ABSTAIN`. top: the class the n0 samples selected.
        n_top: its count among the n estimation samples. p_lower: the Clopper-Pearson lower bound.
        radius: the certified L2 radius (0.0 when abstaining). counts: (C,) estimation counts.
    """

    prediction: int
    top: int
    n_top: int
    p_lower: float
    radius: float
    counts: np.ndarray


class Smooth:
    """The smoothed classifier g of a base model f at noise level ``sigma`` (the reference's ``Smooth``).

    Args:
        base: f, waveform (B, T) -> logits (B, C); put in eval mode here.
        n_classes: C.
        sigma: the noise's standard deviation, absolute (full scale 1.0), > 0, the same for every clip.
        batch_size: noisy copies per forward pass.
    """

    def __init__(self, base: nn.Module, n_classes: int, sigma: float, batch_size: int = 250) -> None:
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma!r}")
        self.base, self.n_classes, self.sigma = base.eval(), int(n_classes), float(sigma)
        self.batch_size = max(int(batch_size), 1)

    @torch.no_grad()
    def sample_counts(self, x: Tensor, num: int, generator: torch.Generator) -> np.ndarray:
        """Counts (C,) int64 of f's predicted classes on ``num`` noisy copies x + N(0, sigma^2 I) of
        one clip x (T,), ``batch_size`` copies per forward pass; noise drawn on the CPU."""
        counts = np.zeros(self.n_classes, dtype=np.int64)
        remaining = int(num)
        while remaining > 0:
            size = min(self.batch_size, remaining)
            noise = torch.randn((size, x.shape[-1]), generator=generator, dtype=torch.float32)
            batch = x.unsqueeze(0) + self.sigma * noise.to(device=x.device, dtype=x.dtype)
            labels = self.base(batch).argmax(dim=1).cpu().numpy()
            counts += np.bincount(labels, minlength=self.n_classes)[: self.n_classes]
            remaining -= size
        return counts

    def predict(self, x: Tensor, n: int, alpha: float, generator: torch.Generator) -> int:
        """PREDICT: g's class for one clip x (T,) from n noisy copies, or :data:`ABSTAIN` when a
        two-sided binomial test of the top two counts cannot reject a tie at ``alpha``."""
        counts = self.sample_counts(x, n, generator)
        top2 = counts.argsort()[::-1][:2]
        count1 = int(counts[top2[0]])
        count2 = int(counts[top2[1]]) if len(top2) > 1 else 0
        if binomtest(count1, count1 + count2, p=0.5).pvalue > alpha:
            return ABSTAIN
        return int(top2[0])

    def certify(self, x: Tensor, n0: int, n: int, alpha: float, generator: torch.Generator) -> Certificate:
        """CERTIFY: for one clip x (T,), the class selected by n0 noisy copies, its count among n
        fresh ones, the lower bound of its probability at 1 - alpha and the radius; abstains when
        the bound is below 1/2."""
        top = int(self.sample_counts(x, n0, generator).argmax())
        counts = self.sample_counts(x, n, generator)
        n_top = int(counts[top])
        p_lower = lower_confidence_bound(n_top, n, alpha)
        prediction = top if p_lower >= 0.5 else ABSTAIN
        return Certificate(prediction, top, n_top, p_lower, radius(p_lower, self.sigma), counts)


def certify_clips(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    rows: np.ndarray,
    ids: np.ndarray,
    setting: SmoothingConfig,
    *,
    n_classes: int,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """CERTIFY and PREDICT of the smoothed ``model`` on every clip, one row each (:data:`CLIP_COLUMNS`).

    Args:
        model: the base model f, waveform (B, T) -> logits (B, C).
        x: clips (m, T) as the model sees them (peak-normalised, no gain). y: labels (m,) int64.
        rows: (m,) the clips' dataset rows (they seed the noise). ids: (m,) the clips' ids.
        setting: sigma, n0, n, alpha, n_predict, batch_size.
        n_classes: C. seed: the run's seed. progress: a tqdm bar on stderr (the rule's log).
    """
    from tqdm import tqdm

    from advmir.defenses.robust import predict_labels

    smooth = Smooth(model, n_classes, setting.sigma, setting.batch_size)
    base = predict_labels(model, x, setting.batch_size)
    labels = y.cpu().numpy()
    out = []
    bar = tqdm(range(x.shape[0]), desc=setting.name, unit="clip", file=sys.stderr, mininterval=30,
               disable=not progress)  # fmt: skip
    for i in bar:
        row = int(rows[i])
        cert = smooth.certify(
            x[i], setting.n0, setting.n, setting.alpha, clip_generator(seed, row, CERTIFY_STREAM)
        )
        predicted = smooth.predict(
            x[i], setting.predict_samples, setting.alpha, clip_generator(seed, row, PREDICT_STREAM)
        )
        norm_x = float(torch.linalg.vector_norm(x[i].double()))
        out.append(
            {
                "id": str(ids[i]),
                "row": row,
                "label": int(labels[i]),
                "prediction": cert.prediction,
                "abstain": cert.prediction == ABSTAIN,
                "correct": cert.prediction == int(labels[i]),
                "n_top": cert.n_top,
                "p_a_lower": cert.p_lower,
                "radius": cert.radius,
                "norm": norm_x,
                "snr_threshold_db": snr_threshold_db(cert.radius, norm_x),
                "predicted": predicted,
                "predict_abstain": predicted == ABSTAIN,
                "predict_correct": predicted == int(labels[i]),
                "base_prediction": int(base[i]),
                "n_label": int(cert.counts[int(labels[i])]),
            }
        )
    return pd.DataFrame(out, columns=CLIP_COLUMNS)


def certified_accuracy(clips: pd.DataFrame, snr_db: float) -> float:
    """Share of the clips that g classifies correctly with a radius covering ``snr_db`` (the clips of
    :func:`certify_clips`; abstentions and errors count as not certified)."""
    if not len(clips):
        return float("nan")
    ok = clips["correct"].astype(bool).to_numpy() & certified_at(clips["radius"], clips["norm"], snr_db)
    return float(np.mean(ok))


def summary(clips: pd.DataFrame, setting: SmoothingConfig) -> dict[str, Any]:
    """The run's accuracies from its clips: the smoothed classifier's clean accuracy (PREDICT) and
    abstentions, CERTIFY's abstentions, the base model's clean accuracy and its accuracy under the
    noise (the label's share of the n estimation samples)."""
    n = len(clips)
    mean = (lambda c: float(clips[c].astype(float).mean())) if n else (lambda c: float("nan"))
    base_noisy = float((clips["n_label"] / setting.n).mean()) if n else float("nan")
    return {
        "n_clips": n,
        "clean_accuracy": mean("predict_correct"),
        "predict_abstain_rate": mean("predict_abstain"),
        "certify_accuracy": mean("correct"),
        "abstain_rate": mean("abstain"),
        "base_clean_accuracy": float((clips["base_prediction"] == clips["label"]).mean())
        if n
        else float("nan"),
        "base_noisy_accuracy": base_noisy,
        "max_radius": max_radius(setting.n, setting.alpha, setting.sigma),
        "passes_per_clip": setting.n0 + setting.n + setting.predict_samples,
    }


def write_smoothing(
    job: Any,
    folder: Path,
    setting: SmoothingConfig,
    snr_grid: list[float],
    *,
    seed: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Certify the clips of ``job`` (:func:`advmir.defenses.robust.plan_robust`'s: the attack stage's
    seeded evaluation subset and the base model) and write certified.csv and smoothing.json into the
    new ``folder``. Returns the json's content: the settings, :func:`summary`, the certified accuracy
    at each SNR of ``snr_grid``, and the wall time (seconds per clip: here only, never in a table)."""
    classes = getattr(job.model, "classes", None)
    n_classes = len(classes) if classes is not None else int(job.y.max()) + 1
    start = time.perf_counter()
    clips = certify_clips(
        job.model, job.x, job.y, job.rows, job.ids, setting, n_classes=n_classes, seed=seed, progress=progress
    )
    seconds = time.perf_counter() - start
    meta = {
        **setting.as_dict(),
        **job.info,
        **summary(clips, setting),
        "certified_accuracy": {f"{s:g}": certified_accuracy(clips, s) for s in snr_grid},
        "gain": "none: the clip as the model sees it (peak-normalised by the dataset, full scale 1.0)",
        "seconds": round(seconds, 1),
        "seconds_per_clip": round(seconds / max(len(clips), 1), 3),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    folder.mkdir()
    clips.to_csv(folder / "certified.csv", index=False)
    (folder / "smoothing.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


CERTIFIED_COLUMNS = [
    "dataset", "model", "base_model", "train_sigma", "sigma", "n0", "n", "alpha", "n_predict", "snr_db",
    "certified_accuracy", "clean_accuracy", "abstain_rate", "predict_abstain_rate", "base_clean_accuracy",
    "base_noisy_accuracy", "n_clips", "passes_per_clip",
]  # fmt: skip


#: the run's own numbers (smoothing.json), repeated on each of its rows
RUN_COLUMNS = CERTIFIED_COLUMNS[CERTIFIED_COLUMNS.index("clean_accuracy") :]


def certified_table(runs: list[Path], snr_grid: list[float]) -> pd.DataFrame:
    """results/tables/certified.csv: one row per (dataset, smoothed classifier, SNR of ``snr_grid``)
    from each run folder's smoothing.json and certified.csv (:data:`CERTIFIED_COLUMNS`; ``model`` is
    the smoothing entry's name, ``base_model`` the model f it smooths). Wall time is left out: two runs
    of one config write the table byte for byte alike (seconds per clip: each smoothing.json)."""
    from advmir.artifacts import read_csv, read_json

    out = []
    for run in dict.fromkeys(runs):
        meta = read_json(run / "smoothing.json", keys=("dataset", "name", "model", "sigma", "n"))
        clips = read_csv(run / "certified.csv", columns=("correct", "radius", "norm"))
        for snr in sorted({float(s) for s in snr_grid}, reverse=True):
            out.append(
                {
                    "dataset": meta["dataset"],
                    "model": meta["name"],
                    "base_model": meta["model"],
                    "train_sigma": meta.get("train_sigma"),
                    **{k: meta[k] for k in ("sigma", "n0", "n", "alpha", "n_predict")},
                    "snr_db": snr,
                    "certified_accuracy": certified_accuracy(clips, snr),
                    **{k: meta[k] for k in RUN_COLUMNS},
                }
            )
    table = pd.DataFrame(out, columns=CERTIFIED_COLUMNS)
    table = table.sort_values(["dataset", "model", "snr_db"], ascending=[True, True, False], kind="stable")
    shares = [c for c in CERTIFIED_COLUMNS if c.endswith(("accuracy", "rate"))]
    table[shares] = table[shares].astype(float).round(4)
    return table.reset_index(drop=True)
