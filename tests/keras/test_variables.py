"""Which variables are prunable: default selection, ``prunable=``, naming and errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers
from keras_models import SubclassedNet, make_nested_model

from ltp_keras import LotteryTicketPruner, default_prunable_variables, select_prunable_variables
from ltp_keras.variables import read_arrays, unique_names, write_arrays


def test_default_selects_kernels_of_nested_shared_and_conv_layers() -> None:
    model = make_nested_model()
    paths = [v.path for v in default_prunable_variables(model)]
    assert paths == [
        "conv/kernel",
        "sep/depthwise_kernel",
        "sep/pointwise_kernel",
        "dw/kernel",
        "block/inner_a/kernel",
        "block/inner_b/kernel",
        "shared/kernel",
        "head/kernel",
    ]


def test_default_covers_every_layer_family_and_skips_the_rest() -> None:
    inputs = keras.Input((8, 8, 2))
    x = layers.Conv2DTranspose(2, 2, name="tconv")(inputs)
    x = layers.Reshape((9 * 9, 2))(x)
    x = layers.Conv1D(2, 2, name="c1")(x)
    x = layers.SeparableConv1D(2, 2, name="sep1")(x)
    x = layers.DepthwiseConv1D(2, name="dw1")(x)
    x = layers.Conv1DTranspose(2, 2, name="tc1")(x)
    x = layers.LayerNormalization(name="ln")(x)
    x = layers.LSTM(3, name="lstm")(x)
    x = layers.EinsumDense("ab,bc->ac", output_shape=4, bias_axes="c", name="ein")(x)
    tokens = keras.Input((5,), dtype="int32")
    e = layers.Flatten()(layers.Embedding(11, 2, name="emb")(tokens))
    x = layers.Concatenate()([x, e])
    x = layers.Reshape((2, 2, 3, 1))(x[:, :12])
    x = layers.Conv3D(2, 1, name="c3")(x)
    x = layers.Conv3DTranspose(1, 1, name="tc3")(x)
    model = keras.Model([inputs, tokens], x)
    legacy = [
        "tconv/kernel",
        "c1/kernel",
        "sep1/depthwise_kernel",
        "sep1/pointwise_kernel",
        "dw1/kernel",
        "tc1/kernel",
        "ein/kernel",
        "c3/kernel",
        "tc3/kernel",
    ]
    paths = [v.path for v in default_prunable_variables(model)]
    recurrent = ["lstm/lstm_cell/kernel", "lstm/lstm_cell/recurrent_kernel"]
    assert paths == legacy[:6] + recurrent + legacy[6:]
    # The old default stays reachable by name.
    assert [v.path for v in select_prunable_variables(model, "legacy")] == legacy


def test_subclassed_model_and_layer() -> None:
    model = SubclassedNet()
    model(np.zeros((1, 4), "float32"))
    assert [v.path for v in default_prunable_variables(model)] == [
        "subclassed/block/dense/kernel",
        "subclassed/head/kernel",
    ]


def test_shared_layer_is_pruned_once() -> None:
    model = make_nested_model()
    pruner = LotteryTicketPruner(model)
    assert pruner.names.count("shared/kernel") == 1
    assert pruner.index_of("shared/kernel") == 6


def test_prunable_predicate_and_path_list() -> None:
    model = make_nested_model()
    biases = select_prunable_variables(model, lambda v: v.name == "bias")
    assert "head/bias" in [v.path for v in biases]
    assert all(v.name == "bias" for v in biases)
    chosen = select_prunable_variables(model, ["head/kernel", "bn/gamma"])
    assert [v.path for v in chosen] == ["bn/gamma", "head/kernel"]  # model order
    pruner = LotteryTicketPruner(model, prunable=["head/kernel", "head/bias"])
    assert pruner.names == ["head/kernel", "head/bias"]


def test_prunable_errors_name_the_argument() -> None:
    model = make_nested_model()
    with pytest.raises(ValueError, match=r"Received: prunable=\['nope/kernel'\]"):
        select_prunable_variables(model, ["nope/kernel"])
    with pytest.raises(TypeError, match="Received: prunable=42"):
        select_prunable_variables(model, 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no prunable variables"):
        select_prunable_variables(model, lambda v: False)
    with pytest.raises(TypeError, match=r"must be a keras\.Model"):
        select_prunable_variables(np.zeros(3))


def test_model_without_prunable_layers_is_an_error() -> None:
    model = keras.Sequential([keras.Input((4,)), layers.BatchNormalization()])
    with pytest.raises(ValueError, match="no prunable variables"):
        LotteryTicketPruner(model)
    unbuilt = keras.Sequential([layers.Dense(3)])
    with pytest.raises(ValueError, match="Build it first"):
        LotteryTicketPruner(unbuilt)


def test_colliding_paths_get_unique_names() -> None:
    a = keras.Variable(np.ones(2), name="w")
    b = keras.Variable(np.ones(2), name="w")
    assert unique_names([a, b]) == ["w", "w#2"]


def test_read_and_write_arrays_keep_identity() -> None:
    model = make_nested_model()
    variables = default_prunable_variables(model)
    before = [id(v) for v in variables]
    arrays = read_arrays(variables)
    write_arrays(variables, [np.zeros_like(a) for a in arrays])
    assert [id(v) for v in default_prunable_variables(model)] == before
    assert all(np.count_nonzero(a) == 0 for a in read_arrays(variables))
