"""Tests of the search roots (ltp_core.datasets.locations)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ltp_core.datasets.locations import DATA_DIR_ENV, keras_cache_dir, keras_home, search_roots


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    return tmp_path


def test_keras_home_defaults_to_home_dot_keras(clean_env: Path) -> None:
    assert keras_home() == clean_env / ".keras"
    assert keras_cache_dir() == clean_env / ".keras" / "datasets"


def test_keras_home_env(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(clean_env / "kh"))
    assert keras_cache_dir() == clean_env / "kh" / "datasets"
    assert "KERAS_HOME" in search_roots()[0].origin


def test_unwritable_home_falls_back_to_tmp(
    monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> None:
    monkeypatch.setenv("HOME", str(clean_env / "does-not-exist"))
    assert keras_home() == Path("/tmp/.keras")


def test_root_order(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = clean_env / ".keras" / "datasets"
    assert [r.path for r in search_roots()] == [cache]
    monkeypatch.setenv(DATA_DIR_ENV, str(clean_env / "env"))
    assert [(r.path, r.origin) for r in search_roots()] == [
        (clean_env / "env", DATA_DIR_ENV),
        (cache, "Keras cache"),
    ]
    assert [r.path for r in search_roots(clean_env / "arg")] == [clean_env / "arg", cache]
    assert [r.path for r in search_roots(str(cache))] == [cache]  # no duplicates
