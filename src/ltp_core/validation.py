"""Input checks shared by the core: fractions, weight lists and masks.

Every check raises :class:`ValueError` or :class:`TypeError` with a message that names the
argument and ends with ``Received: name=value``, so a user can see at once what was wrong.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "check_fraction",
    "check_masks",
    "check_weight_list",
    "is_float_dtype",
    "short_repr",
]


def short_repr(value: Any, limit: int = 80) -> str:
    """Return ``repr(value)`` cut to ``limit`` characters, for error messages.

    Example:
        >>> short_repr("x" * 100, limit=10)
        "'xxxxxx..."
    """
    if isinstance(value, np.ndarray):
        text = f"ndarray(shape={value.shape}, dtype={value.dtype})"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_fraction(value: Any, name: str = "prune_percentage") -> float:
    """Validate a pruning fraction: a real number with ``0 <= value < 1``.

    Args:
        value: The candidate fraction.
        name: Argument name used in the error message.

    Returns:
        The fraction as a Python float.

    Raises:
        TypeError: ``value`` is not a real number (``bool`` and strings included).
        ValueError: ``value`` is NaN or outside ``[0, 1)``.

    Example:
        >>> check_fraction(0.2)
        0.2
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{name}` must be a real number in [0, 1) (the fraction of the still-unpruned "
            f"weights to prune now). Received: {name}={short_repr(value)} "
            f"of type {type(value).__name__}"
        )
    number = float(value)
    if math.isnan(number) or not 0.0 <= number < 1.0:
        raise ValueError(
            f"`{name}` must be in [0, 1): it is the fraction of the still-unpruned weights to "
            f"prune now (1.0 would prune everything). Received: {name}={value!r}"
        )
    return number


def is_float_dtype(dtype: np.dtype[Any]) -> bool:
    """Tell whether ``dtype`` is a floating dtype, counting ``bfloat16`` (ml_dtypes) as one.

    Example:
        >>> is_float_dtype(np.dtype(np.float16)), is_float_dtype(np.dtype(np.int32))
        (True, False)
    """
    return dtype.kind == "f" or dtype.name in {"bfloat16", "float8_e4m3fn", "float8_e5m2"}


def check_weight_list(
    weights: Any,
    name: str,
    *,
    shapes: Sequence[tuple[int, ...]] | None = None,
    check_finite: bool = True,
) -> list[np.ndarray]:
    """Validate a list of floating-point weight arrays.

    Args:
        weights: A sequence of array-likes.
        name: Argument name used in error messages.
        shapes: If given, the required shape of each array (and hence the required length).
        check_finite: Reject NaN and infinite entries.

    Returns:
        The arrays as a list of ``np.ndarray`` (no copies are made of arrays).

    Raises:
        TypeError: Not a sequence, or an array is not floating point.
        ValueError: Empty, wrong length or shape, 0-d arrays, or non-finite entries.

    Example:
        >>> [a.shape for a in check_weight_list([np.ones((2, 3))], "weights")]
        [(2, 3)]
    """
    if (
        isinstance(weights, np.ndarray)
        or not isinstance(weights, Sequence)
        or isinstance(weights, (str, bytes))
    ):
        raise TypeError(
            f"`{name}` must be a list of weight arrays (one per prunable layer). "
            f"Received: {name}={short_repr(weights)} of type {type(weights).__name__}"
        )
    if len(weights) == 0:
        raise ValueError(f"`{name}` must hold at least one weight array. Received: {name}=[]")
    if shapes is not None and len(weights) != len(shapes):
        raise ValueError(
            f"`{name}` must hold {len(shapes)} arrays, one per prunable weight of the pruner. "
            f"Received: {name} with {len(weights)} arrays"
        )
    arrays: list[np.ndarray] = []
    for i, item in enumerate(weights):
        array = item if isinstance(item, np.ndarray) else _as_array(item, f"{name}[{i}]")
        if not is_float_dtype(array.dtype):
            raise TypeError(
                f"`{name}[{i}]` must be a floating-point array; pruning scores are magnitudes "
                f"of real weights. Received: {name}[{i}] with dtype={array.dtype}"
            )
        if array.ndim == 0:
            raise ValueError(
                f"`{name}[{i}]` must have at least one dimension. Received: {name}[{i}] of shape ()"
            )
        if array.size == 0:
            raise ValueError(
                f"`{name}[{i}]` is empty; every prunable weight needs at least one entry. "
                f"Received: {name}[{i}] of shape {array.shape}"
            )
        if shapes is not None and tuple(array.shape) != tuple(shapes[i]):
            raise ValueError(
                f"`{name}[{i}]` has the wrong shape for this pruner: expected "
                f"{tuple(shapes[i])}. Received: {name}[{i}] of shape {tuple(array.shape)}"
            )
        if check_finite and not _all_finite(array):
            raise ValueError(
                f"`{name}[{i}]` contains NaN or infinite values; masks cannot be computed "
                f"from them. Received: {name}[{i}] of shape {tuple(array.shape)}"
            )
        arrays.append(array)
    return arrays


def _as_array(item: Any, label: str) -> np.ndarray:
    try:
        return np.asarray(item)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"`{label}` cannot be read as an array (ragged nesting?): {error}. "
            f"Received: {label}={short_repr(item)}"
        ) from None


def _all_finite(array: np.ndarray, chunk: int = 1 << 20) -> bool:
    flat = array.reshape(-1)
    for start in range(0, flat.size, chunk):
        part = flat[start : start + chunk]
        if part.dtype.kind != "f":
            part = part.astype(np.float32)
        if not np.isfinite(part).all():
            return False
    return True


def check_masks(
    masks: Any, shapes: Sequence[tuple[int, ...]], name: str = "masks"
) -> list[np.ndarray]:
    """Validate masks: a list of ``bool`` arrays with the given shapes.

    Args:
        masks: The candidate masks.
        shapes: The required shape of each mask.
        name: Argument name used in error messages.

    Returns:
        The masks as a list of ``np.ndarray`` of dtype ``bool`` (not copied).

    Raises:
        TypeError: Not a sequence, or a mask is not of dtype ``bool``.
        ValueError: Wrong number of masks or wrong shapes.

    Example:
        >>> check_masks([np.ones(3, dtype=bool)], [(3,)])[0].dtype
        dtype('bool')
    """
    if isinstance(masks, np.ndarray) or not isinstance(masks, Sequence):
        raise TypeError(
            f"`{name}` must be a list of boolean arrays. Received: {name}={short_repr(masks)}"
        )
    if len(masks) != len(shapes):
        raise ValueError(
            f"`{name}` must hold {len(shapes)} masks, one per weight array. "
            f"Received: {name} with {len(masks)} masks"
        )
    result: list[np.ndarray] = []
    for i, (mask, shape) in enumerate(zip(masks, shapes, strict=True)):
        array = mask if isinstance(mask, np.ndarray) else np.asarray(mask)
        if array.dtype != np.bool_:
            raise TypeError(
                f"`{name}[{i}]` must have dtype bool (True = kept). "
                f"Received: {name}[{i}] with dtype={array.dtype}"
            )
        if tuple(array.shape) != tuple(shape):
            raise ValueError(
                f"`{name}[{i}]` must have shape {tuple(shape)}. "
                f"Received: {name}[{i}] of shape {tuple(array.shape)}"
            )
        result.append(array)
    return result
