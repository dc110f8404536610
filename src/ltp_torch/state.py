"""Checkpoint-friendly state: NumPy trees <-> torch tensor trees, module snapshots.

``torch.load(..., weights_only=True)`` accepts tensors and plain Python containers but not NumPy
arrays, so the pruner's state (NumPy arrays from the core) is stored as tensors and converted back
on load. Every array goes to a tensor of the same dtype and back, so the round trip is exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["restore_snapshot", "snapshot", "to_numpy_tree", "to_torch_tree"]

_TAG = "__ltp_numpy__"


def to_torch_tree(value: Any) -> Any:
    """Convert NumPy arrays and scalars inside dicts/lists/tuples to tensors and Python scalars.

    Arrays whose dtype torch cannot hold (strings, objects) are stored as tagged nested lists.

    Example:
        >>> to_torch_tree({"a": [np.arange(2)], "b": np.float32(0.5)})
        {'a': [tensor([0, 1])], 'b': 0.5}
    """
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biufc":
            return torch.from_numpy(np.array(value, copy=True))
        return {_TAG: value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {key: to_torch_tree(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_torch_tree(item) for item in value]
    if isinstance(value, tuple):
        return tuple(to_torch_tree(item) for item in value)
    return value


def to_numpy_tree(value: Any) -> Any:
    """Inverse of :func:`to_torch_tree`: tensors become NumPy arrays of the same dtype.

    Example:
        >>> to_numpy_tree({"a": [torch.arange(2)]})
        {'a': [array([0, 1])]}
    """
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True).numpy()
    if isinstance(value, Mapping):
        if _TAG in value:
            return np.array(value[_TAG], dtype=np.dtype(value["dtype"]))
        return {key: to_numpy_tree(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_numpy_tree(item) for item in value]
    if isinstance(value, tuple):
        return tuple(to_numpy_tree(item) for item in value)
    return value


def snapshot(module: nn.Module, exclude: set[str]) -> dict[str, torch.Tensor]:
    """Copy the module's parameters and buffers (not those named in ``exclude``) to CPU.

    Example:
        >>> sorted(snapshot(nn.BatchNorm1d(2), exclude={"weight"}))
        ['bias', 'num_batches_tracked', 'running_mean', 'running_var']
    """
    copied: dict[str, torch.Tensor] = {}
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if name not in exclude:
            copied[name] = tensor.detach().to("cpu", copy=True)
    return copied


@torch.no_grad()
def restore_snapshot(module: nn.Module, saved: Mapping[str, torch.Tensor]) -> None:
    """Copy a :func:`snapshot` back into the module in place (identities kept).

    Raises:
        ValueError: When the module lacks a saved tensor or its shape differs.

    Example:
        >>> layer = nn.Linear(2, 2)
        >>> saved = snapshot(layer, exclude=set())
        >>> with torch.no_grad():
        ...     _ = layer.bias.add_(1.0)
        >>> restore_snapshot(layer, saved)
        >>> torch.equal(layer.bias, saved["bias"])
        True
    """
    tensors: dict[str, torch.Tensor] = dict(module.named_parameters())
    tensors.update(module.named_buffers())
    # Check every tensor before copying any, so a mismatch changes nothing.
    problems = []
    for name, value in saved.items():
        target = tensors.get(name)
        if target is None or target.shape != value.shape:
            got = None if target is None else tuple(target.shape)
            problems.append(f"'{name}' has shape {got}, expected {tuple(value.shape)}")
    if problems:
        raise ValueError(
            f"The module does not match the pruner's saved weights: {'; '.join(problems)}. "
            f"Nothing was changed. Received: module of type {type(module).__name__}"
        )
    for name, value in saved.items():
        target = tensors[name]
        target.copy_(value.to(device=target.device, dtype=target.dtype))
