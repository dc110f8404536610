"""Every public name in the docs' API maps exists (docs/migration.md, docs/guides/checkpoints.md).

The tables are parsed as a reader sees them: the ``now`` column of the migration guide's API map
(names of ``ltp_keras`` unless qualified; where it says "same", the old name in the first
column) and each framework's column of the checkpoint guide's API table. A code span is checked
when it names something of this package: ``ltp_core.x``, ``ltp_keras.Y.z``, ``pruner.method``
(on that column's ``LotteryTicketPruner``) or a bare name of that column's package or pruner. A
framework's names are skipped only if the framework is not installed.
"""

from __future__ import annotations

import builtins
import importlib
import re
import typing
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ltp_core", "ltp_keras", "ltp_torch")
FRAMEWORKS = {"keras", "tensorflow", "torch", "jax"}
# file -> package of unqualified names in columns that do not name one
PAGES = {"docs/migration.md": "ltp_keras", "docs/guides/checkpoints.md": None}
IDENTIFIER_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def documented_names(page: str, default: str | None) -> list[tuple[str, str, str]]:
    """``(package, code span, table row)`` for every checked span of the page's API tables."""
    lines = (ROOT / page).read_text().splitlines()
    found = []
    for i, line in enumerate(lines[:-1]):
        if not (line.startswith("|") and re.fullmatch(r"\|[-:| ]+\|", lines[i + 1].strip())):
            continue
        header = _cells(line)
        columns: dict[int, str] = {}
        for index, title in enumerate(header):
            named = [p for p in PACKAGES if f"`{p}`" in title]
            if named:
                columns[index] = named[0]
            elif title == "now" and default:
                columns[index] = default
        row_index = i + 2
        while columns and row_index < len(lines) and lines[row_index].startswith("|"):
            row = lines[row_index]
            cells = _cells(row)
            for index, cell in enumerate(cells):
                if index in columns:
                    for span in re.findall(r"`([^`]+)`", cell):
                        found.append((columns[index], span, row))
                    if cell.startswith("same") and header[0] == "0.8.1":
                        # "same": the old name (first column) must still exist
                        for span in re.findall(r"`([^`]+)`", cells[0]):
                            found.append((columns[index], span, row))
            row_index += 1
    return found


def _subject(span: str) -> str | None:
    """The dotted name a span refers to (``pruner.save(path)`` -> ``pruner.save``), if any."""
    name = span.split("(", 1)[0].strip()
    if not IDENTIFIER_PATH.fullmatch(name):
        return None
    return name


def _plain_word(name: str) -> bool:
    """Bare words that are not names of this package: Python's builtins, suffixes, the command."""
    return "." not in name and (hasattr(builtins, name) or name.startswith("_") or name == "ltp")


def _attribute(owner: Any, name: str) -> Any:
    """``getattr`` that follows a property to the class its getter returns."""
    if isinstance(owner, type):
        for klass in owner.__mro__:
            if name in vars(klass):
                member = vars(klass)[name]
                if isinstance(member, property) and member.fget is not None:
                    returned = typing.get_type_hints(member.fget).get("return")
                    return returned if isinstance(returned, type) else member
                return getattr(owner, name)
    return getattr(owner, name)


def resolve(package: str, name: str) -> Any:
    """The object ``name`` denotes in the context of ``package``; raises if it does not exist."""
    parts = name.split(".")
    if parts[0] in PACKAGES:
        for cut in range(len(parts), 0, -1):
            try:
                target: Any = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError as error:
                if error.name and error.name.split(".")[0] in FRAMEWORKS:
                    raise
                continue
            for attribute in parts[cut:]:
                target = _attribute(target, attribute)
            return target
        raise ModuleNotFoundError(name)
    module = importlib.import_module(package)
    pruner_class = module.LotteryTicketPruner
    if parts[0] == "pruner":
        target = pruner_class
        for attribute in parts[1:]:
            target = _attribute(target, attribute)
        return target
    if len(parts) == 1:
        if hasattr(module, name):
            return getattr(module, name)
        strategies = importlib.import_module("ltp_core").STRATEGIES
        if name in strategies:  # a strategy name, e.g. in "strategies `random`, ..."
            return strategies[name]
        return _attribute(pruner_class, name)
    raise LookupError(f"not a name of this package: {name}")


CASES = [
    (page, package, span, row)
    for page, default in PAGES.items()
    for package, span, row in documented_names(page, default)
    if (subject := _subject(span)) is not None
    and (subject.split(".")[0] in (*PACKAGES, "pruner") or "." not in subject)
    and not _plain_word(subject)
]


def test_the_api_tables_are_found() -> None:
    pages = {page for page, *_ in CASES}
    assert pages == set(PAGES)
    spans = {span for _, _, span, _ in CASES}
    assert "ltp_keras.save_checkpoint" in spans and "pruner.load_masks" in spans
    assert len(CASES) > 30


@pytest.mark.parametrize(
    ("page", "package", "span", "row"),
    CASES,
    ids=[f"{page.split('/')[-1]}:{package}:{span}" for page, package, span, _ in CASES],
)
def test_documented_name_exists(page: str, package: str, span: str, row: str) -> None:
    subject = _subject(span)
    assert subject is not None
    try:
        resolve(package, subject)
    except ModuleNotFoundError as error:
        if error.name and error.name.split(".")[0] in FRAMEWORKS:
            pytest.skip(f"{error.name} is not installed")
        raise AssertionError(f"{page}: `{span}` does not exist ({error}); row: {row}") from error
    except (AttributeError, LookupError) as error:
        raise AssertionError(f"{page}: `{span}` does not exist ({error}); row: {row}") from error


def test_a_missing_name_fails() -> None:
    with pytest.raises(AttributeError):
        resolve("ltp_core", "ltp_core.no_such_function")
    with pytest.raises(AttributeError):
        resolve("ltp_core", "pruner.no_such_method")
    with pytest.raises(AttributeError):
        resolve("ltp_core", "no_such_name")
    assert (
        resolve("ltp_core", "pruner.save")
        is importlib.import_module("ltp_core").LotteryTicketPruner.save
    )
