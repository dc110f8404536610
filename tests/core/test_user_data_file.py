"""``read_user_npz`` (``ltp imp --dataset file.npz``) on hostile or surprising files."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ltp_core.datasets.user_file import read_user_npz

RNG = np.random.default_rng(0)
X = RNG.random((40, 5)).astype(np.float32)
Y = np.arange(40) % 3


def save(path: Path, **arrays: np.ndarray) -> Path:
    data = {"x_train": X[:30], "y_train": Y[:30], "x_test": X[30:], "y_test": Y[30:]}
    data.update(arrays)
    np.savez(path, **data)  # type: ignore[arg-type]
    return path


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_huge_declared_shape_is_refused_before_allocating(tmp_path: Path) -> None:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000, 5), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    member = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x_train.npy", member + bytes(16))
        for key, value in {"y_train": Y[:30], "x_test": X[30:], "y_test": Y[30:]}.items():
            archive.writestr(f"{key}.npy", npy_bytes(value))
    with pytest.raises(ValueError, match=r"declares shape \(100000000000, 5\).*holds 16 bytes"):
        read_user_npz(path)


def test_object_arrays_stay_unread(tmp_path: Path) -> None:
    path = save(tmp_path / "objects.npz", x_train=np.array([None] * 30, dtype=object))
    with pytest.raises(ValueError, match=r"`x_train` holds Python objects.*allow_pickle"):
        read_user_npz(path)


def test_float_labels_beyond_exact_integers_are_refused(tmp_path: Path) -> None:
    path = save(tmp_path / "big.npz", y_train=Y[:30] * 1e20 + 1e20, y_test=Y[30:] * 1e20 + 1e20)
    with pytest.raises(ValueError, match=r"integer class labels. Received: y_train\[0\]"):
        read_user_npz(path)


def test_labels_with_gaps_and_integral_floats_map_to_classes(tmp_path: Path) -> None:
    labels = (Y * 10 + 7).astype(np.float64)
    path = save(tmp_path / "gaps.npz", y_train=labels[:30], y_test=labels[30:])
    _, y_train, _, y_test, names = read_user_npz(path)
    assert names == ("7", "17", "27")
    assert y_train.tolist() == Y[:30].tolist() and y_test.tolist() == Y[30:].tolist()


def test_test_labels_never_trained_on_are_refused(tmp_path: Path) -> None:
    path = save(tmp_path / "unseen.npz", y_test=np.full(10, 99))
    with pytest.raises(ValueError, match=r"never occur in `y_train`.*\[99\]"):
        read_user_npz(path)
