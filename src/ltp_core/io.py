"""Portable pruner state and mask files: one ``.npz`` with JSON metadata.

The file holds arrays (masks bit-packed, optional weights) under numbered keys and a JSON
document under ``__metadata__`` with the names, shapes, dtypes, strategy history, cumulative
rate, seed and the format version. It loads with ``allow_pickle=False`` (no code runs on load)
in any framework, and is written atomically (temporary file, then rename), so a crash never
leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, temporaries age out
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "LOCK_FILE",
    "FolderInUseError",
    "FolderLock",
    "atomic_write_bytes",
    "load_masks",
    "load_state",
    "lock_folder",
    "read_npz",
    "remove_stale_temporaries",
    "save_masks",
    "save_state",
    "staging_file",
]

FORMAT_NAME = "lottery-tickets-state"
FORMAT_VERSION = 1
_ARRAY_LISTS = ("initial_weights", "pretrained_weights", "rewind_weights")


_TEMPORARY_TARGETS = (
    ".json",
    ".csv",
    ".md",
    ".npz",
    ".pt",
    ".png",
    ".pdf",
    ".svg",
    ".zip",
    ".keras",
    ".txt",
)
LOCK_FILE = ".ltp.lock"
"""Name of the lock file that :func:`lock_folder` holds in an output folder."""


def _try_lock(fd: int) -> bool | None:
    """Take an exclusive ``flock`` without waiting: True taken, False held elsewhere, None n/a."""
    if fcntl is None:  # pragma: no cover - Windows
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # pragma: no cover - a file system without locks (some network mounts)
        return None
    return True


def _create_temporary(target: Path, suffix: str = "", kind: str = "") -> tuple[int, Path]:
    """Create ``.<name>.<kind><random><suffix>`` next to ``target``, umask applied, locked."""
    for _ in range(100):
        temporary = target.parent / f".{target.name}.{kind}{secrets.token_hex(4)}{suffix}"
        try:
            # 0o666 filtered by the umask, like any file the user creates (mkstemp gives 0600).
            handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
        _try_lock(handle)  # marks it live: remove_stale_temporaries leaves it alone
        return handle, temporary
    raise FileExistsError(f"Could not create a temporary file next to {target}")  # pragma: no cover


_TEMPORARY_SUFFIX = re.compile(r"[a-z0-9_]{8}")  # token_hex(4), or mkstemp's in older releases
_STAGING_SUFFIX = re.compile(r"part\.[a-f0-9]{8}(\.[a-z0-9]{1,8})?")  # see staging_file


def _remove_if_stale(path: Path) -> bool:
    """Delete ``path`` unless a live process holds its lock; tell whether it was deleted."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # renamed into place meanwhile
        return False
    try:
        if _try_lock(handle) is False:
            logger.debug("Keeping %s: a live process is writing it", path)
            return False
        path.unlink(missing_ok=True)
        return True
    finally:
        os.close(handle)


def _remove_stale_temporaries_of(
    target: Path, pattern: re.Pattern[str] = _TEMPORARY_SUFFIX
) -> None:
    if fcntl is None:  # pragma: no cover - without locks a live writer cannot be told apart
        return
    prefix = f".{target.name}."
    with os.scandir(target.parent) as entries:
        stale = [
            Path(entry.path)
            for entry in entries
            if entry.name.startswith(prefix)
            and pattern.fullmatch(entry.name[len(prefix) :])
            and entry.is_file(follow_symlinks=False)
        ]
    for path in stale:
        if _remove_if_stale(path):
            logger.info("Removed %s, left by an interrupted save of %s", path, target)


def atomic_write_bytes(path: str | os.PathLike[str], write: Any) -> None:
    """Call ``write(file_object)`` on a temporary file next to ``path``, then rename it.

    The file gets the permissions of any file the user creates (``0o666`` less the umask). The
    temporary file is locked while it is written, so :func:`remove_stale_temporaries` never
    removes the temporary of a live writer; the temporaries that killed earlier saves of the
    same ``path`` left behind are removed first, so repeated saves never pile them up.

    Example:
        >>> import tempfile, os
        >>> target = os.path.join(tempfile.mkdtemp(), "x.bin")
        >>> atomic_write_bytes(target, lambda f: f.write(b"ok"))
        >>> open(target, "rb").read()
        b'ok'
    """
    target = Path(path)
    if target.is_dir():
        raise ValueError(
            "`path` is a folder; pass the path of a file (e.g. one inside it). "
            f"Received: path={os.fspath(path)!r}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries_of(target)  # left by an earlier save of it that was killed
    handle, temporary = _create_temporary(target)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
            os.replace(temporary, target)  # still locked: no cleaner can take it meanwhile
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def staging_file(path: str | os.PathLike[str], suffix: str) -> Iterator[Path]:
    """A locked temporary file next to ``path`` for building a part of it, removed afterwards.

    Named ``.<name>.part.<random><suffix>``: one left by a process killed meanwhile is removed
    when the next save of ``path`` stages its parts (never while a live process holds it).

    Example:
        >>> import tempfile, os
        >>> target = os.path.join(tempfile.mkdtemp(), "ckpt.zip")
        >>> with staging_file(target, ".keras") as part:
        ...     _ = part.write_bytes(b"model")
        ...     part.name.startswith(".ckpt.zip.") and part.name.endswith(".keras")
        True
        >>> os.listdir(os.path.dirname(target))
        []
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries_of(target, _STAGING_SUFFIX)
    handle, staged = _create_temporary(target, suffix, "part.")
    try:
        yield staged
    finally:
        staged.unlink(missing_ok=True)
        os.close(handle)


def remove_stale_temporaries(
    folder: str | os.PathLike[str], *, recursive: bool = False
) -> list[Path]:
    """Delete temporary files that :func:`atomic_write_bytes` left in ``folder`` when killed.

    Only files named like its temporaries (``.<target name>.<random suffix>``) whose target name
    ends in a known extension are removed, and only when no live process holds them (a writer
    keeps its temporary locked until the rename). Call it before resuming work in a folder;
    ``recursive=True`` also cleans its subfolders (hidden ones excepted).

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / ".results.json.ab12_xyz").write_text("{")
        >>> [p.name for p in remove_stale_temporaries(folder)]
        ['.results.json.ab12_xyz']
    """
    removed = []
    folders = [Path(folder)]
    if recursive:
        folders = []
        for root, names, _ in os.walk(folder):
            names[:] = [name for name in names if not name.startswith(".")]
            folders.append(Path(root))
    for path in (p for f in folders for p in f.glob(".*")):
        parts = path.name[1:].rsplit(".", 1)
        if not (
            len(parts) == 2
            and parts[0].endswith(_TEMPORARY_TARGETS)
            and path.is_file()
            and not path.is_symlink()
        ):
            continue
        if _remove_if_stale(path):
            removed.append(path)
    return removed


class FolderInUseError(ValueError):
    """Another live process holds the output folder (see :func:`lock_folder`)."""


class FolderLock:
    """An exclusive lock on a folder, held until :meth:`release` or the process ends.

    Made by :func:`lock_folder`. The operating system drops it when the process dies, even on
    ``SIGKILL``, so a killed run never leaves a folder locked.
    """

    def __init__(self, folder: Path, handle: int | None) -> None:
        self.folder = folder
        self._handle = handle

    @property
    def held(self) -> bool:
        """Whether this object still holds the lock."""
        return self._handle is not None

    def release(self) -> None:
        """Release the lock (once the last holder in this process released it)."""
        if self._handle is None:
            return
        key = os.path.realpath(self.folder)
        count, handle = _HELD.get(key, (1, self._handle))
        if count > 1:
            _HELD[key] = (count - 1, handle)
        else:
            _HELD.pop(key, None)
            os.close(handle)
        self._handle = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


_HELD: dict[str, tuple[int, int]] = {}  # realpath -> (holders in this process, descriptor)


def lock_folder(folder: str | os.PathLike[str]) -> FolderLock:
    """Lock ``folder`` (created if needed) against other processes, without waiting.

    The lock lives in the file ``.ltp.lock`` inside the folder (an ``flock``, released by the
    operating system when the process ends, whatever the cause). Within one process the lock
    is shared: locking a folder this process already holds succeeds.

    Raises:
        FolderInUseError: Another live process holds the folder; the message names it.

    Example:
        >>> import tempfile
        >>> with lock_folder(tempfile.mkdtemp()) as lock:
        ...     lock.held
        True
    """
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(path)
    if key in _HELD:
        count, handle = _HELD[key]
        _HELD[key] = (count + 1, handle)
        return FolderLock(path, handle)
    handle = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    if _try_lock(handle) is False:
        os.close(handle)
        raise FolderInUseError(
            f"{os.fspath(path)} is in use by another running process (it holds "
            f"{os.fspath(path / LOCK_FILE)}); wait for it to finish or pass another output "
            f"folder. Received: out={os.fspath(path)!r}"
        )
    _HELD[key] = (1, handle)
    return FolderLock(path, handle)


def save_state(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write a pruner ``state_dict`` to ``path`` (``.npz``), atomically.

    Args:
        path: Destination file. Parent folders are created.
        state: A dict as returned by ``LotteryTicketPruner.state_dict()``.

    Example:
        >>> import tempfile, os
        >>> from ltp_core import LotteryTicketPruner
        >>> p = LotteryTicketPruner([np.arange(1.0, 5.0)])
        >>> f = os.path.join(tempfile.mkdtemp(), "state.npz")
        >>> save_state(f, p.state_dict())
        >>> load_state(f)["names"]
        ['layer_0']
    """
    arrays: dict[str, np.ndarray] = {}
    metadata = {
        key: value
        for key, value in state.items()
        if key not in _ARRAY_LISTS and key not in ("masks", "packed_masks")
    }
    metadata["format"] = FORMAT_NAME
    metadata["format_version"] = FORMAT_VERSION
    if "packed_masks" in state:  # already np.packbits output, one per shape
        for i, packed in enumerate(state["packed_masks"]):
            arrays[f"mask_{i}"] = np.asarray(packed, dtype=np.uint8)
    else:
        for i, mask in enumerate(state["masks"]):
            arrays[f"mask_{i}"] = np.packbits(np.asarray(mask, dtype=bool).reshape(-1))
    present = []
    for key in _ARRAY_LISTS:
        values = state.get(key)
        if values is None:
            continue
        present.append(key)
        for i, array in enumerate(values):
            arrays[f"{key}_{i}"] = np.asarray(array)
    metadata["weight_lists"] = present
    arrays["__metadata__"] = np.array(json.dumps(metadata))
    atomic_write_bytes(path, lambda file: np.savez(file, **arrays))  # type: ignore[arg-type]


def _corrupt(path: str | os.PathLike[str], why: str) -> ValueError:
    return ValueError(
        f"{os.fspath(path)!s} is not a valid lottery-tickets state file ({why}). "
        f"Received: path={os.fspath(path)!r}"
    )


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK"


def read_npz(path: str | os.PathLike[str], error: Any = None) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` file, refusing anything that is not one.

    Unlike ``np.load``, a ``.npy`` file, an archive member that is not a ``.npy`` array, a
    pickled (object) array and a member whose CRC does not match are errors that name the file
    and the member.

    Args:
        path: The ``.npz`` file.
        error: ``error(path, why)`` builds the exception to raise (default: ``ValueError``).

    Raises:
        ValueError: What is wrong, naming the file (and the member).

    Example:
        >>> import tempfile, os
        >>> f = os.path.join(tempfile.mkdtemp(), "a.npz")
        >>> np.savez(f, w=np.arange(3))
        >>> read_npz(f)["w"].tolist()
        [0, 1, 2]
    """
    make = error or (
        lambda where, why: ValueError(
            f"{os.fspath(where)} is not a valid .npz file ({why}). "
            f"Received: path={os.fspath(where)!r}"
        )
    )
    with open(path, "rb") as file:
        head = file.read(6)
    if head == _NPY_MAGIC:
        raise make(path, "it is a single-array .npy file; an .npz archive is expected")
    if not head.startswith(_ZIP_MAGIC):
        raise make(path, "not a zip archive")
    contents: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.is_dir():
                    continue
                if not info.filename.endswith(".npy"):
                    raise make(path, f"member {info.filename!r} is not a .npy array")
                with archive.open(info) as member:
                    try:
                        array = np.lib.format.read_array(member, allow_pickle=False)
                    except ValueError as reason:
                        raise make(
                            path, f"member {info.filename!r} is not a valid .npy array: {reason}"
                        ) from reason
                    if member.read(1):  # reads to the end: the CRC is checked there
                        raise make(path, f"member {info.filename!r} has trailing data")
                contents[info.filename[: -len(".npy")]] = array
    except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError) as reason:
        raise make(path, f"cannot read it: {reason}") from reason
    return contents


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a state file written by :func:`save_state`.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is corrupt, truncated, of another format or a newer version.

    Example: see :func:`save_state`.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"No pruner state file at {os.fspath(path)!r}")
    contents = read_npz(path, _corrupt)
    if "__metadata__" not in contents:
        raise _corrupt(path, "no metadata")
    try:
        metadata = json.loads(str(contents["__metadata__"]))
    except json.JSONDecodeError as error:
        raise _corrupt(path, "metadata is not JSON") from error
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise _corrupt(path, "not written by lottery-tickets")
    version = metadata.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise _corrupt(
            path, f"format version {version!r}; this release reads up to {FORMAT_VERSION}"
        )
    shapes_field = metadata.get("shapes", [])
    if not isinstance(shapes_field, list) or not all(
        isinstance(shape, list)
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        for shape in shapes_field
    ):
        raise _corrupt(path, f"'shapes' must be lists of integers >= 0, not {shapes_field!r:.80}")
    shapes = [tuple(shape) for shape in shapes_field]
    names = metadata.get("names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _corrupt(path, f"'names' must be a list of strings, not {names!r:.80}")
    if len(names) != len(shapes):
        raise _corrupt(path, "names and shapes disagree")
    state: dict[str, Any] = dict(metadata)
    state["shapes"] = shapes
    masks = []
    for i, shape in enumerate(shapes):
        key = f"mask_{i}"
        if key not in contents:
            raise _corrupt(path, f"missing {key}")
        size = int(np.prod(shape, dtype=np.int64))
        if contents[key].dtype != np.uint8 or contents[key].ndim != 1:
            raise _corrupt(
                path,
                f"{key} must be bit-packed uint8, not {contents[key].dtype} of shape "
                f"{contents[key].shape}",
            )
        bits = np.unpackbits(contents[key], count=size) if contents[key].size * 8 >= size else None
        if bits is None:
            raise _corrupt(path, f"{key} is truncated")
        masks.append(bits.astype(bool).reshape(shape))
    state["masks"] = masks
    for list_name in _ARRAY_LISTS:
        state[list_name] = None
    weight_lists = metadata.get("weight_lists", [])
    if not isinstance(weight_lists, list):
        raise _corrupt(path, f"'weight_lists' must be a list, not {weight_lists!r:.60}")
    for list_name in weight_lists:
        if list_name not in _ARRAY_LISTS:
            raise _corrupt(path, f"unknown weight list {list_name!r}")
        values = []
        for i, shape in enumerate(shapes):
            key = f"{list_name}_{i}"
            if key not in contents or tuple(contents[key].shape) != shape:
                raise _corrupt(path, f"{key} missing or of the wrong shape")
            values.append(contents[key])
        state[list_name] = values
    return state


def save_masks(
    path: str | os.PathLike[str],
    masks: Sequence[np.ndarray],
    names: Sequence[str] | None = None,
    **metadata: Any,
) -> None:
    """Write masks alone (no weights) in the portable format.

    Example:
        >>> import tempfile, os
        >>> f = os.path.join(tempfile.mkdtemp(), "masks.npz")
        >>> save_masks(f, [np.array([True, False])], ["dense"])
        >>> masks, names = load_masks(f)
        >>> masks[0].tolist(), names
        ([True, False], ['dense'])
    """
    mask_list = [np.asarray(m, dtype=bool) for m in masks]
    layer_names = list(names) if names is not None else [f"layer_{i}" for i in range(len(masks))]
    if len(layer_names) != len(mask_list):
        raise ValueError(
            f"`names` must have one entry per mask ({len(mask_list)}). "
            f"Received: {len(layer_names)} names"
        )
    state = {
        "names": layer_names,
        "shapes": [list(m.shape) for m in mask_list],
        "masks": mask_list,
        **metadata,
    }
    save_state(path, state)


def load_masks(path: str | os.PathLike[str]) -> tuple[list[np.ndarray], list[str]]:
    """Read the masks and layer names from a state or mask file.

    Example: see :func:`save_masks`.
    """
    state = load_state(path)
    return state["masks"], list(state["names"])
