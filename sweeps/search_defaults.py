"""The sweep's default search and scheduler settings (no heavy imports: the CLI reads them)."""

from __future__ import annotations

from typing import Any

#: The sweep's default search and scheduler: the one home of these numbers (the CLI flags, the forecast and the
#: replayed benchmark, ``bench/replay.py``'s ``default`` strategy, all read them). Chosen on the recorded benchmark:
#: see the README's "Search defaults" table.
SEARCH_DEFAULTS: dict[str, Any] = {
    "grace_period": 1,  # ASHA: evaluations before the first cut
    "reduction_factor": 2.0,  # ASHA: keep 1/factor at each rung
    "brackets": 1,  # ASHA brackets (1 = plain asynchronous successive halving)
    "multivariate": False,  # TPE: one joint density over all dimensions instead of one per dimension
    "startup_share": 1 / 3,  # TPE: random trials first, as a share of the cell's trials (3 … 10)
}
