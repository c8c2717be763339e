"""``--forecast local`` on a busy machine: the fastest of repeated timings, the load while calibrating and its
warning, trial requests refused as the run refuses them, and ``bench/forecast_check.py``'s conditions and spread."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sweeps import forecast as fc
from sweeps.glue_sweep import parser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def test_time_repeats_gives_seconds_per_step_of_every_repeat():
    # a real step (a matmul) timed on a scripted clock: repeats of 2 steps took 0.6, 0.2 and 0.4 s
    ticks = iter([0.0, 0.6, 1.0, 1.2, 2.0, 2.4])
    x = torch.randn(64, 64)
    calls = []
    out = fc.time_repeats(lambda: calls.append((x @ x).sum().item()), steps=2, repeats=3, clock=lambda: next(ticks))
    assert out == pytest.approx([0.3, 0.1, 0.2]) and len(calls) == 6


def _speed(load: float | None, cores: int = 2, own: int = 1) -> fc.Speed:
    return fc.Speed("s", 2, 1000.0, 3000.0, 5.0, train_repeats=(900.0, 1000.0, 950.0),
                    eval_repeats=(2900.0, 3000.0, 2800.0), load_1min=load, cores=cores, own_threads=own)  # fmt: skip


def test_the_load_warning_appears_when_another_job_holds_the_cores():
    # 2 cores, the calibration's own thread: another job holds the cores beyond 0.5 × 2 = 1 of them
    assert fc.busy_warning(_speed(1.9)) is None
    assert fc.busy_warning(_speed(None)) is None  # no load reading on this system: nothing to say
    assert fc.machine_load(lambda: (2.5, 1.0, 0.5)) == 2.5 and isinstance(fc.machine_load(), float)

    def unreadable() -> tuple[float, float, float]:
        raise OSError("load average unobtainable")

    assert fc.machine_load(unreadable) is None
    text = "\n".join(fc.calibration_text(_speed(2.6)))
    assert "warning: the machine was busy while calibrating" in text and "1-min load 2.60 on 2 cores" in text
    assert "1.60 beyond the calibration's own 1 thread(s)" in text
    # the spread of the repeats is printed, min / median / max
    assert "fastest of 3 repeats" in text and "900/950/1,000" in text and "2,800/2,900/3,000" in text
    assert "warning" not in "\n".join(fc.calibration_text(_speed(0.3)))
    assert fc.calibration_text(fc.Speed("profile", 8, 1.0, 1.0, 1.0)) == []  # a profile: no calibration lines


def _local_args(minilm_path, glue_dir, *argv):
    p = parser()
    a = p.parse_args(["--model", str(minilm_path), "--data-dir", str(glue_dir.parent), "--tasks", "sst2",
                      "--batch-size", "8", "--max-length", "32", *argv])  # fmt: skip
    return a


@pytest.mark.slow
def test_calibration_keeps_the_fastest_repeat_and_reads_the_load(minilm_path, glue_dir):
    import torch

    a = _local_args(minilm_path, glue_dir)
    threads = torch.get_num_threads()
    speed = fc.calibrate(a, steps=1, repeats=3, load=lambda: (7.5, 3.0, 2.0))  # the load reading injected
    # timed at a trial's thread count (1), and the caller's count is back afterwards (it leaked into later work)
    assert torch.get_num_threads() == threads
    assert len(speed.train_repeats) == 3 and len(speed.eval_repeats) == 3
    assert speed.train_tok_s == max(speed.train_repeats) and speed.eval_tok_s == max(speed.eval_repeats)
    assert speed.load_1min == 7.5 and speed.cores == os.cpu_count() and speed.own_threads == 1
    text = fc.forecast_text(fc.forecast(a, speed, {}), speed)
    assert "warning: the machine was busy while calibrating (1-min load 7.50" in text
    quiet = dataclasses.replace(speed, load_1min=0.1)
    assert "warning" not in fc.forecast_text(fc.forecast(a, quiet, {}), quiet)


def test_gpu_and_cpu_requests_are_refused_as_the_run_refuses_them(minilm_path, glue_dir):
    from sweeps.resources import check_resources, planned_nodes, trial_memory

    for flags in (["--gpus-per-trial", "0.3"], ["--cpus-per-trial", str((os.cpu_count() or 1) + 1)]):
        a = _local_args(minilm_path, glue_dir, "--forecast", *flags)
        nodes = planned_nodes(a)
        try:  # what the run says before its first trial, on the nodes it plans
            check_resources(a, trial_memory(a, [str(minilm_path)], a.methods), nodes)
            run_says = None
        except ValueError as e:
            run_says = str(e)
        if run_says is None:
            pytest.skip(f"this machine can run {flags}: nothing to refuse")
        with pytest.raises(ValueError) as refused:
            fc.run_forecast(a)
        assert str(refused.value) == run_says and "no trial could ever start" in run_says
    a = _local_args(minilm_path, glue_dir, "--forecast", "--gpus-per-trial", "1.5")
    with pytest.raises(ValueError, match="a trial takes a share of one GPU"):
        fc.run_forecast(a)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU here: the request is honoured")
def test_a_gpu_that_ray_would_declare_but_torch_cannot_see_is_not_calibrated_on_cpu(minilm_path, glue_dir):
    # --num-gpus 1: Ray would declare a GPU, so the run's check passes; the calibration cannot use it
    a = _local_args(minilm_path, glue_dir, "--forecast", "--gpus-per-trial", "0.5", "--num-gpus", "1")
    with pytest.raises(ValueError, match="calibrates on this machine, where torch sees no GPU"):
        fc.run_forecast(a)


@pytest.mark.subprocess
def test_the_command_line_refuses_a_gpu_request_with_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU here: the request is honoured")
    cmd = [sys.executable, str(ROOT / "sweeps" / "glue_sweep.py"), "--preset", "paper-claims-heldout", "--forecast",
           "--gpus-per-trial", "0.3", "--storage-path", str(tmp_path / "runs")]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        "error: --gpus-per-trial 0.3: no node has that many GPUs (the largest has 0); no trial could ever start"
    ]


def test_forecast_check_gives_the_spread_and_its_conditions():
    import forecast_check

    lines = forecast_check.spread_lines([80.0, 70.0, 90.0], measured=50.0)
    assert lines == [
        "spread over 3 calibration(s), min / median / max: forecast 70.0 / 80.0 / 90.0 min; forecast / measured "
        "1.40 / 1.60 / 1.80 (measured 50.0 min)"
    ]
    c = forecast_check.conditions((3.5, 2.0, 1.0))
    assert c.startswith("conditions: commit ") and f"{os.cpu_count()} cores" in c and " UTC" in c
    assert "load average 3.50 / 2.00 / 1.00 (1 / 5 / 15 min)" in c


@pytest.mark.slow
@pytest.mark.subprocess
def test_forecast_check_calibrates_in_fresh_processes_and_reports_the_spread(minilm_path, glue_dir):
    table = ROOT / "docs" / "results" / "table_long.csv"
    if not table.is_file():
        pytest.skip("no committed results table")
    env = {**os.environ, "WLORA_MODEL": str(minilm_path), "WLORA_DATA_DIR": str(glue_dir.parent)}
    cmd = [sys.executable, str(ROOT / "bench" / "forecast_check.py"), "--table", str(table), "--preset",
           "paper-claims-heldout", "--measured-min", "64.6", "--calibrations", "2"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("conditions: commit ") and "cores; load average" in lines[0]
    assert [line.split(":")[0] for line in lines if line.startswith("speed ")] == ["speed 1", "speed 2"]
    assert any(line.startswith("spread over 2 calibration(s), min / median / max: forecast ") for line in lines)
    assert lines[-1].startswith("load average after: ")


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_backbone_params_from_the_config_alone_match_the_model(tmp_path, kind):
    from transformers import AutoConfig, AutoModel

    cfg = AutoConfig.for_model(kind, hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4)
    cfg.save_pretrained(tmp_path)
    with torch.device("meta"):
        m = AutoModel.from_config(cfg)
    counted = sum(p.numel() for n, p in m.named_parameters() if "embed" not in n and p.dim() == 2)
    assert fc.backbone_params(str(tmp_path), {}) == fc.bert_matmul_params(tmp_path / "config.json") == counted
    (tmp_path / "config.json").write_text('{"model_type": "t5"}')
    assert fc.bert_matmul_params(tmp_path / "config.json") is None  # another architecture: the model is built


@pytest.mark.subprocess
def test_forecast_main_answers_without_tune_or_mlflow():
    script = (
        "import sys\n"
        "from sweeps.glue_sweep import DEFAULTS, parser\n"
        "from sweeps import forecast as fc\n"
        "p = parser()\n"
        "code = fc.main(DEFAULTS, p.parse_args(sys.argv[1:]), p)\n"
        "print('loaded:', sorted(m for m in ('ray.tune', 'mlflow') if m in sys.modules))\n"
        "sys.exit(code)\n"
    )
    cmd = [sys.executable, "-c", script, "--preset", "paper_grid", "--tasks", "sst2", "--model",
           "microsoft/deberta-v3-base", "--forecast", "a100-cluster"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "forecast: " in out.stdout and "papers' grid" in out.stdout and "loaded: []" in out.stdout
    bad = subprocess.run([*cmd, "--gpus-per-trial", "1.5"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: --gpus-per-trial 1.5: a trial takes a share")
    assert len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_local_speed_calibrates_in_a_child_beside_the_request_check(minilm_path, glue_dir):
    # the child process times the steps (the fastest of REPEATS) while this one checks the request and measures
    # the batch lengths; what comes back is the calibration's Speed, as an in-process calibration gives it
    a = _local_args(minilm_path, glue_dir, "--forecast")
    threads = torch.get_num_threads()
    speed = fc.local_speed(a)
    assert torch.get_num_threads() == threads  # the child's thread count is its own
    assert speed.name.startswith("this machine, calibrated") and speed.own_threads == 1
    assert len(speed.train_repeats) == fc.REPEATS and speed.train_tok_s == max(speed.train_repeats) > 0
    assert speed.cores == os.cpu_count() and speed.startup_s > 1.0
    # measured here, beside the child: the training and the dev evaluation batches' lengths
    cache = sys.modules["sweeps.forecast_calibrate"]._LENGTHS
    assert ("train", "sst2", a.model, a.data_dir, a.max_length, a.batch_size) in cache
    assert ("eval", "sst2", a.model, a.data_dir, a.max_length, 64, "dev") in cache
    assert fc.padded_lengths("sst2", a)[0] < a.max_length


def test_a_calibration_that_fails_in_the_child_says_why_in_one_line(tmp_path, minilm_path, glue_dir):
    # a model folder with the backbone's config but no weights: the request check passes, loading fails
    broken = tmp_path / "model"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (Path(minilm_path) / name).is_file():
            (broken / name).write_text((Path(minilm_path) / name).read_text())
    a = _local_args(minilm_path, glue_dir, "--forecast")
    a.model = str(broken)
    with pytest.raises(ValueError) as failed:
        fc.local_speed(a)
    assert "\n" not in str(failed.value) and str(failed.value)


@pytest.mark.subprocess
def test_ctrl_c_stops_the_forecast_and_its_calibration_child_with_one_line(tmp_path):
    import signal
    import time

    cmd = [sys.executable, str(ROOT / "sweeps" / "glue_sweep.py"), "--preset", "paper-claims-heldout", "--forecast",
           "--storage-path", str(tmp_path / "runs")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    children: list[str] = []
    for _ in range(300):  # until the calibration child is under way (started inside the forecast's main)
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        if children or proc.poll() is not None:
            break
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the forecast finished before the interrupt arrived")
    assert proc.returncode == 130 and out == ""
    assert err.strip().splitlines() == ["forecast interrupted: nothing was written"]
    for pid in children:  # the calibration child is gone too
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    assert not (tmp_path / "runs").exists()
