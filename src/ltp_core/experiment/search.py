"""``find_ticket``'s framework-free half, shared by ``ltp_torch`` and ``ltp_keras``.

Both ``find_ticket`` functions validate the same arguments, read ``evaluate``'s metrics the same
way, write the same results folder and run the one driver (:func:`ltp_core.experiment.driver.
run_levels`); they differ only in their :class:`~ltp_core.experiment.driver.RunBackend` (how the
user's model is built, read, restored and trained with masks). This module holds the common part:
:func:`check_search_arguments`, :func:`parse_metrics`, :func:`resolve_layer_rates` and
:func:`run_search`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import numbers
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..io import read_npz
from ..strategies import CRITERIA, strategy_name
from ..validation import check_fraction
from .backend import ProgressFn
from .config import CONTROLS
from .driver import ARMS, ImpPlan, RunBackend, run_levels
from .results import ResultStore, RunRecord

__all__ = [
    "RunsBar",
    "SearchArguments",
    "check_search_arguments",
    "parse_metrics",
    "resolve_layer_rates",
    "run_search",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchArguments:
    """``find_ticket``'s validated arguments (everything but the model and the functions)."""

    levels: int
    rate: float
    strategy: str
    scope: str
    layer_rates: Mapping[str | int, float] | None
    rewind_iteration: int
    controls: tuple[str, ...]
    seeds: int
    out: str | os.PathLike[str] | None
    progress: bool


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"`{name}` must be {kind}. Received: {name}={value!r}")
    return int(value)


def check_search_arguments(
    *,
    model_is_instance: bool,
    model_type: str,
    train: Any,
    evaluate: Any,
    levels: Any,
    rate: Any,
    strategy: Any,
    scope: Any,
    layer_rates: Any,
    rewind_iteration: Any,
    controls: Any,
    seeds: Any,
    out: Any,
    progress: Any,
) -> SearchArguments:
    """Validate ``find_ticket``'s arguments before anything is built or trained.

    Args:
        model_is_instance: Whether ``model`` is a model (not a factory).
        model_type: What a model is in this framework, for messages (``"nn.Module"``).
        train: ``train(model)``.
        evaluate: ``evaluate(model)``.
        levels: Pruning levels after the dense run.
        rate: Fraction of the remaining weights pruned per level.
        strategy: Criterion name without ``_global``.
        scope: ``"layer"`` or ``"global"``.
        layer_rates: ``{name or index: multiplier}`` or ``None``.
        rewind_iteration: Optimizer steps of the dense run to rewind to.
        controls: Control arms.
        seeds: Number of seeds.
        out: Output folder or ``None``.
        progress: Whether to show a progress bar (truthiness).

    Returns:
        The arguments, normalized (controls in the driver's order).

    Raises:
        ValueError: A value out of range, named with what was received.
        TypeError: An argument of the wrong type.

    Example:
        >>> args = check_search_arguments(
        ...     model_is_instance=True, model_type="nn.Module", train=print, evaluate=print,
        ...     levels=3, rate=0.2, strategy="large_final", scope="layer", layer_rates=None,
        ...     rewind_iteration=0, controls=("random_prune",), seeds=1, out=None, progress=False)
        >>> args.levels, args.controls
        (3, ('random_prune',))
    """
    for name, function in (("train", train), ("evaluate", evaluate)):
        if not callable(function):
            raise TypeError(
                f"`{name}` must be a function taking the model. Received: {name}={function!r}"
            )
    levels = _check_int(levels, "levels", 1)
    rate = check_fraction(rate, "rate")
    if rate == 0:
        raise ValueError(
            "`rate` must be above 0: with rate=0 no level prunes anything, so every level "
            "would retrain the dense model. Use e.g. rate=0.2. Received: rate=0"
        )
    if not isinstance(strategy, str) or strategy not in CRITERIA:
        raise ValueError(
            f"`strategy` must be one of {sorted(CRITERIA)} (use `scope` for global). "
            f"Received: strategy={strategy!r}"
        )
    if scope not in ("layer", "global"):
        raise ValueError(f"`scope` must be 'layer' or 'global'. Received: scope={scope!r}")
    if CRITERIA[strategy].global_only and scope != "global":
        raise ValueError(
            f"`strategy` {strategy!r} ranks weights across layers (global by nature): pass "
            f"scope='global'. Received: strategy={strategy!r}, scope={scope!r}"
        )
    if layer_rates is not None:
        if not isinstance(layer_rates, Mapping):
            raise TypeError(
                "`layer_rates` must be a mapping {parameter name or index: multiplier}. "
                f"Received: layer_rates={layer_rates!r}"
            )
        for key, value in layer_rates.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(
                    "`layer_rates` values must be numbers. "
                    f"Received: layer_rates[{key!r}]={value!r}"
                )
            if not math.isfinite(value) or value < 0 or value * rate >= 1:
                raise ValueError(
                    "`layer_rates` multipliers must be >= 0 with rate * multiplier < 1. "
                    f"Received: layer_rates[{key!r}]={value!r} with rate={rate!r}"
                )
    rewind_iteration = _check_int(rewind_iteration, "rewind_iteration", 0)
    if isinstance(controls, str) or not isinstance(controls, Sequence):
        raise TypeError(
            f"`controls` must be a tuple of control names from {list(CONTROLS)}. "
            f"Received: controls={controls!r}"
        )
    unknown = [c for c in controls if c not in CONTROLS]
    if unknown or len(set(controls)) != len(controls):
        raise ValueError(
            f"`controls` must be distinct names from {list(CONTROLS)}. "
            f"Received: controls={controls!r}"
        )
    seeds = _check_int(seeds, "seeds", 1)
    if seeds > 1 and model_is_instance:
        raise ValueError(
            "`seeds` > 1 needs a fresh model per seed: pass a zero-argument factory as `model` "
            f"(e.g. model=lambda: Net()). Received: seeds={seeds} with a {model_type}"
        )
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"`out` must be a folder path or None. Received: out={out!r}")
    if out is not None:
        existing = next((p for p in (Path(out), *Path(out).parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise ValueError(
                f"`out` must be a folder, but {os.fspath(existing)!r} is a file. "
                f"Received: out={os.fspath(out)!r}"
            )
    ordered = tuple(c for c in ARMS[1:] if c in controls)
    return SearchArguments(
        levels=levels,
        rate=rate,
        strategy=strategy,
        scope=scope,
        layer_rates=layer_rates,
        rewind_iteration=rewind_iteration,
        controls=ordered,
        seeds=seeds,
        out=out,
        progress=bool(progress),
    )


def _number(value: Any, name: str) -> float:
    """A real number from a Python, NumPy or framework scalar (anything with ``.item()``)."""
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, numbers.Real):
        with contextlib.suppress(Exception):  # a tensor of several values: rejected below
            value = item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            "`evaluate` must return a number or a mapping of names to numbers. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    return float(value)


def parse_metrics(value: Any) -> tuple[dict[str, float], str]:
    """``evaluate``'s result as ``({name: value}, headline name)``.

    A single number is named ``"metric"``; in a mapping, ``"accuracy"`` headlines when present,
    else the first entry. Scalars of NumPy or a framework (anything with ``.item()``) count as
    numbers.

    Example:
        >>> import numpy as np
        >>> parse_metrics({"loss": 0.5, "accuracy": np.float32(0.75)})
        ({'loss': 0.5, 'accuracy': 0.75}, 'accuracy')
        >>> parse_metrics(3)
        ({'metric': 3.0}, 'metric')
    """
    if isinstance(value, Mapping):
        if not value:
            raise ValueError("`evaluate` returned an empty mapping. Received: {}")
        metrics = {}
        for name, item in value.items():
            if not isinstance(name, str):
                raise TypeError(
                    f"`evaluate` must return metric names as strings. Received: key {name!r}"
                )
            metrics[name] = _number(item, name)
        headline = "accuracy" if "accuracy" in metrics else next(iter(metrics))
        return metrics, headline
    return {"metric": _number(value, "metric")}, "metric"


def resolve_layer_rates(
    layer_rates: Mapping[str | int, float] | None, names: Sequence[str]
) -> dict[str | int, float]:
    """Check ``layer_rates`` keys against the prunable weights' names before anything trains.

    Example:
        >>> resolve_layer_rates({"fc3.weight": 0.5, 0: 1.0}, ["fc1.weight", "fc3.weight"])
        {'fc3.weight': 0.5, 0: 1.0}
    """
    if not layer_rates:
        return {}
    result: dict[str | int, float] = {}
    for key, value in layer_rates.items():
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise TypeError(
                f"`layer_rates` keys must be parameter names or indices. Received: key {key!r}"
            )
        if isinstance(key, str) and key not in names:
            raise ValueError(
                f"`layer_rates` names a parameter that is not pruned; prunable: {list(names)}. "
                f"Received: layer_rates key {key!r}"
            )
        if isinstance(key, int) and not 0 <= key < len(names):
            raise ValueError(
                f"`layer_rates` index out of range (0..{len(names) - 1}). "
                f"Received: layer_rates key {key!r}"
            )
        result[key] = float(value)
    return result


class RunsBar:
    """A progress bar over the experiment's runs (tqdm on a terminal, else log lines)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._bar: Any = None
        if enabled and total and sys.stderr.isatty():
            try:
                from tqdm.auto import tqdm  # type: ignore[import-untyped]

                self._bar = tqdm(total=total, unit="run", desc="find_ticket")
            except ImportError:
                self._bar = None

    def __call__(self, label: str) -> ProgressFn:
        if self._bar is not None:
            self._bar.set_description(label)

        def progress(step: int, total: int, metrics: dict[str, float]) -> None:
            del step, total
            shown = {k: f"{v:.4f}" for k, v in metrics.items()}
            if self._bar is not None:
                self._bar.set_postfix(shown)
                self._bar.update(1)
            else:
                logger.info("%s: %s", label, shown)

        return progress

    def close(self) -> None:
        """Close the bar (if any)."""
        if self._bar is not None:
            self._bar.close()


def run_search(
    backend: RunBackend,
    args: SearchArguments,
    *,
    api: str,
    model_name: str,
    names: Sequence[str],
    shapes: Sequence[Sequence[int]],
    layer_rates: Mapping[str | int, float],
    instance: Any | None = None,
    structure: str | None = None,
) -> list[RunRecord]:
    """Run (or resume) a ``find_ticket`` experiment on ``backend`` and return every record.

    Writes ``results.json``, ``results.csv``, ``table.md`` and a plot into ``args.out`` (with
    ``None``, everything stays in memory); a folder holding another experiment is refused.

    Args:
        backend: The framework's backend of the user's model and code.
        args: From :func:`check_search_arguments`.
        api: ``"ltp_torch.find_ticket"`` or ``"ltp_keras.find_ticket"`` (recorded).
        model_name: The model's class name (recorded, titles the plot).
        names: Names of the prunable weights (recorded: resuming needs the same).
        shapes: Their shapes (recorded).
        layer_rates: From :func:`resolve_layer_rates`.
        instance: The user's model object when one was passed instead of a factory. It is
            trained and rewound in place, and given back at its initial weights when the
            search returns or raises, so calling again starts from the same initialization;
            resuming warns when it holds another initialization than the one saved in ``out``.
        structure: The adapter's description of the model's structure (layers, settings,
            tensors); its SHA-256 is recorded as ``model_sha256``, so resuming after the
            model's code changed is refused instead of mixing two models' runs.
    """
    initial = backend.snapshot(instance) if instance is not None else None
    if initial is not None and args.out is not None:
        _warn_if_other_initialization(initial, Path(args.out))
    try:
        return _run_search(backend, args, api, model_name, names, shapes, layer_rates, structure)
    finally:
        if initial is not None:
            backend.restore(instance, initial)


def _warn_if_other_initialization(initial: Sequence[np.ndarray], out: Path) -> None:
    """Resuming uses the initialization saved in ``out``: say so if the model holds another."""
    saved = out / "state" / "seed_0" / "init.npz"
    if not saved.is_file():
        return
    try:
        data = read_npz(saved)
        arrays = [data[f"a{i}"] for i in range(len(data))]
    except (ValueError, KeyError):
        return  # the driver reports a damaged state file
    same = len(arrays) == len(initial) and all(
        a.shape == b.shape and np.array_equal(a, b) for a, b in zip(arrays, initial, strict=False)
    )
    if not same:
        logger.warning(
            "Resuming in %s: the model passed holds other weights than the initialization "
            "saved there (%s); the saved initialization is used, so the experiment stays one "
            "initialization. Pass another `out` to start from this model's weights.",
            out,
            saved,
        )


def _run_search(
    backend: RunBackend,
    args: SearchArguments,
    api: str,
    model_name: str,
    names: Sequence[str],
    shapes: Sequence[Sequence[int]],
    layer_rates: Mapping[str | int, float],
    structure: str | None,
) -> list[RunRecord]:
    rates = dict(layer_rates)
    config: dict[str, Any] = {
        "api": api,
        "framework": backend.name,
        "model": model_name,
        "levels": args.levels,
        "seeds": args.seeds,
        "first_seed": 0,
        "rate": args.rate,
        "strategy": args.strategy,
        "scope": args.scope,
        "layer_rates": {str(k): float(v) for k, v in rates.items()},
        "rewind_iteration": args.rewind_iteration,
        "controls": list(args.controls),
        "prunable": list(names),
        "shapes": [list(shape) for shape in shapes],
    }
    if structure is not None:
        config["model_sha256"] = hashlib.sha256(structure.encode("utf-8")).hexdigest()
    plan = ImpPlan(
        levels=args.levels,
        seeds=tuple(range(args.seeds)),
        strategy=strategy_name(args.strategy, "global" if args.scope == "global" else "layer"),
        fraction=args.rate,
        controls=args.controls,
        rewind_iteration=args.rewind_iteration,
        layer_rates=lambda _names, _kinds: rates,
    )
    out = args.out
    store = ResultStore(out, "imp", config, backend.versions())  # None: in memory only
    try:
        remaining = sum(
            not store.has(seed, level, arm)
            for seed in plan.seeds
            for level in range(args.levels + 1)
            for arm in (("ticket",) if level == 0 else ("ticket", *args.controls))
        )
        if out is not None and remaining < len(plan.seeds) * (
            1 + args.levels * (1 + len(args.controls))
        ):
            logger.info("resuming in %s: %d runs left", os.fspath(out), remaining)
        bar = RunsBar(remaining, args.progress)
        try:
            run_levels(plan, backend, store, bar)
        finally:
            bar.close()
        if out is not None and remaining:
            _plot(store, Path(out), f"{model_name} (find_ticket, {backend.name})")
        return list(store.records)
    finally:
        store.close()


def _plot(store: ResultStore, out: Path, title: str) -> None:
    try:
        from .plots import plot_imp

        plot_imp(store.records, out, title=title)
    except ImportError as error:
        logger.info("no plots: %s", error)
