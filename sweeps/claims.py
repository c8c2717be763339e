"""The WeightLoRA paper's claims, each tested with the test its wording calls for, on the seed re-runs of a sweep.

Per task, the scores of the seed re-runs of each method's best configuration are compared (under
``--protocol heldout`` those scores come from dev, which no choice of the sweep read):

* (a) WeightLoRA ≈ LoRA with far fewer trainable parameters — **equivalence**: two one-sided Welch tests
  (TOST) with margin δ, H0: |d| ≥ δ (statsmodels ``ttost_ind``);
* (b) random selection (RLoRA, the same K) is worse than WeightLoRA — **superiority**: one-sided Welch
  test, H0: d ≤ 0;
* (c) WeightLoRA+ ≥ LoRA and WeightLoRA+ ≥ WeightLoRA — **non-inferiority**: one-sided Welch test,
  H0: d ≤ −δ;
* (d), only when the sweep has the selection-rule ablation arm (``weightlora_informed``): the
  better-informed selection beats random selection (superiority), i.e. whether letting the gates see
  more than one batch widens WeightLoRA's lead over random.

d = mean(X) − mean(Y); the arms are independent runs (not paired), so every test is Welch's. Each
claim also has the opposite test (contradicted: d < 0 for superiority, d < −δ for non-inferiority,
|d| > δ for equivalence, the smaller of its two one-sided p-values doubled).

**Family and correction.** The family is every testable (claim, task) pair of one report. Holm–Bonferroni
(statsmodels ``multipletests``) adjusts the p-values of the claims' tests across the family, and
separately those of the opposite tests; a claim is **held** when its adjusted p < α, **contradicted**
when its opposite test's adjusted p < α, else **not shown**. Under ``--seeds auto`` the claims are
looked at up to L times while seeds are added, and every look tests at α / L (Bonferroni over the
looks), so the family-wise error of the whole sequential procedure stays ≤ α.

**Too little data.** With fewer than :data:`MIN_SEEDS` runs on an arm, or no spread on an arm (e.g.
identical seeds), the verdict is **insufficient seeds**, never held. For every claim the report gives the
smallest effect its seeds could detect (power 0.8 at the corrected α, at the observed spread) and how many
seeds per arm the test would need to reach power 0.8 at the observed difference and spread
(statsmodels ``TTestIndPower``).

Claim (a) also needs WeightLoRA's # Params at most half of LoRA's to be held (and is contradicted when it
is not below LoRA's). The report also shows a seeded bootstrap interval and Welch's 95 % interval of d.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Default equivalence / non-inferiority margin δ, in units of the task score (0.01 = one point).
MARGIN = 0.01
N_BOOTSTRAP = 10_000
LEVEL = 0.95
#: Family-wise error rate of one report's verdicts.
ALPHA = 0.05
#: Power at which the detectable effect and the seeds needed are computed.
POWER = 0.8
#: Fewer runs than this on an arm: "insufficient seeds".
MIN_SEEDS = 3
#: Seeds-needed answers at or above this are reported as "more than" (None).
MAX_SEEDS_NEEDED = 100_000
#: "Far fewer" trainable parameters (claim a): at most this share of LoRA's.
FEWER_PARAMS = 0.5
INSUFFICIENT = "insufficient seeds"
#: Verdicts that leave a claim open (``--seeds auto`` keeps adding seeds to its arms).
UNDECIDED = ("not shown", INSUFFICIENT)


@dataclass(frozen=True)
class Claim:
    key: str
    text: str
    x: str
    y: str
    kind: str  # "better" (x > y), "noninferior" (x ≥ y − δ) or "equivalent" (|x − y| < δ)


CLAIMS: tuple[Claim, ...] = (
    Claim("a", "WeightLoRA ≈ LoRA with far fewer trainable parameters", "weightlora", "lora", "equivalent"),
    Claim("b", "random selection (RLoRA, same K) is worse than WeightLoRA", "weightlora", "random_select", "better"),
    Claim("c1", "WeightLoRA+ ≥ LoRA", "weightlora_plus", "lora", "noninferior"),
    Claim("c2", "WeightLoRA+ ≥ WeightLoRA", "weightlora_plus", "weightlora", "noninferior"),
    Claim(
        "d",
        "WeightLoRA with an informed selection (projection_start) beats random selection",
        "weightlora_informed",
        "random_select",
        "better",
    ),
)
TEST_NAMES = {
    "better": "superiority (one-sided Welch, H0: Δ ≤ 0)",
    "noninferior": "non-inferiority (one-sided Welch, H0: Δ ≤ −δ)",
    "equivalent": "equivalence (TOST, Welch, H0: |Δ| ≥ δ)",
}


def bootstrap_diff(
    x: Sequence[float], y: Sequence[float], n_boot: int = N_BOOTSTRAP, seed: int = 0, level: float = LEVEL
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(x) − mean(y), resampling x and y independently."""
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xa.size == 0 or ya.size == 0:
        raise ValueError("bootstrap_diff needs at least one value on each side")
    rng = np.random.default_rng(seed)
    bx = xa[rng.integers(0, xa.size, size=(n_boot, xa.size))].mean(axis=1)
    by = ya[rng.integers(0, ya.size, size=(n_boot, ya.size))].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(bx - by, [alpha, 1 - alpha])
    return float(lo), float(hi)


def welch(x: Sequence[float], y: Sequence[float], level: float = LEVEL) -> dict[str, float]:
    """Welch's t-test of mean(x) = mean(y): t, degrees of freedom, two-sided p and the interval of the
    difference. With no variance on either side the difference is exact: p is 0 (or 1 if equal)."""
    from scipy import stats

    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xa.size < 2 or ya.size < 2:
        raise ValueError("welch needs at least two values on each side")
    d = float(xa.mean() - ya.mean())
    vx, vy = xa.var(ddof=1) / xa.size, ya.var(ddof=1) / ya.size
    se = math.sqrt(vx + vy)
    if se == 0:
        return {"t": math.inf if d else 0.0, "df": math.inf, "p": 0.0 if d else 1.0, "lo": d, "hi": d, "se": 0.0}
    df = (vx + vy) ** 2 / (vx**2 / (xa.size - 1) + vy**2 / (ya.size - 1))
    t = d / se
    p = float(2 * stats.t.sf(abs(t), df))
    half = float(stats.t.ppf(1 - (1 - level) / 2, df)) * se
    return {"t": float(t), "df": float(df), "p": p, "lo": d - half, "hi": d + half, "se": se}


def one_sided(x: Sequence[float], y: Sequence[float], kind: str, margin: float) -> tuple[float, float]:
    """(p of the claim's test, p of the opposite test), Welch, by statsmodels."""
    from statsmodels.stats.weightstats import ttest_ind, ttost_ind

    def larger(value: float) -> float:  # H1: d > value
        return float(ttest_ind(x, y, alternative="larger", usevar="unequal", value=value)[1])

    def smaller(value: float) -> float:  # H1: d < value
        return float(ttest_ind(x, y, alternative="smaller", usevar="unequal", value=value)[1])

    if kind == "better":
        return larger(0.0), smaller(0.0)
    if kind == "noninferior":
        return larger(-margin), smaller(-margin)
    if kind == "equivalent":
        p = float(ttost_ind(x, y, -margin, margin, usevar="unequal")[0])
        return p, min(1.0, 2 * min(smaller(-margin), larger(margin)))
    raise ValueError(f"unknown claim kind {kind!r}")


def holm(pvalues: Sequence[float], alpha: float = ALPHA) -> list[float]:
    """Holm–Bonferroni adjusted p-values (statsmodels ``multipletests``)."""
    if not pvalues:
        return []
    from statsmodels.stats.multitest import multipletests

    return [float(p) for p in multipletests(list(pvalues), alpha=alpha, method="holm")[1]]


def power_numbers(
    x: Sequence[float], y: Sequence[float], kind: str, margin: float, alpha: float, power: float = POWER
) -> dict[str, float | None]:
    """Smallest detectable effect and the seeds per arm needed, at the observed spread.

    ``mde``: the true Δ (superiority: above 0; non-inferiority: above −δ; equivalence: the margin that
    could be shown when Δ = 0) that a test at ``alpha`` detects with ``power``, with these arm sizes.
    ``seeds_needed``: equal arm size that reaches ``power`` at the observed Δ (None when the observed Δ
    is on the wrong side, so no number of seeds would do)."""
    from statsmodels.stats.power import TTestIndPower

    xa, ya = np.asarray(x, float), np.asarray(y, float)
    sd = math.sqrt((xa.var(ddof=1) + ya.var(ddof=1)) / 2)
    if not sd > 0:
        return {"mde": None, "seeds_needed": None}
    solver = TTestIndPower()
    # equivalence: TOST's two tests at alpha each; at Δ = 0 each must reach (1 + power) / 2
    pw = (1 + power) / 2 if kind == "equivalent" else power
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the root finder's convergence warnings: NaN is handled below
        es = solver.solve_power(nobs1=xa.size, ratio=ya.size / xa.size, alpha=alpha, power=pw, alternative="larger")
    mde = float(es) * sd if np.isfinite(es) else None
    d = float(xa.mean() - ya.mean())
    gap = {"better": d, "noninferior": d + margin, "equivalent": margin - abs(d)}[kind]
    needed = None
    if gap > 0:  # the smallest equal arm size whose power reaches pw (power is increasing in n)
        lo, hi = 2, 2
        while hi < MAX_SEEDS_NEEDED and solver.power(gap / sd, hi, alpha, ratio=1.0, alternative="larger") < pw:
            lo, hi = hi, hi * 2
        while lo < hi:
            mid = (lo + hi) // 2
            if solver.power(gap / sd, mid, alpha, ratio=1.0, alternative="larger") >= pw:
                hi = mid
            else:
                lo = mid + 1
        needed = hi if hi < MAX_SEEDS_NEEDED else None
    return {"mde": mde, "seeds_needed": needed}


def compare(
    x: Sequence[float],
    y: Sequence[float],
    kind: str,
    margin: float = MARGIN,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
) -> dict[str, Any]:
    """One comparison before correction: difference, spread, intervals, the claim's and the opposite
    test's p-values. ``insufficient seeds`` (with ``why``) when an arm is too small or has no spread."""
    out: dict[str, Any] = {"n_x": len(x), "n_y": len(y), "test": TEST_NAMES[kind]}
    if len(x) < MIN_SEEDS or len(y) < MIN_SEEDS:
        out.update(verdict=INSUFFICIENT, why=f"needs ≥ {MIN_SEEDS} seed re-runs of both methods")
    elif np.std(x) == 0 or np.std(y) == 0:
        out.update(verdict=INSUFFICIENT, why="no spread across seeds on an arm: a test would be meaningless")
    if len(x) < 2 or len(y) < 2:
        return out
    w = welch(x, y)
    b_lo, b_hi = bootstrap_diff(x, y, n_boot=n_boot, seed=seed)
    out.update(
        diff=float(np.mean(x) - np.mean(y)),
        se=w["se"],
        boot_lo=b_lo,
        boot_hi=b_hi,
        welch_lo=w["lo"],
        welch_hi=w["hi"],
    )
    if out.get("verdict") != INSUFFICIENT:
        out["p_claim"], out["p_opposite"] = one_sided(x, y, kind, margin)
    return out


def margin_for(margin: float | Mapping[str, float], group: str) -> float:
    """δ of a comparison group (a task, or ``task r=8`` when a sweep has ranks): per task when ``margin`` is a
    mapping (a task it lacks gets :data:`MARGIN`)."""
    if isinstance(margin, Mapping):
        return float(margin.get(group, margin.get(group.split(" ")[0], MARGIN)))
    return float(margin)


def evaluate_claims(
    scores: Mapping[tuple[str, str], Sequence[float]],
    params: Mapping[tuple[str, str], float | None] | None = None,
    margin: float | Mapping[str, float] = MARGIN,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
    alpha: float = ALPHA,
    looks: int = 1,
    power: bool = True,
) -> list[dict[str, Any]]:
    """Every claim on every task that has seed re-runs: ``scores[(method, task)]`` = the seeds' scores,
    ``params[(method, task)]`` = the method's # Params, ``margin`` = δ (one for all, or per task). One record
    per (claim, task); both directions of every tested pair (held / contradicted) form one Holm family at
    ``alpha / looks`` (``looks``: the most interim looks of ``--seeds auto``)."""
    params = params or {}
    tasks = sorted({t for _, t in scores})
    level = alpha / max(int(looks), 1)

    def margin_of(task: str) -> float:
        return margin_for(margin, task)

    rows = []
    for claim in CLAIMS:
        for task in tasks:
            x, y = list(scores.get((claim.x, task), ())), list(scores.get((claim.y, task), ()))
            if not x or not y:
                continue
            rec: dict[str, Any] = {"claim": claim.key, "text": claim.text, "task": task, "x": claim.x, "y": claim.y}
            rec["kind"] = claim.kind
            rec["margin"] = margin_of(task)
            rec.update(compare(x, y, claim.kind, margin=rec["margin"], n_boot=n_boot, seed=seed))
            rows.append(rec)
    tested = [r for r in rows if "p_claim" in r]
    # One Holm family holds both directions of every tested pair (the claim's test and its opposite), so the
    # chance of any wrong verdict — a false "held" or a false "contradicted" — is at most the stated level.
    adjusted = holm([r["p_claim"] for r in tested] + [r["p_opposite"] for r in tested])
    for i, r in enumerate(tested):
        p, q = adjusted[i], adjusted[len(tested) + i]
        r["p_holm"], r["p_opposite_holm"], r["alpha"] = p, q, level
        r["verdict"] = "held" if p < level else "contradicted" if q < level else "not shown"
    hypotheses = 2 * len(tested)
    for r in rows:
        r["family"] = len(tested)
        r["hypotheses"] = hypotheses
        if power and r["n_x"] >= 2 and r["n_y"] >= 2:
            x, y = scores[(r["x"], r["task"])], scores[(r["y"], r["task"])]
            r["power_alpha"] = level / max(hypotheses, 1)
            r.update(power_numbers(x, y, r["kind"], margin_of(r["task"]), r["power_alpha"]))
        if r["claim"] == "a":
            px, py = params.get((r["x"], r["task"])), params.get((r["y"], r["task"]))
            ratio = px / py if px is not None and py else None
            r["params_ratio"] = ratio
            if r["verdict"] == INSUFFICIENT:
                continue
            if ratio is None:
                r["verdict"] = "not shown" if r["verdict"] == "held" else r["verdict"]
                r["why"] = "# Params not logged"
            elif ratio >= 1:
                r["verdict"] = "contradicted"
                r["why"] = "WeightLoRA does not train fewer parameters than LoRA"
            elif ratio > FEWER_PARAMS and r["verdict"] == "held":
                r["verdict"] = "not shown"
                r["why"] = f"# Params ratio {ratio:.2f} > {FEWER_PARAMS}"
    return rows


def seed_schedule(max_seeds: int, start: int = MIN_SEEDS, looks: int = 4) -> list[int]:
    """Seeds per arm at each look of ``--seeds auto``: ``start`` (the fewest a test accepts), then even steps
    up to ``max_seeds``, at most ``looks`` looks (fewer looks = a smaller Bonferroni penalty per look)."""
    if max_seeds < start:
        raise ValueError(f"--max-seeds must be >= {start} (the fewest seeds a claim's test accepts), got {max_seeds}")
    step = max(1, math.ceil((max_seeds - start) / max(looks - 1, 1)))
    out = list(range(start, max_seeds, step))
    return [*out, max_seeds] if not out or out[-1] != max_seeds else out


def undecided_arms(rows: Sequence[dict[str, Any]]) -> set[tuple[str, str]]:
    """(method, task) arms of the claims still open: where more seeds could still give a verdict."""
    return {(m, r["task"]) for r in rows if r["verdict"] in UNDECIDED for m in (r["x"], r["y"])}


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per claim, how many tasks gave each verdict."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        out.setdefault(r["claim"], {}).setdefault(r["verdict"], 0)
        out[r["claim"]][r["verdict"]] += 1
    return out


def _f(v: float | None, signed: bool = True) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:+.4f}" if signed else f"{v:.4f}"


def _p_text(p: float | None) -> str:
    return "–" if p is None else f"{p:.3g}"


def claims_md(
    rows: Sequence[dict[str, Any]],
    scores: Mapping[tuple[str, str], Sequence[float]],
    labels: Mapping[str, str],
    margin: float | Mapping[str, float] = MARGIN,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
    alpha: float = ALPHA,
    looks: int = 1,
    protocol: str | None = None,
    margin_why: Mapping[str, str] | None = None,
    futile: Sequence[str] = (),
    splits: Mapping[str, str] | None = None,
) -> str:
    """The claims section: the protocol, per-task mean ± std (and what the seed re-runs scored), δ per task and
    its meaning, one row per (claim, task), which claims stopped for futility, and the rules."""
    lines = []
    if protocol:
        lines += [f"Protocol: **{protocol}** ({PROTOCOL_TEXT.get(protocol, protocol)})", ""]
    lines += ["### Scores of the seed re-runs (mean ± sample std, n seeds)", ""]
    tasks = sorted({t for _, t in scores})
    methods = [m for m in labels if any((m, t) in scores for t in tasks)]
    lines.append("| Method | " + " | ".join(tasks) + " |")
    lines.append("|---|" + "---|" * len(tasks))
    for m in methods:
        cells = []
        for t in tasks:
            v = np.asarray(scores.get((m, t), ()), dtype=float)
            if v.size == 0:
                cells.append("–")
            else:
                sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
                cells.append(f"{v.mean():.4f} ± {sd:.4f} (n={v.size})")
        lines.append(f"| {labels[m]} | " + " | ".join(cells) + " |")
    if splits:
        lines += ["", "Scored: " + "; ".join(f"{t}: {splits[t]}" for t in tasks if t in splits) + "."]
    lines += ["", "### Margins", ""]
    for t in tasks:
        why = (margin_why or {}).get(t) or (margin_why or {}).get(t.split(" ")[0]) or ""
        lines.append(f"- {t}: δ = {margin_for(margin, t):g}" + (f" — {why}" if why else ""))
    lines += ["", "### Verdicts", ""]
    head = ["Claim", "Task", "Test", "δ", "Δ = mean(X) − mean(Y)", "Welch 95 %", "bootstrap 95 %", "p", "Holm p"]
    head += ["Opposite Holm p", "Detectable Δ", "Seeds needed", "Verdict"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    futile_set = set(futile)
    for r in rows:
        name = f"({r['claim']}) {r['text']}"
        extra = f" ({r['why']})" if r.get("why") else ""
        if r.get("params_ratio") is not None:
            extra += f"; # Params ratio {r['params_ratio']:.3f}"
        if f"({r['claim']}) {r['task']}" in futile_set and r["verdict"] in UNDECIDED:
            extra += "; stopped for futility"
        if r.get("drop_one"):
            extra += "; changes when one run is dropped: " + ", ".join(r["drop_one"])
        has = "diff" in r
        cells = [
            name,
            r["task"],
            r["test"],
            f"{r.get('margin', margin_for(margin, r['task'])):g}",
            _f(r.get("diff")),
            f"[{_f(r['welch_lo'])}, {_f(r['welch_hi'])}]" if has else "–",
            f"[{_f(r['boot_lo'])}, {_f(r['boot_hi'])}]" if has else "–",
            _p_text(r.get("p_claim")),
            _p_text(r.get("p_holm")),
            _p_text(r.get("p_opposite_holm")),
            _f(r.get("mde"), False),
            "–" if r.get("seeds_needed") is None else str(r["seeds_needed"]),
            f"**{r['verdict']}**{extra}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    summary = summarize(rows)
    if summary:
        lines += ["", "Per claim, tasks by verdict:"]
        for claim in CLAIMS:
            if claim.key in summary:
                counts = ", ".join(f"{v}: {n}" for v, n in sorted(summary[claim.key].items()))
                lines.append(f"- ({claim.key}) {claim.text}: {counts}")
    if futile_set:
        lines += [
            "",
            "Stopped for futility (`--seeds auto` added no more seeds for them: their conditional power at the "
            f"seed cap was below {FUTILITY_FLOOR:g}): " + ", ".join(sorted(futile_set)) + ".",
        ]
    family = max((r.get("family", 0) for r in rows), default=0)
    level = alpha / max(looks, 1)
    seq = (
        f"The sweep added seeds while claims were open (`--seeds auto`) with at most {looks} looks at the claims; "
        f"Bonferroni over the looks: every look, this one included, tests at α / {looks} = {level:.3g}. A claim "
        f"whose conditional power at the seed cap fell below {FUTILITY_FLOOR:g} got no more seeds (non-binding "
        f"futility: stopping never adds a false verdict). "
        if looks > 1
        else ""
    )
    lines += [
        "",
        f"Rules: X = the claim's first method, Y = the second, Δ = mean(X) − mean(Y) over independent seed "
        f"re-runs. Tests (statsmodels, Welch's unequal variances): superiority H0: Δ ≤ 0; non-inferiority "
        f"H0: Δ ≤ −δ; equivalence (TOST) H0: |Δ| ≥ δ; δ per task as listed above. Each of the {family} tested "
        f"(claim, task) pairs has two tests, the claim's and its opposite (superiority: Δ < 0; non-inferiority: "
        f"Δ < −δ; equivalence: |Δ| > δ), and all {2 * family} form ONE Holm–Bonferroni family, so the chance of "
        f"any wrong verdict, held or contradicted, is at most α = {alpha:g}. {seq}Held: Holm p < {level:.3g}; "
        f"contradicted: the opposite test's Holm p < {level:.3g}; otherwise not shown. Fewer than {MIN_SEEDS} "
        f"seeds on an arm, or no spread on an arm: insufficient seeds. Claim (a) also needs WeightLoRA's # Params "
        f"≤ {FEWER_PARAMS:g} × LoRA's to be held. Detectable Δ: the smallest true effect (above 0, above −δ, or "
        f"the equivalence margin at Δ = 0) these seeds detect with power {POWER:g} at α / ({looks} looks × "
        f"{2 * family} tests) = {level / max(2 * family, 1):.3g} (the level Holm's first step uses), at the "
        f"observed spread; seeds needed: per arm, for power {POWER:g} at the observed Δ and spread at that level "
        f"(– when Δ lies on the wrong side). Intervals are shown for reading, not for the verdict: Welch's 95 % "
        f"and a seeded percentile bootstrap ({n_boot} resamples, seed {seed}). Every verdict is re-tested with "
        f"each single run of its two arms left out (the whole page again, same levels); a verdict that one run "
        f"changes says which run and what it becomes.",
        "",
    ]
    return "\n".join(lines)


#: What each ``--protocol`` means, for the tables and claims pages.
PROTOCOL_TEXT = {
    "heldout": "every choice — the search, ASHA, the best configuration — scored on a validation split held "
    "out of the training data; the seed re-runs train on the rest and are reported on dev, which no choice read",
    "papers": "the papers' protocol: the dev set both chooses the configuration and reports the seed re-runs, "
    "an optimistic bias that grows with the number of searched knobs",
}


# ----- before launch: margins, decidability; during --seeds auto: futility -----

#: ``--seeds auto`` stops adding seeds to a claim whose conditional power at the cap is below this floor
#: (non-binding futility: stopping early never adds a false verdict, so the error rate holds).
FUTILITY_FLOOR = 0.10


def claim_settings(
    section: Mapping[str, Any] | None, tasks: Sequence[str]
) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """A preset's ``claims:`` section → (δ per task, the stated prior per task).

    ``claims.<task>`` holds ``delta`` (the margin, in task-score units), ``why`` (what δ means on that task's
    metric) and optionally ``prior_sd`` (the seed-to-seed standard deviation expected of one arm) with
    ``prior_from`` (where that number comes from). A task without an entry gets :data:`MARGIN` and no prior."""
    from wlora.data.registry import normalize_task

    section = dict(section or {})
    given = {normalize_task(t): v for t, v in section.items()}
    margins: dict[str, float] = {}
    priors: dict[str, dict[str, Any]] = {}
    for task, entry in given.items():
        if not isinstance(entry, Mapping) or "delta" not in entry:
            raise ValueError(f"preset claims.{task}: give `delta` (and `why`), e.g. {{delta: 0.01, why: ...}}")
        unknown = set(entry) - {"delta", "why", "prior_sd", "prior_from"}
        if unknown:
            raise ValueError(
                f"preset claims.{task}: unknown keys {sorted(unknown)}; valid: delta, why, prior_sd, prior_from"
            )
        delta = entry["delta"]
        if isinstance(delta, bool) or not isinstance(delta, int | float) or not delta > 0:
            raise ValueError(f"preset claims.{task}.delta must be a positive number, got {delta!r}")
        sd = entry.get("prior_sd")
        if sd is not None and (isinstance(sd, bool) or not isinstance(sd, int | float) or not sd > 0):
            raise ValueError(f"preset claims.{task}.prior_sd must be a positive number, got {sd!r}")
    for task in tasks:
        entry = given.get(task) or {}
        margins[task] = float(entry.get("delta", MARGIN))
        priors[task] = {
            "why": entry.get("why") or f"default δ = {MARGIN:g} of the task score",
            "prior_sd": float(entry["prior_sd"]) if entry.get("prior_sd") is not None else None,
            "prior_from": entry.get("prior_from") or "",
        }
    return margins, priors


def _power_gap(kind: str, margin: float) -> float:
    """The distance from the null that the planned power is computed at: superiority at a true Δ = δ (the
    smallest effect worth claiming); non-inferiority and equivalence at a true Δ = 0."""
    return margin


def seeds_for_power(kind: str, margin: float, sd: float, alpha: float, power: float = POWER) -> int | None:
    """Equal seeds per arm for ``power`` at ``alpha`` (one-sided Welch ≈ t-test, statsmodels), at the planned
    effect (:func:`_power_gap`) and a seed spread ``sd`` per arm; None above :data:`MAX_SEEDS_NEEDED`."""
    from statsmodels.stats.power import TTestIndPower

    solver = TTestIndPower()
    es = _power_gap(kind, margin) / sd
    pw = (1 + power) / 2 if kind == "equivalent" else power
    n = 2
    while n < MAX_SEEDS_NEEDED and solver.power(es, n, alpha, ratio=1.0, alternative="larger") < pw:
        n = n * 2 if n < 64 else n + 64
    if n >= MAX_SEEDS_NEEDED:
        return None
    lo = max(2, n // 2)
    while lo < n:
        mid = (lo + n) // 2
        if solver.power(es, mid, alpha, ratio=1.0, alternative="larger") >= pw:
            n = mid
        else:
            lo = mid + 1
    return n


def testable_claims(methods: Sequence[str]) -> list[Claim]:
    """The claims a sweep over ``methods`` can test (both of the claim's methods are arms)."""
    return [c for c in CLAIMS if c.x in methods and c.y in methods]


def decidability(
    methods: Sequence[str],
    tasks: Sequence[str],
    margins: Mapping[str, float],
    priors: Mapping[str, Mapping[str, Any]],
    max_seeds: int,
    looks: int,
    alpha: float = ALPHA,
    power: float = POWER,
) -> list[dict[str, Any]]:
    """Before launch, per (claim, task): the seeds per arm needed for ``power`` at δ under the stated prior
    spread, at the level the final test uses at worst (α / looks / hypotheses: Bonferroni's share of the
    Holm family of both directions), and whether ``max_seeds`` reaches it."""
    claims = testable_claims(methods)
    hypotheses = 2 * len(claims) * len(tasks)
    level = alpha / max(looks, 1) / max(hypotheses, 1)
    rows = []
    for task in tasks:
        prior = priors.get(task) or {}
        sd = prior.get("prior_sd")
        for c in claims:
            need = seeds_for_power(c.kind, margins[task], sd, level, power) if sd else None
            rows.append(
                {
                    "claim": c.key,
                    "task": task,
                    "kind": c.kind,
                    "delta": margins[task],
                    "why": prior.get("why", ""),
                    "prior_sd": sd,
                    "prior_from": prior.get("prior_from", ""),
                    "alpha": level,
                    "seeds_needed": need,
                    "reachable": None if sd is None else (need is not None and need <= max_seeds),
                }
            )
    return rows


def decidability_lines(rows: Sequence[Mapping[str, Any]], max_seeds: int) -> list[str]:
    """The plan's lines, one per (claim, task)."""
    out = []
    for r in rows:
        head = f"  claim ({r['claim']}) {r['task']}: δ = {r['delta']:g} ({r['why']})"
        if r["prior_sd"] is None:
            out.append(f"{head}; no prior spread stated: seeds needed unknown before the first look")
            continue
        need = "more than 100000" if r["seeds_needed"] is None else str(r["seeds_needed"])
        verdict = "reachable" if r["reachable"] else "NOT reachable"
        src = f" from {r['prior_from']}" if r["prior_from"] else ""
        out.append(
            f"{head}; prior seed sd {r['prior_sd']:g}{src}: {need} seeds per arm for {POWER:.0%} power at "
            f"α = {r['alpha']:.2g} — {verdict} with --max-seeds {max_seeds}"
        )
    return out


def conditional_power(
    x: Sequence[float], y: Sequence[float], kind: str, margin: float, alpha: float, n_final: int
) -> float:
    """Conditional power at the cap under the current trend (Lan & Wittes' B-value, normal approximation):
    the chance that the claim's one-sided test at ``alpha`` rejects once each arm has ``n_final`` seeds, if
    the effect stays what it is now. Equivalence needs both TOST sides: the smaller of the two (an upper
    bound on the chance of both, so futility stops no claim that could still pass)."""
    from scipy import stats

    xa, ya = np.asarray(x, float), np.asarray(y, float)
    n_now = min(xa.size, ya.size)
    if n_now < 2:
        return 1.0
    se = math.sqrt(xa.var(ddof=1) / xa.size + ya.var(ddof=1) / ya.size)
    if not se > 0:
        return 1.0
    d = float(xa.mean() - ya.mean())
    t = min(1.0, n_now / max(n_final, 1))
    z_crit = float(stats.norm.isf(alpha))

    def cp(z_now: float) -> float:
        if t >= 1:
            return float(z_now > z_crit)
        return float(stats.norm.sf((z_crit - z_now / math.sqrt(t)) / math.sqrt(1 - t)))

    if kind == "better":
        return cp(d / se)
    if kind == "noninferior":
        return cp((d + margin) / se)
    return min(cp((d + margin) / se), cp((margin - d) / se))


def futile_claims(
    rows: Sequence[dict[str, Any]],
    scores: Mapping[tuple[str, str], Sequence[float]],
    n_final: int,
    floor: float = FUTILITY_FLOOR,
) -> set[tuple[str, str]]:
    """(claim, task) pairs still open whose conditional power at ``n_final`` seeds per arm is below
    ``floor``, at the most lenient level the final look can use (its α / looks: Holm's last step)."""
    out = set()
    for r in rows:
        if r["verdict"] not in UNDECIDED or "p_claim" not in r:
            continue
        x, y = scores[(r["x"], r["task"])], scores[(r["y"], r["task"])]
        r["conditional_power"] = conditional_power(x, y, r["kind"], r["margin"], r["alpha"], n_final)
        if r["conditional_power"] < floor:
            out.add((r["claim"], r["task"]))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sweeps.claims --recompute DIR``: rebuild a report's verdict pages from its files alone."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(
        prog="python -m sweeps.claims",
        description="Rebuild claims.md / claims.json / stability.md / stability.json of a report folder from its "
        "seeds.csv and verdict_inputs.json alone (no MLflow store).",
    )
    ap.add_argument("--recompute", required=True, metavar="DIR", help="a report folder (e.g. docs/results)")
    ap.add_argument("--out", default=None, metavar="DIR", help="write the pages here instead of into DIR")
    args = ap.parse_args(argv)
    from sweeps.verdicts import recompute

    try:
        out = recompute(args.recompute, args.out)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    dest = args.out or args.recompute
    held = sum(r["verdict"] == "held" for r in out["claims"])
    print(f"{dest}: claims.md ({len(out['claims'])} rows, {held} held), stability.md ({len(out['stability'])} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
