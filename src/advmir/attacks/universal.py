"""Universal adversarial perturbation: one perturbation for every clip, learned on training clips."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from advmir.attacks.base import Attack, as_float_tensor, attack_mode
from advmir.attacks.budgets import Budget
from advmir.attacks.params import AttackParamError

log = logging.getLogger(__name__)

SCALINGS = ("per_clip", "fixed")


class Universal(Attack):
    r"""Universal adversarial perturbation: the idea of 'Universal adversarial perturbations'
    (Moosavi-Dezfooli et al., 2017) [https://arxiv.org/abs/1610.08401], learned by stochastic gradient
    as in 'Universal Adversarial Training' (Shafahi et al., 2020) [https://arxiv.org/abs/1811.11304];
    for audio see Abdoli et al., 2019 [https://arxiv.org/abs/1908.03173].

    Distance measure: L2, stated as an SNR. One perturbation v (T,) is fitted on training clips with
    Adam, maximising the mean clamped logit margin ``mean max(margin, -kappa)`` (so clips already fooled
    stop dominating), then added to unseen clips. Untargeted only.

    Scaling: ``"per_clip"`` (default) adds ``v / ||v|| * ||x|| 10^(-snr_db/20)`` to each clip, so every
    clip gets exactly ``snr_db`` (one waveform, its gain matched to the clip, like a fixed playback
    level relative to the music). ``"fixed"`` adds the same v to every clip, its L2 norm set by the
    median training clip, so SNR varies from clip to clip.

    Args:
        model (nn.Module): maps (B, T) waveforms in [-1, 1] to logits (B, C).
        snr_db (float): budget in dB. Required.
        scaling (str): ``"per_clip"`` or ``"fixed"``. Default ``"per_clip"``.
        epochs (int): passes over the training clips. Default 5.
        lr (float): Adam step size (v starts at 1e-3 scale; only its direction matters). Default 0.01.
        kappa (float): margin clamp in logits. Default 5.0.
        max_train (int): at most this many training clips (a seeded subset). Default 1000.
        batch_size, seed: see :class:`advmir.attacks.base.Attack`. Not targeted.

    Shape:
        fit: x_train (N, T) float in [-1, 1] or int16 (numpy memmap or tensor), y_train (N,).
        call: x (B, T); y (B,); result.x_adv (B, T). ``perturbation``: (T,).

    Example::
        >>> attack = Universal(model, snr_db=20).fit(x_train, y_train)
        >>> result = attack(x_test, y_test)
    """

    name = "universal"
    norm = "l2"
    supports_targeted = False
    budget_params = ("snr_db",)

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        scaling: str = "per_clip",
        epochs: int = 5,
        lr: float = 0.01,
        kappa: float = 5.0,
        max_train: int = 1000,
        **common: Any,
    ) -> None:
        super().__init__(model, **common)
        self.scaling = self._choice("scaling", scaling, SCALINGS)
        self.epochs = self._number("epochs", epochs, minimum=1, integer=True)
        self.lr = self._number("lr", lr, minimum=0.0, exclusive_minimum=True)
        self.kappa = self._number("kappa", kappa, minimum=0.0)
        self.max_train = self._number("max_train", max_train, minimum=1, integer=True)
        self.perturbation: torch.Tensor | None = None
        self.fixed_norm: float | None = None
        self.fit_info: dict[str, Any] = {}

    def _add(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        scale = 10.0 ** (-self.budget.snr_db / 20.0)
        if self.scaling == "per_clip":
            gain = x.norm(dim=1, keepdim=True) * scale / v.norm().clamp_min(1e-20)
            return (x + gain * v[None, :]).clamp(-1.0, 1.0)
        radius = self.fixed_norm * scale
        v = v * torch.clamp(radius / v.norm().clamp_min(1e-20), max=1.0)
        return (x + v[None, :]).clamp(-1.0, 1.0)

    def make_budget(self, eps: Any, snr_db: Any, envelope: Any) -> Budget | None:
        """The L2 budget set by ``snr_db``, which is required."""
        if snr_db is None:
            raise AttackParamError(f"{self.name}: parameter 'snr_db' is required (the budget in dB)")
        return super().make_budget(eps, snr_db, envelope)

    def fit(self, x_train: np.ndarray | torch.Tensor, y_train: np.ndarray | torch.Tensor) -> Universal:
        """Learn the perturbation on training clips x_train (N, T) with labels y_train (N,); returns self."""
        model = self._require_model()
        n = int(x_train.shape[0])
        if n == 0:
            raise ValueError(f"{self.name}: no training clips to fit the universal perturbation on")
        device = self.device
        rng = np.random.default_rng(self.seed)
        rows = np.sort(rng.permutation(n)[: self.max_train])
        y_all = torch.as_tensor(np.asarray(y_train)[rows], dtype=torch.long)
        t_start = time.perf_counter()
        probe = as_float_tensor(x_train[rows[: min(len(rows), 256)]])
        self.fixed_norm = float(probe.norm(dim=1).median())
        gen = torch.Generator().manual_seed(self.seed)
        # a tiny random start: only v's direction matters, so Adam's first steps set it
        v = (1e-3 * torch.randn(int(x_train.shape[1]), generator=gen, dtype=probe.dtype)).to(device)
        v.requires_grad_(True)
        opt = torch.optim.Adam([v], lr=self.lr)
        steps, fooled, seen = 0, 0, 0
        with attack_mode(model):
            for epoch in range(self.epochs):
                order = rng.permutation(len(rows))
                fooled, seen = 0, 0
                for i in range(0, len(order), self.batch_size):
                    pick = np.sort(order[i : i + self.batch_size])
                    xb = as_float_tensor(x_train[rows[pick]]).to(device)
                    yb = y_all[pick].to(device)
                    with torch.enable_grad():
                        logits = model(self._add(xb, v))
                        margin = self.margin(logits, yb, yb)
                        loss = margin.clamp_min(-self.kappa).mean()
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                    opt.step()
                    steps += 1
                    fooled += int((margin.detach() < 0).sum())
                    seen += int(yb.numel())
                log.info(
                    "%s: epoch %d/%d, training fooling rate %.3f",
                    self.name,
                    epoch + 1,
                    self.epochs,
                    fooled / max(seen, 1),
                )
        self.perturbation = v.detach()
        self.fit_info = {
            "n_train": len(rows),
            "fit_steps": steps,
            "train_fooling_rate": fooled / max(seen, 1),
            "fit_seconds": time.perf_counter() - t_start,
            "scaling": self.scaling,
            "fixed_norm": self.fixed_norm,
        }
        return self

    def applied_perturbation(self) -> np.ndarray:
        """The perturbation (T,) to save: unit L2 norm when per_clip, the added waveform when fixed."""
        if self.perturbation is None:
            raise RuntimeError(f"{self.name}: call fit() on training clips first")
        v = self.perturbation.detach().cpu().double()
        if self.scaling == "per_clip":
            v = v / v.norm().clamp_min(1e-20)
        else:
            radius = self.fixed_norm * 10.0 ** (-self.budget.snr_db / 20.0)
            v = v * min(1.0, radius / max(float(v.norm()), 1e-20))
        return v.float().numpy()

    def _craft_batch(
        self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, radius: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | int, torch.Tensor | int]:
        if self.perturbation is None:
            raise RuntimeError(f"{self.name}: call fit() on training clips before attacking")
        with torch.no_grad():
            return self._add(x, self.perturbation.to(device=x.device, dtype=x.dtype)), 0, 0
