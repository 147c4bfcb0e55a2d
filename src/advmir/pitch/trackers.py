"""Pretrained pitch trackers as differentiable models: CREPE (torchcrepe) and PESTO (pesto-pitch).

Nobody in this project trained them: both wheels ship their weights, so they load offline.

- CREPE (Kim et al., 2018, https://arxiv.org/abs/1802.06182; torchcrepe 0.0.24, MIT): 1024-sample
  frames every 10 ms, each mean-centred and scaled to unit standard deviation, into a CNN with 360
  sigmoid outputs, 20 cents apart from 31.7 Hz. ``torchcrepe.predict`` runs under ``no_grad`` and
  normalises the frames in place; :class:`CrepeTracker` reproduces its framing (centred, zero padded
  by half a window), its normalisation and its decoding with gradients, and is checked against
  ``predict`` in ``tests/test_pitch.py``.
- PESTO (Riou et al., 2023, https://arxiv.org/abs/2309.02265; pesto-pitch 2.0.1, LGPL-3): a
  constant-Q transform every 10 ms into a small network with 384 softmax outputs, 3 per semitone
  (bin b is MIDI pitch b / 3), trained self-supervised on MIR-1K (singing voice). Its own module is
  differentiable already; :class:`PestoTracker` loads the checkpoint with ``weights_only=True``
  (the library itself loads it unrestricted) and returns its activations.

Every tracker maps waveforms (B, T) in [-1, 1] at 16 kHz to activations (B, F, n_bins), one frame
per 10 ms (F = 1 + T // 160, frame f centred on sample 160 f), and converts bins to MIDI pitch.
"""

from __future__ import annotations

import math
import os
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from advmir.errors import InputError

SAMPLE_RATE = 16000
HOP = 160  # samples: a frame every 10 ms
#: tracker name -> (family, capacity or checkpoint)
TRACKERS: dict[str, tuple[str, str]] = {
    "crepe_tiny": ("crepe", "tiny"),
    "crepe_full": ("crepe", "full"),
    "pesto": ("pesto", "mir-1k_g7"),
}
DECODERS: dict[str, tuple[str, ...]] = {
    "crepe": ("argmax", "weighted_argmax", "viterbi"),
    "pesto": ("argmax", "weighted_argmax"),
}


class UnknownTrackerError(InputError, ValueError):
    """A tracker or decoder name the stage does not know."""


def hz_to_midi(hz: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Frequency in Hz -> fractional MIDI pitch (69 = A4 = 440 Hz), any shape."""
    if isinstance(hz, torch.Tensor):
        return 69.0 + 12.0 * torch.log2(hz / 440.0)
    return 69.0 + 12.0 * np.log2(np.asarray(hz, dtype=np.float64) / 440.0)


def midi_to_hz(midi: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Fractional MIDI pitch -> frequency in Hz, any shape."""
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


class PitchTracker(nn.Module):
    """Base of the trackers: waveforms (B, T) at 16 kHz in [-1, 1] -> activations (B, F, n_bins).

    Subclasses set ``n_bins`` and implement :meth:`forward` and :meth:`bin_midi`.
    """

    family: ClassVar[str] = ""
    n_bins: int = 0
    #: the range of MIDI pitches the tracker can output (lowest bin, highest bin)
    midi_range: tuple[float, float] = (0.0, 127.0)

    def n_frames(self, n_samples: int) -> int:
        """Frames F of a clip of ``n_samples`` samples: 1 + n_samples // 160."""
        return 1 + n_samples // HOP

    def bin_midi(self) -> torch.Tensor:
        """MIDI pitch of every bin, shape (n_bins,), float64."""
        raise NotImplementedError

    def midi_to_bin(self, midi: torch.Tensor) -> torch.Tensor:
        """Nearest bin (int64) of MIDI pitches of any shape."""
        centres = self.bin_midi().to(midi.device)
        step = float(centres[1] - centres[0])
        return ((midi.double() - float(centres[0])) / step).round().long().clamp(0, self.n_bins - 1)

    def confidence(self, activations: torch.Tensor) -> torch.Tensor:
        """Per-frame voicing confidence (B, F) in [0, 1] from activations (B, F, n_bins): the best
        bin's activation (CREPE's periodicity)."""
        return activations.amax(dim=-1)

    def track(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Activations (B, F, n_bins) and voicing confidence (B, F) of clips x (B, T)."""
        activations = self(x)
        return activations, self.confidence(activations)

    @torch.no_grad()
    def decode(self, activations: torch.Tensor, decoder: str = "weighted_argmax") -> torch.Tensor:
        """MIDI pitch per frame (B, F), float64, from activations (B, F, n_bins).

        ``argmax``: the best bin's pitch; ``weighted_argmax``: the activation-weighted mean pitch of
        the bins within one semitone of the best (CREPE's and PESTO's local average); ``viterbi``
        (CREPE): torchcrepe's Viterbi path over the bins.
        """
        if decoder not in DECODERS[self.family]:
            raise UnknownTrackerError(
                f"decoder {decoder!r} is not one of {list(DECODERS[self.family])} for {self.family}"
            )
        centres = self.bin_midi().to(activations.device)
        if decoder == "viterbi":
            import torchcrepe

            b, f, n = activations.shape
            bins, _ = torchcrepe.decode.viterbi(activations.reshape(b * f, n)[None].transpose(1, 2))
            return centres[bins.reshape(b, f).long()]
        best = activations.argmax(dim=-1)
        if decoder == "argmax":
            return centres[best]
        per_semitone = round(1.0 / float(centres[1] - centres[0]))
        offsets = torch.arange(-per_semitone + 1, per_semitone, device=activations.device)
        idx = (best[..., None] + offsets).clamp(0, self.n_bins - 1)
        weights = activations.gather(-1, idx).double()
        return (weights * centres[idx]).sum(-1) / weights.sum(-1).clamp_min(1e-12)


class _StridedConvFunction(torch.autograd.Function):
    """conv2d whose input gradient is computed without oneDNN, for frozen weights.

    On CPU, PyTorch's input gradient of CREPE's first layer (kernel 512, stride 4) through oneDNN
    takes about 20x the forward's time (measured here: 21 s against 0.9 s for 400 frames); without
    oneDNN it takes about the forward's. Weights get no gradient (the trackers are frozen).
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: tuple
    ) -> torch.Tensor:
        ctx.save_for_backward(weight)
        ctx.stride = stride
        ctx.in_shape = x.shape
        return F.conv2d(x, weight, bias, stride)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        (weight,) = ctx.saved_tensors
        with torch.backends.mkldnn.flags(enabled=False):
            grad_x = torch.nn.grad.conv2d_input(ctx.in_shape, weight, grad, stride=ctx.stride)
        return grad_x, None, None, None


class _FrozenStridedConv(nn.Module):
    """A frozen ``nn.Conv2d`` (no padding, no dilation) run through :class:`_StridedConvFunction`."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _StridedConvFunction.apply(x, self.conv.weight, self.conv.bias, self.conv.stride)


class CrepeTracker(PitchTracker):
    """CREPE with gradients: torchcrepe's framing, normalisation and network, as ``predict`` runs them.

    Args:
        capacity: ``"tiny"`` or ``"full"``.
        fmin, fmax: the pitch range ``predict`` decodes within (Hz, its defaults 50 and 2006): bins
            outside get activation 0 in :meth:`forward`.

    Shape: x (B, T) -> activations (B, 1 + T // 160, 360) in [0, 1] (independent sigmoids).
    """

    family = "crepe"
    n_bins = 360
    WINDOW = 1024
    CENTS_OFFSET = 1997.3794084376191  # cents of bin 0 above 10 Hz (torchcrepe.convert)

    def __init__(self, capacity: str = "tiny", fmin: float = 50.0, fmax: float = 2006.0) -> None:
        super().__init__()
        import torchcrepe

        self.capacity = capacity
        self.net = torchcrepe.Crepe(capacity)
        path = os.path.join(os.path.dirname(torchcrepe.__file__), "assets", f"{capacity}.pth")
        self.net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.net.conv1 = _FrozenStridedConv(self.net.conv1)
        self.net.eval()
        cents = 1200.0 * math.log2(fmin / 10.0), 1200.0 * math.log2(fmax / 10.0)
        lo = math.floor((cents[0] - self.CENTS_OFFSET) / 20)
        hi = math.ceil((cents[1] - self.CENTS_OFFSET) / 20)
        mask = torch.zeros(self.n_bins)
        mask[max(lo, 0) : min(hi, self.n_bins)] = 1.0
        self.register_buffer("mask", mask, persistent=False)
        midi = self.bin_midi()
        self.midi_range = (float(midi[max(lo, 0)]), float(midi[min(hi, self.n_bins) - 1]))

    def bin_midi(self) -> torch.Tensor:
        cents = 20.0 * torch.arange(self.n_bins, dtype=torch.float64) + self.CENTS_OFFSET
        return hz_to_midi(10.0 * 2.0 ** (cents / 1200.0))

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised frames (B, F, 1024) of clips x (B, T), as torchcrepe.preprocess makes them."""
        padded = F.pad(x, (self.WINDOW // 2, self.WINDOW // 2))
        frames = padded.unfold(-1, self.WINDOW, HOP)  # (B, F, 1024)
        frames = frames - frames.mean(dim=-1, keepdim=True)
        return frames / frames.std(dim=-1, keepdim=True).clamp_min(1e-10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = self.frames(x)
        b, f, _ = frames.shape
        return self.net(frames.reshape(b * f, self.WINDOW)).reshape(b, f, self.n_bins) * self.mask


def _pesto_checkpoint(name: str) -> dict:
    """PESTO's checkpoint from its wheel, read with ``weights_only=True`` (its hparams are omegaconf
    containers, allowed explicitly)."""
    import collections
    import typing

    import pesto
    from omegaconf import DictConfig, ListConfig
    from omegaconf.base import ContainerMetadata, Metadata
    from omegaconf.nodes import AnyNode

    path = os.path.join(os.path.dirname(pesto.__file__), "weights", f"{name}.ckpt")
    safe = [ListConfig, DictConfig, ContainerMetadata, Metadata, AnyNode, typing.Any, dict, list, int]
    safe.append(collections.defaultdict)
    with torch.serialization.safe_globals(safe):
        return torch.load(path, map_location="cpu", weights_only=True)


class PestoTracker(PitchTracker):
    """PESTO's own (differentiable) module, loaded with ``weights_only=True``.

    Shape: x (B, T) -> activations (B, 1 + T // 160, 384), a softmax per frame; bin b is MIDI b / 3.
    """

    family = "pesto"
    n_bins = 384

    def __init__(self, checkpoint: str = "mir-1k_g7") -> None:
        super().__init__()
        from pesto.data import Preprocessor
        from pesto.model import PESTO, Resnet1d

        ckpt = _pesto_checkpoint(checkpoint)
        hparams = ckpt["hparams"]
        pre = Preprocessor(
            hop_size=1000.0 * HOP / SAMPLE_RATE, sampling_rate=SAMPLE_RATE, **ckpt["hcqt_params"]
        )
        self.net = PESTO(
            Resnet1d(**hparams["encoder"]),
            preprocessor=pre,
            crop_kwargs=hparams["pitch_shift"],
            reduction=hparams["reduction"],
        )
        # The CQT kernels are rebuilt from hcqt_params, not stored (the library loads non-strictly too).
        missing, unexpected = self.net.load_state_dict(ckpt["state_dict"], strict=False)
        if unexpected or any(not k.startswith("preprocessor.") for k in missing):
            raise RuntimeError(f"PESTO checkpoint {checkpoint}: missing {missing}, unexpected {unexpected}")
        self.net.eval()
        self.midi_range = (0.0, (self.n_bins - 1) / 3.0)

    def bin_midi(self) -> torch.Tensor:
        return torch.arange(self.n_bins, dtype=torch.float64) / 3.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.track(x)[0]

    def track(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Activations (B, F, 384) and PESTO's own voicing confidence (B, F) (its classifier on the
        CQT's energy) of clips x (B, T)."""
        _, confidence, _, activations = self.net(
            x, sr=SAMPLE_RATE, convert_to_freq=False, return_activations=True
        )
        return activations, confidence


def build_tracker(name: str) -> PitchTracker:
    """The tracker of one name of :data:`TRACKERS`, in eval mode; UnknownTrackerError otherwise."""
    if name not in TRACKERS:
        raise UnknownTrackerError(f"unknown pitch tracker {name!r}; allowed: {list(TRACKERS)}")
    family, which = TRACKERS[name]
    tracker = CrepeTracker(which) if family == "crepe" else PestoTracker(which)
    return tracker.eval()
