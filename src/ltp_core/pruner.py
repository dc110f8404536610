"""``LotteryTicketPruner`` over plain lists of NumPy arrays.

The state machine of a lottery-ticket experiment: initial weights, pretrained (trained) weights,
masks that only shrink, the cumulative pruning rate and the history of levels. The Keras and
PyTorch adapters wrap one of these and only move arrays in and out of models.
"""

from __future__ import annotations

import copy
import numbers
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import io
from .compute import compute_masks
from .masks import all_kept, apply_masks, count_kept, count_total
from .notices import NothingPrunedWarning
from .strategies import Strategy, resolve_strategy
from .summary import PrunableTensor, PruningSummary, build_summary
from .validation import check_fraction, check_masks, check_weight_list, short_repr

__all__ = ["LotteryTicketPruner"]


def _copies(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.array(a, copy=True) for a in arrays]


def _read_only(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Views that cannot be written through, so callers cannot change the pruner's state."""
    views = []
    for array in arrays:
        view = array.view()
        view.flags.writeable = False
        views.append(view)
    return views


def _check_names(names: Any, count: int, label: str = "names") -> list[str]:
    if names is None:
        return [f"layer_{i}" for i in range(count)]
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise TypeError(
            f"`{label}` must be a list of strings, one per weight array. "
            f"Received: {label}={short_repr(names)}"
        )
    result = [str(n) for n in names]
    if len(result) != count:
        raise ValueError(
            f"`{label}` must have one entry per weight array ({count}). "
            f"Received: {label} with {len(result)} entries"
        )
    if len(set(result)) != len(result):
        duplicates = sorted({n for n in result if result.count(n) > 1})
        raise ValueError(f"`{label}` must be unique. Received: duplicated names {duplicates}")
    return result


def _check_seed(seed: Any) -> int:
    if seed is None:
        return 0
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise TypeError(f"`seed` must be None or a non-negative int. Received: seed={seed!r}")
    return int(seed)


class LotteryTicketPruner:
    """Find lottery tickets on lists of weight arrays.

    Args:
        initial_weights: The prunable weights at initialization, one array per layer.
        names: Unique layer names (default ``layer_0``, ``layer_1``, ...).
        seed: Seeds tie-breaking and the ``random`` strategy (``None`` means ``0``: masks are
            reproducible by default).

    Example:
        >>> import numpy as np
        >>> w0 = [np.arange(1.0, 97.0).reshape(32, 3)]
        >>> pruner = LotteryTicketPruner(w0)
        >>> pruner.calc_prune_mask(w0, 0.5, "smallest_weights")
        >>> pruner.calc_prune_mask(w0, 0.2, "smallest_weights")
        >>> int((~pruner.masks[0]).sum()), round(pruner.cumulative_pruning_rate, 4)
        (57, 0.5938)
    """

    def __init__(
        self,
        initial_weights: Sequence[Any],
        names: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> None:
        arrays = check_weight_list(initial_weights, "initial_weights")
        self._names = _check_names(names, len(arrays))
        self._shapes = [tuple(int(d) for d in a.shape) for a in arrays]
        self._dtypes = [str(a.dtype) for a in arrays]
        self._seed = _check_seed(seed)
        self._initial = _copies(arrays)
        self._pretrained: list[np.ndarray] | None = None
        self._rewind: list[np.ndarray] | None = None
        self._masks = all_kept(self._shapes)
        self._level = 0
        self._history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ properties
    @property
    def names(self) -> list[str]:
        """Layer names, in weight-list order."""
        return list(self._names)

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """Shape of each prunable weight array."""
        return list(self._shapes)

    @property
    def dtypes(self) -> list[str]:
        """Dtype name of each initial weight array."""
        return list(self._dtypes)

    @property
    def seed(self) -> int:
        """Seed for tie-breaking and ``random``."""
        return self._seed

    @property
    def level(self) -> int:
        """Number of pruning levels applied since creation or :meth:`reset_masks`."""
        return self._level

    @property
    def history(self) -> list[dict[str, Any]]:
        """One record per level: strategy, fraction, layer rates, weights pruned, density."""
        return copy.deepcopy(self._history)

    @property
    def masks(self) -> list[np.ndarray]:
        """Current boolean masks (``True`` = kept), as read-only views.

        Writing into one raises ``ValueError``; change masks with :meth:`calc_prune_mask` or
        :meth:`set_masks` (copy with ``np.array(m)`` to edit freely).
        """
        return _read_only(self._masks)

    @property
    def initial_weights(self) -> list[np.ndarray]:
        """The initial weights held by the pruner (read-only views)."""
        return _read_only(self._initial)

    @property
    def pretrained_weights(self) -> list[np.ndarray] | None:
        """The trained weights set by :meth:`set_pretrained_weights` (read-only views), or
        ``None``."""
        return None if self._pretrained is None else _read_only(self._pretrained)

    @property
    def rewind_weights(self) -> list[np.ndarray]:
        """Weights to rewind to: those of :meth:`set_rewind_weights`, else the initial ones
        (read-only views)."""
        return _read_only(self._initial if self._rewind is None else self._rewind)

    @property
    def cumulative_pruning_rate(self) -> float:
        """Total fraction of prunable weights pruned so far (over all layers)."""
        total = count_total(self._masks)
        return 1.0 - count_kept(self._masks) / total

    def summary(self) -> PruningSummary:
        """What this pruner covers: per weight array its shape, count, kept weights and density.

        The core sees only the arrays it was given, so nothing is listed as left out (the
        adapters' ``summary()`` also lists the model's other parameters and why).

        Example:
            >>> p = LotteryTicketPruner([np.ones((2, 3)), np.ones(4)], names=["fc", "out"])
            >>> p.calc_prune_mask([np.arange(6.0).reshape(2, 3), np.ones(4)], 0.5,
            ...                   "smallest_weights")
            >>> [(t.name, t.count, t.kept) for t in p.summary().prunable]
            [('fc', 6, 3), ('out', 4, 2)]
        """
        return build_summary(
            [
                PrunableTensor(name, "weight", tuple(shape), kept=int(np.count_nonzero(mask)))
                for name, shape, mask in zip(self._names, self._shapes, self._masks, strict=True)
            ],
            [],
        )

    # ------------------------------------------------------------------ weights in
    def check_weights(self, weights: Any, argument_name: str = "weights") -> list[np.ndarray]:
        """Validate that ``weights`` match this pruner (count, shapes, float, finite).

        Returns:
            The arrays (not copied).
        """
        return check_weight_list(weights, argument_name, shapes=self._shapes)

    def set_pretrained_weights(self, weights: Sequence[Any]) -> None:
        """Record the trained weights ranked by ``large_final`` and the other final criteria."""
        arrays = self.check_weights(weights, "pretrained_weights")
        self._pretrained = _copies(arrays)

    def set_rewind_weights(self, weights: Sequence[Any]) -> None:
        """Record a late-rewinding point (weights after iteration ``k``, Frankle et al. 2019)."""
        arrays = self.check_weights(weights, "rewind_weights")
        self._rewind = _copies(arrays)

    # ------------------------------------------------------------------ pruning
    def calc_prune_mask(
        self,
        current_weights: Sequence[Any],
        prune_percentage: float,
        prune_strategy: str | Strategy,
        layer_rates: Mapping[str | int, float] | None = None,
        min_layer_density: float = 0.0,
    ) -> None:
        """Prune ``prune_percentage`` of the still-unpruned weights with ``prune_strategy``.

        Only the masks change; weights are never modified. A call that raises changes nothing.

        Args:
            current_weights: The weights now (ranked by ``smallest_weights``).
            prune_percentage: Fraction of the remaining weights to prune, ``0 <= p < 1``.
            prune_strategy: A name from ``ltp_core.STRATEGIES`` or a ``Strategy``.
            layer_rates: ``{name or index: multiplier}``; ``0`` excludes a layer.
            min_layer_density: Share of each layer's weights that must survive, ``0 <= d < 1``
                (see :func:`ltp_core.compute_masks`): a layer of ``n`` weights keeps at least
                ``ceil(d * n)``; global scope takes the next-ranked weights elsewhere instead.

        Raises:
            ValueError: Bad fraction or strategy, mismatched or non-finite weights, a strategy
                that needs pretrained weights before :meth:`set_pretrained_weights` was called,
                or a ``min_layer_density`` outside ``[0, 1)`` or impossible to meet.

        Warns:
            NothingPrunedWarning: The level pruned no weight (``floor(p * alive)`` is 0 in every
                scope); it is still recorded in :attr:`history`.
            LayerCollapseWarning: A global selection emptied a layer.
        """
        strategy = resolve_strategy(prune_strategy)
        fraction = check_fraction(prune_percentage)
        current = self.check_weights(current_weights, "current_weights")
        if "trained" in strategy.criterion.needs and self._pretrained is None:
            raise ValueError(
                f"Strategy {strategy.name!r} ranks the pretrained (trained) weights: call "
                f"set_pretrained_weights(...) before calc_prune_mask. "
                f"Received: prune_strategy={strategy.name!r} with no pretrained weights"
            )
        before = count_kept(self._masks)
        masks = compute_masks(
            strategy,
            fraction,
            initial=self._initial,
            trained=self._pretrained,
            current=current,
            masks=self._masks,
            seed=[self._seed, self._level],
            layer_rates=layer_rates,
            names=self._names,
            min_layer_density=min_layer_density,
            warn_if_nothing=False,  # said below, per level
        )
        self._masks = masks
        self._level += 1
        kept = count_kept(masks)
        record: dict[str, Any] = {
            "level": self._level,
            "strategy": strategy.name,
            "prune_percentage": fraction,
            "layer_rates": None
            if layer_rates is None
            else {str(k): float(v) for k, v in layer_rates.items()},
            "pruned": before - kept,
            "density": kept / count_total(masks),
        }
        if min_layer_density:
            record["min_layer_density"] = float(min_layer_density)
        self._history.append(record)
        if before == kept and fraction > 0 and before > 0:
            warnings.warn(
                f"Level {self._level} pruned no weight: {fraction} of the {before} remaining "
                f"weights rounds down to 0 in every scope ({strategy.scope} scope, exact count "
                "floor(p * alive)). Raise prune_percentage, use a global strategy (one count "
                "over all layers), or stop pruning here.",
                NothingPrunedWarning,
                stacklevel=2,
            )

    def apply_pruning(self, weights: Sequence[Any]) -> list[np.ndarray]:
        """Return copies of ``weights`` with pruned entries set to exactly zero."""
        arrays = check_weight_list(weights, "weights", shapes=self._shapes, check_finite=False)
        return apply_masks(arrays, self._masks)

    def masked_rewind_weights(self) -> list[np.ndarray]:
        """The rewind point (initial weights unless set otherwise) with pruned entries zeroed."""
        return apply_masks(self.rewind_weights, self._masks)

    def set_masks(self, masks: Sequence[Any]) -> None:
        """Replace the masks (e.g. loaded from a portable mask file).

        Raises:
            TypeError, ValueError: Masks of the wrong dtype, count or shapes.
        """
        checked = check_masks(masks, self._shapes)
        self._masks = [np.array(m, dtype=bool, copy=True) for m in checked]

    def reset_masks(self) -> None:
        """Keep every weight again; the cumulative rate, level and history restart from zero."""
        self._masks = all_kept(self._shapes)
        self._level = 0
        self._history = []

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to restore the pruner, as NumPy arrays and plain Python values."""
        return {
            "names": list(self._names),
            "shapes": [list(s) for s in self._shapes],
            "dtypes": list(self._dtypes),
            "seed": self._seed,
            "level": self._level,
            "cumulative_pruning_rate": self.cumulative_pruning_rate,
            "history": copy.deepcopy(self._history),
            "masks": _copies(self._masks),
            "initial_weights": _copies(self._initial),
            "pretrained_weights": None if self._pretrained is None else _copies(self._pretrained),
            "rewind_weights": None if self._rewind is None else _copies(self._rewind),
        }

    def check_state_dict(self, state: Any) -> dict[str, Any]:
        """Validate :meth:`state_dict` output against this pruner without changing anything.

        Every field is checked (names, shapes, dtypes, seed, level, history, masks and the
        weight lists), so that :meth:`load_state_dict` can assign without failing halfway.

        Returns:
            The validated fields, copied, ready to assign.

        Raises:
            TypeError, ValueError: A malformed field (the message names it and the value
                received) or a state that belongs to other layers.

        Example:
            >>> p = LotteryTicketPruner([np.ones(4)])
            >>> try:
            ...     p.check_state_dict({**p.state_dict(), "level": -1})
            ... except ValueError as error:
            ...     print(str(error).split("Received: ")[1])
            level=-1
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"`state` must be a dict. Received: state={short_repr(state)}")
        missing = [k for k in ("names", "shapes", "masks", "initial_weights") if k not in state]
        if missing:
            raise ValueError(
                f"`state` lacks entries {missing}. Received: keys {sorted(map(str, state))}"
            )
        shapes = _parse_shapes(state["shapes"])
        names = _state_list(state["names"], "names")
        if shapes != self._shapes:
            raise ValueError(
                "The state does not match this pruner's layers: "
                + _describe_differences(self._names, self._shapes, [str(n) for n in names], shapes)
            )
        checked_names = _check_names(names, len(shapes), "state['names']")
        dtypes = state.get("dtypes")
        if dtypes is not None:
            dtypes = _state_list(dtypes, "dtypes")
            if len(dtypes) != len(shapes) or not all(isinstance(d, str) for d in dtypes):
                raise ValueError(
                    f"`state['dtypes']` must hold one dtype name per weight array "
                    f"({len(shapes)}). Received: dtypes={short_repr(dtypes)}"
                )
        seed = state.get("seed")
        if seed is not None and not _is_count(seed):
            raise ValueError(
                f"`state['seed']` must be None or an integer >= 0. Received: seed={seed!r}"
            )
        level = state.get("level", 0)
        if not _is_count(level):
            raise ValueError(
                "`state['level']` must be an integer >= 0 (the number of pruning levels "
                f"applied). Received: level={short_repr(level)}"
            )
        history = _check_history(state.get("history", []))
        masks = check_masks(_state_list(state["masks"], "masks"), self._shapes, "state['masks']")
        initial = check_weight_list(
            state["initial_weights"], "state['initial_weights']", shapes=self._shapes
        )
        validated: dict[str, Any] = {
            "names": checked_names,
            "dtypes": None if dtypes is None else list(dtypes),
            "seed": _check_seed(None if seed is None else int(seed)),
            "level": int(level),
            "history": history,
            "masks": _copies(masks),
            "initial_weights": _copies(initial),
        }
        for key in ("pretrained_weights", "rewind_weights"):
            value = state.get(key)
            validated[key] = (
                None
                if value is None
                else _copies(check_weight_list(value, f"state[{key!r}]", shapes=self._shapes))
            )
        return validated

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict` output. The layers must match by order and shape.

        Everything is validated first (:meth:`check_state_dict`), then assigned: a call that
        raises leaves the pruner as it was.

        Raises:
            TypeError, ValueError: A malformed field (named in the message), or a state that
                belongs to other layers (the message lists the differences).
        """
        self._assign_state(self.check_state_dict(state))

    def _assign_state(self, validated: dict[str, Any]) -> None:
        """Assign the output of :meth:`check_state_dict` (cannot fail)."""
        self._names = validated["names"]
        self._dtypes = [str(a.dtype) for a in validated["initial_weights"]]
        self._seed = validated["seed"]
        self._level = validated["level"]
        self._history = validated["history"]
        self._masks = validated["masks"]
        self._initial = validated["initial_weights"]
        self._pretrained = validated["pretrained_weights"]
        self._rewind = validated["rewind_weights"]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the full state to a portable ``.npz`` file, atomically."""
        io.save_state(path, self.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LotteryTicketPruner:
        """Create a pruner from a file written by :meth:`save`."""
        state = io.load_state(path)
        if state.get("initial_weights") is None:
            raise ValueError(
                f"{os.fspath(path)!r} holds masks only (no initial weights); read it with "
                f"ltp_core.io.load_masks and pass the masks to set_masks(). "
                f"Received: path={os.fspath(path)!r}"
            )
        return cls.from_state_dict(state)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> LotteryTicketPruner:
        """Create a pruner from :meth:`state_dict` output."""
        pruner = cls(state["initial_weights"], names=state["names"], seed=state.get("seed"))
        pruner.load_state_dict(state)
        return pruner

    def __repr__(self) -> str:
        return (
            f"LotteryTicketPruner(layers={len(self._shapes)}, weights={count_total(self._masks)}, "
            f"level={self._level}, cumulative_pruning_rate={self.cumulative_pruning_rate:.4f})"
        )


def _is_count(value: Any) -> bool:
    """A non-negative integer (NumPy integers included, ``bool`` excluded)."""
    return (
        not isinstance(value, (bool, np.bool_))
        and isinstance(value, numbers.Integral)
        and int(value) >= 0
    )


def _state_list(value: Any, key: str) -> list[Any]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (Sequence, np.ndarray)):
        raise TypeError(
            f"`state[{key!r}]` must be a list. Received: {key}={short_repr(value)} "
            f"of type {type(value).__name__}"
        )
    return list(value)


def _parse_shapes(value: Any) -> list[tuple[int, ...]]:
    shapes = []
    for i, shape in enumerate(_state_list(value, "shapes")):
        dims = _state_list(shape, f"shapes[{i}]") if not isinstance(shape, tuple) else shape
        if not all(_is_count(d) for d in dims):
            raise ValueError(
                f"`state['shapes'][{i}]` must be a list of integers >= 0. "
                f"Received: shapes[{i}]={short_repr(shape)}"
            )
        shapes.append(tuple(int(d) for d in dims))
    return shapes


def _check_history(value: Any) -> list[dict[str, Any]]:
    records = _state_list(value, "history")
    for i, record in enumerate(records):
        if not isinstance(record, Mapping) or not all(isinstance(k, str) for k in record):
            raise ValueError(
                f"`state['history'][{i}]` must be a dict with string keys (one record per "
                f"level). Received: history[{i}]={short_repr(record)}"
            )
    return [copy.deepcopy(dict(record)) for record in records]


def _describe_differences(
    names_a: Sequence[str],
    shapes_a: Sequence[tuple[int, ...]],
    names_b: Sequence[str],
    shapes_b: Sequence[tuple[int, ...]],
) -> str:
    lines = []
    if len(shapes_a) != len(shapes_b):
        lines.append(f"{len(shapes_a)} prunable arrays here vs {len(shapes_b)} in the other")
    for i in range(max(len(shapes_a), len(shapes_b))):
        a = f"{names_a[i]} {shapes_a[i]}" if i < len(shapes_a) else "(none)"
        b = f"{names_b[i]} {shapes_b[i]}" if i < len(shapes_b) else "(none)"
        if i >= len(shapes_a) or i >= len(shapes_b) or shapes_a[i] != shapes_b[i]:
            lines.append(f"#{i}: expected {a}, got {b}")
    return "; ".join(lines)


def check_prune_percentage(value: Any) -> float:
    """Alias of :func:`ltp_core.validation.check_fraction` with the old package's name."""
    return check_fraction(value, "prune_percentage")
