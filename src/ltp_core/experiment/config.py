"""Experiment configuration: one frozen dataclass per experiment kind, JSON-friendly."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..compute import check_min_layer_density
from ..strategies import STRATEGIES, strategy_name
from ..validation import check_fraction
from .backend import TrainSettings
from .models import model_spec

__all__ = ["CONTROLS", "ImpConfig", "OneShotConfig", "TrainingDefaults", "default_iterations"]

CONTROLS: tuple[str, ...] = ("random_reinit", "random_prune")
"""Control arms run on the ticket's masks (``random_reinit``) or densities (``random_prune``)."""

_SMALL_DATASETS = {"digits": 1_500}


def default_iterations(model: str, dataset: str) -> int:
    """Training steps: the paper's for MNIST-sized data, fewer for the tiny ``digits`` set.

    Example:
        >>> default_iterations("lenet300_100", "mnist"), default_iterations("conv2", "digits")
        (50000, 1500)
    """
    return _SMALL_DATASETS.get(dataset, model_spec(model).iterations)


class TrainingDefaults:
    """Training settings shared by the experiment configs: given values, else the paper's."""

    model: str
    dataset: str
    iterations: int | None
    batch_size: int | None
    learning_rate: float | None
    optimizer: str | None
    eval_every: int | None

    @property
    def resolved_iterations(self) -> int:
        """Training steps per run."""
        return self.iterations or default_iterations(self.model, self.dataset)

    @property
    def resolved_batch_size(self) -> int:
        """Batch size."""
        return self.batch_size or model_spec(self.model).batch_size

    @property
    def resolved_learning_rate(self) -> float:
        """Learning rate."""
        return self.learning_rate or model_spec(self.model).learning_rate

    @property
    def resolved_optimizer(self) -> str:
        """Optimizer name."""
        return self.optimizer or model_spec(self.model).optimizer

    @property
    def resolved_eval_every(self) -> int:
        """Steps between evaluations (about 20 per run by default)."""
        return self.eval_every or max(1, self.resolved_iterations // 20)

    def train_settings(self, seed: int, capture_at: int | None = None) -> TrainSettings:
        """The :class:`TrainSettings` of one training run with data-order ``seed``."""
        return TrainSettings(
            iterations=self.resolved_iterations,
            batch_size=self.resolved_batch_size,
            optimizer=self.resolved_optimizer,
            learning_rate=self.resolved_learning_rate,
            eval_every=self.resolved_eval_every,
            seed=seed,
            capture_at=capture_at,
        )


@dataclass(frozen=True)
class ImpConfig(TrainingDefaults):
    """Settings of an iterative magnitude pruning experiment (``ltp imp``).

    ``None`` fields take the model's paper defaults (see :mod:`ltp_core.experiment.models`).
    ``sequential=True`` trains the runs of a level one after another; by default a backend that
    can train them together does (PyTorch and Keras, models without dropout), with the same
    results up to float32 rounding. It is not part of the experiment's identity (not in
    :meth:`to_dict`).
    ``min_layer_density`` (global scope only) keeps at least ``ceil(d * size)`` weights of every
    layer at every level; it is part of the identity when not ``0``.
    """

    framework: str = "torch"
    model: str = "lenet300_100"
    dataset: str = "digits"
    levels: int = 8
    rate: float | None = None
    conv_rate: float | None = None
    output_rate: float | None = None
    scope: str = "layer"
    strategy: str = "large_final"
    rewind_iteration: int = 0
    controls: tuple[str, ...] = CONTROLS
    seeds: int = 1
    first_seed: int = 0
    iterations: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    optimizer: str | None = None
    eval_every: int | None = None
    validation_fraction: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    sequential: bool = False
    min_layer_density: float = 0.0

    def __post_init__(self) -> None:
        model_spec(self.model)  # unknown model names fail here
        if not isinstance(self.sequential, bool):
            raise TypeError(
                f"`sequential` must be True or False. Received: sequential={self.sequential!r}"
            )
        if self.scope not in ("layer", "global"):
            raise ValueError(f"`scope` must be 'layer' or 'global'. Received: scope={self.scope!r}")
        if self.strategy not in STRATEGIES or self.strategy.endswith("_global"):
            base = sorted(n for n in STRATEGIES if not n.endswith("_global"))
            raise ValueError(
                f"`strategy` must be one of {base} (use `scope` for global). "
                f"Received: strategy={self.strategy!r}"
            )
        strategy_name(self.strategy, "global" if self.scope == "global" else "layer")
        if check_min_layer_density(self.min_layer_density) and self.scope != "global":
            raise ValueError(
                "`min_layer_density` applies to global selection (scope='global'): in layer "
                "scope every layer loses the same share of itself and nothing can take the "
                f"place of a floor. Received: min_layer_density={self.min_layer_density!r} "
                f"with scope={self.scope!r}"
            )
        for name in ("levels", "seeds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
        if self.rewind_iteration < 0:
            raise ValueError(
                "`rewind_iteration` must be >= 0 (0 rewinds to initialization). "
                f"Received: rewind_iteration={self.rewind_iteration!r}"
            )
        for name in ("rate", "conv_rate", "output_rate"):
            value = getattr(self, name)
            if value is not None:
                check_fraction(value, name)
        unknown = [c for c in self.controls if c not in CONTROLS]
        if unknown:
            raise ValueError(f"`controls` must be among {list(CONTROLS)}. Received: {unknown}")
        for name in ("iterations", "batch_size", "eval_every"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
        if self.learning_rate is not None and not (
            math.isfinite(self.learning_rate) and self.learning_rate > 0
        ):
            raise ValueError(
                f"`learning_rate` must be positive. Received: learning_rate={self.learning_rate!r}"
            )

    # Resolved values -------------------------------------------------------
    @property
    def dense_fraction(self) -> float:
        """Per-level fraction for hidden dense layers."""
        return self.rate if self.rate is not None else model_spec(self.model).dense_rate

    @property
    def conv_fraction(self) -> float:
        """Per-level fraction for conv layers."""
        if self.conv_rate is not None:
            return self.conv_rate
        if self.rate is not None:
            return self.rate
        return model_spec(self.model).conv_rate

    @property
    def output_fraction(self) -> float:
        """Per-level fraction for the output layer (half of ``rate`` by default, as the paper)."""
        if self.output_rate is not None:
            return self.output_rate
        if self.rate is not None:
            return self.rate / 2
        return model_spec(self.model).output_rate

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict, resolved defaults included."""
        data = asdict(self)
        # How runs are scheduled is not part of the experiment: batched and sequential runs
        # give the same results, so either may resume the other's folder.
        del data["sequential"]
        if not self.min_layer_density:  # folders written before the option resume unchanged
            del data["min_layer_density"]
        data["controls"] = list(self.controls)
        data["resolved"] = {
            "dense_fraction": self.dense_fraction,
            "conv_fraction": self.conv_fraction,
            "output_fraction": self.output_fraction,
            "iterations": self.resolved_iterations,
            "batch_size": self.resolved_batch_size,
            "learning_rate": self.resolved_learning_rate,
            "optimizer": self.resolved_optimizer,
            "eval_every": self.resolved_eval_every,
        }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImpConfig:
        """Inverse of :meth:`to_dict` (ignores ``resolved``)."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        if "controls" in values:
            values["controls"] = tuple(values["controls"])
        return cls(**values)


@dataclass(frozen=True)
class OneShotConfig(TrainingDefaults):
    """Settings of the old package's one-shot experiment (``ltp oneshot``).

    ``min_layer_density`` (every strategy global) keeps at least ``ceil(d * size)`` weights of
    every layer at every sparsity; it is part of the identity when not ``0``.
    """

    framework: str = "torch"
    model: str = "mnist_cnn"
    dataset: str = "digits"
    strategies: tuple[str, ...] = ("smallest_weights", "smallest_weights_global", "large_final")
    sparsities: tuple[float, ...] = (0.2, 0.5578, 0.896, 0.9933)
    seeds: int = 1
    first_seed: int = 0
    iterations: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    optimizer: str | None = None
    eval_every: int | None = None
    validation_fraction: float | None = None
    min_layer_density: float = 0.0

    def __post_init__(self) -> None:
        model_spec(self.model)
        for strategy in self.strategies:
            if strategy not in STRATEGIES:
                raise ValueError(
                    f"Unknown strategy; valid: {sorted(STRATEGIES)}. Received: {strategy!r}"
                )
        previous = 0.0
        for s in self.sparsities:
            check_fraction(s, "sparsities")
            if s < previous:
                raise ValueError(
                    f"`sparsities` must be increasing. Received: sparsities={list(self.sparsities)}"
                )
            previous = s
        if check_min_layer_density(self.min_layer_density):
            layer = [name for name in self.strategies if STRATEGIES[name].scope != "global"]
            if layer:
                raise ValueError(
                    "`min_layer_density` applies to global strategies; drop the layer-scope "
                    f"ones {layer} from `strategies` (in layer scope every layer loses the same "
                    "share of itself and nothing can take the place of a floor). "
                    f"Received: min_layer_density={self.min_layer_density!r}"
                )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        data = asdict(self)
        if not self.min_layer_density:  # folders written before the option resume unchanged
            del data["min_layer_density"]
        data["strategies"] = list(self.strategies)
        data["sparsities"] = list(self.sparsities)
        return data
