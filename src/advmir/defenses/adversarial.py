"""Adversarial training: PGD-AT, fast FGSM-AT with its overfitting guard, and TRADES, as zoo training
modes; and Gaussian-noise training, the base model of randomized smoothing.

A mode is switched on by ``training["adversarial"]`` (later the ``defenses:`` config section), a dict
checked by :meth:`AdversarialConfig.from_dict`; absent, training is ordinary and bit-identical to the
zoo without this module. The Lightning module (:mod:`advmir.models.train`) calls only
:meth:`AdversarialTraining.training_loss` per batch and adds :meth:`AdversarialTraining.callbacks`;
every defense detail lives here, so a defended model is saved, loaded (``load_model``) and attacked
like any zoo model.

Modes (``mode``):

- ``pgd_at``: Madry et al. 2018, 'Towards Deep Learning Models Resistant to Adversarial Attacks'
  [https://arxiv.org/abs/1706.06083]. A share ``mix`` of each training batch (default 1.0: all of it)
  is replaced by PGD examples (random start, ``steps`` steps, no early stop) and the model is trained
  on cross-entropy over the batch.
- ``fast_at``: Wong, Rice and Kolter 2020, 'Fast is better than free: Revisiting adversarial
  training' [https://arxiv.org/abs/2001.03994], after locuslab/fast_adversarial (CIFAR10/
  train_fgsm.py): FGSM from a uniform random start in the box, step 1.25 eps, projected onto the
  box. That is exactly the attack stage's PGD with one step, a random start and ``rel_step`` 1.25,
  so it is built as such. The catastrophic-overfitting guard: after each epoch's training steps,
  the attack stage's PGD (``guard_steps`` steps, early stop, a fixed seed) on a fixed training batch
  (the first ``guard_clips`` clips the model trained on, default 128); when its robust accuracy
  falls more than ``guard_drop`` (absolute) below the best seen, training stops and the model's
  weights go back to the previous epoch's before that epoch is validated, so the collapsed weights
  are never checkpointed (the zoo then keeps its best validation epoch, as always, among the epochs
  before the collapse). The reference compares with the previous epoch on each epoch's first
  batch; here the batch is fixed and the bar is the best epoch, as the design asks.
- ``trades``: Zhang et al. 2019, 'Theoretically Principled Trade-off between Robustness and
  Accuracy' [https://arxiv.org/abs/1901.08573], after yaodongyu/TRADES: loss = CE(f(x), y) + beta
  KL(p(x) || p(x_adv)) (``nn.KLDivLoss(log p(x_adv), p(x))``, batch mean, as the reference; the
  cross-entropy is the zoo's, with its label smoothing). x_adv maximises that KL (the attack
  stage's PGD with the base's ``loss_fn`` hook; the reference's start is x + 0.001 N(0, 1), here
  PGD's uniform start in the box, since the KL's gradient vanishes at x).

- ``adv_aug``: adversarial examples as augmentation, for accuracy rather than robustness (question
  C3 of the project): each step trains on the clean batch and its adversarial copy,
  loss = CE(f(x), y) + ``weight`` CE(f(x_adv), y), at a small budget (the config's 45 dB), one FGSM
  step from a random start by default (``steps`` for PGD). With ``separate_bn`` (default) the
  adversarial clips go through auxiliary batch norms, AdvProp (Xie et al. 2020, 'Adversarial
  Examples Improve Image Recognition' [https://arxiv.org/abs/1911.09665]): every other weight is
  shared, the clean batch and validation, test and every later stage use the model's own batch
  norms, and the auxiliary ones (copies of the model's at the start, trained by the same optimiser)
  are dropped when training ends, so the checkpoint is an ordinary zoo model's. Examples are crafted
  against the auxiliary batch norms, as in AdvProp. Without ``separate_bn``, one set of batch norms
  sees both batches (adversarial training with a clean term, Goodfellow et al. 2015).

- ``gaussian``: the base model of randomized smoothing (Cohen, Rosenfeld and Kolter 2019,
  'Certified Adversarial Robustness via Randomized Smoothing' [https://arxiv.org/abs/1902.02918],
  after locuslab/smoothing, code/train.py): isotropic Gaussian noise of the fixed absolute standard
  deviation ``sigma`` is added to every training clip after the zoo's augmentation, and the model
  is trained on cross-entropy of the noisy batch. No attack, no budget; Cohen et al. train at the
  sigma they certify with (:mod:`advmir.defenses.smoothing`). The noisy clip is not clipped to
  [-1, 1], as the smoothed classifier does not clip its noisy copies either. Validation (early
  stopping and the kept epoch) runs under the same noise, drawn once per validation batch (every
  epoch sees the same noisy clips), because that is what the smoothed classifier asks of the model:
  on clean clips, which it never trains on, a first run on the default data stopped after 14 of 20
  epochs and kept the 10th (clean test accuracy 0.47 at sigma 0.05). The test scores of metrics.json stay
  on clean clips, as for every zoo model.

Budgets are the attack stage's (:class:`advmir.attacks.budgets.Budget`): per-clip ``snr_db`` (the
flat L-inf box / L2 ball of that SNR) or absolute ``eps``, in ``norm`` (``linf``, or ``l2`` for
pgd_at and trades). Step sizes follow PGD: ``rel_step`` (a fraction of each clip's radius; default
2.5 / steps, and 1.25 for fast_at) or an absolute ``alpha``, not both.

Batch norm: adversarial examples are crafted with the model in eval mode (the attack base's
``attack_mode``: running statistics, no dropout, frozen parameters, modes restored after), as the
attack stage crafts them; the update then runs in train mode on the adversarial (or mixed) batch.
The fast_adversarial and TRADES references craft in train mode and eval mode respectively; eval mode
keeps the crafting batch from moving the running statistics and makes training examples what the
attack stage would make against the same weights. The model's on-the-fly augmentation applies to
the clean batch before the attack.

Seeding: each batch's random start (gaussian: its noise) comes from a generator seeded from the
training seed and the batch's index, so the same seed gives the same weights.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advmir.attacks import PGD, build_attack
from advmir.defenses.settings import (  # noqa: F401 (MODES, DefenseConfigError re-exported)
    MODES,
    NOISE_MODES,
    AdversarialConfig,
    DefenseConfigError,
)

log = logging.getLogger(__name__)

VALIDATION_STREAM = 0x56414C  # gaussian's validation noise: a stream apart from the training batches'


class AdversarialTraining:
    """The adversarial part of each training step, for one model and one mode.

    Args:
        cfg: the checked mode.
        seed: the model's training seed (seeds every batch's random start and the guard's).
    """

    def __init__(self, cfg: AdversarialConfig, seed: int) -> None:
        self.cfg = cfg
        self.seed = int(seed)
        self.attack: PGD = None  # type: ignore[assignment]  (gaussian crafts nothing: no attack, no budget)
        if cfg.mode not in NOISE_MODES:
            self.attack = build_attack("pgd", cfg.attack_params())  # type: ignore[assignment]
        self.batches = 0
        self.craft_seconds = 0.0
        self.guard = OverfittingGuard(cfg, self.seed) if cfg.mode == "fast_at" else None
        self.norm_pairs: list[tuple[nn.Module, nn.Module]] = []

    def trainable_modules(self, model: nn.Module) -> nn.Module | None:
        """Modules the mode trains beside ``model`` (adv_aug with ``separate_bn``: one auxiliary copy
        of each of its batch norms), for the Lightning module to register so that the optimiser
        updates them and the training checkpoints hold them; None when the mode has none."""
        if self.cfg.mode != "adv_aug" or not self.cfg.separate_bn:
            return None
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            log.warning("adv_aug: the model has no batch norm; separate_bn has nothing to separate")
            return None
        aux = nn.ModuleList(copy.deepcopy(m) for m in norms)
        self.norm_pairs = list(zip(norms, aux, strict=True))
        return aux

    @contextmanager
    def auxiliary_norms(self) -> Iterator[None]:
        """Within the block, the model's batch norms use the auxiliary parameters and running
        statistics (adv_aug's ``separate_bn``; nothing changes without them)."""
        for main, aux in self.norm_pairs:
            _swap_state(main, aux)
        try:
            yield
        finally:
            for main, aux in self.norm_pairs:
                _swap_state(main, aux)

    def callbacks(self) -> list[pl.Callback]:
        """Lightning callbacks the mode needs (fast_at: the overfitting guard)."""
        return [self.guard] if self.guard is not None else []

    def _batch_seed(self) -> int:
        """The next batch's seed, from the training seed and the batch's index."""
        seed = int(np.random.SeedSequence([self.seed, self.batches]).generate_state(1)[0])
        self.batches += 1
        return seed

    def noisy(self, x: Tensor, seed: int | None = None) -> Tensor:
        """gaussian: the clips x (B, T) plus isotropic Gaussian noise of std ``sigma``, (B, T), seeded
        by ``seed`` (None: the next training batch's). Drawn on the CPU: a seed gives the same noise
        on every device."""
        generator = torch.Generator().manual_seed(self._batch_seed() if seed is None else int(seed))
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float32)
        return x + float(self.cfg.sigma) * noise.to(device=x.device, dtype=x.dtype)

    def validation_input(self, x: Tensor, batch_idx: int) -> Tensor:
        """The clips (B, T) that validation batch ``batch_idx`` of clean clips x (B, T) is scored on:
        gaussian's noisy copies, the same in every epoch; the clean clips in the other modes."""
        if self.cfg.mode not in NOISE_MODES:
            return x
        seed = np.random.SeedSequence([self.seed, VALIDATION_STREAM, int(batch_idx)]).generate_state(1)[0]
        return self.noisy(x, int(seed))

    def craft(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Adversarial clips (B, T) of the clean clips x (B, T) with labels y (B,), crafted in eval mode."""
        self.attack.model = model
        self.attack.seed = self._batch_seed()
        start = time.perf_counter()
        x_adv = self.attack.perturb(x, y)
        self.craft_seconds += time.perf_counter() - start
        return x_adv

    def training_loss(
        self, model: nn.Module, x: Tensor, y: Tensor, criterion: nn.Module
    ) -> tuple[Tensor, Tensor]:
        """The training loss of one batch, the model in train mode.

        Args:
            model: maps (B, T) waveforms to logits (B, C).
            x: clean (augmented) clips, (B, T) in [-1, 1]. y: labels, (B,) int64.
            criterion: the zoo's classification loss (cross-entropy with label smoothing).

        Returns:
            The scalar loss and the logits (B, C) of the batch trained on (pgd_at, fast_at: the
            adversarial or mixed batch; trades, adv_aug: the clean batch; gaussian: the noisy batch).
        """
        if self.cfg.mode in NOISE_MODES:
            logits = model(self.noisy(x))
            return criterion(logits, y), logits
        if self.guard is not None:
            self.guard.collect(x, y)
        if self.cfg.mode == "trades":
            return self._trades_loss(model, x, y, criterion)
        if self.cfg.mode == "adv_aug":
            with self.auxiliary_norms():
                adv_loss = criterion(model(self.craft(model, x, y)), y)
            logits = model(x)
            return criterion(logits, y) + self.cfg.weight * adv_loss, logits
        n_adv = round(self.cfg.mix * x.shape[0])
        if n_adv > 0:
            x = torch.cat([self.craft(model, x[:n_adv], y[:n_adv]), x[n_adv:]])
        logits = model(x)
        return criterion(logits, y), logits

    def _trades_loss(
        self, model: nn.Module, x: Tensor, y: Tensor, criterion: nn.Module
    ) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            was_training = model.training
            model.eval()
            p_clean = F.softmax(model(x), dim=1)
            model.train(was_training)

        def kl_to_clean(logits: Tensor, rows: Tensor, _: Tensor) -> Tensor:
            """KL(p(x) || p(x_adv)) per clip (b,); ``rows`` are the clips' rows in the batch."""
            p = p_clean[rows]
            return (p * (p.clamp_min(1e-12).log() - F.log_softmax(logits, dim=1))).sum(dim=1)

        self.attack.loss_fn = kl_to_clean
        try:
            # the labels the attack carries per clip are its row, so the objective finds p(x)
            x_adv = self.craft(model, x, torch.arange(x.shape[0], device=x.device))
        finally:
            self.attack.loss_fn = None
        logits = model(x)
        robust = F.kl_div(F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1), reduction="batchmean")
        return criterion(logits, y) + self.cfg.beta * robust, logits

    def summary(self) -> dict[str, Any]:
        """What metrics.json records: the mode, its budget and settings, crafting time, the guard."""
        out = self.cfg.as_dict()
        out["craft_seconds"] = round(self.craft_seconds, 1)
        if self.guard is not None:
            out["guard"] = self.guard.summary()
        if self.cfg.mode == "adv_aug":
            out["auxiliary_batch_norms"] = len(self.norm_pairs)
        return out


def _swap_state(a: nn.Module, b: nn.Module) -> None:
    """Exchange the parameters and buffers of two modules of the same kind and shape, in place."""
    for store in ("_parameters", "_buffers"):
        da, db = getattr(a, store), getattr(b, store)
        for key in da:
            da[key], db[key] = db[key], da[key]


class OverfittingGuard(pl.Callback):
    """fast_at's catastrophic-overfitting check, after each epoch's last training step (before the
    epoch is validated and checkpointed; see the module docstring).

    ``batch`` is the fixed guard batch, (x (G, T), y (G,)): the first ``guard_clips`` training clips
    (augmented, clean), gathered by :meth:`collect` from the first training steps. The reference
    checks one batch of 128 images; a batch of a few clips makes the check too noisy to trust.
    """

    def __init__(self, cfg: AdversarialConfig, seed: int) -> None:
        self.drop = cfg.guard_drop
        params = {**cfg.attack_params(), "steps": cfg.guard_steps, "early_stop": True, "seed": seed}
        params.pop("alpha", None)
        params["rel_step"] = 2.5 / cfg.guard_steps
        self.attack: PGD = build_attack("pgd", params)  # type: ignore[assignment]
        self.clips = cfg.guard_clips
        self.batch: tuple[Tensor, Tensor] | None = None
        self.robust_accuracy: list[float] = []
        self.best = -1.0
        self.kept: dict[str, Tensor] | None = None
        self.kept_epoch: int | None = None
        self.stopped_epoch: int | None = None

    def collect(self, x: Tensor, y: Tensor) -> None:
        """Add clean clips x (B, T) with labels y (B,) to the guard batch until it holds ``guard_clips``."""
        have = 0 if self.batch is None else self.batch[0].shape[0]
        if have >= self.clips:
            return
        x, y = x[: self.clips - have].detach().clone(), y[: self.clips - have].detach().clone()
        self.batch = (
            (x, y) if self.batch is None else (torch.cat([self.batch[0], x]), torch.cat([self.batch[1], y]))
        )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx + 1 != trainer.num_training_batches or self.batch is None:
            return
        model = pl_module.model
        self.attack.model = model
        x, y = self.batch
        acc = float((~self.attack(x, y).success).float().mean())
        epoch = trainer.current_epoch
        self.robust_accuracy.append(round(acc, 4))
        if self.kept is not None and acc < self.best - self.drop:
            model.load_state_dict(self.kept)
            self.stopped_epoch = epoch
            trainer.should_stop = True
            trainer.fit_loop.min_epochs = 0  # a collapse ends training even before min_epochs
            log.warning(
                "fast_at: catastrophic overfitting at epoch %d: PGD robust accuracy on the guard batch "
                "%.3f, best %.3f (guard_drop %.2f); stopping with epoch %d's weights",
                epoch, acc, self.best, self.drop, self.kept_epoch,
            )  # fmt: skip
            return
        log.info("fast_at guard: epoch %d, PGD robust accuracy on the guard batch %.3f", epoch, acc)
        self.best = max(self.best, acc)
        self.kept = copy.deepcopy(model.state_dict())
        self.kept_epoch = epoch

    def summary(self) -> dict[str, Any]:
        return {
            "guard_drop": self.drop,
            "guard_clips": 0 if self.batch is None else int(self.batch[0].shape[0]),
            "robust_accuracy": self.robust_accuracy,
            "best_robust_accuracy": round(self.best, 4) if self.robust_accuracy else None,
            "stopped": self.stopped_epoch is not None,
            "stopped_epoch": self.stopped_epoch,
            "restored_epoch": self.kept_epoch if self.stopped_epoch is not None else None,
        }


def build_adversarial(
    values: dict[str, Any] | AdversarialConfig | None, seed: int
) -> AdversarialTraining | None:
    """The training mode of ``training["adversarial"]`` (checked), or None when absent."""
    if values is None:
        return None
    cfg = values if isinstance(values, AdversarialConfig) else AdversarialConfig.from_dict(values)
    return AdversarialTraining(cfg, seed)
