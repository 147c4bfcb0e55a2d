"""Attack suite: agreement with torchattacks, the contract of every attack, budgets, bad parameters.

Everything runs on a tiny log-mel CNN trained in the test (a second or two) on noisy sines of three
frequencies, 0.25 s at 8 kHz: weak tones in noise, so small perturbations can move the prediction.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from advmir.attacks import (
    ATTACKS,
    PGD,
    AttackParamError,
    Budget,
    RandomNoise,
    accepted_params,
    attack_mode,
    build_attack,
    perturbation_metrics,
)
from advmir.attacks.base import ZeroOne, unit_l2
from advmir.attacks.budgets import ENVELOPE_FRAME, project, radius_for_snr
from tiny_tones import SR, T, TinyLogMelCNN, fit_tiny, noisy_tones

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the machine is shared


@pytest.fixture(scope="module")
def model(one_torch_thread) -> TinyLogMelCNN:
    torch.manual_seed(0)
    return fit_tiny(TinyLogMelCNN(), *noisy_tones(256, 100), steps=60)


@pytest.fixture(scope="module")
def clips(model: TinyLogMelCNN) -> tuple[torch.Tensor, torch.Tensor]:
    """24 test clips the model classifies correctly."""
    x, y = noisy_tones(64, 7)
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    assert keep.float().mean() > 0.9, "the tiny model did not learn the toy task"
    return x[keep][:24], y[keep][:24]


# ------------------------------------------------------------------------------------------ budgets
def test_snr_budget_gives_the_snr_it_states() -> None:
    x, _ = noisy_tones(5, 1)
    for snr in (10.0, 30.0, 45.5):
        r2 = radius_for_snr(x, snr, "l2")
        d = torch.randn_like(x)
        d = project(d * 100, r2, "l2")
        got = perturbation_metrics(x, x + d)["snr_db"]
        assert torch.allclose(got, torch.full_like(got, snr), atol=1e-4)
        # the L-inf equivalent: a full +-eps_i perturbation has exactly that SNR, anything inside more
        eps = radius_for_snr(x, snr, "linf")
        full = torch.sign(torch.randn_like(x)) * eps[:, None]
        assert torch.allclose(
            perturbation_metrics(x, x + full)["snr_db"], torch.full_like(got, snr), atol=1e-4
        )
        inside = project(torch.randn_like(x), eps, "linf")
        assert (perturbation_metrics(x, x + inside)["snr_db"] >= snr - 1e-4).all()
    same = perturbation_metrics(x, x.clone())
    assert torch.isinf(same["snr_db"]).all() and (same["l2"] == 0).all() and (same["linf"] == 0).all()


def test_absolute_budget_is_the_same_for_every_clip() -> None:
    x, _ = noisy_tones(3, 2)
    budget = Budget.create("pgd", "linf", eps=0.01)
    assert torch.equal(budget.radius(x), torch.full((3, 1), 0.01))


@pytest.mark.parametrize("envelope", [0.0, 0.5, 1.0])
def test_envelope_shaped_box_keeps_the_snr_guarantee(envelope: float) -> None:
    x, _ = noisy_tones(4, 3)
    x[:, ENVELOPE_FRAME:] = 0  # the note has ended: silence from the second frame on
    eps = Budget.create("pgd", "linf", snr_db=25, envelope=envelope).radius(x)
    assert eps.shape == ((4, 1) if envelope == 0 else (4, T))
    full = torch.sign(torch.randn_like(x)) * eps  # fills the box: SNR is exactly the budget
    snr = perturbation_metrics(x, x + full)["snr_db"]
    assert torch.allclose(snr, torch.full_like(snr, 25.0), atol=1e-3)
    if envelope == 1.0:
        assert (eps[:, ENVELOPE_FRAME:] == 0).all()  # nothing in the silence


def test_pgd_respects_an_envelope_shaped_box(model: TinyLogMelCNN, clips) -> None:
    x, y = clips
    result = PGD(model, snr_db=10, envelope=1.0, steps=5)(x, y)
    eps = Budget.create("pgd", "linf", snr_db=10, envelope=1.0).radius(x)
    assert ((result.x_adv - x).abs() <= eps * (1 + 1e-5) + 1e-7).all()
    assert (result.snr_db >= 10 - 1e-3).all()


# ------------------------------------------------------------------------ agreement with torchattacks
def test_fgsm_matches_torchattacks(model: TinyLogMelCNN, clips) -> None:
    torchattacks = pytest.importorskip("torchattacks")
    net = copy.deepcopy(model).double()
    x, y = clips[0].double(), clips[1]
    eps = 0.01
    ours = build_attack("fgsm", {"eps": eps}, net)(x, y).x_adv
    theirs = torchattacks.FGSM(ZeroOne(net), eps=eps / 2)((x + 1) / 2, y)
    assert torch.allclose((ours + 1) / 2, theirs, atol=1e-12)


def test_pgd_linf_matches_torchattacks(model: TinyLogMelCNN, clips) -> None:
    torchattacks = pytest.importorskip("torchattacks")
    net = copy.deepcopy(model).double()
    x, y = clips[0].double(), clips[1]
    eps, alpha, steps = 0.01, 0.003, 7
    ours = PGD(net, eps=eps, alpha=alpha, steps=steps, random_start=False, early_stop=False, batch_size=8)
    theirs = torchattacks.PGD(ZeroOne(net), eps=eps / 2, alpha=alpha / 2, steps=steps, random_start=False)
    mine = ours(x, y)
    assert (mine.iterations == steps).all()
    assert torch.allclose((mine.x_adv + 1) / 2, theirs((x + 1) / 2, y), atol=1e-10)


def test_pgd_l2_matches_torchattacks(model: TinyLogMelCNN, clips) -> None:
    torchattacks = pytest.importorskip("torchattacks")
    net = copy.deepcopy(model).double()
    x, y = clips[0].double(), clips[1]
    eps, alpha, steps = 0.5, 0.15, 5
    ours = PGD(net, norm="l2", eps=eps, alpha=alpha, steps=steps, random_start=False, early_stop=False)
    theirs = torchattacks.PGDL2(ZeroOne(net), eps=eps / 2, alpha=alpha / 2, steps=steps, random_start=False)
    image_like = ((x + 1) / 2)[:, None, None, :]  # their L2 code reshapes to (B, 1, 1, 1)
    assert torch.allclose((ours(x, y).x_adv + 1) / 2, theirs(image_like, y).flatten(1), atol=1e-8)


# --------------------------------------------------------------------------------- the contract
SNR = 10.0  # dB: a budget at which the gradient attacks fool the tiny model on most clips
CONTRACT = {
    "fgsm": {"snr_db": SNR},
    "bim": {"snr_db": SNR},
    "pgd": {"snr_db": SNR},
    "pgd_l2": {"snr_db": SNR, "norm": "l2"},
    "pgd_margin": {"snr_db": SNR, "loss": "margin"},
    "mifgsm": {"snr_db": SNR},
    "deepfool": {"snr_db": SNR},
    "cw": {"snr_db": SNR},
    "universal": {"snr_db": 5.0, "epochs": 10},
    "square": {"snr_db": 5.0, "n_queries": 200},  # query-only: the toy needs a looser budget
    "apgd_ce": {"snr_db": SNR, "steps": 10},
    "apgd_dlr": {"snr_db": SNR, "steps": 10},
    "apgd_t": {"snr_db": SNR, "steps": 10},
    "fab": {"snr_db": SNR, "steps": 10},
    "fab_t": {"snr_db": SNR, "steps": 10},
    # the default codec stand-in and room band need 16 kHz audio: a room band-limited for 8 kHz only
    "eot_pgd": {
        "snr_db": SNR,
        "steps": 10,
        "eot_samples": 2,
        "sample_rate": SR,
        "codec_proxy": False,
        "rooms": {"room": {"band_hz": [200, 3500]}},
    },
}


def _algorithm(case: str) -> str:
    return case if case in ATTACKS else case.rsplit("_", 1)[0]


def test_contract_covers_every_attack() -> None:
    assert {_algorithm(c) for c in CONTRACT} == set(ATTACKS) - {"noise"}


def _run(case: str, params: dict, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    attack = build_attack(_algorithm(case), {"batch_size": 8, **params}, model)
    if _algorithm(case) == "universal":
        attack.fit(*noisy_tones(128, 11))
    finished: list[int] = []
    attack.on_clips_done = finished.append  # what the stage's progress bar is fed
    result = attack(x, y)
    assert sum(finished) == x.shape[0], f"{case}: progress reported {finished} for {x.shape[0]} clips"
    return attack, result


@pytest.mark.parametrize("case", sorted(CONTRACT))
def test_attack_contract(case: str, model: TinyLogMelCNN, clips) -> None:
    x, y = clips
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    try:
        attack, result = _run(case, CONTRACT[case], model, x, y)
        # the model's mode and parameters are as they were, and no gradient was left on them
        assert model.training and all(m.training for m in model.modules())
        assert [p.requires_grad for p in model.parameters()] == flags
        assert all(p.grad is None for p in model.parameters())
    finally:
        model.eval()
    x_adv = result.x_adv
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert x_adv.min() >= -1 and x_adv.max() <= 1
    # budget respected: SNR never below the budget; the L-inf box for L-inf attacks
    snr = CONTRACT[case]["snr_db"]
    assert (result.snr_db >= snr - 1e-3).all(), result.snr_db.min()
    if attack.norm == "linf":
        eps = radius_for_snr(x, snr, "linf").double()
        assert (result.linf <= eps * (1 + 1e-5)).all()
    # the result's success is the model's verdict on x_adv
    with torch.no_grad():
        assert torch.equal(result.success, model(x_adv).argmax(1) != y)
    # at least as good as random noise of the same L2 norm, clip by clip
    g = torch.Generator().manual_seed(0)
    noise_rates = []
    for _ in range(5):
        noise = torch.randn(x.shape, generator=g)
        noise = noise / noise.norm(dim=1, keepdim=True) * result.l2.float()[:, None]
        with torch.no_grad():
            noise_rates.append((model((x + noise).clamp(-1, 1)).argmax(1) != y).float().mean())
    assert result.success.float().mean() >= max(noise_rates)
    assert result.success.float().mean() > 0, f"{case} fooled no clip at {snr} dB"
    # bookkeeping
    assert (result.iterations >= 0).all() and (result.queries >= 0).all() and (result.seconds >= 0).all()
    assert result.target.eq(-1).all()


@pytest.mark.parametrize(
    "case,params",
    [
        ("bim", {"snr_db": SNR, "steps": 20}),
        ("pgd", {"snr_db": SNR, "steps": 20}),
        ("pgd_l2", {"snr_db": SNR, "norm": "l2", "steps": 20}),
        ("mifgsm", {"snr_db": SNR, "steps": 20}),
        ("apgd_ce", {"snr_db": SNR, "steps": 20}),
        ("apgd_dlr", {"snr_db": SNR, "steps": 20}),
        ("cw", {"snr_db": SNR}),
    ],
)
@pytest.mark.parametrize("mode", ["random", "least_likely"])
def test_targeted_mode_reaches_the_target(case: str, params: dict, mode: str, model, clips) -> None:
    x, y = clips
    _, result = _run(case, {**params, "targeted": mode}, model, x, y)
    assert (result.target != y).all()
    with torch.no_grad():
        pred = model(result.x_adv).argmax(1)
    assert torch.equal(result.success, pred == result.target)
    assert result.success.float().mean() >= 0.9


def test_target_choices(model: TinyLogMelCNN, clips) -> None:
    x, y = clips
    with torch.no_grad():
        least = model(x).argmin(1)
    ll = build_attack("pgd", {"snr_db": 10, "targeted": "least_likely"}, model)
    assert torch.equal(ll.choose_targets(x, y), least)
    fixed = build_attack("pgd", {"snr_db": 10, "targeted": "map", "target_map": {0: 1, 1: 2, 2: 0}}, model)
    assert torch.equal(fixed.choose_targets(x, y), (y + 1) % 3)
    rnd = build_attack("pgd", {"snr_db": 10, "targeted": "random", "seed": 3}, model)
    first, again = rnd.choose_targets(x, y), rnd.choose_targets(x, y)
    assert torch.equal(first, again) and (first != y).all()
    partial = build_attack("pgd", {"snr_db": 10, "targeted": "map", "target_map": {0: 1}}, model)
    with pytest.raises(AttackParamError, match=r"target_map.*label"):
        partial(x, y)


# --------------------------------------------------------------------- early stopping and the pool
def test_early_stopping_keeps_the_batch_full(model: TinyLogMelCNN) -> None:
    x, y = noisy_tones(40, 21)
    attack = PGD(model, snr_db=15, steps=10, batch_size=8)
    occupancy: list[int] = []
    step = attack.step
    attack.step = lambda state: (occupancy.append(state["idx"].numel()), step(state))[1]
    result = attack(x, y)
    assert result.iterations.min() < result.iterations.max()  # clips stopped at different times
    assert (result.iterations <= 10).all()
    # refilled from the queue: the batch is full until the queue runs dry, then only drains
    first_partial = next((i for i, n in enumerate(occupancy) if n < 8), len(occupancy))
    assert all(n == 8 for n in occupancy[:first_partial])
    assert occupancy[first_partial:] == sorted(occupancy[first_partial:], reverse=True)
    assert len(occupancy) - first_partial <= 10
    assert sum(occupancy) == result.queries.sum()  # every slot-step is one clip's query
    # early stopping spends fewer steps than the fixed-step attack
    fixed = PGD(model, snr_db=15, steps=10, batch_size=8, early_stop=False)(x, y)
    assert (fixed.iterations == 10).all() and result.queries.sum() < fixed.queries.sum()


def test_pool_result_does_not_depend_on_batch_size(model: TinyLogMelCNN) -> None:
    x, y = noisy_tones(20, 5)
    small = PGD(model, snr_db=15, steps=6, random_start=False, batch_size=3)(x, y)
    large = PGD(model, snr_db=15, steps=6, random_start=False, batch_size=64)(x, y)
    assert torch.allclose(small.x_adv, large.x_adv, atol=1e-6)
    assert torch.equal(small.iterations, large.iterations)


def test_square_counts_queries(model: TinyLogMelCNN, clips) -> None:
    x, y = clips
    result = build_attack("square", {"snr_db": SNR, "n_queries": 50}, model)(x, y)
    assert (result.queries >= 1).all() and (result.queries <= 50).all()
    assert (result.iterations == 0).all()  # no gradient ever
    assert (result.queries[~result.success] == 50).all()


def test_noise_baseline(model: TinyLogMelCNN, clips) -> None:
    x, y = clips
    result = RandomNoise(model, snr_db=20)(x, y)
    assert torch.allclose(result.snr_db, torch.full_like(result.snr_db, 20.0), atol=0.05)


def test_attack_mode_restores_a_mixed_model(model: TinyLogMelCNN) -> None:
    model.train()
    model.net[2].eval()  # one module in eval, the rest in train
    try:
        with attack_mode(model):
            assert not any(m.training for m in model.modules())
        assert model.training and not model.net[2].training
    finally:
        model.eval()


# ---------------------------------------------------------------------------------- bad parameters
@pytest.mark.parametrize(
    "name,params,words",
    [
        ("pgd", {"eps": -0.1}, ["pgd", "eps", ">= 0"]),
        ("fgsm", {"snr_db": "loud"}, ["fgsm", "snr_db", "number"]),
        ("bim", {"snr_db": float("nan")}, ["bim", "snr_db", "finite"]),
        ("pgd", {"snr_db": True}, ["pgd", "snr_db", "number"]),
        ("deepfool", {"targeted": "random"}, ["deepfool", "targeted", "untargeted only"]),
        ("universal", {"snr_db": 20, "targeted": "least_likely"}, ["universal", "targeted"]),
        ("pgd", {"snr_db": 30, "epss": 0.1}, ["pgd", "epss", "unknown"]),
        ("pgd", {"snr_db": 30, "eps": 0.1}, ["pgd", "eps", "snr_db"]),
        ("pgd", {}, ["pgd", "budget"]),
        ("pgd", {"snr_db": 30, "steps": 0}, ["pgd", "steps"]),
        ("pgd", {"snr_db": 30, "steps": 2.5}, ["pgd", "steps", "integer"]),
        ("pgd", {"snr_db": 30, "norm": "l1"}, ["pgd", "norm"]),
        ("pgd", {"snr_db": 30, "loss": "hinge"}, ["pgd", "loss", "margin"]),
        ("pgd", {"eps": 0.01, "envelope": 0.5}, ["pgd", "envelope", "snr_db"]),
        ("pgd", {"snr_db": 30, "norm": "l2", "envelope": 0.5}, ["pgd", "envelope"]),
        ("fgsm", {"snr_db": 30, "envelope": 2}, ["fgsm", "envelope", "<= 1"]),
        ("cw", {"optimizer": "sgd"}, ["cw", "optimizer"]),
        ("pgd", {"snr_db": 30, "targeted": "nearest"}, ["pgd", "targeted"]),
        ("pgd", {"snr_db": 30, "targeted": "map"}, ["pgd", "target_map"]),
        ("pgd", {"snr_db": 30, "target_map": {0: 1}}, ["pgd", "target_map"]),
        ("pgd", {"snr_db": 30, "targeted": "map", "target_map": {1: 1}}, ["pgd", "target_map"]),
        ("cw", {"lr": 0}, ["cw", "lr"]),
        ("square", {"snr_db": 30, "p_init": 2}, ["square", "p_init"]),
        ("universal", {}, ["universal", "snr_db"]),
        ("mifgsm", {"snr_db": 30, "decay": -1}, ["mifgsm", "decay"]),
        ("bim", {"snr_db": 30, "norm": "l2"}, ["bim", "norm", "unknown"]),  # fixed by BIM
        ("mifgsm", {"snr_db": 30, "random_start": True}, ["mifgsm", "random_start", "unknown"]),
        ("telepathy", {}, ["unknown attack", "telepathy"]),
    ],
)
def test_bad_parameters_are_rejected_by_name(name: str, params: dict, words: list[str]) -> None:
    with pytest.raises(AttackParamError) as info:
        build_attack(name, params)
    for word in words:
        assert word in str(info.value), str(info.value)


# the budget parameters each attack takes (its ``budget_params``; the base takes them for all)
BUDGETS = {
    **{
        name: {"eps", "snr_db", "envelope"}
        for name in (
            "fgsm",
            "bim",
            "pgd",
            "eot_pgd",
            "mifgsm",
            "apgd_ce",
            "apgd_dlr",
            "apgd_t",
            "fab",
            "fab_t",
            "square",
            "noise",
        )
    },
    "deepfool": {"eps", "snr_db"},
    "cw": {"eps", "snr_db"},
    "universal": {"snr_db"},
}


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_each_attack_takes_its_budget_parameters_and_no_other(name: str) -> None:
    assert set(BUDGETS) == set(ATTACKS)
    assert set(accepted_params(name)) & {"eps", "snr_db", "envelope"} == BUDGETS[name]
    for param in sorted({"eps", "snr_db", "envelope"} - BUDGETS[name]):
        with pytest.raises(AttackParamError, match=f"{name}: unknown parameter.*{param}"):
            build_attack(name, {"snr_db": 20, param: 0.5})
    # built directly, an attack refuses a budget parameter it does not take, too
    if "envelope" not in BUDGETS[name]:
        with pytest.raises(AttackParamError, match="envelope"):
            ATTACKS[name](snr_db=20, envelope=0.5)


def test_within_budget_projects_then_clips_and_unit_l2_keeps_zero_rows() -> None:
    x, _ = noisy_tones(3, 4)
    delta = torch.randn_like(x)
    for attack in (PGD(norm="l2", snr_db=20), PGD(snr_db=20)):
        radius = attack.budget.radius(x)
        want = (x + project(delta, radius, attack.norm)).clamp(-1.0, 1.0)
        assert torch.equal(attack.within_budget(x, delta, radius), want)
    unbounded = build_attack("deepfool")
    assert unbounded.budget is None
    assert torch.equal(unbounded.within_budget(x, 5 * delta, None), (x + 5 * delta).clamp(-1.0, 1.0))
    v = torch.cat([delta[:2], torch.zeros(1, T)])
    assert torch.allclose(unit_l2(v)[:2].norm(dim=1), torch.ones(2)) and (unit_l2(v)[2] == 0).all()


def test_inputs_outside_the_audio_range_are_rejected(model: TinyLogMelCNN) -> None:
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        PGD(model, snr_db=30)(torch.full((2, T), 1.5), torch.zeros(2, dtype=torch.long))


def test_matched_noise_has_the_snr_of_each_perturbation(model: TinyLogMelCNN, clips) -> None:
    from advmir.attacks.controls import matched_noise

    x, y = clips
    x_adv = PGD(model, snr_db=20, steps=5)(x, y).x_adv
    x_adv[0] = x[0]  # no perturbation: the control is the clean clip
    x, x_adv = torch.cat([x, 0.999 * x[:1].sign()]), torch.cat([x_adv, 0.999 * x[:1].sign() * 0.9])
    rows = torch.arange(len(x)).numpy() + 100
    control = matched_noise(x, x_adv, rows, seed=3)
    assert control.shape == x.shape and control.dtype == torch.float32 and control.abs().max() <= 1
    assert torch.equal(control[0], x[0])
    adv_snr, noise_snr = perturbation_metrics(x, x_adv)["snr_db"], perturbation_metrics(x, control)["snr_db"]
    clipped = ((x.double() + (control - x).double()).abs() >= 1 - 1e-6).any(dim=1)
    assert clipped[-1] and (~clipped[1:-1]).all()  # the full-scale clip clips, the tones do not
    assert torch.allclose(noise_snr[1:-1], adv_snr[1:-1], atol=0.01)
    assert noise_snr[-1] > adv_snr[-1] + 0.1  # clipping removes noise: the SNR rises
    # white noise, not the perturbation rescaled; the same per (seed, row), new for another seed or row
    delta, noise = (x_adv - x)[1:-1].double(), (control - x)[1:-1].double()
    cosine = (delta * noise).sum(1) / (delta.norm(dim=1) * noise.norm(dim=1))
    assert cosine.abs().max() < 0.2
    assert torch.equal(control, matched_noise(x, x_adv, rows, seed=3))
    assert not torch.equal(control[1], matched_noise(x, x_adv, rows, seed=4)[1])
    assert not torch.equal(control[1], matched_noise(x, x_adv, rows + 1, seed=3)[1])
    with pytest.raises(ValueError, match="rows"):
        matched_noise(x, x_adv, rows[:2], seed=3)


def test_one_success_rule_for_examples_controls_and_early_stop(model: TinyLogMelCNN, clips) -> None:
    import numpy as np

    from advmir.attacks.scoring import fooled, success_rule

    label = np.array([0, 0, 1, 1, 2, 2])
    target = np.array([-1, -1, 2, 2, 0, -1])  # untargeted, untargeted, targeted x3, untargeted
    clean_pred = np.array([0, 1, 1, 1, 2, 2])  # clip 1 was wrong when clean: never a success
    pred = np.array([1, 2, 2, 0, 0, 2])
    assert success_rule(pred, label, target, clean_pred).tolist() == [True, False, True, False, True, False]
    # the attacks' early stop follows the same rule on the crafting model (targets -1 when untargeted)
    x, y = clips
    logits = model(x).detach()
    for attack, t in (
        (PGD(model, snr_db=20), torch.full_like(y, -1)),
        (PGD(model, snr_db=20, targeted="random"), (y + 1) % 3),
    ):
        expected = fooled(logits.argmax(1).numpy(), y.numpy(), t.numpy())
        assert attack.is_success(logits, y, t).numpy().tolist() == expected.tolist()
