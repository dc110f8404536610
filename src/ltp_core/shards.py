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
import os
import re
import struct
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .compute import count_to_prune, salt_from_seed
from .io import save_state
from .report import LayerSparsity, SparsityReport
from .selection import ElementwiseScores, RandomScores, ScoreSource, keep_after_pruning_smallest
from .strategies import Strategy, resolve_strategy
from .validation import check_fraction

__all__ = ["DiskArray", "ShardMasks", "masks_from_shards", "open_shards", "save_packed_masks"]

_SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2"}
_READ_BLOCK = 1 << 22  # bytes per pread when gathering samples


class DiskArray:
    """A flat float array stored contiguously in a file, read on demand.

    Slicing with ``a[start:stop]`` reads that range; indexing with a sorted integer array
    gathers those entries. Values come back as float32 (float64 stays float64; bfloat16 and
    float16 are widened to float32).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        offset: int,
        stored: str,
        shape: tuple[int, ...],
        name: str,
        bfloat16: bool = False,
    ) -> None:
        self.path = os.fspath(path)
        self.offset = offset
        self.stored = np.dtype(stored)
        self.shape = tuple(int(d) for d in shape)
        self.name = name
        self.bfloat16 = bfloat16
        self.size = int(np.prod(self.shape, dtype=np.int64))
        self.ndim = 1
        self.dtype = np.dtype(np.float64 if self.stored == np.float64 else np.float32)
        self._fd: int | None = None

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def close(self) -> None:
        """Close the file descriptor (reopened on the next read)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()

    def _convert(self, raw: np.ndarray) -> np.ndarray:
        if self.bfloat16:
            return (raw.astype(np.uint32) << np.uint32(16)).view(np.float32)
        return raw.astype(self.dtype, copy=False)

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        item = self.stored.itemsize
        count = max(0, stop - start)
        data = os.pread(self._file(), count * item, self.offset + start * item)
        if len(data) != count * item:
            raise ValueError(
                f"{self.path} is truncated: tensor {self.name!r} needs "
                f"{self.size * item} bytes. Received: {len(data)} bytes at entry {start}"
            )
        return self._convert(np.frombuffer(data, dtype=self.stored))

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(self.size)
            if step != 1:
                raise IndexError("DiskArray supports contiguous slices only")
            return self._read_range(start, stop)
        index = np.asarray(key, dtype=np.int64)
        result = np.empty(index.size, dtype=self.dtype)
        if index.size == 0:
            return result
        # Read the blocks that hold the requested entries, one pread per block.
        per_block = _READ_BLOCK // self.stored.itemsize
        blocks = index // per_block
        bounds = np.flatnonzero(np.diff(blocks)) + 1
        for part in np.split(np.arange(index.size), bounds):
            first, last = int(index[part[0]]), int(index[part[-1]])
            chunk = self._read_range(first, last + 1)
            result[part] = chunk[index[part] - first]
        return result

    def __repr__(self) -> str:
        return f"DiskArray({self.name!r}, shape={self.shape}, file={self.path!r})"


def _open_safetensors(path: Path) -> list[DiskArray]:
    with open(path, "rb") as file:
        head = file.read(8)
        if len(head) != 8:
            raise ValueError(f"{path} is not a safetensors file. Received: path={str(path)!r}")
        (length,) = struct.unpack("<Q", head)
        if length > 100_000_000:
            raise ValueError(f"{path} has an implausible header. Received: path={str(path)!r}")
        try:
            header = json.loads(file.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(
                f"{path} has a corrupt safetensors header ({error}). Received: path={str(path)!r}"
            ) from error
    arrays = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = info.get("dtype")
        if dtype not in _SAFETENSORS_DTYPES:
            continue  # integer/bool buffers (step counters, ids, ...) are never prunable
        begin, _ = info["data_offsets"]
        arrays.append(
            DiskArray(
                path,
                8 + length + int(begin),
                _SAFETENSORS_DTYPES[dtype],
                tuple(info["shape"]),
                name,
                bfloat16=dtype == "BF16",
            )
        )
    return arrays


def _open_npz(path: Path) -> list[DiskArray]:
    arrays = []
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise ValueError(
            f"{path} is not a valid .npz file. Received: path={str(path)!r}"
        ) from error
    with archive, open(path, "rb") as raw:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(
                    f"{path} member {name!r} is compressed and cannot be read in place; "
                    f"re-save with np.savez (not savez_compressed). Received: path={str(path)!r}"
                )
            raw.seek(info.header_offset)
            local = raw.read(30)
            name_length, extra_length = struct.unpack("<HH", local[26:30])
            raw.seek(info.header_offset + 30 + name_length + extra_length)
            version = np.lib.format.read_magic(raw)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(raw)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(raw)
            if fortran and len(shape) > 1:
                raise ValueError(
                    f"{path} member {name!r} is Fortran-ordered; save it C-ordered. "
                    f"Received: path={str(path)!r}"
                )
            if dtype.kind != "f":
                continue  # integer buffers (step counters, ...) are never prunable
            arrays.append(
                DiskArray(
                    path,
                    raw.tell(),
                    dtype.newbyteorder("<").str if dtype.byteorder in "<=|" else dtype.str,
                    shape,
                    name,
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

    def unpacked(self) -> list[np.ndarray]:
        """Boolean masks (needs 1 byte per weight of memory)."""
        return [
            np.unpackbits(p, count=int(np.prod(s, dtype=np.int64))).astype(bool).reshape(s)
            for p, s in zip(self.packed, self.shapes, strict=True)
        ]


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


def _count_bits(packed: np.ndarray, chunk: int = 1 << 22) -> int:
    return sum(int(_POPCOUNT[packed[i : i + chunk]].sum()) for i in range(0, packed.size, chunk))


def masks_from_shards(
    trained: Sequence[str | os.PathLike[str]],
    strategy: str | Strategy,
    fraction: float,
    *,
    initial: Sequence[str | os.PathLike[str]] | None = None,
    include: str | Callable[[DiskArray], bool] | None = None,
    seed: int | None = None,
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
            a predicate. Default: every tensor with two or more dimensions.
        seed: Seed for tie-breaking and ``random``.

    Returns:
        The bit-packed masks of the included tensors.
    """
    resolved = resolve_strategy(strategy, "strategy")
    fraction = check_fraction(fraction, "fraction")
    criterion = resolved.criterion
    if criterion.pooled is not None:
        raise ValueError(
            f"Strategy {resolved.name!r} ranks whole layers at once and cannot stream; use an "
            f"elementwise criterion. Received: strategy={resolved.name!r}"
        )
    selected = _select(open_shards(trained), include)
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
    sources: list[ScoreSource] = []
    for i, tensor in enumerate(selected):
        if criterion.random:
            sources.append(RandomScores(i, tensor.size, None, salt))
        else:
            if criterion.elementwise is None:  # pragma: no cover - pooled handled above
                raise ValueError(f"Strategy {resolved.name!r} cannot stream")
            inputs: list[Any] = [by_role[role][i] for role in criterion.needs]
            sources.append(
                ElementwiseScores(
                    i, inputs, criterion.elementwise, None, tensor.name, criterion.signed
                )
            )
    groups = [sources] if resolved.scope == "global" else [[s] for s in sources]
    packed: list[np.ndarray] = []
    for group in groups:
        k = count_to_prune(fraction, sum(s.n_alive for s in group))
        packed += keep_after_pruning_smallest(group, k, salt, packed=True)
    for tensor in selected:
        tensor.close()
    layers = tuple(
        LayerSparsity(t.name, t.shape, t.size, _count_bits(p))
        for t, p in zip(selected, packed, strict=True)
    )
    return ShardMasks(
        [t.name for t in selected], [t.shape for t in selected], packed, SparsityReport(layers)
    )


def _select(
    tensors: list[DiskArray], include: str | Callable[[DiskArray], bool] | None
) -> list[DiskArray]:
    if include is None:
        chosen = [t for t in tensors if len(t.shape) >= 2]
    elif isinstance(include, str):
        pattern = re.compile(include)
        chosen = [t for t in tensors if pattern.search(t.name)]
    elif callable(include):
        chosen = [t for t in tensors if include(t)]
    else:
        raise TypeError(f"`include` must be a regex or a predicate. Received: include={include!r}")
    if not chosen:
        raise ValueError(
            "No prunable tensors were selected from the shards (default: tensors with 2+ "
            f"dimensions). Received: {len(tensors)} tensors, include={include!r}"
        )
    return chosen


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
