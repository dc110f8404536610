"""Reader for the CIFAR-10 "python version" batches (``cifar-10-batches-py``).

The batches are Python pickles of ``{b"data": uint8 (n, 3072), b"labels": [int, ...], ...}``,
written by Python 2, hence ``encoding="bytes"``. Unpickling can run arbitrary code, so the
unpickler here only resolves the handful of NumPy globals an array needs and refuses anything
else; still, only read batches from a cache you trust (the loaders only look in the data
directory, the Keras cache and the archive from the official CIFAR URL, checked by SHA-256).

Batches can be read from the extracted folder or straight from the ``.tar.gz`` archive.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "CIFAR10_FOLDER",
    "CIFAR10_TEST_BATCH",
    "CIFAR10_TRAIN_BATCHES",
    "extract_cifar10_archive",
    "parse_cifar_batch",
    "read_cifar10_archive",
    "read_cifar10_folder",
]

#: Folder name inside the official archive (and in the old Keras cache layout).
CIFAR10_FOLDER = "cifar-10-batches-py"
#: Training batch file names, in order.
CIFAR10_TRAIN_BATCHES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
#: Test batch file name.
CIFAR10_TEST_BATCH = "test_batch"

_IMAGE_SHAPE_CHW = (3, 32, 32)
_PIXELS = 3 * 32 * 32


def _numpy_global(module: str, name: str) -> Any:
    # NumPy 2 moved ``numpy.core`` to ``numpy._core``; batches written by NumPy 1 (or by Python 2)
    # name the old module. Resolve either spelling without touching the deprecated alias.
    for candidate in ("numpy._core." + module, "numpy.core." + module):
        try:
            return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"NumPy has no {module}.{name}")  # pragma: no cover


_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: importlib.import_module("_codecs").encode,
}
for _package in ("numpy.core", "numpy._core"):
    _ALLOWED_GLOBALS[(f"{_package}.multiarray", "_reconstruct")] = lambda: _numpy_global(
        "multiarray", "_reconstruct"
    )
    _ALLOWED_GLOBALS[(f"{_package}.numeric", "_frombuffer")] = lambda: _numpy_global(
        "numeric", "_frombuffer"
    )


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild dicts, lists and NumPy arrays, and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        resolve = _ALLOWED_GLOBALS.get((module, name))
        if resolve is None:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name} from a CIFAR batch; the file is not a "
                "CIFAR-10 batch or was tampered with"
            )
        return resolve()


def _lookup(batch: Mapping[Any, Any], key: str) -> Any:
    for candidate in (key.encode("ascii"), key):
        if candidate in batch:
            return batch[candidate]
    raise KeyError(key)


def parse_cifar_batch(
    stream: IO[bytes], *, source: str = "<stream>"
) -> tuple[np.ndarray, np.ndarray]:
    """Decodes one pickled CIFAR-10 batch.

    Args:
        stream: Binary file object positioned at the start of the pickle.
        source: Name used in error messages (usually the file path).

    Returns:
        ``(images, labels)``: ``uint8`` images of shape ``(n, 32, 32, 3)`` (NHWC) and ``int64``
        labels of shape ``(n,)``.

    Raises:
        ValueError: If the content is not a CIFAR-10 batch.

    Example:
        >>> import io, pickle
        >>> import numpy as np
        >>> batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 5]}
        >>> x, y = parse_cifar_batch(io.BytesIO(pickle.dumps(batch)))
        >>> x.shape, y.tolist()
        ((2, 32, 32, 3), [3, 5])
    """
    try:
        batch = _ArrayOnlyUnpickler(stream, encoding="bytes").load()
        data = _lookup(batch, "data")
        labels = np.asarray(_lookup(batch, "labels"))
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(
            f"{source} is not a CIFAR-10 python batch ({type(e).__name__}: {e}); delete it so "
            f"it can be fetched again. Received: path={source!r}"
        ) from e
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise ValueError(
            f"{source}: 'data' must be a uint8 array of shape (n, {_PIXELS}). Received: "
            f"data={type(data).__name__} {getattr(data, 'dtype', '')} "
            f"{getattr(data, 'shape', '')}"
        )
    if data.shape[1] != _PIXELS or labels.shape != (data.shape[0],):
        raise ValueError(
            f"{source}: expected data of shape (n, {_PIXELS}) and n labels. Received: "
            f"data.shape={data.shape}, labels.shape={labels.shape}"
        )
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{source}: labels must be integers. Received: dtype={labels.dtype}")
    images = data.reshape((-1, *_IMAGE_SHAPE_CHW)).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def _concatenate(
    parts: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def read_cifar10_folder(
    folder: str | os.PathLike[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reads an extracted ``cifar-10-batches-py`` folder.

    Args:
        folder: Folder holding ``data_batch_1`` ... ``data_batch_5`` and ``test_batch``.

    Returns:
        ``(x_train, y_train, x_test, y_test)`` with ``uint8`` NHWC images and ``int64`` labels.

    Raises:
        FileNotFoundError: If a batch file is missing.
        ValueError: If a batch is not a CIFAR-10 batch.
    """
    root = Path(folder)
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH):
        with open(root / name, "rb") as stream:
            parts[name] = parse_cifar_batch(stream, source=str(root / name))
    x_train, y_train = _concatenate([parts[name] for name in CIFAR10_TRAIN_BATCHES])
    x_test, y_test = parts[CIFAR10_TEST_BATCH]
    return x_train, y_train, x_test, y_test


def _archive_members(archive: tarfile.TarFile, source: str) -> dict[str, tarfile.TarInfo]:
    wanted = {f"{CIFAR10_FOLDER}/{name}" for name in (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)}
    members = {
        info.name.removeprefix("./"): info
        for info in archive.getmembers()
        if info.isfile() and info.name.removeprefix("./") in wanted
    }
    missing = sorted(wanted - members.keys())
    if missing:
        raise ValueError(
            f"{source} is not the CIFAR-10 python archive: it lacks {missing}. Received: "
            f"path={source!r}"
        )
    return members


def _open_archive(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ValueError(
            f"{path} is not a readable tar archive ({error}); delete it so it can be fetched "
            f"again. Received: path={str(path)!r}"
        ) from error


def read_cifar10_archive(
    path: str | os.PathLike[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reads the batches straight from ``cifar-10-python.tar.gz`` without extracting it.

    Args:
        path: The archive (any name; Keras stores it as ``cifar-10-batches-py.tar.gz`` or
            ``cifar-10-batches-py-target_archive``).

    Returns:
        ``(x_train, y_train, x_test, y_test)`` as for :func:`read_cifar10_folder`.

    Raises:
        ValueError: If the file is not the CIFAR-10 python archive.
    """
    archive_path = Path(path)
    with _open_archive(archive_path) as archive:
        try:
            members = _archive_members(archive, str(archive_path))
            parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            for name in (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH):
                stream = archive.extractfile(members[f"{CIFAR10_FOLDER}/{name}"])
                if stream is None:  # pragma: no cover - isfile() members always extract
                    raise ValueError(f"{archive_path}: cannot read member {name}")
                source = f"{archive_path}:{CIFAR10_FOLDER}/{name}"
                parts[name] = parse_cifar_batch(io.BytesIO(stream.read()), source=source)
        except (tarfile.TarError, OSError, EOFError) as error:
            raise ValueError(
                f"{archive_path} is a damaged archive ({error}); delete it so it can be fetched "
                f"again. Received: path={str(archive_path)!r}"
            ) from error
    x_train, y_train = _concatenate([parts[name] for name in CIFAR10_TRAIN_BATCHES])
    x_test, y_test = parts[CIFAR10_TEST_BATCH]
    return x_train, y_train, x_test, y_test


def extract_cifar10_archive(
    path: str | os.PathLike[str], destination: str | os.PathLike[str]
) -> Path:
    """Extracts the six batch files into ``destination/cifar-10-batches-py``, atomically.

    Only the expected regular files are written (no paths from the archive are trusted), first
    into a temporary folder next to the target that is then renamed, so a crash never leaves a
    half-written folder behind.

    Args:
        path: The CIFAR-10 python archive.
        destination: Parent folder of the extracted ``cifar-10-batches-py`` folder.

    Returns:
        The extracted folder.

    Raises:
        ValueError: If the file is not the CIFAR-10 python archive.
    """
    archive_path = Path(path)
    parent = Path(destination)
    target = parent / CIFAR10_FOLDER
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{CIFAR10_FOLDER}.", dir=parent))
    try:
        with _open_archive(archive_path) as archive:
            members = _archive_members(archive, str(archive_path))
            for name in (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH):
                stream = archive.extractfile(members[f"{CIFAR10_FOLDER}/{name}"])
                if stream is None:  # pragma: no cover - isfile() members always extract
                    raise ValueError(f"{archive_path}: cannot read member {name}")
                with open(staging / name, "wb") as out:
                    shutil.copyfileobj(stream, out)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # another process may have won the race
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
