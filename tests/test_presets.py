"""Sweep presets: looked up by name in sweeps/presets/, their `cli:` section supplies flag defaults."""

from __future__ import annotations

import pytest

from sweeps.flags import apply_preset_cli, build_parser, resolve_preset
from sweeps.glue_sweep import DEFAULTS


def test_paper_table2_small_by_name_sets_tasks_methods_and_budget():
    parser = build_parser(DEFAULTS)
    args = parser.parse_args(["--preset", "paper-table2-small", "--max-steps", "20"])
    apply_preset_cli(args, parser)
    assert args.preset == resolve_preset("paper_table2_small") and args.preset.is_file()
    assert args.tasks == ["sst2", "mrpc", "rte", "cola", "stsb"]
    assert args.methods == ["lora", "weightlora", "weightlora_plus", "random_select"]
    assert (args.eval_every, args.batch_size, args.eval_subset) == (40, 16, 400)
    assert args.max_steps == 20  # the command line wins over the preset


def test_unknown_preset_and_bad_cli_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="paper-table2-small"):
        resolve_preset("no-such-preset")
    bad = tmp_path / "bad.yaml"
    bad.write_text("cli:\n  epochs_max: 3\n")
    parser = build_parser(DEFAULTS)
    args = parser.parse_args(["--preset", str(bad)])
    with pytest.raises(ValueError, match=r"cli\.epochs_max"):
        apply_preset_cli(args, parser)


def test_claim_presets_use_the_heldout_protocol_and_seeds_until_the_answer():
    parser = build_parser(DEFAULTS)
    args = parser.parse_args(["--preset", "paper-claims-heldout"])
    apply_preset_cli(args, parser)
    assert (args.protocol, args.holdout_size, args.seeds, args.max_seeds) == ("heldout", 512, "auto", 8)
    assert args.tasks == ["sst2", "qnli"] and "weightlora_informed" in args.methods
    args = parser.parse_args(["--preset", "paper-claims-seeded", "--protocol", "papers"])
    apply_preset_cli(args, parser)
    assert args.protocol == "papers" and args.seeds == 3  # the command line still wins
