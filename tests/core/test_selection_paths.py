"""Every exact-k selection path equals one straightforward reference: a full sort.

The reference orders the alive entries by score, then by the hash of their position key, then by
the key, and prunes the first ``k``. The fast paths (one ``np.partition`` for small arrays, the
stratified sample + fused pass for larger ones, the sub-sampled order statistics for large
samples) must give the same masks, bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ltp_core import selection
from ltp_core.selection import (
    ArrayScores,
    hash_positions,
    keep_after_pruning_smallest,
    position_keys,
)

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def reference_keep(
    scores: list[np.ndarray], alive: list[np.ndarray], k: int, salt: int
) -> list[np.ndarray]:
    """Prune the ``k`` smallest alive scores; ties by hashed position, then position."""
    keys = np.concatenate(
        [position_keys(i, np.flatnonzero(a)) for i, a in enumerate(alive)]
    ).astype(np.uint64)
    values = np.concatenate([s[a] for s, a in zip(scores, alive, strict=True)])
    order = np.lexsort((keys, hash_positions(keys, salt), values))
    pruned = keys[order[:k]]
    keeps = [a.copy() for a in alive]
    low = np.uint64((1 << 40) - 1)
    for i, keep in enumerate(keeps):
        mine = pruned[(pruned >> np.uint64(40)) == np.uint64(i)]
        keep[(mine & low).astype(np.intp)] = False
    return keeps


def _select(
    scores: list[np.ndarray], alive: list[np.ndarray], k: int, salt: int
) -> list[np.ndarray]:
    pairs = zip(scores, alive, strict=True)
    sources = [ArrayScores(i, s, a, f"a{i}") for i, (s, a) in enumerate(pairs)]
    return keep_after_pruning_smallest(sources, k, salt)


def test_order_statistics_small_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(selection, "_SUBSAMPLE", 4)
    sample = np.array([5.0, 1.0, 4.0, 1.0, 3.0, 9.0, 2.0, 6.0] * 8)  # 64 > 8 * 4: narrowed
    assert selection._order_statistics(sample.copy(), [0, 20, 63]) == [1.0, 2.0, 9.0]
    assert selection._order_statistics(sample.copy(), []) == []


@given(
    values=hnp.arrays(
        np.float32,
        st.integers(1, 600),
        elements=st.one_of(
            st.sampled_from([0.0, 1.0, 2.0]), st.floats(-1e3, 1e3, allow_nan=False, width=32)
        ),
    ),
    data=st.data(),
)
@SETTINGS
def test_order_statistics_equal_a_sort(
    values: np.ndarray, data: st.DataObject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(selection, "_SUBSAMPLE", data.draw(st.sampled_from([2, 4, 16, 2048])))
    kth = sorted(set(data.draw(st.lists(st.integers(0, values.size - 1), max_size=2))))
    expected = [float(v) for v in np.sort(values)[kth]]
    assert selection._order_statistics(values.copy(), kth) == expected


@st.composite
def problems(draw: st.DrawFn) -> tuple[list[np.ndarray], list[np.ndarray], int, int]:
    sizes = draw(st.lists(st.integers(1, 400), min_size=1, max_size=3))
    elements = st.one_of(
        st.sampled_from([0.0, 0.5, 1.0]), st.floats(0, 1e3, allow_nan=False, width=32)
    )
    scores = [draw(hnp.arrays(np.float32, n, elements=elements)) for n in sizes]
    alive = [
        draw(hnp.arrays(np.bool_, n)) if draw(st.booleans()) else np.ones(n, bool) for n in sizes
    ]
    k = draw(st.integers(0, sum(int(a.sum()) for a in alive)))
    return scores, alive, k, draw(st.integers(0, 2**32))


@pytest.mark.parametrize("path", ["partition", "sampled", "sampled_narrowed"])
@given(problem=problems())
@SETTINGS
def test_every_path_equals_the_reference(
    path: str,
    problem: tuple[list[np.ndarray], list[np.ndarray], int, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scores, alive, k, salt = problem
    if path == "partition":
        monkeypatch.setattr(selection, "PARTITION_MAX", 1 << 30)
    else:  # force the stratified sample and the fused pass on small arrays
        monkeypatch.setattr(selection, "PARTITION_MAX", 0)
        monkeypatch.setattr(selection, "SMALL_ALIVE", 8)
        monkeypatch.setattr(selection, "MIN_SAMPLE", 8)
        monkeypatch.setattr(selection, "SAMPLE_SIZE", 96)
        monkeypatch.setattr(selection, "CHUNK_SIZE", 32)
        monkeypatch.setattr(selection, "_SUBSAMPLE", 4 if path == "sampled_narrowed" else 1 << 20)
    if path == "partition":  # one array at a time, as layer scope calls it
        counts = [min(k, int(a.sum())) for a in alive]
        cases = list(zip(scores, alive, counts, strict=True))
        expected = [reference_keep([s], [a], c, salt)[0] for s, a, c in cases]
        got = [_select([s], [a], c, salt)[0] for s, a, c in cases]
    else:
        expected = reference_keep(scores, alive, k, salt)
        got = _select(scores, alive, k, salt)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_real_sizes_with_ties_equal_the_reference(scope: str) -> None:
    # 1.2M weights: the sample (2 * n ** (2/3), about 22,600) is narrowed by a sub-sample; the
    # rounded weights repeat values, so the threshold often sits on ties
    rng = np.random.default_rng(3)
    weights = [
        np.round(rng.standard_normal(n).astype(np.float32), 3) for n in (1_000_000, 150_000, 50_000)
    ]
    scores = [np.abs(w) for w in weights]
    alive = [rng.random(w.size) > 0.1 for w in weights]
    for salt in (0, 7):
        if scope == "global":
            k = int(0.37 * sum(int(a.sum()) for a in alive))
            expected = reference_keep(scores, alive, k, salt)
            got = _select(scores, alive, k, salt)
        else:
            expected, got = [], []
            for s, a in zip(scores, alive, strict=True):
                k = int(0.37 * int(a.sum()))
                expected.append(reference_keep([s], [a], k, salt)[0])
                got.append(_select([s], [a], k, salt)[0])
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)
