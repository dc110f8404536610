"""Framework-free lottery-ticket experiments: IMP with controls, the one-shot table, results.

The loops talk to frameworks through :class:`~ltp_core.experiment.backend.TrainingBackend`
(implemented by ``ltp_torch.experiment`` and ``ltp_keras.experiment``).
"""

from __future__ import annotations

from .backend import MODELS, EvalPoint, TrainingBackend, TrainOutcome, TrainSettings, load_backend
from .config import CONTROLS, ImpConfig, OneShotConfig
from .imp import layer_rates_for, random_masks_like, run_imp
from .models import MODEL_SPECS, ModelSpec, model_spec
from .oneshot import run_oneshot
from .results import ResultStore, RunRecord, load_results, summarize, summary_table

__all__ = [
    "CONTROLS",
    "MODELS",
    "MODEL_SPECS",
    "EvalPoint",
    "ImpConfig",
    "ModelSpec",
    "OneShotConfig",
    "ResultStore",
    "RunRecord",
    "TrainOutcome",
    "TrainSettings",
    "TrainingBackend",
    "layer_rates_for",
    "load_backend",
    "load_results",
    "model_spec",
    "random_masks_like",
    "run_imp",
    "run_oneshot",
    "summarize",
    "summary_table",
]
