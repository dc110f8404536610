"""Tests of the IDX reader (ltp_core.datasets.idx)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ltp_core.datasets.idx import IDX_DTYPES, parse_idx, read_idx


def encode(array: np.ndarray, type_code: int) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(IDX_DTYPES[type_code]).tobytes()


@settings(max_examples=40, deadline=None)
@given(
    type_code=st.sampled_from(sorted(IDX_DTYPES)),
    shape=st.lists(st.integers(0, 4), min_size=1, max_size=4).map(tuple),
    seed=st.integers(0, 2**16),
)
def test_round_trip_every_type(type_code: int, shape: tuple[int, ...], seed: int) -> None:
    dtype = np.dtype(IDX_DTYPES[type_code])
    rng = np.random.default_rng(seed)
    if dtype.kind == "f":
        expected = rng.normal(size=shape).astype(dtype.newbyteorder("="))
    else:
        info = np.iinfo(dtype)
        expected = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(
            dtype.newbyteorder("=")
        )
    decoded = parse_idx(encode(expected, type_code))
    assert decoded.dtype == expected.dtype and decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, expected)
    assert decoded.flags.writeable


def test_gzip_and_plain_files_read_the_same(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    content = encode(images, 0x08)
    (tmp_path / "plain-idx3-ubyte").write_bytes(content)
    (tmp_path / "packed-idx3-ubyte.gz").write_bytes(gzip.compress(content))
    # Compression is detected from the bytes, not the name.
    (tmp_path / "misnamed.gz").write_bytes(content)
    for name in ("plain-idx3-ubyte", "packed-idx3-ubyte.gz", "misnamed.gz"):
        np.testing.assert_array_equal(read_idx(tmp_path / name), images)
    assert read_idx(str(tmp_path / "plain-idx3-ubyte")).shape == (2, 3, 4)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"", "is not an IDX file"),
        (b"\x00\x01\x08\x01\x00\x00\x00\x01\x05", "is not an IDX file"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", r"unknown IDX type code.*type_code=0x07"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x01", "is truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x05\x06", r"wrong size.*expected 11 bytes"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x05\x06", r"Received: size=10"),
    ],
)
def test_corrupt_content_is_rejected(content: bytes, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        parse_idx(content, source="labels.idx")


def test_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(b"\x08\x03\x00\x00junk")
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte is not an IDX file"):
        read_idx(path)


def test_damaged_gzip_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(encode(np.arange(50, dtype=np.uint8), 0x08))[:-12])
    with pytest.raises(ValueError, match=r"damaged gzip file"):
        read_idx(path)


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent")
