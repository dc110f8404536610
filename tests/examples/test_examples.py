"""Smoke tests: every script in ``examples/`` runs on tiny data; the docs' ``>>>`` examples pass.

Each example runs in its own subprocess (as a user would run it), from a temporary working
directory so nothing is written into the repository, with ``LTP_EXAMPLE_SMOKE=1`` so that
examples with a smoke mode shrink their levels and epochs. Keras examples run under
``KERAS_BACKEND=tensorflow`` only; the adapter's own tests cover the other backends.
"""

from __future__ import annotations

import doctest
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
DOC_PAGES = sorted(p for p in (ROOT / "docs").rglob("*.md") if ">>> " in p.read_text())
TIMEOUT_S = 300


def _needs(script: Path) -> list[str]:
    text = script.read_text()
    modules = []
    for module in ("torch", "keras", "sklearn", "lightning", "transformers"):
        if f"import {module}" in text or f"from {module}" in text:
            modules.append(module)
    if "transformers.Trainer(" in text:
        modules.append("accelerate")  # the Hugging Face Trainer needs it
    if "ltp_torch" in text:
        modules.append("torch")
    if "ltp_keras" in text:
        modules.append("keras")
    if "load_dataset(" in text:
        modules.append("sklearn")  # the examples default to scikit-learn's digits
    return modules


def test_examples_are_found() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"numpy_quickstart.py", "keras_quickstart.py", "imp_python_api.py"} <= names


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script: Path, tmp_path: Path) -> None:
    for module in _needs(script):
        pytest.importorskip(module)
    env = {
        **os.environ,
        "LTP_EXAMPLE_SMOKE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONHASHSEED": "0",
        "MPLBACKEND": "Agg",
    }
    if "keras" in script.name or "keras" in _needs(script):
        env["KERAS_BACKEND"] = "tensorflow"
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, (
        f"{script.name} failed with exit code {result.returncode}\n"
        f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"
    )
    # Results go to stdout; TensorFlow's start-up messages are quieted by the examples themselves.
    assert result.stdout.strip(), f"{script.name} printed nothing on stdout"
    assert "cpu_feature_guard" not in result.stderr, result.stderr[-2000:]


def test_doc_pages_with_examples_are_found() -> None:
    assert any(p.name == "fractions.md" for p in DOC_PAGES)


@pytest.mark.parametrize(
    "page", DOC_PAGES, ids=[str(p.relative_to(ROOT / "docs")) for p in DOC_PAGES]
)
def test_doc_page_examples(page: Path) -> None:
    """The interactive (``>>>``) examples in the documentation produce the output shown."""
    result = doctest.testfile(
        str(page),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        verbose=False,
        report=False,
    )
    assert result.attempted > 0, page
    assert result.failed == 0, f"{result.failed} example(s) failed in {page}; run: " + (
        f"python -m doctest -o ELLIPSIS -o NORMALIZE_WHITESPACE {page}"
    )
