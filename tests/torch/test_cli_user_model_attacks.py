"""``ltp imp --model`` on a user model the default selection barely covers."""

from __future__ import annotations

import logging
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ltp_core.cli import main

MODULE = textwrap.dedent(
    """
    import math
    import torch
    from torch import nn

    class Scaled(nn.Module):
        def __init__(self, features, num_classes):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(4000))  # a per-channel scale: never pruned
            self.fc = nn.Linear(features, num_classes)

        def forward(self, x):
            return self.fc(x.flatten(1)) * self.scale[0]

    def scaled(input_shape, num_classes):
        return Scaled(math.prod(input_shape), num_classes)
    """
)


def test_low_coverage_is_logged_once_per_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "h10_scaled_nets.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.random((60, 5)).astype(np.float32)
    y = np.arange(60) % 2
    np.savez(tmp_path / "data.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    argv = ["imp", "--model", "h10_scaled_nets:scaled", "--dataset", "data.npz", "--levels", "2"]
    argv += ["--iterations", "4", "--eval-every", "2", "--batch-size", "8", "--quiet"]
    try:
        with caplog.at_level(logging.WARNING):
            code = main([*argv, "--no-plots", "--out", "run"])
    finally:
        sys.modules.pop("h10_scaled_nets", None)
    assert code == 0
    assert caplog.text.count("covers only") == 1
