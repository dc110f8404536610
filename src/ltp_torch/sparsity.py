"""Sparsity numbers for metric loggers (TensorBoard's ``SummaryWriter``, Lightning, W&B, ...).

The numbers come from the pruner's masks (what is held at zero during training), so logging them
costs no device synchronisation.
"""

from __future__ import annotations

import numbers
from typing import Protocol

from ltp_core.report import sparsity_report
from ltp_torch.pruner import LotteryTicketPruner

__all__ = ["ScalarWriter", "log_sparsity", "sparsity_scalars"]


class ScalarWriter(Protocol):
    """Anything with ``add_scalar(tag, value, global_step)``, such as
    ``torch.utils.tensorboard.SummaryWriter``."""

    def add_scalar(self, tag: str, scalar_value: float, global_step: int | None = None) -> object:
        """Record one scalar."""


def _check_pruner(pruner: object) -> LotteryTicketPruner:
    if not isinstance(pruner, LotteryTicketPruner):
        raise TypeError(
            "Expected an ltp_torch.LotteryTicketPruner. "
            f"Received: pruner={pruner!r} of type {type(pruner).__name__}"
        )
    return pruner


def sparsity_scalars(pruner: LotteryTicketPruner, prefix: str = "sparsity") -> dict[str, float]:
    """The pruned fraction overall and per prunable parameter, as ``tag -> float``.

    Args:
        pruner: The :class:`ltp_torch.LotteryTicketPruner` whose masks are measured.
        prefix: Tag of the overall value; each parameter is logged as ``prefix/name``.

    Returns:
        ``{"sparsity": overall, "sparsity/0.weight": ..., ...}`` (fractions in ``[0, 1]``).

    Raises:
        TypeError: ``pruner`` is not an ``ltp_torch.LotteryTicketPruner``.
        ValueError: ``prefix`` is not a non-empty string.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> pruner = LotteryTicketPruner(net)
        >>> pruner.calc_prune_mask(net, 0.5, "smallest_weights")
        >>> sparsity_scalars(pruner)
        {'sparsity': 0.5, 'sparsity/0.weight': 0.5, 'sparsity/2.weight': 0.5}
    """
    pruner = _check_pruner(pruner)
    return sparsity_report(pruner.masks, pruner.names).scalars(prefix)


def log_sparsity(
    writer: ScalarWriter,
    pruner: LotteryTicketPruner,
    step: int | None = None,
    *,
    prefix: str = "sparsity",
) -> dict[str, float]:
    """Write :func:`sparsity_scalars` to ``writer`` with ``writer.add_scalar(tag, value, step)``.

    Args:
        writer: A ``torch.utils.tensorboard.SummaryWriter`` or anything with the same
            ``add_scalar`` method.
        pruner: The pruner whose masks are measured.
        step: The global step to record (``None`` lets the writer choose).
        prefix: Tag of the overall value; each parameter is logged as ``prefix/name``.

    Returns:
        The scalars written.

    Raises:
        TypeError: ``writer`` has no ``add_scalar`` method, ``pruner`` is not an
            ``ltp_torch.LotteryTicketPruner``, or ``step`` is not ``None`` or an integer.

    Example:
        >>> from torch import nn
        >>> class Printer:
        ...     def add_scalar(self, tag, value, global_step=None):
        ...         print(tag, value, global_step)
        >>> net = nn.Linear(4, 2)
        >>> pruner = LotteryTicketPruner(net)
        >>> pruner.calc_prune_mask(net, 0.25, "smallest_weights")
        >>> _ = log_sparsity(Printer(), pruner, step=10)
        sparsity 0.25 10
        sparsity/weight 0.25 10
    """
    if not callable(getattr(writer, "add_scalar", None)):
        raise TypeError(
            "`writer` must have an add_scalar(tag, value, global_step) method, like "
            "torch.utils.tensorboard.SummaryWriter. "
            f"Received: writer of type {type(writer).__name__}"
        )
    if step is not None and (isinstance(step, bool) or not isinstance(step, numbers.Integral)):
        raise TypeError(
            f"`step` must be None or an integer (the global step). Received: step={step!r}"
        )
    scalars = sparsity_scalars(pruner, prefix)
    for tag, value in scalars.items():
        writer.add_scalar(tag, value, step)
    return scalars
