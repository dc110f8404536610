"""ltp_keras.find_ticket on a tiny MLP trained by the user's own ``model.fit`` (no callback
passed): both controls, exact zeros after every optimizer step, optimizer reset between runs,
late rewinding, resume, and bad input. Runs once per Keras backend."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from ltp_keras import find_ticket
from ltp_keras.ticket_search import canonical_names

RNG = np.random.default_rng(0)
X = RNG.normal(size=(96, 10)).astype("float32")
Y = (X[:, 0] + X[:, 1] > 0).astype("int32")


def make_mlp() -> keras.Model:
    model = keras.Sequential(
        [keras.Input((10,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)]
    )
    model.compile(
        keras.optimizers.Adam(0.01),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


class ZeroWatch(keras.callbacks.Callback):
    """After every batch, which kernel entries are exactly zero, and the optimizer step."""

    def __init__(self) -> None:
        super().__init__()
        self.zeros: list[list[np.ndarray]] = []
        self.steps: list[int] = []

    def on_train_begin(self, logs: Any = None) -> None:
        self.start_step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        model = self.model
        self.zeros.append([keras.ops.convert_to_numpy(layer.kernel) == 0 for layer in model.layers])
        self.steps.append(int(keras.ops.convert_to_numpy(model.optimizer.iterations)))


class UserTraining:
    """The user's ``train``: a plain ``fit`` with their own callback; records every call."""

    def __init__(self, epochs: int = 1) -> None:
        self.epochs = epochs
        self.watches: list[ZeroWatch] = []

    def __call__(self, model: keras.Model) -> None:
        watch = ZeroWatch()
        self.watches.append(watch)
        model.fit(X, Y, batch_size=16, epochs=self.epochs, verbose=0, callbacks=[watch])


def evaluate(model: keras.Model) -> dict[str, float]:
    return model.evaluate(X, Y, verbose=0, return_dict=True)


def test_fit_with_both_controls_exact_zeros_and_resume(tmp_path: Path) -> None:
    train = UserTraining()
    out = tmp_path / "run"
    records = find_ticket(
        make_mlp, train, evaluate, levels=2, rate=0.5, rewind_iteration=2, out=out, progress=False
    )
    assert [(r.level, r.arm) for r in records] == [
        (0, "ticket"),
        (1, "ticket"),
        (1, "random_reinit"),
        (1, "random_prune"),
        (2, "ticket"),
        (2, "random_reinit"),
        (2, "random_prune"),
    ]
    assert [r.weights_remaining for r in records] == [1.0] + [0.5] * 3 + [0.25] * 3
    assert len(train.watches) == 7
    for record, watch in zip(records, train.watches, strict=True):
        # Every run starts from a fresh optimizer: 6 steps counted from 0.
        assert watch.start_step == 0 and watch.steps == list(range(1, 7))
        assert record.extra["optimizer_steps"] == 6
        # The zero pattern is the same after every step and has exactly the pruned count.
        first = watch.zeros[0]
        assert all(
            all(np.array_equal(a, b) for a, b in zip(first, zeros, strict=True))
            for zeros in watch.zeros
        )
        kept = [float(1 - z.mean()) for z in first]
        assert kept == pytest.approx(record.layer_density)
        assert set(record.metrics) == {"accuracy", "loss"}
    # The controls use other masks or other weights than the ticket.
    ticket, _, random_prune = train.watches[1:4]
    assert not all(
        np.array_equal(a, b) for a, b in zip(ticket.zeros[0], random_prune.zeros[0], strict=True)
    )
    files = {p.name for p in out.iterdir()}
    assert {"results.json", "results.csv", "table.md"} <= files
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["prunable"] == ["dense/kernel", "dense_1/kernel"]

    # Same experiment again: nothing retrains. One more level: only that level trains, with
    # models rebuilt by the factory (new automatic layer names, same canonical names).
    again = find_ticket(
        make_mlp, train, evaluate, levels=2, rate=0.5, rewind_iteration=2, out=out, progress=False
    )
    assert len(train.watches) == 7
    assert [(r.level, r.arm, r.metrics) for r in again] == [
        (r.level, r.arm, r.metrics) for r in records
    ]
    more = find_ticket(
        make_mlp, train, evaluate, levels=3, rate=0.5, rewind_iteration=2, out=out, progress=False
    )
    assert len(train.watches) == 10 and [r.level for r in more[7:]] == [3, 3, 3]
    assert more[7].weights_remaining == 0.125
    with pytest.raises(ValueError, match="different experiment"):
        find_ticket(make_mlp, train, evaluate, levels=2, rate=0.3, out=out, progress=False)


def test_model_instance_compiled_once_and_late_rewinding(tmp_path: Path) -> None:
    """One compiled model passed in: its optimizer is reset between runs, random_reinit draws a
    seeded fresh initialization into it, and the rewind point is the weights after step 3."""
    model = make_mlp()
    initial = [np.array(w) for w in model.get_weights()]
    starts: list[list[np.ndarray]] = []

    def train(m: keras.Model) -> None:
        assert m is model
        starts.append([np.array(w) for w in m.get_weights()])
        m.fit(X, Y, batch_size=16, epochs=1, verbose=0)

    records = find_ticket(
        model, train, evaluate, levels=1, rate=0.5, rewind_iteration=3, out=tmp_path / "r"
    )
    assert len(records) == 4 and len(starts) == 4
    dense, ticket, reinit, random_prune = starts
    for start, init in zip(dense, initial, strict=True):
        np.testing.assert_array_equal(start, init)
    # random_prune starts from the initialization (pruned); the ticket from the weights after
    # step 3 of the dense run, which differ from the initialization; reinit from fresh weights.
    np.testing.assert_array_equal(random_prune[1], initial[1])  # bias: not pruned
    assert not np.array_equal(ticket[1], initial[1])
    assert not np.array_equal(reinit[0][reinit[0] != 0], initial[0][reinit[0] != 0])
    assert all(r.extra["optimizer_steps"] == 6 for r in records)
    # The instance is given back at its initial weights, so a second call starts from there.
    for now, init in zip(model.get_weights(), initial, strict=True):
        np.testing.assert_array_equal(now, init)


def test_rewind_beyond_the_dense_run_and_bad_input(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ValueError, match="rewind_iteration=50"):
        find_ticket(
            make_mlp, UserTraining(1), evaluate, levels=1, rewind_iteration=50, progress=False
        )
    with pytest.raises(TypeError, match=r"keras\.Model"):
        find_ticket("mlp", UserTraining(), evaluate, levels=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"must return a keras\.Model"):
        find_ticket(lambda: "mlp", UserTraining(), evaluate, levels=1)
    with pytest.raises(ValueError, match="factory"):
        find_ticket(make_mlp(), UserTraining(), evaluate, levels=1, seeds=2)
    with pytest.raises(ValueError, match="levels=0"):
        find_ticket(make_mlp, UserTraining(), evaluate, levels=0)
    with pytest.raises(ValueError, match="layer_rates"):
        find_ticket(make_mlp, UserTraining(), evaluate, levels=1, layer_rates={"nope": 0.5})
    with pytest.raises(TypeError, match="evaluate"):
        find_ticket(make_mlp, UserTraining(1), lambda m: "good", levels=1, progress=False)

    class Subclassed(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x: Any) -> Any:
            return self.dense(x)

    subclassed = Subclassed()
    subclassed(X[:1])
    with pytest.raises(ValueError, match="random_reinit"):
        find_ticket(subclassed, UserTraining(), evaluate, levels=1)
    with caplog.at_level(logging.WARNING, logger="ltp_keras"):
        find_ticket(
            make_mlp,
            lambda m: None,
            lambda m: 0.5,
            levels=1,
            controls=("random_prune",),
            progress=False,
        )
    assert "made no step" in caplog.text


def test_canonical_names_do_not_depend_on_earlier_models() -> None:
    first, second = make_mlp(), make_mlp()
    assert first.layers[0].name != second.layers[0].name
    names = [canonical_names(m, [layer.kernel for layer in m.layers]) for m in (first, second)]
    assert names[0] == names[1] == ["dense/kernel", "dense_1/kernel"]


@pytest.mark.skipif(
    keras.backend.backend() == "jax", reason="a JAX loop is stateless: it does not call apply"
)
def test_custom_loop_calling_the_model_optimizer() -> None:
    """A hand-written loop (GradientTape or loss.backward) that steps model.optimizer.apply is
    masked too: exact zeros after every step."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    zeros_per_run: list[list[list[np.ndarray]]] = []

    def train(model: keras.Model) -> None:
        zeros_per_run.append([])
        variables = model.trainable_variables
        for start in range(0, len(X), 16):
            x, y = X[start : start + 16], Y[start : start + 16]
            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                with tf.GradientTape() as tape:
                    loss = loss_fn(y, model(x, training=True))
                grads = tape.gradient(loss, variables)
            else:
                import torch

                model.zero_grad()
                loss_fn(torch.as_tensor(y), model(torch.as_tensor(x), training=True)).backward()
                grads = [v.value.grad for v in variables]
            model.optimizer.apply(grads, variables)
            zeros_per_run[-1].append(
                [keras.ops.convert_to_numpy(layer.kernel) == 0 for layer in model.layers]
            )

    records = find_ticket(
        make_mlp, train, evaluate, levels=1, rate=0.5, controls=("random_prune",), progress=False
    )
    assert [r.extra["optimizer_steps"] for r in records] == [6, 6, 6]
    for record, zeros in zip(records[1:], zeros_per_run[1:], strict=True):
        first = zeros[0]
        for step in zeros:
            assert all(np.array_equal(a, b) for a, b in zip(first, step, strict=True))
        assert [float(1 - z.mean()) for z in first] == pytest.approx(record.layer_density)


def test_resuming_with_a_changed_model_is_refused(tmp_path: Path) -> None:
    def tanh_mlp() -> keras.Model:
        model = make_mlp()
        changed = keras.Sequential(
            [keras.Input((10,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(2)]
        )
        changed.compile(model.optimizer, model.loss)
        return changed

    out = tmp_path / "run"
    find_ticket(make_mlp, UserTraining(), evaluate, levels=1, controls=(), out=out, progress=False)
    with pytest.raises(ValueError, match="is not the one this experiment started with"):
        find_ticket(
            tanh_mlp, UserTraining(), evaluate, levels=2, controls=(), out=out, progress=False
        )
    # the same architecture, built again in this process (other generated layer names)
    records = find_ticket(
        make_mlp, UserTraining(), evaluate, levels=2, controls=(), out=out, progress=False
    )
    assert [r.level for r in records] == [0, 1, 2]
