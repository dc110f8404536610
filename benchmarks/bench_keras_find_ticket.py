"""Overhead of ``ltp_keras.find_ticket`` over the user's own ``model.fit`` time (goal: < 5%).

LeNet-300-100 on scikit-learn's digits, compiled by the user (Adam, batch 60) and trained by a
plain ``model.fit``. Two baselines of what the user pays anyway, each running ``fit`` as many
times as ``find_ticket`` trains (the dense run plus ticket, ``random_reinit`` and
``random_prune`` per level): on a freshly built and compiled model each time (what a factory
costs), and on one model whose compiled step ``fit`` reuses (the cheapest possible). ``find_ticket``
is timed end to end minus the time spent in the user's ``evaluate``; the difference is the
library's cost: building pruners, installing the mask constraints and the recompiled step they
need in every run, resetting the optimizer, rewinding, computing masks, and (with ``out``)
writing results and state after every run. Baselines and ``find_ticket`` alternate in each round
so machine noise hits all of them. Short runs are the worst case for the per-run costs.

Usage::

    KERAS_BACKEND=jax python benchmarks/bench_keras_find_ticket.py
    KERAS_BACKEND=tensorflow python benchmarks/bench_keras_find_ticket.py --rounds 3 --levels 2
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time

import keras

import ltp_keras
from ltp_core.datasets import load_dataset


def lenet_300_100() -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(300, activation="relu"),
            keras.layers.Dense(100, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        keras.optimizers.Adam(1.2e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--levels", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    data = load_dataset("digits", seed=0)
    x, y = data.x_train.reshape(len(data.x_train), -1), data.y_train
    x_test, y_test = data.x_test.reshape(len(data.x_test), -1), data.y_test

    def train(model: keras.Model) -> None:
        model.fit(x, y, batch_size=60, epochs=args.epochs, verbose=0)

    eval_seconds = {"t": 0.0}

    def evaluate(model: keras.Model) -> float:
        start = time.perf_counter()
        logits = model.predict(x_test, batch_size=len(x_test), verbose=0)
        accuracy = float((logits.argmax(1) == y_test).mean())
        eval_seconds["t"] += time.perf_counter() - start
        return accuracy

    runs = 1 + 3 * args.levels
    train(lenet_300_100())  # warm-up: first-call costs of the backend are nobody's overhead
    rows: dict[str, list[float]] = {
        "baseline: fit on a fresh model each time": [],
        "baseline: fit again on one model (step compiled once)": [],
        "find_ticket, out=None": [],
        "find_ticket, out=DIR": [],
    }
    names = list(rows)
    for _ in range(args.rounds):
        start = time.perf_counter()
        for _ in range(runs):
            train(lenet_300_100())
        rows[names[0]].append(time.perf_counter() - start)
        model = lenet_300_100()
        start = time.perf_counter()
        for _ in range(runs):
            train(model)
        rows[names[1]].append(time.perf_counter() - start)
        for out in (False, True):
            with tempfile.TemporaryDirectory() as folder:
                eval_seconds["t"] = 0.0
                start = time.perf_counter()
                ltp_keras.find_ticket(
                    lenet_300_100,
                    train,
                    evaluate,
                    levels=args.levels,
                    layer_rates={"dense_2/kernel": 0.5},
                    out=folder if out else None,
                    progress=False,
                )
                seconds = time.perf_counter() - start - eval_seconds["t"]
                rows[names[3 if out else 2]].append(seconds)
    steps = args.epochs * -(-len(x) // 60)
    baseline = statistics.median(rows[names[0]])
    print(
        f"LeNet-300-100 on digits, Keras {keras.__version__} on {keras.backend.backend()}, "
        f"{runs} fits x {steps} Adam steps, {args.rounds} rounds"
    )
    print(f"baseline: {baseline / (runs * steps) * 1e3:.2f} ms per training step")
    print("| variant | median s | ratio to fresh-model baseline | ratio to one-model baseline |")
    print("|---|---|---|---|")
    for name, times in rows.items():
        ratios = [
            statistics.median(t / b for t, b in zip(times, rows[base], strict=True))
            for base in names[:2]
        ]
        print(f"| {name} | {statistics.median(times):.3f} | {ratios[0]:.3f}x | {ratios[1]:.3f}x |")


if __name__ == "__main__":
    main()
