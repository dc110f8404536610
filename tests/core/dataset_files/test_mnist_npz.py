"""Tests of the mnist.npz reader (ltp_core.datasets.npz)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ltp_core.datasets.npz import NPZ_KEYS, read_mnist_npz


def test_reads_keys_in_keras_order(tmp_path: Path) -> None:
    arrays = {key: np.full((i + 1,), i, np.uint8) for i, key in enumerate(NPZ_KEYS)}
    np.savez_compressed(tmp_path / "mnist.npz", **arrays)  # type: ignore[arg-type]
    loaded = read_mnist_npz(tmp_path / "mnist.npz")
    for key, array in zip(NPZ_KEYS, loaded, strict=True):
        np.testing.assert_array_equal(array, arrays[key])


def test_missing_key(tmp_path: Path) -> None:
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros(1), y_train=np.zeros(1), x_test=np.zeros(1))
    with pytest.raises(ValueError, match=r"lacks the arrays \['y_test'\]"):
        read_mnist_npz(tmp_path / "mnist.npz")


def test_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "mnist.npz").write_bytes(b"<html>captive portal</html>")
    with pytest.raises(ValueError, match=r"not a readable .npz archive"):
        read_mnist_npz(tmp_path / "mnist.npz")


def test_single_npy_array(tmp_path: Path) -> None:
    with open(tmp_path / "mnist.npz", "wb") as stream:
        np.save(stream, np.zeros(3))
    with pytest.raises(ValueError, match=r"single array"):
        read_mnist_npz(tmp_path / "mnist.npz")


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    objects = np.array([{"a": 1}], dtype=object)
    np.savez(
        tmp_path / "mnist.npz", x_train=objects, y_train=objects, x_test=objects, y_test=objects
    )
    with pytest.raises(ValueError, match=r"mnist.npz"):
        read_mnist_npz(tmp_path / "mnist.npz")


def test_damaged_member(tmp_path: Path) -> None:
    arrays = {key: np.arange(4000, dtype=np.int64) for key in NPZ_KEYS}
    np.savez_compressed(tmp_path / "mnist.npz", **arrays)  # type: ignore[arg-type]
    content = bytearray((tmp_path / "mnist.npz").read_bytes())
    middle = len(content) // 3
    content[middle : middle + 40] = b"\xff" * 40
    (tmp_path / "mnist.npz").write_bytes(bytes(content))
    with pytest.raises(ValueError, match=r"mnist.npz"):
        read_mnist_npz(tmp_path / "mnist.npz")
