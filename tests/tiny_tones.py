"""The attack tests' toy task: weak sines in white noise, 0.25 s at 8 kHz, and a tiny log-mel CNN
trained on it in a second or two (small perturbations can move its predictions)."""

from __future__ import annotations

import math

import torch
import torchaudio
from torch import nn

SR, T = 8000, 2000
FREQS = (300.0, 700.0, 1500.0)


def noisy_tones(n: int, seed: int, freqs: tuple[float, ...] = FREQS) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips (n, T) in [-1, 1]: a weak sine of one of ``freqs`` in white noise; labels (n,) index freqs."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, len(freqs), (n,), generator=g)
    f = torch.tensor(freqs)[y] * (1 + 0.03 * (torch.rand(n, generator=g) - 0.5))
    t = torch.arange(T) / SR
    phase = torch.rand(n, 1, generator=g) * 2 * math.pi
    gain = 0.5 + 0.5 * torch.rand(n, 1, generator=g)
    x = 0.15 * torch.sin(2 * math.pi * f[:, None] * t[None] + phase) + 0.2 * torch.randn(n, T, generator=g)
    return (gain * x).clamp(-1, 1).float(), y


class TinyLogMelCNN(nn.Module):
    """(B, T) -> logits (B, n_classes): log-mel, one conv layer, optional dropout (so a test can check
    that an attack restores the training mode)."""

    def __init__(self, n_classes: int = len(FREQS), dropout: float = 0.1) -> None:
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(SR, n_fft=256, hop_length=128, n_mels=24)
        layers: list[nn.Module] = [nn.Conv2d(1, 8, 3, padding=1), nn.ReLU()]
        layers += [nn.Dropout(dropout)] if dropout else []
        layers += [nn.AdaptiveAvgPool2d((4, 1)), nn.Flatten(), nn.Linear(32, n_classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.log(self.mel(x) + 1e-6)[:, None])


def fit_tiny(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> nn.Module:
    """Train ``net`` on clips x (n, T), labels y (n,) for ``steps`` Adam steps of 64 random clips
    (drawn from torch's global generator: seed it first); returned in eval mode, gradients cleared."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (64,))
        loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.zero_grad(set_to_none=True)
    return net.eval()


#: five classes: the targeted attacks (APGD-T's targeted DLR, FAB-T) need four classes besides the label
FIVE_FREQS = (300.0, 500.0, 800.0, 1200.0, 1800.0)


def five_tone_model() -> TinyLogMelCNN:
    """The tiny log-mel CNN (no dropout) fitted on 320 clips of the five-tone task, seeded: eval mode."""
    torch.manual_seed(0)
    x, y = noisy_tones(320, 100, FIVE_FREQS)
    return fit_tiny(TinyLogMelCNN(len(FIVE_FREQS), dropout=0.0), x, y, steps=80)  # type: ignore[return-value]


def correct_clips(model: nn.Module, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n of 64 five-tone test clips (n, T) that ``model`` classifies correctly, and labels (n,)."""
    x, y = noisy_tones(64, 7, FIVE_FREQS)
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    assert keep.float().mean() > 0.85, "the tiny model did not learn the toy task"
    return x[keep][:n], y[keep][:n]
