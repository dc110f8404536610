"""Pruning schedules: per-level fractions of what remains <-> total sparsity.

Vocabulary: a *fraction* is what one level prunes of the weights still alive; *sparsity* and
*density* are totals. Pruning ``f`` per level for ``L`` levels leaves ``(1 - f) ** L``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .validation import check_fraction

__all__ = [
    "OLD_PACKAGE_CUMULATIVE_SPARSITIES",
    "cumulative_sparsities",
    "fraction_for_target_sparsity",
    "fractions_for_cumulative_sparsities",
    "old_package_fractions",
]

OLD_PACKAGE_CUMULATIVE_SPARSITIES: tuple[float, ...] = (0.2, 0.5578, 0.896, 0.9933)
"""Cumulative sparsities of the example experiment of lottery-ticket-pruner 0.8.1."""


def fraction_for_target_sparsity(target_sparsity: float, levels: int) -> float:
    """Per-level fraction that reaches ``target_sparsity`` after ``levels`` levels.

    Example:
        >>> round(fraction_for_target_sparsity(0.9, 2), 6)
        0.683772
    """
    target = check_fraction(target_sparsity, "target_sparsity")
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"`levels` must be a positive integer. Received: levels={levels!r}")
    return float(1.0 - (1.0 - target) ** (1.0 / levels))


def cumulative_sparsities(fractions: Sequence[float]) -> list[float]:
    """Total sparsity after each level when pruning ``fractions`` of what remains.

    Example:
        >>> [round(s, 4) for s in cumulative_sparsities([0.5, 0.2])]
        [0.5, 0.6]
    """
    remaining = 1.0
    result = []
    for i, f in enumerate(fractions):
        remaining *= 1.0 - check_fraction(f, f"fractions[{i}]")
        result.append(1.0 - remaining)
    return result


def fractions_for_cumulative_sparsities(sparsities: Sequence[float]) -> list[float]:
    """Per-level fractions that produce the given increasing cumulative sparsities.

    Example:
        >>> [round(f, 4) for f in fractions_for_cumulative_sparsities([0.5, 0.6])]
        [0.5, 0.2]
    """
    previous_remaining = 1.0
    result = []
    for i, s in enumerate(sparsities):
        remaining = 1.0 - check_fraction(s, f"sparsities[{i}]")
        if remaining > previous_remaining or math.isclose(remaining, 0.0):
            raise ValueError(
                "Cumulative sparsities must be non-decreasing and below 1. "
                f"Received: sparsities={list(sparsities)}"
            )
        result.append(1.0 - remaining / previous_remaining)
        previous_remaining = remaining
    return result


def old_package_fractions() -> list[float]:
    """Per-call fractions reproducing lottery-ticket-pruner's 20/55.78/89.6/99.33 % sequence.

    Example:
        >>> [round(s, 4) for s in cumulative_sparsities(old_package_fractions())]
        [0.2, 0.5578, 0.896, 0.9933]
    """
    return fractions_for_cumulative_sparsities(OLD_PACKAGE_CUMULATIVE_SPARSITIES)
