"""APGD: the parameter-free L-inf attacks of AutoAttack (APGD-CE, APGD-DLR, APGD-T).

Auto-PGD is PGD with momentum whose step size needs no tuning: it starts at twice the budget and is
halved, with a restart from the best point so far, at checkpoints where the loss stopped rising.
That makes it the reliable white-box evaluation the defenses of issue 13 are measured with: a
defended model that holds against PGD at a hand-picked step size but not against APGD was only
hard to optimise against, not robust.

The three attacks differ only in the loss climbed:

- ``apgd_ce``: cross-entropy (on the label; minus that on the target when targeted);
- ``apgd_dlr``: the Difference of Logits Ratio, ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)``
  (``pi`` sorts the logits in decreasing order), invariant to shifts and scales of the logits, so a
  defense that saturates the softmax (the usual gradient masking) does not flatten it;
- ``apgd_t``: the targeted DLR, ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``, run once per target
  ``t`` among the clean clip's top other classes; a clip succeeds (untargeted) if any run fools the
  model.

Every run of a clip is one slot of the base's pool, so a clip that succeeds stops at once and a
pending clip takes its place.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from advmir.attacks.base import IterativeAttack
from advmir.attacks.params import AttackParamError

MOMENTUM = 0.75  # the weight alpha of the new step against the last one, fixed by the paper
FIRST_STEP = 2.0  # the initial step size, in units of the clip's radius


def checkpoints(steps: int) -> tuple[int, ...]:
    """The paper's checkpoints ``w_j = ceil(p_j * steps)`` in (0, steps], increasing.

    ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``: 22 % of the run
    to the first, then intervals 3 % shorter each, down to 6 %. Computed in hundredths so no float
    rounding moves a checkpoint (at steps = 100 they are the reference code's 22, 41, 57, ..., 99).
    """
    previous, current = 0, 22
    out: list[int] = []
    while True:
        w = -(-current * steps // 100)
        if w > steps:
            return tuple(out)
        if not out or w > out[-1]:
            out.append(w)
        previous, current = current, current + max(current - previous - 3, 6)


def _sorted_logits(logits: torch.Tensor, attack: str) -> torch.Tensor:
    if logits.shape[1] < 3:
        raise AttackParamError(
            f"{attack}: the DLR loss needs a model with at least 3 classes, this one has "
            f"{logits.shape[1]}; use apgd_ce"
        )
    return logits.sort(dim=1, descending=True).values


def dlr_loss(logits: torch.Tensor, y: torch.Tensor, attack: str = "apgd_dlr") -> torch.Tensor:
    """Untargeted DLR loss (B,) of logits (B, C), C >= 3, with labels y (B,): ``-(z_y - max_{i != y}
    z_i) / (z_pi1 - z_pi3)``; positive exactly when the clip fools the model."""
    z = _sorted_logits(logits, attack)
    own = logits.gather(1, y[:, None])[:, 0]
    others = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return -(own - others) / (z[:, 0] - z[:, 2] + 1e-12)


def targeted_dlr_loss(
    logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor, attack: str = "apgd_t"
) -> torch.Tensor:
    """Targeted DLR loss (B,) of logits (B, C), C >= 3, with labels y (B,) and targets t (B,):
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``.

    With 3 classes it is minus the cross-entropy on the target (the reference code's "ce-targeted"
    loss): the paper's loss needs a 4th class, and with z_pi3 in its place the denominator is the
    third class's distance below the top, which the attack can grow without limit instead of raising
    the target (on the 3-class toy model of the tests, random targets at 10 dB, 20 steps: 9 of 24
    clips reached their target, 24 with the cross-entropy).
    """
    z = _sorted_logits(logits, attack)
    if z.shape[1] < 4:
        return -F.cross_entropy(logits, t, reduction="none")
    own = logits.gather(1, y[:, None])[:, 0]
    target = logits.gather(1, t[:, None])[:, 0]
    return -(own - target) / (z[:, 0] - 0.5 * (z[:, 2] + z[:, 3]) + 1e-12)


class APGD(IterativeAttack):
    r"""Auto-PGD with the cross-entropy loss (APGD-CE), in 'Reliable evaluation of adversarial
    robustness with an ensemble of diverse parameter-free attacks' (Croce and Hein, 2020)
    [https://arxiv.org/abs/2003.01690], after the authors' code (github.com/fra31/auto-attack).

    Distance measure: L-inf. Each run starts at a random point of the box (``radius * u / max|u|``,
    u uniform in [-1, 1]^T, as the reference code) and takes ``steps`` steps::

        z = P(x_k + eta sign(grad_k));   x_{k+1} = P(x_k + a (z - x_k) + (1 - a) (x_k - x_{k-1}))

    with ``a = 1`` on the first step and 0.75 after, ``P`` the projection onto the clip's box and
    [-1, 1] (:meth:`~advmir.attacks.base.Attack.within_budget`), and ``eta = 2 eps_i`` at first. At
    each checkpoint (see :func:`checkpoints`) eta is halved and the run restarts from the best point
    so far if (1) the loss rose on fewer than ``rho`` of the steps since the last checkpoint, or (2)
    eta was not halved at the last checkpoint and the best loss has not risen since (not at the
    first checkpoint, as in the reference code). ``n_restarts`` runs per clip from fresh random
    starts; a clip stops as soon as it fools the model and keeps that example, else it keeps the
    point of highest loss over all its runs.

    Args:
        model (nn.Module): maps (B, T) waveforms in [-1, 1] to logits (B, C).
        eps, snr_db, envelope: the L-inf budget (exactly one of eps / snr_db); see
            :class:`advmir.attacks.base.Attack`.
        steps (int): steps per run. Default 100.
        n_restarts (int): runs per clip (each from a new random start). Default 1.
        rho (float): condition (1)'s fraction, in (0, 1). Default 0.75.
        targeted, target_map, batch_size, seed: see :class:`advmir.attacks.base.Attack`.

    Shape:
        x: (B, T) float in [-1, 1]; y: (B,) int64; result.x_adv: (B, T); result.iterations: steps
        taken over all runs; result.queries: gradient evaluations (forward and backward).

    Example::
        >>> attack = APGD(model, snr_db=30, steps=100)
        >>> result = attack(x, y)
    """

    name = "apgd_ce"
    norm = "linf"
    #: the loss climbed: "ce" or "dlr"
    objective: ClassVar[str] = "ce"

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        steps: int = 100,
        n_restarts: int = 1,
        rho: float = 0.75,
        **common: Any,
    ) -> None:
        super().__init__(model, **common)
        self.steps = self._number("steps", steps, minimum=1, integer=True)
        self.n_restarts = self._number("n_restarts", n_restarts, minimum=1, integer=True)
        self.rho = self._number(
            "rho", rho, minimum=0.0, maximum=1.0, exclusive_minimum=True, exclusive_maximum=True
        )
        self._is_check = torch.zeros(self.steps + 1, dtype=torch.bool)
        self._is_check[list(checkpoints(self.steps))] = True

    def loss(self, logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-clip loss (B,) to climb: cross-entropy (see Attack.loss) or DLR (targeted when t >= 0)."""
        if self.objective == "ce":
            return super().loss(logits, y, t)
        if self.targeted is None:
            return dlr_loss(logits, y, self.name)
        return targeted_dlr_loss(logits, y, t, self.name)

    # ------------------------------------------------------------------------------------ runs
    def runs(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """What a subclass needs per clip to plan its runs: ``n_runs`` (b,) int64 (and any other
        (b, ...) tensors it keeps); for clips x (b, T) with labels y (b,)."""
        return {"n_runs": torch.full_like(y, self.n_restarts)}

    def loss_target(self, s: dict[str, torch.Tensor]) -> torch.Tensor:
        """The class (b,) each slot's loss aims at in its current run: the attack's target (-1 if none)."""
        return s["t"]

    def _random_start(self, x: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
        u = torch.rand(x.shape, generator=self._gen, device=x.device, dtype=x.dtype) * 2 - 1
        return self.within_budget(x, radius * u / u.abs().amax(dim=1, keepdim=True).clamp_min(1e-12), radius)

    def _start_runs(self, s: dict[str, torch.Tensor], which: torch.Tensor) -> None:
        """(Re)start a run on the slots ``which`` (b,) bool: a random start and a fresh step size."""
        idx = which.nonzero().flatten()
        start = self._random_start(s["x"][idx], s["radius"][idx])
        s["x_adv"][idx] = start
        s["x_prev"][idx] = start
        s["it"][idx] = 0
        s["eta"][idx] = FIRST_STEP
        s["increases"][idx] = 0
        s["last_check"][idx] = 0
        s["reduced"][idx] = True  # condition (2) cannot hold at the first checkpoint

    def init_state(
        self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, radius: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        b = x.shape[0]
        zeros = torch.zeros(b, dtype=torch.long, device=x.device)
        lowest = torch.full((b,), float("-inf"), dtype=x.dtype, device=x.device)
        state = {
            "x_adv": x.clone(),
            "x_prev": x.clone(),
            "x_best": x.clone(),
            "grad_best": torch.zeros_like(x),
            "loss_best": lowest.clone(),
            "best_adv": x.clone(),  # the highest-loss point over all runs
            "best_adv_loss": lowest.clone(),
            "eta": torch.full((b, 1), FIRST_STEP, dtype=x.dtype, device=x.device),
            "it": zeros.clone(),
            "run": zeros.clone(),
            "increases": zeros.clone(),
            "last_check": zeros.clone(),
            "loss_prev": lowest.clone(),
            "loss_at_check": lowest.clone(),
            "reduced": torch.ones(b, dtype=torch.bool, device=x.device),
            "x": x,
            "radius": radius,
            **self.runs(x, y),
        }
        self._start_runs(state, torch.ones(b, dtype=torch.bool, device=x.device))
        return state

    def final_adversarial(self, state: dict[str, torch.Tensor], done: torch.Tensor) -> torch.Tensor:
        """The example that fooled the model, or, for a clip that never did, its highest-loss point."""
        return torch.where(state["known"][:, None], state["x_adv"], state["best_adv"])[done]

    # ------------------------------------------------------------------------------------ a step
    def step(self, s: dict[str, torch.Tensor]) -> torch.Tensor:
        """Evaluate every slot's point (loss, gradient, success), update the run's best point and step
        size at a checkpoint, then take the momentum step (or start the next run)."""
        aim = self.loss_target(s)
        logits, grad = self.input_gradient(s["x_adv"], s["y"], aim)
        loss = self.loss(logits, s["y"], aim)
        fooled = self.is_success(logits, s["y"], s["t"])
        s["queries"] += 1
        s["known"] = fooled
        first = s["it"] == 0
        x_adv = s["x_adv"]

        s["increases"] += ~first & (loss > s["loss_prev"])
        s["loss_prev"] = loss
        better = first | (loss > s["loss_best"])
        s["x_best"] = torch.where(better[:, None], x_adv, s["x_best"])
        s["grad_best"] = torch.where(better[:, None], grad, s["grad_best"])
        s["loss_best"] = torch.where(better, loss, s["loss_best"])
        s["loss_at_check"] = torch.where(first, loss, s["loss_at_check"])
        highest = loss > s["best_adv_loss"]
        s["best_adv"] = torch.where(highest[:, None], x_adv, s["best_adv"])
        s["best_adv_loss"] = torch.where(highest, loss, s["best_adv_loss"])

        check = self._is_check.to(x_adv.device)[s["it"]] & ~first & ~fooled
        if check.any():
            span = (s["it"] - s["last_check"]).to(loss.dtype)
            rarely_rose = s["increases"].to(loss.dtype) < self.rho * span
            stalled = ~s["reduced"] & (s["loss_at_check"] >= s["loss_best"])
            halve = check & (rarely_rose | stalled)
            s["eta"] = torch.where(halve[:, None], s["eta"] / 2, s["eta"])
            x_adv = torch.where(halve[:, None], s["x_best"], x_adv)
            grad = torch.where(halve[:, None], s["grad_best"], grad)
            s["reduced"] = torch.where(check, halve, s["reduced"])
            s["loss_at_check"] = torch.where(check, s["loss_best"], s["loss_at_check"])
            s["last_check"] = torch.where(check, s["it"], s["last_check"])
            s["increases"] = torch.where(check, torch.zeros_like(s["increases"]), s["increases"])

        run_over = ~fooled & (s["it"] >= self.steps)
        s["run"] += run_over
        done = fooled | (s["run"] >= s["n_runs"])
        move = ~done & ~run_over
        x, radius = s["x"], s["radius"]
        a = torch.full_like(loss, MOMENTUM).masked_fill(first, 1.0)[:, None]
        z = self.within_budget(x, x_adv + s["eta"] * radius * grad.sign() - x, radius)
        stepped = self.within_budget(x, x_adv + a * (z - x_adv) + (1 - a) * (x_adv - s["x_prev"]) - x, radius)
        s["x_prev"] = torch.where(move[:, None], x_adv, s["x_prev"])
        s["x_adv"] = torch.where(move[:, None], stepped, x_adv)
        s["it"] += move
        s["iters"] += move
        restart = run_over & ~done
        if restart.any():
            self._start_runs(s, restart)
        return done


class APGDDLR(APGD):
    r"""APGD on the DLR loss (APGD-DLR), in 'Reliable evaluation of adversarial robustness with an
    ensemble of diverse parameter-free attacks' (Croce and Hein, 2020) [https://arxiv.org/abs/2003.01690].

    Distance measure: L-inf. :class:`APGD` climbing the Difference of Logits Ratio
    ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` (logits sorted decreasingly by pi), or with a
    target (``targeted``) the targeted DLR ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``. Needs a
    model with at least 3 classes (with 3, the targeted loss is the targeted cross-entropy: see
    :func:`targeted_dlr_loss`).

    Args:
        eps, snr_db, envelope, steps, n_restarts, rho, targeted, target_map, batch_size, seed: see
            :class:`APGD`.

    Shape:
        x: (B, T) float in [-1, 1]; y: (B,) int64; result.x_adv: (B, T).

    Example::
        >>> attack = APGDDLR(model, snr_db=30, steps=100)
        >>> result = attack(x, y)
    """

    name = "apgd_dlr"
    objective = "dlr"


class APGDT(APGD):
    r"""Targeted APGD on the targeted DLR loss (APGD-T), in 'Reliable evaluation of adversarial
    robustness with an ensemble of diverse parameter-free attacks' (Croce and Hein, 2020)
    [https://arxiv.org/abs/2003.01690]: the untargeted attack AutoAttack runs as targeted ones.

    Distance measure: L-inf. For each of the ``n_target_classes`` classes the model ranks highest on
    the clean clip after the label (capped at C - 1), ``n_restarts`` runs of :class:`APGD` climb the
    targeted DLR loss ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` towards it, targets in order of
    rank as the reference code. Success is untargeted: the clip stops as soon as any run makes the
    prediction anything but the label. (The ranking leaves the label out: on a correctly classified
    clip that is the reference's 2nd, 3rd, ... class, and a misclassified one never aims at its label.)
    Needs at least 3 classes; with 3 the runs climb the targeted cross-entropy instead (see
    :func:`targeted_dlr_loss`).

    Args:
        n_target_classes (int): target classes tried per clip, capped at C - 1. Default 9.
        eps, snr_db, envelope, steps, n_restarts, rho, batch_size, seed: see :class:`APGD`.

    Shape:
        x: (B, T) float in [-1, 1]; y: (B,) int64; result.x_adv: (B, T); result.queries counts the
        clean forward pass that ranks the targets too.

    Example::
        >>> attack = APGDT(model, snr_db=30, steps=100, n_target_classes=9)
        >>> result = attack(x, y)
    """

    name = "apgd_t"
    objective = "dlr"
    supports_targeted = False

    def __init__(self, model: nn.Module | None = None, *, n_target_classes: int = 9, **apgd: Any) -> None:
        super().__init__(model, **apgd)
        self.n_target_classes = self._number("n_target_classes", n_target_classes, minimum=1, integer=True)

    def loss(self, logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Targeted DLR loss (B,) towards the run's target t (B,)."""
        return targeted_dlr_loss(logits, y, t, self.name)

    @torch.no_grad()
    def runs(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """The targets (b, K) of each clip x (b, T), K = min(n_target_classes, C - 1): the other classes
        in decreasing order of the clean logits; ``n_runs`` = K * n_restarts; one query spent."""
        logits = self.model(x)
        n_classes = logits.shape[1]
        if n_classes < 3:
            _sorted_logits(logits, self.name)  # raises, naming the attack
        k = min(self.n_target_classes, n_classes - 1)
        ranking = logits.scatter(1, y[:, None], float("-inf")).argsort(dim=1, descending=True)[:, :k]
        ones = torch.ones_like(y)
        return {"targets": ranking, "n_runs": ones * k * self.n_restarts, "queries": ones}

    def loss_target(self, s: dict[str, torch.Tensor]) -> torch.Tensor:
        """The current run's target (b,): runs go target by target, ``n_restarts`` per target."""
        which = (s["run"] // self.n_restarts).clamp(max=s["targets"].shape[1] - 1)
        return s["targets"].gather(1, which[:, None])[:, 0]
