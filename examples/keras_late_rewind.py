"""Iterative magnitude pruning with late rewinding (Frankle et al. 2019) on Keras 3.

The dense network is trained once with a ``RewindCheckpoint`` that captures every weight after
``--rewind-iteration`` optimizer steps. Each level then prunes 20% of the remaining weights by
trained magnitude (``large_final_global``), rewinds the survivors to the captured weights (not to
the initialization) and retrains with ``PrunerCallback``. Works on every Keras 3 backend.

Usage::

    python examples/keras_late_rewind.py                  # scikit-learn's digits, offline
    python examples/keras_late_rewind.py --smoke           # 2 levels, 1 epoch (tests)
"""

from __future__ import annotations

import argparse
import os

# Quiet TensorFlow's C++ start-up messages (must be set before Keras imports TensorFlow).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras

from ltp_core.datasets import load_dataset
from ltp_keras import LotteryTicketPruner, PrunerCallback, RewindCheckpoint


def make_model(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """A small conv net; its conv and dense kernels are prunable by default."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu", name="fc"),
            keras.layers.Dense(num_classes, name="output"),
        ]
    )


def compile_model(model: keras.Model) -> None:
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", help="digits, mnist or fashion_mnist")
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--rewind-iteration", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests")
    args = parser.parse_args()
    if args.smoke or os.environ.get("LTP_EXAMPLE_SMOKE"):
        args.dataset, args.levels, args.epochs = "digits", 2, 1

    keras.utils.set_random_seed(0)
    data = load_dataset(args.dataset, seed=0)
    model = make_model(data.input_shape, data.num_classes)
    pruner = LotteryTicketPruner(model, seed=0)
    # ``once=True`` (default): passing the same callback to later levels never re-captures.
    checkpoint = RewindCheckpoint(pruner, iteration=args.rewind_iteration)
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
            pruner.set_pretrained_weights(model)
            pruner.calc_prune_mask(model, 0.2, "large_final_global")
            pruner.rewind(model)  # to the weights captured at the rewind iteration, masked
        compile_model(model)  # fresh optimizer state for each level
        model.fit(**fit_args, callbacks=[checkpoint, PrunerCallback(pruner)])
        _, accuracy = model.evaluate(data.x_test, data.y_test, verbose=0)
        print(
            f"level {level}: {1 - pruner.cumulative_pruning_rate:6.1%} of weights remain, "
            f"test accuracy {accuracy:.3f} (rewind point: step {checkpoint.captured_at})"
        )


if __name__ == "__main__":
    main()
