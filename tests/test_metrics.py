"""Metric functions against values computed by hand."""

from __future__ import annotations

import math

import pytest

from wlora.data import MAIN_METRIC, glue_metrics, rouge_metrics, squad_metrics
from wlora.data.metrics import normalize_answer

PRED, GOLD = [1, 0, 1, 1], [1, 1, 1, 0]  # TP=2, FP=1, FN=1, TN=0


def test_classification_metrics_by_hand():
    assert glue_metrics("sst2", PRED, GOLD) == {"accuracy": 0.5, MAIN_METRIC: 0.5}
    mrpc = glue_metrics("mrpc", PRED, GOLD)
    assert mrpc["f1"] == pytest.approx(2 / 3)  # P = R = 2/3
    assert mrpc[MAIN_METRIC] == pytest.approx((0.5 + 2 / 3) / 2)
    # MCC = (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (0 − 1) / sqrt(3·3·1·1)
    assert glue_metrics("CoLA", PRED, GOLD)[MAIN_METRIC] == pytest.approx(-1 / 3)


def test_regression_metrics_by_hand():
    # x = [1,2,3], y = [2,4,7]: cov·n = 5, Σdx² = 2, Σdy² = 38/3 ⇒ r = 5 / sqrt(76/3)
    m = glue_metrics("sts-b", [1.0, 2.0, 3.0], [2.0, 4.0, 7.0])
    assert m["pearson"] == pytest.approx(5 / math.sqrt(76 / 3))
    assert m["spearman"] == pytest.approx(1.0)
    assert m[MAIN_METRIC] == pytest.approx((m["pearson"] + 1.0) / 2)
    assert glue_metrics("stsb", [2.0, 2.0, 2.0], [1.0, 2.0, 3.0])["pearson"] == 0.0  # constant prediction


def test_glue_metric_errors():
    with pytest.raises(ValueError, match="unknown task 'wnli'"):
        glue_metrics("wnli", [1], [1])
    with pytest.raises(ValueError, match="equally long"):
        glue_metrics("sst2", [1, 0], [1])


def test_squad_official_normalisation_em_f1():
    assert normalize_answer("  The Eiffel   Tower! ") == "eiffel tower"
    refs = {"q1": ["Eiffel Tower", "the tower"], "q2": ["Paris"], "q3": []}
    preds = {"q1": "the Eiffel tower.", "q2": "in Paris France", "q3": ""}
    m = squad_metrics(preds, refs)
    # q1 exact; q2: P = 1/3, R = 1 ⇒ F1 = 0.5; q3 unanswerable and empty prediction ⇒ right
    assert m["exact_match"] == pytest.approx(100 * 2 / 3)
    assert m["f1"] == pytest.approx(100 * (1 + 0.5 + 1) / 3)
    with pytest.raises(ValueError, match="no prediction"):
        squad_metrics({}, refs)


def test_rouge_by_hand():
    m = rouge_metrics(["the cat sat"], ["the cat sat on the mat"])
    assert m["rouge1"] == pytest.approx(100 * 2 / 3)  # P = 1, R = 1/2
    assert m["rouge2"] == pytest.approx(100 * 2 * 0.4 / 1.4)  # P = 2/2, R = 2/5
    assert m["rougeL"] == pytest.approx(100 * 2 / 3)  # LCS = 3
