"""One-file Keras training checkpoints: round trip, resuming, errors, atomicity."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from keras_models import make_mlp

from ltp_keras import (
    LotteryTicketPruner,
    PrunerCallback,
    RewindCheckpoint,
    load_checkpoint,
    save_checkpoint,
)


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(32, 10)).astype("float32"), rng.normal(size=(32, 3)).astype("float32")


def _trained(
    tmp_path: Path,
) -> tuple[keras.Model, LotteryTicketPruner, Path]:
    model = make_mlp()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    pruner = LotteryTicketPruner(model, seed=0)
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[PrunerCallback(pruner)])
    path = tmp_path / "run" / "ckpt.zip"
    save_checkpoint(path, model, pruner, extra={"level": 1, "note": "after fit"})
    return model, pruner, path


def _numpy(variables: list[keras.Variable]) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v) for v in variables]


def test_round_trip_restores_weights_optimizer_and_pruner(tmp_path: Path) -> None:
    model, pruner, path = _trained(tmp_path)
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == [
            "extra.json",
            "model.keras",
            "pruner.npz",
            "rewind_others.npz",
        ]
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.zip"]

    fresh = LotteryTicketPruner(make_mlp(seed=3), seed=0)
    loaded, extra = load_checkpoint(path, fresh)
    assert extra == {"level": 1, "note": "after fit"}
    for ours, theirs in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert int(keras.ops.convert_to_numpy(loaded.optimizer.iterations)) == 4
    saved_slots = _numpy(model.optimizer.variables)
    loaded_slots = _numpy(loaded.optimizer.variables)
    assert len(saved_slots) == len(loaded_slots) > 1
    for ours, theirs in zip(saved_slots, loaded_slots, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    for ours, theirs in zip(pruner.masks, fresh.masks, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert fresh.level == pruner.level == 1
    for variable, mask in zip(fresh.prunable_variables(loaded), fresh.masks, strict=True):
        values = keras.ops.convert_to_numpy(variable)
        assert np.all(values[~mask] == 0)
        assert np.count_nonzero(values[mask]) == mask.sum()


def test_save_zeroes_pruned_weights_without_touching_kept_ones(tmp_path: Path) -> None:
    model = make_mlp()
    pruner = LotteryTicketPruner(model, seed=0)
    before = [w.copy() for w in model.get_weights()]
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    save_checkpoint(tmp_path / "ckpt.zip", model, pruner)
    loaded, extra = load_checkpoint(tmp_path / "ckpt.zip")
    assert extra is None
    names = [v.path for v in model.weights]
    masks = dict(zip(pruner.names, pruner.masks, strict=True))
    for name, old, new in zip(names, before, loaded.get_weights(), strict=True):
        mask = masks.get(name, np.ones(old.shape, dtype=bool))
        np.testing.assert_array_equal(new, np.where(mask, old, 0))


def test_resume_training_keeps_pruned_weights_at_zero(tmp_path: Path) -> None:
    _, _, path = _trained(tmp_path)
    pruner = LotteryTicketPruner(make_mlp(seed=5), seed=0)
    model, _ = load_checkpoint(path, pruner)
    x, y = _data(1)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[PrunerCallback(pruner)])
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 8
    for variable, mask in zip(pruner.prunable_variables(model), pruner.masks, strict=True):
        assert np.all(keras.ops.convert_to_numpy(variable)[~mask] == 0)


def test_corrupt_or_truncated_file_raises_value_error(tmp_path: Path) -> None:
    _, _, path = _trained(tmp_path)
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"not a zip file at all")
    for bad in (truncated, garbage):
        with pytest.raises(ValueError, match="Received: path=") as info:
            load_checkpoint(bad)
        assert str(bad) in str(info.value)
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("extra.json", json.dumps({"format": "other"}))
        archive.writestr("model.keras", b"")
    with pytest.raises(ValueError, match="not written by ltp_keras"):
        load_checkpoint(foreign)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.zip")


def test_mismatched_pruner_raises_and_keeps_its_state(tmp_path: Path) -> None:
    _, _, path = _trained(tmp_path)
    other = LotteryTicketPruner(make_mlp(hidden=5), seed=0)
    with pytest.raises(ValueError):
        load_checkpoint(path, other)
    assert other.level == 0
    assert all(mask.all() for mask in other.masks)


def test_bad_extra_writes_nothing_and_keeps_previous_file(tmp_path: Path) -> None:
    model, pruner, path = _trained(tmp_path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match=r"`extra`.*Received:"):
        save_checkpoint(path, model, pruner, extra={"bad": object()})
    with pytest.raises(TypeError, match="Received: pruner="):
        save_checkpoint(path, model, "pruner")  # type: ignore[arg-type]
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.zip"]
    assert path.read_bytes() == before


def test_save_during_fit_with_mask_constraints_loads_without_custom_objects(
    tmp_path: Path,
) -> None:
    model = make_mlp()
    model.compile("sgd", "mse")
    pruner = LotteryTicketPruner(model, seed=0)
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    path = tmp_path / "mid.zip"
    saver = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: save_checkpoint(path, model, pruner, extra=epoch)
    )
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[PrunerCallback(pruner), saver])
    loaded, extra = load_checkpoint(path)
    assert extra == 0
    for variable, mask in zip(pruner.prunable_variables(loaded), pruner.masks, strict=True):
        assert np.all(keras.ops.convert_to_numpy(variable)[~mask] == 0)


def _rewrite_entry(path: Path, name: str, data: bytes) -> None:
    with zipfile.ZipFile(path) as archive:
        entries = {n: archive.read(n) for n in archive.namelist()}
    entries[name] = data
    with zipfile.ZipFile(path, "w") as archive:
        for entry, content in entries.items():
            archive.writestr(entry, content)


def test_junk_model_entry_is_a_clear_error_naming_it(tmp_path: Path) -> None:
    _, _, path = _trained(tmp_path)
    _rewrite_entry(path, "model.keras", b"junk, not a keras archive")
    pruner = LotteryTicketPruner(make_mlp(), seed=0)
    with pytest.raises(ValueError, match=r"model\.keras.*Received: path=") as info:
        load_checkpoint(path, pruner)
    assert str(path) in str(info.value)
    assert pruner.level == 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("level", -1, r"state\['level'\]"), ("history", [1], r"state\['history'\]\[0\]")],
)
def test_malformed_pruner_state_changes_nothing(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    """The core validates every field before assigning any (names, seed, level, history...)."""
    from ltp_core import io as core_io

    _, _, path = _trained(tmp_path)
    with zipfile.ZipFile(path) as archive:
        (tmp_path / "p.npz").write_bytes(archive.read("pruner.npz"))
    state = core_io.load_state(tmp_path / "p.npz")
    state[field] = value
    core_io.save_state(tmp_path / "p.npz", state)
    _rewrite_entry(path, "pruner.npz", (tmp_path / "p.npz").read_bytes())
    model = make_mlp()
    pruner = LotteryTicketPruner(model, seed=7)
    pruner.calc_prune_mask(model, 0.2, "smallest_weights")
    before = pruner.state_dict()
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path, pruner)
    after = pruner.state_dict()
    assert (after["seed"], after["level"], after["history"]) == (7, 1, before["history"])
    assert after["names"] == before["names"]


def test_saving_again_removes_parts_a_killed_save_left(tmp_path: Path) -> None:
    """Parts are staged next to the checkpoint; what a killed save left, the next one removes."""
    model, pruner, path = _trained(tmp_path)
    leftovers = [
        path.parent / ".ckpt.zip.part.0a1b2c3d.keras",  # staged by a save that was killed
        path.parent / ".ckpt.zip.part.9f8e7d6c.npz",
        path.parent / ".ckpt.zip.5a5a5a5a",  # its half-written archive
    ]
    for leftover in leftovers:
        leftover.write_bytes(b"x" * (1 << 20))
    save_checkpoint(path, model, pruner, extra={"level": 2})
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.zip"]
    _, extra = load_checkpoint(path, LotteryTicketPruner(make_mlp(), seed=0))
    assert extra == {"level": 2}


def _late_rewind_run(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(16, bias_initializer="random_normal", name="h"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(3, name="o"),
        ],
        name="late",
    )
    model.compile(keras.optimizers.SGD(0.1), "mse")
    return model


def test_rewind_after_resuming_restores_the_non_prunable_rewind_point(tmp_path: Path) -> None:
    """Biases and normalization were rewound to the values of the model the resuming pruner was
    built from (here another seed), not to the saved run's late-rewind point, silently."""
    model = _late_rewind_run(seed=0)
    pruner = LotteryTicketPruner(model)
    x, y = _data()
    model.fit(x, y, batch_size=8, verbose=0, callbacks=[RewindCheckpoint(pruner, iteration=2)])
    pruner.calc_prune_mask(model, 0.5, "smallest_weights")
    path = tmp_path / "ckpt.zip"
    save_checkpoint(path, model, pruner)
    pruner.rewind(model)
    expected = [keras.ops.convert_to_numpy(v) for v in model.weights]

    resumed = LotteryTicketPruner(_late_rewind_run(seed=1))  # a new process
    loaded, _ = load_checkpoint(path, resumed)
    resumed.rewind(loaded)
    for variable, want in zip(loaded.weights, expected, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), want, variable.path)

    # The pruner's own state file holds the prunable weights only: rewind says so.
    bare = LotteryTicketPruner(_late_rewind_run(seed=1))
    bare.load_state_dict(pruner.state_dict())
    with pytest.warns(UserWarning, match="save_checkpoint/load_checkpoint"):
        bare.rewind(loaded)
