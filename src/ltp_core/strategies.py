"""Pruning strategies: a *criterion* (what is ranked) times a *scope* (per layer or global).

A criterion turns weights into scores; the smallest scores are pruned. Built-in criteria follow
Frankle & Carbin (2019) and Zhou et al. (2019). Each exists in layer scope (``"large_final"``) and
in global scope (``"large_final_global"``). :data:`STRATEGIES` is a read-only registry.

Custom strategies are :class:`Strategy` objects built with :meth:`Strategy.from_score_fn`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from .validation import short_repr

logger = logging.getLogger(__name__)

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


def _difference(initial: np.ndarray, trained: np.ndarray) -> np.ndarray:
    """``trained - initial``: its absolute value is the ``movement`` score."""
    result: np.ndarray = np.subtract(_as_score_float(trained), _as_score_float(initial))
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


def _lamp_select_sorted(
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
    # layers of one block are counted together: all their scores in one array (exact values),
    # one comparison per bisection step instead of a search per layer (thousands of small
    # layers took milliseconds each step)
    single = [layer for layer in layers if 0 < layer.sorted.size <= _LAMP_BLOCK]
    several = [layer for layer in layers if layer.sorted.size > _LAMP_BLOCK]
    small_scores = (
        np.concatenate([layer.block_scores(0) for layer in single]) if single else np.empty(0)
    )

    def count_at_most(value: float) -> int:
        small = int(np.count_nonzero(small_scores <= value))
        return small + sum(layer.count(value, "right") for layer in several)

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


class NonFiniteInputError(ValueError):
    """Raised by a ``Criterion.select`` that found NaN or infinite weights (``position``: which
    of the arrays it was given); the caller turns it into the error that names the layer.

    ``overflow``: the weights are finite but their float64 sum of squares is not (magnitudes
    near 1e154 and above), which LAMP scores cannot be computed from.
    """

    def __init__(self, position: int, overflow: bool = False) -> None:
        what = "a float64 sum of squares that overflows" if overflow else "non-finite weights"
        super().__init__(f"{what} in the selection's array {position}")
        self.position = position
        self.overflow = overflow


def refuse_unusable(
    trained: Sequence[np.ndarray], alive: Sequence[np.ndarray | None], first: int = 0
) -> None:
    """Raise :class:`NonFiniteInputError` for an array with NaN or infinite entries, or for a
    float64 one whose alive weights' sum of squares overflows (``overflow``; float32 and
    narrower ones are squared in float64); positions counted from ``first``.

    A float64 array is checked by that sum alone (NaN and infinity reach it, dead entries'
    too); the others by their maximum and minimum.
    """
    for position, (flat, mask) in enumerate(zip(trained, alive, strict=True), first):
        if flat.dtype != np.float64:
            _refuse_nonfinite([flat], position)
        elif not math.isfinite(_sum_exactly(_lamp_piece_sums(flat, mask, 0, flat.size))):
            _refuse_unusable_sums(flat, position)


def _refuse_nonfinite(trained: Sequence[np.ndarray], first: int = 0, chunk: int = 1 << 20) -> None:
    """Raise :class:`NonFiniteInputError` for the first array holding NaN or infinite entries
    (positions counted from ``first``)."""
    from .selection import all_finite

    for position, flat in enumerate(trained, first):
        for begin in range(0, flat.size, chunk):
            if not all_finite(flat[begin : begin + chunk]):
                raise NonFiniteInputError(position)


def _sum_exactly(values: Sequence[float]) -> float:
    """The correctly rounded sum of ``values`` (``math.fsum``), ``inf`` where it overflows.

    Example:
        >>> _sum_exactly([0.1] * 10), _sum_exactly([1e308, 1e308])
        (1.0, inf)
    """
    try:
        return math.fsum(values)
    except OverflowError:  # finite parts whose sum is beyond float64
        return math.inf


_LAMP_SAMPLED_MIN = 1 << 20
"""Scopes with at least this many alive weights select ``lamp`` from a sampled bracket (no sort
of every layer, :func:`_lamp_select_sampled`); smaller ones sort every layer (exact path)."""

_LAMP_CHUNK = 1 << 18  # entries per step of the sampled selection's passes (measured best)
_LAMP_SAMPLE_FACTOR = 2.0  # a scope of n alive weights samples this times n ** (2/3)
_LAMP_MIN_SAMPLE = 1 << 12  # smallest sample of a scope (draws over all its layers)
_LAMP_MAX_SAMPLE = 1 << 18  # largest sample of a scope (times the widening of a retry)
_LAMP_MIN_DRAWS = 64  # smallest sample of one layer
_LAMP_ALL_CANDIDATES = 1 << 14  # layers with at most this many alive weights: all candidates
_LAMP_SIGMAS = 3.0  # standard errors on each side of the sampled estimates
_LAMP_SLACK = 1e-4  # relative slack on the magnitude bounds (the sums read first are float32)
_LAMP_MARGIN = 1e-9  # relative gap required between a bound and the exact threshold score


def _lamp_select(
    trained: Sequence[np.ndarray],
    alive: Sequence[np.ndarray | None],
    array_ids: Sequence[int],
    k: int,
    salt: int,
) -> list[np.ndarray]:
    """Exact-k LAMP selection: sampled bracket for large scopes, sorted layers for small ones.

    Scopes of at least ``_LAMP_SAMPLED_MIN`` alive weights use :func:`_lamp_select_sampled`
    (sums of squares in another order than the sequential running sum, so scores may differ
    from :func:`_lamp_scores` in the last bits); if its bracket misses twice, or for smaller
    scopes, :func:`_lamp_select_sorted` gives the bit-for-bit result of ranking
    :func:`_lamp_scores`. NaN or infinite weights (alive or not) raise
    :class:`NonFiniteInputError`: the sampled path sees them in its float32 sums of squares (NaN
    and infinity propagate through them), so no separate checking pass is made.
    """
    n_alive = sum(
        flat.size if mask is None else int(np.count_nonzero(mask))
        for flat, mask in zip(trained, alive, strict=True)
    )
    if k > 0 and n_alive >= _LAMP_SAMPLED_MIN:
        for widen in (1.0, 4.0):
            result = _lamp_select_sampled(trained, alive, array_ids, k, salt, widen)
            if result is not None:
                return result
        logger.debug("lamp: sampled bracket missed twice; sorting every layer")
    refuse_unusable(trained, alive)
    return _lamp_select_sorted(trained, alive, array_ids, k, salt)


def _magnitude_order(magnitudes: np.ndarray) -> np.ndarray:
    """Stable ascending order of non-negative ``magnitudes`` (one sort of 64-bit keys)."""
    if magnitudes.dtype != np.float32 or magnitudes.size >= 1 << 32:
        return np.argsort(magnitudes, kind="stable")
    keys = magnitudes.view(np.uint32).astype(np.uint64) << np.uint64(32)
    keys |= np.arange(magnitudes.size, dtype=np.uint64)
    keys.sort()
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.intp)


def _lamp_magnitudes(chunk: np.ndarray) -> np.ndarray:
    """``|chunk|`` in the score float: float64 for float64 weights, float32 otherwise."""
    result: np.ndarray = np.abs(chunk if chunk.dtype == np.float64 else chunk.astype(np.float32))
    return result


@dataclass
class _LampEstimate:
    """One layer's sample: sorted magnitudes, prefix sums of squares, and their error bars."""

    sample: np.ndarray  # sorted alive magnitudes (float64), or all of them when exact
    weight: float  # alive weights per sampled one
    total: float  # sum of squares of the layer's alive weights (estimated from blocks)
    prefix: np.ndarray  # weight * sum of squares of sample[:j], j = 0 .. m
    error: np.ndarray  # sigmas * standard error of prefix (zero when exact)
    exact: bool  # every alive weight is in the sample: all of them are candidates
    total_error: float = 0.0  # sigmas * standard error of total (zero when summed whole)

    def magnitude_bounds(self, s_a: float, s_b: float) -> tuple[float, float]:
        """``(t_lo, t_hi)``: below ``t_lo`` scores are under ``s_a``, from ``t_hi`` over ``s_b``.

        A weight ``a < t`` has ``S(a) >= total - B(t)`` (``B(t)``: squares below ``t``), so it
        scores under ``t**2 / (total - B(t))``; a weight ``a >= t`` has ``S(a) <= total - B(t)``
        and scores at least that. ``B`` is bounded from the sample at its points (upper bound
        for ``t_lo``, lower bound for ``t_hi``), and the best ``t`` on each side is taken.
        """
        least, most = self.total - self.total_error, self.total + self.total_error
        upper = np.minimum(self.prefix + self.error, most)  # B(t) for t <= sample[j]
        lower = np.maximum(self.prefix - self.error, 0.0)  # B(t) for t > sample[j - 1]
        ends = np.append(self.sample, math.inf)
        reach = np.sqrt(s_a * np.maximum(least - upper, 0.0))
        t_lo = float(np.max(np.minimum(ends, reach))) * (1.0 - _LAMP_SLACK)
        starts = np.insert(self.sample, 0, 0.0)
        need = np.sqrt(s_b * (most - lower))
        t_hi = float(np.min(np.maximum(starts * (1.0 + _LAMP_SLACK), need))) * (1.0 + _LAMP_SLACK)
        return t_lo, max(t_hi, t_lo)


def _refuse_unusable_sums(flat: np.ndarray, position: int) -> None:
    """For a layer whose sums of squares are not finite: raise :class:`NonFiniteInputError`
    for NaN/Inf weights or float64 squares that overflow; return for float32 squares that
    overflow (the sorted path, which squares in float64, can take those)."""
    _refuse_nonfinite([flat], position)
    if flat.dtype == np.float64:
        raise NonFiniteInputError(position, overflow=True)


def _lamp_exact(flat: np.ndarray, n_alive: int, draws: int) -> bool:
    """Whether a layer's sample is all its alive weights (every one a candidate)."""
    return n_alive <= _LAMP_ALL_CANDIDATES or draws >= flat.size


_DOT_ROW = 8192
"""Longest BLAS dot the sums make: OpenBLAS splits a dot over threads from 10001 entries, and
such a dot stalls when another process holds the other cores (measured here: 100x slower)."""


def _sum_of_products(a: np.ndarray, b: np.ndarray) -> float:
    """``sum(a * b)`` by BLAS dots of at most ``_DOT_ROW`` entries, added in float64 in order.

    Example:
        >>> _sum_of_products(np.arange(20000.0), np.ones(20000))
        199990000.0
    """
    rows = a.size // _DOT_ROW
    head = rows * _DOT_ROW
    total = 0.0
    if rows:
        left, right = a[:head].reshape(rows, _DOT_ROW), b[:head].reshape(rows, _DOT_ROW)
        vecdot = getattr(np, "vecdot", None)  # NumPy 2: one call for every row
        if vecdot is not None:
            total = float(np.sum(vecdot(left, right), dtype=np.float64))
        else:  # pragma: no cover - NumPy 1.x
            total = float(sum(float(np.dot(x, y)) for x, y in zip(left, right, strict=True)))
    if head < a.size:
        total += float(np.dot(a[head:], b[head:]))
    return total


def _lamp_piece_sums(
    flat: np.ndarray, mask: np.ndarray | None, begin: int, end: int
) -> list[float]:
    """float32 (float64 for float64 weights) sums of squares of alive weights, per chunk.

    NaN and infinity propagate into the sums, dead entries' too (their product with the 0 of
    the mask is NaN), so a finite result means finite weights.
    """
    sums = []
    for start in range(begin, end, _LAMP_CHUNK):
        stop = min(start + _LAMP_CHUNK, end)
        chunk = flat[start:stop]
        if chunk.dtype != np.float64:
            chunk = chunk.astype(np.float32, copy=False)
        with np.errstate(over="ignore", invalid="ignore"):  # seen in the sum, handled there
            other = chunk if mask is None else chunk * mask[start:stop]
            sums.append(_sum_of_products(chunk, other))
    return sums


_LAMP_WHOLE_SUM = 1 << 20  # layers up to this size have their sum of squares summed whole
_LAMP_BLOCK_SHARE = 8  # larger ones: about one entry in this many, in blocks of _DOT_ROW


def _lamp_total(
    flat: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator
) -> tuple[float, float]:
    """A layer's sum of squares of alive weights and ``_LAMP_SIGMAS`` standard errors of it.

    Small layers are summed whole (error 0). Larger ones sum one block of ``_DOT_ROW``
    entries at a random place in each of ``size / (_DOT_ROW * _LAMP_BLOCK_SHARE)`` equal
    strata (at least 64): about an eighth of a read. The error is that of a simple random
    sample of blocks (the stratification only makes it smaller). NaN/Inf in the blocks read
    give a non-finite total; the pass that follows sees every entry.
    """
    if flat.size <= _LAMP_WHOLE_SUM:
        return _sum_exactly(_lamp_piece_sums(flat, mask, 0, flat.size)), 0.0
    blocks = flat.size // _DOT_ROW
    strata = min(blocks, max(64, blocks // _LAMP_BLOCK_SHARE))
    edges = np.linspace(0, blocks, strata + 1).astype(np.int64)
    picked = edges[:-1] + (rng.random(strata) * (edges[1:] - edges[:-1])).astype(np.int64)
    tail = blocks * _DOT_ROW  # the last partial block is summed whole
    sums = np.empty(strata)
    vecdot = getattr(np, "vecdot", None)  # NumPy 2; BLAS dots of one row each
    for begin in range(0, strata, 256):  # gathers of at most 256 blocks (8 MiB of float32)
        some = picked[begin : begin + 256]
        rows = flat[:tail].reshape(blocks, _DOT_ROW)[some]
        if rows.dtype != np.float64:
            rows = rows.astype(np.float32, copy=False)
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite totals are handled
            other = rows if mask is None else rows * mask[:tail].reshape(blocks, _DOT_ROW)[some]
            found = (
                vecdot(rows, other) if vecdot is not None else np.einsum("ij,ij->i", rows, other)
            )
        sums[begin : begin + some.size] = found
    rest = _sum_exactly(_lamp_piece_sums(flat, mask, tail, flat.size)) if tail < flat.size else 0.0
    scale = blocks / strata
    with np.errstate(over="ignore", invalid="ignore"):  # a non-finite total is handled
        total = float(sums.sum()) * scale + rest
        variance = blocks * blocks * float(sums.var(ddof=1)) / strata * (1.0 - strata / blocks)
        error = _LAMP_SIGMAS * math.sqrt(max(variance, 0.0)) + abs(total) * _LAMP_SLACK
    return total, error


def _lamp_estimate(
    flat: np.ndarray,
    mask: np.ndarray | None,
    n_alive: int,
    draws: int,
    rng: np.random.Generator,
    total: float,
    total_error: float,
    position: int,
) -> _LampEstimate:
    """One layer's sample; ``total``, ``total_error``: from :func:`_lamp_total`; ``position``:
    the layer's in the selection (for :class:`NonFiniteInputError`)."""
    if _lamp_exact(flat, n_alive, draws):
        values = _lamp_magnitudes(flat if mask is None else flat[mask]).astype(np.float64)
        values.sort()
        squares = np.square(values)
        prefix = np.concatenate(([0.0], np.cumsum(squares)))
        return _LampEstimate(values, 1.0, float(prefix[-1]), prefix, np.zeros(prefix.size), True)
    spots = rng.random(draws)
    spots += np.arange(draws, dtype=np.float64)
    spots *= flat.size / draws
    index = np.minimum(spots.astype(np.int64), flat.size - 1)
    if mask is not None:
        index = index[mask[index]]
    sample = _lamp_magnitudes(flat[index]).astype(np.float64)
    sample.sort()  # NaN and infinity sort last
    if sample.size and not math.isfinite(sample[-1]):
        _refuse_nonfinite([flat], position)  # raises: a sampled weight is NaN or infinite
    weight = n_alive / max(sample.size, 1)
    squares = np.square(sample)
    prefix = np.concatenate(([0.0], np.cumsum(squares))) * weight
    error = np.concatenate(([0.0], np.cumsum(np.square(squares))))
    np.sqrt(error, out=error)
    error *= weight * _LAMP_SIGMAS
    error += total * _LAMP_SLACK
    return _LampEstimate(sample, weight, total, prefix, error, False, total_error)


class _SampleCurves:
    """Every layer's sample scores side by side, for the bracket of the threshold score.

    The samples of all layers are held in one array (layer after layer, each sorted), so the
    estimated scores of every layer are computed in a few NumPy calls, and the weighted count
    of sample scores at or below a value is one ``searchsorted`` over all layers: scores lie
    in ``[0, 1]``, so layer ``l``'s scores shifted by ``2 l`` form one sorted array.
    """

    def __init__(self, used: Sequence[_LampEstimate]) -> None:
        lengths = [e.sample.size for e in used]
        self.starts = np.cumsum([0, *lengths])
        self.squares = np.square(np.concatenate([e.sample for e in used]))
        self.prefix = np.concatenate([e.prefix[:-1] for e in used])
        self.error = np.concatenate([e.error[:-1] for e in used])
        self.total = np.repeat([e.total for e in used], lengths)
        self.total_error = np.repeat([e.total_error for e in used], lengths)
        self.weights = np.array([e.weight for e in used])
        self.offsets = 2.0 * np.arange(len(used), dtype=np.float64)
        self.shift = np.repeat(self.offsets, lengths)

    def scores(self, side: int) -> np.ndarray:
        """Estimated scores (side -1: lower bounds, 0: central, +1: upper), non-decreasing in
        each layer, shifted by ``2 l`` (so sorted over all layers)."""
        # a score t**2 / S(t) is smallest where S(t) = total - B(t) is largest: the sum of
        # squares below t (B) at its lower bound and the total at its upper bound
        below = self.prefix + side * self.error
        total = self.total - side * self.total_error
        rest = total - np.clip(below, 0.0, total)
        scores: np.ndarray = np.ones_like(self.squares)
        np.divide(self.squares, rest, out=scores, where=rest > self.squares)
        for begin, end in zip(self.starts[:-1], self.starts[1:], strict=True):
            np.maximum.accumulate(scores[begin:end], out=scores[begin:end])
        scores += self.shift
        return scores

    def counts(
        self, shifted: np.ndarray, value: float, side: Literal["left", "right"]
    ) -> np.ndarray:
        """Sample scores of each layer below (``left``) or at or below (``right``) ``value``."""
        found: np.ndarray = np.searchsorted(shifted, value + self.offsets, side) - self.starts[:-1]
        return found

    def at_count(self, shifted: np.ndarray, count: float) -> float:
        """Smallest score ``s`` with ``sum(weight * #{score <= s}) >= count`` (``inf`` if none),
        by bisection on the float bits of ``s`` (non-negative floats order like their bits)."""
        if count <= 0:
            return 0.0
        if float(self.weights @ self.counts(shifted, 1.0, "right")) < count:
            return math.inf
        low, high = 0, int(np.float64(1.0).view(np.int64))
        while low < high:
            middle = (low + high) // 2
            value = float(np.int64(middle).view(np.float64))
            if float(self.weights @ self.counts(shifted, value, "right")) >= count:
                high = middle
            else:
                low = middle + 1
        return float(np.int64(low).view(np.float64))


def _lamp_select_sampled(
    trained: Sequence[np.ndarray],
    alive: Sequence[np.ndarray | None],
    array_ids: Sequence[int],
    k: int,
    salt: int,
    widen: float,
) -> list[np.ndarray] | None:
    """Exact-k LAMP selection from a sampled bracket, or ``None`` when the bracket misses.

    The score of a weight is monotone in ``|w|`` inside its layer, so a global score threshold
    is one magnitude threshold per layer. A stratified sample per layer (about ``2 n**(2/3)``
    in all) and each layer's sum of squares bracket the global threshold score ``[s_a, s_b]``
    (sampling error of the counts and of the sums of squares below, ``widen`` times
    ``_LAMP_SIGMAS`` standard errors) and turn it into magnitude bounds ``[t_lo, t_hi)`` per
    layer: a weight below ``t_lo`` scores below ``s_a``, one at or above ``t_hi`` above
    ``s_b`` (``t**2 / S <= s`` with ``S`` bounded from the sums). One pass per layer prunes
    the weights below ``t_lo``, sums the squares at or above it in float64, and collects the
    candidates in between. Only the candidates are sorted; their exact scores use
    ``S(t_hi)`` plus their own suffix sums, and the ``k - below`` smallest among all layers'
    candidates are pruned, ties by position hash. The result is checked: every weight below a
    ``t_lo`` must score below every kept one and every weight above a ``t_hi`` above every
    pruned one (bounds from the exact sums); otherwise ``None``.
    """
    from .selection import hash_positions

    n_alives = [
        flat.size if mask is None else int(np.count_nonzero(mask))
        for flat, mask in zip(trained, alive, strict=True)
    ]
    n = sum(n_alives)
    sizes = sum(flat.size for flat in trained)
    target = min(
        widen * _LAMP_MAX_SAMPLE, max(_LAMP_MIN_SAMPLE, _LAMP_SAMPLE_FACTOR * n ** (2 / 3))
    )
    rng = np.random.default_rng(salt & 0xFFFFFFFFFFFFFFFF)
    draws = [max(_LAMP_MIN_DRAWS, math.ceil(target * flat.size / sizes)) for flat in trained]
    totals = {  # sampled layers: (sum of squares, its error), from blocks of the large ones
        i: _lamp_total(flat, alive[i], rng)
        for i, (flat, count) in enumerate(zip(trained, n_alives, strict=True))
        if count and not _lamp_exact(flat, count, draws[i])
    }
    for position, (flat, mask) in enumerate(zip(trained, alive, strict=True)):
        if position not in totals:  # exact layers: checked here (the others in their pass)
            refuse_unusable([flat], [mask], position)
        elif not math.isfinite(totals[position][0]):
            _refuse_unusable_sums(flat, position)
            return None  # float32 squares that overflow: the sorted path
    estimates = [
        _lamp_estimate(flat, mask, count, draws[i], rng, *totals.get(i, (0.0, 0.0)), i)
        if count
        else None
        for i, (flat, mask, count) in enumerate(zip(trained, alive, n_alives, strict=True))
    ]
    used = [e for e in estimates if e is not None]
    curves = _SampleCurves(used)
    central = curves.scores(0)
    s_est = curves.at_count(central, k)
    counts = np.array([c for c in n_alives if c], dtype=np.float64)
    p = np.clip(curves.counts(central, s_est, "left") * curves.weights / counts, 0.0, 1.0)
    terms = curves.weights * counts * p * (1.0 - p) + curves.weights**2
    variance = float(np.sum(terms, where=~np.array([e.exact for e in used])))
    delta = widen * (_LAMP_SIGMAS * math.sqrt(variance) + 4.0 * float(curves.weights.max()))
    s_a = curves.at_count(curves.scores(-1), k - delta)
    s_b = curves.at_count(curves.scores(1), k + delta)

    keeps: list[np.ndarray] = []
    limits: dict[int, tuple[np.floating[Any], np.floating[Any]]] = {}
    for i, (flat, e) in enumerate(zip(trained, estimates, strict=True)):
        if e is None:
            keeps.append(np.zeros(flat.size, dtype=bool))
            continue
        keeps.append(np.empty(flat.size, dtype=bool))
        t_lo, t_hi = (0.0, math.inf) if e.exact or s_b >= 1.0 else e.magnitude_bounds(s_a, s_b)
        limits[i] = _magnitude_limits(flat.dtype, t_lo, t_hi)
    scratch = _PassScratch(max((trained[i].size for i in limits), default=0))
    layers: list[_LampCandidates] = []
    for i, (lo, hi) in limits.items():
        done = _lamp_pass(trained[i], alive[i], keeps[i], lo, hi, scratch)
        above = _sum_exactly(done.sums)  # squares at or above hi: > 0 when any is alive
        if i in totals and not done.sums:  # no sums made (all alive are candidates): check
            _refuse_nonfinite([trained[i]], i)
        elif i in totals and not math.isfinite(above):  # NaN/Inf (dead too)
            _refuse_unusable_sums(trained[i], i)
            return None  # float32 squares that overflow: the sorted path
        layers.append(_lamp_candidates(done, above, lo, hi, array_ids[i]))  # its lists go
    below_total = sum(layer.below for layer in layers)
    low_bound = max((layer.low_bound for layer in layers), default=-math.inf)
    high_bound = min((layer.high_bound for layer in layers), default=math.inf)
    scores_parts = [layer.scores for layer in layers]
    positions_parts = [layer.positions for layer in layers]
    part_ids = list(limits)
    need = k - below_total
    scores = np.concatenate(scores_parts)
    if not 0 <= need <= scores.size or low_bound >= high_bound:
        return None
    bounds = np.cumsum([0] + [part.size for part in scores_parts])
    chosen = np.zeros(scores.size, dtype=bool)
    if need:
        threshold = np.partition(scores, need - 1)[need - 1]
        chosen = scores < threshold
        missing = need - int(np.count_nonzero(chosen))
        if missing:
            tied = np.flatnonzero(scores == threshold)
            part_of = np.searchsorted(bounds, tied, "right") - 1
            ids = np.asarray(array_ids)[np.asarray(part_ids)[part_of]]
            flat_at = np.concatenate(positions_parts)[tied]
            keys = np.bitwise_or(
                ids.astype(np.uint64) << np.uint64(40), flat_at.astype(np.uint64)
            )  # position_keys of each tied candidate
            order = np.lexsort((keys, hash_positions(keys, salt)))
            chosen[tied[order[:missing]]] = True
        if float(threshold) >= high_bound:
            return None
    if need < scores.size and float(np.min(scores, where=~chosen, initial=np.inf)) <= low_bound:
        return None
    for index, at, start, stop in zip(
        part_ids, positions_parts, bounds[:-1], bounds[1:], strict=True
    ):
        keeps[index][at[chosen[start:stop]]] = False
    return keeps


def _magnitude_limits(
    dtype: np.dtype[Any], t_lo: float, t_hi: float
) -> tuple[np.floating[Any], np.floating[Any]]:
    """``(lo, hi)`` in the magnitudes' float: prune below ``lo``, candidates in ``[lo, hi)``."""
    kind = np.float64 if dtype == np.float64 else np.float32
    lo, hi = kind(t_lo), kind(min(t_hi, float(np.finfo(kind).max)))
    # zeros (score 0) are never above hi, and squares above hi never underflow to 0
    hi = max(hi, kind(2.0**-500) if kind == np.float64 else np.nextafter(kind(0), kind(1)))
    if t_hi == math.inf:
        hi = kind(np.inf)
    return lo, hi


@dataclass
class _LampPass:
    """A layer's pass: weights pruned below ``lo``, float64 sums of squares at or above ``hi``
    per chunk, and the candidates in between (positions in the layer, magnitudes)."""

    below: int
    sums: list[float]
    positions: list[np.ndarray]
    values: list[np.ndarray]


class _PassScratch:
    """Chunk buffers reused by every layer's pass (fresh buffers per layer page-fault)."""

    def __init__(self, largest: int) -> None:
        self.size = min(_LAMP_CHUNK, largest)
        self.magnitudes: dict[type, np.ndarray] = {}
        self.masked = np.empty(self.size, dtype=np.float32)  # float32 magnitudes at or above hi
        self.wide = np.empty(self.size)
        self.top = np.empty(self.size, dtype=bool)

    def magnitude(self, kind: type) -> np.ndarray:
        if kind not in self.magnitudes:
            self.magnitudes[kind] = np.empty(self.size, kind)
        return self.magnitudes[kind]


def _lamp_pass(
    flat: np.ndarray,
    mask: np.ndarray | None,
    keep: np.ndarray,
    lo: np.floating[Any],
    hi: np.floating[Any],
    scratch: _PassScratch,
) -> _LampPass:
    """Write ``keep`` (alive and ``|w| >= lo``) and collect what the layer's scores need."""
    result = _LampPass(0, [], [], [])
    magnitude_buffer = scratch.magnitude(np.float64 if flat.dtype == np.float64 else np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # NaN/Inf reach the sums: checked
        for start in range(0, flat.size, _LAMP_CHUNK):
            stop = min(start + _LAMP_CHUNK, flat.size)
            size = stop - start
            magnitude = magnitude_buffer[:size]
            np.abs(flat[start:stop], out=magnitude)
            part = keep[start:stop]
            np.greater_equal(magnitude, lo, out=part)
            if mask is not None:
                np.logical_and(part, mask[start:stop], out=part)
            if hi != np.inf:
                top = scratch.top[:size]
                np.greater_equal(magnitude, hi, out=top)
                if mask is not None:
                    np.logical_and(top, part, out=top)  # hi >= lo: alive and at or above hi
                wide = scratch.wide[:size]
                if magnitude.dtype == np.float64:
                    np.multiply(magnitude, top, out=wide)
                else:  # masked in float32 (exact: times 0 or 1), then widened: cheaper than
                    # one float32 x bool -> float64 multiply (measured 0.58 vs 0.89 ns/weight)
                    masked = scratch.masked[:size]
                    np.multiply(magnitude, top, out=masked)
                    np.copyto(wide, masked)
                result.sums.append(_sum_of_products(wide, wide))  # float32 squares: exact in f64
                np.greater(part, top, out=top)  # the candidates: at or above lo, below hi
                found = top.nonzero()[0]  # 1-d: flatnonzero without its ravel
            else:
                found = part.nonzero()[0]
            result.positions.append(found + start)
            result.values.append(magnitude[found])
    alive = flat.size if mask is None else int(np.count_nonzero(mask))
    result.below = alive - int(np.count_nonzero(keep))  # one count per layer
    return result


@dataclass
class _LampCandidates:
    """A layer's exact candidate scores (ascending), their positions, and its bounds."""

    below: int
    scores: np.ndarray
    positions: np.ndarray
    low_bound: float  # every weight pruned below lo scores under this
    high_bound: float  # every weight kept above hi scores over this


def _lamp_candidates(
    layer: _LampPass, above: float, lo: np.floating[Any], hi: np.floating[Any], array_id: int
) -> _LampCandidates:
    """Exact scores of a layer's candidates from its pass (``above``: its sums added)."""
    below = layer.below
    found = np.concatenate(layer.positions)
    magnitudes = np.concatenate(layer.values)
    order = _magnitude_order(magnitudes)  # equal magnitudes in position order
    squares = np.square(magnitudes[order], dtype=np.float64)
    suffix = np.cumsum(squares[::-1])[::-1]
    suffix += above
    np.divide(squares, suffix, out=squares, where=suffix > 0)
    if above == 0.0 and squares.size:
        squares[-1] = 1.0  # the layer's largest weight
    candidates_sum = float(suffix[0]) if suffix.size else above
    low_bound = -math.inf
    if below:
        bound = float(lo) ** 2 / candidates_sum if candidates_sum > 0 else 0.0
        low_bound = bound * (1.0 + _LAMP_MARGIN)
    high_bound = math.inf
    if above > 0.0:
        high_bound = float(hi) ** 2 / above / (1.0 + _LAMP_MARGIN)
    logger.debug("lamp layer %d: %d below, %d candidates", array_id, below, squares.size)
    return _LampCandidates(below, squares, found[order], low_bound, high_bound)


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
        magnitude_of: The score is ``|magnitude_of(*arrays)|`` (``large_final``: the weight
            itself, ``movement``: the difference). Streaming selections over data they own
            (``ltp mask``) then rank the float bits with the sign dropped, which orders like
            the absolute values, instead of computing them.
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
    magnitude_of: Callable[..., np.ndarray] | None = None
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
                magnitude_of=_as_score_float,
            ),
            Criterion(
                "large_final",
                ("trained",),
                "keep large |w_final| (the lottery ticket criterion)",
                elementwise=_magnitude,
                paper=_FRANKLE,
                reveals_nonfinite=True,
                magnitude_of=_as_score_float,
            ),
            Criterion(
                "large_init",
                ("initial",),
                "keep large |w_init|",
                elementwise=_magnitude,
                paper=_ZHOU,
                reveals_nonfinite=True,
                magnitude_of=_as_score_float,
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
                magnitude_of=_difference,
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
