"""``ltp imp``: a level's runs trained together vs ``--sequential`` (goal: >= 3x), per framework.

Runs the real command in this process (``ltp_core.cli.main``) for each of ``--frameworks``
(default ``torch,keras``; Keras on the backend ``KERAS_BACKEND`` names, TensorFlow when unset,
set before Keras is imported), LeNet-300-100, 2 seeds x 3 arms
(ticket, random_reinit, random_prune) per level, on digits and, when its files are in
``--fashion-dir`` (default ``/usr/share/datasets/fashion-mnist``), on Fashion-MNIST. Batched and
sequential alternate within each round so machine noise hits both; each run writes to a fresh
folder, after one untimed warm-up run (imports, data files). Reported per dataset: median wall
seconds of each, their ratio, the same for process CPU seconds (less sensitive to other work on
the machine), and the 1-minute load average.

Usage::

    python benchmarks/bench_imp.py                          # 3 rounds, 3 levels, 1000 steps
    python benchmarks/bench_imp.py --rounds 1 --levels 2 --iterations 300
    python benchmarks/bench_imp.py --frameworks keras --rounds 1 --levels 2 --iterations 500
    python benchmarks/bench_imp.py --frameworks torch --model user_models:residual_mlp
    KERAS_BACKEND=torch python benchmarks/bench_imp.py --frameworks keras --rounds 1
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # before anything imports Keras

from ltp_core.cli import main as ltp


def _run(
    args: argparse.Namespace, dataset: list[str], sequential: bool, framework: str = "torch"
) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as out:
        argv = [
            "imp",
            *dataset,
            "--framework",
            framework,
            "--model",
            args.model,
            "--levels",
            str(args.levels),
            "--seeds",
            "2",
            "--iterations",
            str(args.iterations),
            "--out",
            out,
            "--no-plots",
            "--quiet",
        ]
        if sequential:
            argv.append("--sequential")
        wall, cpu = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            ltp(argv)
        return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument(
        "--model",
        default="lenet300_100",
        help="a built-in model, or module:function such as user_models:residual_mlp (a user's "
        "own model, trained together through vmap; benchmarks/ is on the import path)",
    )
    parser.add_argument(
        "--fashion-dir", type=Path, default=Path("/usr/share/datasets/fashion-mnist")
    )
    parser.add_argument(
        "--frameworks", default="torch,keras", help="comma-separated: torch, keras (default both)"
    )
    parser.add_argument(
        "--keras-batched",
        choices=["auto", "always"],
        default="auto",
        help="'always': KerasBackend(batched=True), stacked replicas on TensorFlow and JAX too "
        "(by default only the torch backend of Keras batches)",
    )
    args = parser.parse_args()
    if args.keras_batched == "always" and "keras" in args.frameworks:
        import functools

        import ltp_keras.experiment

        backend = functools.partial(ltp_keras.experiment.KerasBackend, batched=True)
        ltp_keras.experiment.KerasBackend = backend  # type: ignore[misc]  # what load_backend finds
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    unknown = sorted(set(frameworks) - {"torch", "keras"})
    if unknown or not frameworks:
        parser.error(f"--frameworks takes torch and/or keras. Received: {args.frameworks!r}")
    logging.disable(logging.WARNING)
    datasets = {"digits": ["--dataset", "digits"]}
    if args.fashion_dir.is_dir():
        datasets["fashion_mnist"] = [
            "--dataset",
            "fashion_mnist",
            "--data-dir",
            os.fspath(args.fashion_dir),
            "--no-download",
        ]
    sys.path.insert(0, os.fspath(Path(__file__).resolve().parent))  # user_models
    runs = 2 * (1 + 3 * args.levels)
    print(
        f"ltp imp {args.model}, 2 seeds, {args.levels} levels x 3 arms ({runs} trainings of "
        f"{args.iterations} steps), {args.rounds} rounds, torch threads 1, "
        f"Keras backend {os.environ['KERAS_BACKEND']} (batched: {args.keras_batched})"
    )
    for framework, (name, dataset) in (
        (framework, item) for framework in frameworks for item in datasets.items()
    ):
        warm = argparse.Namespace(**{**vars(args), "levels": 1, "iterations": 10})
        # imports, data loading, compilation of the warm-up's shapes: paid once, not timed
        _run(warm, dataset, False, framework)
        times: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        loads = []
        for _ in range(args.rounds):
            for sequential in (True, False):
                times[sequential].append(_run(args, dataset, sequential, framework))
                loads.append(os.getloadavg()[0])
        seq_wall = statistics.median(t[0] for t in times[True])
        bat_wall = statistics.median(t[0] for t in times[False])
        seq_cpu = statistics.median(t[1] for t in times[True])
        bat_cpu = statistics.median(t[1] for t in times[False])
        print(
            f"{framework} {name}: sequential {seq_wall:.1f}s wall / {seq_cpu:.1f}s cpu, batched "
            f"{bat_wall:.1f}s wall / {bat_cpu:.1f}s cpu; sequential/batched wall "
            f"{seq_wall / bat_wall:.2f}x, cpu {seq_cpu / bat_cpu:.2f}x "
            f"(load average {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores)"
        )


if __name__ == "__main__":
    main()
