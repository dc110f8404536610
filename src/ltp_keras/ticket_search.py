"""``find_ticket``: iterative magnitude pruning of the user's own Keras model and training code.

The IMP procedure (levels, pruning, rewinding, the controls, resuming, results and plots) is the
framework-free driver of :mod:`ltp_core.experiment.driver`; this module is its Keras backend for
user code. While the user's ``train(model)`` runs (typically ``model.fit(...)`` on the user's
compiled model), every prunable variable carries a :class:`ltp_keras.MaskConstraint`: Keras
optimizers apply variable constraints right after each update inside the compiled train step, so
pruned weights are exactly zero after every optimizer step on the TensorFlow, torch and JAX
backends, with any ``steps_per_execution`` and without the user passing a callback. The cached
train function is dropped before and after ``train`` so ``fit`` compiles a step that includes
the constraints (JAX bakes the mask values in when it traces).
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np

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

from .experiment import describe_model
from .optimizer_state import zero_pruned_slots
from .pruner import LotteryTicketPruner
from .variables import (
    Prunable,
    read_arrays,
    select_prunable_variables,
    sync_model_state,
    unique_names,
    variable_kinds,
    write_arrays,
)

__all__ = ["KerasUserBackend", "canonical_names", "find_ticket"]

logger = logging.getLogger(__name__)

ModelOrFactory = keras.Model | Callable[[], keras.Model]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def canonical_names(model: keras.Model, variables: Sequence[keras.Variable]) -> list[str]:
    """Variable paths that do not depend on how many models the session built before.

    Keras numbers automatic layer names per session (``dense``, ``dense_1``, ... then
    ``dense_7`` in the next model), so the same architecture gets other paths each time it is
    built. Here the model's own name is dropped and every automatically named layer is renumbered
    by its order within the model, as a fresh session would name it; layers the user named keep
    their names.

    Example:
        >>> import keras
        >>> def build():
        ...     return keras.Sequential([keras.Input((3,)), keras.layers.Dense(4),
        ...                              keras.layers.Dense(2, name="head")])
        >>> _ = build()
        >>> model = build()
        >>> canonical_names(model, [layer.kernel for layer in model.layers])
        ['dense/kernel', 'head/kernel']
    """
    renamed: dict[str, str] = {}
    counts: dict[str, int] = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        base = _snake(type(layer).__name__)
        if re.fullmatch(rf"{re.escape(base)}(_\d+)?", layer.name) is None:
            continue  # named by the user
        count = counts.get(base, 0)
        counts[base] = count + 1
        renamed.setdefault(layer.name, base if count == 0 else f"{base}_{count}")
    paths = []
    for path in unique_names(variables):
        parts = path.split("/")
        if len(parts) > 1 and parts[0] == model.name:
            parts = parts[1:]
        paths.append("/".join(renamed.get(part, part) for part in parts))
    return paths


def _set_seed(seed: int) -> None:
    keras.utils.set_random_seed(int(seed) % (2**31))


class _StepWatch(keras.callbacks.Callback):
    """Injected into ``fit`` by :class:`KerasUserBackend`: snapshots the weights after the
    ``capture_at``-th optimizer step (counted on the model's optimizer over the whole
    ``train``)."""

    def __init__(self, owner: KerasUserBackend, capture_at: int, start: int) -> None:
        super().__init__()
        self._owner = owner
        self._capture_at = capture_at
        self._start = start
        self.captured: list[np.ndarray] | None = None
        self.captured_step: int | None = None

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if self.captured is not None:
            return
        model = self.model  # syncs the JAX trainer's state into the variables
        steps = _optimizer_steps(model) - self._start
        if steps >= self._capture_at:
            self.captured = self._owner.snapshot(model)
            self.captured_step = steps


def _optimizer_steps(model: keras.Model) -> int:
    optimizer = getattr(model, "optimizer", None)
    iterations = getattr(optimizer, "iterations", None)
    if iterations is None:
        return 0
    return int(keras.ops.convert_to_numpy(iterations))


class KerasUserBackend:
    """The :class:`ltp_core.experiment.driver.RunBackend` of the user's Keras model and code."""

    name = "keras"

    def __init__(
        self,
        model: ModelOrFactory,
        train: Callable[[keras.Model], Any],
        evaluate: Callable[[keras.Model], Any],
        prunable: Prunable,
    ) -> None:
        self._model = model if isinstance(model, keras.Model) else None
        self._factory = None if isinstance(model, keras.Model) else model
        self._train = train
        self._evaluate = evaluate
        self._prunable = prunable
        self._first: tuple[int, keras.Model] | None = None
        # Optimizer variables right after they were built, per optimizer: every run starts
        # from them (a fresh optimizer), whatever the previous run left.
        self._optimizer_start: dict[int, tuple[Any, list[np.ndarray]]] = {}

    # -- models -----------------------------------------------------------------------------

    def _call_factory(self, seed: int) -> keras.Model:
        if self._factory is None:  # pragma: no cover - checked by the caller
            raise RuntimeError("no factory")
        _set_seed(seed)
        model = self._factory()
        if not isinstance(model, keras.Model):
            raise TypeError(
                "The `model` factory must return a keras.Model. "
                f"Received: {type(model).__name__} from model={self._factory!r}"
            )
        return model

    def check_reinit(self) -> None:
        """Fail before training when ``random_reinit`` cannot draw a fresh initialization."""
        if self._model is None:
            return
        try:
            keras.models.clone_model(self._model)
        except Exception as error:
            raise ValueError(
                "The `random_reinit` control needs a fresh initialization of the model, and "
                f"keras.models.clone_model cannot rebuild it ({error}). Pass a zero-argument "
                "factory as `model`, or drop the control with controls=('random_prune',). "
                f"Received: model of type {type(self._model).__name__}"
            ) from error

    def build(self, seed: int, reinit: bool = False) -> keras.Model:
        """The model of ``seed`` (factory called after ``keras.utils.set_random_seed(seed)``).

        For a model instance, ``reinit`` writes a fresh initialization (a seeded
        ``keras.models.clone_model``) into the instance itself, so its compiled state and
        optimizer stay the user's.
        """
        if self._first is not None and self._first[0] == seed and not reinit:
            model = self._first[1]
            self._first = None
            return model
        if self._factory is not None:
            return self._call_factory(seed)
        if self._model is None:  # pragma: no cover
            raise RuntimeError("no model")
        if reinit:
            _set_seed(seed)
            fresh = keras.models.clone_model(self._model)
            sync_model_state(self._model)
            write_arrays(self._model.weights, read_arrays(fresh.weights))
        return self._model

    def first_model(self, seed: int) -> keras.Model:
        """Build the first seed's model once, for validation; :meth:`build` hands it out."""
        model = self.build(seed)
        self._first = (seed, model)
        return model

    def _variables(self, model: keras.Model) -> list[keras.Variable]:
        return select_prunable_variables(model, self._prunable)

    def layer_names(self, model: keras.Model) -> list[str]:
        """Canonical paths of the prunable variables (see :func:`canonical_names`)."""
        return canonical_names(model, self._variables(model))

    def layer_kinds(self, model: keras.Model) -> list[str]:
        """``"dense"``, ``"conv"``, ... per prunable variable."""
        return variable_kinds(model, self._variables(model))

    def get_prunable(self, model: keras.Model) -> list[np.ndarray]:
        """Copies of the prunable weights."""
        sync_model_state(model)
        return read_arrays(self._variables(model))

    def snapshot(self, model: keras.Model) -> list[np.ndarray]:
        """Copies of every weight of the model (trainable or not), in ``model.weights`` order."""
        sync_model_state(model)
        return read_arrays(model.weights)

    def restore(self, model: keras.Model, snapshot: Sequence[np.ndarray]) -> None:
        """Write a :meth:`snapshot` back in place."""
        weights = model.weights
        if len(weights) != len(snapshot):
            raise ValueError(
                f"The model has {len(weights)} weights, the saved state {len(snapshot)}; was "
                f"the model changed since the experiment started? Received: {len(snapshot)} arrays"
            )
        sync_model_state(model)
        write_arrays(weights, snapshot)

    def versions(self) -> dict[str, str]:
        """Versions of Keras, its backend and NumPy."""
        return {
            "keras": keras.__version__,
            "keras_backend": keras.backend.backend(),
            "numpy": np.__version__,
        }

    # -- training -----------------------------------------------------------------------------

    def _reset_optimizer(self, model: keras.Model) -> int:
        """Put the model's optimizer back to its state before the first run; return its step."""
        optimizer = getattr(model, "optimizer", None)
        if optimizer is None:
            return 0
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        key = id(optimizer)
        saved = self._optimizer_start.get(key)
        if saved is None or saved[0] is not optimizer:
            values = read_arrays(optimizer.variables)
            self._optimizer_start[key] = (optimizer, values)
            steps = _optimizer_steps(model)
            if steps:
                logger.warning(
                    "The model's optimizer has already taken %d steps; every find_ticket run "
                    "starts from its current state. Compile the model afresh (or build it in "
                    "the factory) for independent runs.",
                    steps,
                )
        else:
            for variable, value in zip(optimizer.variables, saved[1], strict=True):
                variable.assign(value)
        return _optimizer_steps(model)

    def train(
        self, model: keras.Model, run: RunSpec, progress: ProgressFn | None = None
    ) -> TrainOutcome:
        """Run the user's ``train(model)`` with the masks held, then ``evaluate(model)``."""
        pruner: LotteryTicketPruner | None = None
        variables = self._variables(model)
        enforcer = None
        start_step = self._reset_optimizer(model)
        if run.masks is not None:
            pruner = LotteryTicketPruner(model, prunable=self._prunable)
            pruner.set_masks(list(run.masks))
            pruner.apply_pruning(model)  # zeroes the optimizer slots at pruned entries too
            enforcer = pruner.enforce_masks(model).install(
                ema_optimizer=getattr(model, "optimizer", None)
            )
        watch = _StepWatch(self, run.capture_at, start_step) if run.capture_at is not None else None
        original_fit = model.fit if watch is not None else None

        def fit_with_watch(*args: Any, **kwargs: Any) -> Any:
            callbacks = list(kwargs.pop("callbacks", None) or [])
            if len(args) > 5:  # fit(x, y, batch_size, epochs, verbose, callbacks, ...)
                callbacks = list(args[5] or [])
                args = (*args[:5], None, *args[6:])
            return original_fit(*args, callbacks=[*callbacks, watch], **kwargs)

        # Compile a fresh step: the one cached before has no mask constraints (and on JAX the
        # masks' values are fixed when the step is traced).
        model.train_function = None
        if watch is not None:
            model.fit = fit_with_watch
        _set_seed(run.train_seed)
        start = time.perf_counter()
        try:
            self._train(model)
        finally:
            if watch is not None:
                del model.fit
            if enforcer is not None:
                enforcer.remove()
            model.train_function = None
        seconds = time.perf_counter() - start
        sync_model_state(model)
        steps = _optimizer_steps(model) - start_step
        if steps <= 0:
            logger.warning(
                "%s: train(model) made no step of the model's optimizer (model.optimizer), so "
                "find_ticket cannot tell whether it trained. Train with model.fit or "
                "model.optimizer.apply so pruned weights stay at zero.",
                run.label,
            )
        if pruner is not None:
            self._check_zeros(model, pruner, variables, run)
        captured = None
        if watch is not None:
            captured = watch.captured
            if captured is None:
                raise ValueError(
                    "`rewind_iteration` asks for the weights after optimizer step "
                    f"{run.capture_at} of the dense run, but train(model) made {steps} steps "
                    "in model.fit (steps of a custom loop cannot be watched). Use a smaller "
                    f"rewind_iteration. Received: rewind_iteration={run.capture_at}"
                )
            if watch.captured_step != run.capture_at:
                logger.warning(
                    "The rewind point was captured after optimizer step %s, not %s: "
                    "steps_per_execution does not divide rewind_iteration.",
                    watch.captured_step,
                    run.capture_at,
                )
        eval_start = time.perf_counter()
        metrics, headline = parse_metrics(_plain(self._evaluate(model)))
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
    def _check_zeros(
        model: keras.Model,
        pruner: LotteryTicketPruner,
        variables: Sequence[keras.Variable],
        run: RunSpec,
    ) -> None:
        """Warn if pruned weights moved outside optimizer steps; zero them either way."""
        values = read_arrays(variables)
        revived = [
            name
            for name, value, mask in zip(pruner.names, values, pruner.masks, strict=True)
            if bool(np.any(value[~mask] != 0))
        ]
        if revived:
            logger.warning(
                "%s: pruned weights of %s were changed outside an optimizer step (written "
                "directly by train, or an optimizer that ignores Keras constraints); set back "
                "to zero.",
                run.label,
                revived,
            )
        pruner.apply_pruning(model)
        zero_pruned_slots(getattr(model, "optimizer", None), variables, pruner.masks)


def _plain(value: Any) -> Any:
    """Backend tensors in ``evaluate``'s result as NumPy values (TensorFlow's have no .item())."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if not isinstance(value, (int, float)) and callable(getattr(value, "numpy", None)):
        try:
            return value.numpy()
        except Exception:  # not a tensor after all: parse_metrics says what is wrong
            return value
    return value


def find_ticket(
    model: ModelOrFactory,
    train: Callable[[keras.Model], Any],
    evaluate: Callable[[keras.Model], Any],
    *,
    levels: int,
    rate: float = 0.2,
    strategy: str = "large_final",
    scope: str = "layer",
    layer_rates: Mapping[str | int, float] | None = None,
    rewind_iteration: int = 0,
    controls: Sequence[str] = CONTROLS,
    seeds: int = 1,
    prunable: Prunable = None,
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> list[RunRecord]:
    """Find a winning ticket in your own Keras model with your own training code (IMP with
    controls); the same procedure and results as :func:`ltp_torch.find_ticket`.

    Level 0 trains the dense model with ``train(model)``. Each later level prunes ``rate`` of the
    remaining weights by ``strategy`` (ranking the previous level's trained ticket), rewinds the
    survivors to their initial values (or to their values after ``rewind_iteration`` optimizer
    steps of the dense run) and trains again. The controls train the same masks from a fresh
    initialization (``random_reinit``) and random masks with the same per-layer densities from the
    original initialization (``random_prune``). Each run ends with ``evaluate(model)``.

    ``train(model)`` typically calls ``model.fit(...)`` on your compiled model; no callback is
    needed. While it runs, every prunable variable carries a mask constraint, which Keras
    optimizers apply right after each update inside the compiled train step: pruned weights are
    exactly zero after every optimizer step on TensorFlow, torch and JAX (any
    ``steps_per_execution``, ``jit_compile`` on or off), in ``fit`` and, on TensorFlow and torch,
    in custom loops that call ``model.optimizer.apply``. The cached train function is dropped
    before and after ``train`` so ``fit`` compiles a step with the constraints. The model's
    optimizer is put back to its state before the first run at the start of every run (step 0,
    zero momentum and moments), and its state at pruned entries is zeroed.
    ``rewind_iteration=K`` captures every weight after the K-th step of ``model.optimizer`` in
    the dense run (``model.fit`` is wrapped during that run to watch the steps; with
    ``steps_per_execution > 1`` at the first batch end at or after step K). Keras's global
    random seed is set per run (``keras.utils.set_random_seed``), so shuffling in
    ``fit`` is reproducible run by run.

    With ``out``, ``results.json``, ``results.csv``, ``table.md`` and a plot are written there
    (as by ``ltp imp``) after every run, with the state needed to continue in ``out/state``.
    Calling again with the same ``out`` resumes after the last finished run without retraining;
    ``levels`` and ``seeds`` may grow to extend it; another experiment in the same folder is
    refused. Weights are named by their variable paths without the model's name, with automatic
    layer names numbered within the model (``dense``, ``dense_1``, ...; see
    :func:`canonical_names`), so a model rebuilt in a later session resumes.

    Args:
        model: A built ``keras.Model`` at its initial weights (trained and rewound in place;
            ``random_reinit`` writes a seeded ``keras.models.clone_model`` initialization into
            it), or a zero-argument factory returning one, usually compiled (called after
            ``keras.utils.set_random_seed(seed)``; required for ``seeds > 1``).
        train: ``train(model)``: your training code, e.g. ``lambda m: m.fit(x, y, epochs=5)``.
        evaluate: ``evaluate(model) -> float | Mapping[str, float]``: metrics of the trained
            model; ``"accuracy"`` (else the first one) headlines tables and plots.
        levels: Pruning levels after the dense run.
        rate: Fraction of the remaining weights pruned per level, ``0 <= rate < 1``.
        strategy: Pruning criterion, a name from ``ltp_core.STRATEGIES`` without ``_global``.
        scope: ``"layer"`` (each layer loses ``rate``) or ``"global"`` (ranked across layers).
        layer_rates: ``{weight name or index: multiplier}`` of ``rate`` per weight (names as in
            :func:`canonical_names`, e.g. ``{"dense_2/kernel": 0.5}``); ``0`` excludes one.
        rewind_iteration: ``0`` rewinds to initialization; ``K`` to the weights after the
            ``K``-th optimizer step of the dense run (late rewinding).
        controls: Control arms to run: ``"random_reinit"``, ``"random_prune"``.
        seeds: Repetitions with different initializations (seeds ``0 .. seeds - 1``).
        prunable: Which variables to prune (see :class:`ltp_keras.LotteryTicketPruner`).
        out: Output folder (``None``: nothing is written and nothing can be resumed).
        progress: Show a progress bar over the runs on a terminal (log lines otherwise).

    Returns:
        One :class:`ltp_core.experiment.RunRecord` per run (level, arm, seed, weights remaining
        overall and per layer, ``metrics``, train and prune seconds; ``extra`` holds the
        optimizer steps taken and evaluation seconds).

    Raises:
        ValueError: A bad argument (named with its value), ``out`` holding another experiment,
            a model ``random_reinit`` cannot re-initialize, or ``rewind_iteration`` beyond the
            dense run's optimizer steps.
        TypeError: An argument of the wrong type, or a factory not returning a ``keras.Model``.

    Example:
        >>> import keras, numpy as np
        >>> x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
        >>> y = (x[:, 0] > 0).astype("int32")
        >>> def make():
        ...     model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, "relu"),
        ...                               keras.layers.Dense(2)])
        ...     model.compile("adam", keras.losses.SparseCategoricalCrossentropy(True),
        ...                   metrics=["accuracy"])
        ...     return model
        >>> records = find_ticket(make, lambda m: m.fit(x, y, epochs=2, verbose=0),
        ...                       lambda m: m.evaluate(x, y, verbose=0, return_dict=True),
        ...                       levels=1, progress=False)
        >>> [(r.level, r.arm, round(r.weights_remaining, 1)) for r in records][1:]
        [(1, 'ticket', 0.8), (1, 'random_reinit', 0.8), (1, 'random_prune', 0.8)]
    """
    if not isinstance(model, keras.Model) and not callable(model):
        raise TypeError(
            "`model` must be a built keras.Model at its initial weights or a zero-argument "
            f"factory returning one. Received: model of type {type(model).__name__}"
        )
    args = check_search_arguments(
        model_is_instance=isinstance(model, keras.Model),
        model_type="keras.Model",
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
    with low_coverage_warned_once():  # one pruner per run: say what is left out once
        backend = KerasUserBackend(model, train, evaluate, prunable)
        first = backend.first_model(0)
        names = backend.layer_names(first)  # validates `prunable` and that the model is built
        shapes = [list(v.shape) for v in select_prunable_variables(first, prunable)]
        rates = resolve_layer_rates(layer_rates, names)
        if "random_reinit" in args.controls:
            backend.check_reinit()
        # A model instance is trained and rewound in place and given back at its initial
        # weights (run_search), so calling again starts from the same initialization.
        return run_search(
            backend,
            args,
            api="ltp_keras.find_ticket",
            model_name=type(first).__qualname__,
            names=names,
            shapes=shapes,
            layer_rates=rates,
            instance=first if isinstance(model, keras.Model) else None,
            structure=describe_model(first),
        )
