"""The user's own data: an ``.npz`` file in the Keras ``mnist.npz`` layout.

The file holds ``x_train``, ``y_train``, ``x_test`` and ``y_test``. Features are images
``(n, height, width)`` or ``(n, height, width, channels)`` (NHWC), or flat ``(n, features)``;
``uint8`` values are scaled from 0..255 to ``[0, 1]``, other numbers are used as stored (as
``float32``). Labels are any integers (integral floats too, up to ``2**53``): they are mapped
to class indices ``0 .. k-1`` in sorted order, and the original values become the class names;
every test label must occur in ``y_train``. Arrays are checked by their ``.npy`` header (no
Python objects, no more data declared than stored) before they are read.
"""

from __future__ import annotations

import hashlib
import math
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ltp_core.datasets.npz import NPZ_KEYS

__all__ = ["DEFAULT_VALIDATION_FRACTION", "file_sha256", "is_data_file", "read_user_npz"]

#: Share of the training data held out for early stopping when none is given.
DEFAULT_VALIDATION_FRACTION = 0.1


def is_data_file(name: str) -> bool:
    """Whether a ``--dataset`` value names a file rather than a built-in dataset.

    Example:
        >>> is_data_file("digits"), is_data_file("data/my_set.npz")
        (False, True)
    """
    return name.lower().endswith(".npz") or os.sep in name or "/" in name


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_member_header(archive: np.lib.npyio.NpzFile, key: str, origin: str) -> None:
    """Refuse an array by its ``.npy`` header, before anything is allocated for it.

    A header declaring more bytes than its archive member holds (a truncated or crafted file)
    would otherwise make NumPy try to allocate the declared size; Python objects are refused
    (files are read with ``allow_pickle=False``, which stays off).
    """
    member = key if key.endswith(".npy") else f"{key}.npy"
    names = archive.zip.namelist() if archive.zip is not None else []
    if member not in names:
        return  # NumPy reads it (or reports it) itself
    with archive.zip.open(member) as stream:  # type: ignore[union-attr]
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        header = stream.tell()
    if dtype.hasobject:
        raise ValueError(
            f"{origin}: `{key}` holds Python objects (dtype {dtype}), which are not read "
            "(allow_pickle stays off for safety). Save numeric arrays, e.g. "
            f"np.asarray({key}, dtype=np.float32). Received: {key} of dtype {dtype}"
        )
    stored = archive.zip.getinfo(member).file_size - header  # type: ignore[union-attr]
    declared = math.prod(shape) * dtype.itemsize
    if declared > stored:
        raise ValueError(
            f"{origin}: `{key}` declares shape {tuple(shape)} of {dtype} ({declared} bytes) "
            f"but its archive member holds {stored} bytes: the file is truncated or damaged. "
            f"Received: {key}.shape={tuple(shape)}"
        )


def _labels(values: np.ndarray, name: str, origin: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(
            f"{origin}: `{name}` must be one label per example, shape (n,). "
            f"Received: {name}.shape={array.shape}"
        )
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    if array.dtype.kind == "b":
        return array.astype(np.int64)
    if array.dtype.kind == "f":
        # Beyond 2**53 a float is not an exact integer any more (and casts wrap past 2**63).
        bad = np.flatnonzero(
            ~np.isfinite(array) | (array != np.round(array)) | (np.abs(array) > 2.0**53)
        )
        if bad.size == 0:
            return array.astype(np.int64)
        raise ValueError(
            f"{origin}: `{name}` must hold integer class labels. "
            f"Received: {name}[{int(bad[0])}]={array[bad[0]]!r}"
        )
    raise ValueError(
        f"{origin}: `{name}` must hold integer class labels. Received: dtype {array.dtype}"
    )


def _features(values: np.ndarray, name: str, origin: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind not in "iufb" or array.ndim not in (2, 3, 4):
        raise ValueError(
            f"{origin}: `{name}` must be numbers shaped (n, features), (n, height, width) or "
            f"(n, height, width, channels). Received: {name}.shape={array.shape}, "
            f"dtype {array.dtype}"
        )
    if array.ndim == 3:
        array = array[..., np.newaxis]
    scaled = array.astype(np.float32)
    if array.dtype == np.uint8:
        scaled /= np.float32(255.0)
    elif not np.isfinite(scaled).all():
        raise ValueError(f"{origin}: `{name}` holds NaN or infinite values")
    return scaled


def read_user_npz(
    path: str | os.PathLike[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read and check a user's data file.

    Args:
        path: The ``.npz`` file.

    Returns:
        ``(x_train, y_train, x_test, y_test, class_names)``: ``float32`` features, ``int64``
        class indices, and the original label of each class index.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not an ``.npz`` archive, a missing array, mismatched lengths, features of
            different shapes, non-integer labels, or fewer than two classes.

    Example:
        >>> import pathlib, tempfile
        >>> file = pathlib.Path(tempfile.mkdtemp()) / "data.npz"
        >>> x = np.arange(12, dtype=np.uint8).reshape(4, 3)
        >>> np.savez(file, x_train=x, y_train=np.array([3, 7, 3, 7]), x_test=x[:2],
        ...          y_test=np.array([7, 3]))
        >>> x_train, y_train, x_test, y_test, names = read_user_npz(file)
        >>> x_train.shape, y_train.tolist(), names
        ((4, 3), [0, 1, 0, 1], ('3', '7'))
    """
    file = Path(path)
    origin = os.fspath(file)
    if not file.is_file():
        raise FileNotFoundError(f"No data file at {origin!r}")
    try:
        loaded = np.load(file, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        raise ValueError(f"{origin} is not a readable .npz archive ({error})") from error
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(
            f"{origin} holds a single array, not an .npz archive with {list(NPZ_KEYS)}"
        )
    with loaded as archive:
        missing = [key for key in NPZ_KEYS if key not in archive.files]
        if missing:
            raise ValueError(
                f"{origin} lacks the arrays {missing}; a data file holds {list(NPZ_KEYS)} "
                f"(the Keras mnist.npz layout). Received: arrays {sorted(archive.files)}"
            )
        try:
            for key in NPZ_KEYS:
                _check_member_header(archive, key, origin)
            raw = [archive[key] for key in NPZ_KEYS]
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as error:
            if str(error).startswith(origin):
                raise
            raise ValueError(f"{origin} is damaged ({error})") from error
    x_train = _features(raw[0], "x_train", origin)
    x_test = _features(raw[2], "x_test", origin)
    y_train = _labels(raw[1], "y_train", origin)
    y_test = _labels(raw[3], "y_test", origin)
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if len(x) != len(y):
            raise ValueError(
                f"{origin}: x_{split} and y_{split} must have the same length. "
                f"Received: len(x_{split})={len(x)}, len(y_{split})={len(y)}"
            )
    if len(y_train) == 0:
        raise ValueError(f"{origin}: x_train is empty")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"{origin}: x_train and x_test must hold examples of the same shape. "
            f"Received: {x_train.shape[1:]} and {x_test.shape[1:]}"
        )
    classes = np.unique(np.concatenate([y_train, y_test]))
    unseen = np.setdiff1d(np.unique(y_test), np.unique(y_train))
    if unseen.size:
        raise ValueError(
            f"{origin}: `y_test` holds labels that never occur in `y_train`, so no model can "
            "learn them and test accuracy would count them as errors. Remove those examples "
            f"or add training examples of them. Received: y_test labels {unseen[:10].tolist()}"
        )
    if len(classes) < 2:
        raise ValueError(
            f"{origin}: the labels must name at least two classes. Received: {classes.tolist()}"
        )
    return (
        x_train,
        np.searchsorted(classes, y_train).astype(np.int64),
        x_test,
        np.searchsorted(classes, y_test).astype(np.int64),
        tuple(str(int(c)) for c in classes),
    )
