"""The framework-free IMP and one-shot loops, on real digits data with a NumPy backend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from numpy_mlp_backend import NumpyBackend

from ltp_core import LotteryTicketPruner, compute_masks
from ltp_core.datasets import load_dataset
from ltp_core.experiment import (
    BoundBackend,
    ImpConfig,
    ImpPlan,
    OneShotConfig,
    ResultStore,
    RunSpec,
    layer_rates_for,
    random_masks_like,
    run_imp,
    run_levels,
    run_oneshot,
)
from ltp_core.experiment.plots import plot_imp


@pytest.fixture(scope="module")
def digits():  # type: ignore[no-untyped-def]
    pytest.importorskip("sklearn")
    return load_dataset("digits")


CONFIG = ImpConfig(
    framework="numpy",
    levels=3,
    seeds=2,
    iterations=120,
    eval_every=30,
    learning_rate=0.05,
    optimizer="sgd",
)


def test_imp_records_levels_arms_and_densities(digits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = run_imp(CONFIG, NumpyBackend(), digits, tmp_path)
    assert len(store.records) == 2 * (1 + 3 * 3)
    tickets = [r for r in store.records if r.arm == "ticket" and r.seed == 0]
    assert [r.level for r in tickets] == [0, 1, 2, 3]
    # hidden layers lose 20% per level, the output layer 10% (half rate)
    expected_hidden = [1.0, 0.8, 0.64, 0.512]
    for record, hidden in zip(tickets, expected_hidden, strict=True):
        assert record.layer_density[0] == pytest.approx(hidden, abs=2e-3)
    assert tickets[3].layer_density[-1] == pytest.approx(0.9**3, abs=0.01)
    for level in (1, 2, 3):
        arms = {r.arm: r for r in store.records if r.seed == 0 and r.level == level}
        assert set(arms) == {"ticket", "random_reinit", "random_prune"}
        assert arms["random_prune"].layer_density == pytest.approx(arms["ticket"].layer_density)
    assert tickets[0].test_accuracy > 0.8  # the dense net learns digits
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["config"]["resolved"]["iterations"] == 120
    assert (tmp_path / "results.csv").read_text().count("\n") == 1 + 20
    assert "| 3 | 52.20% |" in (tmp_path / "table.md").read_text()


class CrashingBackend(NumpyBackend):
    def __init__(self, crash_at: int) -> None:
        super().__init__()
        self.crash_at = crash_at

    def train(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.train_calls + 1 == self.crash_at:
            raise KeyboardInterrupt("simulated crash")
        return super().train(*args, **kwargs)


def test_resume_after_crash_gives_identical_masks(digits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = ImpConfig(
        framework="numpy",
        levels=3,
        seeds=1,
        iterations=60,
        eval_every=30,
        learning_rate=0.05,
        optimizer="sgd",
    )
    run_imp(config, NumpyBackend(), digits, tmp_path / "clean")
    for crash_at in (2, 6):  # inside level 1, inside level 2
        out = tmp_path / f"crash_{crash_at}"
        with pytest.raises(KeyboardInterrupt):
            run_imp(config, CrashingBackend(crash_at), digits, out)
        resumed = NumpyBackend()
        run_imp(config, resumed, digits, out)
        assert resumed.train_calls < 1 + 3 * 3
        clean = LotteryTicketPruner.load(tmp_path / "clean/state/seed_0/pruner_level_3.npz")
        again = LotteryTicketPruner.load(out / "state/seed_0/pruner_level_3.npz")
        for a, b in zip(clean.masks, again.masks, strict=True):
            np.testing.assert_array_equal(a, b)
        first = json.loads((tmp_path / "clean/results.json").read_text())["records"]
        second = json.loads((out / "results.json").read_text())["records"]
        key = [(r["seed"], r["level"], r["arm"], r["test_accuracy"]) for r in first]
        assert key == [(r["seed"], r["level"], r["arm"], r["test_accuracy"]) for r in second]


def test_finished_run_is_not_retrained_and_other_config_is_refused(digits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = ImpConfig(
        framework="numpy", levels=1, seeds=1, iterations=30, eval_every=30, controls=()
    )
    run_imp(config, NumpyBackend(), digits, tmp_path)
    backend = NumpyBackend()
    run_imp(config, backend, digits, tmp_path)
    assert backend.train_calls == 0
    with pytest.raises(ValueError, match="different experiment"):
        run_imp(
            ImpConfig(framework="numpy", levels=2, seeds=1, iterations=30, controls=()),
            NumpyBackend(),
            digits,
            tmp_path,
        )


def test_late_rewinding_uses_captured_weights(digits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = ImpConfig(
        framework="numpy",
        levels=1,
        seeds=1,
        iterations=40,
        eval_every=20,
        rewind_iteration=10,
        controls=(),
    )
    run_imp(config, NumpyBackend(), digits, tmp_path)
    init = np.load(tmp_path / "state/seed_0/init.npz")["a0"]
    rewind = np.load(tmp_path / "state/seed_0/rewind.npz")["a0"]
    assert not np.array_equal(init, rewind)


def test_oneshot_table(digits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = OneShotConfig(
        framework="numpy",
        model="lenet300_100",
        iterations=40,
        eval_every=20,
        learning_rate=0.05,
        optimizer="sgd",
    )
    store = run_oneshot(config, NumpyBackend(), digits, tmp_path)
    strategies = {r.arm for r in store.records}
    assert strategies == {"dense", "smallest_weights", "smallest_weights_global", "large_final"}
    pruned = sorted({round(1 - r.weights_remaining, 2) for r in store.records if r.level})
    assert pruned == [0.2, 0.56, 0.9, 0.99]
    table = (tmp_path / "table.md").read_text()
    assert table.splitlines()[0].startswith("| prune percentage | dataset | strategy |")
    assert "| 20.00% | digits | large_final |" in table


def test_plots_are_written(digits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("matplotlib")
    config = ImpConfig(framework="numpy", levels=2, seeds=2, iterations=30, eval_every=30)
    store = run_imp(config, NumpyBackend(), digits, tmp_path)
    paths = plot_imp(store.records, tmp_path)
    assert [p.name for p in paths] == [
        "accuracy_vs_weights_remaining.png",
        "early_stop_vs_weights_remaining.png",
    ]
    assert all(p.stat().st_size > 10_000 for p in paths)


def test_layer_rates_and_random_masks() -> None:
    config = ImpConfig(model="conv2", rate=0.2)
    assert layer_rates_for(config, ["conv", "conv", "dense", "output"]) == {
        2: pytest.approx(1.0),
        3: 0.5,
    } or layer_rates_for(config, ["conv", "conv", "dense", "output"]) == {3: 0.5}
    paper = ImpConfig(model="conv6")
    assert layer_rates_for(paper, ["conv", "dense", "output"]) == {
        0: pytest.approx(0.75),
        2: pytest.approx(0.5),
    }
    masks = [np.random.default_rng(0).random((20, 5)) < 0.3]
    random = random_masks_like(masks, seed=3)
    assert int(random[0].sum()) == int(masks[0].sum())
    assert not np.array_equal(random[0], masks[0])


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="strategy"):
        ImpConfig(strategy="large_final_global")
    with pytest.raises(ValueError, match="levels"):
        ImpConfig(levels=0)
    with pytest.raises(ValueError, match="model"):
        ImpConfig(model="resnet")
    with pytest.raises(ValueError, match="rate"):
        ImpConfig(rate=1.5)


class RecordingBackend(NumpyBackend):
    """Records the masks each training got and the prunable weights each training ended with."""

    def __init__(self) -> None:
        super().__init__()
        self.trainings: list[tuple[list[np.ndarray] | None, list[np.ndarray]]] = []

    def train(self, model, masks, *args, **kwargs):  # type: ignore[no-untyped-def]
        outcome = super().train(model, masks, *args, **kwargs)
        copies = None if masks is None else [np.array(m) for m in masks]
        self.trainings.append((copies, self.get_prunable(model)))
        return outcome


@pytest.mark.parametrize(
    "strategy",
    [
        "large_init",
        "movement",
        "magnitude_increase",
        "large_final_same_sign",
        "large_init_large_final",
    ],
)
def test_imp_reads_the_real_initialization(digits, tmp_path: Path, strategy: str) -> None:  # type: ignore[no-untyped-def]
    """Init-reading criteria rank the weights at initialization, not the dense-trained ones."""
    config = ImpConfig(
        framework="numpy",
        levels=2,
        seeds=1,
        iterations=30,
        eval_every=30,
        learning_rate=0.05,
        optimizer="sgd",
        strategy=strategy,
        controls=(),
    )
    backend = RecordingBackend()
    run_imp(config, backend, digits, tmp_path)
    model = backend.build(config.model, digits.input_shape, digits.num_classes, seed=0)
    initial = backend.get_prunable(model)
    names = backend.layer_names(model)
    rates = layer_rates_for(config, backend.layer_kinds(model))
    (_, dense), (level1_masks, level1_trained), (level2_masks, _) = backend.trainings
    assert level1_masks is not None and level2_masks is not None
    expected1 = compute_masks(
        strategy,
        config.dense_fraction,
        initial=initial,
        trained=dense,
        seed=[0, 0],
        layer_rates=rates,
        names=names,
    )
    for got, want in zip(level1_masks, expected1, strict=True):
        np.testing.assert_array_equal(got, want)
    expected2 = compute_masks(
        strategy,
        config.dense_fraction,
        initial=initial,
        trained=[w * m for w, m in zip(level1_trained, level1_masks, strict=True)],
        masks=expected1,
        seed=[0, 1],
        layer_rates=rates,
        names=names,
    )
    for got, want in zip(level2_masks, expected2, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("damage", ["delete pruner state", "delete init", "junk init"])
def test_resuming_without_the_saved_state_is_a_clear_error(  # type: ignore[no-untyped-def]
    digits, tmp_path: Path, damage: str
) -> None:
    config = ImpConfig(
        framework="numpy", levels=1, seeds=1, iterations=30, eval_every=30, controls=()
    )
    run_imp(config, NumpyBackend(), digits, tmp_path)
    state = tmp_path / "state" / "seed_0"
    if damage == "delete pruner state":
        (state / "pruner_level_1.npz").unlink()
        message = r"lacks \['pruner_level_1\.npz'\].*records finished levels of seed 0"
    elif damage == "delete init":
        (state / "init.npz").unlink()
        message = r"lacks \['init\.npz'\]"
    else:
        (state / "init.npz").write_bytes(b"not a zip archive")
        message = r"init\.npz is not a valid \.npz file \(not a zip archive\)"
    extended = ImpConfig(
        framework="numpy", levels=2, seeds=1, iterations=30, eval_every=30, controls=()
    )
    with pytest.raises(ValueError, match=message):
        run_imp(extended, NumpyBackend(), digits, tmp_path)


def test_each_level_is_planned_as_independent_runs_before_training(digits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = ImpConfig(framework="numpy", levels=2, seeds=2, iterations=20, eval_every=20)
    backend = NumpyBackend()
    bound = BoundBackend(backend, config.model, digits, config.train_settings)
    plan = ImpPlan(
        levels=2,
        seeds=(0, 1),
        strategy="large_final",
        fraction=config.dense_fraction,
        layer_rates=lambda names, kinds: layer_rates_for(config, kinds),
    )
    plans: list[tuple[int, list[RunSpec]]] = []
    store = ResultStore(tmp_path, "imp", {"test": 1}, {})
    run_levels(plan, bound, store, on_plan=lambda runs: plans.append((backend.train_calls, runs)))
    assert [len(runs) for _, runs in plans] == [2, 6, 6]
    for level, (calls_before, runs) in enumerate(plans):
        assert calls_before == (0 if level == 0 else 2 + 6 * (level - 1))  # nothing trained yet
        assert {(r.seed, r.level) for r in runs} == {(0, level), (1, level)}
        assert len({r.train_seed for r in runs}) == len(runs)
    level1 = {(r.seed, r.arm): r for r in plans[1][1]}
    for seed in (0, 1):
        ticket, reinit, prune = (
            level1[seed, a] for a in ("ticket", "random_reinit", "random_prune")
        )
        assert (ticket.start, reinit.start, prune.start) == ("rewind", "fresh", "init")
        assert ticket.masks is reinit.masks and ticket.masks is not None
        assert prune.masks is not None
        for m, r in zip(ticket.masks, prune.masks, strict=True):
            assert m.sum() == r.sum() and not np.array_equal(m, r)
    assert len(store.records) == 2 * 7
