"""Reader for scikit-learn's 8x8 handwritten digits, straight from the file its wheel ships.

Importing scikit-learn costs about a second (SciPy, joblib, ...); the data is one small gzipped
CSV inside the installed package (``sklearn/datasets/data/digits.csv.gz``: 1,797 rows of 64 pixel
values 0..16 and the label). This module finds the installed package without importing it and
reads that file with NumPy.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

__all__ = ["DIGITS_FILE", "digits_file", "read_digits"]

#: The file inside the installed ``sklearn`` package.
DIGITS_FILE = Path("datasets") / "data" / "digits.csv.gz"

_MISSING = (
    "The 'digits' dataset comes from scikit-learn, which is not installed. Install it "
    "with `pip install lottery-tickets[data]` (or `pip install scikit-learn`), or use "
    "another dataset."
)


def digits_file() -> Path:
    """Path of ``digits.csv.gz`` in the installed scikit-learn, found without importing it.

    Raises:
        ImportError: scikit-learn is not installed, or its data file is missing.
    """
    try:
        spec = importlib.util.find_spec("sklearn")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / DIGITS_FILE
        if candidate.is_file():
            return candidate
    if not locations:
        raise ImportError(_MISSING)
    raise ImportError(
        f"scikit-learn is installed at {locations[0]} but its digits data file {DIGITS_FILE} is "
        "missing; reinstall scikit-learn (`pip install --force-reinstall scikit-learn`)."
    )


def read_digits(path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as ``(images (n, 8, 8) float64 in 0..16, labels (n,) int64)``.

    The same arrays as ``sklearn.datasets.load_digits()``'s ``images`` and ``target``.

    Args:
        path: The ``digits.csv.gz`` file (default: the one scikit-learn ships).

    Raises:
        ImportError: scikit-learn is not installed (``path`` not given).
        ValueError: The file is not a digits CSV.

    Example:
        >>> images, labels = read_digits()  # doctest: +SKIP
        >>> images.shape, labels[:5].tolist()  # doctest: +SKIP
        ((1797, 8, 8), [0, 1, 2, 3, 4])
    """
    file = Path(path) if path is not None else digits_file()
    try:
        with gzip.open(file, "rt") as stream:
            table = np.loadtxt(stream, delimiter=",", dtype=np.float64)
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(
            f"{file} is not a readable digits CSV ({error}). Received: path={str(file)!r}"
        ) from error
    if table.ndim != 2 or table.shape[1] != 65:
        raise ValueError(
            f"{file} must hold rows of 64 pixels and a label. Received: shape {table.shape}"
        )
    images = np.ascontiguousarray(table[:, :-1]).reshape(-1, 8, 8)
    return images, table[:, -1].astype(np.int64)
