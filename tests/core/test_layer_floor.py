"""min_layer_density (no layer emptied by global selection) and the layer-collapse warning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ltp_core import LayerCollapseWarning, LotteryTicketPruner, compute_masks, count_to_prune
from ltp_core.compute import layer_floor

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def small_and_large() -> list[np.ndarray]:
    """A tiny layer of small weights (a zero-ish head) and a large layer of large weights."""
    small = np.array([0.01, 0.02, 0.03, 0.04])
    large = np.arange(1.0, 17.0)
    return [small, large]


def test_exact_small_case_by_hand(selection_path: str) -> None:
    # 20 weights, prune half = 10. Unconstrained: the 4 small ones + 1..6 -> layer 0 emptied.
    # min_layer_density=0.5: layer 0 keeps ceil(0.5*4)=2 (its largest: 0.03, 0.04), so only
    # 0.01, 0.02 go there and the other 8 come from the large layer: 1..8.
    w = small_and_large()
    with pytest.warns(LayerCollapseWarning, match="layer_0"):
        plain = compute_masks("large_final_global", 0.5, trained=w)
    assert plain[0].tolist() == [False] * 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        floored = compute_masks("large_final_global", 0.5, trained=w, min_layer_density=0.5)
    assert floored[0].tolist() == [False, False, True, True]
    assert floored[1].tolist() == [False] * 8 + [True] * 8


def test_any_positive_density_keeps_at_least_one_weight() -> None:
    w = small_and_large()
    masks = compute_masks("large_final_global", 0.5, trained=w, min_layer_density=1e-9)
    assert masks[0].tolist() == [False, False, False, True]
    assert int((~masks[1]).sum()) == 7


def test_floor_is_relative_to_layer_size_and_computed_exactly() -> None:
    assert layer_floor(0.01, 300) == 3  # not 4 from float noise
    assert layer_floor(0.07, 100) == 7
    assert layer_floor(0.5, 5) == 3


def test_layer_already_below_floor_loses_nothing_more() -> None:
    w = small_and_large()
    # layer 0 already down to 1 of 4 (below ceil(0.5*4)=2): it must keep that one.
    masks = [np.array([False, False, False, True]), np.ones(16, dtype=bool)]
    new = compute_masks("large_final_global", 0.5, trained=w, masks=masks, min_layer_density=0.5)
    assert new[0].tolist() == [False, False, False, True]
    assert int((~new[1]).sum()) == count_to_prune(0.5, 17)


def test_impossible_floor_is_an_error_and_changes_nothing() -> None:
    w = small_and_large()
    # prune 0.9 of 20 = 18 while keeping ceil(0.5*4)+ceil(0.5*16)=10: impossible.
    with pytest.raises(ValueError, match=r"min_layer_density=0.5") as info:
        compute_masks("large_final_global", 0.9, trained=w, min_layer_density=0.5)
    assert "Received" in str(info.value)
    pruner = LotteryTicketPruner(w)
    pruner.set_pretrained_weights(w)
    with pytest.raises(ValueError, match="min_layer_density"):
        pruner.calc_prune_mask(w, 0.9, "large_final_global", min_layer_density=0.5)
    assert pruner.level == 0 and pruner.history == [] and all(m.all() for m in pruner.masks)


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, float("nan")])
def test_out_of_range_is_a_value_error(value: float) -> None:
    with pytest.raises(ValueError, match="min_layer_density") as info:
        compute_masks("large_final_global", 0.5, trained=small_and_large(), min_layer_density=value)
    assert f"min_layer_density={value!r}" in str(info.value)


@pytest.mark.parametrize("value", [True, "0.1", None])
def test_wrong_type_is_a_type_error(value: object) -> None:
    with pytest.raises(TypeError, match="min_layer_density"):
        compute_masks(
            "large_final_global",
            0.5,
            trained=small_and_large(),
            min_layer_density=value,  # type: ignore[arg-type]
        )


def test_layer_scope_floor_that_its_own_count_breaks_is_an_error() -> None:
    w = [np.arange(1.0, 11.0)]
    assert int((~compute_masks("large_final", 0.5, trained=w, min_layer_density=0.5)[0]).sum()) == 5
    with pytest.raises(ValueError, match="min_layer_density"):
        compute_masks("large_final", 0.6, trained=w, min_layer_density=0.5)


def test_collapse_warning_names_layers_and_remedies() -> None:
    w = small_and_large()
    with pytest.warns(LayerCollapseWarning) as record:
        compute_masks("large_final_global", 0.5, trained=w, names=["head", "body"])
    text = str(record[0].message)
    assert "['head']" in text and "min_layer_density" in text and "lamp" in text


def test_no_warning_when_no_layer_is_emptied() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compute_masks("large_final_global", 0.15, trained=small_and_large())


@st.composite
def floored_problems(draw: st.DrawFn) -> dict[str, object]:
    shapes = draw(
        st.lists(
            hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=8), min_size=1, max_size=4
        )
    )
    elements = st.one_of(
        st.sampled_from([0.0, 0.5, 1.0]), st.floats(-1e3, 1e3, allow_nan=False, width=32)
    )
    trained = [draw(hnp.arrays(np.float32, s, elements=elements)) for s in shapes]
    masks = [draw(hnp.arrays(np.bool_, s)) for s in shapes] if draw(st.booleans()) else None
    return {
        "trained": trained,
        "masks": masks,
        "fraction": draw(st.floats(0.0, 0.99)),
        "density": draw(st.sampled_from([0.0, 0.01, 0.1, 0.3, 0.6, 0.9])),
        "strategy": draw(st.sampled_from(["large_final_global", "random_global"])),
        "seed": draw(st.integers(0, 2**32)),
    }


@SETTINGS
@given(problem=floored_problems())
def test_floor_properties(problem: dict[str, object], selection_path: str) -> None:
    trained = problem["trained"]
    assert isinstance(trained, list)
    masks = problem["masks"]
    alive = masks if isinstance(masks, list) else [np.ones(w.shape, bool) for w in trained]
    density = float(problem["density"])  # type: ignore[arg-type]
    fraction = float(problem["fraction"])  # type: ignore[arg-type]
    n_alive = sum(int(m.sum()) for m in alive)
    k = count_to_prune(fraction, n_alive)
    floors = [min(int(m.sum()), layer_floor(density, m.size)) for m in alive]
    possible = k <= n_alive - sum(floors)
    kwargs = {
        "trained": trained,
        "masks": masks,
        "seed": problem["seed"],
        "min_layer_density": density,
    }
    strategy = str(problem["strategy"])
    if not possible:
        with pytest.raises(ValueError, match="min_layer_density"):
            compute_masks(strategy, fraction, **kwargs)  # type: ignore[arg-type]
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LayerCollapseWarning)
        new = compute_masks(strategy, fraction, **kwargs)  # type: ignore[arg-type]
    # exact count, monotone subset, floors held
    assert sum(int(o.sum() - m.sum()) for o, m in zip(alive, new, strict=True)) == k
    assert all(not np.any(m & ~o) for m, o in zip(new, alive, strict=True))
    assert all(int(m.sum()) >= f for m, f in zip(new, floors, strict=True))
    if strategy == "large_final_global":
        # Optimality: no kept weight of a layer above its floor scores below a pruned weight
        # (otherwise swapping the two would follow the ranking better and respect the floors).
        scores = [np.abs(w.astype(np.float64)) for w in trained]
        pruned = [s[o & ~m] for s, o, m in zip(scores, alive, new, strict=True)]
        free = [s[m] for s, m, f in zip(scores, new, floors, strict=True) if int(m.sum()) > f]
        pruned_all = np.concatenate([p.ravel() for p in pruned])
        free_all = np.concatenate([x.ravel() for x in free] or [np.empty(0)])
        if pruned_all.size and free_all.size:
            assert pruned_all.max() <= free_all.min()
