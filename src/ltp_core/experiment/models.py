"""The experiment models and the papers' default hyper-parameters, framework-free.

Backends build these architectures; the defaults follow Frankle & Carbin (2019), Figure 2:

========  ==============================  =========  ======  =====  ========  ======  ======
model     layers                          optimizer  lr      steps  conv      fc      output
========  ==============================  =========  ======  =====  ========  ======  ======
lenet     300, 100, 10 (dense)            Adam       1.2e-3  50K    --        20 %    10 %
conv2     64,64,pool; 256,256,10          Adam       2e-4    20K    10 %      20 %    10 %
conv4     64,64,pool,128,128,pool; ...    Adam       3e-4    25K    10 %      20 %    10 %
conv6     ... 256,256,pool; 256,256,10    Adam       3e-4    30K    15 %      20 %    10 %
mnist_cnn conv 32,64 (3x3), pool; 128,10  Adam       1e-3    5K     (lottery-ticket-pruner's)
========  ==============================  =========  ======  =====  ========  ======  ======

All use batch size 60 except ``mnist_cnn`` (128). Convolutions are 3x3 with ``same`` padding
(``valid`` in ``mnist_cnn``), pooling is 2x2 max pooling, hidden activations are ReLU.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

__all__ = [
    "CUSTOM_MODEL",
    "MODEL_SPECS",
    "ModelSpec",
    "call_model_factory",
    "check_model_output",
    "is_model_reference",
    "model_spec",
    "probe_failure",
    "probe_input",
    "resolve_model_factory",
]


@dataclass(frozen=True)
class ModelSpec:
    """Architecture and paper defaults of one experiment model.

    Attributes:
        name: Model name.
        conv_filters: Filters per conv layer; ``0`` marks a 2x2 max-pooling layer.
        dense_units: Hidden dense layer widths (the output layer is added by the backend).
        conv_padding: ``"same"`` or ``"valid"``.
        dropout: Dropout rates after the conv block and after each hidden dense layer.
        optimizer: Default optimizer.
        learning_rate: Default learning rate.
        batch_size: Default batch size.
        iterations: Default number of training steps on MNIST-sized data.
        conv_rate: Default per-level fraction for conv layers.
        dense_rate: Default per-level fraction for hidden dense layers.
        output_rate: Default per-level fraction for the output layer.
    """

    name: str
    conv_filters: tuple[int, ...]
    dense_units: tuple[int, ...]
    conv_padding: str
    dropout: tuple[float, float]
    optimizer: str
    learning_rate: float
    batch_size: int
    iterations: int
    conv_rate: float
    dense_rate: float
    output_rate: float


MODEL_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "lenet300_100",
            (),
            (300, 100),
            "same",
            (0.0, 0.0),
            "adam",
            1.2e-3,
            60,
            50_000,
            0.2,
            0.2,
            0.1,
        ),
        ModelSpec(
            "conv2",
            (64, 64, 0),
            (256, 256),
            "same",
            (0.0, 0.0),
            "adam",
            2e-4,
            60,
            20_000,
            0.1,
            0.2,
            0.1,
        ),
        ModelSpec(
            "conv4",
            (64, 64, 0, 128, 128, 0),
            (256, 256),
            "same",
            (0.0, 0.0),
            "adam",
            3e-4,
            60,
            25_000,
            0.1,
            0.2,
            0.1,
        ),
        ModelSpec(
            "conv6",
            (64, 64, 0, 128, 128, 0, 256, 256, 0),
            (256, 256),
            "same",
            (0.0, 0.0),
            "adam",
            3e-4,
            60,
            30_000,
            0.15,
            0.2,
            0.1,
        ),
        ModelSpec(
            "mnist_cnn",
            (32, 64, 0),
            (128,),
            "valid",
            (0.25, 0.5),
            "adam",
            1e-3,
            128,
            5_000,
            0.2,
            0.2,
            0.1,
        ),
    )
}
"""Every experiment model by name."""


CUSTOM_MODEL = ModelSpec(
    "custom", (), (), "same", (0.0, 0.0), "adam", 1e-3, 60, 5_000, 0.1, 0.2, 0.1
)
"""Defaults for the user's own model (``--model package.module:function``): Adam at 1e-3,
batch 60, 5,000 steps (1,500 on digits), conv layers pruned 10% per level, dense 20%, output 10%."""

_REFERENCE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def is_model_reference(name: str) -> bool:
    """Whether ``name`` points at the user's factory (``package.module:function``).

    Example:
        >>> is_model_reference("lenet300_100"), is_model_reference("my_nets:small_cnn")
        (False, True)
    """
    return isinstance(name, str) and ":" in name


def _check_reference(reference: str) -> None:
    if not _REFERENCE.match(reference):
        raise ValueError(
            "A model reference must look like package.module:function (a factory taking "
            f"(input_shape, num_classes)). Received: model={reference!r}"
        )


def resolve_model_factory(reference: str) -> Callable[..., Any]:
    """Import the user's model factory ``package.module:function``.

    The module is imported from the current directory or ``PYTHONPATH``.

    Raises:
        ValueError: A malformed reference, or a name that is not a callable in the module.
        ImportError: The module cannot be imported (the message says why).

    Example:
        >>> resolve_model_factory("math:hypot")(3, 4)
        5.0
    """
    _check_reference(reference)
    module_name, _, attribute = reference.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # the user's module may raise anything while importing
        raise ImportError(
            f"Cannot import {module_name!r} for --model {reference} ({type(error).__name__}: "
            f"{error}); it is imported from the current directory or PYTHONPATH"
        ) from error
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(
                f"Module {module_name!r} ({getattr(module, '__file__', '?')}) has no "
                f"{attribute!r}. Received: model={reference!r}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(
            f"{reference} is a {type(target).__name__}, not a function building a model. "
            f"Received: model={reference!r}"
        )
    return target  # type: ignore[no-any-return]


def call_model_factory(reference: str, input_shape: tuple[int, ...], num_classes: int) -> Any:
    """Call the user's factory, turning any exception into one clear ``RuntimeError``.

    Raises:
        RuntimeError: The factory raised; the message names it and its error.
    """
    factory = resolve_model_factory(reference)
    try:
        return factory(tuple(input_shape), int(num_classes))
    except Exception as error:
        raise RuntimeError(
            f"The model factory {reference}(input_shape={tuple(input_shape)}, "
            f"num_classes={num_classes}) raised {type(error).__name__}: {error}"
        ) from error


def check_model_output(
    reference: str,
    output: Any,
    num_classes: int,
    input_shape: tuple[int, ...],
    warned: set[tuple[str, int, int]] | None = None,
) -> None:
    """Check what a user's model returned for a probe batch: logits of shape ``(n, k)``.

    ``output`` is the model's output as a NumPy array (or the object itself when it was not
    one tensor). Both adapters call this once per built model, on two examples (zeros and a
    ramp) in evaluation mode. ``warned``: the wide heads already warned of (a backend keeps
    one set, so an experiment warns once, not once per model it builds).

    Raises:
        ValueError: Not one 2-D array, fewer than ``num_classes`` columns, or probabilities
            (every row non-negative and summing to 1: the model ends in a softmax, while the
            loss takes logits and applies its own).

    Example:
        >>> import numpy as np
        >>> check_model_output("m:f", np.array([[0.5, -1.0], [2.0, 0.0]]), 2, (4,))
        >>> check_model_output("m:f", np.array([[0.25, 0.75], [0.5, 0.5]]), 2, (4,))
        Traceback (most recent call last):
        ...
        ValueError: The model factory m:f must build a model returning logits, but its outputs are probabilities (each row is non-negative and sums to 1): the loss applies its own softmax. Remove the final softmax. Received: rows summing to 1 for inputs of shape (2, 4)
    """  # noqa: E501
    batch = (2, *input_shape)
    if not isinstance(output, np.ndarray) or output.ndim != 2 or output.shape[1] < num_classes:
        received = (
            f"output of shape {tuple(output.shape)}"
            if isinstance(output, np.ndarray)
            else f"an output of type {type(output).__name__}"
        )
        raise ValueError(
            f"The model factory {reference} must build a model returning logits of shape "
            f"(n, num_classes) = (2, {num_classes}) for input of shape {batch}. "
            f"Received: {received}"
        )
    rows = output.astype(np.float64)
    if np.all(rows >= 0) and np.allclose(rows.sum(axis=1), 1.0, rtol=0, atol=1e-4):
        raise ValueError(
            f"The model factory {reference} must build a model returning logits, but its outputs "
            "are probabilities (each row is non-negative and sums to 1): the loss applies its "
            "own softmax. Remove the final softmax. Received: rows summing to 1 for inputs of "
            f"shape {batch}"
        )
    wide = (reference, int(output.shape[1]), int(num_classes))
    if output.shape[1] > num_classes and (warned is None or wide not in warned):
        if warned is not None:
            warned.add(wide)
        warnings.warn(
            f"The model built by {reference} returns {output.shape[1]} logits per example, but "
            f"the data has {num_classes} classes: the extra {output.shape[1] - num_classes} are "
            "never a target. Build the output layer with the factory's num_classes argument.",
            UserWarning,
            stacklevel=3,
        )


def probe_failure(reference: str, input_shape: tuple[int, ...], error: Exception) -> ValueError:
    """The error for a user's model that fails on :func:`probe_input` (raise it ``from error``).

    Example:
        >>> str(probe_failure("m:f", (3,), KeyError("x")))
        "The model factory m:f built a model that fails on input of shape (2, 3): KeyError: 'x'"
    """
    return ValueError(
        f"The model factory {reference} built a model that fails on input of shape "
        f"{(2, *input_shape)}: {type(error).__name__}: {error}"
    )


def probe_input(input_shape: tuple[int, ...]) -> Any:
    """Two float32 examples of ``input_shape`` for :func:`check_model_output`: zeros and a ramp.

    Example:
        >>> probe_input((3,)).tolist()
        [[0.0, 0.0, 0.0], [0.0, 0.5, 1.0]]
    """
    ramp = np.linspace(0.0, 1.0, math.prod(input_shape), dtype=np.float32).reshape(input_shape)
    return np.stack([np.zeros(input_shape, dtype=np.float32), ramp])


def model_spec(name: str) -> ModelSpec:
    """Look up a model (a ``package.module:function`` reference gets :data:`CUSTOM_MODEL`).

    Raises:
        ValueError: Unknown name; the message lists the known ones.

    Example:
        >>> model_spec("conv2").conv_filters
        (64, 64, 0)
        >>> model_spec("my_nets:small_cnn").optimizer
        'adam'
    """
    if is_model_reference(name):
        _check_reference(name)
        return replace(CUSTOM_MODEL, name=name)
    try:
        return MODEL_SPECS[name]
    except KeyError:
        raise ValueError(
            f"Unknown `model`; choose one of {sorted(MODEL_SPECS)} or a factory "
            f"package.module:function. Received: model={name!r}"
        ) from None
