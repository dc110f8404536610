"""The ``ltp`` command: lottery-ticket experiments from one command.

Examples::

    ltp imp --dataset digits --levels 8 --seeds 2 --out runs/digits
    ltp imp --framework keras --dataset fashion_mnist --model lenet300_100 --out runs/fm
    ltp oneshot --dataset digits --out runs/oneshot
    ltp report runs/digits

The framework is imported only when a command needs it (``--framework torch|keras``; the Keras
backend comes from ``KERAS_BACKEND``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .datasets import DATASETS, Dataset, DatasetNotFoundError, load_dataset
from .experiment.backend import BACKENDS, load_backend
from .experiment.config import CONTROLS, ImpConfig, OneShotConfig
from .experiment.models import MODEL_SPECS
from .experiment.results import RunRecord, load_results, summary_table
from .strategies import CRITERIA, STRATEGIES

__all__ = ["build_parser", "main"]

logger = logging.getLogger("ltp")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
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


def _rewind(text: str) -> int:
    if text == "init":
        return 0
    raise argparse.ArgumentTypeError(
        f"--rewind takes 'init' (use --rewind-iteration K for late rewinding), got {text!r}"
    )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--framework",
        choices=sorted(BACKENDS),
        default="torch",
        help="training framework (Keras backend from KERAS_BACKEND)",
    )
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="digits")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder with the dataset files (else LTP_DATA_DIR, ~/.keras/datasets)",
    )
    parser.add_argument(
        "--no-download",
        action="store_true",
        help="never download; fail with a message saying where files go",
    )
    parser.add_argument("--seeds", type=_positive_int, default=1, help="repetitions (seeds 0..N-1)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--iterations",
        type=_positive_int,
        default=None,
        help="training steps per run (default: the paper's; 1500 on digits)",
    )
    parser.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help="alternative to --iterations: passes over the training data",
    )
    parser.add_argument("--batch-size", type=_positive_int, default=None)
    parser.add_argument("--lr", type=float, default=None, help="learning rate")
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default=None)
    parser.add_argument(
        "--eval-every",
        type=_positive_int,
        default=None,
        help="steps between validation evaluations (early stopping)",
    )
    parser.add_argument(
        "--validation-fraction",
        type=_validation_fraction,
        default=None,
        help="share of the training data held out for early stopping",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder; re-running with the same folder resumes",
    )
    parser.add_argument("--quiet", action="store_true", help="log lines instead of progress bars")
    parser.add_argument("--no-plots", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    """The ``ltp`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="ltp", description="Lottery-ticket experiments (Frankle & Carbin 2019)."
    )
    parser.add_argument("--version", action="version", version=f"lottery-tickets {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    imp = commands.add_parser("imp", help="iterative magnitude pruning with controls")
    _common(imp)
    imp.add_argument("--model", choices=sorted(MODEL_SPECS), default="lenet300_100")
    imp.add_argument("--levels", type=_positive_int, default=8)
    imp.add_argument(
        "--rate",
        type=_fraction,
        default=None,
        help="fraction of the remaining weights pruned per level (paper: 0.2 dense)",
    )
    imp.add_argument(
        "--conv-rate",
        type=_fraction,
        default=None,
        help="per-level fraction for conv layers (default: the paper's, or --rate)",
    )
    imp.add_argument(
        "--output-rate",
        type=_fraction,
        default=None,
        help="per-level fraction for the output layer (default: half of --rate)",
    )
    imp.add_argument("--scope", choices=["layer", "global"], default="layer")
    imp.add_argument(
        "--strategy", default="large_final", choices=sorted(CRITERIA), help="pruning criterion"
    )
    imp.add_argument(
        "--rewind",
        type=_rewind,
        default=0,
        dest="rewind_init",
        help="'init': rewind to initialization (default)",
    )
    imp.add_argument(
        "--rewind-iteration",
        type=int,
        default=None,
        help="late rewinding: rewind to the weights after K steps of dense training",
    )
    imp.add_argument(
        "--controls",
        nargs="*",
        choices=list(CONTROLS),
        default=list(CONTROLS),
        help="control arms to run on the same masks (none: --controls)",
    )

    oneshot = commands.add_parser("oneshot", help="the old package's one-shot experiment")
    _common(oneshot)
    oneshot.add_argument("--model", choices=sorted(MODEL_SPECS), default="mnist_cnn")
    oneshot.add_argument(
        "--strategies",
        nargs="+",
        choices=sorted(STRATEGIES),
        default=["smallest_weights", "smallest_weights_global", "large_final"],
    )

    mask = commands.add_parser(
        "mask", help="masks for weights in .npz/.safetensors shards, streamed (any size)"
    )
    mask.add_argument("shards", nargs="+", type=Path, help="shard files with the trained weights")
    mask.add_argument(
        "--initial",
        nargs="+",
        type=Path,
        default=None,
        help="shard files with the initial weights (movement, large_init, ...)",
    )
    mask.add_argument("--strategy", default="large_final_global", choices=sorted(STRATEGIES))
    mask.add_argument(
        "--fraction", type=_fraction, required=True, help="fraction of the weights to prune"
    )
    mask.add_argument(
        "--include",
        default=None,
        help="regex of tensor names to prune (default: tensors with 2+ dims)",
    )
    mask.add_argument("--seed", type=int, default=None)
    mask.add_argument("--out", type=Path, required=True, help="portable mask file (.npz)")
    mask.add_argument(
        "--report",
        type=Path,
        default=None,
        help="also write the per-layer sparsity report (.md, .json or .txt)",
    )

    report = commands.add_parser("report", help="rebuild tables and plots from saved results")
    report.add_argument("dir", type=Path)
    report.add_argument("--no-plots", action="store_true")
    return parser


def _iterations(args: argparse.Namespace, data_size: int, batch_size: int) -> int | None:
    if args.iterations is not None and args.epochs is not None:
        raise SystemExit("ltp: error: give --iterations or --epochs, not both")
    if args.epochs is not None:
        epochs = int(args.epochs)
        return max(1, -(-data_size * epochs // batch_size))
    iterations: int | None = args.iterations
    return iterations


def _shared_options(args: argparse.Namespace, data: Dataset) -> dict[str, Any]:
    """Config fields that ``imp`` and ``oneshot`` take from the same options."""
    batch = args.batch_size or MODEL_SPECS[args.model].batch_size
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


def _load_data(args: argparse.Namespace) -> Dataset:
    try:
        return load_dataset(
            args.dataset,
            data_dir=args.data_dir,
            download=not args.no_download,
            validation_fraction=args.validation_fraction,
            seed=args.first_seed,
        )
    except DatasetNotFoundError as error:
        raise SystemExit(f"ltp: error: {error}") from None


def _finish(out: Path, kind: str, records: list[RunRecord], plots: bool, title: str) -> None:
    table = summary_table(records, kind)
    print(table)
    if plots and kind == "imp":
        try:
            from .experiment.plots import plot_imp

            for path in plot_imp(records, out, title=title):
                logger.info("wrote %s", path)
        except ImportError as error:
            logger.warning("%s", error)
    print(f"results in {out}/ (results.json, results.csv, table.md)")


def _mask(args: argparse.Namespace) -> int:
    from .shards import masks_from_shards, save_packed_masks

    try:
        result = masks_from_shards(
            args.shards,
            args.strategy,
            args.fraction,
            initial=args.initial,
            include=args.include,
            seed=args.seed,
        )
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise SystemExit(f"ltp: error: {error}") from None
    save_packed_masks(
        args.out,
        result,
        strategy=args.strategy,
        fraction=args.fraction,
        seed=args.seed,
        sources=[str(p) for p in args.shards],
    )
    print(result.report.to_text())
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
    print(f"masks written to {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ltp`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "quiet", False) else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
    )
    if args.command == "mask":
        return _mask(args)
    if args.command == "report":
        try:
            document = load_results(args.dir)
        except (FileNotFoundError, ValueError) as error:
            raise SystemExit(f"ltp: error: {error}") from None
        records = [RunRecord.from_dict(r) for r in document["records"]]
        (Path(args.dir) / "table.md").write_text(summary_table(records, document["kind"]))
        _finish(
            Path(args.dir),
            document["kind"],
            records,
            not args.no_plots,
            str(document["config"].get("model", "")),
        )
        return 0

    from .experiment.progress import make_reporter

    data = _load_data(args)
    reporter = make_reporter(quiet=args.quiet)
    try:
        backend = load_backend(args.framework)
    except ImportError as error:
        raise SystemExit(f"ltp: error: {error}") from None
    if args.command == "imp":
        from .experiment.imp import run_imp

        rewind = args.rewind_iteration if args.rewind_iteration is not None else args.rewind_init
        try:
            config = ImpConfig(
                **_shared_options(args, data),
                levels=args.levels,
                rate=args.rate,
                conv_rate=args.conv_rate,
                output_rate=args.output_rate,
                scope=args.scope,
                strategy=args.strategy,
                rewind_iteration=rewind,
                controls=tuple(args.controls),
            )
            store = run_imp(config, backend, data, args.out, reporter)
        except ValueError as error:
            raise SystemExit(f"ltp: error: {error}") from None
        _finish(
            args.out,
            "imp",
            store.records,
            not args.no_plots,
            f"{args.model} on {args.dataset} ({args.framework})",
        )
    else:
        from .experiment.oneshot import run_oneshot

        try:
            oneshot_config = OneShotConfig(
                **_shared_options(args, data), strategies=tuple(args.strategies)
            )
            store = run_oneshot(oneshot_config, backend, data, args.out, reporter)
        except ValueError as error:
            raise SystemExit(f"ltp: error: {error}") from None
        _finish(args.out, "oneshot", store.records, False, "")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
