"""The small protocol one IMP loop uses to talk to any framework.

A backend builds models, moves weights in and out as NumPy arrays and trains with masks held at
exactly zero. Everything else (levels, pruning, rewinding, controls, early stopping, results) is
framework-free and lives in :mod:`ltp_core.experiment`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from ..datasets import Dataset

__all__ = [
    "BACKENDS",
    "MODELS",
    "BoundBackend",
    "EvalPoint",
    "LayerKind",
    "ProgressFn",
    "Reporter",
    "TrainOutcome",
    "TrainSettings",
    "TrainingBackend",
    "check_batch_lengths",
    "load_backend",
    "settings_differ_beyond_seed",
]

LayerKind = Literal["dense", "conv", "output"]

MODELS: tuple[str, ...] = ("lenet300_100", "conv2", "conv4", "conv6", "mnist_cnn")
"""Model names every backend builds (Frankle & Carbin's, plus the old package's example)."""

BACKENDS: dict[str, str] = {
    "torch": "ltp_torch.experiment:TorchBackend",
    "keras": "ltp_keras.experiment:KerasBackend",
}
"""``--framework`` name -> ``module:class`` of its backend, imported only when asked for."""


@dataclass(frozen=True)
class TrainSettings:
    """How one training run goes.

    Attributes:
        iterations: Optimizer steps to train for.
        batch_size: Examples per step.
        optimizer: ``"adam"`` or ``"sgd"`` (SGD uses ``momentum``).
        learning_rate: Step size.
        momentum: SGD momentum.
        eval_every: Steps between evaluations on validation and test data.
        seed: Seeds the data order (and nothing else: model init is seeded at build time).
        capture_at: If set, snapshot all weights after this many steps (late rewinding).
    """

    iterations: int
    batch_size: int = 60
    optimizer: str = "adam"
    learning_rate: float = 1.2e-3
    momentum: float = 0.9
    eval_every: int = 100
    seed: int = 0
    capture_at: int | None = None


@dataclass(frozen=True)
class EvalPoint:
    """Metrics measured at one step of training."""

    iteration: int
    val_loss: float
    val_accuracy: float
    test_accuracy: float


@dataclass
class TrainOutcome:
    """What a backend reports after training.

    Attributes:
        evaluations: Metrics at every evaluation, in step order (the last is at the end).
        seconds: Wall time of training.
        captured: Snapshot taken after ``settings.capture_at`` steps, if requested.
        extra: Backend details (device, steps per second, ...).
        metrics: The user's metrics (``find_ticket``'s ``evaluate``); empty for built-in runs,
            whose metrics are the :class:`EvalPoint` fields.
        headline: The metric that headlines tables and plots (``None``: test accuracy).
    """

    evaluations: list[EvalPoint]
    seconds: float
    captured: list[np.ndarray] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    headline: str | None = None

    @property
    def early_stop(self) -> EvalPoint:
        """The evaluation with the lowest validation loss (Frankle & Carbin's early stopping)."""
        return min(self.evaluations, key=lambda e: (e.val_loss, e.iteration))

    @property
    def final(self) -> EvalPoint:
        """The evaluation at the end of training."""
        return self.evaluations[-1]


ProgressFn = Callable[[int, int, dict[str, float]], None]
"""``progress(step, total_steps, metrics)``, called by backends while training."""

Reporter = Callable[[str], ProgressFn | None]
"""``reporter(description)`` returns the progress callback for one training run."""


@runtime_checkable
class TrainingBackend(Protocol):
    """What the experiment driver needs from a framework (see ``ltp_torch.experiment``)."""

    name: str

    def build(self, model: str, input_shape: tuple[int, ...], num_classes: int, seed: int) -> Any:
        """A fresh model named in :data:`MODELS`, initialized from ``seed``."""
        ...

    def layer_names(self, model: Any) -> list[str]:
        """Names of the prunable weights, in the order of :meth:`get_prunable`."""
        ...

    def layer_kinds(self, model: Any) -> list[LayerKind]:
        """``"conv"``, ``"dense"`` or ``"output"`` (the last dense layer) per prunable weight."""
        ...

    def get_prunable(self, model: Any) -> list[np.ndarray]:
        """Copies of the prunable weights."""
        ...

    def set_prunable(self, model: Any, weights: Sequence[np.ndarray]) -> None:
        """Write the prunable weights (in place: parameter identity is kept)."""
        ...

    def snapshot(self, model: Any) -> list[np.ndarray]:
        """Copies of every weight of the model (prunable or not), for rewinding."""
        ...

    def restore(self, model: Any, snapshot: Sequence[np.ndarray]) -> None:
        """Write back a :meth:`snapshot`."""
        ...

    def train(
        self,
        model: Any,
        masks: Sequence[np.ndarray] | None,
        data: Dataset,
        settings: TrainSettings,
        progress: ProgressFn | None = None,
    ) -> TrainOutcome:
        """Train with pruned weights held at exactly zero after every step; fresh optimizer."""
        ...

    def evaluate(self, model: Any, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """``(loss, accuracy)`` of the model as it is."""
        ...

    def versions(self) -> dict[str, str]:
        """Versions of the framework packages, for the results file."""
        ...


def check_batch_lengths(models: Sized, masks: Sized, settings: Sized) -> int:
    """The number of runs a backend's ``train_batched`` got, or a ``ValueError`` on a mismatch.

    Example:
        >>> check_batch_lengths([1, 2], [None, None], ["a", "b"])
        2
    """
    count = len(models)
    if len(masks) != count or len(settings) != count:
        raise ValueError(
            "`models`, `masks` and `settings` must have the same length. Received: "
            f"{count} models, {len(masks)} masks, {len(settings)} settings"
        )
    return count


def settings_differ_beyond_seed(settings: Sequence[TrainSettings]) -> bool:
    """Whether the runs' settings differ in more than ``seed`` and ``capture_at``.

    Runs that train together share everything else (steps, batch size, optimizer, evaluation).

    Example:
        >>> settings_differ_beyond_seed([TrainSettings(10, seed=1), TrainSettings(10, seed=2)])
        False
        >>> settings_differ_beyond_seed([TrainSettings(10), TrainSettings(20)])
        True
    """
    common = [replace(s, seed=0, capture_at=None) for s in settings]
    return any(c != common[0] for c in common)


def load_backend(framework: str, **options: Any) -> TrainingBackend:
    """Import and create the backend for ``framework`` (``"torch"`` or ``"keras"``).

    Raises:
        ValueError: Unknown framework.
        ImportError: The framework is not installed; the message names the extra to install.

    Example:
        >>> load_backend("mxnet")
        Traceback (most recent call last):
        ...
        ValueError: `framework` must be one of ['keras', 'torch']. Received: framework='mxnet'
    """
    if framework not in BACKENDS:
        raise ValueError(
            f"`framework` must be one of {sorted(BACKENDS)}. Received: framework={framework!r}"
        )
    module_name, class_name = BACKENDS[framework].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        missing = (error.name or "").split(".")[0]
        if missing in {"torch", "keras", "tensorflow", "jax"}:
            raise ImportError(
                f"The {framework} backend needs {missing}: pip install "
                f"'lottery-tickets[{framework}]' ({error})"
            ) from error
        raise
    backend: TrainingBackend = getattr(module, class_name)(**options)
    return backend


class BoundBackend:
    """A :class:`TrainingBackend` bound to one built-in model, dataset and settings.

    This is the :class:`ltp_core.experiment.driver.RunBackend` that ``ltp imp`` runs: it builds
    ``model_name`` for the data's shape and trains with ``settings(run)``.

    Args:
        backend: The framework backend.
        model_name: A name from :data:`MODELS`.
        data: The dataset every run trains and evaluates on.
        settings: ``settings(train_seed, capture_at)`` gives a run's :class:`TrainSettings`.
        sequential: Train the runs of a level one after another even when the backend can train
            them together (its optional ``train_batched``, see :meth:`train_together`).
    """

    def __init__(
        self,
        backend: TrainingBackend,
        model_name: str,
        data: Dataset,
        settings: Callable[[int, int | None], TrainSettings],
        sequential: bool = False,
    ) -> None:
        self.backend = backend
        self.sequential = bool(sequential)
        self.name = backend.name
        self.model_name = model_name
        self.data = data
        self.settings = settings

    def build(self, seed: int, reinit: bool = False) -> Any:
        """A fresh model initialized from ``seed`` (built-in models always start fresh)."""
        del reinit
        return self.backend.build(
            self.model_name, self.data.input_shape, self.data.num_classes, seed
        )

    def layer_names(self, model: Any) -> list[str]:
        """See :meth:`TrainingBackend.layer_names`."""
        return self.backend.layer_names(model)

    def layer_kinds(self, model: Any) -> list[str]:
        """See :meth:`TrainingBackend.layer_kinds`."""
        return list(self.backend.layer_kinds(model))

    def get_prunable(self, model: Any) -> list[np.ndarray]:
        """See :meth:`TrainingBackend.get_prunable`."""
        return self.backend.get_prunable(model)

    def snapshot(self, model: Any) -> list[np.ndarray]:
        """See :meth:`TrainingBackend.snapshot`."""
        return self.backend.snapshot(model)

    def restore(self, model: Any, snapshot: Sequence[np.ndarray]) -> None:
        """See :meth:`TrainingBackend.restore`."""
        self.backend.restore(model, snapshot)

    def train(self, model: Any, run: Any, progress: ProgressFn | None = None) -> TrainOutcome:
        """Train ``model`` for one :class:`~ltp_core.experiment.driver.RunSpec`."""
        masks = None if run.masks is None else list(run.masks)
        settings = self.settings(run.train_seed, run.capture_at)
        return self.backend.train(model, masks, self.data, settings, progress)

    @property
    def trains_together(self) -> bool:
        """Whether :meth:`train_together` may train runs together (else it gives ``None``)."""
        return not self.sequential and callable(getattr(self.backend, "train_batched", None))

    def train_together(
        self,
        models: Sequence[Any],
        runs: Sequence[Any],
        progress: Sequence[ProgressFn | None],
    ) -> list[TrainOutcome] | None:
        """Train independent runs together, or ``None`` to have the driver train them one by one.

        Uses the backend's optional ``train_batched(models, masks, data, settings, progress)``
        (``ltp_torch``'s and ``ltp_keras``'s stack the replicas; a backend without it, an
        architecture it cannot stack, or ``sequential=True`` gives ``None``).
        """
        batched = getattr(self.backend, "train_batched", None)
        if not self.trains_together or batched is None or len(runs) < 2:
            return None
        masks = [None if run.masks is None else list(run.masks) for run in runs]
        settings = [self.settings(run.train_seed, run.capture_at) for run in runs]
        outcomes: list[TrainOutcome] | None = batched(
            list(models), masks, self.data, settings, list(progress)
        )
        return outcomes

    def versions(self) -> dict[str, str]:
        """See :meth:`TrainingBackend.versions`."""
        return self.backend.versions()
