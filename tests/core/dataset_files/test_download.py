"""Tests of the atomic download (ltp_core.datasets.download) using file:// URLs, no network."""

from __future__ import annotations

import hashlib
import urllib.error
from pathlib import Path

import pytest

from ltp_core.datasets import download
from ltp_core.datasets.download import ChecksumError, download_file


def test_downloads_and_verifies(tmp_path: Path) -> None:
    source = tmp_path / "mirror" / "blob.bin"
    source.parent.mkdir()
    source.write_bytes(b"x" * 3_000_000)  # more than one chunk
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    target = download_file(
        source.as_uri(), tmp_path / "cache" / "sub" / "blob.bin", sha256=digest.upper()
    )
    assert target.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["blob.bin"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_checksum_mismatch_keeps_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    source = tmp_path / "blob.bin"
    source.write_bytes(b"new content")
    target = tmp_path / "cache" / "blob.bin"
    target.parent.mkdir()
    target.write_bytes(b"old content")
    with pytest.raises(ChecksumError, match=r"SHA-256 is .* expected 0+"):
        download_file(source.as_uri(), target, sha256="0" * 64)
    assert target.read_bytes() == b"old content"
    assert [p.name for p in target.parent.iterdir()] == ["blob.bin"]


def test_network_failure_propagates_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(url: str, timeout: float) -> object:
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(download, "urlopen", offline)
    with pytest.raises(urllib.error.URLError):
        download_file("https://example.invalid/a.npz", tmp_path / "a.npz")
    assert list(tmp_path.iterdir()) == []


def test_missing_local_source_is_url_error(tmp_path: Path) -> None:
    with pytest.raises(urllib.error.URLError):
        download_file((tmp_path / "absent").as_uri(), tmp_path / "out" / "absent")
    assert list((tmp_path / "out").iterdir()) == []
