"""Sparsity numbers for metric loggers: ltp_torch.sparsity_scalars and log_sparsity."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch_models import make_mlp

from ltp_torch import LotteryTicketPruner, log_sparsity, sparsity_scalars


class RecordingWriter:
    """Collects add_scalar calls the way SummaryWriter receives them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, int | None]] = []

    def add_scalar(self, tag: str, scalar_value: float, global_step: int | None = None) -> None:
        self.calls.append((tag, scalar_value, global_step))


def test_scalars_follow_the_masks_level_by_level() -> None:
    net = make_mlp()
    pruner = LotteryTicketPruner(net)
    assert sparsity_scalars(pruner) == {
        "sparsity": 0.0,
        "sparsity/0.weight": 0.0,
        "sparsity/2.0.weight": 0.0,
        "sparsity/2.2.weight": 0.0,
    }
    pruner.calc_prune_mask(net, 0.5, "smallest_weights", layer_rates={"2.2.weight": 0})
    scalars = sparsity_scalars(pruner, prefix="train/sparsity")
    sizes = [p.numel() for p in pruner.parameters(net)]  # 120, 80, 24
    assert scalars["train/sparsity/0.weight"] == 0.5
    assert scalars["train/sparsity/2.0.weight"] == 0.5
    assert scalars["train/sparsity/2.2.weight"] == 0.0
    assert scalars["train/sparsity"] == pytest.approx((60 + 40) / sum(sizes))
    assert scalars["train/sparsity"] == pytest.approx(pruner.cumulative_pruning_rate)


def test_log_sparsity_writes_every_tag_at_the_step() -> None:
    net = make_mlp()
    pruner = LotteryTicketPruner(net)
    pruner.calc_prune_mask(net, 0.25, "random")
    writer = RecordingWriter()
    written = log_sparsity(writer, pruner, step=7)
    assert writer.calls == [(tag, value, 7) for tag, value in written.items()]
    assert len(writer.calls) == 4
    with pytest.raises(TypeError, match="add_scalar"):
        log_sparsity(object(), pruner, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pruner"):
        sparsity_scalars(net)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prefix"):
        sparsity_scalars(pruner, prefix="")
    for step in ("7", 7.0, True):
        with pytest.raises(TypeError, match=f"Received: step={step!r}"):
            log_sparsity(writer, pruner, step=step)  # type: ignore[arg-type]
    assert len(writer.calls) == 4  # nothing written by the failing calls


def test_summary_writer_event_file(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    net = make_mlp()
    pruner = LotteryTicketPruner(net)
    pruner.calc_prune_mask(net, 0.5, "random")
    with SummaryWriter(tmp_path) as writer:
        log_sparsity(writer, pruner, step=1)
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())
