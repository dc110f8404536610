"""ltp_torch.lightning.PrunerCallback with the real Lightning Trainer: exact zeros after every
optimizer step (automatic and manual optimization, gradient accumulation, two optimizers),
optimizer state, the rewind point, sparsity logging and checkpoint resume."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

pl = pytest.importorskip("lightning.pytorch")

from ltp_torch import LotteryTicketPruner  # noqa: E402
from ltp_torch.lightning import PrunerCallback  # noqa: E402

TRAINER_KWARGS: dict[str, Any] = {
    "accelerator": "cpu",
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "num_sanity_val_steps": 0,
}


class Classifier(pl.LightningModule):
    """A tiny MLP; ``manual=True`` trains it with two optimizers stepped by hand."""

    def __init__(self, manual: bool = False) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
        self.manual = manual
        self.automatic_optimization = not manual

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        if not self.manual:
            return loss
        first, second = self.optimizers()
        first.zero_grad()
        second.zero_grad()
        self.manual_backward(loss)
        first.step()
        second.step()
        return None

    def configure_optimizers(self) -> Any:
        if self.manual:
            return (
                torch.optim.SGD(self.net[0].parameters(), lr=0.1, momentum=0.9),
                torch.optim.Adam(self.net[2].parameters(), lr=0.01),
            )
        return torch.optim.Adam(self.parameters(), lr=0.01)


def loader(n: int = 48, batch_size: int = 8, seed: int = 0) -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=generator)
    y = torch.randint(0, 3, (n,), generator=generator)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size)


def make(seed: int = 0, manual: bool = False) -> tuple[Classifier, LotteryTicketPruner]:
    torch.manual_seed(seed)
    model = Classifier(manual=manual)
    pruner = LotteryTicketPruner(model, seed=seed)
    pruner.calc_prune_mask(model, 0.6, "random")
    return model, pruner


class ZeroChecker(pl.Callback):
    """Records, after every training batch, whether each pruned weight is exactly zero, and
    whether any gradient at pruned entries was nonzero (the hook masks them)."""

    def __init__(self, pruner: LotteryTicketPruner, module: nn.Module | None = None) -> None:
        self.pruner = pruner
        self.module = module
        self.zero_after_batch: list[bool] = []
        self.steps: list[int] = []
        self.pruned_grads_nonzero = False
        self.grads_seen = 0
        self.weights_at: dict[int, list[torch.Tensor]] = {}

    def _pruned(self, module: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        masks = [torch.from_numpy(m) for m in self.pruner.masks]
        target = module if self.module is None else self.module
        return list(zip(self.pruner.parameters(target), masks, strict=True))

    def on_after_backward(self, trainer: Any, pl_module: Any) -> None:
        for parameter, mask in self._pruned(pl_module):
            if parameter.grad is not None:
                self.grads_seen += 1
                if bool((parameter.grad[~mask] != 0).any()):
                    self.pruned_grads_nonzero = True

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        self.zero_after_batch.append(
            all(bool((p[~m] == 0).all()) for p, m in self._pruned(pl_module))
        )
        self.steps.append(int(trainer.global_step))
        self.weights_at.setdefault(
            int(trainer.global_step), [p.detach().clone() for p in pl_module.parameters()]
        )


def test_automatic_optimization_with_accumulation_keeps_zeros_and_captures_rewind() -> None:
    model, pruner = make()
    before = [p.detach().clone() for p in pruner.parameters(model)]
    checker = ZeroChecker(pruner)
    callback = PrunerCallback(pruner, rewind_iteration=2)
    trainer = pl.Trainer(
        max_epochs=2, accumulate_grad_batches=2, callbacks=[callback, checker], **TRAINER_KWARGS
    )
    trainer.fit(model, loader())

    assert len(checker.zero_after_batch) == 12 and all(checker.zero_after_batch)
    # The hook masks gradients as backward computes them (clipping sees the ticket's norm).
    assert checker.grads_seen and not checker.pruned_grads_nonzero
    assert checker.steps == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6]  # one step per 2 batches
    for old, new, mask in zip(before, pruner.parameters(model), pruner.masks, strict=True):
        assert not torch.equal(old[torch.from_numpy(mask)], new[torch.from_numpy(mask)])
    assert callback.captured_at == 2
    logged = float(trainer.callback_metrics["sparsity"])
    assert logged == pytest.approx(pruner.cumulative_pruning_rate)

    # The rewind point is the full model after the 2nd optimizer step, pruned entries zeroed.
    pruner.rewind(model)
    for rewound, captured in zip(model.parameters(), checker.weights_at[2], strict=True):
        assert torch.equal(rewound, captured)


def test_manual_optimization_with_two_optimizers() -> None:
    torch.manual_seed(1)
    model = Classifier(manual=True)
    pruner = LotteryTicketPruner(model.net)  # built on a submodule: names without "net."
    pruner.calc_prune_mask(model.net, 0.6, "random")
    with pytest.raises(ValueError, match=r"module=lit_model\.net"):
        pl.Trainer(max_epochs=1, callbacks=[PrunerCallback(pruner)], **TRAINER_KWARGS).fit(
            model, loader()
        )
    callback = PrunerCallback(pruner, module=model.net, log_sparsity=False)
    checker = ZeroChecker(pruner, module=model.net)
    trainer = pl.Trainer(max_epochs=1, callbacks=[callback, checker], **TRAINER_KWARGS)
    trainer.fit(model, loader())
    assert len(checker.zero_after_batch) == 6 and all(checker.zero_after_batch)
    assert checker.grads_seen and not checker.pruned_grads_nonzero
    assert checker.steps == [2, 4, 6, 8, 10, 12]  # both optimizers' steps count
    assert "sparsity" not in trainer.callback_metrics


def test_zero_state_and_reuse_across_levels() -> None:
    """One callback instance through three levels: masks shrink, zeros hold, the rewind point is
    captured once (in the dense run) and reused."""
    torch.manual_seed(2)
    model = Classifier()
    pruner = LotteryTicketPruner(model)
    callback = PrunerCallback(pruner, rewind_iteration=1)
    densities = []
    for level in range(3):
        if level:
            pruner.set_pretrained_weights(model)
            pruner.calc_prune_mask(model, 0.5, "large_final")
            pruner.rewind(model)
        checker = ZeroChecker(pruner)
        trainer = pl.Trainer(max_epochs=1, callbacks=[callback, checker], **TRAINER_KWARGS)
        trainer.fit(model, loader(n=24))
        assert all(checker.zero_after_batch)
        densities.append(1 - pruner.cumulative_pruning_rate)
        assert callback.captured_at == 1
    assert densities[0] == 1.0 and densities[1] > densities[2] > 0


def test_checkpoint_holds_the_pruner_and_resumes_the_ticket(tmp_path: Path) -> None:
    model, pruner = make(seed=3)
    trainer = pl.Trainer(max_epochs=1, callbacks=[PrunerCallback(pruner)], **TRAINER_KWARGS)
    trainer.fit(model, loader())
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)

    torch.manual_seed(99)
    fresh = Classifier()
    fresh_pruner = LotteryTicketPruner(fresh)  # no masks, other initial weights
    checker = ZeroChecker(fresh_pruner)
    trainer = pl.Trainer(
        max_epochs=2, callbacks=[PrunerCallback(fresh_pruner), checker], **TRAINER_KWARGS
    )
    trainer.fit(fresh, loader(), ckpt_path=path)
    for saved, restored in zip(pruner.masks, fresh_pruner.masks, strict=True):
        np.testing.assert_array_equal(saved, restored)
    assert checker.steps[0] == 7 and all(checker.zero_after_batch)
    fresh_pruner.rewind(fresh)  # rewinds to the first run's initial weights
    pruner.rewind(model)
    for a, b in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)


def test_bad_input_and_warnings(caplog: pytest.LogCaptureFixture) -> None:
    model, pruner = make(seed=4)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="rewind_iteration"):
            PrunerCallback(pruner, rewind_iteration=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pruner"):
        PrunerCallback(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="module"):
        PrunerCallback(pruner, module="net")  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="ltp_torch"):
        trainer = pl.Trainer(
            max_epochs=1,
            callbacks=[PrunerCallback(pruner, rewind_iteration=1000)],
            **TRAINER_KWARGS,
        )
        trainer.fit(model, loader(n=16))
    assert "rewind point was not captured" in caplog.text


class PruneMidway(pl.Callback):
    """Prunes at the end of batch ``at`` and records the Adam state at pruned entries after the
    next optimizer step."""

    def __init__(self, pruner: LotteryTicketPruner, at: int) -> None:
        self.pruner = pruner
        self.at = at
        self.state_zero_after_next_step: bool | None = None

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, i: int
    ) -> None:
        if i == self.at:
            self.pruner.set_pretrained_weights(pl_module)
            self.pruner.calc_prune_mask(pl_module, 0.5, "large_final")
        elif i == self.at + 1:
            (optimizer,) = trainer.optimizers
            checks = []
            for parameter, mask in zip(
                self.pruner.parameters(pl_module), self.pruner.masks, strict=True
            ):
                state = optimizer.state[parameter]
                pruned = torch.from_numpy(~mask)
                checks.append(bool((state["exp_avg"][pruned] == 0).all()))
                checks.append(bool((state["exp_avg_sq"][pruned] == 0).all()))
                checks.append(bool((parameter[pruned] == 0).all()))
            self.state_zero_after_next_step = all(checks)


def test_masks_changed_during_fit_zero_weights_and_optimizer_state() -> None:
    torch.manual_seed(5)
    model = Classifier()
    pruner = LotteryTicketPruner(model)
    midway = PruneMidway(pruner, at=2)
    checker = ZeroChecker(pruner)
    trainer = pl.Trainer(
        max_epochs=1, callbacks=[PrunerCallback(pruner), checker, midway], **TRAINER_KWARGS
    )
    trainer.fit(model, loader())
    assert midway.state_zero_after_next_step is True
    assert checker.zero_after_batch == [True] * 6
    assert pruner.cumulative_pruning_rate == pytest.approx(0.5, abs=0.01)


class Validated(Classifier):
    """Records, in every validation batch, the non-zero pruned weights of the model being
    validated (Lightning's weight averaging swaps the average in for validation)."""

    def __init__(self) -> None:
        super().__init__()
        self.pruner: LotteryTicketPruner | None = None
        self.revived: list[int] = []

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        assert self.pruner is not None
        pairs = zip(self.pruner.parameters(self.net), self.pruner.masks, strict=True)
        counts = [int(p.detach()[~torch.from_numpy(m)].ne(0).sum()) for p, m in pairs]
        self.revived.append(sum(counts))


def test_weight_averaging_copies_are_pruned_too() -> None:
    """EMAWeightAveraging copies the model in ``setup``, before ``on_fit_start`` zeroed it: the
    sanity check validated that dense copy, and a run that ended before the average's first
    update copied the dense weights into the model."""
    averaging = pytest.importorskip("lightning.pytorch.callbacks")
    torch.manual_seed(0)
    model = Validated()
    pruner = LotteryTicketPruner(model.net)  # on a submodule: found inside the copy too
    pruner.calc_prune_mask(model.net, 0.6, "random")
    model.pruner = pruner
    kwargs = {**TRAINER_KWARGS, "num_sanity_val_steps": 2, "max_epochs": 1}
    for starting_at in (None, 10_000):  # updated every step; never updated in this run
        ema = averaging.EMAWeightAveraging(update_starting_at_step=starting_at)
        callbacks = [ema, PrunerCallback(pruner, module=model.net)]
        pl.Trainer(callbacks=callbacks, **kwargs).fit(model, loader(), loader(n=16))
        assert model.revived and model.revived == [0] * len(model.revived), starting_at
        for parameter, mask in zip(pruner.parameters(model.net), pruner.masks, strict=True):
            assert bool((parameter.detach()[~torch.from_numpy(mask)] == 0).all()), starting_at
        model.revived.clear()
