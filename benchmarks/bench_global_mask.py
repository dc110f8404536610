"""Benchmark: global magnitude mask on GPT-2-small-sized and ResNet-50-sized weights.

Everything is reported relative to one read pass (``np.sum`` over every array) measured in the
same run, so numbers compare across machines. Compared:

* ``ltp_core.compute_masks("large_final_global", ...)`` (sampled bracket + one fused pass),
* ``np.partition`` on a concatenated copy of all magnitudes (the textbook approach),
* ``torch.nn.utils.prune.global_unstructured`` with ``L1Unstructured`` (1 thread, like NumPy).

Peak extra memory is measured with ``tracemalloc`` (NumPy reports its buffers to it) and divided
by the number of weights; it includes the 1 byte/weight of the returned boolean masks.

A second table (``--scopes``) compares, at 1M to 124M weights, layer scope
(``large_final``) against global scope (``large_final_global``), and global selection with
``min_layer_density=0.01``, with ``lamp`` and with both against the same read pass.

Run: ``python benchmarks/bench_global_mask.py`` (about a minute; needs ~3 GB of RAM);
``python benchmarks/bench_global_mask.py --scopes`` (a few minutes; ``--only NAME`` runs one
size: mlp1m, conv5m, resnet50, gpt2); ``--many`` times each strategy per array on 1,000 and
8,000 small arrays (a cost that grows with the number of arrays faster than linearly shows as a
ratio above 1).
Targets (issue 3): <= 6x one read pass at 124M, >= 10x faster than global_unstructured,
<= 1.5 bytes/weight of extra memory. Issue 14: layer scope within 1.5x of global scope at every
size. Issue 11: ``min_layer_density`` and ``lamp`` against the 6x bar.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
import tracemalloc
from collections.abc import Callable
from functools import partial

import numpy as np

from ltp_core import compute_masks, count_to_prune


def gpt2_small_shapes() -> list[tuple[int, ...]]:
    """Parameter shapes of GPT-2 small (124M weights in 148 arrays)."""
    d, ff, vocab, ctx = 768, 3072, 50257, 1024
    shapes: list[tuple[int, ...]] = [(vocab, d), (ctx, d)]
    for _ in range(12):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,)]
        shapes += [(d,), (d,), (d, ff), (ff,), (ff, d), (d,)]
    return [*shapes, (d,), (d,)]


def resnet50_shapes() -> list[tuple[int, ...]]:
    """Convolution and dense kernel shapes of ResNet-50 (about 25.5M weights)."""
    shapes: list[tuple[int, ...]] = [(64, 3, 7, 7)]
    channels = 64
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for block in range(blocks):
            shapes += [(width, channels, 1, 1), (width, width, 3, 3), (4 * width, width, 1, 1)]
            if block == 0:
                shapes.append((4 * width, channels, 1, 1))
            channels = 4 * width
    return [*shapes, (1000, 2048), (1000,)]


def timed(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_bytes(fn: Callable[[], object]) -> int:
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    result = fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del result
    return peak


def torch_global_unstructured(weights: list[np.ndarray], fraction: float) -> float | None:
    try:
        import torch
        from torch.nn.utils import prune
    except ImportError:
        return None
    torch.set_num_threads(1)
    modules = []
    for w in weights:
        module = torch.nn.Module()
        module.weight = torch.nn.Parameter(torch.from_numpy(w), requires_grad=False)
        modules.append(module)
    start = time.perf_counter()
    prune.global_unstructured(
        [(m, "weight") for m in modules], pruning_method=prune.L1Unstructured, amount=fraction
    )
    return time.perf_counter() - start


def run(name: str, shapes: list[tuple[int, ...]], fraction: float, repeats: int) -> dict[str, str]:
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    n = sum(w.size for w in weights)
    k = count_to_prune(fraction, n)

    def ours() -> list[np.ndarray]:
        return compute_masks("large_final_global", fraction, trained=weights)

    def partition() -> float:
        magnitudes = np.abs(np.concatenate([w.reshape(-1) for w in weights]))
        return float(np.partition(magnitudes, k - 1)[k - 1])

    masks = ours()
    pruned = n - sum(int(m.sum()) for m in masks)
    if pruned != k:
        raise SystemExit(f"wrong count: pruned {pruned}, expected {k}")
    del masks
    read = timed(lambda: sum(float(w.sum()) for w in weights), max(repeats, 3))
    t_ours = timed(ours, repeats)
    t_part = timed(partition, 1)
    t_torch = torch_global_unstructured(weights, fraction)
    mem_ours = peak_bytes(ours) / n
    mem_part = peak_bytes(partition) / n
    return {
        "weights": f"{name} ({n / 1e6:.1f}M in {len(shapes)} arrays)",
        "read pass": f"{read * 1e3:.0f} ms",
        "ltp_core": f"{t_ours * 1e3:.0f} ms = {t_ours / read:.1f}x read",
        "np.partition(concat)": f"{t_part * 1e3:.0f} ms = {t_part / read:.1f}x read",
        "torch global_unstructured": "n/a"
        if t_torch is None
        else f"{t_torch * 1e3:.0f} ms = {t_torch / read:.1f}x read ({t_torch / t_ours:.0f}x ours)",
        "extra B/weight ltp_core": f"{mem_ours:.2f}",
        "extra B/weight partition": f"{mem_part:.2f}",
    }


def mlp_1m_shapes() -> list[tuple[int, ...]]:
    """An MLP 784-1024-256-10 (1.07M weights): paper-sized models."""
    return [(784, 1024), (1024,), (1024, 256), (256,), (256, 10), (10,)]


def convnet_5m_shapes() -> list[tuple[int, ...]]:
    """A VGG-like stack of 3x3 convolutions (4.7M weights in 9 kernels)."""
    return [(64, 3, 7, 7)] + [(256, 256, 3, 3)] * 8


def run_scopes(
    name: str, shapes: list[tuple[int, ...]], fraction: float, repeats: int
) -> dict[str, str]:
    """Layer vs global scope, and global with ``min_layer_density`` / ``lamp``, vs a read pass."""
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    n = sum(w.size for w in weights)

    def check(masks: list[np.ndarray], expected: int, label: str) -> None:
        pruned = n - sum(int(m.sum()) for m in masks)
        if pruned != expected:
            raise SystemExit(f"{label}: wrong count: pruned {pruned}, expected {expected}")

    layer_k = sum(count_to_prune(fraction, w.size) for w in weights)
    global_k = count_to_prune(fraction, n)
    calls: dict[str, tuple[Callable[[], list[np.ndarray]], int]] = {
        "global": (
            lambda: compute_masks("large_final_global", fraction, trained=weights),
            global_k,
        ),
        "layer": (lambda: compute_masks("large_final", fraction, trained=weights), layer_k),
        "floor": (
            lambda: compute_masks(
                "large_final_global", fraction, trained=weights, min_layer_density=0.01
            ),
            global_k,
        ),
        "lamp": (lambda: compute_masks("lamp", fraction, trained=weights), global_k),
        "lamp_floor": (
            lambda: compute_masks("lamp", fraction, trained=weights, min_layer_density=0.01),
            global_k,
        ),
    }
    for label, (call, expected) in calls.items():
        check(call(), expected, label)
    lamp_bytes = peak_bytes(calls["lamp"][0])
    calls["read"] = (lambda: [w.sum() for w in weights], 0)
    # alternate the calls so that load on the machine affects all of them alike; wall and
    # process CPU time per call (CPU time is less sensitive to other processes on the machine)
    samples: dict[str, list[tuple[float, float]]] = {label: [] for label in calls}
    for _ in range(repeats):
        for label, (call, _) in calls.items():
            if label == "read":
                samples[label].append(min((timed_both(call) for _ in range(3)), key=sum))
                continue
            if label.startswith("lamp") and len(samples[label]) >= max(1, repeats // 3):
                continue
            samples[label].append(timed_both(call))
    wall = {label: statistics.median(v[0] for v in values) for label, values in samples.items()}
    cpu = {label: statistics.median(v[1] for v in values) for label, values in samples.items()}

    def ratio(label: str, base: str = "read") -> str:
        return f"{cpu[label] / cpu[base]:.2f}x (wall {wall[label] / wall[base]:.2f}x)"

    return {
        "weights": f"{name} ({n / 1e6:.1f}M in {len(shapes)} arrays)",
        "read pass": f"{wall['read'] * 1e3:.1f} ms (CPU {cpu['read'] * 1e3:.1f} ms)",
        "global / read": ratio("global"),
        "layer / read": ratio("layer"),
        "layer / global": f"**{cpu['layer'] / cpu['global']:.2f}** "
        f"(wall {wall['layer'] / wall['global']:.2f})",
        "min_layer_density=0.01 / read": ratio("floor"),
        "lamp / read": ratio("lamp"),
        "lamp + min_layer_density=0.01 / read": ratio("lamp_floor"),
        "lamp extra B/weight": f"{lamp_bytes / n:.2f}",
        "load (1 min)": f"{os.getloadavg()[0]:.1f}",
    }


def _masks_of(strategy: str, weights: list[np.ndarray]) -> list[np.ndarray]:
    return compute_masks(strategy, 0.5, trained=weights, initial=weights)


def run_many(repeats: int) -> list[dict[str, str]]:
    """Per-array cost of each strategy on 1,000 and 8,000 arrays of 8x8 weights, and its growth."""
    rng = np.random.default_rng(0)
    rows = []
    strategies = ["large_final", "large_final_global", "random", "random_erk", "lamp"]
    costs: dict[str, dict[int, float]] = {s: {} for s in strategies}
    for count in (1000, 8000):
        weights = [rng.standard_normal((8, 8), dtype=np.float32) for _ in range(count)]
        for strategy in strategies:
            costs[strategy][count] = timed(partial(_masks_of, strategy, weights), repeats) / count
    for strategy, by_count in costs.items():
        rows.append(
            {
                "strategy": strategy,
                "per array, 1,000 arrays": f"{by_count[1000] * 1e6:.0f} us",
                "per array, 8,000 arrays": f"{by_count[8000] * 1e6:.0f} us",
                "growth (8,000 / 1,000)": f"**{by_count[8000] / by_count[1000]:.2f}**",
            }
        )
    return rows


def timed_both(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall and process CPU seconds of one call (after a garbage collection)."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def print_table(rows: list[dict[str, str]]) -> None:
    header = list(rows[0])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row[h] for h in header) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", choices=["mlp1m", "conv5m", "gpt2", "resnet50"], default=None)
    parser.add_argument(
        "--scopes",
        action="store_true",
        help="layer vs global scope, min_layer_density and lamp at 1M to 124M weights",
    )
    parser.add_argument(
        "--many", action="store_true", help="per-array cost on 1,000 and 8,000 small arrays"
    )
    args = parser.parse_args()
    if args.many:
        print_table(run_many(max(1, args.repeats // 2)))
        return
    cases = {
        "mlp1m": ("MLP 784-1024-256-10", mlp_1m_shapes()),
        "conv5m": ("3x3 conv stack", convnet_5m_shapes()),
        "resnet50": ("ResNet-50", resnet50_shapes()),
        "gpt2": ("GPT-2 small", gpt2_small_shapes()),
    }
    if args.scopes:
        print_table(
            [
                run_scopes(label, shapes, args.fraction, args.repeats)
                for key, (label, shapes) in cases.items()
                if args.only in (None, key)
            ]
        )
        return
    print_table(
        [
            run(label, shapes, args.fraction, args.repeats)
            for key, (label, shapes) in cases.items()
            if key in ("gpt2", "resnet50") and args.only in (None, key)
        ]
    )


if __name__ == "__main__":
    main()
