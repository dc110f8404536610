"""The PyTorch backend of the ``ltp`` experiments (``ltp imp --framework torch``).

:class:`TorchBackend` implements :class:`ltp_core.experiment.backend.TrainingBackend`: it builds the
experiment models (:mod:`ltp_torch.models`), moves weights in and out as NumPy arrays, and trains
with the pruned weights held at exactly zero by :class:`ltp_torch.PrunerHook` (the masks are
applied before the first step and after every optimizer step).

Training is deterministic on the CPU for given seeds: the model's initialization comes from the
``seed`` of :meth:`TorchBackend.build`, the batch order and dropout from ``settings.seed``, and
torch's global random state is left as it was. The loop is kept lean: the dataset is converted to
tensors once and cached, batches are gathered with ``index_select``, Adam and SGD use torch's fused
kernels where available, nothing synchronizes with Python between evaluations, and evaluation runs
without autograd in large batches.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from ltp_core.datasets import Dataset
from ltp_core.experiment.backend import (
    EvalPoint,
    LayerKind,
    ProgressFn,
    TrainOutcome,
    TrainSettings,
    check_batch_lengths,
    settings_differ_beyond_seed,
)
from ltp_torch.batched import ReplicasStoppedError
from ltp_torch.hook import PrunerHook
from ltp_torch.models import build_model
from ltp_torch.parameters import describe_selection, find_prunable_parameters, unwrap_module
from ltp_torch.pruner import LotteryTicketPruner

__all__ = ["TorchBackend", "resolve_device"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Tensors:
    """One dataset's splits as tensors on the training device (images NCHW)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device for ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    ``"auto"`` is the first CUDA GPU if torch sees one, else the CPU. Asking for a device this
    machine lacks is an error here, before any work starts, not a crash in the first step.

    Raises:
        TypeError: ``device`` is not a string or a ``torch.device``.
        ValueError: An unknown device, or one this machine lacks (CUDA, GPU index, MPS).

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
        >>> resolve_device("tpu")
        Traceback (most recent call last):
        ...
        ValueError: `device` must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'. Received: ...
    """
    if isinstance(device, torch.device):
        spec = str(device)
    elif isinstance(device, str):
        spec = device.strip()
    else:
        raise TypeError(f"`device` must be a string or a torch.device. Received: device={device!r}")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(spec)
    except (RuntimeError, ValueError):
        resolved = None
    if resolved is None or resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(
            "`device` must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'. "
            f"Received: device={device!r}"
        )
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            reason = (
                f"this torch {torch.__version__} is a CPU-only build"
                if torch.version.cuda is None
                else "torch sees no CUDA GPU (driver, CUDA_VISIBLE_DEVICES?)"
            )
            raise ValueError(
                f"CUDA is not available: {reason}. Use device='cpu' or 'auto'. "
                f"Received: device={device!r}"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(
                f"This machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1}). "
                f"Received: device={device!r}"
            )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            "MPS (Apple GPU) is not available on this machine. Use device='cpu' or 'auto'. "
            f"Received: device={device!r}"
        )
    if resolved.type == "cpu" and resolved.index is not None:
        resolved = torch.device("cpu")
    return resolved


class TorchBackend:
    """Builds, trains and evaluates the experiment models with PyTorch.

    Args:
        device: Where models live and train: ``"cpu"`` (the default), ``"auto"`` (CUDA if
            available, else the CPU), ``"cuda"``, ``"cuda:N"`` or ``"mps"``; see
            :func:`resolve_device`. Masks are computed by ``ltp_core`` from NumPy copies of the
            weights, so results differ between devices only by floating-point noise (and GPU
            runs are deterministic only up to cuDNN's algorithm choices).
        num_threads: Intra-op threads while training and evaluating (restored afterwards);
            ``None`` leaves torch's setting alone. The default ``1`` is fastest for these small
            models on a CPU shared with other work (measured: see ``docs/torch.md``).
        eval_batch_size: Examples per forward pass when evaluating.
        parallel_groups: For :meth:`train_batched` on a CPU: the replicas are split into this
            many stacked groups, each trained by its own Python thread (one torch thread each;
            torch releases the interpreter lock inside its kernels, so the groups run on separate
            cores). ``None`` (the default) uses one group per CPU core this process may run on,
            at most one per replica; ``1`` trains every replica in one program. Other devices
            always use one group.

    Example:
        >>> import numpy as np
        >>> from ltp_core.experiment.backend import TrainSettings
        >>> backend = TorchBackend()
        >>> net = backend.build("lenet300_100", (8, 8, 1), 10, seed=0)
        >>> backend.layer_names(net), backend.layer_kinds(net)
        (['1.weight', '3.weight', '5.weight'], ['dense', 'dense', 'output'])
        >>> masks = [np.abs(w) > 0.05 for w in backend.get_prunable(net)]
        >>> rng = np.random.default_rng(0)
        >>> x = rng.random((100, 8, 8, 1), dtype=np.float32)
        >>> y = rng.integers(0, 10, 100)
        >>> from ltp_core.datasets import Dataset
        >>> data = Dataset("toy", x, y, x, y, x, y, 10, tuple("0123456789"), "random")
        >>> outcome = backend.train(net, masks, data, TrainSettings(iterations=20, eval_every=10))
        >>> [e.iteration for e in outcome.evaluations]
        [10, 20]
        >>> bool(np.all(backend.get_prunable(net)[0][~masks[0]] == 0))
        True
    """

    name = "torch"

    def __init__(
        self,
        device: str | torch.device = "cpu",
        num_threads: int | None = 1,
        eval_batch_size: int = 2048,
        parallel_groups: int | None = None,
    ) -> None:
        self.device = resolve_device(device)
        if parallel_groups is not None and (
            isinstance(parallel_groups, bool)
            or not isinstance(parallel_groups, int)
            or parallel_groups < 1
        ):
            raise ValueError(
                "`parallel_groups` must be a positive integer or None. "
                f"Received: parallel_groups={parallel_groups!r}"
            )
        if num_threads is not None and (
            isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1
        ):
            raise ValueError(
                "`num_threads` must be a positive integer or None. "
                f"Received: num_threads={num_threads!r}"
            )
        if isinstance(eval_batch_size, bool) or not isinstance(eval_batch_size, int):
            raise TypeError(
                "`eval_batch_size` must be an integer. "
                f"Received: eval_batch_size={eval_batch_size!r}"
            )
        if eval_batch_size < 1:
            raise ValueError(
                f"`eval_batch_size` must be positive. Received: eval_batch_size={eval_batch_size!r}"
            )
        self.num_threads = num_threads
        self.eval_batch_size = eval_batch_size
        self.parallel_groups = parallel_groups
        self._warned: set[tuple[str, int, int]] = set()  # user models' wide heads, said once
        self._sequential_reasons: set[str] = set()
        self._cache: tuple[Dataset, _Tensors] | None = None

    # -- models and weights ------------------------------------------------------------------

    def build(
        self, model: str, input_shape: tuple[int, ...], num_classes: int, seed: int
    ) -> nn.Module:
        """A fresh model named in ``ltp_core.experiment.models.MODEL_SPECS``, seeded by ``seed``."""
        return build_model(model, input_shape, num_classes, seed, self._warned).to(self.device)

    def layer_names(self, model: nn.Module) -> list[str]:
        """Qualified names of the prunable weights (``ltp_torch``'s default selection)."""
        return [name for name, _ in find_prunable_parameters(model)]

    def layer_kinds(self, model: nn.Module) -> list[LayerKind]:
        """``"conv"`` for convolution weights (parametrized ones too), ``"dense"`` for the rest;
        the last dense one is ``"output"``."""
        selected, _ = describe_selection(unwrap_module(model))
        kinds: list[LayerKind] = [
            "conv" if info.role in ("conv", "conv_transpose") else "dense" for info in selected
        ]
        dense = [i for i, kind in enumerate(kinds) if kind == "dense"]
        if dense:
            kinds[dense[-1]] = "output"
        return kinds

    def get_prunable(self, model: nn.Module) -> list[np.ndarray]:
        """Copies of the prunable weights, in :meth:`layer_names` order."""
        return [_to_numpy(p) for _, p in find_prunable_parameters(model)]

    def set_prunable(self, model: nn.Module, weights: Sequence[np.ndarray]) -> None:
        """Write the prunable weights in place (optimizers holding the parameters still work)."""
        _write([p for _, p in find_prunable_parameters(model)], weights, argument_name="weights")

    def describe(self, model: nn.Module) -> str:
        """The model's structure (:func:`describe_model`), for ``results.json``."""
        return describe_model(model)

    def snapshot(self, model: nn.Module) -> list[np.ndarray]:
        """Copies of every parameter and buffer of the model, in ``state_dict`` order."""
        return [_to_numpy(t) for t in unwrap_module(model).state_dict().values()]

    def restore(self, model: nn.Module, snapshot: Sequence[np.ndarray]) -> None:
        """Write back a :meth:`snapshot` in place."""
        _write(list(unwrap_module(model).state_dict().values()), snapshot, "snapshot")

    # -- training ------------------------------------------------------------------------------

    def train(
        self,
        model: nn.Module,
        masks: Sequence[np.ndarray] | None,
        data: Dataset,
        settings: TrainSettings,
        progress: ProgressFn | None = None,
    ) -> TrainOutcome:
        """Train for ``settings.iterations`` steps with a fresh optimizer; see the module doc.

        Raises:
            ValueError: Unknown optimizer, a batch larger than the training data, or masks that
                do not match the prunable weights.
        """
        start = time.perf_counter()
        tensors = self._tensors(data)
        n_train = int(tensors.y_train.shape[0])
        _check_steps(settings, n_train)
        batch_size = int(settings.batch_size)
        optimizer = _make_optimizer(model, settings)
        hook = None
        if masks is not None:
            pruner = LotteryTicketPruner(model)
            pruner.set_masks(masks)
            hook = PrunerHook(pruner, model, optimizer)  # zeroes the pruned weights now

        evaluations: list[EvalPoint] = []
        captured: list[np.ndarray] | None = None
        order_rng = np.random.default_rng(settings.seed)
        x_train, y_train = tensors.x_train, tensors.y_train
        with self._threads(), _seeded(settings.seed, self.device):
            try:
                model.train()
                order = self._order(order_rng, n_train)
                cursor = 0
                for step in range(1, settings.iterations + 1):
                    if cursor + batch_size > n_train:
                        order, cursor = self._order(order_rng, n_train), 0
                    batch = order[cursor : cursor + batch_size]
                    cursor += batch_size
                    optimizer.zero_grad(set_to_none=True)
                    logits = model(x_train.index_select(0, batch))
                    functional.cross_entropy(logits, y_train.index_select(0, batch)).backward()
                    optimizer.step()
                    if step == settings.capture_at:
                        captured = self.snapshot(model)
                    if step % settings.eval_every == 0 or step == settings.iterations:
                        val_loss, val_acc = self._evaluate(model, tensors.x_val, tensors.y_val)
                        _, test_acc = self._evaluate(model, tensors.x_test, tensors.y_test)
                        evaluations.append(EvalPoint(step, val_loss, val_acc, test_acc))
                        if progress is not None:
                            progress(step, settings.iterations, {"val_acc": val_acc})
            finally:
                if hook is not None:
                    hook.remove()
        seconds = time.perf_counter() - start
        extra: dict[str, Any] = {
            "device": str(self.device),
            "threads": torch.get_num_threads() if self.num_threads is None else self.num_threads,
        }
        return TrainOutcome(evaluations, seconds, captured, extra)

    def train_batched(
        self,
        models: Sequence[nn.Module],
        masks: Sequence[Sequence[np.ndarray] | None],
        data: Dataset,
        settings: Sequence[TrainSettings],
        progress: Sequence[ProgressFn | None] | None = None,
    ) -> list[TrainOutcome] | None:
        """Train independent replicas of one architecture together (see :mod:`ltp_torch.batched`).

        Each model trains as :meth:`train` would train it alone (its own masks, data order from
        its ``settings.seed``, optimizer state, evaluations and ``capture_at`` snapshot), up to
        float32 rounding; the models are updated in place. Each outcome's ``seconds`` is the
        call's wall time divided by the number of models.

        Returns:
            One outcome per model, or ``None`` when these models cannot train together (an
            architecture that neither :func:`ltp_torch.batched.stackable` nor
            :func:`ltp_torch.functional_stack.functional_stack_reason` accepts, such as one with
            dropout, models of different shapes, or settings that differ in more than ``seed``
            and ``capture_at``; the reason is logged once): the caller then trains them one by
            one with :meth:`train`.

        Raises:
            ValueError: As :meth:`train`.
        """
        from ltp_torch.batched import stackable, train_stacked
        from ltp_torch.functional_stack import functional_stack_reason, replicas_reason

        count = check_batch_lengths(models, masks, settings)
        if count == 0:
            return []
        shapes = [
            [(name, tuple(t.shape), t.dtype) for name, t in m.state_dict().items()] for m in models
        ]
        types = [[type(module).__qualname__ for module in m.modules()] for m in models]
        reason = None
        if any(shape != shapes[0] for shape in shapes) or any(t != types[0] for t in types):
            reason = "the models differ in architecture"
        elif settings_differ_beyond_seed(settings):
            reason = "the runs' settings differ in more than seed and capture_at"
        if reason is not None:
            self._say_sequential(reason)
            return None
        first = settings[0]
        tensors = self._tensors(data)
        _check_steps(first, int(tensors.y_train.shape[0]))
        names = self.layer_names(models[0])
        for replica_masks in masks:
            if replica_masks is not None:
                LotteryTicketPruner(models[0]).set_masks(replica_masks)  # validates shapes
        reason = replicas_reason(models, names)  # frozen tensors, settings per replica...
        if reason is not None:
            self._say_sequential(reason)
            return None
        weights = [n for n, _ in models[0].named_parameters() if n.endswith("weight")]
        hand_built = (
            all(stackable(m) for m in models)
            and not any(len(list(m.buffers())) for m in models)
            and names == weights
        )
        prunable: list[str] | None = None
        if not hand_built:  # any other deterministic architecture: through torch.func.vmap
            example = tensors.x_train[: min(2, int(tensors.x_train.shape[0]))]
            reason = functional_stack_reason(models, names, example)
            if reason is not None:
                self._say_sequential(reason)
                return None
            prunable = names

        def evaluate(stack: Any, split: str) -> tuple[list[float], list[float]]:
            x, y = (
                (tensors.x_val, tensors.y_val)
                if split == "val"
                else (tensors.x_test, tensors.y_test)
            )
            return self._evaluate_stacked(stack, x, y, stack.replicas)

        callbacks = _serialized(list(progress) if progress is not None else [None] * count)
        groups = _split(count, self._group_count(count))

        stop = threading.Event()  # set when any group fails, so the others end at their next step

        def train_group(members: range) -> list[TrainOutcome]:
            if len(groups) > 1:  # one torch thread per group: the groups fill the cores
                torch.set_num_threads(1)
            return train_stacked(
                [models[i] for i in members],
                [masks[i] for i in members],
                tensors.x_train,
                tensors.y_train,
                evaluate,
                [settings[i] for i in members],
                _make_optimizer_for,
                self.snapshot,
                [callbacks[i] for i in members],
                stop,
                prunable,
            )

        start = time.perf_counter()
        with self._threads():
            if len(groups) == 1:
                outcomes = train_group(groups[0])
            else:
                outcomes = _run_groups(train_group, groups, stop)
        seconds = (time.perf_counter() - start) / count  # the groups ran at the same time
        threads = torch.get_num_threads() if self.num_threads is None else self.num_threads
        for outcome in outcomes:
            outcome.seconds = seconds
            outcome.extra.update(
                {
                    "device": str(self.device),
                    "threads": threads,
                    "batched_replicas": count,
                    "batched_groups": len(groups),
                }
            )
        return outcomes

    def _say_sequential(self, reason: str) -> None:
        """Log once per reason that a level's runs train one at a time."""
        if reason not in self._sequential_reasons:
            self._sequential_reasons.add(reason)
            logger.info("training the runs one at a time: %s", reason)

    def _group_count(self, replicas: int) -> int:
        """How many stacked groups train in parallel (see ``parallel_groups``)."""
        if self.device.type != "cpu":
            return 1
        wanted = self.parallel_groups if self.parallel_groups is not None else _usable_cores()
        return max(1, min(wanted, replicas))

    def evaluate(self, model: nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """``(mean cross-entropy, accuracy)`` on NHWC images ``x`` and labels ``y``.

        Returns ``(nan, nan)`` for empty data.
        """
        images, labels = _images(x, self.device), _labels(y, self.device)
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"`x` and `y` must have the same length. Received: len(x)={images.shape[0]}, "
                f"len(y)={labels.shape[0]}"
            )
        with self._threads():
            return self._evaluate(model, images, labels)

    def versions(self) -> dict[str, str]:
        """Versions of torch and NumPy, and the device trained on (recorded in results)."""
        return {"torch": torch.__version__, "numpy": np.__version__, "device": str(self.device)}

    # -- helpers -------------------------------------------------------------------------------

    def _order(self, rng: np.random.Generator, n: int) -> torch.Tensor:
        return torch.from_numpy(rng.permutation(n)).to(self.device)

    @torch.no_grad()
    def _evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        n = int(y.shape[0])
        if n == 0:
            return float("nan"), float("nan")
        was_training = model.training
        model.eval()
        loss = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for first in range(0, n, self.eval_batch_size):
            logits = model(x[first : first + self.eval_batch_size])
            labels = y[first : first + self.eval_batch_size]
            loss += functional.cross_entropy(logits, labels, reduction="sum").double()
            correct += (logits.argmax(dim=1) == labels).sum()
        model.train(was_training)
        return float(loss) / n, int(correct) / n

    @torch.no_grad()
    def _evaluate_stacked(
        self, stack: Any, x: torch.Tensor, y: torch.Tensor, replicas: int
    ) -> tuple[list[float], list[float]]:
        """Per-replica ``(losses, accuracies)`` of a :mod:`ltp_torch.batched` stack."""
        n = int(y.shape[0])
        if n == 0:
            return [float("nan")] * replicas, [float("nan")] * replicas
        loss = torch.zeros(replicas, dtype=torch.float64, device=self.device)
        correct = torch.zeros(replicas, dtype=torch.int64, device=self.device)
        for first in range(0, n, self.eval_batch_size):
            logits = stack.forward(x[first : first + self.eval_batch_size], shared=True)
            labels = y[first : first + self.eval_batch_size]
            losses = functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels.repeat(replicas), reduction="none"
            )
            loss += losses.reshape(replicas, -1).sum(dim=1).double()
            correct += (logits.argmax(dim=2) == labels).sum(dim=1)
        return (loss / n).tolist(), (correct.double() / n).tolist()

    def _tensors(self, data: Dataset) -> _Tensors:
        """The dataset as tensors on the device, converted once per dataset object."""
        if self._cache is not None and self._cache[0] is data:
            return self._cache[1]
        tensors = _Tensors(
            _images(data.x_train, self.device),
            _labels(data.y_train, self.device),
            _images(data.x_val, self.device),
            _labels(data.y_val, self.device),
            _images(data.x_test, self.device),
            _labels(data.y_test, self.device),
        )
        self._cache = (data, tensors)
        return tensors

    @contextlib.contextmanager
    def _threads(self) -> Iterator[None]:
        if self.num_threads is None:
            yield
            return
        previous = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous)


def _check_steps(settings: TrainSettings, n_train: int) -> None:
    """``ValueError`` unless the batch fits the training data and the step counts are positive."""
    if not 1 <= int(settings.batch_size) <= n_train:
        raise ValueError(
            f"`batch_size` must be between 1 and the number of training examples ({n_train}). "
            f"Received: batch_size={settings.batch_size!r}"
        )
    if settings.iterations < 1 or settings.eval_every < 1:
        raise ValueError(
            "`iterations` and `eval_every` must be positive. Received: "
            f"iterations={settings.iterations!r}, eval_every={settings.eval_every!r}"
        )


def describe_model(model: nn.Module) -> str:
    """The model's structure: its module tree with each layer's settings (``repr``) and every
    parameter and buffer's name, shape and dtype (hashed as ``model_sha256`` by ``ltp imp`` and
    ``find_ticket``, so that resuming after the model's code changed is refused).

    Example:
        >>> print(describe_model(nn.Sequential(nn.Linear(2, 3))))
        Sequential(
          (0): Linear(in_features=2, out_features=3, bias=True)
        )
        0.weight (3, 2) torch.float32
        0.bias (3,) torch.float32
    """
    module = unwrap_module(model)
    tensors = [
        f"{name} {tuple(tensor.shape)} {tensor.dtype}"
        for name, tensor in module.state_dict().items()
    ]
    return "\n".join([repr(module), *tensors])


def _usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        return max(1, len(affinity(0)))
    return max(1, os.cpu_count() or 1)


def _run_groups(
    train_group: Callable[[range], list[TrainOutcome]], groups: list[range], stop: threading.Event
) -> list[TrainOutcome]:
    """Train the groups in parallel threads; the first real failure stops them all and is raised.

    An interrupt of the waiting thread (Ctrl-C) stops the groups at their next step too.
    """
    with ThreadPoolExecutor(len(groups), thread_name_prefix="ltp-replicas") as pool:
        futures = [pool.submit(train_group, g) for g in groups]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
        finally:
            if not all(f.done() and f.exception() is None for f in futures):
                stop.set()
        wait(futures)
    failures = [e for f in futures if (e := f.exception()) is not None]
    real = [e for e in failures if not isinstance(e, ReplicasStoppedError)]
    if failures:
        raise (real or failures)[0]
    return [outcome for f in futures for outcome in f.result()]


def _split(count: int, groups: int) -> list[range]:
    """``range(count)`` in ``groups`` consecutive parts whose sizes differ by at most one."""
    bounds = [round(i * count / groups) for i in range(groups + 1)]
    return [range(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def _serialized(callbacks: list[ProgressFn | None]) -> list[ProgressFn | None]:
    """The progress callbacks, each behind one shared lock (groups report from threads)."""
    lock = threading.Lock()

    def locked(callback: ProgressFn) -> ProgressFn:
        def call(step: int, total: int, metrics: dict[str, float]) -> None:
            with lock:
                callback(step, total, metrics)

        return call

    return [None if c is None else locked(c) for c in callbacks]


def _images(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """NHWC NumPy images as a contiguous NCHW float32 tensor on ``device`` (flat data as is)."""
    array = np.asarray(x, dtype=np.float32)
    if array.ndim == 2:
        return torch.from_numpy(np.ascontiguousarray(array)).to(device)
    if array.ndim != 4:
        raise ValueError(
            "`x` must be images of shape (n, height, width, channels) or features (n, d). "
            f"Received: x.shape={array.shape}"
        )
    # clone with the format, not .contiguous(): one-channel images permuted from NHWC count as
    # contiguous with a channel stride of 1, which convolutions take for channels-last
    nchw = torch.from_numpy(array).permute(0, 3, 1, 2)
    return nchw.clone(memory_format=torch.contiguous_format).to(device)


def _labels(y: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.asarray(y, dtype=np.int64).reshape(-1)).to(device)


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", copy=True).numpy()


@torch.no_grad()
def _write(targets: list[torch.Tensor], values: Sequence[np.ndarray], argument_name: str) -> None:
    if len(values) != len(targets):
        raise ValueError(
            f"`{argument_name}` must hold {len(targets)} arrays, one per model tensor. "
            f"Received: {len(values)} arrays"
        )
    for index, (target, value) in enumerate(zip(targets, values, strict=True)):
        array = np.asarray(value)
        if tuple(array.shape) != tuple(target.shape):
            raise ValueError(
                f"`{argument_name}[{index}]` must have shape {tuple(target.shape)}. "
                f"Received: shape {array.shape}"
            )
        source = torch.from_numpy(np.asarray(array, order="C"))  # 0-d stays 0-d
        target.copy_(source.to(device=target.device, dtype=target.dtype))


def _make_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """A fresh Adam or SGD-with-momentum optimizer, fused where torch supports it."""
    return _make_optimizer_for(list(model.parameters()), settings)


def _make_optimizer_for(
    parameters: list[torch.Tensor], settings: TrainSettings
) -> torch.optim.Optimizer:
    """:func:`_make_optimizer` for a list of tensors (the stacked replicas)."""
    name = settings.optimizer
    if name not in ("adam", "sgd"):
        raise ValueError(f"`optimizer` must be 'adam' or 'sgd'. Received: optimizer={name!r}")
    try:
        if name == "adam":
            return torch.optim.Adam(parameters, lr=settings.learning_rate, fused=True)
        return torch.optim.SGD(
            parameters, lr=settings.learning_rate, momentum=settings.momentum, fused=True
        )
    except (RuntimeError, ValueError):  # no fused kernel for this device or dtype
        if name == "adam":
            return torch.optim.Adam(parameters, lr=settings.learning_rate)
        return torch.optim.SGD(parameters, lr=settings.learning_rate, momentum=settings.momentum)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's generator (dropout) for the block; the caller's random state is restored."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(int(seed))
        if device.type == "cuda":
            torch.cuda.manual_seed(int(seed))
        yield
