"""Named selections of prunable parameters, for ``LotteryTicketPruner(model, prunable=...)``.

Pass a selector by name (``prunable="with_embeddings"``) or as an object
(``prunable=ltp_torch.selectors.with_embeddings``). A selector is also a predicate
``(name, module, parameter) -> bool``, so it composes with your own rules:

    >>> from torch import nn
    >>> from ltp_torch import LotteryTicketPruner, selectors
    >>> net = nn.Sequential(nn.Embedding(4, 8), nn.Linear(8, 8), nn.LayerNorm(8))
    >>> LotteryTicketPruner(net).names                        # the default
    ['1.weight']
    >>> LotteryTicketPruner(net, prunable="with_embeddings").names
    ['0.weight', '1.weight']
    >>> LotteryTicketPruner(
    ...     net, prunable=lambda n, m, p: selectors.default(n, m, p) or n == "2.weight"
    ... ).names
    ['1.weight', '2.weight']

========================  ====================================================================
name                      selects
========================  ====================================================================
``"default"``             weight matrices and kernels of linear, convolution, attention and
                          recurrent layers, Hugging Face ``Conv1D`` and
                          mixture-of-experts weights (see
                          :mod:`ltp_torch.roles`); parametrized ones through the original
                          that trains
``"with_embeddings"``     the default plus embeddings and the tensors tied to them
``"all_matrices"``        every floating-point parameter of two or more dimensions except
                          biases and weight_norm magnitudes (positional tables included)
``"linear_and_conv"``     the selection before role-based defaults: the ``weight`` of
                          ``nn.Linear``, ``nn.ConvNd`` and ``nn.ConvTransposeNd`` only (also
                          an embedding tied to such a layer), frozen ones included
========================  ====================================================================

Every selector except ``"linear_and_conv"`` leaves frozen parameters (``requires_grad=False``)
out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

from torch import nn
from torch.nn.parameter import UninitializedParameter

from ltp_torch.roles import (
    BIAS,
    EMBEDDING,
    PARAMETRIZATION_INPUT,
    TIED_TO_EMBEDDING,
    ParameterInfo,
    describe_occurrence,
)

__all__ = [
    "SELECTORS",
    "Selector",
    "all_matrices",
    "default",
    "get_selector",
    "linear_and_conv",
    "with_embeddings",
]

# The parameters of the model being scanned, so a selector called as a predicate by a user's
# function sees ties and parametrizations (set by find_prunable_parameters).
_SCAN: ContextVar[Mapping[int, ParameterInfo] | None] = ContextVar("_SCAN", default=None)


@contextmanager
def scanning(infos: Mapping[int, ParameterInfo]) -> Iterator[None]:
    """Make ``infos`` (by parameter id) visible to selectors called as predicates."""
    token = _SCAN.set(infos)
    try:
        yield
    finally:
        _SCAN.reset(token)


class Selector:
    """A named rule over :class:`ltp_torch.roles.ParameterInfo`, usable as ``prunable=``.

    Args:
        name: The name accepted as ``prunable="<name>"``.
        rule: Decides from a parameter's description.
        description: One line for error messages and ``repr``.

    Example:
        >>> from torch import nn
        >>> layer = nn.Linear(2, 3)
        >>> default("weight", layer, layer.weight), default("bias", layer, layer.bias)
        (True, False)
    """

    def __init__(self, name: str, rule: Callable[[ParameterInfo], bool], description: str):
        self.name = name
        self.description = description
        self._rule = rule

    def selects(self, info: ParameterInfo) -> bool:
        """Whether the described parameter is selected."""
        return bool(self._rule(info))

    def __call__(self, name: str, module: nn.Module, parameter: nn.Parameter) -> bool:
        """The predicate form. Inside a pruner's scan the whole model is known (ties,
        parametrizations); called on its own it judges from ``module`` alone."""
        scan = _SCAN.get()
        info = scan.get(id(parameter)) if scan is not None else None
        if info is None:
            info = describe_occurrence(name, module, parameter)
        return self.selects(info)

    def __repr__(self) -> str:
        return f"ltp_torch.selectors.{self.name}"


def _is_matrix(info: ParameterInfo) -> bool:
    parameter = info.parameter
    if isinstance(parameter, UninitializedParameter):
        return info.prunable_kind  # judged again (with an error) once selected
    return bool(parameter.is_floating_point() and parameter.dim() >= 2)


default = Selector(
    "default",
    lambda info: info.prunable_kind and info.trainable,
    "weights of linear, convolution, attention, recurrent and Hugging Face Conv1D layers",
)
with_embeddings = Selector(
    "with_embeddings",
    lambda info: (
        info.trainable and (info.prunable_kind or info.role in (EMBEDDING, TIED_TO_EMBEDDING))
    ),
    "the default plus embeddings (and the tensors tied to them)",
)
all_matrices = Selector(
    "all_matrices",
    lambda info: (
        info.trainable and info.role not in (BIAS, PARAMETRIZATION_INPUT) and _is_matrix(info)
    ),
    "every floating-point parameter with 2 or more dimensions except biases",
)
linear_and_conv = Selector(
    "linear_and_conv",
    lambda info: info.linear_or_conv,
    "the weight of nn.Linear/ConvNd/ConvTransposeNd only (the selection before role-based "
    "defaults)",
)

#: The named selectors, by the name ``prunable=`` accepts.
SELECTORS: Mapping[str, Selector] = MappingProxyType(
    {s.name: s for s in (default, with_embeddings, all_matrices, linear_and_conv)}
)


def get_selector(name: str) -> Selector:
    """Return the selector called ``name``.

    Raises:
        ValueError: For an unknown name (the message lists the valid ones).

    Example:
        >>> get_selector("with_embeddings")
        ltp_torch.selectors.with_embeddings
    """
    selector = SELECTORS.get(name)
    if selector is None:
        valid = ", ".join(repr(n) for n in SELECTORS)
        raise ValueError(
            f"Unknown selector name for `prunable`. Valid names: {valid}; or pass a predicate "
            f"(name, module, parameter) -> bool, or a list of parameter names. "
            f"Received: prunable={name!r}"
        )
    return selector
