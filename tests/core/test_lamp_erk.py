"""The global-by-nature criteria: ``lamp`` (Lee et al. 2021) and ``random_erk`` (Evci et al.)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ltp_core import STRATEGIES, LayerCollapseWarning, compute_masks, count_to_prune
from ltp_core.compute import layer_floor
from ltp_core.shards import masks_from_shards
from ltp_core.strategies import erk_counts, strategy_name

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def reference_lamp(trained: list[np.ndarray], alive: list[np.ndarray]) -> list[np.ndarray]:
    """LAMP scores written from the paper's formula, one weight at a time (ties: position)."""
    result = []
    for w, m in zip(trained, alive, strict=True):
        flat = w.astype(np.float64).reshape(-1)
        live = [i for i in np.flatnonzero(m.reshape(-1))]
        order = sorted(live, key=lambda i: (flat[i] ** 2, i))
        scores = np.zeros(flat.size)
        for rank, i in enumerate(order):
            denominator = sum(flat[j] ** 2 for j in order[rank:])
            scores[i] = flat[i] ** 2 / denominator if denominator > 0 else 0.0
        if order:
            scores[order[-1]] = 1.0
        result.append(scores.reshape(w.shape))
    return result


def _unpacked(
    problem: dict[str, object], dtype: type
) -> tuple[list[np.ndarray], list[np.ndarray], int, int]:
    """A hypothesis problem's weights (as ``dtype``), alive masks, count to prune and salt."""
    trained = [np.asarray(w, dtype=dtype) for w in problem["trained"]]  # type: ignore[attr-defined]
    masks = problem["masks"]
    alive = masks if isinstance(masks, list) else [np.ones(w.shape, bool) for w in trained]
    n_alive = sum(int(m.sum()) for m in alive)
    k = count_to_prune(float(problem["fraction"]), n_alive)  # type: ignore[arg-type]
    salt = int(problem["seed"]) % (1 << 32)  # type: ignore[call-overload]
    return trained, alive, k, salt


def test_lamp_small_case_by_hand(selection_path: str) -> None:
    # layer 0: squares 1,4,9,16 (x1e-4), suffix sums 30,29,25,16 -> 1/30, 4/29, 9/25, 1
    # layer 1: 1..16, squares 1..256, suffix sums 1496, 1495, 1491, ... -> 1/1496, 4/1495, ...
    # 10 smallest: layer 1's 1..9 (up to 81/1292 = 0.063) and layer 0's 1/30 = 0.033.
    small = np.array([0.01, -0.02, 0.03, 0.04])
    large = np.arange(1.0, 17.0)
    masks = compute_masks("lamp", 0.5, trained=[small, large])
    assert masks[0].tolist() == [False, True, True, True]
    assert masks[1].tolist() == [False] * 9 + [True] * 7
    # large_final_global empties the small layer; lamp keeps three of its four weights
    with pytest.warns(LayerCollapseWarning):
        plain = compute_masks("large_final_global", 0.5, trained=[small, large])
    assert not plain[0].any()


def test_lamp_scores_match_the_reference() -> None:
    from ltp_core.strategies import CRITERIA

    rng = np.random.default_rng(0)
    trained = [rng.normal(size=(5, 4)), np.array([0.0, 0.0, 0.0]), np.array([2.0, -2.0, 1.0])]
    alive = [rng.random((5, 4)) > 0.3, np.ones(3, bool), np.ones(3, bool)]
    pooled = CRITERIA["lamp"].pooled
    assert pooled is not None
    ours = pooled({"trained": trained}, alive)
    for a, b, m in zip(ours, reference_lamp(trained, alive), alive, strict=True):
        np.testing.assert_allclose(a.reshape(-1)[m.reshape(-1)], b.reshape(-1)[m.reshape(-1)])


def test_random_erk_small_case_by_hand() -> None:
    # ERK kept counts proportional to the sum of dims: (4,) -> 4, (16,) -> 16; keep 10 -> 2, 8.
    masks = compute_masks("random_erk", 0.5, trained=[np.ones(4), np.ones(16)], seed=3)
    assert [int(m.sum()) for m in masks] == [2, 8]
    # a dense 300x100 and a 100x10 head at 90% sparsity: the head stays far denser
    w = [np.ones((300, 100)), np.ones((100, 10))]
    masks = compute_masks("random_erk", 0.9, trained=w)
    kept = [int(m.sum()) for m in masks]
    # keep 3100 in proportion 400 : 110 -> 2431.37, 668.63 -> largest remainder -> 2431, 669
    assert kept == [2431, 669]


def test_erk_counts_cap_and_redistribute() -> None:
    # the small layer would get more than it has: capped at its alive count, rest elsewhere
    assert erk_counts([(1000, 1000), (3, 3)], [1_000_000, 9], 500_000) == [500_000, 0]
    assert erk_counts([(10, 10), (10, 1)], [100, 10], 55) == [55, 0]
    assert erk_counts([(4,), (16,)], [0, 16], 8) == [0, 8]


@given(
    shapes=st.lists(
        hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=12), min_size=1, max_size=5
    ),
    data=st.data(),
)
@SETTINGS
def test_erk_counts_properties(shapes: list[tuple[int, ...]], data: st.DataObject) -> None:
    sizes = [math.prod(s) for s in shapes]
    alive = [data.draw(st.integers(0, n)) for n in sizes]
    k = data.draw(st.integers(0, sum(alive)))
    counts = erk_counts(shapes, alive, k)
    assert sum(counts) == k
    assert all(0 <= c <= a for c, a in zip(counts, alive, strict=True))
    kept = [a - c for a, c in zip(alive, counts, strict=True)]
    # uncapped layers keep in proportion to their sum of dims (within rounding)
    free = [i for i in range(len(shapes)) if 0 < kept[i] < alive[i]]
    for i in free:
        for j in free:
            assert (kept[i] - 1) / sum(shapes[i]) <= (kept[j] + 1) / sum(shapes[j]) + 1e-9


@st.composite
def problems(draw: st.DrawFn) -> dict[str, object]:
    shapes = draw(
        st.lists(
            hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=8), min_size=1, max_size=4
        )
    )
    elements = st.one_of(
        st.sampled_from([-1.0, 0.0, 0.5, 1.0]), st.floats(-1e3, 1e3, allow_nan=False, width=32)
    )
    return {
        "trained": [draw(hnp.arrays(np.float32, s, elements=elements)) for s in shapes],
        "masks": [draw(hnp.arrays(np.bool_, s)) for s in shapes] if draw(st.booleans()) else None,
        "fraction": draw(st.floats(0.0, 0.99)),
        "density": draw(st.sampled_from([0.0, 0.0, 0.1, 0.5])),
        "seed": draw(st.integers(0, 2**32)),
    }


@pytest.mark.parametrize("name", ["lamp", "random_erk"])
@SETTINGS
@given(problem=problems())
def test_properties(name: str, problem: dict[str, object], selection_path: str) -> None:
    trained = problem["trained"]
    assert isinstance(trained, list)
    masks = problem["masks"]
    alive = masks if isinstance(masks, list) else [np.ones(w.shape, bool) for w in trained]
    fraction = float(problem["fraction"])  # type: ignore[arg-type]
    density = float(problem["density"])  # type: ignore[arg-type]
    n_alive = sum(int(m.sum()) for m in alive)
    k = count_to_prune(fraction, n_alive)
    floors = [min(int(m.sum()), layer_floor(density, m.size)) for m in alive]
    layers_alive = sum(1 for m in alive if m.any())
    call = {"trained": trained, "masks": masks, "seed": problem["seed"]}
    impossible = k > n_alive - sum(floors) or (
        name == "lamp" and len(trained) > 1 and n_alive - k < layers_alive
    )
    if impossible:
        with pytest.raises(ValueError, match=r"min_layer_density|every layer"):
            compute_masks(name, fraction, min_layer_density=density, **call)  # type: ignore[arg-type]
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        new = compute_masks(name, fraction, min_layer_density=density, **call)  # type: ignore[arg-type]
        again = compute_masks(name, fraction, min_layer_density=density, **call)  # type: ignore[arg-type]
    assert all(np.array_equal(a, b) for a, b in zip(new, again, strict=True))
    # exact k, monotone subset, floors
    assert sum(int(o.sum() - m.sum()) for o, m in zip(alive, new, strict=True)) == k
    assert all(not np.any(m & ~o) for m, o in zip(new, alive, strict=True))
    assert all(int(m.sum()) >= f for m, f in zip(new, floors, strict=True))
    if name == "lamp":
        assert not any(issubclass(w.category, LayerCollapseWarning) for w in caught)
        # every layer that had weights keeps at least one (its largest)
        for m, o, w in zip(new, alive, trained, strict=True):
            if o.any():
                assert m.any()
                if density == 0.0:
                    assert np.abs(w[m]).max() == np.abs(w[o]).max()
        # the pruned weights have the smallest reference scores (among layers above floor)
        scores = reference_lamp(trained, alive)
        pruned = np.concatenate([s[o & ~m] for s, o, m in zip(scores, alive, new, strict=True)])
        free = [s[m] for s, m, f in zip(scores, new, floors, strict=True) if int(m.sum()) > f]
        free_all = np.concatenate([x.ravel() for x in free] or [np.empty(0)])
        if pruned.size and free_all.size:
            assert pruned.max() <= free_all.min() * (1 + 1e-9)
    else:
        counts = erk_counts([w.shape for w in trained], [int(m.sum()) for m in alive], k)
        if density == 0.0:
            assert [int(o.sum() - m.sum()) for o, m in zip(alive, new, strict=True)] == counts


def test_lamp_too_few_survivors_for_every_layer_is_an_error() -> None:
    w = [np.ones(1), np.ones(1), np.ones(2)]
    with pytest.raises(ValueError, match="every layer") as info:
        compute_masks("lamp", 0.5, trained=w)  # 4 -> 2 left for 3 layers
    assert "Received: fraction=0.5" in str(info.value)


def test_lamp_honours_layer_rates() -> None:
    rng = np.random.default_rng(1)
    w = [rng.normal(size=40), rng.normal(size=30) * 0.01, rng.normal(size=20)]
    excluded = compute_masks("lamp", 0.5, trained=w, layer_rates={1: 0})
    assert excluded[1].all()
    assert sum(int((~m).sum()) for m in excluded) == count_to_prune(0.5, 60)
    # a layer at another rate is pruned on its own, by magnitude (LAMP's order in a layer)
    half = compute_masks("lamp", 0.5, trained=w, layer_rates={2: 0.5})
    assert int((~half[2]).sum()) == count_to_prune(0.5, 20, 0.5)
    assert np.abs(w[2][~half[2]]).max() <= np.abs(w[2][half[2]]).min()


def test_global_only_names_and_scopes() -> None:
    assert STRATEGIES["lamp"].scope == "global" and "lamp_global" not in STRATEGIES
    assert STRATEGIES["random_erk"].scope == "global"
    assert strategy_name("lamp", "global") == "lamp"
    with pytest.raises(ValueError, match=r"--scope global.*strategy='lamp', scope='layer'"):
        strategy_name("lamp", "layer")


def test_shards_refuse_lamp_and_stream_random_erk(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = {
        "a.w": rng.normal(size=(30, 20)).astype(np.float32),
        "b.w": rng.normal(size=(20, 4)).astype(np.float32),
    }
    np.savez(tmp_path / "w.npz", **w)
    with pytest.raises(ValueError, match="cannot stream") as info:
        masks_from_shards([tmp_path / "w.npz"], "lamp", 0.5)
    assert "Received: strategy='lamp'" in str(info.value)
    streamed = masks_from_shards([tmp_path / "w.npz"], "random_erk", 0.8, seed=4)
    in_memory = compute_masks("random_erk", 0.8, trained=list(w.values()), seed=4)
    for packed, mask in zip(streamed.packed, in_memory, strict=True):
        bits = np.unpackbits(packed)[: mask.size].astype(bool)
        np.testing.assert_array_equal(bits, mask.reshape(-1))


def test_imp_config_needs_global_scope_for_global_only_criteria() -> None:
    from ltp_core.experiment import ImpConfig

    with pytest.raises(ValueError, match=r"--scope global.*strategy='lamp'"):
        ImpConfig(framework="numpy", strategy="lamp", scope="layer")
    assert ImpConfig(framework="numpy", strategy="random_erk", scope="global").scope == "global"


def test_ltp_mask_refuses_lamp_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ltp_core.cli import main

    np.savez(tmp_path / "w.npz", a=np.ones((4, 4), dtype=np.float32))
    argv = ["mask", str(tmp_path / "w.npz"), "--strategy", "lamp", "--fraction", "0.5"]
    message = ""
    try:
        code = main([*argv, "--out", str(tmp_path / "m.npz")])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
        message = exit_.code if isinstance(exit_.code, str) else ""
    err = capsys.readouterr().err + message
    assert code != 0 and "cannot stream" in err and "Traceback" not in err
    assert not (tmp_path / "m.npz").exists()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lamp_direct_selection_equals_ranking_the_pooled_scores(dtype: type) -> None:
    from ltp_core.selection import ArrayScores, keep_after_pruning_smallest
    from ltp_core.strategies import CRITERIA

    rng = np.random.default_rng(5)
    trained = [
        rng.choice([0.0, 0.5, 1.0, 2.0], size=300).astype(dtype),  # heavy ties
        rng.normal(size=500).astype(dtype),
        np.zeros(40, dtype=dtype),
    ]
    alive = [rng.random(w.size) > 0.2 for w in trained]
    lamp = CRITERIA["lamp"]
    assert lamp.pooled is not None and lamp.select is not None
    scores = lamp.pooled({"trained": trained}, alive)
    for k in (0, 1, 100, 400, 600):
        for salt in (0, 99):
            reference = keep_after_pruning_smallest(
                [
                    ArrayScores(i, s, a, "x")
                    for i, (s, a) in enumerate(zip(scores, alive, strict=True))
                ],
                k,
                salt,
            )
            direct = lamp.select(trained, alive, [0, 1, 2], k, salt)
            assert all(np.array_equal(a, b) for a, b in zip(reference, direct, strict=True))


def reference_lamp_keep(
    trained: list[np.ndarray], alive: list[np.ndarray], k: int, salt: int
) -> list[np.ndarray]:
    """``lamp`` written out in plain Python: the definition the fast selection must match.

    Per layer, the alive weights in ascending ``|w|`` (float32 magnitudes for float32 and
    narrower weights), equal magnitudes in position order; ``S`` is the running float64 sum of
    squares from the largest down, one addition at a time; the score is ``w**2 / S`` (``0`` if
    ``S`` is ``0``) and the largest weight scores ``1``. The ``k`` smallest scores over all
    layers are pruned, ties ordered by the hash of the position key, then the key.
    """
    from ltp_core.selection import hash_positions, position_keys

    entries: list[tuple[float, int, int]] = []  # score, hash, key
    for array_id, (w, m) in enumerate(zip(trained, alive, strict=True)):
        flat = w.reshape(-1)
        if flat.dtype != np.float64:
            flat = flat.astype(np.float32)
        live = np.flatnonzero(m.reshape(-1))
        order = sorted(live.tolist(), key=lambda i: (abs(float(flat[i])), i))
        total = 0.0
        scores: dict[int, float] = {}
        for rank in range(len(order) - 1, -1, -1):
            i = order[rank]
            square = float(np.square(abs(flat[i]), dtype=np.float64))
            total = total + square
            scores[i] = 1.0 if rank == len(order) - 1 else (square / total if total > 0 else 0.0)
        for i, score in scores.items():
            key = int(position_keys(array_id, np.array([i]))[0])
            hashed = int(hash_positions(np.array([key], dtype=np.uint64), salt)[0])
            entries.append((score, hashed, key))
    entries.sort()
    keeps = [m.reshape(-1).copy() for m in alive]
    for _, _, key in entries[:k]:
        keeps[key >> 40][key & ((1 << 40) - 1)] = False
    return [keep.reshape(m.shape) for keep, m in zip(keeps, alive, strict=True)]


@pytest.mark.parametrize("block", [2, 5, 1024])
@SETTINGS
@given(problem=problems(), dtype=st.sampled_from([np.float32, np.float64, np.float16]))
def test_lamp_selection_equals_the_plain_python_reference(
    block: int, problem: dict[str, object], dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ltp_core import strategies

    # small blocks and steps: the stored running sums, the block recomputation and the
    # vectorized steps of the top-down sum are all crossed by every layer
    monkeypatch.setattr(strategies, "_LAMP_BLOCK", block)
    monkeypatch.setattr(strategies, "_LAMP_PASS", block * 3)
    trained, alive, k, salt = _unpacked(problem, dtype)
    lamp = STRATEGIES["lamp"].criterion
    assert lamp.select is not None
    flats = [w.reshape(-1) for w in trained]
    got = lamp.select(flats, [m.reshape(-1) for m in alive], list(range(len(flats))), k, salt)
    expected = reference_lamp_keep(trained, alive, k, salt)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b.reshape(-1))


def test_lamp_selection_on_many_blocks_with_ties_equals_the_reference() -> None:
    # 3 layers of up to 5,000 weights (several 1024-entry blocks), rounded so that magnitudes
    # repeat, with zeros and a dead part; the reference is the plain Python definition
    from ltp_core import strategies

    rng = np.random.default_rng(11)
    trained = [
        np.round(rng.standard_normal(5000), 1).astype(np.float32),
        np.concatenate([np.zeros(1500), rng.standard_normal(1500)]).astype(np.float32),
        rng.standard_normal(2100).astype(np.float64) * 1e-3,
    ]
    alive = [rng.random(w.size) > 0.15 for w in trained]
    n_alive = sum(int(m.sum()) for m in alive)
    for fraction, salt in ((0.2, 0), (0.5, 3), (0.9, 12345)):
        k = count_to_prune(fraction, n_alive)
        got = strategies._lamp_select(trained, alive, [0, 1, 2], k, salt)
        for a, b in zip(got, reference_lamp_keep(trained, alive, k, salt), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("block", [1, 3, 1024])
@SETTINGS
@given(
    values=hnp.arrays(
        st.sampled_from([np.float32, np.float64]),
        st.integers(1, 300),
        elements=st.one_of(
            st.sampled_from([0.0, 0.5, -1.0]), st.floats(-1e3, 1e3, allow_nan=False, width=32)
        ),
    )
)
def test_lamp_layer_scores_are_bit_for_bit_the_sorted_scores(
    block: int, values: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the stored running sums and the blocks recomputed from them give exactly the scores of
    # one np.cumsum over the whole sorted layer (_lamp_ranked), not just close ones
    from ltp_core import strategies

    monkeypatch.setattr(strategies, "_LAMP_BLOCK", block)
    monkeypatch.setattr(strategies, "_LAMP_PASS", block * 2)
    _, expected = strategies._lamp_ranked(values)
    layer = strategies._LampLayer(values, None)
    blocks = -(-values.size // block)
    got = np.concatenate([layer.block_scores(b) for b in range(blocks)])
    assert got.tobytes() == expected.tobytes()
    assert layer.marks.tobytes() == expected[::block].tobytes()


def assert_lamp_matches_scores(
    got: list[np.ndarray], scores: list[np.ndarray], alive: list[np.ndarray], k: int
) -> None:
    """Exact ``k``, monotone, and the ``k`` smallest ``scores`` pruned: masks may differ from
    the reference only at entries whose score is within 1e-12 relative of the threshold."""
    alive_flat = [a.reshape(-1) for a in alive]
    got_flat = [g.reshape(-1) for g in got]
    assert sum(int(a.sum() - g.sum()) for a, g in zip(alive_flat, got_flat, strict=True)) == k
    assert all(not np.any(g & ~a) for g, a in zip(got_flat, alive_flat, strict=True))
    live = np.concatenate([s.reshape(-1)[a] for s, a in zip(scores, alive_flat, strict=True)])
    if k == 0 or live.size == 0:
        return
    threshold = np.partition(live, k - 1)[k - 1]
    near = 1e-12 * max(abs(float(threshold)), 1e-300)
    for s, a, g in zip(scores, alive_flat, got_flat, strict=True):
        s = s.reshape(-1)
        pruned = a & ~g
        assert np.all(s[pruned] <= threshold + near)
        assert np.all(s[g] >= threshold - near)
    layers_alive = sum(1 for a in alive_flat if a.any())
    if live.size - k >= layers_alive:  # every layer keeps its largest weight (score 1)
        for s, a, g in zip(scores, alive_flat, got_flat, strict=True):
            if a.any():
                assert g[a][np.argmax(s.reshape(-1)[a])] or g.any()


@pytest.mark.parametrize("all_candidates", [0, 3])
@SETTINGS
@given(problem=problems(), dtype=st.sampled_from([np.float32, np.float64, np.float16]))
def test_sampled_lamp_selection_on_small_inputs(
    all_candidates: int, problem: dict[str, object], dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the sampled path forced on tiny scopes: brackets, ties by hash, misses and the fallback
    from ltp_core import strategies

    monkeypatch.setattr(strategies, "_LAMP_SAMPLED_MIN", 1)
    monkeypatch.setattr(strategies, "_LAMP_ALL_CANDIDATES", all_candidates)
    monkeypatch.setattr(strategies, "_LAMP_CHUNK", 8)
    # samples smaller than the layers: the brackets are sampled too (and often miss on ties)
    monkeypatch.setattr(strategies, "_LAMP_MIN_SAMPLE", 8)
    monkeypatch.setattr(strategies, "_LAMP_SAMPLE_FACTOR", 0.2)
    monkeypatch.setattr(strategies, "_LAMP_MIN_DRAWS", 4)
    # sums of squares of the larger layers estimated from blocks of 8 entries
    monkeypatch.setattr(strategies, "_LAMP_WHOLE_SUM", 32)
    monkeypatch.setattr(strategies, "_DOT_ROW", 8)
    trained, alive, k, salt = _unpacked(problem, dtype)
    flats = [w.reshape(-1) for w in trained]
    lamp = STRATEGIES["lamp"].criterion
    assert lamp.select is not None and lamp.pooled is not None
    got = lamp.select(flats, [m.reshape(-1) for m in alive], list(range(len(flats))), k, salt)
    scores = lamp.pooled({"trained": flats}, [m.reshape(-1) for m in alive])
    assert_lamp_matches_scores(got, scores, alive, k)
    again = lamp.select(flats, [m.reshape(-1) for m in alive], list(range(len(flats))), k, salt)
    assert all(np.array_equal(a, b) for a, b in zip(got, again, strict=True))


@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.6, 0.95])
@pytest.mark.parametrize("case", ["normal", "ties", "masked", "float64", "float16"])
def test_sampled_lamp_selection_brackets_large_layers(
    case: str, fraction: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # layers larger than their samples: the bracket is sampled, not the whole layer
    from ltp_core import strategies

    monkeypatch.setattr(strategies, "_LAMP_SAMPLED_MIN", 1)
    monkeypatch.setattr(strategies, "_LAMP_CHUNK", 1 << 12)
    rng = np.random.default_rng(7)
    dtype = {"float64": np.float64, "float16": np.float16}.get(case, np.float32)
    sizes = [60_000, 30_000, 9_000, 500]
    scales = (1.0, 3.0, 0.1, 2.0)
    trained = [
        (rng.standard_normal(n) * c).astype(dtype) for n, c in zip(sizes, scales, strict=True)
    ]
    if case == "ties":
        trained = [np.round(w, 1) for w in trained]
        trained[1][:5000] = 0.0
    alive = [np.ones(w.size, bool) for w in trained]
    if case == "masked":
        alive = [rng.random(w.size) > 0.3 for w in trained]
    n_alive = sum(int(m.sum()) for m in alive)
    k = count_to_prune(fraction, n_alive)
    sampled = strategies._lamp_select_sampled(trained, alive, [0, 1, 2, 3], k, 5, 1.0)
    if case != "ties" or fraction < 0.9:
        assert sampled is not None  # the bracket holds: no fallback to sorting
    got = strategies._lamp_select(trained, alive, [0, 1, 2, 3], k, 5)
    if sampled is not None:
        assert all(np.array_equal(a, b) for a, b in zip(got, sampled, strict=True))
    scores = strategies._lamp_scores({"trained": trained}, alive)
    assert_lamp_matches_scores(got, scores, alive, k)


def test_sampled_lamp_selection_falls_back_when_the_bracket_misses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a bracket that always misses: the sorted selection answers, never a wrong mask
    from ltp_core import strategies

    monkeypatch.setattr(strategies, "_LAMP_SAMPLED_MIN", 1)
    monkeypatch.setattr(strategies, "_lamp_select_sampled", lambda *args: None)
    rng = np.random.default_rng(3)
    trained = [rng.standard_normal(5000).astype(np.float32), rng.standard_normal(300)]
    alive = [np.ones(5000, bool), np.ones(300, bool)]
    got = strategies._lamp_select(trained, alive, [0, 1], 2000, 0)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(
            got, strategies._lamp_select_sorted(trained, alive, [0, 1], 2000, 0), strict=True
        )
    )


def _sampled_lamp_problem(case: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(11)
    dtype = np.float16 if case == "float16" else np.float32
    trained = [
        (rng.standard_normal(n) * c).astype(dtype)
        for n, c in ((20_000, 1.0), (9_000, 2.5), (5_000, 0.2), (40, 1.0))
    ]
    alive = [np.ones(w.size, bool) for w in trained]
    if case == "masked":
        alive = [rng.random(w.size) > 0.4 for w in trained]
    return trained, alive


@pytest.mark.parametrize("where", ["alive", "dead", "small layer", "empty layer"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_sampled_lamp_refuses_non_finite_weights_it_sums(
    where: str, bad: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # no separate checking pass: the sums of squares see NaN/Inf, dead entries' too
    from ltp_core import strategies

    monkeypatch.setattr(strategies, "_LAMP_SAMPLED_MIN", 1)
    monkeypatch.setattr(strategies, "_LAMP_CHUNK", 1 << 9)
    trained, alive = _sampled_lamp_problem("masked")
    layer = {"alive": 1, "dead": 0, "small layer": 3, "empty layer": 2}[where]
    if where == "empty layer":
        alive[2][:] = False
        position = 7
    else:
        position = int(np.flatnonzero(~alive[layer] if where == "dead" else alive[layer])[0])
    before = [w.copy() for w in trained]
    trained[layer][position] = bad
    names = [f"block{i}" for i in range(4)]
    with pytest.raises(ValueError, match="NaN or infinite") as info:
        compute_masks("lamp", 0.3, trained=trained, masks=alive, names=names)
    assert f"trained[{layer}] (block{layer})" in str(info.value)
    assert "Received" in str(info.value)
    trained[layer][position] = before[layer][position]
    assert len(compute_masks("lamp", 0.3, trained=trained, masks=alive, names=names)) == 4


def test_sampled_lamp_with_squares_beyond_float32_sorts_instead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # finite weights whose float32 squares overflow: no error, the exact sorted selection
    from ltp_core import strategies

    monkeypatch.setattr(strategies, "_LAMP_SAMPLED_MIN", 1)
    trained, alive = _sampled_lamp_problem("normal")
    trained[0] = trained[0] * np.float32(1e20)
    k = count_to_prune(0.3, sum(w.size for w in trained))
    assert strategies._lamp_select_sampled(trained, alive, [0, 1, 2, 3], k, 1, 1.0) is None
    got = compute_masks("lamp", 0.3, trained=trained)
    scores = strategies._lamp_scores({"trained": trained}, alive)
    assert_lamp_matches_scores([m.reshape(-1) for m in got], scores, alive, k)


@pytest.mark.parametrize("path", ["sorted", "sampled", "block sums", "floors"])
def test_lamp_refuses_float64_weights_whose_squares_overflow(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # float64 squares overflow near 1e154: refused with the layer named, never a collapsed layer
    from ltp_core import strategies

    if path in ("sampled", "block sums"):
        monkeypatch.setattr(strategies, "_LAMP_SAMPLED_MIN", 1)
    scale = 1e200
    if path == "block sums":  # every square finite, the sum of the blocks' sums is not
        monkeypatch.setattr(strategies, "_LAMP_WHOLE_SUM", 100)
        monkeypatch.setattr(strategies, "_LAMP_ALL_CANDIDATES", 100)
        monkeypatch.setattr(strategies, "_DOT_ROW", 16)
        scale = 1e153
    rng = np.random.default_rng(2)
    trained = [rng.standard_normal((40, 60)), rng.standard_normal((40, 60)) * scale]
    extra = {"min_layer_density": 0.01} if path == "floors" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning or layer-collapse warning first
        with pytest.raises(ValueError, match="overflows float64") as info:
            compute_masks("lamp", 0.5, trained=trained, names=["a", "b"], **extra)
    assert "trained[1] (b)" in str(info.value) and "Received" in str(info.value)
    scaled = [trained[0], trained[1] * 2.0**-700]  # the remedy the message gives
    masks = compute_masks("lamp", 0.5, trained=scaled, **extra)
    assert all(m.any() for m in masks)
    assert sum(int((~m).sum()) for m in masks) == 2400


@pytest.mark.parametrize("where", ["none", "alive", "dead", "inf"])
@pytest.mark.parametrize("case", ["normal", "masked", "float16"])
def test_sampled_lamp_with_block_sampled_sums_of_squares(
    case: str, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # large layers' sums of squares are estimated from blocks: the bracket still holds, the
    # masks are exact, and NaN/Inf outside the blocks read is still refused (the pass sees it)
    from ltp_core import strategies

    monkeypatch.setattr(strategies, "_LAMP_SAMPLED_MIN", 1)
    monkeypatch.setattr(strategies, "_LAMP_CHUNK", 1 << 9)
    monkeypatch.setattr(strategies, "_LAMP_WHOLE_SUM", 1000)
    monkeypatch.setattr(strategies, "_LAMP_ALL_CANDIDATES", 100)
    monkeypatch.setattr(strategies, "_DOT_ROW", 16)
    read: list[int] = []
    real_total = strategies._lamp_total

    def spy(flat, mask, rng):  # type: ignore[no-untyped-def]
        result = real_total(flat, mask, rng)
        read.append(int(result[1] > 0))
        return result

    monkeypatch.setattr(strategies, "_lamp_total", spy)
    trained, alive = _sampled_lamp_problem(case)
    if where != "none":
        layer = 0
        spots = np.flatnonzero(~alive[layer] if where == "dead" else alive[layer])
        if not spots.size:
            spots = np.arange(trained[layer].size)
        trained[layer][spots[len(spots) // 2]] = np.inf if where == "inf" else np.nan
    k = count_to_prune(0.3, sum(int(m.sum()) for m in alive))
    if where != "none":
        with pytest.raises(ValueError, match=r"NaN or infinite.*trained\[0\]"):
            compute_masks("lamp", 0.3, trained=trained, masks=alive)
        return
    got = strategies._lamp_select_sampled(trained, alive, [0, 1, 2, 3], k, 4, 1.0)
    assert got is not None  # the wider bracket (the sums' own error) still holds
    assert sum(read) >= 2  # the large layers were estimated from blocks
    scores = strategies._lamp_scores({"trained": trained}, alive)
    assert_lamp_matches_scores(got, scores, alive, k)


def capped_in_score_order(
    scores: list[np.ndarray], alive: list[np.ndarray], k: int, salt: int, caps: list[int]
) -> list[np.ndarray]:
    """The definition of a capped global selection, one weight at a time: alive weights in
    ascending score (ties by position hash, then key) are pruned, skipping a layer once it has
    lost ``caps[i]``, until ``k`` are pruned."""
    from ltp_core.selection import hash_positions, position_keys

    entries = []
    for array_id, (s, m) in enumerate(zip(scores, alive, strict=True)):
        live = np.flatnonzero(m.reshape(-1))
        keys = position_keys(array_id, live)
        hashed = hash_positions(keys, salt)
        flat = s.reshape(-1)
        entries += [
            (float(flat[i]), int(h), int(key)) for i, h, key in zip(live, hashed, keys, strict=True)
        ]
    entries.sort()
    keeps = [m.reshape(-1).copy() for m in alive]
    lost = [0] * len(alive)
    for _, _, key in entries:
        if k == 0:
            break
        layer = key >> 40
        if lost[layer] < caps[layer]:
            keeps[layer][key & ((1 << 40) - 1)] = False
            lost[layer] += 1
            k -= 1
    return keeps


@pytest.mark.parametrize("sampled", [False, True])
@pytest.mark.parametrize("density", [0.05, 0.3, 0.6])
def test_lamp_with_floors_equals_pruning_in_score_order_under_caps(
    sampled: bool, density: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # lamp with min_layer_density runs rounds of lamp's own selection (capped layers alone);
    # it must equal pruning in lamp score order, each layer stopping at its floor
    from ltp_core import strategies
    from ltp_core.compute import salt_from_seed

    if sampled:
        monkeypatch.setattr(strategies, "_LAMP_SAMPLED_MIN", 1)
        monkeypatch.setattr(strategies, "_LAMP_ALL_CANDIDATES", 64)
        monkeypatch.setattr(strategies, "_LAMP_CHUNK", 1 << 8)
    rng = np.random.default_rng(11)
    trained = [  # a small-scale layer (lamp prunes it hardest), ties, a zero layer, a big one
        rng.normal(size=(30, 20)).astype(np.float32) * 0.01,
        rng.choice([0.0, 0.5, 1.0], size=(200,)).astype(np.float32),
        np.zeros((5, 8), dtype=np.float32),
        rng.normal(size=(40, 50)).astype(np.float32),
    ]
    alive = [rng.random(w.shape) > 0.1 for w in trained]
    lamp = strategies.CRITERIA["lamp"]
    assert lamp.pooled is not None
    scores = lamp.pooled({"trained": [w.ravel() for w in trained]}, [a.ravel() for a in alive])
    n_alives = [int(a.sum()) for a in alive]
    floors = [min(n, layer_floor(density, a.size)) for n, a in zip(n_alives, alive, strict=True)]
    capped_somewhere = False
    for fraction in (0.2, 0.5, 0.8):
        k = count_to_prune(fraction, sum(n_alives))
        if k > sum(n_alives) - sum(floors):
            continue
        for seed in (0, 7):
            new = compute_masks(
                "lamp", fraction, trained=trained, masks=alive, min_layer_density=density, seed=seed
            )
            plain = compute_masks("lamp", fraction, trained=trained, masks=alive, seed=seed)
            capped_somewhere |= any(int(m.sum()) < f for m, f in zip(plain, floors, strict=True))
            caps = [n - f for n, f in zip(n_alives, floors, strict=True)]
            reference = capped_in_score_order(scores, alive, k, salt_from_seed(seed), caps)
            assert all(np.array_equal(m.ravel(), r) for m, r in zip(new, reference, strict=True))
            assert all(int(m.sum()) >= f for m, f in zip(new, floors, strict=True))
    assert capped_somewhere  # the floors did bind: the rounds were exercised


@pytest.mark.parametrize("fraction", [0.2, 0.8, 0.95])
def test_sampled_lamp_bracket_holds_at_the_first_try(
    fraction: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the bracket's score curves must widen it by the scores' error bars: with them inverted
    # (upper-bound scores for the lower end), the bracket came out empty from fraction ~0.8 on
    # and every call made a second pass (or fell back to sorting every layer)
    from ltp_core import strategies

    monkeypatch.setattr(strategies, "_LAMP_SAMPLED_MIN", 1)
    monkeypatch.setattr(strategies, "_LAMP_WHOLE_SUM", 1000)  # totals from blocks: error bars
    monkeypatch.setattr(strategies, "_DOT_ROW", 64)
    attempts: list[bool] = []
    real = strategies._lamp_select_sampled

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        result = real(*args, **kwargs)
        attempts.append(result is not None)
        return result

    monkeypatch.setattr(strategies, "_lamp_select_sampled", spy)
    rng = np.random.default_rng(3)
    shapes = [(300, 400), (400, 400), (100, 800), (500, 100)]
    trained = [rng.standard_normal(s, dtype=np.float32) * (i + 1) for i, s in enumerate(shapes)]
    for seed in range(3):
        attempts.clear()
        masks = compute_masks("lamp", fraction, trained=trained, seed=seed)
        assert attempts == [True]
        n = sum(w.size for w in trained)
        assert sum(int((~m).sum()) for m in masks) == count_to_prune(fraction, n)


def test_sample_curves_lower_bounds_lie_below_upper_bounds() -> None:
    from ltp_core.strategies import _LampEstimate, _SampleCurves

    sample = np.array([0.1, 0.5, 1.0, 2.0])
    squares = sample**2
    prefix = np.concatenate(([0.0], np.cumsum(squares))) * 10.0
    error = np.full(prefix.size, 0.5)
    estimate = _LampEstimate(sample, 10.0, float(prefix[-1]), prefix, error, False, 1.0)
    curves = _SampleCurves([estimate, estimate])
    low, mid, high = (curves.scores(side) for side in (-1, 0, 1))
    assert np.all(low <= mid) and np.all(mid <= high) and np.any(low < high)
