"""Iterative magnitude pruning (Frankle & Carbin 2019), framework-free.

Per seed: train the dense network (level 0); then for each level prune a fraction of the remaining
weights by the chosen criterion (the output layer at its own rate), rewind the survivors to their
initial values (or to their values after ``rewind_iteration`` steps of the dense run) and retrain.
Controls reuse each level's masks: ``random_reinit`` trains them from a fresh initialization,
``random_prune`` trains random masks with the same per-layer densities from the original init.

After every finished run the pruner state, the weights needed to continue, and the results are
written atomically, so re-running the same command continues where a killed run stopped, with
exactly the masks an uninterrupted run would have found. The loop itself is the framework-free
driver of :mod:`ltp_core.experiment.driver`; this module binds it to the built-in models and data.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..compute import check_layer_floors
from ..datasets import Dataset
from ..schedule import fractions_for_cumulative_sparsities
from ..strategies import strategy_name
from .backend import BoundBackend, Reporter, TrainingBackend
from .config import ImpConfig, OneShotConfig
from .driver import ImpPlan, random_masks_like, run_levels
from .results import ResultStore, model_identity
from .results import data_identity as _data_identity

__all__ = ["check_layer_floors_for", "layer_rates_for", "random_masks_like", "run_imp"]


def layer_rates_for(config: ImpConfig, kinds: Sequence[str]) -> dict[str | int, float]:
    """Per-layer multipliers of ``config.dense_fraction`` for conv and output layers.

    Example:
        >>> layer_rates_for(ImpConfig(rate=0.2), ["dense", "dense", "output"])
        {2: 0.5}
    """
    base = config.dense_fraction
    rates: dict[str | int, float] = {}
    for i, kind in enumerate(kinds):
        target = {"conv": config.conv_fraction, "output": config.output_fraction}.get(kind, base)
        if target != base:
            rates[i] = target / base if base > 0 else 0.0
    return rates


def check_layer_floors_for(
    config: ImpConfig | OneShotConfig, backend: TrainingBackend, data: Dataset
) -> None:
    """Refuse a ``min_layer_density`` that some level of the experiment cannot meet.

    Builds the model once (seed ``first_seed``) for its layer sizes and replays the counts of
    every level (see :func:`ltp_core.compute.check_layer_floors`), before anything trains or is
    written. Nothing to do when ``config.min_layer_density`` is ``0``.

    Raises:
        ValueError: The level that cannot keep every layer at its floor, and how many work.
    """
    if not config.min_layer_density:
        return
    model = backend.build(config.model, data.input_shape, data.num_classes, config.first_seed)
    names = backend.layer_names(model)
    sizes = [int(w.size) for w in backend.get_prunable(model)]
    if isinstance(config, ImpConfig):
        fractions = [config.dense_fraction] * config.levels
        rates = layer_rates_for(config, backend.layer_kinds(model))
        multipliers = [float(rates.get(i, 1.0)) for i in range(len(sizes))]
    else:
        fractions = fractions_for_cumulative_sparsities(config.sparsities)
        multipliers = None
    check_layer_floors(
        sizes, fractions, config.min_layer_density, multipliers=multipliers, names=names
    )


def run_imp(
    config: ImpConfig,
    backend: TrainingBackend,
    data: Dataset,
    out_dir: str | os.PathLike[str],
    reporter: Reporter | None = None,
) -> ResultStore:
    """Run (or resume) an IMP experiment, writing results to ``out_dir``.

    Args:
        config: The experiment.
        backend: The framework to train with.
        data: Train/validation/test splits.
        out_dir: Output folder; if it holds this experiment's results, the run continues.
        reporter: ``reporter(description)`` returns a progress callback for one training run.

    Returns:
        The result store with every record.
    """
    check_layer_floors_for(config, backend, data)
    store = ResultStore(
        out_dir,
        "imp",
        {
            **config.to_dict(),
            **_data_identity(data),
            **model_identity(config.model, backend, data, config.first_seed),
        },
        backend.versions(),
    )
    plan = ImpPlan(
        levels=config.levels,
        seeds=tuple(range(config.first_seed, config.first_seed + config.seeds)),
        strategy=strategy_name(config.strategy, "global" if config.scope == "global" else "layer"),
        fraction=config.dense_fraction,
        controls=tuple(config.controls),
        rewind_iteration=config.rewind_iteration,
        layer_rates=lambda names, kinds: layer_rates_for(config, kinds),
        min_layer_density=config.min_layer_density,
    )
    bound = BoundBackend(
        backend, config.model, data, config.train_settings, sequential=config.sequential
    )
    return run_levels(plan, bound, store, reporter)
