"""Overhead of ``ltp_keras.find_ticket`` over the user's own ``model.fit`` time (goal: < 5%).

LeNet-300-100 on scikit-learn's digits, compiled by the user (Adam, batch 60) and trained by a
plain ``model.fit``. The baseline is what the user pays anyway: the same ``fit`` run as many
times as ``find_ticket`` trains (the dense run plus ticket, ``random_reinit`` and
``random_prune`` per level), each on a freshly built and compiled model, as the factory gives
``find_ticket``. ``find_ticket`` is timed end to end minus the time spent in the user's
``evaluate``; the difference is the library's cost: building pruners, installing the mask
constraints (and the recompiled step they need), resetting the optimizer, rewinding, computing
masks, and (with ``out``) writing results and state after every run. Baseline and
``find_ticket`` alternate in each round so machine noise hits both.

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
        "baseline (the user's fit alone)": [],
        "find_ticket, out=None": [],
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
                rows[names[2 if out else 1]].append(seconds)
    steps = args.epochs * -(-len(x) // 60)
    baseline = statistics.median(rows[names[0]])
    print(
        f"LeNet-300-100 on digits, Keras {keras.__version__} on {keras.backend.backend()}, "
        f"{runs} fits x {steps} Adam steps, {args.rounds} rounds"
    )
    print(f"baseline: {baseline / (runs * steps) * 1e3:.2f} ms per training step")
    print("| variant | median s | ratio to baseline (median of rounds) |")
    print("|---|---|---|")
    for name, times in rows.items():
        ratios = [t / b for t, b in zip(times, rows[names[0]], strict=True)]
        print(f"| {name} | {statistics.median(times):.3f} | {statistics.median(ratios):.3f}x |")


if __name__ == "__main__":
    main()
