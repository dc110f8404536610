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

from dataclasses import dataclass

__all__ = ["MODEL_SPECS", "ModelSpec", "model_spec"]


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


def model_spec(name: str) -> ModelSpec:
    """Look up a model.

    Raises:
        ValueError: Unknown name; the message lists the known ones.

    Example:
        >>> model_spec("conv2").conv_filters
        (64, 64, 0)
    """
    try:
        return MODEL_SPECS[name]
    except KeyError:
        raise ValueError(
            f"Unknown `model`; choose one of {sorted(MODEL_SPECS)}. Received: model={name!r}"
        ) from None
