"""One network for both jobs: a shared log-mel CNN encoder with a family head and a fault head.

The fault head classifies ``none`` against every audio fault; it is trained with faults applied on
the fly to clean training clips (a fresh fault and severity each time a clip is drawn). Label and
duplicate faults cannot be seen in one clip's audio: the family head covers wrong family labels
(the clip's score combines "the audio is faulty" and "the label disagrees with the family head").
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from advmir.anomaly.corruptions import AUDIO_FAULTS, FAULTS, apply_audio_faults
from advmir.artifacts import load_torch

log = logging.getLogger(__name__)


@dataclass
class MultitaskConfig:
    n_mels: int = 48
    n_fft: int = 512
    hop: int = 128
    channels: tuple[int, ...] = (16, 32, 48, 64)
    epochs: int = 8
    batch_size: int = 32
    lr: float = 2e-3
    fault_prob: float = 0.6


class LogMel(nn.Module):
    """(B, T) -> (B, 1, n_mels, frames) log-mel in dB (floor -100 dB), from 0 Hz so a DC offset shows."""

    def __init__(self, sample_rate: int, n_mels: int, n_fft: int, hop: int) -> None:
        super().__init__()
        from advmir.models.frontends import mel_spectrogram

        self.mel = mel_spectrogram(sample_rate, n_fft, hop, n_mels, f_min=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (10 * torch.log10(self.mel(x) + 1e-10)).clamp(min=-100.0).unsqueeze(1)


class MultitaskNet(nn.Module):
    """Waveform (B, T) -> (family logits (B, n_classes), fault logits (B, n_faults + 1))."""

    def __init__(self, sample_rate: int, n_classes: int, n_fault_classes: int, cfg: MultitaskConfig) -> None:
        super().__init__()
        self.front = LogMel(sample_rate, cfg.n_mels, cfg.n_fft, cfg.hop)
        layers: list[nn.Module] = [nn.BatchNorm2d(1)]
        c_in = 1
        for c in cfg.channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.encoder = nn.Sequential(*layers)
        self.embed = nn.Sequential(nn.Linear(2 * c_in, 128), nn.ReLU())
        self.family_head = nn.Linear(128, n_classes)
        self.fault_head = nn.Linear(128, n_fault_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(self.front(x))
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        z = self.embed(pooled)
        return self.family_head(z), self.fault_head(z)


def training_ranges(severities: Mapping[str, Sequence[float]]) -> dict[str, tuple[float, float]]:
    """Severity range per audio fault for training: its training range widened to the configured values."""
    out = {}
    for name, values in severities.items():
        if FAULTS[name].kind != "audio":
            continue
        lo, hi = FAULTS[name].train_range
        out[name] = (min(lo, *values), max(hi, *values))
    return out


def train_multitask(
    x: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    sample_rate: int,
    severities: Mapping[str, Sequence[float]],
    cfg: MultitaskConfig,
    seed: int = 0,
) -> dict:
    """Train on clean clips x (N, T) with family labels (N,); faults drawn afresh each epoch.

    Returns a checkpoint dict: state_dict, config, sample_rate, n_classes, fault names (index 0 "none").
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    ranges = training_ranges(severities)
    faults = [f for f in AUDIO_FAULTS if f in ranges]
    model = MultitaskNet(sample_rate, n_classes, len(faults) + 1, cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps = cfg.epochs * int(np.ceil(len(x) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(1, steps))
    for epoch in range(cfg.epochs):
        start = time.time()
        model.train()
        batch_x, fault_idx = corrupt_batch(x, faults, ranges, cfg.fault_prob, rng, sample_rate)
        perm = rng.permutation(len(x))
        total, correct = 0.0, 0
        for i in range(0, len(x), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            if len(idx) < 2:
                continue
            fam_logits, fault_logits = model(torch.from_numpy(batch_x[idx]))
            fam_y, fault_y = torch.from_numpy(labels[idx]).long(), torch.from_numpy(fault_idx[idx]).long()
            # a faulty clip's family is still its instrument's: except silence, which has none
            keep = fault_y != (faults.index("silence") + 1 if "silence" in faults else -1)
            loss = nn.functional.cross_entropy(fault_logits, fault_y)
            if keep.any():
                loss = loss + nn.functional.cross_entropy(fam_logits[keep], fam_y[keep])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            correct += int((fault_logits.argmax(1) == fault_y).sum())
        log.info(
            "multitask epoch %d/%d: loss %.3f, fault accuracy %.3f (%.0f s)",
            epoch + 1,
            cfg.epochs,
            total / len(x),
            correct / len(x),
            time.time() - start,
        )
    return {
        "state_dict": model.state_dict(),
        "config": asdict(cfg),
        "sample_rate": sample_rate,
        "n_classes": n_classes,
        "faults": ["none", *faults],
    }


def corrupt_batch(
    x: np.ndarray,
    faults: Sequence[str],
    ranges: Mapping[str, tuple[float, float]],
    fault_prob: float,
    rng: np.random.Generator,
    sample_rate: int,
) -> tuple[np.ndarray, np.ndarray]:
    """A fresh corrupted copy of x (N, T), each clip faulty with ``fault_prob``: (x', fault index (N,))."""
    out = np.array(x, dtype=np.float32, copy=True)
    fault_idx = np.zeros(len(x), dtype=np.int64)
    if not faults:
        return out, fault_idx
    rows, names, severities = [], [], []
    for n in np.flatnonzero(rng.random(len(x)) < fault_prob):
        k = int(rng.integers(len(faults)))
        lo, hi = ranges[faults[k]]
        rows.append(n)
        names.append(faults[k])
        severities.append(float(rng.uniform(lo, hi)))
        fault_idx[n] = k + 1
    if rows:  # apply_audio_faults: one clip at a time, codecs batched through one ffmpeg
        out[rows] = apply_audio_faults(out[rows], names, severities, rng, sample_rate)
    return out, fault_idx


def load_multitask(path: str | os.PathLike) -> tuple[MultitaskNet, dict]:
    """The multi-task net at ``path`` in eval mode, and its checkpoint (checked: :mod:`advmir.artifacts`)."""
    ckpt = load_torch(path, keys=("state_dict", "config", "sample_rate", "n_classes", "faults"))
    cfg = MultitaskConfig(**{**ckpt["config"], "channels": tuple(ckpt["config"]["channels"])})
    model = MultitaskNet(ckpt["sample_rate"], ckpt["n_classes"], len(ckpt["faults"]), cfg)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt


@torch.no_grad()
def predict(model: MultitaskNet, x: np.ndarray, batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Family probabilities (N, n_classes) and fault probabilities (N, n_faults + 1) of waveforms (N, T)."""
    fam, fault = [], []
    for i in range(0, len(x), batch):
        f, g = model(torch.from_numpy(np.asarray(x[i : i + batch], dtype=np.float32)))
        fam.append(f.softmax(1).numpy())
        fault.append(g.softmax(1).numpy())
    return np.concatenate(fam), np.concatenate(fault)
