"""Bad input to the PyTorch adapter: a clear error, naming the argument and value, changing nothing.

Every case runs against a pruner that has already pruned one level (so its state is not trivial),
checks the exception type, that the message names the argument and ends with a ``Received: ...``
part showing the value, and that the pruner's ``state_dict()`` (and the model's weights) are
exactly as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch_models import make_convnet, make_mlp

from ltp_torch import (
    LotteryTicketPruner,
    PrunerHook,
    RewindPointHook,
    load_checkpoint,
    save_checkpoint,
)


@dataclass
class Env:
    model: nn.Module
    pruner: LotteryTicketPruner
    optimizer: torch.optim.Optimizer
    tmp: Path


@pytest.fixture
def env(tmp_path: Path) -> Env:
    model = make_mlp()
    pruner = LotteryTicketPruner(model, seed=0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(1.5)
    pruner.set_pretrained_weights(model)
    pruner.calc_prune_mask(model, 0.3, "large_final")
    pruner.apply_pruning(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return Env(model, pruner, optimizer, tmp_path)


def snapshot(value: Any) -> Any:
    """A deep copy of a (nested) state dict, with tensors and arrays cloned."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        return {k: snapshot(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(snapshot(v) for v in value)
    return value


def assert_same(a: Any, b: Any, where: str = "state") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, where


def other_model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Linear(12, 11), nn.ReLU(), nn.Sequential(nn.Linear(11, 8), nn.Tanh(), nn.Linear(8, 3))
    )


def with_nan(model: nn.Module, value: float = math.nan) -> nn.Module:
    with torch.no_grad():
        model[2][0].weight[1, 2] = value
    return model


def float_masks(e: Env) -> list[np.ndarray]:
    return [m.astype(np.float32) for m in e.pruner.masks]


def corrupt_file(e: Env, name: str) -> Path:
    path = e.tmp / name
    path.write_bytes(b"PK\x03\x04 definitely not a complete archive")
    return path


def truncated_checkpoint(e: Env) -> Path:
    path = e.tmp / "ckpt.pt"
    save_checkpoint(path, e.model, e.optimizer, e.pruner)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def other_model_checkpoint(e: Env) -> Path:
    model = make_convnet()
    path = e.tmp / "other.pt"
    save_checkpoint(path, model, torch.optim.SGD(model.parameters(), lr=0.1))
    return path


class Tensorish:
    """Not an optimizer (has a step method, nothing else)."""

    def step(self) -> None:
        pass


# (id, call, exception type, substrings the message must contain)
Case = tuple[str, Callable[[Env], Any], type[Exception], list[str]]

CASES: list[Case] = [
    # prune_percentage: wrong types and ranges
    *(
        (
            f"prune_percentage={value!r}",
            (lambda v: lambda e: e.pruner.calc_prune_mask(e.model, v, "smallest_weights"))(value),
            error,
            ["prune_percentage", f"Received: prune_percentage={shown}"],
        )
        for value, error, shown in [
            (True, TypeError, "True"),
            ("0.5", TypeError, "'0.5'"),
            (None, TypeError, "None"),
            (math.nan, ValueError, "nan"),
            (1.0, ValueError, "1.0"),
            (-0.1, ValueError, "-0.1"),
            (np.float32(2.0), ValueError, "np.float32(2.0)"),
        ]
    ),
    (
        "unknown strategy",
        lambda e: e.pruner.calc_prune_mask(e.model, 0.2, "largest_weights"),
        ValueError,
        ["prune_strategy", "Received: prune_strategy='largest_weights'"],
    ),
    (
        "strategy of the wrong type",
        lambda e: e.pruner.calc_prune_mask(e.model, 0.2, 7),
        TypeError,
        ["prune_strategy", "Received: prune_strategy=7"],
    ),
    (
        "layer_rates with an unknown layer",
        lambda e: e.pruner.calc_prune_mask(e.model, 0.2, "random", layer_rates={"fc9.weight": 1}),
        ValueError,
        ["layer_rates", "Received: layer_rates key 'fc9.weight'"],
    ),
    (
        "a different model passed to calc_prune_mask",
        lambda e: e.pruner.calc_prune_mask(other_model(), 0.2, "smallest_weights"),
        ValueError,
        ["module", "'0.weight' has shape (11, 12)", "Received: module of type Sequential"],
    ),
    (
        "a conv net passed to calc_prune_mask",
        lambda e: e.pruner.calc_prune_mask(make_convnet(), 0.2, "smallest_weights"),
        ValueError,
        ["module", "no parameter '0.weight'", "Received: module of type ConvNet"],
    ),
    (
        "not a module passed to calc_prune_mask",
        lambda e: e.pruner.calc_prune_mask([np.ones((10, 12))], 0.2, "smallest_weights"),
        TypeError,
        ["module", "Received: module=[array"],
    ),
    (
        "NaN weights in calc_prune_mask",
        lambda e: e.pruner.calc_prune_mask(with_nan(make_mlp()), 0.2, "smallest_weights"),
        ValueError,
        ["module", "'2.0.weight'", "Received: module with non-finite '2.0.weight'"],
    ),
    (
        "pretrained weights from another model",
        lambda e: e.pruner.set_pretrained_weights(other_model()),
        ValueError,
        ["module", "Received: module of type Sequential"],
    ),
    (
        "infinite pretrained weights",
        lambda e: e.pruner.set_pretrained_weights(with_nan(make_mlp(), math.inf)),
        ValueError,
        ["module", "Received: module with non-finite '2.0.weight'"],
    ),
    (
        "rewind weights from another model",
        lambda e: e.pruner.set_rewind_weights(other_model()),
        ValueError,
        ["module", "Received: module of type Sequential"],
    ),
    (
        "masks of the wrong dtype",
        lambda e: e.pruner.set_masks(float_masks(e)),
        TypeError,
        ["masks[0]", "dtype bool", "Received: masks[0] with dtype=float32"],
    ),
    (
        "masks of the wrong shape",
        lambda e: e.pruner.set_masks([m.T for m in e.pruner.masks]),
        ValueError,
        ["masks[0]", "shape (10, 12)", "Received: masks[0] of shape (12, 10)"],
    ),
    (
        "too few masks",
        lambda e: e.pruner.set_masks(e.pruner.masks[:2]),
        ValueError,
        ["masks", "Received: masks with 2 masks"],
    ),
    (
        "masks as one array",
        lambda e: e.pruner.set_masks(np.ones((10, 12), dtype=bool)),
        TypeError,
        ["masks", "Received: masks=ndarray(shape=(10, 12), dtype=bool)"],
    ),
    (
        "a state dict that is not a pruner state",
        lambda e: e.pruner.load_state_dict({"masks": e.pruner.masks}),
        ValueError,
        ["state", "Received: state with format=None"],
    ),
    (
        "a pruner state of another model",
        lambda e: e.pruner.load_state_dict(LotteryTicketPruner(make_convnet()).state_dict()),
        ValueError,
        ["made for other parameters", "Received: [('conv1.weight'"],
    ),
    (
        "a PrunerHook with something that is not an optimizer",
        lambda e: PrunerHook(e.pruner, e.model, Tensorish()),
        TypeError,
        ["optimizer", "Received: optimizer=", "of type Tensorish"],
    ),
    (
        "a PrunerHook with the optimizer of another model",
        lambda e: PrunerHook(e.pruner, e.model, torch.optim.SGD(make_mlp().parameters(), lr=1)),
        ValueError,
        ["optimizer", "Received: optimizer with 6 parameters"],
    ),
    (
        "a PrunerHook with something that is not a pruner",
        lambda e: PrunerHook(e.pruner.core, e.model, e.optimizer),
        TypeError,
        ["pruner", "Received: pruner=", "of type LotteryTicketPruner"],
    ),
    (
        "a RewindPointHook with a negative step",
        lambda e: RewindPointHook(e.pruner, e.model, e.optimizer, step=-1),
        ValueError,
        ["step", "Received: step=-1"],
    ),
    (
        "a RewindPointHook with a bool step",
        lambda e: RewindPointHook(e.pruner, e.model, e.optimizer, step=True),
        ValueError,
        ["step", "Received: step=True"],
    ),
    (
        "a corrupt mask file",
        lambda e: e.pruner.load_masks(corrupt_file(e, "masks.npz")),
        ValueError,
        ["not a valid lottery-tickets state file", "Received: path=", "masks.npz"],
    ),
    (
        "an unknown mask layout",
        lambda e: e.pruner.load_masks(e.tmp / "masks.npz", layout="tensorflow"),
        ValueError,
        ["layout", "Received: layout='tensorflow'"],
    ),
    (
        "a truncated checkpoint",
        lambda e: load_checkpoint(truncated_checkpoint(e), e.model, e.optimizer, e.pruner),
        ValueError,
        ["not a valid ltp_torch checkpoint", "Received: path=", "ckpt.pt"],
    ),
    (
        "a corrupt checkpoint",
        lambda e: load_checkpoint(corrupt_file(e, "bad.pt"), e.model, e.optimizer, e.pruner),
        ValueError,
        ["not a valid ltp_torch checkpoint", "Received: path=", "bad.pt"],
    ),
    (
        "a checkpoint of another model",
        lambda e: load_checkpoint(other_model_checkpoint(e), e.model, e.optimizer, e.pruner),
        ValueError,
        ["model", "'0.weight' missing", "Received: model of type Sequential"],
    ),
    (
        "a checkpoint loaded with a pruner of the wrong type",
        lambda e: load_checkpoint(e.tmp / "x.pt", e.model, e.optimizer, e.pruner.core),
        TypeError,
        ["pruner", "Received: pruner=", "of type LotteryTicketPruner"],
    ),
    (
        "extra that weights_only cannot read back",
        lambda e: save_checkpoint(e.tmp / "x.pt", e.model, extra={"when": object()}),
        TypeError,
        ["extra", "Received: extra['when'] of type object"],
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "parts"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_a_clear_error_and_changes_nothing(
    env: Env, call: Callable[[Env], Any], error: type[Exception], parts: list[str]
) -> None:
    pruner_before = snapshot(env.pruner.state_dict())
    model_before = snapshot(env.model.state_dict())
    optimizer_before = snapshot(env.optimizer.state_dict())
    version = env.pruner.mask_version
    with pytest.raises(error) as caught:
        call(env)
    message = str(caught.value)
    assert "Received:" in message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    assert type(caught.value) is error
    assert_same(env.pruner.state_dict(), pruner_before, "pruner")
    assert_same(env.model.state_dict(), model_before, "model")
    assert_same(env.optimizer.state_dict(), optimizer_before, "optimizer")
    assert env.pruner.mask_version == version


def test_enough_cases() -> None:
    assert len(CASES) >= 15


# Construction-time errors: there is no pruner yet, so the module must be left untouched.


class WithExtras(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.count = nn.Parameter(torch.arange(6).reshape(2, 3), requires_grad=False)
        self.scale = nn.Parameter(torch.tensor(2.0))
        self.empty = nn.Parameter(torch.zeros(0, 3))


CONSTRUCTION: list[tuple[str, Callable[[], Any], type[Exception], list[str]]] = [
    (
        "integer weights via prunable",
        lambda: LotteryTicketPruner(WithExtras(), prunable=["fc.weight", "count"]),
        TypeError,
        ["prunable", "'count'", "Received: prunable selecting parameter 'count'", "torch.int64"],
    ),
    (
        "0-d weights via prunable",
        lambda: LotteryTicketPruner(WithExtras(), prunable=["scale"]),
        ValueError,
        ["prunable", "Received: prunable selecting parameter 'scale' of shape ()"],
    ),
    (
        "empty weights via prunable",
        lambda: LotteryTicketPruner(WithExtras(), prunable=lambda n, m, p: n == "empty"),
        ValueError,
        ["prunable", "Received: prunable selecting parameter 'empty' of shape (0, 3)"],
    ),
    (
        "NaN initial weights",
        lambda: LotteryTicketPruner(with_nan(make_mlp())),
        ValueError,
        ["module", "Received: module with non-finite '2.0.weight'"],
    ),
    (
        "an unknown parameter name",
        lambda: LotteryTicketPruner(make_mlp(), prunable=["fc.weight"]),
        ValueError,
        ["prunable", "Received: prunable=['fc.weight']"],
    ),
    (
        "prunable as one string",
        lambda: LotteryTicketPruner(make_mlp(), prunable="0.weight"),
        ValueError,
        ["'with_embeddings'", "prunable=['0.weight']", "Received: prunable='0.weight'"],
    ),
    (
        "unknown selector name",
        lambda: LotteryTicketPruner(make_mlp(), prunable="everything"),
        ValueError,
        [
            "Valid names: 'default', 'with_embeddings', 'all_matrices'",
            "'linear_and_conv'",
            "Received: prunable='everything'",
        ],
    ),
    (
        "a negative seed",
        lambda: LotteryTicketPruner(make_mlp(), seed=-3),
        TypeError,
        ["seed", "Received: seed=-3"],
    ),
    (
        "not a module",
        lambda: LotteryTicketPruner({"0.weight": torch.ones(3, 3)}),
        TypeError,
        ["module", "Received: module={'0.weight'"],
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "parts"), [c[1:] for c in CONSTRUCTION], ids=[c[0] for c in CONSTRUCTION]
)
def test_bad_construction_is_a_clear_error(
    call: Callable[[], Any], error: type[Exception], parts: list[str]
) -> None:
    with pytest.raises(error) as caught:
        call()
    message = str(caught.value)
    assert "Received:" in message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def test_missing_files_are_file_not_found(env: Env) -> None:
    before = snapshot(env.pruner.state_dict())
    with pytest.raises(FileNotFoundError, match="nowhere"):
        env.pruner.load_masks(env.tmp / "nowhere.npz")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_checkpoint(env.tmp / "nowhere.pt", env.model, env.optimizer, env.pruner)
    assert_same(env.pruner.state_dict(), before)


def test_meta_device_models_are_a_clear_error() -> None:
    """A model built under torch.device("meta") holds no values: creating a pruner raised
    torch's "Cannot copy out of meta tensor", and rewind() into one silently did nothing."""
    with torch.device("meta"):
        empty = make_mlp()
    with pytest.raises(ValueError, match=r"'0\.weight' is on the meta device"):
        LotteryTicketPruner(empty)
    model = make_mlp()
    pruner = LotteryTicketPruner(model)
    for method in (pruner.rewind, pruner.apply_pruning, pruner.set_pretrained_weights):
        with pytest.raises(ValueError, match=r"Received: module with meta parameter '0\.weight'"):
            method(model.to("meta"))
        model = make_mlp()
