"""lottery-tickets core: framework-free lottery ticket pruning on lists of NumPy arrays.

Example:
    >>> import numpy as np
    >>> from ltp_core import LotteryTicketPruner
    >>> rng = np.random.default_rng(0)
    >>> w0 = [rng.normal(size=(8, 4)), rng.normal(size=(4, 2))]
    >>> pruner = LotteryTicketPruner(w0)
    >>> trained = [w * 1.5 for w in w0]
    >>> pruner.set_pretrained_weights(trained)
    >>> pruner.calc_prune_mask(w0, 0.5, "large_final")
    >>> [int(m.sum()) for m in pruner.masks]
    [16, 4]
"""

from __future__ import annotations

from .compute import compute_masks, count_to_prune
from .io import load_masks, load_state, save_masks, save_state
from .masks import apply_masks, combine_masks, density, layer_densities, sparsity
from .notices import LayerCollapseWarning, LowCoverageWarning, NothingPrunedWarning
from .pruner import LotteryTicketPruner
from .report import SparsityReport, sparsity_report
from .schedule import (
    OLD_PACKAGE_CUMULATIVE_SPARSITIES,
    cumulative_sparsities,
    fraction_for_target_sparsity,
    fractions_for_cumulative_sparsities,
    old_package_fractions,
)
from .strategies import CRITERIA, STRATEGIES, Criterion, Strategy
from .summary import LeftOutTensor, PrunableTensor, PruningSummary, build_summary

__version__ = "0.1.0"

__all__ = [
    "CRITERIA",
    "OLD_PACKAGE_CUMULATIVE_SPARSITIES",
    "STRATEGIES",
    "Criterion",
    "LayerCollapseWarning",
    "LeftOutTensor",
    "LotteryTicketPruner",
    "LowCoverageWarning",
    "NothingPrunedWarning",
    "PrunableTensor",
    "PruningSummary",
    "SparsityReport",
    "Strategy",
    "__version__",
    "apply_masks",
    "build_summary",
    "combine_masks",
    "compute_masks",
    "count_to_prune",
    "cumulative_sparsities",
    "density",
    "fraction_for_target_sparsity",
    "fractions_for_cumulative_sparsities",
    "layer_densities",
    "load_masks",
    "load_state",
    "old_package_fractions",
    "save_masks",
    "save_state",
    "sparsity",
    "sparsity_report",
]
