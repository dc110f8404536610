"""lottery-ticket-pruner's example experiment, done correctly (``ltp oneshot``).

For each seed the dense network is trained once. Then, for each strategy, masks are computed at the
old package's cumulative sparsities (20 %, 55.78 %, 89.6 %, 99.33 %, by pruning the per-call
fractions of what remains in sequence), and two numbers are measured per mask:

* the test accuracy of the masked *untrained* initial weights (the supermask effect of
  Zhou et al. 2019), and
* the test accuracy, at the early-stopping step, of training the masked initial weights with
  pruned weights held at zero.
"""

from __future__ import annotations

import os

from ..datasets import Dataset
from ..masks import apply_masks, density, layer_densities
from ..pruner import LotteryTicketPruner
from ..schedule import fractions_for_cumulative_sparsities
from .backend import Reporter, TrainingBackend, TrainSettings
from .config import OneShotConfig
from .imp import check_layer_floors_for
from .results import ResultStore, RunRecord, model_identity
from .results import data_identity as _data_identity

__all__ = ["run_oneshot"]


def run_oneshot(
    config: OneShotConfig,
    backend: TrainingBackend,
    data: Dataset,
    out_dir: str | os.PathLike[str],
    reporter: Reporter | None = None,
) -> ResultStore:
    """Run (or resume, per seed) the one-shot experiment, writing results to ``out_dir``."""
    check_layer_floors_for(config, backend, data)
    store = ResultStore(
        out_dir,
        "oneshot",
        {
            **config.to_dict(),
            **_data_identity(data),
            **model_identity(config.model, backend, data, config.first_seed),
        },
        backend.versions(),
    )
    fractions = fractions_for_cumulative_sparsities(config.sparsities)

    def settings(seed: int, stream: int) -> TrainSettings:
        return config.train_settings(seed * 7919 + stream)

    for seed in range(config.first_seed, config.first_seed + config.seeds):
        if store.done(seed, len(fractions)):
            continue
        model = backend.build(config.model, data.input_shape, data.num_classes, seed)
        names = backend.layer_names(model)
        init = backend.snapshot(model)
        initial = backend.get_prunable(model)
        dense = backend.train(
            model,
            None,
            data,
            settings(seed, 0),
            reporter(f"seed {seed} dense") if reporter else None,
        )
        trained = backend.get_prunable(model)
        records = [
            RunRecord(
                seed,
                0,
                "dense",
                1.0,
                [1.0] * len(names),
                dense.early_stop.test_accuracy,
                dense.early_stop.val_accuracy,
                dense.early_stop.iteration,
                dense.final.test_accuracy,
                dense.seconds,
                0.0,
                {"dataset": data.name},
            )
        ]
        for s_index, strategy in enumerate(config.strategies):
            pruner = LotteryTicketPruner(initial, names=names, seed=seed)
            pruner.set_pretrained_weights(trained)
            for level, fraction in enumerate(fractions, start=1):
                pruner.calc_prune_mask(
                    initial, fraction, strategy, min_layer_density=config.min_layer_density
                )
                masks = pruner.masks
                backend.restore(model, init)
                backend.set_prunable(model, apply_masks(initial, masks))
                _, untrained_accuracy = backend.evaluate(model, data.x_test, data.y_test)
                label = f"seed {seed} {strategy} {1 - density(masks):.2%} pruned"
                outcome = backend.train(
                    model,
                    masks,
                    data,
                    settings(seed, 1 + s_index * 10 + level),
                    reporter(label) if reporter else None,
                )
                stop = outcome.early_stop
                records.append(
                    RunRecord(
                        seed,
                        level,
                        strategy,
                        density(masks),
                        layer_densities(masks),
                        stop.test_accuracy,
                        stop.val_accuracy,
                        stop.iteration,
                        outcome.final.test_accuracy,
                        outcome.seconds,
                        0.0,
                        {
                            "dataset": data.name,
                            "untrained_test_accuracy": untrained_accuracy,
                            "target_sparsity": config.sparsities[level - 1],
                        },
                    )
                )
        store.add(records)
    return store
