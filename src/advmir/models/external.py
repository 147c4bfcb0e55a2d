"""Models of your own: a TorchScript file or a Python factory, wrapped into a zoo model.

A zoo entry with ``source: torchscript`` (``path``: a ``.pt`` written by ``torch.jit.script`` /
``torch.jit.trace``), ``source: export`` (``path``: a ``.pt2`` written by ``torch.export.save``, with
a dynamic batch dimension) or ``source: python`` (``factory: package.module:function`` returning an
``nn.Module``, optional ``factory_args`` and ``weights``, a state dict read with
``weights_only=True``) declares its input contract and its classes:

- ``sample_rate``: the rate the model reads. The dataset's clips go through the project's resampler
  (:func:`advmir.datasets.resample.torch_resampler`, a Kaiser-windowed sinc) *inside* the forward
  pass, so gradients reach the dataset-rate waveform an attack perturbs.
- ``input_seconds`` and ``window``: ``fit`` cuts or zero-pads the resampled clip to the input
  length; ``slide`` runs windows every ``hop_seconds`` and pools their scores (``pool``: ``mean`` or
  ``max``); ``input_seconds: null`` feeds the whole clip.
- ``scale``: the [-1, 1] waveform is multiplied by it (32768 for a model that reads int16-scale
  samples); ``output``: ``logits``, ``probabilities`` or ``log_probabilities``.
- ``classes``: the model's output classes in order (a list, or a file: one per line, or a CSV with a
  ``class`` column); ``class_map``: renames, model class -> dataset label (null: no label). Model
  classes that match no label are left out of the prediction; dataset labels no model class maps to
  are never predicted, so their clips are never "correct" and never attacked (success is computed on
  the matched labels). Both lists are reported.

:func:`import_external` checks all of this against a prepared dataset and writes a checkpoint of
format :data:`EXTERNAL_FORMAT` (the TorchScript archive's bytes, or the factory's name and the
state dict); :func:`load_external` rebuilds the :class:`ExternalClassifier` from it, a waveform
classifier like every zoo model: (B, T) at the dataset's rate in [-1, 1] -> logits (B, n_labels).
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from advmir.errors import InputError

EXTERNAL_FORMAT = "advmir-external-model-1"
SOURCES = ("torchscript", "export", "python")
#: How far below the lowest matched score a dataset label with no model class sits: never predicted.
UNMATCHED_GAP = 100.0


class ExternalModelError(InputError, ValueError):
    """An external model that cannot be used; the message names the model and the problem."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"models.{name}: {problem}")


@dataclass(frozen=True)
class InputContract:
    """What the wrapped model reads and writes (the zoo entry's contract keys)."""

    sample_rate: int
    input_seconds: float | None = None
    window: str = "fit"
    hop_seconds: float | None = None
    pool: str = "mean"
    scale: float = 1.0
    output: str = "logits"

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], name: str) -> InputContract:
        keys = {k: spec[k] for k in cls.__dataclass_fields__ if k in spec and spec[k] is not None}
        if "sample_rate" not in keys:
            raise ExternalModelError(name, "declare the model's sample_rate (Hz)")
        contract = cls(**keys)
        if contract.window not in ("fit", "slide"):
            raise ExternalModelError(name, f"window must be fit or slide, got {contract.window!r}")
        if contract.pool not in ("mean", "max"):
            raise ExternalModelError(name, f"pool must be mean or max, got {contract.pool!r}")
        if contract.output not in ("logits", "probabilities", "log_probabilities"):
            raise ExternalModelError(
                name, f"output must be logits, probabilities or log_probabilities, got {contract.output!r}"
            )
        if contract.window == "slide" and contract.input_seconds is None:
            raise ExternalModelError(name, "window: slide needs input_seconds (the window length)")
        return contract

    def input_samples(self) -> int | None:
        """Samples of one model input at the model's rate (None: any length)."""
        return None if self.input_seconds is None else max(1, round(self.input_seconds * self.sample_rate))

    def hop_samples(self) -> int:
        n = self.input_samples() or 1
        hop = self.hop_seconds if self.hop_seconds is not None else (self.input_seconds or 0) / 2
        return max(1, min(n, round(hop * self.sample_rate)))


class ExternalClassifier(nn.Module):
    """A model of your own as a zoo model: waveform (B, T) at ``dataset_rate`` in [-1, 1] -> scores
    (B, n_labels) over the dataset's labels, differentiable end to end.

    Args:
        inner: the user's module: (N, L) at ``contract.sample_rate`` (times ``contract.scale``) ->
            (N, K) scores of its K classes.
        contract: the declared input contract.
        label_index: (K,) the dataset label index of each model class, -1 for none.
        classes: the dataset's labels (n_labels of them).
        dataset_rate: the rate of the waveforms this wrapper is given.
    """

    def __init__(
        self,
        inner: nn.Module,
        contract: InputContract,
        label_index: Sequence[int],
        classes: Sequence[str],
        dataset_rate: int,
    ) -> None:
        super().__init__()
        from advmir.datasets.resample import torch_resampler

        self.inner = inner
        self.contract = contract
        self.classes = list(classes)
        self.dataset_rate = int(dataset_rate)
        self.resample = (
            torch_resampler(self.dataset_rate, contract.sample_rate)
            if contract.sample_rate != self.dataset_rate
            else nn.Identity()
        )
        index = torch.as_tensor(list(label_index), dtype=torch.long)
        self.register_buffer("label_index", index, persistent=False)
        # for each dataset label, the model classes that map to it (empty: never predicted)
        self.members = [torch.nonzero(index == c).flatten().tolist() for c in range(len(self.classes))]
        self.spec = {"source": "external", "n_classes": len(self.classes), "sample_rate": self.dataset_rate}

    def predictable(self) -> np.ndarray:
        """(n_labels,) bool: the dataset labels some model class maps to (the others are never
        predicted, so their clips are not scored)."""
        return np.array([bool(m) for m in self.members])

    def windows(self, x: Tensor) -> Tensor:
        """(B, T) at the dataset's rate -> (B, W, L) model inputs at the model's rate, scaled."""
        y = self.resample(x) * self.contract.scale
        n = self.contract.input_samples()
        if n is None:
            return y[:, None, :]
        if y.shape[1] < n or self.contract.window == "fit":
            y = nn.functional.pad(y, (0, max(0, n - y.shape[1])))[:, :n]
            return y[:, None, :]
        hop = self.contract.hop_samples()
        starts = list(range(0, y.shape[1] - n + 1, hop))
        if starts[-1] != y.shape[1] - n:
            starts.append(y.shape[1] - n)
        return torch.stack([y[:, s : s + n] for s in starts], dim=1)

    def model_scores(self, x: Tensor) -> Tensor:
        """(B, T) -> (B, K) log-scale scores of the model's own classes, windows pooled."""
        if x.dim() != 2:
            raise ValueError(f"expected a waveform batch of shape (B, T), got {tuple(x.shape)}")
        w = self.windows(x)
        b, n_windows, length = w.shape
        # No graph-executor optimisation of TorchScript: after a few calls it swaps in its own symbolic
        # backward formulas, some of which fail where eager autograd works (abs of a complex STFT).
        with torch.jit.optimized_execution(False):
            out = self.inner(w.reshape(b * n_windows, length))
        if not torch.is_tensor(out) or out.dim() != 2 or out.shape[0] != b * n_windows:
            shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise ValueError(
                f"the model must return scores of shape (N, n_classes) for N inputs, got {shape}"
            )
        out = out.float()
        if self.contract.output == "probabilities":
            out = out.clamp_min(1e-12).log()
        out = out.view(b, n_windows, -1)
        return out.mean(1) if self.contract.pool == "mean" else out.amax(1)

    def forward(self, x: Tensor) -> Tensor:
        scores = self.model_scores(x)
        matched = [c for c, m in enumerate(self.members) if m]
        out = scores.new_empty(scores.shape[0], len(self.classes))
        for c in matched:
            m = self.members[c]
            out[:, c] = scores[:, m[0]] if len(m) == 1 else torch.logsumexp(scores[:, m], dim=1)
        if len(matched) < len(self.classes):
            floor = out[:, matched].detach().amin(1) - UNMATCHED_GAP
            for c, m in enumerate(self.members):
                if not m:
                    out[:, c] = floor
        return out


# ---------------------------------------------------------------------------------------- loading
def _path(value: str | os.PathLike) -> Path:
    return Path(os.path.expanduser(str(value)))


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_files(spec: Mapping[str, Any]) -> list[str]:
    """Files the model is made of (a rule's inputs: an edit re-imports the model)."""
    files = [spec.get("path")] if spec.get("source") in ARCHIVES else [spec.get("weights")]
    classes = spec.get("classes")
    files += [classes] if isinstance(classes, str) else []
    files += [spec["class_map"]] if isinstance(spec.get("class_map"), str) else []
    return [str(f) for f in files if f]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_torchscript(name: str, data: str | os.PathLike | bytes) -> nn.Module:
    """A TorchScript module from a file or its bytes, on the CPU."""
    where = "the stored TorchScript archive" if isinstance(data, bytes) else str(data)
    if not isinstance(data, bytes) and not _path(data).is_file():
        raise ExternalModelError(
            name, f"path {str(data)!r} is not a file; point `path` at the TorchScript .pt"
        )
    try:
        source = io.BytesIO(data) if isinstance(data, bytes) else str(_path(data))
        return torch.jit.load(source, map_location="cpu")
    except Exception as exc:  # not a zip, a zip without TorchScript code, a torch.save'd dict, ...
        raise ExternalModelError(
            name,
            f"{where} is not a TorchScript model ({_first_line(exc)}); write one with "
            "torch.jit.script(model).save(path) or torch.jit.trace(model, example).save(path), "
            "or use source: python with a factory",
        ) from None


class ExportedModule(nn.Module):
    """A ``torch.export`` program's module, which refuses ``train()``/``eval()`` (it is traced in one
    mode already): this holder keeps its own flag and does not pass the call on."""

    def __init__(self, program: nn.Module) -> None:
        super().__init__()
        self.program = program

    def train(self, mode: bool = True) -> ExportedModule:
        self.training = mode
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.program(x)


def load_exported(name: str, data: str | os.PathLike | bytes) -> nn.Module:
    """A ``torch.export`` program (``.pt2``) from a file or its bytes, as a module on the CPU."""
    where = "the stored exported program" if isinstance(data, bytes) else str(data)
    if not isinstance(data, bytes) and not _path(data).is_file():
        raise ExternalModelError(name, f"path {str(data)!r} is not a file; point `path` at the .pt2")
    try:
        source = io.BytesIO(data) if isinstance(data, bytes) else str(_path(data))
        program = torch.export.load(source)
    except Exception as exc:
        raise ExternalModelError(
            name,
            f"{where} is not a torch.export program ({_first_line(exc)}); write one with "
            "torch.export.save(torch.export.export(model, (example,), dynamic_shapes=...), path)",
        ) from None
    return ExportedModule(program.module())


#: Sources stored as the archive's bytes (``path``), and how each is read back.
ARCHIVES = {"torchscript": load_torchscript, "export": load_exported}


def call_factory(name: str, factory: str, args: Mapping[str, Any], code_dir: str | None) -> nn.Module:
    """``package.module:function(**args)``, which must return an ``nn.Module``."""
    module_name, _, attr = str(factory).partition(":")
    if not module_name or not attr:
        raise ExternalModelError(name, f"factory must be 'package.module:function', got {factory!r}")
    if code_dir:
        folder = str(_path(code_dir).resolve())
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ExternalModelError(
            name,
            f"cannot import factory {factory!r} ({_first_line(exc)}); install the package or set code_dir",
        ) from None
    try:
        module = fn(**dict(args or {}))
    except Exception as exc:
        raise ExternalModelError(
            name, f"factory {factory!r} raised {type(exc).__name__}: {_first_line(exc)}"
        ) from None
    if not isinstance(module, nn.Module):
        raise ExternalModelError(
            name, f"factory {factory!r} returned a {type(module).__name__}, not a torch.nn.Module"
        )
    return module


def read_state_dict(name: str, path: str | os.PathLike) -> dict[str, Tensor]:
    """A state dict file read with ``weights_only=True`` (a ``{"state_dict": ...}`` wrapper is unwrapped)."""
    if not _path(path).is_file():
        raise ExternalModelError(name, f"weights {str(path)!r} is not a file")
    try:
        state = torch.load(_path(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ExternalModelError(
            name,
            f"weights {str(path)!r} is not a state dict readable with weights_only=True ({_first_line(exc)})",
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ExternalModelError(name, f"weights {str(path)!r} is not a state dict (name -> tensor)")
    return state


def fit_state_dict(name: str, module: nn.Module, state: Mapping[str, Tensor], where: str) -> None:
    """``module.load_state_dict(state)`` (strict), or a one-paragraph error naming the keys."""
    try:
        module.load_state_dict(dict(state))
    except RuntimeError as exc:
        mine = module.state_dict()
        missing = sorted(set(mine) - set(state))[:4]
        unexpected = sorted(set(state) - set(mine))[:4]
        shapes = [k for k in state if k in mine and tuple(state[k].shape) != tuple(mine[k].shape)][:4]
        detail = "; ".join(
            part
            for part in (
                f"missing {missing}" if missing else "",
                f"unexpected {unexpected}" if unexpected else "",
                f"other shapes {shapes}" if shapes else "",
            )
            if part
        )
        raise ExternalModelError(
            name, f"{where} does not fit the factory's module ({detail or _first_line(exc)})"
        ) from None


def build_inner(name: str, spec: Mapping[str, Any]) -> nn.Module:
    """The user's module from a zoo entry (its archive, or factory and weights), in eval mode on the CPU."""
    source = spec.get("source")
    if source in ARCHIVES:
        module = ARCHIVES[source](name, spec.get("path", ""))
    elif source == "python":
        module = call_factory(
            name, spec.get("factory", ""), spec.get("factory_args") or {}, spec.get("code_dir")
        )
        if spec.get("weights"):
            fit_state_dict(
                name, module, read_state_dict(name, spec["weights"]), f"weights {spec['weights']!r}"
            )
    else:
        raise ExternalModelError(name, f"source must be one of {list(SOURCES)}, got {source!r}")
    return module.eval()


def read_class_list(name: str, value: str | Sequence[str]) -> list[str]:
    """The model's classes: a list, or a file (one per line, or a CSV with a ``class`` column)."""
    if not isinstance(value, str):
        return [str(v) for v in value]
    path = _path(value)
    if not path.is_file():
        raise ExternalModelError(name, f"classes {value!r} is neither a list nor a file")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix == ".csv":
        import pandas as pd

        table = pd.read_csv(path)
        if "class" not in table.columns:
            raise ExternalModelError(name, f"classes file {value!r} needs a 'class' column")
        return table["class"].astype(str).tolist()
    return lines


def read_class_map(name: str, value: str | Mapping[str, Any] | None) -> dict[str, str | None]:
    """Renames model class -> dataset label: a mapping, or a YAML file or CSV (``class,label``)."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): (None if v is None else str(v)) for k, v in value.items()}
    path = _path(value)
    if not path.is_file():
        raise ExternalModelError(name, f"class_map {value!r} is neither a mapping nor a file")
    if path.suffix == ".csv":
        import pandas as pd

        table = pd.read_csv(path, keep_default_na=False)
        if not {"class", "label"} <= set(table.columns):
            raise ExternalModelError(name, f"class_map file {value!r} needs the columns class and label")
        return {str(c): (str(lab) or None) for c, lab in zip(table["class"], table["label"], strict=True)}
    import yaml

    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, Mapping):
        raise ExternalModelError(name, f"class_map file {value!r} must hold a mapping class: label")
    return {str(k): (None if v is None else str(v)) for k, v in loaded.items()}


def mapped_labels(name: str, spec: Mapping[str, Any]) -> list[str]:
    """The dataset labels a zoo entry's classes map to (its class map, else their own names), in
    order: the labels to check it with before the dataset is prepared."""
    mapping = read_class_map(name, spec.get("class_map"))
    labels = [mapping.get(c, c) for c in read_class_list(name, spec.get("classes") or [])]
    return list(dict.fromkeys(label for label in labels if label is not None))


@dataclass(frozen=True)
class ClassMatch:
    """How the model's classes meet the dataset's labels."""

    label_index: list[int]  # (K,) dataset label index per model class, -1 for none
    unmatched_classes: list[str]  # model classes left out of every prediction
    unmatched_labels: list[str]  # dataset labels no model class maps to: never predicted


def match_classes(
    name: str, model_classes: Sequence[str], class_map: Mapping[str, str | None], labels: Sequence[str]
) -> ClassMatch:
    """Map each model class to a dataset label (by ``class_map``, else by its own name)."""
    unknown_keys = sorted(set(class_map) - set(model_classes))
    if unknown_keys:
        raise ExternalModelError(
            name,
            f"class_map names {unknown_keys}, not among the model's classes {list(model_classes)[:12]}",
        )
    unknown_labels = sorted({v for v in class_map.values() if v is not None} - set(labels))
    if unknown_labels:
        raise ExternalModelError(
            name, f"class_map maps to {unknown_labels}, which are not labels of the dataset {list(labels)}"
        )
    if len(set(model_classes)) != len(model_classes):
        raise ExternalModelError(name, "classes lists a class twice; give each output its own name")
    position = {label: i for i, label in enumerate(labels)}
    index = []
    for cls in model_classes:
        target = class_map[cls] if cls in class_map else cls
        index.append(position.get(target, -1) if target is not None else -1)
    if all(i < 0 for i in index):
        raise ExternalModelError(
            name,
            f"none of the model's classes {list(model_classes)[:12]} is a dataset label {list(labels)}; "
            "map them with class_map (model class: dataset label)",
        )
    covered = set(index)
    return ClassMatch(
        label_index=index,
        unmatched_classes=[c for c, i in zip(model_classes, index, strict=True) if i < 0],
        unmatched_labels=[label for i, label in enumerate(labels) if i not in covered],
    )


def probe(name: str, inner: nn.Module, contract: InputContract) -> int:
    """Run the module once on silence of the declared input length; returns its number of classes."""
    n = contract.input_samples() or contract.sample_rate
    try:
        with torch.no_grad():
            out = inner(torch.zeros(2, n))
    except Exception as exc:
        raise ExternalModelError(
            name,
            f"the model fails on a batch of shape (2, {n}) ({contract.input_seconds} s at "
            f"{contract.sample_rate} Hz): {type(exc).__name__}: {_first_line(exc)}; check sample_rate and "
            "input_seconds",
        ) from None
    if not torch.is_tensor(out) or out.dim() != 2 or out.shape[0] != 2:
        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ExternalModelError(
            name, f"the model must return scores of shape (N, n_classes) for (N, samples) input, got {shape}"
        )
    return int(out.shape[1])


def check_entry(name: str, spec: Mapping[str, Any]) -> tuple[nn.Module, InputContract, list[str]]:
    """Load an external zoo entry and check what needs no dataset: the files, the factory, the
    weights, one forward pass and the number of classes. Returns the module, contract, classes."""
    contract = InputContract.from_spec(spec, name)
    inner = build_inner(name, spec)
    classes = read_class_list(name, spec.get("classes") or [])
    n_out = probe(name, inner, contract)
    if len(classes) != n_out:
        raise ExternalModelError(
            name, f"the model returns {n_out} scores per input but classes lists {len(classes)} names"
        )
    read_class_map(name, spec.get("class_map"))
    return inner, contract, classes


def wrap(
    name: str,
    spec: Mapping[str, Any],
    labels: Sequence[str],
    dataset_rate: int,
    checked: tuple[nn.Module, InputContract, list[str]] | None = None,
) -> tuple[ExternalClassifier, ClassMatch, list[str]]:
    """The zoo entry as an :class:`ExternalClassifier` over ``labels``, its class match and classes;
    ``checked`` is :func:`check_entry`'s result when the caller has it (not loaded again)."""
    inner, contract, classes = checked or check_entry(name, spec)
    match = match_classes(name, classes, read_class_map(name, spec.get("class_map")), labels)
    model = ExternalClassifier(inner, contract, match.label_index, labels, dataset_rate)
    return model.eval(), match, classes


def external_payload(
    name: str, spec: Mapping[str, Any], model: ExternalClassifier, match: ClassMatch, classes: list[str]
) -> dict[str, Any]:
    """The checkpoint of an external model: everything :func:`load_external` needs, tensors and
    primitives only (``weights_only=True`` reads it)."""
    payload: dict[str, Any] = {
        "format": EXTERNAL_FORMAT,
        "name": name,
        "source": spec["source"],
        "contract": asdict(model.contract),
        "model_classes": list(classes),
        "label_index": list(match.label_index),
        "unmatched_classes": list(match.unmatched_classes),
        "unmatched_labels": list(match.unmatched_labels),
        "classes": list(model.classes),
        "dataset_sample_rate": model.dataset_rate,
        "spec": {
            "source": spec["source"],
            "n_classes": len(model.classes),
            "sample_rate": model.dataset_rate,
        },
        "files": {f: sha256(f) for f in source_files(spec)},
        "state_dict": {},
    }
    if spec["source"] in ARCHIVES:
        payload["archive"] = torch.frombuffer(bytearray(_path(spec["path"]).read_bytes()), dtype=torch.uint8)
    else:
        payload["factory"] = str(spec["factory"])
        payload["factory_args"] = dict(spec.get("factory_args") or {})
        payload["code_dir"] = str(_path(spec["code_dir"]).resolve()) if spec.get("code_dir") else None
        payload["state_dict"] = {k: v.detach().cpu() for k, v in model.inner.state_dict().items()}
    return payload


def payload_problem(payload: Mapping[str, Any]) -> str | None:
    """What a checkpoint of format :data:`EXTERNAL_FORMAT` lacks (None: nothing)."""
    needed = ["source", "contract", "label_index", "classes", "dataset_sample_rate"]
    source = payload.get("source")
    needed += ["archive"] if source in ARCHIVES else ["factory", "state_dict"]
    missing = [key for key in needed if key not in payload]
    if missing:
        return f"it lacks {missing}"
    if source not in SOURCES:
        return f"unknown source {source!r}"
    return None


def load_external(payload: Mapping[str, Any]) -> ExternalClassifier:
    """Rebuild the wrapped model of a checkpoint of format :data:`EXTERNAL_FORMAT` (eval mode, CPU)."""
    name = str(payload.get("name", "external"))
    if payload["source"] in ARCHIVES:
        inner = ARCHIVES[payload["source"]](name, payload["archive"].numpy().tobytes())
    else:
        inner = call_factory(
            name, payload["factory"], payload.get("factory_args") or {}, payload.get("code_dir")
        )
        fit_state_dict(name, inner, payload["state_dict"], "the stored state dict")
    contract = InputContract(**payload["contract"])
    model = ExternalClassifier(
        inner.eval(), contract, payload["label_index"], payload["classes"], payload["dataset_sample_rate"]
    )
    return model.eval()
