"""Pruning strategies: a *criterion* (what is ranked) times a *scope* (per layer or global).

A criterion turns weights into scores; the smallest scores are pruned. Built-in criteria follow
Frankle & Carbin (2019) and Zhou et al. (2019). Each exists in layer scope (``"large_final"``) and
in global scope (``"large_final_global"``). :data:`STRATEGIES` is a read-only registry.

Custom strategies are :class:`Strategy` objects built with :meth:`Strategy.from_score_fn`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from .validation import short_repr

__all__ = [
    "CRITERIA",
    "STRATEGIES",
    "Criterion",
    "Scope",
    "Strategy",
    "resolve_strategy",
]

Scope = Literal["layer", "global"]
Role = Literal["initial", "trained", "current"]

ROLES: tuple[Role, ...] = ("initial", "trained", "current")


def _as_score_float(x: np.ndarray) -> np.ndarray:
    """Scores are computed in float32, or float64 for float64 weights."""
    if x.dtype == np.float64 or x.dtype == np.float32:
        return x
    return x.astype(np.float32)


def _magnitude(x: np.ndarray) -> np.ndarray:
    result: np.ndarray = np.abs(_as_score_float(x))
    return result


def _magnitude_increase(initial: np.ndarray, trained: np.ndarray) -> np.ndarray:
    result: np.ndarray = np.abs(_as_score_float(trained)) - np.abs(_as_score_float(initial))
    return result


def _movement(initial: np.ndarray, trained: np.ndarray) -> np.ndarray:
    result: np.ndarray = np.abs(_as_score_float(trained) - _as_score_float(initial))
    return result


def _large_final_same_sign(initial: np.ndarray, trained: np.ndarray) -> np.ndarray:
    final = _as_score_float(trained)
    size = np.abs(final)
    same_sign = np.signbit(final) == np.signbit(_as_score_float(initial))
    same_sign &= final != 0
    # Same sign: |w_final| >= 0. Sign flipped: in (-1, 0), larger |w_final| ranked higher.
    flipped = -1.0 / (1.0 + size)
    result: np.ndarray = np.where(same_sign, size, flipped.astype(size.dtype))
    return result


def _min_rank_of_initial_and_final(
    arrays: Mapping[str, Sequence[np.ndarray]], alive: Sequence[np.ndarray | None]
) -> list[np.ndarray]:
    """Score = min(rank of |initial|, rank of |trained|) among the alive entries of the scope."""
    flat_alive = [
        np.ones(a.size, dtype=bool) if m is None else m.reshape(-1)
        for a, m in zip(arrays["trained"], alive, strict=True)
    ]
    ranks: dict[str, np.ndarray] = {}
    for role in ("initial", "trained"):
        values = np.concatenate(
            [_magnitude(a.reshape(-1)[m]) for a, m in zip(arrays[role], flat_alive, strict=True)]
        )
        order = np.argsort(values, kind="stable")
        role_ranks = np.empty(values.size, dtype=np.float64)
        role_ranks[order] = np.arange(values.size, dtype=np.float64)
        ranks[role] = role_ranks
    combined = np.minimum(ranks["initial"], ranks["trained"])
    scores: list[np.ndarray] = []
    start = 0
    for m in flat_alive:
        score = np.zeros(m.size, dtype=np.float64)
        count = int(np.count_nonzero(m))
        score[m] = combined[start : start + count]
        start += count
        scores.append(score)
    return scores


@dataclass(frozen=True)
class Criterion:
    """What a strategy ranks. Smallest scores are pruned first.

    Exactly one of ``elementwise``, ``pooled`` or ``random`` describes how scores are made:

    Attributes:
        name: Registry name (layer-scope strategy name).
        needs: Which weights the scores read, in the order ``elementwise`` takes them.
        description: One line for docs and ``--help``.
        elementwise: ``f(*arrays) -> scores`` applied chunk by chunk (streams, any size).
        pooled: ``f({role: arrays}, alive_masks) -> score arrays`` over a whole scope at once.
        random: Scores are seeded pseudo-random numbers.
        signed: Scores may be negative.
        paper: Where the criterion comes from.
        reveals_nonfinite: A NaN or infinite input always gives a NaN or infinite score (as
            for ``|w|``), so checking the scores also checks the weights. When ``False`` every
            weight the criterion reads is checked itself.
    """

    name: str
    needs: tuple[Role, ...]
    description: str
    elementwise: Callable[..., np.ndarray] | None = None
    pooled: (
        Callable[
            [Mapping[str, Sequence[np.ndarray]], Sequence[np.ndarray | None]], list[np.ndarray]
        ]
        | None
    ) = None
    random: bool = False
    signed: bool = False
    paper: str = ""
    reveals_nonfinite: bool = False


@dataclass(frozen=True)
class Strategy:
    """A criterion applied in a scope: ``"layer"`` (each array on its own) or ``"global"``.

    Example:
        >>> from ltp_core import compute_masks
        >>> cube = Strategy.from_score_fn(
        ...     "cube", lambda trained: np.abs(trained) ** 3, needs=("trained",))
        >>> m = compute_masks(cube, 0.5, trained=[np.array([1.0, -3.0, 2.0, 0.5])])
        >>> m[0].tolist()
        [False, True, True, False]
    """

    name: str
    criterion: Criterion
    scope: Scope = "layer"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_score_fn(
        cls,
        name: str,
        score_fn: Callable[..., np.ndarray],
        *,
        needs: Sequence[Role] = ("trained",),
        scope: Scope = "layer",
        elementwise: bool = False,
    ) -> Strategy:
        """Build a custom strategy from a score function.

        Args:
            name: Name recorded in the pruner's history.
            score_fn: Called with one array per entry of ``needs`` (whole arrays of one layer,
                or chunks of them if ``elementwise``); returns a float score array of the same
                shape. Smallest scores are pruned.
            needs: Which weights to pass: any of ``"initial"``, ``"trained"``, ``"current"``.
            scope: ``"layer"`` or ``"global"``.
            elementwise: Promise that ``score_fn`` works entry by entry, so it may be applied
                to chunks (enables streaming over huge or memory-mapped weights).

        Returns:
            The strategy.

        Raises:
            TypeError: ``score_fn`` is not callable.
            ValueError: Unknown role in ``needs`` or unknown ``scope``.
        """
        if not callable(score_fn):
            raise TypeError(f"`score_fn` must be callable. Received: score_fn={score_fn!r}")
        roles = tuple(needs)
        for role in roles:
            if role not in ROLES:
                raise ValueError(
                    f"`needs` entries must be among {list(ROLES)}. Received: needs={list(roles)}"
                )
        if scope not in ("layer", "global"):
            raise ValueError(f"`scope` must be 'layer' or 'global'. Received: scope={scope!r}")

        def pooled(
            arrays: Mapping[str, Sequence[np.ndarray]], alive: Sequence[np.ndarray | None]
        ) -> list[np.ndarray]:
            count = len(arrays[roles[0]])
            return [
                np.asarray(score_fn(*(arrays[r][i] for r in roles)), dtype=np.float64).reshape(-1)
                for i in range(count)
            ]

        criterion = Criterion(
            name=name,
            needs=roles,
            description=f"custom criterion {name}",
            elementwise=score_fn if elementwise else None,
            pooled=None if elementwise else pooled,
            signed=True,
        )
        return cls(name=name, criterion=criterion, scope=scope)


_FRANKLE = "Frankle & Carbin 2019"
_ZHOU = "Zhou et al. 2019"

CRITERIA: Mapping[str, Criterion] = MappingProxyType(
    {
        c.name: c
        for c in (
            Criterion(
                "random",
                (),
                "uniformly random among the remaining weights (control)",
                random=True,
                paper=_FRANKLE,
            ),
            Criterion(
                "smallest_weights",
                ("current",),
                "smallest |w| of the weights passed in now",
                elementwise=_magnitude,
                paper=_FRANKLE,
                reveals_nonfinite=True,
            ),
            Criterion(
                "large_final",
                ("trained",),
                "keep large |w_final| (the lottery ticket criterion)",
                elementwise=_magnitude,
                paper=_FRANKLE,
                reveals_nonfinite=True,
            ),
            Criterion(
                "large_init",
                ("initial",),
                "keep large |w_init|",
                elementwise=_magnitude,
                paper=_ZHOU,
                reveals_nonfinite=True,
            ),
            Criterion(
                "large_init_large_final",
                ("initial", "trained"),
                "keep weights large both at init and at the end: min of the two ranks",
                pooled=_min_rank_of_initial_and_final,
                paper=_ZHOU,
            ),
            Criterion(
                "magnitude_increase",
                ("initial", "trained"),
                "keep the largest |w_final| - |w_init|",
                elementwise=_magnitude_increase,
                signed=True,
                paper=_ZHOU,
                reveals_nonfinite=True,
            ),
            Criterion(
                "movement",
                ("initial", "trained"),
                "keep the largest |w_final - w_init|",
                elementwise=_movement,
                paper=_ZHOU,
                reveals_nonfinite=True,
            ),
            Criterion(
                "large_final_same_sign",
                ("initial", "trained"),
                "keep large |w_final| whose sign is unchanged since init (flipped signs first)",
                elementwise=_large_final_same_sign,
                signed=True,
                paper=_ZHOU,
            ),
        )
    }
)
"""Built-in criteria by name."""


def _build_registry() -> Mapping[str, Strategy]:
    registry: dict[str, Strategy] = {}
    for name, criterion in CRITERIA.items():
        registry[name] = Strategy(name, criterion, "layer")
        registry[f"{name}_global"] = Strategy(f"{name}_global", criterion, "global")
    return MappingProxyType(registry)


STRATEGIES: Mapping[str, Strategy] = _build_registry()
"""Read-only registry of built-in strategies: every criterion in layer and global scope."""


def resolve_strategy(strategy: Any, name: str = "prune_strategy") -> Strategy:
    """Return the :class:`Strategy` for a registry name or pass a ``Strategy`` through.

    Raises:
        ValueError: Unknown name; the message lists the valid names.
        TypeError: Neither a string nor a ``Strategy``.

    Example:
        >>> resolve_strategy("large_final_global").scope
        'global'
    """
    if isinstance(strategy, Strategy):
        return strategy
    if isinstance(strategy, str):
        try:
            return STRATEGIES[strategy]
        except KeyError:
            valid = ", ".join(sorted(STRATEGIES))
            raise ValueError(
                f"Unknown `{name}`. Valid strategies: {valid}; or pass a "
                f"ltp_core.Strategy. Received: {name}={strategy!r}"
            ) from None
    raise TypeError(
        f"`{name}` must be a strategy name (str) or a ltp_core.Strategy. "
        f"Received: {name}={short_repr(strategy)} of type {type(strategy).__name__}"
    )
