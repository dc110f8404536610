"""The built-in models of ``ltp imp``/``ltp oneshot`` select exactly what they selected in 0.1."""

from __future__ import annotations

import pytest

from ltp_core.experiment.models import MODEL_SPECS
from ltp_keras import LotteryTicketPruner, select_prunable_variables
from ltp_keras.models import build_model


@pytest.mark.parametrize("name", sorted(MODEL_SPECS))
def test_builtin_models_select_the_same_kernels_as_before(name: str) -> None:
    spec = MODEL_SPECS[name]
    model = build_model(name, (8, 8, 1), 10, seed=0)
    n_conv = sum(1 for filters in spec.conv_filters if filters)
    expected = (
        [f"{name}/conv{i}/kernel" for i in range(1, n_conv + 1)]
        + [f"{name}/fc{i}/kernel" for i in range(1, len(spec.dense_units) + 1)]
        + [f"{name}/output/kernel"]
    )
    default = [v.path for v in select_prunable_variables(model)]
    assert default == expected
    assert [v.path for v in select_prunable_variables(model, "linear_and_conv")] == expected
    pruner = LotteryTicketPruner(model)
    assert pruner.names == expected
    assert {t.kind for t in pruner.summary().prunable} <= {"conv", "dense"}
    assert {t.reason for t in pruner.summary().left_out} == {"bias"}
