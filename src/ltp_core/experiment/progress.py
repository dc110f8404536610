"""Progress reporting for training runs: a tqdm bar on a terminal, one log line per finished run.

Every finished run logs one line to the ``ltp_core.experiment.progress`` logger (INFO), with the
run's description (seed, level, arm), its last metrics and its wall time. On a terminal (and with
tqdm installed) a progress bar also shows the run while it trains; off a terminal (a log file, a
pipe, CI) there are no bars, so logs hold one line per run and no control characters.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["format_metrics", "make_reporter"]

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, dict[str, float]], None]


def format_metrics(metrics: dict[str, float]) -> str:
    """Metrics as ``name value`` pairs (never a raw dict).

    Example:
        >>> format_metrics({"val_acc": 0.97561, "loss": 0.1})
        'val_acc 0.9756, loss 0.1000'
    """
    return ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())


def _wants_bars(quiet: bool, stream: TextIO) -> Any:
    """The tqdm class when bars should be drawn on ``stream``, else ``None``."""
    if quiet:
        return None
    isatty = getattr(stream, "isatty", None)
    if isatty is None or not isatty():
        return None
    try:
        from tqdm.auto import tqdm as tqdm_class  # type: ignore[import-untyped]
    except ImportError:
        return None
    return tqdm_class


def make_reporter(
    quiet: bool = False, stream: TextIO | None = None
) -> Callable[[str], ProgressFn | None]:
    """Return ``reporter(description) -> progress(step, total, metrics)``.

    Args:
        quiet: Never draw progress bars (the per-run log lines stay).
        stream: Where bars go (default ``sys.stderr``); bars are drawn only if it is a terminal
            and tqdm is installed.

    Example:
        >>> import io, logging
        >>> reporter = make_reporter(stream=io.StringIO())  # not a terminal: no bar
        >>> progress = reporter("seed 0 level 1 ticket")
        >>> progress(10, 20, {"val_acc": 0.5})
        >>> progress(20, 20, {"val_acc": 0.75})  # logs "seed 0 level 1 ticket: val_acc 0.7500 ..."
    """
    target = sys.stderr if stream is None else stream
    tqdm = _wants_bars(quiet, target)

    def reporter(description: str) -> ProgressFn | None:
        start = time.perf_counter()
        # The bar starts with the run, so its first rate counts the time the first steps took.
        bar = (
            tqdm(total=None, desc=description, leave=False, unit="step", file=target)
            if tqdm is not None
            else None
        )

        def progress(step: int, total: int, metrics: dict[str, float]) -> None:
            if bar is not None:
                if bar.total != total:
                    bar.total = total
                bar.update(step - bar.n)
                bar.set_postfix_str(format_metrics(metrics), refresh=True)
            if step >= total:
                if bar is not None:
                    bar.close()
                logger.info(
                    "%s: %s after %d steps (%.1fs)",
                    description,
                    format_metrics(metrics),
                    step,
                    time.perf_counter() - start,
                )

        return progress

    return reporter
