"""GLUE TSV reader: real files (row counts, label sets, quirks) and clear errors on bad files."""

from __future__ import annotations

import pytest

from wlora.data import read_glue_split

COUNTS = {
    "sst2": (67349, 872, {0, 1}),
    "cola": (8551, 1043, {0, 1}),
    "mrpc": (3668, 408, {0, 1}),
    "rte": (2490, 277, {0, 1}),
}


@pytest.mark.parametrize("task", list(COUNTS))
def test_real_glue_row_counts_and_labels(task, glue_dir):
    n_train, n_dev, labels = COUNTS[task]
    train, dev = read_glue_split(glue_dir, task, "train"), read_glue_split(glue_dir, task, "dev")
    assert (len(train), len(dev)) == (n_train, n_dev)
    assert {e.label for e in train} == {e.label for e in dev} == labels
    assert all(e.text_a for e in train)


def test_real_quirks(glue_dir):
    stsb = read_glue_split(glue_dir, "stsb", "train")
    assert len(stsb) == 5749 and len(read_glue_split(glue_dir, "stsb", "dev")) == 1500
    assert min(e.label for e in stsb) == 0.0 and max(e.label for e in stsb) == 5.0
    mrpc = read_glue_split(glue_dir, "mrpc", "train")  # BOM-prefixed header, quotes inside text
    assert mrpc[0].text_a.startswith('Amrozi accused his brother, whom he called "the witness"')
    assert mrpc[0].label == 1 and mrpc[0].text_b is not None
    cola = read_glue_split(glue_dir, "cola", "train")  # no header: the first row is data
    assert cola[0].text_a == "Our friends won't buy this analysis, let alone the next one we propose."
    rte = read_glue_split(glue_dir, "rte", "dev")
    assert rte[0].label in (0, 1) and rte[0].text_b


def test_malformed_and_missing_files_name_the_file_and_line(tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tc\td\n")
    with pytest.raises(ValueError, match=r"RTE/train\.tsv: line 3: expected 4 tab-separated columns, got 3"):
        read_glue_split(tmp_path, "rte", "train")
    (tmp_path / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(ValueError, match=r"line 2: label 'maybe' not in \['entailment', 'not_entailment'\]"):
        read_glue_split(tmp_path, "rte", "dev")
    with pytest.raises(FileNotFoundError, match=r"GLUE SST-2 train split not found: expected .*SST-2/train\.tsv"):
        read_glue_split(tmp_path, "sst2", "train")
    with pytest.raises(ValueError, match="unknown task 'wnli2'"):
        read_glue_split(tmp_path, "wnli2", "train")


def test_hub_rows_convert_to_the_same_examples_as_the_tsv(glue_dir):
    """The hub dataset (nyu-mll/glue) stores class ids in our label order and names columns differently;
    rows in its schema, built from the local files, must convert back to identical examples."""
    from wlora.data.glue import GLUE_TASKS, glue_from_hub_rows, hub_split_name

    for task in ("rte", "mrpc", "stsb", "cola"):
        local = read_glue_split(glue_dir, task, "dev")
        ca, cb = GLUE_TASKS[task].hub_columns
        rows = [
            {ca: e.text_a, **({cb: e.text_b} if cb else {}), "label": e.label, "idx": i} for i, e in enumerate(local)
        ]
        assert glue_from_hub_rows(task, rows) == local
    assert hub_split_name("mnli", "dev") == "validation_matched"
    assert hub_split_name("mnli", "dev_mismatched") == "validation_mismatched"
    assert hub_split_name("sst2", "dev") == "validation"
    with pytest.raises(ValueError, match="not a class id"):
        glue_from_hub_rows("rte", [{"sentence1": "a", "sentence2": "b", "label": -1}])


def test_squad_reader_windows_and_span_decoding(minilm_path, glue_dir, tmp_path):
    """Real SQuAD v1.1 dev questions: the training window's labelled span decodes back to the gold
    answer, and v2.0's null rule answers "" when [CLS] scores highest."""
    import json

    import numpy as np
    from transformers import AutoTokenizer

    from wlora.data.squad import decode_answers, load_squad, qa_eval_features, qa_train_features

    root = glue_dir.parent
    examples = load_squad("squad", "dev", root)
    assert len(examples) == 10570 and all(e.answers for e in examples)
    tok = AutoTokenizer.from_pretrained(str(minilm_path))
    sample = examples[:40]
    train = qa_train_features(tok, sample, max_length=128, stride=32)
    assert len(train) > len(sample)  # long contexts give several windows
    evalf = qa_eval_features(tok, sample, max_length=128, stride=32)
    # Logits that put all mass on the labelled span of each training window reproduce the answer text.
    hits = exact = 0
    for tf, ef in zip(train, evalf, strict=True):
        if tf["start_positions"] == 0:
            continue
        s, e = np.full(len(ef["offsets"]), -10.0), np.full(len(ef["offsets"]), -10.0)
        s[tf["start_positions"]], e[tf["end_positions"]] = 10.0, 10.0
        ex = sample[ef["example_index"]]
        pred = decode_answers([ex], [{**ef, "example_index": 0}], [s], [e], version_2=False)[ex.id]
        # Token boundaries can widen a span ("gold" inside "golden"), never cut it.
        assert ex.answers[0].strip() in pred
        exact += pred.strip() == ex.answers[0].strip()
        hits += 1
    assert hits >= len(sample) and exact >= 0.9 * hits
    # v2.0: the same windows with [CLS] scored highest → unanswerable.
    s, e = np.zeros(len(evalf[0]["offsets"])), np.zeros(len(evalf[0]["offsets"]))
    s[evalf[0]["cls_index"]] = e[evalf[0]["cls_index"]] = 5.0
    ex0 = sample[evalf[0]["example_index"]]
    one = [{**evalf[0], "example_index": 0}]
    assert decode_answers([ex0], one, [s], [e], version_2=True)[ex0.id] == ""
    assert decode_answers([ex0], one, [s], [e], version_2=False)[ex0.id] != ""
    # A v2.0 file: unanswerable questions are read with no answers and point at [CLS] in training.
    qas = [
        {"id": "a", "question": "Where is Paris?", "answers": [{"text": "France", "answer_start": 12}]},
        {"id": "b", "question": "Where is Rome?", "answers": [], "is_impossible": True},
    ]
    v2 = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": "Paris is in France.", "qas": qas}]}]}
    (tmp_path / "squad").mkdir()
    (tmp_path / "squad" / "dev-v2.0.json").write_text(json.dumps(v2))
    ex2 = load_squad("squad_v2", "dev", tmp_path)
    assert [e.answers for e in ex2] == [("France",), ()]
    feats = qa_train_features(tok, ex2, max_length=64, stride=16)
    assert feats[1]["start_positions"] == feats[1]["end_positions"] == 0
    assert tok.decode(feats[0]["input_ids"][feats[0]["start_positions"] : feats[0]["end_positions"] + 1]) == "france"


def test_summarization_reader_and_bad_lines(glue_dir, tmp_path):
    from wlora.data.summarization import load_summarization, read_jsonl

    root = glue_dir.parent
    tiny = read_jsonl(root / "xsum" / "XSum-test-tiny-50.jsonl")
    assert len(tiny) == 50 and tiny[0].summary and tiny[0].document
    assert len(read_jsonl(root / "xsum" / "XSum-test-1000.jsonl")) == 1000
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "document": "d", "summary": "s"}\n{"id": "2", "document": "d"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl: line 2"):
        read_jsonl(bad)
    with pytest.raises(FileNotFoundError, match=r"validation\.jsonl"):
        load_summarization("xsum", "dev", tmp_path)


# ----- the task registry -----


def test_one_name_rule_and_everything_derived_from_the_registry():
    from sweeps.table import TASKS as TABLE_TASKS
    from wlora.data.glue import GLUE_TASKS
    from wlora.data.metrics import GLUE_METRICS
    from wlora.data.registry import TASKS, list_tasks, normalize_task
    from wlora.data.squad import SQUAD_VERSIONS
    from wlora.data.summarization import SUMMARIZATION_TASKS
    from wlora.data.tasks import task_kind
    from wlora.fields import field_infos
    from wlora.run_config import TrainConfig

    pairs = [("SST-2", "sst2"), ("sst_2", "sst2"), ("STS-B", "stsb"), ("MNLI-mm", "mnli"), ("mnli_matched", "mnli")]
    pairs += [("SQuAD_v2", "squad_v2"), ("squadv2", "squad_v2"), ("CNN-DailyMail", "cnn_dailymail"), ("RTE", "rte")]
    for name, key in pairs:
        assert normalize_task(name) == key, name
    with pytest.raises(ValueError, match="unknown task 'wnli'; choose one of mnli, sst2"):
        normalize_task("wnli")
    assert (
        set(GLUE_TASKS)
        == set(GLUE_METRICS)
        == set(list_tasks("glue"))
        == {"mnli", "sst2", "cola", "qqp", "qnli", "rte", "mrpc", "stsb"}
    )
    assert set(SQUAD_VERSIONS) == set(list_tasks("qa")) and set(SUMMARIZATION_TASKS) == set(list_tasks("seq2seq"))
    assert list(TABLE_TASKS) == list(TASKS)  # the table's columns, in the registry's order
    assert {task_kind(t) for t in TASKS} == {"classification", "regression", "qa", "seq2seq"}
    assert all(t in field_infos(TrainConfig)["task"].help for t in TASKS)


def test_glue_task_names_are_literals_in_one_library_file():
    """Adding a GLUE-like task is one registry entry: no other library file spells a GLUE task's name."""
    import re
    from pathlib import Path

    from wlora.data.registry import TASKS

    root = Path(__file__).resolve().parents[1] / "wlora"
    names = {n for k, s in TASKS.items() if s.family == "glue" for n in (k, s.glue.name)}
    alternatives = "|".join(re.escape(n) for n in names)
    pattern = re.compile(rf"""["']({alternatives})["']""")
    hits = {str(p.relative_to(root)) for p in root.rglob("*.py") if pattern.search(p.read_text())}
    assert hits == {"data/registry.py"}, hits
