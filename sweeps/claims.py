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


def evaluate_claims(
    scores: Mapping[tuple[str, str], Sequence[float]],
    params: Mapping[tuple[str, str], float | None] | None = None,
    margin: float = MARGIN,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
    alpha: float = ALPHA,
    looks: int = 1,
) -> list[dict[str, Any]]:
    """Every claim on every task that has seed re-runs: ``scores[(method, task)]`` = the seeds' scores,
    ``params[(method, task)]`` = the method's # Params. One record per (claim, task), Holm-corrected over
    the family of all of them at ``alpha / looks`` (``looks``: the most interim looks of ``--seeds auto``)."""
    params = params or {}
    tasks = sorted({t for _, t in scores})
    level = alpha / max(int(looks), 1)
    rows = []
    for claim in CLAIMS:
        for task in tasks:
            x, y = list(scores.get((claim.x, task), ())), list(scores.get((claim.y, task), ()))
            if not x or not y:
                continue
            rec: dict[str, Any] = {"claim": claim.key, "text": claim.text, "task": task, "x": claim.x, "y": claim.y}
            rec["kind"] = claim.kind
            rec.update(compare(x, y, claim.kind, margin=margin, n_boot=n_boot, seed=seed))
            rows.append(rec)
    tested = [r for r in rows if "p_claim" in r]
    for r, p, q in zip(
        tested, holm([r["p_claim"] for r in tested]), holm([r["p_opposite"] for r in tested]), strict=True
    ):
        r["p_holm"], r["p_opposite_holm"], r["alpha"] = p, q, level
        r["verdict"] = "held" if p < level else "contradicted" if q < level else "not shown"
    for r in rows:
        r["family"] = len(tested)
        if r["n_x"] >= 2 and r["n_y"] >= 2:
            x, y = scores[(r["x"], r["task"])], scores[(r["y"], r["task"])]
            r.update(power_numbers(x, y, r["kind"], margin, level / max(len(tested), 1)))
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


def claims_md(
    rows: Sequence[dict[str, Any]],
    scores: Mapping[tuple[str, str], Sequence[float]],
    labels: Mapping[str, str],
    margin: float = MARGIN,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
    alpha: float = ALPHA,
    looks: int = 1,
    protocol: str | None = None,
) -> str:
    """The claims section: the protocol, per-task mean ± std, one row per (claim, task), the rules."""
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
    lines += ["", "### Verdicts", ""]
    head = ["Claim", "Task", "Test", "Δ = mean(X) − mean(Y)", "Welch 95 %", "bootstrap 95 %", "p", "Holm p"]
    head += ["Detectable Δ", "Seeds needed", "Verdict"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in rows:
        name = f"({r['claim']}) {r['text']}"
        extra = f" ({r['why']})" if r.get("why") else ""
        if r.get("params_ratio") is not None:
            extra += f"; # Params ratio {r['params_ratio']:.3f}"
        has = "diff" in r
        p = r.get("p_claim")
        cells = [
            name,
            r["task"],
            r["test"],
            _f(r.get("diff")),
            f"[{_f(r['welch_lo'])}, {_f(r['welch_hi'])}]" if has else "–",
            f"[{_f(r['boot_lo'])}, {_f(r['boot_hi'])}]" if has else "–",
            "–" if p is None else f"{p:.3g}",
            "–" if r.get("p_holm") is None else f"{r['p_holm']:.3g}",
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
    family = max((r.get("family", 0) for r in rows), default=0)
    level = alpha / max(looks, 1)
    seq = (
        f"The sweep added seeds while claims were open (`--seeds auto`) with at most {looks} looks at the claims; "
        f"Bonferroni over the looks: every look, this one included, tests at α / {looks} = {level:.3g}. "
        if looks > 1
        else ""
    )
    lines += [
        "",
        f"Rules: X = the claim's first method, Y = the second, Δ = mean(X) − mean(Y) over independent seed "
        f"re-runs. Tests (statsmodels, Welch's unequal variances): superiority H0: Δ ≤ 0; non-inferiority "
        f"H0: Δ ≤ −δ; equivalence (TOST) H0: |Δ| ≥ δ; margin δ = {margin:g}. The family is the {family} tested "
        f"(claim, task) pairs of this page; Holm–Bonferroni adjusts their p-values (and, separately, those of "
        f"the opposite tests). {seq}Held: Holm p < {level:.3g}; contradicted: the opposite test's Holm p < "
        f"{level:.3g} (superiority: Δ < 0; non-inferiority: Δ < −δ; equivalence: |Δ| > δ); otherwise not shown. "
        f"Fewer than {MIN_SEEDS} seeds on an arm, or no spread on an arm: insufficient seeds. Claim (a) also "
        f"needs WeightLoRA's # Params ≤ {FEWER_PARAMS:g} × LoRA's to be held. Detectable Δ: the smallest true "
        f"effect (above 0, above −δ, or the equivalence margin at Δ = 0) these seeds detect with power "
        f"{POWER:g} at α / (family size), at the observed spread; seeds needed: per arm, for power {POWER:g} at "
        f"the observed Δ and spread (– when Δ lies on the wrong side). Intervals are shown for reading, not "
        f"for the verdict: Welch's 95 % and a seeded percentile bootstrap ({n_boot} resamples, seed {seed}).",
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
