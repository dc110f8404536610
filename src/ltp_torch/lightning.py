"""PyTorch Lightning: keep a ticket's masks through ``Trainer.fit`` (``pip install lightning``).

:class:`PrunerCallback` holds every pruned weight at exactly zero after every optimizer step,
with automatic and manual optimization, gradient accumulation (``accumulate_grad_batches``),
several optimizers and mixed precision; it zeroes the optimizer state (momentum, Adam moments)
at pruned entries, can capture a late-rewind point, logs the sparsity, and saves the pruner in
Lightning checkpoints so ``fit(ckpt_path=...)`` resumes the same ticket.

Only this module imports Lightning (``lightning.pytorch``, or the older standalone
``pytorch_lightning`` package when that is the one installed).
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.optim.swa_utils import AveragedModel

from ltp_torch.pruner import LotteryTicketPruner
from ltp_torch.sparsity import sparsity_scalars
from ltp_torch.training import MaskedTraining

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - the older standalone package
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError as error:
        raise ImportError(
            "ltp_torch.lightning needs PyTorch Lightning: pip install 'lottery-tickets[lightning]'"
        ) from error

__all__ = ["PrunerCallback"]


class PrunerCallback(pl.Callback):
    """A Lightning ``Callback`` that trains with a pruner's masks.

    - ``on_fit_start``: the pruned weights are zeroed (the sanity-check validation sees the
      ticket), also in the ``AveragedModel`` that another callback keeps of the model
      (Lightning's ``EMAWeightAveraging``/``WeightAveraging`` copy it in ``setup``).
    - ``on_train_start``: a :class:`ltp_torch.PrunerHook` goes on every optimizer that updates a
      pruned parameter (``trainer.optimizers``, whatever ``configure_optimizers`` returned):
      weights are masked after each real optimizer step, so a micro-batch of gradient
      accumulation or a step skipped by AMP changes nothing, and the manual
      ``self.optimizers().step()`` is covered like the automatic one. Optimizer state at pruned
      entries is zeroed then and whenever the pruner's masks change.
    - ``rewind_iteration=K``: after the K-th optimizer step (counted like
      ``trainer.global_step``) the weights become the pruner's rewind point
      (:meth:`LotteryTicketPruner.set_rewind_weights`); once per callback instance, so the same
      callback can be passed to every pruning level. A warning says when training ended first.
    - ``log_sparsity``: logs ``sparsity`` (fraction of the prunable weights pruned) at each
      training epoch end, to the progress bar and the loggers.
    - Checkpoints: the callback's state (the whole pruner: masks, initial and rewind weights)
      goes into Lightning checkpoints and is restored by ``trainer.fit(..., ckpt_path=...)``.

    One instance can be reused across ``fit`` calls; masks are read from the pruner each time,
    so prune between fits with ``pruner.calc_prune_mask(...)`` and ``pruner.rewind(...)``.

    Args:
        pruner: The :class:`ltp_torch.LotteryTicketPruner` holding the masks.
        module: The module the pruner was built on when that is a submodule of the
            ``LightningModule`` (e.g. ``lit_model.net``); by default the ``LightningModule``
            itself.
        rewind_iteration: Optimizer steps after which to capture the rewind point; ``None``
            (default) captures nothing.
        log_sparsity: Log the overall sparsity at each training epoch end (default ``True``).

    Example:
        >>> import lightning.pytorch as pl, torch
        >>> from torch import nn
        >>> from ltp_torch import LotteryTicketPruner
        >>> class Regressor(pl.LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        ...     def training_step(self, batch, batch_idx):
        ...         x, y = batch
        ...         return nn.functional.mse_loss(self.net(x), y)
        ...     def configure_optimizers(self):
        ...         return torch.optim.Adam(self.parameters(), lr=0.01)
        >>> model = Regressor()
        >>> pruner = LotteryTicketPruner(model)
        >>> pruner.calc_prune_mask(model, 0.5, "random")
        >>> data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
        >>> trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False,
        ...                      enable_checkpointing=False, enable_progress_bar=False,
        ...                      enable_model_summary=False,
        ...                      callbacks=[PrunerCallback(pruner)])
        >>> trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=8))
        >>> int((model.net[0].weight == 0).sum()), float(trainer.callback_metrics["sparsity"])
        (16, 0.5)
    """

    def __init__(
        self,
        pruner: LotteryTicketPruner,
        *,
        module: nn.Module | None = None,
        rewind_iteration: int | None = None,
        log_sparsity: bool = True,
    ) -> None:
        super().__init__()
        if module is not None and not isinstance(module, nn.Module):
            raise TypeError(
                "`module` must be None or the torch.nn.Module the pruner was built on. "
                f"Received: module of type {type(module).__name__}"
            )
        if not isinstance(log_sparsity, bool):
            raise TypeError(
                f"`log_sparsity` must be a bool. Received: log_sparsity={log_sparsity!r}"
            )
        self._training = MaskedTraining(pruner, rewind_iteration=rewind_iteration)
        self.pruner = pruner
        self.module = module
        self.log_sparsity = log_sparsity

    @property
    def rewind_iteration(self) -> int | None:
        """Optimizer steps after which the rewind point is captured (``None``: never)."""
        return self._training.rewind_iteration

    @property
    def captured_at(self) -> int | None:
        """The optimizer step at which the rewind point was captured, or ``None``."""
        return self._training.captured_at

    def _target(self, pl_module: nn.Module) -> nn.Module:
        target = pl_module if self.module is None else self.module
        try:
            self.pruner.parameters(target)
        except ValueError as error:
            hint = (
                " If the pruner was built on a submodule, pass it: "
                "PrunerCallback(pruner, module=lit_model.net)."
                if self.module is None
                else ""
            )
            raise ValueError(f"{error}{hint}") from error
        return target

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Zero the pruned weights before anything (sanity check included) runs, in the model
        and in the weight averages other callbacks keep of it."""
        target = self._target(pl_module)
        self.pruner.apply_pruning(target)
        for average in _weight_averages(trainer, pl_module, target):
            self.pruner.apply_pruning(average)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Hook the trainer's optimizers."""
        self._training.start(
            self._target(pl_module), trainer.optimizers, steps_done=int(trainer.global_step)
        )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log the sparsity."""
        if self.log_sparsity:
            value = sparsity_scalars(self.pruner)["sparsity"]
            pl_module.log("sparsity", value, prog_bar=True, on_step=False, on_epoch=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Detach from the optimizers (the weights keep their zeros)."""
        self._training.stop()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Detach from the optimizers when training fails."""
        self._training.stop(warn=False)

    def state_dict(self) -> dict[str, Any]:
        """The pruner's state and the rewind capture, saved in Lightning checkpoints."""
        return {"pruner": self.pruner.state_dict(), "captured_at": self._training.captured_at}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the pruner (masks, initial and rewind weights) from a checkpoint.

        Raises:
            ValueError: The checkpoint's pruner was made for other parameters.
        """
        captured_at = state_dict.get("captured_at")
        if captured_at is not None and not isinstance(captured_at, int):
            raise ValueError(
                f"Malformed PrunerCallback state. Received: captured_at={captured_at!r}"
            )
        self.pruner.load_state_dict(state_dict.get("pruner"))  # validates first
        self._training.captured_at = captured_at

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(pruner={self.pruner!r}, "
            f"rewind_iteration={self.rewind_iteration!r})"
        )


def _weight_averages(
    trainer: pl.Trainer, pl_module: pl.LightningModule, target: nn.Module
) -> list[nn.Module]:
    """The copies of ``target`` inside the ``AveragedModel`` of any callback (Lightning's
    ``WeightAveraging``/``EMAWeightAveraging``, which copy the model in ``setup``, before
    ``on_fit_start`` zeroes it; a user's EMA callback).

    Until its first update, such an average is the copy: dense where the ticket is pruned. The
    validation it is swapped in for (the sanity check included) saw the dense model, and a run
    that ended before the first update copied the dense weights into the model.
    """
    path = next((name for name, module in pl_module.named_modules() if module is target), None)
    if path is None:
        return []
    averages = []
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        for value in vars(callback).values():
            if isinstance(value, AveragedModel) and isinstance(value.module, nn.Module):
                copy = value.module
                averages.append(copy.get_submodule(path) if path else copy)
    return averages
