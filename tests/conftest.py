"""Shared fixtures: tiny models built in code (exact math) and the real MiniLM + GLUE (integration).

Real assets come from environment variables, never from paths in the repo:
``WLORA_MODEL`` (a local model folder or hub id) and ``WLORA_DATA_DIR`` (folder holding ``glue/``).
Without them the integration tests are skipped, unless ``WLORA_REQUIRE_ASSETS=1`` (CI) makes that a
failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from wlora.train import seed_everything

VOCAB = 100


def tiny_bert(layers: int = 2, hidden: int = 32, num_labels: int = 2, seed: int = 0):
    """A small BERT classifier with random weights (n = 3 · layers adapters on q/k/v)."""
    seed_everything(seed)
    cfg = BertConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(cfg).eval()


def tiny_batches(n: int, batch: int = 8, seq: int = 12, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    """Fixed random token batches with a learnable label (token-0 parity)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, VOCAB, (batch, seq), generator=g)
        out.append({"input_ids": ids, "labels": ids[:, 0] % 2})
    return out


def padded_batches(batches: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """Give the tiny batches an attention mask with padding at the end of every other row."""
    out = []
    for b in batches:
        mask = torch.ones_like(b["input_ids"])
        mask[::2, -4:] = 0
        out.append({**b, "attention_mask": mask})
    return out


def _asset(var: str, sub: str = "") -> Path | str:
    value = os.environ.get(var)
    if not value:
        msg = f"set {var} to run tests on the real model/data"
        if os.environ.get("WLORA_REQUIRE_ASSETS") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    path = Path(value) / sub if sub else Path(value)
    if sub or Path(value).exists():
        if not path.exists():
            pytest.fail(f"{var}={value}: {path} does not exist")
        return path
    return value  # a hub id


@pytest.fixture(scope="session")
def minilm_path():
    return _asset("WLORA_MODEL")


@pytest.fixture(scope="session")
def glue_dir():
    return _asset("WLORA_DATA_DIR", "glue")


@pytest.fixture(scope="session")
def sst2_batch(minilm_path, glue_dir):
    """16 real SST-2 training sentences, tokenized for MiniLM (max 32 tokens)."""
    from transformers import AutoTokenizer

    from wlora.data import read_glue_split

    examples = read_glue_split(glue_dir, "sst2", "train")[:16]
    tok = AutoTokenizer.from_pretrained(str(minilm_path))
    enc = tok([e.text_a for e in examples], padding=True, truncation=True, max_length=32, return_tensors="pt")
    enc["labels"] = torch.tensor([e.label for e in examples])
    return dict(enc)


def load_minilm(path, seed: int = 0):
    """MiniLM with a fresh 2-class head (seeded, so two loads are identical)."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    logging.set_verbosity_error()
    seed_everything(seed)
    return AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=2)


# ----- real sweeps in a loopback-only network namespace (Ray binds the machine's interface otherwise) -----

ROOT = Path(__file__).resolve().parents[1]
#: Flags of a tiny real sweep: MiniLM on an SST-2 slice, 8 steps of 8 × 32 tokens, evaluated every 2 steps.
TINY = [
    "--tasks", "sst2", "--max-steps", "8", "--eval-every", "2", "--batch-size", "8", "--max-length", "32",
    "--train-subset", "128", "--eval-subset", "64", "--set", "weightlora.t=4", "--progress-interval", "1000",
]  # fmt: skip
NETNS = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child=SIGKILL"]


def _netns_ok() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run([*NETNS, "bash", "-c", "ip link set lo up"], capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def netns():
    if not _netns_ok():
        pytest.skip("needs `unshare --net --pid` (a loopback-only network namespace) to start Ray safely here")


@pytest.fixture
def ray_tmp():
    """A short temp folder for Ray (its unix socket paths must stay under 108 bytes)."""
    path = tempfile.mkdtemp(prefix="wlr-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sweep_cmd(netns, minilm_path, glue_dir, tmp_path, ray_tmp):
    """Build (argv, env) for a sweep CLI call inside a fresh loopback-only namespace."""
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "HF_HUB_OFFLINE": "1",
        "RAY_DEDUP_LOGS": "0",
        "PYTHONUNBUFFERED": "1",
    }
    data_dir = str(Path(glue_dir).parent)

    def make(*args: str) -> list[str]:
        inner = [sys.executable, str(ROOT / "sweeps" / "glue_sweep.py"), "--model", str(minilm_path)]
        inner += ["--data-dir", data_dir, "--storage-path", str(tmp_path / "runs")]
        # No race unless a test asks for one (a later --race-top wins): the race has its own tests, and the others
        # count their search trials.
        inner += ["--ray-temp-dir", ray_tmp, "--race-top", "0", *args]
        return [*NETNS, "bash", "-c", 'ip link set lo up && exec "$@"', "netns", *inner]

    return make, env


#: Test files that take minutes (real sweeps, the namespaced hosts): collected first, so that the two xdist workers
#: (one file each at a time, ``--dist loadfile``) start them early and the short files fill the gaps at the end.
HEAVY_FIRST = (
    "test_cluster_hosts.py",
    "test_cluster_onprem.py",
    "test_race.py",
    "test_verdict_sweeps.py",
    "test_sweep_faults.py",
    "test_sweep_ray.py",
    "test_report_sweep.py",
    "test_resume_asha.py",
    "test_replay.py",
    "test_gpu_packing.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(HEAVY_FIRST)))  # stable: the rest keep their order
