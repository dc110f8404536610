"""Which variables are prunable: default selection, ``prunable=``, naming and errors."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from keras import layers
from keras_models import SubclassedNet, make_mlp, make_nested_model

from ltp_keras import (
    LotteryTicketPruner,
    PrunerCallback,
    default_prunable_variables,
    select_prunable_variables,
)
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
    assert [v.path for v in select_prunable_variables(model, "linear_and_conv")] == legacy


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


# ---------------------------------------------------------------- role-based selection


class _PositionalEmbedding(layers.Layer):
    """Token embedding plus a learned positional table (a custom layer, as in most tutorials)."""

    def __init__(self, vocab: int, length: int, dim: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.tokens = layers.Embedding(vocab, dim, name="tokens")
        self.positions = self.add_weight(shape=(length, dim), name="position_table")

    def call(self, x):  # type: ignore[no-untyped-def]
        return self.tokens(x) + self.positions


def _attention_rnn_model(vocab: int = 12) -> keras.Model:
    keras.utils.set_random_seed(0)
    tokens = keras.Input((5,), dtype="int32")
    x = _PositionalEmbedding(vocab, 5, 8, name="embed")(tokens)
    x = layers.MultiHeadAttention(2, 4, name="mha")(x, x)
    x = layers.LayerNormalization(name="ln")(x)
    x = layers.GRU(3, return_sequences=True, reset_after=True, name="gru")(x)
    x = layers.Bidirectional(layers.LSTM(2, return_sequences=True, name="lstm"), name="bi")(x)
    cells = [layers.SimpleRNNCell(3, name="simple"), layers.LSTMCell(2, name="cell")]
    x = layers.RNN(layers.StackedRNNCells(cells, name="cells"), name="stack")(x)
    outputs = layers.Dense(2, name="head")(x)
    return keras.Model(tokens, outputs, name="attn_rnn")


_ATTENTION = [
    "mha/query/kernel",
    "mha/key/kernel",
    "mha/value/kernel",
    "mha/attention_output/kernel",
]
_RECURRENT = [
    "gru/gru_cell/kernel",
    "gru/gru_cell/recurrent_kernel",
    "bi/forward_lstm/lstm_cell/kernel",
    "bi/forward_lstm/lstm_cell/recurrent_kernel",
    "bi/backward_lstm/lstm_cell/kernel",
    "bi/backward_lstm/lstm_cell/recurrent_kernel",
    "stack/cells/simple/kernel",
    "stack/cells/simple/recurrent_kernel",
    "stack/cells/cell/kernel",
    "stack/cells/cell/recurrent_kernel",
]


def test_default_prunes_attention_and_recurrent_kernels_but_no_2d_bias() -> None:
    model = _attention_rnn_model()
    paths = [v.path for v in default_prunable_variables(model)]
    assert paths == [*_ATTENTION, *_RECURRENT, "head/kernel"]
    two_d_biases = ["mha/query/bias", "mha/key/bias", "mha/value/bias", "gru/gru_cell/bias"]
    # The predicate the docs used to advise selects 2-D biases; "all_matrices" does not.
    wide = [v.path for v in select_prunable_variables(model, lambda v: len(v.shape) >= 2)]
    assert set(two_d_biases) <= set(wide)
    matrices = [v.path for v in select_prunable_variables(model, "all_matrices")]
    assert not set(two_d_biases) & set(matrices)
    assert matrices == [
        "embed/position_table",
        "embed/tokens/embeddings",
        *_ATTENTION,
        *_RECURRENT,
        "head/kernel",
    ]
    with_embeddings = [v.path for v in select_prunable_variables(model, "with_embeddings")]
    assert with_embeddings == ["embed/tokens/embeddings", *_ATTENTION, *_RECURRENT, "head/kernel"]
    old = [v.path for v in select_prunable_variables(model, "linear_and_conv")]
    assert old == [*_ATTENTION, "head/kernel"]  # what 0.1 pruned: no recurrent kernels


def test_summary_kinds_and_left_out_reasons() -> None:
    model = _attention_rnn_model()
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    summary = pruner.summary()
    kinds = {t.name: t.kind for t in summary.prunable}
    assert {kinds[n] for n in _ATTENTION} == {"attention"}
    assert {kinds[n] for n in _RECURRENT} == {"recurrent"}
    assert kinds["head/kernel"] == "dense"
    assert summary.kept == sum(int(m.sum()) for m in pruner.masks)
    reasons = {t.name: t.reason for t in summary.left_out}
    assert reasons["embed/tokens/embeddings"] == "embedding"
    assert reasons["embed/position_table"] == "positional or other parameter"
    assert reasons["mha/query/bias"] == "bias"
    assert reasons["gru/gru_cell/bias"] == "bias"
    assert reasons["ln/gamma"] == reasons["ln/beta"] == "normalization"
    total = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert summary.total_parameters == total
    assert "embedding: 96 in 1 tensor" in summary.to_text()


def test_low_coverage_warns_with_keras_advice() -> None:
    from ltp_core.notices import LowCoverageWarning

    model = _attention_rnn_model(vocab=400)  # the embedding holds most parameters
    with pytest.warns(LowCoverageWarning, match="prunable='with_embeddings'"):
        LotteryTicketPruner(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowCoverageWarning)
        pruner = LotteryTicketPruner(model, prunable="with_embeddings")
    assert pruner.names[0] == "embed/tokens/embeddings"


def test_unknown_selector_lists_valid_names() -> None:
    model = make_nested_model()
    with pytest.raises(ValueError, match=r"'all_matrices'.*Received: prunable='everything'"):
        LotteryTicketPruner(model, prunable="everything")
    with pytest.raises(ValueError, match="linear_and_conv"):
        select_prunable_variables(model, "Default")


def test_frozen_kernels_left_out_and_freezing_later_keeps_the_selection() -> None:
    model = make_nested_model()
    model.get_layer("head").trainable = False
    paths = [v.path for v in default_prunable_variables(model)]
    assert "head/kernel" not in paths
    assert "head/kernel" in [v.path for v in select_prunable_variables(model, "linear_and_conv")]
    reasons = {t.name: t.reason for t in LotteryTicketPruner(model).summary().left_out}
    assert reasons["head/kernel"] == "frozen (trainable=False)"
    assert "bn/moving_mean" not in reasons  # statistics are not parameters
    model.get_layer("head").trainable = True
    pruner = LotteryTicketPruner(model)
    model.get_layer("block").trainable = False  # after creation: same variables
    assert [v.path for v in pruner.prunable_variables(model)] == pruner.names


def test_lora_layers_are_left_out_with_a_warning_and_refused_by_path() -> None:
    model = make_mlp()
    model.get_layer("hidden").enable_lora(2)
    with pytest.warns(UserWarning, match=r"\['hidden'\] have LoRA enabled"):
        pruner = LotteryTicketPruner(model)
    assert pruner.names == ["mlp/out/kernel"]
    reasons = {t.name: t.reason for t in pruner.summary().left_out}
    assert reasons["mlp/hidden/lora_kernel_a"] == "LoRA-enabled layer"
    assert reasons["mlp/hidden/kernel"] == "LoRA-enabled layer"
    with pytest.raises(ValueError, match=r"LoRA enabled.*Received: prunable selecting"):
        LotteryTicketPruner(model, prunable=["mlp/hidden/kernel"])
    with pytest.raises(ValueError, match="LoRA enabled"):
        LotteryTicketPruner(model, prunable="linear_and_conv")


def test_mixed_precision_trains_float32_kernels_with_exact_zeros() -> None:
    from keras_models import compile_model, vector_data

    from ltp_keras import PrunerCallback

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = make_mlp()
    finally:
        keras.config.set_dtype_policy(previous)
    pruner = LotteryTicketPruner(model)
    assert pruner.names == ["mlp/hidden/kernel", "mlp/out/kernel"]
    variables = pruner.prunable_variables(model)
    assert [keras.backend.standardize_dtype(v.dtype) for v in variables] == ["float32"] * 2
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    x, y = vector_data()
    compile_model(model, keras.optimizers.SGD(0.1, momentum=0.9))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[PrunerCallback(pruner)])
    for variable, mask in zip(variables, pruner.masks, strict=True):
        assert not np.any(keras.ops.convert_to_numpy(variable)[~mask])


def test_spectral_normalization_prunes_the_wrapped_kernel_in_place() -> None:
    from keras_models import compile_model

    from ltp_keras import PrunerCallback

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((10,)),
            layers.SpectralNormalization(layers.Dense(8, name="d"), name="sn"),
            layers.Dense(3, name="head"),
        ],
        name="snnet",
    )
    pruner = LotteryTicketPruner(model)
    # The wrapper also lists the Dense kernel; it is still a dense kernel, not normalization.
    assert pruner.names == ["snnet/sn/d/kernel", "snnet/head/kernel"]
    assert [t.kind for t in pruner.summary().prunable] == ["dense", "dense"]
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    x = np.random.default_rng(0).normal(size=(16, 10)).astype("float32")
    compile_model(model)
    model.fit(
        x, np.arange(16) % 3, batch_size=8, epochs=1, verbose=0, callbacks=[PrunerCallback(pruner)]
    )
    # SpectralNormalization writes kernel / sigma into the kernel: zeros stay zeros.
    for variable, mask in zip(pruner.prunable_variables(model), pruner.masks, strict=True):
        assert not np.any(keras.ops.convert_to_numpy(variable)[~mask])


def test_conv_lstm_and_group_query_attention_roles() -> None:
    frames = keras.Input((3, 6, 6, 2))
    x = layers.ConvLSTM2D(2, 3, name="convlstm")(frames)
    queries = keras.Input((4, 8))
    a = layers.GroupQueryAttention(4, 4, 2, name="gqa")(queries, queries)
    model = keras.Model([frames, queries], [x, a])
    pruner = LotteryTicketPruner(model)
    kinds = {t.name: t.kind for t in pruner.summary().prunable}
    assert kinds == {
        "convlstm/conv_lstm_cell/kernel": "recurrent",
        "convlstm/conv_lstm_cell/recurrent_kernel": "recurrent",
        "gqa/query/kernel": "attention",
        "gqa/key/kernel": "attention",
        "gqa/value/kernel": "attention",
        "gqa/attention_output/kernel": "attention",
    }


def test_selecting_layer_state_warns_that_no_optimizer_step_masks_it() -> None:
    model = keras.Sequential(
        [keras.Input((4,)), layers.Dense(3, name="d"), layers.BatchNormalization(name="bn")],
        name="m",
    )
    with pytest.warns(UserWarning, match=r"non-trainable variables \['m/bn/moving_mean'\]"):
        LotteryTicketPruner(model, prunable=["m/d/kernel", "m/bn/moving_mean"])
    model.get_layer("d").trainable = False  # a frozen kernel never changes: no warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LotteryTicketPruner(model, prunable=["m/d/kernel"])
    assert not [w for w in caught if "non-trainable variables" in str(w.message)]


def test_float8_training_state_is_not_counted_as_parameters() -> None:
    """A float8-quantized model's scales and amax histories (written by Keras, not trained)
    counted as left-out parameters: a false LowCoverageWarning (3.3% covered) on every pruner."""
    from ltp_core.notices import LowCoverageWarning

    model = make_mlp()
    model.quantize("float8")
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowCoverageWarning)
        pruner = LotteryTicketPruner(model)
    summary = pruner.summary().to_dict()
    assert pruner.names == ["mlp/hidden/kernel", "mlp/out/kernel"]
    assert [t["reason"] for t in summary["left_out"]] == ["bias", "bias"]
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 10)).astype("float32"), rng.integers(0, 3, 16)
    model.fit(x, y, batch_size=8, verbose=0, callbacks=[PrunerCallback(pruner)])
    for variable, mask in zip(pruner.prunable_variables(model), pruner.masks, strict=True):
        assert np.count_nonzero(keras.ops.convert_to_numpy(variable)[~mask]) == 0
