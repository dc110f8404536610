"""``compute_masks``: the pure function at the heart of the core.

It validates its inputs, turns a strategy into per-array score sources, decides how many weights
each scope prunes (``k = floor(fraction * alive)``, exactly, without float noise) and hands the
selection to :mod:`ltp_core.selection`. It never mutates its inputs.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any, NoReturn

import numpy as np

from .notices import LayerCollapseWarning, NothingPrunedWarning
from .selection import (
    CHUNK_SIZE,
    ArrayScores,
    ElementwiseScores,
    RandomScores,
    ScoreSource,
    as_flat,
    check_input_finite,
    keep_after_pruning_smallest,
    keep_after_pruning_smallest_capped,
    select_under_caps,
)
from .strategies import (
    ROLES,
    NonFiniteInputError,
    Strategy,
    resolve_strategy,
)
from .validation import check_fraction, check_masks, check_weight_list, short_repr

__all__ = [
    "check_layer_floors",
    "check_min_layer_density",
    "compute_masks",
    "count_to_prune",
    "layer_floor",
    "normalize_layer_rates",
    "salt_from_seed",
]


def count_to_prune(fraction: float, alive: int, multiplier: float = 1.0) -> int:
    """Return ``floor(fraction * multiplier * alive)`` computed exactly.

    Floats are read as the decimals they print as, so ``0.07`` of ``100`` is ``7`` and ``0.29`` of
    ``100`` is ``29`` (plain float arithmetic gives ``28.999999999999996``).

    Example:
        >>> count_to_prune(0.29, 100), count_to_prune(0.5, 96), count_to_prune(0.2, 48)
        (29, 48, 9)
    """
    exact = Fraction(repr(float(fraction))) * Fraction(repr(float(multiplier))) * alive
    return math.floor(exact)


def salt_from_seed(seed: Any) -> int:
    """Derive the 64-bit salt used for tie-breaking and random scores from a seed.

    ``None`` means seed ``0``: results are reproducible unless a seed is chosen.

    Example:
        >>> salt_from_seed(0) == salt_from_seed(None)
        True
    """
    entropy = 0 if seed is None else seed
    sequence = np.random.SeedSequence(entropy)
    return int(sequence.generate_state(1, dtype=np.uint64)[0])


def _check_seed(seed: Any) -> None:
    if seed is None:
        return
    values = seed if isinstance(seed, (list, tuple)) else [seed]
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise TypeError(
                f"`seed` must be None or a non-negative integer. Received: seed={seed!r}"
            )


def check_layer_rate(label: str, value: Any, fraction: float) -> float:
    """One ``layer_rates`` multiplier, checked: a finite real ``>= 0`` whose product with
    ``fraction`` stays below 1. ``label``: the key as the user wrote it (for messages).

    Example:
        >>> check_layer_rate("'out'", 0.5, 0.2)
        0.5
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`layer_rates` multipliers must be real numbers. "
            f"Received: layer_rates[{label}]={value!r}"
        )
    multiplier = float(value)
    if not math.isfinite(multiplier) or multiplier < 0:
        raise ValueError(
            f"`layer_rates` multipliers must be finite and >= 0 (0 excludes the layer). "
            f"Received: layer_rates[{label}]={value!r}"
        )
    if fraction * multiplier >= 1.0:
        raise ValueError(
            f"`layer_rates[{label}]` times the fraction {fraction} must stay below 1 "
            f"(it would prune the whole layer). Received: layer_rates[{label}]={value!r}"
        )
    return multiplier


def normalize_layer_rates(layer_rates: Any, names: Sequence[str], fraction: float) -> list[float]:
    """Turn ``{name_or_index: multiplier}`` into one multiplier per array (default 1).

    Raises:
        TypeError: Not a mapping, or a key/value of the wrong type.
        ValueError: Unknown name or index, negative or non-finite multiplier, a multiplier
            that would prune a whole layer (``fraction * multiplier >= 1``), or two keys that
            select the same array (a name and an index) with different multipliers.

    Example:
        >>> normalize_layer_rates({"out": 0.5, 0: 0}, ["a", "b", "out"], 0.2)
        [0.0, 1.0, 0.5]
    """
    rates = [1.0] * len(names)
    if layer_rates is None:
        return rates
    set_by: dict[int, Any] = {}
    if not isinstance(layer_rates, Mapping):
        raise TypeError(
            "`layer_rates` must be a dict {layer name or index: multiplier}. "
            f"Received: layer_rates={short_repr(layer_rates)}"
        )
    for key, value in layer_rates.items():
        if isinstance(key, str):
            if key not in names:
                raise ValueError(
                    f"`layer_rates` names an unknown layer; known: {list(names)}. "
                    f"Received: layer_rates key {key!r}"
                )
            index = list(names).index(key)
        elif isinstance(key, numbers.Integral) and not isinstance(key, bool):
            if not -len(names) <= int(key) < len(names):
                raise ValueError(
                    f"`layer_rates` index out of range for {len(names)} prunable arrays. "
                    f"Received: layer_rates key {key!r}"
                )
            index = int(key) % len(names)
        else:
            raise TypeError(
                "`layer_rates` keys must be layer names (str) or indices (int). "
                f"Received: layer_rates key {key!r}"
            )
        multiplier = check_layer_rate(repr(key), value, fraction)
        if index in set_by and rates[index] != multiplier:
            other = set_by[index]
            raise ValueError(
                f"`layer_rates` keys {other!r} and {key!r} both select {names[index]!r} with "
                f"different multipliers; give each layer one. Received: layer_rates[{other!r}]="
                f"{layer_rates[other]!r}, layer_rates[{key!r}]={value!r}"
            )
        set_by[index] = key
        rates[index] = multiplier
    return rates


def compute_masks(
    strategy: str | Strategy,
    fraction: float,
    *,
    initial: Sequence[Any] | None = None,
    trained: Sequence[Any] | None = None,
    current: Sequence[Any] | None = None,
    masks: Sequence[Any] | None = None,
    seed: Any = None,
    layer_rates: Mapping[str | int, float] | None = None,
    names: Sequence[str] | None = None,
    min_layer_density: float = 0.0,
    warn_if_nothing: bool = True,
) -> list[np.ndarray]:
    """Compute new boolean masks (``True`` = kept) that prune ``fraction`` of what remains.

    Args:
        strategy: A name from :data:`ltp_core.STRATEGIES` or a :class:`ltp_core.Strategy`.
        fraction: Fraction of the still-unpruned weights to prune, per scope, ``0 <= f < 1``.
        initial: Weights at initialization (for ``large_init``, ``movement``, ...).
        trained: Trained ("pretrained", "final") weights (for ``large_final``, ...).
        current: The weights as they are now (for ``smallest_weights``).
        masks: Current masks; only entries kept in them can be pruned. ``None``: nothing pruned
            yet.
        seed: Seed for tie-breaking and ``random`` (an int or a sequence of ints; ``None`` = 0).
        layer_rates: ``{layer name or index: multiplier}`` scaling the fraction per layer; ``0``
            excludes a layer. In global scope, layers with a multiplier other than 1 are pruned
            on their own at ``fraction * multiplier`` and the rest are pooled.
        names: Layer names (for ``layer_rates`` keys and messages). Default ``layer_0``, ...
        min_layer_density: Share of each layer's weights that must survive, ``0 <= d < 1``
            (default ``0``: no floor). A layer of ``n`` weights keeps at least
            ``ceil(d * n)`` of them (so any ``d > 0`` keeps at least one); a layer already
            below that from earlier pruning loses nothing more. In global scope the exact count
            is still met by pruning the next-ranked weights of other layers; a request that
            the floors make impossible is a ``ValueError``. In layer scope (and for layers
            pruned alone through ``layer_rates``) nothing can take a layer's share, so a floor
            the layer's own count would break is a ``ValueError`` too.
        warn_if_nothing: Warn (``NothingPrunedWarning``) when ``fraction > 0`` prunes no
            weight; ``False`` for callers that report that themselves (the pruners do, per
            level).

    Returns:
        One boolean array per weight array, each a subset of the corresponding old mask.

    Raises:
        ValueError: Bad fraction, unknown strategy, missing or mismatched weights, NaN/Inf in
            a tensor the strategy reads, a ``min_layer_density`` outside ``[0, 1)`` or one that
            makes the exact count impossible.
        TypeError: Wrong types.

    Warns:
        LayerCollapseWarning: A global selection pruned every remaining weight of a layer.
        NothingPrunedWarning: ``fraction > 0`` pruned no weight: it rounds down to 0 in
            every scope (``floor(fraction * alive)``), or ``layer_rates`` exclude every layer.

    Example:
        >>> import numpy as np
        >>> w = [np.array([1.0, -2.0, 3.0, -4.0])]
        >>> compute_masks("large_final", 0.25, trained=w)[0].tolist()
        [False, True, True, True]
    """
    resolved = resolve_strategy(strategy, "strategy")
    fraction = check_fraction(fraction, "fraction")
    min_density = check_min_layer_density(min_layer_density)
    if not isinstance(warn_if_nothing, bool):
        raise TypeError(
            "`warn_if_nothing` must be True or False. "
            f"Received: warn_if_nothing={warn_if_nothing!r}"
        )
    _check_seed(seed)
    given = {"initial": initial, "trained": trained, "current": current}
    arrays = _validated_arrays(given, resolved)
    reference = next(iter(arrays.values())) if arrays else None
    if reference is None:
        if masks is None:
            raise ValueError(
                "compute_masks needs the weights' shapes: pass `masks` or any of `initial`, "
                "`trained`, `current`. Received: none of them"
            )
        mask_list = check_masks(masks, [np.shape(m) for m in masks])
        shapes = [tuple(m.shape) for m in mask_list]
    else:
        shapes = [tuple(a.shape) for a in reference]
        mask_list = check_masks(masks, shapes) if masks is not None else []
    layer_names = _layer_names(names, len(shapes))
    rates = normalize_layer_rates(layer_rates, layer_names, fraction)
    alive = [as_flat(m) for m in mask_list] if mask_list else [None] * len(shapes)
    salt = salt_from_seed(seed)

    groups: list[tuple[list[int], float]]
    if resolved.scope == "global":
        pooled = [i for i, rate in enumerate(rates) if rate == 1.0]
        alone = [i for i, rate in enumerate(rates) if rate != 1.0]
        groups = [(pooled, 1.0)] if pooled else []
        groups += [([i], rates[i]) for i in alone]
    else:
        groups = [([i], rates[i]) for i in range(len(shapes))]
    sizes = [math.prod(shape) for shape in shapes]
    # Validate every group (counts, floors) before any selection pass.
    plans = []
    criterion = resolved.criterion
    for indices, multiplier in groups:
        sources: list[ScoreSource] | None = None
        if criterion.select is not None:  # an exact selection of its own (lamp): no scores yet
            # it refuses NaN/Inf itself (NonFiniteInputError, named below) in a pass it makes anyway
            n_alives = [_alive_count(alive[i], sizes[i]) for i in indices]
        else:
            sources = _score_sources(resolved, indices, arrays, alive, layer_names, salt)
            n_alives = [source.n_alive for source in sources]
        n_alive = sum(n_alives)
        k = count_to_prune(fraction, n_alive, multiplier)
        if k == 0 and sources is not None and not criterion.random:  # still refuse NaN/Inf
            for source in sources:
                for start in range(0, source.size, CHUNK_SIZE):
                    source.chunk(start, min(start + CHUNK_SIZE, source.size))
        caps = _prunable_above_floor(
            n_alives,
            [sizes[i] for i in indices],
            min_density,
            k,
            fraction,
            multiplier,
            [layer_names[i] for i in indices],
        )
        if criterion.keeps_one_per_layer and len(indices) > 1:
            layers_alive = sum(1 for count in n_alives if count)
            if n_alive - k < layers_alive:
                raise ValueError(
                    f"Strategy {resolved.name!r} keeps at least one weight in every layer, but "
                    f"pruning {fraction} of the {n_alive} remaining weights leaves {n_alive - k} "
                    f"for {layers_alive} layers. Lower the fraction. Received: fraction={fraction}"
                )
        counts = None
        if criterion.layer_counts is not None:
            counts = criterion.layer_counts([shapes[i] for i in indices], n_alives, k)
            if caps is not None:
                counts = _respect_caps(counts, caps)
        plans.append((indices, sources, n_alives, k, caps, counts))
    keep: list[np.ndarray | None] = [None] * len(shapes)
    collapsed: list[str] = []
    for indices, sources, n_alives, k, caps, counts in plans:
        if sources is None:
            if criterion.select is None:  # pragma: no cover - sources are built otherwise
                raise RuntimeError("no selection for this strategy; please report this as a bug")
            role = criterion.needs[0]
            select_some = functools.partial(
                _select_members,
                criterion.select,
                [as_flat(arrays[role][i]) for i in indices],
                [alive[i] for i in indices],
                list(indices),
                salt,
            )
            try:
                if caps is None:
                    flats = select_some(range(len(indices)), k)
                else:  # floors: rounds of the criterion's own selection, capped layers alone
                    flats = select_under_caps(
                        select_some, n_alives, caps, k, lambda _, keep: int(np.count_nonzero(keep))
                    )
            except NonFiniteInputError as found:
                _raise_named(found, indices, arrays[role], role, layer_names, resolved.name)
        elif counts is not None:
            flats = [
                keep_after_pruning_smallest([source], count, salt)[0]
                for source, count in zip(sources, counts, strict=True)
            ]
        elif caps is None:
            flats = keep_after_pruning_smallest(sources, k, salt)
        else:
            flats = keep_after_pruning_smallest_capped(sources, k, salt, caps)
        for i, count, flat in zip(indices, n_alives, flats, strict=True):
            keep[i] = flat
            if len(indices) > 1 and count and k >= count and not flat.any():
                collapsed.append(layer_names[i])
    if collapsed:
        warn_layer_collapse(resolved.name, fraction, collapsed, 2)
    alive_total = sum(sum(plan[2]) for plan in plans)
    if warn_if_nothing and fraction > 0 and alive_total and not any(plan[3] for plan in plans):
        warnings.warn(
            f"compute_masks pruned no weight: fraction={fraction} of the {alive_total} alive "
            "weights rounds down to 0 in every scope (exact count floor(fraction * alive) per "
            "scope) or layer_rates exclude every layer. Raise the fraction or use a global "
            "strategy (one count over all layers).",
            NothingPrunedWarning,
            stacklevel=2,
        )
    return [np.asarray(flat).reshape(shape) for flat, shape in zip(keep, shapes, strict=True)]


def warn_layer_collapse(
    strategy: str, fraction: float, collapsed: Sequence[str], stacklevel: int = 2
) -> None:
    """Warn (:class:`LayerCollapseWarning`) that a global selection emptied the layers
    ``collapsed``, with the remedies. ``stacklevel``: 1 points at the function that calls this
    one, 2 at its caller, and so on."""
    warnings.warn(
        f"Global selection ({strategy}, fraction={fraction}) pruned every remaining "
        f"weight of {len(collapsed)} layer(s): {list(collapsed)}. A layer with no weights blocks "
        "the signal through the network (layer collapse). Remedies: pass "
        "min_layer_density= (--min-layer-density in ltp, e.g. 0.01) to keep a share of every "
        "layer, use the 'lamp' strategy (keeps at least one weight per layer), exclude the "
        "layer with layer_rates={name: 0}, or prune in layer scope.",
        LayerCollapseWarning,
        stacklevel=stacklevel + 1,
    )


def check_min_layer_density(value: Any) -> float:
    """Validate ``min_layer_density``: a real number with ``0 <= value < 1``.

    Example:
        >>> check_min_layer_density(0.02)
        0.02
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(
            "`min_layer_density` must be a real number in [0, 1) (the share of each layer's "
            f"weights that must survive). Received: min_layer_density={short_repr(value)} "
            f"of type {type(value).__name__}"
        )
    number = float(value)
    if math.isnan(number) or not 0.0 <= number < 1.0:
        raise ValueError(
            "`min_layer_density` must be in [0, 1): the share of each layer's weights that "
            f"must survive (1 would forbid pruning). Received: min_layer_density={value!r}"
        )
    return number


def layer_floor(min_layer_density: float, size: int) -> int:
    """Weights a layer of ``size`` entries keeps at least: ``ceil(min_layer_density * size)``.

    Computed exactly (``0.01`` of ``300`` is ``3``, not ``4``).

    Example:
        >>> layer_floor(0.01, 300), layer_floor(0.01, 10), layer_floor(0.0, 10)
        (3, 1, 0)
    """
    return math.ceil(Fraction(repr(float(min_layer_density))) * size)


def _prunable_above_floor(
    n_alives: Sequence[int],
    sizes: Sequence[int],
    min_density: float,
    k: int,
    fraction: float,
    multiplier: float,
    names: Sequence[str],
) -> list[int] | None:
    """Most weights each source may lose under the floor; ``None`` when no floor binds."""
    if min_density == 0.0 or k == 0:
        return None
    caps = [
        max(count - layer_floor(min_density, size), 0)
        for count, size in zip(n_alives, sizes, strict=True)
    ]
    if all(cap >= k for cap in caps):
        return None
    if k > sum(caps):
        rate = "" if multiplier == 1.0 else f" x layer rate {multiplier}"
        raise ValueError(
            f"`min_layer_density` cannot be met: pruning {fraction}{rate} of the "
            f"{sum(n_alives)} remaining weights of {list(names)} removes "
            f"{k}, but only {sum(caps)} may go while every layer keeps "
            f"ceil({min_density} x its size) weights. Lower min_layer_density or the "
            f"fraction. Received: min_layer_density={min_density}"
        )
    return caps


def check_layer_floors(
    sizes: Sequence[int],
    fractions: Sequence[float],
    min_layer_density: float,
    *,
    multipliers: Sequence[float] | None = None,
    names: Sequence[str] | None = None,
) -> None:
    """Refuse a global pruning schedule that ``min_layer_density`` makes impossible, up front.

    Replays the counts of pruning ``fractions`` one after another (an IMP run's levels, or the
    steps to a one-shot sparsity) in global scope, with layers whose multiplier is not 1 pruned
    alone as :func:`compute_masks` does. Exact without any weights: every level leaves each layer
    at or above its floor ``ceil(d * size)``, so at every level the weights that may go number
    ``alive - sum(floors)`` whatever was ranked, and a level is possible exactly when its count
    ``floor(fraction * multiplier * alive)`` is no more.

    Args:
        sizes: Weights per layer.
        fractions: Fraction of the remaining weights pruned at each level, in order.
        min_layer_density: Share of each layer's weights that must survive, ``0 <= d < 1``.
        multipliers: Per-layer multipliers of the fraction (``layer_rates``); ``None``: all 1.
        names: Layer names for the message. Default ``layer_0``, ...

    Raises:
        ValueError: A level would need to prune into a floor (the message names the level and
            the highest number of levels that works), or a bad ``min_layer_density``.

    Example:
        >>> check_layer_floors([100, 10], [0.5, 0.5], 0.1)
        >>> try:
        ...     check_layer_floors([100, 10], [0.5, 0.5, 0.5], 0.2)
        ... except ValueError as error:
        ...     print(str(error).split(":")[0])
        `min_layer_density` cannot be met at level 3
    """
    min_density = check_min_layer_density(min_layer_density)
    if min_density == 0.0:
        return
    layer_names = _layer_names(names, len(sizes))
    rates = [1.0] * len(sizes) if multipliers is None else [float(m) for m in multipliers]
    pooled = [i for i, rate in enumerate(rates) if rate == 1.0]
    groups = ([(pooled, 1.0)] if pooled else []) + [
        ([i], rate) for i, rate in enumerate(rates) if rate != 1.0
    ]
    for indices, multiplier in groups:
        alive = sum(int(sizes[i]) for i in indices)
        floors = sum(layer_floor(min_density, int(sizes[i])) for i in indices)
        for level, fraction in enumerate(fractions, start=1):
            k = count_to_prune(fraction, alive, multiplier)
            if k > alive - floors:
                rate = "" if multiplier == 1.0 else f" x layer rate {multiplier}"
                raise ValueError(
                    f"`min_layer_density` cannot be met at level {level}: pruning "
                    f"{fraction}{rate} of the {alive} remaining weights of "
                    f"{[layer_names[i] for i in indices]} removes {k}, but only "
                    f"{alive - floors} may go while every layer keeps ceil({min_density} x its "
                    f"size) weights ({level - 1} level(s) work). Lower `min_layer_density`, the "
                    f"fraction or the number of levels. Received: min_layer_density={min_density}"
                )
            alive -= k


def _raise_named(
    found: NonFiniteInputError,
    indices: Sequence[int],
    arrays: Sequence[Any],
    role: str,
    layer_names: Sequence[str],
    strategy: str,
) -> NoReturn:
    """Raise the error for ``found`` that names the layer (a selection only knows positions)."""
    i = indices[found.position]
    label = f"{role}[{i}] ({layer_names[i]})"
    if found.overflow:
        largest = float(np.max(np.abs(as_flat(arrays[i]))))
        raise ValueError(
            f"`{label}`: {strategy} squares the weights, and their sum of squares overflows "
            "float64. LAMP scores do not change when a layer is scaled, so divide this layer "
            "by a power of two (or check the training for divergence). "
            f"Received: {label} with largest magnitude {largest:.3g}"
        ) from None
    _check_finite_in_chunks(arrays[i], label)
    raise found  # pragma: no cover - the check above raises the named error


def _select_members(
    select: Callable[..., list[np.ndarray]],
    flats: Sequence[np.ndarray],
    alive: Sequence[np.ndarray | None],
    ids: Sequence[int],
    salt: int,
    members: Sequence[int],
    count: int,
) -> list[np.ndarray]:
    """``select`` (a criterion's own exact selection) over the layers ``members`` only."""
    return select(
        [flats[j] for j in members],
        [alive[j] for j in members],
        [ids[j] for j in members],
        count,
        salt,
    )


def _check_finite_in_chunks(array: np.ndarray, label: str, chunk: int = 1 << 20) -> None:
    flat = as_flat(array)
    for start in range(0, flat.size, chunk):
        check_input_finite(flat[start : start + chunk], label)


def _alive_count(alive: np.ndarray | None, size: int) -> int:
    return size if alive is None else int(np.count_nonzero(alive))


def _respect_caps(counts: Sequence[int], caps: Sequence[int]) -> list[int]:
    """Clamp per-layer counts to their caps; the excess goes to the layers with most room."""
    result = [min(count, cap) for count, cap in zip(counts, caps, strict=True)]
    excess = sum(counts) - sum(result)
    by_room = sorted(range(len(result)), key=lambda i: (-(caps[i] - result[i]), i))
    for i in by_room:
        if excess == 0:
            break
        extra = min(caps[i] - result[i], excess)
        result[i] += extra
        excess -= extra
    return result


def _layer_names(names: Sequence[str] | None, count: int) -> list[str]:
    if names is None:
        return [f"layer_{i}" for i in range(count)]
    if isinstance(names, str) or len(names) != count:
        raise ValueError(
            f"`names` must list one name per weight array ({count}). "
            f"Received: names={short_repr(names)}"
        )
    return [str(n) for n in names]


def _validated_arrays(
    given: Mapping[str, Sequence[Any] | None], strategy: Strategy
) -> dict[str, list[np.ndarray]]:
    arrays: dict[str, list[np.ndarray]] = {}
    shapes: list[tuple[int, ...]] | None = None
    for role in ROLES:
        value = given[role]
        if value is None:
            continue
        # Finiteness of what is scored is checked while streaming (one pass, no extra copy).
        checked = check_weight_list(value, role, shapes=shapes, check_finite=False)
        shapes = [tuple(a.shape) for a in checked]
        arrays[role] = checked
    for role in strategy.criterion.needs:
        if role not in arrays:
            hint = (
                " With LotteryTicketPruner, call set_pretrained_weights(...) first."
                if role == "trained"
                else ""
            )
            raise ValueError(
                f"Strategy {strategy.name!r} ranks the `{role}` weights, but none were given."
                f"{hint} Received: {role}=None"
            )
    return arrays


def _score_sources(
    strategy: Strategy,
    indices: Sequence[int],
    arrays: Mapping[str, Sequence[np.ndarray]],
    alive: Sequence[np.ndarray | None],
    names: Sequence[str],
    salt: int,
) -> list[ScoreSource]:
    criterion = strategy.criterion
    sources: list[ScoreSource] = []
    if criterion.random:
        any_role = next(iter(arrays.values()), None)
        for i in indices:
            size = any_role[i].size if any_role is not None else int(np.size(alive[i]))  # type: ignore[arg-type]
            sources.append(RandomScores(i, int(size), alive[i], salt))
        return sources
    if criterion.elementwise is not None:
        for i in indices:
            inputs = [as_flat(arrays[role][i]) for role in criterion.needs]
            label = f"{names[i]} ({strategy.name})"
            input_labels = (
                None
                if criterion.reveals_nonfinite
                else [f"{role}[{i}] ({names[i]})" for role in criterion.needs]
            )
            sources.append(
                ElementwiseScores(
                    i,
                    inputs,
                    criterion.elementwise,
                    alive[i],
                    label,
                    criterion.signed,
                    input_labels,
                )
            )
        return sources
    if criterion.pooled is None:
        raise TypeError(
            f"Criterion {criterion.name!r} defines no way to score weights. "
            f"Received: criterion={criterion!r}"
        )
    subset: dict[str, list[np.ndarray]] = {
        role: [arrays[role][i] for i in indices] for role in criterion.needs
    }
    for role in criterion.needs:
        for i in indices:
            _check_finite_in_chunks(arrays[role][i], f"{role}[{i}] ({names[i]})")
    scope_alive = [
        None
        if alive[i] is None
        else np.asarray(alive[i]).reshape(arrays[criterion.needs[0]][i].shape)
        for i in indices
    ]
    scores = criterion.pooled(subset, scope_alive)
    for i, score in zip(indices, scores, strict=True):
        flat = np.asarray(score, dtype=np.float64).reshape(-1)
        if flat.size != arrays[criterion.needs[0]][i].size:
            raise ValueError(
                f"Strategy {strategy.name!r} returned scores of the wrong size for {names[i]}. "
                f"Received: {flat.size} scores for {arrays[criterion.needs[0]][i].size} weights"
            )
        sources.append(ArrayScores(i, flat, alive[i], f"{names[i]} ({strategy.name})"))
    return sources
