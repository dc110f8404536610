"""``fit`` cost of ``ltp_keras.PrunerCallback``: per step, and per whole ``fit`` call.

Each Keras backend runs in its own subprocess (the backend is fixed when Keras is imported).
Each model (LeNet-300-100 on 28x28 inputs, a small conv net on 32x32x3 inputs) trains on random
data with Adam, batch size 60. The same masks (50% of each kernel, smallest weights) are enforced
in several ways.

**Per step** (steady state, compiled step excluded):

* ``PrunerCallback``: the default (``method="auto"``): masked gradients on TensorFlow and torch
  for optimizers where that is exact (Adam here), the mask constraint on JAX;
* ``PrunerCallback constraint``: ``method="constraint"``, the mask constraint that the optimizer
  applies after each update (the only method before gradient masking existed);
* ``PrunerCallback tf.where``: (TensorFlow only) the default as it was before masks became
  integer bit masks there: ``tf.where`` with boolean masks, which broadcasts a scalar zero and
  measured about twice the cost of the bitwise AND per kernel outside XLA;
* ``assign``: a callback that zeroes each kernel with backend ops after every batch (on JAX
  this forces the trainer to sync its state into the variables every batch);
* ``set_weights``: the old ``lottery_ticket_pruner`` approach, ``get_weights``/``set_weights``
  of masked NumPy arrays after every batch.

Variants are timed in interleaved rounds (in alternating order) so machine noise hits all
alike. In every round each variant runs one ``fit`` of ``1 + epochs`` epochs; the first
(compiling) epoch is ignored and the fastest of the others counts.

**Train step** (TensorFlow): the compiled train function that ``fit`` used, called directly
on one batch in alternating blocks; the fastest block per variant (least disturbed by other
processes) against plain's isolates the masking ops from the ``fit`` loop and from noise.

**Whole fit** (LeNet-300-100, the user who calls ``fit(epochs=1)`` in a loop): every round runs
one ``fit`` of ``--fit-steps`` steps per variant, after one warm-up ``fit`` each:

* ``plain``: Keras keeps its compiled train function across ``fit`` calls;
* ``PrunerCallback``: one callback instance reused across the fits; it keeps its masked train
  function while nothing it depends on changes;
* ``rebuild every fit``: the same callback forced to rebuild (and so retrace) the train function
  at every ``fit``, which is what ``PrunerCallback`` did before it kept it.

Both wall-clock time and the process's CPU time are recorded: on a shared machine CPU time is
far less disturbed by other processes (with one thread per library, the default here, it is the
work done). Ratios are time relative to plain ``fit`` in the same round, median over rounds
(1.040x = 4% slower than plain).

Usage::

    python benchmarks/bench_keras_callback.py                      # all backends
    python benchmarks/bench_keras_callback.py --backends jax --rounds 3
    python benchmarks/bench_keras_callback.py --sections whole-fit --fit-steps 300
    python benchmarks/bench_keras_callback.py --backends tensorflow --sections train-step
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

VARIANTS = (
    "plain",
    "PrunerCallback",
    "PrunerCallback constraint",
    "PrunerCallback tf.where",
    "assign",
    "set_weights",
)
FIT_VARIANTS = ("plain", "PrunerCallback", "rebuild every fit")
MODELS = ("LeNet-300-100", "small convnet")
SECTIONS = ("per-step", "whole-fit", "train-step")


def _worker(args: argparse.Namespace) -> dict[str, Any]:
    import keras
    import numpy as np
    from keras import layers

    from ltp_keras import LotteryTicketPruner, PrunerCallback

    def lenet() -> tuple[keras.Model, tuple[int, ...]]:
        model = keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                layers.Flatten(),
                layers.Dense(300, activation="relu"),
                layers.Dense(100, activation="relu"),
                layers.Dense(10),
            ]
        )
        return model, (28, 28, 1)

    def convnet() -> tuple[keras.Model, tuple[int, ...]]:
        model = keras.Sequential(
            [
                keras.Input((32, 32, 3)),
                layers.Conv2D(16, 3, padding="same", activation="relu"),
                layers.MaxPooling2D(),
                layers.Conv2D(32, 3, padding="same", activation="relu"),
                layers.MaxPooling2D(),
                layers.Flatten(),
                layers.Dense(10),
            ]
        )
        return model, (32, 32, 3)

    class EpochTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            self.wall: list[float] = []
            self.cpu: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = (time.perf_counter(), time.process_time())

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.wall.append(time.perf_counter() - self.start[0])
            self.cpu.append(time.process_time() - self.start[1])

    class AssignMasks(keras.callbacks.Callback):
        def __init__(self, pruner: LotteryTicketPruner) -> None:
            super().__init__()
            self.pruner = pruner

        def on_train_begin(self, logs: Any = None) -> None:
            variables = self.pruner.prunable_variables(self.model)
            self.pairs = [
                (v, keras.ops.convert_to_tensor(m))
                for v, m in zip(variables, self.pruner.masks, strict=True)
            ]

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.model  # noqa: B018  (on JAX: sync the trainer state into the variables)
            for variable, mask in self.pairs:
                variable.assign(keras.ops.where(mask, variable.value, 0.0))

    class SetWeights(keras.callbacks.Callback):
        def __init__(self, pruner: LotteryTicketPruner) -> None:
            super().__init__()
            self.pruner = pruner

        def on_train_begin(self, logs: Any = None) -> None:
            ids = [id(v) for v in self.pruner.prunable_variables(self.model)]
            positions = [i for i, w in enumerate(self.model.weights) if id(w) in ids]
            masks = [m.astype("float32") for m in self.pruner.masks]
            self.masked = dict(zip(positions, masks, strict=True))

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            weights = self.model.get_weights()
            for i, mask in self.masked.items():
                weights[i] = weights[i] * mask
            self.model.set_weights(weights)

    class WhereMasks(PrunerCallback):
        """The default with boolean masks selected by ``tf.where`` (TensorFlow before)."""

        def on_train_begin(self, logs: Any = None) -> None:
            from ltp_keras import masking

            saved = masking._BITS_MASKS
            masking._BITS_MASKS = False  # the enforcer stores boolean masks: tf.where path
            try:
                super().on_train_begin(logs)
            finally:
                masking._BITS_MASKS = saved

    class RebuildEveryFit(PrunerCallback):
        """The callback as it was: a new (retraced) masked train function at every fit."""

        def on_train_begin(self, logs: Any = None) -> None:
            self._train_function = None
            super().on_train_begin(logs)

    def compiled(builder: Any) -> tuple[keras.Model, LotteryTicketPruner, tuple[int, ...]]:
        keras.utils.set_random_seed(0)
        model, shape = builder()
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        pruner = LotteryTicketPruner(model)
        pruner.calc_prune_mask(model, 0.5, "smallest_weights")
        pruner.apply_pruning(model)
        return model, pruner, shape

    rng = np.random.default_rng(0)
    results: dict[str, Any] = {"backend": keras.backend.backend(), "models": {}, "fits": {}}
    if "whole-fit" in args.sections:
        n = args.batch_size * args.fit_steps
        fit_runs = {}
        for variant in FIT_VARIANTS:
            model, pruner, shape = compiled(lenet)
            extra = {
                "plain": [],
                "PrunerCallback": [PrunerCallback(pruner)],
                "rebuild every fit": [RebuildEveryFit(pruner)],
            }[variant]
            fit_runs[variant] = (model, extra)
        x = rng.normal(size=(n, *shape)).astype("float32")
        y = rng.integers(0, 10, n)
        fit_times: dict[str, dict[str, list[float]]] = {
            v: {"wall": [], "cpu": []} for v in FIT_VARIANTS
        }
        for round_index in range(-1, args.rounds):  # round -1: warm-up (first compilation)
            for variant in FIT_VARIANTS if round_index % 2 == 0 else FIT_VARIANTS[::-1]:
                model, extra = fit_runs[variant]
                start = (time.perf_counter(), time.process_time())
                model.fit(
                    x, y, batch_size=args.batch_size, shuffle=False, verbose=0, callbacks=extra
                )
                if round_index >= 0:
                    fit_times[variant]["wall"].append(time.perf_counter() - start[0])
                    fit_times[variant]["cpu"].append(time.process_time() - start[1])
        results["fits"] = fit_times
    if "train-step" in args.sections and results["backend"] == "tensorflow":
        results["train_step"] = _train_step_times(args, compiled, (lenet, convnet), WhereMasks, rng)
    if "per-step" not in args.sections:
        results["load_average_1min"] = os.getloadavg()[0]
        return results
    variants = [
        v
        for v in VARIANTS
        if (v == "plain" or v in args.variants)
        and (v != "PrunerCallback tf.where" or results["backend"] == "tensorflow")
    ]
    results["variants"] = variants
    for model_name, builder in zip(MODELS, (lenet, convnet), strict=True):
        if model_name not in args.models:
            continue
        n = args.batch_size * args.steps
        runs = {}
        for variant in variants:
            model, pruner, shape = compiled(builder)
            extra = {
                "plain": [],
                "PrunerCallback": [PrunerCallback(pruner)],
                "PrunerCallback constraint": [PrunerCallback(pruner, method="constraint")],
                "PrunerCallback tf.where": [WhereMasks(pruner)],
                "assign": [AssignMasks(pruner)],
                "set_weights": [SetWeights(pruner)],
            }[variant]
            runs[variant] = (model, extra)
        x = rng.normal(size=(n, *shape)).astype("float32")
        y = rng.integers(0, 10, n)
        step_times: dict[str, dict[str, list[float]]] = {
            v: {"wall": [], "cpu": []} for v in variants
        }
        for round_index in range(args.rounds):
            # Alternate the order so that no variant always runs first or last.
            for variant in variants if round_index % 2 == 0 else variants[::-1]:
                model, extra = runs[variant]
                timer = EpochTimer()
                model.fit(
                    x,
                    y,
                    batch_size=args.batch_size,
                    epochs=1 + args.epochs,
                    shuffle=False,
                    verbose=0,
                    callbacks=[*extra, timer],
                )
                step_times[variant]["wall"].append(min(timer.wall[1:]) / args.steps)
                step_times[variant]["cpu"].append(min(timer.cpu[1:]) / args.steps)
        results["models"][model_name] = step_times
    results["load_average_1min"] = os.getloadavg()[0]
    return results


def _train_step_times(
    args: argparse.Namespace, compiled: Any, builders: Any, where_masks: Any, rng: Any
) -> dict[str, dict[str, list[float]]]:
    """TensorFlow: CPU time per call of the compiled train function itself, no ``fit`` loop.

    Each variant's train function is the one ``fit`` used (the callback's masked one, or Keras'
    plain one), called on one repeated batch in blocks of ``--block-steps`` steps, variants
    alternating block by block. The fastest block of each variant is the least disturbed by
    other processes, so its ratio to plain's is the cleanest measure of the masking itself.
    """
    import tensorflow as tf

    from ltp_keras import PrunerCallback

    variants = {
        "plain": lambda pruner: None,
        "PrunerCallback": lambda pruner: PrunerCallback(pruner),
        "PrunerCallback constraint": lambda pruner: PrunerCallback(pruner, method="constraint"),
        "PrunerCallback tf.where": lambda pruner: where_masks(pruner),
    }
    out: dict[str, dict[str, list[float]]] = {}
    for model_name, builder in zip(MODELS, builders, strict=True):
        if model_name not in args.models:
            continue
        functions = {}
        for variant, make in variants.items():
            model, pruner, shape = compiled(builder)
            x = rng.normal(size=(args.batch_size, *shape)).astype("float32")
            y = rng.integers(0, 10, args.batch_size)
            callback = make(pruner)
            callbacks = [] if callback is None else [callback]
            model.fit(x, y, batch_size=args.batch_size, verbose=0, callbacks=callbacks)
            if callback is not None:  # masking on again, with the train function fit used
                callback.on_train_begin()
            iterator = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
            functions[variant] = (model.train_function, iterator)
            for _ in range(5):
                model.train_function(iterator)
        times: dict[str, list[float]] = {v: [] for v in variants}
        order = list(variants)
        for block in range(args.blocks):
            for variant in order if block % 2 == 0 else order[::-1]:
                function, iterator = functions[variant]
                start = time.process_time()
                for _ in range(args.block_steps):
                    logs = function(iterator)
                float(logs["loss"])  # wait for the last step
                times[variant].append((time.process_time() - start) / args.block_steps)
        out[model_name] = times
    out["masking ops"] = _masking_op_times(args)
    return out


def _masking_op_times(args: argparse.Namespace) -> dict[str, list[float]]:
    """CPU time of masking LeNet-300-100's three kernel gradients once, per way of selecting.

    Ten maskings per traced call (each of a fresh read of the gradients), less the same
    function without masking, so the call overhead cancels.
    """
    import numpy as np
    import tensorflow as tf

    from ltp_keras import masking

    rng = np.random.default_rng(0)
    shapes = [(784, 300), (300, 100), (100, 10)]
    grads = [tf.Variable(rng.normal(size=s).astype("float32")) for s in shapes]
    keeps = [rng.random(s) < 0.5 for s in shapes]
    masks = {
        "none": None,
        "tf.where (bool masks)": [tf.Variable(k) for k in keeps],
        "bitwise AND (int32 masks)": [
            tf.Variable(np.where(k, -1, 0).astype("int32")) for k in keeps
        ],
    }
    repeats = 10

    def make(mask_list: Any) -> Any:
        @tf.function
        def run() -> Any:
            total = tf.constant(0.0)
            for _ in range(repeats):
                for i, grad in enumerate(grads):
                    value = grad.read_value()
                    if mask_list is not None:
                        value = masking._select(mask_list[i].value(), value)
                    total += value[0, 0]
            return total

        return run

    functions = {name: make(mask_list) for name, mask_list in masks.items()}
    for function in functions.values():
        for _ in range(3):
            function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for block in range(args.blocks):
        for name in functions if block % 2 == 0 else list(functions)[::-1]:
            start = time.process_time()
            for _ in range(args.block_steps):
                float(functions[name]())
            times[name].append((time.process_time() - start) / args.block_steps / repeats)
    return times


def _run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    if args.threads:
        threads = str(args.threads)
        env.update(
            OMP_NUM_THREADS=threads,
            TF_NUM_INTRAOP_THREADS=threads,
            TF_NUM_INTEROP_THREADS=threads,
            XLA_FLAGS=f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={threads}",
        )
    command = [sys.executable, __file__, "--worker", *sys.argv[1:]]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{backend} worker failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ratio(times: list[float], plain: list[float]) -> float:
    return statistics.median(t / p for t, p in zip(times, plain, strict=True))


def _table(all_results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = []
    if "whole-fit" in args.sections:
        lines += [
            f"Whole fit: LeNet-300-100, Adam, batch {args.batch_size}, one fit of "
            f"{args.fit_steps} steps per variant per round, {args.rounds} rounds after a "
            f"warm-up fit, {args.threads or 'default'} thread(s); ratio = fit time / plain "
            f"fit's in the same round (median over rounds)",
            "",
            "| backend | variant | fit time (s) | CPU time vs plain | wall time vs plain |",
            "|---|---|---:|---:|---:|",
        ]
        for result in all_results:
            times = result["fits"]
            for variant in FIT_VARIANTS:
                lines.append(
                    f"| {result['backend']} | {variant} | "
                    f"{statistics.median(times[variant]['wall']):.3f} | "
                    f"{_ratio(times[variant]['cpu'], times['plain']['cpu']):.3f}x | "
                    f"{_ratio(times[variant]['wall'], times['plain']['wall']):.3f}x |"
                )
        lines.append("")
    steps = [r for r in all_results if r.get("train_step")]
    if "train-step" in args.sections and steps:
        lines += [
            f"Train step (TensorFlow): the compiled train function called directly, Adam, batch "
            f"{args.batch_size}, {args.blocks} alternating blocks of {args.block_steps} steps, "
            f"CPU time; ratio = fastest block / plain's fastest (median of the paired block "
            f"ratios in brackets)",
            "",
            "| model | variant | CPU ms/step (fastest) | vs plain (fastest) | vs plain (paired) |",
            "|---|---|---:|---:|---:|",
        ]
        for result in steps:
            for model_name, times in result["train_step"].items():
                if model_name == "masking ops":
                    continue
                for variant, mine in times.items():
                    lines.append(
                        f"| {model_name} | {variant} | {min(mine) * 1e3:.3f} | "
                        f"{min(mine) / min(times['plain']):.3f}x | "
                        f"({_ratio(mine, times['plain']):.3f}x) |"
                    )
        ops = steps[0]["train_step"]["masking ops"]
        base = min(ops["none"])
        lines += [
            "",
            "Masking LeNet-300-100's three kernel gradients once (266k entries), CPU time "
            "beyond reading them (fastest block): "
            + ", ".join(
                f"{name} {(min(t) - base) * 1e6:.0f} us"
                for name, t in ops.items()
                if name != "none"
            ),
            "",
            f"1-minute load average at the end: {steps[0]['load_average_1min']:.1f}",
            "",
        ]
    if "per-step" in args.sections:
        lines += [
            f"Per step: Adam, batch {args.batch_size}, {args.steps} steps/epoch, "
            f"{args.rounds} rounds x {args.epochs} timed epochs (fastest counts), "
            f"{args.threads or 'default'} thread(s); ratio = time per step / plain fit's in "
            f"the same round (median over rounds)",
            "",
            "| backend | model | variant | steps/s | CPU time vs plain | wall time vs plain |",
            "|---|---|---|---:|---:|---:|",
        ]
        for result in all_results:
            for model_name, times in result["models"].items():
                plain = times["plain"]
                for variant in result["variants"]:
                    mine = times[variant]
                    rate = 1.0 / statistics.median(mine["wall"])
                    lines.append(
                        f"| {result['backend']} | {model_name} | {variant} | {rate:.0f} | "
                        f"{_ratio(mine['cpu'], plain['cpu']):.3f}x | "
                        f"{_ratio(mine['wall'], plain['wall']):.3f}x |"
                    )
        loads = ", ".join(
            f"{r['backend']} {r['load_average_1min']:.1f}" for r in all_results if r["models"]
        )
        lines += ["", f"1-minute load average at the end of each backend's run: {loads}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "torch", "jax"])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per fit")
    parser.add_argument("--steps", type=int, default=30, help="steps per epoch")
    parser.add_argument("--batch-size", type=int, default=60)
    parser.add_argument("--fit-steps", type=int, default=300, help="steps per whole fit")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument(
        "--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS), help="per-step variants"
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--blocks", type=int, default=60, help="train-step: blocks per variant")
    parser.add_argument("--block-steps", type=int, default=10, help="train-step: steps per block")
    parser.add_argument("--threads", type=int, default=1, help="0 = library default")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args)))
        return
    results = [_run_backend(backend, args) for backend in args.backends]
    print(_table(results, args))


if __name__ == "__main__":
    main()
