"""FAB and FAB-T: against torchattacks' FAB, minimal perturbations, budgets, targets, seeds, bad parameters.

Everything runs on the tiny log-mel CNN of tiny_tones.py trained in the test (about a second) on
noisy sines of five frequencies, 0.25 s at 8 kHz: five classes, so FAB-T has four targets.
"""

from __future__ import annotations

import copy

import pytest
import torch

from advmir.attacks import FAB, FABT, PGD, AttackParamError, build_attack
from advmir.attacks.base import ZeroOne
from advmir.attacks.budgets import Budget
from advmir.attacks.fab import project_linf
from advmir.defenses.robust import attack_success, build_member
from tiny_tones import FIVE_FREQS, TinyLogMelCNN, correct_clips, five_tone_model

FREQS = FIVE_FREQS
NAMES = ("fab", "fab_t")

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the machine is shared


@pytest.fixture(scope="module")
def model(one_torch_thread) -> TinyLogMelCNN:
    return five_tone_model()


@pytest.fixture(scope="module")
def clips(model: TinyLogMelCNN) -> tuple[torch.Tensor, torch.Tensor]:
    """32 test clips the model classifies correctly."""
    return correct_clips(model)


# ------------------------------------------------------------------------------- the projection
def test_projection_is_the_references_on_the_unit_box() -> None:
    fab = pytest.importorskip("torchattacks.attacks.fab")
    g = torch.Generator().manual_seed(0)
    t = torch.rand(64, 300, generator=g, dtype=torch.float64)
    w = torch.randn(64, 300, generator=g, dtype=torch.float64)
    w[:4, ::3] = 0.0  # coordinates that cannot move
    b = (w * t).sum(1) + 120 * torch.randn(64, generator=g, dtype=torch.float64)  # some out of reach
    d = project_linf(t, w, b, torch.zeros_like(t), torch.ones_like(t))
    assert torch.allclose(d, fab.projection_linf(t, w, b), atol=1e-12)
    inside = (t + d >= -1e-12) & (t + d <= 1 + 1e-12)
    assert inside.all() and (d[w == 0] == 0).all()
    # on the hyperplane where the box reaches it; else at the corner nearest to it
    gap = ((w * (t + d)).sum(1) - b).abs()
    corner = torch.where((w * t).sum(1, keepdim=True) > b[:, None], (w < 0).double(), (w > 0).double())
    reach = (w * corner).sum(1)
    reachable = torch.where((w * t).sum(1) > b, reach <= b, reach >= b)
    assert 0 < int(reachable.sum()) < 64
    assert (gap[reachable] < 1e-9).all()
    assert torch.allclose((t + d)[~reachable], torch.where(w != 0, corner, t)[~reachable])


# ------------------------------------------------------------------------ against torchattacks
EPS = 0.016  # absolute L-inf budget at which about two thirds of the clips fall (FAB: 22 of 32)
STEPS = 20
TOLERANCE = 1  # clips (of 32) by which our success may differ from theirs
NORM_TOLERANCE = 0.01  # relative difference of the mean L-inf norm of the clips both fool


def _theirs(name: str, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float):
    torchattacks = pytest.importorskip("torchattacks")
    wrapped = ZeroOne(net)
    theirs = torchattacks.FAB(
        wrapped, norm="Linf", eps=eps / 2, steps=STEPS, n_restarts=1,
        multi_targeted=name == "fab_t", n_classes=len(FREQS),
    )  # fmt: skip
    image_like = ((x + 1) / 2)[:, None, None, :]  # their Linf code reshapes to (B, 1, 1, 1)
    adv = theirs(image_like, y).flatten(1) * 2 - 1  # back to [-1, 1]
    with torch.no_grad():
        success = net(adv).argmax(1) != y
    return success, (adv - x).abs().amax(dim=1)


@pytest.mark.parametrize("name", NAMES)
def test_matches_torchattacks(name: str, model: TinyLogMelCNN, clips) -> None:
    # one run from the clean clip is deterministic: the same iterates as theirs up to rounding (in
    # [0, 1] their steps are ours halved), so the same clips fall, with the same minimal norms
    x, y = clips
    net = copy.deepcopy(model)
    their_success, their_linf = _theirs(name, net, x, y, EPS)
    ours = build_attack(name, {"eps": EPS, "steps": STEPS, "batch_size": 16}, net)(x, y)
    both = ours.success & their_success
    mean_ours, mean_theirs = float(ours.linf[both].mean()), float(their_linf[both].mean())
    print(
        f"{name}: ours {int(ours.success.sum())}/{len(y)}, torchattacks {int(their_success.sum())}/{len(y)}; "
        f"mean L-inf of the {int(both.sum())} both fool: ours {mean_ours:.6f}, theirs {mean_theirs:.6f}"
    )
    assert 0 < int(their_success.sum()) < len(y), "the budget should leave some clips standing"
    assert abs(int(ours.success.sum()) - int(their_success.sum())) <= TOLERANCE
    assert abs(mean_ours - mean_theirs) <= NORM_TOLERANCE * mean_theirs
    assert (ours.linf[ours.success] <= EPS * (1 + 1e-5)).all()


# ----------------------------------------------------------------------------- minimal perturbations
def test_perturbations_are_minimal(model: TinyLogMelCNN, clips) -> None:
    x, y = clips
    fab = FAB(model, eps=EPS, steps=STEPS, batch_size=16)(x, y)
    pgd = PGD(model, eps=EPS, steps=STEPS, batch_size=16)(x, y)
    both = fab.success & pgd.success
    mean_fab, mean_pgd = float(fab.linf[both].mean()), float(pgd.linf[both].mean())
    print(f"fab {int(fab.success.sum())}/{len(y)}, pgd {int(pgd.success.sum())}/{len(y)}; mean L-inf of "
          f"the {int(both.sum())} both fool: fab {mean_fab:.5f}, pgd {mean_pgd:.5f}")  # fmt: skip
    assert int(fab.success.sum()) >= int(pgd.success.sum()) - TOLERANCE
    # inside the box, and smaller than PGD's (which fills it) on the clips both fool
    assert (fab.linf <= EPS * (1 + 1e-5)).all()
    assert both.sum() >= 10 and mean_fab < 0.9 * mean_pgd
    # at the boundary: 95 % of a successful perturbation no longer fools the model
    delta = fab.x_adv - x
    with torch.no_grad():
        shrunk = model(x + 0.95 * delta).argmax(1) != y
    assert int(shrunk[fab.success].sum()) <= 1


# ---------------------------------------------------------------------------------------- budgets
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("budget", [{"eps": EPS}, {"snr_db": 20.0}, {"snr_db": 15.0, "envelope": 1.0}])
def test_every_example_within_budget(name: str, budget: dict, model: TinyLogMelCNN, clips) -> None:
    x, y = clips[0][:16].clone(), clips[1][:16]
    x[0] = x[0].sign() * 0.999  # a clip at full scale: the box meets [-1, 1]
    x[1, : x.shape[1] // 2] = 0.0  # half silent: with the envelope, no box there at all
    result = build_attack(name, {**budget, "steps": 10, "batch_size": 8}, model)(x, y)
    radius = Budget.create(name, "linf", **budget).radius(x)
    assert result.x_adv.min() >= -1 and result.x_adv.max() <= 1
    assert ((result.x_adv - x).abs() <= radius * (1 + 1e-5) + 1e-7).all()
    if "snr_db" in budget:
        assert (result.snr_db >= budget["snr_db"] - 1e-3).all()
    with torch.no_grad():
        assert torch.equal(result.success, model(result.x_adv).argmax(1) != y)
    assert result.success.any() and (result.iterations <= result.queries).all()


def test_a_box_per_clip_is_that_clips_eps(model: TinyLogMelCNN, clips) -> None:
    # snr_db gives each clip its own eps_i: the same attack as an absolute eps = eps_i on that clip
    # (up to rounding: the batched model's rounding can steer FAB's iterates to another, equally
    # small, perturbation)
    x, y = clips[0][:4], clips[1][:4]
    batched = FAB(model, snr_db=20.0, steps=10, batch_size=4)(x, y)
    radius = Budget.create("fab", "linf", snr_db=20.0).radius(x)[:, 0].double()
    assert batched.success.all() and (batched.linf < radius).all()
    for i in range(4):
        alone = FAB(model, eps=float(radius[i]), steps=10)(x[i : i + 1], y[i : i + 1])
        assert bool(alone.success[0])
        assert abs(float(alone.linf[0] - batched.linf[i])) <= 1e-3 * float(radius[i])


def test_plugs_into_the_ensemble(model: TinyLogMelCNN, clips) -> None:
    x, y = clips[0][:8], clips[1][:8]
    attack = build_member({"name": "fab_t", "params": {"steps": 10}}, 20.0, 0, 4, model)
    fooled = attack_success(model, attack, x, y, 20.0, 4)
    again = FABT(model, snr_db=20.0, steps=10, batch_size=4)(x, y)
    assert fooled.any() and fooled.tolist() == again.success.tolist()


# ------------------------------------------------------------------------------ runs and targets
def test_fab_t_aims_at_the_top_other_classes(model: TinyLogMelCNN, clips) -> None:
    x, y = clips[0][:4], clips[1][:4]
    attack = FABT(model, eps=1e-5, steps=3, n_target_classes=2, batch_size=4)
    aims: list[torch.Tensor] = []
    aim = attack.aim
    attack.aim = lambda s: (aims.append(aim(s)), aims[-1])[1]
    result = attack(x, y)
    assert not result.success.any()
    with torch.no_grad():
        ranked = model(x).argsort(dim=1, descending=True)
    assert torch.equal(aims[0], ranked[:, 1]) and torch.equal(aims[-1], ranked[:, 2])
    assert len(aims) == 2 * 3  # two targets, three steps each
    assert (result.iterations == 2 * 3).all()
    assert (result.queries == 1 + 2 * 3 * 2).all()  # the ranking, then two forward passes a step
    assert FABT(model, eps=EPS, n_target_classes=9).runs(x, y)["targets"].shape == (4, len(FREQS) - 1)


def test_a_clip_leaves_after_the_run_that_fooled_it(model: TinyLogMelCNN, clips) -> None:
    x, y = clips
    x, y = torch.cat([x, x[:1]]), torch.cat([y, (y[:1] + 1) % len(FREQS)])  # the last: wrong clean
    result = FAB(model, eps=EPS, steps=6, n_restarts=2, batch_size=16)(x, y)
    fooled, standing = result.success[:-1], ~result.success[:-1]
    assert fooled.any() and standing.any()
    # a run goes on to its last step; a clip fooled within the box leaves after its first run
    assert (result.iterations[:-1][fooled] == 6).all()
    assert (result.iterations[:-1][standing] == 2 * 6).all()
    assert (result.queries[:-1] == 2 * result.iterations[:-1]).all()
    # misclassified clean: left at once, unchanged, after one query
    assert result.success[-1] and torch.equal(result.x_adv[-1], x[-1])
    assert result.iterations[-1] == 0 and result.queries[-1] == 1


# ------------------------------------------------------------------------------------------ seeds
def _points(name: str, params: dict, model, x, y) -> tuple[object, list[torch.Tensor]]:
    """The attack's result and every point it took a gradient at, in order."""
    attack = build_attack(name, params, model)
    seen: list[torch.Tensor] = []
    boundary = attack.boundary
    attack.boundary = lambda x_eval, *rest: (seen.append(x_eval.clone()), boundary(x_eval, *rest))[1]
    return attack(x, y), seen


@pytest.mark.parametrize("name", NAMES)
def test_the_seed_drives_the_restarts(name: str, model: TinyLogMelCNN, clips) -> None:
    x, y = clips[0][:12], clips[1][:12]
    params = {"snr_db": 25.0, "steps": 4, "n_restarts": 2, "batch_size": 5, "seed": 3}
    if name == "fab_t":
        params["n_target_classes"] = 1
    first, points = _points(name, params, model, x, y)
    again, points_again = _points(name, params, model, x, y)
    assert torch.equal(first.x_adv, again.x_adv) and torch.equal(first.iterations, again.iterations)
    assert len(points) == len(points_again) and all(map(torch.equal, points, points_again))
    assert (first.iterations == 2 * 4).any(), "a clip should reach the random restart"
    _, points_other = _points(name, {**params, "seed": 4}, model, x, y)
    # the first run starts at the clean clip whatever the seed; the restarts start elsewhere
    assert torch.equal(points[0], points_other[0])
    assert not all(map(torch.equal, points, points_other))


# ---------------------------------------------------------------------------------- bad parameters
@pytest.mark.parametrize(
    "name,params,words",
    [
        ("fab", {"snr_db": 30, "steps": 0}, ["fab", "steps", ">= 1"]),
        ("fab_t", {"snr_db": 30, "steps": 2.5}, ["fab_t", "steps", "integer"]),
        ("fab", {"snr_db": 30, "n_restarts": 0}, ["fab", "n_restarts", ">= 1"]),
        ("fab_t", {"snr_db": 30, "n_target_classes": 0}, ["fab_t", "n_target_classes", ">= 1"]),
        ("fab", {"snr_db": 30, "alpha_max": 0}, ["fab", "alpha_max", "> 0"]),
        ("fab_t", {"snr_db": 30, "alpha_max": 1.0}, ["fab_t", "alpha_max", "< 1"]),
        ("fab", {"snr_db": 30, "eta": 0.9}, ["fab", "eta", ">= 1"]),
        ("fab", {"snr_db": 30, "beta": 1.0}, ["fab", "beta", "< 1"]),
        ("fab_t", {"snr_db": 30, "beta": -0.5}, ["fab_t", "beta", "> 0"]),
        ("fab", {"snr_db": 30, "n_target_classes": 3}, ["fab", "n_target_classes", "unknown"]),
        ("fab", {"snr_db": 30, "targeted": "random"}, ["fab", "targeted", "untargeted only"]),
        ("fab_t", {"snr_db": 30, "targeted": "least_likely"}, ["fab_t", "targeted", "untargeted only"]),
        ("fab_t", {"steps": 10}, ["fab_t", "budget"]),
    ],
)
def test_bad_parameters_are_rejected_by_name(name: str, params: dict, words: list[str]) -> None:
    with pytest.raises(AttackParamError) as info:
        build_attack(name, params)
    for word in words:
        assert word in str(info.value), str(info.value)
