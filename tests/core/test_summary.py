"""Tests for ltp_core.summary: coverage numbers, grouping by reason, warning and bad input."""

from __future__ import annotations

import json
import warnings

import pytest

from ltp_core import (
    LeftOutTensor,
    LowCoverageWarning,
    PrunableTensor,
    build_summary,
)
from ltp_core.summary import warn_if_low_coverage


def _summary():
    return build_summary(
        [
            PrunableTensor("fc1.weight", "linear", (10, 8), kept=40),
            PrunableTensor("fc2.weight", "linear", (2, 10)),
        ],
        [
            LeftOutTensor("emb.weight", (100, 8), "embedding"),
            LeftOutTensor("fc1.bias", (10,), "bias"),
            LeftOutTensor("fc2.bias", (2,), "bias"),
        ],
    )


def test_counts_and_coverage_are_exact():
    s = _summary()
    assert s.prunable_parameters == 100
    assert s.total_parameters == 100 + 800 + 12
    assert s.kept == 60
    assert s.coverage == pytest.approx(100 / 912)
    groups = s.left_out_by_reason()
    assert list(groups) == ["embedding", "bias"]  # largest group first
    assert [t.name for t in groups["bias"]] == ["fc1.bias", "fc2.bias"]


def test_text_markdown_and_json_agree():
    s = _summary()
    text = s.to_text()
    assert "fc1.weight" in text and "50.00%" in text and "embedding: 800 in 1 tensor" in text
    assert "bias: 12 in 2 tensors (fc1.bias, fc2.bias)" in text
    assert s.to_markdown().startswith("| prunable |")
    data = json.loads(s.to_json())
    assert data["prunable"][0]["kept"] == 40 and data["prunable"][1]["kept"] == 20
    assert data["total_parameters"] == 912
    assert str(s) == text


def test_low_coverage_warns_with_reasons_and_advice():
    with pytest.warns(LowCoverageWarning, match=r"covers only 11\.0%.*embedding: 800.*prunable="):
        assert warn_if_low_coverage(_summary(), "pass prunable=...")


def test_enough_coverage_is_quiet():
    s = build_summary(
        [PrunableTensor("w", "linear", (10, 10))], [LeftOutTensor("b", (10,), "bias")]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_low_coverage(s, "pass prunable=...")


def test_bad_items_are_type_errors():
    with pytest.raises(TypeError, match="PrunableTensor"):
        build_summary([("w", (2, 2))])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="LeftOutTensor"):
        build_summary([], ["b"])  # type: ignore[list-item]


def test_core_pruner_summary_counts_kept_weights() -> None:
    import numpy as np

    from ltp_core import LotteryTicketPruner

    pruner = LotteryTicketPruner([np.ones((4, 5)), np.ones(3)], names=["fc", "out"])
    pruner.calc_prune_mask([np.arange(20.0).reshape(4, 5), np.arange(3.0)], 0.5, "smallest_weights")
    summary = pruner.summary()
    assert [(t.name, t.count, t.kept) for t in summary.prunable] == [("fc", 20, 10), ("out", 3, 2)]
    assert summary.coverage == 1.0 and not summary.left_out
