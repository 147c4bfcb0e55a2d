"""The shared base of every attack: model mode, the valid range [-1, 1], batching, targets, early stopping.

A subclass writes only its step. Two kinds:

- :class:`Attack`: one-shot attacks (FGSM, the universal perturbation) override ``_craft_batch``.
- :class:`IterativeAttack`: attacks that iterate per example override ``init_state`` and ``step``.
  The base runs them on a *pool*: a batch of ``batch_size`` slots, each holding one example and its
  state. After every step, examples that are done (they fool the model already, or used up their
  steps or queries) leave the pool and pending examples from the queue take their slots, so the
  batch stays full and no compute is spent on examples that already succeeded.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from advmir.attacks.budgets import Budget, perturbation_metrics
from advmir.attacks.params import AttackParamError, check_bool, check_choice, check_number
from advmir.attacks.scoring import fooled

log = logging.getLogger(__name__)

TARGET_MODES = ("random", "least_likely", "map")
#: Every budget parameter (see :class:`advmir.attacks.budgets.Budget`); an attack takes those of its
#: ``budget_params``.
BUDGET_PARAMS = ("eps", "snr_db", "envelope")


@dataclass
class AttackResult:
    """What an attack returns for a batch of B clips (tensors on the device of the input).

    Attributes:
        x_adv: adversarial clips in [-1, 1], shape (B, T).
        target: target class per clip, -1 when untargeted, shape (B,), int64.
        success: the *crafting* model's prediction on ``x_adv`` is the target (targeted) or not the
            label (untargeted), shape (B,), bool. It ignores whether the clean clip was right.
        iterations: gradient steps spent per clip, shape (B,), int64.
        queries: model queries (forward passes) per clip, shape (B,), int64.
        seconds: wall time per clip (a step's time shared by the clips in the batch), shape (B,).
        snr_db, linf, l2: perturbation metrics per clip, shape (B,), float64 (see budgets.py).
    """

    x_adv: torch.Tensor
    target: torch.Tensor
    success: torch.Tensor
    iterations: torch.Tensor
    queries: torch.Tensor
    seconds: torch.Tensor
    snr_db: torch.Tensor
    linf: torch.Tensor
    l2: torch.Tensor

    def __len__(self) -> int:
        return int(self.x_adv.shape[0])

    def cpu(self) -> AttackResult:
        return AttackResult(**{f.name: getattr(self, f.name).detach().cpu() for f in fields(self)})


@contextlib.contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with frozen parameters; restore every module's mode and flags after."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in flags:
            p.requires_grad_(flag)


class ZeroOne(nn.Module):
    """A model on [-1, 1] waveforms seen in the [0, 1] input range of torchattacks (and the image
    literature), to compare attacks with theirs: x01 (B, T) (or (B, ...), flattened) ->
    ``model(2 * x01 - 1)``, logits (B, C). Budgets and steps halve in that range (eps / 2, alpha / 2).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        # torchattacks restores the wrapper's mode afterwards: it must be the model's own (eval)
        self.train(model.training)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.model(2 * x01.flatten(1) - 1)


class Attack:
    """Base of every attack.

    Budget args (keywords; an attack takes those of its ``budget_params``, in its ``norm``):
        eps (float | None): absolute budget, the same radius for every clip (full scale 1.0). Default None.
        snr_db (float | None): per-clip budget in dB: the L2 ball of radius ||x_i|| 10^(-snr_db/20), or
            the L-inf box of half-width eps_i = rms(x_i) 10^(-snr_db/20). Default None. Exactly one of
            eps / snr_db, or neither (no budget) where ``budget_required`` is False.
        envelope (float): shape of the L-inf box with snr_db, from 0 (flat, eps_i = rms(x_i)
            10^(-snr_db/20)) to 1 (follows the clip's local loudness); see budgets.py. Default 0.0.

    Common args (every attack takes them as keywords):
        targeted (str | None): None for untargeted, or how to pick targets: ``"random"`` (uniform over the
            other classes), ``"least_likely"`` (the class the model finds least likely on the clean clip),
            ``"map"`` (``target_map[label]``). Default None.
        target_map (dict[int, int] | None): label index -> target index, for ``targeted="map"``.
        batch_size (int): clips per forward pass. Default 64.
        seed (int): seeds random starts, random targets and random search. Default 0.

    Calling an attack: ``attack(x, y)`` with x (B, T) float in [-1, 1] and y (B,) int64 labels returns an
    :class:`AttackResult`. ``x`` may be longer than ``batch_size``: the base batches it.
    """

    name: ClassVar[str] = "attack"
    norm: ClassVar[str] = "linf"
    supports_targeted: ClassVar[bool] = True
    #: the budget parameters the attack takes (of BUDGET_PARAMS), and whether a budget must be given
    budget_params: ClassVar[tuple[str, ...]] = BUDGET_PARAMS
    budget_required: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        eps: float | None = None,
        snr_db: float | None = None,
        envelope: float = 0.0,
        targeted: str | None = None,
        target_map: dict[int, int] | None = None,
        batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        self.model = model
        if targeted is False:
            targeted = None
        if targeted is not None:
            if not self.supports_targeted:
                raise AttackParamError(
                    f"{self.name}: parameter 'targeted' is not supported: {self.name} is untargeted only "
                    f"(got targeted={targeted!r}); remove it or choose another attack"
                )
            check_choice(self.name, "targeted", targeted, TARGET_MODES)
        self.targeted: str | None = targeted
        self.target_map = self._check_target_map(target_map)
        self.batch_size = int(check_number(self.name, "batch_size", batch_size, minimum=1, integer=True))
        self.seed = int(check_number(self.name, "seed", seed, minimum=0, integer=True))
        self.budget: Budget | None = self.make_budget(eps, snr_db, envelope)
        # Called with the number of clips just finished (a progress bar's update), or None.
        self.on_clips_done: Callable[[int], None] | None = None
        # Code-only hook (not a config parameter): a per-clip objective ``(logits (b, C), y (b,),
        # t (b,)) -> (b,)`` ascended instead of :meth:`loss`, e.g. TRADES' KL to the clean prediction
        # (advmir.defenses). ``y`` is whatever the caller passed as labels.
        self.loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    # ----------------------------------------------------------------------------------------- checks
    def _check_target_map(self, target_map: Any) -> dict[int, int] | None:
        if self.targeted != "map":
            if target_map is not None:
                raise AttackParamError(
                    f"{self.name}: parameter 'target_map' is only used with targeted='map' "
                    f"(targeted is {self.targeted!r})"
                )
            return None
        if not isinstance(target_map, dict) or not target_map:
            raise AttackParamError(
                f"{self.name}: targeted='map' needs parameter 'target_map', a non-empty mapping "
                f"label -> target, got {target_map!r}"
            )
        clean: dict[int, int] = {}
        for key, value in target_map.items():
            try:
                k, v = int(key), int(value)
            except (TypeError, ValueError):
                raise AttackParamError(
                    f"{self.name}: parameter 'target_map' must map class indices to class indices "
                    f"(names are resolved by the CLI), got {key!r}: {value!r}"
                ) from None
            if k < 0 or v < 0 or k == v:
                raise AttackParamError(
                    f"{self.name}: parameter 'target_map' entry {key!r}: {value!r} must map a class to a "
                    "different, non-negative class"
                )
            clean[k] = v
        return clean

    def make_budget(self, eps: Any, snr_db: Any, envelope: Any) -> Budget | None:
        """The checked budget in the attack's ``norm`` (an attack that takes ``norm`` as a parameter sets
        it before calling the base's ``__init__``); None when none is given and ``budget_required`` is
        False. Called by the base's ``__init__``."""
        return Budget.create(
            self.name, self.norm, eps=eps, snr_db=snr_db, required=self.budget_required, envelope=envelope
        )

    def _number(self, param: str, value: Any, **kwargs: Any) -> Any:
        return check_number(self.name, param, value, **kwargs)

    def _bool(self, param: str, value: Any) -> bool:
        return check_bool(self.name, param, value)

    def _choice(self, param: str, value: Any, choices: tuple[str, ...]) -> str:
        return check_choice(self.name, param, value, choices)

    def describe(self) -> dict[str, Any]:
        """The attack's resolved parameters (for attack.json)."""
        out: dict[str, Any] = {"name": self.name, "norm": self.norm}
        for key, value in vars(self).items():
            if key in {"model", "budget", "loss_fn"} or key.startswith("_"):
                continue
            if isinstance(value, (bool, int, float, str, type(None), dict, list, tuple)):
                out[key] = value
        if self.budget is not None:
            out["budget"] = self.budget.as_dict()
        return out

    # ------------------------------------------------------------------------------------ utilities
    @property
    def device(self) -> torch.device:
        try:
            return next(self.model.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    def _require_model(self) -> nn.Module:
        if self.model is None:
            raise RuntimeError(f"{self.name}: no model; pass it to the constructor or set attack.model")
        return self.model

    @torch.no_grad()
    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) of the crafting model on clips x (B, T), in batches, without gradients."""
        outs = [self.model(x[i : i + self.batch_size]) for i in range(0, x.shape[0], self.batch_size)]
        return torch.cat(outs) if outs else x.new_zeros((0, 0))

    def target_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) that random and least-likely targets are chosen from: the crafting model's
        (an ensemble attack combines its members')."""
        return self.predict_logits(x)

    def choose_targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Targets (B,) for clips x (B, T) with labels y (B,); -1 everywhere when untargeted."""
        if self.targeted is None:
            return torch.full_like(y, -1)
        if self.targeted == "map":
            missing = sorted({int(v) for v in y.tolist()} - set(self.target_map))
            if missing:
                raise AttackParamError(
                    f"{self.name}: parameter 'target_map' has no target for label(s) {missing}; "
                    "map every label of the evaluation set"
                )
            return torch.tensor([self.target_map[int(v)] for v in y.tolist()], dtype=y.dtype, device=y.device)
        logits = self.target_logits(x)
        if self.targeted == "least_likely":
            return logits.argmin(dim=1).to(y.dtype)
        n_classes = logits.shape[1]
        gen = torch.Generator().manual_seed(self.seed + 1)
        shift = torch.randint(1, n_classes, (y.shape[0],), generator=gen).to(y.device)
        return (y + shift) % n_classes

    def loss(self, logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-clip loss (B,) to ascend: cross-entropy on the label, or minus that on the target."""
        if self.targeted is None:
            return F.cross_entropy(logits, y, reduction="none")
        return -F.cross_entropy(logits, t, reduction="none")

    def ascent_loss(self, logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-clip value (B,) that gradient attacks ascend: ``loss_fn`` when set, else :meth:`loss`."""
        return self.loss_fn(logits, y, t) if self.loss_fn is not None else self.loss(logits, y, t)

    def is_success(self, logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(B,) bool: the prediction is the target (targeted) or not the label (untargeted); the rule
        of :func:`advmir.attacks.scoring.fooled` (targets are -1 exactly when untargeted)."""
        return fooled(logits.argmax(dim=1), y, t)

    def margin(self, logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(B,) logit margin, negative exactly when the attack succeeds (CW's f6 before clamping)."""
        cls = t if self.targeted is not None else y
        own = logits.gather(1, cls[:, None])[:, 0]
        others = logits.scatter(1, cls[:, None], float("-inf")).amax(dim=1)
        return others - own if self.targeted is not None else own - others

    def _generator(self, device: torch.device) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(self.seed)

    def random_signs(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """Independent +-1 of ``shape`` (e.g. (B, T) or (B, 1)), of the dtype and device of ``like``,
        from the attack's generator."""
        bits = torch.randint(0, 2, shape, generator=self._gen, device=like.device)
        return bits.to(like.dtype) * 2 - 1

    def within_budget(
        self, x: torch.Tensor, delta: torch.Tensor, radius: torch.Tensor | None
    ) -> torch.Tensor:
        """Clips x (B, T) plus perturbations delta (B, T) projected onto the budget's ball of ``radius``
        ((B, 1) or (B, T)) when there is a budget, clipped to [-1, 1]: (B, T)."""
        if self.budget is not None:
            delta = self.budget.project(delta, radius)
        return (x + delta).clamp(-1.0, 1.0)

    # ------------------------------------------------------------------------------------- calling
    def __call__(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> AttackResult:
        """Attack clips x (B, T) in [-1, 1] with labels y (B,); optional explicit targets (B,)."""
        model = self._require_model()
        out_device = x.device
        x, y = self._checked_inputs(x, y)
        with attack_mode(model):
            t, x_adv, iterations, queries, seconds, known = self._run(x, y, target)
            success = known.clone()
            todo = torch.nonzero(~known).flatten()
            if todo.numel():
                t0 = time.perf_counter()
                logits = self.predict_logits(x_adv[todo])
                success[todo] = self.is_success(logits, y[todo], t[todo])
                seconds[todo] += (time.perf_counter() - t0) / todo.numel()
        metrics = perturbation_metrics(x, x_adv)
        to = out_device
        return AttackResult(
            x_adv=x_adv.to(to),
            target=t.to(to),
            success=success.to(to),
            iterations=iterations.to(to),
            queries=queries.to(to),
            seconds=seconds.to(to),
            snr_db=metrics["snr_db"].to(to),
            linf=metrics["linf"].to(to),
            l2=metrics["l2"].to(to),
        )

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Only the adversarial clips (B, T) of clips x (B, T) with labels y (B,), on x's device.

        The same crafting as calling the attack, without its scoring: no final forward pass for
        success, no perturbation metrics (a training loop that crafts every batch pays neither).
        """
        model = self._require_model()
        out_device = x.device
        x, y = self._checked_inputs(x, y)
        with attack_mode(model):
            return self._run(x, y, None)[1].to(out_device)

    def _checked_inputs(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips x (B, T) and labels y (B,) checked and moved (detached) to the model's device."""
        if x.ndim != 2:
            raise ValueError(f"{self.name}: clips must have shape (B, T), got {tuple(x.shape)}")
        if y.shape != (x.shape[0],):
            raise ValueError(f"{self.name}: labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        if x.numel() and float(x.detach().abs().max()) > 1.0:
            raise ValueError(f"{self.name}: clips must lie in [-1, 1]; peak is {float(x.abs().max()):.4g}")
        device = self.device
        return x.detach().to(device), y.detach().to(device=device, dtype=torch.long)

    def _run(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Targets and crafting, in attack mode: t (B,), x_adv (B, T) in [-1, 1], iterations,
        queries, seconds and known success (B,) (see :meth:`_craft`)."""
        self._gen = self._generator(x.device)
        if target is None:
            t = self.choose_targets(x, y)
        else:
            if self.targeted is None:
                raise ValueError(f"{self.name}: targets were given but the attack is untargeted")
            t = target.detach().to(device=x.device, dtype=torch.long)
        radius = self.budget.radius(x) if self.budget is not None else None
        x_adv, iterations, queries, seconds, known = self._craft(x, y, t, radius)
        return t, x_adv.clamp(-1.0, 1.0), iterations, queries, seconds, known

    def _report_done(self, n: int) -> None:
        if self.on_clips_done is not None:
            self.on_clips_done(n)

    def _craft(
        self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, radius: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return x_adv (B, T), iterations (B,), queries (B,), seconds (B,), known success (B,) bool."""
        n = x.shape[0]
        x_adv = torch.empty_like(x)
        iterations = torch.zeros(n, dtype=torch.long, device=x.device)
        queries = torch.zeros(n, dtype=torch.long, device=x.device)
        seconds = torch.zeros(n, dtype=torch.float64, device=x.device)
        for i in range(0, n, self.batch_size):
            sl = slice(i, i + self.batch_size)
            t0 = time.perf_counter()
            r = radius[sl] if radius is not None else None
            x_adv[sl], iterations[sl], queries[sl] = self._craft_batch(x[sl], y[sl], t[sl], r)
            seconds[sl] = (time.perf_counter() - t0) / x[sl].shape[0]
            self._report_done(x[sl].shape[0])
        return x_adv, iterations, queries, seconds, torch.zeros(n, dtype=torch.bool, device=x.device)

    def _craft_batch(
        self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, radius: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | int, torch.Tensor | int]:
        """One-shot attacks: return x_adv (b, T), iterations and queries (b,) or scalars."""
        raise NotImplementedError

    def input_gradient(
        self, x_adv: torch.Tensor, y: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, C) at x_adv (B, T) and the gradient (B, T) of the per-clip loss w.r.t. x_adv."""
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self.model(x_adv)
            (grad,) = torch.autograd.grad(self.ascent_loss(logits, y, t).sum(), x_adv)
        return logits.detach(), grad


class IterativeAttack(Attack):
    """Base of attacks that iterate per example, run on a pool that stays full (see module docstring).

    A subclass implements ``init_state`` and ``step``. The state is a dict of tensors whose first
    dimension is the slot; the base adds ``x``, ``y``, ``t``, ``radius`` (the clip's constants; the
    radius is (b, 1), or (b, T) for an L-inf box shaped by the clip's envelope),
    ``iters`` and ``queries`` (int64 counters the step increments) and ``known`` (bool: the step saw
    the clip's current ``x_adv`` fool the crafting model).
    """

    def init_state(
        self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, radius: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Start state of b new clips x (b, T); must hold ``x_adv`` (b, T)."""
        raise NotImplementedError

    def step(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """Advance every slot in place by one step; return done (b,) bool."""
        raise NotImplementedError

    def final_adversarial(self, state: dict[str, torch.Tensor], done: torch.Tensor) -> torch.Tensor:
        """The adversarial clips (d, T) of the slots leaving the pool."""
        return state["x_adv"][done]

    @staticmethod
    def count_step(state: dict[str, torch.Tensor], fooled: torch.Tensor, max_iters: int) -> torch.Tensor:
        """Book a gradient step taken by every slot: an iteration for the slots not yet ``fooled`` (b,)
        bool (they moved), a query for all, ``fooled`` as known. Returns done (b,): fooled, or out of
        iterations."""
        state["iters"] += ~fooled
        state["queries"] += 1
        state["known"] = fooled
        return fooled | (state["iters"] >= max_iters)

    def _craft(
        self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, radius: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        n, device = x.shape[0], x.device
        if radius is None:
            radius = torch.full((n, 1), float("inf"), dtype=x.dtype, device=device)
        x_adv = x.clone()
        iterations = torch.zeros(n, dtype=torch.long, device=device)
        queries = torch.zeros(n, dtype=torch.long, device=device)
        seconds = torch.zeros(n, dtype=torch.float64, device=device)
        known = torch.zeros(n, dtype=torch.bool, device=device)
        state: dict[str, torch.Tensor] | None = None
        pending = 0
        while True:
            active = 0 if state is None else state["idx"].shape[0]
            if active < self.batch_size and pending < n:
                t0 = time.perf_counter()
                take = torch.arange(pending, min(n, pending + self.batch_size - active), device=device)
                pending += take.numel()
                new = self.init_state(x[take], y[take], t[take], radius[take])
                new.update(
                    idx=take,
                    x=x[take],
                    y=y[take],
                    t=t[take],
                    radius=radius[take],
                    iters=new.get("iters", torch.zeros_like(take)),
                    queries=new.get("queries", torch.zeros_like(take)),
                    known=new.get("known", torch.zeros_like(take, dtype=torch.bool)),
                    secs=torch.full(
                        (take.numel(),),
                        (time.perf_counter() - t0) / take.numel(),
                        dtype=torch.float64,
                        device=device,
                    ),
                )
                state = new if state is None else {k: torch.cat([state[k], new[k]]) for k in state}
            if state is None or state["idx"].numel() == 0:
                break
            t0 = time.perf_counter()
            done = self.step(state)
            state["secs"] += (time.perf_counter() - t0) / done.numel()
            if done.any():
                idx = state["idx"][done]
                x_adv[idx] = self.final_adversarial(state, done)
                iterations[idx] = state["iters"][done]
                queries[idx] = state["queries"][done]
                seconds[idx] = state["secs"][done]
                known[idx] = state["known"][done]
                self._report_done(idx.numel())
                keep = ~done
                state = {k: v[keep] for k, v in state.items()}
        return x_adv, iterations, queries, seconds, known


def unit_l2(v: torch.Tensor) -> torch.Tensor:
    """Each row of v (B, T) divided by its L2 norm (floored at 1e-20, so a zero row stays zero): (B, T)."""
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-20)


def as_float_tensor(audio: np.ndarray | torch.Tensor) -> torch.Tensor:
    """int16 or float audio (numpy or torch) -> float32 tensor in [-1, 1]."""
    if isinstance(audio, torch.Tensor):
        return audio.float() if audio.dtype != torch.int16 else audio.float() / 32768.0
    audio = np.asarray(audio)
    if audio.dtype == np.int16:
        return torch.from_numpy(audio.astype(np.float32) / 32768.0)
    return torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
