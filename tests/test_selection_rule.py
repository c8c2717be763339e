"""What decides WeightLoRA's kept set, on the real MiniLM and real SST-2: the decision step and margin
every selecting run logs, and the ``projection_start`` ablation (dense SGD on ω before the first
projection), whose selection changes with T where the paper's StoIHT decides at its first step."""

from __future__ import annotations

import pytest

from wlora.train import TrainConfig, prepare_run, run_training

pytestmark = pytest.mark.slow


def _run(minilm_path, glue_dir, method="weightlora", **mc):
    cfg = TrainConfig(
        method=method,
        task="sst2",
        model=str(minilm_path),
        data_dir=str(glue_dir.parent),
        method_config={"r": 4, **({"k": 4, "lr_w": 5.0} if method != "lora" else {}), **mc},
        train_subset=96,
        eval_subset=32,
        batch_size=8,
        max_length=32,
        max_steps=18,
        eval_every=18,
        lr=2e-3,
        warmup_steps=0,
    )
    return run_training(cfg, assets=prepare_run(cfg))


def test_decision_step_and_margin_are_logged_per_run(minilm_path, glue_dir):
    res = _run(minilm_path, glue_dir, t=8)
    m = res.metrics
    # the paper's StoIHT: the first applied projection (step 2: B = 0 at step 1, so ∇ω = 0) decides
    assert m["selection_decision_step"] == 2.0
    assert m["selection_spread"] > 0 and m["selection_gap"] > 0
    assert m["selection_margin"] == pytest.approx(m["selection_gap"] / m["selection_spread"])
    d = res.method_report["decision"]
    assert d["step"] == 2 and d["steps"] == 7  # gate updates at steps 2..8
    # the method without gates logs none of it
    assert "selection_margin" not in _run(minilm_path, glue_dir, method="lora").metrics


def test_projection_start_ablation_changes_the_kept_set_as_t_grows(minilm_path, glue_dir):
    kept = {}
    for t in (2, 16):
        # faithful: decided by one batch at step 2 whatever T is
        faithful = _run(minilm_path, glue_dir, t=t)
        assert faithful.metrics["selection_decision_step"] == 2.0
        kept[("stoiht", t)] = set(faithful.method_report["selected_adapters"])
        ablation = _run(minilm_path, glue_dir, method="weightlora_informed", t=t)  # dense SGD on ω until T
        kept[("dense", t)] = set(ablation.method_report["selected_adapters"])
        assert len(kept[("dense", t)]) == 4
    assert kept[("stoiht", 2)] == kept[("stoiht", 16)]
    assert kept[("dense", 2)] != kept[("dense", 16)]


def test_projection_start_is_validated():
    from wlora.registry import make_config

    assert make_config("weightlora", {"projection_start": 5}).projection_start == 5
    assert make_config("weightlora_plus", {"projection_start": 0}).projection_start == 0
    assert make_config("weightlora_informed", {}).projection_start is None  # dense until T
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="projection_start"):
            make_config("weightlora", {"projection_start": bad})
