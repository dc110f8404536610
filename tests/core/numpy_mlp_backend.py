"""A small NumPy MLP implementing the experiment backend protocol, for framework-free tests."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ltp_core.datasets import Dataset
from ltp_core.experiment.backend import EvalPoint, ProgressFn, TrainOutcome, TrainSettings
from ltp_core.experiment.models import model_spec


class NumpyMLP:
    def __init__(self, weights: list[np.ndarray], biases: list[np.ndarray]) -> None:
        self.weights = weights
        self.biases = biases

    def forward(self, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        activations = [x.reshape(len(x), -1)]
        h = activations[0]
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0)
            activations.append(h)
        return activations, h


def _softmax_loss(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, float]:
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    loss = float(-np.log(probs[np.arange(len(y)), y] + 1e-12).mean())
    accuracy = float((logits.argmax(axis=1) == y).mean())
    grad = probs
    grad[np.arange(len(y)), y] -= 1
    return loss, grad / len(y), accuracy


class NumpyBackend:
    """Dense-only models (``lenet300_100``), widths divided by ``width_divisor``; SGD."""

    name = "numpy"

    def __init__(self, width_divisor: int = 10) -> None:
        self.width_divisor = width_divisor
        self.train_calls = 0

    def build(
        self, model: str, input_shape: tuple[int, ...], num_classes: int, seed: int
    ) -> NumpyMLP:
        spec = model_spec(model)
        rng = np.random.default_rng(seed)
        sizes = [int(np.prod(input_shape))]
        sizes += [max(2, u // self.width_divisor) for u in spec.dense_units] + [num_classes]
        weights = [
            (rng.normal(size=(a, b)) * np.sqrt(2.0 / (a + b))).astype(np.float32)
            for a, b in itertools.pairwise(sizes)
        ]
        biases = [np.zeros(b, dtype=np.float32) for b in sizes[1:]]
        return NumpyMLP(weights, biases)

    def layer_names(self, model: NumpyMLP) -> list[str]:
        return [f"dense_{i}" for i in range(len(model.weights))]

    def layer_kinds(self, model: NumpyMLP) -> list[str]:
        return ["dense"] * (len(model.weights) - 1) + ["output"]

    def get_prunable(self, model: NumpyMLP) -> list[np.ndarray]:
        return [w.copy() for w in model.weights]

    def set_prunable(self, model: NumpyMLP, weights: Sequence[np.ndarray]) -> None:
        for target, source in zip(model.weights, weights, strict=True):
            target[...] = source

    def snapshot(self, model: NumpyMLP) -> list[np.ndarray]:
        return [a.copy() for a in (*model.weights, *model.biases)]

    def restore(self, model: NumpyMLP, snapshot: Sequence[np.ndarray]) -> None:
        for target, source in zip((*model.weights, *model.biases), snapshot, strict=True):
            target[...] = source

    def evaluate(self, model: NumpyMLP, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        _, logits = model.forward(x)
        loss, _, accuracy = _softmax_loss(logits, y)
        return loss, accuracy

    def train(
        self,
        model: NumpyMLP,
        masks: Sequence[np.ndarray] | None,
        data: Dataset,
        settings: TrainSettings,
        progress: ProgressFn | None = None,
    ) -> TrainOutcome:
        self.train_calls += 1
        start = time.perf_counter()
        rng = np.random.default_rng(settings.seed)
        velocity = [np.zeros_like(p) for p in (*model.weights, *model.biases)]
        if masks is not None:
            for w, m in zip(model.weights, masks, strict=True):
                w *= m
        evaluations: list[EvalPoint] = []
        captured = None
        order = rng.permutation(len(data.y_train))
        cursor = 0
        for step in range(1, settings.iterations + 1):
            if cursor + settings.batch_size > len(order):
                order, cursor = rng.permutation(len(data.y_train)), 0
            batch = order[cursor : cursor + settings.batch_size]
            cursor += settings.batch_size
            activations, logits = model.forward(data.x_train[batch])
            _, grad, _ = _softmax_loss(logits, data.y_train[batch])
            grads_w, grads_b = [], []
            for i in reversed(range(len(model.weights))):
                grads_w.insert(0, activations[i].T @ grad)
                grads_b.insert(0, grad.sum(axis=0))
                if i:
                    grad = (grad @ model.weights[i].T) * (activations[i] > 0)
            for p, g, v in zip(
                (*model.weights, *model.biases), (*grads_w, *grads_b), velocity, strict=True
            ):
                v *= settings.momentum
                v += g
                p -= settings.learning_rate * v
            if masks is not None:
                for w, m, v in zip(model.weights, masks, velocity, strict=False):
                    w *= m
                    v *= m
            if settings.capture_at == step:
                captured = self.snapshot(model)
            if step % settings.eval_every == 0 or step == settings.iterations:
                val_loss, val_acc = self.evaluate(model, data.x_val, data.y_val)
                _, test_acc = self.evaluate(model, data.x_test, data.y_test)
                evaluations.append(EvalPoint(step, val_loss, val_acc, test_acc))
                if progress is not None:
                    progress(step, settings.iterations, {"val_acc": val_acc})
        return TrainOutcome(evaluations, time.perf_counter() - start, captured)

    def versions(self) -> dict[str, str]:
        return {"numpy": np.__version__}


def backend_factory(**options: Any) -> NumpyBackend:
    return NumpyBackend(**options)
