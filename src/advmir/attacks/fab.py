"""FAB: the Fast Adaptive Boundary attack in L-inf, untargeted (``fab``) and AutoAttack's FAB-T (``fab_t``).

FAB is a minimum-norm attack: it looks for the *smallest* perturbation that fools the model, not the
one of highest loss inside the budget. Each step linearises the model at the current point, projects
both the current point and the clean clip onto the nearest linearised decision boundary (in L-inf,
within the valid range), and moves to a convex combination of the two projections that leans
towards the clean clip when the current point has drifted far from it; once past the boundary it
steps back towards the clip (``beta``) and tries again from there. The smallest adversarial seen is
kept. It uses none of the loss's scale, so a model that saturates its softmax does not stop it.

The budget (``eps`` or ``snr_db``, as every L-inf attack of the suite) decides success: a clip counts
as fooled when FAB found an adversarial within its box. Internally the attack works in the units of
each clip's box, ``z = (x_adv - x) / eps_i`` (per sample with an envelope-shaped box): the box is
``|z| <= 1`` for every clip, the reference's scalar eps (the scale of the random restarts, the test
for success) is 1 for every clip, and L-inf norms of z are the share of the clip's budget used. With
a flat box this is the reference algorithm exactly, rescaled per clip; with an envelope (eps_i(t))
FAB minimises ``max_t |delta_t| / eps_i(t)``.

- ``fab``: each step uses the nearest of the C - 1 linearised boundaries between the label and
  another class (C - 1 backward passes: the Jacobian of the logit differences);
- ``fab_t``: AutoAttack's targeted version: one run per target among the clean clip's top other
  classes, each using only the boundary between the label and its target (one backward pass).
  Success stays untargeted.

Every run of a clip is one slot of the base's pool: a clip leaves as soon as a run ends with an
adversarial inside its box (a run always goes on to its last step, shrinking the perturbation).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from advmir.attacks.base import IterativeAttack

#: the floor of a projection's size (the reference's ``a0`` floor), in units of the clip's box
SIZE_FLOOR = 1e-8
#: the reference's guard against a zero dual norm in the distance to a boundary
DIST_FLOOR = 1e-12
#: the random start of every restart: uniform in the box of half the clip's budget, as the reference
START_SCALE = 0.5


def project_linf(
    t: torch.Tensor, w: torch.Tensor, b: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
) -> torch.Tensor:
    """The smallest L-inf step d (n, D) from points t (n, D) onto the hyperplanes ``w . z = b`` (w (n, D),
    b (n,)) with ``lo <= t + d <= hi`` (n, D), one row each.

    The reference's ``projection_linf`` (fra31/auto-attack, ``fab_projections.py``) for the box
    [lo, hi] of each coordinate instead of [0, 1]: with radius lambda every coordinate moves by
    ``min(lambda, room to its bound)`` in the direction that lowers (or raises) ``w . z``, and a
    binary search over the coordinates sorted by room finds the smallest lambda that reaches the
    hyperplane. Where the box cannot reach it, every coordinate goes to its bound (the closest
    the box allows). Coordinates with w = 0 never move. t must lie in the box.
    """
    sign = ((w * t).sum(dim=1) - b >= 0).to(w.dtype) * 2 - 1
    w = w * sign[:, None]
    b = b * sign
    moving = w != 0
    up = w < 0  # moving these up lowers w . z
    d = torch.where(moving, torch.where(up, hi, lo) - t, 0.0)
    room = torch.where(up, hi - t, t - lo)
    order = room.argsort(dim=1)

    b = b - (w * t).sum(dim=1)  # the change of w . z needed (<= 0)
    b0 = (w * d).sum(dim=1)  # the largest decrease the box allows
    desc = order.flip((1,))
    ws = w.gather(1, desc)
    s = ws.abs().cumsum(dim=1)
    sb = (-ws * d.gather(1, desc)).cumsum(dim=1) + b0[:, None]

    b2 = sb[:, -1] - s[:, -1] * room.gather(1, order[:, :1])[:, 0]
    everywhere = b - b2 > 0  # lambda below the smallest room: every coordinate moves by lambda
    search = (b - b0 > 0) & ~everywhere  # reachable, some coordinates stop at their bound
    n = w.shape[1]
    lb = torch.zeros(int(search.sum()), dtype=torch.long, device=w.device)
    ub = torch.full_like(lb, n - 1)
    order_, sb_, s_, room_, b_ = order[search], sb[search], s[search], room[search], b[search]
    for _ in range(math.ceil(math.log2(n)) if n > 1 else 0):
        mid = (lb + ub) // 2
        k = mid[:, None]
        at = order_.gather(1, n - 1 - k)
        reached = b_ - (sb_.gather(1, k) - s_.gather(1, k) * room_.gather(1, at))[:, 0] > 0
        lb = torch.where(reached, mid, lb)
        ub = torch.where(reached, ub, mid)

    tiny = torch.finfo(w.dtype).tiny
    direction = up.to(w.dtype) * 2 - 1
    if everywhere.any():
        lam = ((sb[everywhere, -1] - b[everywhere]) / s[everywhere, -1].clamp_min(tiny)).clamp_min(0)
        d[everywhere] = direction[everywhere] * lam[:, None]
    if search.any():
        lam = ((sb[search, lb] - b[search]) / s[search, lb].clamp_min(tiny)).clamp_min(0)[:, None]
        d[search] = torch.where(up[search], torch.minimum(lam, d[search]), torch.maximum(-lam, d[search]))
    return torch.where(moving, d, 0.0)


class FAB(IterativeAttack):
    r"""FAB, the Fast Adaptive Boundary attack, in 'Minimally distorted adversarial examples with a fast
    adaptive boundary attack' (Croce and Hein, 2020) [https://arxiv.org/abs/1907.02044], L-inf, after
    the authors' code (github.com/fra31/auto-attack, ``fab_base.py``).

    Distance measure: L-inf (a minimum-norm attack). In units of the clip's box, ``z = (x' - x) /
    eps_i``, each step takes the linearised boundary nearest to the current point z_k (the class
    k != y minimising ``|f_k - f_y| / ||grad(f_k - f_y)||_1``), the L-inf projections d_1 of z_k and
    d_2 of the clean clip (z = 0) onto it within the valid range [-1, 1] (:func:`project_linf`), and
    moves to::

        z_{k+1} = (1 - a) (z_k + eta d_1) + a eta d_2,   a = min(|d_1| / (|d_1| + |d_2|), alpha_max)

    (clipped to the valid range). When z_{k+1} fools the model it is recorded if it is the smallest
    so far, and the run goes on from ``beta z_{k+1}``. A run takes ``steps`` steps; the first starts
    at the clean clip, the next ``n_restarts - 1`` at random points of the box of half the budget.
    A clip leaves after the first run that found an adversarial within its box (``||z|| <= 1``),
    with the smallest such; else it returns the smallest adversarial it found (or, if none, its last
    point) projected onto the box (as :class:`~advmir.attacks.cw.CarliniWagnerL2`), whose success
    the base checks. A clip the model gets wrong clean leaves at once, unchanged. Untargeted only.

    Args:
        model (nn.Module): maps (B, T) waveforms in [-1, 1] to logits (B, C).
        eps, snr_db, envelope: the L-inf budget (exactly one of eps / snr_db); see
            :class:`advmir.attacks.base.Attack`. With an envelope, the norm minimised is the
            perturbation's size relative to the box at each sample.
        steps (int): steps per run (the reference's n_iter). Default 100.
        n_restarts (int): runs per clip, all but the first from a random start. Default 1.
        alpha_max (float): the largest weight of the clean clip's projection, in (0, 1). Default 0.1.
        eta (float): overshoot of the projections, >= 1. Default 1.05.
        beta (float): backward step towards the clip after a success, in (0, 1). Default 0.9.
        batch_size, seed: see :class:`advmir.attacks.base.Attack` (the seed drives the random
            restarts only: with one run FAB is deterministic).

    Shape:
        x: (B, T) float in [-1, 1]; y: (B,) int64; result.x_adv: (B, T); result.iterations: steps
        over all runs; result.queries: forward passes (two per step: the Jacobian's, whose C - 1
        backward passes are not counted, and the check of the new point).

    Example::
        >>> attack = FAB(model, snr_db=30, steps=100)
        >>> result = attack(x, y)   # result.snr_db: the smallest perturbation found, above 30 dB
    """

    name = "fab"
    norm = "linf"
    supports_targeted = False

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        steps: int = 100,
        n_restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        **common: Any,
    ) -> None:
        super().__init__(model, **common)
        self.steps = self._number("steps", steps, minimum=1, integer=True)
        self.n_restarts = self._number("n_restarts", n_restarts, minimum=1, integer=True)
        open_unit = {"minimum": 0.0, "maximum": 1.0, "exclusive_minimum": True, "exclusive_maximum": True}
        self.alpha_max = self._number("alpha_max", alpha_max, **open_unit)
        self.eta = self._number("eta", eta, minimum=1.0)
        self.beta = self._number("beta", beta, **open_unit)

    # ------------------------------------------------------------------------------------ runs
    def runs(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """What a subclass needs per clip to plan its runs: ``n_runs`` (b,) int64 (and any other
        (b, ...) tensors it keeps); for clips x (b, T) with labels y (b,)."""
        return {"n_runs": torch.full_like(y, self.n_restarts)}

    def aim(self, s: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The class (b,) whose boundary with the label each slot's run crosses, or None: the nearest."""
        return None

    @staticmethod
    def _box(x: torch.Tensor, radius: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The valid range [-1, 1] in units of the box, ``lo <= z <= hi`` (b, T); 0 where the box is empty."""
        open_ = radius > 0
        lo = torch.where(open_, (-1.0 - x) / radius, 0.0)
        hi = torch.where(open_, (1.0 - x) / radius, 0.0)
        return lo, hi

    @staticmethod
    def _point(x: torch.Tensor, radius: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return (x + radius * z).clamp(-1.0, 1.0)

    def _start_runs(self, s: dict[str, torch.Tensor], which: torch.Tensor) -> None:
        """(Re)start a run on the slots ``which`` (b,) bool: the clean clip for a target's first run,
        else a random point of the box of half the budget (``0.5 u / max|u|``, u uniform in
        [-1, 1]^T, as the reference)."""
        s["it"][which] = 0
        fresh = which & (s["run"] % self.n_restarts == 0)
        s["z"][fresh] = 0.0
        idx = (which & ~fresh).nonzero().flatten()
        if idx.numel():
            x, radius = s["x"][idx], s["radius"][idx]
            u = torch.rand(x.shape, generator=self._gen, device=x.device, dtype=x.dtype) * 2 - 1
            start = START_SCALE * u / u.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
            lo, hi = self._box(x, radius)
            s["z"][idx] = torch.minimum(torch.maximum(start, lo), hi)

    def init_state(
        self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, radius: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        b = x.shape[0]
        zeros = torch.zeros(b, dtype=torch.long, device=x.device)
        state = {
            "z": torch.zeros_like(x),
            "best_x": x.clone(),  # the smallest adversarial so far (over all runs)
            "best_norm": torch.full((b,), float("inf"), dtype=x.dtype, device=x.device),
            "it": zeros.clone(),
            "run": zeros.clone(),
            "x": x,
            "radius": radius,
            **self.runs(x, y),
        }
        self._start_runs(state, torch.ones(b, dtype=torch.bool, device=x.device))
        return state

    def final_adversarial(self, state: dict[str, torch.Tensor], done: torch.Tensor) -> torch.Tensor:
        """The smallest adversarial found, or the last point if none, projected onto the box (a no-op
        for an adversarial found within it)."""
        x, radius = state["x"][done], state["radius"][done]
        last = self._point(x, radius, state["z"][done])
        found = torch.isfinite(state["best_norm"][done])[:, None]
        return self.within_budget(x, torch.where(found, state["best_x"][done], last) - x, radius)

    # ------------------------------------------------------------------------------ a step
    def boundary(
        self, x_eval: torch.Tensor, y: torch.Tensor, aim: torch.Tensor | None, radius: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits (b, C) at x_eval (b, T), and the linearised boundary each slot steps to: the logit
        difference ``f_k - f_y`` (b,) and its gradient (b, T) in units of the box (the gradient in x
        times the radius). k is ``aim`` when given, else the class nearest in L-inf (smallest
        ``|f_k - f_y| / ||grad||_1``; the first on a tie, as the reference's argmin)."""
        x_eval = x_eval.detach().requires_grad_(True)
        rows = torch.arange(y.shape[0], device=y.device)
        with torch.enable_grad():
            logits = self.model(x_eval)
            own = logits[rows, y]
            if aim is None:
                n_classes = logits.shape[1]
                classes = torch.arange(n_classes, device=y.device).expand(y.shape[0], n_classes)
                others = classes[classes != y[:, None]].view(y.shape[0], n_classes - 1)
            else:
                others = aim[:, None]
            best_dist = torch.full_like(own, float("inf")).detach()
            best_df = torch.zeros_like(best_dist)
            best_w = torch.zeros_like(x_eval)
            for j in range(others.shape[1]):
                diff = logits[rows, others[:, j]] - own
                last = j == others.shape[1] - 1
                (grad,) = torch.autograd.grad(diff.sum(), x_eval, retain_graph=not last)
                w = grad * radius
                df = diff.detach()
                dist = df.abs() / (DIST_FLOOR + w.abs().sum(dim=1))
                nearer = dist < best_dist
                best_dist = torch.where(nearer, dist, best_dist)
                best_df = torch.where(nearer, df, best_df)
                best_w = torch.where(nearer[:, None], w, best_w)
        return logits.detach(), best_df, best_w

    @torch.no_grad()
    def step(self, s: dict[str, torch.Tensor]) -> torch.Tensor:
        """One FAB step on every slot (see the class docstring); a run's end starts the next run or
        ends the clip."""
        x, radius, y, z = s["x"], s["radius"], s["y"], s["z"]
        logits, df, w = self.boundary(self._point(x, radius, z), y, self.aim(s), radius)
        wrong_clean = (s["run"] == 0) & (s["it"] == 0) & (logits.argmax(dim=1) != y)

        lo, hi = self._box(x, radius)
        n = x.shape[0]
        b = (w * z).sum(dim=1) - df
        d = project_linf(
            torch.cat([z, torch.zeros_like(z)]), torch.cat([w, w]), torch.cat([b, b]),
            torch.cat([lo, lo]), torch.cat([hi, hi]),
        )  # fmt: skip
        d1, d2 = d[:n], d[n:]
        a1 = d1.abs().amax(dim=1).clamp_min(SIZE_FLOOR)
        a2 = d2.abs().amax(dim=1).clamp_min(SIZE_FLOOR)
        alpha = (a1 / (a1 + a2)).clamp(0.0, self.alpha_max)[:, None]
        moved = (z + self.eta * d1) * (1 - alpha) + self.eta * d2 * alpha
        moved = torch.minimum(torch.maximum(moved, lo), hi)

        x_new = self._point(x, radius, moved)
        fooled = self.model(x_new).argmax(dim=1) != y
        size = moved.abs().amax(dim=1)
        smaller = fooled & (size < s["best_norm"]) & ~wrong_clean
        s["best_x"] = torch.where(smaller[:, None], x_new, s["best_x"])
        s["best_norm"] = torch.where(smaller, size, s["best_norm"])
        s["best_x"] = torch.where(wrong_clean[:, None], x, s["best_x"])
        s["best_norm"] = torch.where(wrong_clean, torch.zeros_like(size), s["best_norm"])
        moved = torch.where(fooled[:, None], self.beta * moved, moved)

        step = ~wrong_clean
        s["z"] = torch.where(step[:, None], moved, z)
        s["it"] += step
        s["iters"] += step
        s["queries"] += 1 + step.long()
        run_over = s["it"] >= self.steps
        s["run"] += run_over
        within = s["best_norm"] <= 1.0
        done = wrong_clean | (run_over & (within | (s["run"] >= s["n_runs"])))
        restart = run_over & ~done
        if restart.any():
            self._start_runs(s, restart)
        return done


class FABT(FAB):
    r"""FAB-T, AutoAttack's targeted FAB, in 'Reliable evaluation of adversarial robustness with an
    ensemble of diverse parameter-free attacks' (Croce and Hein, 2020) [https://arxiv.org/abs/2003.01690]
    after 'Minimally distorted adversarial examples with a fast adaptive boundary attack' (Croce and
    Hein, 2020) [https://arxiv.org/abs/1907.02044]: the untargeted attack AutoAttack's standard
    version runs as targeted ones.

    Distance measure: L-inf (a minimum-norm attack). For each of the ``n_target_classes`` classes the
    model ranks highest on the clean clip after the label (capped at C - 1), ``n_restarts`` runs of
    :class:`FAB` step to the linearised boundary between the label and that target only (one backward
    pass a step instead of C - 1), targets in order of rank as the reference code. Success is
    untargeted: a clip leaves after the first run that found any misclassified point within its box.

    Args:
        n_target_classes (int): target classes tried per clip, capped at C - 1. Default 9.
        eps, snr_db, envelope, steps, n_restarts, alpha_max, eta, beta, batch_size, seed: see
            :class:`FAB`.

    Shape:
        x: (B, T) float in [-1, 1]; y: (B,) int64; result.x_adv: (B, T); result.queries counts the
        clean forward pass that ranks the targets too.

    Example::
        >>> attack = FABT(model, snr_db=30, steps=100, n_target_classes=9)
        >>> result = attack(x, y)
    """

    name = "fab_t"

    def __init__(self, model: nn.Module | None = None, *, n_target_classes: int = 9, **fab: Any) -> None:
        super().__init__(model, **fab)
        self.n_target_classes = self._number("n_target_classes", n_target_classes, minimum=1, integer=True)

    @torch.no_grad()
    def runs(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The targets (b, K) of each clip x (b, T), K = min(n_target_classes, C - 1): the other classes
        in decreasing order of the clean logits; ``n_runs`` = K * n_restarts; one query spent."""
        logits = self.model(x)
        k = min(self.n_target_classes, logits.shape[1] - 1)
        ranking = logits.scatter(1, y[:, None], float("-inf")).argsort(dim=1, descending=True)[:, :k]
        ones = torch.ones_like(y)
        return {"targets": ranking, "n_runs": ones * k * self.n_restarts, "queries": ones}

    def aim(self, s: dict[str, torch.Tensor]) -> torch.Tensor:
        """The current run's target (b,): runs go target by target, ``n_restarts`` per target."""
        which = (s["run"] // self.n_restarts).clamp(max=s["targets"].shape[1] - 1)
        return s["targets"].gather(1, which[:, None])[:, 0]
