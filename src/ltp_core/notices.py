"""Warning classes the library emits when it does less or other than asked.

Each is a :class:`UserWarning` subclass, so ``warnings.simplefilter("error", LayerCollapseWarning)``
turns one kind into an exception without touching the others.

Example:
    >>> import warnings
    >>> from ltp_core.notices import LayerCollapseWarning
    >>> issubclass(LayerCollapseWarning, UserWarning)
    True
"""

from __future__ import annotations

__all__ = [
    "LayerCollapseWarning",
    "LowCoverageWarning",
    "NothingPrunedWarning",
    "ParametrizationWarning",
]


class LayerCollapseWarning(UserWarning):
    """A global selection left a layer with no weights at all (layer collapse).

    Remedies: ``min_layer_density=`` on the global strategy, the ``lamp`` criterion, or layer
    scope.
    """


class LowCoverageWarning(UserWarning):
    """The prunable tensors hold less than half of the model's trainable parameters.

    Remedy: choose more tensors with ``prunable=`` (see the named selectors of each adapter).
    """


class NothingPrunedWarning(UserWarning):
    """A pruning call pruned no weight (the requested fraction rounds to zero everywhere)."""


class ParametrizationWarning(UserWarning):
    """A pruned weight is computed by a parametrization that does not keep its zeros.

    Raised for a custom ``torch.nn.utils.parametrize`` parametrization whose output is not zero
    where its trained original is zero, and for ``weight_norm`` rows that lose every weight (the
    row's norm is then 0 and the effective weight NaN).
    """
