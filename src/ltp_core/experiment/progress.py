"""Progress reporting for training runs: tqdm bars when available, else log lines."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["make_reporter"]

logger = logging.getLogger("ltp_core.experiment")

ProgressFn = Callable[[int, int, dict[str, float]], None]


def make_reporter(quiet: bool = False) -> Callable[[str], ProgressFn | None]:
    """Return ``reporter(description) -> progress(step, total, metrics)``.

    With ``quiet`` or without tqdm, progress goes to the ``ltp_core.experiment`` logger at the
    end of each run instead of a bar.
    """
    tqdm: Any = None
    if not quiet:
        try:
            from tqdm.auto import tqdm as tqdm_class  # type: ignore[import-untyped]

            tqdm = tqdm_class
        except ImportError:
            tqdm = None

    def reporter(description: str) -> ProgressFn | None:
        state: dict[str, Any] = {}

        def progress(step: int, total: int, metrics: dict[str, float]) -> None:
            shown = {k: f"{v:.4f}" for k, v in metrics.items()}
            if tqdm is not None:
                bar = state.get("bar")
                if bar is None:
                    bar = tqdm(total=total, desc=description, leave=False, unit="step")
                    state["bar"] = bar
                bar.update(step - bar.n)
                bar.set_postfix(shown, refresh=False)
                bar.refresh()
                if step >= total:
                    bar.close()
            elif step >= total:
                logger.info("%s: done %s", description, shown)

        return progress

    return reporter
