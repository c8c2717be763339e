"""Real MiniLM sweeps for the verdicts: the held-out protocol (no choice reads dev) and ``--seeds auto``
(stops at the first look on a clearly decided claim, runs to --max-seeds on an undecided one)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

ROOT = Path(__file__).resolve().parents[1]
BUDGET = [
    "--tasks", "sst2", "--max-steps", "24", "--eval-every", "12", "--batch-size", "16", "--max-length", "32",
    "--train-subset", "384", "--eval-subset", "96", "--progress-interval", "1000", "--search", "grid",
    "--methods", "weightlora,random_select", "--set", "warmup_steps=0", "--set", "k_fraction=0.25",
    "--set", "weightlora.t=4", "--set", "random_select.t=4", "--set", "weightlora.lr_w=5",
]  # fmt: skip


def _run(cmd, env) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return out


def _children(state):
    client = MlflowClient(state["tracking_uri"])
    runs = client.search_runs(
        [state["experiment_id"]], filter_string=f"tags.mlflow.parentRunId = '{state['parent_run_id']}'"
    )
    return client, runs


def test_heldout_protocol_scores_what_it_says_and_a_futile_claim_stops(sweep_cmd, tmp_path, minilm_path, glue_dir):
    """Both arms barely train (lr 2e-5): claim (b) cannot pass at --max-seeds 4, so --seeds auto stops it for
    futility after the first look.
    Under --protocol heldout every search trial scores the held-out examples and every seed re-run scores dev —
    checked from what each run scored (its example count and the fingerprint of those examples, recomputed
    here from the files), and by re-scoring a seed re-run's exported adapter on dev."""
    make, env = sweep_cmd
    args = [*BUDGET, "--eval-subset", "none", "--space", "lr=grid:2e-5,3e-5", "--seeds", "auto", "--max-seeds", "4"]
    args += ["--protocol", "heldout", "--holdout-size", "64", "--name", "held"]
    out = _run(make(*args), env)
    run_dir = tmp_path / "runs" / "held"
    state = json.loads((run_dir / "sweep_state.json").read_text())
    client, runs = _children(state)
    parent = client.get_run(state["parent_run_id"])
    assert parent.data.params["protocol"] == "heldout" and parent.data.params["seed_looks"] == "2"
    trials = [r for r in runs if r.data.tags["wlora.role"] == "trial"]
    seeds = [r for r in runs if r.data.tags["wlora.role"] == "seed_run"]
    assert len(trials) == 4

    # What was scored, recomputed from the files: the held-out examples the split draws, and the dev file.
    from wlora.data import read_glue_split
    from wlora.data.tasks import example_fingerprint, split_holdout

    rows = read_glue_split(str(glue_dir), "sst2", "train")
    rest, held = split_holdout(rows, 64, 0, "classification")
    dev_rows = read_glue_split(str(glue_dir), "sst2", "dev")
    assert len(dev_rows) == 872
    for r in trials:
        assert r.data.tags["eval_split"] == "holdout" and r.data.metrics["eval_examples"] == 64
        assert r.data.tags["eval_fingerprint"] == example_fingerprint(held)
    for r in seeds:
        assert r.data.tags["eval_split"] == "dev" and r.data.metrics["eval_examples"] == 872
        assert r.data.tags["eval_fingerprint"] == example_fingerprint(dev_rows)
        # accuracy on 872 examples: a multiple of 1/872, not of 1/64
        assert abs(r.data.metrics["eval_accuracy"] * 872 - round(r.data.metrics["eval_accuracy"] * 872)) < 1e-6

    # the seed re-runs rerun the best trial by its held-out score, never with the search trial's own seed
    for method in ("weightlora", "random_select"):
        mine = [r for r in trials if r.data.tags["method"] == method]
        best = max(mine, key=lambda r: r.data.metrics["eval_main"])
        assert {r.data.params["lr"] for r in seeds if r.data.tags["method"] == method} == {best.data.params["lr"]}
    # neither arm learns, so claim (b) has no chance at the cap: it stops for futility at the first look,
    # with 3 seed re-runs per arm (seed 0 trained the search trials, so the re-runs are seeds 1-3)
    assert sorted(r.data.tags["seed"] for r in seeds) == ["1", "1", "2", "2", "3", "3"]
    looks = state["seed_looks"]
    assert [lk["look"] for lk in looks] == [1] and looks[0]["more"] == {}
    assert looks[0]["futile"] == ["(b) sst2 r=8"] and looks[0]["conditional_power"]["(b) sst2 r=8"] < 0.1
    assert "look 1 of at most 2" in out.stderr + out.stdout
    assert "Protocol: **heldout**" in (run_dir / "results" / "table.md").read_text()

    # Re-score one seed re-run's exported adapter on dev: the logged score is the dev score.
    _rescore_exported_seed_run(client, run_dir, seeds[0], minilm_path, glue_dir)

    # seeds.csv holds every seed re-run with its split and examples, and the pages recompute from it alone
    report = run_dir / "report"
    import csv

    with (report / "seeds.csv").open() as fh:
        seed_rows = list(csv.DictReader(fh))
    assert len(seed_rows) == 6 and {(r["split"], r["examples"]) for r in seed_rows} == {("dev", "872")}
    from sweeps.verdicts import recompute

    recompute(report, tmp_path / "again")
    for name in ("claims.md", "stability.md"):
        assert (tmp_path / "again" / name).read_text() == (report / name).read_text()

    # the split itself: held-out and training examples are disjoint, and neither is dev
    assert len(held) == 64 and len(rest) == len(rows) - 64
    assert not {id(r) for r in rest} & {id(r) for r in held}
    dev = {(r.text_a, r.label) for r in dev_rows}
    assert not dev & {(r.text_a, r.label) for r in held}
    # stratified: the held-out label share is the training set's within one example
    share = sum(r.label for r in rows) / len(rows)
    assert abs(sum(r.label for r in held) - 64 * share) <= 1


def _rescore_exported_seed_run(client, run_dir: Path, run, minilm_path, glue_dir) -> None:
    """Export ``run``'s final checkpoint as a PEFT adapter, load it on the base model with peft, evaluate it on
    the full dev set and compare with the score the run logged."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from wlora.evaluation import evaluate
    from wlora.loop import export_from_checkpoint
    from wlora.modeling import prepare_run
    from wlora.run_config import TrainConfig

    tid = run.data.tags["trial_id"]
    ckpts = sorted((run_dir / "pool" / f"trial_{tid}").glob("checkpoint_*"))
    assert ckpts, f"no checkpoint of seed re-run {tid}"
    flat = {k: v for k, v in run.data.params.items() if k not in ("sweep_cell", "sweep_role")}
    cfg = TrainConfig.from_flat({k: _typed(v) for k, v in flat.items()})
    assert cfg.eval_split == "dev"
    assets = prepare_run(cfg)
    assert assets.data.n_eval_examples == 872
    out = run_dir / "rescore"
    export_from_checkpoint(cfg, assets, ckpts[-1], out)
    base = AutoModelForSequenceClassification.from_pretrained(str(minilm_path), num_labels=2)
    model = PeftModel.from_pretrained(base, str(out)).eval()
    got = evaluate(model, cfg, assets, torch.device("cpu"))["eval_main"]
    assert got == pytest.approx(run.data.metrics["eval_main"], abs=1e-9)


def _typed(v: str):
    """An MLflow param (a string) back as the value it was logged from (JSON for numbers, lists, None)."""
    try:
        return json.loads(v)
    except ValueError:
        return v


def test_seeds_auto_stops_at_the_first_look_on_a_clear_claim(sweep_cmd, tmp_path):
    """WeightLoRA trained (lr 4e-3, 48 steps) vs random selection barely trained (lr 2e-5): claim (b) is
    held before the cap, so the cells stop short of --max-seeds 8 (schedule 3 → 5 → 7 → 8)."""
    make, env = sweep_cmd
    args = [*BUDGET, "--space", "weightlora.lr=grid:4e-3", "--space", "random_select.lr=grid:2e-5"]
    args += ["--max-steps", "48", "--eval-every", "48", "--set", "k_fraction=0.5"]
    args += ["--seeds", "auto", "--max-seeds", "8", "--no-asha", "--name", "clear"]
    _run(make(*args), env)
    state = json.loads((tmp_path / "runs" / "clear" / "sweep_state.json").read_text())
    _, runs = _children(state)
    seeds = [r for r in runs if r.data.tags["wlora.role"] == "seed_run"]
    looks = state["seed_looks"]
    assert looks[-1]["more"] == {} and looks[-1]["verdicts"] == {"(b) sst2 r=8": "held"}
    assert len(looks) < 4 and len(seeds) == 2 * [3, 5, 7][len(looks) - 1] < 16  # stopped before the cap
