"""lottery-ticket-pruner 0.8.1 compatibility: the old module path of ``LotteryTicketPruner``.

``from ltp_keras.lottery_ticket_pruner import LotteryTicketPruner`` keeps working for code
written against ``lottery_ticket_pruner.lottery_ticket_pruner``; new code imports from
``ltp_keras``. See ``docs/migration.md``.
"""

from __future__ import annotations

from .pruner import LotteryTicketPruner

__all__ = ["LotteryTicketPruner"]
