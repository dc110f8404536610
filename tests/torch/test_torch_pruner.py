"""LotteryTicketPruner on modules: masks, apply, rewind, dtypes, checkpoints, errors."""

from __future__ import annotations

import copy
import io
import pickle

import numpy as np
import pytest
import torch
from torch import nn
from torch_models import conv_batch, make_convnet, make_mlp

from ltp_core import LotteryTicketPruner as CorePruner
from ltp_torch import LotteryTicketPruner
from ltp_torch.arrays import to_numpy

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available"),
    ),
]


def zero_counts(pruner: LotteryTicketPruner, module: nn.Module) -> list[int]:
    return [int((p == 0).sum()) for p in pruner.parameters(module)]


def pruned_counts(pruner: LotteryTicketPruner) -> list[int]:
    return [int((~m).sum()) for m in pruner.masks]


def perturb(module: nn.Module, seed: int = 1) -> None:
    """Stand-in for training: change every parameter and buffer in place."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.is_floating_point():
                noise = torch.randn(tensor.shape, generator=generator).to(tensor)
                tensor.add_(noise)
            else:
                tensor.add_(3)


def test_masks_start_full_and_match_shapes(mlp: nn.Module) -> None:
    pruner = LotteryTicketPruner(mlp)
    assert pruner.names == ["0.weight", "2.0.weight", "2.2.weight"]
    assert pruner.shapes == [(10, 12), (8, 10), (3, 8)]
    assert [m.shape for m in pruner.masks] == pruner.shapes
    assert all(m.dtype == np.bool_ and m.all() for m in pruner.masks)
    assert pruner.level == 0 and pruner.cumulative_pruning_rate == 0.0


def test_calc_prune_mask_does_not_change_weights(mlp: nn.Module) -> None:
    before = copy.deepcopy(mlp.state_dict())
    pruner = LotteryTicketPruner(mlp)
    pruner.calc_prune_mask(mlp, 0.5, "smallest_weights")
    assert pruned_counts(pruner) == [60, 40, 12]
    for name, value in mlp.state_dict().items():
        assert torch.equal(value, before[name])


@pytest.mark.parametrize("device", DEVICES)
def test_apply_pruning_exact_counts_and_identity(device: str) -> None:
    model = make_convnet().to(device)
    params_before = list(model.parameters())
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    pruner.calc_prune_mask(model, 0.2, "smallest_weights")
    pruner.apply_pruning(model)
    assert zero_counts(pruner, model) == pruned_counts(pruner)
    # 72 weights: 72 - 36 - 7 = 29 kept.
    assert pruned_counts(pruner)[0] == 72 - 29
    assert all(a is b for a, b in zip(params_before, model.parameters(), strict=True))
    for parameter, mask in zip(pruner.parameters(model), pruner.masks, strict=True):
        assert parameter.device.type == device
        kept = torch.from_numpy(mask).to(device)
        assert torch.all(parameter[~kept] == 0)


def test_masks_equal_the_core_masks(convnet: nn.Module) -> None:
    pruner = LotteryTicketPruner(convnet, seed=3)
    core = CorePruner([to_numpy(p) for p in pruner.parameters(convnet)], names=pruner.names, seed=3)
    perturb(convnet)
    trained = [to_numpy(p) for p in pruner.parameters(convnet)]
    pruner.set_pretrained_weights(convnet)
    core.set_pretrained_weights(trained)
    for strategy, fraction in [("large_final", 0.4), ("random", 0.3), ("movement", 0.25)]:
        pruner.calc_prune_mask(convnet, fraction, strategy)
        core.calc_prune_mask(trained, fraction, strategy)
        for ours, theirs in zip(pruner.masks, core.masks, strict=True):
            np.testing.assert_array_equal(ours, theirs)
    assert pruner.cumulative_pruning_rate == pytest.approx(core.cumulative_pruning_rate)


def test_layer_rates_by_name(mlp: nn.Module) -> None:
    pruner = LotteryTicketPruner(mlp)
    pruner.calc_prune_mask(mlp, 0.5, "smallest_weights", layer_rates={"2.2.weight": 0.5})
    assert pruned_counts(pruner) == [60, 40, 6]


def test_rewind_to_initial_weights_including_biases_and_buffers(convnet: nn.Module) -> None:
    initial = copy.deepcopy(convnet.state_dict())
    pruner = LotteryTicketPruner(convnet)
    perturb(convnet)
    pruner.set_pretrained_weights(convnet)
    pruner.calc_prune_mask(convnet, 0.5, "large_final")
    params_before = list(convnet.parameters())
    pruner.rewind(convnet)
    assert all(a is b for a, b in zip(params_before, convnet.parameters(), strict=True))
    state = convnet.state_dict()
    for name, value in initial.items():
        if name in pruner.names:
            mask = torch.from_numpy(pruner.masks[pruner.names.index(name)])
            assert torch.equal(state[name], value * mask)
        else:
            assert torch.equal(state[name], value), name


def test_late_rewind_point(mlp: nn.Module) -> None:
    pruner = LotteryTicketPruner(mlp)
    perturb(mlp, seed=1)
    pruner.set_rewind_weights(mlp)
    early = copy.deepcopy(mlp.state_dict())
    perturb(mlp, seed=2)
    pruner.calc_prune_mask(mlp, 0.3, "smallest_weights")
    pruner.rewind(mlp)
    for name, value in mlp.state_dict().items():
        expected = early[name]
        if name in pruner.names:
            expected = expected * torch.from_numpy(pruner.masks[pruner.names.index(name)])
        assert torch.equal(value, expected), name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_and_high_precision_parameters(dtype: torch.dtype) -> None:
    model = make_mlp().to(dtype)
    initial = copy.deepcopy(model.state_dict())
    pruner = LotteryTicketPruner(model)
    perturb(model)
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    expected = [np.abs(p.detach().to(torch.float64).numpy()) for p in pruner.parameters(model)]
    for kept, magnitude in zip(pruner.masks, expected, strict=True):
        # The pruned half holds the smallest magnitudes.
        assert magnitude[~kept].max() <= magnitude[kept].min()
    pruner.rewind(model)
    assert all(p.dtype == dtype for p in model.parameters())
    for name in pruner.names:
        mask = torch.from_numpy(pruner.masks[pruner.names.index(name)])
        assert torch.equal(model.state_dict()[name], initial[name] * mask.to(dtype))


def test_reset_masks(mlp: nn.Module) -> None:
    pruner = LotteryTicketPruner(mlp)
    pruner.calc_prune_mask(mlp, 0.5, "smallest_weights")
    pruner.reset_masks()
    assert all(m.all() for m in pruner.masks) and pruner.level == 0
    pruner.apply_pruning(mlp)
    assert zero_counts(pruner, mlp) == [0, 0, 0]


def test_pruned_model_survives_deepcopy_and_pickle(convnet: nn.Module) -> None:
    pruner = LotteryTicketPruner(convnet)
    pruner.calc_prune_mask(convnet, 0.6, "smallest_weights")
    pruner.apply_pruning(convnet)
    x, _ = conv_batch()
    convnet.eval()
    expected = convnet(x)
    for clone in (copy.deepcopy(convnet), pickle.loads(pickle.dumps(convnet))):
        assert zero_counts(pruner, clone) == pruned_counts(pruner)
        assert torch.equal(clone(x), expected)
        pruner.apply_pruning(clone)  # the pruner accepts the copy (same names and shapes)
    pruner_copy = copy.deepcopy(pruner)
    pruner_copy.calc_prune_mask(convnet, 0.5, "smallest_weights")
    assert pruner.level == 1 and pruner_copy.level == 2


def test_state_dict_round_trip_through_torch_save(convnet: nn.Module) -> None:
    pruner = LotteryTicketPruner(convnet, seed=5)
    perturb(convnet)
    pruner.set_pretrained_weights(convnet)
    pruner.set_rewind_weights(convnet)
    pruner.calc_prune_mask(convnet, 0.5, "large_final")
    buffer = io.BytesIO()
    torch.save(pruner.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    fresh_model = make_convnet(seed=9)
    restored = LotteryTicketPruner(fresh_model, seed=5)
    restored.load_state_dict(state)
    assert restored.level == pruner.level
    for ours, theirs in zip(restored.masks, pruner.masks, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    # Rewinding uses the saved rewind point, not fresh_model's own initial weights.
    pruner.rewind(convnet)
    restored.rewind(fresh_model)
    for name, value in convnet.state_dict().items():
        assert torch.equal(fresh_model.state_dict()[name], value), name
    # Both continue identically.
    pruner.calc_prune_mask(convnet, 0.3, "large_final")
    restored.calc_prune_mask(fresh_model, 0.3, "large_final")
    for ours, theirs in zip(restored.masks, pruner.masks, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_load_state_dict_rejects_other_models(mlp: nn.Module, convnet: nn.Module) -> None:
    state = LotteryTicketPruner(mlp).state_dict()
    with pytest.raises(ValueError, match="made for other parameters"):
        LotteryTicketPruner(convnet).load_state_dict(state)
    with pytest.raises(ValueError, match="Received: state with format=None"):
        LotteryTicketPruner(mlp).load_state_dict({"masks": []})


def test_mismatched_module_is_an_error(mlp: nn.Module, convnet: nn.Module) -> None:
    pruner = LotteryTicketPruner(mlp)
    with pytest.raises(ValueError, match="does not match the pruner"):
        pruner.calc_prune_mask(convnet, 0.5, "smallest_weights")
    wider = nn.Sequential(
        nn.Linear(12, 11), nn.ReLU(), nn.Sequential(nn.Linear(11, 8), nn.Tanh(), nn.Linear(8, 3))
    )
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(11, 12\), expected \(10, 12\)"):
        pruner.apply_pruning(wider)


def test_invalid_fraction_leaves_state_unchanged(mlp: nn.Module) -> None:
    pruner = LotteryTicketPruner(mlp)
    with pytest.raises(ValueError, match="prune_percentage"):
        pruner.calc_prune_mask(mlp, 1.5, "smallest_weights")
    assert pruner.level == 0 and pruner.mask_version == 0


def test_repr(mlp: nn.Module) -> None:
    assert "3 prunable parameters" in repr(LotteryTicketPruner(mlp))
