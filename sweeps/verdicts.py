"""The verdict pages — ``claims.md`` and ``stability.md`` — from the seed re-runs alone, so that every published
number can be recomputed from files, with no MLflow store.

The report writes two files beside the pages:

* ``seeds.csv``: one row per seed re-run the verdicts read — run id, task, method, rank, seed, the split it
  scored (as the run reported it), how many examples and their fingerprint, every ``eval_*`` metric, its
  # Params, its kept set and its selection diagnostics;
* ``verdict_inputs.json``: what the verdicts were computed with — δ per task and its meaning, the number of
  looks of ``--seeds auto``, α, the bootstrap's resamples and seed, the protocol and the futility record.

``python -m sweeps.claims --recompute DIR`` rebuilds ``claims.md`` / ``claims.json`` / ``stability.md`` /
``stability.json`` from those two files through the same functions the report calls (:func:`write_verdicts`).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sweeps import claims as claims_mod
from sweeps.schema import COMPLETED, SEED_RUN, RunInfo

SEEDS_CSV = "seeds.csv"
INPUTS_JSON = "verdict_inputs.json"
#: The parent run's artifact with what ``--seeds auto`` decided at each look (futility included).
SEED_LOOKS_ARTIFACT = "seed_looks.json"
#: Per-run selection diagnostics carried in ``seeds.csv`` (what ``stability.md`` reads besides the kept set).
SELECTION_COLUMNS = (
    "selection_decision_step",
    "selection_margin",
    "selection_changes",
    "selection_last_change_step",
)
FIXED_COLUMNS = ("run_id", "task", "method", "rank", "seed", "split", "examples", "fingerprint")


def seed_records(
    seed_runs: Mapping[tuple[str, str], Sequence[RunInfo]], reports: Mapping[str, dict[str, Any] | None]
) -> list[dict[str, Any]]:
    """The rows of ``seeds.csv``: every seed re-run the verdicts read (``seed_runs``: (method, task) → runs, the
    rank the claims use), with its kept set from its ``selection.json`` (``reports``: run id → report)."""
    from sweeps.report.curves import method_params_of
    from sweeps.report.stability import kept_of

    out = []
    for (method, task), runs in sorted(seed_runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        for r in sorted(runs, key=lambda r: (_seed_key(r.seed), r.run_id)):
            if r.main is None:
                continue  # never scored (e.g. interrupted before its evaluation): not part of any verdict
            rep = reports.get(r.run_id) or {}
            kept = kept_of(method, rep) if rep else None
            rec: dict[str, Any] = {
                "run_id": r.run_id,
                "task": task,
                "method": method,
                "rank": r.rank,
                "seed": r.seed,
                "split": r.split or "",
                "examples": r.examples if r.examples is not None else "",
                "fingerprint": r.fingerprint or "",
            }
            for key in sorted(k for k in r.metrics if k.startswith("eval_") and k != "eval_examples"):
                rec[key] = r.metrics[key]
            rec["method_params"] = method_params_of(r)
            for key in SELECTION_COLUMNS:
                rec[key] = r.metrics.get(key)
            rec["n_adapters"] = rep.get("n_adapters") if isinstance(rep.get("n_adapters"), int) else None
            rec["kept"] = "" if kept is None else json.dumps(sorted(kept) if isinstance(kept, set) else kept)
            out.append(rec)
    return out


def _seed_key(seed: str) -> tuple[int, str]:
    return (int(seed), "") if str(seed).isdigit() else (1 << 30, str(seed))


def write_seeds_csv(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """``records`` as CSV: the fixed columns first, then every metric any row has (empty where a row lacks it).
    Floats are written with ``repr`` (exact round trip)."""
    metrics = sorted({k for r in records for k in r} - set(FIXED_COLUMNS) - {"kept"})
    columns = [*FIXED_COLUMNS, *metrics, "kept"]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        for r in records:
            w.writerow({k: "" if r.get(k) is None else r.get(k) for k in columns})


def read_seeds_csv(path: Path) -> list[dict[str, Any]]:
    """``seeds.csv`` back as records: numbers as floats (``examples`` and ``n_adapters`` as ints), empty as None."""
    out = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            rec: dict[str, Any] = {}
            for k, v in row.items():
                if k in ("run_id", "task", "method", "rank", "seed", "split", "fingerprint", "kept"):
                    rec[k] = v
                elif v == "":
                    rec[k] = None
                elif k in ("examples", "n_adapters"):
                    rec[k] = int(float(v))
                else:
                    rec[k] = float(v)
            out.append(rec)
    return out


def runs_of(records: Sequence[dict[str, Any]]) -> tuple[dict[tuple[str, str], list[RunInfo]], dict[str, dict]]:
    """Records → ((method, task) → seed re-runs as :class:`RunInfo`, run id → the part of its report the
    stability analysis reads: the kept set and n)."""
    runs: dict[tuple[str, str], list[RunInfo]] = {}
    reports: dict[str, dict[str, Any]] = {}
    for rec in records:
        metrics = {
            k: float(v)
            for k, v in rec.items()
            if k not in FIXED_COLUMNS and k not in ("kept", "n_adapters") and isinstance(v, int | float)
        }
        if rec.get("method_params") is not None:
            metrics["final_method_params"] = float(rec["method_params"])
        run = RunInfo(
            run_id=rec["run_id"],
            name=rec["run_id"],
            role=SEED_RUN,
            method=rec["method"],
            task=rec["task"],
            seed=rec["seed"],
            status=COMPLETED,
            params={},
            metrics=metrics,
            start_ms=None,
            end_ms=None,
            rank=rec.get("rank") or "",
            split=rec.get("split") or None,
            examples=rec.get("examples"),
            fingerprint=rec.get("fingerprint") or None,
        )
        runs.setdefault((rec["method"], rec["task"]), []).append(run)
        rep: dict[str, Any] = {}
        if rec.get("kept"):
            kept = json.loads(rec["kept"])
            rep["ranks" if isinstance(kept, dict) else "kept"] = kept
        if rec.get("n_adapters") is not None:
            rep["n_adapters"] = int(rec["n_adapters"])
        reports[rec["run_id"]] = rep
    return runs, reports


def build_claims(records: Sequence[dict[str, Any]], inputs: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """``claims.md`` and its rows from the seed records and the verdict inputs."""
    from sweeps.report.curves import method_params_of
    from sweeps.table import METHODS

    runs, _ = runs_of(records)
    scores = {k: [r.main for r in v if r.main is not None] for k, v in runs.items()}
    scores = {k: v for k, v in scores.items() if v}
    params = {}
    for key, rs in runs.items():
        vals = [p for r in rs if (p := method_params_of(r)) is not None]
        if vals:
            params[key] = float(sum(vals) / len(vals))
    margins = dict(inputs.get("margins") or {})
    margin: float | dict[str, float] = margins if margins else float(inputs.get("margin", claims_mod.MARGIN))
    kw = dict(
        margin=margin,
        n_boot=int(inputs.get("n_boot", claims_mod.N_BOOTSTRAP)),
        seed=int(inputs.get("boot_seed", 0)),
        alpha=float(inputs.get("alpha", claims_mod.ALPHA)),
        looks=int(inputs.get("looks", 1)),
    )
    rows = claims_mod.evaluate_claims(scores, params, **kw)
    seeds_of = {k: [r.seed for r in v if r.main is not None] for k, v in runs.items()}
    for r in rows:
        r["drop_one"] = drop_one_run(r, scores, params, seeds_of, kw)
    if not scores:
        return f"No seed re-runs: the claims need `--seeds {claims_mod.MIN_SEEDS}` or more.\n", rows
    text = claims_mod.claims_md(
        rows,
        scores,
        METHODS,
        protocol=inputs.get("protocol"),
        margin_why=inputs.get("margin_why") or {},
        futile=inputs.get("futile") or [],
        splits=_split_summary(records),
        **kw,
    )
    return text, rows


def drop_one_run(
    row: Mapping[str, Any],
    scores: Mapping[tuple[str, str], Sequence[float]],
    params: Mapping[tuple[str, str], float],
    seeds_of: Mapping[tuple[str, str], Sequence[str]],
    kw: Mapping[str, Any],
) -> list[str]:
    """The single runs whose removal changes what this (claim, task)'s verdict says (held, contradicted, or
    nothing: "not shown" and "insufficient seeds" alike), as ``method seed S → verdict``: every run of the claim's
    two arms is left out in turn and the whole page re-tested (same family, same levels). Empty: the verdict
    survives dropping any one run."""
    out = []
    for arm in ((row["x"], row["task"]), (row["y"], row["task"])):
        for i, seed in enumerate(seeds_of.get(arm, ())):
            fewer = {k: (list(v[:i]) + list(v[i + 1 :]) if k == arm else list(v)) for k, v in scores.items()}
            again = claims_mod.evaluate_claims(fewer, params, **{**kw, "n_boot": 100}, power=False)
            verdict = next(
                (r["verdict"] for r in again if (r["claim"], r["task"]) == (row["claim"], row["task"])), None
            )
            if _outcome(verdict) != _outcome(row["verdict"]):
                out.append(f"{arm[0]} seed {seed} → {verdict}")
    return out


def _outcome(verdict: str | None) -> str | None:
    """What a verdict says: held, contradicted, or nothing ("not shown" and "insufficient seeds" alike)."""
    return None if verdict in claims_mod.UNDECIDED else verdict


def _split_summary(records: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Per task, what its seed re-runs scored: ``dev, 872 examples`` (or every distinct pair when they differ)."""
    out: dict[str, set[str]] = {}
    for r in records:
        out.setdefault(r["task"], set()).add(f"{r.get('split') or '?'}, {r.get('examples') or '?'} examples")
    return {t: "; ".join(sorted(v)) for t, v in out.items()}


def build_stability(
    records: Sequence[dict[str, Any]], inputs: Mapping[str, Any]
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """``stability.md``, its rows (one per selecting (method, task)) and the decision rows, from the records.
    The p-values against chance are Holm-adjusted across the rows of the page."""
    from sweeps.report.selection import SELECTION_METHODS
    from sweeps.report.stability import decision_lines, decision_rows, seed_stability, stability_md

    runs, reports = runs_of(records)
    rows: list[dict[str, Any]] = []
    for (method, task), rs in sorted(runs.items()):
        if method not in SELECTION_METHODS:
            continue
        rows.append({"task": task, **seed_stability(method, rs, [reports.get(r.run_id) for r in rs])})
    tested = [r for r in rows if r.get("overlap_p") is not None]
    for r, p in zip(tested, claims_mod.holm([r["overlap_p"] for r in tested]), strict=True):
        r["overlap_p_holm"] = p
    decisions = decision_rows([r for rs in runs.values() for r in rs])
    text = (stability_md(rows) if rows else "No seed re-runs of a selecting method.\n") + (
        "\n" + decision_lines(decisions) if decisions else ""
    )
    return text, rows, decisions


def write_verdicts(out: Path, records: Sequence[dict[str, Any]], inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``seeds.csv``, ``verdict_inputs.json``, ``claims.md/json`` and ``stability.md/json`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_seeds_csv(out / SEEDS_CSV, records)
    (out / INPUTS_JSON).write_text(json.dumps(dict(inputs), indent=1, sort_keys=True) + "\n")
    return _write_pages(out, read_seeds_csv(out / SEEDS_CSV), inputs)


def _write_pages(out: Path, records: Sequence[dict[str, Any]], inputs: Mapping[str, Any]) -> dict[str, Any]:
    claims_text, claim_rows = build_claims(records, inputs)
    stab_text, stab_rows, decisions = build_stability(records, inputs)
    (out / "claims.md").write_text(claims_text)
    (out / "claims.json").write_text(json.dumps(claim_rows, indent=1, default=_jsonable) + "\n")
    (out / "stability.md").write_text(stab_text)
    (out / "stability.json").write_text(json.dumps(stab_rows, indent=1, default=_jsonable) + "\n")
    return {"claims": claim_rows, "claims_md": claims_text, "stability": stab_rows, "decisions": decisions}


def _jsonable(v: Any) -> Any:
    if isinstance(v, set | frozenset | tuple):
        return sorted(v) if isinstance(v, set | frozenset) else list(v)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return str(v)


def recompute(folder: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Rebuild the verdict pages of ``folder`` from its ``seeds.csv`` and ``verdict_inputs.json`` alone, into
    ``out`` (default: ``folder`` itself)."""
    src = Path(folder)
    missing = [n for n in (SEEDS_CSV, INPUTS_JSON) if not (src / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{src}: no {' or '.join(missing)} (written by python -m sweeps.report)")
    inputs = json.loads((src / INPUTS_JSON).read_text())
    dest = Path(out) if out is not None else src
    dest.mkdir(parents=True, exist_ok=True)
    return _write_pages(dest, read_seeds_csv(src / SEEDS_CSV), inputs)


def _param_json(params: Mapping[str, str], key: str) -> Any:
    try:
        return json.loads(params[key]) if key in params else None
    except ValueError:
        return None


def verdict_inputs(parent, margin: float | None, n_boot: int, boot_seed: int, client=None) -> dict[str, Any]:
    """What the verdicts of the sweep whose MLflow parent run is ``parent`` are computed with: δ per task and its
    meaning (the preset's ``claims:``; ``margin`` overrides every task's δ), looks, α, bootstrap, protocol,
    and the claims ``--seeds auto`` stopped for futility (its ``seed_looks.json``)."""
    from sweeps.schema import looks_of, protocol_of

    params = parent.data.params
    margins = _param_json(params, "claim_margins") or {}
    priors = _param_json(params, "claim_prior_sd") or {}
    if margin is not None:
        margins = {t: float(margin) for t in margins} or {}
    futile: list[str] = []
    looks_record = None
    if client is not None:
        import tempfile

        from sweeps.report.selection import download_json

        with tempfile.TemporaryDirectory() as tmp:
            looks_record = download_json(client, parent.info.run_id, SEED_LOOKS_ARTIFACT, Path(tmp))
    if isinstance(looks_record, list) and looks_record:
        futile = list(looks_record[-1].get("futile") or [])
    out: dict[str, Any] = {
        "protocol": protocol_of(parent),
        "looks": looks_of(parent),
        "alpha": claims_mod.ALPHA,
        "n_boot": int(n_boot),
        "boot_seed": int(boot_seed),
        "margins": {t: float(v) for t, v in margins.items()},
        "margin_why": {t: (v or {}).get("why", "") for t, v in priors.items() if isinstance(v, dict)},
        "priors": priors,
        "futile": futile,
    }
    if margin is not None:
        out["margin"] = float(margin)
        if not margins:
            out["margin_why"] = {}
    return out
