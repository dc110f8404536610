"""Compare pruner state dicts (nested dicts/lists of NumPy arrays and plain values)."""

from __future__ import annotations

from typing import Any

import numpy as np


def assert_same_state(before: Any, after: Any, where: str = "state") -> None:
    """Fail unless two ``state_dict()`` results are equal entry by entry."""
    if isinstance(before, dict):
        assert isinstance(after, dict) and sorted(before) == sorted(after), where
        for key in before:
            assert_same_state(before[key], after[key], f"{where}[{key!r}]")
    elif isinstance(before, (list, tuple)):
        assert isinstance(after, (list, tuple)) and len(before) == len(after), where
        for i, (a, b) in enumerate(zip(before, after, strict=True)):
            assert_same_state(a, b, f"{where}[{i}]")
    elif isinstance(before, np.ndarray):
        assert isinstance(after, np.ndarray), where
        assert before.dtype == after.dtype and before.shape == after.shape, where
        np.testing.assert_array_equal(before, after, err_msg=where)
    elif isinstance(before, float) and np.isnan(before):
        assert isinstance(after, float) and np.isnan(after), where
    else:
        assert before == after, where
