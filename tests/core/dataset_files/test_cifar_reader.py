"""Tests of the CIFAR-10 batch reader (ltp_core.datasets.cifar)."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from ltp_core.datasets.cifar import (
    CIFAR10_TEST_BATCH,
    CIFAR10_TRAIN_BATCHES,
    extract_cifar10_archive,
    parse_cifar_batch,
    read_cifar10_archive,
    read_cifar10_folder,
)

BATCHES = (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)


def batch_dict(n: int, start: int, *, bytes_keys: bool = True) -> dict[object, object]:
    data = (np.arange(n * 3072) + start).astype(np.uint8).reshape(n, 3072)
    labels = [(start + i) % 10 for i in range(n)]
    if bytes_keys:
        return {b"data": data, b"labels": labels, b"batch_label": b"x"}
    return {"data": data, "labels": labels}


def reference_nhwc(n: int, start: int) -> np.ndarray:
    data = (np.arange(n * 3072) + start).astype(np.uint8).reshape(n, 3, 32, 32)
    return data.transpose(0, 2, 3, 1)


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("bytes_keys", [True, False])
def test_parse_batch(protocol: int, bytes_keys: bool) -> None:
    content = pickle.dumps(batch_dict(3, 17, bytes_keys=bytes_keys), protocol=protocol)
    images, labels = parse_cifar_batch(io.BytesIO(content))
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
    assert images.flags.c_contiguous
    np.testing.assert_array_equal(images, reference_nhwc(3, 17))
    assert labels.dtype == np.int64 and labels.tolist() == [7, 8, 9]


def test_numpy1_module_names_are_accepted() -> None:
    # Batches written by NumPy 1 / Python 2 name ``numpy.core.multiarray``.
    content = pickle.dumps(batch_dict(2, 0), protocol=2)
    legacy = content.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert legacy != content
    images, _ = parse_cifar_batch(io.BytesIO(legacy))
    np.testing.assert_array_equal(images, reference_nhwc(2, 0))


class Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo owned > /dev/null",))


def test_code_execution_is_refused() -> None:
    content = pickle.dumps({b"data": Exploit(), b"labels": []})
    with pytest.raises(ValueError, match=r"refusing to load (posix|os)\.system"):
        parse_cifar_batch(io.BytesIO(content), source="data_batch_1")


@pytest.mark.parametrize(
    ("batch", "pattern"),
    [
        ({b"labels": [1]}, r"KeyError"),
        ({b"data": [[1, 2]], b"labels": [1]}, r"'data' must be a uint8 array"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [1, 2]}, r"uint8"),
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]}, r"data.shape=\(2, 100\)"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, r"labels.shape=\(1,\)"),
        ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0.5]}, r"integers"),
    ],
)
def test_malformed_batches(batch: dict[bytes, object], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        parse_cifar_batch(io.BytesIO(pickle.dumps(batch)), source="b")


def test_not_a_pickle() -> None:
    with pytest.raises(ValueError, match=r"test_batch is not a CIFAR-10 python batch"):
        parse_cifar_batch(io.BytesIO(b"\x00garbage"), source="test_batch")


def write_folder(folder: Path) -> None:
    folder.mkdir(parents=True)
    for i, name in enumerate(BATCHES):
        (folder / name).write_bytes(pickle.dumps(batch_dict(4, 10 * i), protocol=2))


def write_archive(path: Path, extra: dict[str, bytes] | None = None, skip: str = "") -> None:
    with tarfile.open(path, "w:gz") as archive:
        members = {
            f"cifar-10-batches-py/{name}": pickle.dumps(batch_dict(4, 10 * i), protocol=2)
            for i, name in enumerate(BATCHES)
            if name != skip
        }
        members.update(extra or {})
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))


def check_arrays(arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> None:
    x_train, y_train, x_test, y_test = arrays
    assert x_train.shape == (20, 32, 32, 3) and x_test.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(x_train[4:8], reference_nhwc(4, 10))  # data_batch_2
    np.testing.assert_array_equal(x_test, reference_nhwc(4, 50))
    assert y_train[:4].tolist() == [0, 1, 2, 3] and y_test.tolist() == [0, 1, 2, 3]


def test_folder_and_archive_agree(tmp_path: Path) -> None:
    write_folder(tmp_path / "cifar-10-batches-py")
    write_archive(tmp_path / "cifar-10-python.tar.gz")
    check_arrays(read_cifar10_folder(tmp_path / "cifar-10-batches-py"))
    check_arrays(read_cifar10_archive(tmp_path / "cifar-10-python.tar.gz"))


def test_archive_missing_member(tmp_path: Path) -> None:
    write_archive(tmp_path / "a.tar.gz", skip="data_batch_3")
    with pytest.raises(ValueError, match=r"lacks \['cifar-10-batches-py/data_batch_3'\]"):
        read_cifar10_archive(tmp_path / "a.tar.gz")


def test_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "a.tar.gz").write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"not a readable tar archive"):
        read_cifar10_archive(tmp_path / "a.tar.gz")


def test_truncated_archive(tmp_path: Path) -> None:
    write_archive(tmp_path / "a.tar.gz")
    content = (tmp_path / "a.tar.gz").read_bytes()
    (tmp_path / "a.tar.gz").write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match=r"a.tar.gz"):
        read_cifar10_archive(tmp_path / "a.tar.gz")


def test_extract_writes_only_expected_files(tmp_path: Path) -> None:
    evil = {"../escaped": b"x", "cifar-10-batches-py/../../escaped2": b"y", "readme.html": b"z"}
    write_archive(tmp_path / "archive", extra=evil)
    target = extract_cifar10_archive(tmp_path / "archive", tmp_path / "out")
    assert target == tmp_path / "out" / "cifar-10-batches-py"
    assert sorted(p.name for p in target.iterdir()) == sorted(BATCHES)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cifar-10-batches-py"]
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "escaped2").exists()
    check_arrays(read_cifar10_folder(target))
    # Extracting again (e.g. a concurrent loader) keeps the existing folder.
    assert extract_cifar10_archive(tmp_path / "archive", tmp_path / "out") == target
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cifar-10-batches-py"]


def test_failed_extract_leaves_nothing(tmp_path: Path) -> None:
    write_archive(tmp_path / "archive", skip="test_batch")
    with pytest.raises(ValueError, match=r"test_batch"):
        extract_cifar10_archive(tmp_path / "archive", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
