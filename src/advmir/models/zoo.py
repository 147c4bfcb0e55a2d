"""Named models: a front-end and an architecture composed into one waveform classifier.

Checkpoints are plain dicts of tensors and primitive values, loaded with
``torch.load(weights_only=True)``: no pickled code is ever trusted.
"""

from __future__ import annotations

import os
from typing import Any

from torch import Tensor, nn

from advmir.artifacts import ArtifactError, load_torch
from advmir.io import write_torch
from advmir.models.architectures import BLOCK_ORDER_ARCHS, LEGACY_POOL_FIRST, build_arch
from advmir.models.frontends import build_frontend

CHECKPOINT_FORMAT = "advmir-waveform-classifier-1"


class WaveformClassifier(nn.Module):
    """Raw waveform in [-1, 1], shape (B, T) -> logits, shape (B, n_classes)."""

    def __init__(self, frontend: nn.Module, arch: nn.Module, spec: dict[str, Any]) -> None:
        super().__init__()
        self.frontend = frontend
        self.arch = arch
        self.spec = spec

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2:
            raise ValueError(f"expected a waveform batch of shape (B, T), got {tuple(x.shape)}")
        return self.arch(self.frontend(x))


def build_model(spec: dict[str, Any], n_classes: int, sample_rate: int) -> WaveformClassifier:
    """Build an untrained model from its spec: ``{"frontend": ..., "arch": ...}`` plus optional
    ``frontend_args`` and ``arch_args`` dicts."""
    frontend = build_frontend(spec["frontend"], sample_rate, **spec.get("frontend_args", {}))
    dims = getattr(frontend, "dims", 2)
    arch_name = spec["arch"]
    wanted = 1 if arch_name == "cnn1d" else 2
    if dims != wanted:
        raise ValueError(
            f"architecture {arch_name!r} needs a {wanted}-D input but front-end {spec['frontend']!r} "
            f"gives {dims}-D; pair 'waveform' with 'cnn1d' and time-frequency front-ends with 'cnn2d'/'crnn'"
        )
    arch_args = dict(spec.get("arch_args", {}))
    if arch_name in BLOCK_ORDER_ARCHS:  # recorded, so the checkpoint says which order it was trained in
        arch_args.setdefault("pool_first", True)
    arch = build_arch(arch_name, n_classes, **arch_args)
    full_spec = {
        "frontend": spec["frontend"],
        "arch": arch_name,
        "frontend_args": dict(spec.get("frontend_args", {})),
        "arch_args": arch_args,
        "n_classes": int(n_classes),
        "sample_rate": int(sample_rate),
    }
    return WaveformClassifier(frontend, arch, full_spec)


def save_checkpoint(
    path: str | os.PathLike, model: WaveformClassifier, classes: list[str], **meta: Any
) -> None:
    """Write ``model`` (weights on CPU + spec + class names) atomically."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "spec": model.spec,
        "classes": list(classes),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta,
    }
    write_torch(path, payload)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint dict with ``weights_only=True``, checked as an artifact (:mod:`advmir.artifacts`):
    a trained zoo model's, an imported model of your own's (:mod:`advmir.models.external`) or an
    ensemble's (:mod:`advmir.models.ensemble`)."""
    from advmir.models.ensemble import ENSEMBLE_FORMAT, check_payload
    from advmir.models.external import EXTERNAL_FORMAT

    payload = load_torch(path, keys=())
    if payload.get("format") not in (CHECKPOINT_FORMAT, EXTERNAL_FORMAT, ENSEMBLE_FORMAT):
        raise ArtifactError(path, f"is not an advmir model checkpoint ({CHECKPOINT_FORMAT})")
    if payload["format"] == EXTERNAL_FORMAT:
        from advmir.models.external import payload_problem

        problem = payload_problem(payload)
        if problem:
            raise ArtifactError(path, f"is not a complete imported-model checkpoint: {problem}")
    if payload["format"] == ENSEMBLE_FORMAT:
        check_payload(path, payload)
    return payload


def model_from_payload(payload: dict[str, Any]) -> nn.Module:
    """The model a checkpoint dict holds (:func:`load_checkpoint`), in eval mode on the CPU."""
    from advmir.models.ensemble import ENSEMBLE_FORMAT, load_ensemble
    from advmir.models.external import EXTERNAL_FORMAT, load_external

    if payload["format"] == EXTERNAL_FORMAT:
        return load_external(payload)
    if payload["format"] == ENSEMBLE_FORMAT:
        return load_ensemble(payload, model_from_payload)
    spec = payload["spec"]
    if spec["arch"] in BLOCK_ORDER_ARCHS and "pool_first" not in spec.get("arch_args", {}):
        # Written before the block order was a choice: the order it was trained in.
        spec = {**spec, "arch_args": {**spec.get("arch_args", {}), "pool_first": LEGACY_POOL_FIRST}}
    model = build_model(spec, spec["n_classes"], spec["sample_rate"])
    model.load_state_dict(payload["state_dict"])
    model.classes = payload["classes"]
    return model.eval()


def load_model(path: str | os.PathLike, device: str = "cpu") -> nn.Module:
    """Load a model in eval mode on ``device``: waveform (B, T) in [-1, 1] -> logits (B, n_classes).

    A trained zoo model is a :class:`WaveformClassifier`; an imported model of your own an
    :class:`advmir.models.external.ExternalClassifier`; an ensemble a
    :class:`advmir.models.ensemble.SoftmaxEnsemble` of them (the same contract)."""
    return model_from_payload(load_checkpoint(path)).to(device).eval()
