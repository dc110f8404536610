"""The PyTorch experiment backend: models, weights in and out, masked training, the ``ltp`` CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ltp_core.cli import main
from ltp_core.datasets import Dataset, load_dataset
from ltp_core.experiment.backend import TrainingBackend, TrainSettings, load_backend
from ltp_core.experiment.models import MODEL_SPECS
from ltp_torch.experiment import TorchBackend, resolve_device

SHAPES = {"digits": (8, 8, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3)}


@pytest.fixture(scope="module")
def digits() -> Dataset:
    pytest.importorskip("sklearn")
    return load_dataset("digits")


@pytest.fixture(scope="module")
def backend() -> TorchBackend:
    return TorchBackend()


def half_masks(weights: list[np.ndarray]) -> list[np.ndarray]:
    """Keep the larger half of each array by magnitude."""
    return [np.abs(w) >= np.median(np.abs(w)) for w in weights]


# -- models --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape_name", sorted(SHAPES))
@pytest.mark.parametrize("model_name", sorted(MODEL_SPECS))
def test_every_model_builds_and_runs(
    backend: TorchBackend, model_name: str, shape_name: str
) -> None:
    shape = SHAPES[shape_name]
    net = backend.build(model_name, shape, 10, seed=0)
    height, width, channels = shape
    with torch.no_grad():
        logits = net(torch.rand(2, channels, height, width))
    assert logits.shape == (2, 10)

    spec = MODEL_SPECS[model_name]
    kinds = backend.layer_kinds(net)
    n_conv = sum(1 for f in spec.conv_filters if f)
    assert kinds == ["conv"] * n_conv + ["dense"] * len(spec.dense_units) + ["output"]
    weights = backend.get_prunable(net)
    assert len(backend.layer_names(net)) == len(weights) == len(kinds)
    assert weights[-1].shape == (10, spec.dense_units[-1])
    for weight, filters in zip(weights, [f for f in spec.conv_filters if f], strict=False):
        assert weight.shape[0] == filters and weight.shape[2:] == (3, 3)


def test_build_is_seeded_glorot_normal_and_leaves_global_rng_alone(
    backend: TorchBackend,
) -> None:
    before = torch.get_rng_state()
    first = backend.snapshot(backend.build("lenet300_100", (28, 28, 1), 10, seed=3))
    again = backend.snapshot(backend.build("lenet300_100", (28, 28, 1), 10, seed=3))
    other = backend.snapshot(backend.build("lenet300_100", (28, 28, 1), 10, seed=4))
    assert torch.equal(before, torch.get_rng_state())
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])
    kernel, bias = first[0], first[1]  # state_dict order: 1.weight, 1.bias, ...
    assert kernel.shape == (300, 784)
    assert np.std(kernel) == pytest.approx(math.sqrt(2 / (784 + 300)), rel=0.02)
    assert not bias.any()


def test_mnist_cnn_has_the_spec_dropout(backend: TorchBackend) -> None:
    net = backend.build("mnist_cnn", (28, 28, 1), 10, seed=0)
    rates = [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert rates == list(MODEL_SPECS["mnist_cnn"].dropout)


def test_build_rejects_bad_arguments(backend: TorchBackend) -> None:
    with pytest.raises(ValueError, match="model='vgg'"):
        backend.build("vgg", (8, 8, 1), 10, seed=0)
    with pytest.raises(ValueError, match="input_shape"):
        backend.build("conv2", (8, 8), 10, seed=0)
    with pytest.raises(ValueError, match="too small"):
        backend.build("conv6", (4, 4, 1), 10, seed=0)


# -- weights in and out --------------------------------------------------------------------------


def test_weights_round_trip_in_place(backend: TorchBackend) -> None:
    net = backend.build("conv2", (8, 8, 1), 10, seed=0)
    parameters = list(net.parameters())
    saved = backend.snapshot(net)
    assert len(saved) == len(net.state_dict())
    backend.set_prunable(net, [np.zeros_like(w) for w in backend.get_prunable(net)])
    assert not any(w.any() for w in backend.get_prunable(net))
    backend.restore(net, saved)
    assert all(np.array_equal(a, b) for a, b in zip(backend.snapshot(net), saved, strict=True))
    assert all(a is b for a, b in zip(net.parameters(), parameters, strict=True))


def test_weight_errors_name_the_argument(backend: TorchBackend) -> None:
    net = backend.build("lenet300_100", (8, 8, 1), 10, seed=0)
    weights = backend.get_prunable(net)
    with pytest.raises(ValueError, match="`weights` must hold 3 arrays"):
        backend.set_prunable(net, weights[:2])
    with pytest.raises(ValueError, match=r"`snapshot\[0\]` must have shape"):
        backend.restore(net, [w.T for w in backend.snapshot(net)])


# -- training ------------------------------------------------------------------------------------


def test_training_keeps_pruned_weights_exactly_zero(backend: TorchBackend, digits: Dataset) -> None:
    net = backend.build("lenet300_100", digits.input_shape, digits.num_classes, seed=0)
    masks = half_masks(backend.get_prunable(net))
    before = backend.get_prunable(net)
    seen: list[int] = []

    def progress(step: int, total: int, metrics: dict[str, float]) -> None:
        for weight, mask in zip(backend.get_prunable(net), masks, strict=True):
            assert not weight[~mask].any()
        seen.append(step)
        assert total == 12 and 0.0 <= metrics["val_acc"] <= 1.0

    settings = TrainSettings(iterations=12, eval_every=5, seed=1)
    outcome = backend.train(net, masks, digits, settings, progress)
    assert seen == [5, 10, 12]
    assert [e.iteration for e in outcome.evaluations] == [5, 10, 12]
    for weight, old, mask in zip(backend.get_prunable(net), before, masks, strict=True):
        assert not weight[~mask].any()
        assert not np.array_equal(weight[mask], old[mask])  # the kept weights trained
    loss, accuracy = backend.evaluate(net, digits.x_val, digits.y_val)
    final = outcome.final
    assert loss == pytest.approx(final.val_loss) and accuracy == pytest.approx(final.val_accuracy)
    assert outcome.seconds > 0


def test_masks_are_checked(backend: TorchBackend, digits: Dataset) -> None:
    net = backend.build("lenet300_100", digits.input_shape, digits.num_classes, seed=0)
    masks = [m.T for m in half_masks(backend.get_prunable(net))]
    with pytest.raises(ValueError):
        backend.train(net, masks, digits, TrainSettings(iterations=1))


@pytest.mark.parametrize("model_name", ["lenet300_100", "mnist_cnn"])
def test_training_is_deterministic(backend: TorchBackend, digits: Dataset, model_name: str) -> None:
    """Same seeds, same weights: a resumed experiment finds the same masks (dropout included)."""

    def run(data_seed: int) -> list[np.ndarray]:
        net = backend.build(model_name, digits.input_shape, digits.num_classes, seed=0)
        masks = half_masks(backend.get_prunable(net))
        settings = TrainSettings(iterations=8, eval_every=4, seed=data_seed, optimizer="sgd")
        backend.train(net, masks, digits, settings)
        return backend.snapshot(net)

    state = torch.get_rng_state()
    first, second, other = run(7), run(7), run(8)
    assert torch.equal(state, torch.get_rng_state())
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not np.array_equal(first[0], other[0])


def test_capture_at_snapshots_the_weights_after_that_step(
    backend: TorchBackend, digits: Dataset
) -> None:
    def fresh():  # type: ignore[no-untyped-def]
        return backend.build("lenet300_100", digits.input_shape, digits.num_classes, seed=0)

    net = fresh()
    outcome = backend.train(net, None, digits, TrainSettings(iterations=6, capture_at=3, seed=2))
    short = fresh()
    backend.train(short, None, digits, TrainSettings(iterations=3, seed=2))
    assert outcome.captured is not None
    expected = backend.snapshot(short)
    assert all(np.array_equal(a, b) for a, b in zip(outcome.captured, expected, strict=True))
    assert not np.array_equal(outcome.captured[0], backend.snapshot(net)[0])
    assert backend.train(net, None, digits, TrainSettings(iterations=2)).captured is None


def test_training_restores_thread_count_and_rejects_bad_settings(
    backend: TorchBackend, digits: Dataset
) -> None:
    net = backend.build("lenet300_100", digits.input_shape, digits.num_classes, seed=0)
    threads = torch.get_num_threads()
    backend.train(net, None, digits, TrainSettings(iterations=1))
    assert torch.get_num_threads() == threads
    with pytest.raises(ValueError, match="optimizer='rmsprop'"):
        backend.train(net, None, digits, TrainSettings(iterations=1, optimizer="rmsprop"))
    with pytest.raises(ValueError, match="batch_size=100000"):
        backend.train(net, None, digits, TrainSettings(iterations=1, batch_size=100_000))
    with pytest.raises(ValueError, match="num_threads=0"):
        TorchBackend(num_threads=0)


def test_backend_is_loaded_by_name() -> None:
    backend = load_backend("torch")
    assert isinstance(backend, TorchBackend) and isinstance(backend, TrainingBackend)
    assert backend.versions()["torch"] == torch.__version__


# -- the ltp command -----------------------------------------------------------------------------


def test_ltp_imp_runs_end_to_end_and_resumes(
    digits: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    del digits  # loaded for the skip only
    calls: list[int] = []
    real_train = TorchBackend.train

    def counting_train(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real_train(self, *args, **kwargs)

    real_batched = TorchBackend.train_batched

    def counting_batched(self, models, *args, **kwargs):  # type: ignore[no-untyped-def]
        outcomes = real_batched(self, models, *args, **kwargs)
        calls.extend([1] * len(outcomes or []))
        return outcomes

    monkeypatch.setattr(TorchBackend, "train", counting_train)
    monkeypatch.setattr(TorchBackend, "train_batched", counting_batched)
    argv = [
        "imp",
        "--framework",
        "torch",
        "--dataset",
        "digits",
        "--levels",
        "2",
        "--iterations",
        "30",
        "--eval-every",
        "10",
        "--out",
        str(tmp_path),
        "--quiet",
        "--no-plots",
    ]
    assert main(argv) == 0
    assert len(calls) == 1 + 2 * 3  # dense, then ticket + two controls per level (batched)
    table = capsys.readouterr().out
    assert "random_reinit" in table and "random_prune" in table
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["versions"]["torch"] == torch.__version__
    assert document["versions"]["device"] == str(resolve_device("auto"))  # --device auto
    tickets = [r for r in document["records"] if r["arm"] == "ticket"]
    assert [r["level"] for r in tickets] == [0, 1, 2]
    assert tickets[2]["layer_density"][0] == pytest.approx(0.64, abs=1e-3)

    calls.clear()
    assert main(argv) == 0
    assert calls == []
    assert json.loads((tmp_path / "results.json").read_text())["records"] == document["records"]


# -- devices ---------------------------------------------------------------------------------------


def test_resolve_device_accepts_what_this_machine_has_and_names_what_it_lacks() -> None:
    expected_auto = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected_auto
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert TorchBackend(device="cpu").device == torch.device("cpu")
    for bad in ("tpu", "gpu", "", "cuda:x"):
        with pytest.raises(ValueError, match=f"Received: device={bad!r}"):
            resolve_device(bad)
    with pytest.raises(TypeError, match="device=3"):
        resolve_device(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cuda:99"):
        resolve_device("cuda:99")  # no machine has 100 GPUs
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            TorchBackend(device="cuda")
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="MPS"):
            resolve_device("mps")


def test_ltp_device_cuda_without_cuda_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        main(["imp", "--device", "cuda", "--out", str(out)])
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("usage: ltp imp ")
    assert len(lines) == 2 and lines[1].startswith("ltp: error: argument --device: CUDA is not")
    assert not out.exists()
