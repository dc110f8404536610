"""Seeded, stratified hold-out splits (validation out of training data, digits' test split)."""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["check_fraction", "holdout_size", "stratified_split"]


def check_fraction(value: object, argument_name: str) -> float:
    """Validates a hold-out fraction in ``[0, 1)``.

    Args:
        value: The received value.
        argument_name: Name used in the error message.

    Returns:
        The value as a float.

    Raises:
        TypeError: If ``value`` is not a real number.
        ValueError: If ``value`` is outside ``[0, 1)`` or not finite.

    Example:
        >>> check_fraction(0.25, "validation_fraction")
        0.25
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{argument_name}` must be a number in [0, 1). "
            f"Received: {argument_name}={value!r} of type {type(value).__name__}"
        )
    fraction = float(value)
    if not (0.0 <= fraction < 1.0):
        raise ValueError(
            f"`{argument_name}` must be in [0, 1) (the share of examples held out). "
            f"Received: {argument_name}={value!r}"
        )
    return fraction


def holdout_size(n: int, fraction: float) -> int:
    """Number of examples ``floor(fraction * n)`` held out, robust to float noise.

    Example:
        >>> holdout_size(100, 0.29), holdout_size(60000, 1 / 12)
        (29, 5000)
    """
    return math.floor(round(fraction * n, 6))


def stratified_split(
    labels: np.ndarray, fraction: float, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Splits indices into kept and held-out parts, keeping class proportions.

    Exactly :func:`holdout_size` ``(len(labels), fraction)`` indices are held out. Each class
    gets its proportional share (rounded down, the remaining slots going to the classes with
    the largest remainders) and its examples are picked with ``numpy.random.default_rng(seed)``,
    so the split depends only on the labels, the fraction and the seed.

    Args:
        labels: Integer labels, shape ``(n,)``.
        fraction: Share to hold out, in ``[0, 1)``.
        seed: Seed of the generator choosing the held-out examples.

    Returns:
        ``(kept, held_out)``: sorted ``int64`` index arrays partitioning ``range(n)``.

    Raises:
        TypeError: If ``fraction`` is not a number.
        ValueError: If ``fraction`` is outside ``[0, 1)`` or ``labels`` is not 1-D.

    Example:
        >>> import numpy as np
        >>> kept, held = stratified_split(np.array([0, 0, 0, 0, 1, 1, 1, 1]), 0.5, seed=0)
        >>> len(kept), len(held), np.bincount(np.array([0, 0, 0, 0, 1, 1, 1, 1])[held]).tolist()
        (4, 4, [2, 2])
    """
    fraction = check_fraction(fraction, "fraction")
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"`labels` must be 1-D. Received: labels.shape={labels.shape}")
    n = labels.shape[0]
    total = holdout_size(n, fraction)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quotas = counts * total / max(n, 1)
    shares = np.floor(quotas).astype(np.int64)
    remaining = total - int(shares.sum())
    if remaining > 0:
        by_remainder = np.argsort(-(quotas - shares), kind="stable")
        shares[by_remainder[:remaining]] += 1
    rng = np.random.default_rng(seed)
    held_parts = []
    for class_index in range(classes.shape[0]):
        members = np.flatnonzero(inverse == class_index)
        held_parts.append(rng.permutation(members)[: shares[class_index]])
    held = np.sort(np.concatenate([*held_parts, np.empty(0, np.int64)]).astype(np.int64))
    is_held = np.zeros(n, dtype=bool)
    is_held[held] = True
    kept = np.flatnonzero(~is_held).astype(np.int64)
    return kept, held
