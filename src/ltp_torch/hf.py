"""Hugging Face ``transformers.Trainer``: keep a ticket's masks through ``trainer.train()``
(``pip install 'lottery-tickets[transformers]'``).

Only this module imports ``transformers``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ltp_torch.pruner import LotteryTicketPruner
from ltp_torch.training import MaskedTraining

try:
    import transformers
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "ltp_torch.hf needs Hugging Face transformers: pip install 'lottery-tickets[transformers]'"
    ) from error

__all__ = ["PrunerCallback"]


class PrunerCallback(transformers.TrainerCallback):
    """A ``transformers.TrainerCallback`` that trains with a pruner's masks.

    When training begins (``on_train_begin``) the pruned weights are zeroed and a
    :class:`ltp_torch.PrunerHook` goes on the optimizer the ``Trainer`` built (looking through
    Accelerate's wrapper), so every pruned weight is exactly zero after every real optimizer
    step: with ``gradient_accumulation_steps`` only when the step is taken, and a step that
    fp16 loss scaling skips changes nothing. The optimizer state (Adam moments) at pruned
    entries is zeroed then and whenever the pruner's masks change. ``on_train_end`` detaches.

    ``rewind_iteration=K`` captures the weights after the K-th optimizer step as the pruner's
    rewind point (once per callback instance, so one callback serves every pruning level).
    Resuming with ``trainer.train(resume_from_checkpoint=...)`` counts on from the checkpoint's
    ``global_step``; the pruner itself is not in the ``Trainer``'s checkpoints: save it next to
    them with ``torch.save(pruner.state_dict(), path)`` and restore it with
    ``pruner.load_state_dict(torch.load(path, weights_only=True))``. DeepSpeed and FSDP
    (sharded parameters) are not supported.

    Args:
        pruner: The :class:`ltp_torch.LotteryTicketPruner` built on the model given to the
            ``Trainer``.
        rewind_iteration: Optimizer steps after which to capture the rewind point; ``None``
            (default) captures nothing.

    Example:
        >>> import tempfile, torch, transformers
        >>> from ltp_torch import LotteryTicketPruner
        >>> config = transformers.BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1,
        ...     num_attention_heads=2, intermediate_size=32, max_position_embeddings=16)
        >>> model = transformers.BertForSequenceClassification(config)
        >>> pruner = LotteryTicketPruner(model)
        >>> pruner.calc_prune_mask(model, 0.5, "random")
        >>> data = [{"input_ids": torch.randint(0, 32, (8,)), "labels": i % 2} for i in range(16)]
        >>> args = transformers.TrainingArguments(tempfile.mkdtemp(), max_steps=3, report_to=[],
        ...     use_cpu=True, save_strategy="no", per_device_train_batch_size=4,
        ...     disable_tqdm=True)
        >>> trainer = transformers.Trainer(model=model, args=args, train_dataset=data,
        ...     callbacks=[PrunerCallback(pruner)])
        >>> _ = trainer.train()  # doctest: +ELLIPSIS
        {...'train_loss': ...}
        >>> int((model.classifier.weight == 0).sum())
        16
    """

    def __init__(self, pruner: LotteryTicketPruner, *, rewind_iteration: int | None = None) -> None:
        self._training = MaskedTraining(pruner, rewind_iteration=rewind_iteration)
        self.pruner = pruner

    @property
    def rewind_iteration(self) -> int | None:
        """Optimizer steps after which the rewind point is captured (``None``: never)."""
        return self._training.rewind_iteration

    @property
    def captured_at(self) -> int | None:
        """The optimizer step at which the rewind point was captured, or ``None``."""
        return self._training.captured_at

    def on_train_begin(
        self,
        args: transformers.TrainingArguments,
        state: transformers.TrainerState,
        control: transformers.TrainerControl,
        model: nn.Module | None = None,
        optimizer: Any = None,
        **kwargs: Any,
    ) -> None:
        """Zero the pruned weights and hook the optimizer the ``Trainer`` built."""
        if model is None or optimizer is None:
            raise ValueError(
                "The Trainer gave this callback no model or optimizer at on_train_begin. "
                f"Received: model={type(model).__name__}, optimizer={type(optimizer).__name__}"
            )
        self.pruner.apply_pruning(model)
        self._training.start(model, [optimizer], steps_done=int(state.global_step))

    def on_train_end(
        self,
        args: transformers.TrainingArguments,
        state: transformers.TrainerState,
        control: transformers.TrainerControl,
        **kwargs: Any,
    ) -> None:
        """Detach from the optimizer (the weights keep their zeros)."""
        self._training.stop()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(pruner={self.pruner!r}, "
            f"rewind_iteration={self.rewind_iteration!r})"
        )
