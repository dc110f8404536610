"""Developer tasks: ``nox`` runs lint, types and the full test suite (what CI runs).

Sessions run in the current environment (``pip install -e ".[dev]"`` first): the test
dependencies (TensorFlow, PyTorch, JAX) are gigabytes, so a fresh virtualenv per session would
make every run slow. ``nox -s build`` is the exception: it checks the sdist and wheel in a clean
virtualenv of its own.

Everything this file installs goes through ``constraints.txt`` (``-c``), the exact versions of this
project's CI and development machines (the CPU torch wheel among them); the package itself declares
only ranges (``pyproject.toml``, checked on the built wheel by ``tests/packaging``).

Lowest declared versions (``numpy>=1.24``, ``torch>=2.1``, ``keras>=3.0``, ``tensorflow>=2.16``)
are not installed by any session: PyPI's torch 2.1 for Linux is a multi-GB CUDA build, and the
test suite itself relies on NumPy 2 behaviour (hypothesis' float16 arrays, pickled bytes), so
only the versions in ``constraints.txt`` are tested; the ranges are checked on the wheel's
metadata.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "types", "tests", "docs"]
nox.options.error_on_missing_interpreters = False

ROOT = Path(__file__).parent
CONSTRAINTS = str(ROOT / "constraints.txt")
KERAS_BACKENDS = ["tensorflow", "torch", "jax"]
ENV = {"OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONHASHSEED": "0"}
# pytest exit code 5 means "no tests collected"; a backend-specific folder may be empty.
PYTEST_OK = [0, 5]


def pytest(session: nox.Session, *args: str, env: dict[str, str] | None = None) -> None:
    session.run(
        sys.executable,
        "-m",
        "pytest",
        *args,
        *session.posargs,
        env={**ENV, **(env or {})},
        success_codes=PYTEST_OK,
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.run(
        sys.executable,
        "-m",
        "ruff",
        "check",
        "src",
        "tests",
        "benchmarks",
        "examples",
        "noxfile.py",
    )
    session.run(
        sys.executable,
        "-m",
        "ruff",
        "format",
        "--check",
        "src",
        "tests",
        "benchmarks",
        "examples",
        "noxfile.py",
    )


@nox.session
def types(session: nox.Session) -> None:
    """mypy --strict on the framework-free core."""
    session.run(sys.executable, "-m", "mypy", "src/ltp_core")


@nox.session
def tests_core(session: nox.Session) -> None:
    """Core tests and the core's docstring examples."""
    pytest(session, "tests/core", "-q")
    pytest(session, "--doctest-modules", "src/ltp_core", "-q")


@nox.session
def tests_torch(session: nox.Session) -> None:
    """PyTorch adapter tests and its docstring examples."""
    pytest(session, "tests/torch", "-q")
    pytest(session, "--doctest-modules", "src/ltp_torch", "-q")


@nox.session
@nox.parametrize("backend", KERAS_BACKENDS)
def tests_keras(session: nox.Session, backend: str) -> None:
    """Keras adapter tests and docstring examples under one Keras backend."""
    pytest(session, "tests/keras", "-q", env={"KERAS_BACKEND": backend})
    pytest(session, "--doctest-modules", "src/ltp_keras", "-q", env={"KERAS_BACKEND": backend})


@nox.session
def tests(session: nox.Session) -> None:
    """Everything: core, torch, Keras on all three backends, examples and CLI."""
    others = [
        str(p.relative_to(ROOT))
        for p in sorted((ROOT / "tests").iterdir())
        if p.is_dir() and p.name not in {"keras", "__pycache__"}
    ]
    pytest(session, *others, "-q")
    pytest(session, "--doctest-modules", "src/ltp_core", "src/ltp_torch", "-q")
    for backend in KERAS_BACKENDS:
        env = {"KERAS_BACKEND": backend}
        pytest(session, "tests/keras", "-q", env=env)
        pytest(session, "--doctest-modules", "src/ltp_keras", "-q", env=env)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site into site/ (mkdocs, strict: any warning fails)."""
    session.run(
        sys.executable,
        "-m",
        "mkdocs",
        "build",
        "--strict",
        env={"NO_MKDOCS_2_WARNING": "1"},
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmark script (slow; on demand, never in CI)."""
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        session.run(sys.executable, str(script), env=ENV)


@nox.session
def build(session: nox.Session) -> None:
    """Build sdist and wheel, install the wheel in a clean virtualenv, import it."""
    with tempfile.TemporaryDirectory() as tmp:
        dist = Path(tmp) / "dist"
        session.run(sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT))
        wheels = list(dist.glob("*.whl"))
        sdists = list(dist.glob("*.tar.gz"))
        if len(wheels) != 1 or len(sdists) != 1:
            session.error(f"expected one wheel and one sdist, got {wheels + sdists}")
        venv = Path(tmp) / "venv"
        session.run(sys.executable, "-m", "venv", str(venv))
        python = str(venv / ("Scripts" if os.name == "nt" else "bin") / "python")
        session.run(python, "-m", "pip", "install", "-q", str(wheels[0]), "-c", CONSTRAINTS)
        session.run(
            python,
            "-c",
            "import importlib.util, ltp_core, numpy as np;"
            "p = ltp_core.LotteryTicketPruner([np.ones((4, 4))]);"
            "p.calc_prune_mask([np.ones((4, 4))], 0.5, 'smallest_weights');"
            "assert p.cumulative_pruning_rate == 0.5;"
            "assert all(importlib.util.find_spec(m) for m in ('ltp_keras', 'ltp_torch'));"
            "print('wheel OK', ltp_core.__version__)",
            external=True,
        )
        # The console script works with NumPy alone (frameworks are imported on demand).
        session.run(str(Path(python).parent / "ltp"), "--version", external=True)
        # The wheel declares ranges, not this CI's pins (tests/packaging reads its METADATA).
        pytest(session, "tests/packaging", "-q", env={"LTP_WHEEL": str(wheels[0])})
