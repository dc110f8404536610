"""Moving values between torch tensors and NumPy arrays.

The core ranks NumPy arrays; parameters live as tensors on any device in any floating dtype.
``float16`` and ``bfloat16`` tensors (NumPy has no ``bfloat16``) become ``float32`` copies; those
conversions are exact, so writing them back gives the original values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["numpy_dtype_for", "to_numpy", "write_into"]

_WIDENED = (torch.float16, torch.bfloat16)


def numpy_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """Return the torch dtype used for the NumPy copy of a tensor of ``dtype``.

    Example:
        >>> numpy_dtype_for(torch.bfloat16), numpy_dtype_for(torch.float64)
        (torch.float32, torch.float64)
    """
    return torch.float32 if dtype in _WIDENED else dtype


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """Copy a tensor (any device, no autograd) into a new NumPy array.

    Args:
        tensor: The tensor to copy. ``float16``/``bfloat16`` values are widened to ``float32``.

    Returns:
        A NumPy array that shares no memory with ``tensor``.

    Example:
        >>> to_numpy(torch.ones(2, dtype=torch.bfloat16))
        array([1., 1.], dtype=float32)
    """
    copied = tensor.detach().to(device="cpu", dtype=numpy_dtype_for(tensor.dtype), copy=True)
    return copied.numpy()


@torch.no_grad()
def write_into(targets: Sequence[torch.Tensor], values: Sequence[np.ndarray]) -> None:
    """Copy NumPy arrays into existing tensors in place (identity, device and dtype kept).

    Args:
        targets: Tensors (usually parameters) to overwrite.
        values: Arrays of the same shapes, one per target.

    Example:
        >>> weight = torch.nn.Parameter(torch.zeros(2))
        >>> write_into([weight], [np.array([1.0, 2.0])])
        >>> weight.tolist()
        [1.0, 2.0]
    """
    for target, value in zip(targets, values, strict=True):
        array = np.asarray(value, order="C")  # np.ascontiguousarray makes a 0-d array 1-d
        if not array.flags.writeable:  # the core hands out read-only views
            array = array.copy()
        source = torch.from_numpy(array)
        target.copy_(source.to(device=target.device, dtype=target.dtype))
