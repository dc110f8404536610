"""``find_ticket``: iterative magnitude pruning of the user's own model and training loop.

The IMP procedure (levels, pruning, rewinding, the controls, resuming, results and plots) is the
framework-free driver of :mod:`ltp_core.experiment.driver`; this module is its PyTorch backend
for user code. While the user's ``train(model)`` runs, torch's global optimizer step hooks find
every optimizer that steps the model's parameters and attach a :class:`ltp_torch.PrunerHook` to
it, so pruned weights are exactly zero after every ``optimizer.step()`` and the optimizer state at
pruned entries is zeroed, without the user passing the optimizer. The pruned entries' gradients
are masked from the first ``backward()`` on (before the first step finds the optimizer), so
gradient clipping by norm sees the ticket's gradient at every step.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

from ltp_core.experiment.backend import EvalPoint, ProgressFn, TrainOutcome
from ltp_core.experiment.config import CONTROLS
from ltp_core.experiment.driver import RunSpec
from ltp_core.experiment.results import RunRecord
from ltp_core.experiment.search import (
    check_search_arguments,
    parse_metrics,
    resolve_layer_rates,
    run_search,
)
from ltp_core.summary import low_coverage_warned_once
from ltp_torch.arrays import to_numpy
from ltp_torch.experiment import describe_model
from ltp_torch.hook import PrunerHook
from ltp_torch.masking import masked_gradient
from ltp_torch.parameters import (
    PrunableSpec,
    find_prunable_parameters,
    parameter_kinds,
    unwrap_module,
)
from ltp_torch.pruner import LotteryTicketPruner

__all__ = ["find_ticket"]

logger = logging.getLogger(__name__)

ModelOrFactory = nn.Module | Callable[[], nn.Module]
Metrics = float | Mapping[str, float]


def _devices() -> list[int]:
    """CUDA devices whose random state is forked with the CPU's (only if CUDA is in use)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return list(range(torch.cuda.device_count()))
    return []


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's generators for the block; the caller's random state is restored after."""
    with torch.random.fork_rng(devices=_devices()):
        torch.manual_seed(int(seed))
        yield


def _not_reinitializable(module: nn.Module) -> list[str]:
    """Names of submodules holding parameters directly but without ``reset_parameters()``."""
    return [
        name or type(module).__name__
        for name, sub in module.named_modules()
        if any(True for _ in sub.parameters(recurse=False))
        and not callable(getattr(sub, "reset_parameters", None))
    ]


class _UserBackend:
    """The :class:`ltp_core.experiment.driver.RunBackend` of the user's model and loop."""

    name = "torch"

    def __init__(
        self,
        model: ModelOrFactory,
        train: Callable[[nn.Module], Any],
        evaluate: Callable[[nn.Module], Metrics],
        prunable: PrunableSpec,
    ) -> None:
        self._module = model if isinstance(model, nn.Module) else None
        self._factory = None if isinstance(model, nn.Module) else model
        self._train = train
        self._evaluate = evaluate
        self._prunable = prunable
        self._first: tuple[int, nn.Module] | None = None
        self._expected: list[tuple[str, tuple[int, ...]]] | None = None
        self._built: weakref.WeakSet[nn.Module] = weakref.WeakSet()

    # -- models -----------------------------------------------------------------------------

    def _call_factory(self, seed: int) -> nn.Module:
        if self._factory is None:  # pragma: no cover - checked by the caller
            raise RuntimeError("no factory")
        with _seeded(seed):
            model = self._factory()
        if not isinstance(model, nn.Module):
            raise TypeError(
                "The `model` factory must return a torch.nn.Module. "
                f"Received: {type(model).__name__} from model={self._factory!r}"
            )
        if model in self._built:
            raise ValueError(
                "The `model` factory must build a new model on every call (each seed and each "
                "random_reinit control needs its own fresh initialization), but it returned a "
                "model it had returned before. Construct the module inside the factory, e.g. "
                f"model=lambda: Net(). Received: model={self._factory!r}"
            )
        self._built.add(model)
        return model

    def _architecture(self, model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
        return [(n, tuple(p.shape)) for n, p in find_prunable_parameters(model, self._prunable)]

    def _check_architecture(self, model: nn.Module, seed: int) -> None:
        """A factory must build the same prunable weights every call (masks are shared)."""
        found = self._architecture(model)
        if self._expected is None:
            self._expected = found
            return
        if found != self._expected:
            differ = [
                f"{a[0]} {a[1]} vs {b[0]} {b[1]}"
                for a, b in zip(self._expected, found, strict=False)
                if a != b
            ] or [f"{len(self._expected)} vs {len(found)} prunable tensors"]
            raise ValueError(
                "The `model` factory must build the same architecture on every call (masks "
                "of one level are applied to the controls and to every seed); the model "
                f"built for seed {seed} differs from the first one: {differ[:3]}. Make the "
                "factory depend on nothing but torch's random state. "
                f"Received: model={self._factory!r}"
            )

    def build(self, seed: int, reinit: bool = False) -> nn.Module:
        """The model of ``seed`` (factory called under ``torch.manual_seed(seed)``)."""
        if self._first is not None and self._first[0] == seed and not reinit:
            model = self._first[1]
            self._first = None  # handed out once: later builds start from scratch
            return model
        if self._factory is not None:
            model = self._call_factory(seed)
            self._check_architecture(model, seed)
            return model
        if self._module is None:  # pragma: no cover
            raise RuntimeError("no model")
        if not reinit:
            return self._module
        fresh = copy.deepcopy(self._module)
        with _seeded(seed), torch.no_grad():
            for sub in fresh.modules():
                reset = getattr(sub, "reset_parameters", None)
                if callable(reset):
                    reset()
        return fresh

    def first_model(self, seed: int) -> nn.Module:
        """Build the first seed's model once, for validation; :meth:`build` hands it out."""
        model = self.build(seed)
        self._check_architecture(model, seed)
        self._first = (seed, model)
        return model

    def layer_names(self, model: nn.Module) -> list[str]:
        """Qualified names of the prunable parameters."""
        return [name for name, _ in find_prunable_parameters(model, self._prunable)]

    def layer_kinds(self, model: nn.Module) -> list[str]:
        """``"dense"``, ``"conv"``, ... per prunable parameter (see ``parameter_kinds``)."""
        return parameter_kinds(model, self.layer_names(model))

    def get_prunable(self, model: nn.Module) -> list[np.ndarray]:
        """Copies of the prunable weights."""
        return [to_numpy(p) for _, p in find_prunable_parameters(model, self._prunable)]

    def snapshot(self, model: nn.Module) -> list[np.ndarray]:
        """Copies of every parameter and buffer, in ``state_dict`` order."""
        return [to_numpy(t) for t in unwrap_module(model).state_dict().values()]

    @torch.no_grad()
    def restore(self, model: nn.Module, snapshot: Sequence[np.ndarray]) -> None:
        """Write a :meth:`snapshot` back in place."""
        targets = list(unwrap_module(model).state_dict().values())
        if len(targets) != len(snapshot):
            raise ValueError(
                f"The model has {len(targets)} tensors, the saved state {len(snapshot)}; was "
                f"the model changed since the experiment started? Received: {len(snapshot)} arrays"
            )
        for target, value in zip(targets, snapshot, strict=True):
            source = torch.from_numpy(np.array(value, copy=True)).reshape(target.shape)
            target.copy_(source.to(device=target.device, dtype=target.dtype))

    def versions(self) -> dict[str, str]:
        """Versions of torch and NumPy."""
        return {"torch": torch.__version__, "numpy": np.__version__}

    # -- training -----------------------------------------------------------------------------

    def train(
        self, model: nn.Module, run: RunSpec, progress: ProgressFn | None = None
    ) -> TrainOutcome:
        """Run the user's ``train(model)`` with the masks held, then ``evaluate(model)``."""
        pruner: LotteryTicketPruner | None = None
        gradient_hooks: list[Any] = []
        if run.masks is not None:
            pruner = LotteryTicketPruner(model, prunable=self._prunable)
            pruner.set_masks(list(run.masks))
            pruner.apply_pruning(model)
            # Masked gradients from the first backward() on: the PrunerHooks below only start
            # at the first step, after the first gradients (and any clipping of them).
            prunable = pruner.parameters(model)
            gradient_hooks = [
                parameter.register_hook(  # type: ignore[no-untyped-call]
                    lambda grad, mask=mask: masked_gradient(grad, mask)
                )
                for parameter, mask in zip(prunable, pruner.mask_tensors(prunable), strict=True)
                if mask is not None and parameter.requires_grad
            ]
        model_ids = {id(p) for p in model.parameters()}
        prunable_ids = {id(p) for p in pruner.parameters(model)} if pruner is not None else set()
        seen: weakref.WeakKeyDictionary[torch.optim.Optimizer, bool] = weakref.WeakKeyDictionary()
        hooks: list[PrunerHook] = []
        # `steps` counts every optimizer step on the model; `lead` the steps of the first
        # optimizer that stepped it (the iterations `rewind_iteration` counts). The rewind
        # point is taken after the lead's K-th step and refreshed after the other optimizers'
        # steps until the lead steps again, so it holds every optimizer's K-th iteration.
        counter = {"steps": 0, "lead": 0, "foreign": 0}
        lead: list[torch.optim.Optimizer] = []
        capturing = False
        captured: list[np.ndarray] | None = None

        def before_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            nonlocal capturing
            del args, kwargs
            if lead and optimizer is lead[0]:
                capturing = False
            if optimizer in seen:
                return
            ids = {id(p) for group in optimizer.param_groups for p in group["params"]}
            seen[optimizer] = bool(ids & model_ids)
            if pruner is not None and ids & prunable_ids:
                # Zeroes the optimizer state at pruned entries now and the weights after steps.
                hooks.append(PrunerHook(pruner, model, optimizer, mask_gradients=False))

        def after_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            nonlocal captured, capturing
            del args, kwargs
            if not seen.get(optimizer, False):
                counter["foreign"] += 1
                return
            counter["steps"] += 1
            if not lead:
                lead.append(optimizer)
            if optimizer is lead[0]:
                counter["lead"] += 1
                if counter["lead"] == run.capture_at:
                    captured, capturing = self.snapshot(model), True
            elif capturing:
                captured = self.snapshot(model)

        handles = [
            register_optimizer_step_pre_hook(before_step),
            register_optimizer_step_post_hook(after_step),
        ]
        # The dense run ranks what train() learned: one copy of the prunable weights tells
        # a train() that changed nothing (nothing to rank: the "ticket" would be arbitrary).
        before = self.get_prunable(model) if run.masks is None else None
        start = time.perf_counter()
        try:
            with _seeded(run.train_seed):
                self._train(model)
        finally:
            for handle in handles:
                handle.remove()
            for hook in hooks:
                hook.remove()
            for handle in gradient_hooks:
                handle.remove()
            lead.clear()
        seconds = time.perf_counter() - start
        steps = counter["steps"]
        if steps == 0 and counter["foreign"]:
            raise ValueError(
                f"{run.label}: train(model) stepped an optimizer {counter['foreign']} times, "
                "but none of its steps updated the model it was given (an optimizer created "
                "before find_ticket, or on another model?). The controls and every level train "
                "their own model object: create the optimizer inside train from "
                "model.parameters(). Received: train="
                f"{getattr(self._train, '__qualname__', repr(self._train))}"
            )
        if steps == 0 and before is not None:
            after = self.get_prunable(model)
            if all(np.array_equal(a, b) for a, b in zip(before, after, strict=True)):
                raise ValueError(
                    f"{run.label}: train(model) changed no prunable weight of the model (no "
                    "optimizer step, no other update), so there is nothing to rank and no "
                    "ticket to find. train must train the model it is given, e.g. "
                    "torch.optim.SGD(model.parameters(), ...) and optimizer.step(). "
                    f"Received: train={getattr(self._train, '__qualname__', repr(self._train))}"
                )
        if steps == 0:
            logger.warning(
                "%s: train(model) made no torch.optim optimizer step on the model's parameters, "
                "so pruned weights were only zeroed before and after it. Step an optimizer "
                "built on the `model` argument of train.",
                run.label,
            )
        if pruner is not None:
            self._check_zeros(model, pruner, run)
        if run.capture_at is not None and captured is None:
            several = " (counted in steps of the first optimizer)" if len(seen) > 1 else ""
            raise ValueError(
                f"`rewind_iteration` asks for the weights after optimizer step {run.capture_at} "
                f"of the dense run, but train(model) made {counter['lead']} steps{several}. Use "
                f"a smaller rewind_iteration. Received: rewind_iteration={run.capture_at}"
            )
        eval_start = time.perf_counter()
        metrics, headline = parse_metrics(self._evaluate(model))
        eval_seconds = time.perf_counter() - eval_start
        if progress is not None:
            progress(1, 1, {headline: metrics[headline]})
        return TrainOutcome(
            [EvalPoint(steps, math.nan, math.nan, metrics[headline])],
            seconds,
            captured,
            extra={"optimizer_steps": steps, "eval_seconds": eval_seconds},
            metrics=metrics,
            headline=headline,
        )

    @staticmethod
    @torch.no_grad()
    def _check_zeros(model: nn.Module, pruner: LotteryTicketPruner, run: RunSpec) -> None:
        """Warn if pruned weights moved outside optimizer steps; zero them either way."""
        parameters = pruner.parameters(model)
        revived = [
            name
            for name, parameter, mask in zip(
                pruner.names, parameters, pruner.mask_tensors(parameters), strict=True
            )
            if mask is not None and bool(parameter[mask.eq(0)].ne(0).any())
        ]
        if revived:
            logger.warning(
                "%s: pruned weights of %s were changed outside an optimizer step (written "
                "directly by train?); set back to zero. Update weights with a torch.optim "
                "optimizer so they stay pruned during training.",
                run.label,
                revived,
            )
        pruner.apply_pruning(model)


def find_ticket(
    model: ModelOrFactory,
    train: Callable[[nn.Module], Any],
    evaluate: Callable[[nn.Module], Metrics],
    *,
    levels: int,
    rate: float = 0.2,
    strategy: str = "large_final",
    scope: str = "layer",
    layer_rates: Mapping[str | int, float] | None = None,
    rewind_iteration: int = 0,
    controls: Sequence[str] = CONTROLS,
    seeds: int = 1,
    prunable: PrunableSpec = None,
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> list[RunRecord]:
    """Find a winning ticket in your own model with your own training loop (IMP with controls).

    Level 0 trains the dense model with ``train(model)``. Each later level prunes ``rate`` of the
    remaining weights by ``strategy`` (ranking the previous level's trained ticket), rewinds the
    survivors to their initial values (or to their values after ``rewind_iteration`` optimizer
    steps of the dense run) and trains again. The controls train the same masks from a fresh
    initialization (``random_reinit``) and random masks with the same per-layer densities from the
    original initialization (``random_prune``). Each run ends with ``evaluate(model)``.

    While ``train`` runs, every ``torch.optim`` optimizer that steps the model's parameters is
    found through torch's global optimizer step hooks: pruned weights are exactly zero after every
    ``optimizer.step()`` and the optimizer state at pruned entries is zeroed. The user creates
    optimizers, data loaders and schedules as usual, inside ``train`` (a fresh optimizer per run is
    the usual IMP protocol). Torch's random generators are seeded per run (and restored after),
    so data loaders shuffling with torch give every run its own reproducible order.

    With ``out``, ``results.json``, ``results.csv``, ``table.md`` and a plot are written there
    (as by ``ltp imp``) after every run, with the state needed to continue in ``out/state``
    (``seed_N/pruner_level_L.npz`` holds level ``L``'s ticket masks, readable with
    ``ltp_core.LotteryTicketPruner.load``). Calling again with the same ``out`` resumes after the
    last finished run without retraining; ``levels`` and ``seeds`` may grow to extend it; another
    experiment in the same folder is refused.

    Args:
        model: An ``nn.Module`` at its initial weights (trained and rewound in place, and
            given back at its initial weights when the call returns or raises), or a
            zero-argument factory returning one (called under ``torch.manual_seed(seed)``;
            required for ``seeds > 1``).
        train: ``train(model)``: your training loop.
        evaluate: ``evaluate(model) -> float | Mapping[str, float]``: metrics of the trained
            model; ``"accuracy"`` (else the first one) headlines tables and plots.
        levels: Pruning levels after the dense run.
        rate: Fraction of the remaining weights pruned per level, ``0 < rate < 1``.
        strategy: Pruning criterion, a name from ``ltp_core.CRITERIA`` (``lamp`` and
            ``random_erk`` rank across layers and need ``scope="global"``).
        scope: ``"layer"`` (each layer loses ``rate``) or ``"global"`` (ranked across layers).
        layer_rates: ``{parameter name or index: multiplier}`` of ``rate`` per layer (e.g.
            ``{"fc3.weight": 0.5}`` prunes the output layer at half rate, as Frankle & Carbin
            do); ``0`` excludes a layer. ``None``: every layer at ``rate``.
        rewind_iteration: ``0`` rewinds to initialization; ``K`` to the weights after the
            ``K``-th optimizer step of the dense run (late rewinding). With several
            optimizers, steps are counted on the first one that steps the model, and the
            rewind point includes the other optimizers' steps up to its next step.
        controls: Control arms to run: ``"random_reinit"`` (needs a factory or
            ``reset_parameters()`` on every module holding parameters), ``"random_prune"``.
        seeds: Repetitions with different initializations (seeds ``0 .. seeds - 1``).
        prunable: Which parameters to prune (see :class:`ltp_torch.LotteryTicketPruner`).
        out: Output folder (``None``: nothing is written and nothing can be resumed).
        progress: Show a progress bar over the runs on a terminal (log lines otherwise).

    Returns:
        One :class:`ltp_core.experiment.RunRecord` per run (level, arm, seed, weights remaining
        overall and per layer, ``metrics``, train and prune seconds; ``extra`` holds the
        optimizer steps taken and evaluation seconds).

    Raises:
        ValueError: A bad argument (named with its value), ``out`` holding another experiment,
            ``rewind_iteration`` beyond the dense run's optimizer steps, a factory building
            another architecture than on its first call, ``train`` stepping only optimizers
            of other parameters (one created before ``find_ticket``), or ``evaluate``
            returning other metric names than in the first run.
        TypeError: An argument of the wrong type, or a factory not returning an ``nn.Module``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> x, y = torch.randn(64, 8), torch.randint(0, 2, (64,))
        >>> def train(model):
        ...     opt = torch.optim.SGD(model.parameters(), lr=0.1)
        ...     for _ in range(5):
        ...         opt.zero_grad()
        ...         nn.functional.cross_entropy(model(x), y).backward()
        ...         opt.step()
        >>> def evaluate(model):
        ...     return {"accuracy": (model(x).argmax(1) == y).float().mean().item()}
        >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> records = find_ticket(net, train, evaluate, levels=2, progress=False)
        >>> [(r.level, r.arm, round(r.weights_remaining, 1)) for r in records][:3]
        [(0, 'ticket', 1.0), (1, 'ticket', 0.8), (1, 'random_reinit', 0.8)]
    """
    if not isinstance(model, nn.Module) and not callable(model):
        raise TypeError(
            "`model` must be a torch.nn.Module at its initial weights or a zero-argument "
            f"factory returning one. Received: model of type {type(model).__name__}"
        )
    args = check_search_arguments(
        model_is_instance=isinstance(model, nn.Module),
        model_type="nn.Module",
        train=train,
        evaluate=evaluate,
        levels=levels,
        rate=rate,
        strategy=strategy,
        scope=scope,
        layer_rates=layer_rates,
        rewind_iteration=rewind_iteration,
        controls=controls,
        seeds=seeds,
        out=out,
        progress=progress,
    )
    if "random_reinit" in args.controls and isinstance(model, nn.Module):
        missing = _not_reinitializable(model)
        if missing:
            raise ValueError(
                "The `random_reinit` control needs a fresh initialization: pass a zero-argument "
                "factory as `model`, or give these modules a reset_parameters() method (or drop "
                f"the control with controls=('random_prune',)). Received: modules {missing} "
                "hold parameters but have no reset_parameters()"
            )
    with low_coverage_warned_once():  # one pruner per run: say what is left out once
        backend = _UserBackend(model, train, evaluate, prunable)
        first = backend.first_model(0)
        names = backend.layer_names(first)  # validates `prunable`
        LotteryTicketPruner(first, prunable=prunable)  # warns of low coverage before training
        shapes = [list(p.shape) for _, p in find_prunable_parameters(first, prunable)]
        rates = resolve_layer_rates(layer_rates, names)
        # A module instance is trained and rewound in place and given back at its initial
        # weights (run_search), so calling again starts from the same initialization.
        return run_search(
            backend,
            args,
            api="ltp_torch.find_ticket",
            model_name=type(first).__qualname__,
            names=names,
            shapes=shapes,
            layer_rates=rates,
            instance=first if isinstance(model, nn.Module) else None,
            structure=describe_model(first),
        )
