"""Compatibility re-export: the layout mapping now lives in :mod:`ltp_core.layout`.

Example:
    >>> from ltp_torch.layout import layout_permutation
    >>> layout_permutation(2, "dense", "torch", "keras")
    (1, 0)
"""

from __future__ import annotations

from ltp_core.layout import (
    KERNEL_KINDS,
    KINDS,
    LAYOUTS,
    check_layout,
    convert_layout,
    layout_permutation,
    map_saved_masks,
)

__all__ = [
    "KERNEL_KINDS",
    "KINDS",
    "LAYOUTS",
    "check_layout",
    "convert_layout",
    "layout_permutation",
    "map_saved_masks",
]
