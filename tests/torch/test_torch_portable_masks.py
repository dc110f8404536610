"""Portable mask files: torch <-> file <-> torch/Keras, layouts, mismatches, corrupt files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch_models import make_convnet, make_mlp

from ltp_core import io as core_io
from ltp_torch import LotteryTicketPruner
from ltp_torch.layout import convert_layout, layout_permutation, map_saved_masks

LENET = [(784, 300), (300, 100), (100, 10)]


def torch_lenet() -> nn.Module:
    return nn.Sequential(
        nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10)
    )


def pruned(model: nn.Module, *steps: tuple[str, float]) -> LotteryTicketPruner:
    pruner = LotteryTicketPruner(model, seed=1)
    for strategy, fraction in steps:
        pruner.calc_prune_mask(model, fraction, strategy)
    return pruner


def test_torch_round_trip_records_names_layout_and_kinds(tmp_path: Path) -> None:
    model = make_convnet()
    source = pruned(model, ("smallest_weights", 0.5), ("random", 0.3))
    path = tmp_path / "masks.npz"
    source.save_masks(path)
    state = core_io.load_state(path)
    assert state["names"] == ["conv1.weight", "conv2.weight", "head.weight"]
    assert state["layout"] == "torch" and state["framework"] == "torch"
    assert state["kinds"] == ["conv", "conv", "dense"]
    assert state["level"] == 2

    target = LotteryTicketPruner(make_convnet(seed=4))
    target.load_masks(path)
    for ours, theirs in zip(target.masks, source.masks, strict=True):
        assert ours.dtype == np.bool_
        np.testing.assert_array_equal(ours, theirs)
    # Loading masks does not touch the module; the masks are then applied like any other.
    other = make_convnet(seed=4)
    target.apply_pruning(other)
    for parameter, mask in zip(target.parameters(other), target.masks, strict=True):
        assert torch.all(parameter[torch.from_numpy(~mask)] == 0)


def test_masks_of_a_full_state_file_load_too(tmp_path: Path) -> None:
    model = make_mlp()
    source = pruned(model, ("smallest_weights", 0.4))
    source.core.save(tmp_path / "state.npz")  # no layout tag: taken as this pruner's layout
    target = LotteryTicketPruner(make_mlp(seed=2))
    target.load_masks(tmp_path / "state.npz")
    for ours, theirs in zip(target.masks, source.masks, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_layout_permutations_match_keras_kernels() -> None:
    # torch Conv2d (out, in, kh, kw) <-> Keras Conv2D (kh, kw, in, out), and 1-D / 3-D alike.
    rng = np.random.default_rng(0)
    for shape_torch, shape_keras in [
        ((6, 4, 3, 5), (3, 5, 4, 6)),
        ((6, 4, 3), (3, 4, 6)),
        ((6, 4, 2, 3, 5), (2, 3, 5, 4, 6)),
        ((300, 784), (784, 300)),
    ]:
        array = rng.random(shape_torch) > 0.5
        keras = convert_layout(array, "conv", "torch", "keras")
        assert keras.shape == shape_keras
        back = convert_layout(keras, "conv", "keras", "torch")
        np.testing.assert_array_equal(back, array)
    # Element correspondence for a conv kernel: torch[o, i, h, w] == keras[h, w, i, o].
    array = rng.random((6, 4, 3, 5)) > 0.5
    keras = convert_layout(array, "conv", "torch", "keras")
    assert keras[2, 1, 3, 5] == array[5, 3, 2, 1]
    assert layout_permutation(2, "other", "torch", "keras") is None
    assert layout_permutation(1, "dense", "torch", "keras") is None


def test_conv_masks_map_into_keras_layout_and_back(tmp_path: Path) -> None:
    model = make_convnet()
    source = pruned(model, ("smallest_weights", 0.6))
    path = tmp_path / "conv.npz"
    source.save_masks(path)
    state = core_io.load_state(path)
    keras_shapes = [(3, 3, 2, 4), (3, 3, 4, 6), (54, 5)]
    as_keras = map_saved_masks(
        state["masks"],
        state["names"],
        state["layout"],
        state["kinds"],
        ["c1/kernel", "c2/kernel", "d/kernel"],
        keras_shapes,
        ["conv", "conv", "dense"],
        "keras",
    )
    assert [m.shape for m in as_keras] == keras_shapes
    # A file written from these Keras-layout masks loads back into the torch layout.
    core_io.save_masks(
        tmp_path / "k.npz", as_keras, ["c1/kernel", "c2/kernel", "d/kernel"], layout="keras"
    )
    target = LotteryTicketPruner(make_convnet(seed=3))
    target.load_masks(tmp_path / "k.npz")
    for ours, theirs in zip(target.masks, source.masks, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_square_dense_masks_use_the_layout_tag(tmp_path: Path) -> None:
    # Shapes alone cannot tell (in, out) from (out, in) for a square layer: the tag does.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6))
    pruner = LotteryTicketPruner(model)
    mask = np.tril(np.ones((6, 6), dtype=bool))  # (in, out) in Keras layout
    core_io.save_masks(tmp_path / "k.npz", [mask], ["dense/kernel"], layout="keras")
    pruner.load_masks(tmp_path / "k.npz")
    np.testing.assert_array_equal(pruner.masks[0], mask.T)
    # An untagged file is read in the layout given by the caller.
    core_io.save_masks(tmp_path / "plain.npz", [mask], ["dense/kernel"])
    pruner.load_masks(tmp_path / "plain.npz", layout="keras")
    np.testing.assert_array_equal(pruner.masks[0], mask.T)
    pruner.load_masks(tmp_path / "plain.npz")
    np.testing.assert_array_equal(pruner.masks[0], mask)
    with pytest.raises(ValueError, match=r"records layout 'keras'\. Received: layout='torch'"):
        pruner.load_masks(tmp_path / "k.npz", layout="torch")


def test_mismatch_lists_every_difference_and_changes_nothing(tmp_path: Path) -> None:
    pruned(make_convnet(), ("smallest_weights", 0.5)).save_masks(tmp_path / "conv.npz")
    target = pruned(make_mlp(), ("smallest_weights", 0.3))
    before = [m.copy() for m in target.masks]
    version = target.mask_version
    with pytest.raises(ValueError) as caught:
        target.load_masks(tmp_path / "conv.npz")
    message = str(caught.value)
    assert "matched by order and shape" in message
    assert "#0: expected '0.weight' (10, 12)" in message
    assert "'conv1.weight' (4, 2, 3, 3) in torch layout" in message
    assert "#2: expected '2.2.weight' (3, 8)" in message and "'head.weight' (5, 54)" in message
    assert "Received: masks from" in message and "conv.npz" in message
    assert target.mask_version == version
    for ours, theirs in zip(target.masks, before, strict=True):
        np.testing.assert_array_equal(ours, theirs)

    # Count differences are listed too.
    core_io.save_masks(tmp_path / "two.npz", [np.ones((10, 12), bool), np.ones((8, 10), bool)])
    with pytest.raises(ValueError, match=r"holds 2 masks, the pruner has 3.*#2: expected"):
        target.load_masks(tmp_path / "two.npz")


def test_kind_disagreement_is_a_mismatch(tmp_path: Path) -> None:
    # A 2-D "other" array (e.g. an embedding) is never transposed, so it cannot stand in for a
    # Dense kernel saved in another layout.
    core_io.save_masks(
        tmp_path / "emb.npz", [np.ones((12, 10), bool)], ["emb"], layout="keras", kinds=["other"]
    )
    pruner = LotteryTicketPruner(nn.Sequential(nn.Linear(12, 10)))
    with pytest.raises(ValueError, match=r"of kind 'dense'.*of kind 'other'"):
        pruner.load_masks(tmp_path / "emb.npz")


@pytest.mark.parametrize(
    "damage",
    ["truncate", "garbage", "empty", "flip_bytes"],
)
def test_corrupt_mask_files_are_clear_errors(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "masks.npz"
    pruned(make_mlp(), ("smallest_weights", 0.5)).save_masks(path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"this is not a mask file" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # overwrite the middle of the archive
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes(64) + data[middle + 64 :])
    target = LotteryTicketPruner(make_mlp())
    state = target.state_dict()
    with pytest.raises(
        ValueError, match=r"not a valid lottery-tickets state file.*Received: path="
    ):
        target.load_masks(path)
    assert all(m.all() for m in target.masks)
    assert target.state_dict()["core"]["level"] == state["core"]["level"] == 0


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing\.npz"):
        LotteryTicketPruner(make_mlp()).load_masks(tmp_path / "nothing.npz")


def test_save_masks_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "masks.npz"
    pruner = pruned(make_mlp(), ("smallest_weights", 0.5))
    pruner.save_masks(path)
    first = path.read_bytes()
    pruner.calc_prune_mask(make_mlp(), 0.5, "smallest_weights")
    pruner.save_masks(path)
    assert path.read_bytes() != first
    assert os.listdir(tmp_path) == ["masks.npz"]  # no temporary files left behind


# ---------------------------------------------------------------- Keras interop


def keras_lenet(keras):  # type: ignore[no-untyped-def]
    return keras.Sequential(
        [keras.Input((784,)), *(keras.layers.Dense(n, activation="relu") for _, n in LENET)]
    )


def keras_dense(model):  # type: ignore[no-untyped-def]
    return [layer for layer in model.layers if layer.__class__.__name__ == "Dense"]


@pytest.fixture
def keras_modules():  # type: ignore[no-untyped-def]
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    keras = pytest.importorskip("keras")
    ltp_keras = pytest.importorskip("ltp_keras")
    return keras, ltp_keras


def same_weights_torch_lenet(kernels: list[np.ndarray]) -> nn.Module:
    model = torch_lenet()
    linears = [m for m in model if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for layer, kernel in zip(linears, kernels, strict=True):
            layer.weight.copy_(torch.from_numpy(kernel.T.copy()))
    return model


def test_keras_masks_load_into_torch(tmp_path: Path, keras_modules) -> None:  # type: ignore[no-untyped-def]
    keras, ltp_keras = keras_modules
    keras.utils.set_random_seed(0)
    model = keras_lenet(keras)
    pruner = ltp_keras.LotteryTicketPruner(model, seed=0)
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    pruner.calc_prune_mask(model, 0.2, "smallest_weights_global")
    path = tmp_path / "keras_masks.npz"
    if hasattr(pruner, "save_masks"):
        pruner.save_masks(path)
    else:  # what the Keras adapter should write: its masks, names and layout tag
        core_io.save_masks(path, pruner.masks, pruner.names, layout="keras", framework="keras")

    kernels = [np.asarray(layer.kernel) for layer in keras_dense(model)]
    torch_model = same_weights_torch_lenet(kernels)
    torch_pruner = LotteryTicketPruner(torch_model, seed=0)
    torch_pruner.load_masks(path)
    for ours, theirs in zip(torch_pruner.masks, pruner.masks, strict=True):
        assert ours.shape == theirs.T.shape
        np.testing.assert_array_equal(ours, theirs.T)
    # Same weights, same strategy: torch computes exactly the masks it loaded.
    check = LotteryTicketPruner(torch_model, seed=0)
    check.calc_prune_mask(torch_model, 0.5, "smallest_weights")
    check.calc_prune_mask(torch_model, 0.2, "smallest_weights_global")
    for ours, theirs in zip(check.masks, torch_pruner.masks, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_torch_masks_load_into_keras(tmp_path: Path, keras_modules) -> None:  # type: ignore[no-untyped-def]
    keras, ltp_keras = keras_modules
    torch.manual_seed(0)
    source = pruned(torch_lenet(), ("smallest_weights", 0.5), ("large_init_global", 0.3))
    path = tmp_path / "torch_masks.npz"
    source.save_masks(path)

    model = keras_lenet(keras)
    pruner = ltp_keras.LotteryTicketPruner(model)
    if hasattr(pruner, "load_masks"):
        pruner.load_masks(path)
    else:  # what the Keras adapter should do: map by order/shape into Keras layout, set_masks
        state = core_io.load_state(path)
        masks = map_saved_masks(
            state["masks"],
            state["names"],
            state["layout"],
            state.get("kinds"),
            pruner.names,
            pruner.shapes,
            ["dense"] * len(pruner.names),
            "keras",
            source=str(path),
        )
        pruner.core.set_masks(masks)
    for ours, theirs in zip(pruner.masks, source.masks, strict=True):
        np.testing.assert_array_equal(ours, theirs.T)
    pruner.apply_pruning(model)
    for layer, mask in zip(keras_dense(model), pruner.masks, strict=True):
        kernel = np.asarray(layer.kernel)
        assert kernel.shape == mask.shape
        assert np.all(kernel[~mask] == 0) and np.all(kernel[mask] != 0)
