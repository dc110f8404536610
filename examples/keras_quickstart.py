"""Iterative magnitude pruning of an MNIST-style Keras model with ``model.fit``.

LeNet-300-100 (Frankle & Carbin 2019) is trained dense, then each level prunes 20% of the remaining
weights by trained magnitude (the output layer at half rate), rewinds the survivors to their
initial values and retrains them with ``PrunerCallback``, which holds the pruned weights at
exactly zero after every optimizer step. Works on every Keras 3 backend (``KERAS_BACKEND`` =
``tensorflow``, ``torch`` or ``jax``).

Usage::

    python examples/keras_quickstart.py                    # scikit-learn's digits, offline
    python examples/keras_quickstart.py --dataset mnist    # MNIST (downloaded once, ~11 MB)
    python examples/keras_quickstart.py --smoke            # 2 levels, 1 epoch (tests)
"""

from __future__ import annotations

import argparse
import os

# Quiet TensorFlow's C++ start-up messages (must be set before Keras imports TensorFlow).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras

from ltp_core.datasets import load_dataset
from ltp_keras import LotteryTicketPruner, PrunerCallback


def make_model(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(300, activation="relu", name="fc1"),
            keras.layers.Dense(100, activation="relu", name="fc2"),
            keras.layers.Dense(num_classes, name="output"),  # logits
        ]
    )


def compile_model(model: keras.Model) -> None:
    """A fresh Adam optimizer: every level starts without the previous level's moments."""
    model.compile(
        optimizer=keras.optimizers.Adam(1.2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", help="digits, mnist or fashion_mnist")
    parser.add_argument("--levels", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests")
    args = parser.parse_args()
    if args.smoke or os.environ.get("LTP_EXAMPLE_SMOKE"):
        args.dataset, args.levels, args.epochs = "digits", 2, 1

    keras.utils.set_random_seed(0)
    data = load_dataset(args.dataset, seed=0)
    model = make_model(data.input_shape, data.num_classes)
    pruner = LotteryTicketPruner(model, seed=0)  # records the initial weights
    fit_args = dict(
        x=data.x_train,
        y=data.y_train,
        validation_data=(data.x_val, data.y_val),
        batch_size=60,
        epochs=args.epochs,
        verbose=0,
    )

    for level in range(args.levels + 1):
        if level > 0:
            pruner.set_pretrained_weights(model)  # the weights just trained
            pruner.calc_prune_mask(model, 0.2, "large_final", layer_rates={"output": 0.5})
            pruner.rewind(model)  # initial weights, pruned ones exactly zero
        compile_model(model)
        model.fit(**fit_args, callbacks=[PrunerCallback(pruner)])
        _, accuracy = model.evaluate(data.x_test, data.y_test, verbose=0)
        remaining = 1.0 - pruner.cumulative_pruning_rate
        print(f"level {level}: {remaining:6.1%} of weights remain, test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
