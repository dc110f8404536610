"""Per-dataset file layouts (Keras cache, Debian), download sources, and lookup.

Every file-backed dataset is described by a :class:`FileSource`: where its files may lie in a
search root (same layout as ``~/.keras/datasets``), where system packages put them, which URLs
Keras downloads them from, and how to read them. :func:`locate` walks the roots in order and
returns the first complete copy; :func:`fetch` downloads into a root in the Keras layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ltp_core.datasets import locations
from ltp_core.datasets.cifar import (
    CIFAR10_FOLDER,
    CIFAR10_TEST_BATCH,
    CIFAR10_TRAIN_BATCHES,
    extract_cifar10_archive,
    read_cifar10_archive,
    read_cifar10_folder,
)
from ltp_core.datasets.download import download_file
from ltp_core.datasets.idx import read_idx
from ltp_core.datasets.locations import SearchRoot
from ltp_core.datasets.npz import read_mnist_npz

__all__ = [
    "SOURCES",
    "Candidate",
    "FileSource",
    "RawArrays",
    "RemoteFile",
    "all_candidates",
    "fetch",
    "locate",
]

#: ``(x_train, y_train, x_test, y_test)`` as stored in the files.
RawArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

_KERAS_BASE_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
_IDX_FILES: tuple[str, str, str, str] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# Keras 3 downloads the CIFAR archive under this name and extracts it next to it.
_CIFAR_KERAS3_DIR = "cifar-10-batches-py-target"
_CIFAR_KERAS3_ARCHIVE = "cifar-10-batches-py-target_archive"
_CIFAR_BATCHES: tuple[str, ...] = (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)


@dataclass(frozen=True)
class Candidate:
    """One place where a complete copy of a dataset may lie.

    Attributes:
        path: The file or folder.
        where: Human description for messages, e.g. ``"Keras cache"``.
        required: Files that must exist (for folders: all of them).
        read: Reads the arrays; only called when :meth:`missing` is empty.
    """

    path: Path
    where: str
    required: tuple[Path, ...]
    read: Callable[[], RawArrays]

    def missing(self) -> list[Path]:
        """The required files that do not exist."""
        return [path for path in self.required if not path.is_file()]

    def partial(self) -> bool:
        """Whether some but not all required files exist (worth mentioning in errors)."""
        return 0 < len(self.missing()) < len(self.required)


@dataclass(frozen=True)
class RemoteFile:
    """A file Keras downloads, and where it goes relative to a search root.

    Attributes:
        url: Source URL.
        relative_path: Destination inside the root (Keras cache layout).
        sha256: Expected digest, when Keras pins one.
    """

    url: str
    relative_path: str
    sha256: str | None = None


@dataclass(frozen=True)
class FileSource:
    """How one dataset is stored, found and downloaded.

    Attributes:
        name: Dataset name.
        candidates: Places inside a search root, in order of preference.
        system_candidates: Places outside the roots (system packages), searched after them.
        remote_files: What to download into a root when nothing was found.
        after_download: Step run on the root after downloading (e.g. extract an archive).
        manual_files: Relative paths to mention when telling users where to put files.
        system_hint: Extra advice for offline users (e.g. a Debian package), or ``""``.
    """

    name: str
    candidates: Callable[[SearchRoot], list[Candidate]]
    system_candidates: Callable[[], list[Candidate]]
    remote_files: tuple[RemoteFile, ...]
    after_download: Callable[[Path], None] | None
    manual_files: tuple[str, ...]
    system_hint: str = ""


def _no_system_candidates() -> list[Candidate]:
    return []


# --- MNIST: one npz file ---------------------------------------------------------------------


def _mnist_candidates(root: SearchRoot) -> list[Candidate]:
    path = root.path / "mnist.npz"
    return [Candidate(path, root.origin, (path,), lambda: read_mnist_npz(path))]


# --- Fashion-MNIST: four IDX files, gzip-compressed or not ------------------------------------


def _idx_file(folder: Path, stem: str) -> Path:
    compressed = folder / f"{stem}.gz"
    return compressed if compressed.is_file() or not (folder / stem).is_file() else folder / stem


def _read_idx_folder(folder: Path) -> RawArrays:
    images_train, labels_train, images_test, labels_test = (
        read_idx(_idx_file(folder, stem)) for stem in _IDX_FILES
    )
    return images_train, labels_train, images_test, labels_test


def _idx_folder_candidate(folder: Path, where: str) -> Candidate:
    return Candidate(
        path=folder,
        where=where,
        required=tuple(_idx_file(folder, stem) for stem in _IDX_FILES),
        read=lambda: _read_idx_folder(folder),
    )


def _fashion_candidates(root: SearchRoot) -> list[Candidate]:
    return [_idx_folder_candidate(root.path / "fashion-mnist", root.origin)]


def _fashion_system_candidates() -> list[Candidate]:
    folder = locations.DEBIAN_DATASETS_DIR / "fashion-mnist"
    return [_idx_folder_candidate(folder, "Debian package dataset-fashion-mnist")]


# --- CIFAR-10: extracted batches or the tar.gz archive ----------------------------------------


def _cifar_folder_candidate(folder: Path, where: str) -> Candidate:
    return Candidate(
        path=folder,
        where=where,
        required=tuple(folder / name for name in _CIFAR_BATCHES),
        read=lambda: read_cifar10_folder(folder),
    )


def _cifar_archive_candidate(archive: Path, where: str) -> Candidate:
    return Candidate(archive, where, (archive,), lambda: read_cifar10_archive(archive))


def _cifar_candidates(root: SearchRoot) -> list[Candidate]:
    base = root.path
    return [
        _cifar_folder_candidate(base / CIFAR10_FOLDER, root.origin),
        _cifar_folder_candidate(base / _CIFAR_KERAS3_DIR / CIFAR10_FOLDER, root.origin),
        _cifar_archive_candidate(base / f"{CIFAR10_FOLDER}.tar.gz", root.origin),
        _cifar_archive_candidate(base / _CIFAR_KERAS3_ARCHIVE, root.origin),
        _cifar_archive_candidate(base / "cifar-10-python.tar.gz", root.origin),
    ]


def _extract_cifar(root: Path) -> None:
    extract_cifar10_archive(root / _CIFAR_KERAS3_ARCHIVE, root / _CIFAR_KERAS3_DIR)


#: File-backed datasets by name.
SOURCES: dict[str, FileSource] = {
    "mnist": FileSource(
        name="mnist",
        candidates=_mnist_candidates,
        system_candidates=_no_system_candidates,
        remote_files=(
            RemoteFile(
                url=_KERAS_BASE_URL + "mnist.npz",
                relative_path="mnist.npz",
                sha256="731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
            ),
        ),
        after_download=None,
        manual_files=("mnist.npz",),
    ),
    "fashion_mnist": FileSource(
        name="fashion_mnist",
        candidates=_fashion_candidates,
        system_candidates=_fashion_system_candidates,
        remote_files=tuple(
            RemoteFile(_KERAS_BASE_URL + f"{stem}.gz", f"fashion-mnist/{stem}.gz")
            for stem in _IDX_FILES
        ),
        after_download=None,
        manual_files=tuple(f"fashion-mnist/{stem}.gz" for stem in _IDX_FILES),
        system_hint="or install the Debian package: apt-get install dataset-fashion-mnist",
    ),
    "cifar10": FileSource(
        name="cifar10",
        candidates=_cifar_candidates,
        system_candidates=_no_system_candidates,
        remote_files=(
            RemoteFile(
                url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                relative_path=_CIFAR_KERAS3_ARCHIVE,
                sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
            ),
        ),
        after_download=_extract_cifar,
        manual_files=(
            "cifar-10-python.tar.gz (as downloaded), or the extracted folder "
            f"{CIFAR10_FOLDER}/ with {', '.join(_CIFAR_BATCHES)}",
        ),
    ),
}


def all_candidates(source: FileSource, roots: list[SearchRoot]) -> list[Candidate]:
    """Every place searched for ``source``, in lookup order (roots, then system folders)."""
    found = [candidate for root in roots for candidate in source.candidates(root)]
    return found + source.system_candidates()


def locate(source: FileSource, roots: list[SearchRoot]) -> Candidate | None:
    """The first complete copy of the dataset, or ``None``.

    Args:
        source: The dataset's description.
        roots: Search roots, in order (see :func:`ltp_core.datasets.locations.search_roots`).

    Returns:
        The first candidate whose files all exist.
    """
    for candidate in all_candidates(source, roots):
        if not candidate.missing():
            return candidate
    return None


def fetch(source: FileSource, root: Path, *, timeout: float = 60.0) -> None:
    """Downloads the dataset's files into ``root`` in the Keras cache layout.

    Files already present are not downloaded again.

    Args:
        source: The dataset's description.
        root: Destination root (the first search root).
        timeout: Socket timeout in seconds per file.

    Raises:
        urllib.error.URLError: If a file cannot be fetched.
        ChecksumError: If a file does not match Keras' pinned SHA-256.
        OSError: If ``root`` is not writable.
    """
    for remote in source.remote_files:
        destination = root / remote.relative_path
        if not destination.is_file():
            download_file(remote.url, destination, sha256=remote.sha256, timeout=timeout)
    if source.after_download is not None:
        source.after_download(root)
