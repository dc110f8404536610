"""Training checkpoints for Keras 3 models: model, optimizer and pruner in one atomic file.

``save_checkpoint`` writes a single zip file next to the target and renames it into place
(:func:`ltp_core.io.atomic_write_bytes`), so a crash while saving leaves the previous
checkpoint intact. The zip holds three entries:

* ``model.keras``: the model as written by ``model.save`` (architecture, weights and, for a
  compiled model, the optimizer with its iteration count and slot variables);
* ``pruner.npz``: the pruner's state in the portable ``.npz`` format of
  :func:`ltp_core.io.save_state` (masks, initial, pretrained and rewind prunable weights);
* ``rewind_others.npz``: the pruner's rewind point of the other (non-prunable) weights:
  biases, normalization, embeddings at initialization, and at ``set_rewind_weights`` (late
  rewinding), so that ``pruner.rewind`` after resuming rewinds them too;
* ``extra.json``: the format tag, its version and the caller's JSON-serializable ``extra``.

Nothing in the file runs code on load (``.keras`` files load with ``safe_mode``, ``.npz`` with
``allow_pickle=False``).
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ltp_core import io as core_io
from ltp_core.io import atomic_write_bytes

from .pruner import LotteryTicketPruner

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "load_checkpoint", "save_checkpoint"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "ltp_keras.checkpoint"
CHECKPOINT_VERSION = 1

_MODEL = "model.keras"
_PRUNER = "pruner.npz"
_EXTRA = "extra.json"
_OTHERS = "rewind_others.npz"


def _check_pruner(pruner: Any) -> None:
    if pruner is not None and not isinstance(pruner, LotteryTicketPruner):
        raise TypeError(
            "Expected an ltp_keras.LotteryTicketPruner or None. "
            f"Received: pruner={pruner!r} of type {type(pruner).__name__}"
        )


def _encode_extra(extra: Any) -> str:
    document = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "extra": extra}
    try:
        return json.dumps(document, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(
            "`extra` must be JSON-serializable (dicts with str keys, lists, str, finite numbers, "
            f"bool, None): {error}. Received: extra of type {type(extra).__name__}"
        ) from error


def save_checkpoint(
    path: str | os.PathLike[str],
    model: keras.Model,
    pruner: LotteryTicketPruner | None = None,
    *,
    extra: Any = None,
) -> None:
    """Save the model (with its optimizer), the pruner and ``extra`` in one file, atomically.

    The pruner's masks are applied to ``model`` in place first (kept weights are unchanged), so
    the live model and the file agree and every pruned weight in the file is exactly zero, also
    right after :meth:`~ltp_keras.LotteryTicketPruner.calc_prune_mask`. It may be called during
    ``fit`` (for instance from a callback): the mask constraints that
    :class:`~ltp_keras.PrunerCallback` installs are not part of the layer configs.

    Args:
        path: Destination file; parent folders are created.
        model: A built ``keras.Model``. If compiled, its optimizer state is saved too.
        pruner: The :class:`~ltp_keras.LotteryTicketPruner`, or ``None``. Its masks, level,
            history, the prunable initial, pretrained and rewind weights, and the rewind point
            of the other weights (biases, normalization: initial and late-rewind values) are
            saved.
        extra: Anything else to keep (epoch, level, learning-rate schedule position) as a
            JSON-serializable value.

    Raises:
        TypeError: ``pruner`` of the wrong type, or ``extra`` not JSON-serializable (nothing is
            written then).
        ValueError: ``model`` does not match ``pruner``.

    Example:
        >>> import os, tempfile, keras, numpy as np
        >>> from ltp_keras import LotteryTicketPruner, load_checkpoint
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4),
        ...                           keras.layers.Dense(1)])
        >>> model.compile("sgd", "mse")
        >>> pruner = LotteryTicketPruner(model)
        >>> pruner.calc_prune_mask(model, 0.5, "smallest_weights")
        >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.zip")
        >>> save_checkpoint(path, model, pruner, extra={"level": 1})
        >>> restored, extra = load_checkpoint(path, LotteryTicketPruner(model))
        >>> extra, int((keras.ops.convert_to_numpy(restored.layers[0].kernel) == 0).sum())
        ({'level': 1}, 8)
    """
    _check_pruner(pruner)
    document = _encode_extra(extra)
    others = b""
    if pruner is not None:
        pruner.apply_pruning(model)
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **pruner._others_rewind_state())
        others = buffer.getvalue()
    # The parts are staged next to the target (not in the system's temporary folder), locked
    # while in use: if the process is killed meanwhile, the next save of `path` removes them.
    with (
        core_io.staging_file(path, ".keras") as model_file,
        core_io.staging_file(path, ".npz") as pruner_file,
    ):
        model.save(model_file)
        if pruner is not None:
            core_io.save_state(pruner_file, pruner.state_dict())

        def write(file: Any) -> None:
            with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED) as archive:
                archive.writestr(_EXTRA, document)
                archive.write(model_file, _MODEL)
                if pruner is not None:
                    archive.write(pruner_file, _PRUNER)
                    archive.writestr(_OTHERS, others)

        atomic_write_bytes(path, write)
    logger.debug("Saved checkpoint %s", os.fspath(path))


def _not_a_checkpoint(path: str | os.PathLike[str], why: str) -> ValueError:
    return ValueError(
        f"{os.fspath(path)!r} is not a valid ltp_keras checkpoint ({why}). "
        f"Received: path={os.fspath(path)!r}"
    )


def load_checkpoint(
    path: str | os.PathLike[str],
    pruner: LotteryTicketPruner | None = None,
    *,
    custom_objects: dict[str, Any] | None = None,
) -> tuple[keras.Model, Any]:
    """Read a :func:`save_checkpoint` file: a new model, and ``pruner`` restored in place.

    The model comes from ``keras.models.load_model`` (compiled, with the optimizer's iteration
    count and slot variables, if it was compiled when saved). The pruner state is checked in
    full before the model is loaded and assigned only after the model loaded: a corrupt entry,
    a malformed pruner state or a pruner that does not match raises ``ValueError`` and the
    pruner keeps its state. To resume pruned training, pass the returned model and
    the pruner to a new :class:`~ltp_keras.PrunerCallback`.

    Args:
        path: A file written by :func:`save_checkpoint`.
        pruner: A :class:`~ltp_keras.LotteryTicketPruner` of the same architecture to restore,
            or ``None`` to skip it.
        custom_objects: Passed to ``keras.models.load_model`` (custom layers, losses...).

    Returns:
        ``(model, extra)``: the loaded model and the ``extra`` value given when saving.

    Raises:
        FileNotFoundError: No such file.
        ValueError: A corrupt, truncated or foreign file, a checkpoint without pruner state
            when ``pruner`` is given, or a pruner of another architecture.
        TypeError: ``pruner`` of the wrong type.

    Example: see :func:`save_checkpoint`.
    """
    _check_pruner(pruner)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint file at {os.fspath(path)!r}")
    with tempfile.TemporaryDirectory(prefix="ltp_keras_ckpt_") as folder:
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
                if _EXTRA not in names or _MODEL not in names:
                    raise _not_a_checkpoint(path, f"entries {_EXTRA} and {_MODEL} missing")
                document = json.loads(archive.read(_EXTRA).decode("utf-8"))
                archive.extract(_MODEL, folder)
                if _PRUNER in names:
                    archive.extract(_PRUNER, folder)
                others = archive.read(_OTHERS) if _OTHERS in names else None
        except (zipfile.BadZipFile, EOFError, OSError, UnicodeDecodeError, ValueError) as error:
            if isinstance(error, ValueError) and str(error).startswith(repr(os.fspath(path))):
                raise
            raise _not_a_checkpoint(path, f"cannot read it: {error}") from error
        if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
            raise _not_a_checkpoint(path, "not written by ltp_keras.save_checkpoint")
        version = document.get("version")
        if not isinstance(version, int) or version > CHECKPOINT_VERSION:
            raise _not_a_checkpoint(
                path, f"version {version!r}; this release reads up to {CHECKPOINT_VERSION}"
            )
        state = None
        if pruner is not None:
            if _PRUNER not in names:
                raise ValueError(
                    f"The checkpoint holds no pruner state. Received: pruner={pruner!r} for "
                    f"path={os.fspath(path)!r}"
                )
            try:
                state = core_io.load_state(Path(folder) / _PRUNER)
            except ValueError as error:
                raise _not_a_checkpoint(path, f"bad {_PRUNER}: {error}") from error
            pruner.core.check_state_dict(state)  # before the (slow) model load; changes nothing
            if others is not None:
                try:
                    with np.load(io.BytesIO(others), allow_pickle=False) as arrays:
                        checked_others = pruner._check_others_rewind_state(dict(arrays))
                except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
                    raise _not_a_checkpoint(path, f"bad {_OTHERS}: {error}") from error
        model_file = Path(folder) / _MODEL
        if not zipfile.is_zipfile(model_file):
            raise _not_a_checkpoint(
                path, f"its {_MODEL} entry is not a .keras (zip) archive written by model.save"
            )
        try:
            model = keras.models.load_model(model_file, custom_objects=custom_objects)
        except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError) as error:
            raise _not_a_checkpoint(path, f"bad {_MODEL}: {error}") from error
    if pruner is not None and state is not None:
        pruner.load_state_dict(state)
        if others is not None:
            pruner._load_others_rewind_state(checked_others)
        else:  # written before rewind_others.npz existed: pruner.rewind warns
            logger.warning(
                "%s holds no rewind point for the non-prunable weights (written by an older "
                "ltp_keras): pruner.rewind will rewind biases and normalization to this "
                "pruner's own values",
                os.fspath(path),
            )
    logger.debug("Loaded checkpoint %s", os.fspath(path))
    return model, document.get("extra")
