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


def test_heldout_protocol_and_seeds_auto_running_to_the_cap(sweep_cmd, tmp_path, minilm_path, glue_dir):
    """Both arms barely train (lr 2e-5): the claim stays open, so --seeds auto goes 3 → 4 (= --max-seeds).
    Under --protocol heldout every search trial scores on the held-out split and the seed re-runs on dev."""
    make, env = sweep_cmd
    args = [*BUDGET, "--space", "lr=grid:2e-5,3e-5", "--seeds", "auto", "--max-seeds", "4"]
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
    # every choice read the held-out split; the seed re-runs report dev
    assert {(r.data.params["eval_split"], r.data.params["holdout"]) for r in trials} == {("holdout", "64.0")}
    assert {r.data.params["eval_split"] for r in seeds} == {"dev"}
    # the seed re-runs rerun the best trial by its held-out score
    for method in ("weightlora", "random_select"):
        mine = [r for r in trials if r.data.tags["method"] == method]
        best = max(mine, key=lambda r: r.data.metrics["eval_main"])
        assert {r.data.params["lr"] for r in seeds if r.data.tags["method"] == method} == {best.data.params["lr"]}
    # the claim stayed open: seeds 3 then 4 (the cap), two looks
    assert sorted(r.data.tags["seed"] for r in seeds) == ["0", "0", "1", "1", "2", "2", "3", "3"]
    looks = state["seed_looks"]
    assert [lk["look"] for lk in looks] == [1, 2] and looks[0]["more"] == {
        "sst2-weightlora-r8": 4,
        "sst2-random_select-r8": 4,
    }
    assert "look 2 of at most 2" in out.stderr + out.stdout
    assert "Protocol: **heldout**" in (run_dir / "results" / "table.md").read_text()

    # the split itself: held-out and training examples are disjoint, and neither is dev
    from wlora.data import read_glue_split
    from wlora.data.tasks import split_holdout

    rows = read_glue_split(str(glue_dir), "sst2", "train")
    rest, held = split_holdout(rows, 64, 0, "classification")
    assert len(held) == 64 and len(rest) == len(rows) - 64
    assert not {id(r) for r in rest} & {id(r) for r in held}
    dev = {(r.text_a, r.label) for r in read_glue_split(str(glue_dir), "sst2", "dev")}
    assert not dev & {(r.text_a, r.label) for r in held}
    # stratified: the held-out label share is the training set's within one example
    share = sum(r.label for r in rows) / len(rows)
    assert abs(sum(r.label for r in held) - 64 * share) <= 1


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
