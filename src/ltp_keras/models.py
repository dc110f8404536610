"""Keras 3 builds of the experiment models (``ltp_core.experiment.models.MODEL_SPECS``).

Every model is a ``keras.Sequential`` with stable, explicit names (the model is named after the
spec, layers ``conv1``, ``pool1``, ``fc1``, ..., ``output``), so variable paths, and therefore
the pruner's layer names, are the same in every process and for every seed. Kernels are
Glorot (Xavier) normal and biases zero, as in Frankle & Carbin (2019); the output layer gives
logits.

Initial weights are drawn with NumPy from ``numpy.random.default_rng(seed)``, not with Keras'
random ops: the same seed gives the same weights on the TensorFlow, torch and JAX backends, no
global random state is touched, and JAX does not compile a random kernel per weight shape
(seconds per model on CPU).
"""

from __future__ import annotations

import keras
import numpy as np

from ltp_core.experiment.models import (
    call_model_factory,
    check_model_output,
    is_model_reference,
    model_spec,
    probe_failure,
    probe_input,
)

__all__ = ["build_model", "build_user_model", "glorot_normal", "output_layer"]


def build_user_model(
    reference: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    seed: int,
    warned: set[tuple[str, int, int]] | None = None,
) -> keras.Model:
    """Build the user's model from a ``package.module:function`` factory.

    The factory gets ``(input_shape, num_classes)`` with Keras' layout: ``(height, width,
    channels)`` for images, ``(features,)`` for flat data. ``keras.utils.set_random_seed(seed)``
    runs first, so the initialization depends on ``seed`` (this sets Python's, NumPy's and the
    backend's global seeds). An unbuilt model is built for ``input_shape``, and called once in
    inference mode on two examples to check that it returns logits.

    Raises:
        TypeError: The factory did not return a ``keras.Model``.
        RuntimeError: The factory raised.
        ValueError: The model fails on input of ``input_shape``, or returns something else than
            logits of shape ``(n, k)`` with ``k >= num_classes`` (see
            :func:`ltp_core.experiment.models.check_model_output`).
    """
    shape = tuple(int(d) for d in input_shape)
    keras.utils.set_random_seed(int(seed))
    model = call_model_factory(reference, shape, num_classes)
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"The model factory {reference} must return a keras.Model for --framework keras. "
            f"Received: {type(model).__module__}.{type(model).__name__}"
        )
    if not model.built:
        model.build((None, *shape))
    try:
        out = model(probe_input(shape), training=False)
    except Exception as error:
        raise probe_failure(reference, shape, error) from error
    if not isinstance(out, list | tuple | dict):
        out = np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float64)
    check_model_output(reference, out, num_classes, shape, warned)
    return model


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    seed: int,
    warned: set[tuple[str, int, int]] | None = None,
) -> keras.Model:
    """Build the experiment model ``name``, initialized from ``seed``.

    The same arguments give the same initial weights (and dropout seeds) on every Keras backend;
    global random state is left alone.

    Args:
        name: A model of ``ltp_core.experiment.models.MODEL_SPECS``.
        input_shape: Shape of one image, ``(height, width, channels)``.
        num_classes: Width of the output layer.
        seed: Initialization seed.
        warned: For a user's model: the wide output layers already warned of (see
            :func:`ltp_core.experiment.models.check_model_output`).

    Raises:
        ValueError: Unknown ``name``, or an input too small for the model's pooling layers.

    Example:
        >>> model = build_model("lenet300_100", (8, 8, 1), 10, seed=0)
        >>> [layer.name for layer in model.layers]
        ['flatten', 'fc1', 'fc2', 'output']
        >>> model.count_params()
        50610
    """
    if is_model_reference(name):
        return build_user_model(name, input_shape, num_classes, seed, warned)
    spec = model_spec(name)
    flat = len(input_shape) == 1 and int(input_shape[0]) > 0 and not spec.conv_filters
    if not flat and (len(input_shape) != 3 or any(int(d) < 1 for d in input_shape)):
        raise ValueError(
            f"`input_shape` must be (height, width, channels) (flat (features,) for dense-only "
            f"models). Received: input_shape={input_shape}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            f"`num_classes` must be an integer >= 2. Received: num_classes={num_classes!r}"
        )
    layers: list[keras.layers.Layer] = [keras.Input(tuple(int(d) for d in input_shape))]
    n_conv = n_pool = 0
    size = 1 if flat else min(int(input_shape[0]), int(input_shape[1]))
    for filters in spec.conv_filters:
        if filters == 0:
            n_pool += 1
            if size < 2:
                raise ValueError(
                    f"{name} pools more often than the input allows. "
                    f"Received: input_shape={input_shape}"
                )
            size //= 2
            layers.append(keras.layers.MaxPooling2D(2, name=f"pool{n_pool}"))
        else:
            n_conv += 1
            if spec.conv_padding == "valid":
                size -= 2
            layers.append(
                keras.layers.Conv2D(
                    filters,
                    3,
                    padding=spec.conv_padding,
                    activation="relu",
                    kernel_initializer="zeros",
                    bias_initializer="zeros",
                    name=f"conv{n_conv}",
                )
            )
    # Dropout gets explicit seeds: without one, the torch backend draws from torch's global
    # generator instead of the layer's seed state, and training would not be reproducible.
    if spec.conv_filters and spec.dropout[0] > 0:
        layers.append(
            keras.layers.Dropout(spec.dropout[0], seed=_dropout_seed(seed, 0), name="dropout_conv")
        )
    layers.append(keras.layers.Flatten(name="flatten"))
    for i, units in enumerate(spec.dense_units, start=1):
        layers.append(
            keras.layers.Dense(
                units,
                activation="relu",
                kernel_initializer="zeros",
                bias_initializer="zeros",
                name=f"fc{i}",
            )
        )
        if spec.dropout[1] > 0:
            layers.append(
                keras.layers.Dropout(
                    spec.dropout[1], seed=_dropout_seed(seed, i), name=f"dropout{i}"
                )
            )
    layers.append(
        keras.layers.Dense(
            num_classes,
            kernel_initializer="zeros",
            bias_initializer="zeros",
            name="output",
        )
    )
    model = keras.Sequential(layers, name=name)
    rng = np.random.default_rng(int(seed))
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense | keras.layers.Conv2D):
            layer.kernel.assign(glorot_normal(rng, tuple(layer.kernel.shape)))
    return model


def glorot_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Glorot (Xavier) normal values as Keras draws them: a normal truncated at two standard
    deviations, scaled so that the standard deviation is ``sqrt(2 / (fan_in + fan_out))``.

    Example:
        >>> w = glorot_normal(np.random.default_rng(0), (300, 100))
        >>> round(float(w.std() / np.sqrt(2 / 400)), 1), w.dtype
        (1.0, dtype('float32'))
    """
    receptive_field = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    fan_in, fan_out = shape[-2] * receptive_field, shape[-1] * receptive_field
    # 0.8796... is the standard deviation of a unit normal truncated to [-2, 2].
    scale = np.sqrt(2.0 / (fan_in + fan_out)) / 0.87962566103423978
    values: np.ndarray = rng.standard_normal(shape)
    outside = np.abs(values) > 2.0
    while outside.any():
        values[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(values) > 2.0
    result: np.ndarray = (values * scale).astype(np.float32)
    return result


def _dropout_seed(seed: int, index: int) -> int:
    return (int(seed) * 1_009 + index) % (2**31 - 1)


def output_layer(model: keras.Model) -> keras.layers.Dense:
    """The model's last ``Dense`` layer (the logits).

    Example:
        >>> output_layer(build_model("conv2", (8, 8, 1), 10, seed=0)).name
        'output'
    """
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not dense:
        raise ValueError(f"The model has no Dense layer. Received: model={model.name!r}")
    return dense[-1]
