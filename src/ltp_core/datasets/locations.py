"""Where dataset files are looked for: the data directory, the Keras cache, system packages."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DATA_DIR_ENV",
    "DEBIAN_DATASETS_DIR",
    "SearchRoot",
    "keras_cache_dir",
    "keras_home",
    "search_roots",
]

#: Environment variable naming a data directory (same layout as the Keras cache).
DATA_DIR_ENV = "LTP_DATA_DIR"
#: Where Debian's ``dataset-*`` packages install their files.
DEBIAN_DATASETS_DIR = Path("/usr/share/datasets")


@dataclass(frozen=True)
class SearchRoot:
    """A folder searched for dataset files, laid out like ``~/.keras/datasets``.

    Attributes:
        path: The folder.
        origin: Why it is searched, for messages (e.g. ``"data_dir argument"``).
    """

    path: Path
    origin: str


def keras_home() -> Path:
    """The Keras base folder, resolved the way Keras 3 does it.

    ``$KERAS_HOME`` when set, else ``~/.keras``, or ``/tmp/.keras`` when the home folder is
    not writable.

    Example:
        >>> keras_home().name in {".keras"} or "KERAS_HOME" in os.environ
        True
    """
    configured = os.environ.get("KERAS_HOME")
    if configured:
        return Path(configured).expanduser()
    home = Path("~").expanduser()
    if not os.access(home, os.W_OK):
        return Path("/tmp/.keras")
    return home / ".keras"


def keras_cache_dir() -> Path:
    """The folder where Keras caches datasets: ``keras_home() / "datasets"``.

    Example:
        >>> keras_cache_dir().name
        'datasets'
    """
    return keras_home() / "datasets"


def search_roots(data_dir: str | os.PathLike[str] | None = None) -> list[SearchRoot]:
    """The folders searched for dataset files, in order.

    The ``data_dir`` argument, else ``$LTP_DATA_DIR`` when set, comes first; the Keras cache
    follows. (System folders such as Debian's ``/usr/share/datasets`` have their own layout and
    are added per dataset.) The first root is also where downloads go.

    Args:
        data_dir: Folder given by the caller, or ``None``.

    Returns:
        The roots, without duplicates.

    Example:
        >>> [root.origin for root in search_roots("/data")][0]
        'data_dir argument'
    """
    roots: list[SearchRoot] = []
    if data_dir is not None:
        roots.append(SearchRoot(Path(data_dir).expanduser(), "data_dir argument"))
    elif os.environ.get(DATA_DIR_ENV):
        roots.append(SearchRoot(Path(os.environ[DATA_DIR_ENV]).expanduser(), DATA_DIR_ENV))
    cache = keras_cache_dir()
    origin = (
        "Keras cache ($KERAS_HOME/datasets)" if os.environ.get("KERAS_HOME") else ("Keras cache")
    )
    if all(root.path != cache for root in roots):
        roots.append(SearchRoot(cache, origin))
    return roots
