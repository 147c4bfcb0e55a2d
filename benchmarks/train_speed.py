"""Training step time of every 2-D model of a config: the zoo's build (channels-last, blocks
conv -> max-pool -> BN -> ReLU) vs the same weights kept contiguous (NCHW), and vs the older block
order conv -> BN -> ReLU -> max-pool.

Prints, per model, the CPU seconds of one training step (forward, cross-entropy, backward, AdamW) on
a batch of random clips for each variant, and each variant's time over the zoo's (>1: the zoo's is
faster). The variants are timed in turn, step after step (medians of ``--repeats``), so other jobs on
the machine slow them alike. Also checks that the two layouts give the same logits up to float
rounding (the block orders are different networks: no such check).

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
    print(
        f"{'model':<24} {'zoo s':>7} {'contiguous s':>13} {'ratio':>6} {'pool-last s':>12} {'ratio':>6}"
        "  max |logit diff| (layouts)"
    )
    for name, spec in config["models"].items():
        if spec.get("arch") != "cnn2d":
            continue
        torch.manual_seed(0)
        zoo = build_model(spec, 11, rate).eval()
        contiguous = contiguous_copy(zoo).eval()
        with torch.no_grad():
            diff = (zoo(x[:8]) - contiguous(x[:8])).abs().max().item()
        last_spec = {**spec, "arch_args": {**spec.get("arch_args", {}), "pool_first": False}}
        pool_last = build_model(last_spec, 11, rate)
        variants = {"zoo": zoo.train(), "contiguous": contiguous.train(), "pool_last": pool_last.train()}
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.repeats + 1):  # the first round warms up
            for key, model in variants.items():
                times[key].append(step_seconds(model, x, y))
        z, c, p = (statistics.median(times[k][1:]) for k in variants)
        print(f"{name:<24} {z:>7.3f} {c:>13.3f} {c / z:>6.2f} {p:>12.3f} {p / z:>6.2f}  {diff:.2e}")


if __name__ == "__main__":
    main()
