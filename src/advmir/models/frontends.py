"""Differentiable input representations: raw waveform, a learned filterbank on it, STFT magnitude,
log-mel, CQT.

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

FRONTENDS = ("waveform", "filterbank", "stft", "logmel", "cqt")


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
    """Shared tail: log compression with an additive floor ``top_db`` dB below the clip's loudest bin
    (default 40), then per-bin batch norm. Subclasses give ``spectrum`` and say whether it is a power
    (2) or magnitude (1) spectrum.

    ``log(S + floor)`` keeps near-silent release tails and empty bins from being amplified into
    features: without it, ``log`` turns noise 60 dB below the note into as large a feature change as
    the note itself, and a listener-inaudible noise floor flips predictions. An additive floor, unlike
    a clamp, keeps a (small) gradient in every bin, so gradient attacks are not blinded in quiet
    regions (a clamp would mask exactly the bins where added noise is most audible to the model).
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
        spec = self.spectrum(x)
        floor = 1e-10
        if self.top_db is not None:
            # dB of a power spectrum are 10 log10, of a magnitude spectrum 20 log10.
            ratio = 10.0 ** (-self.top_db * self.power / 20.0)
            floor = spec.amax(dim=(1, 2), keepdim=True) * ratio + 1e-10
        return self.norm(torch.log(spec + floor)).unsqueeze(1)


def gabor_filterbank(
    sample_rate: int, n_filters: int, kernel_size: int, f_min: float = 40.0, f_max: float | None = None
) -> Tensor:
    """Complex Gabor filters at mel-spaced centres, each as wide as its mel band (LEAF's init).

    Returns:
        float32, shape (2 * n_filters, 1, kernel_size): the real parts, then the imaginary parts.
        Each filter has unit gain at its centre frequency (for a complex exponential; a real sine of
        amplitude a gives a modulus of a / 2).
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    mels = torch.linspace(
        2595 * math.log10(1 + f_min / 700), 2595 * math.log10(1 + f_max / 700), n_filters + 2,
        dtype=torch.float64,
    )  # fmt: skip
    hz = 700 * (10 ** (mels / 2595) - 1)
    centres, bandwidth = hz[1:-1], (hz[2:] - hz[:-2]) / 2
    # A Gaussian window of std sigma (s) has a frequency response of FWHM 2.355 / (2 pi sigma).
    sigma = (2.355 / (2 * math.pi * bandwidth)).clamp(max=kernel_size / sample_rate / 6)
    t = (torch.arange(kernel_size, dtype=torch.float64) - kernel_size // 2) / sample_rate
    window = torch.exp(-0.5 * (t[None, :] / sigma[:, None]) ** 2)
    window = window / window.sum(dim=1, keepdim=True)
    phase = 2 * math.pi * centres[:, None] * t[None, :]
    weights = torch.cat([window * torch.cos(phase), window * torch.sin(phase)])
    return weights.unsqueeze(1).float()


class LearnedFilterbank(_TimeFrequency):
    """A filterbank learned on the raw waveform (time-domain filterbanks, Zeghidour et al., 2018;
    LEAF, Zeghidour et al., 2021): ``n_filters`` complex FIR filters of ``kernel_size`` taps,
    initialised as mel-spaced Gabor filters and trained tap by tap with the classifier; the squared
    modulus, averaged over ``hop_length``, then the shared log floor and per-bin batch norm.

    (B, T) -> (B, 1, n_filters, frames); frames match the other front-ends at the same hop. The
    filters run at a stride of ``hop_length // pool`` (the modulus is a smooth envelope), then the
    envelope is averaged over ``pool`` positions.

    The taps are stored divided by ``lr_scale``: an Adam step moves a stored value by about the
    learning rate, so a tap moves ``lr_scale`` times that. Taps are ~1e-2 in size; at the
    classifier's learning rate they would be overwritten within an epoch (measured on the default
    synth_notes split: 0.666 test accuracy with ``lr_scale=1``, 0.903 with 0.01).
    """

    power = 2.0

    def __init__(
        self,
        sample_rate: int,
        n_filters: int = 64,
        kernel_size: int = 401,
        hop_length: int = 256,
        pool: int = 4,
        lr_scale: float = 0.01,
        top_db: float | None = 40.0,
    ) -> None:
        super().__init__(n_filters, top_db)
        if not lr_scale > 0:
            raise ValueError(f"filterbank: lr_scale must be > 0, got {lr_scale}")
        if hop_length % pool:
            raise ValueError(f"filterbank: hop_length ({hop_length}) must be a multiple of pool ({pool})")
        self.sample_rate = sample_rate
        self.n_filters = n_filters
        self.kernel_size = kernel_size
        self.stride = hop_length // pool
        self.pool = pool
        self.lr_scale = lr_scale
        self.weight = nn.Parameter(gabor_filterbank(sample_rate, n_filters, kernel_size) / lr_scale)

    def spectrum(self, x: Tensor) -> Tensor:
        pad = self.kernel_size // 2
        taps = self.weight * self.lr_scale
        y = nn.functional.conv1d(x.unsqueeze(1), taps, stride=self.stride, padding=pad)
        power = y[:, : self.n_filters] ** 2 + y[:, self.n_filters :] ** 2  # (B, F, T / stride)
        return nn.functional.avg_pool1d(power, self.pool, ceil_mode=True)


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
        self.mel = mel_spectrogram(sample_rate, n_fft, hop_length, n_mels, f_min=20.0, f_max=sample_rate / 2)

    def spectrum(self, x: Tensor) -> Tensor:
        return self.mel(x)


def mel_spectrogram(
    sample_rate: int, n_fft: int, hop_length: int, n_mels: int, f_min: float, f_max: float | None = None
) -> torchaudio.transforms.MelSpectrogram:
    """The mel power spectrogram of every torch log-mel here, (B, T) -> (B, n_mels, frames): this
    front-end's and the anomaly multi-task net's (:class:`advmir.anomaly.multitask.LogMel`), which
    differ only in ``f_min``, ``f_max`` (None: torchaudio's ``sample_rate // 2``) and the log that
    follows. (The anomaly detectors' NumPy log-mel, :func:`advmir.anomaly.dsp.log_mel`, is a
    separate computation: other window, padding and precision, so other numbers.)"""
    options = {"n_fft": n_fft, "hop_length": hop_length, "n_mels": n_mels, "f_min": f_min, "f_max": f_max}
    return torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, power=2.0, **options)


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
    """Front-end by name: one of ``waveform``, ``filterbank``, ``stft``, ``logmel``, ``cqt``."""
    classes = {
        "waveform": Waveform,
        "filterbank": LearnedFilterbank,
        "stft": STFTMagnitude,
        "logmel": LogMel,
        "cqt": CQT,
    }
    if name not in classes:
        raise ValueError(f"unknown front-end {name!r}; allowed: {list(classes)}")
    return classes[name](sample_rate, **kwargs)
