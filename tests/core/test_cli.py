"""The `ltp` command line: arguments, errors and the report command."""

from __future__ import annotations

from pathlib import Path

import pytest
from numpy_mlp_backend import NumpyBackend

from ltp_core.cli import build_parser, main
from ltp_core.datasets import load_dataset
from ltp_core.experiment import ImpConfig, run_imp

BAD_ARGUMENTS = [
    (["imp", "--out", "x", "--rate", "1.0"], "--rate"),
    (["imp", "--out", "x", "--rate", "abc"], "--rate"),
    (["imp", "--out", "x", "--levels", "0"], "--levels"),
    (["imp", "--out", "x", "--levels", "-3"], "--levels"),
    (["imp", "--out", "x", "--strategy", "biggest"], "--strategy"),
    (["imp", "--out", "x", "--scope", "everything"], "--scope"),
    (["imp", "--out", "x", "--framework", "mxnet"], "--framework"),
    (["imp", "--out", "x", "--dataset", "imagenet"], "--dataset"),
    (["imp", "--out", "x", "--model", "resnet50"], "--model"),
    (["imp", "--out", "x", "--rewind", "late"], "--rewind"),
    (["imp", "--out", "x", "--validation-fraction", "0"], "--validation-fraction"),
    (["imp", "--out", "x", "--controls", "magic"], "--controls"),
    (["imp", "--out", "x", "--batch-size", "0"], "--batch-size"),
    (["imp"], "--out"),
    (["mask", "w.npz", "--out", "m.npz"], "--fraction"),
    (["frobnicate"], "invalid choice"),
]


@pytest.mark.parametrize(
    ("argv", "mentions"), BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS]
)
def test_bad_arguments_exit_2_naming_the_option(
    argv: list[str], mentions: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    assert mentions in capsys.readouterr().err


def test_missing_data_offline_says_where_to_put_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("LTP_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(SystemExit) as info:
        main(["imp", "--dataset", "cifar10", "--no-download", "--out", str(tmp_path / "out")])
    message = str(info.value)
    assert message.startswith("ltp: error:")
    assert "cifar" in message.lower() and str(tmp_path / "data") in message


def test_iterations_and_epochs_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="not both"):
        main(["imp", "--iterations", "5", "--epochs", "1", "--out", str(tmp_path)])


def test_report_rebuilds_table_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    config = ImpConfig(framework="numpy", levels=1, seeds=1, iterations=20, eval_every=10)
    run_imp(config, NumpyBackend(), load_dataset("digits"), tmp_path)
    (tmp_path / "table.md").unlink()
    assert main(["report", str(tmp_path)]) == 0
    assert "| level | weights remaining |" in capsys.readouterr().out
    assert (tmp_path / "table.md").exists()
    assert (tmp_path / "accuracy_vs_weights_remaining.png").exists()


def test_report_on_missing_or_foreign_folder(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"No results\.json"):
        main(["report", str(tmp_path)])
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(SystemExit, match="not valid JSON"):
        main(["report", str(tmp_path)])


def test_unknown_framework_backend_is_a_clear_error() -> None:
    from ltp_core.experiment import load_backend

    with pytest.raises(ValueError, match="framework='jaxx'"):
        load_backend("jaxx")
