"""Adversarial-example detectors, and the adaptive attacker who must fool the classifier and them.

A detector maps clips (B, T) in [-1, 1] to a score (B,), higher = more likely adversarial; it flags a
clip above its threshold, set on clean calibration clips so that a share ``fpr`` of them is flagged.
The detectors (``defenses.detection.detectors``):

- ``squeeze``: feature squeezing (Xu, Evans and Qi 2018, 'Feature Squeezing: Detecting Adversarial
  Examples in Deep Neural Networks', https://arxiv.org/abs/1704.01155): the largest L1 distance
  between the classifier's softmax on the clip and on each squeezed copy (the squeezers are
  transformations of :mod:`advmir.defenses.transforms`: an MP3 round trip, rounding to fewer bits,
  a low-pass). An adversarial example sits close to a decision boundary, so squeezing moves its
  prediction more than a clean clip's. Differentiable: a straight-through backward (BPDA) through
  the codec and the rounding, the true gradient through the low-pass.
- ``logmel_net``: a small network on the log-mel, trained on clean vs adversarial clips (in the
  spirit of Metzen et al. 2017's detector subnetwork, on the input rather than on features): the
  zoo's ``cnn2d`` on a log-mel front-end with a deep floor (``net.top_db``: the classifiers' 40 dB
  floor hides exactly the perturbation it must see), two classes; the score is the logit of
  "adversarial" minus that of "clean". Differentiable.
- the anomaly stage's detectors that judge a clip alone (:func:`advmir.defenses.settings.detection_detectors`,
  :mod:`advmir.anomaly.detectors`), fitted as there on clean train clips: signal heuristics, the
  isolation forest on summary features, max-softmax and energy of the classifier. The label-relative
  ones (bandwidth, noise_bands, distortion, codec_artifacts) compare a clip with clean notes of the
  class the classifier predicts: a deployed detector does not know the true label. max_softmax and
  energy are computed in torch here (the same formulas, :class:`ConfidenceDetector`), so they have a
  gradient; the others are NumPy and have none.
- ``stack``: the anomaly stage's stacked ensemble (:func:`advmir.anomaly.ensemble.fit_stack`: a
  logistic regression over each member's evidence ``-log p`` against clean clips) retrained with one
  fault type, ``adversarial``, on clean vs adversarial validation clips, over every other listed
  detector but ``logmel_net``; its score is ``-log p(clean)``. No gradient (the evidence is a rank).

The adaptive attacker (Carlini and Wagner 2017, 'Adversarial Examples Are Not Easily Detected:
Bypassing Ten Detection Methods', https://arxiv.org/abs/1705.07263) attacks the classifier and one
detector as one model, :class:`Guarded`: its output is the classifier's logits (B, C) and one more
column, the detector's margin ``d = c * (score - threshold) / spread`` (spread: the clean
calibration scores' robust standard deviation, so the weight c is in units of clean variation). The
attack stage's own PGD (or BIM, MI-FGSM; Square for a detector without a gradient) runs on it, its
margin replaced by the combined one (:func:`joint_margin`)::

    m = relu(m_cls) + relu(d) + min(max(m_cls, d), 0)

with ``m_cls`` the classifier's logit margin (negative when fooled). Above zero it is CW's sum of two
hinges (their ``l_F + c * max(D(x') - threshold, 0)``, here with the logit margin); it is negative
exactly when the clip fools the classifier *and* stays below the threshold, which is the attack's
success (its early stop, and Square's acceptance test); below zero it keeps pushing both. Carlini
and Wagner search c per clip; here the weights of ``adaptive.weights`` are tried from the smallest up
on the clips fooled but still flagged (:func:`advmir.defenses.detection_eval.weight_search`). A
small c matters: at the decision boundary a confidence detector (max-softmax, squeezing) fires, and a
large c holds the attack back on the clean side, where the detector's gradient points to the true
class.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advmir.defenses.settings import DIFFERENTIABLE_DETECTORS, DetectionConfig, stack_members

log = logging.getLogger("advmir.defenses")

DETECTOR_CLASSES = ["clean", "adversarial"]  # logmel_net's two classes, in index order


# --------------------------------------------------------------------------------- the detectors
class SqueezeDetector(nn.Module):
    """Feature squeezing: clips (B, T) -> score (B,), the largest L1 distance between the softmax of
    ``model`` on the clip and on each squeezed copy (each squeezer (B, T) -> (B, T))."""

    differentiable = True

    def __init__(self, model: nn.Module, squeezers: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.model = model
        self.squeezers = nn.ModuleDict(dict(squeezers))

    def forward(self, x: Tensor) -> Tensor:
        p = F.softmax(self.model(x), dim=1)
        changes = [(p - F.softmax(self.model(s(x)), dim=1)).abs().sum(dim=1) for s in self.squeezers.values()]
        return torch.stack(changes).amax(dim=0)


class ConfidenceDetector(nn.Module):
    """The anomaly stage's max_softmax (1 - the largest softmax probability, Hendrycks and Gimpel
    2017) or energy (-logsumexp of the logits, Liu et al. 2020) of one classifier, in torch: clips
    (B, T) -> score (B,), with a gradient (the formulas of :func:`advmir.anomaly.detectors._confidence`)."""

    differentiable = True

    def __init__(self, model: nn.Module, kind: str) -> None:
        super().__init__()
        if kind not in ("max_softmax", "energy"):
            raise ValueError(f"kind must be 'max_softmax' or 'energy', got {kind!r}")
        self.model, self.kind = model, kind

    def forward(self, x: Tensor) -> Tensor:
        logits = self.model(x)
        if self.kind == "max_softmax":
            return 1.0 - F.softmax(logits, dim=1).amax(dim=1)
        return -torch.logsumexp(logits, dim=1)


class NetDetector(nn.Module):
    """logmel_net: a two-class waveform classifier (clean, adversarial); clips (B, T) -> score (B,),
    the adversarial logit minus the clean one."""

    differentiable = True

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        logits = self.net(x)
        return logits[:, 1] - logits[:, 0]


class AnomalyDetector:
    """One of the anomaly stage's NumPy detectors, fitted: clips (B, T) -> score (B,), no gradient.

    Args:
        name: its anomaly-stage name. scorer: the fitted detector (``DETECTORS[name](reference)``).
        model: the classifier whose predicted class is the clip's label (label-relative detectors
            compare a clip with clean notes of that class). classes: class names in index order.
    """

    differentiable = False

    def __init__(
        self, name: str, scorer: Callable[..., Any], model: nn.Module, classes: Sequence[str]
    ) -> None:
        self.name, self.scorer, self.model, self.classes = name, scorer, model, list(classes)

    def __call__(self, x: Tensor) -> Tensor:
        from advmir.anomaly.detectors import ScoreSet

        with torch.no_grad():
            pred = self.model(x).argmax(dim=1).cpu().numpy()
        manifest = pd.DataFrame(
            {
                "id": [f"clip{i}" for i in range(len(pred))],
                "label": [self.classes[p] for p in pred],
                "label_idx": pred,
            }
        )
        waveforms = x.detach().cpu().numpy().astype(np.float32)
        value, _ = self.scorer(ScoreSet(waveforms, manifest))
        value = np.nan_to_num(np.asarray(value, dtype=np.float64), nan=0.0, posinf=1e6, neginf=-1e6)
        return torch.as_tensor(value, dtype=x.dtype, device=x.device)


class StackDetector:
    """The anomaly stage's stacked ensemble over ``members`` (name -> detector), retrained on clean vs
    adversarial clips: clips (B, T) -> score (B,) = -log p(clean), no gradient."""

    differentiable = False

    def __init__(self, members: Mapping[str, Any], stack: Any) -> None:
        self.members, self.stack = dict(members), stack

    def __call__(self, x: Tensor) -> Tensor:
        from advmir.anomaly.ensemble import apply_stack

        ids = [f"clip{i}" for i in range(x.shape[0])]
        tables = {
            name: pd.DataFrame({"id": ids, "score": score_clips(d, x, x.shape[0] or 1)})
            for name, d in self.members.items()
        }
        score = apply_stack(self.stack, tables, ids)[0]
        return torch.as_tensor(score, dtype=x.dtype, device=x.device)


Detector = nn.Module | AnomalyDetector | StackDetector


def score_clips(detector: Detector, x: Tensor, batch_size: int) -> np.ndarray:
    """Scores (n,) float64 of ``detector`` on clips x (n, T), in batches, without gradients, every
    module in eval mode and given back its own mode after (a detector shares the classifier: putting
    the wrapper back in training mode would put the classifier's batch norms there too)."""
    from advmir.attacks.base import attack_mode

    if x.shape[0] == 0:
        return np.zeros(0)
    modes = attack_mode(detector) if isinstance(detector, nn.Module) else contextlib.nullcontext()
    with modes, torch.no_grad():
        parts = [detector(x[i : i + batch_size]).detach().cpu() for i in range(0, x.shape[0], batch_size)]
    return torch.cat(parts).double().numpy()


# -------------------------------------------------------------------------------- the threshold
def robust_spread(scores: np.ndarray) -> float:
    """The robust standard deviation of clean scores (n,): IQR / 1.349, else the std, else 1."""
    q25, q75 = np.percentile(scores, [25, 75])
    return float((q75 - q25) / 1.349 or np.std(scores) or 1.0)


def threshold_at(scores: np.ndarray, fpr: float) -> float:
    """The smallest of the clean calibration scores (n,) that, as a threshold, flags (score >
    threshold) at most a share ``fpr`` of them: the (n - floor(fpr n))-th smallest."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    if not len(ordered):
        raise ValueError("a threshold needs at least one clean calibration score")
    return float(ordered[len(ordered) - math.floor(fpr * len(ordered)) - 1])


# ---------------------------------------------------------------------------- fitting the detectors
def build_squeezers(
    squeezers: Mapping[str, Mapping[str, Any]], sample_rate: int, seed: int
) -> dict[str, nn.Module]:
    """The squeezers (name -> (B, T) -> (B, T)) of ``defenses.detection.squeezers``: the
    transformations of :mod:`advmir.defenses.transforms`, built as a transformation defense's."""
    from advmir.defenses.transforms import build_transform, parse_transform

    return {
        name: build_transform(
            parse_transform(name, {**spec, "model": "-"}, sample_rate), sample_rate, seed=seed
        )
        for name, spec in squeezers.items()
    }


def fit_anomaly_detector(
    name: str,
    model: nn.Module,
    classes: Sequence[str],
    reference: np.ndarray,
    reference_manifest: pd.DataFrame,
    sample_rate: int,
    seed: int,
) -> AnomalyDetector:
    """The anomaly stage's detector ``name`` fitted on clean clips ``reference`` (N, T) float32 with
    their manifest rows (``id``, ``label``, ``label_idx``; no pitch: a deployed detector has none)."""
    from advmir.anomaly.detectors import DETECTORS, Reference

    manifest = reference_manifest[["id", "label", "label_idx"]].reset_index(drop=True)
    ref = Reference(reference, manifest, list(classes), sample_rate, seed=seed, models={"classifier": model})
    return AnomalyDetector(name, DETECTORS[name](ref), model, classes)


def train_detector_net(
    x_clean: Tensor,
    x_adv: Tensor,
    sample_rate: int,
    net: Mapping[str, Any],
    *,
    seed: int = 0,
    progress: bool = True,
) -> nn.Module:
    """logmel_net trained on clean clips x_clean (n, T) (class 0) against adversarial clips x_adv
    (m, T) (class 1): the zoo's ``cnn2d`` on a log-mel with floor ``net["top_db"]``, Adam, cross-entropy
    weighted so both classes count alike, ``net["epochs"]`` seeded passes. Returned in eval mode."""
    import sys

    from tqdm import tqdm

    from advmir.models.zoo import build_model

    spec = {
        "frontend": "logmel",
        "arch": "cnn2d",
        # finer in time than the classifiers' log-mel (hop 256): a short clip keeps enough frames for
        # cnn2d's four poolings, and a perturbation's onset is better resolved
        "frontend_args": {"top_db": net["top_db"], "n_fft": 512, "hop_length": 128},
        "arch_args": {"width": int(net["width"])},
    }
    torch.manual_seed(seed)
    model = build_model(spec, len(DETECTOR_CLASSES), sample_rate).to(x_clean.device)
    x = torch.cat([x_clean, x_adv])
    y = torch.cat([torch.zeros(len(x_clean)), torch.ones(len(x_adv))]).long().to(x.device)
    counts = torch.bincount(y, minlength=2).clamp_min(1).double()
    weight = (counts.sum() / (2 * counts)).float().to(x.device)
    opt = torch.optim.Adam(model.parameters(), lr=float(net["learning_rate"]))
    gen = torch.Generator().manual_seed(seed)
    batch = int(net["batch_size"])
    bar = tqdm(
        range(int(net["epochs"])), desc="logmel_net", unit="epoch", file=sys.stderr, disable=not progress
    )
    model.train()
    for epoch in bar:
        order = torch.randperm(len(x), generator=gen).to(x.device)
        total, seen = 0.0, 0
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            if idx.numel() < 2:  # batch norm needs two clips
                continue
            loss = F.cross_entropy(model(x[idx]), y[idx], weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, seen = total + float(loss.detach()) * idx.numel(), seen + idx.numel()
        log.info("logmel_net epoch %d: weighted cross-entropy %.4f", epoch + 1, total / max(seen, 1))
    model.zero_grad(set_to_none=True)
    return model.eval()


def fit_stack_detector(
    members: Mapping[str, Detector],
    x_clean: Tensor,
    x_adv: Tensor,
    *,
    batch_size: int,
    seed: int = 0,
) -> StackDetector:
    """The anomaly stage's stacked ensemble over ``members``, fitted on their scores of clean clips
    x_clean (n, T) (fault ``none``) and adversarial clips x_adv (m, T) (fault ``adversarial``)."""
    from advmir.anomaly.ensemble import fit_stack

    ids = [f"clean{i}" for i in range(len(x_clean))] + [f"adv{i}" for i in range(len(x_adv))]
    x = torch.cat([x_clean, x_adv])
    tables = {
        name: pd.DataFrame({"id": ids, "score": score_clips(d, x, batch_size)}) for name, d in members.items()
    }
    manifest = pd.DataFrame(
        {
            "id": ids,
            "is_fault": [0] * len(x_clean) + [1] * len(x_adv),
            "fault": ["none"] * len(x_clean) + ["adversarial"] * len(x_adv),
        }
    )
    return StackDetector(members, fit_stack(tables, manifest, seed=seed))


def fit_detectors(
    setting: DetectionConfig,
    model: nn.Module,
    classes: Sequence[str],
    sample_rate: int,
    *,
    reference: tuple[np.ndarray, pd.DataFrame],
    x_train_clean: Tensor,
    x_train_adv: Tensor,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, Detector]:
    """Every detector of ``setting.detectors`` for ``model``, fitted: the anomaly detectors on the
    clean ``reference`` clips (N, T) and manifest, logmel_net and the stack on the detector-training
    clips (clean x_train_clean (n, T), adversarial x_train_adv (m, T)). In the listed order."""
    fitted: dict[str, Detector] = {}
    for name in setting.detectors:
        if name in ("stack", "logmel_net"):
            continue
        if name == "squeeze":
            fitted[name] = SqueezeDetector(model, build_squeezers(setting.squeezers, sample_rate, seed))
        elif name in ("max_softmax", "energy"):
            fitted[name] = ConfidenceDetector(model, name)
        else:
            fitted[name] = fit_anomaly_detector(name, model, classes, *reference, sample_rate, seed)
        log.info("fitted %s", name)
    if "logmel_net" in setting.detectors:
        fitted["logmel_net"] = NetDetector(
            train_detector_net(
                x_train_clean, x_train_adv, sample_rate, setting.net, seed=seed, progress=progress
            )
        )
    if "stack" in setting.detectors:
        members = {m: fitted[m] for m in stack_members(setting.detectors)}
        fitted["stack"] = fit_stack_detector(
            members, x_train_clean, x_train_adv, batch_size=batch_size, seed=seed
        )
        log.info("fitted stack over %s", list(members))
    return {name: fitted[name] for name in setting.detectors}


def is_differentiable(name: str) -> bool:
    """Whether the detector ``name`` has a gradient (the adaptive attacker's gradient attack)."""
    return name in DIFFERENTIABLE_DETECTORS


# ------------------------------------------------------------------------- the adaptive attacker
class Guarded(nn.Module):
    """A classifier and one detector as one model, for the adaptive attacker: clips (B, T) -> (B, C + 1),
    the classifier's logits and, last, the detector's margin ``weight * (score - threshold) / spread``
    (negative: below the threshold, not flagged). A detector without a gradient gives its margin
    without one (for a query-only attack).

    Args:
        model: the classifier, (B, T) -> (B, C). detector: (B, T) -> (B,).
        threshold: the detector's threshold at the operating point. spread: the clean scores' robust
            standard deviation (> 0). weight: c of the combined loss (> 0).
    """

    def __init__(
        self, model: nn.Module, detector: Detector, threshold: float, spread: float, weight: float = 1.0
    ) -> None:
        super().__init__()
        self.model = model
        self.detector = detector  # a module when it is one (its mode and device follow the model's)
        self.threshold, self.spread, self.weight = float(threshold), float(spread), float(weight)
        self.classes = getattr(model, "classes", None)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.model(x)
        if getattr(self.detector, "differentiable", False):
            score = self.detector(x)
        else:
            with torch.no_grad():
                score = self.detector(x.detach())
        margin = self.weight * (score.to(logits.dtype) - self.threshold) / self.spread
        return torch.cat([logits, margin[:, None]], dim=1)


def joint_margin(classifier_margin: Tensor, detector_margin: Tensor) -> Tensor:
    """The combined margin (B,) of the classifier's logit margin (B,) (negative: fooled) and the
    detector's (B,) (negative: not flagged): the sum of their hinges while either holds, negative
    exactly when both are negative (see the module docstring)."""
    both = torch.minimum(
        torch.maximum(classifier_margin, detector_margin), torch.zeros_like(classifier_margin)
    )
    return classifier_margin.clamp_min(0) + detector_margin.clamp_min(0) + both


class JointMargin:
    """Mixin of an attack on a :class:`Guarded` model: the margin is :func:`joint_margin` of the
    classifier's (the logits but the last column) and the detector's (the last column), and success
    is that margin below zero (fooled and not flagged)."""

    def margin(self, logits: Tensor, y: Tensor, t: Tensor) -> Tensor:
        return joint_margin(super().margin(logits[:, :-1], y, t), logits[:, -1])  # type: ignore[misc]

    def is_success(self, logits: Tensor, y: Tensor, t: Tensor) -> Tensor:
        return self.margin(logits, y, t) < 0


@functools.cache
def _joint_class(base: type) -> type:
    return type(f"Guarded{base.__name__}", (JointMargin, base), {"name": base.name})


def adaptive_attack(
    spec: Mapping[str, Any], budget_db: float, seed: int, batch_size: int | None, guarded: Guarded
) -> Any:
    """The attack stage's ``spec["name"]`` (a PGD-family attack on the logit margin, or Square) at the
    SNR budget ``budget_db`` on ``guarded``, its margin the combined one (:class:`JointMargin`)."""
    from advmir.attacks import ATTACKS, build_attack

    params = {**dict(spec.get("params") or {}), "snr_db": float(budget_db)}
    if spec["name"] != "square":
        params["loss"] = "margin"  # the combined loss is a margin; cross-entropy has no detector term
    params.setdefault("seed", int(seed))
    if batch_size:
        params.setdefault("batch_size", int(batch_size))
    build_attack(spec["name"], params)  # the attack stage's checks and messages
    return _joint_class(ATTACKS[spec["name"]])(guarded, **params)


def auc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley and McNeil's (1982) standard error of a ROC-AUC from n_pos positives and n_neg negatives."""
    if not n_pos or not n_neg or math.isnan(auc):
        return float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    return float(math.sqrt(max(var, 0.0)))
