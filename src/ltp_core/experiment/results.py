"""Experiment results: records, the files they are saved in, and summary tables.

An output folder holds ``results.json`` (config, package versions, one record per
level/seed/arm), ``results.csv`` (the same records, flat) and ``table.md`` (mean +- std over
seeds). ``results.json`` is rewritten atomically after every finished run (the CSV and table at
least after every level), so a killed run leaves a consistent folder behind and can resume from
it.
"""

from __future__ import annotations

import csv
import hashlib
import io as _io
import json
import math
import os
import platform
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..io import FolderLock, atomic_write_bytes, lock_folder, remove_stale_temporaries

__all__ = [
    "RESULTS_FILE",
    "ResultStore",
    "RunRecord",
    "stalled_levels",
    "summarize",
    "summary_table",
]

RESULTS_FILE = "results.json"
RESULTS_VERSION = 1


@dataclass
class RunRecord:
    """One trained (or evaluated) network: an arm at a level for a seed.

    Built-in experiments fill the accuracy fields from their evaluations. Runs of the user's own
    training code (``find_ticket``) record what ``evaluate`` returned in ``metrics``; ``headline``
    names the one shown in tables and plots, and ``test_accuracy``/``final_test_accuracy`` hold
    its value (``val_accuracy`` is NaN and ``early_stop_iteration`` is the number of optimizer
    steps taken, as there is no early stopping).
    """

    seed: int
    level: int
    arm: str
    weights_remaining: float
    layer_density: list[float]
    test_accuracy: float
    val_accuracy: float
    early_stop_iteration: int
    final_test_accuracy: float
    train_seconds: float
    prune_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    headline: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """Inverse of ``asdict``."""
        return cls(**data)


class ResultStore:
    """Records of one experiment in ``out_dir``, loaded if they exist.

    Args:
        out_dir: Output folder (created), or ``None`` to keep the records in memory only.
        kind: Experiment kind (``"imp"`` or ``"oneshot"``).
        config: The experiment's configuration dict; an existing folder must hold the same.
        versions: Package versions to record.

    Raises:
        ValueError: ``out_dir`` holds results of a different experiment.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str] | None,
        kind: str,
        config: dict[str, Any],
        versions: dict[str, str],
    ) -> None:
        self.kind = kind
        self.config = json.loads(json.dumps(config))
        self.versions = dict(versions)
        self.records: list[RunRecord] = []
        self.seeds_info: dict[str, Any] = {}
        self.out_dir: Path | None = None if out_dir is None else Path(out_dir)
        self._lock: FolderLock | None = None
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # One run per folder at a time (a second one gets FolderInUseError), and only then are
        # the temporaries of runs killed mid-write removed, state/ included.
        self._lock = lock_folder(self.out_dir)
        remove_stale_temporaries(self.out_dir, recursive=True)
        path = self.out_dir / RESULTS_FILE
        if path.exists():
            existing = load_results(path)
            differing = _incompatible_keys(existing["config"], self.config)
            if existing["kind"] != kind or differing:
                self.close()
                changed = (
                    f"the model built by {self.config.get('model')} is not the one this "
                    "experiment started with (its layers, their settings or its tensors "
                    "changed), so its runs would mix two models; "
                    if "model_sha256" in differing
                    else ""
                )
                raise ValueError(
                    f"{path} holds results of a different experiment (differs in {differing}); "
                    f"{changed}"
                    f"pass another output folder (--out, out=) or delete this one to start "
                    f"over. Only levels and seeds may grow to extend a run. "
                    f"Received: out={os.fspath(self.out_dir)!r}"
                )
            self.records = [RunRecord.from_dict(r) for r in existing["records"]]

    def close(self) -> None:
        """Release the output folder for other processes (the records stay readable)."""
        if self._lock is not None:
            self._lock.release()

    def done(self, seed: int, level: int) -> bool:
        """Whether any run of ``level`` for ``seed`` is recorded."""
        return any(r.seed == seed and r.level == level for r in self.records)

    def has(self, seed: int, level: int, arm: str) -> bool:
        """Whether the run of ``arm`` at ``level`` for ``seed`` is recorded."""
        return any(r.seed == seed and r.level == level and r.arm == arm for r in self.records)

    def add(self, records: Iterable[RunRecord], *, tables: bool = True) -> None:
        """Append records and rewrite the results files atomically.

        Args:
            records: The new records.
            tables: Also rewrite ``results.csv`` and ``table.md`` (``results.json``, the
                source of truth, is always rewritten); :meth:`write` brings them up to date.
        """
        self.records.extend(records)
        self.write(tables=tables)

    def write(self, *, tables: bool = True) -> None:
        """Write ``results.json`` (and ``results.csv`` and ``table.md``); nothing in memory mode."""
        if self.out_dir is None:
            return
        document = {
            "format_version": RESULTS_VERSION,
            "kind": self.kind,
            "config": self.config,
            "versions": {**self.versions, "python": platform.python_version()},
            "records": [asdict(r) for r in self.records],
        }
        text = json.dumps(document, indent=2)
        atomic_write_bytes(self.out_dir / RESULTS_FILE, lambda f: f.write(text.encode()))
        if not tables:
            return
        csv_text = records_csv(self.records)
        atomic_write_bytes(self.out_dir / "results.csv", lambda f: f.write(csv_text.encode()))
        table = summary_table(self.records, self.kind)
        atomic_write_bytes(self.out_dir / "table.md", lambda f: f.write(table.encode()))


def data_identity(data: Any) -> dict[str, Any]:
    """What the results file records about the data: its source, and a user file's SHA-256."""
    identity: dict[str, Any] = {"data_source": data.source}
    if getattr(data, "sha256", None):
        identity["data_sha256"] = data.sha256
    return identity


def model_identity(model: str, backend: Any, data: Any, seed: int) -> dict[str, Any]:
    """What the results file records about a user's model: the SHA-256 of its structure.

    For a ``package.module:function`` reference whose backend can ``describe`` a model (layer
    types, their settings, tensor names and shapes), the model is built once (``seed``) and the
    description hashed, so that resuming after the factory's code changed the model is refused
    instead of mixing runs of two models in one table. Built-in models: nothing (their
    structure is fixed by name and package version).
    """
    from .models import is_model_reference

    describe = getattr(backend, "describe", None)
    if not is_model_reference(model) or describe is None:
        return {}
    built = backend.build(model, data.input_shape, data.num_classes, seed)
    digest = hashlib.sha256(str(describe(built)).encode("utf-8")).hexdigest()
    return {"model_sha256": digest}


_EXTENSIBLE = ("levels", "seeds")
_ADDED_LATER = ("model_sha256",)  # folders written before it existed resume without the check


def _incompatible_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The settings in which ``new`` is another experiment than ``old`` (``levels`` and
    ``seeds`` may grow to extend a run; a key added in a later version may be missing).

    Example:
        >>> _incompatible_keys({"levels": 2, "rate": 0.2}, {"levels": 3, "rate": 0.1})
        ['rate']
    """
    differing = []
    for key in sorted(set(old) | set(new)):
        if key in _ADDED_LATER and key not in old:
            continue
        if key in _EXTENSIBLE:
            if not isinstance(new.get(key), int) or new[key] < old.get(key, 0):
                differing.append(key)
        elif old.get(key) != new.get(key):
            differing.append(key)
    return differing


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``results.json`` (or the folder holding one).

    Raises:
        FileNotFoundError: Nothing there.
        ValueError: Not a results file of this package.
    """
    target = Path(path)
    if target.is_dir():
        target = target / RESULTS_FILE
    if not target.exists():
        raise FileNotFoundError(f"No {RESULTS_FILE} at {os.fspath(target)!r}")
    try:
        document = json.loads(target.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{target} is not valid JSON ({error}). Received: path={os.fspath(target)!r}"
        ) from error
    if not isinstance(document, dict) or "records" not in document or "kind" not in document:
        raise ValueError(
            f"{target} is not a lottery-tickets results file. Received: path={os.fspath(target)!r}"
        )
    problem = _results_problem(document)
    if problem is not None:
        raise ValueError(
            f"{target} is a malformed results file: {problem}. Received: path={os.fspath(target)!r}"
        )
    return document


def _value_fits(value: Any, annotation: str) -> bool:
    """Whether a JSON value fits a RunRecord field annotation (``int``, ``list[float]``...)."""
    if value is None:
        return "None" in annotation
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    base = annotation.split("|")[0].strip()
    checks = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": number,
        "str": isinstance(value, str),
        "list[float]": isinstance(value, list)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value),
    }
    if base in checks:
        return checks[base]
    if base.startswith("dict"):
        return isinstance(value, dict)
    return True  # a field type this check does not know: accept it


def _results_problem(document: dict[str, Any]) -> str | None:
    """What is wrong with a results document, or ``None``."""
    if not isinstance(document["kind"], str):
        return f"'kind' must be a string, not {document['kind']!r:.60}"
    if not isinstance(document.get("config", {}), dict):
        return "'config' must be an object"
    records = document["records"]
    if not isinstance(records, list):
        return f"'records' must be a list, not {type(records).__name__}"
    specs = {f.name: f for f in fields(RunRecord)}
    required = [
        name for name, f in specs.items() if f.default is MISSING and f.default_factory is MISSING
    ]
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            return f"records[{index}] must be an object, not {record!r:.60}"
        missing = [name for name in required if name not in record]
        unknown = sorted(str(key) for key in record if key not in specs)
        if missing or unknown:
            return f"records[{index}] lacks {missing} / has unknown fields {unknown}"
        for name, value in record.items():
            if not _value_fits(value, str(specs[name].type)):
                return (
                    f"records[{index}][{name!r}] must be of type {specs[name].type}, "
                    f"not {value!r:.60}"
                )
    return None


def records_csv(records: Sequence[RunRecord]) -> str:
    """Records as CSV text (per-layer densities joined with ``;``, user metrics as ``metric_*``)."""
    buffer = _io.StringIO()
    columns = [
        "seed",
        "level",
        "arm",
        "weights_remaining",
        "test_accuracy",
        "val_accuracy",
        "early_stop_iteration",
        "final_test_accuracy",
        "train_seconds",
        "prune_seconds",
        "layer_density",
    ]
    metric_names = list(dict.fromkeys(name for r in records for name in r.metrics))
    writer = csv.writer(buffer)
    writer.writerow(columns + [f"metric_{name}" for name in metric_names])
    for r in records:
        row = asdict(r)
        row["layer_density"] = ";".join(f"{d:.6f}" for d in r.layer_density)
        metrics = [r.metrics.get(name, "") for name in metric_names]
        writer.writerow([row[c] for c in columns] + metrics)
    return buffer.getvalue()


@dataclass(frozen=True)
class Summary:
    """Mean and standard deviation over seeds for one (group, arm)."""

    key: tuple[Any, ...]
    arm: str
    weights_remaining: float
    n: int
    test_mean: float
    test_std: float
    stop_mean: float
    stop_std: float
    extra_mean: dict[str, float]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def summarize(records: Sequence[RunRecord], group: Sequence[str] = ("level",)) -> list[Summary]:
    """Aggregate records by ``group`` fields and arm (mean +- sample std over seeds)."""
    buckets: dict[tuple[tuple[Any, ...], str], list[RunRecord]] = defaultdict(list)
    for r in records:
        key = tuple(asdict(r)[g] if g in asdict(r) else r.extra.get(g) for g in group)
        buckets[(key, r.arm)].append(r)
    result = []
    for (key, arm), items in sorted(buckets.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        test = _mean_std([r.test_accuracy for r in items])
        stop = _mean_std([float(r.early_stop_iteration) for r in items])
        extras: dict[str, list[float]] = defaultdict(list)
        for r in items:
            for name, value in r.extra.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    extras[name].append(float(value))
        result.append(
            Summary(
                key,
                arm,
                statistics.fmean(r.weights_remaining for r in items),
                len(items),
                test[0],
                test[1],
                stop[0],
                stop[1],
                {name: statistics.fmean(v) for name, v in extras.items()},
            )
        )
    return result


def _pm(mean: float, std: float, scale: float = 100.0, digits: int = 2) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def stalled_levels(records: Sequence[RunRecord]) -> set[int]:
    """IMP levels whose ticket kept as many weights as the level before, for some seed.

    Such a level pruned nothing (the fraction rounds to zero weights, or pruning stalled), so
    its row repeats the previous one; tables mark it.

    Example:
        >>> def rec(level, left):
        ...     return RunRecord(0, level, "ticket", left, [left], 0.9, 0.9, 10, 0.9, 1.0)
        >>> sorted(stalled_levels([rec(0, 1.0), rec(1, 0.8), rec(2, 0.8)]))
        [2]
    """
    remaining = {(r.seed, r.level): r.weights_remaining for r in records if r.arm == "ticket"}
    return {
        level
        for (seed, level), left in remaining.items()
        if level > 0 and (seed, level - 1) in remaining and left >= remaining[(seed, level - 1)]
    }


def _remaining_cell(level: int, remaining: float, stalled: set[int]) -> str:
    cell = f"{remaining * 100:.2f}%"
    return f"{cell} (nothing pruned)" if level in stalled else cell


def summary_table(records: Sequence[RunRecord], kind: str = "imp") -> str:
    """Markdown table of test accuracy (%) mean ± std per level (IMP) or per cell (one-shot).

    An IMP level that pruned nothing (see :func:`stalled_levels`) reads
    ``"80.20% (nothing pruned)"`` in its weights-remaining cell.
    """
    if kind == "oneshot":
        return _oneshot_table(records)
    stalled = stalled_levels(records)
    summaries = summarize(records)
    arms = sorted({s.arm for s in summaries}, key=lambda a: (a != "ticket", a))
    by_level: dict[int, dict[str, Summary]] = defaultdict(dict)
    for s in summaries:
        by_level[int(s.key[0])][s.arm] = s
    headline = next((r.headline for r in records if r.headline), None)
    if headline is not None:
        return _metric_table(by_level, arms, headline, stalled)
    header = [
        "level",
        "weights remaining",
        *[f"{a} test acc (%)" for a in arms],
        "ticket early-stop iteration",
        "seeds",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for level in sorted(by_level):
        row = by_level[level]
        first = next(iter(row.values()))
        ticket = row.get("ticket")
        cells = [
            str(level),
            _remaining_cell(level, first.weights_remaining, stalled),
            *[_pm(row[a].test_mean, row[a].test_std) if a in row else "-" for a in arms],
            _pm(ticket.stop_mean, ticket.stop_std, 1.0, 0) if ticket else "-",
            str(max(s.n for s in row.values())),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _metric_table(
    by_level: dict[int, dict[str, Summary]],
    arms: Sequence[str],
    headline: str,
    stalled: set[int],
) -> str:
    """The IMP table of ``find_ticket`` runs: the headline metric as ``evaluate`` returned it."""
    header = ["level", "weights remaining", *[f"{a} {headline}" for a in arms], "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for level in sorted(by_level):
        row = by_level[level]
        first = next(iter(row.values()))
        cells = [
            str(level),
            _remaining_cell(level, first.weights_remaining, stalled),
            *[_pm(row[a].test_mean, row[a].test_std, 1.0, 4) if a in row else "-" for a in arms],
            str(max(s.n for s in row.values())),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _oneshot_table(records: Sequence[RunRecord]) -> str:
    header = [
        "prune percentage",
        "dataset",
        "strategy",
        "untrained accuracy (%)",
        "trained accuracy (%)",
        "seeds",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    groups: dict[tuple[float, str, str], list[RunRecord]] = defaultdict(list)
    for r in records:
        target = float(r.extra.get("target_sparsity", 1 - r.weights_remaining))
        groups[(round(target, 6), str(r.extra.get("dataset", "")), r.arm)].append(r)
    for (pruned, dataset, strategy), items in sorted(groups.items()):
        untrained = _mean_std(
            [float(r.extra.get("untrained_test_accuracy", math.nan)) for r in items]
        )
        trained = _mean_std([r.test_accuracy for r in items])
        lines.append(
            f"| {pruned * 100:.2f}% | {dataset} | {strategy} | {_pm(*untrained)} | "
            f"{_pm(*trained)} | {len(items)} |"
        )
    return "\n".join(lines) + "\n"
