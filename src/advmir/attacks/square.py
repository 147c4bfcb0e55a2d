"""Square attack: query-only random search at the corners of the L-inf box, on 1-D audio windows."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advmir.attacks.base import IterativeAttack

# iterations (out of 10,000) at which the window fraction halves, from the paper's code
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


class Square(IterativeAttack):
    r"""Square Attack, in 'Square Attack: a query-efficient black-box adversarial attack via random
    search' (Andriushchenko et al., 2020) [https://arxiv.org/abs/1912.00049], L-inf version, adapted to
    1-D audio: the "square" is a window of contiguous samples.

    Distance measure: L-inf. Query-only: uses the model's output scores, never its gradients. Starts
    from random +-eps_i signs on every sample (the 1-D analogue of the paper's stripes); each query
    sets one random window (its length a fraction p of the clip, halved on the paper's schedule) to
    a random corner of the box, +eps_i or -eps_i throughout as the paper's squares (``window=
    "constant"``) or random signs per sample (``"noise"``), and keeps the change if the logit margin
    fell. A clip stops as soon as it fools the model (its query count is recorded) or when
    ``n_queries`` are spent.

    Args:
        model (nn.Module): maps (B, T) waveforms in [-1, 1] to logits (B, C); only forward is used.
        eps, snr_db, envelope: the L-inf budget (exactly one of eps / snr_db); see
            :class:`advmir.attacks.base.Attack`.
        n_queries (int): maximum queries per clip (the initial point counts as one). Default 500.
        p_init (float): initial window length as a fraction of the clip. Default 0.1.
        window (str): ``"constant"`` or ``"noise"`` (see above). Default ``"constant"``.
        targeted, target_map, batch_size, seed: see :class:`advmir.attacks.base.Attack`.

    Shape:
        x: (B, T) float in [-1, 1]; y: (B,) int64; result.x_adv: (B, T); result.queries: (B,).

    Example::
        >>> attack = Square(model, snr_db=30, n_queries=500)
        >>> result = attack(x, y)   # result.queries: queries each clip needed
    """

    name = "square"
    norm = "linf"

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        n_queries: int = 500,
        p_init: float = 0.1,
        window: str = "constant",
        **common: Any,
    ) -> None:
        super().__init__(model, **common)
        self.n_queries = self._number("n_queries", n_queries, minimum=1, integer=True)
        self.window = self._choice("window", window, ("noise", "constant"))
        self.p_init = self._number("p_init", p_init, minimum=0.0, maximum=1.0, exclusive_minimum=True)

    @torch.no_grad()
    def _margin_at(self, x_adv: torch.Tensor, s: dict) -> torch.Tensor:
        return self.margin(self.model(x_adv), s["y"], s["t"])

    def _fraction(self, it: torch.Tensor) -> torch.Tensor:
        scaled = it.to(torch.float64) * (10000.0 / self.n_queries)
        halvings = sum((scaled > h).to(torch.float64) for h in _HALVINGS)
        return self.p_init / 2.0**halvings

    @torch.no_grad()
    def init_state(
        self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, radius: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        delta = self.random_signs(x.shape, x) * radius
        x_adv = (x + delta).clamp(-1.0, 1.0)
        margin = self.margin(self.model(x_adv), y, t)
        ones = torch.ones(x.shape[0], dtype=torch.long, device=x.device)
        return {"x_adv": x_adv, "loss": margin, "queries": ones, "known": margin < 0}

    @torch.no_grad()
    def step(self, s: dict[str, torch.Tensor]) -> torch.Tensor:
        b, n = s["x"].shape
        fooled = s["known"]
        length = (self._fraction(s["queries"]) * n).round().clamp(1, n).to(torch.long)
        span = (n - length + 1).to(torch.float64)
        start = (torch.rand(b, generator=self._gen, device=s["x"].device, dtype=torch.float64) * span).long()
        pos = torch.arange(n, device=s["x"].device)[None, :]
        window = (pos >= start[:, None]) & (pos < (start + length)[:, None])
        delta = s["x_adv"] - s["x"]
        if self.window == "noise":
            fresh = self.random_signs((b, n), s["x"]) * s["radius"]
        else:
            fresh = self.random_signs((b, 1), s["x"]) * s["radius"]
        trial = (s["x"] + torch.where(window, fresh, delta)).clamp(-1.0, 1.0)
        loss = self._margin_at(trial, s)
        better = (loss < s["loss"]) & ~fooled
        s["x_adv"] = torch.where(better[:, None], trial, s["x_adv"])
        s["loss"] = torch.where(better, loss, s["loss"])
        s["queries"] += ~fooled
        s["known"] = s["loss"] < 0
        return fooled | s["known"] | (s["queries"] >= self.n_queries)
