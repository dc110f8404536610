"""ltp_core.layout: GRU weights, torch gates (reset, update, new), Keras (update, reset, new)."""

from __future__ import annotations

import numpy as np
import pytest

from ltp_core.layout import convert_layout


@pytest.mark.parametrize("units", [1, 3])
def test_gru_kernels_round_trip_and_swap_the_first_two_gates(units: int) -> None:
    rng = np.random.default_rng(units)
    keras_kernel = rng.random((5, 3 * units)) < 0.5  # (in, update | reset | new)
    torch_weight = convert_layout(keras_kernel, "gru", "keras", "torch")
    assert torch_weight.shape == (3 * units, 5) and torch_weight.flags.c_contiguous
    update, reset, new = np.split(keras_kernel.T, 3, axis=0)
    np.testing.assert_array_equal(torch_weight, np.concatenate([reset, update, new]))
    back = convert_layout(torch_weight, "gru", "torch", "keras")
    np.testing.assert_array_equal(back, keras_kernel)
    assert convert_layout(keras_kernel, "gru", "keras", "keras") is keras_kernel


def test_an_array_without_three_gate_blocks_is_refused() -> None:
    with pytest.raises(ValueError, match=r"3 gate blocks.*shape \(4, 5\)"):
        convert_layout(np.ones((4, 5), bool), "gru", "keras", "torch")
