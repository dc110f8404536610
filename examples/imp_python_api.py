"""Run the ``ltp imp`` experiment from Python: IMP with controls, results, table and plots.

This is what ``ltp imp`` does, spelled out with the Python API behind it: an
:class:`~ltp_core.experiment.ImpConfig` describes the experiment, a backend (PyTorch or Keras)
trains, and :func:`~ltp_core.experiment.run_imp` runs the levels, the ``random_reinit`` and
``random_prune`` controls, and writes ``results.json``, ``results.csv`` and ``table.md`` to the
output folder after every level. Running it again with the same folder resumes.

Usage::

    python examples/imp_python_api.py                      # LeNet-300-100 on digits, PyTorch
    python examples/imp_python_api.py --framework keras    # the same with Keras 3
    python examples/imp_python_api.py --smoke              # 2 levels of 50 steps (tests)
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from ltp_core.datasets import load_dataset
from ltp_core.experiment import ImpConfig, load_backend, run_imp, summary_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=["torch", "keras"], default="torch")
    parser.add_argument("--levels", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=1500, help="training steps per run")
    parser.add_argument("--out", type=Path, default=Path("runs/imp_python_api"))
    parser.add_argument("--smoke", action="store_true", help="tiny run for tests")
    args = parser.parse_args()
    if args.smoke or os.environ.get("LTP_EXAMPLE_SMOKE"):
        args.levels, args.iterations = 2, 50
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    config = ImpConfig(
        framework=args.framework,
        model="lenet300_100",
        dataset="digits",
        levels=args.levels,
        rate=0.2,  # prune 20% of the remaining weights per level; the output layer 10%
        scope="layer",
        strategy="large_final",
        rewind_iteration=0,  # rewind to initialization (K > 0: to the weights after K steps)
        controls=("random_reinit", "random_prune"),
        seeds=1,
        iterations=args.iterations,
    )
    data = load_dataset(config.dataset, seed=config.first_seed)
    backend = load_backend(config.framework)
    store = run_imp(config, backend, data, args.out)

    print(summary_table(store.records, "imp"))
    best = max((r for r in store.records if r.arm == "ticket"), key=lambda r: r.test_accuracy)
    print(f"best ticket: level {best.level}, {best.weights_remaining:.1%} of weights remain")
    try:
        from ltp_core.experiment.plots import experiment_title, plot_imp

        title = experiment_title(config.to_dict())  # "lenet300_100 on digits (torch)"
        for path in plot_imp(store.records, args.out, title=title):
            print(f"wrote {path}")
    except ImportError:
        print("install matplotlib for plots: pip install 'lottery-tickets[plot]'")


if __name__ == "__main__":
    main()
