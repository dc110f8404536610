"""Benchmark: ``ltp mask`` (``masks_from_shards``) against a warm read of the same shards.

Writes float32 safetensors shards and one ``.npz`` shard (whose CRC-32 is checked) of random
weights into a temporary folder, warms the page cache, then measures in one run, each in a fresh
process:

* a warm read: every shard file read once with ``os.readv`` into one reused buffer (the floor:
  ``masks_from_shards`` must at least read every byte);
* ``masks_from_shards(..., "large_final_global", 0.2)``: the in-process time of ``ltp mask``;
* ``movement_global`` (reads the trained and the initial shards), against reading both;

each call right after a warm read of the files it reads, the ratio taken per pair (the two see
the same load), the median over every pair of every run;
* the peak extra resident memory of the ``large_final_global`` call (``VmHWM`` minus ``VmRSS``
  before the call, from ``/proc/self/status``); that call must prune exactly
  ``floor(0.2 * n)`` weights, or the run stops.

With ``--before SRC`` the same measurements also run against another checkout's ``src`` folder
(e.g. ``git worktree add /tmp/before <commit>`` then ``--before /tmp/before/src``), alternating
with this one, so before/after ratios come from the same run on the same page cache.

Run: ``python benchmarks/bench_shards.py`` (1.2 GB of shards by default; ``--gigabytes 0.3`` for
a quick look). Targets (issue 14): in-process time <= 5x the warm read, extra RSS <= 300 MB.
Wall-clock ratios need an otherwise idle machine; the CPU-time ratios (``time.process_time``,
user + system, of every thread: the read-ahead thread's work counts too) in brackets hold up
better on a busy one. The load average is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def write_shards(folder: Path, total_bytes: int, seed: int, count: int = 4) -> list[str]:
    """``count`` shards of 4096-wide float32 matrices (the last one an ``.npz``)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = total_bytes // count // (4096 * 4)
    paths = []
    for s in range(count):
        name = f"layer{s}.weight"
        if s == count - 1:
            path = folder / f"shard_{s}.npz"
            np.savez(path, **{name: rng.standard_normal((rows, 4096), dtype=np.float32)})
        else:
            path = folder / f"shard_{s}.safetensors"
            header = json.dumps(
                {name: {"dtype": "F32", "shape": [rows, 4096], "data_offsets": [0, rows * 16384]}}
            ).encode()
            with open(path, "wb") as file:
                file.write(struct.pack("<Q", len(header)) + header)
                for start in range(0, rows, 1024):
                    size = min(1024, rows - start)
                    file.write(rng.standard_normal((size, 4096), dtype=np.float32).tobytes())
        paths.append(str(path))
    return paths


# Runs in a fresh interpreter with PYTHONPATH set to the checkout under test.
_MEASURE = textwrap.dedent("""
    import json, math, os, statistics, sys, time
    from ltp_core.compute import count_to_prune
    from ltp_core.shards import masks_from_shards
    trained, initial, repeats = json.loads(sys.argv[1])

    def kb(field):
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith(field))

    def warm_read(paths):
        buffer = bytearray(4 << 20)
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            while os.readv(fd, [buffer]):
                pass
            os.close(fd)

    def once(fn):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - start, time.process_time() - start_cpu

    calls = {
        "final": (trained, lambda: masks_from_shards(trained, "large_final_global", 0.2)),
        "movement": (
            trained + initial,
            lambda: masks_from_shards(trained, "movement_global", 0.2, initial=initial),
        ),
    }
    base = kb("VmRSS:")
    masks = masks_from_shards(trained, "large_final_global", 0.2)
    rss = (kb("VmHWM:") - base) / 1024
    total = sum(math.prod(shape) for shape in masks.shapes)  # exactly k = floor(0.2 n) pruned
    if total - masks.report.kept != count_to_prune(0.2, total):
        raise SystemExit(f"pruned {total - masks.report.kept} of {total}, not exactly k")
    result = {"rss": rss}
    # each call right after a warm read of what it reads: the pair sees the same load
    for key, (paths, call) in calls.items():
        pairs = [(once(lambda: warm_read(paths)), once(call)) for _ in range(repeats)]
        result[key + "_read"] = statistics.median(r[0] for r, _ in pairs)
        result[key] = statistics.median(c[0] for _, c in pairs)
        result[key + "_ratio"] = [c[0] / r[0] for r, c in pairs]
        result[key + "_cpu_ratio"] = [c[1] / r[1] for r, c in pairs]
    result["load"] = os.getloadavg()[0]
    print(json.dumps(result))
""")


def measure(src: Path, trained: list[str], initial: list[str], repeats: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, json.dumps([trained, initial, repeats])],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=1.2)
    parser.add_argument("--repeats", type=int, default=5, help="read + call pairs per run")
    parser.add_argument("--rounds", type=int, default=2, help="alternations before/after")
    parser.add_argument("--before", type=Path, default=None, help="src folder to compare with")
    parser.add_argument("--folder", type=Path, default=None, help="where to write the shards")
    args = parser.parse_args()
    checkouts = {"after": SRC} if args.before is None else {"before": args.before, "after": SRC}
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        trained = write_shards(Path(folder) / "trained", int(args.gigabytes * 1e9), seed=0)
        initial = write_shards(Path(folder) / "initial", int(args.gigabytes * 1e9), seed=1)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in checkouts}
        for _ in range(args.rounds):
            for name, src in checkouts.items():
                runs[name].append(measure(src, trained, initial, args.repeats))

    def median(name: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[name])

    def pooled(name: str, key: str) -> float:  # over every pair of every round
        return statistics.median(value for run in runs[name] for value in run[key])

    def both(name: str, key: str) -> str:
        return (
            f"{median(name, key):.2f} s = {pooled(name, key + '_ratio'):.1f}x "
            f"(CPU {pooled(name, key + '_cpu_ratio'):.1f}x)"
        )

    names = list(checkouts)
    print(f"{args.gigabytes:g} GB of float32 shards (3 safetensors + 1 npz), medians")
    print("| measurement | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    rows = [
        ("warm read, trained shards", [f"{median(n, 'final_read'):.2f} s" for n in names]),
        ("large_final_global (x warm read; goal <= 5x)", [both(n, "final") for n in names]),
        ("warm read, trained + initial", [f"{median(n, 'movement_read'):.2f} s" for n in names]),
        ("movement_global (x warm read of both)", [both(n, "movement") for n in names]),
        (
            "extra resident memory (goal <= 300 MB)",
            [f"{median(n, 'rss'):.0f} MB" for n in names],
        ),
        (
            "load average (1 min) at the end of each run",
            [", ".join(f"{r['load']:.1f}" for r in runs[n]) for n in names],
        ),
    ]
    for label, cells in rows:
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
