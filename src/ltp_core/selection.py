"""Exact-k selection of the smallest scores across many arrays, streaming and tie-safe.

This module answers one question: *given score arrays and the entries still alive, which exactly
``k`` alive entries have the smallest scores?* It serves both scopes: layer scope calls it with
one array, global scope with all of them.

How it works, without sorting all ``N`` scores and without a concatenated copy:

1. Draw a stratified random sample of alive scores (about ``2 * n ** (2/3)`` of ``n``) and read
   off a bracket ``[lo, hi]`` that contains the k-th smallest score with high probability (three
   standard errors of the sample quantile on each side; a miss costs one more pass).
2. One chunked pass writes the new masks (entries below ``lo`` pruned, the rest kept) and
   collects the few entries inside the bracket (about 1-2 % of the weights) with their positions.
3. The ``k - n_below`` smallest of those candidates are pruned exactly (``np.partition`` on the
   small candidate set only).

Ties are broken by a hash of each entry's position mixed with a salt: reproducible, the same on
every platform and framework, and independent of chunking. When the sample shows that the
threshold sits on one heavily repeated value (for example all weights equal), the entries equal
to it are resolved by a second selection over their hash keys, so exactly ``k`` entries are pruned
and memory stays bounded. If a bracket misses (probability ~0.3 %), a wider one is tried, and as a
last resort all alive scores are collected.

Extra memory beyond the output masks: one chunk of temporaries plus the candidates (12 bytes
each), a fraction of a byte per weight for continuous scores (measured in
``docs/concepts/global-selection.md``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = [
    "CHUNK_SIZE",
    "ArrayScores",
    "ElementwiseScores",
    "RandomScores",
    "ScoreSource",
    "TieBreakScores",
    "all_finite",
    "check_input_finite",
    "count_set_bits",
    "hash_positions",
    "keep_after_pruning_smallest",
    "keep_after_pruning_smallest_capped",
    "position_keys",
    "select_under_caps",
    "uniform_from_hash",
]

CHUNK_SIZE = 1 << 17
"""Entries per chunk in streaming passes (a few hundred KiB of temporaries)."""

SAMPLE_SIZE = 1 << 17
"""Target number of alive entries sampled to bracket the threshold."""

SMALL_ALIVE = 1 << 16
"""With at most this many alive entries, all of them are collected and selected in memory."""

MIN_SAMPLE = 1024
"""Fewer alive entries in the sample than this (very sparse masks): select in memory."""

MIN_SAMPLE_TARGET = 1 << 12
"""Smallest target sample. A scope of ``n`` alive entries samples ``_SAMPLE_FACTOR * n ** (2/3)``
of them, between this and ``SAMPLE_SIZE``: the sample's cost grows with its size, the
candidates' (the bracket's width times ``n``) with ``n / sqrt(sample)``, and ``n ** (2/3)``
balances the two (measured in ``benchmarks/bench_global_mask.py --scopes``)."""

_SAMPLE_FACTOR = 2.0  # the n ** (2/3) above, times this (measured best of 1, 2, 4, 8)

_SUBSAMPLE = 2048  # a sample over 8x this is first narrowed with a sub-sample this size

PARTITION_MAX = 3 << 18
"""Single arrays (layer scope) of at most this many entries (786,432) are selected with one
``np.partition`` over their alive scores (4-8 bytes per weight of temporaries). Measured on the
idle 2-core VM, best of 9 calls of ``large_final`` on one float32 array, partition against the
sampled bracket and fused pass: 0.47 vs 0.71 ms at 131k weights, 0.56 vs 0.80 at 262k, 1.63
vs 1.88 at 590k; from 1M the sampled path wins (1.98 vs 3.09 ms at 1M, 3.86 vs 5.67 at 2.4M).
The bound was 65,536 until the samples got smaller and unsorted; raising it took layer scope
from 1.55-1.70x to 1.46-1.55x of global scope at ResNet-50 size."""

_POSITION_BITS = 40  # flat index bits in a position key; array index goes above

_MIX_A = np.uint64(0x9E3779B97F4A7C15)
_MIX_B = np.uint64(0xBF58476D1CE4E5B9)
_MIX_C = np.uint64(0x94D049BB133111EB)


def position_keys(array_id: int, flat_index: np.ndarray) -> np.ndarray:
    """Return unique ``uint64`` keys for entries of array ``array_id`` at ``flat_index``.

    Example:
        >>> int(position_keys(1, np.array([5]))[0]) == (1 << 40) + 5
        True
    """
    base = np.uint64(array_id) << np.uint64(_POSITION_BITS)
    return flat_index.astype(np.uint64) + base


def hash_positions(keys: np.ndarray, salt: int) -> np.ndarray:
    """Mix position keys with a salt into well-spread ``uint64`` values (splitmix64 finalizer).

    Example:
        >>> a = hash_positions(np.arange(3, dtype=np.uint64), salt=7)
        >>> a.dtype, len(set(a.tolist()))
        (dtype('uint64'), 3)
    """
    z = np.asarray(keys, dtype=np.uint64) ^ np.uint64(salt & 0xFFFFFFFFFFFFFFFF)
    z = z + _MIX_A
    z = (z ^ (z >> np.uint64(30))) * _MIX_B
    z = (z ^ (z >> np.uint64(27))) * _MIX_C
    return z ^ (z >> np.uint64(31))


def uniform_from_hash(hashed: np.ndarray) -> np.ndarray:
    """Map ``uint64`` hashes to floats uniform in ``[0, 1)`` (53 random bits).

    Example:
        >>> float(uniform_from_hash(np.array([0], dtype=np.uint64))[0])
        0.0
    """
    return (hashed >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class ScoreSource(Protocol):
    """Scores of one array, produced chunk by chunk, and which entries are still alive.

    A source may also set ``sample_run`` (an int, default 1): the threshold is then bracketed
    from runs of that many neighbouring entries rather than scattered ones (as many entries in
    all), so a source that reads from disk makes a few small reads instead of one per entry.
    It may set ``chunk_scale`` (an int, default 1): streaming passes then ask it for chunks of
    ``chunk_scale * CHUNK_SIZE`` entries; and ``sample_scale`` (an int, default 1): a scope of
    such sources samples up to ``sample_scale * SAMPLE_SIZE`` entries (when longer runs cost
    little more to read, a larger sample narrows the bracket, hence the candidates).
    """

    array_id: int
    size: int
    n_alive: int

    def chunk(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores of flat entries ``[start, stop)`` and their alive flags (``None``: all)."""
        ...

    def take(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores and alive flags at the sorted flat indices ``index``."""
        ...


def _check_finite(scores: np.ndarray, label: str, signed: bool) -> None:
    if scores.size == 0:
        return
    ok = bool(np.isfinite(scores.max()))
    if ok and signed:
        ok = bool(np.isfinite(scores.min()))
    if not ok:
        raise_nonfinite_scores(label)


def raise_nonfinite_scores(label: str) -> None:
    """Raise the error for NaN or infinite scores of ``label``.

    Example:
        >>> raise_nonfinite_scores("w")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Scores for w contain NaN or infinite values; ...
    """
    raise ValueError(
        f"Scores for {label} contain NaN or infinite values; check that the weights are "
        f"finite. Received: {label} with non-finite entries"
    )


def all_finite(values: np.ndarray) -> bool:
    """Whether ``values`` hold no NaN or infinite entry (one maximum and one minimum).

    Example:
        >>> all_finite(np.array([1.0, -np.inf]))
        False
    """
    return values.size == 0 or bool(np.isfinite(values.max()) and np.isfinite(values.min()))


def check_input_finite(values: np.ndarray, label: str) -> None:
    """Raise if ``values`` (weights a criterion reads) hold NaN or infinite entries.

    Example:
        >>> check_input_finite(np.array([1.0, np.nan]), "trained[0]")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: `trained[0]` contains NaN or infinite values; ...
    """
    if not all_finite(values):
        raise ValueError(
            f"`{label}` contains NaN or infinite values; masks cannot be computed from them "
            f"(check the training for divergence). Received: {label} with non-finite entries"
        )


def _count_alive(alive: np.ndarray | None, size: int) -> int:
    return size if alive is None else int(np.count_nonzero(alive))


@dataclass
class ElementwiseScores:
    """Scores computed elementwise from flat input arrays, chunk by chunk.

    Args:
        array_id: Position of the array in the full weight list (used for tie-breaking keys).
        inputs: Flat (1-d) arrays the score function reads, possibly memory-mapped.
        score_fn: Maps chunks of ``inputs`` to a float score chunk.
        alive: Flat boolean mask of entries still alive, or ``None`` for all alive.
        label: Name used in error messages.
        signed: Whether scores may be negative (finiteness is then checked on both ends).
        input_labels: Names of the inputs (e.g. ``"initial[2]"``) for error messages. When
            given, every input chunk is checked for NaN/Inf itself, for score functions that
            do not carry a non-finite input into the score (a sign test, a rank). ``None``:
            checking the scores is enough (``|w|``, differences of magnitudes...).
    """

    array_id: int
    inputs: Sequence[np.ndarray]
    score_fn: Callable[..., np.ndarray]
    alive: np.ndarray | None
    label: str
    signed: bool = False
    input_labels: Sequence[str] | None = None

    def __post_init__(self) -> None:
        self.size = int(self.inputs[0].size)
        self.n_alive = _count_alive(self.alive, self.size)

    def _read(self, parts: list[np.ndarray]) -> np.ndarray:
        if self.input_labels is not None:
            for part, name in zip(parts, self.input_labels, strict=True):
                check_input_finite(part, name)
        scores = self.score_fn(*parts)
        _check_finite(scores, self.label, self.signed)
        return scores

    def chunk(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        scores = self._read([x[start:stop] for x in self.inputs])
        return scores, None if self.alive is None else self.alive[start:stop]

    def take(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        scores = self._read([x[index] for x in self.inputs])
        return scores, None if self.alive is None else self.alive[index]


@dataclass
class ArrayScores:
    """Precomputed flat scores of one array (custom or rank-based criteria)."""

    array_id: int
    scores: np.ndarray
    alive: np.ndarray | None
    label: str

    def __post_init__(self) -> None:
        self.size = int(self.scores.size)
        self.n_alive = _count_alive(self.alive, self.size)
        _check_finite(self.scores, self.label, signed=True)

    def chunk(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        return self.scores[start:stop], None if self.alive is None else self.alive[start:stop]

    def take(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return self.scores[index], None if self.alive is None else self.alive[index]


class TieBreakScores:
    """Hash keys of the alive entries of ``base`` whose score equals ``value``.

    Used to choose, reproducibly, which of many equal-score entries to prune.
    """

    def __init__(self, base: ScoreSource, value: float, salt: int, n_alive: int) -> None:
        self.base = base
        self.value = value
        self.salt = salt
        self.array_id = base.array_id
        self.size = base.size
        self.n_alive = n_alive

    def _keys(self, flat_index: np.ndarray) -> np.ndarray:
        keys = position_keys(self.array_id, flat_index)
        return uniform_from_hash(hash_positions(keys, self.salt))

    def chunk(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        scores, alive = self.base.chunk(start, stop)
        tied = scores == self.value
        if alive is not None:
            tied &= alive
        return self._keys(np.arange(start, stop, dtype=np.uint64)), tied

    def take(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        scores, alive = self.base.take(index)
        tied = scores == self.value
        if alive is not None:
            tied &= alive
        return self._keys(index), tied


@dataclass
class _Candidates:
    values: list[np.ndarray]
    keys: list[np.ndarray]
    count: int = 0


def keep_after_pruning_smallest(
    sources: Sequence[ScoreSource], k: int, salt: int, *, packed: bool = False
) -> list[np.ndarray]:
    """Prune exactly the ``k`` alive entries with the smallest scores.

    Args:
        sources: One score source per array, with their alive entries.
        k: How many alive entries to prune, ``0 <= k <= total alive``.
        salt: Seeds the reproducible tie-breaking and the sampling.
        packed: Return masks bit-packed (``np.packbits`` layout, 1 bit per weight) instead of
            ``bool`` arrays: for weights larger than memory.

    Returns:
        Flat keep masks, one per source: alive and not among the ``k`` smallest.

    Raises:
        ValueError: ``k`` is out of range, or scores are not finite.

    Example:
        >>> w = np.array([3.0, 1.0, 2.0, 4.0])
        >>> src = ElementwiseScores(0, [w], np.abs, None, "w")
        >>> keep_after_pruning_smallest([src], 2, salt=0)[0].tolist()
        [True, False, False, True]
    """
    n_alive = sum(source.n_alive for source in sources)
    if not 0 <= k <= n_alive:
        raise ValueError(f"`k` must be in [0, {n_alive}]. Received: k={k}")
    if k == 0:
        return [_alive_copy(source, packed) for source in sources]
    if k == n_alive:
        return [_new_mask(source.size, packed, fill=0) for source in sources]
    if len(sources) == 1 and sources[0].size <= PARTITION_MAX:
        return _partition_in_memory(sources, k, salt, packed)
    if n_alive > SMALL_ALIVE:
        sample, groups = _sample_alive_scores(sources, n_alive, salt)
        if sample.size >= MIN_SAMPLE:
            spread = math.sqrt(_design_effect(sample, groups, k / n_alive))
            for sigmas in (3.0, 20.0):
                lo, hi = _bracket(sample, k / n_alive, sigmas * spread)
                if lo == hi:
                    tied = _prune_at_tied_value(sources, k, lo, salt, packed)
                    if tied is not None:
                        return tied
                    continue
                width = _bracket_width(sample, lo, hi)
                budget = max(int(4 * width * n_alive), 1 << 16) if width < 1.0 else None
                result = _fused_pass(sources, k, lo, hi, salt, budget, packed)
                if result is not None:
                    return result
    result = _fused_pass(sources, k, -math.inf, math.inf, salt, None, packed)
    if result is None:  # pragma: no cover - an unbounded pass always resolves
        raise RuntimeError("exact selection failed; please report this as a bug")
    return result


def keep_after_pruning_smallest_capped(
    sources: Sequence[ScoreSource], k: int, salt: int, caps: Sequence[int], *, packed: bool = False
) -> list[np.ndarray]:
    """Prune exactly ``k`` alive entries, smallest scores first, at most ``caps[i]`` from source i.

    The result is what pruning in ascending score order gives when a source stops losing
    entries once it reached its cap: each source that would lose more than its cap loses
    exactly its ``caps[i]`` smallest, and the rest of ``k`` comes from the next-ranked entries
    of the other sources. Each round is one exact selection; a round removes at least one source,
    and the usual case (no cap reached) costs one selection plus a count.

    Args:
        sources: One score source per array.
        k: Entries to prune in total, at most ``sum(min(cap, alive))``.
        salt: Seeds tie-breaking.
        caps: Most entries each source may lose.
        packed: Return bit-packed masks, as :func:`keep_after_pruning_smallest` does.

    Returns:
        Flat keep masks, one per source.

    Raises:
        ValueError: ``k`` exceeds what the caps allow.

    Example:
        >>> a = ElementwiseScores(0, [np.array([0.1, 0.2, 0.3])], np.abs, None, "a")
        >>> b = ElementwiseScores(1, [np.array([5.0, 6.0, 7.0])], np.abs, None, "b")
        >>> [m.tolist() for m in keep_after_pruning_smallest_capped([a, b], 3, 0, [2, 3])]
        [[False, False, True], [False, True, True]]
    """

    def select(members: Sequence[int], count: int) -> list[np.ndarray]:
        return keep_after_pruning_smallest(
            [sources[i] for i in members], count, salt, packed=packed
        )

    return select_under_caps(
        select,
        [source.n_alive for source in sources],
        caps,
        k,
        lambda i, keep: _count_kept(keep, sources[i].size, packed),
    )


def select_under_caps(
    select: Callable[[Sequence[int], int], list[np.ndarray]],
    n_alives: Sequence[int],
    caps: Sequence[int],
    k: int,
    count_kept: Callable[[int, np.ndarray], int],
) -> list[np.ndarray]:
    """Prune ``k`` entries in a global order where group ``i`` stops losing after ``caps[i]``.

    ``select(members, count)`` prunes the ``count`` lowest-ranked alive entries over the
    groups ``members`` (indices into ``n_alives``) and returns their keep masks, in that order;
    a group's ranks must not depend on which other groups take part (true of elementwise
    scores and of ``lamp``, whose scores are per layer). Each round selects over the groups
    still free; a group that loses more than its cap there loses exactly its cap instead (one
    selection over it alone) and leaves the round: removing a group's surplus only adds to what
    the others lose, so a group over its cap stays over it. Each round removes at least one
    group; the usual case (no cap reached) is one selection plus a count per group.

    Args:
        select: The exact selection over a subset of the groups.
        n_alives: Alive entries per group.
        caps: Most entries each group may lose.
        k: Entries to prune in total, at most ``sum(min(cap, alive))``.
        count_kept: ``count_kept(i, keep)``: entries ``keep`` keeps in group ``i``.

    Returns:
        One keep mask per group.

    Raises:
        ValueError: ``k`` exceeds what the caps allow.

    Example:
        >>> order = [np.array([0.1, 0.2, 0.3]), np.array([5.0, 6.0, 7.0])]
        >>> def select(members, count):
        ...     values = np.concatenate([order[i] for i in members])
        ...     cut = np.sort(values)[count - 1] if count else -np.inf
        ...     return [order[i] > cut for i in members]
        >>> keeps = select_under_caps(select, [3, 3], [2, 3], 3, lambda i, m: int(m.sum()))
        >>> [m.tolist() for m in keeps]
        [[False, False, True], [False, True, True]]
    """
    limits = [min(int(cap), int(alive)) for cap, alive in zip(caps, n_alives, strict=True)]
    if not 0 <= k <= sum(limits):
        raise ValueError(
            f"`k` must be in [0, {sum(limits)}] under the per-array caps. Received: k={k}"
        )
    result: list[np.ndarray | None] = [None] * len(n_alives)
    active = list(range(len(n_alives)))
    remaining = k
    while active:
        keeps = select(active, remaining)
        over = [
            i
            for i, keep in zip(active, keeps, strict=True)
            if limits[i] < remaining and n_alives[i] - count_kept(i, keep) > limits[i]
        ]
        if not over:
            for i, keep in zip(active, keeps, strict=True):
                result[i] = keep
            break
        for i in over:
            result[i] = select([i], limits[i])[0]
            remaining -= limits[i]
        active = [i for i in active if i not in over]
    return [flat for flat in result if flat is not None]


def _count_kept(keep: np.ndarray, size: int, packed: bool, chunk: int = 1 << 22) -> int:
    """Kept entries of a flat mask of ``size`` entries (set bits when ``packed``)."""
    if not packed:
        return int(np.count_nonzero(keep))
    total = sum(
        int(np.unpackbits(keep[start : start + chunk]).sum(dtype=np.int64))
        for start in range(0, keep.size, chunk)
    )
    padding = keep.size * 8 - size  # low bits of the last byte, whatever they hold
    return total - (int(keep[-1]) & ((1 << padding) - 1)).bit_count() if padding else total


def _partition_in_memory(
    sources: Sequence[ScoreSource], k: int, salt: int, packed: bool
) -> list[np.ndarray]:
    """Exact selection with one ``np.partition`` over every alive score of the scope.

    Entries tied at the threshold are ordered by the hash of their position, as in
    :func:`_smallest_candidates`, so the result equals the candidate path's.
    """
    scores: list[np.ndarray] = []
    alives: list[np.ndarray | None] = []
    for source in sources:
        full, alive = source.chunk(0, source.size)  # one call: scopes here are small enough
        scores.append(full)
        alives.append(alive)
    fresh = [a is not None for a in alives]  # s[a] is a copy that may be reordered in place
    values = [s if a is None else s[a] for s, a in zip(scores, alives, strict=True)]
    if len(values) == 1 and not fresh[0]:
        pool = np.partition(values[0], k - 1)
    else:
        pool = values[0] if len(values) == 1 else np.concatenate(values)
        pool.partition(k - 1)
    threshold = pool[k - 1]
    missing = k - int(np.count_nonzero(pool[:k] < threshold))
    outs: list[np.ndarray] = []
    tied: list[np.ndarray] = []
    for source, score, alive in zip(sources, scores, alives, strict=True):
        keep = np.greater_equal(score, threshold)
        equal = score == threshold
        if alive is not None:
            keep &= alive
            equal &= alive
        tied.append(position_keys(source.array_id, np.flatnonzero(equal)))
        outs.append(keep)
    keys = np.concatenate(tied)
    order = np.lexsort((keys, hash_positions(keys, salt)))
    _clear_positions(outs, sources, keys[order[:missing]])
    if packed:
        return [np.packbits(out) for out in outs]
    return outs


def _new_mask(size: int, packed: bool, fill: int | None = None) -> np.ndarray:
    if packed:
        length = (size + 7) // 8
        if fill is None:
            return np.empty(length, dtype=np.uint8)
        return np.full(length, 0xFF if fill else 0, dtype=np.uint8)
    if fill is None:
        return np.empty(size, dtype=bool)
    return np.full(size, bool(fill), dtype=bool)


def _store(out: np.ndarray, start: int, kept: np.ndarray, packed: bool) -> None:
    """Write a chunk of keep flags (``start`` is a multiple of 8 when packed)."""
    if packed:
        out[start // 8 : start // 8 + (kept.size + 7) // 8] = np.packbits(kept)
    else:
        out[start : start + kept.size] = kept


def _alive_copy(source: ScoreSource, packed: bool = False) -> np.ndarray:
    out = _new_mask(source.size, packed, fill=1)
    if source.n_alive == source.size:
        if packed and source.size % 8:
            out[-1] = np.packbits(np.ones(source.size % 8, dtype=bool))[0]
        return out
    for start in range(0, source.size, CHUNK_SIZE):
        stop = min(start + CHUNK_SIZE, source.size)
        _, alive = source.chunk(start, stop)
        _store(out, start, np.ones(stop - start, bool) if alive is None else alive, packed)
    return out


def _sample_alive_scores(
    sources: Sequence[ScoreSource], n_alive: int, salt: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Alive scores at stratified random positions (unsorted; see :func:`_bracket`).

    The positions are drawn one per stratum of ``total / draws`` neighbouring entries, so they
    come out sorted (no sort, reads in memory order), and the count of sampled scores below any
    value varies no more than with independent draws (a sum of independent Bernoulli trials with
    the same mean and at most the binomial variance), so the brackets keep their coverage.

    Returns:
        The sample, and for sources sampled in runs of neighbours (``sample_run``) the run of
        each sampled score (``None`` when every score was drawn on its own): neighbours can be
        alike, see :func:`_design_effect`.
    """
    sizes = np.array([source.size for source in sources], dtype=np.int64)
    total = int(sizes.sum())
    cap = SAMPLE_SIZE * min(int(getattr(source, "sample_scale", 1)) for source in sources)
    target = min(cap, max(MIN_SAMPLE_TARGET, int(_SAMPLE_FACTOR * n_alive ** (2.0 / 3.0))))
    draws = max(1, min(total, int(target * min(total / n_alive, 8.0))))
    rng = np.random.default_rng(salt & 0xFFFFFFFFFFFFFFFF)
    spots = rng.random(draws)
    spots += np.arange(draws, dtype=np.float64)
    spots *= total / draws
    index = np.minimum(spots.astype(np.int64), total - 1)  # strictly increasing: strata >= 1
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    bounds = np.searchsorted(index, offsets)
    parts: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    grouped = 0  # sampled scores so far: the next source's groups are numbered from here
    in_runs = False
    for i, source in enumerate(sources):
        local = index[bounds[i] : bounds[i + 1]] - offsets[i]
        if local.size == 0 or source.n_alive == 0:
            continue
        run = int(getattr(source, "sample_run", 1))
        group = np.arange(local.size)
        if run > 1:  # as many entries, in runs of `run` neighbours: a few reads, not one per entry
            # One run per stratum `run` times wider, anywhere in it: taking every run-th of the
            # positions above would start runs only in the first narrow stratum of each group,
            # at a fixed phase that aliases with the row length (a column trend then biases
            # the sample and the bracket misses).
            count = max(1, local.size // run)
            width = source.size / count
            starts = ((np.arange(count) + rng.random(count)) * width).astype(np.int64)
            starts = starts[np.diff(starts, prepend=-run) >= run]  # runs must not overlap
            local = (starts[:, None] + np.arange(run)).reshape(-1)  # sorted, no repeats
            inside = local < source.size
            local = local[inside]
            group = np.repeat(np.arange(starts.size), run)[inside]
            in_runs = True
        scores, alive = source.take(local)
        part = np.asarray(scores if alive is None else scores[alive])
        parts.append(part if part.dtype.kind == "f" else part.astype(np.float64))
        groups.append((group if alive is None else group[alive]) + grouped)
        grouped += groups[-1].size
    if not parts:
        return np.empty(0), None
    sample = parts[0] if len(parts) == 1 else np.concatenate(parts)
    if not sample.flags.owndata:
        sample = sample.copy()  # reordered in place later
    return sample, np.concatenate(groups) if in_runs else None


def _design_effect(sample: np.ndarray, groups: np.ndarray | None, quantile: float) -> float:
    """How much more the sampled quantile varies than with independent draws (at least 1).

    Runs of neighbours can be alike (weights whose scale trends along a row): the count of
    sampled scores below the quantile then varies more than a binomial count, and the bracket's
    margin must grow by the square root of this ratio (the cluster-sampling estimate of the
    variance of a proportion, from the runs' counts) to keep its coverage.
    """
    m = sample.size
    if groups is None or m < 2:
        return 1.0
    value = np.partition(sample, min(m - 1, int(quantile * m)))[min(m - 1, int(quantile * m))]
    below = (sample < value).astype(np.float64)
    p = float(below.sum()) / m
    sizes = np.bincount(groups).astype(np.float64)
    used = sizes > 0
    counts, sizes = np.bincount(groups, weights=below)[used], sizes[used]
    runs = counts.size
    if runs < 2 or not 0.0 < p < 1.0:
        return 1.0
    between = runs / (runs - 1) * float(np.sum((counts - p * sizes) ** 2)) / m**2
    return max(1.0, between / (p * (1.0 - p) / m))


def _bracket(sample: np.ndarray, quantile: float, sigmas: float) -> tuple[float, float]:
    """Scores around the ``quantile`` of ``sample`` (which it may reorder)."""
    m = sample.size
    center = quantile * m
    margin = sigmas * math.sqrt(max(m * quantile * (1.0 - quantile), 1.0)) + 4.0
    lo_i = math.floor(center - margin)
    hi_i = math.ceil(center + margin)
    kth = [i for i in (lo_i, hi_i) if 0 <= i < m]
    values = dict(zip(kth, _order_statistics(sample, kth), strict=True))
    lo = -math.inf if lo_i < 0 else values[lo_i]
    hi = math.inf if hi_i >= m else values[hi_i]
    return lo, hi


def _order_statistics(sample: np.ndarray, kth: list[int]) -> list[float]:
    """The values at sorted positions ``kth`` of ``sample`` (reordered in place).

    A large sample is first narrowed with a sub-sample of it (every ``step``-th entry, itself a
    stratified sample): only the entries between two loose bounds are partitioned. When the
    bounds miss (rare) or sit on one repeated value, the whole sample is partitioned.
    """
    m = sample.size
    if not kth:
        return []
    if m > 8 * _SUBSAMPLE:
        sub = sample[:: m // _SUBSAMPLE].copy()
        s = sub.size
        edges = []
        for i, side in ((min(kth), -1.0), (max(kth), 1.0)):
            q = i / m
            j = q * s + side * (6.0 * math.sqrt(max(s * q * (1.0 - q), 1.0)) + 2.0)
            edges.append(math.floor(j) if side < 0 else math.ceil(j))
        inner = [j for j in edges if 0 <= j < s]
        if inner:
            sub.partition(inner)
        low = float(sub[edges[0]]) if 0 <= edges[0] < s else -math.inf
        high = float(sub[edges[1]]) if 0 <= edges[1] < s else math.inf
        if low < high:
            inside = sample <= high
            if low > -math.inf:
                at_least_low = sample >= low
                below = m - int(np.count_nonzero(at_least_low))
                inside &= at_least_low
            else:
                below = 0
            part = sample[inside]
            if all(below <= i < below + part.size for i in kth):
                part.partition([i - below for i in kth])
                return [float(part[i - below]) for i in kth]
    sample.partition(kth)
    return [float(sample[i]) for i in kth]


def _bracket_width(sample: np.ndarray, lo: float, hi: float) -> float:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 1.0
    inside = np.count_nonzero((sample >= lo) & (sample <= hi))
    return float(inside) / sample.size


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def count_set_bits(packed: np.ndarray, chunk: int = 1 << 22) -> int:
    """Number of set bits in a 1-d ``uint8`` array (``np.packbits`` masks: weights kept).

    Counts 8 bytes at a time with ``np.bitwise_count`` (NumPy 2), with a table before.

    Example:
        >>> count_set_bits(np.packbits([True, False, True, True, False, False, False, True, True]))
        5
    """
    bitwise_count = getattr(np, "bitwise_count", None)
    if bitwise_count is None:
        return sum(
            int(_POPCOUNT[packed[i : i + chunk]].sum(dtype=np.int64))
            for i in range(0, packed.size, chunk)
        )
    whole = packed.size - packed.size % 8
    words = packed[:whole].view(np.uint64)
    total = int(bitwise_count(packed[whole:]).sum(dtype=np.int64))
    for i in range(0, words.size, chunk):
        total += int(bitwise_count(words[i : i + chunk]).sum(dtype=np.int64))
    return total


def _chunk_size(source: ScoreSource) -> int:
    """Entries per chunk: ``CHUNK_SIZE`` times the source's ``chunk_scale`` (default 1).

    Sources that read from disk use longer chunks (fewer reads and hand-overs per pass).
    """
    return CHUNK_SIZE * int(getattr(source, "chunk_scale", 1))


def _key_dtype(sources: Sequence[ScoreSource]) -> np.dtype[Any] | None:
    """The unsigned dtype of the order keys every source offers (``None``: compare scores).

    A source may set ``key_dtype`` (``uint32`` for float32 scores, ``uint64`` for float64) and
    offer ``chunk_keys(start, stop)``: the bits of its non-negative scores shifted left by one
    (the sign bit dropped), which order exactly as the scores do, in an array the pass may
    overwrite, non-finite scores refused. Keys of one dtype are comparable across sources.
    """
    dtypes = {getattr(source, "key_dtype", None) for source in sources}
    if len(dtypes) != 1:
        return None
    dtype = dtypes.pop()
    return None if dtype is None else np.dtype(dtype)


def _score_key(value: float, dtype: np.dtype[Any]) -> int:
    """The order key (see :func:`_key_dtype`) of a non-negative score ``value``.

    Example:
        >>> _score_key(1.0, np.dtype(np.uint32)) == 0x3F800000 << 1
        True
    """
    if not value > 0.0:  # 0.0, -0.0 and -inf: below every key or equal to the smallest
        return 0
    floats = np.float32 if dtype == np.uint32 else np.float64
    bits = int(np.array(value, dtype=floats).view(dtype))
    return (bits << 1) & int(np.iinfo(dtype).max)


def _fused_pass(
    sources: Sequence[ScoreSource],
    k: int,
    lo: float,
    hi: float,
    salt: int,
    budget: int | None,
    packed: bool = False,
) -> list[np.ndarray] | None:
    """Write masks keeping scores >= lo, collect candidates in [lo, hi], resolve exactly.

    Sources that offer order keys (see :func:`_key_dtype`) are compared on those: no scores
    are computed.
    """
    outs: list[np.ndarray] = []
    candidates = _Candidates([], [])
    longest = max(_chunk_size(source) for source in sources)
    inside = np.empty(longest, dtype=bool)
    scratch = np.empty(longest, dtype=bool) if packed else None
    key_dtype = _key_dtype(sources) if lo >= 0.0 or lo == -math.inf else None
    if key_dtype is not None:
        lo_key = key_dtype.type(_score_key(lo, key_dtype))
        hi_key = key_dtype.type(_score_key(hi, key_dtype))
    spare: tuple[np.ndarray, np.ndarray] | None = None  # the second thread's scratch
    for source in sources:
        out = _new_mask(source.size, packed)
        outs.append(out)
        step = _chunk_size(source)
        pool = getattr(source, "parallel", None)
        if key_dtype is not None and scratch is not None and pool is not None:
            if spare is None:
                spare = (np.empty(longest, dtype=bool), np.empty(longest, dtype=bool))
            if not _parallel_keyed_pass(
                source, pool, out, lo_key, hi_key, (scratch, inside), spare, candidates, budget
            ):
                return None
            continue
        for start in range(0, source.size, step):
            stop = min(start + step, source.size)
            kept = out[start:stop] if scratch is None else scratch[: stop - start]
            if key_dtype is not None:
                scores, alive = source.chunk_keys(start, stop)  # type: ignore[attr-defined]
                np.greater_equal(scores, lo_key, out=kept)
                if alive is not None:
                    kept &= alive
                in_bracket = inside[: stop - start]
                np.less_equal(scores, hi_key, out=in_bracket)
                in_bracket &= kept
            else:
                scores, alive = source.chunk(start, stop)
                np.greater_equal(scores, lo, out=kept)
                if alive is not None:
                    kept &= alive
                if math.isinf(hi):
                    in_bracket = kept
                else:
                    in_bracket = inside[: stop - start]
                    np.less_equal(scores, hi, out=in_bracket)
                    in_bracket &= kept
            found = in_bracket.nonzero()[0]  # 1-d: flatnonzero without its ravel overhead
            if scratch is not None:
                _store(out, start, kept, packed)
            if found.size:
                candidates.values.append(scores[found])
                candidates.keys.append(position_keys(source.array_id, found + start))
                candidates.count += found.size
                if budget is not None and candidates.count > budget:
                    return None
    kept_at_or_above_lo = sum(  # counted once at the end: 1 bit per weight when packed
        count_set_bits(out) if packed else int(np.count_nonzero(out)) for out in outs
    )
    n_alive = sum(source.n_alive for source in sources)
    below = n_alive - kept_at_or_above_lo
    still_to_prune = k - below
    if not 0 <= still_to_prune <= candidates.count:
        return None
    if still_to_prune:
        keys = _smallest_candidates(candidates, still_to_prune, salt)
        _clear_positions(outs, sources, keys, packed)
    return outs


def _keyed_chunk(
    source: Any,
    start: int,
    stop: int,
    slot: int,
    lo_key: np.generic,
    hi_key: np.generic,
    scratch: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    """Read one chunk's keys into ``slot``'s buffers: its packed kept bits and candidates."""
    keys, alive, receipt = source.slot_keys(start, stop, slot)
    kept = scratch[0][: stop - start]
    np.greater_equal(keys, lo_key, out=kept)
    if alive is not None:
        kept &= alive
    in_bracket = scratch[1][: stop - start]
    np.less_equal(keys, hi_key, out=in_bracket)
    in_bracket &= kept
    found = in_bracket.nonzero()[0]
    return np.packbits(kept), found, keys[found], receipt


def _parallel_keyed_pass(
    source: Any,
    pool: Any,
    out: np.ndarray,
    lo_key: np.generic,
    hi_key: np.generic,
    mine: tuple[np.ndarray, np.ndarray],
    spare: tuple[np.ndarray, np.ndarray],
    candidates: _Candidates,
    budget: int | None,
) -> bool:
    """The keyed pass over one source whose chunks two threads read and select in turn.

    The calling thread takes chunks 0, 2, 4..., the ``pool``'s worker 1, 3, 5..., each from
    reading to packed bits and candidates (slot 0 and 1: their own read buffers and scratch),
    so no chunk's data moves between cores; results are taken in order, and handed back with
    ``source.chunk_done``. ``False``: more candidates than ``budget``.
    """
    source.finish()  # a read-ahead of the sequential path, if any
    step = _chunk_size(source)
    spans = [(start, min(start + step, source.size)) for start in range(0, source.size, step)]
    ahead = None
    try:
        for j in range(0, len(spans), 2):
            if j + 1 < len(spans):
                ahead = pool.submit(_keyed_chunk, source, *spans[j + 1], 1, lo_key, hi_key, spare)
            done = [(spans[j], _keyed_chunk(source, *spans[j], 0, lo_key, hi_key, mine))]
            if ahead is not None:
                done.append((spans[j + 1], ahead.result()))
                ahead = None
            for (start, stop), (bits, found, values, receipt) in done:
                source.chunk_done(start, stop, receipt)  # in order: e.g. a running checksum
                out[start // 8 : start // 8 + bits.size] = bits
                if found.size:
                    candidates.values.append(values)
                    candidates.keys.append(position_keys(source.array_id, found + start))
                    candidates.count += found.size
            if budget is not None and candidates.count > budget:
                return False
    finally:
        if ahead is not None:  # the calling thread's chunk failed: let the worker's finish
            ahead.exception()
    return True


def _smallest_candidates(candidates: _Candidates, count: int, salt: int) -> np.ndarray:
    """Keys of the ``count`` smallest candidates; equal values ordered by hashed position."""
    values = np.concatenate(candidates.values)
    keys = np.concatenate(candidates.keys)
    threshold = np.partition(values, count - 1)[count - 1]
    chosen = values < threshold
    missing = count - int(np.count_nonzero(chosen))
    if missing:
        tied = np.flatnonzero(values == threshold)
        tied_keys = keys[tied]
        order = np.lexsort((tied_keys, hash_positions(tied_keys, salt)))
        chosen[tied[order[:missing]]] = True
    result: np.ndarray = keys[chosen]  # in the order collected (sorted when passes go by key)
    return result


def _clear_positions(
    outs: Sequence[np.ndarray],
    sources: Sequence[ScoreSource],
    keys: np.ndarray,
    packed: bool = False,
) -> None:
    low_bits = np.uint64((1 << _POSITION_BITS) - 1)
    if len(sources) == 1:  # every key is in the one source's range: no sort needed
        spans = [(outs[0], keys)]
    else:
        if keys.size > 1 and not bool(np.all(keys[1:] >= keys[:-1])):
            keys = np.sort(keys)
        ids = np.array([source.array_id for source in sources], dtype=np.uint64)
        bounds = np.searchsorted(keys, ids << np.uint64(_POSITION_BITS))
        ends = np.searchsorted(keys, (ids + np.uint64(1)) << np.uint64(_POSITION_BITS))
        spans = [(out, keys[a:b]) for out, a, b in zip(outs, bounds, ends, strict=True)]
    for out, mine in spans:
        if mine.size:
            flat = (mine & low_bits).astype(np.intp)
            if packed:
                bits = (0x80 >> (flat & 7)).astype(np.uint8)
                np.bitwise_and.at(out, flat >> 3, ~bits)
            else:
                out[flat] = False


def _prune_at_tied_value(
    sources: Sequence[ScoreSource], k: int, value: float, salt: int, packed: bool = False
) -> list[np.ndarray] | None:
    """Handle a threshold on a heavily repeated value: prune all below, hash-pick among equals."""
    outs: list[np.ndarray] = []
    tied_counts: list[int] = []
    above_total = 0
    for source in sources:
        out = _new_mask(source.size, packed)
        outs.append(out)
        tied_here = 0
        for start in range(0, source.size, CHUNK_SIZE):
            stop = min(start + CHUNK_SIZE, source.size)
            scores, alive = source.chunk(start, stop)
            kept = np.greater(scores, value)
            equal = scores == value
            if alive is not None:
                kept &= alive
                equal &= alive
            _store(out, start, kept, packed)
            above_total += int(np.count_nonzero(kept))
            tied_here += int(np.count_nonzero(equal))
        tied_counts.append(tied_here)
    n_alive = sum(source.n_alive for source in sources)
    tied_total = sum(tied_counts)
    below = n_alive - above_total - tied_total
    if not below <= k <= below + tied_total:
        return None
    tie_sources = [
        TieBreakScores(source, value, salt, n)
        for source, n in zip(sources, tied_counts, strict=True)
    ]
    keep_tied = keep_after_pruning_smallest(
        tie_sources, k - below, salt ^ 0x5BD1E995, packed=packed
    )
    for out, keep in zip(outs, keep_tied, strict=True):
        out |= keep
    return outs


def as_flat(array: Any) -> np.ndarray:
    """Return a flat view of ``array`` when possible (a copy only if it is not contiguous).

    Example:
        >>> as_flat(np.ones((2, 2))).shape
        (4,)
    """
    return np.asarray(array).reshape(-1)


class RandomScores:
    """Uniform pseudo-random scores that depend only on each entry's position and a salt.

    Being a pure function of position, the same score is seen by sampling and by every pass,
    whatever the chunking, so ``random`` pruning is exact-k and reproducible like the others.
    """

    def __init__(self, array_id: int, size: int, alive: np.ndarray | None, salt: int) -> None:
        self.array_id = array_id
        self.size = size
        self.alive = alive
        self.salt = salt
        self.n_alive = _count_alive(alive, size)

    def _scores(self, flat_index: np.ndarray) -> np.ndarray:
        return uniform_from_hash(
            hash_positions(position_keys(self.array_id, flat_index), self.salt)
        )

    def chunk(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        scores = self._scores(np.arange(start, stop, dtype=np.uint64))
        return scores, None if self.alive is None else self.alive[start:stop]

    def take(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return self._scores(index), None if self.alive is None else self.alive[index]
