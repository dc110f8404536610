"""Data-parallel training with PrunerCallback on CPU: tf.distribute and keras.distribution.

Each case runs in a fresh interpreter so that device settings (two logical CPU devices for
TensorFlow, two XLA host devices for JAX) apply before the framework starts. Both cases run
whatever ``KERAS_BACKEND`` the test session uses, since each script picks its own backend.
The script trains two pruning levels and prints a JSON report of what it checked.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

# Shared part: two pruning levels of a small MLP, trained with PrunerCallback; `check(level)`
# records, for every prunable variable, whether each replica's copy has zeros where pruned,
# whether the copies agree, and whether the kept weights trained.
COMMON = """
import json
import keras
import numpy as np
from ltp_keras import LotteryTicketPruner, PrunerCallback


def build():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((10,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    return model


def run_levels(model, copies):
    pruner = LotteryTicketPruner(model, seed=0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 10)).astype("float32")
    y = rng.normal(size=(64, 3)).astype("float32")
    report = []
    for fraction in (0.5, 0.4):
        pruner.calc_prune_mask(model, fraction, "smallest_weights")
        variables = pruner.prunable_variables(model)
        before = [keras.ops.convert_to_numpy(v.value).copy() for v in variables]
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[PrunerCallback(pruner)])
        for variable, mask, old in zip(variables, pruner.masks, before):
            values = copies(variable)
            report.append({
                "copies": len(values),
                "zeros": [bool(np.all(v[~mask] == 0)) for v in values],
                "agree": all(np.array_equal(values[0], v) for v in values),
                "trained": bool(np.any(values[0][mask] != old[mask])),
                "sparsity": float(1 - mask.mean()),
            })
    print("REPORT " + json.dumps(report))
"""

TF_SCRIPT = """
import os
os.environ["KERAS_BACKEND"] = "tensorflow"
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
{common}
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
with strategy.scope():
    model = build()


def copies(variable):
    # The Keras variable wraps a MirroredVariable: one tf.Variable per replica.
    return [np.asarray(t) for t in strategy.experimental_local_results(variable.value)]


run_levels(model, copies)
"""

JAX_SCRIPT = """
import os
os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import jax
{common}
devices = jax.devices("cpu")
assert len(devices) == 2, devices
keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
model = build()


def copies(variable):
    # Replicated weights: one full copy per device.
    return [np.asarray(shard.data) for shard in variable.value.addressable_shards]


run_levels(model, copies)
"""


def _run(script: str) -> list[dict[str, Any]]:
    env = dict(os.environ)
    env.pop("KERAS_BACKEND", None)
    env.pop("XLA_FLAGS", None)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    code = textwrap.dedent(script).replace("{common}", COMMON)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, done.stdout[-2000:] + done.stderr[-2000:]
    report: list[dict[str, Any]] = json.loads(lines[-1][len("REPORT ") :])
    return report


def _check(report: list[dict[str, Any]]) -> None:
    assert len(report) == 4  # two levels x two kernels
    for entry in report:
        assert entry["copies"] == 2, entry
        assert all(entry["zeros"]), entry
        assert entry["agree"], entry
        assert entry["trained"], entry
    assert report[0]["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert report[2]["sparsity"] == pytest.approx(0.7, abs=0.02)  # 0.5 then 0.4 of the rest


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs tensorflow")
def test_tensorflow_mirrored_strategy_two_cpu_replicas() -> None:
    _check(_run(TF_SCRIPT))


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs jax")
def test_jax_data_parallel_two_host_devices() -> None:
    _check(_run(JAX_SCRIPT))
