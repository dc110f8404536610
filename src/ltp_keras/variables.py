"""Find the prunable variables of a Keras 3 model and move their values in and out as NumPy.

Every variable gets a *role* from the layer that owns it, found with ``isinstance`` while
walking the model's layers (nested models, ``Sequential`` inside functional models, subclassed
layers and models; a shared layer is visited once): the kernel of a ``Dense`` layer is
``"dense"``, a ``MultiHeadAttention`` projection kernel ``"attention"``, an LSTM cell's kernels
``"recurrent"``, an ``Embedding`` table ``"embedding"``, any bias ``"bias"`` and so on. The
default selection, and each named selector of :data:`SELECTORS`, is a rule over these roles; a
``prunable`` argument may instead name a selector, give a predicate over variables or list
variable paths.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import keras
import numpy as np

from ltp_core.summary import LeftOutTensor

__all__ = [
    "PRUNABLE_KINDS",
    "SELECTORS",
    "Prunable",
    "default_prunable_variables",
    "left_out_variables",
    "model_weights",
    "read_arrays",
    "select_prunable_variables",
    "sync_model_state",
    "unique_names",
    "variable_kinds",
    "variable_roles",
    "write_arrays",
]

logger = logging.getLogger(__name__)

Prunable = Callable[[keras.Variable], bool] | Sequence[str] | str | None

#: Named selectors accepted by ``prunable=``, with what each selects.
SELECTORS: Mapping[str, str] = MappingProxyType(
    {
        "default": "trainable kernels of Dense, EinsumDense, every convolution (depthwise, "
        "separable, transposed), MultiHeadAttention Q/K/V/O projections and recurrent cells "
        "(kernel and recurrent_kernel); no biases, normalization, embeddings or scales",
        "with_embeddings": "'default' plus the tables of Embedding layers",
        "all_matrices": "every trainable floating-point variable with 2 or more dimensions "
        "except biases and normalization parameters (embeddings and custom weights included)",
        "linear_and_conv": "the default of ltp_keras 0.1: kernels of Dense, EinsumDense, "
        "Conv*, Conv*Transpose, DepthwiseConv* and SeparableConv* layers (attention projections "
        "included, as EinsumDense), frozen ones too; no recurrent kernels",
    }
)

#: Roles that the ``"default"`` selector prunes.
PRUNABLE_KINDS = frozenset(
    {
        "dense",
        "einsum_dense",
        "attention",
        "conv",
        "conv_transpose",
        "depthwise",
        "pointwise",
        "recurrent",
    }
)

_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_CONV_TRANSPOSE = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)
_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_SINGLE_KERNEL = (
    keras.layers.Dense,
    keras.layers.EinsumDense,
    *_CONV,
    *_CONV_TRANSPOSE,
    *_DEPTHWISE,
)
_ATTENTION = tuple(
    getattr(keras.layers, name)
    for name in ("MultiHeadAttention", "GroupQueryAttention")
    if hasattr(keras.layers, name)
)
_NORMALIZATION = tuple(
    getattr(keras.layers, name)
    for name in (
        "BatchNormalization",
        "LayerNormalization",
        "GroupNormalization",
        "RMSNormalization",
        "UnitNormalization",
        "Normalization",
        "SpectralNormalization",
    )
    if hasattr(keras.layers, name)
)


def _is_float_variable(variable: keras.Variable) -> bool:
    return "float" in keras.backend.standardize_dtype(variable.dtype)  # bfloat16 included


def _walk_layers(model: keras.layers.Layer) -> Iterable[keras.layers.Layer]:
    # ``_flatten_layers`` is how Keras itself enumerates nested layers; it visits each layer
    # object once, so shared layers count once.
    return model._flatten_layers(include_self=True, recursive=True)


def _own_variables(layer: keras.layers.Layer) -> list[keras.Variable]:
    # The variables a layer created itself (``layer.weights`` would add its sublayers' too).
    own = list(getattr(layer, "_trainable_variables", [])) + list(
        getattr(layer, "_non_trainable_variables", [])
    )
    return [v for v in own if isinstance(v, keras.Variable)]


def _is_variable(candidate: object, variable: keras.Variable) -> bool:
    return isinstance(candidate, keras.Variable) and candidate is variable


def _kernel_variable(layer: keras.layers.Layer) -> keras.Variable | None:
    # ``_kernel`` is the variable itself where ``kernel`` is a computed property (LoRA).
    raw = getattr(layer, "_kernel", None)
    if isinstance(raw, keras.Variable):
        return raw
    kernel = getattr(layer, "kernel", None)
    return kernel if isinstance(kernel, keras.Variable) else None


def _is_normalization(layer: keras.layers.Layer) -> bool:
    name = type(layer).__name__
    return isinstance(layer, _NORMALIZATION) or name.endswith(("Normalization", "Norm"))


def _conv_kind(layer: keras.layers.Layer, kernel: keras.Variable) -> str:
    # A grouped convolution with one input channel per group (ConvNeXt's 7x7) is depthwise.
    groups = int(getattr(layer, "groups", 1) or 1)
    return "depthwise" if groups > 1 and int(kernel.shape[-2]) == 1 else "conv"


def _role_in_layer(
    layer: keras.layers.Layer, variable: keras.Variable, attention_layers: set[int]
) -> str:
    name = variable.name
    if getattr(layer, "lora_enabled", False) and not _is_variable(
        getattr(layer, "bias", None), variable
    ):
        return "lora"
    if _is_normalization(layer):
        return "normalization"
    if isinstance(layer, keras.layers.Embedding):
        return "embedding"
    if (
        _is_variable(getattr(layer, "bias", None), variable)
        or name == "bias"
        or (name.endswith("_bias"))
    ):
        return "bias"
    if isinstance(layer, _SEPARABLE):
        if _is_variable(getattr(layer, "depthwise_kernel", None), variable):
            return "depthwise"
        if _is_variable(getattr(layer, "pointwise_kernel", None), variable):
            return "pointwise"
    if isinstance(getattr(layer, "recurrent_kernel", None), keras.Variable) and (
        _is_variable(getattr(layer, "recurrent_kernel", None), variable)
        or _is_variable(_kernel_variable(layer), variable)
    ):
        return "recurrent"  # LSTM/GRU/SimpleRNN/ConvLSTM cells and cells built the same way
    if isinstance(layer, _SINGLE_KERNEL) and _is_variable(_kernel_variable(layer), variable):
        if id(layer) in attention_layers:
            return "attention"
        if isinstance(layer, _CONV_TRANSPOSE):
            return "conv_transpose"
        if isinstance(layer, _DEPTHWISE):
            return "depthwise"
        if isinstance(layer, _CONV):
            return _conv_kind(layer, variable)
        return "dense" if isinstance(layer, keras.layers.Dense) else "einsum_dense"
    if len(variable.shape) == 0:
        return "scalar"
    if "position" in name.lower() or "position" in layer.name.lower():
        return "positional"
    if len(variable.shape) == 1:
        return "scale"  # per-channel scales and offsets (e.g. ConvNeXt's layer scale)
    return "other"


def variable_roles(model: keras.layers.Layer) -> dict[int, str]:
    """The role of each variable of ``model``, keyed by ``id(variable)``.

    Roles: ``"dense"``, ``"einsum_dense"``, ``"attention"`` (MultiHeadAttention and
    GroupQueryAttention projection kernels), ``"conv"``, ``"conv_transpose"``, ``"depthwise"``
    (depthwise kernels, separable depthwise kernels, grouped convolutions with one input
    channel per group),
    ``"pointwise"`` (separable pointwise kernels), ``"recurrent"`` (kernel and recurrent kernel
    of recurrent cells), ``"embedding"`` (also any variable an Embedding layer holds, even if
    another layer uses it too), ``"bias"``, ``"normalization"``, ``"lora"`` (variables of a
    layer with LoRA enabled, except its bias), ``"scalar"``, ``"positional"``, ``"scale"``
    (other 1-D variables) and ``"other"``.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
        >>> roles = variable_roles(model)
        >>> [roles[id(v)] for v in model.weights]
        ['dense', 'bias']
    """
    layers = list(_walk_layers(model))
    attention_layers = {
        id(sub)
        for layer in layers
        if isinstance(layer, _ATTENTION)
        for sub in _walk_layers(layer)
        if isinstance(sub, keras.layers.EinsumDense)
    }
    roles: dict[int, str] = {}
    for layer in layers:
        for variable in _own_variables(layer):
            role = _role_in_layer(layer, variable, attention_layers)
            # A wrapper that keeps a reference to its layer's variable (SpectralNormalization
            # holds the Dense kernel) also lists it: the most specific role wins, and a
            # variable tied to an embedding is an embedding wherever else it is used.
            previous = roles.get(id(variable))
            if previous is None or _role_priority(role) < _role_priority(previous):
                roles[id(variable)] = role
    return roles


def _role_priority(role: str) -> int:
    if role in ("embedding", "lora"):
        return 0
    if role in PRUNABLE_KINDS:
        return 1
    return 2 if role == "bias" else 3


def _layer_kernels(layer: keras.layers.Layer) -> list[keras.Variable]:
    # The selection of ltp_keras 0.1 (the "linear_and_conv" selector).
    if isinstance(layer, _SEPARABLE):
        candidates = [
            getattr(layer, "depthwise_kernel", None),
            getattr(layer, "pointwise_kernel", None),
        ]
    elif isinstance(layer, _SINGLE_KERNEL):
        candidates = [_kernel_variable(layer)]
    else:
        return []
    return [v for v in candidates if isinstance(v, keras.Variable) and _is_float_variable(v)]


def model_weights(model: Any) -> list[keras.Variable]:
    """``model.weights`` with each variable once (a variable may be listed twice when tied).

    Raises:
        TypeError: ``model`` is not a Keras layer or model.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")], name="m")
        >>> [v.path for v in model_weights(model)]
        ['m/d/kernel', 'm/d/bias']
    """
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


def _lora_layers(model: keras.layers.Layer) -> list[str]:
    return [layer.name for layer in _walk_layers(model) if getattr(layer, "lora_enabled", False)]


def _select_by_name(model: keras.layers.Layer, name: str) -> list[keras.Variable]:
    weights = model_weights(model)
    if name == "linear_and_conv":
        kernel_ids = {id(v) for layer in _walk_layers(model) for v in _layer_kernels(layer)}
        return [v for v in weights if id(v) in kernel_ids]
    roles = variable_roles(model)
    lora = _lora_layers(model)
    if lora:
        message = (
            f"Layers {lora} have LoRA enabled: their effective kernel is the frozen kernel "
            f"plus a trained low-rank update, which no mask can hold at zero, so they are not "
            f"pruned. Prune the model before calling `enable_lora()` to include them."
        )
        logger.warning(message)
        warnings.warn(message, UserWarning, stacklevel=4)
    trainable = [v for v in weights if v.trainable and _is_float_variable(v)]
    if name == "default":
        return [v for v in trainable if roles.get(id(v)) in PRUNABLE_KINDS]
    if name == "with_embeddings":
        kinds = PRUNABLE_KINDS | {"embedding"}
        return [v for v in trainable if roles.get(id(v)) in kinds]
    # "all_matrices"
    excluded = {"bias", "normalization", "lora"}
    return [v for v in trainable if len(v.shape) >= 2 and roles.get(id(v)) not in excluded]


def default_prunable_variables(model: keras.layers.Layer) -> list[keras.Variable]:
    """The variables the ``"default"`` selector picks (see :data:`SELECTORS`).

    The trainable kernels of ``Dense``, ``EinsumDense``, ``Conv1D/2D/3D``,
    ``Conv1D/2D/3DTranspose``, ``DepthwiseConv1D/2D``, both kernels of ``SeparableConv1D/2D``,
    the query/key/value/output kernels of ``MultiHeadAttention`` and the kernel and recurrent
    kernel of every recurrent cell (``LSTM``, ``GRU``, ``SimpleRNN``, ``ConvLSTM*``, both
    directions of ``Bidirectional``, stacked cells). Biases (of any rank), normalization
    parameters, embeddings (and variables tied to them), positional tables, scalars, 1-D
    scales, non-trainable variables and layers with LoRA enabled are left out. Order follows
    ``model.weights``.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")], name="m")
        >>> [v.path for v in default_prunable_variables(model)]
        ['m/d/kernel']
    """
    return _select_by_name(model, "default")


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

    ``"dense"`` for Dense kernels and the kernel and recurrent kernel of ``LSTM`` and
    ``SimpleRNN`` cells (torch's ``weight_ih``/``weight_hh`` transposed, same gate order),
    ``"gru"`` for those of ``GRU`` cells (transposed, first two gates swapped), ``"conv"`` for
    Conv1D/2D/3D (and separable pointwise) kernels, ``"conv_transpose"`` for ConvNDTranspose
    kernels and ``"other"`` for everything else (EinsumDense, depthwise kernels, biases,
    variables picked with ``prunable=``). :func:`variable_roles` gives the
    finer role of each variable.

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
        if isinstance(layer, (*_TRANSPOSED_RECURRENT_CELLS, keras.layers.GRUCell)):
            # Keras (in, 4u) / (u, 4u) kernels are torch's weight_ih / weight_hh transposed,
            # with the same gate order (LSTM: input, forget, cell, output); GRU's with the
            # first two of its 3 gates swapped (Keras: update, reset, new; torch: reset first).
            kind = "gru" if isinstance(layer, keras.layers.GRUCell) else "dense"
            for kernel in (
                getattr(layer, "kernel", None),
                getattr(layer, "recurrent_kernel", None),
            ):
                if isinstance(kernel, keras.Variable):
                    kinds.setdefault(id(kernel), kind)
    return [kinds.get(id(v), "other") for v in variables]


#: Recurrent cells whose kernels map onto torch's ``nn.LSTM``/``nn.RNN`` weights by a transpose
#: (GRU cells need their first two gates swapped too: kind ``"gru"``).
_TRANSPOSED_RECURRENT_CELLS = (keras.layers.LSTMCell, keras.layers.SimpleRNNCell)


def _check_lora_kernels(model: keras.layers.Layer, selected: Sequence[keras.Variable]) -> None:
    lora_kernels = {
        id(kernel): layer.name
        for layer in _walk_layers(model)
        if getattr(layer, "lora_enabled", False)
        for kernel in [_kernel_variable(layer)]
        if kernel is not None
    }
    chosen = [v.path for v in selected if id(v) in lora_kernels]
    if chosen:
        raise ValueError(
            f"`prunable` selects the frozen kernel of a layer with LoRA enabled: the layer "
            f"computes with that kernel plus a trained low-rank update, so pruned weights "
            f"would not stay zero. Prune before calling `enable_lora()`, or leave these "
            f"kernels out. Received: prunable selecting {chosen}"
        )


def _warn_layer_state(model: keras.layers.Layer, selected: Sequence[keras.Variable]) -> None:
    """Warn about selected variables that a layer created non-trainable (state such as
    BatchNormalization's moving statistics): no optimizer step masks them."""
    state = {
        id(v)
        for layer in _walk_layers(model)
        for v in getattr(layer, "_non_trainable_variables", [])
    }
    chosen = [v.path for v in selected if id(v) in state]
    if chosen:
        warnings.warn(
            f"`prunable` selects non-trainable variables {chosen}: no optimizer updates them, "
            f"so PrunerCallback and enforce_masks mask them only when masks are applied "
            f"(apply_pruning, the start and end of fit). A layer that updates them while "
            f"training (BatchNormalization's moving statistics) brings pruned entries back. "
            f"Leave them out unless they never change.",
            UserWarning,
            stacklevel=4,
        )


def _check_predicate(prunable: Callable[..., Any]) -> None:
    """A ``prunable=`` predicate must accept one positional argument (a ``keras.Variable``)."""
    try:
        signature = inspect.signature(prunable)
    except (TypeError, ValueError):  # builtins without a signature: call them as they are
        return
    try:
        signature.bind(None)
    except TypeError:
        raise TypeError(
            "A `prunable` predicate is called with one argument, each keras.Variable, and "
            f"returns whether to prune it; this one's signature is {signature}. "
            f"Received: prunable={prunable!r}"
        ) from None


def select_prunable_variables(model: Any, prunable: Prunable = None) -> list[keras.Variable]:
    """Return the model's prunable variables, in ``model.weights`` order.

    Args:
        model: A built ``keras.Model``.
        prunable: ``None`` or ``"default"`` for :func:`default_prunable_variables`, another
            name of :data:`SELECTORS` (``"with_embeddings"``, ``"all_matrices"``,
            ``"linear_and_conv"``), a predicate called with each floating-point variable of
            ``model.weights``, or a list of variable paths.

    Raises:
        TypeError: ``model`` is not a Keras model or ``prunable`` has the wrong type.
        ValueError: An unknown selector name or variable path, a frozen LoRA kernel, or
            nothing is prunable.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")], name="m")
        >>> [v.path for v in select_prunable_variables(model, lambda v: v.name == "bias")]
        ['m/d/bias']
        >>> emb = keras.Sequential([keras.Input((3,), dtype="int32"),
        ...                         keras.layers.Embedding(10, 4, name="e"),
        ...                         keras.layers.Dense(2, name="d")], name="m")
        >>> [v.path for v in select_prunable_variables(emb, "with_embeddings")]
        ['m/e/embeddings', 'm/d/kernel']
    """
    weights = model_weights(model)
    if prunable is None:
        selected = _select_by_name(model, "default")
    elif isinstance(prunable, str):
        if prunable not in SELECTORS:
            hint = (
                f" (to select that one variable, pass a list: prunable=[{prunable!r}])"
                if prunable in {v.path for v in weights}
                else ""
            )
            raise ValueError(
                f"`prunable` must be one of the selectors {sorted(SELECTORS)}, a predicate "
                f"over keras.Variable or a list of variable paths{hint}. Received: "
                f"prunable={prunable!r}"
            )
        selected = _select_by_name(model, prunable)
    elif callable(prunable):
        _check_predicate(prunable)
        selected = [v for v in weights if _is_float_variable(v) and prunable(v)]
    elif (
        isinstance(prunable, Sequence)
        and not isinstance(prunable, bytes)
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
            f"`prunable` must be None, a selector name ({sorted(SELECTORS)}), a predicate "
            f"over keras.Variable or a list of variable paths. Received: prunable={prunable!r}"
        )
    _check_lora_kernels(model, selected)
    _warn_layer_state(model, selected)
    if not selected:
        raise ValueError(
            f"The model has no prunable variables. Build it first (call it on a batch or use "
            f"keras.Input) and make sure it has Dense/Conv-like layers, or select variables "
            f"with `prunable=`. Received: model {getattr(model, 'name', model)!r} with "
            f"{len(weights)} weights and prunable={prunable!r}"
        )
    return selected


#: Why a variable is left out, by role (the same words as ltp_torch's summary).
_LEFT_OUT_REASONS = {
    "bias": "bias",
    "normalization": "normalization",
    "embedding": "embedding",
    "lora": "LoRA-enabled layer",
    "scalar": "scalar",
    "positional": "positional or other parameter",
    "scale": "per-channel scale",
    "other": "positional or other parameter",
}
FROZEN = "frozen (trainable=False)"
NOT_SELECTED = "not selected by prunable="


def left_out_variables(
    model: keras.layers.Layer, selected: Sequence[keras.Variable], *, frozen: bool = True
) -> list[LeftOutTensor]:
    """The parameters of ``model`` that are not in ``selected``, each with a reason.

    Reasons: ``"bias"``, ``"normalization"``, ``"embedding"``, ``"LoRA-enabled layer"``,
    ``"scalar"``, ``"per-channel scale"``, ``"positional or other parameter"``,
    ``"not selected by prunable="`` (a kernel the default would prune) and
    ``"frozen (trainable=False)"`` (non-trainable variables other than normalization
    statistics; left out of the list with ``frozen=False``).

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")], name="m")
        >>> [(t.name, t.reason) for t in left_out_variables(model, [model.weights[0]])]
        [('m/d/bias', 'bias')]
    """
    roles = variable_roles(model)
    chosen = {id(v) for v in selected}
    left_out = []
    for variable in model_weights(model):
        if id(variable) in chosen or not _is_float_variable(variable):
            continue
        if getattr(variable, "overwrite_with_gradient", False):
            # float8 training state (scales, amax histories): Keras writes it, no optimizer
            # trains it, like normalization statistics; not parameters.
            continue
        role = roles.get(id(variable), "other")
        if not variable.trainable:
            if not frozen or role == "normalization":  # statistics, not parameters
                continue
            reason = _LEFT_OUT_REASONS["lora"] if role == "lora" else FROZEN
        else:
            reason = _LEFT_OUT_REASONS.get(role, NOT_SELECTED)
        left_out.append(LeftOutTensor(str(variable.path), tuple(variable.shape), reason))
    return left_out


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
