"""``LotteryTicketPruner`` for ``torch.nn.Module``: the core pruner, fed with a module's weights.

Every decision (which weights, how many, ties, validation) is made by
:class:`ltp_core.LotteryTicketPruner`; this class only finds the prunable parameters, copies their
values out as NumPy arrays and writes results back in place, so optimizers that hold references to
the parameters keep working.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ltp_core import LotteryTicketPruner as CorePruner
from ltp_core import io as core_io
from ltp_core.layout import load_masks_for
from ltp_core.strategies import resolve_strategy
from ltp_core.summary import PrunableTensor, PruningSummary, build_summary
from ltp_torch.arrays import to_numpy, write_into
from ltp_torch.coverage import (
    check_parametrized_scores,
    check_weight_norm_rows,
    left_out_tensors,
    probe_parametrizations,
    warn_low_coverage,
    weight_norm_dims,
)
from ltp_torch.masking import MaskTensors, apply_masks_, mask_tensors
from ltp_torch.parameters import (
    PrunableSpec,
    describe_selection,
    resolve_parameters,
    unwrap_module,
)
from ltp_torch.state import restore_snapshot, snapshot, to_numpy_tree, to_torch_tree

__all__ = ["LotteryTicketPruner"]

logger = logging.getLogger(__name__)

_FORMAT = "ltp_torch.LotteryTicketPruner"
_FORMAT_VERSION = 1
_LAYOUT = "torch"


#: Criteria of two weight sets whose ranking one positive scale per set does not change.
_RANK_ONLY = ("large_init_large_final", "large_final_same_sign")


def _scale_free(strategy: Any) -> bool:
    """Whether ``strategy`` ranks the same when each layer's weights are scaled by one positive
    factor per weight set (initial, trained, current): layer scope or ``lamp``, and a criterion
    of one weight set or of ranks only (``movement``/``magnitude_increase`` subtract sets whose
    scales may differ)."""
    criterion = strategy.criterion
    per_layer = strategy.scope == "layer" or criterion.name == "lamp"
    return per_layer and (len(criterion.needs) <= 1 or criterion.name in _RANK_ONLY)


def _check_materialized(names: Sequence[str], parameters: Sequence[torch.Tensor]) -> None:
    """Raise a ValueError naming the first parameter on the meta device (it holds no values)."""
    for name, parameter in zip(names, parameters, strict=True):
        if parameter.is_meta:
            raise ValueError(
                f"Parameter '{name}' is on the meta device and holds no values to prune or "
                "rewind to. Materialize the model first (e.g. model.to_empty(device='cpu') and "
                "load its weights, or build it without a meta-device context). "
                f"Received: module with meta parameter '{name}'"
            )


def _check_finite(names: Sequence[str], arrays: Sequence[np.ndarray], argument: str) -> None:
    """Raise a ValueError naming the parameter when a weight array holds NaN or inf."""
    for name, array in zip(names, arrays, strict=True):
        if not np.isfinite(array).all():
            raise ValueError(
                f"Parameter '{name}' of `{argument}` contains NaN or infinite values; masks "
                f"cannot be computed from them. Received: {argument} with non-finite '{name}'"
            )


class LotteryTicketPruner:
    """Lottery-ticket pruning of a PyTorch module.

    The pruner records the module's initial weights at construction. Masks are computed by the
    core from the weights of the module passed to :meth:`calc_prune_mask`; :meth:`apply_pruning`,
    :meth:`rewind` and :class:`ltp_torch.PrunerHook` write them into the module.

    Args:
        module: The model, with the weights to rewind to (usually freshly initialized). Lazy
            modules must have run one forward pass. DDP/DataParallel/torch.compile wrappers are
            looked through.
        prunable: Which parameters to prune: ``None`` (or ``"default"``) for the weight
            matrices and kernels of linear, convolution, attention and recurrent layers and
            Hugging Face ``Conv1D`` (biases, normalization, embeddings and tensors tied to them,
            positional tables, scalars and scales are left out; parametrized weights are pruned
            through the original that trains); another selector name (``"with_embeddings"``,
            ``"all_matrices"``, ``"linear_and_conv"`` for the selection of versions before
            0.2, see :mod:`ltp_torch.selectors`); a predicate
            ``(name, module, parameter) -> bool``; or a list of qualified parameter names such
            as ``["0.weight", "head.bias"]``. A pruner covering less than half of the model's
            trainable parameters warns (:class:`ltp_core.notices.LowCoverageWarning`).
        seed: Seed of the core's generator (``random`` strategy, tie breaking); ``None`` means 0.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> pruner = LotteryTicketPruner(net)
        >>> pruner.names
        ['0.weight', '2.weight']
        >>> pruner.calc_prune_mask(net, 0.5, "smallest_weights")
        >>> pruner.apply_pruning(net)
        >>> int((net[0].weight == 0).sum()), int((net[2].weight == 0).sum())
        (32, 8)
    """

    def __init__(
        self, module: nn.Module, *, prunable: PrunableSpec = None, seed: int | None = None
    ) -> None:
        module = unwrap_module(module)
        selected, infos = describe_selection(module, prunable)
        self._names = [info.name for info in selected]
        self._shapes = [tuple(info.parameter.shape) for info in selected]
        self._kinds = [info.layout for info in selected]
        self._roles = [info.kind_label for info in selected]
        _check_materialized(self._names, [info.parameter for info in selected])
        initial = [to_numpy(info.parameter) for info in selected]
        _check_finite(self._names, initial, "module")
        self._core = CorePruner(initial, names=self._names, seed=seed)
        self._left_out = tuple(left_out_tensors(infos, selected))
        self._weight_norm_dims = weight_norm_dims(selected)
        self._parametrizations = [info.parametrization for info in selected]
        probe_parametrizations(selected, stacklevel=3)
        warn_low_coverage(selected, infos, stacklevel=3)
        self._initial_state = snapshot(module, exclude=set(self._names))
        self._rewind_state: dict[str, torch.Tensor] | None = None
        self._mask_version = 0
        self._mask_cache: dict[tuple[int, torch.device, torch.dtype], torch.Tensor | None] = {}
        self._cache_version = 0
        logger.debug("Pruning %d parameters: %s", len(self._names), self._names)

    # -- read-only views ---------------------------------------------------------------------

    @property
    def core(self) -> CorePruner:
        """The wrapped :class:`ltp_core.LotteryTicketPruner` (shares its state with this object)."""
        return self._core

    @property
    def names(self) -> list[str]:
        """Qualified names of the prunable parameters, in order."""
        return list(self._names)

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the prunable parameters, in order."""
        return list(self._shapes)

    @property
    def kinds(self) -> list[str]:
        """Layout kind of each prunable parameter: ``"dense"``, ``"conv"``,
        ``"conv_transpose"``, ``"native"`` or ``"other"`` (see :mod:`ltp_core.layout`)."""
        return list(self._kinds)

    @property
    def roles(self) -> list[str]:
        """Role of each prunable parameter (``"linear"``, ``"conv"``, ``"attention"``,
        ``"recurrent"``, ``"hf_conv1d"``, ``"experts"``, ``"embedding"``...; a parametrized one as
        ``"linear (weight_norm)"``). See :mod:`ltp_torch.roles`."""
        return list(self._roles)

    def summary(self) -> PruningSummary:
        """What this pruner prunes and what it leaves out, and why.

        Returns:
            A :class:`ltp_core.summary.PruningSummary`: one row per prunable tensor (role,
            shape, weights, kept, density, share of the model's parameters) and the
            parameters left out grouped by reason (``bias``, ``normalization``,
            ``embedding``, ``tied to embedding``, ``positional or other parameter``,
            ``scalar``, ``per-channel scale``, ``frozen (requires_grad=False)``, ``not selected
            by prunable=``...). ``print()`` it, or use ``to_markdown()``/``to_dict()``.

        Example:
            >>> from torch import nn
            >>> net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
            >>> pruner = LotteryTicketPruner(net)
            >>> pruner.calc_prune_mask(net, 0.5, "smallest_weights")
            >>> print(pruner.summary())  # doctest: +NORMALIZE_WHITESPACE
            prunable  kind    shape   weights  kept  density  share
            0.weight  linear  (4, 4)  16       8     50.00%   57.14%
            total                     16       8     50.00%   57.14%
            left out: 12 parameters (42.86%)
              normalization: 8 in 2 tensors (1.weight, 1.bias)
              bias: 4 in 1 tensor (0.bias)
        """
        masks = self._core.masks
        prunable = [
            PrunableTensor(name, role, shape, kept=int(mask.sum()))
            for name, role, shape, mask in zip(
                self._names, self._roles, self._shapes, masks, strict=True
            )
        ]
        return build_summary(prunable, self._left_out)

    @property
    def masks(self) -> list[np.ndarray]:
        """Current bool masks (``True`` = kept), one per prunable parameter, as NumPy arrays.

        Fresh copies: editing one does not change the pruner (use :meth:`set_masks`), and
        ``torch.from_numpy`` accepts them without a read-only warning.
        """
        return [np.array(mask, copy=True) for mask in self._core.masks]

    @property
    def cumulative_pruning_rate(self) -> float:
        """Fraction of all prunable weights pruned so far."""
        return float(self._core.cumulative_pruning_rate)

    @property
    def level(self) -> int:
        """Number of successful :meth:`calc_prune_mask` calls since creation or the last reset."""
        return int(self._core.level)

    @property
    def history(self) -> list[dict[str, Any]]:
        """One record per level: strategy, fraction, layer rates, weights pruned, density."""
        return self._core.history

    @property
    def mask_version(self) -> int:
        """A counter that changes whenever the masks may have changed (used by the hook)."""
        return self._mask_version

    # -- moving weights ----------------------------------------------------------------------

    def parameters(self, module: nn.Module) -> list[nn.Parameter]:
        """Return ``module``'s prunable parameters (the very objects, in the pruner's order).

        Raises:
            ValueError: When the module does not have the pruner's parameters and shapes, or
                they are on the meta device (no values).
        """
        parameters = resolve_parameters(module, self._names, self._shapes)
        _check_materialized(self._names, parameters)
        return parameters

    def weights(self, module: nn.Module) -> list[np.ndarray]:
        """Copy ``module``'s prunable weights into NumPy arrays (half precision as float32)."""
        return [to_numpy(parameter) for parameter in self.parameters(module)]

    def mask_tensors(self, parameters: Sequence[torch.Tensor]) -> MaskTensors:
        """Masks as tensors on each parameter's device and dtype; ``None`` where nothing is pruned.

        Results are cached until the masks change.
        """
        if self._cache_version != self._mask_version:
            self._mask_cache.clear()
            self._cache_version = self._mask_version
        result: MaskTensors = []
        masks = None
        for index, parameter in enumerate(parameters):
            key = (index, parameter.device, parameter.dtype)
            if key not in self._mask_cache:
                masks = self._core.masks if masks is None else masks
                self._mask_cache[key] = mask_tensors([masks[index]], [parameter])[0]
            result.append(self._mask_cache[key])
        return result

    # -- the core's workflow, taking modules -------------------------------------------------

    def set_pretrained_weights(self, module: nn.Module) -> None:
        """Record ``module``'s current (trained) weights for the strategies that need them.

        Example:
            >>> from torch import nn
            >>> net = nn.Linear(4, 4)
            >>> pruner = LotteryTicketPruner(net)
            >>> pruner.set_pretrained_weights(net)
            >>> pruner.calc_prune_mask(net, 0.25, "large_final")
            >>> int((~pruner.masks[0]).sum())
            4
        """
        weights = self.weights(module)
        _check_finite(self._names, weights, "module")
        self._core.set_pretrained_weights(weights)

    def calc_prune_mask(
        self,
        module: nn.Module,
        prune_percentage: float,
        prune_strategy: Any,
        layer_rates: Mapping[str | int, float] | None = None,
        min_layer_density: float = 0.0,
    ) -> None:
        """Prune ``prune_percentage`` of the still-unpruned weights; the module is not changed.

        Args:
            module: The model whose current weights are scored (``smallest_weights``; its shapes
                are checked for every strategy).
            prune_percentage: Fraction of the remaining weights to prune now, ``0 <= p < 1``.
            prune_strategy: A strategy name from ``ltp_core.STRATEGIES`` (or a Strategy).
            layer_rates: Optional ``{name_or_index: multiplier}`` of the fraction per layer.
            min_layer_density: Share of each layer's weights that must survive (see
                :func:`ltp_core.compute_masks`).

        Call :meth:`apply_pruning` or :meth:`rewind`, or use :class:`ltp_torch.PrunerHook`, to
        write the masks into a module.
        """
        weights = self.weights(module)
        _check_finite(self._names, weights, "module")
        self._core.calc_prune_mask(
            weights,
            prune_percentage,
            prune_strategy,
            layer_rates=layer_rates,
            min_layer_density=min_layer_density,
        )
        self._mask_version += 1
        self._check_parametrized_masks()
        strategy = resolve_strategy(prune_strategy)
        if not strategy.criterion.random and any(self._parametrizations):
            check_parametrized_scores(
                self._names,
                self._parametrizations,
                self._weight_norm_dims,
                strategy.scope,
                scale_free=_scale_free(strategy),
                stacklevel=3,
            )

    def _check_parametrized_masks(self) -> None:
        if self._weight_norm_dims:
            check_weight_norm_rows(
                self._names, self._core.masks, self._weight_norm_dims, stacklevel=4
            )

    def apply_pruning(self, module: nn.Module) -> None:
        """Zero the pruned weights of ``module`` in place."""
        parameters = self.parameters(module)
        apply_masks_(parameters, self.mask_tensors(parameters))

    def set_masks(self, masks: Sequence[Any]) -> None:
        """Replace the masks (bool arrays, ``True`` = kept), e.g. read from a portable mask file.

        Raises:
            TypeError, ValueError: Masks of the wrong dtype, count or shapes.
        """
        self._core.set_masks(masks)
        self._mask_version += 1
        self._check_parametrized_masks()

    def save_masks(self, path: str | os.PathLike[str]) -> None:
        """Write the masks to a portable mask file (``.npz``), atomically.

        The file is the core's format (:func:`ltp_core.io.save_masks`): bit-packed masks plus the
        parameter names, the ``layout`` tag ``"torch"`` and each array's kind, so the Keras
        adapter can transpose Linear and convolution masks into its own layout.

        Example:
            >>> import os, tempfile
            >>> from torch import nn
            >>> net = nn.Sequential(nn.Linear(4, 3))
            >>> pruner = LotteryTicketPruner(net)
            >>> pruner.calc_prune_mask(net, 0.5, "smallest_weights")
            >>> path = os.path.join(tempfile.mkdtemp(), "masks.npz")
            >>> pruner.save_masks(path)
            >>> other = LotteryTicketPruner(nn.Sequential(nn.Linear(4, 3)))
            >>> other.load_masks(path)
            >>> bool((other.masks[0] == pruner.masks[0]).all())
            True
        """
        core_io.save_masks(
            path,
            self._core.masks,
            self._names,
            framework="torch",
            layout=_LAYOUT,
            kinds=list(self._kinds),
            level=self.level,
            cumulative_pruning_rate=self.cumulative_pruning_rate,
        )

    def load_masks(self, path: str | os.PathLike[str], *, layout: str | None = None) -> None:
        """Replace the masks with those of a portable mask or state file.

        Masks are matched to this pruner's parameters by order and shape (names are recorded but
        differ between frameworks). A file written in Keras layout (Dense kernels ``(in, out)``,
        convolution kernels ``(*kernel, in, out)``) is permuted into torch layout first. The
        level and history are kept; the module is not changed (call :meth:`apply_pruning` or
        :meth:`rewind`, or let a :class:`~ltp_torch.PrunerHook` pick the masks up).

        Args:
            path: A file written by :meth:`save_masks`, the Keras adapter, ``ltp mask`` or
                :func:`ltp_core.io.save_masks`.
            layout: ``"torch"`` or ``"keras"``: the layout of a file that does not record one
                (default: this pruner's, ``"torch"``). A file that records its layout must
                agree.

        Raises:
            FileNotFoundError: No such file.
            ValueError: A corrupt, truncated or foreign file, or masks that do not match this
                pruner (the message lists every difference). Nothing changes then.
        """
        masks, saved_layout = load_masks_for(
            path, self._names, self._shapes, self._kinds, _LAYOUT, layout
        )
        self.set_masks(masks)
        logger.info("Loaded masks from %s (%s layout)", os.fspath(path), saved_layout)

    def reset_masks(self) -> None:
        """Keep every weight again (level 0); weights already zeroed stay as they are."""
        self._core.reset_masks()
        self._mask_version += 1

    def set_rewind_weights(self, module: nn.Module) -> None:
        """Make ``module``'s current weights the rewind point (late resetting).

        Prunable weights go to the core; every other parameter and buffer is copied too, so
        :meth:`rewind` restores the whole module. See :class:`ltp_torch.RewindPointHook` to do
        this after a given optimizer step.
        """
        module = unwrap_module(module)
        weights = self.weights(module)
        rest = snapshot(module, exclude=set(self._names))
        self._core.set_rewind_weights(weights)
        self._rewind_state = rest

    def rewind(self, module: nn.Module) -> None:
        """Reset ``module`` in place to the rewind weights (the initial ones unless
        :meth:`set_rewind_weights` was called), with the pruned weights zeroed.

        Non-prunable parameters and buffers (biases, batch-norm statistics) are reset too.
        Parameter identity is kept, so an existing optimizer still trains the module.
        Parameters and buffers added to the module after the rewind point was recorded (a new
        head) have no rewind value: they keep their current values, with a warning naming them.
        """
        module = unwrap_module(module)
        parameters = self.parameters(module)
        rest = self._initial_state if self._rewind_state is None else self._rewind_state
        restore_snapshot(module, rest)
        known = set(rest).union(self._names)
        unknown = [
            name
            for name, _ in [*module.named_parameters(), *module.named_buffers()]
            if name not in known
        ]
        if unknown:
            message = (
                f"rewind: {len(unknown)} parameters/buffers of the module were not there when "
                f"the rewind point was recorded and keep their current values: "
                f"{unknown[:8]}{' ...' if len(unknown) > 8 else ''}. Create the pruner once the "
                "model is complete, or record a rewind point that includes them with "
                f"set_rewind_weights(module). Received: module of type {type(module).__name__}"
            )
            logger.warning(message)
            warnings.warn(message, UserWarning, stacklevel=2)
        write_into(parameters, self._core.rewind_weights)
        apply_masks_(parameters, self.mask_tensors(parameters))

    # -- checkpoints -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to restore this pruner, as tensors and plain Python values.

        The result can be saved with ``torch.save`` and read with
        ``torch.load(path, weights_only=True)``.
        """
        return {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "names": list(self._names),
            "shapes": [list(shape) for shape in self._shapes],
            "core": to_torch_tree(self._core.state_dict()),
            "initial_state": dict(self._initial_state),
            "rewind_state": None if self._rewind_state is None else dict(self._rewind_state),
        }

    def check_state_dict(self, state: Any) -> None:
        """Check that ``state`` is a :meth:`state_dict` of a pruner with these parameters.

        Every field is checked (the core pruner's too), so :meth:`load_state_dict` and
        :func:`~ltp_torch.load_checkpoint` cannot fail halfway.

        Raises:
            ValueError: When ``state`` is not a pruner state, has another version, is
                malformed (the message names the field), or belongs to another model (the
                message lists both parameter lists).
        """
        self._validated_state(state)

    def _validated_state(
        self, state: Any
    ) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        found = state.get("format") if isinstance(state, Mapping) else None
        if found != _FORMAT:
            raise ValueError(
                "Expected a state from ltp_torch.LotteryTicketPruner.state_dict(). "
                f"Received: state with format={found!r}"
            )
        if state.get("version") != _FORMAT_VERSION:
            raise ValueError(
                f"Unsupported pruner state version (this version reads {_FORMAT_VERSION}). "
                f"Received: version={state.get('version')!r}"
            )
        try:
            names = [str(n) for n in state["names"]]
            shapes = [tuple(int(d) for d in shape) for shape in state["shapes"]]
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"The pruner state lacks valid names and shapes ({error!r}). "
                f"Received: state with keys {sorted(map(str, state))}"
            ) from error
        if names != self._names or shapes != self._shapes:
            raise ValueError(
                "The saved pruner state was made for other parameters: expected "
                f"{list(zip(self._names, self._shapes, strict=True))}. "
                f"Received: {list(zip(names, shapes, strict=False))}"
            )
        if "core" not in state:
            raise ValueError(
                f"The pruner state lacks its 'core' entry. "
                f"Received: state with keys {sorted(map(str, state))}"
            )
        core_state = self._core.check_state_dict(to_numpy_tree(state["core"]))
        initial = _tensor_dict(state.get("initial_state"), "initial_state", self._initial_state)
        rewind = state.get("rewind_state")
        rewind_state = (
            None if rewind is None else _tensor_dict(rewind, "rewind_state", self._initial_state)
        )
        return core_state, initial, rewind_state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the parameter names and shapes must match this pruner.

        Everything is validated before anything changes: a call that raises leaves the pruner
        as it was.

        Raises:
            ValueError: When ``state`` is not a pruner state, is malformed, or belongs to
                another model.
        """
        core_state, initial, rewind_state = self._validated_state(state)
        self._core._assign_state(core_state)  # validated above: cannot fail halfway
        self._initial_state = initial
        self._rewind_state = rewind_state
        self._mask_version += 1
        self._check_parametrized_masks()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self._names)} prunable parameters, level={self.level}, "
            f"cumulative_pruning_rate={self.cumulative_pruning_rate:.4f})"
        )


def _tensor_dict(
    value: Any, key: str, reference: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Check a saved ``{name: tensor}`` snapshot against this pruner's own and copy it."""
    if not isinstance(value, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in value.values()
    ):
        raise ValueError(
            f"The pruner state's {key!r} must map parameter and buffer names to tensors. "
            f"Received: {key} of type {type(value).__name__}"
        )
    problems = [
        f"'{name}' has shape {tuple(value[name].shape)}, expected {tuple(tensor.shape)}"
        for name, tensor in reference.items()
        if str(name) in value and value[str(name)].shape != tensor.shape
    ]
    problems += [f"'{name}' missing" for name in reference if str(name) not in value]
    problems += [f"unexpected '{name}'" for name in value if name not in reference]
    if problems:
        raise ValueError(
            f"The pruner state's {key!r} does not fit this model: {'; '.join(problems)}. "
            f"Received: {len(value)} tensors"
        )
    return {str(k): v.detach().to("cpu", copy=True) for k, v in value.items()}
