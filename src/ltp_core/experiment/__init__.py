"""Framework-free lottery-ticket experiments: IMP with controls, the one-shot table, results.

One driver (:mod:`ltp_core.experiment.driver`) runs every IMP experiment through a
:class:`~ltp_core.experiment.driver.RunBackend`: the built-in models bind a
:class:`~ltp_core.experiment.backend.TrainingBackend` (``ltp_torch.experiment``,
``ltp_keras.experiment``) with :class:`~ltp_core.experiment.backend.BoundBackend`; ``find_ticket``
brings the user's model and training code.
"""

from __future__ import annotations

from .backend import (
    MODELS,
    BoundBackend,
    EvalPoint,
    TrainingBackend,
    TrainOutcome,
    TrainSettings,
    load_backend,
)
from .config import CONTROLS, ImpConfig, OneShotConfig
from .driver import ImpPlan, RunBackend, RunSpec, plan_level, run_levels
from .imp import check_layer_floors_for, layer_rates_for, random_masks_like, run_imp
from .models import MODEL_SPECS, ModelSpec, model_spec
from .oneshot import run_oneshot
from .results import ResultStore, RunRecord, load_results, summarize, summary_table

__all__ = [
    "CONTROLS",
    "MODELS",
    "MODEL_SPECS",
    "BoundBackend",
    "EvalPoint",
    "ImpConfig",
    "ImpPlan",
    "ModelSpec",
    "OneShotConfig",
    "ResultStore",
    "RunBackend",
    "RunRecord",
    "RunSpec",
    "TrainOutcome",
    "TrainSettings",
    "TrainingBackend",
    "check_layer_floors_for",
    "layer_rates_for",
    "load_backend",
    "load_results",
    "model_spec",
    "plan_level",
    "random_masks_like",
    "run_imp",
    "run_levels",
    "run_oneshot",
    "summarize",
    "summary_table",
]
