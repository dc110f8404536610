"""Tests of ltp_core.datasets.load_dataset on small files written in each real layout."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import os
import pickle
import subprocess
import sys
import tarfile
import textwrap
import urllib.error
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ltp_core import datasets
from ltp_core.datasets import (
    DATASETS,
    DatasetNotFoundError,
    dataset_info,
    download,
    load_dataset,
    locations,
    sources,
)
from ltp_core.datasets.digits import read_digits
from ltp_core.datasets.download import ChecksumError

N_TRAIN, N_TEST = 60, 20
IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR_BATCHES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")


# --- writers for the real layouts --------------------------------------------------------------


def synthetic(n: int, shape: tuple[int, ...], marker: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images whose first pixel is ``marker`` and balanced labels 0..9."""
    rng = np.random.default_rng(n + marker)
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    images.reshape(n, -1)[:, 0] = marker
    labels = (np.arange(n) % 10).astype(np.uint8)
    return images, labels


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_idx_folder(folder: Path, marker: int, *, compress: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    x_train, y_train = synthetic(N_TRAIN, (28, 28), marker)
    x_test, y_test = synthetic(N_TEST, (28, 28), marker)
    for stem, array in zip(IDX_STEMS, (x_train, y_train, x_test, y_test), strict=True):
        content = idx_bytes(array)
        if compress:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(content))
        else:
            (folder / stem).write_bytes(content)


def write_mnist_npz(path: Path, marker: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    x_train, y_train = synthetic(N_TRAIN, (28, 28), marker)
    x_test, y_test = synthetic(N_TEST, (28, 28), marker)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def cifar_batch(n: int, first_label: int) -> bytes:
    """A batch whose pixel value encodes the channel (R=10, G=20, B=30) and the row."""
    chw = np.zeros((n, 3, 32, 32), np.uint8)
    chw[:, 0], chw[:, 1], chw[:, 2] = 10, 20, 30
    chw[:, :, 5, :] += 1  # row 5 of every channel
    batch = {
        b"batch_label": b"synthetic",
        b"labels": [(first_label + i) % 10 for i in range(n)],
        b"data": chw.reshape(n, 3072),
        b"filenames": [b"x.png"] * n,
    }
    return pickle.dumps(batch, protocol=2)


def write_cifar_folder(folder: Path, per_batch: int = 10) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(CIFAR_BATCHES):
        (folder / name).write_bytes(cifar_batch(per_batch, i))


def write_cifar_archive(path: Path, per_batch: int = 10) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for i, name in enumerate(CIFAR_BATCHES):
            content = cifar_batch(per_batch, i)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))


def first_pixels(data: datasets.Dataset) -> set[int]:
    return {round(float(v) * 255) for v in data.x_test.reshape(len(data.x_test), -1)[:, 0]}


# --- isolation: no real home, cache, Debian folder or network ----------------------------------


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.delenv(locations.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(locations, "DEBIAN_DATASETS_DIR", tmp_path / "debian")

    real_urlopen = download.urlopen  # type: ignore[attr-defined]

    def local_only(url: str, timeout: float) -> object:
        if not url.startswith("file:"):
            raise urllib.error.URLError("network disabled in tests")
        return real_urlopen(url, timeout=timeout)

    monkeypatch.setattr(download, "urlopen", local_only)
    return home


def keras_cache(home: Path) -> Path:
    return home / ".keras" / "datasets"


# --- digits (real data from scikit-learn) ------------------------------------------------------


def test_digits_real_data_shapes_dtypes_and_scaling() -> None:
    pytest.importorskip("sklearn")
    data = load_dataset("digits")
    assert data.name == "digits" and data.source == "scikit-learn"
    assert data.num_classes == 10 and data.class_names == tuple("0123456789")
    assert data.input_shape == (8, 8, 1)
    for x, y in (
        (data.x_train, data.y_train),
        (data.x_val, data.y_val),
        (data.x_test, data.y_test),
    ):
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape == (len(y), 8, 8, 1)
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert set(np.unique(y)) == set(range(10))
    assert data.x_train.max() == 1.0
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 1797
    assert len(data.y_test) == 359  # floor(0.2 * 1797)
    assert len(data.y_val) == (1797 - 359) // 5  # default validation share 0.2
    assert "train=1151" in repr(data)


def test_digits_is_read_without_importing_scikit_learn() -> None:
    pytest.importorskip("sklearn")
    code = (
        "import sys; from ltp_core.datasets import load_dataset; d = load_dataset('digits'); "
        "print(len(d.y_train) + len(d.y_val) + len(d.y_test), 'sklearn' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["1797", "False"]


def test_digits_file_holds_scikit_learns_arrays() -> None:
    datasets = pytest.importorskip("sklearn.datasets")
    images, labels = read_digits()
    bunch = datasets.load_digits()
    np.testing.assert_array_equal(images, bunch.images)
    np.testing.assert_array_equal(labels, bunch.target)
    assert labels.dtype == np.int64


def test_digits_without_scikit_learn_is_a_clear_import_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ImportError, match=r"pip install lottery-tickets\[data\]"):
        load_dataset("digits")


def test_digits_file_that_is_not_a_digits_csv(tmp_path: Path) -> None:
    bad = tmp_path / "digits.csv.gz"
    bad.write_bytes(gzip.compress(b"1,2,3\n"))
    with pytest.raises(ValueError, match="64 pixels"):
        read_digits(bad)


def test_digits_test_split_is_fixed_and_validation_follows_seed() -> None:
    pytest.importorskip("sklearn")
    a, b, c = (
        load_dataset("digits", seed=0),
        load_dataset("digits", seed=0),
        load_dataset("digits", seed=1),
    )
    np.testing.assert_array_equal(a.x_val, b.x_val)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    np.testing.assert_array_equal(a.x_test, c.x_test)  # test set independent of the seed
    assert not np.array_equal(a.x_val, c.x_val)
    # Stratified: every class gets 28 or 29 of the 287 validation examples.
    assert set(np.bincount(a.y_val, minlength=10)) <= {28, 29}


def test_digits_validation_fraction_zero_gives_empty_split() -> None:
    pytest.importorskip("sklearn")
    data = load_dataset("digits", validation_fraction=0.0)
    assert data.x_val.shape == (0, 8, 8, 1) and data.y_val.shape == (0,)
    assert data.x_val.dtype == np.float32 and data.y_val.dtype == np.int64
    assert len(data.y_train) == 1797 - 359


def test_digits_ignores_files_and_network(isolated: Path) -> None:
    pytest.importorskip("sklearn")
    assert load_dataset("digits", data_dir=isolated / "nowhere", download=False).x_train.size


# --- file-backed datasets: layouts -------------------------------------------------------------


def test_mnist_from_keras_cache(isolated: Path) -> None:
    write_mnist_npz(keras_cache(isolated) / "mnist.npz", marker=7)
    data = load_dataset("mnist", validation_fraction=0.25, seed=3)
    assert data.source == str(keras_cache(isolated) / "mnist.npz")
    assert data.x_train.shape == (45, 28, 28, 1) and data.x_val.shape == (15, 28, 28, 1)
    assert data.x_test.shape == (N_TEST, 28, 28, 1)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.x_train.min() >= 0.0 and data.x_train.max() <= 1.0
    assert first_pixels(data) == {7}
    # The validation split is a subset of the original training data, disjoint from train.
    x_all, _ = synthetic(N_TRAIN, (28, 28), 7)
    originals = {row.tobytes() for row in x_all}
    train_rows = {np.round(r * 255).astype(np.uint8).tobytes() for r in data.x_train[..., 0]}
    val_rows = {np.round(r * 255).astype(np.uint8).tobytes() for r in data.x_val[..., 0]}
    assert train_rows | val_rows == originals and not train_rows & val_rows


def test_default_validation_fraction_is_5000_of_60000(isolated: Path) -> None:
    assert dataset_info("mnist").default_validation_fraction * 60000 == pytest.approx(5000)
    assert dataset_info("cifar10").default_validation_fraction * 50000 == pytest.approx(5000)
    write_mnist_npz(keras_cache(isolated) / "mnist.npz", marker=1)
    data = load_dataset("mnist")
    assert len(data.y_val) == 5  # floor(60 / 12)


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
def test_fashion_mnist_idx_gz_and_plain(isolated: Path, compress: bool) -> None:
    write_idx_folder(keras_cache(isolated) / "fashion-mnist", marker=9, compress=compress)
    data = load_dataset("fashion_mnist", validation_fraction=0.5, download=False)
    assert data.x_train.shape == (30, 28, 28, 1) and data.x_val.shape == (30, 28, 28, 1)
    assert first_pixels(data) == {9}
    assert data.class_names[0] == "T-shirt/top"
    np.testing.assert_array_equal(np.bincount(data.y_val), [3] * 10)


def test_fashion_mnist_name_alias(isolated: Path) -> None:
    write_idx_folder(keras_cache(isolated) / "fashion-mnist", marker=9)
    assert load_dataset("Fashion-MNIST").name == "fashion_mnist"


def test_fashion_mnist_debian_layout(isolated: Path, tmp_path: Path) -> None:
    write_idx_folder(tmp_path / "debian" / "fashion-mnist", marker=4)
    data = load_dataset("fashion_mnist", download=False)
    assert data.source == str(tmp_path / "debian" / "fashion-mnist")
    assert first_pixels(data) == {4}


def test_cifar10_channels_last_and_labels(isolated: Path) -> None:
    write_cifar_folder(keras_cache(isolated) / "cifar-10-batches-py")
    data = load_dataset("cifar10", validation_fraction=0.2, download=False)
    assert data.x_train.shape == (40, 32, 32, 3) and data.x_val.shape == (10, 32, 32, 3)
    assert data.x_test.shape == (10, 32, 32, 3)
    pixel = np.round(data.x_test[0] * 255).astype(int)
    assert pixel[0, 0].tolist() == [10, 20, 30]  # (H, W, C): channel is the last axis
    assert pixel[5, 7].tolist() == [11, 21, 31]  # row 5 is axis 0 of an image
    assert data.y_test.tolist() == [(5 + i) % 10 for i in range(10)]  # test_batch, first_label 5
    assert data.y_train.dtype == np.int64


@pytest.mark.parametrize(
    "relative",
    [
        "cifar-10-batches-py-target/cifar-10-batches-py",  # Keras 3 extraction folder
        "archive:cifar-10-batches-py.tar.gz",  # tf.keras 2 download
        "archive:cifar-10-batches-py-target_archive",  # Keras 3 download
        "archive:cifar-10-python.tar.gz",  # the file as served by the CIFAR site
    ],
)
def test_cifar10_keras_layouts(isolated: Path, relative: str) -> None:
    if relative.startswith("archive:"):
        write_cifar_archive(keras_cache(isolated) / relative.removeprefix("archive:"))
    else:
        write_cifar_folder(keras_cache(isolated) / relative)
    data = load_dataset("cifar10", download=False)
    assert len(data.y_train) + len(data.y_val) == 50 and len(data.y_test) == 10


# --- lookup order ------------------------------------------------------------------------------


def test_lookup_order_data_dir_then_env_then_keras_then_debian(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argument, env = tmp_path / "argument", tmp_path / "env"
    write_idx_folder(argument / "fashion-mnist", marker=1)
    write_idx_folder(env / "fashion-mnist", marker=2)
    write_idx_folder(keras_cache(isolated) / "fashion-mnist", marker=3)
    write_idx_folder(tmp_path / "debian" / "fashion-mnist", marker=4)
    monkeypatch.setenv("LTP_DATA_DIR", str(env))

    def marker(**kwargs: object) -> set[int]:
        return first_pixels(load_dataset("fashion_mnist", download=False, **kwargs))  # type: ignore[arg-type]

    assert marker(data_dir=argument) == {1}
    assert marker() == {2}
    assert marker(data_dir=str(tmp_path / "empty")) == {3}  # argument replaces the env var
    monkeypatch.delenv("LTP_DATA_DIR")
    assert marker() == {3}
    (keras_cache(isolated) / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    assert marker() == {4}  # incomplete cache copy is skipped


def test_keras_home_env_var_is_respected(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_mnist_npz(keras_cache(isolated) / "mnist.npz", marker=5)
    write_mnist_npz(tmp_path / "kh" / "datasets" / "mnist.npz", marker=6)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert first_pixels(load_dataset("mnist", download=False)) == {6}


def test_cifar_folder_preferred_over_archive(isolated: Path) -> None:
    write_cifar_folder(keras_cache(isolated) / "cifar-10-batches-py")
    (keras_cache(isolated) / "cifar-10-python.tar.gz").write_bytes(b"not an archive")
    data = load_dataset("cifar10", download=False)
    assert data.source == str(keras_cache(isolated) / "cifar-10-batches-py")


# --- determinism -------------------------------------------------------------------------------


def test_split_is_deterministic_by_seed(isolated: Path) -> None:
    write_mnist_npz(keras_cache(isolated) / "mnist.npz", marker=0)
    a = load_dataset("mnist", validation_fraction=0.5, seed=11)
    b = load_dataset("mnist", validation_fraction=0.5, seed=11)
    c = load_dataset("mnist", validation_fraction=0.5, seed=12)
    np.testing.assert_array_equal(a.x_val, b.x_val)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_val, c.x_val)
    np.testing.assert_array_equal(a.x_test, c.x_test)
    assert load_dataset("mnist", seed=None).y_val.tolist() == load_dataset("mnist").y_val.tolist()


# --- missing files and downloads ---------------------------------------------------------------


def test_offline_error_says_where_to_put_files(isolated: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("fashion_mnist")
    message = str(caught.value)
    assert "URLError" in message and "network disabled in tests" in message
    assert f"put these files into {keras_cache(isolated)}{os.sep}" in message
    for stem in IDX_STEMS:
        assert f"fashion-mnist/{stem}.gz" in message
    assert "storage.googleapis.com/tensorflow/tf-keras-datasets/" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "LTP_DATA_DIR" in message
    assert isinstance(caught.value, FileNotFoundError)
    leftovers = list(keras_cache(isolated).rglob("*")) if keras_cache(isolated).exists() else []
    assert [p for p in leftovers if p.is_file()] == []  # no partial files


def test_download_false_never_touches_network(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(url: str, timeout: float) -> object:
        raise AssertionError("download=False must not open URLs")

    monkeypatch.setattr(download, "urlopen", forbidden)
    with pytest.raises(DatasetNotFoundError, match=r"download=False") as caught:
        load_dataset("mnist", data_dir=tmp_path / "mine", download=False)
    assert f"put these files into {tmp_path / 'mine'}{os.sep}" in str(caught.value)
    assert "mnist.npz" in str(caught.value)


def test_error_reports_incomplete_folder(isolated: Path) -> None:
    folder = keras_cache(isolated) / "fashion-mnist"
    write_idx_folder(folder, marker=1)
    (folder / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"incomplete, missing train-images-idx3-ubyte"):
        load_dataset("fashion_mnist", download=False)


def _mirror(monkeypatch: pytest.MonkeyPatch, name: str, files: dict[str, Path]) -> None:
    """Points a dataset's remote files at local file:// URLs with their real digests."""
    source = sources.SOURCES[name]
    remotes = []
    for remote in source.remote_files:
        local = files[Path(remote.url).name]
        digest = hashlib.sha256(local.read_bytes()).hexdigest() if remote.sha256 else None
        remotes.append(replace(remote, url=local.as_uri(), sha256=digest))
    monkeypatch.setitem(sources.SOURCES, name, replace(source, remote_files=tuple(remotes)))


def test_download_mnist_into_keras_cache(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_mnist_npz(tmp_path / "mirror" / "mnist.npz", marker=8)
    _mirror(monkeypatch, "mnist", {"mnist.npz": tmp_path / "mirror" / "mnist.npz"})
    data = load_dataset("mnist")
    assert data.source == str(keras_cache(isolated) / "mnist.npz")
    assert first_pixels(data) == {8}
    assert sorted(p.name for p in keras_cache(isolated).iterdir()) == ["mnist.npz"]


def test_download_fashion_into_data_dir(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_idx_folder(tmp_path / "mirror", marker=3)
    _mirror(
        monkeypatch,
        "fashion_mnist",
        {f"{s}.gz": tmp_path / "mirror" / f"{s}.gz" for s in IDX_STEMS},
    )
    data = load_dataset("fashion_mnist", data_dir=tmp_path / "mine")
    assert data.source == str(tmp_path / "mine" / "fashion-mnist")
    assert sorted(p.name for p in (tmp_path / "mine" / "fashion-mnist").iterdir()) == sorted(
        f"{s}.gz" for s in IDX_STEMS
    )


def test_download_cifar10_extracts_keras3_layout(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_cifar_archive(tmp_path / "mirror" / "cifar-10-python.tar.gz")
    _mirror(
        monkeypatch,
        "cifar10",
        {"cifar-10-python.tar.gz": tmp_path / "mirror" / "cifar-10-python.tar.gz"},
    )
    data = load_dataset("cifar10")
    cache = keras_cache(isolated)
    assert (cache / "cifar-10-batches-py-target_archive").is_file()
    extracted = cache / "cifar-10-batches-py-target" / "cifar-10-batches-py"
    assert sorted(p.name for p in extracted.iterdir()) == sorted(CIFAR_BATCHES)
    assert data.source == str(extracted)


def test_download_checksum_mismatch_leaves_nothing(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_mnist_npz(tmp_path / "mirror" / "mnist.npz", marker=8)
    source = sources.SOURCES["mnist"]
    remote = replace(source.remote_files[0], url=(tmp_path / "mirror" / "mnist.npz").as_uri())
    monkeypatch.setitem(sources.SOURCES, "mnist", replace(source, remote_files=(remote,)))
    with pytest.raises(ChecksumError, match="SHA-256"):
        load_dataset("mnist")
    assert list(keras_cache(isolated).iterdir()) == []


def test_keras_urls_and_digests_are_pinned() -> None:
    (mnist,) = sources.SOURCES["mnist"].remote_files
    assert mnist.url == "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
    assert mnist.sha256 == "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
    (cifar,) = sources.SOURCES["cifar10"].remote_files
    assert cifar.url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert cifar.sha256 == "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
    assert [r.relative_path for r in sources.SOURCES["fashion_mnist"].remote_files] == [
        f"fashion-mnist/{s}.gz" for s in IDX_STEMS
    ]


# --- corrupt files -----------------------------------------------------------------------------


def test_bad_idx_magic_is_reported_with_path(isolated: Path) -> None:
    folder = keras_cache(isolated) / "fashion-mnist"
    write_idx_folder(folder, marker=1)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x01\x02\x08\x01garbage"))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.gz is not an IDX file"):
        load_dataset("fashion_mnist", download=False)


def test_corrupt_npz_is_an_error_not_a_fallback(isolated: Path, tmp_path: Path) -> None:
    write_mnist_npz(keras_cache(isolated) / "mnist.npz", marker=1)  # later root, never reached
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "mnist.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match=r"mnist.npz is not a readable .npz archive"):
        load_dataset("mnist", data_dir=tmp_path / "mine", download=False)


def test_label_out_of_range_is_rejected(isolated: Path) -> None:
    path = keras_cache(isolated) / "mnist.npz"
    path.parent.mkdir(parents=True)
    x = np.zeros((4, 28, 28), np.uint8)
    np.savez(path, x_train=x, y_train=np.array([0, 1, 2, 10]), x_test=x, y_test=np.zeros(4, int))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
        load_dataset("mnist", download=False)


def test_wrong_image_shape_is_rejected(isolated: Path) -> None:
    path = keras_cache(isolated) / "mnist.npz"
    path.parent.mkdir(parents=True)
    x, y = np.zeros((4, 32, 32), np.uint8), np.zeros(4, np.uint8)
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
    with pytest.raises(ValueError, match=r"images of shape \(n, 28, 28, 1\)"):
        load_dataset("mnist", download=False)


def test_non_uint8_images_are_rejected(isolated: Path) -> None:
    path = keras_cache(isolated) / "mnist.npz"
    path.parent.mkdir(parents=True)
    x, y = np.zeros((4, 28, 28), np.float64), np.zeros(4, np.uint8)
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
    with pytest.raises(ValueError, match=r"uint8"):
        load_dataset("mnist", download=False)


# --- argument errors ---------------------------------------------------------------------------


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"Received: name='imagenet'") as caught:
        load_dataset("imagenet")
    for name in DATASETS:
        assert repr(name) in str(caught.value)
    with pytest.raises(TypeError, match=r"name"):
        load_dataset(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, float("nan"), float("inf")])
def test_validation_fraction_out_of_range(fraction: float) -> None:
    with pytest.raises(ValueError, match=r"Received: validation_fraction="):
        load_dataset("digits", validation_fraction=fraction)


def test_validation_fraction_type_and_other_arguments() -> None:
    with pytest.raises(TypeError, match=r"validation_fraction='0.1'"):
        load_dataset("digits", validation_fraction="0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Received: seed=-1"):
        load_dataset("digits", seed=-1)
    with pytest.raises(ValueError, match=r"Received: seed=1.5"):
        load_dataset("digits", seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Received: download='yes'"):
        load_dataset("digits", download="yes")  # type: ignore[arg-type]


def test_dataset_info() -> None:
    assert DATASETS == ("digits", "mnist", "fashion_mnist", "cifar10")
    assert dataset_info("fashion-mnist").image_shape == (28, 28, 1)
    assert dataset_info("cifar10").class_names[-1] == "truck"


# --- imports and real system data --------------------------------------------------------------


def test_importing_datasets_pulls_no_framework_or_sklearn() -> None:
    code = textwrap.dedent(
        """
        import sys
        import ltp_core.datasets
        heavy = {"tensorflow", "keras", "torch", "jax", "sklearn"}
        print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(
    not (DEBIAN_FASHION / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_real_debian_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locations, "DEBIAN_DATASETS_DIR", DEBIAN_FASHION.parent)
    data = load_dataset("fashion_mnist", download=False)
    assert data.source == str(DEBIAN_FASHION)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (55000, 5000, 10000)
    assert data.x_train.shape[1:] == (28, 28, 1) and data.x_train.dtype == np.float32
    assert data.x_test.max() == 1.0 and data.x_test.min() == 0.0
    np.testing.assert_array_equal(np.bincount(data.y_test), [1000] * 10)
    np.testing.assert_array_equal(np.bincount(data.y_val), [500] * 10)
