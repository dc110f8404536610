"""The built wheel declares version ranges a GPU environment can satisfy, never this CI's pins.

``nox -s build`` runs this file on the wheel it built (``LTP_WHEEL``); otherwise the test builds a
wheel itself from a copy of the sources (``python -m build --wheel --no-isolation``: no network).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def metadata(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """The wheel's METADATA headers (each with all its values)."""
    given = os.environ.get("LTP_WHEEL")
    if given:
        wheel = Path(given)
    else:
        pytest.importorskip("build")
        pytest.importorskip("setuptools")
        source = tmp_path_factory.mktemp("source")
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (ROOT / name).exists():
                shutil.copy(ROOT / name, source / name)
        shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info"))
        out = tmp_path_factory.mktemp("dist")
        subprocess.run(
            [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)],
            cwd=source,
            check=True,
            capture_output=True,
            timeout=300,
        )
        (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        message = Parser().parsestr(archive.read(name).decode())
    headers: dict[str, list[str]] = {}
    for key, value in message.items():
        headers.setdefault(key, []).append(value)
    return headers


def requirement(line: str) -> tuple[str, str, str]:
    """``(name, version spec, marker)`` of one ``Requires-Dist`` line."""
    spec, _, marker = line.partition(";")
    match = re.match(r"\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*\(?([^)]*)\)?", spec)
    assert match, line
    return match.group(1).lower(), match.group(3).replace(" ", ""), marker.strip()


def test_requirements_are_ranges_not_pins(metadata: dict[str, list[str]]) -> None:
    requirements = [requirement(line) for line in metadata["Requires-Dist"]]
    assert requirements
    for name, spec, marker in requirements:
        assert "==" not in spec and "===" not in spec, f"{name} is pinned: {spec} ({marker})"
        assert "<" not in spec, f"{name} has an upper bound: {spec}"
        assert name != "tensorflow-cpu", "CPU-only TensorFlow would shadow a GPU install"
    by_extra = {
        (name, re.search(r"extra\s*==\s*['\"]([^'\"]+)", marker or "") or None): spec
        for name, spec, marker in requirements
    }
    specs = {
        (name, extra.group(1) if extra else None): spec for (name, extra), spec in by_extra.items()
    }
    assert specs[("numpy", None)].startswith(">=")
    assert specs[("torch", "torch")] == ">=2.1"
    assert specs[("keras", "keras")] == ">=3.0"
    assert specs[("tensorflow", "tensorflow")].startswith(">=")


def test_python_and_extras(metadata: dict[str, list[str]]) -> None:
    assert metadata["Requires-Python"] == [">=3.10"]
    assert metadata.get("License-Expression") == ["MIT"]
    extras = set(metadata["Provides-Extra"])
    assert {"keras", "tensorflow", "torch", "jax", "plot", "progress", "data"} <= extras
