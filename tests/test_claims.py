"""The claims' statistics on synthetic scores with known answers, and the claims / stability sections of
the report on an MLflow store written with the sweep's schema (seed re-runs with and without the
per-run stability metrics)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from sweeps import claims, report
from tests.test_report import NAMES, _child, assert_png
from wlora.core.stability import chance_jaccard, jaccard

# ----- statistics -----


def test_welch_matches_the_formula_and_scipy():
    from scipy import stats

    x = [0.81, 0.83, 0.80, 0.84]
    y = [0.78, 0.80, 0.79, 0.77, 0.76]
    w = claims.welch(x, y)
    vx, vy = np.var(x, ddof=1) / 4, np.var(y, ddof=1) / 5
    assert w["se"] == pytest.approx(math.sqrt(vx + vy))
    assert w["df"] == pytest.approx((vx + vy) ** 2 / (vx**2 / 3 + vy**2 / 4))
    ref = stats.ttest_ind(x, y, equal_var=False)
    assert w["t"] == pytest.approx(ref.statistic) and w["p"] == pytest.approx(ref.pvalue)
    d = np.mean(x) - np.mean(y)
    assert (w["lo"] + w["hi"]) / 2 == pytest.approx(d)
    # shifted copies: the difference is the shift, p small for a large shift relative to the spread
    base = [0.5, 0.52, 0.49, 0.51]
    w2 = claims.welch([b + 0.1 for b in base], base)
    assert w2["lo"] < 0.1 < w2["hi"] and w2["p"] < 1e-4
    # no variance: the difference is exact
    w3 = claims.welch([0.7, 0.7], [0.6, 0.6])
    assert (w3["lo"], w3["hi"], w3["p"]) == (pytest.approx(0.1), pytest.approx(0.1), 0.0)


def test_bootstrap_interval_is_seeded_and_covers_the_true_difference():
    rng = np.random.default_rng(1)
    x, y = rng.normal(0.50, 0.01, 60), rng.normal(0.40, 0.01, 60)
    lo, hi = claims.bootstrap_diff(x, y, n_boot=4000, seed=3)
    assert (lo, hi) == claims.bootstrap_diff(x, y, n_boot=4000, seed=3)
    assert lo < 0.1 < hi and lo > 0.09 and hi < 0.11
    # its width matches the normal approximation 2·1.96·SE within 15 %
    se = math.sqrt(np.var(x, ddof=1) / 60 + np.var(y, ddof=1) / 60)
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.15)
    # constant samples: a point interval
    assert claims.bootstrap_diff([2.0, 2.0, 2.0], [1.5, 1.5]) == (0.5, 0.5)


def _welch_one_sided(x, y, value, side):
    """Hand computation: Welch's t of mean(x) − mean(y) − value, one-sided p (scipy's t distribution)."""
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    t = (x.mean() - y.mean() - value) / math.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    return float(stats.t.sf(t, df) if side == "larger" else stats.t.cdf(t, df))


X = [0.812, 0.825, 0.801, 0.834, 0.818]
Y = [0.805, 0.821, 0.798, 0.811]


def test_tost_and_one_sided_tests_match_hand_computation_and_statsmodels():
    from statsmodels.stats.weightstats import ttost_ind

    d = 0.03
    p, p_opp = claims.one_sided(X, Y, "equivalent", d)
    lower, upper = _welch_one_sided(X, Y, -d, "larger"), _welch_one_sided(X, Y, d, "smaller")
    assert p == pytest.approx(max(lower, upper))  # TOST: both one-sided tests must reject
    assert p == pytest.approx(ttost_ind(X, Y, -d, d, usevar="unequal")[0])
    opp = min(1.0, 2 * min(_welch_one_sided(X, Y, -d, "smaller"), _welch_one_sided(X, Y, d, "larger")))
    assert p_opp == pytest.approx(opp)
    p, p_opp = claims.one_sided(X, Y, "noninferior", 0.01)
    assert p == pytest.approx(_welch_one_sided(X, Y, -0.01, "larger"))
    assert p_opp == pytest.approx(_welch_one_sided(X, Y, -0.01, "smaller"))
    p, p_opp = claims.one_sided(X, Y, "better", 0.01)
    assert p == pytest.approx(_welch_one_sided(X, Y, 0.0, "larger")) and p + p_opp == pytest.approx(1.0)


def test_equivalence_is_two_sided_a_far_better_method_is_not_equivalent():
    base = [0.80, 0.81, 0.79, 0.805, 0.795]
    far_better = [b + 0.10 for b in base]
    # non-inferiority would hold; equivalence is contradicted (|Δ| > δ shown)
    assert claims.one_sided(far_better, base, "noninferior", 0.01)[0] < 1e-4
    p, p_opp = claims.one_sided(far_better, base, "equivalent", 0.01)
    assert p > 0.99 and p_opp < 1e-4
    rows = claims.evaluate_claims(
        {("weightlora", "sst2"): far_better, ("lora", "sst2"): base}, {("weightlora", "sst2"): 1, ("lora", "sst2"): 4}
    )
    assert rows[0]["claim"] == "a" and rows[0]["verdict"] == "contradicted"


def test_holm_matches_hand_computation_and_statsmodels():
    from statsmodels.stats.multitest import multipletests

    ps = [0.01, 0.04, 0.03, 0.005]
    # by hand: sorted 0.005·4, 0.01·3, 0.03·2, 0.04·1, made monotone
    want = {3: 0.02, 0: 0.03, 2: 0.06, 1: 0.06}
    got = claims.holm(ps)
    assert [got[i] for i in range(4)] == pytest.approx([want[i] for i in range(4)])
    assert got == pytest.approx(list(multipletests(ps, method="holm")[1]))
    assert claims.holm([]) == []


def test_zero_variance_or_too_few_seeds_is_never_held():
    same = claims.compare([0.7, 0.7, 0.7], [0.6, 0.6, 0.6], "better")
    assert same["verdict"] == claims.INSUFFICIENT and "p_claim" not in same and "spread" in same["why"]
    one_flat = claims.compare([0.7, 0.71, 0.72], [0.6, 0.6, 0.6], "better")
    assert one_flat["verdict"] == claims.INSUFFICIENT
    two = claims.compare([0.9, 0.91], [0.5, 0.51], "better")  # a huge effect, but two seeds
    assert two["verdict"] == claims.INSUFFICIENT and "≥ 3" in two["why"]
    rows = claims.evaluate_claims({("weightlora", "t"): [0.9, 0.9, 0.9], ("random_select", "t"): [0.5, 0.5, 0.5]})
    assert rows[0]["verdict"] == claims.INSUFFICIENT and rows[0]["family"] == 0
    assert claims.undecided_arms(rows) == {("weightlora", "t"), ("random_select", "t")}


def test_power_numbers_match_statsmodels():
    from statsmodels.stats.power import TTestIndPower

    out = claims.power_numbers(X, Y, "better", 0.01, 0.05)
    sd = math.sqrt((np.var(X, ddof=1) + np.var(Y, ddof=1)) / 2)
    es = TTestIndPower().solve_power(nobs1=5, ratio=4 / 5, alpha=0.05, power=0.8, alternative="larger")
    assert out["mde"] == pytest.approx(es * sd)
    d = np.mean(X) - np.mean(Y)
    n = TTestIndPower().solve_power(effect_size=d / sd, alpha=0.05, power=0.8, alternative="larger")
    assert out["seeds_needed"] == math.ceil(n) and out["seeds_needed"] > 5
    # a huge effect: the smallest arm (2) already has the power
    assert claims.power_numbers([0.9, 0.91, 0.92], [0.5, 0.51, 0.52], "better", 0.01, 0.05)["seeds_needed"] == 2
    # the observed Δ on the wrong side: no number of seeds would show superiority
    assert claims.power_numbers(Y, X, "better", 0.01, 0.05)["seeds_needed"] is None


def test_evaluate_claims_on_constructed_scores():
    rng = np.random.default_rng(0)
    noise = lambda: rng.normal(0, 0.002, 6)  # noqa: E731
    lora = 0.85 + noise()
    scores = {
        ("lora", "sst2"): list(lora),
        ("weightlora", "sst2"): list(0.85 + noise()),  # ≈ LoRA
        ("random_select", "sst2"): list(0.78 + noise()),  # clearly worse than WeightLoRA
        ("weightlora_plus", "sst2"): list(0.70 + noise()),  # clearly worse than both
        ("lora", "stsb"): [0.80, 0.81],  # two seeds: insufficient
        ("weightlora", "stsb"): [0.80, 0.81, 0.79],
    }
    params = {("lora", "sst2"): 100.0, ("weightlora", "sst2"): 25.0}
    rows = claims.evaluate_claims(scores, params, margin=0.01, n_boot=2000)
    by = {(r["claim"], r["task"]): r for r in rows}
    a = by[("a", "sst2")]
    assert a["verdict"] == "held" and a["params_ratio"] == 0.25 and abs(a["diff"]) < 0.01
    assert a["diff"] == pytest.approx(np.mean(scores[("weightlora", "sst2")]) - np.mean(lora))
    b = by[("b", "sst2")]
    assert b["verdict"] == "held" and b["diff"] == pytest.approx(0.07, abs=0.01) and b["p_holm"] < 1e-3
    assert by[("c1", "sst2")]["verdict"] == "contradicted" and by[("c2", "sst2")]["verdict"] == "contradicted"
    assert by[("a", "stsb")]["verdict"] == claims.INSUFFICIENT
    assert ("d", "sst2") not in by  # no informed-selection arm in this sweep
    # the family: the 4 tested pairs; Holm p ≥ raw p
    assert all(r["family"] == 4 for r in rows) and all(r["p_holm"] >= r["p_claim"] for r in rows if "p_holm" in r)
    # Bonferroni over 5 looks: every test at α / 5
    assert {r["alpha"] for r in claims.evaluate_claims(scores, params, looks=5) if "alpha" in r} == {0.01}
    # the same scores with WeightLoRA training as many parameters as LoRA: (a) is contradicted
    rows = claims.evaluate_claims(scores, {("lora", "sst2"): 100.0, ("weightlora", "sst2"): 100.0}, n_boot=500)
    assert next(r for r in rows if (r["claim"], r["task"]) == ("a", "sst2"))["verdict"] == "contradicted"
    assert claims.summarize(rows)["b"] == {"held": 1}
    md = claims.claims_md(rows, scores, report.METHODS, n_boot=500, looks=3, protocol="heldout")
    assert "δ = 0.01" in md and "**held**" in md and claims.INSUFFICIENT in md and "(n=6)" in md
    assert "TOST" in md and "Holm" in md and "α / 3" in md and "Protocol: **heldout**" in md


# ----- the report's claims and stability sections -----


def _seed_store(tmp):
    """Seed re-runs on SST-2: LoRA, WeightLoRA (K = 4 of 18; logs the per-run stability metrics),
    random selection (older runs: no stability metrics, no tracker summary) and ROLoRA (ranks)."""
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("wlora-glue", artifact_location=(tmp / "artifacts").as_uri())
    parent = client.create_run(exp, run_name="seeded", tags={"wlora.role": "sweep", "wlora.sweep_name": "s"}).info
    parent = parent.run_id
    wl_sets = [NAMES[:4], NAMES[:4], NAMES[2:6]]
    rs_sets = [NAMES[0:4], NAMES[4:8], NAMES[8:12]]
    ranks = [dict.fromkeys(NAMES, 8), {**dict.fromkeys(NAMES, 8), NAMES[0]: 4, NAMES[1]: 12}, dict.fromkeys(NAMES, 8)]
    mains = {
        "lora": [0.85, 0.86, 0.84],
        "weightlora": [0.85, 0.855, 0.845],
        "random_select": [0.80, 0.79, 0.81],
        "rolora": [0.83, 0.84, 0.82],
    }
    params = {"lora": 55296, "weightlora": 12288, "random_select": 12288, "rolora": 55296}
    for method, values in mains.items():
        for seed, v in enumerate(values):
            ms = {"eval_main": v, "eval_accuracy": v}
            art = {"method": method, "n_adapters": 18}
            if method == "weightlora":
                ms.update(selection_changes=1.0 + seed, selection_last_change_step=2.0 + seed)
                ms.update(selection_decision_step=2.0, selection_margin=[0.5, 0.8, 3.0][seed])
                art.update(selected_adapters=wl_sets[seed], selection_scores=dict.fromkeys(NAMES, 0.1))
                art["selection_stability"] = {"changes": 1 + seed, "kept": dict.fromkeys(wl_sets[seed], 8)}
            elif method == "random_select":
                art.update(selected_adapters=rs_sets[seed], drawn_adapters=rs_sets[seed])
            elif method == "rolora":
                art["ranks"] = ranks[seed]
            else:
                art["ranks"] = dict.fromkeys(NAMES, 8)
            _child(
                client,
                exp,
                parent,
                f"{method}-seed{seed}",
                {"wlora.role": "seed_run", "method": method, "task": "sst2", "status": "completed", "seed": str(seed)},
                {"lr": "0.001", "r": "8"},
                [(10, ms)],
                {
                    "method_params": params[method],
                    "active_adapters": 4 if "select" in method or "weight" in method else 18,
                },
                artifact=art,
                tmp=tmp,
            )
    return uri, parent, {"wl": wl_sets, "rs": rs_sets, "ranks": ranks, "mains": mains}


def test_report_claims_and_stability_from_seed_runs(tmp_path):
    uri, parent, want = _seed_store(tmp_path)
    out = report.build_report(uri, parent, tmp_path / "out", n_boot=1000)
    stab = {r["method"]: r for r in out["meta"]["stability"]}
    assert set(stab) == {"weightlora", "random_select", "rolora"}

    wl = stab["weightlora"]
    sets = want["wl"]
    pairs = [jaccard(sets[0], sets[1]), jaccard(sets[0], sets[2]), jaccard(sets[1], sets[2])]
    assert wl["overlap"] == pytest.approx(np.mean(pairs)) and wl["chance_overlap"] == pytest.approx(
        chance_jaccard(18, 4)
    )
    assert wl["values"][NAMES[0]] == pytest.approx(2 / 3) and wl["values"][NAMES[2]] == 1.0
    assert wl["values"][NAMES[17]] == 0.0 and wl["always"] == NAMES[2:4]
    assert wl["selection_changes"] == {"mean": 2.0, "std": 1.0, "n": 3}
    assert wl["selection_last_change_step"]["mean"] == 3.0
    # the heatmap has the selection heatmap's shape: 6 layers × query/key/value, ★ = kept by every seed
    grid = wl["grid"]
    assert grid["n_cells"] == 18 and grid["modules"] == ["query", "key", "value"]
    assert sum(map(sum, grid["selected"])) == 2 and grid["values"][0][0] == pytest.approx(2 / 3)
    assert_png(tmp_path / "out" / "stability_sst2_weightlora.png")

    rs = stab["random_select"]  # disjoint draws; no per-run metrics logged: those columns are left out
    assert rs["overlap"] == 0.0 and rs["selection_changes"] is None and rs["selection_last_change_step"] is None

    ro = stab["rolora"]
    r = want["ranks"]
    wj = (16 * 8 + 4 + 8) / (16 * 8 + 8 + 12)  # seeds 0 and 1 (and 1 and 2) differ on two of 18 modules
    assert ro["overlap"] == pytest.approx((wj + 1.0 + wj) / 3) and "weighted Jaccard" in ro["overlap_measure"]
    assert ro["values"][NAMES[1]] == pytest.approx((8 + 12 + 8) / 3) and r[1][NAMES[0]] == 4

    # claims: (a) and (b) testable on SST-2, (c) has no WeightLoRA+ runs
    by = {c["claim"]: c for c in out["meta"]["claims"]}
    assert by["a"]["diff"] == pytest.approx(np.mean(want["mains"]["weightlora"]) - np.mean(want["mains"]["lora"]))
    assert by["a"]["params_ratio"] == pytest.approx(12288 / 55296)
    assert by["b"]["verdict"] == "held" and by["b"]["diff"] == pytest.approx(0.05)
    assert by["b"]["test"].startswith("superiority") and by["a"]["test"].startswith("equivalence")
    assert "c1" not in by  # no WeightLoRA+ runs: the claim is not listed
    text = (tmp_path / "out" / "report.md").read_text()
    assert "## The papers' claims" in text and "## Selection stability across seeds" in text
    assert "stability_sst2_weightlora.png" in text
    # one line per cell: when the selection was decided and whether the margin exceeded the noise
    dec = out["meta"]["decisions"]
    assert [(d["method"], d["runs"], d["clear"]) for d in dec] == [("weightlora", 3, 1)]
    assert dec[0]["decision_step"]["mean"] == 2.0
    assert "sst2 · WeightLoRA (3 seed re-runs): decided at step 2.0 ± 0.0" in text
    assert "clear of the noise in 1 of 3 runs" in text
    assert json.loads((tmp_path / "out" / "claims.json").read_text())[0]["claim"] == "a"
    # the seeded table: mean ± std of the seed re-runs
    assert "±" in (tmp_path / "out" / "table.md").read_text()


def test_report_cli_rejects_bad_margin(capsys):
    with pytest.raises(SystemExit):
        report.main(["--tracking-uri", "sqlite:///x.db", "--run-id", "r", "--margin", "-1"])
    assert "--margin" in capsys.readouterr().err


# ----- selection stability against chance -----


def test_jaccard_pvalue_exact_matches_full_enumeration_and_monte_carlo():
    import itertools

    from wlora.core.stability import jaccard_pvalue

    n, k, m = 5, 2, 3
    subsets = [set(c) for c in itertools.combinations(range(n), k)]
    values = [
        np.mean([jaccard(a, b) for a, b in itertools.combinations(t, 2)])
        for t in itertools.product(subsets, repeat=m)  # every tuple, the first seed's draw included
    ]
    for observed in (0.0, 1 / 3, 0.5, 1.0):
        want = np.mean([v >= observed - 1e-12 for v in values])
        got = jaccard_pvalue(n, k, m, observed)
        assert got["method"] == "exact" and got["p"] == pytest.approx(want)
        mc = jaccard_pvalue(n, k, m, observed, draws=20_000, exact_limit=0, pairs_limit=0)
        assert mc["method"] == "monte carlo" and mc["p"] == pytest.approx(want, abs=0.01)
    # 3 seeds past exact_limit: every pair of the other two draws at once, the same p as the enumeration
    for n, k in ((7, 3), (9, 4)):
        for observed in (0.0, 0.2, 1 / 3, 0.5, 1.0):
            fast = jaccard_pvalue(n, k, 3, observed, exact_limit=0)
            assert fast["method"] == "exact" and fast["p"] == jaccard_pvalue(n, k, 3, observed, exact_limit=10**9)["p"]
    # the stability page's case: 3 seeds, K = 4 of 18 (3,060² tuples), exact; mean pairwise Jaccard 0.27 -> p ≈ 0.04
    got = jaccard_pvalue(18, 4, 3, 0.27)
    assert got["method"] == "exact" and got["draws"] == 3060**2 and 0.02 < got["p"] < 0.07
    assert jaccard_pvalue(18, 4, 4, 0.27)["method"] == "monte carlo"  # 3,060³ tuples: sampled
    with pytest.raises(ValueError):
        jaccard_pvalue(18, 0, 3, 0.5)


def test_pairwise_interval_covers_the_observed_mean_and_stability_words():
    from sweeps.report.stability import overlap_words
    from wlora.core.stability import mean_pairwise_overlap, pairwise_interval

    sets = [{"a", "b"}, {"a", "b"}, {"a", "c"}, {"b", "c"}]
    lo, hi = pairwise_interval(sets, n_boot=2000)
    assert lo <= mean_pairwise_overlap(sets) <= hi and lo >= 0 and hi <= 1
    assert pairwise_interval(sets[:2]) is None
    assert overlap_words(0.01).startswith("more consistent") and overlap_words(0.2).startswith("not distinguishable")
