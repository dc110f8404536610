"""``ltp imp/oneshot --model package.module:function --dataset file.npz`` with PyTorch."""

from __future__ import annotations

import hashlib
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
    from torch import nn

    def cnn(input_shape, num_classes):
        channels, height, width = input_shape
        return nn.Sequential(
            nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(4 * height * width, num_classes),
        )

    def mlp(input_shape, num_classes):
        (features,) = input_shape
        return nn.Sequential(nn.Linear(features, 16), nn.ReLU(), nn.LazyLinear(num_classes))

    class ResidualBN(nn.Module):
        def __init__(self, features, num_classes):
            super().__init__()
            self.inp = nn.Linear(features, 12)
            self.norm = nn.BatchNorm1d(12)
            self.block = nn.Sequential(nn.Linear(12, 12), nn.GELU(), nn.LayerNorm(12))
            self.head = nn.Linear(12, num_classes)

        def forward(self, x):
            h = self.norm(self.inp(x.flatten(1))).relu()
            return self.head(h + self.block(h))

    def residual_bn(input_shape, num_classes):
        features = 1
        for size in input_shape:
            features *= size
        return ResidualBN(features, num_classes)

    def pair(input_shape, num_classes):
        return _Pair(cnn(input_shape, num_classes))

    class _Pair(nn.Module):
        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, x):
            return self.body(x), x

    def one_output(input_shape, num_classes):
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(1))

    def probabilities(input_shape, num_classes):
        return nn.Sequential(cnn(input_shape, num_classes), nn.Softmax(dim=1))

    def float64(input_shape, num_classes):
        return cnn(input_shape, num_classes).double()

    def wide_head(input_shape, num_classes):
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes + 5))

    def lazy_batchnorm(input_shape, num_classes):
        return nn.Sequential(
            nn.Flatten(),
            nn.LazyLinear(8),
            nn.LazyBatchNorm1d(),
            nn.ReLU(),
            nn.LazyLinear(num_classes),
        )

    def broken(input_shape, num_classes):
        raise ZeroDivisionError("no model today")

    def not_a_model(input_shape, num_classes):
        return "a string"

    value = 3
    """
)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "user_nets_for_ltp.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (120, 6, 6), dtype=np.uint8)
    labels = np.array([3, 5, 9])[rng.integers(0, 3, 120)]
    np.savez(
        tmp_path / "images.npz",
        x_train=images[:90],
        y_train=labels[:90],
        x_test=images[90:],
        y_test=labels[90:],
    )
    flat = rng.random((80, 10)).astype(np.float64)
    np.savez(
        tmp_path / "flat.npz",
        x_train=flat[:60],
        y_train=(flat[:60, 0] > 0.5).astype(float),
        x_test=flat[60:],
        y_test=(flat[60:, 0] > 0.5).astype(float),
    )
    yield tmp_path
    sys.modules.pop("user_nets_for_ltp", None)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(argv)
        message = ""
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
        message = exit_.code if isinstance(exit_.code, str) else ""
    err = capsys.readouterr().err + message
    return code, err


SHORT = ["--iterations", "8", "--eval-every", "4", "--batch-size", "16", "--quiet", "--no-plots"]


def test_imp_on_user_model_and_images(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(
        [
            "imp",
            "--model",
            "user_nets_for_ltp:cnn",
            "--dataset",
            "images.npz",
            "--levels",
            "1",
            "--out",
            "run",
            *SHORT,
        ],
        capsys,
    )
    assert code == 0, err
    document = json.loads((workspace / "run/results.json").read_text())
    config = document["config"]
    assert config["model"] == "user_nets_for_ltp:cnn"
    assert config["dataset"] == "images.npz" and config["data_source"] == "images.npz"
    digest = hashlib.sha256((workspace / "images.npz").read_bytes()).hexdigest()
    assert config["data_sha256"] == digest
    arms = {(r["level"], r["arm"]) for r in document["records"]}
    assert arms == {(0, "ticket"), (1, "ticket"), (1, "random_reinit"), (1, "random_prune")}
    # conv pruned at 10% per level, the output (last linear) layer at 10%
    ticket = next(r for r in document["records"] if r["level"] == 1 and r["arm"] == "ticket")
    assert ticket["layer_density"] == pytest.approx([1 - 3 / 36, 1 - 43 / 432])


@pytest.mark.parametrize("mode", [[], ["--sequential"]], ids=["batched", "sequential"])
def test_imp_on_a_user_model_with_batchnorm_and_its_own_forward(
    workspace: Path, capsys: pytest.CaptureFixture[str], mode: list[str]
) -> None:
    # BatchNorm's num_batches_tracked is a 0-d buffer: restoring a level's start weights used to
    # fail at level 1 ("output with shape [] doesn't match the broadcast shape [1]").
    argv = ["imp", "--model", "user_nets_for_ltp:residual_bn", "--dataset", "images.npz"]
    code, err = run([*argv, "--levels", "2", "--seeds", "2", "--out", "run", *SHORT, *mode], capsys)
    assert code == 0, err
    records = json.loads((workspace / "run/results.json").read_text())["records"]
    assert len(records) == 2 * (1 + 2 * 3)
    together = {r["extra"].get("batched_replicas") for r in records if r["level"] > 0}
    assert together == ({None} if mode else {6})  # a level's 6 runs trained together


def test_oneshot_on_flat_features_with_float_labels(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(
        [
            "oneshot",
            "--model",
            "user_nets_for_ltp:mlp",
            "--dataset",
            "flat.npz",
            "--strategies",
            "large_final",
            "--out",
            "one",
            *SHORT,
        ],
        capsys,
    )
    assert code == 0, err
    assert "large_final" in (workspace / "one/table.md").read_text()


@pytest.mark.parametrize(
    ("model", "dataset", "message"),
    [
        ("user_nets_for_ltp:nope", "images.npz", "has no 'nope'"),
        ("missing_module_xyz:net", "images.npz", "Cannot import 'missing_module_xyz'"),
        ("user_nets_for_ltp:value", "images.npz", "not a function"),
        ("not a reference:x", "images.npz", "--model"),
        ("user_nets_for_ltp:broken", "images.npz", "raised ZeroDivisionError: no model today"),
        ("user_nets_for_ltp:not_a_model", "images.npz", "must return a torch.nn.Module"),
        ("user_nets_for_ltp:pair", "images.npz", "Received: an output of type tuple"),
        ("user_nets_for_ltp:one_output", "images.npz", "Received: output of shape (2, 1)"),
        ("user_nets_for_ltp:probabilities", "images.npz", "Remove the final softmax"),
        ("user_nets_for_ltp:float64", "images.npz", "of dtype torch.float64"),
        ("user_nets_for_ltp:cnn", "nothere.npz", "No data file"),
        ("user_nets_for_ltp:cnn", "bad_missing.npz", "lacks the arrays ['y_test']"),
        ("user_nets_for_ltp:cnn", "bad_length.npz", "len(y_train)=5"),
        ("user_nets_for_ltp:cnn", "bad_labels.npz", "integer class labels"),
    ],
)
def test_bad_models_and_data_are_one_error_line(
    workspace: Path, capsys: pytest.CaptureFixture[str], model: str, dataset: str, message: str
) -> None:
    x = np.zeros((10, 6, 6), np.uint8)
    y = np.arange(10) % 2
    np.savez(workspace / "bad_missing.npz", x_train=x, y_train=y, x_test=x)
    np.savez(workspace / "bad_length.npz", x_train=x, y_train=y[:5], x_test=x, y_test=y)
    np.savez(workspace / "bad_labels.npz", x_train=x, y_train=y + 0.5, x_test=x, y_test=y)
    code, err = run(
        ["imp", "--model", model, "--dataset", dataset, "--levels", "1", "--out", "bad", *SHORT],
        capsys,
    )
    lines = [line for line in err.strip().splitlines() if line.startswith("ltp: error: ")]
    assert code in (1, 2) and len(lines) == 1 and "Traceback" not in err, err
    assert message in lines[0]
    assert not (workspace / "bad/results.json").exists()


def test_a_wider_head_warns_once_and_lazy_batchnorm_builds(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the output check runs in evaluation mode: a lazy BatchNorm is materialized by two examples
    # (one example in training mode failed: "Expected more than 1 value per channel")
    argv = ["imp", "--dataset", "images.npz", "--levels", "1", "--seeds", "2", *SHORT]
    code, err = run([*argv, "--model", "user_nets_for_ltp:lazy_batchnorm", "--out", "a"], capsys)
    assert code == 0, err
    with pytest.warns(UserWarning, match="returns 8 logits per example") as caught:
        code, err = run([*argv, "--model", "user_nets_for_ltp:wide_head", "--out", "b"], capsys)
    assert code == 0, err
    wide = [w for w in caught if "but the data has 3 classes" in str(w.message)]
    assert len(wide) == 1  # once, not once per model built (2 seeds, a random_reinit each)


def test_resuming_after_the_factory_changed_the_model_is_refused(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["imp", "--model", "user_nets_for_ltp:cnn", "--dataset", "images.npz", *SHORT]
    code, err = run([*argv, "--levels", "1", "--out", "run"], capsys)
    assert code == 0, err
    code, err = run([*argv, "--levels", "2", "--out", "run"], capsys)  # same model: extends
    assert code == 0, err
    # the user edits the factory: same reference, same tensor shapes, another activation
    (workspace / "user_nets_for_ltp.py").write_text(MODULE.replace("nn.ReLU()", "nn.Tanh()"))
    sys.modules.pop("user_nets_for_ltp", None)
    before = (workspace / "run/results.json").read_text()
    code, err = run([*argv, "--levels", "3", "--out", "run"], capsys)
    lines = [line for line in err.strip().splitlines() if line.startswith("ltp: error: ")]
    assert code == 1 and len(lines) == 1, err
    assert "differs in ['model_sha256']" in lines[0]
    assert "is not the one this experiment started with" in lines[0]
    assert (workspace / "run/results.json").read_text() == before  # nothing trained or written
    # a folder written before the check existed resumes (and records the model from now on)
    document = json.loads(before)
    del document["config"]["model_sha256"]
    (workspace / "run/results.json").write_text(json.dumps(document))
    code, err = run([*argv, "--levels", "3", "--out", "run"], capsys)
    assert code == 0, err
    assert "model_sha256" in json.loads((workspace / "run/results.json").read_text())["config"]
