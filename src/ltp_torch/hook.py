"""``PrunerHook``: keeps pruned weights at exactly zero after every ``optimizer.step()``.

The hook is an optimizer step post-hook, so it runs once per real update: with gradient
accumulation only when the step is taken, and not at all when an AMP ``GradScaler`` skips a step
(the weights did not change then). It zeroes the pruned entries of each parameter with a bit mask
on the parameter's device (exact ``+0.0`` even where the step produced ``inf`` or ``NaN``). When
the pruner's masks change, the hook also zeroes the optimizer state (momentum, Adam moments, ...)
at the newly pruned entries.

It also masks each pruned parameter's gradient as autograd computes it (a tensor hook, before
the gradient is accumulated into ``.grad`` and before DDP reduces it), so everything that reads
gradients between ``backward()`` and ``step()`` sees the sparse network: gradient clipping by
norm (``clip_grad_norm_``, Lightning's ``gradient_clip_val``, the Hugging Face ``Trainer``'s
default ``max_grad_norm=1.0``), an AMP ``GradScaler``'s overflow check, and optimizers whose
update of one entry depends on others (``LBFGS``, ``Adafactor``'s factored statistics).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

import torch
from torch import nn

from ltp_torch.masking import (
    MaskTensors,
    apply_masks_,
    masked_gradient,
    zero_optimizer_state_,
    zero_pruned_,
)
from ltp_torch.parameters import unwrap_module
from ltp_torch.pruner import LotteryTicketPruner

__all__ = ["PrunerHook"]

logger = logging.getLogger(__name__)


def _caller_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside torch and ltp_torch, for warnings raised
    from inside torch's hook machinery (whose depth varies with the module tree)."""
    inside = (os.path.dirname(torch.__file__), os.path.dirname(__file__))
    frame = sys._getframe(1)  # the function that calls warnings.warn: stacklevel 1
    level = 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(inside):
        frame = frame.f_back
        level += 1
    return level


def _module_walk(names: list[str]) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """How to reach the layers owning ``names`` from the root, each module once.

    Returns ``walk``, a list of ``(parent position, key)``: position 0 is the root and entry
    ``i`` of ``walk`` gives the module at position ``i + 1`` as ``parent._modules[key]``
    (parents before children); and ``owned``, ``(owner position, local name)`` per name.
    """
    positions = {"": 0}
    walk: list[tuple[int, str]] = []
    owned = []
    for name in names:
        parts = name.split(".")
        prefix = ""
        for part in parts[:-1]:
            child = f"{prefix}.{part}" if prefix else part
            if child not in positions:
                walk.append((positions[prefix], part))
                positions[child] = len(walk)
            prefix = child
        owned.append((positions[prefix], parts[-1]))
    return walk, owned


def check_optimizer(optimizer: object) -> torch.optim.Optimizer:
    """Return ``optimizer`` if it is a ``torch.optim.Optimizer``, else raise ``TypeError``."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            "Expected a torch.optim.Optimizer. "
            f"Received: optimizer={optimizer!r} of type {type(optimizer).__name__}"
        )
    return optimizer


class _InertLoadHook:
    """What a copy or a pickle of a layer gets in place of a :class:`_LoadHook`: nothing to do
    (the copy is not the model the ``PrunerHook`` masks)."""

    def __call__(self, layer: nn.Module, incompatible: Any) -> None:
        del layer, incompatible


class _LoadHook:
    """A ``load_state_dict`` post hook on one layer that owns pruned parameters (``entries``:
    ``(index, local name)`` pairs), or on the root (``entries=None``: report once per load).

    It refers to its ``PrunerHook`` and its layer weakly and acts only on that very layer. A
    ``copy.deepcopy`` or pickle of the model (a best-model snapshot, ``AveragedModel``, a dense
    baseline, ``torch.save(model)``) carries an inert stand-in instead: before, such a copy kept
    zeroing loaded weights after ``hook.remove()``, and pickling failed on a local function.
    """

    def __init__(
        self, hook: PrunerHook, layer: nn.Module, entries: list[tuple[int, str]] | None
    ) -> None:
        self._hook = weakref.ref(hook)
        self._layer = weakref.ref(layer)
        self._entries = entries

    def __call__(self, layer: nn.Module, incompatible: Any) -> None:
        del incompatible
        hook = self._hook()
        if hook is None or layer is not self._layer():
            return
        if self._entries is None:
            hook._report_zeroed_on_load()
        else:
            hook._zero_after_load(layer, self._entries)

    def __deepcopy__(self, memo: dict[int, Any]) -> _InertLoadHook:
        return _InertLoadHook()

    def __reduce__(self) -> tuple[type[_InertLoadHook], tuple[()]]:
        return (_InertLoadHook, ())


class PrunerHook:
    """Enforce a pruner's masks on a module after every step of an optimizer.

    Creating the hook zeroes the pruned weights and the matching optimizer state at once, and
    from then on the gradients of pruned entries are zero as soon as ``backward()`` computes
    them (so gradient clipping by norm sees the pruned network's gradient), and
    ``load_state_dict`` into the module or one of its layers zeroes them again. Later
    mask changes (another :meth:`LotteryTicketPruner.calc_prune_mask`, ``set_masks``,
    ``reset_masks`` or ``load_state_dict``) are picked up after the next step, or at once with
    :meth:`refresh`.

    Args:
        pruner: The :class:`ltp_torch.LotteryTicketPruner` holding the masks.
        module: The model being trained (the same one, or a DDP/compiled wrapper of it).
        optimizer: The optimizer that updates the module's parameters.
        zero_optimizer_state: Whether to zero per-parameter optimizer state at pruned entries
            when the masks change (default ``True``).
        mask_gradients: Whether to zero the gradients of pruned entries during ``backward()``
            (default ``True``), so that gradient clipping by norm, a ``GradScaler``'s overflow
            check and non-element-wise optimizers see only the kept weights' gradients, as in
            the pruned network. ``False`` leaves ``.grad`` dense (e.g. to read the pruned
            entries' gradients); the weights are zeroed after each step either way. Sparse
            gradients (``nn.Embedding(sparse=True)``) are never masked.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
        >>> pruner = LotteryTicketPruner(net)
        >>> pruner.calc_prune_mask(net, 0.5, "smallest_weights")
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        >>> with PrunerHook(pruner, net, opt):
        ...     for _ in range(3):
        ...         opt.zero_grad()
        ...         net(torch.randn(8, 4)).pow(2).mean().backward()
        ...         opt.step()
        >>> int((net[0].weight == 0).sum())
        8
    """

    def __init__(
        self,
        pruner: LotteryTicketPruner,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        zero_optimizer_state: bool = True,
        mask_gradients: bool = True,
    ) -> None:
        if not isinstance(pruner, LotteryTicketPruner):
            raise TypeError(
                "Expected an ltp_torch.LotteryTicketPruner. "
                f"Received: pruner={pruner!r} of type {type(pruner).__name__}"
            )
        for argument, value in (
            ("zero_optimizer_state", zero_optimizer_state),
            ("mask_gradients", mask_gradients),
        ):
            if not isinstance(value, bool):
                raise TypeError(f"`{argument}` must be a bool. Received: {argument}={value!r}")
        self._optimizer = check_optimizer(optimizer)
        self._pruner = pruner
        self._root = unwrap_module(module)
        self._walk, self._owned = _module_walk(pruner.names)
        self._parameters = pruner.parameters(module)
        self._mask_gradients = mask_gradients
        self._zero_state = zero_optimizer_state
        self._warn_if_not_optimized()
        self._version = -1
        self._params_list: list[torch.Tensor] = []
        self._masks_list: list[torch.Tensor] = []
        self._grad_masks: MaskTensors = [None] * len(self._parameters)
        self._grad_version = -1
        self._refresh()
        self._handle: Any = optimizer.register_step_post_hook(self._after_step)
        self._grad_handles: list[Any] = []
        self._unhooked = list(range(len(self._parameters))) if mask_gradients else []
        self._hook_gradients()
        self._zeroed_on_load: dict[str, int] = {}
        self._load_handles = self._register_load_hooks(self._root)

    def _warn_if_not_optimized(self) -> None:
        optimized = {id(p) for group in self._optimizer.param_groups for p in group["params"]}
        missing = [
            name
            for name, parameter in zip(self._pruner.names, self._parameters, strict=True)
            if id(parameter) not in optimized
        ]
        if len(missing) == len(self._parameters):
            raise ValueError(
                "None of the pruned parameters is updated by the optimizer; pass the optimizer "
                "built on this module's parameters. "
                f"Received: optimizer with {len(optimized)} parameters, "
                f"none of {self._pruner.names}"
            )
        if missing:
            logger.info("Pruned parameters not in the optimizer (masked anyway): %s", missing)

    def _replaced(self) -> list[int]:
        """Indices of the pruned parameters the module no longer holds: replaced by new
        ``Parameter`` objects since the hook was created (``layer.weight = nn.Parameter(...)``,
        a new layer, ``load_state_dict(assign=True)``). A few dictionary lookups per tensor."""
        modules: list[nn.Module | None] = [self._root]
        for parent, key in self._walk:
            owner = modules[parent]
            modules.append(owner._modules.get(key) if owner is not None else None)
        changed = []
        for index, (position, local) in enumerate(self._owned):
            owner = modules[position]
            current = owner._parameters.get(local) if owner is not None else None
            if current is not self._parameters[index]:
                changed.append(index)
        return changed

    def _follow_replaced(self, changed: list[int]) -> None:
        """Mask the module's new parameters from now on, and say so.

        Without this the hook kept zeroing the old objects, which the module no longer uses,
        and the new ones trained dense, silently. A module that no longer matches the pruner
        (a name gone, another shape) is the pruner's ``ValueError``.
        """
        parameters = self._pruner.parameters(self._root)
        optimized = {id(p) for group in self._optimizer.param_groups for p in group["params"]}
        names = [self._pruner.names[index] for index in changed]
        stale = [self._pruner.names[i] for i in changed if id(parameters[i]) not in optimized]
        message = (
            f"The module's parameters {names} were replaced by new Parameter objects after the "
            "PrunerHook was created (a new layer, `layer.weight = nn.Parameter(...)`, "
            "load_state_dict(assign=True)); the hook masks the new ones from now on. "
        )
        if stale:
            message += (
                f"The optimizer does not update {stale}: it still holds the old objects. Build "
                "the optimizer and the PrunerHook after replacing parameters. "
            )
        message += f"Received: {len(changed)} replaced parameters"
        logger.warning(message)
        warnings.warn(message, UserWarning, stacklevel=_caller_stacklevel())
        for handle in [*self._grad_handles, *self._load_handles]:
            handle.remove()
        self._grad_handles = []
        self._parameters = parameters
        self._grad_version = -1
        self._unhooked = list(range(len(parameters))) if self._mask_gradients else []
        self._hook_gradients()
        self._load_handles = self._register_load_hooks(self._root)
        self._version = -1  # weights and optimizer state at the next refresh

    def _refresh(self) -> None:
        """Fetch the current masks, zero weights and optimizer state at pruned entries."""
        masks = self._current_masks()
        pairs = [(p, m) for p, m in zip(self._parameters, masks, strict=True) if m is not None]
        self._params_list = [p for p, _ in pairs]
        self._masks_list = [m for _, m in pairs]
        apply_masks_(self._params_list, self._masks_list)
        if self._zero_state:
            zero_optimizer_state_(self._optimizer, self._params_list, self._masks_list)
        self._version = self._pruner.mask_version

    def _gradient_masker(self, index: int) -> Callable[[torch.Tensor], torch.Tensor | None]:
        """The tensor hook of parameter ``index``: its gradient with pruned entries zero.

        Gradients follow the pruner's current masks at once (a checkpoint loaded into the
        pruner after the hook was created, a new level): only the weights and the optimizer
        state wait for the next step or :meth:`refresh` (weights must not change in the middle
        of a backward pass).

        The parameter holds the tensor hook; it refers to this object weakly, so a hook that was
        never removed does not keep its optimizer (and the optimizer's state) alive after the
        optimizer is dropped: the tensor hook then does nothing.
        """
        reference = weakref.ref(self)

        def mask_gradient(grad: torch.Tensor) -> torch.Tensor | None:
            hook = reference()
            if hook is None:
                return None
            return masked_gradient(grad, hook._current_masks()[index])

        return mask_gradient

    def _hook_gradients(self) -> None:
        """Put the gradient hook on every pruned parameter that requires gradients and has
        none yet: at creation, and after each step for parameters unfrozen since (a frozen
        tensor cannot take a hook)."""
        waiting = []
        for index in self._unhooked:
            parameter = self._parameters[index]
            if parameter.requires_grad:
                masker = self._gradient_masker(index)
                self._grad_handles.append(parameter.register_hook(masker))  # type: ignore[no-untyped-call]
            else:
                waiting.append(index)
        self._unhooked = waiting

    def _current_masks(self) -> MaskTensors:
        """The pruner's current masks for the hooked parameters (cached per mask version)."""
        if self._grad_version != self._pruner.mask_version:
            self._grad_masks = list(self._pruner.mask_tensors(self._parameters))
            self._grad_version = self._pruner.mask_version
        return self._grad_masks

    def _register_load_hooks(self, root: nn.Module) -> list[Any]:
        """Zero pruned entries again right after ``load_state_dict`` writes into their layers.

        Loading a state dict (dense weights, a checkpoint from before pruning) copies values
        into the parameters in place; without this the pruned entries would stay dense until
        the next optimizer step, so an evaluation or a checkpoint in between saw the dense
        model. A post hook on each layer that owns a pruned parameter runs whenever a
        ``load_state_dict`` reaches that layer (the model's, a wrapper's or the layer's own).
        Like the gradient hooks, it refers to this object weakly.

        Zeroing non-zero loaded values is reported (:meth:`_report_zeroed_on_load`, one warning
        per load): it is what a dense load needs, but loading a checkpoint of *other* masks
        into the model before its pruner state would lose the entries those masks keep.
        """
        owned: dict[str, list[tuple[int, str]]] = {}
        for index, name in enumerate(self._pruner.names):
            prefix, _, local = name.rpartition(".")
            owned.setdefault(prefix, []).append((index, local))
        handles = []
        for prefix, entries in owned.items():
            owner = root.get_submodule(prefix) if prefix else root
            handles.append(
                owner.register_load_state_dict_post_hook(_LoadHook(self, owner, entries))
            )
        handles.append(root.register_load_state_dict_post_hook(_LoadHook(self, root, None)))
        return handles

    @torch.no_grad()
    def _zero_after_load(self, layer: nn.Module, entries: list[tuple[int, str]]) -> None:
        """Zero the pruned entries of ``layer``'s pruned parameters after a load."""
        masks = self._current_masks()
        for index, local in entries:
            parameter = layer._parameters.get(local)
            mask = masks[index]
            if (
                parameter is not None
                and mask is not None
                and parameter.shape == self._parameters[index].shape
            ):
                before = torch.count_nonzero(parameter)
                zero_pruned_(parameter, mask)
                zeroed = int(before - torch.count_nonzero(parameter))  # one sync
                if zeroed:
                    self._zeroed_on_load[self._pruner.names[index]] = zeroed

    def _report_zeroed_on_load(self) -> None:
        """Warn once for the pruned entries a ``load_state_dict`` brought back and that were
        zeroed again (after a whole-model load, or at the next step for a layer's own)."""
        if not self._zeroed_on_load:
            return
        zeroed = dict(self._zeroed_on_load)
        self._zeroed_on_load.clear()
        listed = ", ".join(f"'{name}' ({count})" for name, count in list(zeroed.items())[:6])
        message = (
            f"load_state_dict wrote non-zero values into {sum(zeroed.values())} pruned entries "
            f"of {len(zeroed)} parameters ({listed}{', ...' if len(zeroed) > 6 else ''}); the "
            "PrunerHook zeroed them again under the pruner's current masks. To restore a "
            "checkpoint made with other masks, load the pruner's state before the model's "
            "(as ltp_torch.load_checkpoint does). Received: a state dict with dense values at "
            "pruned entries"
        )
        logger.warning(message)
        warnings.warn(message, UserWarning, stacklevel=_caller_stacklevel())

    @torch.no_grad()
    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        del optimizer, args, kwargs
        if self._zeroed_on_load:  # a layer's own load_state_dict since the last step
            self._report_zeroed_on_load()
        changed = self._replaced()
        if changed:
            self._follow_replaced(changed)
        if self._unhooked:
            self._hook_gradients()
        if self._version != self._pruner.mask_version:
            self._refresh()
            return
        for parameter, mask in zip(self._params_list, self._masks_list, strict=True):
            zero_pruned_(parameter, mask)

    def refresh(self) -> None:
        """Apply the pruner's current masks now instead of after the next step.

        Useful right after :meth:`LotteryTicketPruner.calc_prune_mask` when the module is
        evaluated or saved before training continues. Zeroes the optimizer state at pruned
        entries too (unless disabled), and puts the gradient masking on parameters unfrozen
        since the hook was created, and follows parameters the module replaced since (with a
        warning).
        """
        changed = self._replaced() if self.active else []
        if changed:
            self._follow_replaced(changed)
        if self._unhooked:
            self._hook_gradients()
        self._refresh()

    @property
    def active(self) -> bool:
        """Whether the hook is still registered on the optimizer."""
        return self._handle is not None

    def remove(self) -> None:
        """Detach from the optimizer; calling it again does nothing."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        for handle in [*self._grad_handles, *self._load_handles]:
            handle.remove()
        self._grad_handles = []
        self._load_handles = []
        self._unhooked = []

    def __enter__(self) -> PrunerHook:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return f"{type(self).__name__}({len(self._parameters)} parameters, {state})"
