"""Differentiable input representations: raw waveform, STFT magnitude, log-mel, CQT.

Every front-end takes the raw waveform, so an attack's gradient reaches the audio itself:
``(batch, time) -> (batch, 1, time)`` for the waveform, ``(batch, time) -> (batch, 1, freq, frames)``
for the time-frequency ones. Time-frequency front-ends end in a per-frequency-bin batch norm:
the learned input normalisation that lets one CNN recipe train on every representation.
"""

from __future__ import annotations

import math

import torch
import torchaudio
from torch import Tensor, nn

FRONTENDS = ("waveform", "stft", "logmel", "cqt")


class Waveform(nn.Module):
    """Raw waveform, standardised by a learned batch norm: (B, T) -> (B, 1, T)."""

    dims = 1

    def __init__(self, sample_rate: int) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.norm = nn.BatchNorm1d(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.unsqueeze(1))


class _TimeFrequency(nn.Module):
    """Shared tail: log compression with a floor ``top_db`` dB below the clip's loudest bin (default
    40), then per-bin batch norm. Subclasses give ``spectrum`` and say whether it is a power (2) or
    magnitude (1) spectrum.

    The floor keeps near-silent release tails and empty bins from being amplified into features:
    without it, ``log`` turns noise 60 dB below the note into as large a feature change as the
    note itself, and a listener-inaudible noise floor flips predictions.
    """

    dims = 2
    power = 1.0

    def __init__(self, n_bins: int, top_db: float | None = 40.0) -> None:
        super().__init__()
        if top_db is not None and not top_db > 0:
            raise ValueError(f"top_db must be > 0 dB (or null for no floor), got {top_db}")
        self.n_bins = n_bins
        self.top_db = top_db
        self.norm = nn.BatchNorm1d(n_bins)

    def spectrum(self, x: Tensor) -> Tensor:  # (B, T) -> (B, F, frames), non-negative
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        feats = torch.log(self.spectrum(x) + 1e-10)
        if self.top_db is not None:
            # dB of a power spectrum are 10 log10, of a magnitude spectrum 20 log10.
            floor_nats = self.top_db * self.power / 20.0 * math.log(10.0)
            feats = torch.maximum(feats, feats.amax(dim=(1, 2), keepdim=True) - floor_nats)
        return self.norm(feats).unsqueeze(1)


class STFTMagnitude(_TimeFrequency):
    """Log STFT magnitude: (B, T) -> (B, 1, n_fft // 2 + 1, frames)."""

    def __init__(
        self, sample_rate: int, n_fft: int = 512, hop_length: int = 256, top_db: float | None = 40.0
    ) -> None:
        super().__init__(n_fft // 2 + 1, top_db)
        self.sample_rate = sample_rate
        self.spec = torchaudio.transforms.Spectrogram(n_fft=n_fft, hop_length=hop_length, power=1.0)

    def spectrum(self, x: Tensor) -> Tensor:
        return self.spec(x)


class LogMel(_TimeFrequency):
    """Log mel power spectrogram: (B, T) -> (B, 1, n_mels, frames)."""

    power = 2.0

    def __init__(
        self,
        sample_rate: int,
        n_fft: int = 1024,
        hop_length: int = 256,
        n_mels: int = 64,
        top_db: float | None = 40.0,
    ) -> None:
        super().__init__(n_mels, top_db)
        self.sample_rate = sample_rate
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            hop_length=hop_length,
            n_mels=n_mels,
            f_min=20.0,
            f_max=sample_rate / 2,
            power=2.0,
        )

    def spectrum(self, x: Tensor) -> Tensor:
        return self.mel(x)


def cqt_kernels(
    sample_rate: int, fmin: float, n_bins: int, bins_per_octave: int, n_fft: int
) -> tuple[Tensor, int]:
    """Spectral kernels of a constant-Q transform (Brown & Puckette, 1992).

    Returns:
        kernels: complex64, shape (n_bins, n_fft // 2 + 1): the conjugate spectra of Hann-windowed
            complex exponentials, one per bin, each centred in an ``n_fft`` frame.
        longest: the longest kernel in samples (must fit in ``n_fft``).
    """
    q = 1.0 / (2 ** (1.0 / bins_per_octave) - 1)
    freqs = fmin * 2.0 ** (torch.arange(n_bins, dtype=torch.float64) / bins_per_octave)
    if freqs[-1] >= sample_rate / 2:
        raise ValueError(
            f"CQT: top bin {freqs[-1]:.0f} Hz is above Nyquist ({sample_rate / 2:.0f} Hz); "
            "lower n_bins or fmin"
        )
    lengths = torch.ceil(q * sample_rate / freqs).long()
    longest = int(lengths[0])
    if longest > n_fft:
        raise ValueError(f"CQT: fmin={fmin} Hz needs a {longest}-sample kernel, more than n_fft={n_fft}")
    time_kernels = torch.zeros(n_bins, n_fft, dtype=torch.complex128)
    for k in range(n_bins):
        length = int(lengths[k])
        n = torch.arange(length, dtype=torch.float64) - length // 2
        window = torch.hann_window(length, periodic=False, dtype=torch.float64)
        atom = window / length * torch.exp(2j * math.pi * freqs[k] / sample_rate * n)
        start = n_fft // 2 - length // 2
        time_kernels[k, start : start + length] = atom
    # Atoms of positive frequency live in the non-negative bins, which is all a onesided STFT keeps.
    spectra = torch.fft.fft(time_kernels, dim=-1)[:, : n_fft // 2 + 1] / n_fft
    return spectra.conj().to(torch.complex64), longest


class CQT(_TimeFrequency):
    """Log constant-Q magnitude (12 bins per octave from E1, 41.2 Hz, the lowest bass string),
    computed as a spectral-kernel product with a long STFT.

    (B, T) -> (B, 1, n_bins, frames); frames match the other front-ends at the same hop.
    """

    def __init__(
        self,
        sample_rate: int,
        hop_length: int = 256,
        fmin: float = 41.20,
        n_bins: int = 80,
        bins_per_octave: int = 12,
        n_fft: int = 8192,
        top_db: float | None = 40.0,
    ) -> None:
        super().__init__(n_bins, top_db)
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.n_fft = n_fft
        kernels, _ = cqt_kernels(sample_rate, fmin, n_bins, bins_per_octave, n_fft)
        # Above the top bin's band the kernels are ~0: keep only the STFT bins they use (about half).
        mag = kernels.abs()
        used = (mag > 1e-3 * mag.amax(dim=1, keepdim=True)).any(dim=0)
        self.n_used = int(used.nonzero().max()) + 1
        self.register_buffer("kernels", kernels[:, : self.n_used].contiguous(), persistent=False)
        # A rectangular analysis window: the kernels carry their own windows.
        self.register_buffer("window", torch.ones(n_fft), persistent=False)

    def spectrum(self, x: Tensor) -> Tensor:
        spec = torch.stft(
            x,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )  # (B, n_fft // 2 + 1, frames)
        spec = spec[:, : self.n_used]
        return torch.einsum("kf,bft->bkt", self.kernels.to(spec.dtype), spec).abs()


def build_frontend(name: str, sample_rate: int, **kwargs: float) -> nn.Module:
    """Front-end by name: one of ``waveform``, ``stft``, ``logmel``, ``cqt``."""
    classes = {"waveform": Waveform, "stft": STFTMagnitude, "logmel": LogMel, "cqt": CQT}
    if name not in classes:
        raise ValueError(f"unknown front-end {name!r}; allowed: {list(classes)}")
    return classes[name](sample_rate, **kwargs)
