"""save_checkpoint / load_checkpoint: one atomic file, zeros kept, exact resume after SIGKILL."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch_models import make_convnet, make_mlp, mlp_batch

from ltp_torch import (
    LotteryTicketPruner,
    PrunerHook,
    RewindPointHook,
    load_checkpoint,
    save_checkpoint,
)

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "resumable_training.py"


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
    x, y = mlp_batch(seed)
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


def assert_pruned_zero(state: dict, names: list[str], masks: list[np.ndarray]) -> None:
    for name, mask in zip(names, masks, strict=True):
        weight = state[name]
        assert torch.all(weight[torch.from_numpy(~mask)] == 0), name


def test_every_checkpoint_during_training_has_pruned_weights_at_zero(tmp_path: Path) -> None:
    model = make_mlp()
    pruner = LotteryTicketPruner(model, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    hook = PrunerHook(pruner, model, optimizer)
    paths = []
    for level in range(3):
        for step in range(6):
            train_step(model, optimizer, seed=10 * level + step)
            if step % 2 == 1:
                path = tmp_path / f"ckpt_{level}_{step}.pt"
                save_checkpoint(path, model, optimizer, pruner, extra={"level": level})
                paths.append(path)
        pruner.set_pretrained_weights(model)
        pruner.calc_prune_mask(model, 0.4, "large_final")
        # No hook.refresh() and no step yet: save_checkpoint itself applies the new masks.
        path = tmp_path / f"ckpt_{level}_pruned.pt"
        save_checkpoint(path, model, optimizer, pruner, extra={"level": level + 1})
        paths.append(path)
        pruner.rewind(model)
    hook.remove()

    for path in paths:
        checkpoint = torch.load(path, weights_only=True)  # plain torch can read it safely
        saved_pruner = LotteryTicketPruner(make_mlp(seed=5))
        saved_pruner.load_state_dict(checkpoint["pruner"])
        assert_pruned_zero(checkpoint["model"], saved_pruner.names, saved_pruner.masks)
        if saved_pruner.level:
            assert any((~m).any() for m in saved_pruner.masks)
    assert pruner.level == 3


def test_round_trip_restores_everything_in_place(tmp_path: Path) -> None:
    model = make_convnet()
    pruner = LotteryTicketPruner(model, seed=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    rewind = RewindPointHook(pruner, model, optimizer, step=2)
    x = torch.randn(4, 2, 8, 8)
    for _ in range(3):
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()
    pruner.set_pretrained_weights(model)
    pruner.calc_prune_mask(model, 0.5, "large_final")
    path = tmp_path / "sub" / "ckpt.pt"
    save_checkpoint(path, model, optimizer, pruner, rewind=rewind, extra={"step": 3, "note": "x"})

    fresh = make_convnet(seed=7)
    params = list(fresh.parameters())
    fresh_optimizer = torch.optim.SGD(fresh.parameters(), lr=0.05, momentum=0.9)
    fresh_pruner = LotteryTicketPruner(fresh, seed=3)
    fresh_rewind = RewindPointHook(fresh_pruner, fresh, fresh_optimizer, step=2)
    extra = load_checkpoint(path, fresh, fresh_optimizer, fresh_pruner, rewind=fresh_rewind)

    assert extra == {"step": 3, "note": "x"}
    assert all(a is b for a, b in zip(params, fresh.parameters(), strict=True))
    for name, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name
    for ours, theirs in zip(fresh_pruner.masks, pruner.masks, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert fresh_rewind.captured and fresh_rewind.steps_seen == 2 and not fresh_rewind.active
    momentum = {id(p): s["momentum_buffer"] for p, s in optimizer.state.items()}
    for a, b in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(fresh_optimizer.state[b]["momentum_buffer"], momentum[id(a)])
    # The rewind point travelled with the pruner: both rewind to the weights after step 2.
    pruner.rewind(model)
    fresh_pruner.rewind(fresh)
    for name, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name


def test_rewind_hook_continues_counting(tmp_path: Path) -> None:
    model = make_mlp()
    pruner = LotteryTicketPruner(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    rewind = RewindPointHook(pruner, model, optimizer, step=5)
    for step in range(3):
        train_step(model, optimizer, step)
    save_checkpoint(tmp_path / "c.pt", model, optimizer, pruner, rewind=rewind)

    resumed = make_mlp(seed=1)
    resumed_optimizer = torch.optim.SGD(resumed.parameters(), lr=0.1)
    resumed_pruner = LotteryTicketPruner(resumed)
    resumed_rewind = RewindPointHook(resumed_pruner, resumed, resumed_optimizer, step=5)
    load_checkpoint(
        tmp_path / "c.pt", resumed, resumed_optimizer, resumed_pruner, rewind=resumed_rewind
    )
    assert resumed_rewind.steps_seen == 3 and not resumed_rewind.captured
    for step in range(3, 6):
        train_step(model, optimizer, step)
        train_step(resumed, resumed_optimizer, step)
    assert rewind.captured and resumed_rewind.captured
    for a, b in zip(pruner.core.rewind_weights, resumed_pruner.core.rewind_weights, strict=True):
        np.testing.assert_array_equal(a, b)

    other = RewindPointHook(resumed_pruner, resumed, resumed_optimizer, step=4)
    with pytest.raises(ValueError, match="step=4"):
        load_checkpoint(tmp_path / "c.pt", resumed, rewind=other)


def test_checkpoint_without_optimizer_or_pruner(tmp_path: Path) -> None:
    model = make_mlp()
    save_checkpoint(tmp_path / "m.pt", model)
    other = make_mlp(seed=3)
    assert load_checkpoint(tmp_path / "m.pt", other) is None
    for name, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[name], value)
    pruner = LotteryTicketPruner(other)
    with pytest.raises(ValueError, match="holds no pruner state"):
        load_checkpoint(tmp_path / "m.pt", other, pruner=pruner)


def test_dropout_continues_after_resume(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 12), nn.Dropout(0.5), nn.Linear(12, 3))
    save_checkpoint(tmp_path / "c.pt", model)
    expected = model(torch.ones(4, 12))
    torch.manual_seed(123)  # anything
    load_checkpoint(tmp_path / "c.pt", model)
    assert torch.equal(model(torch.ones(4, 12)), expected)


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    model = make_mlp()
    path = tmp_path / "c.pt"
    save_checkpoint(path, model, extra={"step": 1})
    before = path.read_bytes()
    with pytest.raises(TypeError, match=r"Received: extra\['bad'\] of type ndarray"):
        save_checkpoint(path, model, extra={"bad": np.zeros(2)})
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]


def test_half_precision_checkpoint(tmp_path: Path) -> None:
    model = make_mlp().to(torch.bfloat16)
    pruner = LotteryTicketPruner(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    with PrunerHook(pruner, model, optimizer):
        x, y = mlp_batch()
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x.to(torch.bfloat16)).float(), y).backward()
        optimizer.step()
    save_checkpoint(tmp_path / "c.pt", model, optimizer, pruner)
    state = torch.load(tmp_path / "c.pt", weights_only=True)["model"]
    assert state["0.weight"].dtype == torch.bfloat16
    assert_pruned_zero(state, pruner.names, pruner.masks)


# ------------------------------------------------------------------- SIGKILL and resume


def run_script(*args: str, **kwargs) -> subprocess.Popen:  # type: ignore[no-untyped-def, type-arg]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        **kwargs,
    )


def finish(process: subprocess.Popen) -> str:  # type: ignore[type-arg]
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    return output


def test_sigkill_mid_level_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    # The uninterrupted reference run.
    finish(run_script(str(tmp_path / "ref.pt"), str(tmp_path / "ref_result.pt")))

    # The same run, killed in the middle of level 1 (after a checkpoint at step 8 of that level).
    checkpoint, result = tmp_path / "run.pt", tmp_path / "run_result.pt"
    process = run_script(str(checkpoint), str(result), "--delay", "0.1")
    seen = []
    assert process.stdout is not None
    for line in process.stdout:
        seen.append(line.strip())
        if line.strip() == "checkpoint level=1 step=8":
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, seen
    assert not result.exists()
    saved = torch.load(checkpoint, weights_only=True)
    # Killed mid-level (a loaded machine may let the child run a few steps past the line read).
    assert (saved["extra"]["level"], saved["extra"]["step"]) >= (1, 8)

    output = finish(run_script(str(checkpoint), str(result)))
    assert output.startswith("resumed level=1 step=")

    reference = torch.load(tmp_path / "ref_result.pt", weights_only=True)
    resumed = torch.load(result, weights_only=True)
    assert resumed["level"] == reference["level"] == 3
    for ours, theirs in zip(resumed["masks"], reference["masks"], strict=True):
        assert torch.equal(ours, theirs)
    for name, value in reference["model"].items():
        assert torch.equal(resumed["model"][name], value), name
    assert any(not bool(mask.all()) for mask in reference["masks"])


def test_checkpoint_files_hold_no_code(tmp_path: Path) -> None:
    model = make_mlp()
    pruner = LotteryTicketPruner(model)
    pruner.calc_prune_mask(model, 0.5, "random")
    optimizer = torch.optim.AdamW(model.parameters())
    train_step(model, optimizer, 0)
    save_checkpoint(
        tmp_path / "c.pt", model, optimizer, pruner, extra=copy.deepcopy({"a": [1, 2.0]})
    )
    # weights_only=True is the strict loader; it succeeds on every part of the file.
    checkpoint = torch.load(tmp_path / "c.pt", weights_only=True)
    assert set(checkpoint) >= {"model", "optimizer", "pruner", "rewind", "rng", "extra", "version"}


def _trained_checkpoint(tmp_path: Path) -> tuple[Path, dict]:
    model = make_mlp()
    pruner = LotteryTicketPruner(model, seed=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    rewind = RewindPointHook(pruner, model, optimizer, step=1)
    for seed in range(2):
        train_step(model, optimizer, seed)
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model, optimizer, pruner, rewind=rewind)
    return path, torch.load(path, weights_only=True)


def _fresh(optimizer_class: type = torch.optim.SGD, **options: float) -> tuple:
    model = make_mlp(seed=11)
    pruner = LotteryTicketPruner(model, seed=3)
    optimizer = optimizer_class(model.parameters(), lr=0.05, **options)
    train_step(model, optimizer, 5)  # some optimizer state to lose
    pruner.calc_prune_mask(model, 0.2, "smallest_weights")
    rewind = RewindPointHook(pruner, model, optimizer, step=1)
    return model, optimizer, pruner, rewind


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer, pruner: LotteryTicketPruner):
    return (
        copy.deepcopy(model.state_dict()),
        copy.deepcopy(optimizer.state_dict()),
        pruner.state_dict(),
        torch.get_rng_state(),
    )


def _assert_unchanged(before: tuple, after: tuple) -> None:
    for name, value in before[0].items():
        assert torch.equal(after[0][name], value), name
    assert str(before[1]) == str(after[1])
    assert before[2]["core"]["level"] == after[2]["core"]["level"]
    assert before[2]["core"]["history"] == after[2]["core"]["history"]
    for x, y in zip(before[2]["core"]["masks"], after[2]["core"]["masks"], strict=True):
        assert torch.equal(x, y)
    assert torch.equal(before[3], after[3])


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda c: c["rng"].update(torch=torch.zeros(7, dtype=torch.uint8)), "generator state"),
        (lambda c: c["rng"].update(torch="junk"), "generator state is malformed"),
        (lambda c: c["pruner"]["core"].update(history=[{"level": 1}, 5]), r"history'\]\[1\]"),
        (lambda c: c["pruner"]["core"].update(level=-2), r"state\['level'\].*level=-2"),
        (lambda c: c["pruner"]["initial_state"].pop("0.bias"), "'0.bias' missing"),
        (lambda c: c["rewind"].update(steps_seen="2"), "RewindPointHook"),
        (lambda c: c.update(optimizer_type="torch.optim.adam.Adam"), "saved from a torch.optim"),
    ],
)
def test_a_corrupt_checkpoint_changes_nothing(tmp_path: Path, corrupt, message: str) -> None:
    """Everything is checked before the model, optimizer, pruner or RNG are overwritten."""
    path, checkpoint = _trained_checkpoint(tmp_path)
    corrupt(checkpoint)
    torch.save(checkpoint, path)
    model, optimizer, pruner, rewind = _fresh()
    before = _snapshot(model, optimizer, pruner)
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path, model, optimizer, pruner, rewind=rewind)
    _assert_unchanged(before, _snapshot(model, optimizer, pruner))
    assert (rewind.steps_seen, rewind.captured) == (0, False)


@pytest.mark.parametrize("with_type", [True, False])
def test_sgd_checkpoint_into_adam_is_refused_up_front(tmp_path: Path, with_type: bool) -> None:
    """Another optimizer type is a clear error, also for files that do not record the type."""
    path, checkpoint = _trained_checkpoint(tmp_path)
    if not with_type:  # as written before the type was recorded: the group keys tell
        del checkpoint["optimizer_type"]
        torch.save(checkpoint, path)
    model, optimizer, pruner, _ = _fresh(torch.optim.Adam)
    before = _snapshot(model, optimizer, pruner)
    message = "saved from a torch.optim.sgd.SGD" if with_type else r"lacks \['betas', 'eps'\]"
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path, model, optimizer, pruner)
    _assert_unchanged(before, _snapshot(model, optimizer, pruner))
    train_step(model, optimizer, 1)  # the Adam optimizer still works


def test_same_optimizer_type_with_other_hyperparameters_still_loads(tmp_path: Path) -> None:
    path, _ = _trained_checkpoint(tmp_path)
    model, optimizer, pruner, _ = _fresh(torch.optim.SGD, momentum=0.5, weight_decay=1e-4)
    load_checkpoint(path, model, optimizer, pruner)
    assert optimizer.param_groups[0]["momentum"] == 0.9
    train_step(model, optimizer, 1)
