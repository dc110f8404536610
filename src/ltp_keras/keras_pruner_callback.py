"""lottery-ticket-pruner 0.8.1 compatibility: the old module path of ``PrunerCallback``.

``from ltp_keras.keras_pruner_callback import PrunerCallback`` keeps working for code written
against ``lottery_ticket_pruner.keras_pruner_callback``; new code imports from ``ltp_keras``.
See ``docs/migration.md``.
"""

from __future__ import annotations

from .callbacks import PrunerCallback

__all__ = ["PrunerCallback"]
