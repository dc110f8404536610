"""``LotteryTicketPruner`` for Keras 3 models: the core pruner plus variable bookkeeping.

Every pruning decision is made by :class:`ltp_core.LotteryTicketPruner` on NumPy copies of the
prunable variables; this class only finds those variables, maps their paths to indices, and
writes masked values back (weights, optimizer slots, rewind points).
"""

from __future__ import annotations

import logging
import numbers
import os
import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import keras
import numpy as np

from ltp_core import LotteryTicketPruner as CorePruner
from ltp_core import apply_masks
from ltp_core import io as core_io
from ltp_core.compute import check_layer_rate
from ltp_core.layout import load_masks_for
from ltp_core.pruner import check_prune_percentage
from ltp_core.summary import PrunableTensor, PruningSummary, build_summary, warn_if_low_coverage

from .masking import MaskEnforcer
from .optimizer_state import reset_moving_averages, zero_pruned_slots
from .variables import (
    Prunable,
    left_out_variables,
    model_weights,
    read_arrays,
    select_prunable_variables,
    sync_model_state,
    unique_names,
    variable_kinds,
    variable_roles,
    write_arrays,
)

__all__ = ["LotteryTicketPruner"]

logger = logging.getLogger(__name__)

_LAYOUT = "keras"

_INCLUDE_MORE = (
    "pass prunable='with_embeddings' (embeddings too), prunable='all_matrices' (every weight "
    "matrix except biases and normalization) or a list of variable paths to "
    "ltp_keras.LotteryTicketPruner"
)

_LegacyKey = tuple[int, tuple[int, ...]]


def _model_argument(model: Any, name: str, old_value: Any, old_name: str) -> keras.Model:
    """``model`` or its lottery-ticket-pruner 0.8.1 keyword name, exactly one of them."""
    if (model is None) == (old_value is None):
        raise TypeError(
            f"Pass the model once, as `{name}` (or by its 0.8.1 name `{old_name}`). "
            f"Received: {name}={model!r}, {old_name}={old_value!r}"
        )
    return model if model is not None else old_value


def _legacy_positions(
    model: keras.Model, variables: Sequence[keras.Variable]
) -> list[tuple[int, int, int] | None]:
    """``(index in model.layers, index in that layer's weights, its weight count)`` of each
    variable: how lottery-ticket-pruner 0.8.1 addressed weights."""
    found: dict[int, tuple[int, int, int]] = {}
    # A layer passed as the model (no ``layers`` list) has no 0.8.1 positions.
    for layer_index, layer in enumerate(getattr(model, "layers", ())):
        weights = layer.weights
        for weight_index, weight in enumerate(weights):
            found.setdefault(id(weight), (layer_index, weight_index, len(weights)))
    return [found.get(id(v)) for v in variables]


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _is_index(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _key_repr(key: Any) -> str:
    return repr(key.path) if isinstance(key, keras.Variable) else repr(key)


def _read_only(array: np.ndarray) -> np.ndarray:
    array = np.array(array)
    array.flags.writeable = False
    return array


class LotteryTicketPruner:
    """Lottery-ticket pruning of a Keras 3 model (TensorFlow, torch or JAX backend).

    The methods mirror :class:`ltp_core.LotteryTicketPruner` but take a model. The model passed
    later may be another instance of the same architecture: prunable variables are matched by
    position and shape.

    Args:
        model: A built ``keras.Model``; its current weights are the initial weights
            (``initial_model=`` is accepted as its lottery-ticket-pruner 0.8.1 name).
        prunable: ``None`` for the default selection (kernels of Dense, EinsumDense,
            convolution, attention and recurrent layers; no biases, normalization or
            embeddings), a selector name of :data:`ltp_keras.SELECTORS` (``"with_embeddings"``,
            ``"all_matrices"``, ``"linear_and_conv"`` for the default of 0.1), a predicate
            over ``keras.Variable``, or a list of variable paths. The selection is made once,
            here; later calls take the variables at the same positions of ``model.weights``
            (so freezing a layer later does not change it).
        seed: Seed for tie-breaking and the ``random`` strategy (``None`` means ``0``).

    Warns:
        LowCoverageWarning: The selection holds less than half of the model's trainable
            parameters (:meth:`summary` lists what is left out and why).

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
        ...                           keras.layers.Dense(2)])
        >>> pruner = LotteryTicketPruner(model)
        >>> pruner.calc_prune_mask(model, 0.5, "smallest_weights")
        >>> pruner.apply_pruning(model)
        >>> round(pruner.cumulative_pruning_rate, 2)
        0.5
    """

    def __init__(
        self,
        model: keras.Model | None = None,
        *,
        prunable: Prunable = None,
        seed: int | None = None,
        initial_model: keras.Model | None = None,
    ):
        model = _model_argument(model, "model", initial_model, "initial_model")
        sync_model_state(model)
        variables = select_prunable_variables(model, prunable)
        self._prunable = prunable
        positions = {id(v): i for i, v in enumerate(model_weights(model))}
        self._positions = [positions[id(v)] for v in variables]
        self._weight_count = len(positions)
        # The variables themselves, weakly: a model that holds them (e.g. one that wraps this
        # model as a layer) is matched by identity, not by position.
        self._variable_refs = [weakref.ref(v) for v in variables]
        self._rewinds = 0  # rewinds so far (PrunerCallback(use_dwr=True) rescales after each)
        names = unique_names(variables)
        self._core = CorePruner(read_arrays(variables), names=names, seed=seed)
        self._index = {name: i for i, name in enumerate(names)}
        self._kinds = variable_kinds(model, variables)
        roles = variable_roles(model)
        self._roles = [roles.get(id(v), "other") for v in variables]
        self._left_out = left_out_variables(model, variables)
        # Coverage counts trainable parameters only (frozen ones are listed by summary()).
        trainable = [
            t for t, v in zip(self.summary().prunable, variables, strict=True) if v.trainable
        ]
        warn_if_low_coverage(
            build_summary(trainable, left_out_variables(model, variables, frozen=False)),
            _INCLUDE_MORE,
        )
        others = self._other_variables(model, variables, check=False)
        self._other_shapes = [tuple(v.shape) for v in others]
        self._initial_others = read_arrays(others)
        self._rewind_others: list[np.ndarray] | None = None
        # False after load_state_dict: the non-prunable rewind weights are this pruner's own,
        # not those of the run the state was saved from (load_checkpoint restores them).
        self._others_match_state = True
        self._legacy_positions = _legacy_positions(model, variables)
        self._enforcers: weakref.WeakSet[MaskEnforcer] = weakref.WeakSet()
        logger.debug("Pruning %d variables of %s: %s", len(names), model.name, names)

    # ------------------------------------------------------------------ core state
    @property
    def core(self) -> CorePruner:
        """The wrapped framework-free pruner (for ``save``, ``history``, reports...)."""
        return self._core

    @property
    def names(self) -> list[str]:
        """Paths of the prunable variables, in order."""
        return self._core.names

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the prunable variables."""
        return self._core.shapes

    @property
    def masks(self) -> list[np.ndarray]:
        """Boolean masks, ``True`` = kept (read-only)."""
        return self._core.masks

    @property
    def kinds(self) -> list[str]:
        """Layout kind of each prunable variable: ``"dense"``, ``"conv"``,
        ``"conv_transpose"`` or ``"other"`` (see :mod:`ltp_core.layout`)."""
        return list(self._kinds)

    @property
    def cumulative_pruning_rate(self) -> float:
        """Total fraction of prunable weights pruned so far."""
        return self._core.cumulative_pruning_rate

    @property
    def level(self) -> int:
        """Number of pruning levels applied since creation or :meth:`reset_masks`."""
        return self._core.level

    def index_of(self, path: str) -> int:
        """Position of the prunable variable with this path in :attr:`names` and :attr:`masks`."""
        if path not in self._index:
            raise ValueError(f"Unknown variable path; known: {self.names}. Received: path={path!r}")
        return self._index[path]

    def summary(self) -> PruningSummary:
        """What this pruner prunes and what it leaves out of the model, and why.

        One row per prunable variable (path, role such as ``"dense"``, ``"attention"``,
        ``"depthwise"`` or ``"recurrent"``, shape, weights, kept, density, share of the
        model's trainable parameters), then the trainable parameters left out grouped by
        reason (``"bias"``, ``"normalization"``, ``"embedding"``...). ``print()`` it, or use
        ``to_markdown()``/``to_dict()``/``to_json()``.

        Example:
            >>> import keras
            >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="d")],
            ...                          name="m")
            >>> pruner = LotteryTicketPruner(model)
            >>> pruner.calc_prune_mask(model, 0.5, "smallest_weights")
            >>> print(pruner.summary())  # doctest: +NORMALIZE_WHITESPACE
            prunable    kind   shape   weights  kept  density  share
            m/d/kernel  dense  (4, 8)  32       16    50.00%   80.00%
            total                      32       16    50.00%   80.00%
            left out: 8 parameters (20.00%)
              bias: 8 in 1 tensor (m/d/bias)
        """
        prunable = [
            PrunableTensor(name, role, shape, kept=int(mask.sum()))
            for name, role, shape, mask in zip(
                self.names, self._roles, self.shapes, self.masks, strict=True
            )
        ]
        return build_summary(prunable, self._left_out)

    # ------------------------------------------------------------------ variables
    def prunable_variables(self, model: keras.Model) -> list[keras.Variable]:
        """The model's variables that correspond to this pruner's masks.

        Raises:
            ValueError: The model's prunable variables differ in count or shape.
        """
        weights = model_weights(model)
        originals = [ref() for ref in self._variable_refs]
        if originals and all(v is not None for v in originals):
            present = {id(w) for w in weights}
            if all(id(v) in present for v in originals):
                return originals  # type: ignore[return-value]
        count = getattr(self, "_weight_count", len(weights))
        if len(weights) != count:
            raise ValueError(
                f"The model does not hold this pruner's variables and is not another instance "
                f"of its architecture: it has {len(weights)} weights, the pruner's model had "
                f"{count}. Pass the model the pruner was created with (or a model wrapping it), "
                f"or a model of the same architecture. Received: model {model.name!r}"
            )
        variables = [weights[i] for i in self._positions if i < len(weights)]
        shapes = [tuple(v.shape) for v in variables]
        if shapes != self.shapes:
            got = [f"{v.path} {tuple(v.shape)}" for v in variables]
            want = [f"{n} {s}" for n, s in zip(self.names, self.shapes, strict=True)]
            raise ValueError(
                f"The model's prunable variables do not match this pruner's: expected {want}. "
                f"Received: model {model.name!r} with {got}"
            )
        return variables

    def _other_variables(
        self, model: keras.Model, variables: Sequence[keras.Variable], check: bool = True
    ) -> list[keras.Variable]:
        ids = {id(v) for v in variables}
        seen: set[int] = set()
        others = []
        for v in model.weights:
            if id(v) not in ids and id(v) not in seen:
                seen.add(id(v))
                others.append(v)
        if check and [tuple(v.shape) for v in others] != self._other_shapes:
            raise ValueError(
                f"The model's non-prunable weights do not match the model this pruner was "
                f"created with ({len(self._other_shapes)} arrays of shapes "
                f"{self._other_shapes}). Received: model {model.name!r} with "
                f"{[tuple(v.shape) for v in others]}"
            )
        return others

    def _read(self, model: keras.Model) -> list[np.ndarray]:
        sync_model_state(model)
        return read_arrays(self.prunable_variables(model))

    def _write_masked(
        self, model: keras.Model, variables: Sequence[keras.Variable], arrays: list[np.ndarray]
    ) -> None:
        write_arrays(variables, apply_masks(arrays, self.masks))
        zero_pruned_slots(getattr(model, "optimizer", None), variables, self.masks)

    def _layer_rates(
        self, model: keras.Model, layer_rates: Mapping[Any, float] | None, fraction: Any
    ) -> Mapping[Any, float] | None:
        if layer_rates is None or not isinstance(layer_rates, Mapping):
            return layer_rates
        fraction = check_prune_percentage(fraction)
        variables = self.prunable_variables(model)
        result: dict[Any, float] = {}
        origin: dict[Any, Any] = {}  # resolved key -> the user's key, for error messages
        for key, rate in layer_rates.items():
            if isinstance(key, keras.Variable):
                matches = [i for i, v in enumerate(variables) if v is key]
                resolved = matches if matches else [str(key.path)]
            elif isinstance(key, str) and key not in self._index:
                # A layer name selects that layer's prunable variables.
                matches = [i for i, n in enumerate(self.names) if key in n.split("/")[:-1]]
                resolved = matches if matches else [key]
            elif isinstance(key, str):
                resolved = [self._index[key]]
            elif _is_index(key) and -len(self.names) <= int(key) < len(self.names):
                resolved = [int(key) % len(self.names)]
            else:
                resolved = [key]
            known = all(type(item) is int and 0 <= item < len(self.names) for item in resolved)
            if known:  # unknown keys: the core's error; a bad value: named as the user wrote it
                check_layer_rate(_key_repr(key), rate, fraction)
            for item in resolved:
                if (
                    item in result
                    and _is_real(rate)
                    and _is_real(result[item])
                    and float(rate) != float(result[item])
                ):
                    other = origin[item]
                    name = self.names[item] if isinstance(item, int) else item
                    raise ValueError(
                        f"`layer_rates` keys {_key_repr(other)} and {_key_repr(key)} both select "
                        f"{name!r} with different multipliers; give each layer one. Received: "
                        f"layer_rates[{_key_repr(other)}]={layer_rates[other]!r}, "
                        f"layer_rates[{_key_repr(key)}]={rate!r}"
                    )
                result[item] = rate
                origin[item] = key
        return result

    # ------------------------------------------------------------------ the old API
    def set_pretrained_weights(
        self, model: keras.Model | None = None, *, pretrained_model: keras.Model | None = None
    ) -> None:
        """Record the trained weights of ``model`` (ranked by ``large_final`` and friends).

        ``pretrained_model=`` is accepted as the 0.8.1 name of ``model``.
        """
        model = _model_argument(model, "model", pretrained_model, "pretrained_model")
        self._core.set_pretrained_weights(self._read(model))

    def calc_prune_mask(
        self,
        model: keras.Model,
        prune_percentage: float,
        prune_strategy: str,
        layer_rates: Mapping[Any, float] | None = None,
        min_layer_density: float = 0.0,
    ) -> None:
        """Prune ``prune_percentage`` of the still-unpruned weights; the model is not changed.

        Args:
            model: Supplies the current weights (ranked by ``smallest_weights``).
            prune_percentage: Fraction of the remaining weights to prune, ``0 <= p < 1``.
            prune_strategy: A name from ``ltp_core.STRATEGIES``.
            layer_rates: ``{path, layer name, index or variable: multiplier}``.
            min_layer_density: Share of each layer's weights that must survive (see
                :func:`ltp_core.compute_masks`).
        """
        self._core.calc_prune_mask(
            self._read(model),
            prune_percentage,
            prune_strategy,
            layer_rates=self._layer_rates(model, layer_rates, prune_percentage),
            min_layer_density=min_layer_density,
        )
        self._masks_changed()

    def apply_pruning(self, model: keras.Model) -> None:
        """Zero the pruned weights of ``model`` and their optimizer state, in place."""
        variables = self.prunable_variables(model)
        sync_model_state(model)
        self._write_masked(model, variables, read_arrays(variables))

    def apply_dwr(self, model: keras.Model) -> None:
        """Dynamic weight rescaling (Zhou et al. 2019, section 5.2), applied once.

        Each prunable array of the model's *current* weights is masked and multiplied by
        ``size / kept``. Calling it twice scales twice: call it once after rewinding
        (``PrunerCallback(use_dwr=True)`` does that once per new set of masks).
        """
        variables = self.prunable_variables(model)
        sync_model_state(model)
        scaled = []
        for array, mask in zip(read_arrays(variables), self.masks, strict=True):
            kept = int(mask.sum())
            factor = mask.size / kept if kept else 0.0
            scaled.append((array * factor).astype(array.dtype))
        self._write_masked(model, variables, scaled)
        # An optimizer's EMA would write the unscaled weights back (every
        # ``ema_overwrite_frequency`` steps and at the end of fit).
        reset_moving_averages(getattr(model, "optimizer", None), variables)

    def reset_masks(self) -> None:
        """Keep every weight again (cumulative rate and level restart from zero)."""
        self._core.reset_masks()
        self._masks_changed()

    # ------------------------------------------------------------------ rewinding
    def set_rewind_weights(self, model: keras.Model) -> None:
        """Capture all of ``model``'s weights as the rewind point (late resetting)."""
        variables = self.prunable_variables(model)
        sync_model_state(model)
        self._core.set_rewind_weights(read_arrays(variables))
        self._rewind_others = read_arrays(self._other_variables(model, variables))

    def rewind(self, model: keras.Model) -> None:
        """Set every weight of ``model`` to the rewind point (initial weights unless
        :meth:`set_rewind_weights` was called), with pruned weights and slots zeroed.
        Variable identity is kept (optimizers hold references). An optimizer with
        ``use_ema=True`` restarts its averages at the rewound weights (else its next overwrite
        would bring the trained weights back); other optimizer state (moments, step count) is
        kept: compile with a fresh optimizer for a run that starts from scratch."""
        variables = self.prunable_variables(model)
        others = self._other_variables(model, variables)
        if not getattr(self, "_others_match_state", True) and others:
            warnings.warn(
                "rewind: this pruner's state was loaded with load_state_dict, which holds the "
                "prunable weights only; the other weights (biases, normalization, embeddings: "
                f"{len(others)} arrays) are rewound to the values the model had when this pruner "
                "was created (or at its own set_rewind_weights), not to those of the saved "
                "run. Save and resume with ltp_keras.save_checkpoint/load_checkpoint, which "
                "keep them.",
                UserWarning,
                stacklevel=2,
            )
        sync_model_state(model)
        write_arrays(others, self._rewind_others or self._initial_others)
        self._write_masked(model, variables, self._core.rewind_weights)
        # An optimizer's EMA averages still hold the trained weights: the next overwrite (every
        # ``ema_overwrite_frequency`` steps, and at the end of fit) would undo the rewind.
        reset_moving_averages(getattr(model, "optimizer", None), [*variables, *others])
        # PrunerCallback(use_dwr=True) rescales rewound weights again, even for the same masks.
        self._rewinds += 1

    # ------------------------------------------------------------------ training helpers
    def enforce_masks(self, model: keras.Model, *, optimizer: Any = None) -> MaskEnforcer:
        """A :class:`~ltp_keras.masking.MaskEnforcer` for custom training loops.

        Args:
            model: The model (or one holding the pruner's variables).
            optimizer: The Keras optimizer of your loop. Pass it when it has ``use_ema=True``:
                Keras updates the moving averages before the constraints zero the pruned
                weights, so only then are the averages' pruned entries kept at zero (and its
                state at pruned entries is zeroed on entering the ``with`` block).

        Example:
            >>> import keras
            >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
            >>> pruner = LotteryTicketPruner(model)
            >>> pruner.calc_prune_mask(model, 0.5, "smallest_weights")
            >>> with pruner.enforce_masks(model):
            ...     pass  # optimizer.apply(...) steps keep pruned weights at zero here
        """
        enforcer = MaskEnforcer(self.prunable_variables(model), self.masks, optimizer=optimizer)
        self._enforcers.add(enforcer)
        return enforcer

    def _masks_changed(self) -> None:
        """Give the new masks to the enforcers of :meth:`enforce_masks` (a ``with`` block that
        spans several levels masks with the current ones from the next optimizer step on)."""
        installed = False
        for enforcer in list(self._enforcers):
            enforcer.update(self.masks)
            installed = installed or enforcer.installed
        if installed and keras.backend.backend() == "jax":
            warnings.warn(
                "The masks changed inside `with pruner.enforce_masks(model)`: a train step that "
                "jax.jit traced before keeps the old masks. Trace the step again (define it "
                "anew, or jax.jit it again) after calc_prune_mask/set_masks.",
                UserWarning,
                stacklevel=3,
            )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_enforcers", None)  # live training helpers, not pruner state
        state.pop("_variable_refs", None)  # a copy matches models by position
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_rewinds", 0)  # pickled before rewinds were counted
        self.__dict__.update(state)
        self._enforcers = weakref.WeakSet()
        self._variable_refs = []

    # ------------------------------------------------------------------ 0.8.1 compatibility
    @property
    def prunable_tuples(self) -> list[tuple[int, tuple[int, ...]]]:
        """lottery-ticket-pruner 0.8.1 compatibility: ``(layer index, weight indices)`` keys.

        One key per top-level layer (``model.layers[i]``) holding prunable weights, with the
        positions of those weights in ``layer.get_weights()``. Use :attr:`names` instead.
        """
        return list(self._legacy_groups())

    @property
    def prune_masks_map(self) -> Mapping[_LegacyKey, tuple[np.ndarray | None, ...]]:
        """lottery-ticket-pruner 0.8.1 compatibility: the masks keyed like the old package's.

        ``{(layer index, weight indices): masks}`` where ``masks`` has one entry per weight of
        ``model.layers[layer index]``: a float 0/1 array (``1`` = kept) for prunable weights,
        ``None`` for the others. A read-only snapshot: use :attr:`masks` (bool, ``True`` = kept,
        in the order of :attr:`names`) and :meth:`set_masks` instead.

        Example:
            >>> import keras
            >>> inputs = keras.Input((4,))
            >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
            >>> pruner = LotteryTicketPruner(model)
            >>> pruner.calc_prune_mask(model, 0.5, "smallest_weights")
            >>> masks = pruner.prune_masks_map[(1, (0,))]  # layer 0 is the InputLayer
            >>> masks[0].dtype, float(masks[0].sum()), masks[1]
            (dtype('float64'), 4.0, None)
        """
        masks = self.masks
        result: dict[_LegacyKey, tuple[np.ndarray | None, ...]] = {}
        for key, members in self._legacy_groups().items():
            entries: list[np.ndarray | None] = [None] * members[0][2]
            for i, weight_index, _ in members:
                entries[weight_index] = _read_only(masks[i].astype(np.float64))
            result[key] = tuple(entries)
        return MappingProxyType(result)

    def iterate_prunables(self, model: keras.Model) -> Iterator[tuple[Any, ...]]:
        """lottery-ticket-pruner 0.8.1 compatibility: one tuple per prunable weight of ``model``.

        Yields ``(key, layer, weight index, initial weights, pretrained weights or None, current
        weights, mask)`` as 0.8.1 did (``key`` as in :attr:`prune_masks_map`; arrays are
        read-only copies, the mask float 0/1). Use :meth:`prunable_variables` instead.

        Example:
            >>> import keras
            >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
            >>> pruner = LotteryTicketPruner(model)
            >>> [(key, layer.name == model.layers[0].name, index, current.shape)
            ...  for key, layer, index, _, _, current, _ in pruner.iterate_prunables(model)]
            [((0, (0,)), True, 0, (4, 2))]
        """
        current = self._read(model)
        pretrained = self._core.pretrained_weights
        initial = self._core.initial_weights
        masks = self.masks
        for key, members in self._legacy_groups().items():
            layer = model.layers[key[0]]
            for i, weight_index, _ in members:
                yield (
                    key,
                    layer,
                    weight_index,
                    _read_only(initial[i]),
                    None if pretrained is None else _read_only(pretrained[i]),
                    _read_only(current[i]),
                    _read_only(masks[i].astype(np.float64)),
                )

    def _legacy_groups(self) -> dict[tuple[int, tuple[int, ...]], list[tuple[int, int, int]]]:
        """``{(layer index, weight indices): [(mask index, weight index, layer weights)]}``."""
        missing = [n for n, p in zip(self.names, self._legacy_positions, strict=True) if p is None]
        if missing:
            raise ValueError(
                f"The 0.8.1 structures address weights by top-level layer, and these prunable "
                f"variables belong to no layer in `model.layers`: use `names` and `masks`. "
                f"Received: {missing}"
            )
        by_layer: dict[int, list[tuple[int, int, int]]] = {}
        for i, position in enumerate(self._legacy_positions):
            if position is None:  # reported above
                continue
            layer_index, weight_index, count = position
            by_layer.setdefault(layer_index, []).append((i, weight_index, count))
        groups = {}
        for layer_index in sorted(by_layer):
            members = sorted(by_layer[layer_index], key=lambda m: m[1])
            groups[(layer_index, tuple(m[1] for m in members))] = members
        return groups

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """The core pruner's state (masks, initial/pretrained/rewind prunable weights)."""
        return self._core.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (non-prunable rewind weights are not included).

        Variables are matched by order and shape; the names stay this model's variable paths
        (a state saved from another instance, whose auto-generated layer names differ, does
        not rename them, so ``layer_rates``, ``index_of`` and ``summary`` keep meaning this
        model's layers).
        """
        validated = self._core.check_state_dict(state)  # errors name the saved variables
        own = list(self._index)
        if validated["names"] != own:
            logger.info(
                "Loaded a state saved with other variable paths %s; keeping %s",
                validated["names"],
                own,
            )
        self._core._assign_state({**validated, "names": own})
        self._others_match_state = False
        self._masks_changed()

    def _others_rewind_state(self) -> dict[str, np.ndarray]:
        """The non-prunable weights' rewind point, as ``.npz`` entries (``save_checkpoint``)."""
        arrays = {f"initial_{i}": a for i, a in enumerate(self._initial_others)}
        if self._rewind_others is not None:
            arrays.update({f"rewind_{i}": a for i, a in enumerate(self._rewind_others)})
        return arrays

    def _check_others_rewind_state(
        self, arrays: Mapping[str, np.ndarray]
    ) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """Validate :meth:`_others_rewind_state` output against this model; change nothing."""
        count = len(self._other_shapes)
        expected = {f"initial_{i}" for i in range(count)}
        rewind = {f"rewind_{i}" for i in range(count)}
        keys = set(arrays)
        if keys not in (expected, expected | rewind) or any(
            tuple(np.shape(arrays[f"{kind}_{i}"])) != shape
            for kind in ("initial", "rewind")
            for i, shape in enumerate(self._other_shapes)
            if f"{kind}_{i}" in keys
        ):
            shapes = {key: tuple(np.shape(value)) for key, value in sorted(arrays.items())}
            raise ValueError(
                f"The non-prunable rewind weights do not match this pruner's model "
                f"({count} arrays of shapes {self._other_shapes}). Received: {shapes}"
            )
        initial = [np.array(arrays[f"initial_{i}"]) for i in range(count)]
        late = [np.array(arrays[f"rewind_{i}"]) for i in range(count)] if rewind <= keys else None
        return initial, late

    def _load_others_rewind_state(
        self, checked: tuple[list[np.ndarray], list[np.ndarray] | None]
    ) -> None:
        self._initial_others, self._rewind_others = checked
        self._others_match_state = True

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the core pruner's state to a portable ``.npz`` file."""
        self._core.save(path)

    def set_masks(self, masks: Sequence[Any]) -> None:
        """Replace the masks (bool arrays, ``True`` = kept); the model is not changed.

        Raises:
            TypeError, ValueError: Masks of the wrong dtype, count or shapes (nothing changes).
        """
        self._core.set_masks(masks)
        self._masks_changed()

    def save_masks(self, path: str | os.PathLike[str]) -> None:
        """Write the masks to a portable mask file (``.npz``, the core's format), atomically.

        The file records the variable paths, the layout tag ``"keras"`` and each array's kind,
        so the torch adapter can transpose Dense and convolution masks into its own layout.

        Example:
            >>> import os, tempfile, keras
            >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
            >>> pruner = LotteryTicketPruner(model)
            >>> pruner.calc_prune_mask(model, 0.5, "smallest_weights")
            >>> path = os.path.join(tempfile.mkdtemp(), "masks.npz")
            >>> pruner.save_masks(path)
            >>> other = LotteryTicketPruner(model)
            >>> other.load_masks(path)
            >>> bool((other.masks[0] == pruner.masks[0]).all())
            True
        """
        core_io.save_masks(
            path,
            self._core.masks,
            self.names,
            framework="keras",
            layout=_LAYOUT,
            kinds=list(self._kinds),
            level=self.level,
            cumulative_pruning_rate=self.cumulative_pruning_rate,
        )

    def load_masks(self, path: str | os.PathLike[str], *, layout: str | None = None) -> None:
        """Replace the masks with those of a portable mask or state file.

        Masks are matched to the prunable variables by order and shape (names are recorded but
        differ between frameworks). A file in torch layout (Linear weights ``(out, in)``,
        convolution weights ``(out, in, *kernel)``) is permuted into Keras layout first. The
        model is not changed: call :meth:`apply_pruning` or :meth:`rewind`, or let a
        :class:`~ltp_keras.PrunerCallback` pick the masks up.

        Args:
            path: A file written by :meth:`save_masks`, the torch adapter, ``ltp mask`` or
                :func:`ltp_core.io.save_masks`.
            layout: ``"keras"`` or ``"torch"``: the layout of a file that does not record one
                (default ``"keras"``). A file that records its layout must agree.

        Raises:
            FileNotFoundError: No such file.
            ValueError: A corrupt, truncated or foreign file, or masks that do not match this
                pruner (the message lists every difference). Nothing changes then.
        """
        masks, saved_layout = load_masks_for(
            path, self.names, self.shapes, self._kinds, _LAYOUT, layout
        )
        self.set_masks(masks)
        logger.info("Loaded masks from %s (%s layout)", os.fspath(path), saved_layout)

    def __repr__(self) -> str:
        return (
            f"ltp_keras.LotteryTicketPruner(variables={len(self.names)}, level={self.level}, "
            f"cumulative_pruning_rate={self.cumulative_pruning_rate:.4f})"
        )
