"""Training step time of every 2-D model of a config, channels-last (the zoo's layout) vs contiguous.

Prints, per model, the CPU seconds of one training step (forward, cross-entropy, backward, AdamW) on
a batch of random clips, in the zoo's channels-last layout and with the same weights kept contiguous
(NCHW), and their ratio. The two are timed in turn, step after step (medians of ``--repeats``), so
other jobs on the machine slow both alike. Also checks that the two layouts give the same logits up
to float rounding.

Usage::

    .venv/bin/python benchmarks/train_speed.py [--config config.yaml] [--batch-size 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from advmir.models.zoo import WaveformClassifier, build_model


def contiguous_copy(model: WaveformClassifier) -> WaveformClassifier:
    """The same cnn2d model with its classifier's weights and activations in the NCHW layout."""
    other = copy.deepcopy(model)
    arch = other.arch.to(memory_format=torch.contiguous_format)
    arch.forward = lambda x: arch.head(arch.features(x))  # type: ignore[method-assign]
    return other


def step_seconds(model: nn.Module, x: Tensor, y: Tensor) -> float:
    opt = torch.optim.AdamW(model.parameters())
    start = time.process_time()
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = yaml.safe_load(Path(args.config).read_text())
    rate = int(config["synth_notes"]["sample_rate"])
    clip = int(rate * float(config["synth_notes"]["clip_seconds"]))
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(args.batch_size, clip, generator=gen) * 0.1).clamp(-1, 1)
    y = torch.randint(0, 11, (args.batch_size,), generator=gen)
    print(f"{'model':<24} {'channels-last s':>16} {'contiguous s':>13} {'ratio':>6}  max |logit diff|")
    for name, spec in config["models"].items():
        if spec.get("arch") != "cnn2d":
            continue
        torch.manual_seed(0)
        fast = build_model(spec, 11, rate).eval()
        slow = contiguous_copy(fast).eval()
        with torch.no_grad():
            diff = (fast(x[:8]) - slow(x[:8])).abs().max().item()
        fast.train(), slow.train()
        times: dict[str, list[float]] = {"fast": [], "slow": []}
        for _ in range(args.repeats + 1):  # the first round warms up
            times["fast"].append(step_seconds(fast, x, y))
            times["slow"].append(step_seconds(slow, x, y))
        f, s = (statistics.median(times[k][1:]) for k in ("fast", "slow"))
        print(f"{name:<24} {f:>16.3f} {s:>13.3f} {f / s:>6.2f}  {diff:.2e}")


if __name__ == "__main__":
    main()
