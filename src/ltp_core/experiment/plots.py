"""Plots of experiment results (matplotlib, imported only when plotting)."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .results import RunRecord, summarize

__all__ = ["experiment_title", "plot_imp", "plot_oneshot"]

ARM_STYLE = {
    "ticket": ("tab:blue", "o", "winning ticket"),
    "random_reinit": ("tab:orange", "s", "random reinit"),
    "random_prune": ("tab:green", "^", "random pruning"),
}


def experiment_title(config: Mapping[str, Any]) -> str:
    """Plot title naming the model, the dataset and the framework of an experiment's config.

    Example:
        >>> experiment_title({"model": "conv2", "dataset": "cifar10", "framework": "keras"})
        'conv2 on cifar10 (keras)'
    """
    model = config.get("model") or "model"
    dataset = config.get("dataset") or "dataset"
    framework = config.get("framework")
    return f"{model} on {dataset}" + (f" ({framework})" if framework else "")


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("Plots need matplotlib: pip install 'lottery-tickets[plot]'") from error
    return plt


def _log_percent_axis(ax: Any, lowest: float) -> None:
    """Log x axis of weights remaining (%), decreasing to the right."""
    ax.set_xscale("log")
    ticks = [t for t in (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1) if t >= lowest * 0.9]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")
    ax.grid(True, which="both", alpha=0.3)


def plot_imp(
    records: Sequence[RunRecord], out_dir: str | os.PathLike[str], title: str = ""
) -> list[Path]:
    """Write ``accuracy_vs_weights_remaining.png`` and ``early_stop_vs_weights_remaining.png``.

    For ``find_ticket`` records (a user metric headlines them) only the first plot is written,
    showing that metric.

    Both use a log x axis (weights remaining, %, decreasing to the right) and show mean ± std over
    seeds for the ticket and each control. The dense network (level 0) starts every curve.

    Raises:
        ImportError: matplotlib is missing (``pip install 'lottery-tickets[plot]'``).
    """
    plt = _pyplot()
    headline = next((r.headline for r in records if r.headline), None)
    figures = [(1, "accuracy_vs_weights_remaining.png", "test accuracy at early stop (%)", 100.0)]
    if headline is None:
        figures.append((3, "early_stop_vs_weights_remaining.png", "early-stop iteration", 1.0))
    else:  # find_ticket: the user's metric as evaluate returned it, no early stopping
        figures = [(1, "accuracy_vs_weights_remaining.png", headline, 1.0)]
    summaries = summarize(records)
    curves: dict[str, list[tuple[float, float, float, float, float]]] = defaultdict(list)
    dense = [s for s in summaries if s.key[0] == 0 and s.arm == "ticket"]
    arms = sorted({s.arm for s in summaries}, key=lambda a: (a != "ticket", a))
    for arm in arms:
        for s in dense:
            curves[arm].append(
                (s.weights_remaining, s.test_mean, s.test_std, s.stop_mean, s.stop_std)
            )
    for s in summaries:
        if s.key[0] != 0:
            curves[s.arm].append(
                (s.weights_remaining, s.test_mean, s.test_std, s.stop_mean, s.stop_std)
            )
    paths = []
    for metric, filename, ylabel, scale in figures:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for arm in arms:
            points = sorted(curves[arm], reverse=True)
            if not points:
                continue
            color, marker, label = ARM_STYLE.get(arm, ("tab:gray", "x", arm))
            xs = [p[0] * 100 for p in points]
            ys = [p[metric] * scale for p in points]
            errs = [p[metric + 1] * scale for p in points]
            ax.errorbar(
                xs,
                ys,
                yerr=errs,
                color=color,
                marker=marker,
                label=label,
                capsize=3,
                linewidth=1.5,
                markersize=4,
            )
        _log_percent_axis(ax, min((p[0] * 100 for arm in arms for p in curves[arm]), default=1.0))
        ax.set_ylabel(ylabel)
        ax.legend()
        if title:
            ax.set_title(title)
        fig.tight_layout()
        path = Path(out_dir) / filename
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_oneshot(
    records: Sequence[RunRecord], out_dir: str | os.PathLike[str], title: str = ""
) -> list[Path]:
    """Write ``accuracy_vs_weights_remaining.png`` for a one-shot experiment (``ltp oneshot``).

    Two panels share the log x axis (weights remaining, %): the test accuracy of the masked
    *untrained* initial weights and of the trained masked network at early stop, one curve per
    strategy (mean ± std over seeds); a dashed line marks the dense network.

    Raises:
        ImportError: matplotlib is missing (``pip install 'lottery-tickets[plot]'``).
    """
    plt = _pyplot()
    summaries = summarize(records)
    dense = [s for s in summaries if s.arm == "dense"]
    strategies = sorted({s.arm for s in summaries if s.arm != "dense"})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharex=True)
    lowest = min((s.weights_remaining * 100 for s in summaries), default=1.0)
    for ax, panel in zip(axes, ("untrained", "trained"), strict=True):
        for strategy in strategies:
            points = sorted(
                (s for s in summaries if s.arm == strategy),
                key=lambda s: s.weights_remaining,
                reverse=True,
            )
            if panel == "untrained":
                ys = [s.extra_mean.get("untrained_test_accuracy", float("nan")) for s in points]
                errs = [0.0] * len(points)
            else:
                ys = [s.test_mean for s in points]
                errs = [s.test_std for s in points]
            ax.errorbar(
                [s.weights_remaining * 100 for s in points],
                [y * 100 for y in ys],
                yerr=[e * 100 for e in errs],
                marker="o",
                label=strategy,
                capsize=3,
                linewidth=1.5,
                markersize=4,
            )
        if dense:
            ax.axhline(dense[0].test_mean * 100, color="black", linestyle="--", label="dense")
        _log_percent_axis(ax, lowest)
        ax.set_ylabel(f"test accuracy, {panel} (%)")
        ax.set_title(f"{panel} masked network")
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(out_dir) / "accuracy_vs_weights_remaining.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]
