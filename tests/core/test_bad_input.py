"""Bad input to the core raises a clear error naming the argument and the received value."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from ltp_core import LotteryTicketPruner, compute_masks

W = [np.ones((4, 3), dtype=np.float32), np.ones((3, 2), dtype=np.float32)]


def pruner() -> LotteryTicketPruner:
    p = LotteryTicketPruner(W)
    p.set_pretrained_weights(W)
    return p


CASES: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    (
        "fraction 1.0",
        lambda: pruner().calc_prune_mask(W, 1.0, "large_final"),
        ValueError,
        "prune_percentage=1.0",
    ),
    (
        "fraction negative",
        lambda: pruner().calc_prune_mask(W, -0.1, "large_final"),
        ValueError,
        "prune_percentage=-0.1",
    ),
    (
        "fraction NaN",
        lambda: pruner().calc_prune_mask(W, math.nan, "large_final"),
        ValueError,
        "prune_percentage=nan",
    ),
    (
        "fraction bool",
        lambda: pruner().calc_prune_mask(W, True, "large_final"),
        TypeError,
        "prune_percentage=True",
    ),
    (
        "fraction str",
        lambda: pruner().calc_prune_mask(W, "0.5", "large_final"),
        TypeError,
        "prune_percentage='0.5'",
    ),
    (
        "fraction None",
        lambda: pruner().calc_prune_mask(W, None, "large_final"),
        TypeError,
        "prune_percentage=None",
    ),
    (
        "unknown strategy",
        lambda: pruner().calc_prune_mask(W, 0.2, "biggest"),
        ValueError,
        "large_final_global",
    ),
    ("strategy type", lambda: pruner().calc_prune_mask(W, 0.2, 3), TypeError, "prune_strategy=3"),
    (
        "NaN weights",
        lambda: LotteryTicketPruner([np.array([1.0, np.nan])]),
        ValueError,
        "NaN or infinite",
    ),
    (
        "Inf weights",
        lambda: compute_masks("large_final", 0.5, trained=[np.array([1.0, np.inf])]),
        ValueError,
        "NaN or infinite",
    ),
    ("integer weights", lambda: LotteryTicketPruner([np.arange(4)]), TypeError, "dtype=int64"),
    ("0-d weights", lambda: LotteryTicketPruner([np.float32(1.0)]), ValueError, "shape ()"),
    ("empty array", lambda: LotteryTicketPruner([np.ones((0, 3))]), ValueError, "empty"),
    ("empty list", lambda: LotteryTicketPruner([]), ValueError, "initial_weights=[]"),
    ("not a list", lambda: LotteryTicketPruner(np.ones(3)), TypeError, "list of weight arrays"),
    (
        "ragged",
        lambda: LotteryTicketPruner([[[1.0, 2.0], [1.0]]]),
        ValueError,
        "initial_weights[0]",
    ),
    (
        "wrong count",
        lambda: pruner().calc_prune_mask(W[:1], 0.2, "smallest_weights"),
        ValueError,
        "must hold 2 arrays",
    ),
    (
        "wrong shape",
        lambda: pruner().set_pretrained_weights([np.ones((3, 4)), W[1]]),
        ValueError,
        "expected (4, 3)",
    ),
    (
        "mask dtype",
        lambda: compute_masks(
            "large_final", 0.2, trained=W, masks=[np.ones((4, 3)), np.ones((3, 2))]
        ),
        TypeError,
        "dtype bool",
    ),
    (
        "mask shape",
        lambda: compute_masks(
            "large_final", 0.2, trained=W, masks=[np.ones((3, 4), bool), np.ones((3, 2), bool)]
        ),
        ValueError,
        "must have shape (4, 3)",
    ),
    (
        "no pretrained",
        lambda: LotteryTicketPruner(W).calc_prune_mask(W, 0.2, "movement"),
        ValueError,
        "set_pretrained_weights",
    ),
    (
        "compute without trained",
        lambda: compute_masks("large_final", 0.2, initial=W),
        ValueError,
        "trained=None",
    ),
    (
        "layer rate unknown",
        lambda: pruner().calc_prune_mask(W, 0.2, "large_final", layer_rates={"x": 1}),
        ValueError,
        "'x'",
    ),
    (
        "layer rate negative",
        lambda: pruner().calc_prune_mask(W, 0.2, "large_final", layer_rates={0: -1}),
        ValueError,
        "=-1",
    ),
    (
        "layer rate too big",
        lambda: pruner().calc_prune_mask(W, 0.5, "large_final", layer_rates={0: 2}),
        ValueError,
        "prune the whole layer",
    ),
    (
        "layer rates type",
        lambda: pruner().calc_prune_mask(W, 0.2, "large_final", layer_rates=[1, 2]),
        TypeError,
        "layer_rates=[1, 2]",
    ),
    ("seed negative", lambda: LotteryTicketPruner(W, seed=-1), TypeError, "seed=-1"),
    ("seed float", lambda: LotteryTicketPruner(W, seed=1.5), TypeError, "seed=1.5"),
    (
        "duplicate names",
        lambda: LotteryTicketPruner(W, names=["a", "a"]),
        ValueError,
        "duplicated names ['a']",
    ),
    (
        "names count",
        lambda: LotteryTicketPruner(W, names=["a"]),
        ValueError,
        "one entry per weight array",
    ),
]


@pytest.mark.parametrize(("label", "call", "error", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(
    label: str, call: Callable[[], Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value)
    if isinstance(info.value, ValueError | TypeError) and message:
        assert "Received" in str(info.value)
