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
    with pytest.raises(ValueError, match="unknown GLUE task 'wnli2'"):
        read_glue_split(tmp_path, "wnli2", "train")
