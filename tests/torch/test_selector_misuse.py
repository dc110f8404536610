"""``prunable=`` selectors and ``pruner.summary()`` under misuse (wrong predicates, odd models)."""

from __future__ import annotations

import pytest
from torch import nn

from ltp_torch import LotteryTicketPruner


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


@pytest.mark.parametrize(
    "predicate",
    [lambda name, p: True, lambda name: True, lambda: True, lambda a, b, c, d: True],
)
def test_predicate_with_another_signature_is_a_clear_type_error(predicate: object) -> None:
    with pytest.raises(TypeError, match=r"predicate\(name, module, parameter\).*Received"):
        LotteryTicketPruner(mlp(), prunable=predicate)  # type: ignore[arg-type]


def test_predicates_with_defaults_or_varargs_still_work() -> None:
    def wide(name: str, module: nn.Module, parameter: object, extra: int = 0) -> bool:
        return name.endswith("weight")

    assert LotteryTicketPruner(mlp(), prunable=wide).names == ["0.weight", "2.weight"]
    pruner = LotteryTicketPruner(mlp(), prunable=lambda *args: args[0] == "2.weight")
    assert pruner.names == ["2.weight"]


def test_shared_module_is_one_entry_and_counted_once() -> None:
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.ReLU(), nn.Linear(4, 2))
    summary = LotteryTicketPruner(model).summary()
    assert [t.name for t in summary.prunable] == ["0.weight", "4.weight"]
    assert summary.total_parameters == 16 + 4 + 8 + 2
