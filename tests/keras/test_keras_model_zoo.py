"""Model zoo: what the default selection prunes on real architectures, and that it holds.

Every case builds its model with random initialization and tiny inputs (no downloads) and checks
the selected set (exact paths or counts per kind), the exact number of weights a global
selection prunes, exact zeros after training steps with ``PrunerCallback``, rewinding that keeps
every variable object, and that a global selection never empties a layer without
``LayerCollapseWarning``.

The ``keras.applications`` cases run on the torch backend only: there, building a model and one
training step take seconds, while JAX compiles one initializer per weight shape and the train
step for minutes on a CPU, and TensorFlow needs about 40 s per model to trace the step. The
variables and their roles do not depend on the backend; the small Transformer and recurrent
cases run on all three.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable
from fractions import Fraction

import keras
import numpy as np
import pytest
from keras import layers

from ltp_core.notices import LayerCollapseWarning, LowCoverageWarning
from ltp_keras import LotteryTicketPruner, PrunerCallback
from ltp_keras.variables import read_arrays

BACKEND = keras.backend.backend()
torch_backend_only = pytest.mark.skipif(
    BACKEND != "torch", reason="keras.applications cases run on the torch backend only (speed)"
)


def _to_numpy(variable: keras.Variable) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable))


def _exact_k(fraction: float, n: int) -> int:
    return math.floor(Fraction(str(fraction)) * n)


def _prune_globally(
    pruner: LotteryTicketPruner,
    model: keras.Model,
    fraction: float,
    strategy: str = "smallest_weights_global",
    min_layer_density: float = 0.0,
) -> list[str]:
    """Prune, check the exact global count, and return the emptied layers (warned about)."""
    total = sum(int(m.size) for m in pruner.masks)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruner.calc_prune_mask(model, fraction, strategy, min_layer_density=min_layer_density)
    pruned = total - sum(int(m.sum()) for m in pruner.masks)
    assert pruned == _exact_k(fraction, total)
    empty = [name for name, mask in zip(pruner.names, pruner.masks, strict=True) if not mask.any()]
    collapse = [str(w.message) for w in caught if issubclass(w.category, LayerCollapseWarning)]
    if empty:
        assert len(collapse) == 1, f"{empty} emptied without LayerCollapseWarning"
        assert all(repr(name) in collapse[0] for name in empty)
    else:
        assert not collapse
    return empty


def _train_and_rewind(
    pruner: LotteryTicketPruner, model: keras.Model, x: np.ndarray, y: np.ndarray, epochs: int
) -> None:
    """Zeros after training steps with the callback; rewind keeps every variable object."""
    prunable_ids = {id(v) for v in pruner.prunable_variables(model)}
    initial = read_arrays(pruner.prunable_variables(model))
    others_before = [
        (v, np.array(_to_numpy(v)))
        for v in model.weights
        if id(v) not in prunable_ids and v.trainable
    ]
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=len(x), epochs=epochs, verbose=0, callbacks=[PrunerCallback(pruner)])
    variables = pruner.prunable_variables(model)
    for name, variable, mask in zip(pruner.names, variables, pruner.masks, strict=True):
        assert not np.any(_to_numpy(variable)[~mask]), f"{name} has nonzero pruned weights"
    ids = [id(v) for v in model.weights]
    pruner.rewind(model)
    assert [id(v) for v in model.weights] == ids
    assert all(a is b for a, b in zip(pruner.prunable_variables(model), variables, strict=True))
    for variable, start, mask in zip(variables, initial, pruner.masks, strict=True):
        np.testing.assert_array_equal(_to_numpy(variable), np.where(mask, start, 0))
    for variable, start in others_before:
        np.testing.assert_array_equal(_to_numpy(variable), start)


# ---------------------------------------------------------------- keras.applications


def _images(n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 32, 32, 3)).astype("float32"), np.arange(n) % 3


_APPLICATIONS: dict[str, tuple[Callable[[], keras.Model], dict[str, int], dict[str, int]]] = {
    # name: (builder, prunable tensors per kind, left-out tensors per reason)
    "ResNet50": (
        lambda: keras.applications.ResNet50(
            weights=None, input_shape=(32, 32, 3), classes=3, classifier_activation=None
        ),
        {"conv": 53, "dense": 1},
        {"normalization": 106, "bias": 54},
    ),
    "MobileNetV2": (
        lambda: keras.applications.MobileNetV2(
            weights=None,
            input_shape=(32, 32, 3),
            alpha=0.35,
            classes=3,
            classifier_activation=None,
        ),
        {"conv": 35, "depthwise": 17, "dense": 1},
        {"normalization": 104, "bias": 1},
    ),
    "EfficientNetB0": (
        lambda: keras.applications.EfficientNetB0(
            weights=None, input_shape=(32, 32, 3), classes=3, classifier_activation=None
        ),
        {"conv": 65, "depthwise": 16, "dense": 1},
        {"normalization": 98, "bias": 33},
    ),
    "ConvNeXtTiny": (
        lambda: keras.applications.ConvNeXtTiny(
            weights=None, input_shape=(32, 32, 3), classes=3, classifier_activation=None
        ),
        {"dense": 37, "depthwise": 18, "conv": 4},
        {"bias": 59, "normalization": 46, "per-channel scale": 18},
    ),
}


@torch_backend_only
@pytest.mark.parametrize("name", list(_APPLICATIONS))
def test_applications(name: str) -> None:
    build, kinds, reasons = _APPLICATIONS[name]
    keras.utils.set_random_seed(0)
    model = build()
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowCoverageWarning)
        pruner = LotteryTicketPruner(model)
    summary = pruner.summary()
    assert Counter(t.kind for t in summary.prunable) == Counter(kinds)
    assert Counter(t.reason for t in summary.left_out) == Counter(reasons)
    assert summary.coverage > 0.95
    assert all(len(shape) >= 2 for shape in pruner.shapes)
    # Layer collapse: 90% global magnitude pruning of a random init empties whole layers
    # (depthwise kernels, small by their initialization) and says so ...
    empty = _prune_globally(pruner, model, 0.9)
    assert empty
    # ... and min_layer_density keeps a share of every layer, with the same exact count.
    floor = LotteryTicketPruner(model)
    assert not _prune_globally(floor, model, 0.9, min_layer_density=0.01)
    for mask in floor.masks:
        assert mask.sum() >= math.ceil(0.01 * mask.size)
    if "depthwise" in kinds:  # ... and so does lamp (every layer keeps its largest weight)
        lamp = LotteryTicketPruner(model)
        lamp.set_pretrained_weights(model)
        assert not _prune_globally(lamp, model, 0.9, "lamp")
    _train_and_rewind(floor, model, *_images(), epochs=1)


# ---------------------------------------------------------------- Transformer block


class _TokenAndPosition(layers.Layer):
    """Token embedding plus a learned positional table, as in the Keras Transformer examples."""

    def __init__(self, vocab: int, length: int, dim: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.tokens = layers.Embedding(vocab, dim, name="tokens")
        self.positions = layers.Embedding(length, dim, name="positions")
        self.length = length

    def call(self, x):  # type: ignore[no-untyped-def]
        return self.tokens(x) + self.positions(keras.ops.arange(self.length))


def _transformer_block(vocab: int = 64, length: int = 8, dim: int = 16) -> keras.Model:
    keras.utils.set_random_seed(0)
    tokens = keras.Input((length,), dtype="int32")
    x = _TokenAndPosition(vocab, length, dim, name="embed")(tokens)
    attention = layers.MultiHeadAttention(2, dim // 2, name="mha")(x, x)
    x = layers.LayerNormalization(name="ln1")(x + attention)
    ffn = layers.Dense(2 * dim, activation="relu", name="ffn1")(x)
    ffn = layers.Dense(dim, name="ffn2")(ffn)
    x = layers.LayerNormalization(name="ln2")(x + ffn)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(tokens, layers.Dense(3, name="head")(x), name="transformer")


def test_transformer_block() -> None:
    model = _transformer_block()
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowCoverageWarning)
        pruner = LotteryTicketPruner(model)
    assert pruner.names == [
        "mha/query/kernel",
        "mha/key/kernel",
        "mha/value/kernel",
        "mha/attention_output/kernel",
        "ffn1/kernel",
        "ffn2/kernel",
        "head/kernel",
    ]
    summary = pruner.summary()
    assert [t.kind for t in summary.prunable] == ["attention"] * 4 + ["dense"] * 3
    left_out = {
        reason: sum(t.count for t in ts) for reason, ts in summary.left_out_by_reason().items()
    }
    # token table 64x16 and positional table 8x16; q/k/v biases are 2-D (2 heads x 8)
    assert left_out == {
        "embedding": 1024 + 128,
        "bias": 3 * 16 + 16 + 32 + 16 + 3,
        "normalization": 64,
    }
    assert summary.prunable_parameters == 4 * 256 + 2 * 512 + 48
    pruner.set_pretrained_weights(model)
    assert not _prune_globally(pruner, model, 0.5, "large_final_global")
    # A zero-initialized head (a common choice) is the first layer a global criterion empties.
    head = model.get_layer("head").kernel
    weights = _to_numpy(head).copy()
    head.assign(np.zeros_like(weights))
    assert _prune_globally(LotteryTicketPruner(model), model, 0.05) == ["head/kernel"]
    assert not _prune_globally(LotteryTicketPruner(model), model, 0.05, min_layer_density=0.1)
    head.assign(weights)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 64, size=(4, 8)).astype("int32"), np.arange(4) % 3
    _train_and_rewind(pruner, model, x, y, epochs=2)


# ---------------------------------------------------------------- recurrent layers


def _recurrent_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 4))
    x = layers.LSTM(8, return_sequences=True, name="lstm")(inputs)
    x = layers.Bidirectional(
        layers.GRU(4, return_sequences=True, reset_after=True, name="gru"), name="bi"
    )(x)
    cells = [layers.SimpleRNNCell(4, name="simple"), layers.LSTMCell(4, name="cell")]
    x = layers.RNN(layers.StackedRNNCells(cells, name="cells"), name="stack")(x)
    return keras.Model(inputs, layers.Dense(3, name="head")(x), name="recurrent")


def test_lstm_gru_bidirectional_and_stacked_cells() -> None:
    model = _recurrent_model()
    pruner = LotteryTicketPruner(model)
    assert pruner.names == [
        "lstm/lstm_cell/kernel",
        "lstm/lstm_cell/recurrent_kernel",
        "bi/forward_gru/gru_cell/kernel",
        "bi/forward_gru/gru_cell/recurrent_kernel",
        "bi/backward_gru/gru_cell/kernel",
        "bi/backward_gru/gru_cell/recurrent_kernel",
        "stack/cells/simple/kernel",
        "stack/cells/simple/recurrent_kernel",
        "stack/cells/cell/kernel",
        "stack/cells/cell/recurrent_kernel",
        "head/kernel",
    ]
    assert [t.kind for t in pruner.summary().prunable] == ["recurrent"] * 10 + ["dense"]
    left_out = {t.name: t.reason for t in pruner.summary().left_out}
    assert left_out["bi/forward_gru/gru_cell/bias"] == "bias"  # 2-D with reset_after
    assert set(left_out.values()) == {"bias"}
    pruner.set_pretrained_weights(model)
    assert not _prune_globally(pruner, model, 0.6, "large_final_global")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 6, 4)).astype("float32"), np.arange(4) % 3
    _train_and_rewind(pruner, model, x, y, epochs=2)
