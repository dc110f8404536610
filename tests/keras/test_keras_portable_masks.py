"""Portable mask files from the Keras adapter: round trips, torch interop, errors."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers
from keras_models import make_mlp
from state_utils import assert_same_state

from ltp_core import io as core_io
from ltp_keras import LotteryTicketPruner

LENET = [300, 100, 10]


def keras_lenet(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((784,)), *(layers.Dense(n, activation="relu") for n in LENET)]
    )


def test_round_trip_records_names_layout_and_kinds(tmp_path: Path) -> None:
    model = make_mlp()
    pruner = LotteryTicketPruner(model, seed=0)
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    path = tmp_path / "masks.npz"
    pruner.save_masks(path)
    state = core_io.load_state(path)
    assert state["layout"] == "keras"
    assert state["framework"] == "keras"
    assert state["kinds"] == ["dense", "dense"]
    assert [str(n) for n in state["names"]] == pruner.names
    other = LotteryTicketPruner(make_mlp(seed=1))
    other.load_masks(path)
    for ours, theirs in zip(other.masks, pruner.masks, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_kinds_of_conv_and_transposed_conv() -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            layers.Conv2D(4, 3),
            layers.DepthwiseConv2D(3),
            layers.Conv2DTranspose(5, 3),
            layers.Flatten(),
            layers.EinsumDense("ab,bc->ac", (6,)),
            layers.Dense(2),
        ]
    )
    assert LotteryTicketPruner(model).kinds == ["conv", "other", "conv_transpose", "other", "dense"]


def test_keras_masks_load_into_torch(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import ltp_torch

    model = keras_lenet()
    pruner = LotteryTicketPruner(model, seed=0)
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    pruner.calc_prune_mask(model, 0.2, "smallest_weights_global")
    path = tmp_path / "keras.npz"
    pruner.save_masks(path)

    net = torch.nn.Sequential(
        torch.nn.Linear(784, 300), torch.nn.ReLU(), torch.nn.Linear(300, 100), torch.nn.ReLU(),
        torch.nn.Linear(100, 10),
    )  # fmt: skip
    target = ltp_torch.LotteryTicketPruner(net)
    target.load_masks(path)
    for theirs, ours in zip(target.masks, pruner.masks, strict=True):
        assert theirs.shape == ours.T.shape
        np.testing.assert_array_equal(theirs, ours.T)


def test_torch_masks_load_into_keras(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import ltp_torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(784, 300), torch.nn.ReLU(), torch.nn.Linear(300, 100), torch.nn.ReLU(),
        torch.nn.Linear(100, 10),
    )  # fmt: skip
    source = ltp_torch.LotteryTicketPruner(net, seed=1)
    source.calc_prune_mask(net, 0.5, "smallest_weights")
    source.calc_prune_mask(net, 0.3, "large_init_global")
    path = tmp_path / "torch.npz"
    source.save_masks(path)

    model = keras_lenet()
    pruner = LotteryTicketPruner(model)
    pruner.load_masks(path)
    for ours, theirs in zip(pruner.masks, source.masks, strict=True):
        assert ours.shape == theirs.T.shape
        np.testing.assert_array_equal(ours, theirs.T)
    pruner.apply_pruning(model)
    for mask, variable in zip(pruner.masks, pruner.prunable_variables(model), strict=True):
        values = keras.ops.convert_to_numpy(variable.value)
        assert np.all(values[~mask] == 0)


def test_square_dense_masks_follow_the_layout_tag(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), layers.Dense(6)])
    mask = np.zeros((6, 6), dtype=bool)
    mask[0, 1] = True  # torch (out, in) entry [0, 1] is Keras (in, out) entry [1, 0]
    core_io.save_masks(tmp_path / "t.npz", [mask], ["0.weight"], layout="torch", kinds=["dense"])
    pruner = LotteryTicketPruner(model)
    pruner.load_masks(tmp_path / "t.npz")
    assert pruner.masks[0][1, 0] and pruner.masks[0].sum() == 1
    core_io.save_masks(tmp_path / "plain.npz", [mask], ["w"])
    pruner.load_masks(tmp_path / "plain.npz", layout="torch")
    assert pruner.masks[0][1, 0]
    with pytest.raises(ValueError, match=r"records layout 'torch'\. Received: layout='keras'"):
        pruner.load_masks(tmp_path / "t.npz", layout="keras")


def test_mismatch_lists_differences_and_changes_nothing(tmp_path: Path) -> None:
    source = LotteryTicketPruner(keras_lenet())
    path = tmp_path / "lenet.npz"
    source.save_masks(path)
    model = make_mlp()
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    before = pruner.state_dict()
    with pytest.raises(
        ValueError, match=r"#0: expected.*#2: expected \(nothing\).*Received: masks"
    ):
        pruner.load_masks(path)
    assert_same_state(before, pruner.state_dict())


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "flip_bytes"])
def test_corrupt_mask_file_is_a_clear_error(tmp_path: Path, damage: str) -> None:
    model = make_mlp()
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    path = tmp_path / "masks.npz"
    pruner.save_masks(path)
    data = path.read_bytes()
    damaged = {
        "truncate": data[: len(data) // 2],
        "garbage": b"not a mask file" * 10,
        "empty": b"",
        "flip_bytes": data[: len(data) // 2] + bytes(64) + data[len(data) // 2 + 64 :],
    }[damage]
    path.write_bytes(damaged)
    before = pruner.state_dict()
    with pytest.raises(
        ValueError, match=r"not a valid lottery-tickets state file.*Received: path="
    ):
        pruner.load_masks(path)
    assert_same_state(before, pruner.state_dict())


def test_bad_layout_argument(tmp_path: Path) -> None:
    pruner = LotteryTicketPruner(make_mlp())
    with pytest.raises(ValueError, match=r"Received: layout='tf'"):
        pruner.load_masks(tmp_path / "x.npz", layout="tf")


def test_keras_lstm_and_simple_rnn_masks_load_into_torch_with_the_same_meaning(
    tmp_path: Path,
) -> None:
    torch = pytest.importorskip("torch")
    import ltp_torch

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((5, 6)), layers.LSTM(4, return_sequences=True), layers.SimpleRNN(3)]
    )
    pruner = LotteryTicketPruner(model, seed=0)
    assert pruner.kinds == ["dense"] * 4  # kernel, recurrent_kernel of each cell
    pruner.calc_prune_mask(model, 0.5, "smallest_weights_global")
    pruner.apply_pruning(model)
    path = tmp_path / "rnn.npz"
    pruner.save_masks(path)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(6, 4, batch_first=True)
            self.rnn = torch.nn.RNN(4, 3, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.rnn(self.lstm(x)[0])[0][:, -1]

    net = Net()
    target = ltp_torch.LotteryTicketPruner(net)
    target.load_masks(path)
    for theirs, ours in zip(target.masks, pruner.masks, strict=True):
        np.testing.assert_array_equal(theirs, ours.T)
    # Same gate order: the pruned Keras weights, transposed, give torch the same function.
    weights = [keras.ops.convert_to_numpy(w) for w in model.weights]
    lstm_kernel, lstm_recurrent, lstm_bias, rnn_kernel, rnn_recurrent, rnn_bias = weights
    with torch.no_grad():
        for module, (kernel, recurrent, bias) in (
            (net.lstm, (lstm_kernel, lstm_recurrent, lstm_bias)),
            (net.rnn, (rnn_kernel, rnn_recurrent, rnn_bias)),
        ):
            module.weight_ih_l0.copy_(torch.from_numpy(kernel.T.copy()))
            module.weight_hh_l0.copy_(torch.from_numpy(recurrent.T.copy()))
            module.bias_ih_l0.copy_(torch.from_numpy(bias))
            module.bias_hh_l0.zero_()
    target.apply_pruning(net)  # a no-op: the copied weights are already zero where pruned
    x = np.random.default_rng(1).normal(size=(2, 5, 6)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x))
    got = net(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_keras_gru_masks_load_into_torch_with_the_same_meaning(tmp_path: Path) -> None:
    # Keras orders a GRU's gates (update, reset, new), torch (reset, update, new): the mask file
    # records the kind "gru" and the loader swaps the first two gate blocks as it transposes
    torch = pytest.importorskip("torch")
    import ltp_torch

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5, 6)), layers.GRU(4, reset_after=True)])
    pruner = LotteryTicketPruner(model, seed=0)
    assert pruner.kinds == ["gru", "gru"]  # kernel, recurrent_kernel
    pruner.calc_prune_mask(model, 0.5, "smallest_weights_global")
    pruner.apply_pruning(model)
    path = tmp_path / "gru.npz"
    pruner.save_masks(path)

    net = torch.nn.GRU(6, 4, batch_first=True)
    target = ltp_torch.LotteryTicketPruner(net)
    target.load_masks(path)

    def torch_order(array: np.ndarray) -> np.ndarray:  # (..., 3u) Keras -> torch gate order
        update, reset, new = np.split(array, 3, axis=-1)
        return np.concatenate([reset, update, new], axis=-1)

    for theirs, ours in zip(target.masks, pruner.masks, strict=True):
        np.testing.assert_array_equal(theirs, torch_order(ours).T)
    kernel, recurrent, bias = (keras.ops.convert_to_numpy(w) for w in model.weights)
    with torch.no_grad():
        net.weight_ih_l0.copy_(torch.from_numpy(torch_order(kernel).T.copy()))
        net.weight_hh_l0.copy_(torch.from_numpy(torch_order(recurrent).T.copy()))
        net.bias_ih_l0.copy_(torch.from_numpy(torch_order(bias[0]).copy()))
        net.bias_hh_l0.copy_(torch.from_numpy(torch_order(bias[1]).copy()))
    target.apply_pruning(net)  # a no-op: the copied weights are already zero where pruned
    assert sum(int((~m).sum()) for m in target.masks) > 0
    x = np.random.default_rng(1).normal(size=(2, 5, 6)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x))
    got = net(torch.from_numpy(x))[0][:, -1].detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
