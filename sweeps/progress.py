"""The sweep's one live view: a table of every trial (cell, trial, role, status, step, metric), printed at
most every ``--progress-interval`` seconds, and a summary per cell when the run ends."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from ray.tune import Callback

from sweeps.schema import RACE, SEED_RUN
from trainables.runner import CELL_KEY, FINAL_KEY, ROLE_KEY
from wlora.run_config import OBJECTIVE


class ProgressTable(Callback):
    """One live table of the whole sweep (cell, trial, role, status, step, metric), printed at most every
    ``interval_s`` seconds, and a summary per cell when the run ends."""

    def __init__(self, title: str, interval_s: float = 20.0, out: Callable = print, ledgers: Mapping | None = None):
        self.title = title
        #: cell → its ASHA's early stops: a trial that ended early and is not in it was interrupted.
        self.ledgers = dict(ledgers) if ledgers is not None else None
        self.interval_s = interval_s
        self.out = out
        self._last = 0.0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["out"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.out = print

    def on_step_end(self, iteration, trials, **info) -> None:
        if time.monotonic() - self._last >= self.interval_s:
            self.print_table(trials)

    def on_experiment_end(self, trials, **info) -> None:
        self.print_table(trials, final=True)

    def status(self, trial) -> str:
        r = trial.last_result or {}
        if trial.status == "TERMINATED" and r and not r.get(FINAL_KEY):
            if self.ledgers is None:
                return "STOPPED"
            ledger = self.ledgers.get(str((trial.config or {}).get(CELL_KEY, "")))
            # by its cell's ASHA, or by Ctrl-C (continues on --resume)
            return "STOPPED" if ledger is not None and trial.trial_id in ledger else "INTERRUPTED"
        return trial.status

    def print_table(self, trials, final: bool = False) -> None:
        self._last = time.monotonic()
        header = ["cell", "trial", "role", "status", "step", OBJECTIVE]
        rows = []
        for t in sorted(trials, key=lambda t: (str((t.config or {}).get(CELL_KEY, "")), t.trial_id)):
            r = t.last_result or {}
            cfg = t.config or {}
            value = r.get(OBJECTIVE)
            rows.append(
                [
                    str(cfg.get(CELL_KEY, "")),
                    t.trial_id,
                    {SEED_RUN: "seed", RACE: "race"}.get(cfg.get(ROLE_KEY), "search"),
                    self.status(t),
                    str(r.get("step", "")),
                    f"{value:.4f}" if isinstance(value, float) else "",
                ]
            )
        counts: dict[str, int] = {}
        for row in rows:
            counts[row[3]] = counts.get(row[3], 0) + 1
        summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
        lines = [f"== {self.title}: {len(rows)} trials ({summary}) =="]
        lines += _columns(header, rows)
        if final:
            lines += ["", f"== {self.title}: per cell ==", *_columns(*_cell_summary(rows))]
        self.out("\n".join(lines), flush=True)


def _cell_summary(rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    header = ["cell", "trials", "completed", "stopped", "failed", f"best {OBJECTIVE}"]
    cells: dict[str, list[list[str]]] = {}
    for row in rows:
        if row[2] == "search":
            cells.setdefault(row[0], []).append(row)
    out = []
    for cell, rs in cells.items():
        values = [float(r[5]) for r in rs if r[5] and r[3] == "TERMINATED"]
        out.append(
            [
                cell,
                str(len(rs)),
                str(sum(r[3] == "TERMINATED" for r in rs)),
                str(sum(r[3] == "STOPPED" for r in rs)),
                str(sum(r[3] == "ERROR" for r in rs)),
                f"{max(values):.4f}" if values else "",
            ]
        )
    return header, out


def _columns(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return lines
