"""What each parameter of a ``torch.nn.Module`` is: its *role*, judged from the layer that owns it.

A role is either a prunable kind (:data:`PRUNABLE_KINDS`: ``"linear"``, ``"conv"``,
``"conv_transpose"``, ``"attention"``, ``"recurrent"``, ``"hf_conv1d"``, ``"experts"``) or the
reason a tensor is
not pruned by default (``"bias"``, ``"normalization"``, ``"embedding"``, ``"tied to embedding"``,
...). :mod:`ltp_torch.selectors` decides from roles; :meth:`ltp_torch.LotteryTicketPruner.summary`
reports them.

Rules (the same in ``ltp_keras``; see ``docs/architectures.md``):

- the ``weight`` of ``nn.Linear`` (including ``NonDynamicallyQuantizableLinear``) and
  ``nn.Bilinear`` is ``"linear"``; every ``nn.ConvNd`` weight (grouped and depthwise too) is
  ``"conv"``, every ``nn.ConvTransposeNd`` weight ``"conv_transpose"``;
- ``nn.MultiheadAttention``'s ``in_proj_weight``, ``q_proj_weight``, ``k_proj_weight``,
  ``v_proj_weight`` and ``out_proj.weight`` are ``"attention"``;
- ``nn.LSTM``/``nn.GRU``/``nn.RNN`` ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``weight_hr_l{k}``
  (``_reverse`` too) and the cells' ``weight_ih``/``weight_hh`` are ``"recurrent"``;
- a Hugging Face ``Conv1D`` (a module class named ``Conv1D`` with an integer ``nf`` and a 2-D
  ``weight`` of ``nf`` columns; ``transformers`` is never imported) is ``"hf_conv1d"``;
- the stacked expert weights of a Hugging Face mixture-of-experts block (``transformers`` 5
  stores every expert of a layer in one 3-D tensor, e.g. ``MixtralExperts.gate_up_proj`` of
  shape ``(experts, 2 x intermediate, hidden)`` and ``down_proj``: every non-bias parameter of
  3 dimensions of a module class named ``...Experts``) are ``"experts"``; the router's
  ``weight`` (the 2-D ``(experts, hidden)`` matrix of a module class named ``...Router``, used
  as a linear layer) is ``"linear"``, as the ``nn.Linear`` gate and per-expert ``nn.Linear``
  layers of ``transformers`` 4 were, so the same model is pruned alike under both versions;
- a parametrized weight (``torch.nn.utils.parametrize``: ``parametrizations.weight_norm``,
  ``spectral_norm``, custom ones; also the older hook-based ``weight_norm``/``spectral_norm``) takes
  the role of the weight it produces, carried by the original tensor that trains: ``original``
  when there is one, the direction ``original1`` of ``weight_norm``; ``weight_orig`` of a layer
  under ``torch.nn.utils.prune`` (its effective weight is ``weight_orig * weight_mask``);
- a parameter shared with an ``nn.Embedding``/``nn.EmbeddingBag`` (a tied ``lm_head``) is
  ``"tied to embedding"``, whatever other layer uses it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd
from torch.nn.parameter import UninitializedParameter
from torch.nn.utils import parametrize, prune

__all__ = [
    "BIAS",
    "EMBEDDING",
    "FROZEN",
    "NORMALIZATION",
    "NOT_SELECTED",
    "OTHER",
    "PARAMETRIZATION_INPUT",
    "PRUNABLE_KINDS",
    "SCALAR",
    "SCALE",
    "TIED_TO_EMBEDDING",
    "ParameterInfo",
    "describe_occurrence",
    "describe_parameters",
]

#: Roles pruned by the default selection.
PRUNABLE_KINDS: tuple[str, ...] = (
    "linear",
    "conv",
    "conv_transpose",
    "attention",
    "recurrent",
    "hf_conv1d",
    "experts",
)

BIAS = "bias"
NORMALIZATION = "normalization"
EMBEDDING = "embedding"
TIED_TO_EMBEDDING = "tied to embedding"
OTHER = "positional or other parameter"
SCALAR = "scalar"
SCALE = "per-channel scale"
PARAMETRIZATION_INPUT = "parametrization input (not the trained weight)"
UNINITIALIZED = "uninitialized (lazy module)"
FROZEN = "frozen (requires_grad=False)"
NOT_SELECTED = "not selected by prunable="

#: Layer types whose ``weight`` the selection before role-based defaults pruned.
LINEAR_AND_CONV_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)

_MHA_WEIGHTS = frozenset({"in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"})
_RNN_WEIGHT = re.compile(r"weight_(ih|hh|hr)_l\d+(_reverse)?")
_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)
_PARAMETRIZATION_NAMES = {
    "_WeightNorm": "weight_norm",
    "_SpectralNorm": "spectral_norm",
    "_Orthogonal": "orthogonal",
}


@dataclass(frozen=True)
class ParameterInfo:
    """One parameter of a module (tied parameters once) and what it is.

    Attributes:
        name: Its first qualified name in ``named_parameters()`` order (the pruner's name).
        parameter: The parameter object.
        occurrences: Every ``(qualified_name, owning_module)`` pair, the first one first.
        role: A kind from :data:`PRUNABLE_KINDS`, or why it is not pruned by default.
        layout: Portable-mask layout: ``"dense"``, ``"conv"``, ``"conv_transpose"``,
            ``"gru"`` (GRU weights: transposed, first two gates swapped), ``"native"``
            (projected LSTM weights, packed attention projections, Hugging Face ``Conv1D``,
            stacked mixture-of-experts weights:
            not mapped to Keras layout; LSTM and RNN weights are ``"dense"``) or ``"other"``
            (see :mod:`ltp_core.layout`).
        parametrization: ``"weight_norm"``, ``"spectral_norm"``, another parametrization's
            class name, or ``None``, when the parameter is the trained original of a
            parametrized weight.
        linear_or_conv: Whether the selection before role-based defaults pruned it (the
            ``weight`` of a Linear, Conv or ConvTranspose layer under any of its names).
    """

    name: str
    parameter: nn.Parameter = field(repr=False, compare=False)
    occurrences: tuple[tuple[str, nn.Module], ...] = field(repr=False, compare=False)
    role: str
    layout: str = "other"
    parametrization: str | None = None
    linear_or_conv: bool = False

    @property
    def trainable(self) -> bool:
        """Whether the parameter requires gradients."""
        return bool(self.parameter.requires_grad)

    @property
    def prunable_kind(self) -> bool:
        """Whether the role is one of :data:`PRUNABLE_KINDS`."""
        return self.role in PRUNABLE_KINDS

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape, ``(0,)`` for an uninitialized (lazy) parameter."""
        if isinstance(self.parameter, UninitializedParameter):
            return (0,)
        return tuple(self.parameter.shape)

    @property
    def kind_label(self) -> str:
        """The role, with the parametrization when there is one (``"linear (weight_norm)"``)."""
        if self.role == TIED_TO_EMBEDDING:
            return "embedding (tied)"
        if self.parametrization is None:
            return self.role
        return f"{self.role} ({self.parametrization})"


@dataclass(frozen=True)
class _Occurrence:
    role: str
    layout: str = "other"
    parametrization: str | None = None


def _is_hf_conv1d(module: nn.Module) -> bool:
    weight = module._parameters.get("weight")
    nf = getattr(module, "nf", None)
    return (
        type(module).__name__ == "Conv1D"
        and isinstance(nf, int)
        and not isinstance(nf, bool)
        and weight is not None
        and not isinstance(weight, UninitializedParameter)
        and weight.dim() == 2
        and weight.shape[1] == nf
    )


def _moe_role(owner: nn.Module, local: str, parameter: nn.Parameter) -> _Occurrence | None:
    """The role of a Hugging Face mixture-of-experts tensor: stacked expert weights (a 3-D
    non-bias parameter of a ``...Experts`` module), or the router's matrix (the 2-D ``weight``
    of a ``...Router`` module: a linear layer)."""
    if isinstance(parameter, UninitializedParameter) or "bias" in local.lower():
        return None
    kind = type(owner).__name__
    if kind.endswith("Experts") and parameter.dim() == 3:
        return _Occurrence("experts", "native")
    if kind.endswith("Router") and local == "weight" and parameter.dim() == 2:
        return _Occurrence("linear", "dense")
    return None


def _recurrent_layout(owner: nn.Module, local: str) -> str:
    """``"dense"`` for LSTM and plain RNN input/hidden weights: Keras's ``kernel`` and
    ``recurrent_kernel`` transposed, with the same gate order (LSTM: input, forget, cell,
    output). ``"gru"`` for GRU ones: transposed, with the first two gates swapped (torch orders
    them reset, update, new; Keras update, reset, new). ``"native"`` for an LSTM with
    ``proj_size`` (no Keras counterpart)."""
    if getattr(owner, "proj_size", 0):
        return "native"
    if isinstance(owner, (nn.GRU, nn.GRUCell)):
        return "gru"
    if isinstance(owner, (nn.LSTM, nn.RNN, nn.LSTMCell, nn.RNNCell)) and not local.startswith(
        "weight_hr"
    ):
        return "dense"
    return "native"


def _layer_role(
    owner: nn.Module | None, local: str, parameter: nn.Parameter, parent: nn.Module | None
) -> _Occurrence | None:
    """The prunable role of ``owner.<local>`` when it is a known layer's weight, else None."""
    if owner is None:
        return None
    if isinstance(owner, nn.Linear) and local == "weight":
        kind = "attention" if isinstance(parent, nn.MultiheadAttention) else "linear"
        return _Occurrence(kind, "dense")
    if isinstance(owner, nn.Bilinear) and local == "weight":
        return _Occurrence("linear")
    if isinstance(owner, _ConvTransposeNd) and local == "weight":
        return _Occurrence("conv_transpose", "conv_transpose")
    if isinstance(owner, _ConvNd) and local == "weight":
        return _Occurrence("conv", "conv")
    if isinstance(owner, nn.MultiheadAttention) and local in _MHA_WEIGHTS:
        return _Occurrence("attention", "native")
    if isinstance(owner, nn.RNNBase) and _RNN_WEIGHT.fullmatch(local):
        return _Occurrence("recurrent", _recurrent_layout(owner, local))
    if isinstance(owner, nn.RNNCellBase) and local in ("weight_ih", "weight_hh"):
        return _Occurrence("recurrent", _recurrent_layout(owner, local))
    if local == "weight" and _is_hf_conv1d(owner):
        return _Occurrence("hf_conv1d", "native")
    return _moe_role(owner, local, parameter)


def _left_out_reason(owner: nn.Module | None, local: str, parameter: nn.Parameter) -> str:
    """Why ``owner.<local>`` is not pruned by default."""
    if isinstance(owner, (nn.Embedding, nn.EmbeddingBag)) and local == "weight":
        return EMBEDDING
    if owner is not None and (
        isinstance(owner, _NORM_TYPES) or "norm" in type(owner).__name__.lower()
    ):
        return NORMALIZATION
    if "bias" in local.lower():
        return BIAS
    if isinstance(parameter, UninitializedParameter):
        return UNINITIALIZED
    if parameter.dim() == 0 or parameter.numel() == 1:
        return SCALAR
    if parameter.dim() == 1:
        return SCALE
    return OTHER


def _role(
    owner: nn.Module | None, local: str, parameter: nn.Parameter, parent: nn.Module | None
) -> _Occurrence:
    found = _layer_role(owner, local, parameter, parent)
    return found if found is not None else _Occurrence(_left_out_reason(owner, local, parameter))


def _parametrization_name(plist: nn.Module) -> str:
    names = [
        _PARAMETRIZATION_NAMES.get(type(p).__name__, type(p).__name__)
        for p in plist  # type: ignore[attr-defined]
    ]
    return "+".join(names) or "parametrization"


def _carrier(plist: nn.Module, label: str) -> str | None:
    """The original that carries the trained weight: ``original``, weight_norm's direction, or
    the one largest original; None when that is ambiguous."""
    originals = {n: p for n, p in plist._parameters.items() if p is not None}
    if "original" in originals:
        return "original"
    if label == "weight_norm" and "original1" in originals:
        return "original1"
    sizes = sorted(((p.numel(), n) for n, p in originals.items()), reverse=True)
    if not sizes or (len(sizes) > 1 and sizes[0][0] == sizes[1][0]):
        return None
    return sizes[0][1]


def _hook_parametrization(owner: nn.Module, local: str) -> tuple[str, str, bool] | None:
    """``(tensor_name, label, is_carrier)`` for the hook-based ``weight_norm``/``spectral_norm``
    parameters (``weight_v``, ``weight_g``, ``weight_orig``) and ``torch.nn.utils.prune``'s
    ``weight_orig``."""
    for hook in owner._forward_pre_hooks.values():
        kind = type(hook).__name__
        pruned = getattr(hook, "_tensor_name", None)
        if isinstance(hook, prune.BasePruningMethod) and local == f"{pruned}_orig":
            return str(pruned), "torch.nn.utils.prune", True
        tensor = getattr(hook, "name", None)
        if not isinstance(tensor, str):
            continue
        if kind == "WeightNorm" and local in (f"{tensor}_v", f"{tensor}_g"):
            return tensor, "weight_norm", local == f"{tensor}_v"
        if kind == "SpectralNorm" and local == f"{tensor}_orig":
            return tensor, "spectral_norm", True
    return None


def _describe(
    qualified: str,
    owner: nn.Module,
    parameter: nn.Parameter,
    modules: dict[str, nn.Module],
) -> _Occurrence:
    module_name, _, local = qualified.rpartition(".")
    if isinstance(owner, parametrize.ParametrizationList):
        # qualified = "<parent>.parametrizations.<tensor>.<original>"
        holder, _, tensor = module_name.rpartition(".")
        parent_name = holder[: -len("parametrizations")].rstrip(".")
        parent = modules.get(parent_name)
        label = _parametrization_name(owner)
        if local != _carrier(owner, label):
            return _Occurrence(PARAMETRIZATION_INPUT, parametrization=label)
        grandparent = modules.get(parent_name.rpartition(".")[0]) if parent_name else None
        found = _role(parent, tensor, parameter, grandparent)
        return _Occurrence(found.role, found.layout, label)
    parent = modules.get(module_name.rpartition(".")[0]) if module_name else None
    hooked = _hook_parametrization(owner, local)
    if hooked is not None:
        tensor, label, is_carrier = hooked
        if not is_carrier:
            return _Occurrence(PARAMETRIZATION_INPUT, parametrization=label)
        found = _role(owner, tensor, parameter, parent)
        return _Occurrence(found.role, found.layout, label)
    return _role(owner, local, parameter, parent)


def _combine(
    parameter: nn.Parameter,
    occurrences: Sequence[tuple[str, nn.Module]],
    described: Sequence[_Occurrence],
) -> ParameterInfo:
    roles = [d.role for d in described]
    linear_or_conv = any(
        n.rpartition(".")[2] == "weight" and isinstance(o, LINEAR_AND_CONV_TYPES)
        for n, o in occurrences
    )
    first = described[0]
    if EMBEDDING in roles:
        role = TIED_TO_EMBEDDING if any(r in PRUNABLE_KINDS for r in roles) else EMBEDDING
        parametrization = None
    else:
        chosen = next((d for d in described if d.role in PRUNABLE_KINDS), first)
        role, parametrization = chosen.role, chosen.parametrization
    return ParameterInfo(
        name=occurrences[0][0],
        parameter=parameter,
        occurrences=tuple(occurrences),
        role=role,
        layout=first.layout,
        parametrization=parametrization,
        linear_or_conv=linear_or_conv,
    )


def describe_parameters(module: nn.Module) -> list[ParameterInfo]:
    """Describe every parameter of ``module`` once (tied ones under their first name).

    Args:
        module: The model (not a DDP/compile wrapper; see
            :func:`ltp_torch.parameters.unwrap_module`).

    Returns:
        One :class:`ParameterInfo` per distinct parameter, in ``named_parameters()`` order.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Embedding(10, 4), nn.LSTM(4, 4), nn.LayerNorm(4))
        >>> [(i.name, i.role) for i in describe_parameters(net)][:2]
        [('0.weight', 'embedding'), ('1.weight_ih_l0', 'recurrent')]
        >>> sorted({i.role for i in describe_parameters(net)})
        ['bias', 'embedding', 'normalization', 'recurrent']
    """
    modules = dict(module.named_modules(remove_duplicate=False))
    by_id: dict[int, tuple[nn.Parameter, list[tuple[str, nn.Module]]]] = {}
    for module_name, owner in modules.items():
        for local_name, parameter in owner._parameters.items():
            if parameter is None:
                continue
            name = f"{module_name}.{local_name}" if module_name else local_name
            entry = by_id.get(id(parameter))
            if entry is None:
                by_id[id(parameter)] = (parameter, [(name, owner)])
            elif all(name != seen for seen, _ in entry[1]):
                entry[1].append((name, owner))
    infos = []
    for parameter, occurrences in by_id.values():
        described = [_describe(n, owner, parameter, modules) for n, owner in occurrences]
        infos.append(_combine(parameter, occurrences, described))
    return infos


def describe_occurrence(name: str, owner: nn.Module, parameter: nn.Parameter) -> ParameterInfo:
    """Describe one ``(name, owning_module, parameter)`` without the rest of the model.

    Used when a selector is called as a plain predicate outside a model scan: ties and the
    module around ``owner`` are unknown then, so a parametrized original or an attention
    ``out_proj`` is judged by its owner alone.

    Example:
        >>> from torch import nn
        >>> layer = nn.GRU(3, 4)
        >>> describe_occurrence("weight_hh_l0", layer, layer.weight_hh_l0).role
        'recurrent'
    """
    described = _describe(name, owner, parameter, {})
    return _combine(parameter, [(name, owner)], [described])
