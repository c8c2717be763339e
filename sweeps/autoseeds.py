"""``--seeds auto``: seed re-runs added, look by look, to the cells behind the claims still undecided.

The pooled searcher (``sweeps.pool``) hands out each cell's first ``schedule[0]`` seed re-runs once its search
ends. When every cell's seed re-runs have ended, it calls :meth:`AutoSeeds.look`: the claims
(``sweeps.claims``) are tested on the scores so far, at α / L for L = ``len(schedule)`` looks at most
(Bonferroni over the looks), and each cell that is an arm of a claim still open ("not shown" or
"insufficient seeds") grows to the schedule's next seed count, all of them in parallel. A claim whose
conditional power at ``--max-seeds`` is below :data:`sweeps.claims.FUTILITY_FLOOR` stops for futility: its arms
get no more seeds for it (non-binding: stopping adds no false verdict, so the stated error rate holds). The
sweep stops adding seeds when every claim has a verdict, stopped for futility, or the cells reach
``--max-seeds``.

Seeds are added on dev scores; that chooses no configuration (every seed re-run of a cell trains the one
config its search chose on held-out scores), so the dev split stays out of every choice of configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sweeps import claims

logger = logging.getLogger("sweeps")


@dataclass
class AutoSeeds:
    """The sequential seed rule of one sweep.

    Args:
        schedule: seeds per arm at each look (``claims.seed_schedule``).
        arms: cell name → (method, group); a group is one task (and rank), inside which the claims compare.
    """

    schedule: list[int]
    arms: dict[str, tuple[str, str]]
    margin: float | dict[str, float] = claims.MARGIN
    looks: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False
    futile: list[str] = field(default_factory=list)
    """``(claim) group`` of the claims that stopped for futility, in the order they stopped."""

    @property
    def max_looks(self) -> int:
        return len(self.schedule)

    def next_count(self, current: int) -> int | None:
        return next((n for n in self.schedule if n > current), None)

    def look(
        self, scores: Mapping[str, list[float]], params: Mapping[str, list[float]], counts: Mapping[str, int]
    ) -> dict[str, int]:
        """One look. ``scores`` / ``params``: cell → its finished seed re-runs' scores and # Params;
        ``counts``: cell → seed re-runs handed out so far. Returns cell → new seed count for the cells
        that get more; an empty answer ends the rule."""
        by_arm: dict[tuple[str, str], list[float]] = {}
        params_of: dict[tuple[str, str], float] = {}
        for cell, values in scores.items():
            if cell in self.arms and values:
                by_arm.setdefault(self.arms[cell], []).extend(values)
        for cell, values in params.items():
            if cell in self.arms and values:
                params_of[self.arms[cell]] = sum(values) / len(values)
        rows = claims.evaluate_claims(by_arm, params_of, margin=self.margin, n_boot=200, looks=self.max_looks)
        cap = self.schedule[-1]
        for claim, group in sorted(claims.futile_claims(rows, by_arm, cap)):
            if f"({claim}) {group}" not in self.futile:
                self.futile.append(f"({claim}) {group}")
        open_rows = [r for r in rows if f"({r['claim']}) {r['task']}" not in self.futile]
        open_arms = claims.undecided_arms(open_rows)
        more = {}
        for cell, arm in self.arms.items():
            target = self.next_count(counts.get(cell, 0))
            if arm in open_arms and target is not None:
                more[cell] = target
        self.looks.append(
            {
                "look": len(self.looks) + 1,
                "seeds": dict(counts),
                "verdicts": {f"({r['claim']}) {r['task']}": r["verdict"] for r in rows},
                "conditional_power": {
                    f"({r['claim']}) {r['task']}": r["conditional_power"] for r in rows if "conditional_power" in r
                },
                "futile": list(self.futile),
                "more": dict(more),
            }
        )
        verdicts = ", ".join(f"{k}: {v}" for k, v in self.looks[-1]["verdicts"].items()) or "no claim testable"
        if more:
            logger.info("--seeds auto, look %d of at most %d: %s; adding seeds to %s", len(self.looks),
                        self.max_looks, verdicts, ", ".join(f"{c} (→ {n})" for c, n in more.items()))  # fmt: skip
        else:
            self.finished = True
            logger.info("--seeds auto, look %d of at most %d: %s; no more seeds", len(self.looks), self.max_looks,
                        verdicts)  # fmt: skip
        return more
