"""Find a winning lottery ticket with nothing but NumPy.

A small multilayer perceptron (64-128-64-10) is trained on scikit-learn's handwritten digits with
plain mini-batch SGD written in NumPy. Each level then prunes 20% of the remaining weights by
trained magnitude (``large_final``; the output layer at half rate, as Frankle & Carbin do),
rewinds the survivors to their initial values and retrains with the pruned weights held at zero.
The ``ltp_core`` pruner makes every pruning decision; the training loop is yours.

Usage::

    python examples/numpy_quickstart.py            # a few seconds on a CPU
    python examples/numpy_quickstart.py --smoke    # 2 levels, 2 epochs (tests)

Needs ``pip install "lottery-tickets[data]"`` (scikit-learn ships the digits).
"""

from __future__ import annotations

import argparse
import itertools
import os

import numpy as np

from ltp_core import LotteryTicketPruner
from ltp_core.datasets import load_dataset

SIZES = [64, 128, 64, 10]
NAMES = ["hidden1", "hidden2", "output"]


def init_weights(rng: np.random.Generator) -> list[np.ndarray]:
    """He-normal weight matrices, one per layer."""
    return [
        rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_in, fan_out)).astype(np.float32)
        for fan_in, fan_out in itertools.pairwise(SIZES)
    ]


def forward(weights, biases, x):
    """Activations of every layer; the last entry holds the logits."""
    activations = [x]
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = activations[-1] @ w + b
        activations.append(np.maximum(h, 0.0) if i < len(weights) - 1 else h)
    return activations


def train(weights, biases, masks, x, y, epochs, rng, lr=0.1, batch=32):
    """Mini-batch SGD on softmax cross-entropy; pruned weights stay exactly zero."""
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch):
            index = order[start : start + batch]
            activations = forward(weights, biases, x[index])
            logits = activations[-1]
            probs = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            probs[np.arange(len(index)), y[index]] -= 1.0
            grad = probs / len(index)
            for i in reversed(range(len(weights))):
                grad_w = activations[i].T @ grad
                grad_b = grad.sum(axis=0)
                if i > 0:
                    grad = (grad @ weights[i].T) * (activations[i] > 0)
                weights[i] -= lr * grad_w
                biases[i] -= lr * grad_b
                weights[i] *= masks[i]  # keep the pruned weights at exactly zero


def accuracy(weights, biases, x, y) -> float:
    return float((forward(weights, biases, x)[-1].argmax(axis=1) == y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests")
    args = parser.parse_args()
    if args.smoke or os.environ.get("LTP_EXAMPLE_SMOKE"):
        args.levels, args.epochs = 2, 2

    data = load_dataset("digits", seed=0)
    x_train = data.x_train.reshape(len(data.x_train), -1)
    x_test = data.x_test.reshape(len(data.x_test), -1)

    initial = init_weights(np.random.default_rng(0))
    pruner = LotteryTicketPruner(initial, names=NAMES, seed=0)

    for level in range(args.levels + 1):
        # Rewind: initial weights with the pruned ones set to zero (all kept at level 0).
        weights = pruner.masked_rewind_weights()
        biases = [np.zeros(n, dtype=np.float32) for n in SIZES[1:]]
        rng = np.random.default_rng(level)
        train(weights, biases, pruner.masks, x_train, data.y_train, args.epochs, rng)
        remaining = 1.0 - pruner.cumulative_pruning_rate
        test = accuracy(weights, biases, x_test, data.y_test)
        print(f"level {level}: {remaining:6.1%} of weights remain, test accuracy {test:.3f}")

        # Rank the trained weights and prune 20% of what remains (output layer: 10%).
        pruner.set_pretrained_weights(weights)
        pruner.calc_prune_mask(weights, 0.2, "large_final", layer_rates={"output": 0.5})


if __name__ == "__main__":
    main()
