"""The NumPy LotteryTicketPruner: workflow, state, persistence and bad input."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import numpy as np
import pytest

from ltp_core import LotteryTicketPruner, load_masks, save_masks
from ltp_core.masks import count_kept


def make_weights(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(8, 6)).astype(np.float32), rng.normal(size=(6, 3)).astype(np.float32)]


def test_old_package_readme_flow_on_arrays() -> None:
    initial = make_weights(0)
    trained = [w + 0.5 * v for w, v in zip(initial, make_weights(1), strict=True)]
    pruner = LotteryTicketPruner(initial, names=["hidden", "out"])
    pruner.set_pretrained_weights(trained)
    pruner.calc_prune_mask(initial, 0.5, "large_final")
    assert [int(m.sum()) for m in pruner.masks] == [24, 9]
    assert pruner.cumulative_pruning_rate == pytest.approx(33 / 66)
    pruned = pruner.apply_pruning(initial)
    assert all(w.dtype == np.float32 for w in pruned)
    assert all(np.all(w[~m] == 0) for w, m in zip(pruned, pruner.masks, strict=True))
    assert all(
        np.array_equal(w[m], w0[m]) for w, w0, m in zip(pruned, initial, pruner.masks, strict=True)
    )
    assert pruner.level == 1 and pruner.history[0]["strategy"] == "large_final"


def test_cumulative_rate_and_reset() -> None:
    w = [np.arange(1.0, 97.0).reshape(32, 3)]
    pruner = LotteryTicketPruner(w)
    pruner.calc_prune_mask(w, 0.5, "smallest_weights")
    pruner.calc_prune_mask(w, 0.2, "smallest_weights")
    assert count_kept(pruner.masks) == 39
    assert pruner.cumulative_pruning_rate == pytest.approx(57 / 96)
    pruner.reset_masks()
    assert pruner.cumulative_pruning_rate == 0.0
    assert pruner.level == 0 and pruner.history == []


def test_levels_use_different_tie_breaking_but_are_reproducible() -> None:
    w = [np.ones((10, 10))]
    a, b = LotteryTicketPruner(w, seed=5), LotteryTicketPruner(w, seed=5)
    for pruner in (a, b):
        pruner.set_pretrained_weights(w)
        pruner.calc_prune_mask(w, 0.5, "large_final")
        pruner.calc_prune_mask(w, 0.5, "large_final")
    np.testing.assert_array_equal(a.masks[0], b.masks[0])
    assert count_kept(a.masks) == 25


def test_error_leaves_state_unchanged() -> None:
    w = make_weights()
    pruner = LotteryTicketPruner(w)
    pruner.set_pretrained_weights(w)
    pruner.calc_prune_mask(w, 0.3, "large_final")
    before = pruner.state_dict()
    bad_calls = [
        lambda: pruner.calc_prune_mask(w, 1.0, "large_final"),
        lambda: pruner.calc_prune_mask(w, 0.2, "nope"),
        lambda: pruner.calc_prune_mask(w[:1], 0.2, "large_final"),
        lambda: pruner.calc_prune_mask(w, 0.2, "large_final", layer_rates={"missing": 1}),
        lambda: pruner.calc_prune_mask(
            [np.full_like(a, np.nan) for a in w], 0.2, "smallest_weights"
        ),
    ]
    for call in bad_calls:
        with pytest.raises((ValueError, TypeError)):
            call()
        after = pruner.state_dict()
        assert after["level"] == before["level"]
        for x, y in zip(after["masks"], before["masks"], strict=True):
            np.testing.assert_array_equal(x, y)


def test_pretrained_strategy_without_pretrained_weights() -> None:
    w = make_weights()
    pruner = LotteryTicketPruner(w)
    with pytest.raises(ValueError, match="set_pretrained_weights"):
        pruner.calc_prune_mask(w, 0.2, "large_final")
    pruner.calc_prune_mask(w, 0.2, "smallest_weights")  # needs no pretrained weights


def test_rewind_weights_default_to_initial_and_can_be_set() -> None:
    w0, w1 = make_weights(0), make_weights(1)
    pruner = LotteryTicketPruner(w0)
    np.testing.assert_array_equal(pruner.rewind_weights[0], w0[0])
    pruner.set_rewind_weights(w1)
    pruner.calc_prune_mask(w0, 0.5, "smallest_weights")
    rewound = pruner.masked_rewind_weights()
    np.testing.assert_array_equal(rewound[0][pruner.masks[0]], w1[0][pruner.masks[0]])
    assert np.all(rewound[0][~pruner.masks[0]] == 0)


def test_holds_copies_not_references() -> None:
    w = make_weights()
    pruner = LotteryTicketPruner(w)
    w[0][:] = 123.0
    assert not np.any(pruner.initial_weights[0] == 123.0)


def test_state_dict_round_trip_and_save_load(tmp_path: Path) -> None:
    w0, w1 = make_weights(0), make_weights(1)
    pruner = LotteryTicketPruner(w0, names=["a", "b"], seed=9)
    pruner.set_pretrained_weights(w1)
    pruner.calc_prune_mask(w0, 0.4, "large_final_global", layer_rates={"b": 0.5})
    path = tmp_path / "sub" / "state.npz"
    pruner.save(path)
    loaded = LotteryTicketPruner.load(path)
    assert loaded.names == ["a", "b"] and loaded.seed == 9 and loaded.level == 1
    assert loaded.history == pruner.history
    assert loaded.cumulative_pruning_rate == pytest.approx(pruner.cumulative_pruning_rate)
    for x, y in zip(loaded.masks, pruner.masks, strict=True):
        np.testing.assert_array_equal(x, y)
    pretrained = loaded.pretrained_weights
    assert pretrained is not None
    np.testing.assert_array_equal(pretrained[1], w1[1])
    # the next level continues identically
    for p in (pruner, loaded):
        p.calc_prune_mask(w0, 0.5, "large_final")
    for x, y in zip(loaded.masks, pruner.masks, strict=True):
        np.testing.assert_array_equal(x, y)


def test_load_state_dict_rejects_other_layers() -> None:
    pruner = LotteryTicketPruner(make_weights())
    other = LotteryTicketPruner([np.ones((8, 6)), np.ones((5, 3))])
    with pytest.raises(ValueError, match=r"#1: expected layer_1 \(6, 3\), got layer_1 \(5, 3\)"):
        pruner.load_state_dict(other.state_dict())


def test_corrupt_and_truncated_files(tmp_path: Path) -> None:
    pruner = LotteryTicketPruner(make_weights())
    path = tmp_path / "state.npz"
    pruner.save(path)
    data = path.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.npz").write_bytes(b"not a zip file at all")
    for name in ("truncated.npz", "garbage.npz"):
        with pytest.raises(ValueError, match="not a valid lottery-tickets state file"):
            LotteryTicketPruner.load(tmp_path / name)
    np.savez(tmp_path / "foreign.npz", x=np.ones(3))
    with pytest.raises(ValueError, match="no metadata"):
        LotteryTicketPruner.load(tmp_path / "foreign.npz")
    with pytest.raises(FileNotFoundError):
        LotteryTicketPruner.load(tmp_path / "missing.npz")


def test_mask_file_round_trip_into_set_masks(tmp_path: Path) -> None:
    w = make_weights()
    source = LotteryTicketPruner(w, names=["a", "b"])
    source.calc_prune_mask(w, 0.5, "smallest_weights")
    save_masks(tmp_path / "m.npz", source.masks, source.names)
    masks, names = load_masks(tmp_path / "m.npz")
    assert names == ["a", "b"]
    target = LotteryTicketPruner(w)
    target.set_masks(masks)
    assert target.cumulative_pruning_rate == source.cumulative_pruning_rate
    with pytest.raises(ValueError, match="masks only"):
        LotteryTicketPruner.load(tmp_path / "m.npz")
    with pytest.raises(TypeError, match="dtype bool"):
        target.set_masks([m.astype(np.int8) for m in masks])


def test_pickle_and_deepcopy() -> None:
    w = make_weights()
    pruner = LotteryTicketPruner(w)
    pruner.calc_prune_mask(w, 0.5, "smallest_weights")
    for clone in (pickle.loads(pickle.dumps(pruner)), copy.deepcopy(pruner)):
        np.testing.assert_array_equal(clone.masks[0], pruner.masks[0])
        assert clone.level == 1


def test_repr_mentions_rate() -> None:
    assert "cumulative_pruning_rate=0.0000" in repr(LotteryTicketPruner(make_weights()))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("history", [{"level": 1}, "junk"], r"state\['history'\]\[1\].*Received: history\[1\]"),
        ("history", 7, r"state\['history'\].*Received: history=7"),
        ("level", -1, r"state\['level'\].*Received: level=-1"),
        ("level", "two", r"state\['level'\].*Received: level='two'"),
        ("seed", -3, r"state\['seed'\].*Received: seed=-3"),
        ("shapes", [["x", 3], [6, 3]], r"state\['shapes'\]\[0\].*Received: shapes\[0\]"),
        ("names", ["only_one"], r"state\['names'\].*1 entries"),
        ("masks", "junk", r"state\['masks'\].*Received: masks='junk'"),
        ("dtypes", [1, 2], r"state\['dtypes'\].*Received: dtypes=\[1, 2\]"),
    ],
)
def test_load_state_dict_validates_every_field_before_assigning(
    field: str, value: object, message: str
) -> None:
    """A malformed field is a clear error naming it, and nothing was assigned before it."""
    w = make_weights()
    source = LotteryTicketPruner(w, names=["a", "b"], seed=9)
    source.calc_prune_mask(w, 0.5, "smallest_weights")
    source.calc_prune_mask(w, 0.5, "smallest_weights")
    target = LotteryTicketPruner(w, names=["x", "y"], seed=1)
    target.calc_prune_mask(w, 0.2, "smallest_weights")
    before = target.state_dict()
    with pytest.raises((ValueError, TypeError), match=message):
        target.load_state_dict({**source.state_dict(), field: value})
    after = target.state_dict()
    assert (after["names"], after["seed"], after["level"]) == (["x", "y"], 1, 1)
    assert after["history"] == before["history"]
    for x, y in zip(after["masks"], before["masks"], strict=True):
        np.testing.assert_array_equal(x, y)
    target.calc_prune_mask(w, 0.2, "smallest_weights")  # still usable
    assert target.level == 2
