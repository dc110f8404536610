"""What a pruner covers: the prunable tensors and the parameters left out, with the reason.

Adapters describe each tensor of a model as a :class:`PrunableTensor` (selected) or a
:class:`LeftOutTensor` (not selected, with a short reason such as ``"bias"`` or ``"embedding"``);
:func:`build_summary` turns them into a :class:`PruningSummary` that prints as a table and warns
through :func:`warn_if_low_coverage` when the selection covers too little of the model.

Example:
    >>> import numpy as np
    >>> summary = build_summary(
    ...     [PrunableTensor("fc.weight", "linear", (4, 3), kept=6)],
    ...     [LeftOutTensor("fc.bias", (4,), "bias")],
    ... )
    >>> summary.coverage
    0.75
    >>> print(summary.to_text())  # doctest: +NORMALIZE_WHITESPACE
    prunable   kind    shape   weights  kept  density  share
    fc.weight  linear  (4, 3)  12       6     50.00%   75.00%
    total                      12       6     50.00%   75.00%
    left out: 4 parameters (25.00%)
      bias: 4 in 1 tensor (fc.bias)
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .notices import LowCoverageWarning

__all__ = [
    "LeftOutTensor",
    "PrunableTensor",
    "PruningSummary",
    "build_summary",
    "low_coverage_warned_once",
    "warn_if_low_coverage",
]

logger = logging.getLogger(__name__)

#: Below this share of the trainable parameters a new pruner warns.
LOW_COVERAGE_THRESHOLD = 0.5

# Messages already given inside a `low_coverage_warned_once()` block (None outside one).
_GIVEN: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar(
    "ltp_low_coverage_given", default=None
)


@contextlib.contextmanager
def low_coverage_warned_once() -> Iterator[None]:
    """Inside the block, each distinct low-coverage warning is given once.

    An experiment builds a pruner per run on the same model (``find_ticket``, ``ltp imp``);
    without this, the same :class:`~ltp_core.notices.LowCoverageWarning` would be logged at
    every run.

    Example:
        >>> import warnings
        >>> s = build_summary([PrunableTensor("w", "linear", (2,))],
        ...                   [LeftOutTensor("emb", (10, 4), "embedding")])
        >>> with warnings.catch_warnings(record=True) as caught, low_coverage_warned_once():
        ...     warnings.simplefilter("always")
        ...     [warn_if_low_coverage(s, "pass prunable=...") for _ in range(3)]
        [True, False, False]
        >>> len(caught)
        1
    """
    token = _GIVEN.set(set() if _GIVEN.get() is None else _GIVEN.get())
    try:
        yield
    finally:
        _GIVEN.reset(token)


def _count(shape: tuple[int, ...]) -> int:
    return int(math.prod(shape))


@dataclass(frozen=True)
class PrunableTensor:
    """One selected tensor.

    Attributes:
        name: Name the pruner uses for it (``layer_rates`` keys, reports).
        kind: Role, e.g. ``"linear"``, ``"conv"``, ``"attention"``, ``"recurrent"``.
        shape: Tensor shape.
        kept: Weights currently kept (``None`` = all, no masks yet).
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    kept: int | None = None

    @property
    def count(self) -> int:
        """Number of weights."""
        return _count(self.shape)

    @property
    def density(self) -> float:
        """Fraction of the weights kept."""
        if self.kept is None or self.count == 0:
            return 1.0
        return self.kept / self.count


@dataclass(frozen=True)
class LeftOutTensor:
    """One trainable tensor that is not pruned, and why (``"bias"``, ``"normalization"``...)."""

    name: str
    shape: tuple[int, ...]
    reason: str

    @property
    def count(self) -> int:
        """Number of parameters."""
        return _count(self.shape)


@dataclass(frozen=True)
class PruningSummary:
    """The prunable tensors of a model and the parameters left out, grouped by reason."""

    prunable: tuple[PrunableTensor, ...]
    left_out: tuple[LeftOutTensor, ...] = field(default_factory=tuple)

    @property
    def prunable_parameters(self) -> int:
        """Weights in the prunable tensors."""
        return sum(t.count for t in self.prunable)

    @property
    def total_parameters(self) -> int:
        """Prunable plus left-out parameters (tied tensors counted once)."""
        return self.prunable_parameters + sum(t.count for t in self.left_out)

    @property
    def coverage(self) -> float:
        """Share of the model's parameters that the pruner may prune."""
        total = self.total_parameters
        return self.prunable_parameters / total if total else 1.0

    @property
    def kept(self) -> int:
        """Prunable weights currently kept."""
        return sum(t.count if t.kept is None else t.kept for t in self.prunable)

    def left_out_by_reason(self) -> dict[str, list[LeftOutTensor]]:
        """Left-out tensors grouped by reason, largest group first."""
        groups: dict[str, list[LeftOutTensor]] = {}
        for tensor in self.left_out:
            groups.setdefault(tensor.reason, []).append(tensor)
        return dict(sorted(groups.items(), key=lambda kv: -sum(t.count for t in kv[1])))

    def _share(self, count: int) -> str:
        total = self.total_parameters
        return f"{100.0 * count / total:.2f}%" if total else "-"

    def _rows(self) -> list[list[str]]:
        rows = [
            [
                t.name,
                t.kind,
                str(t.shape),
                str(t.count),
                str(t.count if t.kept is None else t.kept),
                f"{100.0 * t.density:.2f}%",
                self._share(t.count),
            ]
            for t in self.prunable
        ]
        total = self.prunable_parameters
        density = self.kept / total if total else 1.0
        rows.append(
            [
                "total",
                "",
                "",
                str(total),
                str(self.kept),
                f"{100.0 * density:.2f}%",
                self._share(total),
            ]
        )
        return rows

    def _left_out_lines(self) -> list[str]:
        left = sum(t.count for t in self.left_out)
        lines = [f"left out: {left} parameters ({self._share(left)})"]
        for reason, tensors in self.left_out_by_reason().items():
            names = ", ".join(t.name for t in tensors[:4]) + (", ..." if len(tensors) > 4 else "")
            plural = "tensor" if len(tensors) == 1 else "tensors"
            count = sum(t.count for t in tensors)
            lines.append(f"  {reason}: {count} in {len(tensors)} {plural} ({names})")
        return lines

    def to_text(self) -> str:
        """Aligned plain-text table, then the left-out parameters by reason."""
        header = ["prunable", "kind", "shape", "weights", "kept", "density", "share"]
        rows = [header, *self._rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        return "\n".join(lines + self._left_out_lines())

    def to_markdown(self) -> str:
        """Markdown table, then the left-out parameters by reason as a list."""
        header = ["prunable", "kind", "shape", "weights", "kept", "density", "share"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in self._rows()]
        left = self._left_out_lines()
        return "\n".join([*lines, "", left[0], *(f"- {line.strip()}" for line in left[1:])])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {
            "prunable": [
                {
                    "name": t.name,
                    "kind": t.kind,
                    "shape": list(t.shape),
                    "count": t.count,
                    "kept": t.count if t.kept is None else t.kept,
                    "density": t.density,
                }
                for t in self.prunable
            ],
            "left_out": [
                {"name": t.name, "shape": list(t.shape), "count": t.count, "reason": t.reason}
                for t in self.left_out
            ],
            "prunable_parameters": self.prunable_parameters,
            "total_parameters": self.total_parameters,
            "coverage": self.coverage,
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        return self.to_text()


def build_summary(
    prunable: Sequence[PrunableTensor], left_out: Sequence[LeftOutTensor] = ()
) -> PruningSummary:
    """Collect adapter-described tensors into a :class:`PruningSummary`.

    Args:
        prunable: The selected tensors, in the pruner's order.
        left_out: Trainable tensors that are not selected, each with its reason.

    Returns:
        The summary.

    Raises:
        TypeError: When an item has the wrong type.

    Example:
        >>> build_summary([PrunableTensor("w", "linear", (2, 2))]).coverage
        1.0
    """
    for item in prunable:
        if not isinstance(item, PrunableTensor):
            raise TypeError(f"`prunable` items must be PrunableTensor. Received: {item!r}")
    for other in left_out:
        if not isinstance(other, LeftOutTensor):
            raise TypeError(f"`left_out` items must be LeftOutTensor. Received: {other!r}")
    return PruningSummary(tuple(prunable), tuple(left_out))


def warn_if_low_coverage(
    summary: PruningSummary,
    how_to_include: str,
    threshold: float = LOW_COVERAGE_THRESHOLD,
    stacklevel: int = 3,
) -> bool:
    """Warn (:class:`~ltp_core.notices.LowCoverageWarning`) when the pruner covers too little.

    Args:
        summary: What the pruner covers.
        how_to_include: Adapter-specific advice, e.g. ``"pass prunable=..."``.
        threshold: Warn below this share of the model's parameters.
        stacklevel: Passed to :func:`warnings.warn` so the warning points at the user's call.

    Returns:
        Whether a warning was issued.

    Example:
        >>> import warnings
        >>> s = build_summary([PrunableTensor("w", "linear", (2,))],
        ...                   [LeftOutTensor("emb", (10, 4), "embedding")])
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_if_low_coverage(s, "pass prunable=...")
        True
        >>> "embedding: 40" in str(caught[0].message)
        True
    """
    if summary.total_parameters == 0 or summary.coverage >= threshold:
        return False
    groups = ", ".join(
        f"{reason}: {sum(t.count for t in tensors)}"
        for reason, tensors in summary.left_out_by_reason().items()
    )
    message = (
        f"The pruner covers only {100.0 * summary.coverage:.1f}% of the model's "
        f"{summary.total_parameters} trainable parameters ({summary.prunable_parameters} in "
        f"{len(summary.prunable)} tensors); left out by reason: {groups}. To include more, "
        f"{how_to_include}. `pruner.summary()` lists every tensor."
    )
    given = _GIVEN.get()
    if given is not None:
        if message in given:
            return False
        given.add(message)
    logger.warning(message)
    warnings.warn(message, LowCoverageWarning, stacklevel=stacklevel)
    return True
