"""Racing before the pick (``--race-top``): the top candidates of a cell's search get extra seeds in the same
pool until one is ahead by more than the seed noise or the race budget is spent; the pick is the best mean."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sweeps.pool import CellSearch, ListSearch, PooledSearcher, Race
from sweeps.schema import SelectionLeak
from trainables import CELL_KEY, FINAL_KEY, ROLE_KEY

HELDOUT = {"eval_split": "dev", "eval_every": 8}  # what --protocol heldout sets on the seed re-runs


def _searcher(lrs, *, top=2, seeds_per_round=1, budget=20, seeds=0, overrides=None, draw_seed=0, k=2.0):
    configs = [{"lr": lr} for lr in lrs]
    race = Race(top=top, seeds=seeds_per_round, budget=budget, k=k, draw_seed=draw_seed)
    cell = CellSearch(
        "sst2", {"task": "sst2", "seed": 0}, len(configs), ListSearch(configs), seeds=seeds, race=race,
        seed_overrides=dict(overrides or {}),
    )  # fmt: skip
    return PooledSearcher([cell])


def _result(score, split="dev", final=True):
    r = {"eval_main": score, "eval_split": split, "training_iteration": 4}
    if final:
        r[FINAL_KEY] = 1.0
    return r


def _search(searcher, scores, split="dev", stopped=()):
    """Run the cell's search trials t0, t1, … with these scores (``stopped``: cut by ASHA, no final report)."""
    got = {}
    for i in range(len(scores)):
        got[f"t{i}"] = searcher.suggest(f"t{i}")
        assert got[f"t{i}"][ROLE_KEY] == "trial"
    for i, score in enumerate(scores):
        searcher.on_trial_complete(f"t{i}", result=_result(score, split, final=i not in stopped))
    return got


def _round(searcher, scores_by_lr, split="dev", start=0):
    """Hand out every race run the pool offers now; end each with the score its candidate's lr maps to (a list:
    one score per run, in order). Returns the race configs."""
    out, i = [], start
    while True:
        cfg = searcher.suggest(f"r{i}")
        if not isinstance(cfg, dict) or cfg[ROLE_KEY] != "race":
            break
        out.append((f"r{i}", cfg))
        i += 1
    for tid, cfg in out:
        searcher.on_trial_complete(tid, result=_result(scores_by_lr[cfg["lr"]].pop(0), split))
    return out


def test_top_candidates_by_search_score_get_extra_seeds_as_race_runs():
    """The 2 best search trials that trained to the end (an ASHA-stopped trial with a higher score is not one)
    race; each race run is its candidate's config with a seed none of its runs used (never the search seed 0)."""
    s = _searcher([1e-3, 2e-3, 3e-3, 4e-3], seeds_per_round=2)
    _search(s, [0.70, 0.82, 0.95, 0.80], stopped=(2,))
    race = s.cells["sst2"].race
    runs = _round(s, {2e-3: [0.80, 0.81], 4e-3: [0.79, 0.80]})
    assert race.candidates == ["t1", "t3"]  # by search score; t2 (0.95) was cut by ASHA
    assert [(c["lr"], c["seed"]) for _, c in runs] == [(2e-3, 1), (2e-3, 2), (4e-3, 1), (4e-3, 2)]
    assert all(c[CELL_KEY] == "sst2" and c[ROLE_KEY] == "race" and c["task"] == "sst2" for _, c in runs)
    assert s.cell_of("r0") == ("sst2", "race")


def test_the_race_stops_when_the_leader_is_ahead_by_more_than_k_pooled_standard_errors():
    """Candidate A (search 0.80) and B (0.79): after each round, stop iff mean(lead) − mean(second) exceeds
    k · s_p · √(1/n_lead + 1/n_second) with s_p pooled over both. Here rounds 1 and 2 are within the noise,
    round 3 is not: B, second by its search score, is picked by its mean."""
    s = _searcher([1e-3, 2e-3], budget=20)
    _search(s, [0.80, 0.79])
    race = s.cells["sst2"].race
    runs = {1e-3: [0.70, 0.71, 0.70], 2e-3: [0.78, 0.80, 0.79]}
    a, b = [0.80], [0.79]
    for rnd in range(3):
        assert not race.done
        _round(s, runs, start=10 * rnd)
        a.append([0.70, 0.71, 0.70][rnd])
        b.append([0.78, 0.80, 0.79][rnd])
        ss = sum(((np.array(x) - np.mean(x)) ** 2).sum() for x in (a, b))
        sd = math.sqrt(ss / (len(a) - 1 + len(b) - 1))
        ahead = np.mean(b) - np.mean(a) > 2.0 * sd * math.sqrt(1 / len(a) + 1 / len(b))
        assert race.done == ahead == (rnd == 2), (rnd, race.history)
    assert race.stop == "ahead" and race.pick == "t1" and race.rounds == 3 and race.used == 6
    assert s.cells["sst2"].best_config() == {"task": "sst2", "seed": 0, "lr": 2e-3}
    assert s.suggest("x") == "FINISHED"  # no --seeds: the cell is done once its race is


def test_the_budget_caps_race_runs_and_the_pick_is_the_best_mean():
    """Budget 5 with 2 candidates × 2 seeds a round: round 1 runs 4, the last round is cut to 1 seed per
    candidate... which does not fit (1 run left for 2 candidates), so the race stops on its budget."""
    s = _searcher([1e-3, 2e-3, 3e-3], seeds_per_round=2, budget=5)
    _search(s, [0.80, 0.60, 0.79])
    race = s.cells["sst2"].race
    _round(s, {1e-3: [0.70, 0.90], 3e-3: [0.81, 0.80]})  # means 0.80 vs 0.80: within the noise
    assert race.done and race.stop == "budget" and race.used == 4 and race.rounds == 1
    # means: t0 (0.80+0.70+0.90)/3 = 0.80, t2 (0.79+0.81+0.80)/3 = 0.80 -> a tie, broken by the seeded draw
    assert race.pick in ("t0", "t2")
    assert s.suggest("x") == "FINISHED"

    s = _searcher([1e-3, 2e-3, 3e-3], seeds_per_round=2, budget=6)
    _search(s, [0.80, 0.60, 0.79])
    race = s.cells["sst2"].race
    _round(s, {1e-3: [0.60, 0.85], 3e-3: [0.81, 0.78]})
    assert not race.done
    _round(s, {1e-3: [0.80], 3e-3: [0.80]}, start=10)  # the last round, cut to 1 seed per candidate
    assert race.stop == "budget" and race.used == 6 and race.rounds == 2
    assert race.pick == "t2"  # mean 0.795 over 4 runs beats t0's 0.7625, whatever the single scores
    assert race.seeds_used == {"t0": [1, 2, 3], "t2": [1, 2, 3]}


def test_exact_ties_are_broken_by_a_seeded_draw():
    """Two candidates whose every run scores the same: the pick is a draw, the same for the same seed and
    not always the first candidate."""

    def pick(draw_seed):
        s = _searcher([1e-3, 2e-3], budget=2, draw_seed=draw_seed)
        _search(s, [0.75, 0.75])
        _round(s, {1e-3: [0.75], 2e-3: [0.75]})
        race = s.cells["sst2"].race
        assert race.stop == "budget"
        return race.pick

    picks = [pick(d) for d in range(12)]
    assert picks == [pick(d) for d in range(12)]  # seeded: a rerun picks the same
    assert set(picks) == {"t0", "t1"}


@pytest.mark.parametrize("protocol", ["papers", "heldout"])
def test_seed_reruns_never_repeat_a_seed_and_reuse_the_race_under_papers(protocol):
    """--seeds 4 after a race that gave the pick seeds 1, 2: under papers (race runs and seed re-runs read dev)
    those two runs stand as seed re-runs 1 and 2 and only seeds 3, 4 run; under heldout (race runs score
    held-out, seed re-runs dev) all 4 run, on seeds none of the pick's runs used (3, 4, 5, 6)."""
    heldout = protocol == "heldout"
    split = "holdout" if heldout else "dev"
    s = _searcher([1e-3, 2e-3], seeds=4, budget=4, overrides=HELDOUT if heldout else None)
    _search(s, [0.80, 0.70], split=split)
    _round(s, {1e-3: [0.70], 2e-3: [0.75]}, split=split)  # within the noise: a second round
    cell = s.cells["sst2"]
    assert not cell.race.done
    _round(s, {1e-3: [0.81], 2e-3: [0.70]}, split=split, start=10)
    assert cell.race.stop in ("ahead", "budget") and cell.race.pick == "t0"
    seeds = []
    while isinstance(cfg := s.suggest(f"s{len(seeds)}"), dict):
        assert cfg[ROLE_KEY] == "seed_run" and cfg["lr"] == 1e-3
        seeds.append(cfg["seed"])
    if heldout:
        assert seeds == [3, 4, 5, 6] and not cell.seed_reused
    else:
        assert seeds == [3, 4]
        assert sorted(cell.seed_reused.values()) == [1, 2]
        assert sorted(r["score"] for r in cell.seed_results.values()) == [0.70, 0.81]
    race_seeds = cell.race.seeds_used["t0"]
    assert 0 not in race_seeds + seeds  # the search seed is never run again
    assert not set(race_seeds) & set(seeds)  # no seed of the picked config runs twice


def test_race_state_survives_get_state_and_set_state(tmp_path):
    """Mid-race (round 1 handed out, one run ended), the searcher's saved state brings the race back: the
    restored searcher ends the round and decides as the uninterrupted one does."""
    import pickle

    def fresh():
        return _searcher([1e-3, 2e-3, 3e-3], budget=20)

    one = fresh()
    _search(one, [0.80, 0.79, 0.50])
    r0, r1 = one.suggest("r0"), one.suggest("r1")
    one.on_trial_complete("r0", result=_result(0.70))
    path = tmp_path / "searcher.pkl"
    one.save(str(path))
    two = fresh()
    two.restore(str(path))
    state = pickle.loads(pickle.dumps(two.get_state()))
    assert state["cells"]["sst2"].race.candidates == ["t0", "t1"]
    for searcher in (one, two):
        searcher.on_trial_complete("r1", result=_result(0.80))
        scores = {1e-3: [0.70, 0.70, 0.69], 2e-3: [0.80, 0.81, 0.80]}
        for rnd in range(3):
            _round(searcher, scores, start=10 * (rnd + 1))
    a, b = one.cells["sst2"].race, two.cells["sst2"].race
    assert (a.stop, a.pick, a.rounds, a.history) == (b.stop, b.pick, b.rounds, b.history)
    assert a.stop == "ahead" and a.pick == "t1" and [r0["seed"], r1["seed"]] == [1, 1]


def test_a_grown_search_races_again_with_earlier_race_runs_carried(tmp_path):
    """``--resume --num-samples``: a raced cell whose search grows races again once the grown search ends. The
    new race has its own budget; a candidate that raced before keeps its race runs (in its mean, their seeds not
    run again); a config that is no longer a candidate drops out; the earlier race is kept in ``earlier``."""
    s = _searcher([1e-3, 2e-3, 3e-3, 4e-3], budget=2)
    configs = s.cells["sst2"].search.configs
    s.cells["sst2"].budget = 2  # the sweep's first 2 trials of a 4-config sequence
    _search(s, [0.80, 0.79])
    _round(s, {1e-3: [0.70], 2e-3: [0.78]})
    first = s.cells["sst2"].race
    assert first.stop == "budget" and first.pick == "t1"  # means 0.75 vs 0.785
    assert s.suggest("x") == "FINISHED"
    path = tmp_path / "searcher.pkl"
    s.save(str(path))

    grown = _searcher([1e-3, 2e-3, 3e-3, 4e-3], budget=4)  # the resume's cells: 4 trials, a race budget of 4
    again = _searcher([1e-3, 2e-3], budget=2)
    again.grow(list(grown.cells.values()))
    again.restore(str(path))
    cell = again.cells["sst2"]
    assert cell.search.configs == configs and not cell.picked and cell.race.candidates is None
    assert cell.race.budget == 4 and cell.race.earlier[0]["pick"] == "t1"
    t2, t3 = again.suggest("t2"), again.suggest("t3")
    assert (t2["lr"], t3["lr"], t2[ROLE_KEY]) == (3e-3, 4e-3, "trial")
    assert again.suggest("t4") is None  # the race waits for the grown search to end
    again.on_trial_complete("t2", result=_result(0.795))
    again.on_trial_complete("t3", result=_result(0.60))
    runs = _round(again, {1e-3: [0.79], 3e-3: [0.80]}, start=10)
    race = cell.race
    assert race.candidates == ["t0", "t2"]  # search scores 0.80 and 0.795: t1 (0.79, the first race's pick) is out
    # t0 raced before with seed 1: its new run takes seed 2; t2 is new: seed 1
    assert sorted((c["lr"], c["seed"]) for _, c in runs) == [(1e-3, 2), (3e-3, 1)]
    assert race.scores()["t0"][:2] == [0.80, 0.70]  # its earlier race run counts
    assert race.used == 2 and race.rounds == 2 and not race.done  # round 1 within the noise: round 2 handed out
    # t0: 0.80, 0.70, 0.79 (mean 0.763); t2: 0.795, 0.80 (0.7975); budget 4 leaves no room for another round
    _round(again, {1e-3: [0.80], 3e-3: [0.81]}, start=20)
    assert race.stop == "budget" and race.pick == "t2" and race.used == 4
    assert again.suggest("x") == "FINISHED"


def test_a_race_run_scored_on_dev_under_heldout_is_a_selection_leak():
    """Under --protocol heldout the race's pick reads held-out scores only: a race run that reports dev raises
    SelectionLeak when its round is decided."""
    s = _searcher([1e-3, 2e-3], overrides=HELDOUT)
    _search(s, [0.80, 0.79], split="holdout")
    assert s.suggest("r0")[ROLE_KEY] == "race" and s.suggest("r1")[ROLE_KEY] == "race"
    s.on_trial_complete("r0", result=_result(0.75, "holdout"))
    with pytest.raises(SelectionLeak, match="the race's pick read a score of the dev split"):
        s.on_trial_complete("r1", result=_result(0.75, "dev"))
    # and the search scores themselves: a candidate scored on dev is refused when the race starts
    s = _searcher([1e-3, 2e-3], overrides=HELDOUT)
    _search(s, [0.80, 0.79], split="dev")
    with pytest.raises(SelectionLeak):
        s.suggest("r0")


def test_no_race_with_race_top_0():
    """--race-top 0: the cell's pick is its best search trial, seed re-runs follow at once."""
    s = _searcher([1e-3, 2e-3], top=0, seeds=1)
    _search(s, [0.70, 0.80])
    cfg = s.suggest("s0")
    assert cfg[ROLE_KEY] == "seed_run" and cfg["lr"] == 2e-3 and cfg["seed"] == 1


# ----- a real sweep (MiniLM + an SST-2 slice, local Ray in a loopback-only namespace) -----


@pytest.mark.slow
@pytest.mark.subprocess
def test_real_sweep_races_its_top_two_and_picks_the_best_mean(sweep_cmd, tmp_path):
    """LoRA on a 3-point lr grid, --race-top 2 --race-budget 4 --seeds 2 (papers protocol): the race runs are
    MLflow children with role ``race``, of the two best search trials' configs, on seeds other than 0; the
    pick (tag ``wlora.race_pick``, the state's best trial) is the candidate with the best mean over its runs as
    MLflow holds them; the seed re-runs reuse the pick's race runs and never repeat one of its seeds."""
    import json
    import subprocess

    from mlflow.tracking import MlflowClient

    from tests.conftest import ROOT, TINY

    make, env = sweep_cmd
    args = [*TINY, "--methods", "lora", "--search", "grid", "--space", "lr=grid:5e-3,2e-3,1e-7", "--no-asha"]
    args += ["--set", "warmup_steps=0", "--race-top", "2", "--race-budget", "4", "--seeds", "2"]
    args += ["--max-concurrent", "2", "--num-cpus", "2", "--name", "race"]
    out = subprocess.run(make(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-4000:]
    assert "race: each cell's top 2 candidates" in out.stdout
    state = json.loads((tmp_path / "runs" / "race" / "sweep_state.json").read_text())
    client = MlflowClient(state["tracking_uri"])
    children = client.search_runs(
        [state["experiment_id"]], filter_string=f"tags.mlflow.parentRunId = '{state['parent_run_id']}'", max_results=100
    )
    by_role: dict[str, list] = {}
    for c in children:
        by_role.setdefault(c.data.tags["wlora.role"], []).append(c)
    trials, races, seed_runs = by_role["trial"], by_role["race"], by_role.get("seed_run", [])
    assert len(trials) == 3 and 2 <= len(races) <= 4
    score = {c.data.tags["trial_id"]: c.data.metrics["eval_main"] for c in trials}
    top2 = sorted(trials, key=lambda c: -c.data.metrics["eval_main"])[:2]
    lrs = {float(c.data.params["lr"]): c.data.tags["trial_id"] for c in top2}
    assert len(lrs) == 2, "the two candidates must differ"
    runs = {tid: [score[tid]] for tid in lrs.values()}
    for r in races:
        assert r.data.tags["status"] == "completed" and r.data.params["seed"] != "0"
        runs[lrs[float(r.data.params["lr"])]].append(r.data.metrics["eval_main"])  # only candidates' configs race
    means = {tid: float(np.mean(v)) for tid, v in runs.items()}
    cell = state["cells"]["sst2-lora-r8"]
    race = cell["race"]
    assert race["pick"] == cell["best_trial_id"] and race["stop"] in ("ahead", "budget")
    assert means[race["pick"]] == pytest.approx(max(means.values()), abs=1e-9)
    assert {c["trial_id"]: c["mean"] for c in race["candidates"]} == pytest.approx(means, abs=1e-9)
    picked = [c for c in trials if c.data.tags.get("wlora.race_pick") == "1"]
    assert [c.data.tags["trial_id"] for c in picked] == [race["pick"]]
    # --seeds 2 under papers: the pick's race runs stand as its seed re-runs 1 (and 2); only missing seeds ran
    pick_lr = next(lr for lr, tid in lrs.items() if tid == race["pick"])
    reused = [r for r in races if r.data.tags.get("wlora.seed_reuse") == "1"]
    assert all(float(r.data.params["lr"]) == pick_lr for r in reused) and reused
    seeds = sorted([int(r.data.params["seed"]) for r in reused] + [int(s.data.params["seed"]) for s in seed_runs])
    assert seeds == [1, 2], seeds
    assert state["seed_cells"]["sst2-lora-r8"]["n"] == 2
    import csv

    with (tmp_path / "runs" / "race" / "results" / "table_long.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    # the table reports the pick's two seed re-runs, reused race runs included
    assert (row["source"], row["n"], sorted(row["seeds"].split(","))) == ("seed_runs", "2", ["1", "2"])


def test_the_forecast_includes_the_race(minilm_path, glue_dir, capsys):
    """The race's runs in the forecast: only search trials that train to the end are candidates, so with ASHA
    (grace 1, η 2, 8 evaluations) 8 trials leave 1.875 finishers expected: 0 (one finisher races nothing) to the
    budget's runs for 2 candidates. The default (top 3, one seed, budget 3): 0 – 2; --race-top 2 --race-seeds 2
    --race-budget 12: 0 – 12; without ASHA all 8 finish: 4 (one round) – 12; --race-top 0: none."""
    from sweeps import forecast
    from sweeps.glue_sweep import DEFAULTS, parser

    def run(*extra):
        argv = ["--tasks", "sst2", "--methods", "lora", "--model", str(minilm_path), "--data-dir", str(glue_dir.parent)]
        args = parser().parse_args([*argv, "--forecast", "a100-cluster", *extra])
        assert forecast.main(DEFAULTS, args, parser()) == 0
        return capsys.readouterr().out

    def trials(out):
        line = next(ln for ln in out.splitlines() if ln.strip().startswith("this sweep "))
        return line.split("trials")[1].split("trial-epochs")[0].strip()

    wide = ("--race-top", "2", "--race-seeds", "2", "--race-budget", "12")
    default, none, raced, all_finish = run(), run("--race-top", "0"), run(*wide), run("--no-asha", *wide)
    assert "race run" not in none and trials(none) == "8"
    assert "this sweep includes 0 – 2 race run(s) per cell" in default and trials(default) == "8 – 10"
    assert "this sweep includes 0 – 12 race run(s) per cell" in raced and trials(raced) == "8 – 20"
    assert "this sweep includes 4 – 12 race run(s) per cell" in all_finish and trials(all_finish) == "12 – 20"


def test_racing_is_on_by_default_and_off_for_a_multi_objective_sweep():
    """The default races each cell's top 3 on one extra seed each (a budget of 3 race runs). A multi-objective
    sweep keeps a Pareto front, not one pick: it does not race unless asked, and asking is refused in one line."""
    from sweeps.flags import check_args, race_budget
    from sweeps.glue_sweep import parser

    args = parser().parse_args([])
    assert (args.race_top, args.race_seeds, race_budget(args)) == (3, 1, 3)
    mo = parser().parse_args(["--multi-objective"])
    check_args(mo)
    assert mo.race_top == 0 and race_budget(mo) == 0
    asked = parser().parse_args(["--multi-objective", "--race-top", "3"])
    with pytest.raises(ValueError, match="--race-top 3: a --multi-objective sweep keeps each cell's Pareto front"):
        check_args(asked)
