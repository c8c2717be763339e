"""Selection stability: the per-run tracker (exact counting, checkpoint round trip), the overlap
and frequency math against brute force, and real MiniLM / SST-2 runs of every selecting method."""

from __future__ import annotations

import itertools
import random

import pytest

from wlora.core.stability import (
    SelectionTracker,
    chance_jaccard,
    jaccard,
    keep_frequency,
    mean_pairwise_overlap,
    weighted_jaccard,
)

# ----- the tracker -----


def test_tracker_counts_changes_and_the_last_change_step():
    t = SelectionTracker()
    assert t.observe(0, {"a": 8, "b": 8, "c": 8}) is False  # the baseline is no change
    assert t.observe(1, {"a": 8, "b": 8}) is True
    assert t.observe(2, {"b": 8, "a": 8}) is False  # same set, other order
    assert t.observe(3, {"a": 8, "c": 8}) is True
    assert t.observe(4, {"a": 8, "c": 4}) is True  # a rank change is a change
    assert t.observe(9, {"a": 8, "c": 4}) is False
    assert t.metrics(10) == {
        "selection_changes": 3.0,
        "selection_last_change_step": 4.0,
        "selection_last_change_frac": 0.4,
    }
    s = t.summary()
    assert s["change_steps"] == [1, 3, 4] and s["kept"] == {"a": 8, "c": 4} and not s["change_steps_truncated"]


def test_tracker_never_changed_reports_step_zero_and_round_trips():
    t = SelectionTracker()
    for step in range(5):
        t.observe(step, {"x": 2})
    assert t.metrics(4)["selection_changes"] == 0 and t.metrics(4)["selection_last_change_step"] == 0
    t.observe(5, {"y": 2})
    u = SelectionTracker()
    u.load_state_dict(t.state_dict())
    assert u.observe(6, {"y": 2}) is False  # the restored baseline is the saved kept set
    assert u.observe(7, {"x": 2}) is True
    assert u.summary()["change_steps"] == [5, 7] and u.changes == 2


# ----- overlap and frequency -----


def test_jaccard_and_weighted_jaccard():
    assert jaccard({"a", "b"}, {"b", "c"}) == pytest.approx(1 / 3)
    assert jaccard([], []) == 1.0 and jaccard(["a"], []) == 0.0
    assert weighted_jaccard({"a": 4, "b": 2}, {"a": 2, "b": 2, "c": 4}) == pytest.approx((2 + 2) / (4 + 2 + 4))
    # 0/1 ranks: the weighted index is the plain one
    a, b = {"a", "b", "c"}, {"b", "c", "d", "e"}
    ones = lambda s: {n: 1 for n in s}  # noqa: E731
    assert weighted_jaccard(ones(a), ones(b)) == pytest.approx(jaccard(a, b))
    with pytest.raises(ValueError, match="non-negative"):
        weighted_jaccard({"a": -1}, {"a": 1})


def test_mean_pairwise_overlap_is_the_mean_over_all_pairs():
    sets = [{"a", "b"}, {"a", "c"}, {"a", "b"}]
    want = (jaccard(sets[0], sets[1]) + jaccard(sets[0], sets[2]) + jaccard(sets[1], sets[2])) / 3
    assert mean_pairwise_overlap(sets) == pytest.approx(want) == pytest.approx((1 / 3 + 1 + 1 / 3) / 3)
    assert mean_pairwise_overlap([{"a"}]) is None
    ranks = [{"a": 8, "b": 0}, {"a": 4, "b": 4}]
    assert mean_pairwise_overlap(ranks) == pytest.approx(4 / 12)


def test_keep_frequency():
    freq = keep_frequency([{"a", "b"}, {"a"}, {"a", "c"}, set()], names=["a", "b", "c", "d"])
    assert freq == {"a": 0.75, "b": 0.25, "c": 0.25, "d": 0.0}


@pytest.mark.parametrize(("n", "k"), [(6, 2), (7, 3), (5, 5), (4, 1)])
def test_chance_jaccard_matches_enumeration(n, k):
    subsets = list(itertools.combinations(range(n), k))
    brute = sum(jaccard(a, b) for a in subsets for b in subsets) / len(subsets) ** 2
    assert chance_jaccard(n, k) == pytest.approx(brute, abs=1e-12)


def test_chance_jaccard_matches_sampling_for_the_papers_case():
    rng = random.Random(0)
    n, k = 18, 4
    draws = [jaccard(rng.sample(range(n), k), rng.sample(range(n), k)) for _ in range(20000)]
    assert chance_jaccard(n, k) == pytest.approx(sum(draws) / len(draws), abs=0.005)
    with pytest.raises(ValueError):
        chance_jaccard(3, 4)


# ----- real runs -----


@pytest.fixture(scope="module")
def sst2_cfg(minilm_path, glue_dir):
    from wlora.train import TrainConfig

    return TrainConfig(
        task="sst2",
        model=str(minilm_path),
        data_dir=str(glue_dir.parent),
        train_subset=48,
        eval_subset=16,
        batch_size=16,
        max_length=24,
        lr=3e-3,
        max_steps=6,
        eval_every=3,
    )


def _run(cfg):
    from wlora.train import run_training

    result = run_training(cfg)
    assert result.status == "completed", result.error
    stab = result.method_report["selection_stability"]
    for h in result.history:  # every evaluation carries the diagnostics (they reach Tune and MLflow)
        assert {"selection_changes", "selection_last_change_step", "selection_last_change_frac"} <= set(h)
    last = result.history[-1]
    assert (
        last["selection_changes"] == stab["changes"] and last["selection_last_change_step"] == stab["last_change_step"]
    )
    return result, stab


@pytest.mark.slow
def test_minilm_weightlora_kept_set_is_the_nonzero_gates_then_the_survivors(sst2_cfg):
    cfg = sst2_cfg.replace(method="weightlora", method_config={"k": 4, "t": 3, "lr_w": 1.0})
    result, stab = _run(cfg)
    rep = result.method_report
    # B = 0 at init gives ∇ω = 0 at step 1 (projection skipped); the first non-zero projection, at
    # step 2, zeroes n - K gates; nothing can change after T
    assert stab["change_steps"][0] == 2 and 2 <= stab["last_change_step"] <= 3
    assert set(stab["kept"]) == set(rep["selected_adapters"]) and len(stab["kept"]) == 4


@pytest.mark.slow
def test_minilm_random_select_changes_once_at_t(sst2_cfg):
    cfg = sst2_cfg.replace(method="random_select", method_config={"k": 4, "t": 2})
    result, stab = _run(cfg)
    assert stab["change_steps"] == [2] and stab["changes"] == 1
    assert set(stab["kept"]) == set(result.method_report["drawn_adapters"])


@pytest.mark.slow
def test_minilm_lora_drop_and_rolora(sst2_cfg):
    cfg = sst2_cfg.replace(
        method="lora_drop", method_config={"threshold": 0.5, "importance_epochs": 1, "sample_ratio": 0.4}
    )
    result, stab = _run(cfg)
    rep = result.method_report
    kept = rep["kept"]
    assert 0 < len(kept) < 18  # half the importance leaves modules to share
    assert set(stab["kept"]) == set(kept) and stab["changes"] == 1
    assert stab["last_change_step"] == rep["importance_steps"]

    cfg = sst2_cfg.replace(method="rolora", method_config={"r": 4, "iterations": 2})
    result, stab = _run(cfg)
    rep = result.method_report
    assert stab["kept"] == {n: r for n, r in rep["ranks"].items() if r > 0}
    ends = [3, 6]  # the two iterations end at steps 3 and 6: ranks change only there
    assert set(stab["change_steps"]) <= set(ends) and stab["changes"] == len(stab["change_steps"])


@pytest.mark.slow
def test_minilm_tracker_resumes_from_a_checkpoint(sst2_cfg, tmp_path):
    """A run resumed after its kept set changed reports the change it made before the interruption."""
    import shutil

    from wlora.train import run_training

    cfg = sst2_cfg.replace(method="random_select", method_config={"k": 4, "t": 3}, eval_every=3)
    saved = tmp_path / "ckpt"

    def report(metrics, folder):
        if metrics["step"] == 3:
            shutil.copytree(folder, saved)

    full = run_training(cfg, report=report)
    resumed = run_training(cfg, resume_from=saved)
    assert full.method_report["selection_stability"]["change_steps"] == [3]
    assert resumed.method_report["selection_stability"] == full.method_report["selection_stability"]
    assert resumed.history[-1]["selection_last_change_step"] == 3 and resumed.history[-1]["selection_changes"] == 1
