"""The `ltp` command line: arguments, errors and the report command."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from numpy_mlp_backend import NumpyBackend

from ltp_core.cli import build_parser, main
from ltp_core.datasets import load_dataset
from ltp_core.experiment import ImpConfig, run_imp
from ltp_core.experiment.backend import BACKENDS


def numpy_framework(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``--framework numpy`` train with the NumPy MLP of these tests (no framework needed)."""
    monkeypatch.setitem(BACKENDS, "numpy", "numpy_mlp_backend:NumpyBackend")


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``(exit status, stdout, stderr)`` of ``ltp argv``."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
        message = exit_.code if isinstance(exit_.code, str) else ""
    else:
        message = ""
    out, err = capsys.readouterr()
    return code, out, err + (f"{message}\n" if message else "")


def one_error_line(err: str) -> str:
    """The single ``ltp: error:`` line of a failure (after at most one usage line)."""
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("ltp: error: ")]
    assert len(errors) == 1, err
    assert lines[-1] == errors[0], err
    assert "Traceback" not in err
    assert len(lines) <= 2 and (len(lines) == 1 or lines[0].startswith("usage: ltp ")), err
    return errors[0]


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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("LTP_DATA_DIR", str(tmp_path / "data"))
    numpy_framework(monkeypatch)
    argv = ["imp", "--framework", "numpy", "--dataset", "cifar10", "--no-download"]
    code, _, err = run_cli([*argv, "--out", str(tmp_path / "out")], capsys)
    assert code == 1
    # One error; its message goes on to list where the files were looked for.
    assert (
        err.startswith("ltp: error: Could not find the 'cifar10' dataset")
        and "Traceback" not in err
    )
    assert str(tmp_path / "data") in err


def test_iterations_and_epochs_are_exclusive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(
        ["imp", "--iterations", "5", "--epochs", "1", "--out", str(tmp_path)], capsys
    )
    assert code == 2
    assert "--epochs" in one_error_line(err)


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


def test_report_on_missing_or_foreign_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["report", str(tmp_path)], capsys)
    assert code == 1 and "No results.json" in one_error_line(err)
    (tmp_path / "results.json").write_text("{not json")
    code, _, err = run_cli(["report", str(tmp_path)], capsys)
    assert code == 1 and "not valid JSON" in one_error_line(err)
    (tmp_path / "results.json").write_text('{"kind": "imp", "config": {}, "records": [{"x": 1}]}')
    code, _, err = run_cli(["report", str(tmp_path)], capsys)
    assert code == 1 and "malformed" in one_error_line(err)


def test_unknown_framework_backend_is_a_clear_error() -> None:
    from ltp_core.experiment import load_backend

    with pytest.raises(ValueError, match="framework='jaxx'"):
        load_backend("jaxx")


# -- the command as a new user meets it -------------------------------------------------------

FAST = ["--framework", "numpy", "--iterations", "10", "--eval-every", "5"]


def usage_errors(tmp: Path) -> list[tuple[list[str], str]]:
    (tmp / "a_file").write_text("")
    out = str(tmp / "out")
    return [
        (["imp", "--out", str(tmp / "a_file")], "--out"),
        (["imp", "--out", str(tmp / "a_file" / "below")], "--out"),
        (["imp", "--out", out, "--first-seed", "-1"], "--first-seed"),
        (["imp", "--out", out, *FAST, "--rewind-iteration", "11"], "--rewind-iteration"),
        (["imp", "--out", out, *FAST, "--validation-fraction", "0.999"], "--validation-fraction"),
        (["imp", "--out", out, "--level", "2"], "did you mean --levels?"),
        (["imp", "--out", out, "--lr", "-1"], "--lr"),
        (["oneshot", "--out", out, "--strateg", "random"], "did you mean --strategies?"),
        (["mask", "w.npz", "--fraction", "0.5", "--out", str(tmp)], "--out"),
        (
            ["mask", "w.npz", "--fraction", "0.5", "--out", f"{tmp}/m.npz", "--include", "("],
            "--include",
        ),
        (["mask", "w.npz", "--fraction", "0.5", "--out", f"{tmp}/m.npz", "--seed", "-2"], "--seed"),
        (
            [
                "mask",
                "w.npz",
                "--fraction",
                "0.5",
                "--out",
                f"{tmp}/m.npz",
                "--report",
                f"{tmp}/no/r.md",
            ],
            "--report",
        ),
    ]


@pytest.mark.parametrize("case", range(12))
def test_usage_errors_are_one_line_naming_the_option_before_any_work(
    case: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    numpy_framework(monkeypatch)
    argv, mentions = usage_errors(tmp_path)[case]
    if "--framework" in argv:
        pytest.importorskip("sklearn")  # checked against the digits data
    code, out, err = run_cli(argv, capsys)
    assert code == 2, err
    line = one_error_line(err)
    assert mentions in line
    assert err.startswith(f"usage: ltp {argv[0]} ")  # the subcommand's usage, one line
    assert "batch_size" not in line and "`" not in line
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written
    assert not (tmp_path / "m.npz").exists()
    assert out == ""


def test_unwritable_out_is_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("sklearn")
    if not Path("/proc/self").is_dir():
        pytest.skip("needs /proc (a folder nobody can create entries in, even root)")
    numpy_framework(monkeypatch)
    code, _, err = run_cli(["imp", *FAST, "--out", "/proc/ltp-test/run"], capsys)
    assert code == 2
    assert "--out" in one_error_line(err)


def test_a_folder_of_another_experiment_is_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("sklearn")
    numpy_framework(monkeypatch)
    code, _, err = run_cli(
        ["imp", *FAST, "--levels", "1", "--no-plots", "--out", str(tmp_path)], capsys
    )
    assert code == 0, err
    code, _, err = run_cli(
        ["imp", *FAST, "--levels", "1", "--rate", "0.5", "--out", str(tmp_path)], capsys
    )
    assert code == 1
    assert "different experiment" in one_error_line(err)


def test_help_shows_every_option_with_help_and_default(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for name, sub in parser.subcommands.items():  # type: ignore[attr-defined]
        text = sub.format_help()
        assert "%%" not in text
        for action in sub._actions:
            if action.help == "==SUPPRESS==":
                continue
            assert action.help, f"ltp {name}: {action.option_strings or action.dest} has no help"
            for option in action.option_strings:
                assert option in text
            if action.option_strings and action.default not in (None, False, "==SUPPRESS=="):
                assert "default" in action.help or "(default:" in text
        assert text.count("(default:") >= sum(
            1
            for a in sub._actions
            if a.option_strings and a.default not in (None, False, "==SUPPRESS==")
        )
    imp_help = parser.subcommands["imp"].format_help()  # type: ignore[attr-defined]
    assert "--rewind {init}" in imp_help
    assert "(default: lenet300_100)" in imp_help and "(default: 8)" in imp_help
    oneshot_help = parser.subcommands["oneshot"].format_help()  # type: ignore[attr-defined]
    assert oneshot_help.count("movement_global") == 1  # the strategy list is printed once


def test_no_prefix_matching_of_options() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["imp", "--out", "x", "--level", "2"])


def test_off_a_terminal_one_log_line_per_finished_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("sklearn")
    numpy_framework(monkeypatch)
    code, out, err = run_cli(["imp", *FAST, "--levels", "2", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 + 2 * 3  # dense, then ticket and two controls per level
    assert lines[0].startswith("ltp: seed 0 level 0 dense: val_acc 0.")
    for line in lines:
        assert re.fullmatch(
            r"ltp: seed 0 level \d .*: val_acc 0\.\d{4} after 10 steps \(\d+\.\ds\)", line
        )
    assert "{" not in err and "\r" not in err  # never a raw dict, never a bar
    assert sum("random_prune" in line for line in lines) == 2
    # The closing line names every file written, plots and state folder included.
    written = out.strip().splitlines()[-1]
    assert written.startswith(f"wrote {tmp_path}/: ")
    names = written.split(": ", 1)[1].split(", ")
    assert names == [
        "results.json",
        "results.csv",
        "table.md",
        "accuracy_vs_weights_remaining.png",
        "early_stop_vs_weights_remaining.png",
        "state/",
    ]
    assert all((tmp_path / n).exists() for n in names)
    visible = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert visible == sorted(n.rstrip("/") for n in names)  # (the hidden lock file aside)

    # Resuming says so, before the first new run.
    code, out, err = run_cli(["imp", *FAST, "--levels", "3", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    assert err.splitlines()[0] == f"ltp: resuming in {tmp_path}: seed 0: levels 0-2 done"
    assert len(err.strip().splitlines()) == 1 + 3


def test_progress_bar_on_a_terminal_starts_with_a_sane_rate() -> None:
    pytest.importorskip("tqdm")
    from ltp_core.experiment.progress import make_reporter

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    progress = make_reporter(stream=terminal)("seed 0 level 1 ticket")
    assert progress is not None
    time.sleep(0.05)  # the first steps take time; the rate must count it
    progress(1, 100, {"val_acc": 0.5})
    rates = [float(r) for r in re.findall(r"([\d.]+)step/s", terminal.getvalue())]
    assert rates and max(rates) < 100, terminal.getvalue()
    assert "val_acc 0.5000" in terminal.getvalue()
    progress(100, 100, {"val_acc": 0.5})
    assert make_reporter(quiet=True, stream=Terminal())("x") is not None


def test_report_rebuilds_plots_with_the_title_of_imp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    from ltp_core.experiment import plots

    titles: list[str] = []
    original = plots.plot_imp

    def spy(records: Any, out_dir: Any, title: str = "") -> list[Path]:
        titles.append(title)
        return original(records, out_dir, title=title)

    monkeypatch.setattr(plots, "plot_imp", spy)
    numpy_framework(monkeypatch)
    assert run_cli(["imp", *FAST, "--levels", "1", "--out", str(tmp_path)], capsys)[0] == 0
    (tmp_path / "accuracy_vs_weights_remaining.png").unlink()
    code, out, _ = run_cli(["report", str(tmp_path)], capsys)
    assert code == 0
    assert titles == ["lenet300_100 on digits (numpy)"] * 2
    assert (tmp_path / "accuracy_vs_weights_remaining.png").exists()
    assert out.splitlines()[-1] == (
        f"wrote {tmp_path}/: table.md, accuracy_vs_weights_remaining.png, "
        "early_stop_vs_weights_remaining.png"
    )


def test_oneshot_writes_a_plot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    numpy_framework(monkeypatch)
    argv = ["oneshot", *FAST, "--model", "lenet300_100", "--strategies", "large_final", "random"]
    code, out, err = run_cli([*argv, "--out", str(tmp_path)], capsys)
    assert code == 0, err
    png = tmp_path / "accuracy_vs_weights_remaining.png"
    assert png.stat().st_size > 10_000
    assert out.splitlines()[-1] == (
        f"wrote {tmp_path}/: results.json, results.csv, table.md, accuracy_vs_weights_remaining.png"
    )
    assert len(err.strip().splitlines()) == 1 + 2 * 4  # dense, then 2 strategies x 4 sparsities


def test_resume_note_lists_only_levels_with_every_run_recorded(tmp_path: Path) -> None:
    from ltp_core.cli import _resume_note

    def record(seed: int, level: int, arm: str) -> dict[str, object]:
        return {"seed": seed, "level": level, "arm": arm}

    records = [record(0, 0, "ticket")]
    for level in (1, 2):
        records += [record(0, level, a) for a in ("ticket", "random_reinit", "random_prune")]
    records.append(record(0, 3, "ticket"))  # level 3 killed after its first run
    document = {"kind": "imp", "records": records}
    (tmp_path / "results.json").write_text(json.dumps(document))
    with mock.patch("ltp_core.cli.load_results", return_value=document):
        note = _resume_note(tmp_path, "imp", arms_per_level=3)
    assert note == f"resuming in {tmp_path}: seed 0: levels 0-2 done"


def test_a_level_that_prunes_nothing_warns_and_is_marked_in_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("sklearn")
    from ltp_core import NothingPrunedWarning

    numpy_framework(monkeypatch)
    argv = ["imp", *FAST, "--levels", "2", "--rate", "0.00001", "--no-plots"]
    with pytest.warns(NothingPrunedWarning):
        code, out, err = run_cli([*argv, "--out", str(tmp_path)], capsys)
    assert code == 0, err
    rows = [
        line
        for line in (tmp_path / "table.md").read_text().splitlines()
        if line[:3] in {"| 0", "| 1", "| 2"}
    ]
    assert rows[0].startswith("| 0 | 100.00% |")
    assert rows[1].startswith("| 1 | 100.00% (nothing pruned) |")
    assert rows[2].startswith("| 2 | 100.00% (nothing pruned) |")
    assert "(nothing pruned)" in out


def test_min_layer_density_keeps_every_layer_and_is_part_of_the_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("sklearn")
    numpy_framework(monkeypatch)
    argv = ["imp", *FAST, "--levels", "2", "--rate", "0.9", "--scope", "global", "--no-plots"]
    argv += ["--controls", "--out", str(tmp_path / "plain")]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    plain = json.loads((tmp_path / "plain" / "results.json").read_text())
    assert "min_layer_density" not in plain["config"]  # old folders resume unchanged
    argv[-1] = str(tmp_path / "floor")
    code, _, err = run_cli([*argv, "--min-layer-density", "0.009"], capsys)
    assert code == 0, err
    document = json.loads((tmp_path / "floor" / "results.json").read_text())
    assert document["config"]["min_layer_density"] == 0.009
    last = next(r for r in document["records"] if r["level"] == 2)
    unfloored = next(r for r in plain["records"] if r["level"] == 2)
    assert min(unfloored["layer_density"]) < 0.009  # without the floor a layer falls below it
    assert min(last["layer_density"]) >= 0.009
    assert last["weights_remaining"] == pytest.approx(unfloored["weights_remaining"])
    for other in (["--min-layer-density", "0.005"], []):  # a resumed run must not change it
        code, _, err = run_cli([*argv, *other], capsys)
        assert code == 1
        assert "min_layer_density" in one_error_line(err)


FLOOR_TOO_HIGH = ["--rate", "0.9", "--levels", "3", "--min-layer-density", "0.01"]
MIN_LAYER_DENSITY_ERRORS = [
    (["imp", "--min-layer-density", "0.1"], "--min-layer-density"),  # layer scope
    (["imp", "--scope", "global", "--min-layer-density", "1.0"], "[0, 1)"),
    (["imp", "--scope", "global", "--min-layer-density", "nan"], "[0, 1)"),
    (
        ["imp", "--scope", "global", *FLOOR_TOO_HIGH],
        "--min-layer-density cannot be met at level 3",
    ),
    (["oneshot", "--min-layer-density", "0.001"], "drop the layer-scope ones"),
    (
        ["oneshot", "--strategies", "large_final_global", "--min-layer-density", "0.01"],
        "cannot be met at level 4",
    ),
]


@pytest.mark.parametrize(
    ("argv", "mentions"),
    MIN_LAYER_DENSITY_ERRORS,
    ids=[" ".join(a) for a, _ in MIN_LAYER_DENSITY_ERRORS],
)
def test_min_layer_density_errors_are_one_line_before_any_work(
    argv: list[str],
    mentions: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("sklearn")
    numpy_framework(monkeypatch)
    out = tmp_path / "out"
    code, _, err = run_cli([*argv, *FAST, "--out", str(out)], capsys)
    assert code == 2, err
    line = one_error_line(err)
    assert mentions in line and "--min-layer-density" in line
    assert not out.exists()


def test_main_leaves_the_backends_loggers_as_it_found_them(tmp_path: Path) -> None:
    # the command shows the backends' INFO lines while it runs; a program (or test session)
    # calling main() keeps its own logging afterwards: before, the backends' records stopped
    # reaching the root logger's handlers for the rest of the process
    backend = logging.getLogger("ltp_torch.experiment")
    before = (backend.level, backend.propagate, list(backend.handlers))
    with pytest.raises(SystemExit):
        main(["report", os.fspath(tmp_path / "nothing here")])
    assert (backend.level, backend.propagate, list(backend.handlers)) == before
