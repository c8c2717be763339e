"""The WeightLoRA paper's three claims, tested on the seed re-runs of a sweep.

Per task, the dev scores of the seed re-runs of each method's best configuration are compared:

* (a) WeightLoRA ≈ LoRA with far fewer trainable parameters;
* (b) random selection (RLoRA, the same K) is worse than WeightLoRA;
* (c) WeightLoRA+ ≥ LoRA and WeightLoRA+ ≥ WeightLoRA.

For each comparison X vs Y: the difference of means d = mean(X) − mean(Y), its standard error
sqrt(s_X²/n_X + s_Y²/n_Y), a seeded percentile bootstrap 95 % interval of d (each method's seeds
resampled with replacement, independently: runs of different methods are not paired), Welch's t-test
(two-sided p) and its 95 % interval. The verdict uses the wider of the two intervals, [lo, hi] (with
3–5 seeds the bootstrap interval alone is too narrow):

* "better" claims (b): **held** if lo > 0, **contradicted** if hi < 0, else **not shown**;
* "≈" / "≥" claims (a, c), read as non-inferiority with margin δ: **held** if lo > −δ,
  **contradicted** if hi < −δ, else **not shown**. Claim (a) also needs WeightLoRA's # Params at most
  half of LoRA's to be held (and is contradicted when it is not below LoRA's).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Default equivalence / non-inferiority margin δ, in units of the task score (0.01 = one point).
MARGIN = 0.01
N_BOOTSTRAP = 10_000
LEVEL = 0.95
#: "Far fewer" trainable parameters (claim a): at most this share of LoRA's.
FEWER_PARAMS = 0.5


@dataclass(frozen=True)
class Claim:
    key: str
    text: str
    x: str
    y: str
    kind: str  # "better" (x > y) or "noninferior" (x ≥ y − δ)


CLAIMS: tuple[Claim, ...] = (
    Claim("a", "WeightLoRA ≈ LoRA with far fewer trainable parameters", "weightlora", "lora", "noninferior"),
    Claim("b", "random selection (RLoRA, same K) is worse than WeightLoRA", "weightlora", "random_select", "better"),
    Claim("c1", "WeightLoRA+ ≥ LoRA", "weightlora_plus", "lora", "noninferior"),
    Claim("c2", "WeightLoRA+ ≥ WeightLoRA", "weightlora_plus", "weightlora", "noninferior"),
)


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


def verdict(lo: float, hi: float, kind: str, margin: float) -> str:
    """The rule of the module docstring on an interval [lo, hi] of mean(x) − mean(y)."""
    if kind == "better":
        return "held" if lo > 0 else "contradicted" if hi < 0 else "not shown"
    if kind == "noninferior":
        return "held" if lo > -margin else "contradicted" if hi < -margin else "not shown"
    raise ValueError(f"unknown claim kind {kind!r}")


def compare(
    x: Sequence[float],
    y: Sequence[float],
    kind: str,
    margin: float = MARGIN,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
) -> dict[str, Any]:
    """One comparison: difference, spread, intervals, p and verdict (``not testable`` with < 2 runs a side)."""
    out: dict[str, Any] = {"n_x": len(x), "n_y": len(y)}
    if len(x) < 2 or len(y) < 2:
        out["verdict"] = "not testable"
        out["why"] = "needs ≥ 2 seed re-runs of both methods"
        return out
    w = welch(x, y)
    b_lo, b_hi = bootstrap_diff(x, y, n_boot=n_boot, seed=seed)
    lo, hi = min(b_lo, w["lo"]), max(b_hi, w["hi"])
    out.update(
        diff=float(np.mean(x) - np.mean(y)),
        se=w["se"],
        boot_lo=b_lo,
        boot_hi=b_hi,
        welch_lo=w["lo"],
        welch_hi=w["hi"],
        p=w["p"],
        lo=lo,
        hi=hi,
        verdict=verdict(lo, hi, kind, margin),
    )
    return out


def evaluate_claims(
    scores: Mapping[tuple[str, str], Sequence[float]],
    params: Mapping[tuple[str, str], float | None] | None = None,
    margin: float = MARGIN,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Every claim on every task that has seed re-runs: ``scores[(method, task)]`` = the seeds' dev
    scores, ``params[(method, task)]`` = the method's # Params. One record per (claim, task)."""
    params = params or {}
    tasks = sorted({t for _, t in scores})
    rows = []
    for claim in CLAIMS:
        for task in tasks:
            x, y = list(scores.get((claim.x, task), ())), list(scores.get((claim.y, task), ()))
            if not x and not y:
                continue
            rec: dict[str, Any] = {"claim": claim.key, "text": claim.text, "task": task, "x": claim.x, "y": claim.y}
            rec["kind"] = claim.kind
            rec.update(compare(x, y, claim.kind, margin=margin, n_boot=n_boot, seed=seed))
            if claim.key == "a":
                px, py = params.get((claim.x, task)), params.get((claim.y, task))
                ratio = px / py if px is not None and py else None
                rec["params_ratio"] = ratio
                if rec["verdict"] != "not testable":
                    if ratio is None:
                        rec["verdict"] = "not shown" if rec["verdict"] == "held" else rec["verdict"]
                        rec["why"] = "# Params not logged"
                    elif ratio >= 1:
                        rec["verdict"] = "contradicted"
                        rec["why"] = "WeightLoRA does not train fewer parameters than LoRA"
                    elif ratio > FEWER_PARAMS and rec["verdict"] == "held":
                        rec["verdict"] = "not shown"
                        rec["why"] = f"# Params ratio {ratio:.2f} > {FEWER_PARAMS}"
            rows.append(rec)
    return rows


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
) -> str:
    """The claims section: per-task mean ± std, one row per (claim, task), the rule."""
    lines = ["### Scores of the seed re-runs (mean ± sample std, n seeds)", ""]
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
    head = ["Claim", "Task", "Δ = mean(X) − mean(Y)", "SE", "bootstrap 95 %", "Welch 95 %", "Welch p", "Verdict"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in rows:
        name = f"({r['claim']}) {r['text']}"
        if r["verdict"] == "not testable":
            lines.append(f"| {name} | {r['task']} | – | – | – | – | – | not testable ({r['why']}) |")
            continue
        extra = f" ({r['why']})" if r.get("why") else ""
        if r.get("params_ratio") is not None:
            extra += f"; # Params ratio {r['params_ratio']:.3f}"
        lines.append(
            f"| {name} | {r['task']} | {_f(r['diff'])} | {_f(r['se'], False)} | "
            f"[{_f(r['boot_lo'])}, {_f(r['boot_hi'])}] | [{_f(r['welch_lo'])}, {_f(r['welch_hi'])}] | "
            f"{r['p']:.3g} | **{r['verdict']}**{extra} |"
        )
    summary = summarize(rows)
    if summary:
        lines += ["", "Per claim, tasks by verdict:"]
        for claim in CLAIMS:
            if claim.key in summary:
                counts = ", ".join(f"{v}: {n}" for v, n in sorted(summary[claim.key].items()))
                lines.append(f"- ({claim.key}) {claim.text}: {counts}")
    lines += [
        "",
        f"Rule: X = the claim's first method, Y = the second; the interval [lo, hi] is the wider of the seeded "
        f"percentile bootstrap ({n_boot} resamples, seed {seed}, seeds of each method resampled independently) "
        f"and Welch's t interval, both 95 %. 'Better' claims (b): held if lo > 0, contradicted if hi < 0. "
        f"'≈' / '≥' claims (a, c) as non-inferiority with margin δ = {margin:g}: held if lo > −δ, contradicted "
        f"if hi < −δ. Claim (a) also needs WeightLoRA's # Params ≤ {FEWER_PARAMS:g} × LoRA's to be held. "
        "Otherwise: not shown.",
        "",
    ]
    return "\n".join(lines)
