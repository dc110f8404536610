"""Atomic, checksummed downloads with the standard library only."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from pathlib import Path
from urllib.request import urlopen

__all__ = ["ChecksumError", "download_file"]

_LOG = logging.getLogger(__name__)
_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A downloaded file does not have the expected SHA-256 digest."""


def download_file(
    url: str,
    destination: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Downloads ``url`` to ``destination`` atomically, optionally checking its SHA-256.

    The content is streamed into a temporary file in the destination folder and renamed over
    ``destination`` only once complete (and verified), so an interrupted download never leaves
    a partial file under the final name, and concurrent downloads do not clash.

    Args:
        url: Source URL (``https://`` or, for local mirrors and tests, ``file://``).
        destination: Final path of the file; parent folders are created.
        sha256: Expected hex digest, or ``None`` to skip the check.
        timeout: Socket timeout in seconds.

    Returns:
        The destination path.

    Raises:
        urllib.error.URLError: If the URL cannot be fetched (e.g. offline).
        ChecksumError: If the digest does not match (the temporary file is removed).
        OSError: If the destination cannot be written.

    Example:
        >>> import pathlib, tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "a.bin").write_bytes(b"abc")
        >>> download_file((folder / "a.bin").as_uri(), folder / "b" / "a.bin").read_bytes()
        b'abc'
    """
    target = Path(destination)
    target.parent.mkdir(parents=True, exist_ok=True)
    _LOG.info("Downloading %s to %s", url, target)
    handle, temporary_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".part", dir=target.parent
    )
    temporary = Path(temporary_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(handle, "wb") as out, urlopen(url, timeout=timeout) as response:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if sha256 is not None and digest.hexdigest() != sha256.lower():
            raise ChecksumError(
                f"The file downloaded from {url} is incomplete or corrupt: its SHA-256 is "
                f"{digest.hexdigest()}, expected {sha256.lower()}. Try again later or fetch it "
                f"by hand. Received: url={url!r}"
            )
        os.chmod(temporary, 0o644)  # mkstemp creates 0600; cached data is meant to be shared
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    _LOG.info("Downloaded %s (%d bytes)", target, target.stat().st_size)
    return target
