"""compute_masks refuses NaN/Inf in every tensor a criterion reads (issue 13 item 2)."""

from __future__ import annotations

import numpy as np
import pytest

from ltp_core import CRITERIA, Strategy, compute_masks

ROLES = ("initial", "trained", "current")
CASES = [
    (name, role, bad, fraction)
    for name, criterion in sorted(CRITERIA.items())
    for role in criterion.needs
    for bad in (np.nan, np.inf, -np.inf)
    for fraction in (0.0, 0.5)
]


def _weights() -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return {role: [rng.normal(size=(6, 5)), rng.normal(size=(7,))] for role in ROLES}


@pytest.mark.parametrize("scope", ["", "_global"])
@pytest.mark.parametrize(("name", "role", "bad", "fraction"), CASES)
def test_non_finite_in_a_read_tensor_is_refused(
    name: str, role: str, bad: float, fraction: float, scope: str, selection_path: str
) -> None:
    if CRITERIA[name].global_only and scope == "_global":
        pytest.skip("registered once, under its own name")
    strategy = name if CRITERIA[name].global_only else name + scope
    weights = _weights()
    weights[role][1][3] = bad
    with pytest.raises(ValueError, match="NaN or infinite") as info:
        compute_masks(strategy, fraction, **weights)  # type: ignore[arg-type]
    assert f"{role}[1]" in str(info.value) or "layer_1" in str(info.value)
    assert "Received" in str(info.value)


def test_tensors_a_criterion_does_not_read_may_hold_anything() -> None:
    weights = _weights()
    weights["initial"][0][0, 0] = np.nan
    masks = compute_masks("large_final", 0.5, **weights)  # type: ignore[arg-type]
    assert sum(int((~m).sum()) for m in masks) == 15 + 3


def test_same_sign_with_nan_initial_and_min_rank_with_nan_trained() -> None:
    good = [np.array([1.0, 2.0, -1.0, 2.0])]
    bad = [np.array([1.0, np.nan, -1.0, 2.0])]
    with pytest.raises(ValueError, match=r"initial\[0\]"):
        compute_masks("large_final_same_sign", 0.5, initial=bad, trained=good)
    with pytest.raises(ValueError, match=r"trained\[0\]"):
        compute_masks("large_init_large_final", 0.5, initial=good, trained=bad)


def test_custom_criterion_inputs_are_checked() -> None:
    sign_only = Strategy.from_score_fn(
        "sign_only", lambda trained: np.signbit(trained).astype(float), elementwise=True
    )
    with pytest.raises(ValueError, match=r"trained\[0\]"):
        compute_masks(sign_only, 0.5, trained=[np.array([1.0, np.nan, 2.0, 3.0])])
