"""The Keras experiment backend: models, weights in and out, masked training, the ``ltp`` CLI."""

from __future__ import annotations

import json
import logging

import keras
import numpy as np
import pytest

from ltp_core.cli import main
from ltp_core.datasets import Dataset, load_dataset
from ltp_core.experiment.backend import MODELS, TrainingBackend, TrainSettings, load_backend
from ltp_keras import LotteryTicketPruner
from ltp_keras.experiment import BatchOrder, KerasBackend
from ltp_keras.models import build_model, glorot_normal


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture
def backend() -> KerasBackend:
    # XLA compilation is slower than these short runs; the CLI test covers the default.
    return KerasBackend(jit_compile=False)


def _masks(weights: list[np.ndarray], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random(w.shape) < 0.4 for w in weights]


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3)])
@pytest.mark.parametrize("name", MODELS)
def test_every_model_builds_and_runs_forward(name: str, shape: tuple[int, int, int]) -> None:
    backend = KerasBackend()
    model = backend.build(name, shape, 10, seed=0)
    logits = keras.ops.convert_to_numpy(model(np.zeros((2, *shape), np.float32)))
    assert logits.shape == (2, 10)
    kinds = backend.layer_kinds(model)
    assert kinds[-1] == "output" and kinds.count("output") == 1
    assert ("conv" in kinds) == (name != "lenet300_100")
    names = backend.layer_names(model)
    assert names == LotteryTicketPruner(model).names
    assert [w.shape for w in backend.get_prunable(model)] == LotteryTicketPruner(model).shapes
    # Zero biases, Glorot-normal kernels.
    for variable in model.weights:
        value = keras.ops.convert_to_numpy(variable)
        if variable.name == "bias":
            assert not value.any()
    fc1 = keras.ops.convert_to_numpy(model.get_layer("fc1").kernel)
    fan_in, fan_out = fc1.shape
    assert fc1.std() == pytest.approx(np.sqrt(2 / (fan_in + fan_out)), rel=0.15)


def test_build_is_deterministic_per_seed() -> None:
    a = build_model("conv2", (8, 8, 1), 10, seed=3).get_weights()
    b = build_model("conv2", (8, 8, 1), 10, seed=3).get_weights()
    c = build_model("conv2", (8, 8, 1), 10, seed=4).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_initial_weights_come_from_numpy_so_every_keras_backend_agrees() -> None:
    model = build_model("lenet300_100", (8, 8, 1), 10, seed=5)
    rng = np.random.default_rng(5)
    for layer in ("fc1", "fc2", "output"):
        kernel = model.get_layer(layer).kernel
        expected = glorot_normal(rng, tuple(kernel.shape))
        assert np.array_equal(keras.ops.convert_to_numpy(kernel), expected)
    assert abs(expected).max() <= 2 * np.sqrt(2 / 110) / 0.8796256610342398 + 1e-6


def test_names_are_stable_across_builds() -> None:
    backend = KerasBackend()
    first = backend.layer_names(backend.build("lenet300_100", (8, 8, 1), 10, 0))
    second = backend.layer_names(backend.build("lenet300_100", (8, 8, 1), 10, 1))
    assert (
        first
        == second
        == [
            "lenet300_100/fc1/kernel",
            "lenet300_100/fc2/kernel",
            "lenet300_100/output/kernel",
        ]
    )


def test_backend_satisfies_protocol_and_loads_by_name() -> None:
    backend = load_backend("keras")
    assert isinstance(backend, KerasBackend)
    assert isinstance(backend, TrainingBackend)
    versions = backend.versions()
    assert versions["keras_backend"] == keras.backend.backend()
    assert versions["keras"] == keras.__version__


def test_snapshot_restore_and_prunable_round_trip(backend: KerasBackend) -> None:
    model = backend.build("mnist_cnn", (8, 8, 1), 10, seed=0)
    snapshot = backend.snapshot(model)
    assert len(snapshot) == len(model.weights)
    backend.set_prunable(
        model, [np.full(w.shape, 0.5, w.dtype) for w in backend.get_prunable(model)]
    )
    assert all((w == 0.5).all() for w in backend.get_prunable(model))
    variable = model.get_layer("fc1").kernel
    backend.restore(model, snapshot)
    position = [v.path for v in model.weights].index(variable.path)
    assert np.array_equal(keras.ops.convert_to_numpy(variable), snapshot[position])
    assert all(np.array_equal(a, b) for a, b in zip(backend.snapshot(model), snapshot, strict=True))


def test_wrong_arrays_are_rejected(backend: KerasBackend, digits: Dataset) -> None:
    model = backend.build("lenet300_100", digits.input_shape, 10, seed=0)
    weights = backend.get_prunable(model)
    with pytest.raises(ValueError, match=r"must hold 3 arrays\. Received: 2"):
        backend.set_prunable(model, weights[:2])
    with pytest.raises(ValueError, match="Received: shape"):
        backend.train(
            model, [np.ones((3, 3), bool)] * 3, digits, TrainSettings(iterations=1, eval_every=1)
        )
    with pytest.raises(ValueError, match="Received: optimizer='rmsprop'"):
        backend.train(model, None, digits, TrainSettings(iterations=1, optimizer="rmsprop"))
    with pytest.raises(ValueError, match="Received: batch_size=5000"):
        backend.train(model, None, digits, TrainSettings(iterations=1, batch_size=5000))
    with pytest.raises(ValueError, match="Received: jit_compile='yes'"):
        KerasBackend(jit_compile="yes")
    with pytest.raises(ValueError, match="Received: torch_threads=0"):
        KerasBackend(torch_threads=0)


def test_train_holds_pruned_weights_at_exact_zero(backend: KerasBackend, digits: Dataset) -> None:
    model = backend.build("lenet300_100", digits.input_shape, 10, seed=0)
    masks = _masks(backend.get_prunable(model))
    calls: list[tuple[int, int, dict[str, float]]] = []
    settings = TrainSettings(iterations=25, eval_every=10, seed=1)
    outcome = backend.train(model, masks, digits, settings, lambda *a: calls.append(a))
    assert [e.iteration for e in outcome.evaluations] == [10, 20, 25]
    assert [c[:2] for c in calls] == [(10, 25), (20, 25), (25, 25)]
    assert calls[-1][2]["val_acc"] == outcome.final.val_accuracy
    assert outcome.seconds > 0 and outcome.captured is None
    for weight, mask in zip(backend.get_prunable(model), masks, strict=True):
        assert (weight[~mask] == 0).all()
        assert (weight[mask] != 0).all()
    # Training moved the kept weights and learned something.
    assert outcome.final.val_accuracy > 0.5


def test_sgd_training_also_masks(backend: KerasBackend, digits: Dataset) -> None:
    model = backend.build("lenet300_100", digits.input_shape, 10, seed=0)
    masks = _masks(backend.get_prunable(model), seed=2)
    settings = TrainSettings(iterations=10, optimizer="sgd", learning_rate=0.05, eval_every=10)
    backend.train(model, masks, digits, settings)
    for weight, mask in zip(backend.get_prunable(model), masks, strict=True):
        assert (weight[~mask] == 0).all()


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch backend only")
def test_torch_threads_are_restored_after_training(digits: Dataset) -> None:
    import torch

    before = torch.get_num_threads()
    backend = KerasBackend(torch_threads=1)
    model = backend.build("lenet300_100", digits.input_shape, 10, seed=0)
    backend.train(model, None, digits, TrainSettings(iterations=2, eval_every=2))
    assert torch.get_num_threads() == before


def test_training_is_deterministic(backend: KerasBackend, digits: Dataset) -> None:
    model = backend.build("lenet300_100", digits.input_shape, 10, seed=0)
    start = backend.snapshot(model)
    masks = _masks(backend.get_prunable(model))
    settings = TrainSettings(iterations=15, eval_every=5, seed=7)
    first = backend.train(model, masks, digits, settings)
    after_first = backend.snapshot(model)
    backend.restore(model, start)
    second = backend.train(model, masks, digits, settings)  # optimizer state starts fresh too
    assert all(
        np.array_equal(a, b) for a, b in zip(after_first, backend.snapshot(model), strict=True)
    )
    assert first.evaluations == second.evaluations
    # A fresh backend and a fresh model built from the same seed agree as well.
    other = KerasBackend(jit_compile=False)
    fresh = other.build("lenet300_100", digits.input_shape, 10, seed=0)
    other.train(fresh, masks, digits, settings)
    assert all(
        np.array_equal(a, b) for a, b in zip(after_first, other.snapshot(fresh), strict=True)
    )
    # Another data order gives other weights.
    backend.restore(model, start)
    backend.train(model, masks, digits, TrainSettings(iterations=15, eval_every=5, seed=8))
    assert not np.array_equal(after_first[0], backend.snapshot(model)[0])


def test_dropout_model_is_deterministic(backend: KerasBackend, digits: Dataset) -> None:
    model = backend.build("mnist_cnn", digits.input_shape, 10, seed=0)
    start = backend.snapshot(model)
    settings = TrainSettings(iterations=4, batch_size=32, eval_every=4, seed=1)
    backend.train(model, None, digits, settings)
    after_first = backend.snapshot(model)
    backend.restore(model, start)
    backend.train(model, None, digits, settings)
    assert all(
        np.array_equal(a, b) for a, b in zip(after_first, backend.snapshot(model), strict=True)
    )


def test_capture_at_snapshots_the_weights_after_that_step(
    backend: KerasBackend, digits: Dataset
) -> None:
    model = backend.build("lenet300_100", digits.input_shape, 10, seed=0)
    start = backend.snapshot(model)
    masks = _masks(backend.get_prunable(model))
    outcome = backend.train(
        model, masks, digits, TrainSettings(iterations=12, eval_every=5, seed=3, capture_at=7)
    )
    assert outcome.captured is not None and len(outcome.captured) == len(start)
    assert [e.iteration for e in outcome.evaluations] == [5, 10, 12]
    backend.restore(model, start)
    backend.train(model, masks, digits, TrainSettings(iterations=7, eval_every=5, seed=3))
    assert all(
        np.array_equal(a, b) for a, b in zip(outcome.captured, backend.snapshot(model), strict=True)
    )


def test_evaluate_matches_keras_metrics(backend: KerasBackend, digits: Dataset) -> None:
    model = backend.build("lenet300_100", digits.input_shape, 10, seed=0)
    x, y = digits.x_test[:1234], digits.y_test[:1234]  # not a multiple of the eval batch
    loss, accuracy = KerasBackend(eval_batch_size=500).evaluate(model, x, y)
    logits = keras.ops.convert_to_numpy(model(x))
    expected = keras.ops.convert_to_numpy(
        keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
    ).mean()
    assert loss == pytest.approx(float(expected), rel=1e-5)
    assert accuracy == pytest.approx(float((logits.argmax(1) == y).mean()))


def test_batch_order_reshuffles_each_epoch_and_drops_the_remainder() -> None:
    order = BatchOrder(10, 3, seed=0)
    first_epoch = order.take(3)
    assert len(np.unique(first_epoch)) == 9
    second_epoch = order.take(3)
    assert not np.array_equal(first_epoch, second_epoch)
    assert np.array_equal(BatchOrder(10, 3, seed=0).take(6), np.vstack([first_epoch, second_epoch]))
    with pytest.raises(ValueError, match="Received: batch_size=11"):
        BatchOrder(10, 11, seed=0)


def test_cli_imp_runs_end_to_end_and_resumes(
    tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    out = str(tmp_path)
    argv = ["imp", "--framework", "keras", "--dataset", "digits", "--levels", "2"]
    argv += ["--iterations", "12", "--eval-every", "6", "--out", out, "--quiet", "--no-plots"]
    caplog.set_level(logging.INFO, logger="ltp_core")
    assert main(argv) == 0
    trained = [r for r in caplog.records if "early-stop iteration" in r.getMessage()]
    assert len(trained) == 1 + 2 * 3  # dense, then ticket + two controls per level
    with open(f"{out}/results.json") as f:
        first = json.load(f)
    arms = {(r["level"], r["arm"]) for r in first["records"]}
    assert arms == {(0, "ticket")} | {
        (level, arm) for level in (1, 2) for arm in ("ticket", "random_reinit", "random_prune")
    }
    assert first["versions"]["keras_backend"] == keras.backend.backend()

    caplog.clear()
    assert main(argv) == 0
    assert not [r for r in caplog.records if "early-stop iteration" in r.getMessage()]
    with open(f"{out}/results.json") as f:
        assert json.load(f)["records"] == first["records"]
