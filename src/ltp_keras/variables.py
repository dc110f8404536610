"""Find the prunable variables of a Keras 3 model and move their values in and out as NumPy.

The default selection walks the model's layers (nested models, ``Sequential`` inside functional
models, subclassed layers and models; a shared layer is visited once) and picks the kernels of
the layers that the lottery-ticket papers prune, identified with ``isinstance``. A ``prunable``
argument replaces the default with a predicate over variables or a list of variable paths.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import keras
import numpy as np

__all__ = [
    "Prunable",
    "default_prunable_variables",
    "read_arrays",
    "select_prunable_variables",
    "sync_model_state",
    "unique_names",
    "variable_kinds",
    "write_arrays",
]

logger = logging.getLogger(__name__)

Prunable = Callable[[keras.Variable], bool] | Sequence[str] | None

_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_SINGLE_KERNEL = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
)


_CONV_TRANSPOSE = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)
_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def _is_float_variable(variable: keras.Variable) -> bool:
    return "float" in keras.backend.standardize_dtype(variable.dtype)  # bfloat16 included


def _walk_layers(model: keras.layers.Layer) -> Iterable[keras.layers.Layer]:
    # ``_flatten_layers`` is how Keras itself enumerates nested layers; it visits each layer
    # object once, so shared layers count once.
    return model._flatten_layers(include_self=True, recursive=True)


def _layer_kernels(layer: keras.layers.Layer) -> list[keras.Variable]:
    if isinstance(layer, _SEPARABLE):
        candidates = [
            getattr(layer, "depthwise_kernel", None),
            getattr(layer, "pointwise_kernel", None),
        ]
    elif isinstance(layer, _SINGLE_KERNEL):
        # ``_kernel`` is the variable itself where ``kernel`` is a computed property (LoRA).
        raw = getattr(layer, "_kernel", None)
        candidates = [raw if isinstance(raw, keras.Variable) else getattr(layer, "kernel", None)]
    else:
        return []
    return [v for v in candidates if isinstance(v, keras.Variable) and _is_float_variable(v)]


def _model_weights(model: Any) -> list[keras.Variable]:
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            f"`model` must be a keras.Model (or keras.layers.Layer). "
            f"Received: model of type {type(model).__name__}"
        )
    seen: set[int] = set()
    weights = []
    for variable in model.weights:
        if id(variable) not in seen:
            seen.add(id(variable))
            weights.append(variable)
    return weights


def default_prunable_variables(model: keras.layers.Layer) -> list[keras.Variable]:
    """Kernels of Dense, EinsumDense, Conv*, Conv*Transpose, DepthwiseConv* and SeparableConv*.

    Biases, normalization, embeddings and recurrent kernels are left out. Order follows
    ``model.weights``.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")], name="m")
        >>> [v.path for v in default_prunable_variables(model)]
        ['m/d/kernel']
    """
    kernel_ids = {id(v) for layer in _walk_layers(model) for v in _layer_kernels(layer)}
    return [v for v in _model_weights(model) if id(v) in kernel_ids]


def _kernel_kind(layer: keras.layers.Layer, variable: keras.Variable) -> str:
    if isinstance(layer, _SEPARABLE):
        # The pointwise kernel is a 1x1 convolution; the depthwise one has no torch twin layout.
        return "conv" if variable is getattr(layer, "pointwise_kernel", None) else "other"
    if isinstance(layer, _CONV_TRANSPOSE):
        return "conv_transpose"
    if isinstance(layer, _CONV):
        return "conv"
    if isinstance(layer, keras.layers.Dense):
        return "dense"
    return "other"  # EinsumDense, DepthwiseConv*: no fixed torch counterpart


def variable_kinds(model: keras.layers.Layer, variables: Sequence[keras.Variable]) -> list[str]:
    """The weight layout kind of each variable, for portable mask files (see ltp_core.layout).

    ``"dense"`` for Dense kernels, ``"conv"`` for Conv1D/2D/3D (and separable pointwise)
    kernels, ``"conv_transpose"`` for ConvNDTranspose kernels and ``"other"`` for everything
    else (EinsumDense, depthwise kernels, biases, variables picked with ``prunable=``).

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> variable_kinds(model, [v for v in model.weights])
        ['dense', 'other']
    """
    kinds: dict[int, str] = {}
    for layer in _walk_layers(model):
        for kernel in _layer_kernels(layer):
            kinds.setdefault(id(kernel), _kernel_kind(layer, kernel))
    return [kinds.get(id(v), "other") for v in variables]


def select_prunable_variables(model: Any, prunable: Prunable = None) -> list[keras.Variable]:
    """Return the model's prunable variables, in ``model.weights`` order.

    Args:
        model: A built ``keras.Model``.
        prunable: ``None`` for :func:`default_prunable_variables`, a predicate called with each
            floating-point variable of ``model.weights``, or a list of variable paths.

    Raises:
        TypeError: ``model`` is not a Keras model or ``prunable`` has the wrong type.
        ValueError: A listed path is unknown, or nothing is prunable.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")], name="m")
        >>> [v.path for v in select_prunable_variables(model, lambda v: v.name == "bias")]
        ['m/d/bias']
    """
    weights = _model_weights(model)
    if prunable is None:
        selected = default_prunable_variables(model)
    elif callable(prunable):
        selected = [v for v in weights if _is_float_variable(v) and prunable(v)]
    elif (
        isinstance(prunable, Sequence)
        and not isinstance(prunable, (str, bytes))
        and all(isinstance(p, str) for p in prunable)
    ):
        by_path = {v.path: v for v in weights}
        unknown = [p for p in prunable if p not in by_path]
        if unknown:
            raise ValueError(
                f"`prunable` names variable paths the model does not have; available paths: "
                f"{sorted(by_path)}. Received: prunable={list(prunable)!r}"
            )
        wanted = set(prunable)
        selected = [v for v in weights if v.path in wanted]
        not_float = [v.path for v in selected if not _is_float_variable(v)]
        if not_float:
            raise ValueError(
                f"`prunable` must select floating-point variables. "
                f"Received: prunable including {not_float}"
            )
    else:
        raise TypeError(
            f"`prunable` must be None, a predicate over keras.Variable or a list of variable "
            f"paths. Received: prunable={prunable!r}"
        )
    if not selected:
        raise ValueError(
            f"The model has no prunable variables. Build it first (call it on a batch or use "
            f"keras.Input) and make sure it has Dense/Conv-like layers, or select variables "
            f"with `prunable=`. Received: model {getattr(model, 'name', model)!r} with "
            f"{len(weights)} weights and prunable={prunable!r}"
        )
    return selected


def unique_names(variables: Sequence[keras.Variable]) -> list[str]:
    """Variable paths, made unique with a ``#n`` suffix where two paths collide.

    Example:
        >>> import keras
        >>> a, b = keras.Variable(1.0, name="w"), keras.Variable(2.0, name="w")
        >>> unique_names([a, b])
        ['w', 'w#2']
    """
    names: list[str] = []
    counts: dict[str, int] = {}
    for variable in variables:
        path = str(variable.path)
        counts[path] = counts.get(path, 0) + 1
        names.append(path if counts[path] == 1 else f"{path}#{counts[path]}")
    return names


def sync_model_state(model: Any) -> None:
    """On the JAX backend, write the state that ``fit`` keeps outside the variables back."""
    sync = getattr(model, "jax_state_sync", None)
    if callable(sync):
        sync()


def read_arrays(variables: Sequence[keras.Variable]) -> list[np.ndarray]:
    """Copy the variables' values into NumPy arrays (``bfloat16`` is read as ``float32``)."""
    arrays = []
    for variable in variables:
        array = np.array(keras.ops.convert_to_numpy(variable.value), copy=True)
        if not np.issubdtype(array.dtype, np.floating):
            array = array.astype(np.float32)
        arrays.append(array)
    return arrays


def write_arrays(variables: Sequence[keras.Variable], arrays: Sequence[np.ndarray]) -> None:
    """Assign NumPy arrays to variables in place (variable identity is kept; Keras casts)."""
    for variable, array in zip(variables, arrays, strict=True):
        variable.assign(np.asarray(array))
