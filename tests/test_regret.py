"""The regret analysis of a recorded benchmark (bench/regret.py): its arithmetic on hand-made tables (regret on
unseen seeds, ICC(1), tie-breaking, leave-one-run-out), and real replays of the committed table through the pool's
searchers, schedulers and race."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import pytest

from bench.record_curves import point_key
from bench.regret import Cache, evaluate, icc1, judge, main, paired_regret, pick, race_means, replay
from bench.replay import Table, strategy

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "bench" / "recorded" / "sst2_minilm.jsonl"


def toy(path: Path, finals: dict[float, list[float]], curves: dict[tuple[float, int], list[float]] | None = None):
    """A recorded table: method lora, one dimension ``lr``; each point's seeds end at the given finals (4
    evaluations every 16 steps, 1 s each, a curve rising by 0.1 per evaluation unless ``curves`` gives it)."""
    meta = {"kind": "meta", "budget": {"train_subset": 1024, "batch_size": 32, "epochs": 2}}
    lines = [json.dumps(meta)]
    for lr, seeds in finals.items():
        for seed, final in enumerate(seeds):
            scores = (curves or {}).get((lr, seed)) or [final - 0.1 * (3 - i) for i in range(4)]
            run = {"kind": "run", "method": "lora", "key": point_key("lora", {"lr": lr}), "point": {"lr": lr},
                   "seed": seed, "status": "completed", "curve": [[16 * (i + 1), s] for i, s in enumerate(scores)],
                   "step_s": 1.0, "eval_s": 1.0, "startup_s": 0.0}  # fmt: skip
            lines.append(json.dumps(run))
    path.write_text("\n".join(lines) + "\n")
    return path


def key(lr: float) -> str:
    return point_key("lora", {"lr": lr})


def trial(lr: float, seed: int, score: float | None, tid: str, role: str = "trial") -> dict:
    return {"id": tid, "key": key(lr), "seed": seed, "origin": seed, "score": score, "role": role, "epochs": 2.0}


def args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"seeds": 3, "boot": 0, "loo": "exact", "tie": "random", **kw})


def test_icc1_on_hand_computed_numbers():
    # means 2 and 6 around 4: MSB = (2·4 + 2·4) / 1 = 16, MSW = 4 / 2 = 2, n₀ = 2 → (16 − 2) / (16 + 2)
    assert icc1([[1, 3], [5, 7]]) == pytest.approx(14 / 18)
    # unequal groups: MSB = (2·9 + 3·4) = 30, MSW = 10 / 3, n₀ = (5 − 13 / 5) = 2.4 → 10 / 13
    assert icc1([[1, 3], [5, 7, 9]]) == pytest.approx(10 / 13)
    assert icc1([[1, 1], [1, 1]]) != icc1([[1, 1], [1, 1]])  # no variance at all: undefined (nan)
    assert icc1([[0.5, 0.7], [0.5, 0.7]]) == pytest.approx(-1.0)  # all noise, none between points


def test_regret_counts_only_the_unseen_seeds_of_the_pick(tmp_path):
    t = Table(toy(tmp_path / "t.jsonl", {1.0: [0.80, 0.70, 0.60], 2.0: [0.90, 0.86, 0.88]}), "lora")
    assert t.grid_best() == pytest.approx(0.88)
    # lr 1.0 seen with seed 0 (stopped early: still seen) and seed 2: only seed 1's 0.70 is unseen
    seen = [trial(1.0, 0, None, "a"), trial(1.0, 2, 0.60, "b"), trial(2.0, 1, 0.86, "c")]
    assert judge(t, seen, key(1.0)) == (pytest.approx(0.88 - 0.70), False)
    # lr 2.0 seen with seed 1 only: the mean of 0.90 and 0.88, which beats the best point's mean
    assert judge(t, seen, key(2.0)) == (pytest.approx(0.88 - 0.89), False)
    # every seed seen: the mean over all of them, flagged as a fallback
    every = [trial(2.0, s, 0.9, f"x{s}") for s in range(3)]
    assert judge(t, every, key(2.0)) == (pytest.approx(0.0), True)
    # a Bayesian bootstrap's table: the same rule on weighted means
    w = t.reweight(np.random.default_rng(0))
    runs = w.points[key(1.0)]["runs"]
    assert judge(w, seen, key(1.0)) == (pytest.approx(w.grid_best() - 0.70), False)
    assert judge(w, seen[:1], key(1.0))[0] == pytest.approx(
        w.grid_best() - (runs[1]["weight"] * 0.70 + runs[2]["weight"] * 0.60) / (runs[1]["weight"] + runs[2]["weight"])
    )


def test_paired_regret_cancels_a_seed_effect(tmp_path):
    # seed 2 lifts every point by 0.06 (a shared data order): lr 2.0 is truly 0.02 better than lr 1.0 on every seed
    t = Table(toy(tmp_path / "t.jsonl", {1.0: [0.80, 0.80, 0.86], 2.0: [0.82, 0.82, 0.88]}), "lora")
    # the pick lr 1.0 seen on seed 2 (its lucky run): unpaired, its unseen seeds 0 and 1 also carry the seed effect
    seen = [trial(1.0, 2, 0.86, "a"), trial(2.0, 0, 0.82, "b")]
    assert judge(t, seen, key(1.0))[0] == pytest.approx(0.84 - 0.80)
    assert paired_regret(t, seen, key(1.0)) == pytest.approx(0.02)  # the points' true gap, on seeds 0 and 1
    assert paired_regret(t, seen, key(2.0)) == pytest.approx(0.0)  # the best point itself
    every = [trial(1.0, s, 0.8, f"x{s}") for s in range(3)]
    assert paired_regret(t, every, key(1.0)) == pytest.approx(0.02)  # every seed seen: over all of them


def test_ties_at_random_or_by_the_earlier_rung(tmp_path):
    curves = {(1.0, 0): [0.5, 0.6, 0.70, 0.8], (2.0, 0): [0.5, 0.6, 0.75, 0.8], (3.0, 0): [0.5, 0.6, 0.7, 0.7]}
    t = Table(toy(tmp_path / "t.jsonl", {1.0: [0.8], 2.0: [0.8], 3.0: [0.7]}, curves), "lora")
    trials = [trial(1.0, 0, 0.8, "t0"), trial(2.0, 0, 0.8, "t1"), trial(3.0, 0, 0.7, "t2")]
    # by the earlier rung: lr 2.0 scored 0.75 at the third evaluation, lr 1.0 0.70
    for s in range(5):
        assert pick(t, trials, {}, "rung", np.random.default_rng(s)) == (key(2.0), True)
    # at random: both tied points come up, never the worse one, and the draw is seeded
    picks = {pick(t, trials, {}, "random", np.random.default_rng(s))[0] for s in range(20)}
    assert picks == {key(1.0), key(2.0)}
    assert pick(t, trials, {}, "random", np.random.default_rng(3)) == pick(
        t, trials, {}, "random", np.random.default_rng(3)
    )
    # one trial at the best score: no tie; stopped trials and race runs are never the search's pick
    alone = [trial(1.0, 0, 0.8, "t0"), trial(3.0, 0, None, "t1"), trial(3.0, 0, 0.95, "t2", role="race")]
    assert pick(t, alone, {}, "random", np.random.default_rng(0)) == (key(1.0), False)


def test_grid_sees_one_seed_per_point_and_twins_collapse():
    for method, points, twins in (("lora", 12, 0), ("weightlora", 44, 4)):
        t = Table(RECORDED, method, collapse=True, draw="stable")
        full = Table(RECORDED, method)
        assert (len(t.points), t.collapsed, t.grid_size) == (points, twins, len(full.points))
        assert t.values() == full.values() and set(t.aliases.values()) <= set(t.points)
        r = replay(t, strategy("grid"), 8, 0, t.grid_size, "random")
        assert len(r["trials"]) == t.grid_size and r["epochs"] == t.grid_size * t.epochs
        if not twins:  # every point run once, with one of its recorded seeds
            assert sorted(k for k, _ in r["replayed"]) == sorted(t.points)
        assert r["key"] == max(r["trials"], key=lambda x: x["score"])["key"] or r["tied"]


def test_a_race_runs_unseen_seeds_first_and_picks_its_best_mean():
    t = Table(RECORDED, "lora", collapse=True, draw="stable")
    for seed in range(3):
        r = replay(t, strategy("grid_race"), 8, seed, t.grid_size, "random")
        races = [x for x in r["trials"] if x["role"] == "race"]
        assert 3 <= len(races) <= 9 and all(x["score"] is not None for x in races)
        # a race run replays a seed its point was seen with only once every recorded seed of it was seen
        seen: dict[str, set] = {}
        for x in r["trials"]:
            if x["role"] != "race":
                seen.setdefault(x["key"], set()).add(x["origin"])
        reused = 0
        for x in sorted(races, key=lambda x: x["id"]):
            before = seen.setdefault(x["key"], set())
            if x["origin"] in before:
                assert before == {s for s in t.points[x["key"]]["runs"]}
                reused += 1
            before.add(x["origin"])
        assert reused == r["reused"]
        # the pick: the candidate with the best mean of its search score and race scores
        candidates = sorted({x["candidate"] for x in races})
        means = race_means(r["trials"], candidates)
        best = max(m for m, _ in means.values())
        by_id = {x["id"]: x for x in r["trials"]}
        assert r["key"] in {by_id[c]["key"] for c, (m, _) in means.items() if m == pytest.approx(best, abs=1e-12)}


def test_leave_one_run_out_names_the_outlier(tmp_path):
    # lr 2.0 has one lucky run (0.99): a grid that replays it picks lr 2.0, whose other seeds score 0.70
    t = Table(toy(tmp_path / "t.jsonl", {1.0: [0.8] * 3, 2.0: [0.7, 0.7, 0.99], 3.0: [0.5] * 3}), "lora", draw="stable")
    row = evaluate(t, "grid", strategy("grid"), 8, 3, args(seeds=8), t.seed_noise(), Cache(t, 8))
    assert row["mean_regret"] == pytest.approx(0.1 * 3 / 8) and row["fallbacks"] == 0  # 3 of 8 replays drew it
    assert row["loo_best"] == pytest.approx(0.0) and row["loo_best_run"] == f"{key(2.0)} seed 2"
    assert row["loo_worst"] >= row["mean_regret"] and row["loo_resims"] == 8 * 3  # each replay replayed 3 runs


def test_leave_one_run_out_replays_only_what_it_must(tmp_path):
    """Dropping a run changes only the replays that replayed it (stable seed draws): the shortcut equals
    replaying every searcher seed on every reduced table."""
    finals = {1.0: [0.80, 0.74, 0.77], 2.0: [0.70, 0.82, 0.76], 3.0: [0.60, 0.66, 0.79], 4.0: [0.72, 0.71, 0.73]}
    t = Table(toy(tmp_path / "t.jsonl", finals), "lora", draw="stable")
    for name in ("random_asha", "tpe_race"):
        st = strategy(name)
        row = evaluate(t, name, st, 4, 4, args(seeds=3), t.seed_noise(), Cache(t, 3))
        full = []
        for r in t.runs():
            tr = t.without(r["key"], r["seed"])
            full.append((statistics.fmean(replay(tr, st, 4, s, 4, "random")["regret"] for s in range(3)), r))
        worst, best = max(full, key=lambda x: x[0]), min(full, key=lambda x: x[0])
        assert row["loo_worst"] == pytest.approx(worst[0]) and row["loo_best"] == pytest.approx(best[0])
        assert row["loo_resims"] < 3 * len(t.runs())


def test_a_shared_draw_replays_one_recorded_seed_for_every_search_trial(tmp_path):
    """draw="shared": every search trial of a replay replays the recorded seed (searcher seed mod 3), as a sweep runs
    every trial on its one seed; a seed effect then lifts every point alike, so the grid's pick is the best point of
    that seed, judged on the other two. The exact leave-one-run-out still equals replaying everything again."""
    # seed 2 lifts every point by 0.1; on each seed alone lr 1.0 is best
    finals = {1.0: [0.80, 0.79, 0.90], 2.0: [0.78, 0.77, 0.88], 3.0: [0.70, 0.71, 0.81]}
    t = Table(toy(tmp_path / "t.jsonl", finals), "lora", draw="shared")
    for seed in range(6):
        r = replay(t, strategy("grid"), 8, seed, 3, "random")
        assert {x["origin"] for x in r["trials"]} == {seed % 3}
        unseen = [f for i, f in enumerate(finals[1.0]) if i != seed % 3]
        assert r["key"] == key(1.0) and r["regret"] == pytest.approx(t.grid_best() - statistics.fmean(unseen))
    stable = Table(toy(tmp_path / "t.jsonl", finals), "lora", draw="stable")
    drawn = [{x["origin"] for x in replay(stable, strategy("grid"), 8, s, 3, "random")["trials"]} for s in range(6)]
    assert any(len(o) > 1 for o in drawn)  # the stable hash mixes seeds within one replay
    st = strategy("tpe_race")
    row = evaluate(t, "tpe_race", st, 4, 3, args(seeds=3), t.seed_noise(), Cache(t, 3))
    full = []
    for run in t.runs():
        tr = t.without(run["key"], run["seed"])
        full.append(statistics.fmean(replay(tr, st, 4, s, 3, "random")["regret"] for s in range(3)))
    assert row["loo_worst"] == pytest.approx(max(full)) and row["loo_best"] == pytest.approx(min(full))


def test_the_command_on_the_recorded_table(tmp_path, capsys):
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    cmd = ["--table", str(RECORDED), "--method", "lora", "--slots", "8", "--seeds", "3", "--boot", "3", "--tie", "rung"]
    main([*cmd, "--strategies", "grid,default,default_race", "--json", str(out), "--markdown", str(md)])
    res = json.loads(out.read_text())
    head, rows = res["header"], {r["strategy"]: r for r in res["rows"]}
    assert head["points"] == 12 and head["runs"] == 24 and head["tie"] == "rung" and 0 < head["icc1"] < 1
    grid, default, race = rows["grid"], rows["default"], rows["default_race"]
    assert grid["ratio"] == pytest.approx(1.0) and grid["seen_per_point"] == 1.0 and grid["reused"] == 0
    assert default["ratio"] < 1 and race["trial_epochs"] > default["trial_epochs"] and race["race"]["top"] == 3
    for r in rows.values():
        assert r["n"] == 3 and r["regret_lo"] <= r["regret_hi"] and 0 <= r["within_lo"] <= r["within_hi"] <= 1
        assert r["loo_best"] <= r["loo_worst"] and r["loo_worst_run"].startswith("lora:")
    text = md.read_text()
    assert "ICC(1) = " in text and "earlier evaluations" in text and "| default_race @ 12 |" in text
    assert "LOO worst (run)" in text and capsys.readouterr().out.strip().endswith("|")
