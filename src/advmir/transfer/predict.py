"""Every target model's prediction on every clip of every source, and on its matched-noise control,
under one condition."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from advmir.codecs.plan import DECODED, DECODED_NOISE, NONE
from advmir.errors import UsageError
from advmir.transfer.sources import CLEAN, load_source

log = logging.getLogger(__name__)


@torch.inference_mode()
def predict(
    model: nn.Module, audio: np.ndarray, batch_size: int = 64, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class and its softmax probability for every clip.

    Args:
        model: (B, T) waveform -> (B, C) logits, in eval mode.
        audio: float32 (N, T).

    Returns:
        pred (N,) int64 and conf (N,) float32.
    """
    preds, confs = [], []
    for start in range(0, len(audio), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(audio[start : start + batch_size], dtype=np.float32)).to(
            device
        )
        probs = torch.softmax(model(x).float(), dim=1)
        conf, pred = probs.max(dim=1)
        preds.append(pred.cpu().numpy())
        confs.append(conf.cpu().numpy())
    if not preds:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    return np.concatenate(preds).astype(np.int64), np.concatenate(confs).astype(np.float32)


def predictions_table(
    sources: Sequence[tuple[str, np.ndarray, pd.DataFrame, np.ndarray | None]],
    targets: Mapping[str, nn.Module],
    *,
    dataset: str,
    attack: str,
    condition: str,
    batch_size: int = 64,
    device: str = "cpu",
) -> pd.DataFrame:
    """Tidy predictions: one row per (source model, example, target model), on the example and on its
    matched-noise control.

    Args:
        sources: ``(source_model, audio (N, T), examples, noise (N, T) or None)`` with examples
            holding ``id, row, label_idx, attack_target`` in the order of the audio; ``source_model``
            is ``clean`` for clean audio (no control: ``noise`` None); ``noise`` row j is the
            matched-noise control of ``audio`` row j, through the same condition.
        targets: target model name -> model.

    Returns:
        Columns ``dataset, attack, condition, source_model, index, id, row, label_idx, attack_target,
        target_model, pred, conf, noise_pred, noise_conf`` (``noise_pred`` -1 and ``noise_conf`` NaN
        without a control).
    """
    frames = []
    for target_name, model in targets.items():
        for source_model, audio, examples, noise in sources:
            pred, conf = predict(model, audio, batch_size, device)
            if noise is None:
                noise_pred, noise_conf = np.full(len(audio), -1, np.int64), np.full(len(audio), np.nan)
            else:
                if noise.shape != audio.shape:
                    raise ValueError(
                        f"{source_model}: the noise control has shape {noise.shape}, the audio {audio.shape}"
                    )
                noise_pred, noise_conf = predict(model, noise, batch_size, device)
            frames.append(
                pd.DataFrame(
                    {
                        "dataset": dataset,
                        "attack": attack,
                        "condition": condition,
                        "source_model": source_model,
                        "index": np.arange(len(examples)),
                        "id": examples["id"].to_numpy(),
                        "row": examples["row"].to_numpy(),
                        "label_idx": examples["label_idx"].to_numpy(),
                        "attack_target": examples["attack_target"].to_numpy(),
                        "target_model": target_name,
                        "pred": pred,
                        "conf": np.round(conf, 5),
                        "noise_pred": noise_pred,
                        "noise_conf": np.round(noise_conf, 5),
                    }
                )
            )
        log.info("%s %s %s: target %s done", dataset, attack, condition, target_name)
    return pd.concat(frames, ignore_index=True)


def check_unique(names: Sequence[str], option: str, *, attack: str, condition: str) -> None:
    """Each source, control or target model is named once (a repeated name would silently replace
    the earlier checkpoint or audio).

    Raises:
        UsageError: a name is given twice, named with its option.
    """
    twice = sorted({n for n in names if list(names).count(n) > 1})
    if twice:
        raise UsageError(f"{attack} {condition}: {option} {twice} given more than once; name each model once")


def check_noise_sources(
    names: Sequence[str], noise: Mapping[str, str], *, attack: str, condition: str
) -> None:
    """Every attack source (``names`` but ``clean``) has its matched-noise control in ``noise`` (source
    model -> audio path) and only those.

    Raises:
        UsageError: a control is missing, or given for ``clean`` or for a model that is not a source.
    """
    wrong = sorted((set(noise) - set(names)) | ({CLEAN} & set(noise)))
    missing = [m for m in names if m != CLEAN and m not in noise]
    if wrong or missing:
        raise UsageError(
            f"{attack} {condition}: every attack source needs its matched-noise control "
            f"(--noise MODEL AUDIO) and only those; missing for {missing}, not a source or `clean`: {wrong}"
        )


def condition_inputs(
    condition: str,
    sources: Sequence[Sequence[str]],
    noise: Mapping[str, str],
    codec_dirs: Mapping[str, str],
) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
    """The sources and controls of one condition of a job that scores several.

    Args:
        condition: ``none`` or a codec / room setting name.
        sources: ``(model, audio, examples)`` per source, the audio without a condition (the attack
            output, or ``dataset`` for ``clean``).
        noise: source model -> its matched-noise control without a condition.
        codec_dirs: source model -> the codec stage's folder of that source
            (``results/codecs/{dataset}/{source}``), which holds ``{condition}/decoded.npy`` and,
            for an attack source, ``{condition}/decoded_noise.npy``.

    Raises:
        UsageError: a source has no codec folder and the condition is not ``none``.
    """
    if condition == NONE:
        return [(m, a, e) for m, a, e in sources], dict(noise)
    missing = [m for m, _, _ in sources if m not in codec_dirs]
    if missing:
        raise UsageError(
            f"condition {condition}: sources {missing} have no --codec-dir (the codec stage's folder "
            "of the source, holding {condition}/decoded.npy)"
        )
    audio = [(m, str(Path(codec_dirs[m]) / condition / DECODED), e) for m, _, e in sources]
    controls = {m: str(Path(codec_dirs[m]) / condition / DECODED_NOISE) for m in noise}
    return audio, controls


def evaluate_condition(
    dataset_dir: str | os.PathLike,
    sources: Sequence[Sequence[str]],
    noise: Mapping[str, str],
    targets: Mapping[str, nn.Module],
    *,
    attack: str,
    condition: str,
    max_examples: int | None,
    batch_size: int,
    device: str,
) -> pd.DataFrame:
    """:func:`predictions_table` of one (attack, condition) from the files of its sources and targets.

    Args:
        sources: ``(model, audio, examples)`` per source model: ``clean`` or a model name, its (N, T)
            ``.npy`` (or ``dataset``) and its examples / rows file (:func:`load_source`).
        noise: source model -> its matched-noise control, an (N, T) ``.npy`` (every source but ``clean``).
        targets: the loaded target models by name (a job that scores several conditions loads them
            once).
    """
    check_noise_sources([model for model, _, _ in sources], noise, attack=attack, condition=condition)
    loaded_sources = []
    for model, audio, examples in sources:
        loaded = load_source(dataset_dir, examples, audio, max_examples, noise.get(model))
        loaded_sources.append((model, loaded.audio, loaded.examples, loaded.noise))
    return predictions_table(
        loaded_sources,
        dict(targets),
        dataset=Path(dataset_dir).name,
        attack=attack,
        condition=condition,
        batch_size=batch_size,
        device=device,
    )
