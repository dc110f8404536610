"""Replicas of any deterministic ``nn.Module`` trained together through ``torch.func.vmap``.

:mod:`ltp_torch.batched` builds its stacked program by hand for the paper models (sequential
``Linear``/``Conv2d``/``ReLU``/``MaxPool2d``/``Flatten``). Other architectures, such as a user's
``--model`` factory with ``BatchNorm``, ``GELU``, ``LayerNorm``, residual blocks or its own
``forward``, train together here: every parameter and buffer of the ``R`` replicas is stacked
along a new first axis, and the model's own ``forward`` runs once over all of them with
:func:`torch.func.vmap` of :func:`torch.func.functional_call`. Each replica still computes
exactly its own function (``BatchNorm`` statistics are per replica, its running statistics
are updated per replica), so the gradient of the summed losses is each replica's own gradient.

Replicas qualify when :func:`functional_stack_reason` returns ``None``: no parametrizations,
module hooks or tensors held as plain attributes, every parameter trainable and floating point,
the same layer settings in every replica, and probe passes under ``vmap`` (a
training step's forward and backward pass, an evaluation's forward pass) that draw no random
numbers (dropout in training mode would need other draws than the sequential run's), fall back
to no per-replica loop (an operator without a batching rule), and do not fail. Others train one
run at a time.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

__all__ = ["FunctionalStack", "functional_stack_reason", "replicas_reason"]


def _static_reason(model: nn.Module, prunable: Sequence[str]) -> str | None:
    """Why ``model`` cannot be stacked, from its structure alone (``None``: it can)."""
    for name, module in model.named_modules():
        if getattr(module, "parametrizations", None):
            return f"module {name or type(module).__name__!r} is parametrized"
        if (
            module._forward_hooks
            or module._forward_pre_hooks
            or module._backward_hooks
            or getattr(module, "_backward_pre_hooks", None)
        ):
            return f"module {name or type(module).__name__!r} has hooks"
    parameters = dict(model.named_parameters())
    if not parameters:
        return "the model has no parameters"
    for name, parameter in parameters.items():
        if not parameter.requires_grad:
            return f"parameter {name!r} is frozen (requires_grad=False)"
        if not parameter.is_floating_point():
            return f"parameter {name!r} is not floating point"
    missing = [name for name in prunable if name not in parameters]
    if missing:
        return f"the prunable tensor {missing[0]!r} is not one of the model's parameters"
    for name, module in model.named_modules():
        held = [key for key, value in vars(module).items() if isinstance(value, torch.Tensor)]
        if held:  # functional_call swaps parameters and buffers only: replica 0's would serve all
            where = f"{name}.{held[0]}" if name else held[0]
            return f"tensor {where!r} is held as a plain attribute (not a parameter or buffer)"
    return None


def replicas_reason(models: Sequence[nn.Module], prunable: Sequence[str]) -> str | None:
    """Why these replicas cannot be one stacked program (``None``: they can): each must
    qualify on its own, and all must have the same modules with the same settings, since the
    first replica's modules (or, in :mod:`ltp_torch.batched`, layers) run every replica's
    parameters and buffers.

    Example:
        >>> a, b = nn.Linear(2, 2), nn.Linear(2, 2)
        >>> replicas_reason([a, b], ["weight"]) is None
        True
        >>> b.bias.requires_grad_(False)  # doctest: +ELLIPSIS
        Parameter containing:
        ...
        >>> replicas_reason([a, b], ["weight"])
        "in replica 1: parameter 'bias' is frozen (requires_grad=False)"
    """
    for index, model in enumerate(models):
        reason = _static_reason(model, prunable)
        if reason is not None:
            return reason if index == 0 else f"in replica {index}: {reason}"
    first = repr(models[0])
    for index, model in enumerate(models[1:], 1):
        if repr(model) != first:
            return f"replica {index} has other layer settings than replica 0"
    return None


def functional_stack_reason(
    models: Sequence[nn.Module], prunable: Sequence[str], example: torch.Tensor
) -> str | None:
    """Why replicas ``models`` cannot train together through ``vmap`` (``None``: they can).

    Args:
        models: The replicas (left unchanged: the probe runs on copies of the first one's
            buffers and input).
        prunable: Qualified names of the tensors the masks apply to.
        example: A few training inputs, for the probe passes.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.LayerNorm(8), nn.Linear(8, 2))
        >>> functional_stack_reason([net], ["0.weight", "3.weight"], torch.zeros(3, 4)) is None
        True
        >>> noisy = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2))
        >>> functional_stack_reason([noisy], ["0.weight"], torch.zeros(3, 4))[:36]
        'its forward pass draws random number'
    """
    reason = replicas_reason(models, prunable)
    if reason is not None:
        return reason
    probe = FunctionalStack([models[0]])  # copies: the model and its running statistics stay
    example = example.clone()  # a forward pass that edits its input in place edits a copy
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:  # one training step's forward and backward pass, as train_stacked makes them
            logits = probe.forward(example.unsqueeze(0), shared=False)
            torch.autograd.grad(logits.float().square().sum(), probe.parameters, allow_unused=True)
            probe.train(False)  # and an evaluation's forward pass, one input for every replica
            with torch.no_grad():
                probe.forward(example, shared=True)
        except RuntimeError as error:
            text = str(error)
            if "random" in text and "randomness" in text:
                return "its forward pass draws random numbers in training mode (dropout)"
            return f"vmap cannot run its forward pass ({text.splitlines()[0][:160]})"
        except Exception as error:  # any failure means: train one at a time
            return f"vmap cannot run its forward pass ({type(error).__name__}: {error})"[:200]
    slow = [w for w in caught if "performance drop" in str(w.message)]
    for warning in caught:  # the model's own warnings are the user's to see
        if warning not in slow:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    if slow:
        first = str(slow[0].message).splitlines()[0]
        return f"vmap would loop over the replicas ({first[:160]})"
    return None


class FunctionalStack:
    """``R`` replicas of one module as stacked parameters and buffers, run through ``vmap``.

    The interface :func:`ltp_torch.batched.train_stacked` uses: ``parameters``, ``replicas``,
    ``forward``, ``train``, ``write_back`` and ``bit_masks``.
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        self.base = models[0]
        self.replicas = len(models)
        with torch.no_grad():
            named = [dict(m.named_parameters()) for m in models]
            self.names = list(named[0])
            self.stacked = {
                name: _stacked([n[name].detach() for n in named]).requires_grad_()
                for name in self.names
            }
            buffers = [dict(m.named_buffers()) for m in models]
            self.buffer_names = list(buffers[0])
            self.buffers = {
                name: torch.stack([b[name].detach() for b in buffers]).clone()
                for name in self.buffer_names
            }
        self.training = True

    @property
    def parameters(self) -> list[torch.Tensor]:
        return [self.stacked[name] for name in self.names]

    def train(self, mode: bool) -> None:
        """Training mode (batch statistics, running statistics updated) or evaluation mode."""
        self.training = mode

    def _call(self, parameters: dict[str, Any], buffers: dict[str, Any], x: Any) -> Any:
        return functional_call(self.base, (parameters, buffers), (x,))

    def forward(self, x: torch.Tensor, shared: bool) -> torch.Tensor:
        """Logits ``[R, n, classes]`` for inputs ``[R, n, ...]`` (``shared``: one ``[n, ...]``)."""
        was_training = self.base.training
        self.base.train(self.training)
        try:
            run = vmap(self._call, in_dims=(0, 0, None if shared else 0), randomness="error")
            logits: torch.Tensor = run(self.stacked, self.buffers, x)
        finally:
            self.base.train(was_training)
        return logits

    @torch.no_grad()
    def write_back(self, models: Sequence[nn.Module], replica: int | None = None) -> None:
        """Copy the trained replicas into their models (in place: tensor identity is kept)."""
        targets = range(len(models)) if replica is None else [replica]
        for r in targets:
            parameters = dict(models[r].named_parameters())
            for name in self.names:
                parameters[name].copy_(self.stacked[name][r])
            buffers = dict(models[r].named_buffers())
            for name in self.buffer_names:
                buffers[name].copy_(self.buffers[name][r])

    def bit_masks(
        self, masks: Sequence[Sequence[np.ndarray] | None], prunable: Sequence[str]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(stacked tensor, int bit mask)`` per prunable tensor (-1 keeps every bit, 0 prunes)."""
        pairs = []
        if all(m is None for m in masks):
            return pairs
        for position, name in enumerate(prunable):
            tensor = self.stacked[name]
            bits = torch.full(tensor.shape, -1, dtype=_bits_dtype(tensor), device=tensor.device)
            for r, replica_masks in enumerate(masks):
                if replica_masks is not None:
                    mask = torch.from_numpy(np.array(replica_masks[position], dtype=bool))
                    bits[r].masked_fill_(~mask.to(tensor.device), 0)
            pairs.append((tensor, bits))
        return pairs


def _stacked(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.stack(tensors)``; a matrix (a linear weight) stored transposed per replica.

    The vmapped matrix products give a ``[R, out, in]`` weight its gradient in that layout, so
    the parameter in the same layout needs no copy before the fused optimizer step, and the
    forward product reads it as the stacked program of :mod:`ltp_torch.batched` does.
    """
    if tensors[0].dim() != 2:
        return torch.stack(list(tensors))
    return torch.stack([t.t() for t in tensors]).transpose(1, 2)


def _bits_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The signed integer type as wide as ``tensor``'s floats (for a bitwise AND on its bits)."""
    return {8: torch.int64, 4: torch.int32, 2: torch.int16}[tensor.element_size()]
