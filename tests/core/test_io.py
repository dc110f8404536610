"""Atomic writes: permissions follow the umask; live temporaries survive, stale ones go; locks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ltp_core import LotteryTicketPruner
from ltp_core.experiment.results import ResultStore
from ltp_core.io import (
    FolderInUseError,
    atomic_write_bytes,
    lock_folder,
    remove_stale_temporaries,
    save_masks,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions and flock")


@pytest.fixture
def umask() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("umask")
def test_files_follow_the_users_umask(tmp_path: Path) -> None:
    """Results, tables and saved state are 0644 under umask 022 (mkstemp gave 0600)."""
    atomic_write_bytes(tmp_path / "raw.bin", lambda f: f.write(b"x"))
    LotteryTicketPruner([np.ones((3, 2))]).save(tmp_path / "pruner.npz")
    save_masks(tmp_path / "masks.npz", [np.ones(3, dtype=bool)])
    store = ResultStore(tmp_path / "run", "imp", {"levels": 1}, {})
    store.write()
    del store
    written = ["raw.bin", "pruner.npz", "masks.npz", "run/results.json", "run/table.md"]
    for name in written:
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
    os.umask(0o077)
    atomic_write_bytes(tmp_path / "private.bin", lambda f: f.write(b"x"))
    assert (tmp_path / "private.bin").stat().st_mode & 0o777 == 0o600


_WRITER = """
import sys, time
from pathlib import Path
from ltp_core.io import atomic_write_bytes, lock_folder
out = Path(sys.argv[1])
lock = lock_folder(out) if sys.argv[2] == "lock" else None
def write(file):
    file.write(b"x" * (4 << 20))
    file.flush()
    (out / "ready").write_text("1")
    time.sleep(600)
atomic_write_bytes(out / "state" / "seed_0" / "pruner_level_3.npz", write)
"""


def _start_writer(out: Path, lock: bool) -> subprocess.Popen[bytes]:
    out.mkdir(parents=True, exist_ok=True)
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_WRITER), str(out), "lock" if lock else "-"]
    )
    deadline = time.monotonic() + 60
    while not (out / "ready").exists():
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            pytest.fail("the writer process did not start")
        time.sleep(0.05)
    return child


def _temporaries(out: Path) -> list[Path]:
    return list((out / "state" / "seed_0").glob(".pruner_level_3.npz.*"))


def test_live_temporaries_survive_and_sigkilled_ones_are_removed(tmp_path: Path) -> None:
    child = _start_writer(tmp_path, lock=False)
    try:
        (live,) = _temporaries(tmp_path)
        assert live.stat().st_size == 4 << 20
        assert remove_stale_temporaries(tmp_path, recursive=True) == []
        assert live.exists()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # killed mid-save: the multi-MB temporary is left behind, and the next cleanup removes it
    assert remove_stale_temporaries(tmp_path, recursive=True) == [live]
    assert _temporaries(tmp_path) == []


def test_a_second_run_on_a_folder_in_use_is_refused_and_deletes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    child = _start_writer(out, lock=True)
    try:
        (live,) = _temporaries(out)
        with pytest.raises(FolderInUseError, match=rf"in use.*Received: out='{out}'"):
            ResultStore(out, "imp", {"levels": 1}, {})
        assert live.exists()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # the lock died with the process: the next run starts and cleans up after it
    store = ResultStore(out, "imp", {"levels": 1}, {})
    assert _temporaries(out) == []
    del store


def test_lock_is_shared_within_a_process_and_released(tmp_path: Path) -> None:
    first = lock_folder(tmp_path)
    with lock_folder(tmp_path) as second:  # same process: e.g. a resumed run in one session
        assert second.held
    assert first.held
    first.release()
    assert not first.held
    script = f"from ltp_core.io import lock_folder; lock_folder({str(tmp_path)!r})"
    subprocess.run([sys.executable, "-c", script], check=True)  # free again


def test_repeated_saves_remove_what_killed_saves_left_but_not_live_temporaries(
    tmp_path: Path,
) -> None:
    """A checkpoint saved every N steps to one path never piles up multi-MB temporaries."""
    target = tmp_path / "state" / "seed_0" / "pruner_level_3.npz"
    child = _start_writer(tmp_path, lock=False)  # a live save of the same target, in progress
    try:
        (live,) = _temporaries(tmp_path)
        killed = target.parent / ".pruner_level_3.npz.0a1b2c3d"  # left by a SIGKILLed save
        killed.write_bytes(b"x" * (2 << 20))
        unrelated = target.parent / ".pruner_level_3.npz.keep-me"
        unrelated.write_bytes(b"x")
        atomic_write_bytes(target, lambda f: f.write(b"new"))
        assert target.read_bytes() == b"new"
        assert not killed.exists()
        assert live.exists() and unrelated.exists()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    atomic_write_bytes(target, lambda f: f.write(b"newer"))
    assert not live.exists()  # its writer is dead now
    assert sorted(p.name for p in target.parent.iterdir()) == [
        ".pruner_level_3.npz.keep-me",
        "pruner_level_3.npz",
    ]


def test_saving_over_a_folder_names_the_folder_and_writes_nothing(tmp_path: Path) -> None:
    from ltp_core import save_masks, save_state

    state = LotteryTicketPruner([np.ones(3)]).state_dict()
    for save in (lambda p: save_state(p, state), lambda p: save_masks(p, [np.ones(3, bool)])):
        with pytest.raises(ValueError, match=r"`path` is a folder.*Received: path="):
            save(tmp_path)
    assert list(tmp_path.iterdir()) == []  # no temporary left behind
