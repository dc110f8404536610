"""Batched training (``ltp_keras.batched``) equals the sequential runner (backend and ``ltp imp``).

Run once per Keras backend. Tolerances: on JAX and torch the batched program computes every
replica with the same kernels as the sequential one and the weights agree bit for bit (measured);
on TensorFlow XLA compiles a batched matrix product, which may sum the same products in another
order than the single one, so weights differ by float32 rounding (measured ~4e-7 after 300 SGD
steps; SGD keeps such differences at that size, so 1e-5 over 200 steps). Adam divides each step
by the root of the squared gradients, which turns rounding noise in near-zero gradients into
full-size steps, so Adam is compared over a short run with a tolerance of about one step (lr
1.2e-3). Masks and pruned entries (exactly +0.0) are compared exactly. ``KerasBackend(
batched=True)`` batches on every backend (``"auto"``, the default, only on torch).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import keras
import numpy as np
import pytest

from ltp_core.datasets import Dataset, load_dataset
from ltp_core.experiment.backend import TrainSettings
from ltp_core.experiment.config import ImpConfig
from ltp_core.experiment.imp import run_imp
from ltp_core.pruner import LotteryTicketPruner
from ltp_keras.batched import stackable, unstackable_reason
from ltp_keras.experiment import KerasBackend

EXACT = keras.backend.backend() in ("jax", "torch")


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="module")
def backend() -> KerasBackend:
    # Batched on every Keras backend, not only torch ("auto"). TensorFlow: graph mode, whose
    # programs compile much faster than XLA's; the SGD test compares XLA (the default) too.
    return KerasBackend(batched=True, jit_compile=False)


def _masks(backend: KerasBackend, model: keras.Model, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random(w.shape) > 0.5 for w in backend.get_prunable(model)]


def _small_conv_net(seed: int) -> keras.Model:
    """Conv2D, pooling, Dense: the built-in conv nets' layers, small enough to compile fast."""
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(2, name="pool1"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(10, name="output"),
        ]
    )
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in model.weights])
    return model


def _compare(
    backend: KerasBackend,
    digits: Dataset,
    model_name: str,
    settings: TrainSettings,
    atol: float,
) -> None:
    def build() -> list[keras.Model]:
        if model_name == "small_conv":
            return [_small_conv_net(s) for s in range(3)]
        return [backend.build(model_name, digits.input_shape, 10, seed=s) for s in range(3)]

    models, alone = build(), build()
    masks = [None, _masks(backend, models[0], 1), _masks(backend, models[0], 2)]
    per_run = [
        TrainSettings(**{**settings.__dict__, "seed": 10 + r, "capture_at": 3 if r == 0 else None})
        for r in range(3)
    ]
    sequential = [
        backend.train(m, mk, digits, s) for m, mk, s in zip(alone, masks, per_run, strict=True)
    ]
    calls: list[tuple[int, int]] = []
    progress = [None, lambda step, total, metrics: calls.append((step, total)), None]
    batched = backend.train_batched(models, masks, digits, per_run, progress)
    assert batched is not None
    assert calls == [(e.iteration, settings.iterations) for e in sequential[1].evaluations]
    for r in range(3):
        assert batched[r].extra["batched_replicas"] == 3
        for a, b in zip(backend.snapshot(alone[r]), backend.snapshot(models[r]), strict=True):
            np.testing.assert_allclose(b, a, rtol=0, atol=0 if EXACT else atol)
        if masks[r] is not None:
            for weight, mask in zip(backend.get_prunable(models[r]), masks[r], strict=True):
                pruned = weight[~mask]
                assert np.all(pruned == 0) and not np.signbit(pruned).any()  # exactly +0.0
        steps = [e.iteration for e in sequential[r].evaluations]
        assert [e.iteration for e in batched[r].evaluations] == steps
        for e, f in zip(sequential[r].evaluations, batched[r].evaluations, strict=True):
            assert f.val_loss == pytest.approx(e.val_loss, abs=0 if EXACT else 1e-4)
    captured_a, captured_b = sequential[0].captured, batched[0].captured
    assert captured_a is not None and captured_b is not None  # late rewinding
    for a, b in zip(captured_a, captured_b, strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=0 if EXACT else atol)


def test_batched_sgd_equals_sequential_for_200_steps(
    backend: KerasBackend, digits: Dataset
) -> None:
    settings = TrainSettings(
        iterations=200, eval_every=100, optimizer="sgd", learning_rate=0.05, batch_size=60
    )
    _compare(backend, digits, "lenet300_100", settings, atol=1e-5)
    if keras.backend.backend() == "tensorflow":  # XLA, the default for dense models
        _compare(KerasBackend(batched=True), digits, "lenet300_100", settings, atol=1e-5)


def test_batched_conv_net_equals_sequential(backend: KerasBackend, digits: Dataset) -> None:
    assert stackable(backend.build("conv2", digits.input_shape, 10, seed=0))
    settings = TrainSettings(iterations=20, eval_every=10, optimizer="sgd", learning_rate=0.05)
    _compare(backend, digits, "small_conv", settings, atol=1e-5)


def test_unsupported_models_train_one_at_a_time_and_say_why(
    backend: KerasBackend, digits: Dataset, caplog: pytest.LogCaptureFixture
) -> None:
    with_dropout = [backend.build("mnist_cnn", digits.input_shape, 10, seed=s) for s in range(2)]
    assert not stackable(with_dropout[0])
    functional = keras.Model(with_dropout[0].inputs, with_dropout[0].outputs)
    assert "not a keras.Sequential" in str(unstackable_reason(functional))
    settings = [TrainSettings(iterations=2, eval_every=2, seed=s) for s in range(2)]
    with caplog.at_level(logging.INFO, logger="ltp_keras.experiment"):
        assert backend.train_batched(with_dropout, [None, None], digits, settings) is None
    assert "one at a time" in caplog.text and "Dropout" in caplog.text
    plain = [backend.build("lenet300_100", digits.input_shape, 10, seed=s) for s in range(2)]
    other = [settings[0], TrainSettings(iterations=3, eval_every=3, seed=1)]
    assert backend.train_batched(plain, [None, None], digits, other) is None
    mixed = [plain[0], backend.build("conv2", digits.input_shape, 10, seed=0)]
    assert backend.train_batched(mixed, [None, None], digits, settings) is None
    auto, never = KerasBackend(), KerasBackend(batched=False)
    assert never.train_batched(plain, [None, None], digits, settings) is None
    with caplog.at_level(logging.INFO, logger="ltp_keras.experiment"):
        outcomes = auto.train_batched(plain, [None, None], digits, settings)
    if keras.backend.backend() == "torch":  # "auto" batches where it measured faster
        assert outcomes is not None and outcomes[0].extra["batched_replicas"] == 2
    else:
        assert outcomes is None and "KerasBackend(batched=True)" in caplog.text
    with pytest.raises(ValueError, match="batched='yes'"):
        KerasBackend(batched="yes")
    with pytest.raises(ValueError, match="same length"):
        backend.train_batched(plain, [None], digits, settings)
    with pytest.raises(ValueError, match="masks"):
        backend.train_batched(plain, [None, [np.ones((3, 3), bool)]], digits, settings)
    with pytest.raises(ValueError, match="optimizer"):
        backend.train_batched(
            plain, [None, None], digits, [TrainSettings(iterations=2, optimizer="rmsprop")] * 2
        )


def _config(**kwargs: object) -> ImpConfig:
    base = {
        "levels": 1,
        "seeds": 2,
        "iterations": 40,
        "eval_every": 20,
        "optimizer": "sgd",
        "learning_rate": 0.05,
    }
    return ImpConfig(**{**base, **kwargs})  # type: ignore[arg-type]


def _records(out: Path) -> list[dict]:
    records = json.loads((out / "results.json").read_text())["records"]
    return sorted(records, key=lambda r: (r["seed"], r["level"], r["arm"]))


def _final_masks(out: Path, seed: int, level: int) -> list[np.ndarray]:
    return LotteryTicketPruner.load(out / f"state/seed_{seed}/pruner_level_{level}.npz").masks


def test_imp_batched_equals_sequential_and_resumes(
    backend: KerasBackend, digits: Dataset, tmp_path: Path
) -> None:
    run_imp(_config(sequential=True), backend, digits, tmp_path / "sequential")
    run_imp(_config(), backend, digits, tmp_path / "batched")
    sequential, batched = _records(tmp_path / "sequential"), _records(tmp_path / "batched")
    assert len(batched) == len(sequential) == 2 * (1 + 3)
    for a, b in zip(sequential, batched, strict=True):
        assert (a["seed"], a["level"], a["arm"]) == (b["seed"], b["level"], b["arm"])
        assert b["weights_remaining"] == a["weights_remaining"]
        if EXACT:
            assert b["test_accuracy"] == a["test_accuracy"]
            assert b["val_accuracy"] == a["val_accuracy"]
        else:
            assert b["test_accuracy"] == pytest.approx(a["test_accuracy"], abs=0.01)
    assert all(r["extra"].get("batched_replicas") is None for r in sequential)
    assert {r["extra"].get("batched_replicas") for r in batched} == {2, 6}
    for seed in (0, 1):
        for a, b in zip(
            _final_masks(tmp_path / "sequential", seed, 1),
            _final_masks(tmp_path / "batched", seed, 1),
            strict=True,
        ):
            # Float32 rounding (TensorFlow) could swap two weights whose magnitudes tie within
            # it; measured: the masks are identical on every backend.
            np.testing.assert_array_equal(a, b)
        # The level-1 tickets (trained 6 together) as the pruner keeps them for the next level.
        trained = [
            LotteryTicketPruner.load(
                tmp_path / f"{mode}/state/seed_{seed}/pruner_level_1.npz"
            ).pretrained_weights
            for mode in ("sequential", "batched")
        ]
        assert trained[0] is not None and trained[1] is not None
        for a, b in zip(*trained, strict=True):
            np.testing.assert_allclose(b, a, rtol=0, atol=0 if EXACT else 1e-5)

    # Killed while level 1 trains: level 0 is recorded, resuming trains level 1 again.
    def crashing(label: str):  # type: ignore[no-untyped-def]
        def progress(step: int, total: int, metrics: dict[str, float]) -> None:
            if "level 1" in label:
                raise KeyboardInterrupt("simulated crash")

        return progress

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        run_imp(_config(), backend, digits, out, crashing)
    assert len(_records(out)) == 2
    run_imp(_config(), backend, digits, out)
    resumed = _records(out)
    for a, b in zip(batched, resumed, strict=True):
        assert (a["seed"], a["level"], a["arm"]) == (b["seed"], b["level"], b["arm"])
        assert b["test_accuracy"] == a["test_accuracy"]
        assert b["val_accuracy"] == a["val_accuracy"]
    for seed in (0, 1):
        for a, b in zip(
            _final_masks(tmp_path / "batched", seed, 1), _final_masks(out, seed, 1), strict=True
        ):
            np.testing.assert_array_equal(a, b)


def test_batched_adam_equals_sequential(backend: KerasBackend, digits: Dataset) -> None:
    # Last in this file: a new optimizer recompiles the shared backend's programs.
    # Adam amplifies rounding noise (see the module docstring): 1e-3 is ~1 step of lr 1.2e-3.
    _compare(backend, digits, "lenet300_100", TrainSettings(iterations=20, eval_every=10), 1e-3)
