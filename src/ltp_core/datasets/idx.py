"""Reader for the IDX format used by MNIST and Fashion-MNIST.

An IDX file starts with a 4-byte magic number: two zero bytes, a type code and the number of
dimensions. Then follow one big-endian ``uint32`` per dimension and the data, row-major, in
big-endian byte order. Files may be gzip-compressed (the usual ``*.gz`` downloads) or plain
(what ``gunzip`` leaves behind); compression is detected from the content, not the file name.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

__all__ = ["IDX_DTYPES", "parse_idx", "read_idx"]

#: IDX type code -> big-endian NumPy dtype of the stored values.
IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

_GZIP_MAGIC = b"\x1f\x8b"


def parse_idx(content: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """Decodes the bytes of an (uncompressed) IDX file.

    Args:
        content: The whole file content, already decompressed.
        source: Name used in error messages (usually the file path).

    Returns:
        A new array with the stored shape, in native byte order (``uint8`` for image and label
        files).

    Raises:
        ValueError: If the magic number, the type code or the size does not match the format.

    Example:
        >>> import numpy as np
        >>> raw = bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 8, 9])
        >>> parse_idx(raw)
        array([7, 8, 9], dtype=uint8)
    """
    if len(content) < 4 or content[0] != 0 or content[1] != 0:
        raise ValueError(
            f"{source} is not an IDX file: it must start with two zero bytes, a type code and "
            f"the number of dimensions. Delete or replace the file. Received: first bytes="
            f"{content[:4]!r}"
        )
    type_code, ndim = content[2], content[3]
    if type_code not in IDX_DTYPES:
        raise ValueError(
            f"{source} has an unknown IDX type code; expected one of "
            f"{sorted(hex(code) for code in IDX_DTYPES)}. Received: type_code={type_code:#04x}"
        )
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise ValueError(
            f"{source} is truncated: its header declares {ndim} dimensions but the file has "
            f"only {len(content)} bytes. Received: size={len(content)}"
        )
    shape = tuple(int(d) for d in np.frombuffer(content, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[type_code])
    expected = header_size + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(content) != expected:
        raise ValueError(
            f"{source} has the wrong size for an IDX array of shape {shape} and dtype "
            f"{dtype.name}: expected {expected} bytes. The file is truncated or corrupt; delete "
            f"it so it can be fetched again. Received: size={len(content)}"
        )
    data = np.frombuffer(content, dtype=dtype, offset=header_size).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Reads an IDX file, gzip-compressed or not.

    Args:
        path: Path of the file, e.g. ``train-images-idx3-ubyte.gz``.

    Returns:
        The stored array (see :func:`parse_idx`).

    Raises:
        ValueError: If the file is not a valid IDX file or a broken gzip stream.
        OSError: If the file cannot be read.

    Example:
        >>> import pathlib, tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 2, 4, 2]))
        >>> read_idx(folder / "labels-idx1-ubyte").tolist()
        [4, 2]
    """
    file_path = Path(path)
    content = file_path.read_bytes()
    if content[:2] == _GZIP_MAGIC:
        try:
            content = gzip.decompress(content)
        except (OSError, EOFError) as error:
            raise ValueError(
                f"{file_path} is a damaged gzip file ({error}); delete it so it can be fetched "
                f"again. Received: path={str(file_path)!r}"
            ) from error
    return parse_idx(content, source=str(file_path))
