"""The ``ltp`` command: lottery-ticket experiments from one command.

Examples::

    ltp imp --dataset digits --levels 8 --seeds 2 --out runs/digits
    ltp imp --framework keras --dataset fashion_mnist --model lenet300_100 --out runs/fm
    ltp oneshot --dataset digits --out runs/oneshot
    ltp report runs/digits

The framework is imported only when a command needs it (``--framework torch|keras``; the Keras
backend comes from ``KERAS_BACKEND``).

Every failure is one ``ltp: error: ...`` line on stderr: exit status 2 for a bad option (after
the subcommand's one-line usage), 1 for a failure while running. Set ``LTP_DEBUG=1`` to see the
traceback of an unexpected error.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import math
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .datasets import DATASETS, Dataset, is_data_file, load_dataset
from .experiment.backend import BACKENDS, ProgressFn, Reporter, TrainingBackend, load_backend
from .experiment.config import CONTROLS, ImpConfig, OneShotConfig
from .experiment.models import (
    MODEL_SPECS,
    is_model_reference,
    model_spec,
    resolve_model_factory,
)
from .experiment.results import RESULTS_FILE, RunRecord, load_results, summary_table
from .strategies import CRITERIA, STRATEGIES
from .summary import low_coverage_warned_once

__all__ = ["build_parser", "main"]

logger = logging.getLogger("ltp")

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
"""``--device`` values (``--framework torch``)."""


class UsageError(Exception):
    """A bad option value found after parsing: exit 2 with the subcommand's usage."""


# -- argument types: each error names the value; argparse adds the option's name ----------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def _validation_fraction(text: str) -> float:
    value = _fraction(text)
    if value == 0.0:
        raise argparse.ArgumentTypeError(
            "expected a number in (0, 1): early stopping needs a validation split, got 0"
        )
    return value


def _regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as error:
        raise argparse.ArgumentTypeError(
            f"not a valid regular expression ({error}): {text!r}"
        ) from None
    return text


# -- the parser ---------------------------------------------------------------------------------


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows every option's default (``None``/flags excepted: their help says what happens)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or not action.option_strings
            or action.required
            or default is None
            or default is False
            or default is argparse.SUPPRESS
        ):
            return text
        if isinstance(default, (list, tuple)):
            shown = " ".join(str(v) for v in default) or "none"
        else:
            shown = str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


class _Parser(argparse.ArgumentParser):
    """argparse with one ``ltp: error:`` line per failure and the subcommand's short usage."""

    subcommands: dict[str, _Parser]

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"ltp: error: {message}\n")


# Subcommands are built like the top-level parser: no abbreviations, every default shown.
_SUBCOMMAND: dict[str, Any] = {"allow_abbrev": False, "formatter_class": _HelpFormatter}


def _model_name(text: str) -> str:
    if text in MODEL_SPECS:
        return text
    if is_model_reference(text):
        try:
            model_spec(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a package.module:function reference"
            ) from None
        return text
    raise argparse.ArgumentTypeError(
        f"invalid choice: {text!r} (choose from {_choices(sorted(MODEL_SPECS))}, or give "
        "package.module:function)"
    )


def _dataset_name(text: str) -> str:
    if text in DATASETS or is_data_file(text):
        return text
    raise argparse.ArgumentTypeError(
        f"invalid choice: {text!r} (choose from {_choices(sorted(DATASETS))}, or give the path "
        "of an .npz file)"
    )


def _choices(names: Sequence[str]) -> str:
    return ", ".join(names)


def _common(parser: argparse.ArgumentParser, default_model: str) -> None:
    """Options shared by ``ltp imp`` and ``ltp oneshot``."""
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="output folder (created); re-running the same command with it resumes",
    )
    parser.add_argument(
        "--framework",
        choices=sorted(BACKENDS),
        default="torch",
        help="training framework (the Keras backend comes from KERAS_BACKEND)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        metavar="DEVICE",
        help="where torch trains: auto (CUDA if available, else CPU), cpu, cuda, cuda:N or mps; "
        "Keras places work on its backend's devices (see the docs)",
    )
    parser.add_argument(
        "--model",
        type=_model_name,
        default=default_model,
        metavar="MODEL",
        help=f"network to prune: {_choices(sorted(MODEL_SPECS))}, or your own factory "
        "package.module:function taking (input_shape, num_classes) and returning an "
        "nn.Module or keras.Model (imported from the current directory or PYTHONPATH)",
    )
    parser.add_argument(
        "--dataset",
        type=_dataset_name,
        default="digits",
        metavar="DATASET",
        help=f"dataset to train on: {_choices(sorted(DATASETS))}, or your own .npz file with "
        "x_train, y_train, x_test, y_test (images or flat features, integer labels)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder with the dataset files (default: $LTP_DATA_DIR, else ~/.keras/datasets)",
    )
    parser.add_argument(
        "--no-download",
        action="store_true",
        help="never download; fail with a message saying where the files go",
    )
    parser.add_argument(
        "--seeds", type=_positive_int, default=1, metavar="N", help="repetitions (seeds)"
    )
    parser.add_argument(
        "--first-seed",
        type=_non_negative_int,
        default=0,
        metavar="S",
        help="first seed: runs seeds S .. S+N-1",
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument(
        "--iterations",
        type=_positive_int,
        default=None,
        metavar="N",
        help="training steps per run (default: the paper's for the model; 1500 on digits)",
    )
    length.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="instead of --iterations: passes over the training data",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="examples per step (default: the paper's for the model, 60 for LeNet)",
    )
    parser.add_argument(
        "--lr",
        type=_positive_float,
        default=None,
        help="learning rate (default: the paper's for the model, 1.2e-3 for LeNet)",
    )
    parser.add_argument(
        "--optimizer",
        choices=["adam", "sgd"],
        default=None,
        help="optimizer (default: the paper's for the model, adam)",
    )
    parser.add_argument(
        "--eval-every",
        type=_positive_int,
        default=None,
        metavar="N",
        help="steps between validation evaluations for early stopping (default: iterations / 20)",
    )
    parser.add_argument(
        "--validation-fraction",
        type=_validation_fraction,
        default=None,
        metavar="F",
        help="share of the training data held out for early stopping (default: the dataset's; "
        "5,000 examples of MNIST-sized sets, 20%% of digits)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bars (one log line per run stays)"
    )
    parser.add_argument("--no-plots", action="store_true", help="do not write the PNG plots")


def _add_min_layer_density(parser: argparse.ArgumentParser, scope: str) -> None:
    parser.add_argument(
        "--min-layer-density",
        type=_fraction,
        default=0.0,
        metavar="D",
        help="keep at least ceil(D x size) weights of every layer, taking the next-ranked "
        f"weights of other layers instead (no layer collapse); {scope} only; refused when a "
        "level cannot meet it",
    )


def _add_imp(commands: Any) -> None:
    imp = commands.add_parser(
        "imp",
        **_SUBCOMMAND,
        help="iterative magnitude pruning with controls",
        description="Iterative magnitude pruning (Frankle & Carbin 2019): train, prune, rewind, "
        "retrain, level after level, with the random_reinit and random_prune controls.",
        usage="ltp imp --out DIR [options]",
    )
    _common(imp, "lenet300_100")
    imp.add_argument(
        "--levels", type=_positive_int, default=8, metavar="N", help="pruning levels after dense"
    )
    imp.add_argument(
        "--rate",
        type=_fraction,
        default=None,
        metavar="F",
        help="fraction of the remaining weights pruned per level (default: the paper's, 0.2 "
        "for dense layers)",
    )
    imp.add_argument(
        "--conv-rate",
        type=_fraction,
        default=None,
        metavar="F",
        help="per-level fraction for conv layers (default: the paper's, else --rate)",
    )
    imp.add_argument(
        "--output-rate",
        type=_fraction,
        default=None,
        metavar="F",
        help="per-level fraction for the output layer (default: half of --rate)",
    )
    imp.add_argument(
        "--scope",
        choices=["layer", "global"],
        default="layer",
        help="one threshold per layer, or one across layers",
    )
    _add_min_layer_density(imp, "--scope global")
    imp.add_argument(
        "--strategy",
        default="large_final",
        choices=sorted(CRITERIA),
        metavar="NAME",
        help=f"pruning criterion: {_choices(sorted(CRITERIA))}",
    )
    imp.add_argument(
        "--rewind",
        choices=["init"],
        default="init",
        help="rewind the surviving weights to initialization (for late rewinding use "
        "--rewind-iteration)",
    )
    imp.add_argument(
        "--rewind-iteration",
        type=_non_negative_int,
        default=None,
        metavar="K",
        help="late rewinding: rewind to the weights after K steps of the dense run "
        "(default: 0, the initialization)",
    )
    imp.add_argument(
        "--controls",
        nargs="*",
        choices=list(CONTROLS),
        default=list(CONTROLS),
        metavar="ARM",
        help=f"control arms on the same masks: {_choices(CONTROLS)}; --controls alone runs none",
    )
    imp.add_argument(
        "--sequential",
        action="store_true",
        help="train the runs of a level one after another (the reference path); by default "
        "a level's arms and seeds train together (torch and every Keras backend) when the model "
        "has no dropout (same results up to float32 rounding)",
    )


def _add_oneshot(commands: Any) -> None:
    oneshot = commands.add_parser(
        "oneshot",
        **_SUBCOMMAND,
        help="the old package's one-shot experiment",
        description="lottery-ticket-pruner's one-shot experiment: untrained and trained accuracy "
        "of one-shot masks at 20, 55.78, 89.6 and 99.33% sparsity, per strategy.",
        usage="ltp oneshot --out DIR [options]",
    )
    _common(oneshot, "mnist_cnn")
    oneshot.add_argument(
        "--strategies",
        nargs="+",
        choices=sorted(STRATEGIES),
        default=["smallest_weights", "smallest_weights_global", "large_final"],
        metavar="NAME",
        help=f"strategies to compare: {_choices(sorted(STRATEGIES))}",
    )
    _add_min_layer_density(oneshot, "global strategies (*_global, lamp, random_erk)")


def _add_mask(commands: Any) -> None:
    mask = commands.add_parser(
        "mask",
        **_SUBCOMMAND,
        help="masks for weights in .npz/.safetensors shards, streamed (any size)",
        description="Masks for weights stored in .npz/.safetensors shards, streamed: the "
        "weights never need to fit in memory at once.",
        usage="ltp mask SHARD [SHARD ...] --fraction F --out FILE [options]",
    )
    mask.add_argument("shards", nargs="+", type=Path, help="shard files with the trained weights")
    mask.add_argument(
        "--fraction", type=_fraction, required=True, help="fraction of the weights to prune"
    )
    mask.add_argument(
        "--out", type=Path, required=True, metavar="FILE", help="portable mask file (.npz)"
    )
    mask.add_argument(
        "--initial",
        nargs="+",
        type=Path,
        default=None,
        metavar="SHARD",
        help="shard files with the initial weights (for movement, large_init, ...)",
    )
    mask.add_argument(
        "--strategy",
        default="large_final_global",
        choices=sorted(STRATEGIES),
        metavar="NAME",
        help=f"pruning strategy: {_choices(sorted(STRATEGIES))}",
    )
    _add_min_layer_density(mask, "global strategies (*_global, random_erk)")
    mask.add_argument(
        "--include",
        type=_regex,
        default=None,
        metavar="REGEX",
        help="regular expression of tensor names to prune (default: weight matrices and kernels; "
        "no embedding or positional tables, recognised by name)",
    )
    mask.add_argument(
        "--seed",
        type=_non_negative_int,
        default=None,
        help="seed of the tie-breaking (default: none, ties broken by a fixed rule)",
    )
    mask.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write the per-layer sparsity report (.md, .json, else text)",
    )


def _add_report(commands: Any) -> None:
    report = commands.add_parser(
        "report",
        **_SUBCOMMAND,
        help="rebuild tables and plots from saved results",
        description="Rebuild table.md and the plots of an ltp imp or ltp oneshot output folder.",
        usage="ltp report DIR [--no-plots]",
    )
    report.add_argument("dir", type=Path, metavar="DIR", help="output folder of ltp imp/oneshot")
    report.add_argument("--no-plots", action="store_true", help="do not rewrite the PNG plots")


def build_parser() -> argparse.ArgumentParser:
    """The ``ltp`` argument parser (no abbreviated options: ``--level`` is not ``--levels``)."""
    parser = _Parser(
        prog="ltp",
        description="Lottery-ticket experiments (Frankle & Carbin 2019).",
        usage="ltp {imp,oneshot,mask,report} ...",
        allow_abbrev=False,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lottery-tickets {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for adder in (_add_imp, _add_oneshot, _add_mask, _add_report):
        adder(commands)
    parser.subcommands = dict(commands.choices)
    return parser


# -- running ------------------------------------------------------------------------------------


def _iterations(args: argparse.Namespace, data_size: int, batch_size: int) -> int | None:
    if args.epochs is not None:
        epochs = int(args.epochs)
        return max(1, -(-data_size * epochs // batch_size))
    iterations: int | None = args.iterations
    return iterations


def _shared_options(args: argparse.Namespace, data: Dataset) -> dict[str, Any]:
    """Config fields that ``imp`` and ``oneshot`` take from the same options."""
    batch = args.batch_size or model_spec(args.model).batch_size
    return {
        "framework": args.framework,
        "model": args.model,
        "dataset": args.dataset,
        "seeds": args.seeds,
        "first_seed": args.first_seed,
        "iterations": _iterations(args, len(data.y_train), batch),
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "optimizer": args.optimizer,
        "eval_every": args.eval_every,
        "validation_fraction": args.validation_fraction,
    }


# Config fields as the options that set them, for messages that come from a config's checks.
_OPTION_NAMES = {
    "learning_rate": "--lr",
    "rewind_iteration": "--rewind-iteration",
    "first_seed": "--first-seed",
    "batch_size": "--batch-size",
    "eval_every": "--eval-every",
    "validation_fraction": "--validation-fraction",
    "conv_rate": "--conv-rate",
    "output_rate": "--output-rate",
    "min_layer_density": "--min-layer-density",
}


def _as_options(message: str) -> str:
    """``\\`learning_rate\\``` -> ``--lr`` in a library message shown by the command line."""

    def option(match: re.Match[str]) -> str:
        name = match.group(1)
        return _OPTION_NAMES.get(name, "--" + name.replace("_", "-"))

    return re.sub(r"`([a-z_]+)`", option, message)


def _check_out_folder(out: Path) -> None:
    """``--out`` must be a folder this process can create or write into."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"argument --out: {os.fspath(out)!r} is a file, not a folder")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(
            f"argument --out: {os.fspath(existing)!r} is a file, so {os.fspath(out)!r} "
            "cannot be a folder"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"argument --out: cannot write into {os.fspath(existing)!r}")


def _create_out_folder(out: Path) -> None:
    """Create ``--out`` and prove it writable before anything trains."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        raise UsageError(
            f"argument --out: cannot write into {os.fspath(out)!r} ({reason})"
        ) from None


def _check_out_file(path: Path, option: str) -> None:
    """A file option (``ltp mask --out/--report``) must name a file in an existing folder."""
    if path.is_dir():
        raise UsageError(f"argument {option}: {os.fspath(path)!r} is a folder; name a file")
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(
            f"argument {option}: the folder {os.fspath(parent)!r} does not exist; create it first"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"argument {option}: cannot write into {os.fspath(parent)!r}")


def _load_backend(args: argparse.Namespace) -> TrainingBackend:
    if args.framework == "torch":
        options: dict[str, Any] = {"device": args.device}
    elif args.device != "auto":
        raise UsageError(
            f"argument --device: {args.device!r} applies to --framework torch only; Keras "
            "trains on its backend's devices (CUDA_VISIBLE_DEVICES, see the docs)"
        )
    else:
        options = {}
    try:
        return load_backend(args.framework, **options)
    except (ValueError, TypeError) as error:
        raise UsageError(f"argument --device: {str(error).replace('`device` ', '')}") from None


def _check_training(args: argparse.Namespace, data: Dataset, iterations: int, batch: int) -> None:
    """Settings that cannot work with this data, checked before anything trains."""
    n_train = len(data.y_train)
    if batch > n_train:
        if args.validation_fraction is not None:
            raise UsageError(
                f"argument --validation-fraction: {args.validation_fraction} leaves {n_train} "
                f"training examples, fewer than one batch of {batch}; hold out less data "
                "(or lower --batch-size)"
            )
        raise UsageError(
            f"argument --batch-size: {batch} is more than the {n_train} training examples"
        )
    rewind = getattr(args, "rewind_iteration", None)
    if rewind is not None and rewind > iterations:
        raise UsageError(
            f"argument --rewind-iteration: {rewind} is past the end of the dense run "
            f"({iterations} iterations); choose K <= {iterations}"
        )


def _resume_note(out: Path, kind: str, arms_per_level: int = 1) -> str | None:
    """What an existing output folder already holds ("resuming: levels 0-4 done"), if anything.

    An IMP level counts as done when all its runs are recorded: the dense level 0 has one run, a
    later level ``arms_per_level`` (the ticket plus its controls); a half-finished level is not
    listed.
    """
    if not (out / RESULTS_FILE).exists():
        return None
    try:
        document = load_results(out)
    except (OSError, ValueError):
        return None  # the run itself reports the problem
    if document.get("kind") != kind or not document.get("records"):
        return None
    runs: dict[tuple[int, int], int] = {}
    for record in document["records"]:
        key = (int(record["seed"]), int(record["level"]))
        runs[key] = runs.get(key, 0) + 1
    done: dict[int, set[int]] = {}
    for (seed, level), count in runs.items():
        if kind == "oneshot" or count >= (1 if level == 0 else arms_per_level):
            done.setdefault(seed, set()).add(level)
    parts = []
    for seed in sorted(done):
        levels = sorted(done[seed])
        if kind == "oneshot":
            parts.append(f"seed {seed}")
        elif levels == list(range(levels[0], levels[-1] + 1)) and len(levels) > 1:
            parts.append(f"seed {seed}: levels {levels[0]}-{levels[-1]} done")
        else:
            parts.append(
                f"seed {seed}: level{'s' if len(levels) > 1 else ''} "
                f"{', '.join(map(str, levels))} done"
            )
    if kind == "oneshot":
        return f"resuming in {os.fspath(out)}: {', '.join(parts)} done"
    return f"resuming in {os.fspath(out)}: {'; '.join(parts)}"


def _announcing(reporter: Reporter, note: str | None) -> tuple[Reporter, list[bool]]:
    """``reporter`` that logs ``note`` when the first run starts (the folder was accepted)."""
    started: list[bool] = []

    def wrapped(description: str) -> ProgressFn | None:
        if not started:
            started.append(True)
            if note:
                logger.info("%s", note)
        return reporter(description)

    return wrapped, started


def _plot(kind: str, records: list[RunRecord], out: Path, config: dict[str, Any]) -> list[Path]:
    from .experiment.plots import experiment_title, plot_imp, plot_oneshot

    plot = plot_imp if kind == "imp" else plot_oneshot
    try:
        return plot(records, out, title=experiment_title(config))
    except ImportError as error:
        logger.warning("no plots: %s", error)
        return []


def _finish(
    out: Path,
    kind: str,
    records: list[RunRecord],
    plots: bool,
    config: dict[str, Any],
    report_only: bool = False,
) -> None:
    """Print the table, write the plots, and name every file the command wrote."""
    print(summary_table(records, kind), end="")
    names = ("table.md",) if report_only else (RESULTS_FILE, "results.csv", "table.md")
    written = [name for name in names if (out / name).exists()]
    if plots:
        written += [p.name for p in _plot(kind, records, out, config)]
    if not report_only and (out / "state").is_dir():
        written.append("state/")
    print(f"wrote {os.fspath(out)}/: {', '.join(written)}")


def _run_experiment(args: argparse.Namespace) -> int:
    from .experiment.progress import make_reporter

    out = Path(args.out)
    _check_out_folder(out)
    if is_model_reference(args.model):
        try:
            resolve_model_factory(args.model)
        except (ImportError, ValueError) as error:
            raise UsageError(f"argument --model: {error}") from None
    backend = _load_backend(args)
    data = load_dataset(
        args.dataset,
        data_dir=args.data_dir,
        download=not args.no_download,
        validation_fraction=args.validation_fraction,
        seed=args.first_seed,
    )
    options = _shared_options(args, data)
    try:
        if args.command == "imp":
            config: ImpConfig | OneShotConfig = ImpConfig(
                **options,
                levels=args.levels,
                rate=args.rate,
                conv_rate=args.conv_rate,
                output_rate=args.output_rate,
                scope=args.scope,
                strategy=args.strategy,
                rewind_iteration=args.rewind_iteration or 0,
                controls=tuple(args.controls),
                sequential=args.sequential,
                min_layer_density=args.min_layer_density,
            )
        else:
            config = OneShotConfig(
                **options,
                strategies=tuple(args.strategies),
                min_layer_density=args.min_layer_density,
            )
    except (ValueError, TypeError) as error:
        raise UsageError(_as_options(str(error))) from None
    _check_training(args, data, config.resolved_iterations, config.resolved_batch_size)
    from .experiment.imp import check_layer_floors_for

    try:
        check_layer_floors_for(config, backend, data)
    except ValueError as error:
        raise UsageError(_as_options(str(error))) from None
    _create_out_folder(out)
    arms = 1 + len(config.controls) if isinstance(config, ImpConfig) else 1
    note = _resume_note(out, args.command, arms)
    reporter, started = _announcing(make_reporter(quiet=args.quiet), note)
    with low_coverage_warned_once():  # one pruner per run: warn about coverage once
        if isinstance(config, ImpConfig):
            from .experiment.imp import run_imp

            store = run_imp(config, backend, data, out, reporter)
        else:
            from .experiment.oneshot import run_oneshot

            store = run_oneshot(config, backend, data, out, reporter)
    if not started and note:
        logger.info("nothing to do: %s", note.replace("resuming in", "everything is done in"))
    _finish(out, args.command, store.records, not args.no_plots, config.to_dict())
    return 0


def _report(args: argparse.Namespace) -> int:
    out = Path(args.dir)
    document = load_results(out)
    kind = document["kind"]
    if kind not in ("imp", "oneshot") or not isinstance(document.get("config"), dict):
        raise ValueError(
            f"{os.fspath(out / RESULTS_FILE)!r} is not a results file of ltp imp or ltp oneshot"
        )
    try:
        records = [RunRecord.from_dict(r) for r in document["records"]]
    except TypeError as error:
        raise ValueError(
            f"{os.fspath(out / RESULTS_FILE)!r} holds a malformed record ({error})"
        ) from None
    (out / "table.md").write_text(summary_table(records, kind))
    _finish(out, kind, records, not args.no_plots, document["config"], report_only=True)
    return 0


def _mask(args: argparse.Namespace) -> int:
    from .shards import masks_from_shards, save_packed_masks

    _check_out_file(Path(args.out), "--out")
    if args.report is not None:
        _check_out_file(Path(args.report), "--report")
    if args.min_layer_density and STRATEGIES[args.strategy].scope != "global":
        raise UsageError(
            f"argument --min-layer-density: {args.min_layer_density} applies to global "
            f"strategies, not {args.strategy!r} (in layer scope every tensor loses the same "
            f"share of itself); use {args.strategy}_global"
        )
    result = masks_from_shards(
        args.shards,
        args.strategy,
        args.fraction,
        initial=args.initial,
        include=args.include,
        seed=args.seed,
        min_layer_density=args.min_layer_density,
    )
    floor = {"min_layer_density": args.min_layer_density} if args.min_layer_density else {}
    save_packed_masks(
        args.out,
        result,
        strategy=args.strategy,
        fraction=args.fraction,
        seed=args.seed,
        sources=[str(p) for p in args.shards],
        **floor,
    )
    print(result.report.to_text())
    if result.left_out:
        listed = ", ".join(f"{name} ({why})" for name, why in result.left_out)
        print(f"left out by default: {listed}; --include REGEX chooses the tensors")
    written = f"masks written to {os.fspath(args.out)}"
    if args.report is not None:
        suffix = args.report.suffix
        text = (
            result.report.to_markdown()
            if suffix == ".md"
            else result.report.to_json()
            if suffix == ".json"
            else result.report.to_text()
        )
        args.report.write_text(text + "\n")
        written += f", report to {os.fspath(args.report)}"
    print(written)
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "imp": _run_experiment,
    "oneshot": _run_experiment,
    "mask": _mask,
    "report": _report,
}


_BACKEND_LOGGERS = ("ltp_torch.experiment", "ltp_keras.experiment")
"""The backends say once per experiment why a level's runs train one at a time (INFO)."""


def _configure_logging() -> Callable[[], None]:
    """Warnings from libraries; the command's own lines (and one per finished run) as INFO.

    Returns what puts the backends' loggers back as they were (the command shows their INFO
    lines while it runs; a program that calls :func:`main` keeps its own logging after).
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("ltp: %(message)s"))
    handler.set_name("ltp-cli")
    saved = [
        (logger, logger.level, logger.propagate)
        for logger in (logging.getLogger(name) for name in _BACKEND_LOGGERS)
    ]
    for name in ("ltp", "ltp_core.experiment.progress", *_BACKEND_LOGGERS):
        own = logging.getLogger(name)
        own.setLevel(logging.INFO)
        own.propagate = False
        for previous in [h for h in own.handlers if h.get_name() == "ltp-cli"]:
            own.removeHandler(previous)  # an earlier main() in this process, older stderr
        own.addHandler(handler)

    def restore() -> None:
        for logger, level, propagate in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate

    return restore


def _fail(message: str, status: int) -> NoReturn:
    if status == 1:  # Python prints the message on stderr and exits with status 1
        raise SystemExit(f"ltp: error: {message}")
    sys.stderr.write(f"ltp: error: {message}\n")
    raise SystemExit(status)


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse; unknown options are reported with the subcommand's usage and a close match."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        subcommand = getattr(parser, "subcommands", {}).get(args.command, parser)
        known = [o for a in subcommand._actions for o in a.option_strings]
        hints = [
            f"{word} (did you mean {match[0]}?)" if match else word
            for word in extra
            for match in [difflib.get_close_matches(word, known, n=1)]
        ]
        subcommand.error(f"unrecognized arguments: {' '.join(hints)}")
    return args


_DEFAULT_FORMAT_WARNING = warnings.formatwarning
_PACKAGES = ("ltp_core", "ltp_torch", "ltp_keras")  # whose warnings get the one-line format


def _format_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    """A warning of this library as the command line shows it: one ``ltp: warning: ...`` line
    with its class; other libraries' warnings keep Python's format (file and line).

    Example:
        >>> from ltp_core import LayerCollapseWarning as Collapse
        >>> _format_warning(Collapse("layer 'a' emptied"), Collapse, "x.py", 1)
        "ltp: warning: layer 'a' emptied (LayerCollapseWarning)\\n"
        >>> _format_warning(UserWarning("other"), UserWarning, "x.py", 1)
        'x.py:1: UserWarning: other\\n'
    """
    ours = category.__module__.split(".")[0] in _PACKAGES or any(
        f"{os.sep}{package}{os.sep}" in filename for package in _PACKAGES
    )
    if not ours:
        return _DEFAULT_FORMAT_WARNING(message, category, filename, lineno, line)
    return f"ltp: warning: {message} ({category.__name__})\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ltp`` console script.

    Returns 0 on success. A failure raises ``SystemExit``: status 2 (a bad option) after the
    subcommand's usage and one ``ltp: error: ...`` line on stderr, or (failed while running) the
    message ``ltp: error: ...`` itself, which Python prints on stderr with exit status 1.
    """
    parser = build_parser()
    args = _parse(parser, argv)
    restore_logging = _configure_logging()
    try:
        with warnings.catch_warnings():  # printed as "ltp: warning: ...", not as source lines
            warnings.formatwarning = _format_warning
            return _COMMANDS[args.command](args)
    except UsageError as error:
        subcommand = getattr(parser, "subcommands", {}).get(args.command, parser)
        subcommand.print_usage(sys.stderr)
        _fail(str(error), 2)
    except KeyboardInterrupt:
        sys.stderr.write("ltp: interrupted; re-run the same command to resume\n")
        raise SystemExit(130) from None
    except (OSError, ValueError, TypeError, ImportError, RuntimeError, KeyError) as error:
        if os.environ.get("LTP_DEBUG"):
            raise
        text = str(error) if not isinstance(error, KeyError) else f"missing {error}"
        if isinstance(error, OSError) and error.filename is not None and error.strerror:
            text = f"{error.strerror}: {os.fspath(error.filename)!r}"
        _fail(text or type(error).__name__, 1)
    except Exception as error:  # never a traceback for the user; LTP_DEBUG=1 shows it
        if os.environ.get("LTP_DEBUG"):
            raise
        _fail(
            f"unexpected {type(error).__name__}: {error} (LTP_DEBUG=1 shows the traceback; "
            "please report it)",
            1,
        )
    finally:
        restore_logging()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
