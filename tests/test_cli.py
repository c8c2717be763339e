"""The command line and what it reads: data folder layouts, list values, field help, speed without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wlora.data.layout import LOCAL_COPIES_HINT, candidate_folders, locate_task_files
from wlora.fields import field_infos, is_list_field, parse_field_value
from wlora.registry import METHODS
from wlora.run_config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=timeout
    )


# ----- data layouts -----


def _link_task(src: Path, dst: Path, files=("train.tsv", "dev.tsv")) -> Path:
    dst.mkdir(parents=True)
    for name in files:
        (dst / name).symlink_to(src / name)
    return dst


@pytest.fixture
def layouts(glue_dir, tmp_path):
    """RTE's real files, linked into the three layouts."""
    rte = glue_dir / "RTE"
    return {
        "project": (_link_task(rte, tmp_path / "a" / "glue" / "RTE").parent.parent, tmp_path / "a/glue/RTE"),
        "download_script": (_link_task(rte, tmp_path / "glue_data" / "RTE").parent, tmp_path / "glue_data/RTE"),
        "task_folder": (_link_task(rte, tmp_path / "rte_only"), tmp_path / "rte_only"),
        "lower_case": (_link_task(rte, tmp_path / "b" / "rte").parent, tmp_path / "b/rte"),
    }


def test_rte_found_in_every_layout(layouts):
    for kind, (data_dir, task_dir) in layouts.items():
        train, dev = locate_task_files("rte", data_dir)
        assert (train, dev) == (task_dir / "train.tsv", task_dir / "dev.tsv"), kind


def test_missing_data_lists_every_place_looked(glue_dir, tmp_path):
    _link_task(glue_dir / "RTE", tmp_path / "glue_data" / "RTE", files=("train.tsv",))  # no dev.tsv
    with pytest.raises(FileNotFoundError) as err:
        locate_task_files("rte", tmp_path / "glue_data")
    msg = str(err.value)
    for folder in candidate_folders("rte", tmp_path / "glue_data"):
        assert str(folder) in msg
    assert f"{tmp_path / 'glue_data' / 'RTE'} (no dev.tsv)" in msg
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        locate_task_files("rte", tmp_path / "nowhere")


def test_squad_and_xsum_layouts(tmp_path):
    for folder in (tmp_path / "d1" / "squad", tmp_path / "d2"):
        folder.mkdir(parents=True)
        for name in ("train-v1.1.json", "dev-v1.1.json"):
            (folder / name).write_text("{}")
    assert locate_task_files("squad", tmp_path / "d1")[0] == tmp_path / "d1/squad/train-v1.1.json"
    assert locate_task_files("squad", tmp_path / "d2")[1] == tmp_path / "d2/dev-v1.1.json"
    xsum = tmp_path / "x" / "xsum"
    xsum.mkdir(parents=True)
    for name in ("train.jsonl", "validation.jsonl"):
        (xsum / name).write_text("")
    assert locate_task_files("xsum", tmp_path / "x") == (xsum / "train.jsonl", xsum / "validation.jsonl")
    assert locate_task_files("xsum", xsum, eval_split="dev")[1] == xsum / "validation.jsonl"
    with pytest.raises(FileNotFoundError, match=r"no test\.jsonl"):
        locate_task_files("xsum", tmp_path / "x", eval_split="test")
    # A split given as a file is taken as is; the other still comes from the folder.
    other = tmp_path / "mine.jsonl"
    other.write_text("")
    assert locate_task_files("xsum", tmp_path / "x", eval_file=other) == (xsum / "train.jsonl", other)


# ----- list values -----


def test_parse_field_value_lists_scalars_and_regexes():
    assert parse_field_value("target_modules", "query,key,value", "lora") == ["query", "key", "value"]
    assert parse_field_value("target_modules", " query , value ") == ["query", "value"]
    assert parse_field_value("target_modules", "query") == ["query"]
    assert parse_field_value("target_modules", '["q","v"]', "lora") == ["q", "v"]
    assert parse_field_value("target_modules", "all-linear") == "all-linear"
    assert parse_field_value("target_modules", r".*\.(query|value)") == r".*\.(query|value)"
    assert parse_field_value("target_modules", r"layer\.{1,2}") == r"layer\.{1,2}"  # a comma inside a regex
    assert parse_field_value("target_modules", "none") is None
    assert parse_field_value("head_modules", "classifier,bert.pooler", "weightlora") == ["classifier", "bert.pooler"]
    assert parse_field_value("r", "8", "lora") == 8 and parse_field_value("lr", "1e-4") == 1e-4
    assert parse_field_value("lr_w_scheduled", "false", "weightlora") is False
    assert parse_field_value("topk_by", "value", "weightlora") == "value"
    assert parse_field_value("no_such_field", "x,y") == "x,y"  # left to the config's validation
    with pytest.raises(ValueError, match=r"`target_modules`: empty entry"):
        parse_field_value("target_modules", "q,,v")


def test_list_fields_come_from_the_declared_types():
    lists = {
        name
        for spec in METHODS.values()
        for name, info in field_infos(spec.config_cls).items()
        if is_list_field(info.type)
    }
    assert {"target_modules", "head_modules"} <= lists
    assert not any(is_list_field(i.type) for n, i in field_infos(TrainConfig).items() if n != "method_config")


# ----- field help -----


def test_every_config_field_has_help():
    missing = [f"TrainConfig.{n}" for n, i in field_infos(TrainConfig).items() if not i.help]
    for slug, spec in METHODS.items():
        missing += [f"{slug}.{n}" for n, i in field_infos(spec.config_cls).items() if not i.help]
    assert not missing, f"fields without metadata help: {missing}"


# ----- the command line -----


@pytest.mark.subprocess
def test_help_is_fast_and_loads_no_torch():
    start = time.perf_counter()
    proc = _run("-m", "wlora.train", "--help")
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 5.0, f"python -m wlora.train --help took {elapsed:.2f} s"
    for field in TrainConfig.field_names():
        assert "--" + field.replace("_", "-") in proc.stdout
    assert field_infos(TrainConfig)["warmup_steps"].help.split(" (")[0][:30] in " ".join(proc.stdout.split())
    probe = (
        "import sys; from wlora.cli import _config, _parser, check_inputs, list_method_fields; "
        "cfg = _config(_parser().parse_args(['--method', 'weightlora', '--set', 'target_modules=query,value'])); "
        "list_method_fields('all'); import wlora, wlora.train; wlora.METHODS; wlora.train.TrainConfig; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules), cfg.method_config)"
    )
    out = _run("-c", probe)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "[] {'target_modules': ['query', 'value']}"


@pytest.mark.subprocess
def test_list_method_fields_prints_default_and_help():
    proc = _run("-m", "wlora.train", "--list-method-fields", "weightlora")
    assert proc.returncode == 0, proc.stderr
    for name, info in field_infos(METHODS["weightlora"].config_cls).items():
        line = f"{name} = {info.default!r}"
        assert line in proc.stdout
        assert info.help.split()[0] in proc.stdout.split(line, 1)[1]
    assert "total_steps" in _run("-m", "wlora.train", "--list-method-fields", "rolora").stdout


@pytest.mark.subprocess
def test_input_errors_answer_before_any_model_loads(minilm_path, tmp_path):
    cases = [
        (["--method", "dora"], "unknown method 'dora'"),
        (["--task", "rte", "--data-dir", str(tmp_path)], "looked in"),
        (["--model", str(tmp_path / "missing")], "model folder not found"),
        (["--model", str(tmp_path)], "holds no config.json"),
        (["--set", "r=0"], "error: --set r must be a positive integer, got 0"),  # the field as typed
        (["--set", "rank=8"], "unknown LoRAConfig field(s) ['rank']"),
        (["--set", "target_modules=q,,k"], "empty entry"),
        (["--list-method-fields", "dora"], "unknown method"),
    ]
    for args, message in cases:
        start = time.perf_counter()
        proc = _run("-m", "wlora.train", "--model", str(minilm_path), *args, env={"WLORA_DATA_DIR": ""})
        elapsed = time.perf_counter() - start
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert elapsed < 5.0, (args, elapsed)
    bad = _run("-m", "wlora.train", "--max-steps", "three")
    assert bad.returncode == 2 and "--max-steps: expected a whole number or none, got 'three'" in bad.stderr


@pytest.mark.subprocess
def test_unreachable_hub_model_says_how_to_use_local_copies(tmp_path):
    proc = _run(
        "-m", "wlora.train", "--model", "no-such-org/no-such-model", "--task", "rte", "--data-dir", str(tmp_path),
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )  # fmt: skip
    assert proc.returncode == 2
    assert "looked in" in proc.stderr  # the data is checked first, without loading anything
    rte = tmp_path / "RTE"
    rte.mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (rte / name).write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    proc = _run(
        "-m", "wlora.train", "--model", "no-such-org/no-such-model", "--task", "rte", "--data-dir", str(tmp_path),
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )  # fmt: skip
    error = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(error) == 1, proc.stderr
    assert "'no-such-org/no-such-model'" in error[0] and LOCAL_COPIES_HINT in error[0]


@pytest.mark.subprocess
def test_rte_run_from_the_glue_download_script_layout(minilm_path, glue_dir, tmp_path):
    """``glue_data/RTE/{train,dev}.tsv`` with ``--data-dir glue_data``: a real 2-step run on real RTE."""
    _link_task(glue_dir / "RTE", tmp_path / "glue_data" / "RTE")
    proc = _run(
        "-m", "wlora.train", "--model", str(minilm_path), "--data-dir", str(tmp_path / "glue_data"),
        "--task", "rte", "--method", "lora", "--set", "target_modules=query,value", "--set", "r=4",
        "--max-steps", "2", "--train-subset", "16", "--eval-subset", "16", "--batch-size", "8",
        "--max-length", "64", "--cache-dir", str(tmp_path / "cache"), "--cpu",
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert result["status"] == "completed" and result["metrics"]["step"] == 2
    assert result["metrics"]["active_adapters"] == 12  # query and value of 6 layers
    assert 0.0 <= result["metrics"]["eval_main"] <= 1.0


@pytest.mark.subprocess
def test_unreachable_hub_data_says_how_to_use_local_copies(minilm_path, tmp_path):
    proc = _run(
        "-m", "wlora.train", "--model", str(minilm_path), "--task", "rte", "--cache-dir", str(tmp_path / "c"),
        env={"WLORA_DATA_DIR": "", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
        timeout=300,
    )  # fmt: skip
    error = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(error) == 1, proc.stderr
    assert "rte: could not read nyu-mll/glue/rte from the hub" in error[0] and LOCAL_COPIES_HINT in error[0]
