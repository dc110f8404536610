"""Find a winning ticket in your own Keras model with ``ltp_keras.find_ticket``.

The model is compiled by you and trained by your own ``model.fit``; find_ticket runs iterative
magnitude pruning with both controls around it (no callback to pass: the masks are held inside
the compiled train step on TensorFlow, torch and JAX). Results, a table and a plot go to
``keras_ticket/``; running again resumes instead of retraining. Offline on scikit-learn's digits,
a couple of minutes on a CPU (seconds with ``LTP_EXAMPLE_SMOKE=1``).

Usage::

    KERAS_BACKEND=jax python examples/keras_find_ticket.py
"""

from __future__ import annotations

import os

import keras

from ltp_core.datasets import load_dataset
from ltp_keras import find_ticket

SMOKE = os.environ.get("LTP_EXAMPLE_SMOKE") == "1"
LEVELS = 1 if SMOKE else 6
EPOCHS = 1 if SMOKE else 10


def make_model() -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def main() -> None:
    data = load_dataset("digits", seed=0)
    x_train, x_test = data.x_train.reshape(-1, 64), data.x_test.reshape(-1, 64)

    def train(model: keras.Model) -> None:
        model.fit(x_train, data.y_train, epochs=EPOCHS, batch_size=64, verbose=0)

    def evaluate(model: keras.Model) -> dict[str, float]:
        return model.evaluate(x_test, data.y_test, verbose=0, return_dict=True)

    records = find_ticket(
        make_model,
        train,
        evaluate,
        levels=LEVELS,
        rate=0.3,
        layer_rates={"dense_2/kernel": 0.5},  # the output layer at half rate
        rewind_iteration=10,
        out="keras_ticket",
        progress=False,
    )
    for record in records:
        print(
            f"level {record.level} {record.arm:>13}: {record.weights_remaining:6.1%} of weights "
            f"left, accuracy {record.metrics['accuracy']:.3f}"
        )
    print("results, table.md and the plot are in keras_ticket/")


if __name__ == "__main__":
    main()
