"""Batched training (``ltp_torch.batched``) equals the sequential loop (trainer and ``ltp imp``).

Tolerances: a batched matrix product (``baddbmm``, a grouped convolution) may sum the same
products in another order than the single-model kernels, so weights differ by float32 rounding
(measured ~3e-7 after 100 SGD steps). SGD keeps such differences at that size until one flips a
ReLU input that sits within rounding of zero (see the 300-step test); Adam divides each step by
the root of the squared gradients, which turns rounding noise in near-zero gradients into
full-size steps: a 1e-7 relative perturbation of the initial weights moves a sequential Adam run
by up to 0.04 after 300 steps on some seeds. Adam is therefore compared over a short run. Masks
and pruned entries are compared exactly.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ltp_core.datasets import Dataset, load_dataset
from ltp_core.experiment.backend import TrainSettings
from ltp_core.experiment.config import ImpConfig
from ltp_core.experiment.imp import run_imp
from ltp_core.pruner import LotteryTicketPruner
from ltp_torch.batched import _fused_step, stackable
from ltp_torch.experiment import TorchBackend


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def _masks(backend: TorchBackend, model: nn.Module, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random(w.shape) > 0.5 for w in backend.get_prunable(model)]


def _compare(
    digits: Dataset,
    model_name: str,
    settings: TrainSettings,
    atol: float,
    loss_atol: float = 1e-4,
) -> tuple[list, list]:
    backend = TorchBackend()
    models = [backend.build(model_name, digits.input_shape, 10, seed=s) for s in range(3)]
    masks = [None, _masks(backend, models[0], 1), _masks(backend, models[0], 2)]
    per_run = [
        TrainSettings(**{**settings.__dict__, "seed": 10 + r, "capture_at": 3 if r == 0 else None})
        for r in range(3)
    ]
    alone = [copy.deepcopy(m) for m in models]
    sequential = [
        backend.train(m, mk, digits, s) for m, mk, s in zip(alone, masks, per_run, strict=True)
    ]
    batched = backend.train_batched(models, masks, digits, per_run)
    assert batched is not None
    for r in range(3):
        for a, b in zip(backend.snapshot(alone[r]), backend.snapshot(models[r]), strict=True):
            np.testing.assert_allclose(b, a, rtol=0, atol=atol)
        if masks[r] is not None:
            for weight, mask in zip(backend.get_prunable(models[r]), masks[r], strict=True):
                pruned = weight[~mask]
                assert np.all(pruned == 0) and not np.signbit(pruned).any()  # exactly +0.0
        steps = [e.iteration for e in sequential[r].evaluations]
        assert [e.iteration for e in batched[r].evaluations] == steps
        for e, f in zip(sequential[r].evaluations, batched[r].evaluations, strict=True):
            assert f.val_loss == pytest.approx(e.val_loss, abs=loss_atol)
    for a, b in zip(sequential[0].captured, batched[0].captured, strict=True):  # late rewinding
        np.testing.assert_allclose(b, a, rtol=0, atol=atol)
    return sequential, batched


def test_batched_sgd_equals_sequential_for_100_steps(digits: Dataset) -> None:
    settings = TrainSettings(
        iterations=100, eval_every=50, optimizer="sgd", learning_rate=0.05, batch_size=60
    )
    _compare(digits, "lenet300_100", settings, atol=1e-5)  # measured: at most 3e-7


def test_batched_sgd_stays_with_sequential_for_300_steps(digits: Dataset) -> None:
    # The batched product adds the same terms in another order (differences ~1e-7). Once such a
    # difference flips the sign of a ReLU input that sits within rounding of zero, one example's
    # gradient takes another path in one replica: measured, replica 0 jumped from 2e-7 to 9e-5 at
    # step 164 and drifted to 2.2e-3 by step 200. SGD does not amplify it further, so 300 steps
    # stay within 5e-3 (a data-order or mask bug moves weights by ~0.1 within 100 steps).
    settings = TrainSettings(
        iterations=300, eval_every=150, optimizer="sgd", learning_rate=0.05, batch_size=60
    )
    _compare(digits, "lenet300_100", settings, atol=5e-3, loss_atol=1e-3)


def test_batched_adam_equals_sequential(digits: Dataset) -> None:
    # Adam amplifies rounding noise (see the module docstring): 1e-3 is ~1 step of lr 1.2e-3.
    _compare(digits, "lenet300_100", TrainSettings(iterations=20, eval_every=10), atol=1e-3)


def test_batched_conv_net_equals_sequential(digits: Dataset) -> None:
    settings = TrainSettings(iterations=6, eval_every=6, optimizer="sgd", learning_rate=0.05)
    _compare(digits, "conv2", settings, atol=1e-5)


def test_unsupported_models_train_sequentially(digits: Dataset) -> None:
    backend = TorchBackend()
    with_dropout = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Dropout(0.5), nn.Linear(8, 10))
    assert not stackable(with_dropout)
    assert not stackable(nn.Linear(64, 10))
    models = [with_dropout, copy.deepcopy(with_dropout)]
    settings = [TrainSettings(iterations=2, seed=s) for s in range(2)]
    assert backend.train_batched(models, [None, None], digits, settings) is None
    plain = [backend.build("lenet300_100", digits.input_shape, 10, seed=s) for s in range(2)]
    other = [settings[0], TrainSettings(iterations=3, seed=1)]  # different lengths
    assert backend.train_batched(plain, [None, None], digits, other) is None
    with pytest.raises(ValueError, match="same length"):
        backend.train_batched(plain, [None], digits, settings)


def _train_grouped(
    digits: Dataset, groups: int, progress: list | None = None, iterations: int = 40
) -> tuple[list[nn.Module], list]:
    backend = TorchBackend(parallel_groups=groups)
    models = [backend.build("lenet300_100", digits.input_shape, 10, seed=s) for s in range(5)]
    masks = [None] + [_masks(backend, models[0], r) for r in range(1, 5)]
    settings = [
        TrainSettings(iterations=iterations, eval_every=20, seed=20 + r, capture_at=5 * r or None)
        for r in range(5)
    ]
    outcomes = backend.train_batched(models, masks, digits, settings, progress)
    return models, outcomes or []


def test_parallel_groups_give_the_same_results_as_one_program(digits: Dataset) -> None:
    backend = TorchBackend()
    one, one_outcomes = _train_grouped(digits, 1)
    for groups in (2, 3):
        split, split_outcomes = _train_grouped(digits, groups)
        assert len({o.seconds for o in split_outcomes}) == 1  # the call's wall time / models
        for r in range(5):
            for a, b in zip(backend.snapshot(one[r]), backend.snapshot(split[r]), strict=True):
                np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
            a_out, b_out = one_outcomes[r], split_outcomes[r]
            assert [e.iteration for e in b_out.evaluations] == [20, 40]
            assert b_out.extra["batched_groups"] == groups
            assert b_out.extra["batched_replicas"] == 5
            assert (a_out.captured is None) == (b_out.captured is None)
            for x, y in zip(a_out.captured or [], b_out.captured or [], strict=True):
                np.testing.assert_allclose(y, x, rtol=0, atol=1e-6)


def test_a_failing_group_stops_the_others_and_raises_its_own_error(digits: Dataset) -> None:
    calls: list[int] = []

    def failing(step: int, total: int, metrics: dict[str, float]) -> None:
        raise KeyboardInterrupt("simulated Ctrl-C in replica 4")

    def counting(step: int, total: int, metrics: dict[str, float]) -> None:
        calls.append(step)

    with pytest.raises(KeyboardInterrupt, match="replica 4"):
        _train_grouped(digits, 2, [counting, None, None, None, failing], iterations=400)
    assert max(calls, default=0) < 400  # the first group stopped early (measured: by step 40)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_parallel_groups_is_validated(bad: object) -> None:
    with pytest.raises(ValueError, match="parallel_groups"):
        TorchBackend(parallel_groups=bad)  # type: ignore[arg-type]


def _config(**kwargs: object) -> ImpConfig:
    base = {
        "levels": 2,
        "seeds": 2,
        "iterations": 40,
        "eval_every": 20,
        "optimizer": "sgd",
        "learning_rate": 0.05,
    }
    return ImpConfig(**{**base, **kwargs})  # type: ignore[arg-type]


def _records(out: Path) -> list[dict]:
    records = json.loads((out / "results.json").read_text())["records"]
    return sorted(records, key=lambda r: (r["seed"], r["level"], r["arm"]))


def _final_masks(out: Path, seed: int, level: int) -> list[np.ndarray]:
    return LotteryTicketPruner.load(out / f"state/seed_{seed}/pruner_level_{level}.npz").masks


def test_imp_batched_equals_sequential_and_resumes(digits: Dataset, tmp_path: Path) -> None:
    torch.manual_seed(0)
    run_imp(_config(sequential=True), TorchBackend(), digits, tmp_path / "sequential")
    run_imp(_config(), TorchBackend(), digits, tmp_path / "batched")
    sequential, batched = _records(tmp_path / "sequential"), _records(tmp_path / "batched")
    assert len(batched) == len(sequential) == 2 * (1 + 2 * 3)
    for a, b in zip(sequential, batched, strict=True):
        assert (a["seed"], a["level"], a["arm"]) == (b["seed"], b["level"], b["arm"])
        assert b["weights_remaining"] == a["weights_remaining"]
        assert b["test_accuracy"] == pytest.approx(a["test_accuracy"], abs=0.01)
    assert all(r["extra"].get("batched_replicas") is None for r in sequential)
    assert {r["extra"].get("batched_replicas") for r in batched} == {2, 6}
    for seed in (0, 1):
        # Ranking weights that differ by rounding may swap two whose magnitudes tie within it:
        # the masks agree everywhere else, and exactly k weights are kept per layer anyway.
        trained = LotteryTicketPruner.load(
            tmp_path / f"sequential/state/seed_{seed}/pruner_level_1.npz"
        ).pretrained_weights
        assert trained is not None
        for a, b, w in zip(
            _final_masks(tmp_path / "sequential", seed, 2),
            _final_masks(tmp_path / "batched", seed, 2),
            trained,
            strict=True,
        ):
            assert a.sum() == b.sum()
            differ = a != b
            assert differ.mean() < 1e-3
            threshold = np.abs(w[a]).min()  # the smallest kept magnitude
            np.testing.assert_allclose(np.abs(w[differ]), threshold, rtol=0.01)

    # Killed while level 2 trains: levels 0 and 1 are recorded, resuming trains level 2 again.
    calls = {"n": 0}

    def crashing(label: str):  # type: ignore[no-untyped-def]
        def progress(step: int, total: int, metrics: dict[str, float]) -> None:
            calls["n"] += 1
            if "level 2" in label:
                raise KeyboardInterrupt("simulated crash")

        return progress

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        run_imp(_config(), TorchBackend(), digits, out, crashing)
    assert len(_records(out)) == 2 * (1 + 3)
    run_imp(_config(), TorchBackend(), digits, out)
    resumed = _records(out)
    for a, b in zip(batched, resumed, strict=True):
        assert (a["seed"], a["level"], a["arm"]) == (b["seed"], b["level"], b["arm"])
        assert b["test_accuracy"] == a["test_accuracy"]
        assert b["val_accuracy"] == a["val_accuracy"]
    for seed in (0, 1):
        for a, b in zip(
            _final_masks(tmp_path / "batched", seed, 2), _final_masks(out, seed, 2), strict=True
        ):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "make",
    [
        lambda p: torch.optim.Adam(p, lr=1e-2, fused=True),
        lambda p: torch.optim.Adam(p, lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1, fused=True),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, fused=True),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, fused=True),
    ],
)
def test_direct_fused_step_equals_the_optimizer_bit_for_bit(make) -> None:  # type: ignore[no-untyped-def]
    generator = torch.Generator().manual_seed(0)
    start = [torch.randn(3, 5, 4, generator=generator), torch.randn(3, 4, generator=generator)]
    grads = [[torch.randn(t.shape, generator=generator) for t in start] for _ in range(4)]
    by_optimizer = [t.clone().requires_grad_() for t in start]
    direct = [t.clone().requires_grad_() for t in start]
    optimizer = make(by_optimizer)
    step = _fused_step(make(direct), direct)
    assert step is not None
    for g in grads:
        for p, gp in zip(by_optimizer, g, strict=True):
            p.grad = gp.clone()
        optimizer.step()
        step([gp.clone() for gp in g])
    for a, b in zip(by_optimizer, direct, strict=True):
        assert torch.equal(a, b)


def test_direct_fused_step_declines_what_it_does_not_reproduce() -> None:
    params = [torch.zeros(2, 3, requires_grad=True)]
    assert _fused_step(torch.optim.Adam(params, lr=1e-2), params) is None  # not fused
    assert _fused_step(torch.optim.Adam(params, lr=1e-2, amsgrad=True, fused=True), params) is None
    assert _fused_step(torch.optim.SGD(params, lr=0.1, fused=True), params) is None  # no momentum
    other = [torch.zeros(2, 3, requires_grad=True)]
    assert _fused_step(torch.optim.Adam(other, lr=1e-2, fused=True), params) is None
    hooked = torch.optim.Adam(params, lr=1e-2, fused=True)
    hooked.register_step_post_hook(lambda *args: None)
    assert _fused_step(hooked, params) is None
