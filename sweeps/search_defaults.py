"""The sweep's default search and scheduler settings (no heavy imports: the CLI reads them)."""

from __future__ import annotations

from typing import Any

#: The sweep's default search and scheduler: the one home of these numbers (the CLI flags, the forecast and the
#: replayed benchmark, ``bench/replay.py``'s ``default`` strategy, all read them). Checked on the recorded benchmark
#: (README, "A recorded benchmark and its replay"): with about a third of the grid's points as trials per cell they
#: end within seed noise of the grid's best more often than the grid, for ~0.2× its trial-epochs; no variant tried
#: (η 3/4, grace 2, 2 brackets, multivariate TPE, no constant liar, other start-ups) did better beyond the noise.
SEARCH_DEFAULTS: dict[str, Any] = {
    "grace_period": 1,  # ASHA: evaluations before the first cut
    "reduction_factor": 2.0,  # ASHA: keep 1/factor at each rung
    "brackets": 1,  # ASHA brackets (1 = plain asynchronous successive halving)
    "multivariate": False,  # TPE: one joint density over all dimensions instead of one per dimension
    "startup_share": 1 / 3,  # TPE: random trials first, as a share of the cell's trials (3 … 10)
}
