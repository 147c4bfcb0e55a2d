"""Classifier architectures that sit on a front-end's output.

The 2-D blocks are conv -> max-pool -> batch norm -> ReLU (``pool_first``, the default): pooling before
the normalisation and the ReLU runs those memory-bound steps, and their backward passes, on a quarter
of the positions. They were half of a training step's time with conv -> BN -> ReLU -> pool on CPU
(torch.profiler, stft_cnn); the step is 25-40% faster (benchmarks/train_speed.py). ReLU commutes
with max-pooling; batch norm sees the pooled maxima. ``pool_first=False`` keeps the older order,
which checkpoints written before it carry (:func:`advmir.models.zoo.load_model` reads them so).

The 2-D ones keep their weights and activations channels-last (NHWC): the same numbers up to float
rounding, 1.5-2x faster per training step on CPU (oneDNN's convolutions prefer that layout;
measured by benchmarks/train_speed.py), and the layout tensor cores want on a GPU.

- ``cnn2d``: a small VGG-style 2-D CNN over (B, 1, F, frames), global mean+max pooling.
- ``crnn``: conv blocks that pool frequency, then a bidirectional GRU over time (Choi et al., 2017).
- ``cnn1d``: a 1-D CNN on the raw waveform in the spirit of M5 (Dai et al., 2017).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

ARCHS = ("cnn2d", "crnn", "cnn1d")


def _block2d(c_in: int, c_out: int, pool: tuple[int, int], pool_first: bool) -> nn.Sequential:
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    if pool_first:
        return nn.Sequential(conv, nn.MaxPool2d(pool), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))
    return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.MaxPool2d(pool))


class GlobalPool(nn.Module):
    """Concatenate the mean and the max over all positions: (B, C, ...) -> (B, 2C)."""

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(2)
        return torch.cat([flat.mean(-1), flat.amax(-1)], dim=1)


class CNN2d(nn.Module):
    """(B, 1, F, frames) -> logits (B, n_classes).

    ``first_pool`` (frequency, time) is the first block's pooling: (4, 2) on a 257-bin STFT brings
    it to the size a 64-bin log-mel has after one block, so 3x3 kernels see as many octaves.
    ``pool_first``: the block order (module docstring).
    """

    def __init__(
        self,
        n_classes: int,
        width: int = 32,
        dropout: float = 0.1,
        first_pool: tuple[int, int] = (2, 2),
        pool_first: bool = True,
    ) -> None:
        super().__init__()
        chans = [1, width // 2, width, 2 * width, 2 * width]
        pools = [tuple(int(p) for p in first_pool)] + [(2, 2)] * 3
        blocks = [_block2d(chans[i], chans[i + 1], pools[i], pool_first) for i in range(4)]
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(GlobalPool(), nn.Dropout(dropout), nn.Linear(2 * chans[-1], n_classes))
        self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x.contiguous(memory_format=torch.channels_last)))


class CRNN(nn.Module):
    """(B, 1, F, frames) -> logits (B, n_classes): conv blocks pool frequency, a GRU reads time."""

    def __init__(
        self,
        n_classes: int,
        width: int = 32,
        hidden: int = 64,
        dropout: float = 0.1,
        pool_first: bool = True,
    ) -> None:
        super().__init__()
        chans = [1, width // 2, width, 2 * width]
        self.features = nn.Sequential(
            _block2d(chans[0], chans[1], (2, 2), pool_first),
            _block2d(chans[1], chans[2], (2, 1), pool_first),
            _block2d(chans[2], chans[3], (2, 1), pool_first),
        )
        self.freq_pool = nn.AdaptiveAvgPool2d((1, None))
        self.gru = nn.GRU(chans[3], hidden, batch_first=True, bidirectional=True)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * hidden, n_classes))
        self.features.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        seq = self.freq_pool(self.features(x)).squeeze(2).transpose(1, 2)  # (B, frames', C)
        out, _ = self.gru(seq)
        pooled = torch.cat([out.mean(1), out.amax(1)], dim=1)
        return self.head(pooled)


class CNN1d(nn.Module):
    """(B, 1, T) -> logits (B, n_classes): a strided first layer (about 5 ms), then conv blocks."""

    def __init__(self, n_classes: int, width: int = 32, dropout: float = 0.1) -> None:
        super().__init__()

        def block(c_in: int, c_out: int, kernel: int, stride: int, pool: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
                nn.BatchNorm1d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool1d(pool),
            )

        self.features = nn.Sequential(
            block(1, width, 80, 4, 4),
            block(width, width, 3, 1, 4),
            block(width, 2 * width, 3, 1, 4),
            block(2 * width, 4 * width, 3, 1, 4),
        )
        self.head = nn.Sequential(GlobalPool(), nn.Dropout(dropout), nn.Linear(8 * width, n_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


# Architectures with a block order, and the order of checkpoints written before ``pool_first`` existed.
BLOCK_ORDER_ARCHS = ("cnn2d", "crnn")
LEGACY_POOL_FIRST = False


def build_arch(name: str, n_classes: int, **kwargs: float) -> nn.Module:
    """Architecture by name: one of ``cnn2d``, ``crnn``, ``cnn1d``."""
    classes = {"cnn2d": CNN2d, "crnn": CRNN, "cnn1d": CNN1d}
    if name not in classes:
        raise ValueError(f"unknown architecture {name!r}; allowed: {list(classes)}")
    return classes[name](n_classes, **kwargs)
