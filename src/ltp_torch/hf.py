"""Hugging Face ``transformers.Trainer``: keep a ticket's masks through ``trainer.train()``
(``pip install 'lottery-tickets[transformers]'``).

Only this module imports ``transformers``.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import torch
from torch import nn

from ltp_core.layout import load_masks_for
from ltp_torch.pruner import LotteryTicketPruner
from ltp_torch.training import MaskedTraining

try:
    import transformers
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "ltp_torch.hf needs Hugging Face transformers: pip install 'lottery-tickets[transformers]'"
    ) from error

__all__ = ["MASKS_FILE", "PrunerCallback"]

logger = logging.getLogger(__name__)

#: The file with the pruner's masks that :class:`PrunerCallback` writes into each checkpoint.
MASKS_FILE = "ltp_masks.npz"


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
    Each checkpoint the ``Trainer`` saves gets the pruner's masks (``ltp_masks.npz``, the
    portable mask file, bit-packed). Resuming with ``trainer.train(resume_from_checkpoint=...)``
    counts on from the checkpoint's ``global_step``, and is refused (``ValueError``, before any
    step) when the pruner keeps weights that the checkpoint's masks pruned: a fresh pruner in a
    restarted process would otherwise train them back, silently. Restore the masks with
    ``pruner.load_masks(os.path.join(checkpoint, "ltp_masks.npz"))`` first. Masks that prune
    more than the checkpoint's (a new level rewound to a checkpoint) are accepted. The rest of
    the pruner (initial, pretrained and rewind weights) is not in the checkpoints: save it next
    to them with ``torch.save(pruner.state_dict(), path)`` and restore it with
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
        if state.global_step > 0:
            self._check_resumed_masks(args, state, model)
        self.pruner.apply_pruning(model)
        self._training.start(model, [optimizer], steps_done=int(state.global_step))

    def _check_resumed_masks(
        self,
        args: transformers.TrainingArguments,
        state: transformers.TrainerState,
        model: nn.Module,
    ) -> None:
        """Refuse to resume from a checkpoint whose masks pruned weights this pruner keeps;
        without a mask file, warn when the resumed weights look pruned where it keeps them."""
        folders = [
            getattr(args, "resume_from_checkpoint", None),
            _checkpoint_folder(args, state),
        ]
        found = [f for f in folders if isinstance(f, str) and os.path.isfile(_masks_path(f))]
        if not found:  # a checkpoint elsewhere, or written without masks: judged by its zeros
            logger.info(
                "resuming at step %d: no %s in %s; checking the resumed weights instead",
                state.global_step,
                MASKS_FILE,
                " or ".join(str(f) for f in folders if f),
            )
            self._warn_if_zeros_where_kept(model, state)
            return
        path = _masks_path(found[0])
        logger.info("resuming at step %d: comparing the pruner with %s", state.global_step, path)
        pruner = self.pruner
        saved, _ = load_masks_for(path, pruner.names, pruner.shapes, pruner.kinds, "torch", None)
        revived = {
            name: int((~old & new).sum())
            for name, old, new in zip(pruner.names, saved, pruner.masks, strict=True)
            if bool((~old & new).any())
        }
        if revived:
            listed = ", ".join(f"'{n}' ({c})" for n, c in list(revived.items())[:4])
            raise ValueError(
                f"Resuming from {os.path.dirname(path)}, whose weights were trained with masks "
                f"that prune {sum(revived.values())} weights this pruner keeps ({listed}"
                f"{', ...' if len(revived) > 4 else ''}): training would bring them back. To "
                f"continue that run, restore its masks first: pruner.load_masks({path!r}). To "
                f"train those weights again on purpose, delete that file. Received: a pruner "
                f"at level {pruner.level} with {pruner.cumulative_pruning_rate:.2%} pruned"
            )

    def _warn_if_zeros_where_kept(self, model: nn.Module, state: transformers.TrainerState) -> None:
        """A checkpoint without masks (saved otherwise, or by an older version): trained
        weights are practically never exactly zero, so many exact zeros where this pruner keeps
        weights mean the checkpoint was trained with masks the pruner does not have."""
        kept = zeros = 0
        for parameter, mask in zip(self.pruner.parameters(model), self.pruner.masks, strict=True):
            keep = torch.from_numpy(mask).to(parameter.device)
            kept += int(keep.sum())
            zeros += int((parameter.detach()[keep] == 0).sum())
        if kept and zeros >= max(1, 0.05 * kept):
            message = (
                f"Resumed at step {state.global_step} from a checkpoint without {MASKS_FILE}, "
                f"whose weights are exactly zero at {zeros} of the {kept} entries this pruner "
                "keeps: it was probably trained with masks the pruner does not have, and "
                "training will bring those weights back. Restore the pruner that trained it "
                "(pruner.load_state_dict or pruner.load_masks) before resuming. Received: a "
                f"pruner at level {self.pruner.level} with "
                f"{self.pruner.cumulative_pruning_rate:.2%} pruned"
            )
            logger.warning(message)
            warnings.warn(message, UserWarning, stacklevel=2)
        else:
            logger.info(
                "Resumed at step %d without a %s in the checkpoint: the pruner's masks are "
                "used as they are",
                state.global_step,
                MASKS_FILE,
            )

    def on_save(
        self,
        args: transformers.TrainingArguments,
        state: transformers.TrainerState,
        control: transformers.TrainerControl,
        **kwargs: Any,
    ) -> None:
        """Write the pruner's masks into the checkpoint the ``Trainer`` has just saved (nothing
        when nothing is pruned)."""
        if not state.is_world_process_zero:
            return
        folder = _checkpoint_folder(args, state)
        if not os.path.isdir(folder):
            logger.warning(
                "No checkpoint folder %s to write the pruner's masks into; resuming from this "
                "checkpoint cannot check them. Save them yourself with pruner.save_masks(path)",
                folder,
            )
            return
        path = _masks_path(folder)
        if all(bool(mask.all()) for mask in self.pruner.masks):
            # Nothing pruned (a dense run): no file, and none left from a run saved before
            # into the same folder.
            if os.path.exists(path):
                os.remove(path)
            return
        self.pruner.save_masks(path)

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


def _checkpoint_folder(
    args: transformers.TrainingArguments, state: transformers.TrainerState
) -> str:
    """The folder the ``Trainer`` saves the checkpoint of ``state.global_step`` in."""
    prefix = transformers.trainer_utils.PREFIX_CHECKPOINT_DIR
    return os.path.join(str(args.output_dir), f"{prefix}-{state.global_step}")


def _masks_path(folder: str) -> str:
    return os.path.join(folder, MASKS_FILE)
