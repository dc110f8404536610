"""Training-step throughput: plain vs ``ltp_torch.PrunerHook`` vs ``torch.nn.utils.prune``.

Each model (LeNet-300-100 on 28x28 inputs, a small conv net on 3x32x32 inputs) trains on random
data with SGD + momentum, one CPU thread. The same masks (80% of each weight pruned by magnitude)
are enforced in two ways:

* ``PrunerHook``: an optimizer step post-hook zeroes the pruned weights in place (a bitwise AND
  with an integer mask of the weights' width: exact zeros even over ``inf``);
* ``torch.nn.utils.prune``: a forward pre-hook recomputes ``weight = weight_orig * weight_mask``
  before every forward pass (the library's standard mechanism).

Variants are timed in interleaved rounds (so machine noise hits all alike); the table reports the
median steps/second, the median over rounds of the time per step relative to the plain loop in the
same round (1.040x = 4% slower than plain), and the ratio of the fastest rounds.

Usage::

    python benchmarks/bench_torch_hook.py                 # default: 9 rounds x 150 steps
    python benchmarks/bench_torch_hook.py --rounds 3 --steps 50 --ablation
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import prune

from ltp_torch import LotteryTicketPruner, PrunerHook

FRACTION = 0.8


def lenet_300_100() -> tuple[nn.Module, tuple[int, ...]]:
    """LeNet-300-100 (Frankle & Carbin's MNIST network) and its input shape."""
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 300),
        nn.ReLU(),
        nn.Linear(300, 100),
        nn.ReLU(),
        nn.Linear(100, 10),
    )
    return model, (60, 1, 28, 28)


def small_convnet() -> tuple[nn.Module, tuple[int, ...]]:
    """A small CIFAR-sized conv net and its input shape."""
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )
    return model, (32, 3, 32, 32)


class Run:
    """One variant: a model, an optimizer and a data batch, ready to take steps."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...]) -> None:
        generator = torch.Generator().manual_seed(1)
        self.model = model
        self.x = torch.randn(input_shape, generator=generator)
        self.y = torch.randint(0, 10, (input_shape[0],), generator=generator)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        self.loss = nn.CrossEntropyLoss()

    def steps(self, count: int) -> float:
        """Take ``count`` training steps; return the wall time in seconds."""
        start = time.perf_counter()
        for _ in range(count):
            self.optimizer.zero_grad(set_to_none=True)
            self.loss(self.model(self.x), self.y).backward()
            self.optimizer.step()
        return time.perf_counter() - start


def masked_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def make_variants(
    build: Callable[[], tuple[nn.Module, tuple[int, ...]]], ablation: bool
) -> dict[str, Run]:
    torch.manual_seed(0)
    base, shape = build()
    pruner = LotteryTicketPruner(base, seed=0)
    pruner.calc_prune_mask(base, FRACTION, "smallest_weights")
    variants: dict[str, Run] = {}

    variants["plain"] = Run(copy.deepcopy(base), shape)

    hooked = Run(copy.deepcopy(base), shape)
    hooked.hook = PrunerHook(pruner, hooked.model, hooked.optimizer)  # type: ignore[attr-defined]
    variants["PrunerHook"] = hooked

    dense_grads = Run(copy.deepcopy(base), shape)
    dense_grads.hook = PrunerHook(  # type: ignore[attr-defined]
        pruner, dense_grads.model, dense_grads.optimizer, mask_gradients=False
    )
    variants["PrunerHook(mask_gradients=False)"] = dense_grads

    model = copy.deepcopy(base)
    for (module, name), mask in zip(masked_weights(model), pruner.masks, strict=True):
        prune.custom_from_mask(module, name, torch.from_numpy(mask.astype("float32")))
    variants["torch.nn.utils.prune"] = Run(model, shape)

    if ablation:
        bool_run = Run(copy.deepcopy(base), shape)
        params = pruner.parameters(bool_run.model)
        masks = [torch.from_numpy(m) for m in pruner.masks]

        @torch.no_grad()
        def bool_hook(optimizer: object, args: object, kwargs: object) -> None:
            for parameter, mask in zip(params, masks, strict=True):
                parameter.mul_(mask)

        bool_run.optimizer.register_step_post_hook(bool_hook)
        variants["post-step bool mask (ablation)"] = bool_run

        float_run = Run(copy.deepcopy(base), shape)
        float_params = pruner.parameters(float_run.model)
        float_masks = [torch.from_numpy(m).float() for m in pruner.masks]

        @torch.no_grad()
        def float_hook(optimizer: object, args: object, kwargs: object) -> None:
            for parameter, mask in zip(float_params, float_masks, strict=True):
                parameter.mul_(mask)  # the 0.1 hook: inf * 0 = NaN at pruned entries

        float_run.optimizer.register_step_post_hook(float_hook)
        variants["post-step float mask multiply (ablation)"] = float_run
    return variants


def measure(
    variants: dict[str, Run], rounds: int, steps: int
) -> dict[str, tuple[float, float, float]]:
    """Per variant: median steps/s, median per-round time ratio to ``plain``, best-round ratio.

    The order of the variants rotates from round to round so none is always timed first. The
    paired median resists slow drifts of the machine's speed; the ratio of the fastest rounds
    resists bursts of load from other processes (noise only ever adds time).
    """
    for run in variants.values():
        run.steps(max(steps // 5, 3))  # warm-up
    names = list(variants)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            seconds[name].append(variants[name].steps(steps))
    plain = seconds["plain"]
    return {
        name: (
            statistics.median(steps / t for t in seconds[name]),
            statistics.median(t / p for t, p in zip(seconds[name], plain, strict=True)),
            min(seconds[name]) / min(plain),
        )
        for name in names
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds")
    parser.add_argument("--steps", type=int, default=150, help="training steps per round")
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="also time a bool-mask hook and the float-mask multiply of version 0.1",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    lines = [
        f"torch {torch.__version__}, 1 thread, {FRACTION:.0%} of each weight pruned, "
        f"medians of {args.rounds} interleaved rounds x {args.steps} steps",
        "",
        "| model | variant | steps/s | time/step vs plain (median) | (best rounds) |",
        "|---|---|---:|---:|---:|",
    ]
    for label, build in [("LeNet-300-100", lenet_300_100), ("small conv net", small_convnet)]:
        results = measure(make_variants(build, args.ablation), args.rounds, args.steps)
        for name, (rate, ratio, best) in results.items():
            lines.append(f"| {label} | {name} | {rate:.1f} | {ratio:.3f}x | {best:.3f}x |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
