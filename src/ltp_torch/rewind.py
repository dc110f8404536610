"""``RewindPointHook``: capture the weights after optimizer step ``k`` for late rewinding.

Frankle et al. (2019, "Stabilizing the lottery ticket hypothesis") rewind to the weights of an early
iteration rather than to the initialization. This hook counts the optimizer's real steps (a step
skipped by an AMP ``GradScaler`` is not counted) and, right after step ``k``, calls
:meth:`LotteryTicketPruner.set_rewind_weights`; then it detaches itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import torch
from torch import nn

from ltp_torch.hook import check_optimizer
from ltp_torch.pruner import LotteryTicketPruner

__all__ = ["RewindPointHook"]

logger = logging.getLogger(__name__)


class RewindPointHook:
    """Record the module's weights as the pruner's rewind point after ``step`` optimizer steps.

    Args:
        pruner: The :class:`ltp_torch.LotteryTicketPruner` to update.
        module: The model being trained.
        optimizer: The optimizer whose steps are counted.
        step: Number of optimizer steps after which the weights are captured; ``0`` captures the
            current weights at once.

    Example:
        >>> from torch import nn
        >>> net = nn.Linear(3, 1)
        >>> pruner = LotteryTicketPruner(net)
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> capture = RewindPointHook(pruner, net, opt, step=2)
        >>> for _ in range(5):
        ...     opt.zero_grad(); net(torch.ones(1, 3)).sum().backward(); opt.step()
        >>> capture.captured, capture.steps_seen
        (True, 2)
    """

    def __init__(
        self,
        pruner: LotteryTicketPruner,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        step: int,
    ) -> None:
        if not isinstance(pruner, LotteryTicketPruner):
            raise TypeError(
                "Expected an ltp_torch.LotteryTicketPruner. "
                f"Received: pruner={pruner!r} of type {type(pruner).__name__}"
            )
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"`step` must be an integer >= 0. Received: step={step!r}")
        check_optimizer(optimizer)
        pruner.parameters(module)  # fail now, not at step k, if the module does not match
        self._pruner = pruner
        self._module = module
        self._target = step
        self._steps = 0
        self._captured = False
        self._handle: Any = None
        if step == 0:
            self._capture()
        else:
            self._handle = optimizer.register_step_post_hook(self._after_step)

    @property
    def captured(self) -> bool:
        """Whether the rewind point has been recorded."""
        return self._captured

    @property
    def steps_seen(self) -> int:
        """Optimizer steps counted so far (stops counting once captured)."""
        return self._steps

    @property
    def active(self) -> bool:
        """Whether the hook is still registered on the optimizer (not yet captured or removed)."""
        return self._handle is not None

    def _capture(self) -> None:
        self._pruner.set_rewind_weights(self._module)
        self._captured = True
        logger.info("Captured rewind weights after optimizer step %d", self._steps)
        self.remove()

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        del optimizer, args, kwargs
        self._steps += 1
        if self._steps >= self._target:
            self._capture()

    def state_dict(self) -> dict[str, Any]:
        """The hook's progress (plain Python values), for checkpoints.

        The captured weights themselves are part of the pruner's state.
        """
        return {"step": self._target, "steps_seen": self._steps, "captured": self._captured}

    def check_state_dict(self, state: Any) -> None:
        """Check that ``state`` is a :meth:`state_dict` saved with this hook's ``step``.

        Raises:
            ValueError: ``state`` is not a hook state or was saved for another ``step``.
        """
        steps_seen = state.get("steps_seen") if isinstance(state, Mapping) else None
        valid = (
            isinstance(state, Mapping)
            and isinstance(steps_seen, int)
            and not isinstance(steps_seen, bool)
            and steps_seen >= 0
            and isinstance(state.get("captured"), bool)
            and state.get("step") == self._target
        )
        if not valid:
            raise ValueError(
                f"Expected a RewindPointHook.state_dict() saved with step={self._target}; "
                f"create the hook with the step it was saved with. Received: state={state!r}"
            )

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict`: count on from the saved step, or stop if the
        rewind point was already captured.

        Raises:
            ValueError: ``state`` is not a hook state or was saved for another ``step``.
        """
        self.check_state_dict(state)
        self._steps = int(state["steps_seen"])
        self._captured = bool(state["captured"])
        if self._captured:
            self.remove()

    def remove(self) -> None:
        """Stop counting (no capture happens afterwards); calling it again does nothing."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __enter__(self) -> RewindPointHook:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.remove()
