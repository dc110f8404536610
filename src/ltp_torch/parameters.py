"""Finding the prunable parameters of a ``torch.nn.Module``.

The pruner works on an ordered list of named parameters. This module decides which parameters are
in that list: by default the ``weight`` of linear and convolution layers; any other selection
through the ``prunable=`` argument (a predicate or a list of names). Shared or tied parameters are
listed once, under the first name ``module.named_parameters()`` gives them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from torch import nn
from torch.nn.parameter import UninitializedParameter

__all__ = [
    "DEFAULT_PRUNABLE_TYPES",
    "PrunableSpec",
    "default_prunable",
    "find_prunable_parameters",
    "parameter_kinds",
    "resolve_parameters",
    "unwrap_module",
]

#: Layer types whose ``weight`` is pruned when ``prunable`` is not given. Lazy layers (such as
#: ``nn.LazyLinear``) turn into these classes once materialized by a first forward pass.
DEFAULT_PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)

#: Predicate over ``(qualified_name, owning_module, parameter)``.
PrunablePredicate = Callable[[str, nn.Module, nn.Parameter], bool]
PrunableSpec = PrunablePredicate | Sequence[str] | None


def default_prunable(name: str, module: nn.Module, parameter: nn.Parameter) -> bool:
    """Return True for the ``weight`` of a linear or convolution layer.

    Args:
        name: Qualified parameter name, e.g. ``"features.0.weight"``.
        module: The module that owns the parameter directly.
        parameter: The parameter itself (unused; part of the predicate signature).

    Returns:
        Whether the parameter is pruned by default.

    Example:
        >>> from torch import nn
        >>> layer = nn.Linear(2, 3)
        >>> default_prunable("weight", layer, layer.weight)
        True
        >>> default_prunable("bias", layer, layer.bias)
        False
    """
    del parameter
    # Lazy layers (nn.LazyLinear, nn.LazyConv2d, ...) subclass these types; an uninitialized one
    # is rejected later with a message asking for a first forward pass.
    return name.rsplit(".", 1)[-1] == "weight" and isinstance(module, DEFAULT_PRUNABLE_TYPES)


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


def _parameter_occurrences(
    module: nn.Module,
) -> list[tuple[nn.Parameter, list[tuple[str, nn.Module]]]]:
    """Every parameter once, in ``named_parameters()`` order, with all its (name, owner) pairs."""
    by_id: dict[int, tuple[nn.Parameter, list[tuple[str, nn.Module]]]] = {}
    for module_name, owner in module.named_modules(remove_duplicate=False):
        for local_name, parameter in owner._parameters.items():
            if parameter is None:
                continue
            name = f"{module_name}.{local_name}" if module_name else local_name
            entry = by_id.get(id(parameter))
            if entry is None:
                by_id[id(parameter)] = (parameter, [(name, owner)])
            else:
                entry[1].append((name, owner))
    return list(by_id.values())


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


def find_prunable_parameters(
    module: nn.Module, prunable: PrunableSpec = None
) -> list[tuple[str, nn.Parameter]]:
    """List the prunable parameters of ``module`` with their qualified names.

    Args:
        module: The model. Wrappers (DDP, DataParallel, torch.compile) are looked through.
        prunable: ``None`` for :func:`default_prunable`; a predicate over
            ``(name, module, parameter)``; or a sequence of qualified parameter names.
            A tied parameter is selected when the predicate accepts any of its names.

    Returns:
        ``(name, parameter)`` pairs in ``module.named_parameters()`` order, each parameter once.

    Raises:
        ValueError: When nothing is prunable, a listed name is unknown or duplicated, or a
            selected parameter belongs to a lazy module that has not been run yet.
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
    module = unwrap_module(module)
    occurrences = _parameter_occurrences(module)
    selected: list[tuple[str, nn.Parameter]] = []

    if prunable is None or callable(prunable):
        predicate: PrunablePredicate = default_prunable if prunable is None else prunable
        for parameter, names in occurrences:
            chosen = [(n, owner) for n, owner in names if predicate(n, owner, parameter)]
            if chosen:
                _check_selected(chosen[0][0], chosen[0][1], parameter)
                selected.append((names[0][0], parameter))
    elif isinstance(prunable, (str, bytes)) or not isinstance(prunable, Iterable):
        raise TypeError(
            "`prunable` must be None, a callable (name, module, parameter) -> bool, or a list of "
            f"parameter names. Received: prunable={prunable!r}"
        )
    else:
        wanted = list(prunable)
        for item in wanted:
            if not isinstance(item, str):
                raise TypeError(
                    f"`prunable` names must be strings. Received: prunable item {item!r}"
                )
        lookup = {
            n: (parameter, names[0][0], owner)
            for parameter, names in occurrences
            for n, owner in names
        }
        unknown = [n for n in wanted if n not in lookup]
        if unknown:
            available = ", ".join(names[0][0] for _, names in occurrences) or "(none)"
            raise ValueError(
                f"Unknown parameter name(s) in `prunable`: {unknown}. Available: {available}. "
                f"Received: prunable={wanted!r}"
            )
        chosen_ids = set()
        for n in wanted:
            parameter, canonical, owner = lookup[n]
            if id(parameter) in chosen_ids:
                raise ValueError(
                    f"`prunable` lists the parameter '{canonical}' more than once (possibly under "
                    f"a tied name). Received: prunable={wanted!r}"
                )
            _check_selected(n, owner, parameter)
            chosen_ids.add(id(parameter))
        selected = [
            (names[0][0], parameter)
            for parameter, names in occurrences
            if id(parameter) in chosen_ids
        ]

    if not selected:
        raise ValueError(
            f"The module {type(module).__name__} has no prunable parameters. By default the "
            "`weight` of Linear/Conv/ConvTranspose layers is pruned; choose others with "
            "`prunable=` (a list of names or a predicate). "
            f"Received: prunable={prunable!r}"
        )
    return selected


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
    (``(in, out/groups, *kernel)``) and ``"other"`` for anything else (biases, embeddings, ...).
    See :mod:`ltp_core.layout`.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2))
        >>> parameter_kinds(net, ["0.weight", "2.weight", "2.bias"])
        ['conv', 'dense', 'other']
    """
    module = unwrap_module(module)
    kinds = []
    for name in names:
        owner_name, _, local = name.rpartition(".")
        owner = module.get_submodule(owner_name)
        kind = "other"
        if local == "weight":
            if isinstance(owner, nn.Linear):
                kind = "dense"
            elif isinstance(owner, nn.modules.conv._ConvTransposeNd):
                kind = "conv_transpose"
            elif isinstance(owner, nn.modules.conv._ConvNd):
                kind = "conv"
        kinds.append(kind)
    return kinds
