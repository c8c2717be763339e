"""Replay a recorded benchmark (``bench/record_curves.py``) through the sweep's own pool: the searchers and
schedulers of a real sweep (``sweeps.pool.PooledSearcher`` / ``PooledScheduler``, Optuna TPE, ASHA, built by the
same functions as a sweep's cells) with N slots, where each trial replays a recorded learning curve at the recorded
speed.

    python bench/replay.py --method weightlora --slots 8,32 --seeds 20 \
        [--strategies grid,random,tpe,tpe_asha,default,...] [--engine sim|tune] [--delta D] [--markdown out.md]

**Two engines.** ``tune`` (real Ray Tune): each trial is a Tune trial that sleeps the recorded seconds ×
``--time-scale`` between its reports; virtual times are wall times / time scale, so Ray's and Tune's own overheads
and the start-up of worker processes are in them (scaled up likewise). ``sim`` (the default, used for the
statistics): the very same searcher and scheduler objects, called as Tune's controller calls them
(``on_trial_add``; ``on_trial_result`` for each evaluation and then the summary report; ``on_trial_complete`` on
STOP or at the end), with every evaluation arriving at its recorded time on N slots — deterministic, and
thousands of sweeps in minutes on 2 cores.

**How searchers choose among recorded points.** The space of a replayed cell is the recorded grid itself:
one categorical dimension per recorded hyperparameter with exactly the recorded values, so every suggestion
(TPE, random or grid) is a recorded point. A trial replays one of the point's recorded seeds, drawn from the
trial id and the searcher seed (so repeated suggestions of one point see seed noise, as real trials would).

**What is reported** per strategy and slot count, over searcher seeds: the trial-epochs (and virtual seconds)
spent until the sweep's answer matches the grid's best — the incumbent (the full-budget trial with the best
*observed* score so far, what the sweep would report) is a point whose mean over its recorded seeds is within δ of
the best point's mean; δ defaults to the benchmark's own seed noise. Medians with a 95 % bootstrap interval of the
median (a seed that never got there counts as infinite), as a share of the grid's trial-epochs (every point run
once to the end); and, for the whole sweep, its trial-epochs and makespan next to what ``--forecast``'s model
(``sweeps.forecast``) predicts for the same plan.

**Racing** (``NAME_race``, ``sim`` engine): NAME's search, then the sweep's own race before the pick
(``sweeps.pool.Race`` in the replayed cell's ``CellSearch``, options :func:`race_options`); a race run replays a
recorded seed its point has not been replayed with, while one is left. ``bench/regret.py`` judges each strategy's
pick by its regret on the recorded seeds it did not see.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.record_curves import load, point_key

OBJECTIVE = "eval_main"


class Table:
    """The recorded runs of one method: point key → {recorded seed → run}.

    ``collapse``: points whose recorded curves are identical for every seed (twins: e.g. a dimension that never
    acts) become one point, the first key in sorted order; the others are remembered in ``aliases`` (collapsed key
    → its representative) and a trial suggesting one replays its representative's runs under the representative's
    key. The search space stays the recorded grid (``values``, ``grid_size``). ``draw``: how a trial picks one of
    the point's recorded seeds from its draw string: ``index`` (the hash modulo the number of seeds, the replay's
    own), ``stable`` (the seed with the highest hash of draw and seed, so dropping a seed changes only the
    trials that drew it) or ``shared`` (every search trial of one replay replays the same recorded seed, the
    replay's searcher seed modulo the recorded seeds, as a real sweep runs every search trial on its one ``seed``:
    a seed that lifts every point lifts every trial of the replay alike; a point without that seed: ``stable``).
    A run may carry ``origin``: the recorded seed it copies (a bootstrap resample's runs are
    relabelled 0 … n − 1); without it, its own seed."""

    def __init__(self, path: str | Path, method: str, *, collapse: bool = False, draw: str = "index"):
        meta, runs = load(path)
        self._fill(meta, runs, method, draw)
        if not self.points:
            raise ValueError(f"{path}: no recorded {method} runs")
        if collapse:
            self._collapse()

    @classmethod
    def from_runs(
        cls,
        meta: dict[str, Any],
        runs: list[dict[str, Any]],
        method: str,
        *,
        collapse: bool = False,
        draw: str = "index",
        aliases: dict[str, str] | None = None,
        alias_points: dict[str, dict[str, Any]] | None = None,
    ) -> Table:
        """A table of the given run lines (a subset or a resample of a recorded file's); ``aliases`` /
        ``alias_points``: twins already collapsed in the table the runs come from."""
        t = cls.__new__(cls)
        t._fill(meta, runs, method, draw)
        if not t.points:
            raise ValueError(f"no {method} runs given")
        t.aliases.update(aliases or {})
        t.alias_points.update(alias_points or {})
        if collapse:
            t._collapse()
        return t

    def _fill(self, meta: dict[str, Any], runs: list[dict[str, Any]], method: str, draw: str) -> None:
        if draw not in ("index", "stable", "shared"):
            raise ValueError(f"draw {draw!r}: index, stable or shared")
        self.meta, self.method, self.draw = meta, method, draw
        self.points: dict[str, dict[str, Any]] = {}
        self.aliases: dict[str, str] = {}
        self.alias_points: dict[str, dict[str, Any]] = {}
        for r in runs:
            if r["method"] == method and r["status"] == "completed":
                self.points.setdefault(r["key"], {"point": r["point"], "runs": {}})["runs"][r["seed"]] = r
        if not self.points:
            return
        self.dims = sorted(next(iter(self.points.values()))["point"])
        self.budget = self.meta["budget"]
        self.steps_per_epoch = math.ceil(self.budget["train_subset"] / self.budget["batch_size"])
        first = next(iter(next(iter(self.points.values()))["runs"].values()))
        self.evals, self.steps = len(first["curve"]), first["curve"][-1][0]
        self.epochs = self.steps / self.steps_per_epoch  # of one full trial

    def _collapse(self) -> None:
        groups: dict[str, list[str]] = {}
        for key, p in self.points.items():
            curves = json.dumps(sorted((str(s), r["curve"]) for s, r in p["runs"].items()))
            groups.setdefault(curves, []).append(key)
        for keys in groups.values():
            rep, *twins = sorted(keys)
            for k in twins:
                self.aliases[k] = rep
                self.alias_points[k] = self.points.pop(k)["point"]

    @property
    def collapsed(self) -> int:
        """How many recorded points are twins of another (collapsed into it)."""
        return len(self.aliases)

    @property
    def grid_size(self) -> int:
        """Points in the recorded grid (what a grid search runs), twins included."""
        return len(self.points) + len(self.aliases)

    def runs(self) -> list[dict[str, Any]]:
        """Every run of the table's points (representatives only), in key and seed order."""
        return [self.points[k]["runs"][s] for k in sorted(self.points) for s in sorted(self.points[k]["runs"])]

    def _derived(self, runs: list[dict[str, Any]]) -> Table:
        return Table.from_runs(
            self.meta, runs, self.method, draw=self.draw, aliases=self.aliases, alias_points=self.alias_points
        )

    def without(self, key: str, seed: Any) -> Table:
        """This table less one run (leave-one-run-out); a point must keep one run at least."""
        if len(self.points[key]["runs"]) < 2:
            raise ValueError(f"{key} has one run only")
        return self._derived([r for r in self.runs() if (r["key"], r["seed"]) != (key, seed)])

    def resample(self, rng) -> Table:
        """A bootstrap resample: each point's runs drawn with replacement (as many as it has), relabelled
        0 … n − 1, each remembering the recorded seed it copies as ``origin``."""
        out = []
        for key in sorted(self.points):
            runs = [self.points[key]["runs"][s] for s in sorted(self.points[key]["runs"])]
            for label, i in enumerate(rng.integers(0, len(runs), len(runs))):
                out.append({**runs[i], "seed": label, "origin": origin(runs[i])})
        return self._derived(out)

    def reweight(self, rng) -> Table:
        """A Bayesian bootstrap (Rubin 1981): each point's runs weighted by a flat Dirichlet draw (× their number,
        so 1 on average); a point's mean and, under ``draw="stable"``, the run a trial draws follow the weights."""
        out = []
        for key in sorted(self.points):
            runs = [self.points[key]["runs"][s] for s in sorted(self.points[key]["runs"])]
            weights = rng.dirichlet([1.0] * len(runs)) * len(runs)
            out += [{**r, "weight": float(w)} for r, w in zip(runs, weights, strict=True)]
        return self._derived(out)

    def seed_noise(self) -> float:
        """The benchmark's own seed noise: the pooled standard deviation of one run's final score around its
        point's mean (points with ≥ 2 recorded seeds)."""
        sq, dof = 0.0, 0
        for p in self.points.values():
            finals = [r["curve"][-1][1] for r in p["runs"].values()]
            if len(finals) >= 2:
                mu = statistics.fmean(finals)
                sq += sum((f - mu) ** 2 for f in finals)
                dof += len(finals) - 1
        return math.sqrt(sq / dof) if dof else 0.0

    def values(self) -> dict[str, list]:
        points = [p["point"] for p in self.points.values()] + list(self.alias_points.values())
        return {d: sorted({p[d] for p in points}) for d in self.dims}

    def mean_final(self, key: str) -> float:
        return final_mean(self.points[key]["runs"].values())

    def grid_best(self) -> float:
        return max(self.mean_final(k) for k in self.points)

    def key_of(self, config: dict[str, Any]) -> str:
        """The table's point of a suggested config (a collapsed twin's representative)."""
        key = point_key(self.method, {d: config[d] for d in self.dims})
        key = self.aliases.get(key, key)
        if key not in self.points:
            raise KeyError(f"{key} was not recorded")
        return key

    def _ranked(self, key: str, draw: str) -> list[Any]:
        """The point's seeds in a seeded order: an exponential race on the hash of ``draw`` and the seed, so a
        seed comes first with probability its weight / the point's (weighted rendezvous hashing; unweighted: the
        highest hash first)."""
        runs = self.points[key]["runs"]

        def arrival(s: Any) -> float:
            u = (int(hashlib.sha256(f"{draw}|{s}".encode()).hexdigest(), 16) + 1) / (2**256 + 1)
            return -math.log(u) / runs[s].get("weight", 1.0)

        return sorted(runs, key=arrival)

    def shared_seeds(self) -> list[Any]:
        """The recorded seeds (origins) of the table, in order: ``draw="shared"`` picks one per replay."""
        return sorted({origin(r) for p in self.points.values() for r in p["runs"].values()}, key=str)

    def run_for(self, config: dict[str, Any], draw: str) -> dict[str, Any]:
        """The recorded run a search trial replays; ``draw`` is ``"<searcher seed>:<trial id>"``."""
        key = self.key_of(config)
        if self.draw == "shared":
            seeds = self.shared_seeds()
            want = seeds[int(draw.split(":", 1)[0]) % len(seeds)]
            runs = self.points[key]["runs"]
            same = [s for s in self._ranked(key, draw) if origin(runs[s]) == want]
            return runs[same[0] if same else self._ranked(key, draw)[0]]
        if self.draw == "stable":
            return self.points[key]["runs"][self._ranked(key, draw)[0]]
        seeds = sorted(self.points[key]["runs"])
        pick = int(hashlib.sha256(draw.encode()).hexdigest(), 16) % len(seeds)
        return self.points[key]["runs"][seeds[pick]]

    def race_run(self, config: dict[str, Any], draw: str, seen: dict[Any, int]) -> tuple[dict[str, Any], bool]:
        """The recorded run a race run of ``config`` replays: a seed whose recorded run no trial of the point has
        replayed yet (``seen``: origin → how many trials of the point replayed it), in ``draw``'s hash order;
        when every one has been, the least replayed one (hash order on ties), and True (a reuse)."""
        key = self.key_of(config)
        runs = self.points[key]["runs"]
        ranked = self._ranked(key, draw)
        fresh = [s for s in ranked if not seen.get(origin(runs[s]))]
        if fresh:
            return runs[fresh[0]], False
        return runs[min(ranked, key=lambda s: seen.get(origin(runs[s]), 0))], True


def final_mean(runs) -> float:
    """The mean final score of recorded runs (weighted when they carry a Bayesian bootstrap's ``weight``)."""
    runs = list(runs)
    if not any("weight" in r for r in runs):
        return statistics.fmean(r["curve"][-1][1] for r in runs)
    return math.fsum(r["weight"] * r["curve"][-1][1] for r in runs) / math.fsum(r["weight"] for r in runs)


def origin(run: dict[str, Any]) -> Any:
    """The recorded seed a run is (a resampled copy keeps its original's)."""
    return run.get("origin", run["seed"])


def replay_trainable(config: dict[str, Any], *, table: Table, time_scale: float, run_seed: int) -> None:
    """Tune trainable: report the recorded curve of the suggested point, sleeping the recorded time × scale."""
    from ray import tune

    from trainables import FINAL_KEY

    run = table.run_for(config, f"{run_seed}:{tune.get_context().get_trial_id()}")
    started = time.time()  # Tune's own `timestamp` is whole seconds: too coarse at small time scales
    time.sleep(run["startup_s"] * time_scale)
    prev = 0
    last: dict[str, Any] = {}
    for step, score in run["curve"]:
        time.sleep(((step - prev) * run["step_s"] + run["eval_s"]) * time_scale)
        prev = step
        last = {
            OBJECTIVE: score,
            "step": step,
            "epoch": step / table.steps_per_epoch,
            "recorded_seed": run["seed"],
            "replay_start": started,
            "replay_wall": time.time(),
        }
        tune.report(dict(last))
    tune.report({**last, FINAL_KEY: 1.0})


@dataclass(frozen=True)
class Strategy:
    """A search and a scheduler, as the sweep would build them (``sweeps.search``)."""

    search: str  # grid | random | tpe
    asha: bool = False
    scheduler: dict[str, Any] = field(default_factory=dict)  # make_scheduler options
    tpe: dict[str, Any] = field(default_factory=dict)  # make_optuna options
    race: dict[str, Any] | None = None  # sweeps.pool.Race options (top, seeds, budget, k); None: no race


def default_strategy() -> Strategy:
    """The sweep's default search (``sweeps.search_defaults``): TPE + ASHA with the default options, without the
    race the sweep then runs by default (that is ``default_race``, with :func:`race_options`)."""
    from sweeps.search_defaults import SEARCH_DEFAULTS as d

    return Strategy(
        "tpe",
        True,
        {k: d[k] for k in ("grace_period", "reduction_factor", "brackets")},
        {k: d[k] for k in ("multivariate", "startup_share")},
    )


def race_options() -> dict[str, Any]:
    """The sweep's default race (``sweeps.search_defaults.RACE_DEFAULTS``: the top 3, one seed, one round); were
    those to race nothing (top 0), the top 3 candidates, 1 seed per round, k = 1. Budget: top × seeds × rounds, as
    ``sweeps.flags.race_budget`` sets it without ``--race-budget``."""
    from sweeps.search_defaults import RACE_DEFAULTS as r

    top, seeds, k = (r["top"], r["seeds"], r["k"]) if r["top"] >= 2 else (3, 1, 1.0)
    return {"top": top, "seeds": seeds, "budget": top * seeds * r["rounds"], "k": k}


STRATEGIES: dict[str, Strategy] = {
    "grid": Strategy("grid"),
    "random": Strategy("random"),
    "tpe": Strategy("tpe"),
    "random_asha": Strategy("random", True),
    "tpe_asha": Strategy(
        "tpe",
        True,
        {"grace_period": 1, "reduction_factor": 2, "brackets": 1},
        {"multivariate": False, "startup_share": 1 / 3},
    ),
    "tpe_asha_eta3": Strategy("tpe", True, {"reduction_factor": 3}),
    "tpe_asha_eta4": Strategy("tpe", True, {"reduction_factor": 4}),
    "tpe_asha_grace2": Strategy("tpe", True, {"grace_period": 2}),
    "tpe_asha_brackets2": Strategy("tpe", True, {"brackets": 2}),
    "tpe_asha_mv": Strategy("tpe", True, {}, {"multivariate": True}),
    "tpe_asha_nolie": Strategy("tpe", True, {}, {"constant_liar": False}),
    "tpe_asha_startup10": Strategy("tpe", True, {}, {"startup_share": 0.1}),
    "tpe_asha_startup50": Strategy("tpe", True, {}, {"startup_share": 0.5}),
    "tpe_mv_asha_eta3": Strategy("tpe", True, {"reduction_factor": 3}, {"multivariate": True}),
}


RACED = ("grid", "random", "tpe", "random_asha", "tpe_asha", "default")


def strategy(name: str | Strategy) -> Strategy:
    """A strategy by name; ``NAME_race`` (NAME one of ``RACED``): NAME with the race of :func:`race_options`."""
    if isinstance(name, Strategy):
        return name
    if name.endswith("_race") and name[: -len("_race")] in RACED:
        return dataclasses.replace(strategy(name[: -len("_race")]), race=race_options())
    if name == "default":
        return default_strategy()
    if name not in STRATEGIES:
        known = ", ".join(["default", *STRATEGIES, *(f"{n}_race" for n in RACED)])
        raise SystemExit(f"unknown strategy {name!r}; known: {known}")
    return STRATEGIES[name]


def build(table: Table, name: str | Strategy, seed: int, budget: int, cells: int = 1):
    """PooledSearcher and PooledScheduler over ``cells`` replayed cells (each its own search of the table, seeded
    apart, with its own ASHA and, when the strategy races, its own ``Race`` as ``sweeps.tune_run.cell_race``
    builds it), built as the sweep builds its cells; returns them and the most trials (race runs included)."""
    from ray import tune

    from sweeps.pool import (
        CellSearch,
        ListSearch,
        PooledScheduler,
        PooledSearcher,
        Race,
        race_draw_seed,
        variant_configs,
    )
    from sweeps.search import EarlyStopLedger, make_optuna, make_scheduler

    st = strategy(name)
    space = {d: tune.choice(v) for d, v in table.values().items()}
    searches, factories = [], {}
    for c in range(cells):
        cell_seed = seed * 1000 + c
        ledger = EarlyStopLedger(
            f"replay:{name if isinstance(name, str) else st.search}:{cell_seed}:{time.monotonic_ns()}"
        )
        if st.search == "grid":
            grid = {d: tune.grid_search(v) for d, v in table.values().items()}
            search: Any = ListSearch(variant_configs(grid, grid=True, num_samples=1, seed=cell_seed))
            n = len(search.configs)
        elif st.search == "random":
            search, n = ListSearch(variant_configs(space, grid=False, num_samples=budget, seed=cell_seed)), budget
        else:
            search = make_optuna(
                space, ledger=ledger, seed=cell_seed, metric=OBJECTIVE, mode="max", num_samples=budget, **st.tpe
            )
            n = budget
        race = None
        if st.race is not None and st.race["top"] >= 2:
            race = Race(**st.race, draw_seed=race_draw_seed(cell_seed, f"replay{c}"))
        searches.append(CellSearch(f"replay{c}", {}, n, search, race=race))
        factories[f"replay{c}"] = functools.partial(
            make_scheduler, st.asha, ledger=ledger, metric=OBJECTIVE, mode="max", max_t=table.evals, **st.scheduler
        )
    return (
        PooledSearcher(searches),
        PooledScheduler(factories),
        sum(c.budget + (c.race.budget if c.race else 0) for c in searches),
    )


def _trial(start: float, end: float, score: float | None, epochs: float, key: str, cell: str) -> dict[str, Any]:
    return {"start": start, "end": end, "score": score, "epochs": epochs, "key": key, "cell": cell}


def simulate(
    table: Table,
    name: str | Strategy,
    slots: int,
    seed: int,
    budget: int,
    cells: int = 1,
    info: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One replayed sweep in virtual time: the same PooledSearcher / PooledScheduler objects Tune drives, called
    the way Tune's controller calls them (``on_trial_add``; ``on_trial_result`` per evaluation, then the summary;
    on STOP or the end ``on_trial_complete`` for both), with ``slots`` trials at once (shared by ``cells`` cells, as
    the pool shares them) and every evaluation arriving at the recorded time. Deterministic, and free of the
    start-up jitter of real worker processes.

    Each trial also records its id, role (``trial`` or ``race``), the recorded run it replayed (``seed``, and
    ``origin``: the recorded seed that run is), its last observed score (``final``; ``score`` only when it ran to
    the end) and its evaluations. A race run (the sweep's own ``sweeps.pool.Race``) replays a recorded seed of its
    candidate's point that no trial of the point has replayed yet (:meth:`Table.race_run`), else reuses one.
    ``info``, when given, receives ``races`` (per cell that raced: its pick, a point key, and the pick's trial id,
    why it stopped, rounds, candidates, race runs) and ``reused`` (race runs that had to reuse a replayed seed)."""
    import heapq
    import types
    from collections import Counter, defaultdict

    import numpy as np
    from ray.tune.schedulers import TrialScheduler
    from ray.tune.search import Searcher

    from sweeps.schema import RACE
    from trainables import CELL_KEY, FINAL_KEY, ROLE_KEY

    np.random.seed(seed)  # ASHA draws each trial's bracket from numpy's global generator
    searcher, scheduler, n = build(table, name, seed, budget, cells)
    events: list[tuple[float, int, str, int]] = []  # (time, order, trial id, evaluation index)
    live: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    seen: dict[str, Counter] = defaultdict(Counter)  # point → origin → trials that replayed it
    order = started = reused = 0
    now = 0.0

    def launch() -> None:
        nonlocal order, started, reused
        while len(live) < slots and started < n:
            tid = f"replay_{started:05d}"
            config = searcher.suggest(tid)
            if config is None or config == Searcher.FINISHED:
                return
            started += 1
            role = config.get(ROLE_KEY)
            if role == RACE:
                run, again = table.race_run(config, f"{seed}:{tid}", seen[table.key_of(config)])
                reused += again
            else:
                run = table.run_for(config, f"{seed}:{tid}")
            seen[run["key"]][origin(run)] += 1
            trial = types.SimpleNamespace(trial_id=tid, config=config)
            scheduler.on_trial_add(None, trial)
            live[tid] = {"trial": trial, "run": run, "start": now, "role": role}
            first = now + run["startup_s"] + run["curve"][0][0] * run["step_s"] + run["eval_s"]
            heapq.heappush(events, (first, order, tid, 0))
            order += 1

    def end(tid: str, result: dict[str, Any], final: bool) -> None:
        t = live.pop(tid)
        scheduler.on_trial_complete(None, t["trial"], result)
        searcher.on_trial_complete(tid, result)
        score = result[OBJECTIVE] if final else None
        run = t["run"]
        out.append(
            _trial(t["start"], now, score, result["epoch"], run["key"], t["trial"].config[CELL_KEY])
            | {
                "id": tid,
                "role": t["role"],
                "seed": run["seed"],
                "origin": origin(run),
                "final": result[OBJECTIVE],
                "evals": result["training_iteration"] - (1 if final else 0),
            }
        )

    launch()
    while events:
        now, _, tid, i = heapq.heappop(events)
        t = live[tid]
        step, score = t["run"]["curve"][i]
        result = {
            OBJECTIVE: score,
            "training_iteration": i + 1,
            "step": step,
            "trial_id": tid,
            "epoch": step / table.steps_per_epoch,
        }
        action = scheduler.on_trial_result(None, t["trial"], result)
        if action == TrialScheduler.STOP:
            end(tid, result, final=False)
        else:
            searcher.on_trial_result(tid, result)
            if i + 1 == len(t["run"]["curve"]):
                summary = {**result, FINAL_KEY: 1.0, "training_iteration": i + 2}
                scheduler.on_trial_result(None, t["trial"], summary)
                searcher.on_trial_result(tid, summary)
                end(tid, summary, final=True)
            else:
                nxt = now + (t["run"]["curve"][i + 1][0] - step) * t["run"]["step_s"] + t["run"]["eval_s"]
                heapq.heappush(events, (nxt, order, tid, i + 1))
                order += 1
        launch()
    races = {}
    for cell in searcher.cells.values():
        race = cell.race
        if race is None or race.candidates is None:
            continue
        for t in out:
            if t["role"] == RACE and t["id"] in race.runs:
                t["candidate"] = race.runs[t["id"]]["candidate"]
        races[cell.name] = {
            "pick": None if race.pick is None else table.key_of(race.configs[race.pick]),
            "pick_id": race.pick,
            "stop": race.stop,
            "rounds": race.rounds,
            "candidates": list(race.candidates),
            "used": race.used,
        }
    if info is not None:
        info.update(reused=reused, races=races)
    return out


def run_tune(
    table: Table, name: str, slots: int, seed: int, budget: int, time_scale: float, storage: str, cells: int = 1
):
    """One replayed sweep on Ray Tune: each trial sleeps the recorded time × ``time_scale``; virtual times are the
    wall times / ``time_scale`` (they include Tune's and Ray's own overheads, scaled up likewise)."""
    from ray import tune

    from trainables import CELL_KEY

    searcher, scheduler, n = build(table, name, seed, budget, cells)
    trainable = tune.with_parameters(replay_trainable, table=table, time_scale=time_scale, run_seed=seed)
    t0 = time.time()
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=n,
            max_concurrent_trials=slots,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(name=f"{name}-{slots}-{seed}", storage_path=storage, verbose=0),
    )
    out = []
    for res in tuner.fit():
        df = res.metrics_dataframe
        if df is None or df.empty:
            continue
        final = bool(df["final"].fillna(0).max()) if "final" in df else False
        score = float(df[OBJECTIVE].iloc[-1]) if final else None
        key = point_key(table.method, {d: res.config[d] for d in table.dims})
        out.append(
            _trial(
                (float(df["replay_start"].min()) - t0) / time_scale,
                (float(df["replay_wall"].max()) - t0) / time_scale,
                score,
                float(df["epoch"].max()),
                key,
                res.config[CELL_KEY],
            )
        )
    return out


def spent_by(trials: list[dict[str, Any]], when: float) -> float:
    """Trial-epochs trained by time ``when`` (a running trial counts the share of its run it has done)."""
    total = 0.0
    for t in trials:
        if t["start"] >= when:
            continue
        share = 1.0 if t["end"] <= when else (when - t["start"]) / max(t["end"] - t["start"], 1e-12)
        total += t["epochs"] * share
    return total


def reach(trials: list[dict[str, Any]], table: Table, delta: float) -> dict[str, float] | None:
    """When the sweep's answer first matches the grid's best: the incumbent (the full-budget trial with the best
    *observed* score so far, which is what the sweep would report) is a point whose mean over its recorded seeds
    is within ``delta`` of the best point's mean. Its trial-epochs spent by then, and the virtual seconds."""
    target = table.grid_best() - delta
    incumbent = None
    done = sorted((t for t in trials if t["score"] is not None), key=lambda t: t["end"])
    for i, t in enumerate(done):
        if incumbent is None or t["score"] > incumbent["score"]:
            incumbent = t
        if table.mean_final(incumbent["key"]) >= target:
            return {"trial_epochs": spent_by(trials, t["end"]), "makespan_s": t["end"], "full_trials": i + 1}
    return None


def final_ok(trials: list[dict[str, Any]], table: Table, delta: float) -> bool:
    """Whether the sweep's final answer (its best observed full-budget trial) is a point within ``delta`` of the
    grid's best (by the points' means over recorded seeds)."""
    done = [t for t in trials if t["score"] is not None]
    if not done:
        return False
    best = max(done, key=lambda t: (t["score"], -t["end"]))
    return table.mean_final(best["key"]) >= table.grid_best() - delta


def summarize(hits: list[dict[str, float] | None], key: str, rng) -> dict[str, float]:
    """Median over searcher seeds (a seed that never reached counts as infinite) and a 95 % bootstrap interval of
    the median (2,000 resamples of the seeds)."""
    import numpy as np

    vals = np.array([h[key] if h else np.inf for h in hits])
    boots = np.median(rng.choice(vals, size=(2000, len(vals)), replace=True), axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5], method="lower"), np.percentile(boots, [2.5, 97.5], method="higher")
    return {key: float(np.median(vals)), f"{key}_lo": float(lo[0]), f"{key}_hi": float(hi[1])}


def forecast_of(table: Table, st: Strategy, n: int, slots: int, cells: int = 1) -> dict[str, float]:
    """What ``--forecast``'s model (``sweeps.forecast``: ASHA's expected evaluations per trial, FIFO makespan) says
    this replayed sweep costs, at the table's mean recorded speed: trial-epochs per cell, makespan of all cells."""
    import statistics as stats

    from sweeps import forecast as fc
    from sweeps.search_defaults import SEARCH_DEFAULTS as d

    recorded = [r for p in table.points.values() for r in p["runs"].values()]
    step_s, eval_s, startup_s = (stats.fmean(r[k] for r in recorded) for k in ("step_s", "eval_s", "startup_s"))
    o = {**{k: d[k] for k in ("grace_period", "reduction_factor")}, **st.scheduler}
    runs = fc.search_runs(n, table.evals, st.asha, o["grace_period"], o["reduction_factor"])
    seconds = lambda e: startup_s + table.steps * e / table.evals * step_s + e * eval_s  # noqa: E731
    durations = [[(p, seconds(e)) for p, e in outcomes] for outcomes in runs]
    return {
        "trial_epochs": sum(fc.mean_of(o) for o in runs) * table.epochs / table.evals,
        "makespan_s": fc.makespan([(durations, [])] * cells, slots),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", default="bench/recorded/sst2_minilm.jsonl")
    p.add_argument("--method", default="weightlora")
    p.add_argument(
        "--slots", default="8,32", help="comma-separated SLOTS or SLOTS:CELLS (CELLS replayed cells share the slots)"
    )
    p.add_argument("--seeds", type=int, default=20, help="searcher seeds per strategy")
    p.add_argument("--budget", type=int, default=None, help="trials per non-grid search (default: the grid's size)")
    p.add_argument(
        "--strategies",
        default="grid,random,tpe,random_asha,tpe_asha,default",
        help="comma-separated NAME or NAME@TRIALS (a per-strategy budget)",
    )
    p.add_argument(
        "--engine",
        choices=["sim", "tune"],
        default="sim",
        help="sim: virtual time, the pool's objects driven as Tune drives them; tune: real Ray Tune",
    )
    p.add_argument("--time-scale", type=float, default=0.02, help="tune engine: wall seconds per recorded second")
    p.add_argument(
        "--delta", type=float, default=None, help="how close to the grid's best counts (default: the seed noise)"
    )
    p.add_argument("--ray-temp-dir", default=None)
    p.add_argument("--json")
    p.add_argument("--markdown", help="write the comparison as a Markdown table here")
    a = p.parse_args()
    import numpy as np
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        table = Table(a.table, a.method)
        setups = [tuple(int(x) for x in (s.split(":") if ":" in s else (s, 1))) for s in a.slots.split(",")]
    except ValueError as exc:
        p.error(str(exc))
    for entry in a.strategies.split(","):
        name, _, n = entry.partition("@")
        strategy(name)
        if n and not n.isdigit():
            p.error(f"--strategies {entry}: TRIALS must be a whole number")
    delta = table.seed_noise() if a.delta is None else a.delta
    grid_epochs = len(table.points) * table.epochs
    print(
        f"{a.method}: {len(table.points)} recorded points × {table.epochs:g} epochs = {grid_epochs:g} trial-epochs "
        f"for the grid; grid best {table.grid_best():.4f} (best point's mean over seeds); δ = {delta:.4f} (seed "
        f"noise: one run's std around its point's mean); engine {a.engine}"
    )
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(0)
    for slots, cells in setups:
        bound = min(slots / cells, len(table.points)) * table.epochs / grid_epochs
        print(
            f"{slots} slots shared by {cells} cell(s): with every slot busy, a cell's first full trial ends after "
            f"≈ {bound:.2f}× the grid's trial-epochs (slots per cell × epochs / grid)"
        )
        if a.engine == "tune":
            import ray

            ray.init(num_cpus=slots, include_dashboard=False, log_to_driver=False, _temp_dir=a.ray_temp_dir)
        with tempfile.TemporaryDirectory() as storage:
            for entry in a.strategies.split(","):
                name, _, n = entry.partition("@")
                st = strategy(name)
                budget = len(table.points) if st.search == "grid" else int(n or a.budget or len(table.points))
                hits, finals, totals, spans = [], [], [], []
                for seed in range(a.seeds):
                    if a.engine == "sim":
                        trials = simulate(table, name, slots, seed, budget, cells)
                    else:
                        trials = run_tune(table, name, slots, seed, budget, a.time_scale, storage, cells)
                    spans.append(max(t["end"] for t in trials))
                    for cell in sorted({t["cell"] for t in trials}):
                        mine = [t for t in trials if t["cell"] == cell]
                        hits.append(reach(mine, table, delta))
                        finals.append(final_ok(mine, table, delta))
                        totals.append(sum(t["epochs"] for t in mine))
                row: dict[str, Any] = {"slots": slots, "cells": cells, "strategy": name, "budget": budget,
                                       "seeds": a.seeds, "runs": len(hits), "bound": bound,
                                       "reached": sum(h is not None for h in hits), "final_ok": sum(finals),
                                       "sweep_trial_epochs": float(np.mean(totals)),
                                       "sweep_ratio": float(np.mean(totals)) / grid_epochs,
                                       "sweep_makespan_s": float(np.mean(spans))}  # fmt: skip
                from statsmodels.stats.proportion import proportion_confint

                row["final_lo"], row["final_hi"] = proportion_confint(sum(finals), len(finals), method="wilson")
                row.update(summarize(hits, "trial_epochs", rng))
                row.update(summarize(hits, "makespan_s", rng))
                for k in ("", "_lo", "_hi"):
                    row[f"ratio{k}"] = row[f"trial_epochs{k}"] / grid_epochs
                if st.search != "grid":
                    row["forecast"] = forecast_of(table, st, budget, slots, cells)
                rows.append(row)
                print(line(row), flush=True)
        if a.engine == "tune":
            ray.shutdown()
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    if a.markdown:
        Path(a.markdown).write_text(markdown(rows, table, delta, a))


def _show(v: float, fmt: str) -> str:
    return "∞" if math.isinf(v) else format(v, fmt)


def line(r: dict[str, Any]) -> str:
    out = (
        f"{r['slots']:>2}:{r['cells']:<2} {r['strategy'] + '@' + str(r['budget']):24} "
        f"final answer within δ {r['final_ok']:>3}/{r['runs']} [{r['final_lo']:.2f}, {r['final_hi']:.2f}], "
        f"whole sweep {r['sweep_ratio']:.2f}× grid, "
        f"{r['sweep_makespan_s']:.0f} s | first within δ {r['reached']}/{r['runs']} after "
        f"{_show(r['ratio'], '.2f')}× [{_show(r['ratio_lo'], '.2f')}, {_show(r['ratio_hi'], '.2f')}], "
        f"{_show(r['makespan_s'], '.0f')} s"
    )
    if "forecast" in r:
        f = r["forecast"]
        out += (
            f" | forecast {f['trial_epochs'] / r['sweep_trial_epochs']:.2f}× trial-epochs, "
            f"{f['makespan_s'] / r['sweep_makespan_s']:.2f}× makespan"
        )
    return out


def markdown(rows: list[dict[str, Any]], table: Table, delta: float, a: argparse.Namespace) -> str:
    """The comparison as a Markdown table (what the README shows)."""
    command = "python bench/replay.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    out = [
        f"`{command}`\n\n"
        f"{table.method}: {len(table.points)} recorded points, grid {len(table.points) * table.epochs:g} "
        f"trial-epochs, grid best {table.grid_best():.4f}, δ = {delta:.4f}; {a.seeds} searcher seeds per row; "
        f"engine {a.engine}\n\n"
        "| slots | strategy @ trials per cell | final answer within δ [95 % Wilson] "
        "| whole sweep: trial-epochs (× grid), makespan "
        "| first within δ: trial-epochs × grid [95 % CI of median], makespan "
        "| forecast's model ÷ replay |\n"
        "|---|---|---|---|---|---|\n"
    ]
    for r in rows:
        f = r.get("forecast")
        fc = (
            ""
            if f is None
            else (f"{f['trial_epochs'] / r['sweep_trial_epochs']:.2f} / {f['makespan_s'] / r['sweep_makespan_s']:.2f}")
        )
        slots = f"{r['slots']}" + ("" if r["cells"] == 1 else f", {r['cells']} cells")
        out.append(
            f"| {slots} | {r['strategy']} @ {r['budget']} | {r['final_ok']}/{r['runs']} "
            f"[{r['final_lo']:.2f}, {r['final_hi']:.2f}] | "
            f"{r['sweep_trial_epochs']:.1f} ({r['sweep_ratio']:.2f}×), {r['sweep_makespan_s']:.0f} s | "
            f"{_show(r['ratio'], '.2f')} [{_show(r['ratio_lo'], '.2f')}, {_show(r['ratio_hi'], '.2f')}], "
            f"{_show(r['makespan_s'], '.0f')} s | {fc} |\n"
        )
    return "".join(out)


if __name__ == "__main__":
    main()
