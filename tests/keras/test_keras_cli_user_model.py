"""``ltp imp --framework keras --model package.module:function --dataset file.npz``."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ltp_core.cli import main

MODULE = textwrap.dedent(
    """
    import keras

    def small_cnn(input_shape, num_classes):
        return keras.Sequential([
            keras.Input(input_shape),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(num_classes),
        ])

    def torch_like(input_shape, num_classes):
        return object()

    def probabilities(input_shape, num_classes):
        return keras.Sequential([
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(num_classes, activation="softmax"),
        ])

    def two_outputs(input_shape, num_classes):
        inputs = keras.Input(input_shape)
        flat = keras.layers.Flatten()(inputs)
        return keras.Model(inputs, [keras.layers.Dense(num_classes)(flat), flat])

    def one_output(input_shape, num_classes):
        return keras.Sequential(
            [keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(1)]
        )
    """
)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "keras_user_nets_for_ltp.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (100, 6, 6, 1), dtype=np.uint8)
    labels = rng.integers(0, 3, 100)
    np.savez(
        tmp_path / "images.npz",
        x_train=images[:80],
        y_train=labels[:80],
        x_test=images[80:],
        y_test=labels[80:],
    )
    yield tmp_path
    sys.modules.pop("keras_user_nets_for_ltp", None)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(argv)
        message = ""
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
        message = exit_.code if isinstance(exit_.code, str) else ""
    return code, capsys.readouterr().err + message


ARGS = ["imp", "--framework", "keras", "--dataset", "images.npz", "--levels", "1", "--controls"]
SHORT = ["--iterations", "6", "--eval-every", "3", "--batch-size", "16", "--quiet", "--no-plots"]


def test_keras_user_model(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(
        [*ARGS, "--model", "keras_user_nets_for_ltp:small_cnn", "--out", "run", *SHORT], capsys
    )
    assert code == 0, err
    document = json.loads((workspace / "run/results.json").read_text())
    assert document["config"]["model"] == "keras_user_nets_for_ltp:small_cnn"
    assert len(document["config"]["data_sha256"]) == 64
    assert [r["level"] for r in document["records"]] == [0, 1]


def test_keras_factory_returning_something_else(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(
        [*ARGS, "--model", "keras_user_nets_for_ltp:torch_like", "--out", "bad", *SHORT], capsys
    )
    lines = [line for line in err.strip().splitlines() if line.startswith("ltp: error: ")]
    assert code == 1 and len(lines) == 1 and "must return a keras.Model" in lines[0], err


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("probabilities", "Remove the final softmax"),
        ("two_outputs", "Received: an output of type list"),
        ("one_output", "Received: output of shape (2, 1)"),
    ],
)
def test_keras_models_not_returning_logits_are_one_error_line(
    workspace: Path, capsys: pytest.CaptureFixture[str], factory: str, message: str
) -> None:
    # before: a softmax head trained silently with softmax applied twice; the others failed with
    # "unexpected IndexError/AttributeError ... please report it"
    model = f"keras_user_nets_for_ltp:{factory}"
    code, err = run([*ARGS, "--model", model, "--out", "bad", *SHORT], capsys)
    lines = [line for line in err.strip().splitlines() if line.startswith("ltp: error: ")]
    assert code == 1 and len(lines) == 1 and message in lines[0], err
    assert not (workspace / "bad/results.json").exists()


def test_keras_model_structure_is_recorded_and_a_changed_model_is_refused(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*ARGS, "--model", "keras_user_nets_for_ltp:small_cnn", *SHORT]
    code, err = run([*argv, "--out", "run"], capsys)
    assert code == 0, err
    config = json.loads((workspace / "run/results.json").read_text())["config"]
    assert len(config["model_sha256"]) == 64
    # generated layer names differ between builds in one process (conv2d, conv2d_1...), the
    # structure does not: the same command resumes
    code, err = run([*argv, "--levels", "2", "--out", "run"], capsys)
    assert code == 0, err
    changed = MODULE.replace('activation="relu"', 'activation="tanh"')
    (workspace / "keras_user_nets_for_ltp.py").write_text(changed)
    sys.modules.pop("keras_user_nets_for_ltp", None)
    code, err = run([*argv, "--levels", "2", "--out", "run"], capsys)
    lines = [line for line in err.strip().splitlines() if line.startswith("ltp: error: ")]
    assert code == 1 and len(lines) == 1 and "is not the one this experiment" in lines[0], err
