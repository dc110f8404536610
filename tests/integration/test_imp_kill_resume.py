"""An IMP run killed with SIGKILL mid-level resumes to exactly the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ltp_core import LotteryTicketPruner

pytest.importorskip("torch")
pytest.importorskip("sklearn")

LEVELS = 3


def command(out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ltp_core.cli",
        "imp",
        "--framework",
        "torch",
        "--dataset",
        "digits",
        "--levels",
        str(LEVELS),
        "--iterations",
        "600",
        "--eval-every",
        "200",
        "--controls",
        "random_reinit",
        "--no-plots",
        "--quiet",
        "--out",
        str(out),
    ]


def records(out: Path) -> list[tuple[int, int, str, float, int]]:
    data = json.loads((out / "results.json").read_text())["records"]
    return [
        (r["seed"], r["level"], r["arm"], r["test_accuracy"], r["early_stop_iteration"])
        for r in data
    ]


def test_sigkill_mid_level_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    subprocess.run(command(clean), check=True, env=env, capture_output=True)

    process = subprocess.Popen(
        command(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    marker = killed / "state" / "seed_0" / "pruner_level_1.npz"
    deadline = time.monotonic() + 300
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    unfinished = records(killed)
    assert max(r[1] for r in unfinished) < LEVELS  # it really stopped mid-experiment

    subprocess.run(command(killed), check=True, env=env, capture_output=True)
    assert records(killed) == records(clean)
    final = f"state/seed_0/pruner_level_{LEVELS}.npz"
    for a, b in zip(
        LotteryTicketPruner.load(clean / final).masks,
        LotteryTicketPruner.load(killed / final).masks,
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    leftovers = [p.name for p in killed.rglob(".*") if p.is_file() and p.name != ".ltp.lock"]
    assert leftovers == []  # no half-written temporary files survive a resume
