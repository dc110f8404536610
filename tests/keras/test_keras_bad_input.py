"""Bad input to the Keras adapter: a clear error naming the argument, and no state change."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from keras import layers
from keras_models import make_mlp
from state_utils import assert_same_state

from ltp_core import io as core_io
from ltp_keras import LotteryTicketPruner, PrunerCallback, RewindCheckpoint

Case = Callable[[LotteryTicketPruner, keras.Model, Path], Any]


def _no_prunable_model() -> keras.Model:
    return keras.Sequential([keras.Input((3,)), layers.Activation("relu")])


def _corrupt_file(pruner: LotteryTicketPruner, path: Path) -> Path:
    pruner.save_masks(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _other_lenet_file(path: Path) -> Path:
    core_io.save_masks(path, [np.ones((5, 4), bool)], ["x/kernel"], layout="keras")
    return path


CASES: list[tuple[str, Case, type[Exception], str]] = [
    # prune_percentage
    ("pp_bool", lambda p, m, t: p.calc_prune_mask(m, True, "smallest_weights"),
     TypeError, r"Received: prune_percentage=True"),
    ("pp_str", lambda p, m, t: p.calc_prune_mask(m, "0.5", "smallest_weights"),
     TypeError, r"Received: prune_percentage='0.5'"),
    ("pp_none", lambda p, m, t: p.calc_prune_mask(m, None, "smallest_weights"),
     TypeError, r"Received: prune_percentage=None"),
    ("pp_nan", lambda p, m, t: p.calc_prune_mask(m, float("nan"), "smallest_weights"),
     ValueError, r"Received: prune_percentage=nan"),
    ("pp_one", lambda p, m, t: p.calc_prune_mask(m, 1.0, "smallest_weights"),
     ValueError, r"Received: prune_percentage=1\.0"),
    ("pp_negative", lambda p, m, t: p.calc_prune_mask(m, -0.1, "smallest_weights"),
     ValueError, r"Received: prune_percentage=-0\.1"),
    # strategies and layer rates
    ("strategy_unknown", lambda p, m, t: p.calc_prune_mask(m, 0.5, "biggest_weights"),
     ValueError, r"prune_strategy.*Received: prune_strategy='biggest_weights'"),
    ("strategy_int", lambda p, m, t: p.calc_prune_mask(m, 0.5, 3),
     TypeError, r"prune_strategy.*Received: prune_strategy=3"),
    ("layer_rates_unknown",
     lambda p, m, t: p.calc_prune_mask(m, 0.5, "smallest_weights", layer_rates={"nope": 2.0}),
     ValueError, r"layer_rates.*Received: layer_rates key 'nope'"),
    ("layer_rates_conflict",  # a layer name and its kernel's path, different multipliers
     lambda p, m, t: p.calc_prune_mask(
         m, 0.5, "smallest_weights", layer_rates={"out": 0.5, "mlp/out/kernel": 0}),
     ValueError, r"keys 'out' and 'mlp/out/kernel'.*Received: layer_rates\['out'\]=0\.5"),
    ("layer_rates_negative_by_layer_name",  # named as given, not as the index it resolves to
     lambda p, m, t: p.calc_prune_mask(m, 0.5, "smallest_weights", layer_rates={"out": -1}),
     ValueError, r"finite and >= 0.*Received: layer_rates\['out'\]=-1"),
    ("layer_rates_whole_layer_by_layer_name",
     lambda p, m, t: p.calc_prune_mask(m, 0.5, "smallest_weights", layer_rates={"out": 2}),
     ValueError, r"layer_rates\['out'\]` times the fraction 0.5"),
    # models
    ("model_not_keras", lambda p, m, t: LotteryTicketPruner("model"),
     TypeError, r"`model`.*Received: model of type str"),
    ("model_nothing_prunable", lambda p, m, t: LotteryTicketPruner(_no_prunable_model()),
     ValueError, r"no prunable variables.*Received: model"),
    ("model_unbuilt", lambda p, m, t: LotteryTicketPruner(keras.Sequential([layers.Dense(3)])),
     ValueError, r"no prunable variables.*Received: model"),
    ("calc_other_model",
     lambda p, m, t: p.calc_prune_mask(make_mlp(hidden=7), 0.5, "smallest_weights"),
     ValueError, r"prunable variables do not match.*Received: model 'mlp'.*\(10, 7\)"),
    ("pretrained_other_model", lambda p, m, t: p.set_pretrained_weights(make_mlp(hidden=7)),
     ValueError, r"prunable variables do not match.*Received: model 'mlp'"),
    ("calc_not_a_model", lambda p, m, t: p.calc_prune_mask("model", 0.5, "smallest_weights"),
     TypeError, r"`model`.*Received: model of type str"),
    # prunable= and seed=
    ("prunable_int", lambda p, m, t: LotteryTicketPruner(m, prunable=5),
     TypeError, r"`prunable`.*Received: prunable=5"),
    ("prunable_str", lambda p, m, t: LotteryTicketPruner(m, prunable="mlp/hidden/kernel"),
     ValueError, r"a list: prunable=\['mlp/hidden/kernel'\].*Received: prunable='mlp/"),
    ("prunable_unknown_path", lambda p, m, t: LotteryTicketPruner(m, prunable=["nope/kernel"]),
     ValueError, r"`prunable`.*Received: prunable=\['nope/kernel'\]"),
    ("prunable_selects_nothing", lambda p, m, t: LotteryTicketPruner(m, prunable=lambda v: False),
     ValueError, r"`prunable=`.*Received: model 'mlp'.*prunable="),
    ("prunable_predicate_arity", lambda p, m, t: LotteryTicketPruner(m, prunable=lambda v, w: 1),
     TypeError, r"`prunable` predicate is called with one argument.*Received: prunable="),
    ("seed_str", lambda p, m, t: LotteryTicketPruner(m, seed="x"),
     TypeError, r"`seed`.*Received: seed='x'"),
    # callbacks
    ("callback_not_pruner", lambda p, m, t: PrunerCallback("pruner"),
     TypeError, r"`pruner`.*Received: pruner of type str"),
    ("callback_dwr_str", lambda p, m, t: PrunerCallback(p, use_dwr="yes"),
     TypeError, r"`use_dwr`.*Received: use_dwr='yes'"),
    ("rewind_checkpoint_once_str", lambda p, m, t: RewindCheckpoint(p, iteration=1, once="no"),
     TypeError, r"`once` must be a bool.*Received: once='no'"),
    # masks
    ("masks_float", lambda p, m, t: p.set_masks([np.ones(s, np.float32) for s in p.shapes]),
     TypeError, r"`masks\[0\]`.*Received: masks\[0\] with dtype=float32"),
    ("masks_shape", lambda p, m, t: p.set_masks([np.ones((2, 2), bool) for _ in p.shapes]),
     ValueError, r"`masks\[0\]`.*Received: masks\[0\] of shape \(2, 2\)"),
    ("masks_count", lambda p, m, t: p.set_masks([np.ones(p.shapes[0], bool)]),
     ValueError, r"`masks`.*Received: masks with 1 masks"),
    ("mask_file_corrupt", lambda p, m, t: p.load_masks(_corrupt_file(p, t / "bad.npz")),
     ValueError, r"not a valid lottery-tickets state file.*Received: path="),
    ("mask_file_other_model", lambda p, m, t: p.load_masks(_other_lenet_file(t / "o.npz")),
     ValueError, r"do not match.*Received: masks from"),
    ("mask_file_missing", lambda p, m, t: p.load_masks(t / "missing.npz"),
     FileNotFoundError, r"missing\.npz"),
    ("layout_unknown", lambda p, m, t: p.load_masks(t / "x.npz", layout="tf"),
     ValueError, r"`layout`.*Received: layout='tf'"),
    ("index_of_unknown", lambda p, m, t: p.index_of("nope"),
     ValueError, r"Received: path='nope'"),
    ("state_dict_incomplete", lambda p, m, t: p.load_state_dict({"x": 1}),
     ValueError, r"`state`.*Received: keys \['x'\]"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "exc", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_a_clear_error_and_changes_nothing(
    tmp_path: Path, case: Case, exc: type[Exception], pattern: str
) -> None:
    model = make_mlp()
    pruner = LotteryTicketPruner(model, seed=0)
    pruner.calc_prune_mask(model, 0.3, "smallest_weights")
    pruner.apply_pruning(model)
    before = pruner.state_dict()
    weights = [np.array(w) for w in model.get_weights()]
    with pytest.raises(exc, match=pattern) as info:
        case(pruner, model, tmp_path)
    if exc is not FileNotFoundError:
        assert "Received:" in str(info.value)
    assert_same_state(before, pruner.state_dict())
    for old, new in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_at_least_fifteen_cases() -> None:
    assert len(CASES) >= 15


def test_a_layer_can_be_the_model() -> None:
    # `model=` accepts a layer (a block of a bigger model): it has no `layers` list.
    model = make_mlp()
    layer = model.get_layer("hidden")
    pruner = LotteryTicketPruner(layer)
    pruner.calc_prune_mask(layer, 0.5, "smallest_weights")
    pruner.apply_pruning(layer)
    assert pruner.names == ["mlp/hidden/kernel"]
    assert int(np.sum(keras.ops.convert_to_numpy(layer.kernel) == 0)) == 10 * 16 // 2
