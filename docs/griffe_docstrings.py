"""Griffe extension used by the docs build: adapt the project's docstrings to mkdocstrings.

The source docstrings follow the project's style (Google style with a singular ``Example:``
section and Sphinx roles such as ``:class:`~ltp_core.Strategy```). mkdocstrings' Google parser
only recognizes ``Examples:`` as an examples section (others render as Markdown admonitions,
which turns ``>>>`` prompts into block quotes), and it does not know Sphinx roles. This extension
rewrites both, in memory, while the API pages are generated; the source files are not touched.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE_HEADER = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)
_SPHINX_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|obj|exc):`(~?)([^`]+)`")


def _role_to_code(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    name = target.rsplit(".", 1)[-1] if short else target
    return f"`{name}`"


def rewrite(text: str) -> str:
    """Return ``text`` with ``Example:`` headers renamed and Sphinx roles turned into code.

    Example:
        >>> rewrite("Run.\\n\\nExample:\\n    >>> 1\\n")
        'Run.\\n\\nExamples:\\n    >>> 1\\n'
        >>> rewrite("See :class:`~ltp_core.Strategy` and :func:`ltp_core.compute_masks`.")
        'See `Strategy` and `ltp_core.compute_masks`.'
    """
    return _SPHINX_ROLE.sub(_role_to_code, _EXAMPLE_HEADER.sub(r"\1Examples:", text))


class DocstringStyle(griffe.Extension):
    """Rewrite every docstring once the object tree is complete."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        # The top-level package itself is not passed to ``on_object``.
        self.on_object(obj=pkg)
