"""Boolean masks over lists of weight arrays: apply, count, combine.

A mask is a ``numpy.bool_`` array shaped like its weight array; ``True`` means kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "all_kept",
    "apply_masks",
    "combine_masks",
    "count_kept",
    "count_total",
    "density",
    "layer_densities",
    "sparsity",
]


def all_kept(shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """Masks that keep everything.

    Example:
        >>> [bool(m.all()) for m in all_kept([(2, 2), (3,)])]
        [True, True]
    """
    return [np.ones(shape, dtype=bool) for shape in shapes]


def apply_masks(weights: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Return new arrays equal to ``weights`` with pruned entries set to exactly ``0``.

    The dtype of each array is kept; no ``-0.0`` is produced.

    Example:
        >>> apply_masks([np.array([1.5, -2.0])], [np.array([True, False])])[0].tolist()
        [1.5, 0.0]
    """
    if len(weights) != len(masks):
        raise ValueError(
            f"`masks` must hold one mask per weight array ({len(weights)}). "
            f"Received: {len(masks)} masks"
        )
    result = []
    for w, m in zip(weights, masks, strict=True):
        array = np.asarray(w)
        if array.shape != np.shape(m):
            raise ValueError(
                f"Each mask must match its weight array's shape. Received: weights of shape "
                f"{array.shape} with a mask of shape {np.shape(m)}"
            )
        result.append(np.where(m, array, np.zeros((), dtype=array.dtype)))
    return result


def combine_masks(*mask_lists: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Entry-wise AND of several mask lists (a weight survives only if every list keeps it).

    Example:
        >>> a, b = [np.array([True, True, False])], [np.array([True, False, True])]
        >>> combine_masks(a, b)[0].tolist()
        [True, False, False]
    """
    if not mask_lists:
        raise ValueError("combine_masks needs at least one list of masks. Received: nothing")
    result = [np.array(m, dtype=bool, copy=True) for m in mask_lists[0]]
    for other in mask_lists[1:]:
        if len(other) != len(result):
            raise ValueError(
                f"All mask lists must have the same length. Received: {len(result)} and "
                f"{len(other)}"
            )
        for acc, m in zip(result, other, strict=True):
            acc &= np.asarray(m, dtype=bool)
    return result


def count_kept(masks: Sequence[np.ndarray]) -> int:
    """Number of kept entries over all masks.

    Example:
        >>> count_kept([np.array([True, False]), np.array([True])])
        2
    """
    return sum(int(np.count_nonzero(m)) for m in masks)


def count_total(masks: Sequence[np.ndarray]) -> int:
    """Number of entries over all masks.

    Example:
        >>> count_total([np.zeros((2, 3), dtype=bool)])
        6
    """
    return sum(int(np.size(m)) for m in masks)


def density(masks: Sequence[np.ndarray]) -> float:
    """Fraction of entries kept over all masks (``1.0`` = dense).

    Example:
        >>> density([np.array([True, False, False, False])])
        0.25
    """
    total = count_total(masks)
    return count_kept(masks) / total if total else 1.0


def sparsity(masks: Sequence[np.ndarray]) -> float:
    """Fraction of entries pruned over all masks (``1 - density``).

    Example:
        >>> sparsity([np.array([True, False, False, False])])
        0.75
    """
    return 1.0 - density(masks)


def layer_densities(masks: Sequence[np.ndarray]) -> list[float]:
    """Density of each mask on its own.

    Example:
        >>> layer_densities([np.array([True, False]), np.array([True])])
        [0.5, 1.0]
    """
    return [density([m]) for m in masks]
