"""A sweep does what was typed and names what it cannot use: flag precedence, --set of the rank, bad input
(one line, exit 2), damaged state, the retrying MLflow queue, resource checks, failure reasons, and the same
checks in ``python -m wlora.train`` (--output-dir, --resume-from, broken TSVs)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from sweeps.flags import apply_preset_cli, apply_smoke, build_parser, given
from sweeps.glue_sweep import DEFAULTS
from sweeps.plan import InputError, plan_sweep
from sweeps.resources import GIB, check_resources, estimate_trial_memory
from sweeps.schema import trial_error_reason
from sweeps.state import (
    FAILED,
    FINISHED,
    INTERRUPTED,
    RUNNING,
    STATE_FILE,
    StateError,
    check_experiment,
    check_sqlite_store,
    latest_resumable,
    load_state,
)
from sweeps.tracking_queue import TrackingQueue

ROOT = Path(__file__).resolve().parents[1]


def _args(*argv: str):
    parser = build_parser(DEFAULTS)
    args = parser.parse_args(list(argv))
    apply_preset_cli(args, parser)
    apply_smoke(args, DEFAULTS, parser)
    return args


# ----- flags mean what was typed -----


def test_typed_flags_win_over_smoke_even_when_equal_to_the_default():
    args = _args("--smoke-test", "--tasks", "sst2", "--num-samples", "8", "--max-steps", "150")
    assert args.tasks == ["sst2"]  # the smoke test's task is rte
    assert args.num_samples == 8 and args.max_steps == 150  # both equal the parser's defaults
    assert args.batch_size == DEFAULTS.smoke["batch_size"]  # not typed: the smoke value
    assert given(args, "tasks") and not given(args, "batch_size")


def test_precedence_flag_over_preset_over_smoke_over_default(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("cli:\n  num_samples: 5\n  batch_size: 4\n  tasks: [cola]\n")
    args = _args("--preset", str(preset), "--smoke-test", "--batch-size", "32")
    assert args.batch_size == 32  # typed (and equal to the default) beats the preset
    assert args.num_samples == 5 and args.tasks == ["cola"]  # the preset beats --smoke-test
    assert args.max_steps == DEFAULTS.smoke["max_steps"]  # --smoke-test beats the default
    plain = _args()
    assert plain.num_samples == DEFAULTS.num_samples and plain.given_flags == []


@pytest.fixture
def real_args(minilm_path, glue_dir, tmp_path):
    base = ["--model", str(minilm_path), "--data-dir", str(Path(glue_dir).parent), "--max-steps", "4"]
    base += ["--train-subset", "16", "--eval-subset", "16", "--max-length", "32", "--storage-path", str(tmp_path)]
    return lambda *extra: _args(*base, *extra)


def test_smoke_test_with_tasks_plans_that_task(real_args):
    plan = plan_sweep(real_args("--smoke-test", "--tasks", "sst2"), DEFAULTS)
    assert {c.task for c in plan.cells} == {"sst2"}


def test_set_rank_pins_the_cells_rank(real_args):
    plan = plan_sweep(real_args("--methods", "lora,weightlora", "--set", "r=4"), DEFAULTS)
    assert [c.name for c in plan.cells] == ["sst2-lora-r4", "sst2-weightlora-r4"]
    assert all(plan.fixed[c.name]["r"] == 4 and "r" not in plan.spaces[c.name] for c in plan.cells)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "r=0"], r"`r` must be a positive integer, got 0"),
        (["--set", "r=eight"], r"`r` must be a positive integer, got 'eight'"),
        (["--set", "r=4", "--ranks", "8"], "use --ranks only"),
        (["--set", "task=cola"], "use that flag"),
        (["--set", "lora.method=full"], "use that flag"),
        (["--set", "epochs=2"], r"sets `epochs` from --max-epochs; use that flag"),
        (["--search", "grid"], "needs at least one grid dimension"),
        (["--max-concurrent", "0"], "--max-concurrent must be >= 1"),
        (["--space", "lr=loguniform:1e-2:1e-4"], "lower bound 0.01 must be below the upper bound"),
        (["--space", "lr=loguniform:0:1e-4"], "positive lower bound"),
        (["--memory-per-trial", "0"], "--memory-per-trial"),
    ],
)
def test_more_bad_input_fails_before_any_trial(real_args, extra, message):
    with pytest.raises(InputError, match=message):
        plan_sweep(real_args(*extra), DEFAULTS)


def test_storage_path_that_is_a_file(real_args, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(InputError, match="is a file, not a folder"):
        plan_sweep(real_args("--storage-path", str(afile)), DEFAULTS)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "the file is empty"), (b"sentence\tlabel\nabc \xff\xfe def\t1\n", "not UTF-8 text")],
)
def test_broken_tsv_is_named(real_args, glue_dir, tmp_path, content, message):
    task = tmp_path / "data" / "glue" / "SST-2"
    task.mkdir(parents=True)
    (task / "train.tsv").write_bytes(content)
    shutil.copy(Path(glue_dir) / "SST-2" / "dev.tsv", task / "dev.tsv")
    with pytest.raises(InputError, match=rf"{task / 'train.tsv'}: {message}"):
        plan_sweep(real_args("--data-dir", str(tmp_path / "data")), DEFAULTS)


def test_sweep_cli_bad_input_is_one_line_and_exit_2(minilm_path, glue_dir, tmp_path):
    cmd = [sys.executable, str(ROOT / "sweeps" / "glue_sweep.py"), "--model", str(minilm_path)]
    cmd += ["--data-dir", str(Path(glue_dir).parent), "--storage-path", str(tmp_path), "--smoke-test"]
    out = subprocess.run([*cmd, "--set", "r=eight"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines() == [
        "error: lora: `r` must be a positive integer, got 'eight' (or use --ranks 4,8)"
    ]
    assert not any(tmp_path.glob(f"*/{STATE_FILE}"))  # nothing left that --resume could pick up


# ----- state: status, and what --resume cannot read -----


def _write_state(run: Path, status: str | None, finished: bool = False) -> None:
    run.mkdir(parents=True)
    state = {"args": {}, "finished": finished}
    if status is not None:
        state["status"] = status
    (run / STATE_FILE).write_text(json.dumps(state))


def test_bare_resume_picks_only_running_or_interrupted(tmp_path):
    _write_state(tmp_path / "a-failed", FAILED)
    time.sleep(0.01)
    _write_state(tmp_path / "b-interrupted", INTERRUPTED)
    time.sleep(0.01)
    _write_state(tmp_path / "c-finished", FINISHED, finished=True)
    time.sleep(0.01)
    _write_state(tmp_path / "d-failed", FAILED)
    assert latest_resumable(tmp_path) == tmp_path / "b-interrupted"
    _write_state(tmp_path / "e-old-style", None)  # no status: running unless finished
    assert latest_resumable(tmp_path) == tmp_path / "e-old-style"
    (tmp_path / "f-broken").mkdir()
    (tmp_path / "f-broken" / STATE_FILE).write_text('{"args": ')
    assert latest_resumable(tmp_path) == tmp_path / "e-old-style"  # skipped here, named when resumed by --name


def test_damaged_state_files_are_named(tmp_path):
    run = tmp_path / "run"
    _write_state(run, RUNNING)
    assert load_state(run)["status"] == RUNNING
    (run / STATE_FILE).write_text('{"args": {"tas')
    with pytest.raises(StateError, match=rf"{run / STATE_FILE} is damaged"):
        load_state(run)
    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE runs (run_uuid TEXT)")
        con.executemany("INSERT INTO runs VALUES (?)", [(str(i) * 200,) for i in range(2000)])
    check_sqlite_store(f"sqlite:///{db}")
    db.write_bytes(db.read_bytes()[:5000])
    with pytest.raises(StateError, match=rf"MLflow store {db} is damaged"):
        check_sqlite_store(f"sqlite:///{db}")
    exp = tmp_path / "pool"
    assert not check_experiment(exp)
    exp.mkdir()
    (exp / "experiment_state-1.json").write_text('{"trial_data": []}')
    (exp / "tuner.pkl").write_bytes(b"\x80\x05\x95")
    with pytest.raises(StateError, match=rf"{exp / 'tuner.pkl'} is damaged"):
        check_experiment(exp)
    (exp / "tuner.pkl").unlink()
    (exp / "experiment_state-1.json").write_text('{"trial_da')
    with pytest.raises(StateError, match=r"experiment_state-1\.json is damaged"):
        check_experiment(exp)


# ----- the MLflow queue -----


class _Flaky:
    """A tracking call that fails ``n`` times as a connection would, then works."""

    def __init__(self, n: int, log: list, name: str):
        self.n, self.log, self.name = n, log, name

    def __call__(self, client) -> None:
        if self.n > 0:
            self.n -= 1
            raise ConnectionError("connection refused")
        self.log.append(self.name)


def test_queue_retries_in_order_and_never_blocks_the_caller():
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    q = TrackingQueue("sqlite:///unused.db", backoff_s=(0.01,))
    q._client = object()  # the calls here take no client
    done: list[str] = []
    t0 = time.perf_counter()
    for i in range(5):
        q.submit(_Flaky(3 if i == 1 else 0, done, f"c{i}"))

    def bad(client) -> None:
        raise MlflowException("no such run", error_code=RESOURCE_DOES_NOT_EXIST)

    q.submit(bad, "bad call")
    q.submit(_Flaky(0, done, "last"))
    assert time.perf_counter() - t0 < 0.05  # submitting returns at once
    assert q.flush(timeout_s=10)
    assert done == ["c0", "c1", "c2", "c3", "c4", "last"]  # the outage delayed, reordered and lost nothing
    assert q.outage_seconds > 0 and len(q.dropped) == 1 and "no such run" in q.dropped[0]


def test_queue_flush_times_out_while_the_server_stays_away():
    q = TrackingQueue("sqlite:///unused.db", backoff_s=(0.01,))
    q._client = object()
    stop = threading.Event()

    def down(client) -> None:
        if not stop.is_set():
            raise OSError("unreachable")

    q.submit(down)
    assert not q.flush(timeout_s=0.2) and q.pending == 1
    stop.set()
    assert q.flush(timeout_s=5) and q.pending == 0


# ----- resources -----


def test_infeasible_requests_are_one_line():
    node = {"CPU": 2.0, "memory": 8.0 * GIB}
    check_resources(SimpleNamespace(cpus_per_trial=2, gpus_per_trial=0), 1 * GIB, [node])
    with pytest.raises(ValueError, match=r"--cpus-per-trial 4: no node has that many CPUs \(the largest has 2\)"):
        check_resources(SimpleNamespace(cpus_per_trial=4, gpus_per_trial=0), 1 * GIB, [node])
    with pytest.raises(ValueError, match=r"--gpus-per-trial 0\.5: no node has that many GPUs"):
        check_resources(SimpleNamespace(cpus_per_trial=1, gpus_per_trial=0.5), 1 * GIB, [node])
    with pytest.raises(ValueError, match=r"needs 9\.0 GiB .* more than 8\.0 GiB"):
        check_resources(SimpleNamespace(cpus_per_trial=1, gpus_per_trial=0), 9 * GIB, [node])
    gpu_node = {"CPU": 8.0, "GPU": 1.0, "memory": 64 * GIB}  # e.g. a node type the autoscaler may add
    check_resources(SimpleNamespace(cpus_per_trial=4, gpus_per_trial=0.25), 2 * GIB, [node, gpu_node])


def test_memory_estimate_of_minilm(minilm_path):
    lora = estimate_trial_memory(minilm_path, batch_size=16, max_length=64, full=False)
    full = estimate_trial_memory(minilm_path, batch_size=16, max_length=64, full=True)
    # A MiniLM trial process measures ~0.8 GiB peak RSS (peak_mem_mb in its reports): the estimate covers it,
    # without claiming a multiple of it.
    assert 1.0 * GIB < lora < 2.0 * GIB and full > lora
    assert estimate_trial_memory(minilm_path, batch_size=64, max_length=512, full=False) > 2 * lora


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "Traceback ...\nray.exceptions.OutOfMemoryError: Task was killed due to the node running low on memory.\n"
            "Memory on the node (IP: 10.0.0.1) was 22.9GB used / 24GB limit\nRefer to the documentation ...",
            "out of memory: ray.exceptions.OutOfMemoryError: Task was killed due to the node running low on memory.",
        ),
        (
            "ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.\n...",
            "worker process died: ray.exceptions.ActorDiedError: The actor died unexpectedly",
        ),
        ("Traceback ...\ntrainables.runner.TrialFailedError: non-finite loss at step 3", "trainables.runner"),
    ],
)
def test_failure_reasons(tmp_path, text, reason):
    err = tmp_path / "error.txt"
    err.write_text(text)
    assert trial_error_reason(SimpleNamespace(error_file=str(err))).startswith(reason)


# ----- python -m wlora.train: checked before training -----


def _train(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wlora.train", *argv], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def test_train_cli_output_dir_and_resume_from_fail_before_training(minilm_path, glue_dir, tmp_path):
    base = ["--method", "lora", "--task", "sst2", "--model", str(minilm_path), "--data-dir", str(Path(glue_dir).parent)]
    base += ["--max-steps", "2", "--train-subset", "16", "--eval-subset", "16", "--max-length", "32"]
    afile = tmp_path / "afile"
    afile.write_text("")
    cases = [
        (["--output-dir", str(afile)], f"error: --output-dir {afile} is a file, not a folder"),
        (
            ["--resume-from", str(tmp_path / "nope")],
            f"error: --resume-from {tmp_path / 'nope'} is not a checkpoint folder",
        ),
        (["--resume-from", str(tmp_path)], f"error: --resume-from {tmp_path}: no state.pt there"),
    ]
    for extra, line in cases:
        out = _train(*base, *extra)
        assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith(line), out.stderr[-1500:]
    ok = _train(*base, "--output-dir", str(tmp_path / "out"))
    assert ok.returncode == 0, ok.stderr[-2000:]
    ckpt = tmp_path / "out" / "checkpoint"
    other = _train(*base, "--lr", "0.123", "--resume-from", str(ckpt))
    assert other.returncode == 2 and "was written by a different config (differs in lr)" in other.stderr
    state = ckpt / "state.pt"
    state.write_bytes(state.read_bytes()[:10000])
    broken = _train(*base, "--resume-from", str(ckpt))
    assert broken.returncode == 2 and f"{state} is damaged" in broken.stderr.strip().splitlines()[-1]


# ----- the front door: --help -----


def test_sweep_help_loads_no_heavy_module_and_documents_env_and_examples():
    """``--help`` is argparse over the flags alone: no torch, Ray or MLflow import (0.1 s instead of 3 s)."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "sweeps" / "glue_sweep.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0
    imported = {ln.split("|")[-1].strip().split(".")[0] for ln in out.stderr.splitlines() if "|" in ln}
    assert not imported & {"torch", "ray", "mlflow", "transformers", "optuna"}, imported
    text = out.stdout
    assert "WLORA_MODEL" in text and "WLORA_DATA_DIR" in text
    assert "--smoke-test  " in text and "--preset paper-table2-small" in text and "--address auto" in text
    # Training flags document their TrainConfig field (its metadata help), not a copy.
    from wlora.fields import field_infos
    from wlora.run_config import TrainConfig

    first_words = field_infos(TrainConfig)["train_subset"].help.split()[:4]
    assert " ".join(first_words) in " ".join(text.split())


# ----- one resolution of a run -----


def test_resolve_run_fills_run_fields_and_plans_the_steps_once(minilm_path, glue_dir):
    """``resolve_run`` is the one place a config meets its training set: run fields filled where the method
    declares them (the registry derives which from the config classes), the config validated, the schedule
    (LoRA-drop's importance phase included) the engine then trains for."""
    import wlora
    from wlora.run_config import TrainConfig
    from wlora.schedule import resolve_run, task_steps
    from wlora.train import build_run, prepare_run

    assert {s: wlora.get_method(s).run_fields for s in ("lora", "lora_drop", "rolora", "adalora")} == {
        "lora": (),
        "lora_drop": ("steps_per_epoch",),
        "rolora": ("total_steps",),
        "adalora": ("total_steps",),
    }
    base = {"task": "sst2", "model": str(minilm_path), "data_dir": str(Path(glue_dir).parent), "max_steps": 6}
    base |= {"train_subset": 64, "eval_subset": 16, "max_length": 32, "batch_size": 8}
    for method in ("adalora", "lora_drop"):
        cfg = TrainConfig.from_flat({**base, "method": method})
        resolved = resolve_run(cfg, 64)
        steps_per_epoch, total = task_steps(cfg, 64)
        filled = {k: getattr(resolved.method_config, k) for k in wlora.get_method(method).run_fields}
        assert filled == ({"total_steps": total} if method == "adalora" else {"steps_per_epoch": steps_per_epoch})
        phase = getattr(resolved.method_config, "importance_steps", 0) or 0
        assert resolved.schedule.total == total + phase and resolved.schedule.phase == phase
        _, _, engine = build_run(cfg, prepare_run(cfg))
        assert engine.total_steps == resolved.schedule.total
    pinned = TrainConfig.from_flat({**base, "method": "adalora", "total_steps": 50})
    assert resolve_run(pinned, 64).method_config.total_steps == 50  # a value the user set is kept
