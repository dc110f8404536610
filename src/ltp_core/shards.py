"""Masks for models larger than memory: weights read from ``.npz``/``.safetensors`` shards.

Tensors are never loaded whole. Each one is a :class:`DiskArray`: a flat, read-only view of the
bytes in the shard file, read chunk by chunk with ``os.pread`` (no memory map, so the pages read
do not count towards the process's resident memory). The global selection streams over them and
writes bit-packed masks (1 bit per weight), so extra memory stays bounded by the candidate set
(about 1-2 % of the weights x 12 bytes) plus 1/8 byte per weight.

Supported files: ``.safetensors`` (F64, F32, F16, BF16) and *uncompressed* ``.npz`` (as written
by ``np.savez``; ``np.savez_compressed`` members cannot be read in place). Tensors of other
dtypes (integer or boolean buffers) are skipped in both formats: they are never prunable.

Example:
    >>> import os, tempfile, numpy as np
    >>> folder = tempfile.mkdtemp()
    >>> np.savez(os.path.join(folder, "w.npz"), dense=np.arange(1.0, 9.0).reshape(2, 4))
    >>> result = masks_from_shards([os.path.join(folder, "w.npz")], "large_final_global", 0.5)
    >>> result.report.kept, [m.tolist() for m in result.unpacked()]
    (4, [[[False, False, False, False], [True, True, True, True]]])
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
import threading
import warnings
import zipfile
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from . import selection as _selection
from .compute import (
    _prunable_above_floor,
    _respect_caps,
    check_min_layer_density,
    count_to_prune,
    salt_from_seed,
    warn_layer_collapse,
)
from .io import save_state
from .notices import LowCoverageWarning, NothingPrunedWarning
from .report import LayerSparsity, SparsityReport
from .selection import (
    ElementwiseScores,
    RandomScores,
    ScoreSource,
    count_set_bits,
    keep_after_pruning_smallest,
    keep_after_pruning_smallest_capped,
)
from .strategies import Strategy, resolve_strategy
from .validation import check_fraction

__all__ = [
    "DiskArray",
    "ShardMasks",
    "default_left_out",
    "masks_from_shards",
    "open_shards",
    "save_packed_masks",
]

logger = logging.getLogger(__name__)

_SAFETENSORS_FLOATS = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2"}
# Bits per element of every dtype of the safetensors format (the sizes must add up even for
# tensors that are skipped: integer buffers, float8/float4 formats NumPy cannot read).
_SAFETENSORS_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}  # fmt: skip
_MAX_HEADER = 100_000_000  # bytes; the safetensors format's own limit
_READ_BLOCK = 1 << 22  # bytes: most one read gathers when sampling
_GAP = 4096  # bytes: sampled entries closer than this are read together (one page)
_SAMPLE_RUN = 256  # neighbouring entries per sampled run (see ScoreSource.sample_run)
_SAMPLE_SCALE = 4  # x SAMPLE_SIZE entries sampled (in 1/4 of the reads of runs of 16 among 1x)
_CHUNK_SCALE = 4  # streaming chunks of 4 x CHUNK_SIZE entries (2 MiB of float32) from disk


# CRC-32 of a + b = shift(crc(a), len(b)) ^ crc(b), where shift appends len(b) zero bytes to the
# register: linear over GF(2), so it is a 32 x 32 bit matrix, kept as the images of the 32 unit
# vectors. The operator of 2**i bytes is the square of that of 2**(i-1); a length's operator
# combines those of its set bits (cached: a pass uses one or two lengths per tensor).
_CRC_POWERS: list[list[int]] = []
_CRC_SHIFTS: dict[int, list[int]] = {}
_CRC_LOCK = threading.Lock()


def _crc32_apply(operator: list[int], value: int) -> int:
    result = 0
    bit = 0
    while value:
        if value & 1:
            result ^= operator[bit]
        value >>= 1
        bit += 1
    return result


def _crc32_shift(value: int, length: int) -> int:
    """``zlib.crc32(bytes(length), value) ^ zlib.crc32(bytes(length))``, without the bytes.

    Example:
        >>> v = zlib.crc32(b"abc")
        >>> _crc32_shift(v, 5) ^ zlib.crc32(b"defgh") == zlib.crc32(b"abcdefgh")
        True
    """
    with _CRC_LOCK:
        operator = _CRC_SHIFTS.get(length)
        if operator is None:
            if not _CRC_POWERS:
                one_byte = [zlib.crc32(b"\0", 1 << j) ^ zlib.crc32(b"\0") for j in range(32)]
                _CRC_POWERS.append(one_byte)
            operator = [1 << j for j in range(32)]  # identity
            bit = 0
            while length >> bit:
                while len(_CRC_POWERS) <= bit:
                    last = _CRC_POWERS[-1]
                    _CRC_POWERS.append([_crc32_apply(last, column) for column in last])
                if length >> bit & 1:
                    power = _CRC_POWERS[bit]
                    operator = [_crc32_apply(power, column) for column in operator]
                bit += 1
            if len(_CRC_SHIFTS) > 64:
                _CRC_SHIFTS.clear()
            _CRC_SHIFTS[length] = operator
    return _crc32_apply(operator, value)


class DiskArray:
    """A flat float array stored contiguously in a file, read on demand.

    Slicing with ``a[start:stop]`` reads that range; indexing with a sorted integer array
    gathers those entries. Values come back as float32 (float64 stays float64; bfloat16 and
    float16 are widened to float32).

    Args:
        path: The file.
        offset: Byte offset of the first element.
        stored: NumPy dtype string of the stored elements (``"<f4"``; ``"<u2"`` for bfloat16).
        shape: The tensor's shape.
        name: The tensor's name (for messages).
        bfloat16: The stored ``uint16`` values are bfloat16.
        crc: For ``.npz`` members, ``(expected CRC-32, CRC-32 of the bytes before offset)``:
            the CRC is checked when the data is read through from start to end.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        offset: int,
        stored: str,
        shape: tuple[int, ...],
        name: str,
        bfloat16: bool = False,
        crc: tuple[int, int] | None = None,
    ) -> None:
        self._fd: int | None = None
        self._lock = threading.Lock()
        self.path = os.fspath(path)
        self.offset = offset
        self.stored = np.dtype(stored)
        self.shape = tuple(int(d) for d in shape)
        self.name = name
        self.bfloat16 = bfloat16
        self.size = int(np.prod(self.shape, dtype=np.int64))
        self.ndim = 1
        self.dtype = np.dtype(np.float64 if self.stored == np.float64 else np.float32)
        self._crc = crc
        self._crc_next = 0  # element up to which the running CRC has seen the data
        self._crc_value = 0 if crc is None else crc[1]

    def _file(self) -> int:
        with self._lock:  # the read-ahead thread and the caller may open it at once
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY)
            return self._fd

    def close(self) -> None:
        """Close the file descriptor (reopened on the next read)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __del__(self) -> None:
        self.close()

    @property
    def checks_crc(self) -> bool:
        """Whether reads from start to end check a CRC-32 (``.npz`` members)."""
        return self._crc is not None

    def _convert(self, raw: np.ndarray) -> np.ndarray:
        if self.bfloat16:
            return (raw.astype(np.uint32) << np.uint32(16)).view(np.float32)
        return raw.astype(self.dtype, copy=False)

    def read_into(
        self,
        start: int,
        stop: int,
        buffer: bytearray | None = None,
        crc_parts: list[int] | None = None,
    ) -> np.ndarray:
        """Read entries ``[start, stop)``, using ``buffer`` for the raw bytes if it is given.

        With a ``buffer`` (large enough), float32 and float64 data come back as a view of it,
        valid until the buffer is reused: this is how the selection streams without allocating
        per read. Without one, the result owns its memory. With ``crc_parts`` (``.npz``), the
        running CRC-32 is left alone: the range's own CRC-32 is appended to the list, to be
        added in order with :meth:`add_crc` (reads on two threads).

        Raises:
            ValueError: The file is shorter than the tensor, or (``.npz``) the data does not
                match the archive's CRC-32.
        """
        item = self.stored.itemsize
        count = max(0, stop - start)
        nbytes = count * item
        target = bytearray(nbytes) if buffer is None else buffer
        if len(target) < nbytes:
            raise ValueError(
                f"`buffer` must hold {nbytes} bytes. Received: buffer of {len(target)} bytes"
            )
        view = memoryview(target)[:nbytes]
        got = os.preadv(self._file(), [view], self.offset + start * item) if nbytes else 0
        if got != nbytes:
            raise ValueError(
                f"{self.path} is truncated: tensor {self.name!r} needs "
                f"{self.size * item} bytes. Received: {got} bytes at entry {start}"
            )
        if self._crc is not None:
            if crc_parts is None:
                self._check_crc(start, stop, view)
            else:  # from the member's header on for the first range, else from zero
                crc_parts.append(zlib.crc32(view, self._crc[1] if start == 0 else 0))
        return self._convert(np.frombuffer(view, dtype=self.stored))

    def add_crc(self, start: int, stop: int, crc: int) -> None:
        """Add the CRC-32 of entries ``[start, stop)`` (from ``read_into(crc_parts=)``) in order.

        Raises:
            ValueError: The member's data, complete, does not match the archive's CRC-32.
        """
        if self._crc is None:
            return
        if start == 0:  # a new pass from the start: the part includes the member's header
            self._crc_value = crc
        elif start == self._crc_next:
            length = (stop - start) * self.stored.itemsize
            self._crc_value = _crc32_shift(self._crc_value, length) ^ crc
        else:  # pragma: no cover - passes add their ranges in order
            return
        self._crc_next = stop
        self._check_crc_end(stop)

    def _check_crc(self, start: int, stop: int, data: memoryview) -> None:
        if start == 0 and self._crc_next != 0:  # a new pass from the start
            self._crc_next, self._crc_value = 0, self._crc[1] if self._crc else 0
        if start != self._crc_next or self._crc is None:
            return  # out of order (a sample): the sequential passes check every byte
        self._crc_value = zlib.crc32(data, self._crc_value)
        self._crc_next = stop
        self._check_crc_end(stop)

    def _check_crc_end(self, stop: int) -> None:
        if self._crc is not None and stop == self.size and self._crc_value != self._crc[0]:
            raise ValueError(
                f"{self.path} is corrupt: member {self.name!r} does not match its CRC-32 "
                f"(expected {self._crc[0]:08x}, computed {self._crc_value:08x}). "
                f"Received: path={self.path!r}"
            )

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        return self.read_into(start, stop)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(self.size)
            if step != 1:
                raise IndexError("DiskArray supports contiguous slices only")
            return self._read_range(start, stop)
        index = np.asarray(key, dtype=np.int64).reshape(-1)
        if index.size == 0:
            return np.empty(0, dtype=self.dtype)
        if index[0] < 0 or index[-1] >= self.size or np.any(np.diff(index) < 0):
            raise IndexError(
                f"DiskArray takes sorted indices in [0, {self.size}). "
                f"Received: indices from {int(index.min())} to {int(index.max())}"
            )
        # One read per cluster of nearby entries (at most one block long), all into one buffer:
        # a sample of a few thousand short runs reads a few MB, not the whole tensor.
        item = self.stored.itemsize
        per_block = max(1, _READ_BLOCK // item)
        breaks = (np.diff(index) * item > _GAP) | (np.diff(index // per_block) != 0)
        group_starts = np.concatenate(([0], np.flatnonzero(breaks) + 1))
        owner = np.repeat(np.arange(group_starts.size), np.diff([*group_starts, index.size]))
        firsts = index[group_starts]
        lengths = (index[np.append(group_starts[1:], index.size) - 1] - firsts + 1) * item
        offsets_in_buffer = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        buffer = bytearray(int(lengths.sum()))
        view = memoryview(buffer)
        fd = self._file()
        reads = zip(
            (self.offset + firsts * item).tolist(),
            lengths.tolist(),
            offsets_in_buffer.tolist(),
            strict=True,
        )
        for first, length, at in reads:
            got = os.preadv(fd, [view[at : at + length]], first)
            if got != length:
                raise ValueError(
                    f"{self.path} is truncated: tensor {self.name!r} needs "
                    f"{self.size * item} bytes. Received: {got} bytes at byte {first}"
                )
        values = self._convert(np.frombuffer(buffer, dtype=self.stored))
        where = offsets_in_buffer[owner] // item + index - firsts[owner]
        return np.asarray(values[where], dtype=self.dtype)

    def __repr__(self) -> str:
        return f"DiskArray({self.name!r}, shape={self.shape}, file={self.path!r})"


class _BufferPair:
    """Two read buffers taken in turn (see :class:`_Streamed`)."""

    def __init__(self) -> None:
        self.buffers = [bytearray(), bytearray()]
        self.turn = 0


class _Streamed:
    """A :class:`DiskArray` as the selection reads it: chunks land in two reused buffers.

    Consecutive chunk reads alternate between the two buffers, so the chunk the selection
    works on stays intact while the next one is read ahead (see :class:`_DiskScores`): a pass
    is done with a chunk once it asks for the one after the next. A whole-tensor read gets its
    own memory (callers may hold several whole tensors at once). The tensors of one role
    (trained, initial, current) share one pair of buffers (``shared``: passes go through the
    tensors one after the other, so the memory does not grow with their number); each role has
    its own, so a criterion reading one tensor twice never sees one read overwrite the other.
    """

    def __init__(self, disk: DiskArray, shared: _BufferPair | None = None) -> None:
        self.disk = disk
        self.size = disk.size
        self._shared = _BufferPair() if shared is None else shared

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, slice):
            return self.disk[key]
        start, stop, _ = key.indices(self.size)
        if start == 0 and stop == self.size:
            return self.disk.read_into(start, stop)
        nbytes = max(0, stop - start) * self.disk.stored.itemsize
        shared = self._shared
        turn = shared.turn = 1 - shared.turn
        if len(shared.buffers[turn]) < nbytes:
            shared.buffers[turn] = bytearray(nbytes)
        return self.disk.read_into(start, stop, shared.buffers[turn])


class _DiskScores(ElementwiseScores):
    """Elementwise scores of tensors on disk, read ahead: the threshold is sampled in short runs.

    While the selection works on one chunk, a worker thread reads the next one (``preadv``,
    ``zlib.crc32`` and NumPy's loops release the GIL) and checks its CRC; the chunk is handed
    over when the selection asks for it, with any error raised there. After a tensor's last
    chunk comes the first chunk of the ``following`` one. Scores stay on the calling thread
    (on the worker they cost about a quarter more CPU time for no shorter wall time, measured
    with ``benchmarks/bench_shards.py``), but for a criterion that ranks ``|magnitude_of(...)|``
    the worker also turns a chunk of one tensor with no CRC to check into order keys in place
    (:meth:`chunk_keys`). For such a criterion over one tensor (``large_final``...), the
    selection's keyed pass does not use this pipeline: with a ``parallel`` pool the calling
    thread and the worker each take every other chunk from reading to packed bits
    (:meth:`slot_keys`, per-thread buffers, CRC-32 parts added in order by :meth:`chunk_done`),
    so no chunk's data moves between the cores.
    """

    sample_run = _SAMPLE_RUN
    sample_scale = _SAMPLE_SCALE
    chunk_scale = _CHUNK_SCALE
    pool: ThreadPoolExecutor | None = None
    following: _DiskScores | None = None
    key_dtype: np.dtype[Any] | None = None
    magnitude_of: Callable[..., np.ndarray] | None = None
    keys_on_read = False  # read-aheads make the keys too (see masks_from_shards)
    _ahead: tuple[int, int, Future[list[np.ndarray] | np.ndarray]] | None = None
    _ahead_keyed = False  # whether the pending read-ahead makes keys (chunk_keys)

    def chunk(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        parts = cast(list[np.ndarray], self._fetch(start, stop, keyed=False))
        return self._read(parts), None if self.alive is None else self.alive[start:stop]

    def chunk_keys(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Order keys of the scores (see ``selection._key_dtype``), made in the read buffer.

        The score is ``|magnitude_of(*inputs)|``: the bits of ``magnitude_of``'s result shifted
        left by one drop the sign and order as the absolute values. The chunk is this
        source's own copy of the bytes (the next read goes to the other buffer), so the keys
        overwrite it.
        """
        got = self._fetch(start, stop, keyed=True)
        keys = got if isinstance(got, np.ndarray) else self._keys(got)
        return keys, None if self.alive is None else self.alive[start:stop]

    def _keys(self, parts: list[np.ndarray]) -> np.ndarray:
        if self.magnitude_of is None or self.key_dtype is None:  # pragma: no cover - guarded
            raise RuntimeError("order keys need magnitude_of and key_dtype")
        values = parts[0] if len(parts) == 1 else self.magnitude_of(*parts)
        keys = values.view(self.key_dtype)
        np.left_shift(keys, 1, out=keys)
        floats = np.float32 if self.key_dtype == np.uint32 else np.float64
        if keys.size and keys.max() >= np.array(np.inf, dtype=floats).view(self.key_dtype) << 1:
            _selection.raise_nonfinite_scores(self.label)  # keys from inf up: inf and NaN
        return keys

    parallel: ThreadPoolExecutor | None = None  # chunks selected by two threads in turn
    slots: dict[int, list[bytearray]] | None = None  # read buffers per thread, per input

    def slot_keys(
        self, start: int, stop: int, slot: int
    ) -> tuple[np.ndarray, np.ndarray | None, list[int]]:
        """Keys of a chunk read into thread ``slot``'s own buffers (no read-ahead).

        Returns the keys, the alive flags and the chunk's CRC-32 values (``.npz``), which
        :meth:`chunk_done` adds to the running ones in order.
        """
        if self.slots is None:  # pragma: no cover - set with `parallel`
            raise RuntimeError("slot_keys needs slots")
        buffers = self.slots.setdefault(slot, [bytearray() for _ in self.inputs])
        parts = []
        crcs: list[int] = []
        for i, x in enumerate(cast(Sequence[_Streamed], self.inputs)):
            nbytes = (stop - start) * x.disk.stored.itemsize
            if len(buffers[i]) < nbytes:
                buffers[i] = bytearray(nbytes)
            parts.append(x.disk.read_into(start, stop, buffers[i], crc_parts=crcs))
        keys = self._keys(parts)
        return keys, None if self.alive is None else self.alive[start:stop], crcs

    def chunk_done(self, start: int, stop: int, crcs: list[int]) -> None:
        """Add a chunk's CRC-32 values from :meth:`slot_keys` (chunks in order)."""
        checked = [x.disk for x in cast(Sequence[_Streamed], self.inputs) if x.disk.checks_crc]
        for disk, crc in zip(checked, crcs, strict=True):
            disk.add_crc(start, stop, crc)

    def _load(self, start: int, stop: int, keyed: bool) -> list[np.ndarray] | np.ndarray:
        """Read a chunk (on the worker for a read-ahead); keys too when no CRC is checked."""
        parts = [x[start:stop] for x in self.inputs]
        if keyed and self.keys_on_read:
            return self._keys(parts)
        return parts

    def _fetch(self, start: int, stop: int, keyed: bool) -> list[np.ndarray] | np.ndarray:
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[:2] == (start, stop) and self._ahead_keyed == keyed:
            got = ahead[2].result()
        else:
            if ahead is not None:  # another pass began: let the read-ahead finish, drop it
                wait([ahead[2]])
            got = self._load(start, stop, keyed)
        if 0 < stop < self.size:
            self._read_ahead(stop, min(self.size, 2 * stop - start), keyed)
        elif stop == self.size and self.following is not None:
            after = self.following
            if after._ahead is None:
                step = _selection.CHUNK_SIZE * after.chunk_scale
                after._read_ahead(0, min(after.size, step), keyed and after.key_dtype is not None)
        return got

    def _read_ahead(self, start: int, stop: int, keyed: bool) -> None:
        if self.pool is not None:
            self._ahead = (start, stop, self.pool.submit(self._load, start, stop, keyed))
            self._ahead_keyed = keyed

    def finish(self) -> None:
        """Wait for a pending read-ahead and drop it."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            wait([ahead[2]])


def _bad_file(path: Path, kind: str, why: str) -> ValueError:
    return ValueError(f"{path} is not a valid {kind} file ({why}). Received: path={str(path)!r}")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _read_safetensors_header(path: Path) -> tuple[int, dict[str, Any]]:
    size = path.stat().st_size
    with open(path, "rb") as file:
        head = file.read(8)
        if len(head) != 8:
            raise _bad_file(path, "safetensors", "shorter than the 8-byte header length")
        if head[:6] == b"\x93NUMPY":
            raise _bad_file(path, "safetensors", "it is a .npy file")
        (length,) = struct.unpack("<Q", head)
        if length > _MAX_HEADER or 8 + length > size:
            raise _bad_file(
                path, "safetensors", f"header length {length} for a file of {size} bytes"
            )
        raw = file.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _bad_file(path, "safetensors", f"the header is not JSON: {error}") from error
    if not isinstance(header, dict):
        raise _bad_file(
            path, "safetensors", f"the header is a JSON {type(header).__name__}, not an object"
        )
    return 8 + length, header


def _safetensors_entries(path: Path) -> list[tuple[str, str, tuple[int, ...], int, int]]:
    """Validate a safetensors header fully; return ``(name, dtype, shape, begin, end)``.

    The rules of the format (and of the ``safetensors`` package): every dtype known, shapes
    lists of integers >= 0, each tensor's byte span equal to its element count times the
    element size, the spans sorted, contiguous and non-overlapping from the start of the
    data to the end of the file.
    """
    data_start, header = _read_safetensors_header(path)
    body = path.stat().st_size - data_start
    metadata = header.get("__metadata__")
    if metadata is not None and not (
        isinstance(metadata, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise _bad_file(path, "safetensors", "'__metadata__' must map strings to strings")
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        where = f"tensor {name!r}"
        if not isinstance(info, dict):
            raise _bad_file(path, "safetensors", f"{where}: an object expected, got {info!r:.60}")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in _SAFETENSORS_BITS:
            raise _bad_file(path, "safetensors", f"{where}: unknown dtype {dtype!r:.40}")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise _bad_file(
                path,
                "safetensors",
                f"{where}: 'shape' must be a list of integers >= 0, got {shape!r:.60}",
            )
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_count(o) for o in offsets)
            or offsets[0] > offsets[1]
        ):
            raise _bad_file(
                path,
                "safetensors",
                f"{where}: 'data_offsets' must be [begin, end] with 0 <= begin <= end, "
                f"got {offsets!r:.60}",
            )
        begin, end = offsets
        bits = math.prod(shape) * _SAFETENSORS_BITS[dtype]
        if bits != 8 * (end - begin):
            raise _bad_file(
                path,
                "safetensors",
                f"{where}: shape {shape} of {dtype} needs {bits / 8:g} bytes but "
                f"data_offsets span {end - begin}",
            )
        entries.append((name, dtype, tuple(shape), begin, end))
    position = 0
    for name, _, _, begin, end in sorted(entries, key=lambda e: (e[3], e[4])):
        if begin != position:
            what = "overlaps the previous tensor" if begin < position else "leaves a gap before it"
            raise _bad_file(path, "safetensors", f"tensor {name!r} at bytes {begin}-{end} {what}")
        position = end
    if position != body:
        raise _bad_file(
            path,
            "safetensors",
            f"the tensors end at byte {position} of the data but the file holds {body} "
            f"({'truncated' if position > body else 'trailing bytes'})",
        )
    return entries


def _open_safetensors(path: Path) -> list[DiskArray]:
    entries = _safetensors_entries(path)
    data_start = _read_safetensors_header(path)[0]
    arrays = []
    for name, dtype, shape, begin, _ in entries:
        if dtype not in _SAFETENSORS_FLOATS:
            if dtype.startswith("F"):
                logger.warning(
                    "Skipping tensor %r of %s: %s is not readable without a dtype extension; "
                    "convert it to F16/BF16/F32 to prune it",
                    name,
                    path,
                    dtype,
                )
            continue  # integer/bool buffers (step counters, ids, ...) are never prunable
        arrays.append(
            DiskArray(
                path,
                data_start + begin,
                _SAFETENSORS_FLOATS[dtype],
                shape,
                name,
                bfloat16=dtype == "BF16",
            )
        )
    return arrays


def _open_npz(path: Path) -> list[DiskArray]:
    size = path.stat().st_size
    with open(path, "rb") as raw:
        magic = raw.read(6)
    if magic == b"\x93NUMPY":
        raise _bad_file(path, ".npz", "it is a single-array .npy file; an .npz archive is expected")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise _bad_file(path, ".npz", f"not a zip archive: {error}") from error
    arrays = []
    with archive, open(path, "rb") as raw:
        for info in archive.infolist():
            if info.is_dir():
                continue
            if not info.filename.endswith(".npy"):
                raise _bad_file(path, ".npz", f"member {info.filename!r} is not a .npy array")
            name = info.filename.removesuffix(".npy")
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(
                    f"{path} member {name!r} is compressed and cannot be read in place; "
                    f"re-save with np.savez (not savez_compressed). Received: path={str(path)!r}"
                )
            raw.seek(info.header_offset)
            local = raw.read(30)
            if len(local) != 30 or local[:4] != b"PK\x03\x04":
                raise _bad_file(path, ".npz", f"member {name!r} has no valid local header")
            name_length, extra_length = struct.unpack("<HH", local[26:30])
            member_start = info.header_offset + 30 + name_length + extra_length
            if member_start + info.compress_size > size:
                raise _bad_file(path, ".npz", f"member {name!r} extends past the end of the file")
            raw.seek(member_start)
            try:
                version = np.lib.format.read_magic(raw)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(raw)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(raw)
            except ValueError as error:
                raise _bad_file(
                    path, ".npz", f"member {name!r} is not a valid .npy array: {error}"
                ) from error
            data_start = raw.tell()
            header_bytes = data_start - member_start
            if dtype.hasobject:
                raise _bad_file(path, ".npz", f"member {name!r} holds Python objects (pickle)")
            needed = math.prod(shape) * dtype.itemsize
            if header_bytes + needed != info.file_size:
                raise _bad_file(
                    path,
                    ".npz",
                    f"member {name!r}: shape {tuple(shape)} of {dtype} needs {needed} bytes but "
                    f"the member holds {info.file_size - header_bytes}",
                )
            if fortran and len(shape) > 1:
                raise ValueError(
                    f"{path} member {name!r} is Fortran-ordered; save it C-ordered. "
                    f"Received: path={str(path)!r}"
                )
            if dtype.kind != "f":
                continue  # integer buffers (step counters, ...) are never prunable
            raw.seek(member_start)
            header_crc = zlib.crc32(raw.read(header_bytes))
            arrays.append(
                DiskArray(
                    path,
                    data_start,
                    dtype.newbyteorder("<").str if dtype.byteorder in "<=|" else dtype.str,
                    shape,
                    name,
                    crc=(info.CRC, header_crc),
                )
            )
    return arrays


def open_shards(paths: Sequence[str | os.PathLike[str]]) -> list[DiskArray]:
    """Open every floating tensor in the given shard files, in file then storage order.

    Raises:
        ValueError: Unknown extension, corrupt file, compressed npz member, duplicate names.
        FileNotFoundError: A path does not exist.
    """
    tensors: list[DiskArray] = []
    for item in paths:
        path = Path(item)
        if not path.exists():
            raise FileNotFoundError(f"No weight shard at {str(path)!r}")
        if path.suffix == ".safetensors":
            tensors += _open_safetensors(path)
        elif path.suffix == ".npz":
            tensors += _open_npz(path)
        else:
            raise ValueError(
                f"Weight shards must be .safetensors or .npz files. Received: path={str(path)!r}"
            )
    names = [t.name for t in tensors]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Tensor names must be unique across shards. Received: {duplicates}")
    return tensors


@dataclass
class ShardMasks:
    """Bit-packed masks computed from shards, with names, shapes and a sparsity report."""

    names: list[str]
    shapes: list[tuple[int, ...]]
    packed: list[np.ndarray]
    report: SparsityReport
    left_out: list[tuple[str, str]] = field(default_factory=list)
    """Tensors of two or more dimensions the default selection left out, with the reason."""

    def unpacked(self) -> list[np.ndarray]:
        """Boolean masks (needs 1 byte per weight of memory)."""
        return [
            np.unpackbits(p, count=int(np.prod(s, dtype=np.int64))).astype(bool).reshape(s)
            for p, s in zip(self.packed, self.shapes, strict=True)
        ]


def masks_from_shards(
    trained: Sequence[str | os.PathLike[str]],
    strategy: str | Strategy,
    fraction: float,
    *,
    initial: Sequence[str | os.PathLike[str]] | None = None,
    include: str | Callable[[DiskArray], bool] | None = None,
    seed: int | None = None,
    min_layer_density: float = 0.0,
) -> ShardMasks:
    """Compute masks for tensors stored in shard files, streaming, with bounded memory.

    Args:
        trained: Shard files with the trained weights (ranked by ``large_final`` etc.).
        strategy: Strategy name or :class:`~ltp_core.Strategy` with an elementwise criterion
            (``random``, ``large_final``, ``large_init``, ``movement``,
            ``magnitude_increase``, ``large_final_same_sign``, ``smallest_weights``, with or
            without ``_global``; for ``smallest_weights`` the trained files are ranked).
        fraction: Fraction of the weights to prune, ``0 <= fraction < 1``.
        initial: Shard files with the initial weights, for criteria that read them; tensors are
            matched by name.
        include: Which tensors to prune: a regular expression matched against tensor names, or
            a predicate. Default: the weight matrices and kernels, as the framework adapters
            choose them: tensors with two or more dimensions longer than 1, except embedding
            and positional tables and learned tokens, recognised by name
            (:func:`default_left_out`; listed in :attr:`ShardMasks.left_out`). Pruning less
            than half of the shards' weights warns (:class:`ltp_core.LowCoverageWarning`).
        seed: Seed for tie-breaking and ``random``.
        min_layer_density: Share of each tensor's weights that must survive, ``0 <= d < 1``,
            as in :func:`ltp_core.compute_masks`: a global selection still prunes exactly
            ``floor(fraction * n)`` weights, taking the next-ranked weights of other tensors
            instead of a tensor's last ``ceil(d * size)``; an impossible request is an error
            raised before the scoring pass.

    Returns:
        The bit-packed masks of the included tensors.

    Raises:
        ValueError: A strategy that cannot stream, missing initial shards, or a
            ``min_layer_density`` outside ``[0, 1)`` or impossible to meet.
    """
    resolved = resolve_strategy(strategy, "strategy")
    fraction = check_fraction(fraction, "fraction")
    min_density = check_min_layer_density(min_layer_density)
    criterion = resolved.criterion
    if criterion.pooled is not None:
        raise ValueError(
            f"Strategy {resolved.name!r} ranks whole layers at once (it sorts each layer) and "
            f"cannot stream over shards; use an elementwise criterion such as "
            f"large_final_global, or compute_masks on weights in memory. "
            f"Received: strategy={resolved.name!r}"
        )
    every = open_shards(trained)
    selected, left_out = _select(every, include)
    covered, total = sum(t.size for t in selected), sum(t.size for t in every)
    if covered < total / 2:
        shown = ", ".join(f"{name} ({why})" for name, why in left_out[:6]) or "1-d tensors"
        warnings.warn(
            f"The pruned tensors hold {covered} of the shards' {total} weights "
            f"({covered / total:.0%}); left out: {shown}"
            f"{' and more' if len(left_out) > 6 else ''}. Pass `include` (--include REGEX) to "
            "choose the tensors, e.g. include='.' for all of them.",
            LowCoverageWarning,
            stacklevel=2,
        )
    by_role: dict[str, list[DiskArray]] = {"trained": selected, "current": selected}
    if "initial" in criterion.needs:
        if initial is None:
            raise ValueError(
                f"Strategy {resolved.name!r} needs the initial weights: pass `initial` shards. "
                f"Received: initial=None"
            )
        initial_by_name = {t.name: t for t in open_shards(initial)}
        missing = [t.name for t in selected if t.name not in initial_by_name]
        if missing:
            raise ValueError(f"Tensors missing from the initial shards. Received: {missing[:10]}")
        matched = [initial_by_name[t.name] for t in selected]
        for a, b in zip(selected, matched, strict=True):
            if a.shape != b.shape:
                raise ValueError(
                    f"Tensor {a.name!r} has shape {a.shape} trained but {b.shape} initial. "
                    f"Received: initial shape {b.shape}"
                )
        by_role["initial"] = matched
    salt = salt_from_seed(seed)
    # One worker thread reads the chunk after the one being scored and selected on (with one
    # usable core it could not run beside the selection: chunks are then read when asked for).
    pool = (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="ltp-read-ahead")
        if _usable_cores() > 1
        else None
    )
    sources: list[ScoreSource] = []
    slots: dict[int, list[bytearray]] = {}  # shared: one tensor is selected at a time
    buffers = {role: _BufferPair() for role in by_role}
    try:
        for i, tensor in enumerate(selected):
            if criterion.random:
                sources.append(RandomScores(i, tensor.size, None, salt))
                continue
            if criterion.elementwise is None:  # pragma: no cover - pooled handled above
                raise ValueError(f"Strategy {resolved.name!r} cannot stream")
            inputs: list[Any] = [
                _Streamed(by_role[role][i], buffers[role]) for role in criterion.needs
            ]
            disk = _DiskScores(
                i, inputs, criterion.elementwise, None, tensor.name, criterion.signed
            )
            disk.pool = pool
            if criterion.magnitude_of is not None:  # compare float bits, not |values|
                stored = np.result_type(*(x.disk.dtype for x in inputs))
                disk.magnitude_of = criterion.magnitude_of
                disk.key_dtype = np.dtype(np.uint32 if stored == np.float32 else np.uint64)
                # the worker makes keys in place when it has the time: no CRC-32 to check, and
                # one input (a difference of two allocates on the worker: measured slower)
                disk.keys_on_read = len(inputs) == 1 and not inputs[0].disk.checks_crc
                if len(inputs) == 1 and pool is not None:
                    disk.parallel, disk.slots = pool, slots
            if sources and isinstance(sources[-1], _DiskScores):
                sources[-1].following = disk
            sources.append(disk)
        packed = _packed_masks(sources, resolved, selected, fraction, min_density, salt)
    finally:
        for source in sources:
            if isinstance(source, _DiskScores):
                source.finish()
        if pool is not None:
            pool.shutdown(wait=True)
        for tensor in [*selected, *by_role.get("initial", [])]:
            tensor.close()
    layers = tuple(
        LayerSparsity(t.name, t.shape, t.size, count_set_bits(p))
        for t, p in zip(selected, packed, strict=True)
    )
    if resolved.scope == "global" and len(sources) > 1:
        collapsed = [
            layer.name
            for layer, source in zip(layers, sources, strict=True)
            if source.n_alive and not layer.kept
        ]
        if collapsed:
            warn_layer_collapse(resolved.name, fraction, collapsed, 2)
    return ShardMasks(
        [t.name for t in selected],
        [t.shape for t in selected],
        packed,
        SparsityReport(layers),
        left_out,
    )


def _usable_cores() -> int:
    affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere every core counts
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def _packed_masks(
    sources: list[ScoreSource],
    strategy: Strategy,
    selected: list[DiskArray],
    fraction: float,
    min_density: float,
    salt: int,
) -> list[np.ndarray]:
    criterion = strategy.criterion
    groups = [sources] if strategy.scope == "global" else [[s] for s in sources]
    plans = []
    for group in groups:  # every count and floor is checked before any scoring pass
        n_alives = [s.n_alive for s in group]
        k = count_to_prune(fraction, sum(n_alives))
        names = [selected[s.array_id].name for s in group]
        sizes = [s.size for s in group]
        caps = _prunable_above_floor(n_alives, sizes, min_density, k, fraction, 1.0, names)
        plans.append((group, n_alives, k, caps))
    alive = sum(sum(plan[1]) for plan in plans)
    if fraction > 0 and alive > 0 and not any(plan[2] for plan in plans):
        warnings.warn(
            f"masks_from_shards pruned no weight: fraction={fraction} of the {alive} selected "
            "weights rounds down to 0 in every scope (exact count floor(fraction * alive) per "
            "scope). Raise the fraction or use a global strategy (one count over all tensors).",
            NothingPrunedWarning,
            stacklevel=3,
        )
    packed: list[np.ndarray] = []
    for group, n_alives, k, caps in plans:
        if criterion.layer_counts is not None:  # random_erk: per-layer counts, then per layer
            counts = criterion.layer_counts([t.shape for t in selected], n_alives, k)
            if caps is not None:
                counts = _respect_caps(counts, caps)
            for source, count in zip(group, counts, strict=True):
                packed += keep_after_pruning_smallest([source], count, salt, packed=True)
        elif caps is not None:
            packed += keep_after_pruning_smallest_capped(group, k, salt, caps, packed=True)
        else:
            packed += keep_after_pruning_smallest(group, k, salt, packed=True)
    return packed


_TABLE_NAME = re.compile(
    r"^(?:wte|wpe|shared|embed|embeds|embedding|embeddings|pos_embed|pos_embedding|cls_token"
    r"|mask_token|dist_token|register_tokens|embed_\w+|\w+_embed|\w+_embeds|\w+_embeddings?"
    r"|\w+_tokens?)$",
    re.IGNORECASE,
)
"""Module (or parameter) names of embedding and positional tables and of learned tokens in
common checkpoints: GPT-2 ``wte``/``wpe``, Llama ``embed_tokens``, BERT ``word_embeddings``,
``position_embeddings``, ``token_type_embeddings``, T5 ``shared``, ViT ``pos_embed``,
``cls_token``. The parameter's own name (``weight``) is dropped first."""


def default_left_out(name: str, shape: Sequence[int]) -> str | None:
    """Why the default selection of :func:`masks_from_shards` leaves a tensor out (or ``None``).

    The default prunes weight matrices and kernels, as the framework adapters do: tensors with
    at least two dimensions longer than 1, except embedding and positional tables and learned
    tokens, recognised by name (see ``_TABLE_NAME``).

    Example:
        >>> default_left_out("transformer.h.0.attn.c_attn.weight", (768, 2304)) is None
        True
        >>> default_left_out("transformer.wte.weight", (50257, 768))
        'embedding or positional table (by name)'
        >>> default_left_out("ln_f.weight", (768,))
        'fewer than 2 dimensions'
    """
    if sum(1 for n in shape if n > 1) < 2:
        return "fewer than 2 dimensions" if len(shape) < 2 else "vector-shaped"
    parts = re.split(r"[./]", name.removesuffix(":0"))
    if len(parts) > 1 and parts[-1] in ("weight", "kernel", "embeddings"):
        parts = parts[:-1]
    if _TABLE_NAME.match(parts[-1]):
        return "embedding or positional table (by name)"
    return None


def _select(
    tensors: list[DiskArray], include: str | Callable[[DiskArray], bool] | None
) -> tuple[list[DiskArray], list[tuple[str, str]]]:
    """The tensors to prune, and the tensors of 2+ dimensions left out by default (with why)."""
    left_out: list[tuple[str, str]] = []
    if include is None:
        chosen = []
        for t in tensors:
            reason = default_left_out(t.name, t.shape)
            if reason is None:
                chosen.append(t)
            elif len(t.shape) >= 2:
                left_out.append((t.name, reason))
    elif isinstance(include, str):
        pattern = re.compile(include)
        chosen = [t for t in tensors if pattern.search(t.name)]
    elif callable(include):
        chosen = [t for t in tensors if include(t)]
    else:
        raise TypeError(f"`include` must be a regex or a predicate. Received: include={include!r}")
    if not chosen:
        raise ValueError(
            "No prunable tensors were selected from the shards (default: weight matrices and "
            "kernels, no embedding tables; pass `include` / --include REGEX to choose). "
            f"Received: {len(tensors)} tensors, include={include!r}"
        )
    return chosen, left_out


def save_packed_masks(path: str | os.PathLike[str], masks: ShardMasks, **metadata: Any) -> None:
    """Write :class:`ShardMasks` in the portable mask format (no unpacking)."""
    save_state(
        path,
        {
            "names": masks.names,
            "shapes": [list(s) for s in masks.shapes],
            "packed_masks": masks.packed,
            **metadata,
        },
    )
