"""Weight layouts of the frameworks, and mapping saved masks onto a pruner's arrays.

PyTorch and Keras store the same layer's weights in different axis orders:

======================  =============================  =============================
layer                   PyTorch (``"torch"``)          Keras (``"keras"``)
======================  =============================  =============================
dense / linear          ``(out, in)``                  ``(in, out)``
convolution (1-3 D)     ``(out, in/groups, *kernel)``  ``(*kernel, in/groups, out)``
transposed convolution  ``(in, out/groups, *kernel)``  ``(*kernel, out, in)``
anything else           unchanged                      unchanged
======================  =============================  =============================

LSTM and plain RNN weights are ``"dense"``: torch's ``weight_ih``/``weight_hh`` (``(gates x
units, in)``) are Keras's ``kernel``/``recurrent_kernel`` transposed, with the same gate order.
GRU weights are ``"gru"``: transposed too, and the first two gate blocks swapped (torch orders
the gates reset, update, new; Keras update, reset, new). Some weights have no fixed counterpart
in the other framework (LSTM projections; torch's packed attention projections; Hugging Face
``Conv1D``): their kind is ``"native"``, and a mask file of one layout refuses to map them onto
the other.

All three kernel kinds map with one axis permutation: reverse the two channel axes and move them
from the front (torch) to the back (Keras) or back again. A portable mask file records the
``layout`` it was written in and the ``kinds`` of its arrays (``"dense"``, ``"conv"``,
``"conv_transpose"`` or ``"other"``); a loader in another layout permutes the kernel masks of the
file into its own layout and then matches them to its arrays by order and shape.

This module imports NumPy only (no framework), so every adapter uses it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .io import load_state

__all__ = [
    "KERNEL_KINDS",
    "KINDS",
    "LAYOUTS",
    "check_layout",
    "convert_layout",
    "layout_permutation",
    "load_masks_for",
    "map_saved_masks",
]

#: Layout tags a mask file can carry.
LAYOUTS = ("torch", "keras")
#: Kinds of weight arrays; the kernel kinds are permuted between layouts, ``"other"`` is kept as
#: it is, ``"native"`` (a layout of one framework only) is not mapped to another layout.
KINDS = ("dense", "conv", "conv_transpose", "gru", "other", "native")
KERNEL_KINDS = frozenset({"dense", "conv", "conv_transpose", "gru"})


def check_layout(layout: Any, argument: str = "layout") -> str:
    """Return ``layout`` if it is a known layout tag, else raise ``ValueError``.

    Example:
        >>> check_layout("keras")
        'keras'
    """
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ValueError(
            f"`{argument}` must be one of {list(LAYOUTS)}. Received: {argument}={layout!r}"
        )
    return layout


def layout_permutation(ndim: int, kind: str, source: str, target: str) -> tuple[int, ...] | None:
    """Axis order that turns an array of ``kind`` from ``source`` into ``target`` layout.

    Returns ``None`` when nothing moves (same layout, ``"other"`` kinds, 1-D arrays).

    Example:
        >>> layout_permutation(4, "conv", "torch", "keras")  # OIHW -> HWIO
        (2, 3, 1, 0)
        >>> layout_permutation(4, "conv", "keras", "torch")  # HWIO -> OIHW
        (3, 2, 0, 1)
        >>> layout_permutation(2, "dense", "keras", "torch")
        (1, 0)
    """
    if source == target or kind not in KERNEL_KINDS or ndim < 2:
        return None
    if source == "torch":  # channels first -> channels last, reversed
        return (*range(2, ndim), 1, 0)
    return (ndim - 1, ndim - 2, *range(ndim - 2))


def convert_layout(array: np.ndarray, kind: str, source: str, target: str) -> np.ndarray:
    """Return ``array`` (a mask or weight of ``kind``) in ``target`` layout.

    Example:
        >>> kernel = np.zeros((784, 300), dtype=bool)        # a Keras Dense kernel's mask
        >>> convert_layout(kernel, "dense", "keras", "torch").shape
        (300, 784)
        >>> gru = np.arange(6).reshape(1, 6)                 # Keras (in, 3 x units), units 2
        >>> convert_layout(gru, "gru", "keras", "torch").ravel().tolist()  # reset first
        [2, 3, 0, 1, 4, 5]
    """
    order = layout_permutation(array.ndim, kind, source, target)
    if order is None:
        return array
    moved = np.transpose(array, order)
    if kind == "gru":  # (reset, update, new) <-> (update, reset, new): swap the first two
        axis = 0 if target == "torch" else 1
        gates = moved.shape[axis]
        if moved.ndim != 2 or gates % 3:
            raise ValueError(
                "A GRU weight has 3 gate blocks along its gate axis. "
                f"Received: an array of shape {array.shape} of kind 'gru'"
            )
        unit = gates // 3
        swapped = np.r_[unit : 2 * unit, 0:unit, 2 * unit : gates]
        moved = np.take(moved, swapped, axis=axis)
    return np.ascontiguousarray(moved)


def _kind_class(kind: str) -> str:
    return "kernel" if kind in KERNEL_KINDS else "other"


def map_saved_masks(
    saved_masks: Sequence[np.ndarray],
    saved_names: Sequence[str],
    saved_layout: str,
    saved_kinds: Sequence[str] | None,
    names: Sequence[str],
    shapes: Sequence[tuple[int, ...]],
    kinds: Sequence[str],
    layout: str,
    source: str = "the file",
) -> list[np.ndarray]:
    """Match masks read from a file to a pruner's arrays by order and shape.

    The saved masks are first permuted from ``saved_layout`` into ``layout``, each according to
    its kind (the file's kinds when it records them, else the pruner's own). Names are reported
    but not compared: they differ between frameworks.

    Args:
        saved_masks: Masks as stored, in the saving framework's layout.
        saved_names: Their names, as recorded.
        saved_layout: Layout tag of the file.
        saved_kinds: Kinds recorded in the file, or ``None``.
        names: The pruner's array names.
        shapes: The pruner's array shapes.
        kinds: The pruner's array kinds.
        layout: The pruner's layout.
        source: How to call the masks' origin in messages (e.g. the path).

    Returns:
        Boolean masks, one per pruner array, in the pruner's layout.

    Raises:
        ValueError: The counts, kinds or shapes differ; the message lists every difference.

    Example:
        >>> keras_masks = [np.ones((4, 3), dtype=bool)]            # Dense(3) on 4 inputs
        >>> [m.shape for m in map_saved_masks(keras_masks, ["dense/kernel"], "keras", None,
        ...                                   ["0.weight"], [(3, 4)], ["dense"], "torch")]
        [(3, 4)]
    """
    problems: list[str] = []
    if len(saved_masks) != len(shapes):
        problems.append(
            f"{source} holds {len(saved_masks)} masks, the pruner has {len(shapes)} prunable arrays"
        )
    if saved_kinds is not None and len(saved_kinds) != len(saved_masks):
        problems.append(f"{source} records {len(saved_kinds)} kinds for {len(saved_masks)} masks")
        saved_kinds = None
    converted: list[np.ndarray] = []
    for i in range(max(len(saved_masks), len(shapes))):
        here = f"'{names[i]}' {tuple(shapes[i])}" if i < len(shapes) else "(nothing)"
        if i >= len(saved_masks):
            problems.append(f"#{i}: expected {here}, {source} has (nothing)")
            continue
        mask = np.asarray(saved_masks[i])
        there = f"'{saved_names[i]}' {tuple(mask.shape)} in {saved_layout} layout"
        if i >= len(shapes):
            problems.append(f"#{i}: expected (nothing), {source} has {there}")
            continue
        kind = kinds[i] if saved_kinds is None else saved_kinds[i]
        if layout != saved_layout and "native" in (kind, kinds[i]):
            problems.append(
                f"#{i}: {here} or {there} is stored in one framework's own layout (kind "
                f"'native': GRU or projected LSTM weights, packed attention projections, "
                f"Hugging Face Conv1D) and cannot be mapped from {saved_layout} to {layout} "
                f"layout; leave it out with `prunable=` on one side"
            )
            continue
        if layout != saved_layout and _kind_class(kind) != _kind_class(kinds[i]):
            problems.append(
                f"#{i}: expected {here} of kind {kinds[i]!r}, {source} has {there} of kind {kind!r}"
            )
            continue
        mapped = convert_layout(mask, kind, saved_layout, layout)
        if tuple(mapped.shape) != tuple(shapes[i]):
            note = f", i.e. {tuple(mapped.shape)} in {layout} layout" if mapped is not mask else ""
            problems.append(f"#{i}: expected {here}, {source} has {there}{note}")
            continue
        converted.append(mapped)
    if problems:
        raise ValueError(
            "The saved masks do not match this pruner's prunable arrays (matched by order and "
            "shape): " + "; ".join(problems) + f". Received: masks from {source}"
        )
    return converted


def load_masks_for(
    path: str | os.PathLike[str],
    names: Sequence[str],
    shapes: Sequence[tuple[int, ...]],
    kinds: Sequence[str],
    target: str,
    layout: str | None = None,
) -> tuple[list[np.ndarray], str]:
    """Read a portable mask file and map its masks onto a pruner's arrays in ``target`` layout.

    Args:
        path: A mask or state file (``ltp_core.io`` format).
        names: The receiving pruner's array names.
        shapes: Their shapes.
        kinds: Their kinds (``"dense"``, ``"conv"``, ``"conv_transpose"``, ``"other"``).
        target: The receiving framework's layout.
        layout: The layout of a file that records none (default ``target``); a file that records
            one must agree.

    Returns:
        The mapped masks and the layout the file was read in.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Corrupt file, conflicting layouts, malformed metadata, or masks that do not
            match (the message lists every difference).
    """
    if layout is not None:
        check_layout(layout)
    state = load_state(path)
    recorded = state.get("layout")
    if recorded is not None:
        check_layout(recorded, f"layout recorded in {os.fspath(path)!r}")
        if layout is not None and layout != recorded:
            raise ValueError(
                f"{os.fspath(path)!r} records layout {recorded!r}. Received: layout={layout!r}"
            )
    saved_layout = str(recorded or layout or target)
    saved_kinds = state.get("kinds")
    if saved_kinds is not None and (
        not isinstance(saved_kinds, list) or not all(isinstance(k, str) for k in saved_kinds)
    ):
        raise ValueError(
            f"{os.fspath(path)!r} has malformed `kinds` metadata. Received: kinds={saved_kinds!r}"
        )
    masks = map_saved_masks(
        state["masks"],
        [str(n) for n in state["names"]],
        saved_layout,
        saved_kinds,
        names,
        shapes,
        kinds,
        target,
        source=repr(os.fspath(path)),
    )
    return masks, saved_layout
