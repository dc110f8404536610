"""Per-layer sparsity report as plain text, Markdown or JSON.

Example:
    >>> import numpy as np
    >>> report = sparsity_report([np.array([True, False, True, True])], ["dense"])
    >>> print(report.to_text())  # doctest: +NORMALIZE_WHITESPACE
    layer  shape  weights  kept  density  sparsity
    dense  (4,)   4        3     75.00%   25.00%
    total         4        3     75.00%   25.00%
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["LayerSparsity", "SparsityReport", "sparsity_report"]


@dataclass(frozen=True)
class LayerSparsity:
    """Counts for one layer."""

    name: str
    shape: tuple[int, ...]
    total: int
    kept: int

    @property
    def density(self) -> float:
        """Fraction kept."""
        return self.kept / self.total if self.total else 1.0

    @property
    def sparsity(self) -> float:
        """Fraction pruned."""
        return 1.0 - self.density


@dataclass(frozen=True)
class SparsityReport:
    """Per-layer and total sparsity of a list of masks."""

    layers: tuple[LayerSparsity, ...]

    @property
    def total(self) -> int:
        """Weights over all layers."""
        return sum(layer.total for layer in self.layers)

    @property
    def kept(self) -> int:
        """Kept weights over all layers."""
        return sum(layer.kept for layer in self.layers)

    @property
    def density(self) -> float:
        """Overall fraction kept."""
        return self.kept / self.total if self.total else 1.0

    def _rows(self) -> list[list[str]]:
        rows = [
            [
                layer.name,
                str(layer.shape),
                str(layer.total),
                str(layer.kept),
                f"{layer.density:.2%}",
                f"{layer.sparsity:.2%}",
            ]
            for layer in self.layers
        ]
        rows.append(
            [
                "total",
                "",
                str(self.total),
                str(self.kept),
                f"{self.density:.2%}",
                f"{1 - self.density:.2%}",
            ]
        )
        return rows

    _HEADER = ("layer", "shape", "weights", "kept", "density", "sparsity")

    def to_text(self) -> str:
        """Aligned plain-text table."""
        rows = [list(self._HEADER), *self._rows()]
        widths = [max(len(row[c]) for row in rows) for c in range(len(self._HEADER))]
        return "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows
        )

    def to_markdown(self) -> str:
        """GitHub-flavoured Markdown table."""
        lines = ["| " + " | ".join(self._HEADER) + " |", "|" + "---|" * len(self._HEADER)]
        lines += ["| " + " | ".join(row) + " |" for row in self._rows()]
        return "\n".join(lines)

    def to_json(self) -> str:
        """JSON document with one object per layer and the totals."""
        return json.dumps(
            {
                "layers": [
                    {**asdict(layer), "shape": list(layer.shape), "density": layer.density}
                    for layer in self.layers
                ],
                "total": self.total,
                "kept": self.kept,
                "density": self.density,
            },
            indent=2,
        )

    def scalars(self, prefix: str = "sparsity") -> dict[str, float]:
        """Sparsity (fraction pruned) as ``tag -> float``, ready for a metrics logger.

        The overall value is under ``prefix`` itself and each layer under ``prefix/name``, so
        TensorBoard groups the layers in one section (``SummaryWriter.add_scalar(tag, value)``).

        Args:
            prefix: Tag of the overall sparsity and first part of every layer's tag.

        Returns:
            ``{prefix: overall, prefix + "/" + name: layer_sparsity, ...}`` in layer order.

        Raises:
            ValueError: When ``prefix`` is not a non-empty string.

        Example:
            >>> import numpy as np
            >>> report = sparsity_report([np.array([True, False]), np.ones(2, bool)], ["a", "b"])
            >>> report.scalars()
            {'sparsity': 0.25, 'sparsity/a': 0.5, 'sparsity/b': 0.0}
        """
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"`prefix` must be a non-empty string. Received: prefix={prefix!r}")

        def pruned_fraction(total: int, kept: int) -> float:
            return (total - kept) / total if total else 0.0

        result = {prefix: pruned_fraction(self.total, self.kept)}
        for layer in self.layers:
            result[f"{prefix}/{layer.name}"] = pruned_fraction(layer.total, layer.kept)
        return result

    def __str__(self) -> str:
        return self.to_text()


def sparsity_report(
    masks: Sequence[np.ndarray], names: Sequence[str] | None = None
) -> SparsityReport:
    """Build a :class:`SparsityReport` from boolean masks.

    Args:
        masks: One boolean mask per layer.
        names: Layer names (default ``layer_0``, ...).
    """
    layer_names = list(names) if names is not None else [f"layer_{i}" for i in range(len(masks))]
    if len(layer_names) != len(masks):
        raise ValueError(
            f"`names` must have one entry per mask ({len(masks)}). "
            f"Received: {len(layer_names)} names"
        )
    return SparsityReport(
        tuple(
            LayerSparsity(name, tuple(np.shape(m)), int(np.size(m)), int(np.count_nonzero(m)))
            for name, m in zip(layer_names, masks, strict=True)
        )
    )
