"""Selection stability across seed re-runs: how often each adapter was kept, the mean pairwise Jaccard of the kept
sets against random draws, and the runs' own selection diagnostics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never open a window (CI, Ray workers)
import numpy as np

from sweeps.schema import (
    RunInfo,
)
from sweeps.table import (  # the one results table, shared with the report
    METHODS,
    md_table,
    mean_std,
)
from wlora.core.stability import (
    chance_jaccard,
    jaccard_pvalue,
    keep_frequency,
    mean_pairwise_overlap,
    pairwise_interval,
)
from wlora.registry import METHODS as REGISTRY

#: Methods whose kept set is a rank per module (overlap across seeds: weighted Jaccard of the ranks).
RANK_METHODS = tuple(slug for slug, spec in REGISTRY.items() if spec.selects_ranks)


#: Per-run selection diagnostics the runner logs at every evaluation (see wlora.core.stability).
STABILITY_METRICS = ("selection_changes", "selection_last_change_step")


def kept_of(method: str, rep: dict[str, Any]) -> set[str] | dict[str, int] | None:
    """A run's final kept set from its ``selection.json``: module → rank for ROLoRA / AdaLoRA, else the
    set of kept adapters (the tracker's final kept set when logged, else the method's own fields)."""
    if method in RANK_METHODS:
        ranks = rep.get("ranks")
        if not isinstance(ranks, dict) or not ranks:
            return None
        return {str(n): int(r) for n, r in ranks.items() if int(r) > 0}
    tracked = (rep.get("selection_stability") or {}).get("kept")
    if isinstance(tracked, dict):
        return set(tracked)
    for key in ("selected_adapters", "kept"):
        if rep.get(key):
            return set(rep[key])
    if isinstance(rep.get("ranks"), dict):  # e.g. WeightLoRA before selection: every adapter still trains
        return {n for n, r in rep["ranks"].items() if int(r) > 0}
    return None


def all_names(reports: Sequence[dict[str, Any]]) -> set[str]:
    names: set[str] = set()
    for rep in reports:
        for key in ("ranks", "importance", "selection_scores", "gates"):
            if isinstance(rep.get(key), dict):
                names |= set(rep[key])
        for key in ("drawn_adapters", "kept", "selected_adapters"):
            if isinstance(rep.get(key), list):
                names |= set(rep[key])
    return names


def mean_sd_of(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    m, s = mean_std(values)
    return {"mean": m, "std": s, "n": len(values)}


def seed_stability(method: str, runs: Sequence[RunInfo], reports: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """How stable the kept set is across the seed re-runs of one cell.

    ``kept`` methods: per adapter the share of seeds that kept it, the mean pairwise Jaccard index of
    the kept sets and, when every run kept K of n, the Jaccard index two uniform draws would have;
    rank methods: per module the mean final rank, and the mean pairwise weighted Jaccard (Ruzicka)
    index Σ min / Σ max of the rank vectors. The per-run diagnostics (changes of the kept set, last
    change step) are averaged over the runs that logged them and left out otherwise."""
    pairs = [(r, rep) for r, rep in zip(runs, reports, strict=True) if rep]
    kept = [(r, k) for r, rep in pairs if (k := kept_of(method, rep)) is not None]
    out: dict[str, Any] = {"method": method, "runs": len(runs), "with_selection": len(kept)}
    out["seeds"] = [r.seed for r, _ in kept]
    names = all_names([rep for _, rep in pairs])
    n_all = next((rep.get("n_adapters") for _, rep in pairs if isinstance(rep.get("n_adapters"), int)), None)
    out["n_adapters"] = n_all
    if kept:
        sets = [k for _, k in kept]
        out["overlap"] = mean_pairwise_overlap(sets)
        if method in RANK_METHODS:
            out["overlap_measure"] = "weighted Jaccard of final ranks (Σ min / Σ max)"
            every = names | set().union(*(set(k) for k in sets))
            out["values"] = {n: float(np.mean([k.get(n, 0) for k in sets])) for n in sorted(every)}
            out["field"] = "mean_rank"
            out["always"] = sorted(n for n in every if all(k.get(n, 0) > 0 for k in sets))
            out["kept_size"] = mean_sd_of([float(sum(k.values())) for k in sets])
        else:
            out["overlap_measure"] = "Jaccard of kept sets"
            out["values"] = keep_frequency(sets, names)
            out["field"] = "keep_frequency"
            out["always"] = sorted(n for n, f in out["values"].items() if f == 1.0)
            sizes = {len(k) for k in sets}
            out["kept_size"] = mean_sd_of([float(len(k)) for k in sets])
            if isinstance(n_all, int) and len(sizes) == 1 and 0 < (k_ := sizes.pop()) <= n_all:
                out["chance_overlap"] = chance_jaccard(n_all, k_)
                if len(sets) >= 2:
                    test = jaccard_pvalue(n_all, k_, len(sets), out["overlap"])
                    out["overlap_p"], out["overlap_p_method"] = test["p"], test["method"]
                    out["overlap_p_draws"] = test.get("draws")
            out["overlap_interval"] = pairwise_interval(sets)
    for key in STABILITY_METRICS:
        vals = [v for r in runs if (v := r.metrics.get(key)) is not None and math.isfinite(v)]
        if not vals:  # runs logged before the metric existed: the run's own summary, if any
            sk = key.removeprefix("selection_")
            vals = [
                float(s[sk]) for _, rep in pairs if isinstance(s := rep.get("selection_stability"), dict) and sk in s
            ]
        out[key] = mean_sd_of(vals)
    return out


def stab_fmt(d: dict[str, float] | None, digits: int = 1) -> str:
    return "–" if d is None else f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}"


#: Significance level of the "more consistent than chance" reading.
CHANCE_ALPHA = 0.05


def p_value_text(p: float | None, method: str | None = None, draws: int | None = None) -> str:
    """A p-value as printed: a Monte-Carlo estimate at its floor 1/(N+1) is "< 1/(N+1)" (no draw reached the
    observed value, so the true p is below what N draws resolve), never the floor as if it were an estimate."""
    if p is None:
        return "–"
    if method == "monte carlo" and draws and p <= 1 / (draws + 1) + 1e-15:
        return f"< 1/{draws + 1}"
    return f"{p:.3g}"


def overlap_words(p: float | None) -> str:
    """The reading of a selection's consistency, which follows its p-value and nothing else."""
    if p is None:
        return "–"
    if p < CHANCE_ALPHA:
        return f"more consistent than chance (p < {CHANCE_ALPHA:g})"
    return f"not distinguishable from chance (p ≥ {CHANCE_ALPHA:g})"


#: Per-run numbers of how a selection was decided (wlora.core.selection.GatedSelection.decision).
DECISION_METRICS = ("selection_decision_step", "selection_margin")


def decision_rows(children: Sequence[RunInfo]) -> list[dict[str, Any]]:
    """Per cell (task, method): when the kept set was decided and by what margin, over its seed re-runs
    (over its trials when it has none). Cells whose runs logged no decision are left out."""
    cells: dict[tuple[str, str], dict[str, list[RunInfo]]] = {}
    for r in children:
        if r.metrics.get("selection_decision_step") is not None:
            role = "seed_run" if r.is_seed_run else r.role  # a race run reused as a seed re-run counts as one
            cells.setdefault((r.task, r.method), {}).setdefault(role, []).append(r)
    rows = []
    for (task, method), by_role in sorted(cells.items()):
        runs = by_role.get("seed_run") or [r for rs in by_role.values() for r in rs]
        step = [r.metrics["selection_decision_step"] for r in runs]
        margin = [v for r in runs if (v := r.metrics.get("selection_margin")) is not None and math.isfinite(v)]
        clear = sum(v > 1 for v in margin)
        rows.append(
            {
                "task": task,
                "method": method,
                "runs": len(runs),
                "of": "seed re-runs" if by_role.get("seed_run") else "trials",
                "decision_step": mean_sd_of(step),
                "margin": mean_sd_of(margin),
                "clear": clear,
                "with_margin": len(margin),
            }
        )
    return rows


def decision_lines(rows: Sequence[dict[str, Any]]) -> str:
    """One line per cell: when the selection was decided and whether its margin exceeded the noise."""
    if not rows:
        return ""
    lines = ["### When the selection was decided", ""]
    for r in rows:
        label = METHODS.get(r["method"], r["method"])
        step = stab_fmt(r["decision_step"])
        if r["with_margin"]:
            verdict = (
                "clear of the batch-to-batch noise"
                if r["clear"] == r["with_margin"]
                else "within the batch-to-batch noise"
                if r["clear"] == 0
                else f"clear of the noise in {r['clear']} of {r['with_margin']} runs"
            )
            margin = f"margin {stab_fmt(r['margin'], 2)} spreads: {verdict}"
        else:
            margin = "no margin (the gates never moved, or one gate step only)"
        lines.append(f"- {r['task']} · {label} ({r['runs']} {r['of']}): decided at step {step}; {margin}.")
    lines += [
        "",
        "Decided at: the last optimizer step at which the top-K set of the gates changed. Margin: the gap between "
        "the K-th and the (K+1)-th gate score right after that step, in units of the standard deviation, over the "
        "gate-training steps, of the difference of those two adapters' updates lr_w·∇ω (one batch's noise). Above "
        "1: a clear choice; below 1: one batch could have flipped it.",
        "",
    ]
    return "\n".join(lines)


def stability_md(rows: Sequence[dict[str, Any]]) -> str:
    header = [
        "Task",
        "Method",
        "Seeds",
        "Kept (mean ± std)",
        "Mean pairwise overlap",
        "Chance overlap",
        "p (vs chance)",
        "Holm p",
        "Reading",
        "Kept-set changes per run",
        "Last change (step)",
    ]
    body = []
    for r in rows:
        ov = "–" if r.get("overlap") is None else f"{r['overlap']:.3f} ({r['overlap_measure']})"
        ch = "–" if r.get("chance_overlap") is None else f"{r['chance_overlap']:.3f}"
        if r.get("overlap_interval"):
            lo, hi = r["overlap_interval"]
            ov += f", 95 % [{lo:.3f}, {hi:.3f}]"
        p = r.get("overlap_p")
        pv = (
            "–"
            if p is None
            else f"{p_value_text(p, r['overlap_p_method'], r.get('overlap_p_draws'))} ({r['overlap_p_method']})"
        )
        ph = r.get("overlap_p_holm", p)
        floor = p is not None and p_value_text(p, r["overlap_p_method"], r.get("overlap_p_draws")).startswith("<")
        holm_text = "–" if ph is None else (f"≤ {ph:.3g}" if floor else f"{ph:.3g}")
        body.append(
            [
                r["task"],
                METHODS.get(r["method"], r["method"]),
                str(r["with_selection"]),
                stab_fmt(r.get("kept_size")),
                ov,
                ch,
                pv,
                holm_text,
                overlap_words(ph),
                stab_fmt(r.get("selection_changes")),
                stab_fmt(r.get("selection_last_change_step")),
            ]
        )
    note = (
        "Across the seed re-runs of each cell's best configuration. Kept = adapters kept at the end (rank "
        "methods: Σ of final ranks). Overlap: mean over pairs of seeds of the Jaccard index |A ∩ B| / |A ∪ B| "
        "of the kept sets; for ROLoRA / AdaLoRA the weighted Jaccard index Σ min(r_a, r_b) / Σ max(r_a, r_b) of "
        "the final ranks. Chance overlap: the expected Jaccard index of two uniform random draws of the same K "
        "of n. p (vs chance): the probability that the seeds' K-of-n draws, if uniform and independent, give a mean "
        "pairwise Jaccard at least as high as observed (exact by enumeration when small, else 20,000 seeded "
        'Monte-Carlo draws, printed "< 1/20001" when no draw reached the observed value); Holm p: those p-values '
        "Holm-adjusted across the rows of this table, which the reading follows (a Monte-Carlo p at its floor is "
        "adjusted as the floor, so its Holm p is an upper bound: ≤). The 95 % interval resamples the seeds (percentile "
        "bootstrap). Changes / last change: how "
        "often a run's kept set (non-zero gates while WeightLoRA selects; "
        "ranks for ROLoRA) changed and the optimizer step of its last change, from the runs' "
        "`selection_changes` / `selection_last_change_step` metrics (– when the runs did not log them)."
    )
    return md_table(header, body) + "\n" + note + "\n"
