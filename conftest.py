"""Doctest collection of optional integrations: skipped when their package is not installed.

``pytest --doctest-modules src/ltp_torch`` imports every module; the trainer integrations import
their trainer at module level (they exist to be used with it), so without the package they are
left out of collection instead of failing it.
"""

from __future__ import annotations

import importlib.util

_OPTIONAL = {
    "src/ltp_torch/lightning.py": ("lightning",),
    "src/ltp_torch/hf.py": ("transformers", "accelerate"),
}

collect_ignore = [
    path
    for path, packages in _OPTIONAL.items()
    if any(importlib.util.find_spec(name) is None for name in packages)
]
