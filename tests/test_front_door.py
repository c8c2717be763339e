"""The front door, second pass: every input a new user gets wrong is one line naming the flag or file, exits
non-zero and leaves nothing behind; ``--dry-run`` refuses what the run refuses; ``sweeps.report`` never writes
into a run that is not a sweep's parent; the help shows each default once, as it is typed.

Every case is a real command line (the sweep script, ``python -m wlora.train``, ``python -m sweeps.report``) on
the real model and data, with a real MLflow store; nothing is mocked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}
HINT = re.compile(r"^  \(python .+ --help lists every flag\)$")


def _run(cmd: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=ENV)


def _one_error(out: subprocess.CompletedProcess, pattern: str, *, hint: bool = False) -> str:
    """Exit 2; stderr is one ``error: …`` line matching ``pattern`` (and, for a flag that argparse refuses,
    one hint line: never the whole usage)."""
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr[-3000:]
    assert len(lines) == (2 if hint else 1), out.stderr[-3000:]
    assert lines[0].startswith("error: ") and re.search(pattern, lines[0]), lines[0]
    if hint:
        assert HINT.match(lines[1]), lines[1]
    assert "Traceback" not in out.stderr and "usage:" not in out.stderr
    return lines[0]


@pytest.fixture
def sweep(minilm_path, glue_dir, tmp_path):
    """Run the GLUE sweep script on a tiny SST-2 slice with its run folders under ``tmp_path/runs``."""

    def run(*extra: str, dry_run: bool = True) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(ROOT / "sweeps" / "glue_sweep.py"), "--smoke-test", "--tasks", "sst2"]
        cmd += ["--model", str(minilm_path), "--data-dir", str(Path(glue_dir).parent)]
        cmd += ["--storage-path", str(tmp_path / "runs"), *(["--dry-run"] if dry_run else []), *extra]
        return _run(cmd, tmp_path)

    return run


# ----- sweep flags: one line each, before anything is written -----

CASES = [
    # (flags, the one line, argparse refused it: a hint line follows)
    (["--holdout-size", "1.5", "--protocol", "heldout"], r"^error: --holdout-size: must be a share in \(0, 1\)", True),
    (["--holdout-size", "0.2"], r"--holdout-size 0\.2 applies only with --protocol heldout", False),
    (["--space", "lr=bogus"], r"^error: --space lr=bogus: lr must be a number, got 'bogus'", False),
    (["--space", "lr=choice:a,b"], r"^error: --space lr=choice:a,b: lr must be a number, got 'a'$", False),
    (["--set", "lr=abc"], r"^error: --set lr=abc: lr must be a number, got 'abc'$", False),
    (["--seeds", "-1"], r"^error: --seeds: takes a whole number >= 0 or 'auto', got '-1'$", True),
    (["--space", "lr"], r"^error: --space: expected KEY=VALUE, got 'lr'$", True),
    (["--gpus-per-trial", "1.5"], r"^error: --gpus-per-trial 1\.5: a trial takes a share of one GPU", False),
    (["--tracking-uri", "bogus://x"], r"^error: --tracking-uri bogus://x: MLflow has no store for bogus://", False),
    (["--tracking-uri", "http://127.0.0.1:9"], r"^error: --tracking-uri http://127\.0\.0\.1:9: .*unreachable", False),
]


@pytest.mark.parametrize(("flags", "line", "hint"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_sweep_input_is_one_line_and_leaves_nothing(sweep, tmp_path, flags, line, hint):
    _one_error(sweep(*flags), line, hint=hint)
    assert not (tmp_path / "runs").exists()  # no run folder, not even an empty one


@pytest.mark.parametrize("search", [[], ["--search", "grid"]], ids=["default search", "grid search"])
def test_unknown_space_field_is_named_with_the_valid_ones(sweep, tmp_path, search):
    line = _one_error(sweep("--space", "nosuchfield=grid:1,2", *search), r"^error: --space nosuchfield=grid:1,2: ")
    assert "nosuchfield is not a config field of lora or weightlora" in line
    assert "lora: r, alpha, dropout" in line and "training: " in line and " lr, " in line  # readable lists
    assert "LoRAConfig" not in line and "['" not in line and "grid dimensions" not in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("content", "line"),
    [
        ("cli:\n  tasks: [sst2\n", r"^error: preset (?P<f>\S+), line 3: not valid YAML \("),
        ("- set\n- space\n", r"^error: preset (?P<f>\S+): the top level is a list, but a preset is a mapping"),
    ],
    ids=["yaml syntax error", "top level is a list"],
)
def test_broken_preset_file_is_named(sweep, tmp_path, content, line):
    preset = tmp_path / "mine.yaml"
    preset.write_text(content)
    text = _one_error(sweep("--preset", str(preset)), line)
    assert re.search(line, text).group("f").rstrip(":,") == str(preset)
    assert not (tmp_path / "runs").exists()


def test_dry_run_refuses_what_the_run_refuses(sweep, sweep_cmd, tmp_path):
    """Resources against this machine's node as local Ray declares it, and the tracking URI's scheme: the same
    line with and without ``--dry-run``; the run says it before Ray starts and leaves no run folder."""
    make, env = sweep_cmd
    too_many = str((os.cpu_count() or 1) + 2)
    for flags, line in [
        (["--cpus-per-trial", too_many], rf"^error: --cpus-per-trial {too_many}: no node has that many CPUs"),
        (["--gpus-per-trial", "1"], r"^error: --gpus-per-trial 1: no node has that many GPUs"),
        (["--tracking-uri", "bogus://x"], r"^error: --tracking-uri bogus://x: MLflow has no store for bogus://"),
    ]:
        dry = _one_error(sweep(*flags), line)
        cmd = make("--smoke-test", "--tasks", "sst2", *flags)
        t0 = time.monotonic()
        real = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
        assert _one_error(real, line) == dry
        assert time.monotonic() - t0 < 120
        assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# ----- python -m wlora.train -----


def test_train_flag_errors_are_one_line_and_splits_are_listed(tmp_path):
    train = [sys.executable, "-m", "wlora.train"]
    _one_error(_run([*train, "--lr", "abc"], tmp_path), r"^error: --lr: expected a number, got 'abc'$", hint=True)
    _one_error(
        _run([*train, "--eval-split", "bogus"], tmp_path),
        r"^error: --eval-split must be one of dev, holdout for sst2, got 'bogus'$",
    )
    _one_error(
        _run([*train, "--task", "mnli", "--eval-split", "bogus"], tmp_path),
        r"^error: --eval-split must be one of dev, dev_matched, dev_mismatched, holdout for mnli",
    )
    _one_error(_run([*train, "--holdout", "1.5"], tmp_path), r"^error: --holdout must be 0, a share in \(0, 1\)")


# ----- help -----


def _defaults(text: str) -> list[str]:
    return re.findall(r"\(default: ([^)]*)\)", " ".join(text.split()))


def test_sweep_help_shows_each_default_once_as_typed(tmp_path):
    out = _run([sys.executable, str(ROOT / "sweeps" / "glue_sweep.py"), "--help"], tmp_path)
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    for bad in ("['", "(default: [])", "(default: None)", "(default: False)", "(default: True)"):
        assert bad not in text, bad
    assert "--tasks TASKS comma-separated of mnli, sst2, cola" in text and "(default: sst2)" in text
    assert "(default: lora,weightlora)" in text
    assert "loguniform:LO:HI, uniform:LO:HI, int:LO:HI, choice:A,B,… or grid:A,B,…" in text  # --space's forms
    assert text.count("`none` sets an optional value") == 1  # how to type none: once, at the top
    assert text.index("`none` sets an optional value") < text.index("what to sweep:")
    assert "--max-steps none: train --max-epochs" in text and "used only with --max-steps none" in text
    # No flag states its default twice: one "default" per flag's help at most.
    for block in re.split(r"\s(?=--[a-z-]+ )", text.split("options:")[1].split("examples:")[0]):
        assert block.lower().count("default") <= 1, block


def test_train_help_shows_each_default_once_as_typed(tmp_path):
    out = _run([sys.executable, "-m", "wlora.train", "--help"], tmp_path)
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    assert "(default: None)" not in text and "(default: [])" not in text and "(default: none)" in text
    assert "`none` sets an optional value" in text
    assert "dev (MNLI: matched; also dev_mismatched), test for summarisation, or holdout" in text  # --eval-split
    assert "used only while max_steps is none" in text


# ----- sweeps.report -----


@pytest.fixture
def store(tmp_path):
    """A real MLflow store: a sweep's parent run, one of its trials and a run of no sweep."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("wlora-glue", artifact_location=(tmp_path / "mlartifacts").as_uri())
    parent = client.create_run(exp, tags={"wlora.role": "sweep"}).info.run_id
    trial = client.create_run(exp, tags={"wlora.role": "trial", "mlflow.parentRunId": parent}).info.run_id
    other = client.create_run(exp).info.run_id
    return {"uri": uri, "client": client, "parent": parent, "trial": trial, "other": other}


def _report(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "sweeps.report", *args], cwd, timeout=120)


def test_report_refuses_a_run_that_is_not_a_sweep_parent(store, tmp_path):
    for rid, line in [
        (store["trial"], rf"is a trial run, not a sweep's parent run .*; pass --run-id {store['parent']}, its sweep$"),
        (store["other"], r"is not a sweep's parent run \(tag wlora.role=sweep\), so no report is written to it"),
    ]:
        out = _report(tmp_path, "--tracking-uri", store["uri"], "--run-id", rid, "--out", str(tmp_path / "out"))
        _one_error(out, rf"^error: --run-id {rid} " + line)
        assert store["client"].list_artifacts(rid) == []  # nothing logged into that run
        assert not (tmp_path / "out").exists()


def test_report_unknown_run_or_store_creates_nothing(store, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    none_db = work / "none.db"
    cases = [
        ([store["uri"], "nosuch"], r"^error: --run-id nosuch: no run with that id in sqlite:///"),
        ([f"sqlite:///{none_db}", "nosuch"], rf"^error: --tracking-uri sqlite:///{none_db}: no MLflow store there"),
        ([str(work / "nofolder"), "x"], r": no MLflow store there \(.*nofolder does not exist\)"),
        (["bogus://x", "x"], r"^error: --tracking-uri bogus://x: MLflow has no store for bogus://"),
    ]
    for (uri, rid), line in cases:
        _one_error(_report(work, "--tracking-uri", uri, "--run-id", rid), line)
        assert list(work.iterdir()) == []  # no none.db, no runs/report-… folder


def test_report_help_answers_at_once(tmp_path):
    best = min(_timed([sys.executable, "-m", "sweeps.report", "--help"], tmp_path) for _ in range(3))
    assert best < 1.0, best
    out = _run([sys.executable, "-X", "importtime", "-m", "sweeps.report", "--help"], tmp_path)
    imported = {ln.split("|")[-1].strip().split(".")[0] for ln in out.stderr.splitlines() if "|" in ln}
    assert not imported & {"mlflow", "matplotlib", "ray", "torch", "statsmodels"}, imported
    assert "--run-id" in out.stdout and "(default: None)" not in out.stdout


def _timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    assert _run(cmd, cwd).returncode == 0
    return time.perf_counter() - t0
