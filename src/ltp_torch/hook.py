"""``PrunerHook``: keeps pruned weights at exactly zero after every ``optimizer.step()``.

The hook is an optimizer step post-hook, so it runs once per real update: with gradient
accumulation only when the step is taken, and not at all when an AMP ``GradScaler`` skips a step
(the weights did not change then). It zeroes the pruned entries of each parameter with a bit mask
on the parameter's device (exact ``+0.0`` even where the step produced ``inf`` or ``NaN``). When
the pruner's masks change, the hook also zeroes the optimizer state (momentum, Adam moments, ...)
at the newly pruned entries.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

import torch
from torch import nn

from ltp_torch.masking import MaskTensors, apply_masks_, zero_optimizer_state_, zero_pruned_
from ltp_torch.pruner import LotteryTicketPruner

__all__ = ["PrunerHook"]

logger = logging.getLogger(__name__)


def check_optimizer(optimizer: object) -> torch.optim.Optimizer:
    """Return ``optimizer`` if it is a ``torch.optim.Optimizer``, else raise ``TypeError``."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            "Expected a torch.optim.Optimizer. "
            f"Received: optimizer={optimizer!r} of type {type(optimizer).__name__}"
        )
    return optimizer


class PrunerHook:
    """Enforce a pruner's masks on a module after every step of an optimizer.

    Creating the hook zeroes the pruned weights and the matching optimizer state at once. Later
    mask changes (another :meth:`LotteryTicketPruner.calc_prune_mask`, ``set_masks``,
    ``reset_masks`` or ``load_state_dict``) are picked up after the next step, or at once with
    :meth:`refresh`.

    Args:
        pruner: The :class:`ltp_torch.LotteryTicketPruner` holding the masks.
        module: The model being trained (the same one, or a DDP/compiled wrapper of it).
        optimizer: The optimizer that updates the module's parameters.
        zero_optimizer_state: Whether to zero per-parameter optimizer state at pruned entries
            when the masks change (default ``True``).

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
        >>> pruner = LotteryTicketPruner(net)
        >>> pruner.calc_prune_mask(net, 0.5, "smallest_weights")
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        >>> with PrunerHook(pruner, net, opt):
        ...     for _ in range(3):
        ...         opt.zero_grad()
        ...         net(torch.randn(8, 4)).pow(2).mean().backward()
        ...         opt.step()
        >>> int((net[0].weight == 0).sum())
        8
    """

    def __init__(
        self,
        pruner: LotteryTicketPruner,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        zero_optimizer_state: bool = True,
    ) -> None:
        if not isinstance(pruner, LotteryTicketPruner):
            raise TypeError(
                "Expected an ltp_torch.LotteryTicketPruner. "
                f"Received: pruner={pruner!r} of type {type(pruner).__name__}"
            )
        self._optimizer = check_optimizer(optimizer)
        self._pruner = pruner
        self._parameters = pruner.parameters(module)
        self._zero_state = bool(zero_optimizer_state)
        self._warn_if_not_optimized()
        self._version = -1
        self._active: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._params_list: list[torch.Tensor] = []
        self._masks_list: list[torch.Tensor] = []
        self._refresh()
        self._handle: Any = optimizer.register_step_post_hook(self._after_step)

    def _warn_if_not_optimized(self) -> None:
        optimized = {id(p) for group in self._optimizer.param_groups for p in group["params"]}
        missing = [
            name
            for name, parameter in zip(self._pruner.names, self._parameters, strict=True)
            if id(parameter) not in optimized
        ]
        if len(missing) == len(self._parameters):
            raise ValueError(
                "None of the pruned parameters is updated by the optimizer; pass the optimizer "
                "built on this module's parameters. "
                f"Received: optimizer with {len(optimized)} parameters, "
                f"none of {self._pruner.names}"
            )
        if missing:
            logger.info("Pruned parameters not in the optimizer (masked anyway): %s", missing)

    def _refresh(self) -> None:
        """Fetch the current masks, zero weights and optimizer state at pruned entries."""
        masks: MaskTensors = self._pruner.mask_tensors(self._parameters)
        pairs = [(p, m) for p, m in zip(self._parameters, masks, strict=True) if m is not None]
        self._params_list = [p for p, _ in pairs]
        self._masks_list = [m for _, m in pairs]
        apply_masks_(self._params_list, self._masks_list)
        if self._zero_state:
            zero_optimizer_state_(self._optimizer, self._params_list, self._masks_list)
        self._version = self._pruner.mask_version

    @torch.no_grad()
    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        del optimizer, args, kwargs
        if self._version != self._pruner.mask_version:
            self._refresh()
            return
        for parameter, mask in zip(self._params_list, self._masks_list, strict=True):
            zero_pruned_(parameter, mask)

    def refresh(self) -> None:
        """Apply the pruner's current masks now instead of after the next step.

        Useful right after :meth:`LotteryTicketPruner.calc_prune_mask` when the module is
        evaluated or saved before training continues. Zeroes the optimizer state at pruned
        entries too (unless disabled).
        """
        self._refresh()

    @property
    def active(self) -> bool:
        """Whether the hook is still registered on the optimizer."""
        return self._handle is not None

    def remove(self) -> None:
        """Detach from the optimizer; calling it again does nothing."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __enter__(self) -> PrunerHook:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return f"{type(self).__name__}({len(self._parameters)} parameters, {state})"
