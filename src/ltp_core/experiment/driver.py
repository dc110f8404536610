"""The one IMP driver: levels, pruning, rewinding, controls, resuming, for any training code.

``ltp imp`` (built-in models on built-in data) and ``ltp_torch.find_ticket`` /
``ltp_keras.find_ticket`` (the user's model and training loop) all run :func:`run_levels`. The
driver never touches a framework: it talks to a :class:`RunBackend`, which owns one model
family (a built-in architecture, or the user's model and ``train``/``evaluate`` functions).

How an adapter plugs in
-----------------------
Implement the eight methods of :class:`RunBackend` (see ``ltp_torch.find_ticket`` for a complete
one, :class:`ltp_core.experiment.backend.BoundBackend` for the built-in models):

* ``build(seed, reinit=False)``: the seed's model at its initialization; ``reinit=True`` asks for a
  fresh initialization (the ``random_reinit`` control).
* ``layer_names`` / ``layer_kinds`` / ``get_prunable``: the prunable weights as NumPy arrays,
  always in the same order.
* ``snapshot`` / ``restore``: every weight of the model (prunable or not) as NumPy arrays, for
  rewinding; ``restore`` writes in place (optimizers and hooks keep their references).
* ``train(model, run, progress)``: train once as described by the :class:`RunSpec`, with
  ``run.masks`` (``None`` for the dense run) held at exactly zero after every optimizer step, and
  return a :class:`~ltp_core.experiment.backend.TrainOutcome` (with ``captured`` set when
  ``run.capture_at`` asks for a late-rewinding snapshot, and ``metrics``/``headline`` for
  user-defined metrics).
* ``versions()``: package versions for ``results.json``.

Independent runs
----------------
Every level is planned before anything trains: :func:`plan_level` lists its independent trainings
(one :class:`RunSpec` per seed and arm, with its masks and seeds decided) and :func:`run_levels`
executes that list. Runs of one list never depend on each other, so a backend may train them in
any order or together (a backend with an optional ``train_together(models, runs, progress)``
method gets each level's list at once and returns one outcome per run, or ``None`` to have them
trained one by one); results are recorded per run, so a killed experiment resumes after the
last finished run.

State kept in ``out/state/seed_N``: ``init.npz`` (every weight at initialization),
``rewind.npz`` (the rewind point) and ``pruner_level_L.npz`` (the pruner after level ``L``'s ticket
was trained, its trained weights set as the pretrained weights of the next level).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from ..compute import salt_from_seed
from ..io import atomic_write_bytes, read_npz, remove_stale_temporaries
from ..masks import apply_masks, density, layer_densities
from ..pruner import LotteryTicketPruner
from ..selection import RandomScores, keep_after_pruning_smallest
from .backend import ProgressFn, Reporter, TrainOutcome
from .results import ResultStore, RunRecord

__all__ = [
    "ARMS",
    "ImpPlan",
    "RunBackend",
    "RunSpec",
    "plan_level",
    "random_masks_like",
    "run_levels",
]

logger = logging.getLogger(__name__)

ARMS: tuple[str, ...] = ("ticket", "random_reinit", "random_prune")
"""The arms of a level, in the order they are listed and recorded."""

Start = Literal["init", "rewind", "fresh"]


@dataclass(frozen=True)
class RunSpec:
    """One independent training of an experiment: an arm at a level for a seed.

    Attributes:
        seed: The experiment seed (which model initialization the run belongs to).
        level: ``0`` for the dense run, then one per pruning level.
        arm: ``"ticket"``, ``"random_reinit"`` or ``"random_prune"``.
        start: Weights the run starts from: ``"init"`` (the seed's initialization),
            ``"rewind"`` (the rewind point) or ``"fresh"`` (a new initialization from
            ``fresh_seed``).
        masks: Masks to hold during training (``None``: dense).
        train_seed: Seeds the run's data order and other randomness of training.
        fresh_seed: Seed of the fresh initialization when ``start == "fresh"``.
        capture_at: Snapshot every weight after this many optimizer steps (late rewinding).
        label: Human-readable description for logs and progress bars.
    """

    seed: int
    level: int
    arm: str
    start: Start
    masks: tuple[np.ndarray, ...] | None
    train_seed: int
    fresh_seed: int | None = None
    capture_at: int | None = None
    label: str = ""


@runtime_checkable
class RunBackend(Protocol):
    """What :func:`run_levels` needs: one model family, trained by the backend's own rules."""

    name: str

    def build(self, seed: int, reinit: bool = False) -> Any:
        """The model of ``seed`` at its initialization (``reinit``: a fresh initialization)."""
        ...

    def layer_names(self, model: Any) -> list[str]:
        """Names of the prunable weights, in the order of :meth:`get_prunable`."""
        ...

    def layer_kinds(self, model: Any) -> list[str]:
        """A kind per prunable weight (``"dense"``, ``"conv"``, ``"output"``, ...)."""
        ...

    def get_prunable(self, model: Any) -> list[np.ndarray]:
        """Copies of the prunable weights."""
        ...

    def snapshot(self, model: Any) -> list[np.ndarray]:
        """Copies of every weight of the model (prunable or not)."""
        ...

    def restore(self, model: Any, snapshot: Sequence[np.ndarray]) -> None:
        """Write back a :meth:`snapshot` in place."""
        ...

    def train(self, model: Any, run: RunSpec, progress: ProgressFn | None = None) -> TrainOutcome:
        """Train as ``run`` says, with ``run.masks`` held at exactly zero."""
        ...

    def versions(self) -> dict[str, str]:
        """Package versions for the results file."""
        ...


LayerRates = Callable[[Sequence[str], Sequence[str]], Mapping[str | int, float]]
"""``layer_rates(names, kinds)``: the per-layer multipliers of the pruning fraction."""


@dataclass(frozen=True)
class ImpPlan:
    """What an IMP experiment does, independent of the training code.

    Attributes:
        levels: Pruning levels after the dense run.
        seeds: Experiment seeds.
        strategy: Full strategy name (``"large_final"``, ``"large_final_global"``, ...).
        fraction: Fraction of the remaining weights pruned per level.
        controls: Control arms (``"random_reinit"``, ``"random_prune"``).
        rewind_iteration: ``0`` rewinds to initialization, ``K`` to the weights after ``K``
            optimizer steps of the dense run.
        layer_rates: ``layer_rates(names, kinds) -> {name or index: multiplier}``.
        min_layer_density: Share of each layer's weights every level keeps (global scope;
            ``0``: no floor), see :func:`ltp_core.compute_masks`.
    """

    levels: int
    seeds: tuple[int, ...]
    strategy: str
    fraction: float
    controls: tuple[str, ...] = ARMS[1:]
    rewind_iteration: int = 0
    layer_rates: LayerRates | None = None
    min_layer_density: float = 0.0


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


def train_seed(seed: int, level: int, arm: str) -> int:
    """The data-order seed of one run (independent of the order runs are trained in).

    Example:
        >>> a, b = train_seed(0, 1, "ticket"), train_seed(0, 1, "random_prune")
        >>> a == train_seed(0, 1, "ticket") != b
        True
    """
    return int(salt_from_seed([seed, level, ARMS.index(arm)]) % (2**31))


def fresh_seed(seed: int, level: int) -> int:
    """Seed of the fresh initialization of the ``random_reinit`` control at ``level``."""
    return seed + 100_003 * level


def _save_arrays(path: Path, arrays: Sequence[np.ndarray]) -> None:
    payload = {f"a{i}": np.asarray(a) for i, a in enumerate(arrays)}
    atomic_write_bytes(path, lambda f: np.savez(f, **payload))  # type: ignore[arg-type]


def _load_arrays(path: Path) -> list[np.ndarray]:
    data = read_npz(path)  # a corrupt file is a ValueError naming it
    return [data[f"a{i}"] for i in range(len(data))]


def _require_state_files(state_dir: Path, seed: int, paths: Sequence[Path]) -> None:
    """A resumed seed needs its saved state: a missing file is a clear error, not a traceback."""
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        out = state_dir.parent.parent
        raise ValueError(
            f"{state_dir} lacks {missing}: {out / 'results.json'} records finished levels of "
            f"seed {seed} but their saved state is gone, so the run cannot continue. Restore "
            f"the files, or start over with another --out (or delete the folder). "
            f"Received: out={os.fspath(out)!r}"
        )


def _pruner_path(state_dir: Path, level: int) -> Path:
    return state_dir / f"pruner_level_{level}.npz"


@dataclass
class _SeedState:
    """What the driver holds per seed between levels (all of it also on disk)."""

    seed: int
    state_dir: Path
    names: list[str]
    rates: dict[str | int, float]
    model: Any = None
    init: list[np.ndarray] | None = None
    rewind: list[np.ndarray] | None = None
    pruner: LotteryTicketPruner | None = None
    pruner_level: int = -1
    prune_seconds: float = 0.0
    persist: bool = True


def _record(run: RunSpec, n_layers: int, outcome: TrainOutcome, prune_seconds: float) -> RunRecord:
    stop = outcome.early_stop
    masks = run.masks
    extra: dict[str, Any] = {}
    for key in ("optimizer_steps", "eval_seconds", "batched_replicas"):
        if key in outcome.extra:
            extra[key] = outcome.extra[key]
    return RunRecord(
        seed=run.seed,
        level=run.level,
        arm=run.arm,
        weights_remaining=1.0 if masks is None else density(masks),
        layer_density=[1.0] * n_layers if masks is None else layer_densities(masks),
        test_accuracy=stop.test_accuracy,
        val_accuracy=stop.val_accuracy,
        early_stop_iteration=stop.iteration,
        final_test_accuracy=outcome.final.test_accuracy,
        train_seconds=outcome.seconds,
        prune_seconds=prune_seconds,
        extra=extra,
        metrics=dict(outcome.metrics),
        headline=outcome.headline,
    )


def plan_level(
    plan: ImpPlan, store: ResultStore, states: Sequence[_SeedState], level: int
) -> list[RunSpec]:
    """The runs of ``level`` not yet recorded, for every seed; prunes where a level starts.

    For level 0 this is the dense run of every seed. For a later level the masks of each seed's
    ticket are computed first (from the previous level's trained ticket), then every arm is listed
    with its masks, so the returned runs are independent of each other.
    """
    runs: list[RunSpec] = []
    for state in states:
        seed = state.seed
        if level == 0:
            if not store.has(seed, 0, "ticket"):
                runs.append(
                    RunSpec(
                        seed,
                        0,
                        "ticket",
                        "init",
                        None,
                        train_seed(seed, 0, "ticket"),
                        capture_at=plan.rewind_iteration or None,
                        label=f"seed {seed} level 0 dense",
                    )
                )
            continue
        arms = [a for a in ("ticket", *plan.controls) if not store.has(seed, level, a)]
        if not arms:
            continue
        pruner = state.pruner
        if pruner is None:  # pragma: no cover - set up by run_levels
            raise RuntimeError(f"seed {seed}: no pruner state before level {level}")
        if state.pruner_level == level - 1:
            pretrained = pruner.pretrained_weights
            if pretrained is None:  # pragma: no cover - always saved with the state
                raise RuntimeError("pruner state lacks the trained weights of the previous level")
            start = time.perf_counter()
            pruner.calc_prune_mask(
                pretrained,
                plan.fraction,
                plan.strategy,
                layer_rates=state.rates or None,
                min_layer_density=plan.min_layer_density,
            )
            state.prune_seconds = time.perf_counter() - start
            state.pruner_level = level
        masks = tuple(pruner.masks)
        tag = f"seed {seed} level {level} ({density(masks):.1%} left)"
        for arm in arms:
            if arm == "ticket":
                runs.append(
                    RunSpec(
                        seed,
                        level,
                        arm,
                        "rewind",
                        masks,
                        train_seed(seed, level, arm),
                        label=f"{tag} ticket",
                    )
                )
            elif arm == "random_reinit":
                runs.append(
                    RunSpec(
                        seed,
                        level,
                        arm,
                        "fresh",
                        masks,
                        train_seed(seed, level, arm),
                        fresh_seed=fresh_seed(seed, level),
                        label=f"{tag} random_reinit",
                    )
                )
            else:
                runs.append(
                    RunSpec(
                        seed,
                        level,
                        arm,
                        "init",
                        tuple(random_masks_like(masks, seed * 1000 + level)),
                        train_seed(seed, level, arm),
                        label=f"{tag} random_prune",
                    )
                )
    return runs


def _check_metrics(store: ResultStore, run: RunSpec, outcome: TrainOutcome) -> None:
    """User-defined metrics keep their names across runs; non-finite values are reported.

    A table or plot compares one headline metric across levels and arms, so ``evaluate``
    returning other names than in the runs already recorded is an error (raised before the run
    is recorded: the experiment resumes from there once ``evaluate`` is fixed).
    """
    if not outcome.metrics:
        return
    names = list(outcome.metrics)
    earlier = next((r for r in store.records if r.metrics), None)
    if earlier is not None and (
        sorted(earlier.metrics) != sorted(names) or earlier.headline != outcome.headline
    ):
        raise ValueError(
            f"{run.label}: `evaluate` returned metrics {names}, but "
            f"{list(earlier.metrics)} for seed {earlier.seed} level {earlier.level} "
            f"{earlier.arm}; tables and plots compare the same metrics across runs, so "
            "`evaluate` must return the same names every time. "
            f"Received: {dict(outcome.metrics)}"
        )
    bad = {k: v for k, v in outcome.metrics.items() if not np.isfinite(v)}
    if bad:
        logger.warning(
            "%s: `evaluate` returned non-finite metrics %s (diverged training, or an empty "
            "evaluation set?); they are recorded as they are.",
            run.label,
            bad,
        )


def _train(
    backend: RunBackend, model: Any, run: RunSpec, reporter: Reporter | None
) -> TrainOutcome:
    progress = reporter(run.label) if reporter is not None else None
    outcome = backend.train(model, run, progress)
    _log_outcome(run, outcome)
    return outcome


def _log_outcome(run: RunSpec, outcome: TrainOutcome) -> None:
    if outcome.headline is not None:
        logger.info(
            "%s: %s %.4f (%.1fs)",
            run.label,
            outcome.headline,
            outcome.metrics.get(outcome.headline, float("nan")),
            outcome.seconds,
        )
    else:
        logger.info(
            "%s: test accuracy %.4f at early-stop iteration %d (%.1fs)",
            run.label,
            outcome.early_stop.test_accuracy,
            outcome.early_stop.iteration,
            outcome.seconds,
        )


def _load_seed(plan: ImpPlan, backend: RunBackend, store: ResultStore, state: _SeedState) -> None:
    """Bring a seed with a finished dense run back from its state folder."""
    # Each level's pruner state has its own file: a run killed between saving it and recording
    # the level's ticket resumes from the previous level's state, never from a half-done one.
    last = max(level for level in range(plan.levels + 1) if store.has(state.seed, level, "ticket"))
    _require_state_files(
        state.state_dir,
        state.seed,
        [
            state.state_dir / "init.npz",
            state.state_dir / "rewind.npz",
            _pruner_path(state.state_dir, last),
        ],
    )
    state.init = _load_arrays(state.state_dir / "init.npz")
    state.rewind = _load_arrays(state.state_dir / "rewind.npz")
    pruner = LotteryTicketPruner.load(_pruner_path(state.state_dir, last))
    numbered = backend.name == "keras"  # Keras generates numbered names per process
    if pruner.names != state.names and not (
        numbered and same_layer_names(pruner.names, state.names)
    ):
        raise ValueError(
            f"Saved state in {state.state_dir} is for layers {pruner.names}, the model has "
            f"{state.names}. Received: out={os.fspath(state.state_dir.parent.parent)!r}"
        )
    state.pruner, state.pruner_level = pruner, last


_GENERATED_NUMBER = re.compile(r"_\d+(?=/|$)")


def same_layer_names(saved: Sequence[str], current: Sequence[str]) -> bool:
    """Whether a saved state's layer names are the model's, up to generated numbering.

    Keras numbers the names it generates per process (``dense``, ``dense_1``, ...), so a model
    built again in the same process (a notebook resuming an experiment) has the same
    variables under other numbers; the driver compares Keras names this way only (torch names
    are attribute paths, where ``fc_1`` and ``fc_2`` are two layers). The model's structure
    itself is checked by the results file's ``model_sha256``.

    Example:
        >>> same_layer_names(["sequential_1/dense_1/kernel"], ["sequential_4/dense_7/kernel"])
        True
        >>> same_layer_names(["fc1.weight"], ["fc2.weight"])
        False
    """
    if list(saved) == list(current):
        return True
    strip = [_GENERATED_NUMBER.sub("", name) for name in saved]
    return len(saved) == len(current) and strip == [
        _GENERATED_NUMBER.sub("", name) for name in current
    ]


@dataclass
class _Prepared:
    """A run's model, ready to train, and what the driver keeps from before training."""

    run: RunSpec
    state: _SeedState
    model: Any
    init: list[np.ndarray] | None = None  # level 0: every weight at initialization
    initial: list[np.ndarray] | None = None  # level 0: the prunable weights at initialization


def _prepare(backend: RunBackend, state: _SeedState, run: RunSpec, own_model: bool) -> _Prepared:
    """The model ``run`` starts from (``own_model``: never share the seed's reusable model)."""
    if run.level == 0:
        model = state.model
        # The pruner holds the weights at initialization: init-reading criteria (large_init,
        # movement, magnitude_increase, *_same_sign, large_init_large_final) rank them.
        return _Prepared(run, state, model, backend.snapshot(model), backend.get_prunable(model))
    if state.init is None or state.rewind is None or state.pruner is None:  # pragma: no cover
        raise RuntimeError(f"seed {state.seed}: level {run.level} planned before level 0 ran")
    if run.start == "fresh":
        if run.fresh_seed is None:  # pragma: no cover - set by plan_level
            raise RuntimeError("a fresh start needs fresh_seed")
        return _Prepared(run, state, backend.build(run.fresh_seed, reinit=True))
    if own_model:
        model = backend.build(state.seed)
    else:
        model = state.model
        if model is None:
            model = state.model = backend.build(state.seed)
    backend.restore(model, state.rewind if run.start == "rewind" else state.init)
    return _Prepared(run, state, model)


def _finish(
    backend: RunBackend,
    store: ResultStore,
    prepared: _Prepared,
    outcome: TrainOutcome,
    last: bool,
) -> None:
    """Save what later levels need from a trained run, then record it.

    ``results.json`` is rewritten after every run; the CSV and table after the ``last`` run of
    a level (they are rebuilt from ``results.json`` by ``ltp report`` anyway).
    """
    run, state, model = prepared.run, prepared.state, prepared.model
    _check_metrics(store, run, outcome)
    n_layers = len(state.names)
    if run.level == 0:
        init, initial = prepared.init, prepared.initial
        if init is None or initial is None:  # pragma: no cover - set by _prepare
            raise RuntimeError("the dense run lacks its initial weights")
        rewind = outcome.captured if run.capture_at else init
        if rewind is None:
            raise RuntimeError(
                f"backend {backend.name} did not capture the weights after step {run.capture_at}"
            )
        pruner = LotteryTicketPruner(initial, names=state.names, seed=state.seed)
        pruner.set_pretrained_weights(backend.get_prunable(model))
        if state.persist:
            state.state_dir.mkdir(parents=True, exist_ok=True)
            _save_arrays(state.state_dir / "init.npz", init)
            _save_arrays(state.state_dir / "rewind.npz", rewind)
            pruner.save(_pruner_path(state.state_dir, 0))
        state.init, state.rewind, state.pruner, state.pruner_level = init, rewind, pruner, 0
        store.add([_record(run, n_layers, outcome, 0.0)], tables=last)
        return
    if state.pruner is None:  # pragma: no cover - checked by _prepare
        raise RuntimeError(f"seed {state.seed}: level {run.level} planned before level 0 ran")
    prune_seconds = 0.0
    if run.arm == "ticket":
        if run.masks is None:  # pragma: no cover - set by plan_level
            raise RuntimeError("a pruned ticket needs masks")
        prune_seconds = state.prune_seconds
        state.pruner.set_pretrained_weights(apply_masks(backend.get_prunable(model), run.masks))
        if state.persist:
            state.pruner.save(_pruner_path(state.state_dir, run.level))
    store.add([_record(run, n_layers, outcome, prune_seconds)], tables=last)


def _execute(
    backend: RunBackend,
    store: ResultStore,
    state: _SeedState,
    run: RunSpec,
    reporter: Reporter | None,
    last: bool = True,
) -> None:
    """Train one planned run, save what later levels need, record it."""
    prepared = _prepare(backend, state, run, own_model=False)
    outcome = _train(backend, prepared.model, run, reporter)
    _finish(backend, store, prepared, outcome, last)


def _execute_together(
    backend: RunBackend,
    store: ResultStore,
    by_seed: Mapping[int, _SeedState],
    runs: Sequence[RunSpec],
    reporter: Reporter | None,
) -> bool:
    """Train ``runs`` as one program if the backend can (``train_together``); record each.

    Returns ``False`` (nothing trained) when the backend cannot; the caller then trains the
    runs one by one. A run killed midway records none of the batch, so resuming trains the
    same runs again.
    """
    together = getattr(backend, "train_together", None)
    if together is None or not getattr(backend, "trains_together", True) or len(runs) < 2:
        return False  # checked before any model is built for the batch
    prepared = [_prepare(backend, by_seed[run.seed], run, own_model=True) for run in runs]
    progress = [reporter(run.label) if reporter is not None else None for run in runs]
    start = time.perf_counter()
    outcomes: list[TrainOutcome] | None = together([p.model for p in prepared], runs, progress)
    if outcomes is None:
        return False
    logger.info("trained %d runs together in %.1fs", len(runs), time.perf_counter() - start)
    for index, (item, outcome) in enumerate(zip(prepared, outcomes, strict=True)):
        _log_outcome(item.run, outcome)
        _finish(backend, store, item, outcome, last=index == len(runs) - 1)
    return True


def run_levels(
    plan: ImpPlan,
    backend: RunBackend,
    store: ResultStore,
    reporter: Reporter | None = None,
    *,
    on_plan: Callable[[list[RunSpec]], None] | None = None,
) -> ResultStore:
    """Run (or resume) an IMP experiment: the dense run, then ``plan.levels`` pruning levels.

    Every level is planned first (:func:`plan_level`: the masks of every seed, then one
    :class:`RunSpec` per seed and arm not yet recorded) and its runs are then trained: together
    as one program when the backend has a ``train_together(models, runs, progress)`` method that
    accepts them (``BoundBackend`` for ``ltp imp --framework torch|keras``), else one after another.
    Each finished run is recorded in ``store`` at once; the state needed to continue is in
    ``store.out_dir / "state"``, so calling this again with the same store continues after the
    last finished run with exactly the masks an uninterrupted run finds (trained together, the
    runs match their one-by-one training up to float32 rounding). A store without a
    folder (``ResultStore(None, ...)``) keeps everything in memory and writes nothing.

    Args:
        plan: The experiment.
        backend: The training code (see the module docstring).
        store: Where records go (``ResultStore`` refuses a folder of another experiment).
        reporter: ``reporter(label)`` returns a progress callback for one run.
        on_plan: Called with each level's list of runs before they train (for observers).

    Returns:
        ``store``, with every record.
    """
    persist = store.out_dir is not None
    state_root = (store.out_dir or Path(".")) / "state"
    states: list[_SeedState] = []
    for seed in plan.seeds:
        done = all(
            store.has(seed, level, arm)
            for level in range(plan.levels + 1)
            for arm in (("ticket",) if level == 0 else ("ticket", *plan.controls))
        )
        if done:
            continue
        state_dir = state_root / f"seed_{seed}"
        if persist and state_dir.exists():
            remove_stale_temporaries(state_dir)
        model = backend.build(seed)
        names = backend.layer_names(model)
        rates = plan.layer_rates(names, backend.layer_kinds(model)) if plan.layer_rates else {}
        state = _SeedState(seed, state_dir, names, dict(rates), model=model, persist=persist)
        if store.has(seed, 0, "ticket"):
            _load_seed(plan, backend, store, state)
        states.append(state)
    by_seed = {state.seed: state for state in states}
    for level in range(plan.levels + 1):
        runs = plan_level(plan, store, states, level)
        if on_plan is not None:
            on_plan(runs)
        if _execute_together(backend, store, by_seed, runs, reporter):
            continue
        for index, run in enumerate(runs):
            last = index == len(runs) - 1
            _execute(backend, store, by_seed[run.seed], run, reporter, last)
    return store
