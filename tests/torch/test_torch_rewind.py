"""RewindPointHook: late rewinding to the weights after optimizer step k."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch_models import make_convnet, make_mlp, mlp_batch

from ltp_torch import LotteryTicketPruner, PrunerHook, RewindPointHook
from ltp_torch.training import MaskedTraining


def step(model: nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
    x, y = mlp_batch(seed=seed)
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


def test_captures_after_step_k_and_rewinds_there() -> None:
    model = make_mlp()
    pruner = LotteryTicketPruner(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    capture = RewindPointHook(pruner, model, optimizer, step=3)
    snapshots = []
    for i in range(6):
        step(model, optimizer, seed=i)
        snapshots.append(copy.deepcopy(model.state_dict()))
    assert capture.captured and capture.steps_seen == 3
    pruner.set_pretrained_weights(model)
    pruner.calc_prune_mask(model, 0.5, "large_final")
    params_before = list(model.parameters())
    pruner.rewind(model)
    assert all(a is b for a, b in zip(params_before, model.parameters(), strict=True))
    after_step_3 = snapshots[2]
    for name, value in model.state_dict().items():
        expected = after_step_3[name]
        if name in pruner.names:
            expected = expected * torch.from_numpy(pruner.masks[pruner.names.index(name)])
        assert torch.equal(value, expected), name


def test_step_zero_captures_now_and_remove_stops_counting() -> None:
    model = make_mlp()
    pruner = LotteryTicketPruner(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    step(model, optimizer, seed=0)
    now = copy.deepcopy(model.state_dict())
    assert RewindPointHook(pruner, model, optimizer, step=0).captured
    with RewindPointHook(pruner, model, optimizer, step=5) as late:
        step(model, optimizer, seed=1)
    step(model, optimizer, seed=2)
    assert not late.captured and late.steps_seen == 1
    pruner.rewind(model)
    for name, value in model.state_dict().items():
        assert torch.equal(value, now[name]), name


def test_works_together_with_the_pruner_hook() -> None:
    model = make_mlp()
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    with PrunerHook(pruner, model, optimizer), RewindPointHook(pruner, model, optimizer, step=2):
        for i in range(4):
            step(model, optimizer, seed=i)
    # The captured weights were taken after the pruner hook ran: pruned entries are zero.
    for weights, mask in zip(pruner.core.rewind_weights, pruner.masks, strict=True):
        assert (weights[~mask] == 0).all()


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_invalid_step(bad: object) -> None:
    model = make_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="Received: step="):
        RewindPointHook(LotteryTicketPruner(model), model, optimizer, step=bad)  # type: ignore[arg-type]


def test_mismatched_module_fails_at_once() -> None:
    model = make_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="does not match the pruner"):
        RewindPointHook(LotteryTicketPruner(model), make_convnet(), optimizer, step=2)


def test_rewind_into_a_mismatched_module_changes_nothing() -> None:
    """A non-prunable tensor of the wrong shape is found before any tensor is overwritten."""
    pruner = LotteryTicketPruner(make_mlp(seed=0))
    other = make_mlp(seed=1)
    other[2][2].bias = nn.Parameter(torch.zeros(5))  # last in order: the others come first
    before = {name: value.clone() for name, value in other.state_dict().items()}
    with pytest.raises(ValueError, match=r"'2\.2\.bias' has shape \(5,\), expected \(3,\)"):
        pruner.rewind(other)
    for name, value in other.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_rewind_warns_about_tensors_added_after_the_rewind_point() -> None:
    """A head added after the pruner was created has no initial value: rewind used to leave it
    trained without a word."""

    def rewind_warnings(pruner: LotteryTicketPruner, model: nn.Module) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pruner.rewind(model)
        return [str(w.message) for w in caught]

    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.5, "random")
    assert rewind_warnings(pruner, model) == []
    model.add_module("head", nn.Linear(3, 2))
    model.register_buffer("scale", torch.ones(2))
    (message,) = rewind_warnings(pruner, model)
    assert "['head.weight', 'head.bias', 'scale']" in message and "keep their current" in message
    pruner.set_rewind_weights(model)  # now the head has a rewind value
    assert rewind_warnings(pruner, model) == []


def test_trainer_resumed_after_the_rewind_iteration_keeps_the_saved_rewind_point(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What the Lightning and HF callbacks run. Resuming at step 4 a run that captured its
    rewind point at step 2 (restored with the pruner's saved state) used to capture the step-4
    weights over it, silently."""
    model = make_mlp()
    pruner = LotteryTicketPruner(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    training = MaskedTraining(pruner, rewind_iteration=2)
    training.start(model, [optimizer])
    for seed in range(4):
        step(model, optimizer, seed)
    training.stop()
    saved = pruner.state_dict()
    at_step_2 = [w.clone() for w in saved["rewind_state"].values()]

    resumed = LotteryTicketPruner(make_mlp(seed=1))
    resumed.load_state_dict(saved)
    again = MaskedTraining(resumed, rewind_iteration=2)  # a new callback: captured_at unknown
    again.start(model, [optimizer], steps_done=4)
    assert again.captured_at == 2
    assert all(
        torch.equal(a, b)
        for a, b in zip(resumed.state_dict()["rewind_state"].values(), at_step_2, strict=True)
    )
    again.stop()

    fresh = LotteryTicketPruner(model)  # the saved state was not loaded: nothing to keep
    late = MaskedTraining(fresh, rewind_iteration=2)
    with caplog.at_level("WARNING", logger="ltp_torch"):
        late.start(model, [optimizer], steps_done=4)
        late.stop()
    assert late.captured_at is None and fresh.state_dict()["rewind_state"] is None
    assert caplog.text.count("after rewind_iteration=2") == 1
    assert "not captured" not in caplog.text  # one warning, not two
