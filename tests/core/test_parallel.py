"""ltp_core.parallel: work items on threads, results in order, errors propagated."""

from __future__ import annotations

import threading
import time

import pytest

from ltp_core.parallel import selection_threads, thread_map, usable_cores


def test_thread_map_keeps_item_order_and_uses_threads() -> None:
    names: set[str] = set()
    lock = threading.Lock()

    def work(index: int, delay: float) -> int:
        with lock:
            names.add(threading.current_thread().name)
        time.sleep(delay)
        return index * index

    items = [(i, 0.02 if i % 2 else 0.0) for i in range(8)]
    assert thread_map(work, items, threads=3) == [i * i for i in range(8)]
    assert len(names) > 1 and all(name.startswith("ltp") for name in names)
    names.clear()
    assert thread_map(work, items, threads=1) == [i * i for i in range(8)]
    assert names == {threading.current_thread().name}


def test_thread_map_raises_the_items_error_and_cancels_the_rest() -> None:
    started: list[int] = []

    def work(index: int) -> int:
        started.append(index)
        if index == 1:
            raise KeyError("item 1")
        time.sleep(0.05)
        return index

    with pytest.raises(KeyError, match="item 1"):
        thread_map(work, [(i,) for i in range(40)], threads=2)
    assert len(started) < 40  # items not started when the error came were cancelled


def test_selection_threads_small_scopes_env_and_bad_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LTP_THREADS", raising=False)
    assert selection_threads(1000) == 1
    assert selection_threads(1 << 30) == min(4, usable_cores())
    monkeypatch.setenv("LTP_THREADS", "1")
    assert selection_threads(1 << 30) == 1
    for bad in ("0", "-2", "two"):
        monkeypatch.setenv("LTP_THREADS", bad)
        with pytest.raises(ValueError, match=f"Received: LTP_THREADS='{bad}'"):
            selection_threads(1 << 30)
