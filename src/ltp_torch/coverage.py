"""What a torch pruner covers, and checks on parametrized weights.

Builds the left-out part of :meth:`ltp_torch.LotteryTicketPruner.summary`, the low-coverage warning
at construction, and the checks that pruning a parametrized weight's original really zeroes the
effective weight (:class:`ltp_core.notices.ParametrizationWarning` otherwise).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ltp_core.notices import ParametrizationWarning
from ltp_core.summary import LeftOutTensor, PrunableTensor, build_summary, warn_if_low_coverage
from ltp_torch.roles import FROZEN, NOT_SELECTED, ParameterInfo

__all__ = [
    "LOW_COVERAGE_ADVICE",
    "check_parametrized_scores",
    "check_weight_norm_rows",
    "left_out_tensors",
    "probe_parametrizations",
    "warn_low_coverage",
    "weight_norm_dims",
]

logger = logging.getLogger(__name__)

#: How to include more parameters, for the low-coverage warning.
LOW_COVERAGE_ADVICE = (
    'pass prunable="with_embeddings" to prune embeddings too, prunable="all_matrices" for every '
    "matrix except biases, or a predicate or a list of parameter names "
    "(see ltp_torch.selectors)"
)

_ZERO_PRESERVING = ("weight_norm", "spectral_norm")


def left_out_tensors(
    infos: Sequence[ParameterInfo], selected: Sequence[ParameterInfo]
) -> list[LeftOutTensor]:
    """Every parameter not in ``selected``, with the reason it is left out.

    Example:
        >>> from torch import nn
        >>> from ltp_torch.roles import describe_parameters
        >>> infos = describe_parameters(nn.Linear(3, 2))
        >>> [(t.name, t.reason) for t in left_out_tensors(infos, infos[:1])]
        [('bias', 'bias')]
    """
    chosen = {id(info.parameter) for info in selected}
    result = []
    for info in infos:
        if id(info.parameter) in chosen:
            continue
        if not info.trainable:
            reason = FROZEN
        elif info.prunable_kind:
            reason = NOT_SELECTED
        else:
            reason = info.role
        result.append(LeftOutTensor(info.name, info.shape, reason))
    return result


def warn_low_coverage(
    selected: Sequence[ParameterInfo], infos: Sequence[ParameterInfo], stacklevel: int
) -> bool:
    """Warn (:class:`~ltp_core.notices.LowCoverageWarning`) when the selection holds less than
    half of the model's trainable parameters; frozen parameters do not count.

    Returns:
        Whether a warning was issued.
    """
    prunable = [PrunableTensor(i.name, i.kind_label, i.shape) for i in selected if i.trainable]
    trainable = [i for i in infos if i.trainable]
    left_out = left_out_tensors(trainable, selected)
    if not prunable and not left_out:
        return False
    return warn_if_low_coverage(
        build_summary(prunable, left_out), LOW_COVERAGE_ADVICE, stacklevel=stacklevel + 1
    )


def _owner(info: ParameterInfo) -> nn.Module:
    return info.occurrences[0][1]


def _warn(message: str, stacklevel: int) -> None:
    logger.warning(message)
    warnings.warn(message, ParametrizationWarning, stacklevel=stacklevel + 1)


def probe_parametrizations(selected: Sequence[ParameterInfo], stacklevel: int) -> None:
    """Warn for every selected original of a custom parametrization that does not keep zeros.

    ``weight_norm`` and ``spectral_norm`` scale their original, so its zeros stay zeros. Any
    other parametrization is probed once: its original with every other entry zeroed is passed
    through it, and the output must be zero at those entries.
    """
    for info in selected:
        owner = _owner(info)
        if info.parametrization is None or info.parametrization in _ZERO_PRESERVING:
            continue
        if not isinstance(owner, parametrize.ParametrizationList):
            continue
        verdict = "cannot be checked (it has several originals)"
        if len(owner._parameters) == 1:
            probe = info.parameter.detach().clone()
            probe.view(-1)[::2] = 0
            try:
                with torch.no_grad():
                    output = probe
                    for step in owner:  # type: ignore[attr-defined]
                        output = step(output)
            except Exception as error:  # any failure means "not verified"
                verdict = f"cannot be checked ({type(error).__name__}: {error})"
            else:
                if output.shape == probe.shape and bool((output.reshape(-1)[::2] == 0).all()):
                    continue
                verdict = "does not keep zeros: the effective weight stays dense where pruned"
        _warn(
            f"Parameter '{info.name}' is the trained original of a "
            f"'{info.parametrization}' parametrization that {verdict}. Remove the "
            "parametrization (torch.nn.utils.parametrize.remove_parametrizations) before "
            "pruning, or leave this tensor out with `prunable=`.",
            stacklevel,
        )


def weight_norm_dims(selected: Sequence[ParameterInfo]) -> dict[int, int]:
    """``{index: dim}`` for the selected directions of ``weight_norm`` weights (``-1`` = the
    norm is taken over the whole tensor)."""
    dims: dict[int, int] = {}
    for index, info in enumerate(selected):
        if info.parametrization != "weight_norm":
            continue
        owner = _owner(info)
        hooks: list[object] = (
            list(owner)  # type: ignore[call-overload]
            if isinstance(owner, parametrize.ParametrizationList)
            else list(owner._forward_pre_hooks.values())
        )
        for hook in hooks:
            dim = getattr(hook, "dim", None)
            if type(hook).__name__ in ("_WeightNorm", "WeightNorm") and isinstance(dim, int):
                dims[index] = dim
                break
    return dims


def check_weight_norm_rows(
    names: Sequence[str], masks: Sequence[np.ndarray], dims: dict[int, int], stacklevel: int
) -> bool:
    """Warn when a mask prunes a whole ``weight_norm`` row: its norm is 0 then, and the
    effective weight ``g * v / ||v||`` becomes NaN.

    Returns:
        Whether a warning was issued.
    """
    emptied = []
    for index, dim in dims.items():
        mask = masks[index]
        if dim == -1 or mask.ndim == 0:
            empty = 0 if mask.any() else 1
        else:
            axes = tuple(a for a in range(mask.ndim) if a != dim % mask.ndim)
            empty = int((~mask.any(axis=axes)).sum())
        if empty:
            emptied.append(f"'{names[index]}' ({empty} rows)")
    if not emptied:
        return False
    _warn(
        "These weight_norm directions lost every weight of some rows: "
        + ", ".join(emptied)
        + ". weight_norm divides by the row's norm, which is 0 now, so the effective weight "
        "of those rows is NaN. Prune these layers less (`layer_rates=`), or remove "
        "weight_norm before pruning (torch.nn.utils.parametrize.remove_parametrizations).",
        stacklevel,
    )
    return True


#: Parametrizations whose effective weight is its original times one positive scale per tensor
#: (``weight_norm`` only with ``dim=None``, see :func:`check_parametrized_scores`).
_UNIFORM_SCALE = ("spectral_norm",)


def check_parametrized_scores(
    names: Sequence[str],
    parametrizations: Sequence[str | None],
    weight_norm_dims: dict[int, int],
    scope: str,
    scale_free: bool,
    stacklevel: int,
) -> bool:
    """Warn when a ranking criterion scored parametrized originals whose ranking differs from
    that of the effective weights the layers use.

    The pruner scores the tensors that train (the originals). ``weight_norm`` rescales each
    row of its direction by ``g / ||v||``, so magnitudes of ``v`` rank rows differently from
    the effective weight; ``spectral_norm`` divides the whole tensor by ``sigma``, which
    changes nothing within the layer but changes the layer's magnitudes against the others in
    a global ranking. Custom parametrizations are unknown and always reported.

    Args:
        names: The pruner's parameter names.
        parametrizations: The parametrization of each (``None`` for a plain parameter).
        weight_norm_dims: ``{index: dim}`` of the ``weight_norm`` directions (``-1``: the norm
            of the whole tensor, one scale).
        scope: The strategy's scope, ``"layer"`` or ``"global"``.
        scale_free: Whether the strategy's ranking ignores one positive scale per tensor and
            weight set (layer scope or ``lamp``, with a criterion of one weight set or of
            ranks): then ``spectral_norm`` and ``weight_norm(dim=None)`` change nothing.
        stacklevel: Passed to :func:`warnings.warn`.

    Returns:
        Whether a warning was issued.
    """
    affected = []
    for index, (name, label) in enumerate(zip(names, parametrizations, strict=True)):
        if label is None or label == "torch.nn.utils.prune":  # the mask: scores unchanged
            continue
        uniform = label in _UNIFORM_SCALE or weight_norm_dims.get(index) == -1
        if uniform and scale_free:
            continue
        affected.append(f"'{name}' ({label})")
    if not affected:
        return False
    _warn(
        "The scores of " + ", ".join(affected) + " are computed from the trained originals, "
        "not from the effective weights the layers use (weight_norm scales each row of its "
        "direction by g/||v||, spectral_norm the whole tensor by 1/sigma), so these masks "
        "differ from ranking the effective weights. To rank effective weights, remove the "
        "parametrization before pruning (torch.nn.utils.parametrize.remove_parametrizations) "
        "and add it back after rewinding; with spectral_norm, a layer-scope strategy of one weight "
        f"set (large_final, large_init, ...) or 'lamp' ranks exactly. Received: {scope}-scope "
        "strategy",
        stacklevel,
    )
    return True
