"""Scoring on the target model: the success rule, the rows of examples.csv and the rates of attacks.csv.

The success rule lives here and only here. An example *fools* the model when its prediction is the
target (targeted; the target is a class index) or is not the label (untargeted; the target is -1),
and it is a *success* when it fools the model on a clip the model got right when clean. The attacks'
early stop (:meth:`advmir.attacks.base.Attack.is_success`) uses :func:`fooled` on the crafting model;
examples.csv scores the adversarial example and its matched-noise control
(:mod:`advmir.attacks.controls`) on the target model with :func:`success_rule`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd
import torch

from advmir.attacks.budgets import perturbation_metrics
from advmir.attacks.controls import matched_noise

if TYPE_CHECKING:  # base.py imports this module for `fooled`
    from advmir.attacks.base import AttackResult

EXAMPLE_COLUMNS = [
    "id", "row", "label", "target", "clean_pred", "clean_conf", "adv_pred", "adv_conf", "clean_correct",
    "success", "snr_db", "linf", "l2", "iterations", "queries", "seconds",
    "noise_snr_db", "noise_pred", "noise_success",
]  # fmt: skip
SNR_THRESHOLDS_DB = (30, 40)  # attacks.csv: success_rate_snr{b} and noise_success_rate_snr{b}
SNR_TOLERANCE_DB = 0.05  # an example exactly at a budget b counts for b despite float32 rounding

Labels = TypeVar("Labels", np.ndarray, torch.Tensor)


def fooled(pred: Labels, label: Labels, target: Labels) -> Labels:
    """Whether predictions fool the model: ``pred == target`` where ``target >= 0`` (targeted), else
    ``pred != label``. Arrays or tensors of shape (B,), integer classes; returns (B,) bool."""
    targeted = target >= 0
    return (targeted & (pred == target)) | (~targeted & (pred != label))


def success_rule(
    pred: np.ndarray, label: np.ndarray, target: np.ndarray, clean_pred: np.ndarray
) -> np.ndarray:
    """(B,) bool: the clean clip was classified right and ``pred`` fools the model (:func:`fooled`).

    Args:
        pred: prediction on the perturbed clips, shape (B,).
        label: true classes, shape (B,).
        target: target classes, -1 where untargeted, shape (B,).
        clean_pred: prediction on the clean clips, shape (B,).
    """
    return (np.asarray(clean_pred) == np.asarray(label)) & fooled(
        np.asarray(pred), np.asarray(label), np.asarray(target)
    )


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class (n,) and its softmax probability (n,) of ``model`` on clips x (n, T)."""
    device = next(model.parameters()).device
    preds, confs = [], []
    for i in range(0, x.shape[0], batch_size):
        probs = torch.softmax(model(x[i : i + batch_size].to(device)).float(), dim=1)
        conf, pred = probs.max(dim=1)
        preds.append(pred.cpu())
        confs.append(conf.cpu())
    return torch.cat(preds).numpy(), torch.cat(confs).numpy()


def score_chunk(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    result: AttackResult,
    rows: np.ndarray,
    ids: np.ndarray,
    seed: int,
    batch_size: int,
) -> tuple[pd.DataFrame, torch.Tensor]:
    """Score a chunk of adversarial examples and their matched-noise controls on the target ``model``.

    Args:
        model: the target model (for a surrogate attack, not the one the examples were crafted on).
        x: clean clips, shape (B, T); y: their labels, shape (B,).
        result: the attack's result on (x, y), on the CPU.
        rows: the clips' rows in the dataset, shape (B,); ids: their ids, shape (B,).
        seed: the run's seed (seeds the controls' noise, with each row).
        batch_size: clips per forward pass.

    Returns:
        The chunk's rows of examples.csv (columns :data:`EXAMPLE_COLUMNS`), and the controls,
        float32 (B, T), row j the matched noise of example j (:func:`advmir.attacks.controls.matched_noise`).
    """
    label, target = y.numpy(), result.target.numpy()
    clean_pred, clean_conf = predict(model, x, batch_size)
    adv_pred, adv_conf = predict(model, result.x_adv, batch_size)
    control = matched_noise(x, result.x_adv, rows, seed)
    noise_pred, _ = predict(model, control, batch_size)
    frame = pd.DataFrame({
        "id": np.asarray(ids).astype(str), "row": np.asarray(rows, dtype=np.int64), "label": label,
        "target": target, "clean_pred": clean_pred, "clean_conf": clean_conf.astype(np.float64),
        "adv_pred": adv_pred, "adv_conf": adv_conf.astype(np.float64), "clean_correct": clean_pred == label,
        "success": success_rule(adv_pred, label, target, clean_pred),
        "snr_db": result.snr_db.numpy(), "linf": result.linf.numpy(), "l2": result.l2.numpy(),
        "iterations": result.iterations.numpy(), "queries": result.queries.numpy(),
        "seconds": result.seconds.numpy().astype(np.float64),
        "noise_snr_db": perturbation_metrics(x, control)["snr_db"].numpy(), "noise_pred": noise_pred,
        "noise_success": success_rule(noise_pred, label, target, clean_pred),
    })  # fmt: skip
    return frame[EXAMPLE_COLUMNS], control


def success_rates(examples: pd.DataFrame) -> dict[str, Any]:
    """The rates of one run for attacks.csv, each over the run's clean-correct clips (NaN if none).

    ``success_rate`` and ``noise_success_rate`` (the matched noise's), ``excess_over_noise`` (their
    difference), and per threshold b of :data:`SNR_THRESHOLDS_DB`: ``success_rate_snr{b}`` (successes
    with SNR >= b) and ``noise_success_rate_snr{b}`` (noise successes with noise SNR >= b), SNR within
    :data:`SNR_TOLERANCE_DB` of b counting as b.

    Args:
        examples: a run's examples.csv (columns :data:`EXAMPLE_COLUMNS`).
    """
    missing = sorted({"noise_snr_db", "noise_success"} - set(examples.columns))
    if missing:
        raise ValueError(f"examples.csv has no column(s) {missing}: it predates the matched-noise control; "
                         "re-run the craft job")  # fmt: skip
    correct = examples["clean_correct"].astype(bool)
    n_correct = int(correct.sum())

    def rate(hits: pd.Series) -> float:
        return float((hits.astype(bool) & correct).sum()) / n_correct if n_correct else float("nan")

    out = {"success_rate": rate(examples["success"]), "noise_success_rate": rate(examples["noise_success"])}
    out["excess_over_noise"] = out["success_rate"] - out["noise_success_rate"]
    for b in SNR_THRESHOLDS_DB:
        out[f"success_rate_snr{b}"] = rate(examples["success"] & (examples["snr_db"] >= b - SNR_TOLERANCE_DB))
        out[f"noise_success_rate_snr{b}"] = rate(
            examples["noise_success"] & (examples["noise_snr_db"] >= b - SNR_TOLERANCE_DB)
        )
    return out
