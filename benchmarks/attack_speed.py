"""Speed of our PGD against torchattacks' fixed-step PGD, same model, same clips, same batch size.

Prints two ratios (issue 3, "Must show"):

1. time our PGD (early stopping, batch kept full) needs to reach the success rate of torchattacks'
   fixed-step PGD, divided by torchattacks' time. Target <= 0.5. "Reach" is the moment our running
   count of clean-correct clips seen to fool the model reaches theirs. Ours may take up to twice their
   steps (float32 rounding differs between the two implementations, so a clip or two near the
   boundary can need a step more); the clock stops when the count is reached.
2. our PGD's time per step (fixed steps, no early stopping; a step's time includes the pool's
   bookkeeping up to the next step) divided by one forward+backward pass (forward, then the gradient
   w.r.t. the input) of the same batch, the two timed in turn, step after step. Target <= 1.1.

Times are CPU seconds of this process by default (``--clock wall`` for wall time): the machine is
shared and other jobs inflate wall time at random. Medians of ``--repeats`` interleaved runs.

The model is a small CNN over log-mel: the trained ``logmel_cnn`` of the default run and clips of its
test split when they exist (``--checkpoint``, ``--dataset-dir``), else the zoo's log-mel CNN trained
for a few seconds on synthetic tones (``--synthetic``). torchattacks sees the model in its [0, 1]
range (x01 = (x + 1) / 2, eps and alpha halved). Both attacks use the same absolute eps (by default
the median clip's RMS 30 dB down: the stage's default PGD budget, stated as one eps for all clips, as
torchattacks takes it; ``--snr-db 40`` for a tighter one), a step of eps / 4, 10 steps and the same
start (the clean clip, no random start: in float64 the two agree step for step until ours stops a
clip, as tests/test_attacks.py checks).

Usage::

    .venv/bin/python benchmarks/attack_speed.py [--clips 256] [--batch-size 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from advmir.attacks import PGD  # noqa: E402
from advmir.attacks.base import ZeroOne  # noqa: E402


def synthetic(
    n: int, sample_rate: int = 16000, seconds: float = 1.0
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A zoo log-mel CNN trained for a few seconds on noisy tones of 4 classes; n test clips."""
    from advmir.models.zoo import build_model

    freqs = torch.tensor([220.0, 440.0, 880.0, 1760.0])
    length = int(sample_rate * seconds)

    def tones(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, 4, (count,), generator=g)
        t = torch.arange(length) / sample_rate
        env = torch.exp(-3 * t)[None]
        x = 0.5 * env * torch.sin(2 * np.pi * freqs[y][:, None] * t[None] + torch.rand(count, 1, generator=g))
        return (x + 0.01 * torch.randn(count, length, generator=g)).clamp(-1, 1), y

    torch.manual_seed(0)
    model = build_model({"frontend": "logmel", "arch": "cnn2d"}, 4, sample_rate)
    x, y = tones(256, 1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(30):
        idx = torch.randint(0, 256, (32,))
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    xt, yt = tones(n, 2)
    return model.eval(), xt, yt


def real(checkpoint: Path, dataset_dir: Path, n: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    from advmir.datasets.contract import load_dataset
    from advmir.models.zoo import load_model

    ds = load_dataset(dataset_dir)
    test = ds.split_indices("test")
    rows = np.sort(np.random.default_rng(0).permutation(test)[:n])
    x = torch.from_numpy(ds.float_waveforms(rows))
    y = torch.from_numpy(ds.manifest["label_idx"].to_numpy()[rows].astype(np.int64))
    return load_model(checkpoint, "cpu"), x, y


def success_rate(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, correct: torch.Tensor) -> float:
    with torch.no_grad():
        pred = torch.cat([model(x_adv[i : i + 64]).argmax(1) for i in range(0, len(x_adv), 64)])
    return float(((pred != y) & correct).sum() / correct.sum())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--checkpoint", type=Path, default=REPO / "results/models/synth_notes/logmel_cnn/model.ckpt"
    )
    p.add_argument("--dataset-dir", type=Path, default=REPO / "results/data/synth_notes")
    p.add_argument("--synthetic", action="store_true", help="use synthetic tones and a freshly trained CNN")
    p.add_argument("--clips", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--snr-db", type=float, default=30.0, help="eps = median clip RMS * 10^(-snr/20), for all")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats; medians are reported")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="process CPU time or wall time")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    # CPU time of this process: the machine is shared, and other jobs would inflate wall time at random
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    import torchattacks

    use_real = (
        not args.synthetic and args.checkpoint.exists() and (args.dataset_dir / "waveforms.npy").exists()
    )
    model, x, y = real(args.checkpoint, args.dataset_dir, args.clips) if use_real else synthetic(args.clips)
    with torch.no_grad():
        correct = torch.cat([model(x[i : i + 64]).argmax(1) for i in range(0, len(x), 64)]) == y
    rms = x.pow(2).mean(1).sqrt()
    eps = float(rms.median()) * 10 ** (-args.snr_db / 20)
    alpha, bs = eps / 4, args.batch_size
    source = "trained logmel_cnn, synth_notes test clips" if use_real else "log-mel CNN on synthetic tones"
    print(f"model: {source}")
    print(
        f"{len(x)} clips, batch {bs}, {args.steps} steps, eps {eps:.2e} (median SNR {args.snr_db} dB), "
        f"alpha eps/4, {args.threads} thread(s), clean accuracy {float(correct.float().mean()):.3f}"
    )

    # 1. torchattacks' fixed-step PGD vs ours with early stopping, same start; interleaved repeats
    def run_theirs() -> tuple[float, float]:
        attack = torchattacks.PGD(
            ZeroOne(model), eps=eps / 2, alpha=alpha / 2, steps=args.steps, random_start=False
        )
        t0 = clock()
        out = [attack((x[i : i + bs] + 1) / 2, y[i : i + bs]) for i in range(0, len(x), bs)]
        elapsed = clock() - t0
        return elapsed, success_rate(model, torch.cat(out) * 2 - 1, y, correct)

    def run_ours(need: int) -> tuple[float, float | None, float, float]:
        """Whole-run time, time when the running count of clean-correct clips seen fooled reached
        ``need`` (clips leave the pool the step they are seen to fool the model), success, mean steps."""
        attack = PGD(model, eps=eps, alpha=alpha, steps=2 * args.steps, random_start=False, batch_size=bs)
        trace: list[tuple[float, int]] = []
        step = attack.step

        def traced_step(state: dict) -> torch.Tensor:
            done = step(state)
            fooled = done & state["known"] & correct[state["idx"]]
            trace.append((clock(), int(fooled.sum()) + (trace[-1][1] if trace else 0)))
            return done

        attack.step = traced_step
        t0 = clock()
        result = attack(x, y)
        elapsed = clock() - t0
        rate = success_rate(model, result.x_adv, y, correct)
        reached = next((t - t0 for t, n in trace if n >= need), None)
        return elapsed, reached, rate, float(result.iterations.float().mean())

    runs_theirs, runs_ours = [], []
    for _ in range(args.repeats):
        runs_theirs.append(run_theirs())
        rate_theirs = runs_theirs[0][1]
        runs_ours.append(run_ours(math.ceil(rate_theirs * int(correct.sum()) - 1e-9)))
    t_theirs = statistics.median(r[0] for r in runs_theirs)
    t_ours = statistics.median(r[0] for r in runs_ours)
    rate_ours, steps_ours = runs_ours[0][2], runs_ours[0][3]
    reached_all = [r[1] for r in runs_ours]
    reached = statistics.median(reached_all) if None not in reached_all else None
    print(f"torchattacks PGD ({args.steps} steps): success {rate_theirs:.3f}, {t_theirs:.2f} s")
    print(
        f"our PGD (early stop, batch kept full, up to {2 * args.steps} steps): success {rate_ours:.3f}, "
        f"mean steps {steps_ours:.2f}, {t_ours:.2f} s for every clip; reached {rate_theirs:.3f} after "
        + (f"{reached:.2f} s" if reached is not None else "never")
    )
    if reached is not None:
        ratio = reached / t_theirs
        print(f"RATIO time to reach torchattacks' success / torchattacks' time: {ratio:.3f} (<= 0.5)")
    else:
        print(f"RATIO time to reach torchattacks' success: not reached ({rate_ours:.3f} < {rate_theirs:.3f})")

    # 2. our time per step vs one forward+backward of the same batch, measured in turn: before each of
    # our steps, one reference pass is timed; a step's time runs from its start to the start of the
    # next reference pass (so the pool's bookkeeping between steps counts; the one-off start and the
    # final verdict do not). Both are measured at the same moments, under the same load.
    xb, yb = x[:bs], y[:bs]
    ref_times: list[float] = []
    step_times: list[float] = []

    def reference_pass() -> None:
        xr = xb.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(xr), yb, reduction="sum")
        torch.autograd.grad(loss, xr)

    for _ in range(args.repeats):
        attack = PGD(
            model, eps=eps, alpha=alpha, steps=12, random_start=True, early_stop=False, batch_size=bs
        )
        marks: list[float] = []
        step = attack.step

        def timed_step(state: dict, step=step, marks=marks) -> torch.Tensor:
            t0 = clock()
            if marks:
                step_times.append(t0 - marks[-1])
            reference_pass()  # inside the attack: the model is in eval mode with frozen parameters
            t1 = clock()
            ref_times.append(t1 - t0)
            marks.append(t1)
            return step(state)

        attack.step = timed_step
        attack(xb, yb)
    t_pass, t_step = statistics.median(ref_times), statistics.median(step_times)
    print(
        f"one forward+backward (batch {bs}): {t_pass * 1000:.1f} ms; our PGD per step: {t_step * 1000:.1f} ms"
    )
    print(f"RATIO PGD time per step / forward+backward: {t_step / t_pass:.3f} (<= 1.1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
