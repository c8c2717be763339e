"""Real sweeps on a local Ray cluster: MiniLM + SST-2 slices, Optuna + ASHA, MLflow checked by its client.

Each sweep runs as ``python sweeps/glue_sweep.py`` in a subprocess inside a loopback-only network
namespace (``unshare --net --pid --fork``): Ray binds the machine's interface even when told
127.0.0.1, and killing the namespace's first process kills the whole driver tree (the resume test).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import TINY

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd, env, timeout=300) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return out


def _state(run_dir: Path) -> dict:
    return json.loads((run_dir / "sweep_state.json").read_text())


def _children(client, state, role="trial"):
    runs = client.search_runs(
        [state["experiment_id"]],
        filter_string=f"tags.mlflow.parentRunId = '{state['parent_run_id']}'",
        max_results=1000,
    )
    return [r for r in runs if r.data.tags.get("wlora.role") == role]


def test_real_sweep_optuna_asha_mlflow(sweep_cmd, tmp_path, minilm_path):
    """Two cells × 4 trials in one pool of 4 slots: the slots fill with trials of both cells at once, each
    cell keeps its own Optuna study and ASHA, MLflow holds one parent with a child per trial."""
    from mlflow.tracking import MlflowClient

    from sweeps.results import slot_usage

    make, env = sweep_cmd
    t0 = time.time()
    argv = [*TINY, "--methods", "lora,weightlora", "--num-samples", "4", "--num-cpus", "4", "--name", "real"]
    _run(make(*argv), env)
    wall = time.time() - t0
    run_dir = tmp_path / "runs" / "real"
    state = _state(run_dir)
    assert state["finished"] and sorted(state["cells"]) == ["sst2-lora-r8", "sst2-weightlora-r8"]

    client = MlflowClient(state["tracking_uri"])
    parent = client.get_run(state["parent_run_id"])
    tags = parent.data.tags
    assert tags["wlora.role"] == "sweep" and tags["wlora.sweep_name"] == "real"
    assert tags["model"] == str(minilm_path) and tags["git_commit"] and tags["data_dir"]
    assert parent.data.params["num_samples"] == "4" and parent.data.params["search"] == "optuna"
    assert parent.info.status == "FINISHED"

    children = _children(client, state)
    assert len(children) == 8
    assert len({c.data.tags["trial_id"] for c in children}) == 8  # one child per trial
    statuses = {}
    for c in children:
        t = c.data.tags
        assert t["task"] == "sst2" and t["method"] in ("lora", "weightlora") and t["rank"] == "8"
        assert t["model"] == str(minilm_path) and t["seed"] == "0"
        assert t["status"] in ("completed", "asha_stopped"), t
        statuses[t["trial_id"]] = t["status"]
        assert c.data.params["method"] == t["method"] and "lr" in c.data.params
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "eval_main")]
        assert steps == sorted(set(steps)) and steps[0] == 2
        assert len(client.get_metric_history(c.info.run_id, "train_loss")) == len(steps)
        if t["status"] == "completed":
            assert steps == [2, 4, 6, 8]
            assert c.data.metrics["final_trainable_params"] > 0
            names = [a.path for a in client.list_artifacts(c.info.run_id)]
            assert "selection.json" in names
        else:
            assert steps[-1] < 8
    assert "asha_stopped" in statuses.values(), statuses
    # One pool: all 4 slots busy at once, with trials of both cells running side by side.
    spans = {c.data.tags["trial_id"]: (c.info.start_time / 1000, c.info.end_time / 1000) for c in children}
    assert slot_usage(list(spans.values()), 4)["max_concurrent"] == 4
    cell_of = {c.data.tags["trial_id"]: c.data.tags["wlora.cell"] for c in children}
    assert any(
        cell_of[a] != cell_of[b] and spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]
        for a in spans
        for b in spans
    ), "no two cells ran at the same time"
    # Each cell's Optuna study saw exactly its own trials.
    for name, cell in state["cells"].items():
        assert set(cell["optuna_states"]) == {t for t, c in cell_of.items() if c == name}, name
    # ASHA-stopped trials reached Optuna as PRUNED, completed ones as COMPLETE.
    for cell in state["cells"].values():
        for tid, optuna_state in cell["optuna_states"].items():
            assert optuna_state == {"completed": "COMPLETE", "asha_stopped": "PRUNED"}[statuses[tid]], (tid, cell)
    wl = next(c for c in children if c.data.tags["method"] == "weightlora" and c.data.tags["status"] == "completed")
    selection = json.loads(Path(client.download_artifacts(wl.info.run_id, "selection.json", str(tmp_path))).read_text())
    assert selection, "weightlora reports its selected adapters"
    assert wl.data.metrics["active_adapters"] < 18

    # Results table (run folder + parent artifact) and the best adapters, loadable with peft.
    md = (run_dir / "results" / "table.md").read_text()
    assert md.startswith("| Method | # Params | SST-2 Acc | Avg |") and "| WeightLoRA (r=8, K=" in md, md
    assert (run_dir / "results" / "table.csv").read_text().startswith("method,rank,params")
    assert "n_trials" in (run_dir / "results" / "table_long.csv").read_text()
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "results")} >= {
        "results/table.md",
        "results/table.csv",
    }
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    for method in ("lora", "weightlora"):
        local = client.download_artifacts(parent.info.run_id, f"best_adapter/sst2/{method}", str(tmp_path / method))
        base = AutoModelForSequenceClassification.from_pretrained(str(minilm_path), num_labels=2)
        model = PeftModel.from_pretrained(base, local)
        assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) > 0
    print(f"sweep wall time {wall:.0f} s")


def test_kill_driver_and_resume(sweep_cmd, tmp_path):
    """SIGKILL the whole driver (namespace) once a trial has checkpointed, resume: the sweep completes, no MLflow
    child is duplicated, and no trial restarts from scratch (no trial reports its first evaluation twice)."""
    from mlflow.tracking import MlflowClient

    make, env = sweep_cmd
    args = [*TINY, "--methods", "lora,weightlora", "--num-samples", "1", "--no-asha", "--num-cpus", "2"]
    args += ["--name", "crash"]
    run_dir = tmp_path / "runs" / "crash"
    proc = subprocess.Popen(make(*args), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    try:
        # Wait until both cells' trials (one slot each, side by side) have written their second checkpoint (so
        # the first is surely in Tune's experiment state).
        while len({p.parent for p in run_dir.glob("pool/trial_*/checkpoint_00000[1-9]")}) < 2:
            assert proc.poll() is None, proc.stdout.read().decode()[-4000:]
            assert time.time() < deadline, "the trials wrote no checkpoint"
            time.sleep(0.5)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # unshare dies → its child (pid 1 of the namespace) and all inside
        proc.wait(timeout=60)
    state = _state(run_dir)
    assert not state["finished"] and state["cells"] == {}
    client = MlflowClient(state["tracking_uri"])
    before = {c.data.tags["trial_id"]: c.info.run_id for c in _children(client, state)}
    assert len(before) == 2  # both interrupted trials

    out = _run(make("--resume", "--name", "crash", "--storage-path", str(tmp_path / "runs")), env)
    state = _state(run_dir)
    assert state["finished"], out.stdout[-2000:]
    assert [c["n_trials"] for c in state["cells"].values()] == [1, 1]
    assert all(c["n_completed"] == 1 for c in state["cells"].values()), (state["cells"], out.stdout[-3000:])
    children = _children(client, state)
    ids = [c.data.tags["trial_id"] for c in children]
    assert len(ids) == 2 == len(set(ids)) and set(ids) == set(before), ids  # no duplicate children
    for c in children:
        assert c.data.tags["status"] == "completed"
        if c.data.tags["trial_id"] in before:
            assert before[c.data.tags["trial_id"]] == c.info.run_id  # the same child continued
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "eval_main")]
        assert steps == [2, 4, 6, 8], (c.data.tags, steps)
    # Tune's own log of every report: after the restart each trial continued from its checkpoint.
    for trial_dir in run_dir.glob("pool/trial_*"):
        reported = [json.loads(ln).get("step") for ln in (trial_dir / "result.json").read_text().splitlines() if ln]
        assert reported.count(2) == 1 and reported[-1] == 8, (trial_dir.name, reported)


def test_reused_actor_leaks_no_state_and_seed_reruns(sweep_cmd, tmp_path):
    """Two identical weightlora trials, one after the other in the same reused actor, give identical
    metrics (adapter removal, RNG, accelerate state … do not leak from the first into the second).
    Then ``--seeds 2`` re-runs the best config with two seeds: seed_run children, mean ± std."""
    from mlflow.tracking import MlflowClient

    make, env = sweep_cmd
    args = [*TINY, "--methods", "weightlora", "--search", "grid", "--space", "lr=grid:0.002,0.002"]
    args += ["--set", "warmup_steps=0", "--set", "k_fraction=0.25", "--set", "lr_w=5", "--no-asha"]
    args += ["--max-concurrent", "1", "--seeds", "2", "--name", "reuse"]
    _run(make(*args), env)
    state = _state(tmp_path / "runs" / "reuse")
    trials = state["cells"]["sst2-weightlora-r8"]["trials"]
    assert len(trials) == 2 and all(t["status"] == "completed" for t in trials)
    a, b = trials
    assert a["pid"] == b["pid"], "the second trial should run in the reused actor"
    assert a["eval_main"] == b["eval_main"] and a["train_loss"] == b["train_loss"]

    seeds = state["seed_cells"]["sst2-weightlora-r8"]
    assert seeds["n"] == 2 and seeds["std"] is not None
    runs = _children(MlflowClient(state["tracking_uri"]), state, role="seed_run")
    assert sorted(r.data.tags["seed"] for r in runs) == ["1", "2"]  # seed 0 trained the search trials
    assert all(r.data.tags["method"] == "weightlora" and r.data.tags["status"] == "completed" for r in runs)
    assert " ± " in (tmp_path / "runs" / "reuse" / "results" / "table.md").read_text()


def test_diverging_trial_fails_and_the_sweep_goes_on(sweep_cmd, tmp_path):
    """One trial of each cell diverges (lr 1e30: non-finite loss), the other trains: the sweep finishes, the
    diverged trials are marked failed in the state and in MLflow (with the runner's error), and the best
    configuration, the table (one row per rank) and the exported adapter come from the trials that completed."""
    from mlflow.tracking import MlflowClient

    make, env = sweep_cmd
    args = [*TINY, "--methods", "lora", "--ranks", "2,8", "--search", "grid", "--space", "lr=grid:1e30,0.002"]
    args += ["--set", "warmup_steps=0", "--no-asha", "--max-concurrent", "1", "--name", "nan"]
    out = _run(make(*args), env)
    state = _state(tmp_path / "runs" / "nan")
    assert state["finished"]
    assert set(state["cells"]) == {"sst2-lora-r2", "sst2-lora-r8"}
    for cell in state["cells"].values():
        assert (cell["n_trials"], cell["n_completed"], cell["n_failed"]) == (2, 1, 1), cell
        failed = next(t for t in cell["trials"] if t["status"] == "failed")
        assert "non-finite" in failed["error"].lower() or "nan" in failed["error"].lower(), failed
        assert cell["best_config"]["lr"] == pytest.approx(0.002)

    client = MlflowClient(state["tracking_uri"])
    children = _children(client, state)
    by_status = {c.data.tags["status"]: c for c in children}
    assert sorted(by_status) == ["completed", "failed"], [c.data.tags for c in children]
    assert by_status["failed"].info.status == "FAILED" and by_status["failed"].data.tags["error"]
    assert by_status["completed"].info.status == "FINISHED"
    results = tmp_path / "runs" / "nan" / "results"
    rows = [ln for ln in (results / "table.md").read_text().splitlines() if ln[:2] == "| "]
    assert [r.split(" | ")[0] for r in rows] == ["| Method", "| LoRA (r=2)", "| LoRA (r=8)"], rows
    long = list(csv.DictReader((results / "table_long.csv").open()))
    assert sorted((r["rank"], r["n_trials"], r["n_failed"]) for r in long) == [("2", "2", "1"), ("8", "2", "1")]
    exported = client.list_artifacts(state["parent_run_id"], "best_adapter/sst2/lora")
    assert exported, out.stdout[-2000:]


@pytest.mark.parametrize(
    ("script", "task", "data_file", "header", "score"),
    [
        ("squad_sweep.py", "squad", "squad/dev-v1.1.json", "SQuAD v1.1 EM/F1", "SQuAD F1"),
        ("nlg_sweep.py", "xsum", "xsum/XSum-test-tiny-50.jsonl", "XSum R-1/2/L", "XSum mean of ROUGE-1"),
    ],
)
def test_squad_and_nlg_sweeps_end_to_end(sweep_cmd, tmp_path, glue_dir, script, task, data_file, header, score):
    """The SQuAD and summarisation sweeps run the same machinery end to end on tiny real data: one MLflow child
    per trial with the task's metrics, and a results table with the task's own column and score."""
    from mlflow.tracking import MlflowClient

    make, env = sweep_cmd
    data = Path(glue_dir).parent / data_file
    name = f"e2e-{task}"
    argv = make("--smoke-test", "--methods", "lora,weightlora", "--num-samples", "1", "--name", name)
    argv[argv.index(str(ROOT / "sweeps" / "glue_sweep.py"))] = str(ROOT / "sweeps" / script)
    argv += ["--set", f"train_file={data}", "--set", f"eval_file={data}", "--progress-interval", "1000"]
    _run(argv, env)
    state = _state(tmp_path / "runs" / name)
    assert state["status"] == "finished" and sorted(state["cells"]) == [f"{task}-lora-r8", f"{task}-weightlora-r8"]
    client = MlflowClient(state["tracking_uri"])
    children = _children(client, state)
    assert len(children) == 2 and {c.data.tags["task"] for c in children} == {task}
    metric = "eval_f1" if task == "squad" else "eval_rouge1"
    for c in children:
        assert c.data.tags["status"] == "completed" and metric in c.data.metrics and "eval_main" in c.data.metrics
    table = (tmp_path / "runs" / name / "results" / "table.md").read_text()
    assert table.startswith(f"| Method | # Params | {header} | Avg |"), table
    assert f"`eval_main`: {score}" in table and "GLUE" not in table
