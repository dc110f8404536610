"""Other architectures train together through ``vmap`` (``ltp_torch.functional_stack``).

Tolerances as in ``test_torch_batched.py``: the vmapped kernels may add the same products in
another order than the single-model ones, so weights agree up to float32 rounding (measured
below 1e-6 after 60 SGD steps); masks and pruned entries are compared exactly, and
``BatchNorm``'s running statistics (per replica) are compared like the weights.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from ltp_core.datasets import Dataset, load_dataset
from ltp_core.experiment.backend import TrainSettings
from ltp_torch.batched import stackable
from ltp_torch.experiment import TorchBackend
from ltp_torch.functional_stack import functional_stack_reason


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


class ResidualMLP(nn.Module):
    """A user's own module: its own ``forward``, a skip connection, BatchNorm, GELU, LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(64, 32)
        self.norm = nn.BatchNorm1d(32)
        self.block = nn.Sequential(nn.Linear(32, 32), nn.GELU(), nn.LayerNorm(32))
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm(self.inp(x.flatten(1))))
        return self.head(h + self.block(h))


def _bn_cnn() -> nn.Module:
    return nn.Sequential(  # digits are 1x8x8 images
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.SiLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def _seeded(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return factory()


def _masks(backend: TorchBackend, model: nn.Module, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random(w.shape) > 0.5 for w in backend.get_prunable(model)]


@pytest.mark.parametrize("factory", [ResidualMLP, _bn_cnn], ids=["residual_mlp", "bn_cnn"])
def test_user_architectures_train_together_as_they_train_alone(
    digits: Dataset, factory: Callable[[], nn.Module]
) -> None:
    backend = TorchBackend(parallel_groups=1)
    models = [_seeded(factory, s) for s in range(3)]
    assert not stackable(models[0])
    masks = [None, _masks(backend, models[0], 1), _masks(backend, models[0], 2)]
    settings = [
        TrainSettings(
            iterations=60,
            eval_every=30,
            optimizer="sgd",
            learning_rate=0.05,
            seed=10 + r,
            capture_at=3 if r == 1 else None,
        )
        for r in range(3)
    ]
    alone = [copy.deepcopy(m) for m in models]
    sequential = [
        backend.train(m, mk, digits, s) for m, mk, s in zip(alone, masks, settings, strict=True)
    ]
    batched = backend.train_batched(models, masks, digits, settings)
    assert batched is not None  # trained together, not refused
    for r in range(3):
        assert batched[r].extra["batched_replicas"] == 3
        # every parameter and buffer (BatchNorm running statistics and batch counts included)
        for a, b in zip(backend.snapshot(alone[r]), backend.snapshot(models[r]), strict=True):
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
        if masks[r] is not None:
            for weight, mask in zip(backend.get_prunable(models[r]), masks[r], strict=True):
                pruned = weight[~mask]
                assert np.all(pruned == 0) and not np.signbit(pruned).any()  # exactly +0.0
        pairs = zip(sequential[r].evaluations, batched[r].evaluations, strict=True)
        for e, f in pairs:  # evaluation mode: BatchNorm uses the running statistics
            assert (f.iteration, f.val_accuracy, f.test_accuracy) == (
                e.iteration,
                pytest.approx(e.val_accuracy, abs=0.01),
                pytest.approx(e.test_accuracy, abs=0.01),
            )
            assert f.val_loss == pytest.approx(e.val_loss, abs=1e-4)
    for a, b in zip(sequential[1].captured, batched[1].captured, strict=True):  # late rewinding
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)


def test_parallel_groups_of_a_user_model_match_one_program(digits: Dataset) -> None:
    runs = []
    for groups in (1, 2):
        backend = TorchBackend(parallel_groups=groups)
        models = [_seeded(ResidualMLP, s) for s in range(3)]
        masks = [_masks(backend, models[0], r) for r in range(3)]
        settings = [  # SGD: Adam turns rounding into full steps (see test_torch_batched.py)
            TrainSettings(iterations=20, eval_every=10, optimizer="sgd", learning_rate=0.05, seed=r)
            for r in range(3)
        ]
        outcomes = backend.train_batched(models, masks, digits, settings)
        assert outcomes is not None and outcomes[0].extra["batched_groups"] == groups
        runs.append([backend.snapshot(m) for m in models])
    for one, split in zip(*runs, strict=True):
        for a, b in zip(one, split, strict=True):
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)


class _Frozen(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(64, 10)
        self.body.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(1))


class _DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x.flatten(1))
        if out.sum() > 0:  # Python control flow on a tensor's value: vmap cannot batch it
            return out
        return -out


def _with_dropout() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Dropout(0.2), nn.Linear(8, 10))


def _weight_normed() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.utils.parametrizations.weight_norm(nn.Linear(64, 10)))


def _hooked() -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    model[1].register_forward_hook(lambda module, args, out: out * 2)
    return model


@pytest.mark.parametrize(
    ("factory", "reason"),
    [
        (_with_dropout, "random"),
        (_Frozen, "frozen"),
        (_DataDependent, "vmap cannot run"),
        (_weight_normed, "parametrized"),
        (_hooked, "hooks"),
    ],
    ids=["dropout", "frozen", "data_dependent", "weight_norm", "hook"],
)
def test_models_vmap_cannot_train_exactly_train_one_at_a_time(
    digits: Dataset,
    factory: Callable[[], nn.Module],
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = TorchBackend()
    models = [_seeded(factory, s) for s in range(2)]
    names = backend.layer_names(models[0])
    example = torch.zeros(2, 1, 8, 8)
    found = functional_stack_reason(models, names, example)
    assert found is not None and reason in found
    before = [backend.snapshot(m) for m in models]
    settings = [TrainSettings(iterations=2, seed=s) for s in range(2)]
    with caplog.at_level(logging.INFO, logger="ltp_torch.experiment"):
        assert backend.train_batched(models, [None, None], digits, settings) is None
    assert reason in caplog.text  # the reason is said, once per backend
    for snapshot, model in zip(before, models, strict=True):  # nothing trained or changed
        for a, b in zip(snapshot, backend.snapshot(model), strict=True):
            np.testing.assert_array_equal(a, b)


def test_the_probe_leaves_the_model_and_its_running_statistics_alone() -> None:
    model = _seeded(_bn_cnn, 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    example = torch.randn(2, 1, 8, 8)
    assert functional_stack_reason([model], ["0.weight", "5.weight"], example) is None
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert model.training


def test_one_channel_images_keep_vmap_on_its_batching_rules(digits: Dataset) -> None:
    # digits are 1-channel images: permuted from NHWC they counted as contiguous with a channel
    # stride of 1, convolutions took them for channels-last, and in evaluation under vmap
    # AdaptiveAvgPool2d fell back to a per-replica loop ("There is a performance drop ...").
    def pooled() -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)
        )

    backend = TorchBackend(parallel_groups=1)
    models = [_seeded(pooled, s) for s in range(2)]
    settings = [TrainSettings(iterations=4, eval_every=2, seed=s) for s in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backend.train_batched(models, [None, None], digits, settings) is not None


class _PlainTensor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(64, 10)
        self.projection = torch.randn(64, 64)  # neither a parameter nor a buffer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(1) @ self.projection)


def _replicas_differing(kind: str) -> list[nn.Module]:
    models = []
    for seed in range(2):
        torch.manual_seed(seed)
        if kind == "settings":  # what functional_call does not swap: module settings
            approximate = "tanh" if seed else "none"
            gelu = nn.GELU(approximate)
            models.append(nn.Sequential(nn.Flatten(), nn.Linear(64, 8), gelu, nn.Linear(8, 10)))
        elif kind == "frozen":
            model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
            model[1].bias.requires_grad_(seed == 0)  # frozen in replica 1 only
            models.append(model)
        else:
            models.append(_PlainTensor())
    return models


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("settings", "replica 1 has other layer settings"),
        ("frozen", "in replica 1: parameter '1.bias' is frozen"),
        ("plain", "'projection' is held as a plain attribute"),
    ],
)
def test_replicas_the_first_ones_modules_cannot_run_train_one_at_a_time(
    digits: Dataset, kind: str, reason: str
) -> None:
    # the vmapped program runs replica 0's modules with each replica's parameters and buffers:
    # anything else that differs would silently be replica 0's (measured before: 0.19-0.40 off)
    backend = TorchBackend()
    models = _replicas_differing(kind)
    found = functional_stack_reason(models, backend.layer_names(models[0]), torch.zeros(2, 64))
    assert found is not None and reason in found
    settings = [TrainSettings(iterations=2, seed=s) for s in range(2)]
    assert backend.train_batched(models, [None, None], digits, settings) is None


def test_the_probe_leaves_the_training_data_alone() -> None:
    model = nn.Sequential(nn.Flatten(), nn.ReLU(inplace=True), nn.Linear(64, 10))
    example = torch.linspace(-1, 1, 128).reshape(2, 64)
    before = example.clone()
    assert functional_stack_reason([model], ["2.weight"], example) is None
    assert torch.equal(example, before)  # ReLU(inplace=True) edited a copy
