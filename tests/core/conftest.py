"""Fixtures for core tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ltp_core import selection


@pytest.fixture(params=["in_memory", "partition", "streaming"])
def selection_path(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Run a test through the in-memory path and through the sampled streaming path.

    The streaming path is forced on small arrays by shrinking its thresholds and chunk size;
    the partition path (one ``np.partition`` per layer-scope array) by shrinking the in-memory
    threshold below the arrays' sizes.
    """
    if request.param == "partition":
        monkeypatch.setattr(selection, "SMALL_ALIVE", 4)
        monkeypatch.setattr(selection, "CHUNK_SIZE", 16)
    if request.param == "streaming":
        monkeypatch.setattr(selection, "PARTITION_MAX", 0)
        monkeypatch.setattr(selection, "SMALL_ALIVE", 8)
        monkeypatch.setattr(selection, "MIN_SAMPLE", 8)
        monkeypatch.setattr(selection, "SAMPLE_SIZE", 64)
        monkeypatch.setattr(selection, "CHUNK_SIZE", 16)
    yield request.param
