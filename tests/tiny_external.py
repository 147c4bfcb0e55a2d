"""A model of "your own" for the tests: a tiny log-mel CNN at 22.05 kHz with 2-s input, trained in a
few seconds on the tiny synth_notes data (resampled and padded, as a user's own pipeline would),
then exported to TorchScript; and broken variants of it for the contract checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchaudio
from torch import nn

from advmir.datasets.contract import load_dataset

RATE, SECONDS = 22050, 2.0
SAMPLES = int(RATE * SECONDS)


class ExternalNet(nn.Module):
    """(N, 44100) at 22.05 kHz in [-1, 1] -> logits (N, n_classes)."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(RATE, n_fft=1024, hop_length=512, n_mels=40)
        self.net = nn.Sequential(
            nn.Conv2d(1, 12, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(12, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((4, 1)),
            nn.Flatten(), nn.Linear(64, n_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.log(self.mel(x) + 1e-6)[:, None])


class Int16Input(nn.Module):
    """A model that reads int16-scale samples (+-32768): ``inner`` on x / 32768."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x / 32768.0)


class ArgmaxInside(nn.Module):
    """A non-differentiable model: one-hot of ``inner``'s argmax, times 10."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)
        return 10.0 * nn.functional.one_hot(logits.argmax(1), logits.shape[1]).float()


class NoisyInference(nn.Module):
    """Dropout on the input that stays on in eval mode (as a model traced in training mode)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(nn.functional.dropout(x, 0.3, training=True))


def model_inputs(dataset_dir: Path, split: str) -> tuple[torch.Tensor, np.ndarray]:
    """One split's clips resampled to 22.05 kHz and padded to 2 s (N, 44100), and their labels."""
    dataset = load_dataset(dataset_dir, mmap=False)
    rows = dataset.split_indices(split)
    audio = torch.from_numpy(dataset.float_waveforms(rows))
    audio = torchaudio.functional.resample(audio, dataset.sample_rate, RATE)
    audio = nn.functional.pad(audio, (0, SAMPLES - audio.shape[1]))
    return audio, dataset.manifest["label"].to_numpy()[rows]


def train_external(dataset_dir: Path, classes: list[str], steps: int = 120, seed: int = 0) -> ExternalNet:
    """ExternalNet over ``classes`` (the dataset's labels among them) fitted on the train split."""
    torch.manual_seed(seed)
    x, names = model_inputs(dataset_dir, "train")
    y = torch.tensor([classes.index(n) for n in names])
    net = ExternalNet(len(classes))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (32,))
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def export(module: nn.Module, path: Path) -> Path:
    """``module`` (eval mode) traced on a batch of two 2-s clips and saved as TorchScript."""
    with torch.no_grad():
        torch.jit.trace(module.eval(), torch.zeros(2, SAMPLES), check_trace=False).save(str(path))
    return path
