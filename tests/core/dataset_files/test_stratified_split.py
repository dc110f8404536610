"""Tests of the seeded stratified split (ltp_core.datasets.split)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ltp_core.datasets.split import check_fraction, holdout_size, stratified_split


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 5), min_size=0, max_size=80),
    fraction=st.floats(0.0, 0.99),
    seed=st.integers(0, 1000),
)
def test_partition_size_and_stratification(labels: list[int], fraction: float, seed: int) -> None:
    y = np.array(labels, dtype=np.int64)
    kept, held = stratified_split(y, fraction, seed=seed)
    n = len(y)
    assert len(held) == holdout_size(n, fraction)
    assert kept.dtype == held.dtype == np.int64
    np.testing.assert_array_equal(np.sort(np.concatenate([kept, held])), np.arange(n))
    assert np.all(np.diff(kept) > 0) and np.all(np.diff(held) > 0)
    for label in np.unique(y):
        share = np.count_nonzero(y == label) * len(held) / max(n, 1)
        assert np.floor(share) <= np.count_nonzero(y[held] == label) <= np.ceil(share)
    again = stratified_split(y, fraction, seed=seed)
    np.testing.assert_array_equal(again[1], held)


def test_exact_counts_and_seed_dependence() -> None:
    y = np.repeat(np.arange(10), 6000)
    kept, held = stratified_split(y, 1 / 12, seed=0)
    assert len(held) == 5000 and len(kept) == 55000
    np.testing.assert_array_equal(np.bincount(y[held]), [500] * 10)
    _, other = stratified_split(y, 1 / 12, seed=1)
    assert not np.array_equal(held, other)


def test_holdout_size_is_robust_to_float_noise() -> None:
    assert holdout_size(100, 0.29) == 29  # 0.29 * 100 == 28.999999999999996
    assert holdout_size(100, 0.07) == 7
    assert holdout_size(10, 0.0) == 0
    assert holdout_size(7, 0.5) == 3


@pytest.mark.parametrize("bad", [-0.01, 1.0, float("nan"), float("inf")])
def test_check_fraction_range(bad: float) -> None:
    with pytest.raises(ValueError, match=r"Received: fraction="):
        check_fraction(bad, "fraction")


@pytest.mark.parametrize("bad", ["0.5", None, True])
def test_check_fraction_type(bad: object) -> None:
    with pytest.raises(TypeError, match=r"Received: fraction="):
        check_fraction(bad, "fraction")


def test_labels_must_be_one_dimensional() -> None:
    with pytest.raises(ValueError, match=r"labels.shape=\(2, 2\)"):
        stratified_split(np.zeros((2, 2), int), 0.5)
