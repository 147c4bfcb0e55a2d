"""Perturbation budgets (L-inf, L2, or a target SNR in dB per clip) and perturbation metrics.

For a clip ``x`` (T samples) and a perturbation ``d``, the signal-to-noise ratio is

    SNR(x, d) = 10 log10( sum x^2 / sum d^2 )  dB  (:mod:`advmir.snr`, the one home of the formula).

A budget of ``snr_db = s`` means "the perturbation is at least s dB below the clip":

- L2 attacks: the L2 ball of radius ``||x||_2 * 10^(-s/20)`` around each clip, so SNR >= s exactly.
- L-inf attacks: a box of half-width ``eps_i(t) = 10^(-s/20) * sqrt(p_i(t))`` per sample, where the
  power profile ``p_i(t) = envelope * local_i(t) + (1 - envelope) * rms(x_i)^2`` mixes the clip's mean
  power with its local power (mean of x^2 over frames of ``ENVELOPE_FRAME`` samples). Both terms sum
  to ``||x_i||^2`` over the clip, so every perturbation in the box has ``||d||^2 <= sum eps_i(t)^2 =
  ||x_i||^2 10^(-s/10)``: SNR >= s, with equality for a perturbation that fills the box (every sample
  at +-eps_i(t), as FGSM makes). ``envelope = 0`` (the default) is the flat box
  ``eps_i = rms(x_i) 10^(-s/20)``: quiet clips get proportionally smaller perturbations than loud
  ones, and an L-inf and an L2 attack at the same ``snr_db`` keep the same loudness guarantee.
  ``envelope = 1`` lets the box follow the clip's loudness in time (bigger where the note is loud,
  nothing in silence, as masking would allow); values between mix the two. Which one fools a model
  at a given SNR depends on the model: log-mel models are most sensitive to energy in the quiet
  tail of a note (flat box), raw-waveform models to changes under the loud attack (envelope).

An absolute budget (``eps``) is the same radius for every clip, in the units of the waveform
(full scale is 1.0), as torchattacks and the image literature state it.

Shapes: ``Budget.radius(x)`` is (B, 1), one radius per clip, or (B, T) for an L-inf box shaped by
the envelope; attacks broadcast it against (B, T) perturbations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from advmir.attacks.params import AttackParamError, check_choice, check_number
from advmir.snr import amplitude_ratio, energy_ratio_db

NORMS = ("linf", "l2")
ENVELOPE_FRAME = 1024  # samples per frame of the local power (64 ms at 16 kHz)


@dataclass(frozen=True)
class Budget:
    """A per-clip perturbation budget in one norm.

    Attributes:
        norm: ``"linf"`` or ``"l2"``.
        eps: absolute radius in waveform units, or None.
        snr_db: target SNR in dB relative to each clip, or None. Exactly one of eps / snr_db is set.
        envelope: L-inf with snr_db only: how much the box follows the clip's local power, in [0, 1].
    """

    norm: str
    eps: float | None = None
    snr_db: float | None = None
    envelope: float = 0.0

    @classmethod
    def create(
        cls,
        attack: str,
        norm: str,
        eps: Any = None,
        snr_db: Any = None,
        required: bool = True,
        envelope: Any = 0.0,
    ) -> Budget | None:
        """Validate a budget given as attack parameters; None if neither is given and not ``required``."""
        check_choice(attack, "norm", norm, NORMS)
        eps = check_number(attack, "eps", eps, minimum=0.0, optional=True)
        snr_db = check_number(attack, "snr_db", snr_db, optional=True)
        envelope = check_number(attack, "envelope", envelope, minimum=0.0, maximum=1.0)
        if eps is not None and snr_db is not None:
            raise AttackParamError(f"{attack}: give either 'eps' or 'snr_db', not both (got {eps}, {snr_db})")
        if envelope and (norm != "linf" or snr_db is None):
            raise AttackParamError(
                f"{attack}: parameter 'envelope' shapes an L-inf box set by 'snr_db' "
                f"(got norm={norm!r}, snr_db={snr_db!r})"
            )
        if eps is None and snr_db is None:
            if required:
                raise AttackParamError(
                    f"{attack}: a budget is required: set 'eps' (absolute, full scale 1.0) or 'snr_db'"
                )
            return None
        return cls(norm=norm, eps=eps, snr_db=snr_db, envelope=envelope)

    def radius(self, x: torch.Tensor) -> torch.Tensor:
        """Radius per clip (B, 1), or per sample (B, T) for an envelope-shaped L-inf box.

        Args:
            x: clean clips, shape (B, T).
        """
        if self.eps is not None:
            return torch.full((x.shape[0], 1), self.eps, dtype=x.dtype, device=x.device)
        if self.norm == "linf" and self.envelope > 0:
            return linf_box(x, self.snr_db, self.envelope)
        return radius_for_snr(x, self.snr_db, self.norm)[:, None]

    def project(self, delta: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
        """Project perturbations (B, T) onto the ball of ``radius`` (B, 1) or (B, T)."""
        return project(delta, radius, self.norm)

    def as_dict(self) -> dict[str, Any]:
        return {"norm": self.norm, "eps": self.eps, "snr_db": self.snr_db, "envelope": self.envelope}


def radius_for_snr(x: torch.Tensor, snr_db: float, norm: str) -> torch.Tensor:
    """Radius (B,) in ``norm`` that keeps every perturbation at SNR >= ``snr_db`` for clips x (B, T)
    (the flat L-inf box)."""
    scale = amplitude_ratio(snr_db)
    energy = x.double().pow(2).sum(dim=1)
    if norm == "l2":
        radius = energy.sqrt() * scale
    elif norm == "linf":
        radius = (energy / x.shape[1]).sqrt() * scale
    else:
        raise ValueError(f"norm must be one of {list(NORMS)}, got {norm!r}")
    return radius.to(x.dtype)


def linf_box(x: torch.Tensor, snr_db: float, envelope: float, frame: int = ENVELOPE_FRAME) -> torch.Tensor:
    """Per-sample half-width (B, T) of an L-inf box whose perturbations all have SNR >= ``snr_db``.

    The box follows ``envelope * local power + (1 - envelope) * mean power`` of each clip x (B, T); see
    the module docstring.
    """
    b, n = x.shape
    power = x.double().pow(2)
    frames = -(-n // frame)
    padded = torch.nn.functional.pad(power, (0, frames * frame - n)).view(b, frames, frame).sum(dim=2)
    counts = torch.full((frames,), float(frame), dtype=power.dtype, device=x.device)
    counts[-1] = n - (frames - 1) * frame
    local = (padded / counts).repeat_interleave(frame, dim=1)[:, :n]
    mixed = envelope * local + (1.0 - envelope) * power.mean(dim=1, keepdim=True)
    return (mixed.sqrt() * amplitude_ratio(snr_db)).to(x.dtype)


def project(delta: torch.Tensor, radius: torch.Tensor, norm: str) -> torch.Tensor:
    """Project perturbations (B, T) onto the ``norm`` ball of ``radius`` (B,), (B, 1) or (B, T) (L-inf)."""
    r = radius[:, None] if radius.dim() == 1 else radius
    if norm == "linf":
        return torch.maximum(torch.minimum(delta, r), -r)
    if norm == "l2":
        length = delta.norm(dim=1, keepdim=True)
        return delta * torch.clamp(r / length.clamp_min(1e-20), max=1.0)
    raise ValueError(f"norm must be one of {list(NORMS)}, got {norm!r}")


def snr_db(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """SNR (B,) in dB of the perturbation ``x_adv - x`` relative to the clip; +inf when nothing changed."""
    return perturbation_metrics(x, x_adv)["snr_db"]


def perturbation_metrics(x: torch.Tensor, x_adv: torch.Tensor) -> dict[str, torch.Tensor]:
    """SNR in dB, L-inf and L2 norm of the perturbation, per clip, in float64.

    Args:
        x: clean clips, shape (B, T).
        x_adv: perturbed clips, shape (B, T).

    Returns:
        dict with ``snr_db``, ``linf``, ``l2``, each of shape (B,), float64 on the CPU.
    """
    snr, linf, l2 = [], [], []
    for i in range(0, x.shape[0], 64):  # float64 copies of 64 clips at a time, not of the whole batch
        xs = x[i : i + 64].detach().double().cpu()
        delta = x_adv[i : i + 64].detach().double().cpu() - xs
        signal = xs.pow(2).sum(dim=1)
        noise = delta.pow(2).sum(dim=1)
        with torch.no_grad():
            ratio = energy_ratio_db(signal, noise)  # x/0 -> inf (no change); 0/0 -> nan, replaced
            snr.append(torch.where(noise == 0, torch.full_like(ratio, float("inf")), ratio))
        linf.append(delta.abs().amax(dim=1))
        l2.append(noise.sqrt())
    empty = torch.zeros(0, dtype=torch.float64)
    cat = lambda parts: torch.cat(parts) if parts else empty  # noqa: E731
    return {"snr_db": cat(snr), "linf": cat(linf), "l2": cat(l2)}
