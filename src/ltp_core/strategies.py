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
    "erk_counts",
    "resolve_strategy",
    "strategy_name",
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


def _lamp_ranked(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LAMP scores of ``values`` in ascending order, and the order (indices into ``values``).

    ``values`` are sorted by ``|value|``, equal magnitudes in position order. For float32 and
    narrower weights one sort of 64-bit keys (the magnitude's bits above the position: bits of
    non-negative floats sort like the floats) gives both the order and the sorted magnitudes,
    several times faster than a stable argsort and a gather; float64 weights use the latter.
    """
    if values.dtype == np.float64 or values.size >= 1 << 32:
        order: np.ndarray = np.argsort(np.abs(values), kind="stable")
        ranked = np.square(values[order].astype(np.float64))
    else:
        bits = np.abs(values.astype(np.float32, copy=False)).view(np.uint32).astype(np.uint64)
        keys = bits << np.uint64(32)
        keys |= np.arange(values.size, dtype=np.uint64)
        keys.sort()
        order = (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        ranked = np.square(
            (keys >> np.uint64(32)).astype(np.uint32).view(np.float32), dtype=np.float64
        )
    suffix = np.cumsum(ranked[::-1])[::-1]
    np.divide(ranked, suffix, out=ranked, where=suffix > 0)  # 0 stays 0 where suffix is 0
    if ranked.size:
        ranked[-1] = 1.0
    return order, ranked


def _lamp_scores(
    arrays: Mapping[str, Sequence[np.ndarray]], alive: Sequence[np.ndarray | None]
) -> list[np.ndarray]:
    """LAMP scores (Lee et al. 2021) of the alive trained weights, layer by layer.

    In a layer, with its alive weights sorted by ascending ``|w|`` (equal magnitudes in
    position order), the score of the ``j``-th is ``w_j**2 / sum(w_l**2 for l >= j)``: its
    squared magnitude over the squared magnitudes of itself and every larger weight. The
    largest weight scores exactly 1 (also in an all-zero layer), all others less, and inside
    a layer the order is the magnitude order. Pruned entries score 0 (they are not alive).
    """
    scores: list[np.ndarray] = []
    for weights, mask in zip(arrays["trained"], alive, strict=True):
        flat = weights.reshape(-1)
        index = None if mask is None else np.flatnonzero(mask.reshape(-1))
        order, ranked = _lamp_ranked(flat if index is None else flat[index])
        full = np.zeros(flat.size)
        full[order if index is None else index[order]] = ranked
        scores.append(full)
    return scores


_LAMP_BLOCK = 1024  # entries between two stored suffix sums of a layer's sorted magnitudes
_LAMP_PASS = 1 << 16  # entries per vectorized step of the top-down running sum (a multiple)


class _LampLayer:
    """One layer's alive magnitudes, sorted, with the running sum of squares from the top.

    The LAMP score of the ``j``-th smallest magnitude ``a_j`` is ``a_j**2 / S_j``, where
    ``S_j`` is the running sum of ``a_l**2`` from the largest down to ``a_j``, accumulated in
    float64 one term at a time exactly as ``np.cumsum`` over the reversed squares does (so the
    scores are bit for bit those of :func:`_lamp_ranked`). Only the sorted magnitudes (4 bytes
    per weight for float32 weights) and every ``_LAMP_BLOCK``-th ``S_j`` are kept: the scores of
    one block are recomputed from the block's end on demand, continuing the same sequence of
    additions. Scores never decrease along the sorted order, so counting the scores at most a
    value is a search over the stored ones and then over one block.
    """

    def __init__(self, flat: np.ndarray, alive: np.ndarray | None) -> None:
        values = flat if alive is None else flat[alive]
        if values.dtype == np.float64:
            magnitudes = np.abs(values)
        else:  # like _lamp_ranked: float32 bits order float32 and narrower weights
            magnitudes = np.abs(values.astype(np.float32, copy=False))
        # non-negative floats sort like their bits, and NumPy sorts unsigned integers faster
        magnitudes.view(np.uint64 if magnitudes.dtype == np.float64 else np.uint32).sort()
        self.sorted = magnitudes
        size = magnitudes.size
        blocks = -(-size // _LAMP_BLOCK)
        self.suffix = np.zeros(blocks + 1)  # suffix[i] = S at entry i * _LAMP_BLOCK; S_size = 0
        self.marks = np.zeros(blocks)  # score at entry i * _LAMP_BLOCK
        carry = 0.0
        running = np.empty(_LAMP_PASS + 1)
        top = size
        while top > 0:  # from the largest magnitudes down, one vectorized step at a time
            bottom = max(((top - 1) // _LAMP_PASS) * _LAMP_PASS, 0)
            steps = running[: top - bottom + 1]
            steps[0] = carry
            np.square(magnitudes[bottom:top][::-1], out=steps[1:], dtype=np.float64)
            np.cumsum(steps, out=steps)  # steps[m] = S at entry top - m
            at = np.arange(bottom, top, _LAMP_BLOCK)  # bottom is a multiple of _LAMP_BLOCK
            sums = steps[top - at]
            self.suffix[at // _LAMP_BLOCK] = sums
            marks = np.square(magnitudes[at], dtype=np.float64)
            np.divide(marks, sums, out=marks, where=sums > 0)
            self.marks[at // _LAMP_BLOCK] = marks
            carry = float(steps[top - bottom])
            top = bottom
        if size and (size - 1) % _LAMP_BLOCK == 0:
            self.marks[-1] = 1.0
        self._cached: tuple[int, np.ndarray] | None = None

    def block_scores(self, block: int) -> np.ndarray:
        """Scores of sorted entries ``[block * _LAMP_BLOCK, (block + 1) * _LAMP_BLOCK)``."""
        if self._cached is not None and self._cached[0] == block:
            return self._cached[1]
        start = block * _LAMP_BLOCK
        stop = min(start + _LAMP_BLOCK, self.sorted.size)
        squares: np.ndarray = np.square(self.sorted[start:stop], dtype=np.float64)
        steps = np.empty(stop - start + 1)
        steps[0] = self.suffix[block + 1] if stop < self.sorted.size else 0.0
        steps[1:] = squares[::-1]
        np.cumsum(steps, out=steps)
        sums = steps[:0:-1]  # S at entries start .. stop - 1
        np.divide(squares, sums, out=squares, where=sums > 0)
        if stop == self.sorted.size:
            squares[-1] = 1.0
        self._cached = (block, squares)
        return squares

    def count(self, value: float, side: Literal["left", "right"]) -> int:
        """How many scores are below ``value`` (``"left"``) or at most ``value`` (``"right"``)."""
        block = int(np.searchsorted(self.marks, value, side)) - 1
        if block < 0:
            return 0
        scores = self.block_scores(block)
        return block * _LAMP_BLOCK + int(np.searchsorted(scores, value, side))

    def positions(
        self, flat: np.ndarray, alive: np.ndarray | None, start: int, stop: int
    ) -> tuple[float, np.ndarray]:
        """Magnitude of sorted entry ``start`` and the flat positions of sorted ``[start, stop)``.

        Equal magnitudes are in position order, as in :func:`_lamp_ranked`.
        """
        low = self.sorted[start]
        if stop <= start:
            return float(low), np.empty(0, dtype=np.int64)
        high = self.sorted[stop - 1]
        parts: list[np.ndarray] = []
        for begin in range(0, flat.size, _LAMP_PASS):
            end = min(begin + _LAMP_PASS, flat.size)
            chunk = flat[begin:end]
            magnitude = np.abs(chunk if chunk.dtype == np.float64 else chunk.astype(np.float32))
            inside = (magnitude >= low) & (magnitude <= high)
            if alive is not None:
                inside &= alive[begin:end]
            parts.append(np.flatnonzero(inside) + begin)
        found = np.concatenate(parts)
        magnitudes = np.abs(
            flat[found] if flat.dtype == np.float64 else flat[found].astype(np.float32)
        )
        first_low = int(np.searchsorted(self.sorted, low, "left"))
        first_high = int(np.searchsorted(self.sorted, high, "left"))
        if low == high:
            return float(low), found[start - first_low : stop - first_low]
        at_low = found[magnitudes == low][start - first_low :]
        between = found[(magnitudes > low) & (magnitudes < high)]
        at_high = found[magnitudes == high][: stop - first_high]
        return float(low), np.concatenate([at_low, between, at_high])


def _lamp_select(
    trained: Sequence[np.ndarray],
    alive: Sequence[np.ndarray | None],
    array_ids: Sequence[int],
    k: int,
    salt: int,
) -> list[np.ndarray]:
    """Exact-k LAMP selection over sorted magnitudes, without score or position arrays.

    Each layer keeps its alive magnitudes sorted (:class:`_LampLayer`: 4 bytes per float32
    weight, sorted with NumPy's float sort) and every 1024th running sum; the ``k``-th smallest
    score over all layers is found by bisection on its float bits, counting in each layer by a
    search over its stored scores and one recomputed block. Every layer then loses its weights
    scored below it (all magnitudes below one value, and the first of the equal ones in
    position order), and the entries tied at it are chosen by position hash, as in every other
    selection. Same result as ranking :func:`_lamp_scores` with :mod:`ltp_core.selection`.
    """
    from .selection import hash_positions, position_keys

    keeps = [
        np.ones(flat.size, dtype=bool) if mask is None else np.array(mask, dtype=bool)
        for flat, mask in zip(trained, alive, strict=True)
    ]
    if k == 0:
        return keeps
    layers = [_LampLayer(flat, mask) for flat, mask in zip(trained, alive, strict=True)]

    def count_at_most(value: float) -> int:
        return sum(layer.count(value, "right") for layer in layers)

    low, high = 0, int(np.float64(1.0).view(np.uint64))  # bits of non-negative floats sort
    while low < high:
        middle = (low + high) // 2
        if count_at_most(float(np.uint64(middle).view(np.float64))) >= k:
            high = middle
        else:
            low = middle + 1
    threshold = float(np.uint64(low).view(np.float64))
    tied_keys = []
    below_total = 0
    for keep, flat, mask, array_id, layer in zip(
        keeps, trained, alive, array_ids, layers, strict=True
    ):
        below = layer.count(threshold, "left")
        upto = layer.count(threshold, "right")
        below_total += below
        if below == layer.sorted.size:  # pragma: no cover - the top weight scores 1 >= threshold
            keep[:] = False
            continue
        if below:
            # the kept entries are those from sorted entry `below` on: magnitudes above its
            # magnitude, and the equal ones after the first `below - first` in position order
            first = int(np.searchsorted(layer.sorted, layer.sorted[below], "left"))
            value, equal = layer.positions(flat, mask, first, below)
            _keep_at_least(keep, flat, value)
            keep[equal] = False
        if upto > below:
            _, tied = layer.positions(flat, mask, below, upto)
            tied_keys.append(position_keys(array_id, tied.astype(np.int64)))
    if tied_keys:
        keys = np.concatenate(tied_keys)
        chosen = keys[np.lexsort((keys, hash_positions(keys, salt)))[: k - below_total]]
        low_bits = np.uint64((1 << 40) - 1)
        for keep, array_id in zip(keeps, array_ids, strict=True):
            mine = chosen[(chosen >> np.uint64(40)) == np.uint64(array_id)]
            keep[(mine & low_bits).astype(np.intp)] = False
    return keeps


def _keep_at_least(keep: np.ndarray, flat: np.ndarray, value: float) -> None:
    """Clear ``keep`` where ``|flat| < value`` (float32 magnitudes for narrower weights)."""
    for begin in range(0, flat.size, _LAMP_PASS):
        end = min(begin + _LAMP_PASS, flat.size)
        chunk = flat[begin:end]
        magnitude = np.abs(chunk if chunk.dtype == np.float64 else chunk.astype(np.float32))
        keep[begin:end] &= magnitude >= value


def erk_counts(shapes: Sequence[tuple[int, ...]], alive: Sequence[int], k: int) -> list[int]:
    """How many weights each layer loses under Erdos-Renyi-Kernel densities (Evci et al. 2020).

    ERK gives a layer of shape ``(d_1, ..., d_r)`` a density proportional to
    ``(d_1 + ... + d_r) / (d_1 * ... * d_r)``, so its kept count is proportional to the sum of
    its dimensions. The common scale is chosen so that exactly ``sum(alive) - k`` weights stay;
    a layer whose share exceeds what it still has keeps all of it (density capped at what is
    alive, never revived) and the excess goes to the others. Fractions are rounded by largest
    remainder (ties to the earlier layer), so the counts add up exactly.

    Args:
        shapes: Shape of each layer.
        alive: Weights still alive in each layer.
        k: Weights to prune in total, ``0 <= k <= sum(alive)``.

    Returns:
        Weights to prune per layer, each ``<= alive``, summing to ``k``.

    Example:
        >>> erk_counts([(10, 10), (10, 1)], [100, 10], 55)
        [55, 0]
        >>> erk_counts([(100, 100), (100, 10)], [10000, 1000], 10000)
        [9355, 645]
    """
    weights = [float(sum(shape)) for shape in shapes]
    keep_total = sum(alive) - k
    if not 0 <= keep_total <= sum(alive):
        raise ValueError(f"`k` must be in [0, {sum(alive)}]. Received: k={k}")
    # Water-filling: layers whose share would exceed what they have keep all of it.
    capped = [False] * len(shapes)
    scale = 0.0
    free: list[int] = []
    while True:
        free = [i for i in range(len(shapes)) if not capped[i] and alive[i] > 0]
        budget = keep_total - sum(alive[i] for i in range(len(shapes)) if capped[i])
        total_weight = sum(weights[i] for i in free)
        if not free or total_weight == 0:
            break
        scale = budget / total_weight
        over = [i for i in free if scale * weights[i] >= alive[i]]
        if not over:
            break
        for i in over:
            capped[i] = True
    keep_real = [
        float(alive[i]) if capped[i] or not free else scale * weights[i] for i in range(len(shapes))
    ]
    keep = [min(alive[i], int(np.floor(x))) for i, x in enumerate(keep_real)]
    short = keep_total - sum(keep)
    remainders = sorted(
        (i for i in range(len(shapes)) if keep[i] < alive[i]),
        key=lambda i: (-(keep_real[i] - keep[i]), i),
    )
    for i in remainders[:short]:
        keep[i] += 1
    return [alive[i] - keep[i] for i in range(len(shapes))]


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
        global_only: The criterion only makes sense across layers (``lamp``, ``random_erk``):
            it is registered once, under its own name, in global scope.
        layer_counts: Splits a global count among the layers before selecting in each layer:
            ``f(shapes, alive_counts, k) -> counts`` (``random_erk``).
        keeps_one_per_layer: The criterion promises that every layer keeps a weight; a count
            that leaves fewer weights than layers is refused.
        select: An exact selection of its own for a scope without floors:
            ``f(flat weights, flat alive masks, array ids, k, salt) -> flat keep masks``
            (``lamp``: sorted magnitudes per layer, no score arrays). ``pooled`` must
            give the same ranking, for scopes with ``min_layer_density`` floors.
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
    global_only: bool = False
    layer_counts: Callable[[Sequence[tuple[int, ...]], Sequence[int], int], list[int]] | None = None
    keeps_one_per_layer: bool = False
    select: (
        Callable[
            [Sequence[np.ndarray], Sequence[np.ndarray | None], Sequence[int], int, int],
            list[np.ndarray],
        ]
        | None
    ) = None


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
_LEE = "Lee et al. 2021"
_EVCI = "Evci et al. 2020"

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
                "lamp",
                ("trained",),
                "layer-adaptive magnitude scores: |w|^2 over the sum of w^2 of the layer's "
                "weights at least as large; every layer keeps its largest weight",
                pooled=_lamp_scores,
                select=_lamp_select,
                paper=_LEE,
                global_only=True,
                keeps_one_per_layer=True,
            ),
            Criterion(
                "random_erk",
                (),
                "random within each layer, layer densities by Erdos-Renyi-Kernel "
                "(proportional to sum/product of the layer's dimensions)",
                random=True,
                paper=_EVCI,
                global_only=True,
                layer_counts=erk_counts,
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
        if criterion.global_only:
            registry[name] = Strategy(name, criterion, "global")
            continue
        registry[name] = Strategy(name, criterion, "layer")
        registry[f"{name}_global"] = Strategy(f"{name}_global", criterion, "global")
    return MappingProxyType(registry)


STRATEGIES: Mapping[str, Strategy] = _build_registry()
"""Read-only registry of built-in strategies: every criterion in layer and global scope, except
``lamp`` and ``random_erk``, which are global by nature and registered once under their name."""


def strategy_name(criterion: str, scope: Scope) -> str:
    """Registry name of ``criterion`` in ``scope`` (``lamp`` and ``random_erk`` are global only).

    Raises:
        ValueError: A global-only criterion asked in layer scope.

    Example:
        >>> strategy_name("large_final", "global"), strategy_name("lamp", "global")
        ('large_final_global', 'lamp')
    """
    found = CRITERIA.get(criterion)
    if found is not None and found.global_only:
        if scope != "global":
            raise ValueError(
                f"Criterion {criterion!r} ranks weights across layers (global by nature): use "
                f"global scope (`ltp imp --scope global`). Received: strategy={criterion!r}, "
                f"scope={scope!r}"
            )
        return criterion
    return f"{criterion}_global" if scope == "global" else criterion


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
