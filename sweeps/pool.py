"""One pool of trial slots for every cell of a sweep: a composite searcher and a composite scheduler.

Why one Tune run and not one per cell: Tune runs one experiment per driver at a time (several ``Tuner.fit``
calls on one cluster are not supported), so cells run one after another left most slots idle whenever a
cell had fewer trials than the cluster has slots, and ``--seeds`` re-runs waited for every search. Here the
whole sweep is ONE Tune run, so Tune's own experiment restore, retries (``FailureConfig``), actor reuse and
callbacks work unchanged, while what must stay per cell is held per cell:

* :class:`PooledSearcher` keeps one search per cell (its own seeded Optuna TPE over its own space and its
  own ``--num-samples`` budget; or its list of random/grid configs) and hands out the next trial of the cell
  with the fewest live trials (round robin on ties), so every free slot goes to a cell that still has work
  and no cell starves. Once all of a cell's search trials have ended, its ``--seeds`` re-runs of the best
  configuration join the pool at once.
* With ``--race-top M`` a cell whose search has ended races its top M candidates (by their search score, on the
  choice split) on extra seeds before its pick (:class:`Race`); its seed re-runs follow the race.
* :class:`PooledScheduler` routes each trial to its cell's ASHA, so rungs only ever compare trials of one
  cell (an RTE accuracy is never ranked against an SST-2 accuracy); race runs and seed re-runs run to the end
  (FIFO).

Each trial's config carries its cell and role under :data:`CELL_KEY` / :data:`ROLE_KEY`; the trainable drops
them before building the ``TrainConfig``. ASHA writes early stops into the cell's
:class:`~sweeps.search.EarlyStopLedger`, which the cell's Optuna search reads to tell Optuna ``PRUNED``.
"""

from __future__ import annotations

import logging
import math
import pickle
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.variant_generator import generate_variants

from sweeps.autoseeds import AutoSeeds
from sweeps.schema import COMPLETED, FAILED, RACE, SEED_RUN, TRIAL, check_choice_split, pick_best
from trainables import CELL_KEY, FINAL_KEY, ROLE_KEY
from wlora.run_config import OBJECTIVE

logger = logging.getLogger(__name__)


class ListSearch:
    """A fixed list of configs handed out in order (random search, grid, seed re-runs)."""

    def __init__(self, configs: list[dict[str, Any]]):
        self.configs = list(configs)
        self.next = 0

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.next >= len(self.configs):
            return None
        self.next += 1
        return dict(self.configs[self.next - 1])

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass


def variant_configs(space: Mapping[str, Any], *, grid: bool, num_samples: int, seed: int = 0) -> list[dict[str, Any]]:
    """Random search: ``num_samples`` draws from ``space``; grid: every grid point once (other dimensions drawn
    per point). Seeded, so a sweep and its resume draw the same configs."""
    rng = np.random.RandomState(seed)
    rounds = 1 if grid else num_samples
    out = []
    for _ in range(rounds):
        for _, resolved in generate_variants({"config": dict(space)}, random_state=rng):
            out.append(resolved["config"])
    return out


def _status(run: dict[str, Any]) -> str:
    """The status of an ended search trial as the pool saw it (failed, trained to the end, or cut early)."""
    return FAILED if run["error"] else (COMPLETED if run["result"].get(FINAL_KEY) else "partial")


def race_draw_seed(search_seed: int, cell: str) -> int:
    """The seed of a cell's race tie-break draws: the sweep's search seed and the cell's name."""
    return (int(search_seed) * 1_000_003 + zlib.crc32(cell.encode())) % 2**32


@dataclass
class Race:
    """One cell's race before its pick (``--race-top``), in the spirit of SMAC's intensification.

    When the cell's search has ended, its ``top`` best search trials that trained to the end, ranked by their
    search score (read on the choice split only: held-out under ``--protocol heldout``; exact ties in a seeded
    random order), become the candidates. Each round gives every candidate ``seeds`` more full-budget runs of
    its config, each with a seed none of that config's runs used (never the search trials' seed); a round starts
    when the previous one has ended. After each round every candidate has a mean over its runs (its search run
    and its race runs that did not fail), and the race stops when

        mean(leader) − mean(runner-up) > k · s_p · √(1/n_leader + 1/n_runner-up),

    ``s_p²`` being the within-candidate variance of the scores pooled over every candidate (the seed noise of
    this cell; it needs one repeated candidate at least), or when ``budget`` race runs have been handed out (a
    last round is shortened to an equal number of runs per candidate that fits; none fits: it stops). The pick
    is the candidate with the best mean; means equal to 1e-12 are tied and ordered by a draw seeded by
    ``draw_seed`` (the search seed and the cell's name) and the round, so a rerun picks the same.

    A grown search (``--resume --num-samples N``) races again (:meth:`rerace`): a fresh race with its own budget
    over the top candidates of the grown search, in which a candidate that raced before keeps its earlier race
    runs (they count in its mean, and their seeds are not run again).
    """

    top: int = 0
    seeds: int = 1
    budget: int = 0
    k: float = 2.0
    draw_seed: int = 0
    candidates: list[str] | None = None
    """Search trial ids of the candidates, best search score first (None: the race has not started)."""
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    search_scores: dict[str, float] = field(default_factory=dict)
    seeds_used: dict[str, list[int]] = field(default_factory=dict)
    """Candidate → the seeds of its race runs handed out so far."""
    pending: list[tuple[str, int]] = field(default_factory=list)
    """(candidate, seed) of the current round not handed out yet."""
    live: set[str] = field(default_factory=set)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Race trial id → its candidate, seed and, once ended, score, split, # Params and error."""
    used: int = 0
    rounds: int = 0
    stop: str | None = None
    """Why the race ended: ``ahead`` (the rule above), ``budget``, or ``fewer than 2 candidates``."""
    pick: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    """One record per decision: the round, each candidate's mean and n, the gap and k × its standard error."""
    earlier: list[dict[str, Any]] = field(default_factory=list)
    """The races before this one (a grown search races again): each one's candidates, rounds, stop and pick."""

    @property
    def done(self) -> bool:
        return self.stop is not None

    def start(self, results: Mapping[str, dict[str, Any]], choice_split: str | None) -> None:
        """The candidates: the ``top`` best completed search trials (``pick_best``'s rule, applied ``top`` times,
        so the choice-split guard reads every candidate's score)."""
        pool = list(results.items())
        np.random.RandomState(self.draw_seed % 2**32).shuffle(pool)  # exact ties: a seeded order
        chosen: list[str] = []
        for _ in range(self.top):
            best = pick_best(
                [(tid, r) for tid, r in pool if tid not in chosen],
                status=lambda item: _status(item[1]),
                value=lambda item: item[1]["result"].get(OBJECTIVE),
                completed_only=True,
                split=lambda item: item[1]["result"].get("eval_split"),
                choice_split=choice_split,
            )
            if best is None:
                break
            chosen.append(best[0])
        self.candidates = chosen
        self.configs = {tid: dict(results[tid]["config"]) for tid in chosen}
        self.search_scores = {tid: float(results[tid]["result"][OBJECTIVE]) for tid in chosen}
        # A candidate that raced in an earlier race of this cell keeps those runs' seeds (never run again).
        self.seeds_used = {tid: [r["seed"] for r in self.runs.values() if r["candidate"] == tid] for tid in chosen}
        if len(chosen) < 2:
            self.stop, self.pick = "fewer than 2 candidates", (chosen[0] if chosen else None)
        else:
            self._next_round()

    def _next_round(self) -> None:
        assert self.candidates is not None
        per = min(self.seeds, (self.budget - self.used) // len(self.candidates))
        if per <= 0:
            self.stop, self.pick = "budget", self.standings()[0]["candidate"]
            return
        self.rounds += 1
        for tid in self.candidates:
            own = {self.configs[tid].get("seed", 0), *self.seeds_used[tid]}
            new: list[int] = []
            s = 0
            while len(new) < per:
                if s not in own:
                    new.append(s)
                s += 1
            self.seeds_used[tid] += new
            self.pending += [(tid, seed) for seed in new]

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """The next race run of this round (its candidate's config with its own seed), or None."""
        if self.done or not self.pending:
            return None
        tid, seed = self.pending.pop(0)
        self.used += 1
        self.live.add(trial_id)
        self.runs[trial_id] = {"candidate": tid, "seed": seed}
        return {**self.configs[tid], "seed": seed}

    def record(self, trial_id: str, result: dict | None, error: bool, choice_split: str | None) -> None:
        """A race run ended; once its round has ended, decide (stop with a pick, or the next round)."""
        if trial_id not in self.live:
            return
        self.live.discard(trial_id)
        res = result or {}
        self.runs[trial_id].update(
            score=res.get(OBJECTIVE),
            split=res.get("eval_split"),
            params=res.get("method_params"),
            error=bool(error) or not res.get(FINAL_KEY),
        )
        if not self.live and not self.pending and not self.done and self.candidates is not None:
            self.decide(choice_split)

    def scores(self, choice_split: str | None = None) -> dict[str, list[float]]:
        """Candidate → its scores: the search run's, then those of its race runs that trained to the end. Every
        race score must be of the choice split (:class:`~sweeps.schema.SelectionLeak` otherwise)."""
        out = {tid: [self.search_scores[tid]] for tid in self.candidates or []}
        for run in self.runs.values():
            v = run.get("score")
            if "error" not in run or run["error"] or v is None or not math.isfinite(v):
                continue
            if run["candidate"] not in out:
                continue  # a run of an earlier race whose config is no longer a candidate
            check_choice_split(run.get("split"), choice_split, "the race's pick")
            out[run["candidate"]].append(float(v))
        return out

    def standings(self, choice_split: str | None = None) -> list[dict[str, Any]]:
        """Candidates by mean, best first (ties: the seeded draw of this round)."""
        draw = np.random.RandomState((self.draw_seed + 7919 * self.rounds) % 2**32)
        rows = []
        for tid, values in self.scores(choice_split).items():
            rows.append({"candidate": tid, "mean": float(np.mean(values)), "n": len(values), "tie": draw.rand()})
        rows.sort(key=lambda r: (-round(r["mean"], 12), r["tie"]))
        return rows

    def noise(self, choice_split: str | None = None) -> tuple[float, int]:
        """The pooled within-candidate standard deviation of the scores and its degrees of freedom."""
        ss, df = 0.0, 0
        for values in self.scores(choice_split).values():
            if len(values) > 1:
                arr = np.asarray(values, dtype=float)
                ss += float(((arr - arr.mean()) ** 2).sum())
                df += len(values) - 1
        return (math.sqrt(ss / df) if df else math.nan), df

    def decide(self, choice_split: str | None) -> None:
        rows = self.standings(choice_split)
        sd, df = self.noise(choice_split)
        lead, second = rows[0], rows[1]
        gap = lead["mean"] - second["mean"]
        bar = self.k * sd * math.sqrt(1 / lead["n"] + 1 / second["n"]) if df else math.inf
        self.history.append(
            {
                "round": self.rounds,
                "means": {r["candidate"]: (r["mean"], r["n"]) for r in rows},
                "gap": gap,
                "bar": bar,
                "sd": sd,
            }
        )
        if gap > bar:
            self.stop, self.pick = "ahead", lead["candidate"]
        else:
            self._next_round()

    def rerace(
        self, top: int | None = None, seeds: int | None = None, budget: int | None = None, k: float | None = None
    ) -> Race:
        """A fresh race for this cell's grown search (``--resume --num-samples N``), started when the grown search
        ends: its options (these, or this race's), a budget of its own, and every race run so far carried over —
        ended ones count for their candidate if it is a candidate again; one still running (an interrupted sweep)
        is recorded when it ends. What this race decided moves to :attr:`earlier`."""
        before = list(getattr(self, "earlier", []))  # a race saved before re-racing existed has none
        summary = {
            "candidates": list(self.candidates or []),
            "rounds": self.rounds,
            "stop": self.stop,
            "pick": self.pick,
            "race_runs": self.used,
            "history": list(self.history),
        }
        return Race(
            top=self.top if top is None else top,
            seeds=self.seeds if seeds is None else seeds,
            budget=self.budget if budget is None else budget,
            k=self.k if k is None else k,
            draw_seed=self.draw_seed,
            runs={tid: dict(run) for tid, run in self.runs.items()},
            live=set(self.live),
            earlier=[*before, summary] if self.candidates is not None else before,
        )

    def reusable(self) -> dict[int, tuple[str, dict[str, Any]]]:
        """The pick's race runs that trained to the end: seed → (race trial id, run)."""
        return {
            run["seed"]: (tid, run)
            for tid, run in self.runs.items()
            if run["candidate"] == self.pick and run.get("error") is False and run.get("score") is not None
        }


@dataclass
class CellSearch:
    """What the pooled searcher holds for one cell."""

    name: str
    fixed: dict[str, Any]
    budget: int
    search: Any  # an Optuna-backed Searcher, or a ListSearch
    seeds: int = 0
    suggested: int = 0
    live: set[str] = field(default_factory=set)
    ended: int = 0
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Trial id → (config, last result, error) of every ended search trial."""
    seed_search: ListSearch | None = None
    seed_live: set[str] = field(default_factory=set)
    seed_overrides: dict[str, Any] = field(default_factory=dict)
    """Fields the seed re-runs change from the best config (``--protocol heldout``: evaluate on dev)."""
    seed_results: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Trial id → (score, # Params, error) of every ended seed re-run (what ``--seeds auto`` looks at)."""
    best: dict[str, Any] | None = None
    race: Race | None = None
    """``--race-top``: the race of the top candidates before the pick (None or ``top`` 0: no race)."""
    seed_reused: dict[str, int] = field(default_factory=dict)
    """Race trial id → seed: the pick's race runs that stand as its seed re-runs (``--protocol papers``)."""

    @property
    def search_done(self) -> bool:
        return self.suggested >= self.budget and self.ended >= self.suggested

    @property
    def racing(self) -> bool:
        return self.race is not None and self.race.top >= 2

    @property
    def picked(self) -> bool:
        """The cell's pick is made: its search has ended, and so has its race."""
        return self.search_done and (not self.racing or (self.race is not None and self.race.done))

    def has_work(self) -> bool:
        """Trials still to hand out: search trials, race runs, or seed re-runs (once the pick is made)."""
        if self.suggested < self.budget:
            return True
        if self.racing and not self.picked:
            return True  # its race starts once the search's last trial ends, and goes on until it stops
        if self.seeds <= 0:
            return False
        if not self.picked:
            return True  # its seed re-runs follow once the search's last trial ends
        return self.seed_search is None or self.seed_search.next < len(self.seed_search.configs)

    def best_config(self) -> dict[str, Any] | None:
        """Config of the cell's pick (the seed re-runs' config): the race's pick when it raced, else the best
        search trial that trained to the end."""
        if self.racing and self.race is not None and self.race.done:
            return None if self.race.pick is None else dict(self.race.configs[self.race.pick])
        best = pick_best(
            self.results.values(),
            status=_status,
            value=lambda r: r["result"].get(OBJECTIVE),
            completed_only=True,
            # what each candidate scored, as its run reported it: under --protocol heldout only held-out scores
            split=lambda r: r["result"].get("eval_split"),
            choice_split=self.choice_split,
        )
        return None if best is None else best["config"]

    @property
    def choice_split(self) -> str | None:
        """The split the best config may be chosen on: ``holdout`` when the seed re-runs report another split."""
        return "holdout" if self.seed_overrides.get("eval_split", "holdout") != "holdout" else None

    @property
    def reuses_race(self) -> bool:
        """Seed re-runs reuse the pick's race runs when they are the same runs (``--protocol papers``: no seed
        override, both read dev); under ``--protocol heldout`` race runs score held-out, seed re-runs dev."""
        return self.racing and not self.seed_overrides

    def seed_values(self, count: int) -> list[int]:
        """The seeds of the first ``count`` seed re-runs: 0, 1, 2, … without the search trials' own seed, so
        no seed re-run repeats the training of the search trial that won (its score chose the config); when
        the race's runs cannot stand as seed re-runs (``--protocol heldout``), without the pick's race seeds too."""
        taken = {(self.best or self.fixed).get("seed", 0)}
        race = self.race
        if self.racing and not self.reuses_race and race is not None and race.pick is not None:
            taken |= set(race.seeds_used.get(race.pick, []))
        out, s = [], 0
        while len(out) < count:
            if s not in taken:
                out.append(s)
            s += 1
        return out


class PooledSearcher(Searcher):
    """One search per cell behind Tune's ``Searcher`` interface, sharing one pool of slots fairly.

    Args:
        cells: one :class:`CellSearch` per cell, in the sweep's order.
    """

    def __init__(self, cells: list[CellSearch], auto_seeds: AutoSeeds | None = None):
        super().__init__(metric=OBJECTIVE, mode="max")
        self.cells = {c.name: c for c in cells}
        self.auto_seeds = auto_seeds
        self._owner: dict[str, tuple[str, str]] = {}  # trial id → (cell, role)
        self._configs: dict[str, dict[str, Any]] = {}  # trial id → its config (search trials)
        self._turn = 0
        # Driver-local, never in the saved state: the live scheduler whose state travels with this searcher's,
        # and the cells' larger budgets that a restore applies (``--resume --num-samples N``: see :meth:`grow`).
        self._scheduler: PooledScheduler | None = None
        self._grow: dict[str, CellSearch] | None = None

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # every cell's search carries its own space, metric and mode

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return False  # the pool's limit is Tune's ConcurrencyLimiter around this searcher

    # ----- suggesting -----

    def _order(self) -> list[CellSearch]:
        cells = list(self.cells.values())
        start = self._turn % len(cells)
        rotated = cells[start:] + cells[:start]
        # stable: round robin on ties
        return sorted(rotated, key=lambda c: len(c.live) + len(c.seed_live) + (len(c.race.live) if c.race else 0))

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        auto = self.auto_seeds
        if auto is not None and not auto.finished and self._seeds_idle():
            self._look()
        if not any(c.has_work() for c in self.cells.values()):
            if auto is not None and not auto.finished:
                return None  # seed re-runs still running: a look at the claims follows when they end
            return Searcher.FINISHED
        for cell in self._order():
            config = self._suggest_in(cell, trial_id)
            if config is not None:
                self._turn += 1
                return config
        return None  # cells wait for their searches to end before their seed re-runs: ask again later

    def _suggest_in(self, cell: CellSearch, trial_id: str) -> dict[str, Any] | None:
        if cell.suggested < cell.budget:
            params = cell.search.suggest(trial_id)
            if params is None:
                return None
            cell.suggested += 1
            cell.live.add(trial_id)
            self._owner[trial_id] = (cell.name, TRIAL)
            self._configs[trial_id] = {**cell.fixed, **params}
            return {**self._configs[trial_id], CELL_KEY: cell.name, ROLE_KEY: TRIAL}
        if cell.racing and cell.search_done and cell.race is not None and not cell.race.done:
            race = cell.race
            if race.candidates is None:
                race.start(cell.results, cell.choice_split)
                logger.info("%s: racing %d candidates on extra seeds", cell.name, len(race.candidates or []))
            params = race.suggest(trial_id)
            if params is None:
                return None  # this round's runs are still running: the next round (or the pick) follows
            self._owner[trial_id] = (cell.name, RACE)
            return {**params, CELL_KEY: cell.name, ROLE_KEY: RACE}
        if cell.seeds > 0 and cell.picked:
            if cell.seed_search is None:
                best = cell.best = cell.best_config()
                configs = [] if best is None else self._seed_configs(cell, 0, cell.seeds)
                cell.seed_search = ListSearch(configs)
                if best is None:
                    logger.warning("%s: no trial completed, so no --seeds re-runs", cell.name)
            params = cell.seed_search.suggest(trial_id)
            if params is None:
                return None
            cell.seed_live.add(trial_id)
            self._owner[trial_id] = (cell.name, SEED_RUN)
            return {**params, CELL_KEY: cell.name, ROLE_KEY: SEED_RUN}
        return None

    def _seed_configs(self, cell: CellSearch, start: int, stop: int) -> list[dict[str, Any]]:
        """Seed re-runs ``start`` … ``stop`` − 1 of ``cell``'s pick (seeds: :meth:`CellSearch.seed_values`). Under
        ``--protocol papers`` a race run of the pick with that seed is the same run: it stands as that seed
        re-run (its score joins ``seed_results``) and is not run again."""
        reuse = cell.race.reusable() if cell.reuses_race and cell.race is not None else {}
        out = []
        for seed in cell.seed_values(stop)[start:stop]:
            if seed in reuse:
                tid, run = reuse[seed]
                cell.seed_reused[tid] = seed
                cell.seed_results[tid] = {"score": run["score"], "params": run.get("params"), "error": False}
            else:
                out.append({**(cell.best or {}), **cell.seed_overrides, "seed": seed})
        return out

    # ----- --seeds auto -----

    def _seeds_idle(self) -> bool:
        """Every cell's search and every seed re-run handed out so far have ended."""
        return all(
            c.search_done and c.seed_search is not None and not c.seed_live and not c.has_work()
            for c in self.cells.values()
        )

    def _look(self) -> None:
        """Test the claims on the ended seed re-runs; grow the cells behind the open ones."""
        assert self.auto_seeds is not None
        scores, params = {}, {}
        for c in self.cells.values():
            ok = [r for r in c.seed_results.values() if not r["error"] and r["score"] is not None]
            scores[c.name] = [float(r["score"]) for r in ok]
            params[c.name] = [float(r["params"]) for r in ok if r["params"] is not None]
        counts = {
            c.name: len(c.seed_search.configs) + len(c.seed_reused)
            for c in self.cells.values()
            if c.seed_search is not None
        }
        for name, target in self.auto_seeds.look(scores, params, counts).items():
            cell = self.cells[name]
            if cell.best is None or cell.seed_search is None:
                continue
            start = len(cell.seed_search.configs) + len(cell.seed_reused)
            cell.seed_search.configs += self._seed_configs(cell, start, target)
            cell.seeds = target

    # ----- results -----

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        owner = self._owner.get(trial_id)
        if owner is not None and owner[1] == TRIAL:
            self.cells[owner[0]].search.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        owner = self._owner.get(trial_id)
        if owner is None:
            return
        cell = self.cells[owner[0]]
        if owner[1] == RACE:
            if cell.race is not None:
                cell.race.record(trial_id, result, error, cell.choice_split)
                if cell.race.done and cell.race.pick is not None:
                    race = cell.race
                    logger.info(
                        "%s: the race picked %s (%s after %d round(s))", cell.name, race.pick, race.stop, race.rounds
                    )
            return
        if owner[1] == SEED_RUN:
            cell.seed_live.discard(trial_id)
            res = result or {}
            cell.seed_results[trial_id] = {
                "score": res.get(OBJECTIVE),
                "params": res.get("method_params"),
                "error": bool(error),
            }
            return
        cell.search.on_trial_complete(trial_id, result=result, error=error)
        if trial_id in cell.live:
            cell.live.discard(trial_id)
            cell.ended += 1
            config = self._configs.get(trial_id, cell.fixed)
            cell.results[trial_id] = {"config": config, "result": dict(result or {}), "error": bool(error)}

    # ----- what the driver reads -----

    def cell_of(self, trial_id: str) -> tuple[str, str] | None:
        return self._owner.get(trial_id)

    def optuna_states(self, cell: str) -> dict[str, str]:
        search = self.cells[cell].search
        return search.trial_states() if hasattr(search, "trial_states") else {}

    # ----- Tune's experiment checkpoint (restore after a driver crash) -----

    def save(self, checkpoint_path: str) -> None:
        import cloudpickle

        with open(checkpoint_path, "wb") as f:
            cloudpickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))

    # Tune saves the searcher with every experiment snapshot but never the scheduler (``TuneController.save_to_dir``
    # writes the trials, the search algorithm and the callbacks; ``Tuner.restore`` rebuilds the scheduler from
    # ``tuner.pkl`` as it was at the start). So the pooled scheduler's state — every cell's ASHA rungs — travels in
    # this searcher's state: the same file, written at the same moment as the trials it describes.

    def attach_scheduler(self, scheduler: PooledScheduler) -> None:
        """Save ``scheduler``'s state with this searcher's and restore it into ``scheduler`` (the live one)."""
        self._scheduler = scheduler

    def grow(self, cells: list[CellSearch]) -> None:
        """Extend the sweep: each cell's budget (and random configs) become those of ``cells``, applied when Tune
        restores this searcher's state (the restored searches keep their history: an Optuna study goes on from
        every trial it has seen). Budgets never shrink."""
        self._grow = {c.name: c for c in cells}

    def _apply_grow(self) -> None:
        for new in (self.__dict__.get("_grow") or {}).values():
            cell = self.cells.get(new.name)
            if cell is None:
                continue
            before = cell.budget
            if isinstance(cell.search, ListSearch) and isinstance(new.search, ListSearch):
                # Seeded draws: the first configs are the ones already handed out; append the rest.
                done = list(cell.search.configs)
                cell.search.configs = done + list(new.search.configs[len(done) :])
                cell.budget = max(cell.budget, len(cell.search.configs))
            else:
                cell.budget = max(cell.budget, new.budget)
            if cell.budget > before:
                seen = len(getattr(getattr(cell.search, "_ot_study", None), "trials", ()) or cell.results)
                logger.info("%s: %d → %d trials (its search goes on from %d)", cell.name, before, cell.budget, seen)
                if cell.race is not None and cell.race.top >= 2:
                    # The grown search may change the top candidates: race again once it ends (earlier race runs
                    # carried over), with the options of this resume when it names them.
                    opts = new.race if new.race is not None and new.race.top >= 2 else None
                    cell.race = cell.race.rerace(*(() if opts is None else (opts.top, opts.seeds, opts.budget, opts.k)))
        self._grow = None

    def get_state(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("_scheduler", "_grow")}
        scheduler = self.__dict__.get("_scheduler")
        if scheduler is not None:
            state["scheduler_state"] = scheduler.get_state()
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        scheduler_state = state.pop("scheduler_state", None)
        for key in ("_scheduler", "_grow"):
            state.pop(key, None)
        self.__dict__.update(state)
        scheduler = self.__dict__.get("_scheduler")
        if scheduler is not None and scheduler_state is not None:
            scheduler.set_state(scheduler_state)
        if self.__dict__.get("_grow"):
            self._apply_grow()


class PooledScheduler(TrialScheduler):
    """Routes each trial to its cell's scheduler (ASHA per cell; race runs and seed re-runs: FIFO, full budget).

    Args:
        per_cell: cell name → a factory of that cell's scheduler (called once per cell).
    """

    def __init__(self, per_cell: Mapping[str, Callable[[], TrialScheduler]]):
        super().__init__()
        self._metric = OBJECTIVE
        self._factories = dict(per_cell)
        self.cells: dict[str, TrialScheduler] = {}
        self._fifo = FIFOScheduler()

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True

    def _of(self, trial) -> TrialScheduler:
        config = trial.config or {}
        name = config.get(CELL_KEY)
        if config.get(ROLE_KEY) != TRIAL or name not in self._factories:
            return self._fifo
        if name not in self.cells:
            self.cells[name] = self._factories[name]()
        return self.cells[name]

    def on_trial_add(self, tune_controller, trial) -> None:
        scheduler = self._of(trial)
        # Tune re-adds every trial of a restored experiment: one the restored state already tracks keeps its
        # bracket (and its recorded rungs); one that had ended before the snapshot has nothing left to decide.
        tracked = trial.trial_id in (getattr(scheduler, "_trial_info", None) or {})
        if tracked or getattr(trial, "status", None) in ("TERMINATED", "ERROR"):
            return
        scheduler.on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial) -> None:
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller):
        # Paused trials never occur (ASHA stops, it does not pause): the first pending trial, i.e. the order
        # the pooled searcher created them in, which is already fair between cells.
        return self._fifo.choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        return f"One scheduler per cell ({len(self._factories)} cells)."

    # Saved and restored through the pooled searcher's state (Tune itself never saves a scheduler).

    def get_state(self) -> dict[str, Any]:
        """Every cell's scheduler as it stands: ASHA's brackets, each rung's recorded results, the trials it
        tracks, how many it stopped."""
        return {"cells": dict(self.cells)}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.cells.update(state.get("cells") or {})
