"""``ltp_torch.find_ticket`` on the user's own models and hand-written training loops."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import ltp_torch
from ltp_core import LotteryTicketPruner as CorePruner

GENERATOR = torch.Generator().manual_seed(0)
X = torch.randn(192, 1, 6, 6, generator=GENERATOR)
Y = (X.flatten(1)[:, :18].sum(1) > 0).long() + 2 * (X.flatten(1)[:, 18:].sum(1) > 0).long()


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(36, 32)
        self.fc2 = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class Cnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3)
        self.norm = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 4 * 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.norm(self.conv(x))).flatten(1))


class Loop:
    """A hand-written loop with its own Adam; checks exact zeros after every step."""

    def __init__(self, steps: int = 12) -> None:
        self.steps = steps
        self.calls = 0
        self.checked_steps = 0
        self.zeros_at_start: list[dict[str, float]] = []
        self.pruned_gradients: list[float] = []  # sum |gradient| at pruned entries, per step
        self.after_step: dict[int, dict[str, torch.Tensor]] = {}

    def __call__(self, model: nn.Module) -> None:
        self.calls += 1
        weights = {
            n: p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1
        }
        pruned = {n: p.detach() == 0 for n, p in weights.items()}
        self.zeros_at_start.append({n: float(m.float().mean()) for n, m in pruned.items()})
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        order = torch.randperm(len(X))
        model.train()
        for step in range(self.steps):
            batch = order[(step * 32) % 192 : (step * 32) % 192 + 32]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(X[batch]), Y[batch]).backward()
            self.pruned_gradients.append(
                max(float(p.grad[pruned[n]].abs().sum()) for n, p in weights.items())
            )
            optimizer.step()
            for name, parameter in weights.items():
                assert torch.all(parameter[pruned[name]] == 0), (name, step)
            self.checked_steps += 1
            if self.calls == 1:
                self.after_step[step + 1] = {
                    k: v.detach().clone() for k, v in model.state_dict().items()
                }


def evaluate(model: nn.Module) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        logits = model(X)
    return {
        "loss": float(nn.functional.cross_entropy(logits, Y)),
        "accuracy": float((logits.argmax(1) == Y).float().mean()),
    }


def test_mlp_with_both_controls_and_resume(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Mlp()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    loop = Loop()
    records = ltp_torch.find_ticket(
        model,
        loop,
        evaluate,
        levels=2,
        layer_rates={"fc2.weight": 0.5},
        out=tmp_path,
        progress=False,
    )
    assert [(r.level, r.arm) for r in records] == [
        (0, "ticket"),
        (1, "ticket"),
        (1, "random_reinit"),
        (1, "random_prune"),
        (2, "ticket"),
        (2, "random_reinit"),
        (2, "random_prune"),
    ]
    assert loop.calls == 7 and loop.checked_steps == 7 * 12
    # Pruned entries get no gradient, from the first backward() on (clipping by norm would see
    # the ticket's gradient); the dense run has no pruned entries.
    assert loop.pruned_gradients[12:] == [0.0] * 6 * 12
    for record, zeros in zip(records, loop.zeros_at_start, strict=True):
        # Every run starts with exactly the recorded share of weights at zero, and keeps them.
        assert [1 - d for d in record.layer_density] == pytest.approx(list(zeros.values()))
        assert record.headline == "accuracy" and set(record.metrics) == {"loss", "accuracy"}
        assert record.test_accuracy == record.metrics["accuracy"]
        assert record.extra["optimizer_steps"] == 12
    assert records[1].layer_density == pytest.approx([1 - 230 / 1152, 1 - 12 / 128])
    # The ticket rewinds to the real initialization; the masks are the ones from_state saved.
    pruner = CorePruner.load(tmp_path / "state/seed_0/pruner_level_1.npz")
    np.testing.assert_array_equal(pruner.initial_weights[0], initial["fc1.weight"].numpy())
    assert (pruner.masks[0] == 0).sum() == int(0.2 * 32 * 36)
    for name in ("results.json", "results.csv", "table.md"):
        assert (tmp_path / name).exists()
    assert "| 2 | " in (tmp_path / "table.md").read_text()
    assert "ticket accuracy" in (tmp_path / "table.md").read_text()
    assert "metric_accuracy" in (tmp_path / "results.csv").read_text().splitlines()[0]

    again = Loop()
    resumed = ltp_torch.find_ticket(
        model,
        again,
        evaluate,
        levels=2,
        layer_rates={"fc2.weight": 0.5},
        out=tmp_path,
        progress=False,
    )
    assert again.calls == 0
    assert [r.metrics for r in resumed] == [r.metrics for r in records]
    extended = ltp_torch.find_ticket(
        model,
        again,
        evaluate,
        levels=3,
        layer_rates={"fc2.weight": 0.5},
        out=tmp_path,
        progress=False,
    )
    assert again.calls == 3 and len(extended) == 10

    with pytest.raises(ValueError, match="different experiment"):
        ltp_torch.find_ticket(
            model, again, evaluate, levels=3, rate=0.5, out=tmp_path, progress=False
        )
    assert again.calls == 3


def test_cnn_factory_two_seeds_and_late_rewinding(tmp_path: Path) -> None:
    loop = Loop(steps=6)
    records = ltp_torch.find_ticket(
        Cnn,
        loop,
        lambda m: evaluate(m)["accuracy"],
        levels=1,
        seeds=2,
        rewind_iteration=3,
        scope="global",
        out=tmp_path,
        progress=False,
    )
    assert sorted((r.seed, r.level, r.arm) for r in records) == sorted(
        (s, level, arm)
        for s in (0, 1)
        for level, arm in [(0, "ticket"), (1, "ticket"), (1, "random_reinit"), (1, "random_prune")]
    )
    assert records[0].headline == "metric"
    # Seeds differ in their initialization; the factory is called under torch.manual_seed(seed).
    init0 = np.load(tmp_path / "state/seed_0/init.npz")
    init1 = np.load(tmp_path / "state/seed_1/init.npz")
    assert not np.array_equal(init0["a0"], init1["a0"])
    torch.manual_seed(0)
    np.testing.assert_array_equal(init0["a0"], Cnn().state_dict()["conv.weight"].numpy())
    # The rewind point is every tensor (buffers included) after the 3rd optimizer step of seed 0.
    rewind = np.load(tmp_path / "state/seed_0/rewind.npz")
    after = loop.after_step[3]
    for index, tensor in enumerate(after.values()):
        np.testing.assert_array_equal(rewind[f"a{index}"], tensor.numpy())
    plots = list(tmp_path.glob("*.png"))
    assert plots or pytest.importorskip("matplotlib") is None


def test_module_without_factory_reinitializes_with_reset_parameters() -> None:
    torch.manual_seed(1)
    model = Mlp()
    seen: list[torch.Tensor] = []

    def train(m: nn.Module) -> None:
        seen.append(m.fc1.weight.detach().clone())
        Loop(steps=2)(m)

    ltp_torch.find_ticket(
        model, train, evaluate, levels=1, controls=("random_reinit",), progress=False
    )
    dense, ticket, reinit = seen
    kept = ticket != 0
    assert torch.equal(ticket[kept], dense[kept])  # rewound to the same init
    assert not torch.equal(reinit[reinit != 0], dense[reinit != 0])  # a fresh one


def test_weights_written_outside_optimizer_steps_warn(caplog: pytest.LogCaptureFixture) -> None:
    def train(model: nn.Module) -> None:
        Loop(steps=2)(model)
        with torch.no_grad():
            model.fc1.weight.add_(1.0)  # revives pruned weights behind the optimizer's back

    with caplog.at_level(logging.WARNING):
        records = ltp_torch.find_ticket(
            Mlp(), train, evaluate, levels=1, controls=(), progress=False
        )
    assert "outside an optimizer step" in caplog.text
    assert records[1].layer_density[0] == pytest.approx(1 - 230 / 1152)


class NoReset(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(36))
        self.fc = nn.Linear(36, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1) * self.scale)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"levels": 0}, ValueError, "levels=0"),
        ({"levels": 1, "rate": 1.0}, ValueError, "rate"),
        (
            {"levels": 1, "strategy": "large_final_global"},
            ValueError,
            "strategy='large_final_global'",
        ),
        ({"levels": 1, "scope": "net"}, ValueError, "scope='net'"),
        ({"levels": 1, "controls": "random_prune"}, TypeError, "controls='random_prune'"),
        ({"levels": 1, "controls": ("random_pruning",)}, ValueError, "random_pruning"),
        ({"levels": 1, "seeds": 2}, ValueError, "factory"),
        ({"levels": 1, "rewind_iteration": -1}, ValueError, "rewind_iteration=-1"),
        ({"levels": 1, "layer_rates": {"fc9.weight": 0.5}}, ValueError, "fc9.weight"),
        ({"levels": 1, "layer_rates": {0: -1.0}}, ValueError, "layer_rates"),
        ({"levels": 1, "prunable": ["nope"]}, ValueError, "nope"),
        ({"levels": 1, "out": 3}, TypeError, "out=3"),
    ],
)
def test_bad_arguments_fail_before_training(
    kwargs: dict[str, Any], error: type, match: str
) -> None:
    loop = Loop()
    with pytest.raises(error, match=match):
        ltp_torch.find_ticket(Mlp(), loop, evaluate, progress=False, **kwargs)
    assert loop.calls == 0


def test_bad_models_and_functions(tmp_path: Path) -> None:
    loop = Loop()
    with pytest.raises(ValueError, match="reset_parameters"):
        ltp_torch.find_ticket(NoReset(), loop, evaluate, levels=1, progress=False)
    with pytest.raises(TypeError, match=r"must return a torch\.nn\.Module"):
        ltp_torch.find_ticket(lambda: "net", loop, evaluate, levels=1, progress=False)
    with pytest.raises(TypeError, match="train"):
        ltp_torch.find_ticket(Mlp(), None, evaluate, levels=1, progress=False)  # type: ignore[arg-type]
    assert loop.calls == 0
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="folder"):
        ltp_torch.find_ticket(Mlp(), loop, evaluate, levels=1, out=tmp_path / "file")
    with pytest.raises(ValueError, match="rewind_iteration=50"):
        ltp_torch.find_ticket(
            Mlp(), loop, evaluate, levels=1, rewind_iteration=50, out=tmp_path / "r", progress=False
        )
    assert (
        not json.loads((tmp_path / "r/results.json").read_text())["records"]
        if (tmp_path / "r/results.json").exists()
        else True
    )
    with pytest.raises(TypeError, match="evaluate"):
        ltp_torch.find_ticket(Mlp(), Loop(1), lambda m: "good", levels=1, progress=False)


class _TanhMlp(Mlp):
    def __init__(self) -> None:
        super().__init__()
        self.act = nn.Tanh()  # a module of its own: part of the recorded structure

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x.flatten(1))))


def test_resuming_with_a_changed_model_is_refused(tmp_path: Path) -> None:
    # same class name, same prunable names and shapes: before, the second call resumed the
    # first experiment's folder with another model and mixed the two in one table, silently
    out = tmp_path / "run"
    ltp_torch.find_ticket(Mlp, Loop(4), evaluate, levels=1, controls=(), out=out, progress=False)
    before = (out / "results.json").read_text()
    _TanhMlp.__qualname__ = Mlp.__qualname__
    with pytest.raises(ValueError, match="is not the one this experiment started with"):
        ltp_torch.find_ticket(
            _TanhMlp, Loop(4), evaluate, levels=2, controls=(), out=out, progress=False
        )
    assert (out / "results.json").read_text() == before
    records = ltp_torch.find_ticket(
        Mlp, Loop(4), evaluate, levels=2, controls=(), out=out, progress=False
    )
    assert [r.level for r in records] == [0, 1, 2]  # the same model extends the run
