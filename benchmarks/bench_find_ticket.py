"""Overhead of ``ltp_torch.find_ticket`` over the user's own training time (goal: < 5%).

LeNet-300-100 on scikit-learn's digits, trained by a hand-written loop (Adam, batch 60, one CPU
thread). The baseline is what the user pays anyway: the same loop run as many times as
``find_ticket`` trains (the dense run plus ticket, ``random_reinit`` and ``random_prune`` per
level), each on a fresh model. ``find_ticket`` is timed end to end minus the time spent in the
user's ``evaluate``; the difference is the library's cost: building pruners, masking after every
optimizer step, rewinding, computing masks, and (with ``--out``) writing results, state and plot
after every run. Baseline and ``find_ticket`` alternate in each round so machine noise hits both.

Usage::

    python benchmarks/bench_find_ticket.py                  # 5 rounds, 4 levels, 20 epochs
    python benchmarks/bench_find_ticket.py --rounds 3 --levels 2 --epochs 5
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time

import torch
from torch import nn

import ltp_torch
from ltp_core.datasets import load_dataset
from ltp_core.experiment.plots import plot_imp


def lenet_300_100() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 300),
        nn.ReLU(),
        nn.Linear(300, 100),
        nn.ReLU(),
        nn.Linear(100, 10),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    data = load_dataset("digits", seed=0)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    x_test, y_test = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    steps = {"n": 0}

    def train(model: nn.Module) -> None:
        optimizer = torch.optim.Adam(model.parameters(), lr=1.2e-3)
        model.train()
        for _ in range(args.epochs):
            order = torch.randperm(len(x))
            for start in range(0, len(x) - 59, 60):
                batch = order[start : start + 60]
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
                optimizer.step()
                steps["n"] += 1

    eval_seconds = {"t": 0.0}

    @torch.no_grad()
    def evaluate(model: nn.Module) -> float:
        start = time.perf_counter()
        model.eval()
        accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
        eval_seconds["t"] += time.perf_counter() - start
        return accuracy

    runs = 1 + 3 * args.levels
    train(lenet_300_100())  # warm-up: first-call costs of torch are nobody's overhead
    steps["n"] = 0
    rows: dict[str, list[float]] = {
        "baseline (the user's loop alone)": [],
        "find_ticket, out=None": [],
        "find_ticket, out=DIR without the final plot": [],
        "find_ticket, out=DIR": [],
    }
    names = list(rows)
    for _ in range(args.rounds):
        start = time.perf_counter()
        for _ in range(runs):
            train(lenet_300_100())
        rows[names[0]].append(time.perf_counter() - start)
        for out in (False, True):
            with tempfile.TemporaryDirectory() as folder:
                eval_seconds["t"] = 0.0
                start = time.perf_counter()
                records = ltp_torch.find_ticket(
                    lenet_300_100,
                    train,
                    evaluate,
                    levels=args.levels,
                    layer_rates={"5.weight": 0.5},
                    out=folder if out else None,
                    progress=False,
                )
                seconds = time.perf_counter() - start - eval_seconds["t"]
                if not out:
                    rows[names[1]].append(seconds)
                    continue
                plot_start = time.perf_counter()  # the same plot again: what it costs
                plot_imp(records, folder)
                rows[names[2]].append(seconds - (time.perf_counter() - plot_start))
                rows[names[3]].append(seconds)
    per_run_steps = steps["n"] // (3 * args.rounds * runs)
    baseline = statistics.median(rows[names[0]])
    print(
        f"LeNet-300-100 on digits, {runs} trainings x {per_run_steps} Adam steps, "
        f"{args.rounds} rounds, 1 thread"
    )
    print(f"baseline: {baseline / (runs * per_run_steps) * 1e3:.2f} ms per training step")
    print("| variant | median s | ratio to baseline (median of rounds) |")
    print("|---|---|---|")
    for name, times in rows.items():
        ratios = [t / b for t, b in zip(times, rows[names[0]], strict=True)]
        print(f"| {name} | {statistics.median(times):.3f} | {statistics.median(ratios):.3f}x |")


if __name__ == "__main__":
    main()
