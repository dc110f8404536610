"""NumPy loaders for the image datasets used by the experiments.

``load_dataset(name)`` returns a :class:`Dataset` with training, validation and test splits:
``float32`` images scaled to ``[0, 1]`` in NHWC layout ``(n, height, width, channels)`` and
``int64`` labels ``(n,)``. The validation split is held out of the training data (never the
test set), stratified by class and chosen by ``seed``.

Datasets (:data:`DATASETS`):

- ``digits``: scikit-learn's 8x8 handwritten digits (1,797 images, shipped inside the
  scikit-learn wheel, so it works offline). A fixed, stratified 20% becomes the test set.
- ``mnist``: Keras' ``mnist.npz`` (60,000 + 10,000 images, 28x28x1).
- ``fashion_mnist``: the four Fashion-MNIST IDX files (60,000 + 10,000 images, 28x28x1).
- ``cifar10``: the CIFAR-10 python batches (50,000 + 10,000 images, 32x32x3).

Files are looked up in the ``data_dir`` argument (else ``$LTP_DATA_DIR``), then the Keras cache
(``$KERAS_HOME/datasets``, default ``~/.keras/datasets``) with Keras' own file names, then
``/usr/share/datasets`` (Debian's ``dataset-fashion-mnist``), and otherwise downloaded from the
URLs Keras uses into the first of those folders. See ``docs/datasets.md``.

This package imports NumPy only: ``digits`` is read from the data file scikit-learn ships,
without importing scikit-learn. One module per job:

- :mod:`~ltp_core.datasets.idx`: IDX reader (MNIST / Fashion-MNIST files, gzip or plain).
- :mod:`~ltp_core.datasets.npz`: Keras' ``mnist.npz`` reader.
- :mod:`~ltp_core.datasets.digits`: scikit-learn's digits file, read without scikit-learn.
- :mod:`~ltp_core.datasets.cifar`: CIFAR-10 python batches (folder or ``.tar.gz``), restricted
  unpickling.
- :mod:`~ltp_core.datasets.locations`: search roots (data directory, Keras cache).
- :mod:`~ltp_core.datasets.sources`: per-dataset layouts, URLs and lookup.
- :mod:`~ltp_core.datasets.download`: atomic, checksummed downloads.
- :mod:`~ltp_core.datasets.split`: seeded stratified hold-out splits.
"""

from __future__ import annotations

import http.client
import logging
import numbers
import os
import urllib.error
from dataclasses import dataclass

import numpy as np

from ltp_core.datasets import locations, sources
from ltp_core.datasets.digits import read_digits
from ltp_core.datasets.split import check_fraction, stratified_split
from ltp_core.datasets.user_file import (
    DEFAULT_VALIDATION_FRACTION,
    file_sha256,
    is_data_file,
    read_user_npz,
)

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetInfo",
    "DatasetNotFoundError",
    "dataset_info",
    "is_data_file",
    "load_data_file",
    "load_dataset",
]

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset.

    Attributes:
        name: Canonical name.
        image_shape: Shape of one image, ``(height, width, channels)``.
        num_classes: Number of classes; labels are ``0 .. num_classes - 1``.
        class_names: Name of each class, indexed by label.
        default_validation_fraction: Share of the training data held out for validation when
            ``validation_fraction`` is not given (5,000 examples for the large datasets, as in
            Frankle & Carbin 2019).
        pixel_max: Value mapped to 1.0 when scaling images.
    """

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...]
    default_validation_fraction: float
    pixel_max: float


_DIGIT_NAMES = tuple(str(i) for i in range(10))

_INFO: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", (8, 8, 1), 10, _DIGIT_NAMES, 0.2, 16.0),
    "mnist": DatasetInfo("mnist", (28, 28, 1), 10, _DIGIT_NAMES, 5000 / 60000, 255.0),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist",
        (28, 28, 1),
        10,
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        5000 / 60000,
        255.0,
    ),
    "cifar10": DatasetInfo(
        "cifar10",
        (32, 32, 3),
        10,
        (
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ),
        5000 / 50000,
        255.0,
    ),
}

#: Names accepted by :func:`load_dataset`.
DATASETS: tuple[str, ...] = tuple(_INFO)

# digits has no official test split: this fixed share and seed define one, independent of the
# ``seed`` argument, so test accuracy is comparable across seeds.
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_TEST_SEED = 0


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not on this machine and could not be downloaded."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train / validation / test splits of an image classification dataset.

    Images are ``float32`` in ``[0, 1]`` with shape ``(n, height, width, channels)`` (NHWC,
    Keras' default ``channels_last``; PyTorch models transpose or flatten as they need). Labels
    are ``int64`` class indices of shape ``(n,)``.

    Attributes:
        name: Canonical dataset name.
        x_train: Training images (the training data minus the validation split).
        y_train: Training labels.
        x_val: Validation images, held out of the training data.
        y_val: Validation labels.
        x_test: Test images.
        y_test: Test labels.
        num_classes: Number of classes.
        class_names: Name of each class, indexed by label.
        source: Where the data came from (a path, or ``"scikit-learn"``).
        sha256: SHA-256 of the user's data file (:func:`load_data_file`), else ``None``.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]
    source: str
    sha256: str | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example: ``(height, width, channels)``, or ``(features,)`` for flat data."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={len(self.y_train)}, val={len(self.y_val)}, "
            f"test={len(self.y_test)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, source={self.source!r})"
        )


def _canonical_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(
            f"`name` must be a string, one of {list(DATASETS)}. "
            f"Received: name={name!r} of type {type(name).__name__}"
        )
    canonical = name.strip().lower().replace("-", "_")
    if canonical not in _INFO:
        raise ValueError(
            f"Unknown dataset; valid names are {list(DATASETS)}. Received: name={name!r}"
        )
    return canonical


def dataset_info(name: str) -> DatasetInfo:
    """Static facts (shape, classes, default validation share) about a dataset.

    Args:
        name: One of :data:`DATASETS` (``"fashion-mnist"`` is accepted too).

    Returns:
        The dataset's :class:`DatasetInfo`; nothing is loaded.

    Raises:
        ValueError: If the name is unknown.

    Example:
        >>> dataset_info("cifar10").image_shape
        (32, 32, 3)
    """
    return _INFO[_canonical_name(name)]


def _check_seed(seed: object) -> int:
    if seed is None:
        return 0
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or int(seed) < 0:
        raise ValueError(f"`seed` must be a non-negative integer or None. Received: seed={seed!r}")
    return int(seed)


def _load_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    images, labels = read_digits()
    train, test = stratified_split(labels, _DIGITS_TEST_FRACTION, seed=_DIGITS_TEST_SEED)
    return images[train], labels[train], images[test], labels[test]


def _not_found_message(
    name: str,
    source: sources.FileSource,
    roots: list[locations.SearchRoot],
    reason: str,
) -> str:
    searched = sources.all_candidates(source, roots)
    lines = [f"Could not find the {name!r} dataset on this machine, and {reason}.", "Looked in:"]
    for candidate in searched:
        line = f"  {candidate.path} ({candidate.where})"
        if candidate.partial():
            missing = ", ".join(path.name for path in candidate.missing())
            line += f": incomplete, missing {missing}"
        lines.append(line)
    target = roots[0].path
    lines.append(f"To use it offline, put these files into {target}{os.sep}:")
    lines.extend(f"  {relative}" for relative in source.manual_files)
    urls = ", ".join(remote.url for remote in source.remote_files)
    lines.append(f"(downloadable from {urls})")
    lines.append(
        f"or pass data_dir= (--data-dir) / set {locations.DATA_DIR_ENV} to a folder laid out "
        "the same way."
    )
    if source.system_hint:
        lines.append(source.system_hint)
    return "\n".join(lines)


def _load_files(
    name: str, data_dir: str | os.PathLike[str] | None, download: bool
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], str]:
    source = sources.SOURCES[name]
    roots = locations.search_roots(data_dir)
    candidate = sources.locate(source, roots)
    if candidate is None:
        if not download:
            raise DatasetNotFoundError(
                _not_found_message(name, source, roots, "downloading is off (download=False)")
            )
        try:
            sources.fetch(source, roots[0].path)
        except (
            urllib.error.URLError,
            http.client.HTTPException,
            ConnectionError,
            TimeoutError,
        ) as e:
            reason = f"downloading it failed ({type(e).__name__}: {e})"
            raise DatasetNotFoundError(_not_found_message(name, source, roots, reason)) from e
        except OSError as error:
            reason = f"it could not be saved to {roots[0].path} ({error})"
            raise DatasetNotFoundError(_not_found_message(name, source, roots, reason)) from error
        candidate = sources.locate(source, roots)
        if candidate is None:  # pragma: no cover - fetch writes exactly what locate expects
            raise DatasetNotFoundError(
                _not_found_message(name, source, roots, "the download was incomplete")
            )
    _LOG.info("Loading %s from %s", name, candidate.path)
    return candidate.read(), str(candidate.path)


def _check_arrays(
    info: DatasetInfo,
    images: np.ndarray,
    labels: np.ndarray,
    split: str,
    origin: str,
) -> tuple[np.ndarray, np.ndarray]:
    height, width, channels = info.image_shape
    if images.ndim == 3 and channels == 1:
        images = images[..., np.newaxis]
    if images.shape[1:] != info.image_shape or labels.shape != (images.shape[0],):
        raise ValueError(
            f"{origin}: the {split} split should hold images of shape (n, {height}, {width}"
            f"{', 1' if channels == 1 else f', {channels}'}) and n labels. Received: "
            f"images.shape={images.shape}, labels.shape={labels.shape}"
        )
    if info.pixel_max == 255.0 and images.dtype != np.uint8:
        raise ValueError(
            f"{origin}: {split} images must be stored as uint8 (0..255). Received: "
            f"dtype={images.dtype}"
        )
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{origin}: {split} labels must be integers. Received: {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= info.num_classes):
        raise ValueError(
            f"{origin}: {split} labels must be in [0, {info.num_classes}). Received: "
            f"min={labels.min()}, max={labels.max()}"
        )
    return images, labels.astype(np.int64)


def _scale(images: np.ndarray, pixel_max: float) -> np.ndarray:
    scaled = images.astype(np.float32)
    scaled /= np.float32(pixel_max)
    return scaled


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    validation_fraction: float | None = None,
    seed: int | None = 0,
) -> Dataset:
    """Loads a dataset as NumPy arrays with a seeded validation split.

    Args:
        name: One of :data:`DATASETS`: ``"digits"``, ``"mnist"``, ``"fashion_mnist"``
            (``"fashion-mnist"`` works too) or ``"cifar10"``; or the path of the user's ``.npz``
            file (see :func:`load_data_file`).
        data_dir: Folder searched first, laid out like ``~/.keras/datasets``; defaults to
            ``$LTP_DATA_DIR``. Downloads go there too (else into the Keras cache).
        download: Whether to download missing files from the URLs Keras uses.
        validation_fraction: Share of the training data held out for validation, in ``[0, 1)``;
            ``None`` uses the dataset's default (5,000 examples for MNIST, Fashion-MNIST and
            CIFAR-10 as in Frankle & Carbin; 20% for digits).
        seed: Seed for the stratified validation split (``None`` means 0).

    Returns:
        The :class:`Dataset`.

    Raises:
        ValueError: For an unknown name, a ``validation_fraction`` outside ``[0, 1)``, a bad
            ``seed``, or a corrupt file (the message names the file).
        DatasetNotFoundError: If the files are missing and cannot be downloaded; the message
            says which files to put where.
        ImportError: For ``digits`` without scikit-learn.

    Example:
        >>> data = load_dataset("digits", seed=0)
        >>> data.x_train.shape[1:], data.x_train.dtype, data.y_train.dtype
        ((8, 8, 1), dtype('float32'), dtype('int64'))
        >>> len(data.y_train) + len(data.y_val) + len(data.y_test)
        1797
    """
    if isinstance(name, (str, os.PathLike)) and is_data_file(os.fspath(name)):
        return load_data_file(name, validation_fraction=validation_fraction, seed=seed)
    canonical = _canonical_name(name)
    info = _INFO[canonical]
    fraction = check_fraction(
        info.default_validation_fraction if validation_fraction is None else validation_fraction,
        "validation_fraction",
    )
    split_seed = _check_seed(seed)
    if not isinstance(download, bool):
        raise TypeError(f"`download` must be True or False. Received: download={download!r}")

    if canonical == "digits":
        raw = _load_digits()
        origin = "scikit-learn"
    else:
        raw, origin = _load_files(canonical, data_dir, download)
    x_train_all, y_train_all = _check_arrays(info, raw[0], raw[1], "training", origin)
    x_test, y_test = _check_arrays(info, raw[2], raw[3], "test", origin)

    train_index, val_index = stratified_split(y_train_all, fraction, seed=split_seed)
    return Dataset(
        name=canonical,
        x_train=_scale(x_train_all[train_index], info.pixel_max),
        y_train=y_train_all[train_index],
        x_val=_scale(x_train_all[val_index], info.pixel_max),
        y_val=y_train_all[val_index],
        x_test=_scale(x_test, info.pixel_max),
        y_test=y_test,
        num_classes=info.num_classes,
        class_names=info.class_names,
        source=origin,
    )


def load_data_file(
    path: str | os.PathLike[str],
    *,
    validation_fraction: float | None = None,
    seed: int | None = 0,
) -> Dataset:
    """Load the user's ``.npz`` file (``x_train``, ``y_train``, ``x_test``, ``y_test``).

    Images ``(n, h, w)`` or ``(n, h, w, c)`` or flat features ``(n, d)``; ``uint8`` is scaled to
    ``[0, 1]``, other numbers are used as stored. Any integer labels are mapped to class indices
    in sorted order (the original values become ``class_names``). A stratified
    ``validation_fraction`` (default 10%) of the training data is held out for early stopping.

    Args:
        path: The ``.npz`` file.
        validation_fraction: Share of the training data held out, in ``[0, 1)``.
        seed: Seed of the validation split.

    Returns:
        The :class:`Dataset`; ``source`` is the path and ``sha256`` the file's hash.

    Raises:
        FileNotFoundError: No such file.
        ValueError: A malformed file (see :func:`ltp_core.datasets.user_file.read_user_npz`).

    Example:
        >>> import pathlib, tempfile
        >>> file = pathlib.Path(tempfile.mkdtemp()) / "data.npz"
        >>> rng = np.random.default_rng(0)
        >>> x, y = rng.random((50, 6)), rng.integers(1, 4, 50)
        >>> np.savez(file, x_train=x, y_train=y, x_test=x[:10], y_test=y[:10])
        >>> data = load_data_file(file)
        >>> data.input_shape, data.num_classes, len(data.y_train), len(data.y_val)
        ((6,), 3, 45, 5)
    """
    fraction = check_fraction(
        DEFAULT_VALIDATION_FRACTION if validation_fraction is None else validation_fraction,
        "validation_fraction",
    )
    split_seed = _check_seed(seed)
    x_train_all, y_train_all, x_test, y_test, names = read_user_npz(path)
    train_index, val_index = stratified_split(y_train_all, fraction, seed=split_seed)
    file = os.fspath(path)
    return Dataset(
        name=os.path.basename(file),
        x_train=x_train_all[train_index],
        y_train=y_train_all[train_index],
        x_val=x_train_all[val_index],
        y_val=y_train_all[val_index],
        x_test=x_test,
        y_test=y_test,
        num_classes=len(names),
        class_names=names,
        source=file,
        sha256=file_sha256(file),
    )
