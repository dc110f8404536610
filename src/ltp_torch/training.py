"""Masks and a rewind point kept across the optimizers a trainer builds (Lightning, HF ``Trainer``).

Trainers create their optimizers inside ``fit``/``train``; their callbacks get them only once
training starts. :class:`MaskedTraining` is what both trainer callbacks run at that moment: a
:class:`ltp_torch.PrunerHook` on every optimizer that updates a pruned parameter, and a step
counter that captures the rewind point after the ``rewind_iteration``-th optimizer step.
Steps are counted by optimizer step post-hooks, so they are real updates: a micro-batch of
gradient accumulation is not a step, and a step an AMP ``GradScaler`` skips is not either. With
several optimizers every one's step counts (Lightning's ``trainer.global_step`` convention).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ltp_torch.hook import PrunerHook, check_optimizer
from ltp_torch.pruner import LotteryTicketPruner

__all__ = ["MaskedTraining", "innermost_optimizer"]

logger = logging.getLogger(__name__)


def innermost_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """Return the ``torch.optim.Optimizer`` that really steps, looking through wrappers that
    keep it as ``.optimizer`` (Accelerate's ``AcceleratedOptimizer``, Lightning's
    ``LightningOptimizer``).

    Raises:
        TypeError: Nothing in the chain is a ``torch.optim.Optimizer``.

    Example:
        >>> opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
        >>> innermost_optimizer(opt) is opt
        True
    """
    current = optimizer
    for _ in range(8):
        inner = getattr(current, "optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer) or inner is current:
            break
        current = inner
    return check_optimizer(current)


def _check_rewind_iteration(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            "`rewind_iteration` must be None or an integer >= 0 (optimizer steps). "
            f"Received: rewind_iteration={value!r}"
        )
    return value


class MaskedTraining:
    """Keep a pruner's masks on a module through whatever optimizers a trainer built.

    One instance serves several training runs: :meth:`start` at the beginning of each,
    :meth:`stop` at the end. The rewind point is captured once per instance, in the first run
    that reaches ``rewind_iteration`` optimizer steps, so the same object can be passed to every
    pruning level.

    Args:
        pruner: The :class:`ltp_torch.LotteryTicketPruner` holding the masks.
        rewind_iteration: Capture the weights as the pruner's rewind point after this many
            optimizer steps (``0``: when training starts); ``None`` captures nothing.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
        >>> pruner = LotteryTicketPruner(net)
        >>> pruner.calc_prune_mask(net, 0.5, "smallest_weights")
        >>> opt = torch.optim.Adam(net.parameters(), lr=0.1)
        >>> training = MaskedTraining(pruner, rewind_iteration=2)
        >>> training.start(net, [opt])
        >>> for _ in range(3):
        ...     opt.zero_grad(); net(torch.randn(8, 4)).pow(2).mean().backward(); opt.step()
        >>> training.stop()
        >>> int((net[0].weight == 0).sum()), training.captured_at
        (8, 2)
    """

    def __init__(self, pruner: LotteryTicketPruner, *, rewind_iteration: int | None = None) -> None:
        if not isinstance(pruner, LotteryTicketPruner):
            raise TypeError(
                "Expected an ltp_torch.LotteryTicketPruner. "
                f"Received: pruner={pruner!r} of type {type(pruner).__name__}"
            )
        self.pruner = pruner
        self.rewind_iteration = _check_rewind_iteration(rewind_iteration)
        self.captured_at: int | None = None
        self.steps = 0
        self._module: nn.Module | None = None
        self._hooks: list[PrunerHook] = []
        self._counters: list[Any] = []

    @property
    def active(self) -> bool:
        """Whether a training run is being watched (between :meth:`start` and :meth:`stop`)."""
        return bool(self._hooks)

    def _wants_capture(self) -> bool:
        return self.rewind_iteration is not None and self.captured_at is None

    def start(self, module: nn.Module, optimizers: Iterable[Any], *, steps_done: int = 0) -> None:
        """Mask ``module`` now and after every step of each optimizer that updates a pruned
        parameter; zero those optimizers' state at pruned entries.

        Args:
            module: The module the pruner was built on (or a wrapper of it).
            optimizers: The trainer's optimizers (wrappers are looked through).
            steps_done: Optimizer steps already taken in this run (a resumed run).

        Raises:
            ValueError: The module does not have the pruner's parameters, or no optimizer
                updates any of them.
        """
        self.stop(warn=False)
        parameters = self.pruner.parameters(module)
        wanted = {id(p) for p in parameters}
        chosen = []
        for optimizer in optimizers:
            inner = innermost_optimizer(optimizer)
            ids = {id(p) for group in inner.param_groups for p in group["params"]}
            if ids & wanted:
                chosen.append(inner)
        if not chosen:
            raise ValueError(
                "No optimizer of this training run updates the pruned parameters; the masks "
                "cannot be kept. Build the optimizer on the model the pruner was made for. "
                f"Received: pruned parameters {self.pruner.names}"
            )
        self._module = module
        # Each hook masks every pruned weight after its optimizer's steps; the gradients need
        # masking once (the first hook's tensor hooks cover every pruned parameter).
        self._hooks = [
            PrunerHook(self.pruner, module, optimizer, mask_gradients=index == 0)
            for index, optimizer in enumerate(chosen)
        ]
        self.steps = int(steps_done)
        if self._wants_capture():
            target = int(self.rewind_iteration or 0)
            if self.steps < target:
                self._counters = [
                    optimizer.register_step_post_hook(self._after_step) for optimizer in chosen
                ]
            elif self.steps == target:
                self._capture()
            else:
                self._resumed_past_target(target)

    def _resumed_past_target(self, target: int) -> None:
        """A run resumed after optimizer step ``target``: the weights of that step are gone.

        Capturing now would make the resume step's weights the rewind point (and overwrite a
        rewind point loaded with the pruner's saved state).
        """
        if self.pruner._rewind_state is not None:
            self.captured_at = target
            logger.info(
                "Resumed at optimizer step %d, after rewind_iteration=%d: keeping the pruner's "
                "rewind point (from its saved state)",
                self.steps,
                target,
            )
            return
        logger.warning(
            "Resumed at optimizer step %d, after rewind_iteration=%d, with a pruner that has no "
            "rewind point: the weights after step %d are gone, so none is captured (rewind() "
            "would use the initial weights). Load the pruner state saved with the checkpoint "
            "(pruner.load_state_dict) before resuming, or rerun the dense training.",
            self.steps,
            target,
            target,
        )

    def _capture(self) -> None:
        if self._module is None:  # stopped: nothing to capture from
            return
        self.pruner.set_rewind_weights(self._module)
        self.captured_at = self.steps
        logger.info("Captured the rewind point after optimizer step %d", self.steps)
        self._remove_counters()

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        del optimizer, args, kwargs
        self.steps += 1
        if self._wants_capture() and self.steps >= int(self.rewind_iteration or 0):
            self._capture()

    def _remove_counters(self) -> None:
        for handle in self._counters:
            handle.remove()
        self._counters = []

    def stop(self, *, warn: bool = True) -> None:
        """Detach from the optimizers (masks stay applied); calling it again does nothing.

        Args:
            warn: Warn when the rewind point was wanted but training stopped before it.
        """
        if (
            warn
            and self.active
            and self._wants_capture()
            and self.steps < int(self.rewind_iteration or 0)  # else start() said why
        ):
            logger.warning(
                "The rewind point was not captured: training stopped after %d optimizer steps, "
                "before rewind_iteration=%s. Train longer or lower rewind_iteration.",
                self.steps,
                self.rewind_iteration,
            )
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self._remove_counters()
        self._module = None

    def state_dict(self) -> dict[str, Any]:
        """Progress as plain values (steps, capture); the masks and rewind weights are in the
        pruner's own state."""
        return {
            "rewind_iteration": self.rewind_iteration,
            "steps": self.steps,
            "captured_at": self.captured_at,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (saved with the same ``rewind_iteration``).

        Raises:
            ValueError: ``state`` is malformed or was saved for another ``rewind_iteration``.
        """
        valid = (
            isinstance(state, Mapping)
            and state.get("rewind_iteration") == self.rewind_iteration
            and isinstance(state.get("steps"), int)
            and (state.get("captured_at") is None or isinstance(state.get("captured_at"), int))
        )
        if not valid:
            raise ValueError(
                "Expected a state saved with "
                f"rewind_iteration={self.rewind_iteration!r}. Received: state={state!r}"
            )
        self.steps = int(state["steps"])
        self.captured_at = state["captured_at"]
