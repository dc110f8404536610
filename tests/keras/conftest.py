"""Keras adapter tests: one backend per run (set KERAS_BACKEND before pytest starts)."""

from __future__ import annotations

import keras
import pytest


def pytest_report_header(config: pytest.Config) -> str:
    return f"keras {keras.__version__}, backend {keras.backend.backend()}"
