"""Run independent NumPy work items on a few threads (NumPy releases the GIL inside its loops).

Results never depend on the number of threads: callers split work into items whose results are
combined in item order, so sums keep the order they would have in one thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["selection_threads", "thread_map", "usable_cores"]

T = TypeVar("T")

MAX_THREADS = 4
"""Most threads a selection pass uses (memory bandwidth, not cores, limits these passes)."""


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity on Linux, else ``os.cpu_count()``).

    Example:
        >>> usable_cores() >= 1
        True
    """
    affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere every core counts
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def thread_map(fn: Callable[..., T], items: Sequence[tuple[object, ...]], threads: int) -> list[T]:
    """``[fn(*item) for item in items]``, on up to ``threads`` threads, results in item order.

    With one thread or one item, everything runs in the calling thread. If an item raises (or
    the caller is interrupted), items not started yet are cancelled, the running ones finish,
    and the exception propagates.

    Example:
        >>> thread_map(pow, [(2, 3), (3, 2)], threads=2)
        [8, 9]
    """
    if threads <= 1 or len(items) <= 1:
        return [fn(*item) for item in items]
    pool = ThreadPoolExecutor(max_workers=min(threads, len(items)), thread_name_prefix="ltp")
    try:
        futures = [pool.submit(fn, *item) for item in items]
        return [future.result() for future in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def selection_threads(entries: int, minimum: int = 1 << 22) -> int:
    """Threads for a selection pass over ``entries`` weights: one below ``minimum``, else up to
    :data:`MAX_THREADS`, at most the usable cores (``LTP_THREADS`` in the environment caps it).

    Example:
        >>> selection_threads(1000)
        1
    """
    if entries < minimum:
        return 1
    limit = MAX_THREADS
    configured = os.environ.get("LTP_THREADS")
    if configured is not None:
        try:
            limit = int(configured)
        except ValueError:
            raise ValueError(
                f"LTP_THREADS must be a positive integer. Received: LTP_THREADS={configured!r}"
            ) from None
        if limit < 1:
            raise ValueError(
                f"LTP_THREADS must be a positive integer. Received: LTP_THREADS={configured!r}"
            )
    return max(1, min(limit, usable_cores()))
