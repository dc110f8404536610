"""Schedules, sparsity helpers and reports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ltp_core import (
    OLD_PACKAGE_CUMULATIVE_SPARSITIES,
    apply_masks,
    combine_masks,
    cumulative_sparsities,
    density,
    fraction_for_target_sparsity,
    fractions_for_cumulative_sparsities,
    layer_densities,
    old_package_fractions,
    sparsity,
    sparsity_report,
)


def test_fraction_for_target_sparsity_round_trips() -> None:
    f = fraction_for_target_sparsity(0.8926258176, 10)
    assert f == pytest.approx(0.2, abs=1e-9)
    assert cumulative_sparsities([f] * 10)[-1] == pytest.approx(0.8926258176)


def test_old_package_sequence() -> None:
    fractions = old_package_fractions()
    assert cumulative_sparsities(fractions) == pytest.approx(
        list(OLD_PACKAGE_CUMULATIVE_SPARSITIES)
    )
    assert fractions[0] == pytest.approx(0.2)


def test_fractions_for_cumulative_rejects_decreasing() -> None:
    with pytest.raises(ValueError, match="non-decreasing"):
        fractions_for_cumulative_sparsities([0.5, 0.4])
    with pytest.raises(ValueError, match="levels"):
        fraction_for_target_sparsity(0.5, 0)


def test_density_sparsity_and_combine() -> None:
    masks = [np.array([True, False, False, False]), np.array([True, True])]
    assert density(masks) == pytest.approx(0.5)
    assert sparsity(masks) == pytest.approx(0.5)
    assert layer_densities(masks) == [0.25, 1.0]
    combined = combine_masks(masks, [np.array([False, False, True, True]), np.array([True, False])])
    assert [m.tolist() for m in combined] == [[False, False, False, False], [True, False]]


def test_apply_masks_produces_positive_zero_and_keeps_dtype() -> None:
    out = apply_masks([np.array([-1.5, 2.0], dtype=np.float16)], [np.array([False, True])])
    assert out[0].dtype == np.float16
    assert not np.signbit(out[0][0])


def test_report_formats() -> None:
    report = sparsity_report([np.ones((2, 2), bool), np.zeros(4, bool)], ["a", "b"])
    text = report.to_text()
    assert "a" in text and "50.00%" in text.splitlines()[-1]
    md = report.to_markdown()
    assert md.splitlines()[0] == "| layer | shape | weights | kept | density | sparsity |"
    assert "| b | (4,) | 4 | 0 | 0.00% | 100.00% |" in md
    data = json.loads(report.to_json())
    assert data["kept"] == 4 and data["layers"][1]["shape"] == [4]


def test_report_scalars_for_loggers() -> None:
    masks = [np.array([True, False, False, True]), np.zeros(4, bool), np.ones((2, 3), bool)]
    scalars = sparsity_report(masks, ["a", "b", "c"]).scalars()
    assert scalars == {"sparsity": 6 / 14, "sparsity/a": 0.5, "sparsity/b": 1.0, "sparsity/c": 0.0}
    assert list(sparsity_report(masks).scalars("pruned")) == [
        "pruned",
        "pruned/layer_0",
        "pruned/layer_1",
        "pruned/layer_2",
    ]
    for bad in ("", None, 3):
        with pytest.raises(ValueError, match="prefix"):
            sparsity_report(masks).scalars(bad)  # type: ignore[arg-type]
