"""Ensembles of zoo models: one model to every stage, the weighted mean of its members' softmax.

A zoo entry ``{members: [a, b, ...], weights: [...]}`` (weights optional, equal by default) is
assembled from its members' trained checkpoints by rule ``assemble_ensemble`` (no training of its
own) into a checkpoint of format :data:`ENSEMBLE_FORMAT`: each member's checkpoint dict, whole,
and the normalised weights. :func:`load_ensemble` rebuilds a :class:`SoftmaxEnsemble`, a waveform
classifier like every zoo model: (B, T) in [-1, 1] -> scores (B, n_classes) whose softmax is the
members' weighted mean probability, differentiable end to end, so every attack runs on it unchanged
(white-box on an ensemble attacks all its members at once).

Why: on classes of instruments never trained on (synth_notes split ``instruments``) two seeds of one
recipe differ by as much as any change of recipe tried, and averaging them does more than any of
those changes (README "The embedded dataset").
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from advmir.artifacts import ArtifactError

ENSEMBLE_FORMAT = "advmir-ensemble-1"


class SoftmaxEnsemble(nn.Module):
    """Members' weighted mean probability, as log-probabilities.

    ``forward``: waveform (B, T) in [-1, 1] -> ``log(sum_m w_m softmax(member_m(x)))``, shape
    (B, n_classes): scores whose argmax is the ensemble's prediction and whose softmax is the mean
    probability (a logit margin on them is a margin of log-probabilities).

    Args:
        members: name -> waveform classifier, every one with the same classes.
        weights: one positive weight per member (normalised to sum 1).
        spec: what the checkpoint says of the ensemble (members, weights, front-end, n_classes, rate).
    """

    def __init__(
        self, members: Mapping[str, nn.Module], weights: Sequence[float], spec: dict[str, Any]
    ) -> None:
        super().__init__()
        if len(members) != len(weights) or not members:
            raise ValueError(
                f"an ensemble needs one weight per member, got {len(members)} and {len(weights)}"
            )
        if any(not (w > 0 and math.isfinite(w)) for w in weights):
            raise ValueError(f"ensemble weights must be positive numbers, got {list(weights)}")
        self.members = nn.ModuleDict(dict(members))
        total = float(sum(weights))
        self.register_buffer("log_weights", torch.tensor([math.log(w / total) for w in weights]))
        self.spec = spec

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2:
            raise ValueError(f"expected a waveform batch of shape (B, T), got {tuple(x.shape)}")
        log_probs = torch.stack([torch.log_softmax(m(x).float(), dim=-1) for m in self.members.values()])
        return torch.logsumexp(log_probs + self.log_weights[:, None, None], dim=0)  # (B, n_classes)


def normalised_weights(members: Sequence[str], weights: Sequence[float] | None) -> list[float]:
    """``weights`` (None: equal) scaled to sum 1, one per member."""
    raw = [1.0] * len(members) if weights is None else [float(w) for w in weights]
    if len(raw) != len(members):
        raise ValueError(f"{len(members)} members but {len(raw)} weights")
    total = sum(raw)
    return [w / total for w in raw]


def ensemble_payload(
    members: Mapping[str, dict[str, Any]], weights: Sequence[float], frontend: str
) -> dict[str, Any]:
    """The checkpoint dict of an ensemble: each member's checkpoint dict (as loaded, whole), the
    normalised weights, and the classes and rate they share.

    Raises ValueError when the members disagree on their classes or sample rate, or are ensembles."""
    names = list(members)
    first = members[names[0]]
    for name, payload in members.items():
        if payload.get("format") == ENSEMBLE_FORMAT:
            raise ValueError(f"member {name!r} is itself an ensemble; list its members instead")
        if list(payload["classes"]) != list(first["classes"]):
            raise ValueError(
                f"members {names[0]!r} and {name!r} predict different classes "
                f"({first['classes']} vs {payload['classes']}); an ensemble averages one set of classes"
            )
        if _rate(payload) != _rate(first):
            raise ValueError(
                f"members {names[0]!r} and {name!r} read different sample rates "
                f"({_rate(first)} vs {_rate(payload)} Hz)"
            )
    norm = normalised_weights(names, weights)
    return {
        "format": ENSEMBLE_FORMAT,
        "classes": list(first["classes"]),
        "spec": {
            "members": names,
            "weights": norm,
            "frontend": frontend,
            "arch": "ensemble",
            "n_classes": len(first["classes"]),
            "sample_rate": _rate(first),
        },
        "members": dict(members),
    }


def _rate(payload: Mapping[str, Any]) -> int:
    return int((payload.get("spec") or {}).get("sample_rate", 0))


def check_payload(path: str | os.PathLike, payload: Mapping[str, Any]) -> None:
    """Raise ArtifactError when an ensemble checkpoint is incomplete or a member's weights are not
    finite (:func:`advmir.artifacts.load_torch` checks only a top-level state dict)."""
    spec, members = payload.get("spec"), payload.get("members")
    if not isinstance(spec, dict) or not isinstance(members, dict) or not members:
        raise ArtifactError(path, "is not a complete ensemble checkpoint: it lacks its spec or members")
    if list(members) != list(spec.get("members", [])) or len(spec.get("weights", [])) != len(members):
        raise ArtifactError(path, "is not a complete ensemble checkpoint: members and weights disagree")
    for name, member in members.items():
        if not isinstance(member, dict) or "format" not in member:
            raise ArtifactError(
                path, f"is not a complete ensemble checkpoint: member {name!r} is not a checkpoint"
            )
        for key, value in (member.get("state_dict") or {}).items():
            if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
                raise ArtifactError(path, f"holds NaN or infinite weights (member {name!r}, {key})")


def load_ensemble(
    payload: Mapping[str, Any], build_member: Callable[[dict[str, Any]], nn.Module]
) -> SoftmaxEnsemble:
    """The :class:`SoftmaxEnsemble` of a checkpoint dict (:func:`ensemble_payload`), each member
    rebuilt by ``build_member`` (:func:`advmir.models.zoo.model_from_payload`), in eval mode."""
    members = {name: build_member(member) for name, member in payload["members"].items()}
    model = SoftmaxEnsemble(members, payload["spec"]["weights"], dict(payload["spec"]))
    model.classes = list(payload["classes"])
    return model.eval()
