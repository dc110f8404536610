"""``ltp_torch.find_ticket`` under misuse: each case was silently wrong before it was fixed."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import ltp_torch
from ltp_core import LowCoverageWarning

GENERATOR = torch.Generator().manual_seed(0)
X = torch.randn(64, 8, generator=GENERATOR)
Y = (X[:, :4].sum(1) > 0).long()


def net() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))


def train(model: nn.Module, steps: int = 3) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(X), Y).backward()
        optimizer.step()


def accuracy(model: nn.Module) -> dict[str, float]:
    with torch.no_grad():
        return {"accuracy": float((model(X).argmax(1) == Y).float().mean())}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rate": 0.0}, "rate=0"),
        ({"strategy": "lamp"}, "scope='global'"),
        ({"strategy": "random_erk", "scope": "layer"}, "scope='global'"),
    ],
)
def test_arguments_that_would_run_something_else_are_refused(
    kwargs: dict[str, object], match: str
) -> None:
    calls: list[int] = []
    with pytest.raises(ValueError, match=match):
        ltp_torch.find_ticket(
            net(), lambda m: calls.append(1), accuracy, levels=1, progress=False, **kwargs
        )
    assert not calls


@pytest.mark.parametrize("strategy", ["lamp", "random_erk"])
def test_global_only_criteria_run_in_global_scope(strategy: str) -> None:
    records = ltp_torch.find_ticket(
        net(),
        train,
        accuracy,
        levels=1,
        strategy=strategy,
        scope="global",
        controls=(),
        progress=False,
    )
    assert [r.level for r in records] == [0, 1]
    assert records[1].weights_remaining == pytest.approx(1 - int(0.2 * 160) / 160)


def test_evaluate_changing_its_metric_names_is_an_error_and_resumable(tmp_path: Path) -> None:
    calls = {"n": 0}

    def evaluate(model: nn.Module) -> dict[str, float]:
        calls["n"] += 1
        return accuracy(model) if calls["n"] == 1 else {"loss": 0.3}

    with pytest.raises(ValueError, match=r"returned metrics \['loss'\], but \['accuracy'\]"):
        ltp_torch.find_ticket(
            net(), train, evaluate, levels=1, controls=(), out=tmp_path, progress=False
        )
    records = json.loads((tmp_path / "results.json").read_text())["records"]
    assert [(r["level"], r["metrics"]) for r in records] == [(0, records[0]["metrics"])]
    assert "accuracy" in records[0]["metrics"]
    resumed = ltp_torch.find_ticket(
        net(), train, accuracy, levels=1, controls=(), out=tmp_path, progress=False
    )
    assert [r.level for r in resumed] == [0, 1] and "accuracy" in resumed[1].metrics


def test_non_finite_metrics_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        ltp_torch.find_ticket(
            net(), train, lambda m: float("nan"), levels=1, controls=(), progress=False
        )
    assert caplog.text.count("non-finite metrics") == 2


def test_factory_building_another_architecture_is_an_error() -> None:
    widths = iter(range(4, 100))

    def factory() -> nn.Module:
        width = next(widths)
        return nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, 2))

    with pytest.raises(ValueError, match=r"same architecture.*seed 1"):
        ltp_torch.find_ticket(factory, train, accuracy, levels=1, seeds=2, progress=False)


def test_optimizer_created_before_find_ticket_is_an_error() -> None:
    model = net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def stale_train(m: nn.Module) -> None:
        for _ in range(3):
            optimizer.zero_grad()
            nn.functional.cross_entropy(m(X), Y).backward()
            optimizer.step()  # steps `model`, not the fresh model of random_reinit

    with pytest.raises(ValueError, match=r"random_reinit.*create the optimizer inside train"):
        ltp_torch.find_ticket(model, stale_train, accuracy, levels=1, progress=False)


def test_late_rewinding_with_two_optimizers_holds_both_steps() -> None:
    after: list[dict[str, torch.Tensor]] = []
    starts: list[dict[str, torch.Tensor]] = []

    def two_optimizers(model: nn.Module) -> None:
        starts.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        first = torch.optim.SGD(model[0].parameters(), lr=0.1)
        second = torch.optim.Adam(model[2].parameters(), lr=0.01)
        for _ in range(4):
            first.zero_grad()
            second.zero_grad()
            nn.functional.cross_entropy(model(X), Y).backward()
            first.step()
            second.step()
            if len(starts) == 1:
                after.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    ltp_torch.find_ticket(
        net(),
        two_optimizers,
        accuracy,
        levels=1,
        rewind_iteration=2,
        controls=(),
        progress=False,
    )
    rewound = starts[1]
    for name, value in after[1].items():  # the weights after iteration 2 of both optimizers
        kept = rewound[name] != 0
        assert torch.equal(rewound[name][kept], value[kept]), name
    with pytest.raises(ValueError, match="made 4 steps"):
        ltp_torch.find_ticket(
            net(),
            two_optimizers,
            accuracy,
            levels=1,
            rewind_iteration=5,
            controls=(),
            progress=False,
        )


class EmbeddingModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(200, 8)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embedding(x).mean(1))


def test_low_coverage_warns_once_per_call(caplog: pytest.LogCaptureFixture) -> None:
    tokens = torch.randint(0, 200, (16, 5), generator=GENERATOR)
    labels = torch.randint(0, 2, (16,), generator=GENERATOR)

    def train_tokens(model: nn.Module) -> None:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(tokens), labels).backward()
        optimizer.step()

    for _ in range(2):  # a second call warns again: once per call, not once per process
        caplog.clear()
        with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
            warnings.simplefilter("always")
            ltp_torch.find_ticket(
                EmbeddingModel(), train_tokens, lambda m: 0.5, levels=2, progress=False
            )
        assert sum(issubclass(w.category, LowCoverageWarning) for w in caught) == 1
        assert caplog.text.count("covers only") == 1


def test_module_is_given_back_at_its_initialization_even_when_train_raises() -> None:
    model = net()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    runs = {"n": 0}

    def failing(m: nn.Module) -> None:
        runs["n"] += 1
        train(m)
        if runs["n"] == 3:  # level 1 random_reinit, after the ticket pruned and trained `model`
            raise RuntimeError("out of memory, say")

    with pytest.raises(RuntimeError, match="out of memory"):
        ltp_torch.find_ticket(model, failing, accuracy, levels=1, progress=False)
    for name, value in model.state_dict().items():
        assert torch.equal(value, initial[name]), name
    again = ltp_torch.find_ticket(model, train, accuracy, levels=1, progress=False)
    fresh = net()
    fresh.load_state_dict(initial)
    expected = ltp_torch.find_ticket(fresh, train, accuracy, levels=1, progress=False)
    assert [r.metrics for r in again] == [r.metrics for r in expected]
    for name, value in model.state_dict().items():
        assert torch.equal(value, initial[name]), name


def test_out_below_a_file_is_refused_before_training(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("")
    calls: list[int] = []
    with pytest.raises(ValueError, match=r"notes.txt' is a file. Received: out="):
        ltp_torch.find_ticket(
            net(), lambda m: calls.append(1), accuracy, levels=1, out=tmp_path / "notes.txt/run"
        )
    assert not calls


def test_factory_returning_the_same_module_twice_is_an_error() -> None:
    model = net()
    with pytest.raises(ValueError, match="new model on every call"):
        ltp_torch.find_ticket(lambda: model, train, accuracy, levels=1, progress=False)


def test_train_that_changes_nothing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="changed no prunable weight"):
        ltp_torch.find_ticket(net(), lambda m: None, accuracy, levels=1, out=tmp_path)
    results = tmp_path / "results.json"
    assert not results.exists() or not json.loads(results.read_text())["records"]


def test_manual_updates_without_an_optimizer_warn_but_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def manual(model: nn.Module) -> None:
        for _ in range(2):
            model.zero_grad()
            nn.functional.cross_entropy(model(X), Y).backward()
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter -= 0.1 * parameter.grad

    with caplog.at_level(logging.WARNING):
        records = ltp_torch.find_ticket(net(), manual, accuracy, levels=1, progress=False)
    assert [r.level for r in records] == [0, 1, 1, 1]
    assert "made no torch.optim optimizer step" in caplog.text


def test_resuming_with_another_initialization_says_the_saved_one_is_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = net()
    ltp_torch.find_ticket(model, train, accuracy, levels=1, controls=(), out=tmp_path)
    with caplog.at_level(logging.WARNING):
        ltp_torch.find_ticket(model, train, accuracy, levels=2, controls=(), out=tmp_path)
    assert "other weights" not in caplog.text  # the module came back at its initialization
    with caplog.at_level(logging.WARNING):
        other = net()  # net() seeds nothing: another initialization
        ltp_torch.find_ticket(other, train, accuracy, levels=3, controls=(), out=tmp_path)
    assert "other weights than the initialization saved" in caplog.text
