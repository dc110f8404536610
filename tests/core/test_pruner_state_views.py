"""The pruner's state cannot be edited through its properties; empty levels warn (issue 13)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from ltp_core import LotteryTicketPruner, NothingPrunedWarning


def _pruner() -> LotteryTicketPruner:
    rng = np.random.default_rng(0)
    w0 = [rng.normal(size=(6, 4)), rng.normal(size=(4,))]
    pruner = LotteryTicketPruner(w0, names=["a", "b"])
    pruner.set_pretrained_weights([w * 2 for w in w0])
    pruner.set_rewind_weights([w * 3 for w in w0])
    pruner.calc_prune_mask(w0, 0.5, "large_final")
    return pruner


@pytest.mark.parametrize(
    "name", ["masks", "initial_weights", "pretrained_weights", "rewind_weights"]
)
def test_properties_are_read_only(name: str) -> None:
    pruner = _pruner()
    before = pruner.state_dict()
    arrays = getattr(pruner, name)
    with pytest.raises(ValueError, match="read-only"):
        arrays[0][...] = 1
    with pytest.raises(ValueError, match="read-only"):
        arrays[0] *= 0
    copied = np.array(arrays[0])  # a copy is writable and detached
    copied[...] = 1
    after = pruner.state_dict()
    for key in ("masks", "initial_weights", "pretrained_weights", "rewind_weights"):
        for x, y in zip(before[key], after[key], strict=True):
            np.testing.assert_array_equal(x, y)


def test_masked_rewind_and_apply_still_return_writable_arrays() -> None:
    pruner = _pruner()
    out = pruner.masked_rewind_weights()
    out[0][...] = 5  # the caller's own arrays
    assert not np.any(pruner.rewind_weights[0] == 5)
    applied = pruner.apply_pruning(pruner.initial_weights)
    applied[0][...] = 7
    assert not np.any(pruner.initial_weights[0] == 7)


def test_level_that_prunes_nothing_warns_and_is_recorded() -> None:
    w = [np.arange(1.0, 5.0), np.arange(1.0, 4.0)]
    pruner = LotteryTicketPruner(w)
    with pytest.warns(NothingPrunedWarning, match=r"Level 1 pruned no weight"):
        pruner.calc_prune_mask(w, 0.2, "smallest_weights")  # floor(0.2*4) = floor(0.2*3) = 0
    history = pruner.history
    assert pruner.level == 1 and len(history) == 1 and history[0]["pruned"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pruner.calc_prune_mask(w, 0.2, "smallest_weights_global")  # floor(0.2*7) = 1
    assert pruner.history[-1]["pruned"] == 1


def test_stalled_pruning_warns_at_every_stalled_level() -> None:
    w = [np.arange(1.0, 3.0)]
    pruner = LotteryTicketPruner(w)
    pruner.calc_prune_mask(w, 0.5, "smallest_weights")  # 2 -> 1
    for level in (2, 3):
        with pytest.warns(NothingPrunedWarning, match=f"Level {level}"):
            pruner.calc_prune_mask(w, 0.5, "smallest_weights")  # floor(0.5*1) = 0
    assert [h["pruned"] for h in pruner.history] == [1, 0, 0]


def test_fraction_zero_is_not_a_surprise() -> None:
    w = [np.arange(1.0, 5.0)]
    pruner = LotteryTicketPruner(w)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pruner.calc_prune_mask(w, 0.0, "smallest_weights")
    assert pruner.history[0]["pruned"] == 0
