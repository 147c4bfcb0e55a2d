"""Log-mel autoencoder scored by reconstruction error: the DCASE 2020 Task 2 baseline recipe.

Recipe (Koizumi et al., DCASE 2020 Task 2 baseline, https://github.com/y-kawagu/dcase2020_task2_baseline):
log-mel (n_fft 1024, hop 512), 5 consecutive frames concatenated into one vector, a dense
autoencoder of four 128-unit layers with batch norm and ReLU around an 8-unit bottleneck, trained
with MSE and Adam (lr 1e-3) on normal clips only; a clip's anomaly score is its mean squared
reconstruction error. Kept small for CPU: 64 mels (the baseline has 128) and few epochs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from advmir.anomaly.dsp import log_mel
from advmir.artifacts import load_torch

log = logging.getLogger(__name__)


@dataclass
class AEConfig:
    n_mels: int = 64
    n_fft: int = 1024
    hop: int = 512
    frames: int = 5
    hidden: int = 128
    bottleneck: int = 8
    epochs: int = 20
    batch_size: int = 512
    lr: float = 1e-3


def frame_vectors(x: np.ndarray, sample_rate: int, cfg: AEConfig) -> np.ndarray:
    """Waveforms (N, T) -> stacked log-mel context vectors (N, V, frames * n_mels), float32."""
    mel = log_mel(x, sample_rate, cfg.n_mels, cfg.n_fft, cfg.hop)  # (N, M, F)
    n_vec = mel.shape[2] - cfg.frames + 1
    vecs = np.stack([mel[:, :, t : t + n_vec] for t in range(cfg.frames)], axis=1)  # (N, frames, M, V)
    return vecs.transpose(0, 3, 1, 2).reshape(len(x), n_vec, -1).astype(np.float32)


class DenseAutoencoder(nn.Module):
    """(B, D) -> (B, D): Dense(hidden) x4 -> Dense(bottleneck) -> Dense(hidden) x4 -> Dense(D)."""

    def __init__(self, dim: int, hidden: int = 128, bottleneck: int = 8) -> None:
        super().__init__()

        def block(i: int, o: int) -> list[nn.Module]:
            return [nn.Linear(i, o), nn.BatchNorm1d(o), nn.ReLU()]

        enc = block(dim, hidden) + block(hidden, hidden) + block(hidden, hidden) + block(hidden, hidden)
        self.net = nn.Sequential(
            *enc,
            *block(hidden, bottleneck),
            *block(bottleneck, hidden),
            *block(hidden, hidden),
            *block(hidden, hidden),
            *block(hidden, hidden),
            nn.Linear(hidden, dim),
        )

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.net(v)


def train_autoencoder(x: np.ndarray, sample_rate: int, cfg: AEConfig, seed: int = 0) -> dict:
    """Train on clean clips (N, T); return a checkpoint (state_dict, config, sample_rate, train errors)."""
    torch.manual_seed(seed)
    vecs = torch.from_numpy(frame_vectors(x, sample_rate, cfg).reshape(-1, cfg.frames * cfg.n_mels))
    model = DenseAutoencoder(vecs.shape[1], cfg.hidden, cfg.bottleneck)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(len(vecs), generator=gen)
        total = 0.0
        for i in range(0, len(vecs), cfg.batch_size):
            batch = vecs[perm[i : i + cfg.batch_size]]
            if len(batch) < 2:
                continue
            loss = nn.functional.mse_loss(model(batch), batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
        log.info("autoencoder epoch %d/%d: train MSE %.3f", epoch + 1, cfg.epochs, total / len(vecs))
    ckpt = {
        "state_dict": model.state_dict(),
        "config": asdict(cfg),
        "sample_rate": sample_rate,
        "input_dim": int(vecs.shape[1]),
    }
    ckpt["train_errors"] = reconstruction_errors(ckpt, x, sample_rate)[0].tolist()
    return ckpt


def load_autoencoder(path: str | os.PathLike) -> dict:
    """The autoencoder checkpoint at ``path``, checked as an artifact (:mod:`advmir.artifacts`)."""
    return load_torch(path, keys=("state_dict", "config", "sample_rate", "input_dim"))


def reconstruction_errors(ckpt: dict, x: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean squared reconstruction error per clip (N,) and the time (s) of the worst vector (N,)."""
    cfg = AEConfig(**ckpt["config"])
    if sample_rate != ckpt["sample_rate"]:
        raise ValueError(f"autoencoder was trained at {ckpt['sample_rate']} Hz, audio is {sample_rate} Hz")
    model = DenseAutoencoder(ckpt["input_dim"], cfg.hidden, cfg.bottleneck)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    vecs = frame_vectors(x, sample_rate, cfg)
    n, v, d = vecs.shape
    with torch.no_grad():
        flat = torch.from_numpy(vecs.reshape(-1, d))
        err = torch.cat([((model(b) - b) ** 2).mean(dim=1) for b in flat.split(4096)]).numpy().reshape(n, v)
    worst = (err.argmax(axis=1) + cfg.frames / 2) * cfg.hop / sample_rate
    return err.mean(axis=1), worst
