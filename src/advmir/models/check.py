"""The contract every model of the workflow keeps, checked on a few clips before a long run.

``python -m advmir check-model NAME`` prints these findings; ``import-model`` refuses a model of
your own that fails one. A waveform classifier must:

- return finite scores of shape (B, n_classes) for a batch (B, T);
- be deterministic in eval mode (two calls on the same clips agree);
- score each clip independently of the rest of its batch;
- pass a gradient to its input (attacks follow it; an argmax, rounding or ``.detach()`` inside
  blocks it);
- read its input at the declared scale: if scaling the clips by 32768 (or 1/32768) changes the
  predictions *and* makes them clearly more accurate, the declared ``scale`` is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

#: Scales tried against the declared one: int16-scale input, and [-1, 1] input to an int16 model.
PROBE_SCALES = (32768.0, 1.0 / 32768.0)
#: Forward and backward passes of the gradient check.
GRADIENT_PASSES = 4
#: How much more accurate another scale must be to call the declared one wrong.
SCALE_MARGIN = 0.25


@dataclass(frozen=True)
class Finding:
    """One check: its name, whether it passed, and what was seen."""

    check: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.check:<18} {self.detail}"


def _scores(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).float()


def check_contract(
    model: nn.Module,
    clips: np.ndarray,
    labels: np.ndarray | None = None,
    n_classes: int | None = None,
    scorable: np.ndarray | None = None,
) -> list[Finding]:
    """Run every check of the module docstring.

    Args:
        model: waveform classifier in eval mode, (B, T) -> (B, n_classes).
        clips: (N, T) float32 in [-1, 1], N >= 2 (a few clips of the dataset).
        labels: (N,) class indices, or None when the clips are unlabelled (the scale check then only
            reports how much the predictions move).
        n_classes: the number of scores expected per clip (None: not checked).
        scorable: (N,) bool, the clips whose label the model can predict (default: all).
    Returns:
        one :class:`Finding` per check, in order.
    """
    x = torch.from_numpy(np.asarray(clips, dtype=np.float32))
    findings: list[Finding] = []
    try:
        out = _scores(model, x)
    except Exception as exc:
        return [Finding("output", False, f"the model fails on a batch of shape {tuple(x.shape)}: {exc}")]
    shape_ok = out.dim() == 2 and out.shape[0] == len(x) and (n_classes is None or out.shape[1] == n_classes)
    finite = bool(torch.isfinite(out).all())
    want = f"({len(x)}, {n_classes if n_classes is not None else 'n_classes'})"
    findings.append(
        Finding(
            "output",
            shape_ok and finite,
            f"scores of shape {tuple(out.shape)} (expected {want})" + ("" if finite else ", not all finite"),
        )
    )
    if not shape_ok:
        return findings
    again = _scores(model, x)
    spread = float((again - out).abs().max())
    tol = 1e-4 * (1.0 + float(out.abs().max()))
    findings.append(
        Finding(
            "deterministic",
            spread <= tol,
            f"two calls on the same clips differ by at most {spread:.2g}"
            + (
                ""
                if spread <= tol
                else ": the model is random in eval mode (dropout or noise traced in training mode? "
                "call model.eval() before torch.jit.trace/script and export again)"
            ),
        )
    )
    alone = torch.cat([_scores(model, x[i : i + 1]) for i in range(min(len(x), 4))])
    spread = float((alone - out[: len(alone)]).abs().max())
    findings.append(
        Finding(
            "batch_independent",
            spread <= 10 * tol,
            f"clips scored alone and in a batch differ by at most {spread:.2g}"
            + (
                ""
                if spread <= 10 * tol
                else ": a clip's scores depend on the rest of its batch (batch norm in training mode, or a "
                "normalisation over the batch); export the model in eval mode"
            ),
        )
    )
    findings.append(_gradient(model, x, out))
    findings.append(_scale(model, x, out, labels, scorable))
    return findings


def _gradient(model: nn.Module, x: torch.Tensor, out: torch.Tensor) -> Finding:
    blocked = (
        ": no gradient reaches the input, so white-box attacks cannot follow it; the model has a "
        "non-differentiable step (argmax, rounding, an integer cast, .detach(), a numpy call)"
    )
    try:
        # several passes, as an attack makes: some runtimes (TorchScript's graph executor) change
        # how they differentiate after the first calls
        for _ in range(GRADIENT_PASSES):
            xg = x.clone().requires_grad_(True)
            with torch.enable_grad():
                scores = model(xg)
                if not scores.requires_grad:
                    return Finding(
                        "gradient", False, "the scores do not depend on the input differentiably" + blocked
                    )
                picked = scores.gather(1, out.argmax(1, keepdim=True)).sum()
                (grad,) = torch.autograd.grad(picked, xg, allow_unused=True)
    except (RuntimeError, NotImplementedError) as exc:
        return Finding("gradient", False, f"backward fails ({str(exc).splitlines()[0]})" + blocked)
    if grad is None or not bool(torch.isfinite(grad).all()) or float(grad.abs().sum()) == 0.0:
        what = (
            "none" if grad is None else ("not finite" if not bool(torch.isfinite(grad).all()) else "all zero")
        )
        return Finding("gradient", False, f"the input gradient is {what}" + blocked)
    norm = grad.flatten(1).norm(dim=1)
    return Finding(
        "gradient", True, f"input gradient finite and non-zero (median L2 norm {float(norm.median()):.3g})"
    )


def _scale(
    model: nn.Module,
    x: torch.Tensor,
    out: torch.Tensor,
    labels: np.ndarray | None,
    scorable: np.ndarray | None,
) -> Finding:
    pred = out.argmax(1).numpy()
    keep = np.ones(len(pred), bool) if scorable is None else np.asarray(scorable, bool)
    moved, accuracy = {}, {}
    for factor in PROBE_SCALES:
        other = _scores(model, x * factor).argmax(1).numpy()
        moved[factor] = float(np.mean(other != pred))
        if labels is not None and keep.any():
            accuracy[factor] = float(np.mean(other[keep] == labels[keep]))
    if labels is None or not keep.any():
        worst = max(moved.values())
        return Finding(
            "scale",
            True,
            f"unlabelled clips: rescaling the input by 32768 or 1/32768 changes {worst:.0%} of predictions "
            "(prepare the dataset for the accuracy check)",
        )
    declared = float(np.mean(pred[keep] == labels[keep]))
    best = max(accuracy, key=accuracy.get)
    text = f"accuracy {declared:.2f} on {int(keep.sum())} clips at the declared scale; " + ", ".join(
        f"{accuracy[f]:.2f} at x{f:g}" if f >= 1 else f"{accuracy[f]:.2f} at x1/{1 / f:g}"
        for f in PROBE_SCALES
    )
    if moved[best] > 0.1 and accuracy[best] >= declared + SCALE_MARGIN:
        hint = "multiply scale by 32768 (int16-scale input)" if best > 1 else "divide scale by 32768"
        return Finding("scale", False, text + f": the declared scale looks wrong; {hint}")
    return Finding("scale", True, text)
