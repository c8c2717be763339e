"""The sweep's default search and scheduler settings (no heavy imports: the CLI reads them)."""

from __future__ import annotations

from typing import Any

#: The sweep's default search and scheduler: the one home of these numbers (the CLI flags, the forecast and the
#: replayed benchmark, ``bench/replay.py``'s ``default`` strategy, all read them). Checked on the recorded benchmark
#: (README, "A recorded benchmark and its replay"): with about a third of the grid's points as trials per cell they
#: cost ~0.2x the grid's trial-epochs, and their pick's regret is within the intervals of the grid's (the benchmark
#: cannot tell TPE from random search); no variant tried (η 3/4, grace 2, 2 brackets, multivariate TPE, no constant
#: liar, other start-ups) did better beyond the noise.
SEARCH_DEFAULTS: dict[str, Any] = {
    "grace_period": 1,  # ASHA: evaluations before the first cut
    "reduction_factor": 2.0,  # ASHA: keep 1/factor at each rung
    "brackets": 1,  # ASHA brackets (1 = plain asynchronous successive halving)
    "multivariate": False,  # TPE: one joint density over all dimensions instead of one per dimension
    "startup_share": 1 / 3,  # TPE: random trials first, as a share of the cell's trials (3 … 10)
}

#: Racing before the pick (``--race-top``, ``sweeps.pool.Race``): ON by default, the pick then chosen on a mean over
#: two seeds instead of one evaluation: one round of one extra seed for each of the top 3 candidates (3 race runs per
#: cell). Options fixed on the v2 recorded benchmark's LoRA table. Judged as a sweep runs (one search seed per
#: replay, ``bench/results/regret_*_v2_shared.md``) the race's regret is within the noise of the search alone on both
#: tables (LoRA 0.0088 vs 0.0084, WeightLoRA 0.0063 vs 0.0038) for +0.13-0.19x the grid's trial-epochs. A longer
#: race (``--race-budget``) goes on while the leader is within ``k`` pooled standard errors of the runner-up.
RACE_DEFAULTS: dict[str, Any] = {
    "top": 3,  # candidates that race (0: no race; 1 races nothing)
    "seeds": 1,  # extra seeds per candidate per round
    "rounds": 1,  # the race budget when --race-budget is not given: top × seeds × rounds race runs per cell
    "k": 2.0,  # stop when mean(leader) − mean(runner-up) > k pooled standard errors
}
