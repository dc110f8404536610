"""Train several independent replicas of one ``nn.Sequential`` together (``ltp imp``'s default).

The runs of an IMP level (the ticket, the controls, every seed) are independent trainings of the
same architecture. Small paper models leave the CPU idle between tiny kernels, so training them
one after another mostly pays per-step overhead and uses one core. Here ``R`` replicas become
one program: every parameter is stacked along a new first axis (a linear layer's weight as
``[R, in, out]``, so the batched product reads it contiguously), linear layers run as one batched
matrix product (``torch.baddbmm``; one plain product when every replica gets the same input, as
in evaluation) and convolutions as one grouped convolution (``groups=R``), and the loss is the
sum of the replicas' own mean losses. :class:`ltp_torch.experiment.TorchBackend` splits a
level's replicas into one such program per CPU core and trains them in parallel threads.
The gradient of a sum of independent losses is each replica's own gradient, and Adam and SGD
are per-entry updates, so every replica follows exactly the math of its sequential run:

* its own initialization and masks (pruned weights are set to exactly ``+0.0`` after every step,
  with the same bit mask as :class:`ltp_torch.PrunerHook`),
* its own data order (a generator seeded by its ``settings.seed``, drawn as the sequential loop
  draws),
* its own optimizer state (the stacked tensors' state is per entry),
* its own evaluations, early-stopping record and late-rewinding snapshot.

Results match the sequential loop up to float32 rounding: a batched matrix product may sum the
same products in another order than the single one (measured: weights agree to ~1e-6 relative
after a few hundred steps; the masks are identical).

The hand-built program covers ``nn.Sequential`` models made of ``Linear``, ``Conv2d`` (no groups,
dilation 1, zero padding), ``ReLU``, ``MaxPool2d``, ``Flatten`` and ``Dropout(p=0)``: every
built-in model of ``ltp imp`` except those with dropout (:func:`stackable`). Other deterministic
architectures (a user's ``--model`` with its own ``forward``, ``BatchNorm``, ``LayerNorm``,
``GELU``, residual connections...) train together through ``torch.func.vmap``
(:class:`ltp_torch.functional_stack.FunctionalStack`, same loop, same masks and optimizer step);
models with dropout, parametrizations, hooks or frozen parameters train one at a time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from ltp_core.experiment.backend import EvalPoint, ProgressFn, TrainOutcome, TrainSettings
from ltp_torch.functional_stack import FunctionalStack

__all__ = ["ReplicasStoppedError", "stackable", "train_stacked"]


class ReplicasStoppedError(RuntimeError):
    """A group of replicas stopped early because a group trained beside it failed."""


_Layer = nn.Linear | nn.Conv2d | nn.ReLU | nn.MaxPool2d | nn.Flatten | nn.Dropout


def stackable(model: nn.Module) -> bool:
    """Whether :func:`train_stacked` can train replicas of ``model`` together.

    Example:
        >>> stackable(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
        True
        >>> stackable(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2)))
        False
    """
    if type(model) is not nn.Sequential or len(model) == 0:
        return False
    for layer in model:
        if isinstance(layer, nn.Linear | nn.ReLU | nn.MaxPool2d) and not _parametrized(layer):
            continue
        if isinstance(layer, nn.Flatten) and (layer.start_dim, layer.end_dim) == (1, -1):
            continue
        if isinstance(layer, nn.Dropout) and layer.p == 0:
            continue
        if (
            type(layer) is nn.Conv2d
            and not _parametrized(layer)
            and layer.groups == 1
            and tuple(layer.dilation) == (1, 1)
            and layer.padding_mode == "zeros"
        ):
            continue
        return False
    return True


def _parametrized(layer: nn.Module) -> bool:
    return bool(getattr(layer, "parametrizations", None)) or bool(layer._forward_hooks)


@dataclass
class _Stack:
    """``R`` replicas of one sequential model as stacked parameters."""

    layers: list[nn.Module]
    # per layer: Linear [R, in, out] (the transposed weight, so the batched product reads it
    # contiguously), Conv2d [R, *weight.shape]
    weights: list[torch.Tensor | None]
    biases: list[torch.Tensor | None]  # per layer: [R, out]
    replicas: int

    @property
    def parameters(self) -> list[torch.Tensor]:
        return [
            t for pair in zip(self.weights, self.biases, strict=True) for t in pair if t is not None
        ]

    def train(self, mode: bool) -> None:
        """No layer here behaves differently in training and evaluation."""

    def write_back(self, models: Sequence[nn.Module], replica: int | None = None) -> None:
        """Copy the trained replicas into their models (in place: parameter identity is kept)."""
        _write_back(self, models, replica)

    def bit_masks(
        self, masks: Sequence[Sequence[np.ndarray] | None], prunable: Sequence[str]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(stacked weight, int bit mask)`` per masked weight (``prunable``: every
        Linear/Conv2d weight in layer order, as :meth:`TorchBackend.train_batched` checks)."""
        return _bit_masks(self, masks)

    def forward(self, x: torch.Tensor, shared: bool) -> torch.Tensor:
        """Logits ``[R, n, classes]`` for inputs ``[R, n, ...]`` (``shared``: one ``[n, ...]``)."""
        r = self.replicas
        h = x
        grouped = False  # h is [n, R*C, H, W] (conv layout) instead of [R, n, ...]
        for layer, weight, bias in zip(self.layers, self.weights, self.biases, strict=True):
            if isinstance(layer, nn.Conv2d):
                if not grouped:
                    if shared:
                        h = h.repeat(1, r, 1, 1)
                    else:
                        h = h.transpose(0, 1).reshape(h.shape[1], -1, *h.shape[3:])
                    grouped, shared = True, False
                kernel = cast(torch.Tensor, weight)
                h = functional.conv2d(
                    h,
                    kernel.reshape(-1, *kernel.shape[2:]),
                    None if bias is None else bias.reshape(-1),
                    layer.stride,
                    layer.padding,
                    1,
                    r,
                )
            elif isinstance(layer, nn.Linear):
                w = cast(torch.Tensor, weight)
                if shared:  # one input for every replica: one matrix product for them all
                    h = h.reshape(h.shape[0], -1)
                    wide = w.permute(1, 0, 2).reshape(w.shape[1], -1)  # [in, R*out]
                    h = (h @ wide).reshape(h.shape[0], r, -1).transpose(0, 1)
                    if bias is not None:
                        h = h + bias.unsqueeze(1)
                    shared = False
                else:
                    h = torch.bmm(h, w) if bias is None else torch.baddbmm(bias.unsqueeze(1), h, w)
            elif isinstance(layer, nn.Flatten):
                if grouped:
                    n = h.shape[0]
                    h = h.reshape(n, r, -1).transpose(0, 1)
                    grouped = False
                elif shared:
                    h = h.reshape(h.shape[0], -1)
                else:
                    h = h.reshape(r, h.shape[1], -1)
            elif isinstance(layer, nn.ReLU):
                h = torch.relu(h)
            elif isinstance(layer, nn.MaxPool2d):
                if not grouped:  # pooling before any conv: pool the raw images
                    h = layer(h) if shared else layer(h.flatten(0, 1)).unflatten(0, (r, -1))
                else:
                    h = layer(h)
            # Dropout(p=0) is the identity
        if shared:  # a model without Linear/Conv layers: every replica gives the same output
            h = h.expand(r, *h.shape)
        return h


def _stack(models: Sequence[nn.Module]) -> _Stack:
    first = models[0]
    layers = list(first)
    weights: list[torch.Tensor | None] = []
    biases: list[torch.Tensor | None] = []
    with torch.no_grad():
        for index, layer in enumerate(layers):
            if isinstance(layer, nn.Linear | nn.Conv2d):
                replicas = [m[index] for m in models]
                stacked = torch.stack([m.weight.detach() for m in replicas])
                if isinstance(layer, nn.Linear):
                    stacked = stacked.transpose(1, 2).contiguous()
                weights.append(stacked.requires_grad_())
                biases.append(
                    None
                    if layer.bias is None
                    else torch.stack([m.bias.detach() for m in replicas]).requires_grad_()
                )
            else:
                weights.append(None)
                biases.append(None)
    return _Stack(layers, weights, biases, len(models))


@torch.no_grad()
def _write_back(stack: _Stack, models: Sequence[nn.Module], replica: int | None = None) -> None:
    """Copy the trained replicas into their models (in place: parameter identity is kept)."""
    targets = range(len(models)) if replica is None else [replica]
    for index, (weight, bias) in enumerate(zip(stack.weights, stack.biases, strict=True)):
        for r in targets:
            layer = models[r][index]
            if weight is not None:
                layer.weight.copy_(weight[r].T if isinstance(layer, nn.Linear) else weight[r])
            if bias is not None:
                layer.bias.copy_(bias[r])


def _bit_masks(
    stack: _Stack, masks: Sequence[Sequence[np.ndarray] | None]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(stacked weight, int bit mask)`` for each masked weight (-1 keeps every bit, 0 prunes).

    The prunable weights of the built-in models are the Linear/Conv2d weights, in layer order.
    """
    layers = [i for i, w in enumerate(stack.weights) if w is not None]
    pairs = []
    for position, layer_index in enumerate(layers):
        weight = cast(torch.Tensor, stack.weights[layer_index])
        if all(m is None for m in masks):
            continue
        bits = torch.full(weight.shape, -1, dtype=torch.int32, device=weight.device)
        for r, replica_masks in enumerate(masks):
            if replica_masks is not None:
                mask = torch.from_numpy(np.array(replica_masks[position], dtype=bool))
                if isinstance(stack.layers[layer_index], nn.Linear):
                    mask = mask.T
                bits[r].masked_fill_(~mask.to(weight.device), 0)
        pairs.append((weight, bits))
    return pairs


def _fused_step(
    optimizer: torch.optim.Optimizer, parameters: list[torch.Tensor]
) -> Callable[[Sequence[torch.Tensor]], None] | None:
    """``optimizer.step()`` as one direct call of torch's fused kernel, or ``None``.

    For a fresh fused ``Adam`` or momentum ``SGD`` over ``parameters`` (one parameter group,
    no AMSGrad, maximize, capturable or differentiable mode) this is the very kernel
    ``optimizer.step()`` would call with the state it would create, so the numbers are the
    same bit for bit; what it saves is the optimizer's per-step Python (grouping, state lookups,
    hooks), which matters when several groups of replicas share one interpreter. Anything else
    returns ``None`` and the caller steps the optimizer itself.
    """
    if len(optimizer.param_groups) != 1 or optimizer.state:
        return None
    group = optimizer.param_groups[0]
    mine = list(group["params"])
    if len(mine) != len(parameters):
        return None
    if any(a is not b for a, b in zip(mine, parameters, strict=True)):
        return None
    if not group.get("fused"):
        return None
    if any(group.get(flag) for flag in ("maximize", "capturable", "differentiable")):
        return None
    if optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks:
        return None
    lr = group["lr"]
    if not isinstance(lr, float):
        return None
    if type(optimizer) is torch.optim.Adam:
        if group["amsgrad"] or group.get("decoupled_weight_decay"):
            return None
        beta1, beta2 = (float(b) for b in group["betas"])
        weight_decay, eps = float(group["weight_decay"]), float(group["eps"])
        averages = [torch.zeros_like(p) for p in parameters]
        squares = [torch.zeros_like(p) for p in parameters]
        steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in parameters]

        @torch.no_grad()
        def adam(grads: Sequence[torch.Tensor]) -> None:
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(
                parameters,
                _laid_out_like(grads, parameters),
                averages,
                squares,
                [],
                steps,
                amsgrad=False,
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                weight_decay=weight_decay,
                eps=eps,
                maximize=False,
                grad_scale=None,
                found_inf=None,
            )

        return adam
    if type(optimizer) is torch.optim.SGD and float(group["momentum"]) != 0:
        momentum, dampening = float(group["momentum"]), float(group["dampening"])
        weight_decay, nesterov = float(group["weight_decay"]), bool(group["nesterov"])
        buffers: list[torch.Tensor] = []

        @torch.no_grad()
        def sgd(grads: Sequence[torch.Tensor]) -> None:
            first = not buffers
            if first:
                buffers.extend(torch.empty_like(p) for p in parameters)
            torch._fused_sgd_(
                parameters,
                _laid_out_like(grads, parameters),
                buffers,
                weight_decay=weight_decay,
                momentum=momentum,
                lr=lr,
                dampening=dampening,
                nesterov=nesterov,
                maximize=False,
                is_first_step=first,
                grad_scale=None,
                found_inf=None,
            )

        return sgd
    return None


def _laid_out_like(
    grads: Sequence[torch.Tensor], parameters: list[torch.Tensor]
) -> list[torch.Tensor]:
    """``grads`` with their parameters' strides.

    ``torch.autograd.grad`` returns a gradient in whatever layout its last kernel produced (the
    weight gradients of a vmapped matrix product come out transposed), while the fused
    optimizer kernels walk a parameter and its gradient in memory order: with other strides
    they pair entries of the wrong positions, silently (``loss.backward()`` avoids this by
    copying ``.grad`` into the parameter's layout).
    """
    return [
        g if g.stride() == p.stride() else torch.empty_like(p).copy_(g)
        for g, p in zip(grads, parameters, strict=True)
    ]


def train_stacked(
    models: Sequence[nn.Module],
    masks: Sequence[Sequence[np.ndarray] | None],
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    evaluate: Callable[[_Stack | FunctionalStack, str], tuple[list[float], list[float]]],
    settings: Sequence[TrainSettings],
    make_optimizer: Callable[[list[torch.Tensor], TrainSettings], torch.optim.Optimizer],
    snapshot: Callable[[nn.Module], list[np.ndarray]],
    progress: Sequence[ProgressFn | None],
    stop: threading.Event | None = None,
    prunable: Sequence[str] | None = None,
) -> list[TrainOutcome]:
    """Train ``models`` (replicas of one :func:`stackable` architecture) together, in place.

    ``settings`` may differ only in ``seed`` and ``capture_at``; ``masks[r]`` (``None``: dense)
    is held at exactly zero in replica ``r`` after every step. Returns one outcome per model;
    each reports the batch's wall time divided by the number of replicas as its ``seconds``.
    When ``stop`` is set (another group failed), raises :class:`ReplicasStoppedError` at the next
    step without writing the models back. ``prunable``: the qualified names of the masked
    tensors for a model :func:`stackable` refuses, which then trains through ``vmap``
    (:class:`ltp_torch.functional_stack.FunctionalStack`); ``None`` for a :func:`stackable` one.
    Called by :meth:`ltp_torch.experiment.TorchBackend.train_batched`, which validates the input.
    """
    start = time.perf_counter()
    replicas = len(models)
    first = settings[0]
    stack: _Stack | FunctionalStack = (
        _stack(models) if prunable is None else FunctionalStack(models)
    )
    optimizer = make_optimizer(stack.parameters, first)
    bit_masks = stack.bit_masks(masks, prunable or [])

    # int32 views of the stacked weights' storage, made once (the tensors are updated in place)
    bit_views = [(weight.detach().view(bits.dtype), bits) for weight, bits in bit_masks]

    def apply_masks() -> None:
        for view, bits in bit_views:
            view.bitwise_and_(bits)

    apply_masks()
    n_train = int(y_train.shape[0])
    batch_size = int(first.batch_size)
    device = x_train.device
    rngs = [np.random.default_rng(s.seed) for s in settings]

    def new_order(r: int) -> np.ndarray:
        return rngs[r].permutation(n_train)

    def epoch_order() -> torch.Tensor:  # [R, n]: every replica's permutation of this epoch
        return torch.from_numpy(np.stack([new_order(r) for r in range(replicas)])).to(device)

    order = epoch_order()
    cursor = 0  # every replica draws the same batch size, so one cursor serves all
    parameters = stack.parameters
    step_fused = _fused_step(optimizer, parameters)
    evaluations: list[list[EvalPoint]] = [[] for _ in models]
    captured: list[list[np.ndarray] | None] = [None] * replicas
    captures: dict[int, list[int]] = {}  # step -> replicas whose weights are captured after it
    for r, s in enumerate(settings):
        if s.capture_at is not None:
            captures.setdefault(s.capture_at, []).append(r)
    for step in range(1, first.iterations + 1):
        if stop is not None and stop.is_set():
            raise ReplicasStoppedError(f"stopped at step {step}: another group of replicas failed")
        if cursor + batch_size > n_train:
            order, cursor = epoch_order(), 0
        batch = order[:, cursor : cursor + batch_size]
        cursor += batch_size
        logits = stack.forward(x_train[batch], shared=False)
        labels = y_train[batch]
        # the sum of the replicas' mean losses: each logit's gradient is (softmax - onehot) / n,
        # bit for bit what each replica's own mean loss gives
        loss = functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum"
        ) / float(batch_size)
        if step_fused is not None:
            step_fused(torch.autograd.grad(loss, parameters))
        else:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
        apply_masks()
        for r in captures.get(step, ()):
            stack.write_back(models, r)
            captured[r] = snapshot(models[r])
        if step % first.eval_every == 0 or step == first.iterations:
            stack.train(False)
            try:
                val_loss, val_acc = evaluate(stack, "val")
                _, test_acc = evaluate(stack, "test")
            finally:
                stack.train(True)
            for r in range(replicas):
                evaluations[r].append(EvalPoint(step, val_loss[r], val_acc[r], test_acc[r]))
                callback = progress[r]
                if callback is not None:
                    callback(step, first.iterations, {"val_acc": val_acc[r]})
    stack.write_back(models)
    seconds = (time.perf_counter() - start) / replicas
    return [
        TrainOutcome(evaluations[r], seconds, captured[r], {"batched_replicas": replicas})
        for r in range(replicas)
    ]
