"""ltp_core must never import a deep-learning framework."""

from __future__ import annotations

import subprocess
import sys


def test_importing_core_imports_no_framework() -> None:
    code = (
        "import sys, ltp_core, ltp_core.compute, ltp_core.io, ltp_core.report, "
        "ltp_core.schedule\n"
        "import numpy as np\n"
        "p = ltp_core.LotteryTicketPruner([np.ones((3, 3))])\n"
        "p.calc_prune_mask([np.ones((3, 3))], 0.5, 'smallest_weights')\n"
        "bad = [m for m in ('tensorflow', 'keras', 'torch', 'jax', 'matplotlib', 'tqdm') "
        "if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
