"""The experiment models of ``ltp`` as ``torch.nn`` modules.

Architectures come from :data:`ltp_core.experiment.models.MODEL_SPECS` (LeNet-300-100, Conv-2/4/6
of Frankle & Carbin 2019, and lottery-ticket-pruner's MNIST CNN): 3x3 convolutions with the spec's
padding, 2x2 max pooling where the spec lists a ``0`` filter count, ReLU, the spec's dropout rates,
and a dense output layer producing logits. Kernels are Glorot (Xavier) normal and biases zero, as
in the paper; the initialization depends only on ``seed``, never on torch's global generator.

Modules take NCHW ``float32`` input (``ltp_torch.experiment`` converts the datasets' NHWC arrays).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ltp_core.experiment.models import (
    call_model_factory,
    check_model_output,
    is_model_reference,
    model_spec,
    probe_failure,
    probe_input,
)

__all__ = ["build_model", "init_glorot_normal_"]


def _check_input_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) == 1 and isinstance(shape[0], int) and shape[0] > 0:
        return 1, 1, shape[0]  # flat features: dense models only (conv ones cannot pool them)
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(
            "`input_shape` must be (height, width, channels) with positive integers. "
            f"Received: input_shape={input_shape!r}"
        )
    return shape[0], shape[1], shape[2]


def _conv_block(
    spec_filters: tuple[int, ...], padding: str, height: int, width: int, channels: int
) -> tuple[list[nn.Module], int, int, int]:
    """Layers of the conv part and the (channels, height, width) they produce."""
    layers: list[nn.Module] = []
    for filters in spec_filters:
        if filters == 0:
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        else:
            layers += [nn.Conv2d(channels, filters, 3, padding=padding), nn.ReLU()]
            channels = filters
            if padding == "valid":
                height, width = height - 2, width - 2
        if height < 1 or width < 1:
            raise ValueError(
                "The input is too small for this model's convolutions and pooling. "
                f"Received: input of {height}x{width} after layer {len(layers)}"
            )
    return layers, channels, height, width


@torch.no_grad()
def init_glorot_normal_(model: nn.Module, generator: torch.Generator) -> None:
    """Glorot-normal kernels and zero biases for every Linear and Conv2d layer, in place.

    Args:
        model: The module to initialize.
        generator: The only source of randomness.

    Example:
        >>> layer = nn.Linear(4, 2)
        >>> init_glorot_normal_(layer, torch.Generator().manual_seed(0))
        >>> layer.bias.tolist()
        [0.0, 0.0]
    """
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            weight = module.weight
            receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
            fan_out, fan_in = weight.shape[0] * receptive, weight.shape[1] * receptive
            std = math.sqrt(2.0 / (fan_in + fan_out))
            weight.normal_(0.0, std, generator=generator)
            if module.bias is not None:
                module.bias.zero_()


def build_user_model(
    reference: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    seed: int,
    warned: set[tuple[str, int, int]] | None = None,
) -> nn.Module:
    """Build the user's model from a ``package.module:function`` factory, seeded by ``seed``.

    The factory gets ``(input_shape, num_classes)`` in PyTorch's layout: ``(channels, height,
    width)`` for images, ``(features,)`` for flat data. It runs under ``torch.manual_seed(seed)``
    (torch's global random state is restored after); lazy modules are materialized by one
    forward pass of two examples of zeros in evaluation mode, which also checks the output.

    Raises:
        TypeError: The factory did not return an ``nn.Module``.
        RuntimeError: The factory raised.
        ValueError: The model is not float32, fails on input of ``input_shape``, or returns
            something else than logits of shape ``(n, k)`` with ``k >= num_classes``.
    """
    shape = tuple(int(d) for d in input_shape)
    torch_shape = (shape[2], shape[0], shape[1]) if len(shape) == 3 else shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = call_model_factory(reference, torch_shape, num_classes)
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"The model factory {reference} must return a torch.nn.Module for --framework "
                f"torch. Received: {type(model).__module__}.{type(model).__name__}"
            )
        _check_user_model(model, reference, torch_shape, num_classes, warned)
    return model


def _check_user_model(
    model: nn.Module,
    reference: str,
    shape: tuple[int, ...],
    num_classes: int,
    warned: set[tuple[str, int, int]] | None,
) -> None:
    """Materialize lazy modules and check what the model computes on two examples.

    The pass runs in evaluation mode (``BatchNorm`` statistics are not touched, and a lazy
    ``BatchNorm`` accepts a batch of any size); the training loop needs float32 parameters and
    logits of shape ``(n, num_classes)``.

    Raises:
        ValueError: Parameters that are not float32, or an output that is not logits (see
            :func:`ltp_core.experiment.models.check_model_output`).
    """
    _check_float32(model, reference)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.from_numpy(probe_input(shape)))
    except Exception as error:
        raise probe_failure(reference, shape, error) from error
    finally:
        model.train(was_training)
    _check_float32(model, reference)  # lazy parameters have their dtype from here on
    if isinstance(out, torch.Tensor):
        out = out.detach().to("cpu", torch.float64).numpy()
    check_model_output(reference, out, num_classes, shape, warned)


def _check_float32(model: nn.Module, reference: str) -> None:
    """Refuse parameters that are not float32 (lazy ones not yet materialized are skipped)."""
    for name, parameter in model.named_parameters():
        if (
            not isinstance(parameter, nn.parameter.UninitializedParameter)
            and parameter.dtype != torch.float32
        ):
            raise ValueError(
                f"The model factory {reference} must build a float32 model: `ltp imp` trains on "
                f"float32 data. Received: parameter {name!r} of dtype {parameter.dtype} (leave "
                "out `.double()`/`.half()`, or train your own loop with ltp_torch.find_ticket)"
            )


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    seed: int,
    warned: set[tuple[str, int, int]] | None = None,
) -> nn.Module:
    """Build one experiment model, initialized from ``seed``.

    Args:
        name: A model from :data:`ltp_core.experiment.models.MODEL_SPECS`, or the user's
            ``package.module:function`` factory (see :func:`build_user_model`).
        input_shape: ``(height, width, channels)`` of one example.
        num_classes: Width of the output (logits) layer.
        seed: Seed of the initialization; the same seed gives the same weights.
        warned: For a user's model: the wide output layers already warned of (see
            :func:`ltp_core.experiment.models.check_model_output`).

    Returns:
        An ``nn.Sequential`` taking NCHW input and returning logits.

    Raises:
        ValueError: Unknown model, bad shape, or an input too small for the pooling.

    Example:
        >>> net = build_model("lenet300_100", (8, 8, 1), 10, seed=0)
        >>> net(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    if is_model_reference(name):
        return build_user_model(name, input_shape, num_classes, seed, warned)
    spec = model_spec(name)
    height, width, channels = _check_input_shape(input_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            f"`num_classes` must be an integer >= 2. Received: num_classes={num_classes!r}"
        )
    conv_dropout, dense_dropout = spec.dropout
    with torch.random.fork_rng(devices=[]):  # layer constructors draw from the global generator
        layers, channels, height, width = _conv_block(
            spec.conv_filters, spec.conv_padding, height, width, channels
        )
        if spec.conv_filters and conv_dropout > 0:
            layers.append(nn.Dropout(conv_dropout))
        layers.append(nn.Flatten())
        features = channels * height * width
        for units in spec.dense_units:
            layers += [nn.Linear(features, units), nn.ReLU()]
            if dense_dropout > 0:
                layers.append(nn.Dropout(dense_dropout))
            features = units
        layers.append(nn.Linear(features, num_classes))
        model = nn.Sequential(*layers)
    init_glorot_normal_(model, torch.Generator().manual_seed(int(seed)))
    return model
