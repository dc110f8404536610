"""Which parameters are prunable: defaults, predicates, name lists, tied weights, lazy layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch_models import make_convnet, make_mlp

from ltp_torch.parameters import (
    default_prunable,
    find_prunable_parameters,
    resolve_parameters,
    unwrap_module,
)


def names_of(module: nn.Module, prunable=None) -> list[str]:
    return [name for name, _ in find_prunable_parameters(module, prunable)]


def test_default_finds_weights_through_nested_modules() -> None:
    assert names_of(make_mlp()) == ["0.weight", "2.0.weight", "2.2.weight"]
    assert names_of(make_convnet()) == ["conv1.weight", "conv2.weight", "head.weight"]


def test_returns_the_parameter_objects() -> None:
    model = make_mlp()
    found = dict(find_prunable_parameters(model))
    assert found["2.0.weight"] is model[2][0].weight


@pytest.mark.parametrize(
    "layer",
    [
        nn.Linear(3, 2),
        nn.Conv1d(2, 2, 3),
        nn.Conv2d(2, 2, 3),
        nn.Conv3d(2, 2, 3),
        nn.ConvTranspose1d(2, 2, 3),
        nn.ConvTranspose2d(2, 2, 3),
        nn.ConvTranspose3d(2, 2, 3),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_default_layer_types(layer: nn.Module) -> None:
    assert names_of(nn.Sequential(layer)) == ["0.weight"]


def test_default_selects_rnns_and_skips_norms_embeddings_and_biases() -> None:
    model = nn.Sequential(nn.Embedding(5, 4), nn.LayerNorm(4), nn.GRU(4, 4), nn.Linear(4, 2))
    assert names_of(model) == ["2.weight_ih_l0", "2.weight_hh_l0", "3.weight"]
    assert not default_prunable("bias", model[3], model[3].bias)
    assert names_of(model, "linear_and_conv") == ["3.weight"]


def test_predicate_selects_other_parameters() -> None:
    model = nn.Sequential(nn.Embedding(5, 4), nn.LSTM(4, 3), nn.Linear(3, 2))

    def predicate(name: str, module: nn.Module, parameter: nn.Parameter) -> bool:
        return parameter.dim() >= 2

    assert names_of(model, predicate) == [
        "0.weight",
        "1.weight_ih_l0",
        "1.weight_hh_l0",
        "2.weight",
    ]


def test_predicate_receives_the_owning_module() -> None:
    model = make_convnet()
    seen = []

    def predicate(name: str, module: nn.Module, parameter: nn.Parameter) -> bool:
        seen.append((name, type(module).__name__))
        return isinstance(module, nn.BatchNorm2d)

    assert names_of(model, predicate) == ["bn.weight", "bn.bias"]
    assert ("conv1.weight", "Conv2d") in seen


def test_name_list_keeps_module_order() -> None:
    model = make_mlp()
    assert names_of(model, ["2.2.bias", "0.weight"]) == ["0.weight", "2.2.bias"]


def test_tied_parameters_are_counted_once() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Linear(4, 4, bias=False)
            self.decoder = nn.Linear(4, 4, bias=False)
            self.decoder.weight = self.encoder.weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.decoder(self.encoder(x))

    model = Tied()
    assert names_of(model) == ["encoder.weight"]
    # The alias name selects the same parameter, reported under its first name.
    assert names_of(model, ["decoder.weight"]) == ["encoder.weight"]
    with pytest.raises(ValueError, match="more than once"):
        names_of(model, ["encoder.weight", "decoder.weight"])


def test_tied_embedding_is_not_pruned_through_its_linear_alias() -> None:
    embedding = nn.Embedding(6, 4)
    head = nn.Linear(4, 6, bias=False)
    head.weight = embedding.weight
    model = nn.Sequential(embedding, head)
    with pytest.raises(ValueError, match="no prunable parameters"):
        names_of(model)
    assert names_of(model, "with_embeddings") == ["0.weight"]
    # The selection before role-based defaults reached the embedding through the Linear alias.
    assert names_of(model, "linear_and_conv") == ["0.weight"]


def test_shared_module_counted_once() -> None:
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert names_of(model) == ["0.weight"]


def test_lazy_linear_after_materialization() -> None:
    model = nn.Sequential(nn.LazyLinear(5), nn.ReLU(), nn.Linear(5, 2))
    with pytest.raises(ValueError, match="forward pass"):
        find_prunable_parameters(model)
    model(torch.zeros(1, 7))
    assert names_of(model) == ["0.weight", "2.weight"]
    assert find_prunable_parameters(model)[0][1].shape == (5, 7)


def test_nothing_prunable_is_an_error() -> None:
    with pytest.raises(ValueError, match="no prunable parameters"):
        find_prunable_parameters(nn.Sequential(nn.ReLU(), nn.LayerNorm(3)))


def test_unknown_name_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"Unknown parameter name.*'nope'.*Received: prunable="):
        find_prunable_parameters(make_mlp(), ["0.weight", "nope"])


@pytest.mark.parametrize("bad", [b"0.weight", 3, [3]])
def test_bad_prunable_type(bad: object) -> None:
    with pytest.raises(TypeError, match="Received: prunable"):
        find_prunable_parameters(make_mlp(), bad)


def test_not_a_module() -> None:
    with pytest.raises(TypeError, match="Received: module="):
        find_prunable_parameters([nn.Linear(2, 2)])  # type: ignore[arg-type]


def test_integer_parameter_is_rejected() -> None:
    model = nn.Linear(2, 2)
    model.register_parameter("counts", nn.Parameter(torch.ones(2, dtype=torch.int64), False))
    with pytest.raises(TypeError, match="floating point"):
        find_prunable_parameters(model, ["counts"])


def test_unwrap_data_parallel() -> None:
    model = make_mlp()
    assert unwrap_module(nn.DataParallel(model)) is model
    assert names_of(nn.DataParallel(model)) == names_of(model)


def test_resolve_parameters_checks_names_and_shapes() -> None:
    model = make_mlp()
    assert resolve_parameters(model, ["2.2.weight"], [(3, 8)])[0] is model[2][2].weight
    with pytest.raises(ValueError, match="has no parameter 'missing'"):
        resolve_parameters(model, ["missing"], [(1,)])
    with pytest.raises(ValueError, match=r"has shape \(3, 8\), expected \(8, 3\)"):
        resolve_parameters(model, ["2.2.weight"], [(8, 3)])
