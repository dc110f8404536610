"""Bad input to the core raises a clear error naming the argument and the received value."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from ltp_core import LotteryTicketPruner, compute_masks

W = [np.ones((4, 3), dtype=np.float32), np.ones((3, 2), dtype=np.float32)]


def pruner() -> LotteryTicketPruner:
    p = LotteryTicketPruner(W)
    p.set_pretrained_weights(W)
    return p


CASES: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    (
        "fraction 1.0",
        lambda: pruner().calc_prune_mask(W, 1.0, "large_final"),
        ValueError,
        "prune_percentage=1.0",
    ),
    (
        "fraction negative",
        lambda: pruner().calc_prune_mask(W, -0.1, "large_final"),
        ValueError,
        "prune_percentage=-0.1",
    ),
    (
        "fraction NaN",
        lambda: pruner().calc_prune_mask(W, math.nan, "large_final"),
        ValueError,
        "prune_percentage=nan",
    ),
    (
        "fraction bool",
        lambda: pruner().calc_prune_mask(W, True, "large_final"),
        TypeError,
        "prune_percentage=True",
    ),
    (
        "fraction str",
        lambda: pruner().calc_prune_mask(W, "0.5", "large_final"),
        TypeError,
        "prune_percentage='0.5'",
    ),
    (
        "fraction None",
        lambda: pruner().calc_prune_mask(W, None, "large_final"),
        TypeError,
        "prune_percentage=None",
    ),
    (
        "unknown strategy",
        lambda: pruner().calc_prune_mask(W, 0.2, "biggest"),
        ValueError,
        "large_final_global",
    ),
    ("strategy type", lambda: pruner().calc_prune_mask(W, 0.2, 3), TypeError, "prune_strategy=3"),
    (
        "NaN weights",
        lambda: LotteryTicketPruner([np.array([1.0, np.nan])]),
        ValueError,
        "NaN or infinite",
    ),
    (
        "Inf weights",
        lambda: compute_masks("large_final", 0.5, trained=[np.array([1.0, np.inf])]),
        ValueError,
        "NaN or infinite",
    ),
    ("integer weights", lambda: LotteryTicketPruner([np.arange(4)]), TypeError, "dtype=int64"),
    ("0-d weights", lambda: LotteryTicketPruner([np.float32(1.0)]), ValueError, "shape ()"),
    ("empty array", lambda: LotteryTicketPruner([np.ones((0, 3))]), ValueError, "empty"),
    ("empty list", lambda: LotteryTicketPruner([]), ValueError, "initial_weights=[]"),
    ("not a list", lambda: LotteryTicketPruner(np.ones(3)), TypeError, "list of weight arrays"),
    (
        "ragged",
        lambda: LotteryTicketPruner([[[1.0, 2.0], [1.0]]]),
        ValueError,
        "initial_weights[0]",
    ),
    (
        "wrong count",
        lambda: pruner().calc_prune_mask(W[:1], 0.2, "smallest_weights"),
        ValueError,
        "must hold 2 arrays",
    ),
    (
        "wrong shape",
        lambda: pruner().set_pretrained_weights([np.ones((3, 4)), W[1]]),
        ValueError,
        "expected (4, 3)",
    ),
    (
        "mask dtype",
        lambda: compute_masks(
            "large_final", 0.2, trained=W, masks=[np.ones((4, 3)), np.ones((3, 2))]
        ),
        TypeError,
        "dtype bool",
    ),
    (
        "mask shape",
        lambda: compute_masks(
            "large_final", 0.2, trained=W, masks=[np.ones((3, 4), bool), np.ones((3, 2), bool)]
        ),
        ValueError,
        "must have shape (4, 3)",
    ),
    (
        "no pretrained",
        lambda: LotteryTicketPruner(W).calc_prune_mask(W, 0.2, "movement"),
        ValueError,
        "set_pretrained_weights",
    ),
    (
        "compute without trained",
        lambda: compute_masks("large_final", 0.2, initial=W),
        ValueError,
        "trained=None",
    ),
    (
        "layer rate unknown",
        lambda: pruner().calc_prune_mask(W, 0.2, "large_final", layer_rates={"x": 1}),
        ValueError,
        "'x'",
    ),
    (
        "layer rate negative",
        lambda: pruner().calc_prune_mask(W, 0.2, "large_final", layer_rates={0: -1}),
        ValueError,
        "=-1",
    ),
    (
        "layer rate too big",
        lambda: pruner().calc_prune_mask(W, 0.5, "large_final", layer_rates={0: 2}),
        ValueError,
        "prune the whole layer",
    ),
    (
        "layer rates conflict",  # an index and its negative twin, different multipliers
        lambda: pruner().calc_prune_mask(W, 0.2, "large_final", layer_rates={0: 0.5, -2: 1}),
        ValueError,
        "layer_rates[0]=0.5, layer_rates[-2]=1",
    ),
    (
        "layer rates type",
        lambda: pruner().calc_prune_mask(W, 0.2, "large_final", layer_rates=[1, 2]),
        TypeError,
        "layer_rates=[1, 2]",
    ),
    ("seed negative", lambda: LotteryTicketPruner(W, seed=-1), TypeError, "seed=-1"),
    ("seed float", lambda: LotteryTicketPruner(W, seed=1.5), TypeError, "seed=1.5"),
    (
        "duplicate names",
        lambda: LotteryTicketPruner(W, names=["a", "a"]),
        ValueError,
        "duplicated names ['a']",
    ),
    (
        "names count",
        lambda: LotteryTicketPruner(W, names=["a"]),
        ValueError,
        "one entry per weight array",
    ),
]


@pytest.mark.parametrize(("label", "call", "error", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(
    label: str, call: Callable[[], Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value)
    if isinstance(info.value, ValueError | TypeError) and message:
        assert "Received" in str(info.value)


# -- corrupt files are refused with the file's name and what is wrong --------------------------


def _results_document() -> dict[str, Any]:
    from dataclasses import asdict

    from ltp_core.experiment.results import RunRecord

    record = RunRecord(0, 0, "ticket", 1.0, [1.0, 1.0], 0.9, 0.9, 10, 0.9, 1.0)
    return {"format_version": 1, "kind": "imp", "config": {}, "records": [asdict(record)]}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: d.update(records={"a": 1}), "'records' must be a list"),
        (lambda d: d["records"].append("junk"), r"records\[1\] must be an object"),
        (lambda d: d["records"][0].pop("level"), r"records\[0\] lacks \['level'\]"),
        (lambda d: d["records"][0].update(level="two"), r"records\[0\]\['level'\].*'two'"),
        (lambda d: d["records"][0].update(layer_density="a"), r"\['layer_density'\]"),
        (lambda d: d["records"][0].update(color=3), r"unknown fields \['color'\]"),
        (lambda d: d.update(kind=5), "'kind' must be a string"),
    ],
)
def test_report_refuses_malformed_results_json(
    tmp_path: Any, change: Callable[[dict[str, Any]], Any], problem: str
) -> None:
    import json

    from ltp_core.cli import main

    document = _results_document()
    change(document)
    (tmp_path / "results.json").write_text(json.dumps(document))
    with pytest.raises(SystemExit, match=rf"ltp: error: .*results\.json.*{problem}"):
        main(["report", str(tmp_path), "--no-plots"])
    (tmp_path / "results.json").write_bytes(b"\xff\xfe binary junk")
    with pytest.raises(SystemExit, match="not valid JSON"):
        main(["report", str(tmp_path), "--no-plots"])


def test_state_file_refuses_npy_foreign_members_and_bad_crc(tmp_path: Any) -> None:
    import zipfile

    from ltp_core.io import load_state

    LotteryTicketPruner(W).save(tmp_path / "state.npz")
    np.save(tmp_path / "one.npy", np.ones(3))
    (tmp_path / "one.npy").rename(tmp_path / "one.npz")
    with pytest.raises(ValueError, match=r"one\.npz.*single-array \.npy file"):
        load_state(tmp_path / "one.npz")
    with zipfile.ZipFile(tmp_path / "state.npz") as source:
        members = {name: source.read(name) for name in source.namelist()}
    with zipfile.ZipFile(tmp_path / "extra.npz", "w") as target:
        for name, data in members.items():
            target.writestr(name, data)
        target.writestr("notes.txt", b"hello")
    with pytest.raises(ValueError, match=r"extra\.npz.*member 'notes\.txt' is not a \.npy"):
        load_state(tmp_path / "extra.npz")
    data = bytearray((tmp_path / "state.npz").read_bytes())
    with zipfile.ZipFile(tmp_path / "state.npz") as archive:
        info = archive.getinfo("initial_weights_0.npy")
    end = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.file_size
    data[end - 1] ^= 0xFF  # one flipped bit of weight data: only the CRC can tell
    (tmp_path / "flipped.npz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"flipped\.npz.*CRC"):
        load_state(tmp_path / "flipped.npz")
    from ltp_core import io

    io.save_state(tmp_path / "shapes.npz", {**LotteryTicketPruner(W).state_dict(), "shapes": "x"})
    with pytest.raises(ValueError, match=r"shapes\.npz.*'shapes' must be lists"):
        load_state(tmp_path / "shapes.npz")
    import json

    arrays = io.read_npz(tmp_path / "state.npz")
    metadata = json.loads(str(arrays["__metadata__"]))
    np.savez(
        tmp_path / "lists.npz",
        **{**arrays, "__metadata__": np.array(json.dumps({**metadata, "weight_lists": 3}))},
    )
    with pytest.raises(ValueError, match=r"lists\.npz.*'weight_lists' must be a list"):
        load_state(tmp_path / "lists.npz")
    np.savez(tmp_path / "floats.npz", **{**arrays, "mask_0": np.ones(12)})
    with pytest.raises(ValueError, match=r"floats\.npz.*mask_0 must be bit-packed uint8"):
        load_state(tmp_path / "floats.npz")
