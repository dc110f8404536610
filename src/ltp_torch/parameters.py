"""Finding the prunable parameters of a ``torch.nn.Module``.

The pruner works on an ordered list of named parameters. This module decides which parameters are
in that list: by default the weight matrices and kernels of linear, convolution, attention and
recurrent layers and Hugging Face ``Conv1D`` (:data:`ltp_torch.selectors.default`; the roles are
explained in :mod:`ltp_torch.roles`); any other selection through the ``prunable=`` argument (a
selector name such as ``"with_embeddings"``, a predicate or a list of names). Shared or tied
parameters are listed once, under the first name ``module.named_parameters()`` gives them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from torch import nn
from torch.nn.parameter import UninitializedParameter

from ltp_torch.roles import ParameterInfo, describe_parameters
from ltp_torch.selectors import SELECTORS, Selector, get_selector, scanning

__all__ = [
    "PrunableSpec",
    "default_prunable",
    "describe_selection",
    "find_prunable_parameters",
    "parameter_kinds",
    "resolve_parameters",
    "select_parameters",
    "unwrap_module",
]

#: Predicate over ``(qualified_name, owning_module, parameter)``.
PrunablePredicate = Callable[[str, nn.Module, nn.Parameter], bool]
PrunableSpec = str | PrunablePredicate | Sequence[str] | None

#: The default selection as a predicate (:data:`ltp_torch.selectors.default`).
default_prunable: Selector = SELECTORS["default"]


def unwrap_module(module: nn.Module) -> nn.Module:
    """Return the user's module inside ``DistributedDataParallel``, ``DataParallel`` or
    ``torch.compile`` wrappers, so parameter names match with and without the wrapper.

    Args:
        module: A module, possibly wrapped.

    Returns:
        The innermost wrapped module (``module`` itself when it is not a wrapper).

    Example:
        >>> from torch import nn
        >>> net = nn.Linear(2, 2)
        >>> unwrap_module(nn.DataParallel(net)) is net
        True
    """
    if not isinstance(module, nn.Module):
        raise TypeError(
            "Expected a torch.nn.Module. "
            f"Received: module={module!r} of type {type(module).__name__}"
        )
    seen = 0
    while seen < 8:
        inner = None
        if isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            inner = module.module
        elif type(module).__name__ == "OptimizedModule" and hasattr(module, "_orig_mod"):
            inner = module._orig_mod
        if not isinstance(inner, nn.Module):
            return module
        module = inner
        seen += 1
    return module


def _check_selected(name: str, owner: nn.Module, parameter: nn.Parameter) -> None:
    if isinstance(parameter, UninitializedParameter):
        raise ValueError(
            f"Parameter '{name}' of {type(owner).__name__} is not initialized yet (a lazy module). "
            "Run one forward pass on example inputs before creating the pruner. "
            f"Received: parameter {name!r} of type UninitializedParameter"
        )
    if not parameter.is_floating_point():
        raise TypeError(
            f"Only floating point parameters can be pruned; `prunable` selects '{name}'. "
            f"Received: prunable selecting parameter {name!r} with dtype={parameter.dtype}"
        )
    if parameter.dim() == 0 or parameter.numel() == 0:
        raise ValueError(
            f"A pruned parameter needs at least one dimension and one entry; `prunable` selects "
            f"'{name}'. Received: prunable selecting parameter {name!r} of shape "
            f"{tuple(parameter.shape)}"
        )


def select_parameters(module: nn.Module, prunable: PrunableSpec = None) -> list[ParameterInfo]:
    """Describe every parameter of ``module`` and pick the prunable ones.

    Like :func:`find_prunable_parameters`, but returns the :class:`ltp_torch.roles.ParameterInfo`
    of the selected parameters (role, layout, parametrization).

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.LSTM(3, 2))
        >>> [(i.name, i.role) for i in select_parameters(net)]
        [('0.weight', 'linear'), ('1.weight_ih_l0', 'recurrent'), ('1.weight_hh_l0', 'recurrent')]
    """
    chosen, _ = describe_selection(module, prunable)
    return chosen


def _check_predicate(predicate: Callable[..., Any]) -> None:
    """A ``prunable`` predicate must take ``(name, module, parameter)``."""
    try:
        signature = inspect.signature(predicate)
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    try:
        signature.bind(None, None, None)
    except TypeError:
        raise TypeError(
            "A `prunable` predicate is called as predicate(name, module, parameter) and "
            "returns whether to prune that parameter (e.g. lambda name, module, p: p.dim() > 1 "
            f"and not name.endswith('bias')). Received: prunable with signature {signature}"
        ) from None


def describe_selection(
    module: nn.Module, prunable: PrunableSpec = None
) -> tuple[list[ParameterInfo], list[ParameterInfo]]:
    """The selected parameters and every parameter, both described and in
    ``named_parameters()`` order.

    Raises:
        ValueError, TypeError: As :func:`find_prunable_parameters`.

    Example:
        >>> from torch import nn
        >>> selected, every = describe_selection(nn.Linear(2, 2))
        >>> [i.name for i in selected], [i.role for i in every]
        (['weight'], ['linear', 'bias'])
    """
    module = unwrap_module(module)
    infos = describe_parameters(module)
    if prunable is None:
        prunable = SELECTORS["default"]
    elif isinstance(prunable, str):
        if prunable not in SELECTORS and any(
            prunable == n for info in infos for n, _ in info.occurrences
        ):
            raise ValueError(
                f"`prunable` is a selector name or a list of names; to prune the one parameter "
                f"'{prunable}' pass a list: prunable=[{prunable!r}]. Valid selector names: "
                + ", ".join(repr(n) for n in SELECTORS)
                + f". Received: prunable={prunable!r}"
            )
        prunable = get_selector(prunable)

    if isinstance(prunable, Selector):
        selected = [info for info in infos if prunable.selects(info)]
        for info in selected:
            _check_selected(info.name, info.occurrences[0][1], info.parameter)
    elif callable(prunable):
        predicate = prunable
        _check_predicate(predicate)
        selected = []
        with scanning({id(info.parameter): info for info in infos}):
            for info in infos:
                chosen = [(n, o) for n, o in info.occurrences if predicate(n, o, info.parameter)]
                if chosen:
                    _check_selected(chosen[0][0], chosen[0][1], info.parameter)
                    selected.append(info)
    elif isinstance(prunable, bytes) or not isinstance(prunable, Iterable):
        raise TypeError(
            "`prunable` must be None, a selector name such as 'with_embeddings', a callable "
            "(name, module, parameter) -> bool, or a list of parameter names. "
            f"Received: prunable={prunable!r}"
        )
    else:
        wanted = list(prunable)
        for item in wanted:
            if not isinstance(item, str):
                raise TypeError(
                    f"`prunable` names must be strings. Received: prunable item {item!r}"
                )
        lookup = {n: (info, owner) for info in infos for n, owner in info.occurrences}
        unknown = [n for n in wanted if n not in lookup]
        if unknown:
            available = ", ".join(info.name for info in infos) or "(none)"
            raise ValueError(
                f"Unknown parameter name(s) in `prunable`: {unknown}. Available: {available}. "
                f"Received: prunable={wanted!r}"
            )
        chosen_ids = set()
        for n in wanted:
            info, owner = lookup[n]
            if id(info.parameter) in chosen_ids:
                raise ValueError(
                    f"`prunable` lists the parameter '{info.name}' more than once (possibly "
                    f"under a tied name). Received: prunable={wanted!r}"
                )
            _check_selected(n, owner, info.parameter)
            chosen_ids.add(id(info.parameter))
        selected = [info for info in infos if id(info.parameter) in chosen_ids]

    if not selected:
        frozen = [i.name for i in infos if i.prunable_kind and not i.trainable]
        tied = [i.name for i in infos if i.role == "tied to embedding"]
        notes = "".join(
            f" Left out: {what} {names[:4]}{' ...' if len(names) > 4 else ''}."
            for what, names in (("frozen (requires_grad=False)", frozen), ("tied", tied))
            if names
        )
        raise ValueError(
            f"The module {type(module).__name__} has no prunable parameters. By default the "
            "weights of Linear, Conv, attention and recurrent layers (and Hugging Face Conv1D) "
            f"are pruned.{notes} Choose others with `prunable=`: a selector name ("
            + ", ".join(repr(n) for n in SELECTORS)
            + "), a list of names or a predicate. "
            f"Received: prunable={prunable!r}"
        )
    return selected, infos


def find_prunable_parameters(
    module: nn.Module, prunable: PrunableSpec = None
) -> list[tuple[str, nn.Parameter]]:
    """List the prunable parameters of ``module`` with their qualified names.

    Args:
        module: The model. Wrappers (DDP, DataParallel, torch.compile) are looked through.
        prunable: ``None`` or ``"default"`` for the default selection
            (:data:`ltp_torch.selectors.default`); another selector name from
            :data:`ltp_torch.selectors.SELECTORS` (``"with_embeddings"``, ``"all_matrices"``,
            ``"linear_and_conv"``); a predicate over ``(name, module, parameter)``; or a
            sequence of qualified parameter names. A tied parameter is selected when the
            predicate accepts any of its names.

    Returns:
        ``(name, parameter)`` pairs in ``module.named_parameters()`` order, each parameter once.

    Raises:
        ValueError: When nothing is prunable, a selector name or a listed name is unknown or
            duplicated, or a selected parameter belongs to a lazy module that has not been run
            yet.
        TypeError: When ``prunable`` has the wrong type or a selected parameter is not floating
            point.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Sequential(nn.Linear(3, 2)))
        >>> [name for name, _ in find_prunable_parameters(net)]
        ['0.weight', '2.0.weight']
        >>> [name for name, _ in find_prunable_parameters(net, ["0.bias"])]
        ['0.bias']
    """
    return [(info.name, info.parameter) for info in select_parameters(module, prunable)]


def resolve_parameters(
    module: nn.Module, names: Sequence[str], shapes: Sequence[tuple[int, ...]]
) -> list[nn.Parameter]:
    """Look up ``names`` in ``module`` and check their shapes.

    Args:
        module: The model (wrappers are looked through).
        names: Qualified parameter names, as recorded by the pruner.
        shapes: Expected shapes, one per name.

    Returns:
        The parameters, in the order of ``names``.

    Raises:
        ValueError: When a name is missing or a shape differs: the module does not match the
            pruner.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 3))
        >>> [p.shape for p in resolve_parameters(net, ["0.weight"], [(3, 4)])]
        [torch.Size([3, 4])]
    """
    module = unwrap_module(module)
    found = dict(module.named_parameters(remove_duplicate=False))
    parameters = []
    for name, shape in zip(names, shapes, strict=True):
        parameter = found.get(name)
        if parameter is None:
            raise ValueError(
                f"The module does not match the pruner: it has no parameter '{name}'. Pass the "
                f"module the pruner was created with (or one of the same architecture). "
                f"Received: module of type {type(module).__name__}"
            )
        if isinstance(parameter, UninitializedParameter) or tuple(parameter.shape) != tuple(shape):
            got = (
                "uninitialized"
                if isinstance(parameter, UninitializedParameter)
                else tuple(parameter.shape)
            )
            raise ValueError(
                f"The module does not match the pruner: parameter '{name}' has shape {got}, "
                f"expected {tuple(shape)}. Received: module of type {type(module).__name__}"
            )
        parameters.append(parameter)
    return parameters


def parameter_kinds(module: nn.Module, names: Sequence[str]) -> list[str]:
    """Tell the weight layout kind of each named parameter, for portable mask files.

    ``"dense"`` for the weight of ``nn.Linear`` (``(out, in)``), ``"conv"`` for ``nn.ConvNd``
    (``(out, in/groups, *kernel)``), ``"conv_transpose"`` for ``nn.ConvTransposeNd``
    (``(in, out/groups, *kernel)``) and for the ``weight_ih``/``weight_hh`` weights of
    ``nn.LSTM``/``nn.RNN`` and their cells (Keras's kernels transposed, same gate order),
    ``"gru"`` for ``nn.GRU``/``nn.GRUCell`` weights (transposed, first two gates swapped),
    ``"native"`` for weights with no fixed Keras counterpart (projected LSTM weights,
    ``in_proj_weight``/``q,k,v_proj_weight``, Hugging Face ``Conv1D``) and
    ``"other"`` for anything else (biases, embeddings, ...). The trained original of a
    parametrized weight has the weight's layout. See :mod:`ltp_core.layout`.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2))
        >>> parameter_kinds(net, ["0.weight", "2.weight", "2.bias"])
        ['conv', 'dense', 'other']
    """
    module = unwrap_module(module)
    layouts = {n: info.layout for info in describe_parameters(module) for n, _ in info.occurrences}
    return [layouts.get(name, "other") for name in names]
