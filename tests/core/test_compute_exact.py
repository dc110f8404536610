"""Exact small cases for every strategy, and the count rule."""

from __future__ import annotations

import numpy as np
import pytest

from ltp_core import STRATEGIES, LayerCollapseWarning, Strategy, compute_masks, count_to_prune


def pruned_count(masks: list[np.ndarray]) -> int:
    return sum(int((~m).sum()) for m in masks)


def test_smallest_of_four_is_pruned(selection_path: str) -> None:
    w = [np.array([3.0, -1.0, 4.0, -2.0])]
    assert compute_masks("smallest_weights", 0.25, current=w)[0].tolist() == [
        True,
        False,
        True,
        True,
    ]


@pytest.mark.parametrize(
    ("fraction", "alive", "expected"),
    [
        (0.07, 100, 7),
        (0.29, 100, 29),
        (0.5, 96, 48),
        (0.2, 48, 9),
        (0.1 + 0.2, 10, 3),
        (0.0, 1000, 0),
        (0.999, 1000, 999),
        (0.5, 1, 0),
    ],
)
def test_count_rule_is_exact(fraction: float, alive: int, expected: int) -> None:
    assert count_to_prune(fraction, alive) == expected


def test_ninety_six_distinct_then_cumulative(selection_path: str) -> None:
    w = [np.arange(1.0, 97.0).reshape(32, 3)]
    first = compute_masks("smallest_weights", 0.5, current=w)
    assert pruned_count(first) == 48
    assert not first[0].reshape(-1)[:48].any() and first[0].reshape(-1)[48:].all()
    second = compute_masks("smallest_weights", 0.2, current=w, masks=first)
    assert pruned_count(second) == 96 - 39


def test_ninety_six_equal_weights_prune_exactly_half(selection_path: str) -> None:
    w = [np.full((32, 3), 0.25, dtype=np.float32)]
    masks = compute_masks("large_final", 0.5, trained=w, seed=3)
    assert pruned_count(masks) == 48
    again = compute_masks("large_final", 0.5, trained=w, seed=3)
    other = compute_masks("large_final", 0.5, trained=w, seed=4)
    np.testing.assert_array_equal(masks[0], again[0])
    assert not np.array_equal(masks[0], other[0])


def test_conv_kernel_large_final_counts_also_when_all_equal(selection_path: str) -> None:
    rng = np.random.default_rng(0)
    for kernel in (rng.normal(size=(3, 3, 3, 4)), np.ones((3, 3, 3, 4))):
        first = compute_masks("large_final", 0.2, trained=[kernel])
        assert pruned_count(first) == 21
        second = compute_masks("large_final", 0.5, trained=[kernel], masks=first)
        assert pruned_count(second) == 64


def test_global_prunes_smallest_across_layers(selection_path: str) -> None:
    small = np.array([0.1, 0.2, 0.3, 0.4])
    large = np.array([10.0, 20.0, 30.0, 40.0])
    layer = compute_masks("large_final", 0.5, trained=[small, large])
    with pytest.warns(LayerCollapseWarning, match="layer_0"):
        glob = compute_masks("large_final_global", 0.5, trained=[small, large])
    assert [int(m.sum()) for m in layer] == [2, 2]
    assert [int(m.sum()) for m in glob] == [0, 4]


def test_large_init_ranks_initial_weights() -> None:
    masks = compute_masks(
        "large_init",
        0.5,
        initial=[np.array([4.0, 1.0, -3.0, 0.5])],
        trained=[np.array([0.0, 9.0, 9.0, 9.0])],
    )
    assert masks[0].tolist() == [True, False, True, False]


def test_movement_and_magnitude_increase() -> None:
    w0 = [np.array([1.0, 1.0, -1.0, 0.0])]
    w1 = [np.array([1.1, -2.0, -3.0, 0.2])]
    # movement |w1 - w0| = [0.1, 3, 2, 0.2]
    assert compute_masks("movement", 0.5, initial=w0, trained=w1)[0].tolist() == [
        False,
        True,
        True,
        False,
    ]
    # magnitude increase |w1| - |w0| = [0.1, 1, 2, 0.2]
    assert compute_masks("magnitude_increase", 0.5, initial=w0, trained=w1)[0].tolist() == [
        False,
        True,
        True,
        False,
    ]


def test_large_final_same_sign_prunes_flipped_first() -> None:
    w0 = [np.array([1.0, -1.0, 1.0, 1.0])]
    w1 = [np.array([0.1, 5.0, -7.0, 0.2])]  # entries 1 and 2 flipped sign
    assert compute_masks("large_final_same_sign", 0.5, initial=w0, trained=w1)[0].tolist() == [
        True,
        False,
        False,
        True,
    ]


def test_large_init_large_final_keeps_weights_large_in_both() -> None:
    w0 = [np.array([4.0, 3.0, 0.1, 0.2])]
    w1 = [np.array([4.0, 0.1, 3.0, 0.2])]
    # ranks init: [3, 2, 0, 1]; final: [3, 0, 2, 1]; min: [3, 0, 0, 1]
    mask = compute_masks("large_init_large_final", 0.5, initial=w0, trained=w1)[0]
    assert mask.tolist() == [True, False, False, True]


def test_random_prunes_exact_count_and_depends_on_seed(selection_path: str) -> None:
    w = [np.ones((50, 20))]
    a = compute_masks("random", 0.3, current=w, seed=1)
    b = compute_masks("random", 0.3, current=w, seed=2)
    assert pruned_count(a) == pruned_count(b) == 300
    assert not np.array_equal(a[0], b[0])


def test_layer_rates_scale_and_exclude() -> None:
    w = [np.arange(1.0, 101.0), np.arange(1.0, 101.0), np.arange(1.0, 101.0)]
    masks = compute_masks(
        "large_final", 0.2, trained=w, layer_rates={"out": 0.5, 0: 0}, names=["a", "b", "out"]
    )
    assert [int((~m).sum()) for m in masks] == [0, 20, 10]


def test_layer_rates_in_global_scope_prune_rated_layers_alone() -> None:
    w = [np.arange(1.0, 101.0), np.arange(101.0, 201.0), np.arange(1.0, 101.0)]
    masks = compute_masks("large_final_global", 0.2, trained=w, layer_rates={2: 0.5})
    assert [int((~m).sum()) for m in masks] == [40, 0, 10]


def test_custom_strategy_object() -> None:
    cube = Strategy.from_score_fn("neg", lambda trained: -np.abs(trained), needs=("trained",))
    masks = compute_masks(cube, 0.5, trained=[np.array([1.0, 2.0, 3.0, 4.0])])
    assert masks[0].tolist() == [True, True, False, False]


def test_custom_elementwise_strategy_streams(selection_path: str) -> None:
    square = Strategy.from_score_fn(
        "square", np.square, needs=("current",), elementwise=True, scope="global"
    )
    w = [np.linspace(-1, 1, 200).reshape(20, 10)]
    masks = compute_masks(square, 0.5, current=w)
    assert pruned_count(masks) == 100
    assert np.abs(w[0][~masks[0]]).max() <= np.abs(w[0][masks[0]]).min()


def test_registry_is_read_only_and_complete() -> None:
    with pytest.raises(TypeError):
        STRATEGIES["mine"] = STRATEGIES["random"]  # type: ignore[index]
    for base in [
        "random",
        "smallest_weights",
        "large_final",
        "large_init",
        "large_init_large_final",
        "magnitude_increase",
        "movement",
        "large_final_same_sign",
    ]:
        assert STRATEGIES[base].scope == "layer"
        assert STRATEGIES[f"{base}_global"].scope == "global"


def test_memmap_weights(tmp_path: object, selection_path: str) -> None:
    import pathlib

    path = pathlib.Path(str(tmp_path)) / "w.dat"
    data = np.memmap(path, dtype=np.float32, mode="w+", shape=(64, 32))
    data[:] = np.random.default_rng(0).normal(size=(64, 32))
    data.flush()
    readonly = np.memmap(path, dtype=np.float32, mode="r", shape=(64, 32))
    masks = compute_masks("large_final_global", 0.4, trained=[readonly, np.asarray(readonly)])
    assert pruned_count(masks) == count_to_prune(0.4, 2 * 64 * 32)
    np.testing.assert_array_equal(masks[0], masks[1])


def test_float16_and_bfloat16() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    w32 = np.random.default_rng(0).normal(size=(40,)).astype(np.float32)
    for dtype in (np.float16, ml_dtypes.bfloat16):
        masks = compute_masks("large_final", 0.5, trained=[w32.astype(dtype)])
        assert pruned_count(masks) == 20


def test_a_fraction_that_prunes_nothing_warns_once() -> None:
    import warnings

    from ltp_core import LotteryTicketPruner, NothingPrunedWarning

    w = [np.arange(1.0, 5.0), np.arange(1.0, 4.0)]
    with pytest.warns(NothingPrunedWarning, match=r"fraction=0.2 of the 7 alive .*global"):
        masks = compute_masks("large_final", 0.2, trained=w)  # floor(0.8), floor(0.6): 0
    assert all(m.all() for m in masks)
    with pytest.warns(NothingPrunedWarning, match="layer_rates exclude"):
        compute_masks("large_final", 0.5, trained=w, names=["a", "b"], layer_rates={"a": 0, "b": 0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compute_masks("large_final_global", 0.2, trained=w)  # floor(1.4) = 1
        compute_masks("large_final", 0.0, trained=w)  # nothing asked for
        compute_masks("large_final", 0.5, trained=w, masks=[np.zeros(4, bool), np.zeros(3, bool)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compute_masks("large_final", 0.2, trained=w, warn_if_nothing=False)
    with pytest.raises(TypeError, match=r"warn_if_nothing.*Received: warn_if_nothing='no'"):
        compute_masks("large_final", 0.2, trained=w, warn_if_nothing="no")  # type: ignore[arg-type]
    pruner = LotteryTicketPruner(w)  # the pruner words the warning itself, once
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruner.calc_prune_mask(w, 0.2, "smallest_weights")
    assert [str(c.message)[:30] for c in caught] == ["Level 1 pruned no weight: 0.2 "]


def test_layer_collapse_warning_points_at_the_caller() -> None:
    w = [np.full(4, 0.01), np.arange(1.0, 7.0)]
    with pytest.warns(LayerCollapseWarning, match=r"\['layer_0'\]") as caught:
        compute_masks("large_final_global", 0.9, trained=w)
    assert caught[0].filename == __file__
