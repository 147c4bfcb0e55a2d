"""APGD-CE, APGD-DLR and APGD-T: against torchattacks' APGD / APGDT, budgets, seeds, PGD, bad parameters.

Everything runs on a tiny log-mel CNN trained in the test (about a second) on noisy sines of five
frequencies, 0.25 s at 8 kHz: five classes, so the targeted DLR loss has its z_pi4 and APGD-T four
targets.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from advmir.attacks import APGD, APGDT, PGD, AttackParamError, build_attack
from advmir.attacks.apgd import checkpoints, dlr_loss, targeted_dlr_loss
from advmir.attacks.base import ZeroOne
from advmir.attacks.budgets import Budget
from tiny_tones import FIVE_FREQS, T, TinyLogMelCNN, correct_clips, five_tone_model

FREQS = FIVE_FREQS
NAMES = ("apgd_ce", "apgd_dlr", "apgd_t")

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the machine is shared


@pytest.fixture(scope="module")
def model(one_torch_thread) -> TinyLogMelCNN:
    return five_tone_model()


@pytest.fixture(scope="module")
def clips(model: TinyLogMelCNN) -> tuple[torch.Tensor, torch.Tensor]:
    """32 test clips the model classifies correctly."""
    return correct_clips(model)


# ------------------------------------------------------------------------------- the schedule, losses
def test_checkpoints_follow_the_paper() -> None:
    # the reference code's integer schedule at 100 steps: intervals 22, 19, 16, 13, 10, 7, 6, 6
    assert checkpoints(100) == (22, 41, 57, 70, 80, 87, 93, 99)
    # p_j = 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99: ceil(p_j * 10), repeats dropped
    assert checkpoints(10) == (3, 5, 6, 7, 8, 9, 10)
    assert checkpoints(1) == (1,)


def test_dlr_losses_are_shift_and_scale_invariant() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    t = (y + 2) % 5
    for loss in (lambda z: dlr_loss(z, y), lambda z: targeted_dlr_loss(z, y, t)):
        assert torch.allclose(loss(logits), loss(3.0 * logits - 7.0))
    # positive exactly when the clip is misclassified (untargeted)
    assert torch.equal(dlr_loss(logits, y) > 0, logits.argmax(1) != y)
    with pytest.raises(AttackParamError, match=r"apgd_dlr.*3 classes"):
        dlr_loss(logits[:, :2], y % 2)
    # with 3 classes the targeted DLR (which needs z_pi4) is the targeted cross-entropy
    three = targeted_dlr_loss(logits[:, :3], y % 3, (y + 1) % 3)
    assert torch.allclose(three, -nn.functional.cross_entropy(logits[:, :3], (y + 1) % 3, reduction="none"))


# ------------------------------------------------------------------------ against torchattacks
EPS = 0.016  # absolute L-inf budget at which about half the clips fall (PGD: 18 of 32)
STEPS = 20
TOLERANCE = 2  # clips (of 32): ours may fool at most this many fewer than theirs


def _their_success(name: str, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    torchattacks = pytest.importorskip("torchattacks")
    wrapped = ZeroOne(net)
    if name == "apgd_t":
        theirs = torchattacks.APGDT(wrapped, eps=EPS / 2, steps=STEPS, n_restarts=1, n_classes=len(FREQS))
    else:
        loss = name.split("_")[1]
        theirs = torchattacks.APGD(wrapped, eps=EPS / 2, steps=STEPS, n_restarts=1, loss=loss)
    image_like = ((x + 1) / 2)[:, None, None, :]  # their Linf code reshapes to (B, 1, 1, 1)
    adv = theirs(image_like, y)
    assert ((adv - image_like).abs().amax(dim=(1, 2, 3)) <= EPS / 2 + 1e-6).all()
    with torch.no_grad():
        return wrapped(adv).argmax(1) != y


@pytest.mark.parametrize("name", NAMES)
def test_success_at_least_torchattacks(name: str, model: TinyLogMelCNN, clips) -> None:
    x, y = clips
    net = copy.deepcopy(model)
    theirs = _their_success(name, net, x, y)
    ours = build_attack(name, {"eps": EPS, "steps": STEPS, "batch_size": 16}, net)(x, y).success
    print(f"{name}: ours {int(ours.sum())}/{len(y)}, torchattacks {int(theirs.sum())}/{len(y)}")
    assert 0 < int(theirs.sum()) < len(y), "the budget should leave some clips standing"
    assert int(ours.sum()) >= int(theirs.sum()) - TOLERANCE


# ---------------------------------------------------------------------------------------- budgets
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("budget", [{"eps": EPS}, {"snr_db": 20.0}, {"snr_db": 15.0, "envelope": 1.0}])
def test_every_example_within_budget(name: str, budget: dict, model: TinyLogMelCNN, clips) -> None:
    x, y = clips
    x = x.clone()
    x[0] = x[0].sign() * 0.999  # a clip at full scale: the box meets [-1, 1]
    result = build_attack(name, {**budget, "steps": 10, "batch_size": 8}, model)(x, y)
    radius = Budget.create(name, "linf", **budget).radius(x)
    assert result.x_adv.min() >= -1 and result.x_adv.max() <= 1
    assert ((result.x_adv - x).abs() <= radius * (1 + 1e-5) + 1e-7).all()
    if "snr_db" in budget:
        assert (result.snr_db >= budget["snr_db"] - 1e-3).all()
    with torch.no_grad():
        assert torch.equal(result.success, model(result.x_adv).argmax(1) != y)
    assert (result.iterations <= result.queries).all() and (result.queries >= 1).all()


# ------------------------------------------------------------------------------------------ seeds
@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_output(name: str, model: TinyLogMelCNN, clips) -> None:
    x, y = clips[0][:12], clips[1][:12]
    params = {"snr_db": 25.0, "steps": 8, "n_restarts": 2, "batch_size": 5, "seed": 3}
    first = build_attack(name, params, model)(x, y)
    again = build_attack(name, params, model)(x, y)
    assert torch.equal(first.x_adv, again.x_adv) and torch.equal(first.iterations, again.iterations)
    other = build_attack(name, {**params, "seed": 4}, model)(x, y)
    assert not torch.equal(first.x_adv, other.x_adv)


# ------------------------------------------------------------------------------ early stop, fallback
def test_stops_on_success_and_restarts_the_rest(model: TinyLogMelCNN, clips) -> None:
    x, y = clips
    result = APGD(model, eps=EPS, steps=STEPS, n_restarts=2, batch_size=16)(x, y)
    fooled, standing = result.success, ~result.success
    assert fooled.any() and standing.any()
    # a clip still standing ran both restarts to the end: 20 steps and 21 evaluations each
    assert (result.iterations[standing] == 2 * STEPS).all()
    assert (result.queries[standing] == 2 * (STEPS + 1)).all()
    # a fooled clip stopped at the evaluation that saw it fooled
    assert (result.queries[fooled] <= 2 * (STEPS + 1)).all()
    assert (result.queries[fooled] < 2 * (STEPS + 1)).any()


def test_a_clip_never_fooled_keeps_its_highest_loss_point(model: TinyLogMelCNN, clips) -> None:
    x, y = clips[0][:1], clips[1][:1]
    attack = APGD(model, eps=1e-5, steps=6, n_restarts=2, batch_size=1)
    seen: list[float] = []
    loss = attack.loss

    def recording(logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = loss(logits, y, t)
        if not out.requires_grad:  # the step's loss, not the one inside the gradient
            seen.append(float(out[0]))
        return out

    attack.loss = recording
    result = attack(x, y)
    assert not result.success.any() and len(seen) == 2 * 7
    with torch.no_grad():
        final = float(nn.functional.cross_entropy(model(result.x_adv), y))
    assert final == pytest.approx(max(seen), rel=1e-5)


def test_apgd_t_aims_at_the_top_other_classes(model: TinyLogMelCNN, clips) -> None:
    x, y = clips[0][:4], clips[1][:4]
    attack = APGDT(model, eps=1e-5, steps=3, n_target_classes=2, batch_size=4)
    aims: list[torch.Tensor] = []
    target = attack.loss_target
    attack.loss_target = lambda s: (aims.append(target(s)), aims[-1])[1]
    result = attack(x, y)
    with torch.no_grad():
        ranked = model(x).argsort(dim=1, descending=True)
    assert torch.equal(aims[0], ranked[:, 1]) and torch.equal(aims[-1], ranked[:, 2])
    assert len(aims) == 2 * 4  # two targets, four evaluations each
    assert (result.queries == 1 + 2 * 4).all()  # and the clean forward pass that ranks them
    assert APGDT(model, eps=EPS, n_target_classes=9).runs(x, y)["targets"].shape == (4, len(FREQS) - 1)


# ----------------------------------------------------------------------------------- versus PGD
def test_apgd_ce_at_least_as_strong_as_pgd(model: TinyLogMelCNN, clips) -> None:
    x, y = clips
    apgd = APGD(model, eps=EPS, steps=STEPS, batch_size=16)(x, y).success
    pgd = PGD(model, eps=EPS, steps=STEPS, batch_size=16)(x, y).success
    print(f"apgd_ce {int(apgd.sum())}/{len(y)}, pgd {int(pgd.sum())}/{len(y)}")
    assert int(apgd.sum()) >= int(pgd.sum()) - TOLERANCE


# ---------------------------------------------------------------------------------- bad parameters
@pytest.mark.parametrize(
    "name,params,words",
    [
        ("apgd_ce", {"snr_db": 30, "steps": 0}, ["apgd_ce", "steps", ">= 1"]),
        ("apgd_dlr", {"snr_db": 30, "steps": -3}, ["apgd_dlr", "steps"]),
        ("apgd_t", {"snr_db": 30, "steps": 2.5}, ["apgd_t", "steps", "integer"]),
        ("apgd_ce", {"snr_db": 30, "rho": 0}, ["apgd_ce", "rho", "> 0"]),
        ("apgd_dlr", {"snr_db": 30, "rho": 1}, ["apgd_dlr", "rho", "< 1"]),
        ("apgd_t", {"snr_db": 30, "rho": 1.5}, ["apgd_t", "rho", "< 1"]),
        ("apgd_t", {"snr_db": 30, "n_target_classes": 0}, ["apgd_t", "n_target_classes", ">= 1"]),
        ("apgd_ce", {"snr_db": 30, "n_restarts": 0}, ["apgd_ce", "n_restarts", ">= 1"]),
        ("apgd_ce", {"snr_db": 30, "n_target_classes": 3}, ["apgd_ce", "n_target_classes", "unknown"]),
        ("apgd_t", {"snr_db": 30, "targeted": "random"}, ["apgd_t", "targeted", "untargeted only"]),
        ("apgd_ce", {"steps": 10}, ["apgd_ce", "budget"]),
    ],
)
def test_bad_parameters_are_rejected_by_name(name: str, params: dict, words: list[str]) -> None:
    with pytest.raises(AttackParamError) as info:
        build_attack(name, params)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_dlr_refuses_a_two_class_model(clips) -> None:
    two = nn.Sequential(nn.Linear(T, 2))
    x, y = clips[0][:2], torch.zeros(2, dtype=torch.long)
    for name in ("apgd_dlr", "apgd_t"):
        with pytest.raises(AttackParamError, match=rf"{name}.*at least 3 classes"):
            build_attack(name, {"eps": EPS, "steps": 2}, two)(x, y)
