"""Training checkpoints: model, optimizer, pruner and rewind progress in one atomic file.

``save_checkpoint`` writes everything a pruned training run needs to continue, with
``torch.save`` into a temporary file next to the target, ``fsync`` and ``os.replace``
(:func:`ltp_core.io.atomic_write_bytes`): a crash or ``SIGKILL`` while saving leaves the previous
checkpoint intact. The file holds only tensors and plain Python values, so it loads with
``torch.load(path, weights_only=True)`` (no code runs on load).
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ltp_core.io import atomic_write_bytes
from ltp_torch.hook import check_optimizer
from ltp_torch.parameters import unwrap_module
from ltp_torch.pruner import LotteryTicketPruner
from ltp_torch.rewind import RewindPointHook

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "load_checkpoint", "save_checkpoint"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "ltp_torch.checkpoint"
CHECKPOINT_VERSION = 1

_LEAVES = (type(None), bool, int, float, str, torch.Tensor)


def _check_extra(value: Any, where: str = "extra") -> None:
    """Reject values that ``torch.load(weights_only=True)`` could not read back."""
    if isinstance(value, _LEAVES):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(
                    f"`extra` dict keys must be str or int so the checkpoint loads with "
                    f"weights_only=True. Received: key {key!r} in {where}"
                )
            _check_extra(item, f"{where}[{key!r}]")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_extra(item, f"{where}[{index}]")
        return
    raise TypeError(
        "`extra` may hold only tensors, numbers, strings, None and lists/tuples/dicts of them, "
        f"so the checkpoint loads with weights_only=True. Received: {where} of type "
        f"{type(value).__name__}"
    )


def _check_types(
    model: Any, optimizer: Any, pruner: Any, rewind: Any
) -> tuple[nn.Module, torch.optim.Optimizer | None]:
    module = unwrap_module(model)
    if optimizer is not None:
        check_optimizer(optimizer)
    if pruner is not None and not isinstance(pruner, LotteryTicketPruner):
        raise TypeError(
            "Expected an ltp_torch.LotteryTicketPruner or None. "
            f"Received: pruner={pruner!r} of type {type(pruner).__name__}"
        )
    if rewind is not None and not isinstance(rewind, RewindPointHook):
        raise TypeError(
            "Expected an ltp_torch.RewindPointHook or None. "
            f"Received: rewind={rewind!r} of type {type(rewind).__name__}"
        )
    return module, optimizer


def _rng_state() -> dict[str, Any]:
    cuda = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        cuda = torch.cuda.get_rng_state_all()
    return {"torch": torch.get_rng_state(), "cuda": cuda}


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    pruner: LotteryTicketPruner | None = None,
    *,
    rewind: RewindPointHook | None = None,
    extra: Any = None,
) -> None:
    """Save model, optimizer, pruner (masks, initial and rewind weights) and progress at once.

    The pruner's masks are applied to ``model`` in place first, so the live model and the file
    agree and every pruned weight in the file is exactly zero (with a
    :class:`~ltp_torch.PrunerHook` they already are; this matters right after
    :meth:`~ltp_torch.LotteryTicketPruner.calc_prune_mask`). The torch CPU (and initialized CUDA)
    random number generator states are saved too.

    Args:
        path: Destination file; parent folders are created. Written atomically.
        model: The model (DDP/compiled wrappers are looked through; the inner module's
            ``state_dict`` is saved, without a ``module.`` prefix).
        optimizer: Its optimizer, or ``None``.
        pruner: The :class:`~ltp_torch.LotteryTicketPruner`, or ``None``. Its state includes the
            masks, level, history and the initial, pretrained and rewind weights.
        rewind: A :class:`~ltp_torch.RewindPointHook` whose progress (steps counted, captured
            or not) is saved, so a resumed run captures the rewind point at the same step.
        extra: Anything else to keep (step, level, scheduler or ``GradScaler`` state): tensors,
            numbers, strings, ``None`` and lists/tuples/dicts of them.

    Raises:
        TypeError: An argument of the wrong type, or ``extra`` holding other objects.
        ValueError: ``model`` does not match ``pruner``.

    Example:
        >>> import os, tempfile
        >>> from torch import nn
        >>> from ltp_torch import LotteryTicketPruner, load_checkpoint
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> pruner = LotteryTicketPruner(net)
        >>> pruner.calc_prune_mask(net, 0.5, "smallest_weights")
        >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
        >>> save_checkpoint(path, net, opt, pruner, extra={"step": 10})
        >>> int((torch.load(path, weights_only=True)["model"]["0.weight"] == 0).sum())
        8
        >>> load_checkpoint(path, net, opt, pruner)
        {'step': 10}
    """
    module, optimizer = _check_types(model, optimizer, pruner, rewind)
    _check_extra(extra)
    if pruner is not None:
        pruner.apply_pruning(module)
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": module.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "optimizer_type": None if optimizer is None else _optimizer_type(optimizer),
        "pruner": None if pruner is None else pruner.state_dict(),
        "rewind": None if rewind is None else rewind.state_dict(),
        "rng": _rng_state(),
        "extra": extra,
    }
    atomic_write_bytes(path, lambda file: torch.save(checkpoint, file))
    logger.debug("Saved checkpoint %s", os.fspath(path))


def _not_a_checkpoint(path: str | os.PathLike[str], why: str) -> ValueError:
    return ValueError(
        f"{os.fspath(path)!r} is not a valid ltp_torch checkpoint ({why}). "
        f"Received: path={os.fspath(path)!r}"
    )


def read_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Read a file written by :func:`save_checkpoint` with ``weights_only=True`` and check it.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is corrupt, truncated, or not an ``ltp_torch`` checkpoint.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint file at {os.fspath(path)!r}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (
        RuntimeError,
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        zipfile.BadZipFile,
        OSError,
    ) as error:
        raise _not_a_checkpoint(path, f"cannot read it: {error}") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise _not_a_checkpoint(path, "not written by ltp_torch.save_checkpoint")
    version = checkpoint.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise _not_a_checkpoint(
            path, f"version {version!r}; this release reads up to {CHECKPOINT_VERSION}"
        )
    missing = [
        k for k in ("model", "optimizer", "pruner", "rewind", "extra") if k not in checkpoint
    ]
    if missing or not isinstance(checkpoint["model"], Mapping):
        raise _not_a_checkpoint(path, f"missing entries {missing or ['model']}")
    return checkpoint


def _check_model_state(module: nn.Module, saved: Mapping[str, Any], path: Any) -> None:
    expected = module.state_dict()
    problems = []
    for name, value in expected.items():
        if name not in saved:
            problems.append(f"'{name}' missing")
        elif not isinstance(saved[name], torch.Tensor) or saved[name].shape != value.shape:
            got = getattr(saved[name], "shape", type(saved[name]).__name__)
            problems.append(f"'{name}' has shape {tuple(got)}, expected {tuple(value.shape)}")
    problems += [f"unexpected '{name}'" for name in saved if name not in expected]
    if problems:
        raise ValueError(
            f"The checkpoint's model weights do not fit the model: {'; '.join(problems)}. "
            f"Received: model of type {type(module).__name__} for path={os.fspath(path)!r}"
        )


def _optimizer_type(optimizer: torch.optim.Optimizer) -> str:
    kind = type(optimizer)
    return f"{kind.__module__}.{kind.__qualname__}"


def _check_optimizer_state(
    optimizer: torch.optim.Optimizer, saved: Any, saved_type: Any, path: Any
) -> None:
    where = f"path={os.fspath(path)!r}"
    if isinstance(saved_type, str) and saved_type != _optimizer_type(optimizer):
        raise ValueError(
            f"The checkpoint's optimizer state was saved from a {saved_type}, not a "
            f"{_optimizer_type(optimizer)}: create the optimizer the run was saved with. "
            f"Received: optimizer of type {type(optimizer).__name__} for {where}"
        )
    groups = saved.get("param_groups") if isinstance(saved, Mapping) else None
    ours = [len(group["params"]) for group in optimizer.param_groups]
    valid = isinstance(groups, list) and all(isinstance(g, Mapping) for g in groups)
    theirs = [len(group.get("params", ())) for group in groups] if valid else None
    if theirs != ours or not isinstance(saved.get("state"), Mapping):
        raise ValueError(
            f"The checkpoint's optimizer state does not fit the optimizer: parameter groups of "
            f"sizes {ours} expected. Received: {theirs} in {where}"
        )
    # Hyperparameters (not flags such as foreach/maximize, which optimizers default when an
    # older state lacks them) must be the same set: another optimizer type would otherwise
    # load silently and fail at its first step (SGD state into Adam: KeyError 'betas').
    for index, (group, saved_group) in enumerate(zip(optimizer.param_groups, groups, strict=True)):
        missing = sorted(
            key
            for key, value in group.items()
            if key != "params" and key not in saved_group and not _is_flag(value)
        )
        foreign = sorted(
            str(key)
            for key, value in saved_group.items()
            if key != "params" and key not in group and not _is_flag(value)
        )
        if missing or foreign:
            raise ValueError(
                f"The checkpoint's optimizer state was saved from another kind of optimizer: "
                f"parameter group {index} lacks {missing} and has {foreign} that "
                f"{type(optimizer).__name__} does not use. Received: {where}"
            )


def _is_flag(value: Any) -> bool:
    return value is None or isinstance(value, bool)


def _check_rng(rng: Any, path: Any) -> None:
    """Try the saved generator states (then put the current ones back): a corrupt state fails
    here, before anything is loaded, not after the model and optimizer were overwritten."""
    where = f"path={os.fspath(path)!r}"
    if not isinstance(rng, Mapping):
        raise ValueError(
            f"The checkpoint's random number generator state is malformed (a dict of tensors "
            f"expected); pass restore_rng=False to skip it. Received: {type(rng).__name__} in "
            f"{where}"
        )
    cpu = rng.get("torch")
    cuda = rng.get("cuda")
    if not isinstance(cpu, torch.Tensor) or (
        cuda is not None
        and (
            not isinstance(cuda, (list, tuple))
            or not all(isinstance(state, torch.Tensor) for state in cuda)
        )
    ):
        raise ValueError(
            f"The checkpoint's random number generator state is malformed (tensors expected); "
            f"pass restore_rng=False to skip it. Received: torch={type(cpu).__name__}, "
            f"cuda={type(cuda).__name__} in {where}"
        )
    current = torch.get_rng_state()
    try:
        torch.set_rng_state(cpu.to("cpu"))
    except (RuntimeError, TypeError, ValueError) as error:
        raise ValueError(
            f"The checkpoint's random number generator state is corrupt ({error}); pass "
            f"restore_rng=False to skip it. Received: {where}"
        ) from error
    finally:
        torch.set_rng_state(current)
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        current_cuda = torch.cuda.get_rng_state_all()
        try:
            torch.cuda.set_rng_state_all([state.to("cpu") for state in cuda])
        except (RuntimeError, TypeError, ValueError) as error:
            raise ValueError(
                f"The checkpoint's CUDA random number generator state is corrupt ({error}); "
                f"pass restore_rng=False to skip it. Received: {where}"
            ) from error
        finally:
            torch.cuda.set_rng_state_all(current_cuda)


def load_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    pruner: LotteryTicketPruner | None = None,
    *,
    rewind: RewindPointHook | None = None,
    map_location: Any = "cpu",
    restore_rng: bool = True,
) -> Any:
    """Restore a :func:`save_checkpoint` file into existing objects, in place.

    The file is read with ``torch.load(weights_only=True)``. Everything is checked before
    anything changes (file format, model keys and shapes, optimizer type and groups, every
    field of the pruner state, rewind step, random number generator states), so a bad file or
    a mismatched model or optimizer leaves all objects as they were.
    Parameter identity is kept (the optimizer keeps training the same tensors), and a
    :class:`~ltp_torch.PrunerHook` on the optimizer picks up the loaded masks after the next step
    (or at once with ``hook.refresh()``).

    Args:
        path: A file written by :func:`save_checkpoint`.
        model: The model to load the weights into (same architecture).
        optimizer: The optimizer to restore, or ``None`` to skip it.
        pruner: The pruner to restore, or ``None`` to skip it.
        rewind: A :class:`~ltp_torch.RewindPointHook` (created with the same ``step``) to
            continue counting from the saved progress.
        map_location: Passed to ``torch.load`` (default ``"cpu"``; tensors are then copied to
            each parameter's device).
        restore_rng: Also restore the torch random number generator states saved with the
            checkpoint (default ``True``), so dropout and sampling continue as without the
            interruption.

    Returns:
        The ``extra`` value given to :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: No such file.
        ValueError: A corrupt, truncated or foreign file, or a checkpoint of another model,
            optimizer or pruner; the message names what differs.
        TypeError: An argument of the wrong type.

    Example: see :func:`save_checkpoint`.
    """
    module, optimizer = _check_types(model, optimizer, pruner, rewind)
    checkpoint = read_checkpoint(path, map_location=map_location)
    _check_model_state(module, checkpoint["model"], path)
    if optimizer is not None:
        if checkpoint["optimizer"] is None:
            raise ValueError(
                f"The checkpoint holds no optimizer state. Received: optimizer of type "
                f"{type(optimizer).__name__} for path={os.fspath(path)!r}"
            )
        _check_optimizer_state(
            optimizer, checkpoint["optimizer"], checkpoint.get("optimizer_type"), path
        )
    if pruner is not None:
        if checkpoint["pruner"] is None:
            raise ValueError(
                f"The checkpoint holds no pruner state. Received: pruner={pruner!r} for "
                f"path={os.fspath(path)!r}"
            )
        pruner.check_state_dict(checkpoint["pruner"])
    if rewind is not None:
        try:
            rewind.check_state_dict(checkpoint["rewind"])
        except ValueError as error:
            raise ValueError(
                f"The checkpoint holds no valid RewindPointHook progress for this hook: {error} "
                f"(path={os.fspath(path)!r})"
            ) from error
    rng = checkpoint.get("rng")
    if restore_rng and rng is not None:
        _check_rng(rng, path)

    if pruner is not None:
        pruner.load_state_dict(checkpoint["pruner"])
    module.load_state_dict(checkpoint["model"])
    if optimizer is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
    if pruner is not None:
        pruner.apply_pruning(module)
    if rewind is not None:
        rewind.load_state_dict(checkpoint["rewind"])
    if restore_rng and isinstance(rng, Mapping):
        torch.set_rng_state(rng["torch"].to("cpu"))  # checked above
        cuda = rng.get("cuda")
        if (
            cuda is not None
            and torch.cuda.is_available()
            and len(cuda) == torch.cuda.device_count()
        ):
            torch.cuda.set_rng_state_all([state.to("cpu") for state in cuda])
    logger.debug("Loaded checkpoint %s", os.fspath(path))
    return checkpoint["extra"]
