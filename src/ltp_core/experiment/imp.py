"""Iterative magnitude pruning (Frankle & Carbin 2019), framework-free.

Per seed: train the dense network (level 0); then for each level prune a fraction of the remaining
weights by the chosen criterion (the output layer at its own rate), rewind the survivors to their
initial values (or to their values after ``rewind_iteration`` steps of the dense run) and retrain.
Controls reuse each level's masks: ``random_reinit`` trains them from a fresh initialization,
``random_prune`` trains random masks with the same per-layer densities from the original init.

After every finished level the pruner state, the weights needed to continue, and the results are
written atomically, so re-running the same command continues where a killed run stopped, with
exactly the masks an uninterrupted run would have found.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..compute import salt_from_seed
from ..datasets import Dataset
from ..io import atomic_write_bytes, remove_stale_temporaries
from ..masks import apply_masks, density, layer_densities
from ..pruner import LotteryTicketPruner
from ..selection import RandomScores, keep_after_pruning_smallest
from .backend import Reporter, TrainingBackend, TrainOutcome, TrainSettings
from .config import ImpConfig
from .results import ResultStore, RunRecord

__all__ = ["layer_rates_for", "random_masks_like", "run_imp"]

logger = logging.getLogger(__name__)


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


def random_masks_like(masks: Sequence[np.ndarray], seed: int) -> list[np.ndarray]:
    """Random masks with exactly the per-layer kept counts of ``masks``.

    Example:
        >>> m = [np.array([True, False, True, False, True])]
        >>> int(random_masks_like(m, seed=1)[0].sum())
        3
    """
    salt = salt_from_seed([seed, 7919])
    result = []
    for i, mask in enumerate(masks):
        source = RandomScores(i, mask.size, None, salt)
        pruned = mask.size - int(np.count_nonzero(mask))
        (keep,) = keep_after_pruning_smallest([source], pruned, salt)
        result.append(keep.reshape(mask.shape))
    return result


def _save_arrays(path: Path, arrays: Sequence[np.ndarray]) -> None:
    payload = {f"a{i}": np.asarray(a) for i, a in enumerate(arrays)}
    atomic_write_bytes(path, lambda f: np.savez(f, **payload))  # type: ignore[arg-type]


def _load_arrays(path: Path) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return [data[f"a{i}"] for i in range(len(data.files))]


def _pruner_path(state_dir: Path, level: int) -> Path:
    return state_dir / f"pruner_level_{level}.npz"


def _settings(
    config: ImpConfig, seed: int, level: int, arm: str, capture: int | None = None
) -> TrainSettings:
    arm_id = {"ticket": 0, "random_reinit": 1, "random_prune": 2}[arm]
    return config.train_settings(int(salt_from_seed([seed, level, arm_id]) % (2**31)), capture)


def _record(
    seed: int,
    level: int,
    arm: str,
    masks: Sequence[np.ndarray] | None,
    n_layers: int,
    outcome: TrainOutcome,
    prune_seconds: float,
) -> RunRecord:
    stop = outcome.early_stop
    return RunRecord(
        seed=seed,
        level=level,
        arm=arm,
        weights_remaining=1.0 if masks is None else density(masks),
        layer_density=[1.0] * n_layers if masks is None else layer_densities(masks),
        test_accuracy=stop.test_accuracy,
        val_accuracy=stop.val_accuracy,
        early_stop_iteration=stop.iteration,
        final_test_accuracy=outcome.final.test_accuracy,
        train_seconds=outcome.seconds,
        prune_seconds=prune_seconds,
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
    store = ResultStore(
        out_dir, "imp", {**config.to_dict(), "data_source": data.source}, backend.versions()
    )
    state_dir = Path(out_dir) / "state"
    for seed in range(config.first_seed, config.first_seed + config.seeds):
        _run_seed(config, backend, data, store, state_dir / f"seed_{seed}", seed, reporter)
    return store


def _train(
    backend: TrainingBackend,
    model: Any,
    masks: Sequence[np.ndarray] | None,
    data: Dataset,
    settings: TrainSettings,
    reporter: Reporter | None,
    label: str,
) -> TrainOutcome:
    progress = reporter(label) if reporter is not None else None
    outcome = backend.train(model, masks, data, settings, progress)
    logger.info(
        "%s: test accuracy %.4f at early-stop iteration %d (%.1fs)",
        label,
        outcome.early_stop.test_accuracy,
        outcome.early_stop.iteration,
        outcome.seconds,
    )
    return outcome


def _run_seed(
    config: ImpConfig,
    backend: TrainingBackend,
    data: Dataset,
    store: ResultStore,
    state_dir: Path,
    seed: int,
    reporter: Reporter | None,
) -> None:
    if all(store.done(seed, level) for level in range(config.levels + 1)):
        return
    if state_dir.exists():
        remove_stale_temporaries(state_dir)
    model = backend.build(config.model, data.input_shape, data.num_classes, seed)
    names = backend.layer_names(model)
    kinds = backend.layer_kinds(model)
    rates = layer_rates_for(config, kinds)
    strategy = config.strategy + ("_global" if config.scope == "global" else "")
    init_path, rewind_path = state_dir / "init.npz", state_dir / "rewind.npz"

    if not store.done(seed, 0):
        init = backend.snapshot(model)
        # The pruner holds the weights at initialization: init-reading criteria (large_init,
        # movement, magnitude_increase, *_same_sign, large_init_large_final) rank them.
        initial = backend.get_prunable(model)
        capture = config.rewind_iteration or None
        outcome = _train(
            backend,
            model,
            None,
            data,
            _settings(config, seed, 0, "ticket", capture),
            reporter,
            f"seed {seed} level 0 dense",
        )
        rewind = outcome.captured if capture else init
        if rewind is None:
            raise RuntimeError(f"backend {backend.name} did not capture weights at step {capture}")
        pruner = LotteryTicketPruner(initial, names=names, seed=seed)
        pruner.set_pretrained_weights(backend.get_prunable(model))
        _save_arrays(init_path, init)
        _save_arrays(rewind_path, rewind)
        pruner.save(_pruner_path(state_dir, 0))
        store.add([_record(seed, 0, "ticket", None, len(names), outcome, 0.0)])
    init = _load_arrays(init_path)
    rewind = _load_arrays(rewind_path)
    # Each level's pruner state has its own file: a run killed between saving it and recording
    # the level's results resumes from the previous level's state, never from a half-done one.
    last_done = max(level for level in range(config.levels + 1) if store.done(seed, level))
    pruner = LotteryTicketPruner.load(_pruner_path(state_dir, last_done))
    if pruner.names != names:
        raise ValueError(
            f"Saved state in {state_dir} is for layers {pruner.names}, the model has {names}. "
            f"Received: out={os.fspath(state_dir.parent.parent)!r}"
        )

    for level in range(1, config.levels + 1):
        if store.done(seed, level):
            continue
        pretrained = pruner.pretrained_weights
        if pretrained is None:  # pragma: no cover - always saved with the state
            raise RuntimeError("pruner state lacks the trained weights of the previous level")
        start = time.perf_counter()
        pruner.calc_prune_mask(pretrained, config.dense_fraction, strategy, layer_rates=rates)
        prune_seconds = time.perf_counter() - start
        masks = pruner.masks
        records = []
        tag = f"seed {seed} level {level} ({density(masks):.1%} left)"

        backend.restore(model, rewind)
        outcome = _train(
            backend,
            model,
            masks,
            data,
            _settings(config, seed, level, "ticket"),
            reporter,
            f"{tag} ticket",
        )
        records.append(_record(seed, level, "ticket", masks, len(names), outcome, prune_seconds))
        trained = backend.get_prunable(model)

        if "random_reinit" in config.controls:
            fresh = backend.build(
                config.model, data.input_shape, data.num_classes, seed + 100_003 * level
            )
            outcome = _train(
                backend,
                fresh,
                masks,
                data,
                _settings(config, seed, level, "random_reinit"),
                reporter,
                f"{tag} random_reinit",
            )
            records.append(_record(seed, level, "random_reinit", masks, len(names), outcome, 0.0))
        if "random_prune" in config.controls:
            random_masks = random_masks_like(masks, seed * 1000 + level)
            backend.restore(model, init)
            outcome = _train(
                backend,
                model,
                random_masks,
                data,
                _settings(config, seed, level, "random_prune"),
                reporter,
                f"{tag} random_prune",
            )
            records.append(
                _record(seed, level, "random_prune", random_masks, len(names), outcome, 0.0)
            )

        pruner.set_pretrained_weights(apply_masks(trained, masks))
        pruner.save(_pruner_path(state_dir, level))
        store.add(records)
