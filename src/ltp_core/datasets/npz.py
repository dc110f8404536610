"""Reader for Keras' ``mnist.npz`` (keys ``x_train``, ``y_train``, ``x_test``, ``y_test``)."""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

__all__ = ["NPZ_KEYS", "read_mnist_npz"]

#: Arrays stored in Keras' ``mnist.npz``, in the order they are returned.
NPZ_KEYS: tuple[str, str, str, str] = ("x_train", "y_train", "x_test", "y_test")


def read_mnist_npz(
    path: str | os.PathLike[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reads a Keras-style ``mnist.npz`` without allowing pickled objects.

    Args:
        path: Path of the ``.npz`` file.

    Returns:
        ``(x_train, y_train, x_test, y_test)`` exactly as stored.

    Raises:
        ValueError: If the file is not a readable ``.npz`` archive or lacks one of the keys.

    Example:
        >>> import pathlib, tempfile
        >>> import numpy as np
        >>> file = pathlib.Path(tempfile.mkdtemp()) / "mnist.npz"
        >>> x, y = np.zeros((2, 28, 28), np.uint8), np.array([1, 7], np.uint8)
        >>> np.savez(file, x_train=x, y_train=y, x_test=x, y_test=y)
        >>> [a.shape for a in read_mnist_npz(file)]
        [(2, 28, 28), (2,), (2, 28, 28), (2,)]
    """
    file_path = Path(path)
    try:
        loaded = np.load(file_path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        raise ValueError(
            f"{file_path} is not a readable .npz archive ({error}); delete it so it can be "
            f"fetched again. Received: path={str(file_path)!r}"
        ) from error
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(
            f"{file_path} holds a single array, not an .npz archive with {list(NPZ_KEYS)}. "
            f"Received: path={str(file_path)!r}"
        )
    with loaded as archive:
        missing = [key for key in NPZ_KEYS if key not in archive.files]
        if missing:
            raise ValueError(
                f"{file_path} lacks the arrays {missing}; a Keras mnist.npz holds "
                f"{list(NPZ_KEYS)}. Received: keys={sorted(archive.files)}"
            )
        try:
            x_train, y_train, x_test, y_test = (archive[key] for key in NPZ_KEYS)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as error:
            raise ValueError(
                f"{file_path} is damaged ({error}); delete it so it can be fetched again. "
                f"Received: path={str(file_path)!r}"
            ) from error
    return x_train, y_train, x_test, y_test
