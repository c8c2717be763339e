"""Task metrics computed locally (scikit-learn / scipy / rouge-score; no hub metric scripts).

* GLUE: accuracy, F1 (binary, positive class 1), Matthews correlation, Pearson / Spearman. The
  sweep objective of a task (:func:`glue_main_metric`) is its GLUE-leaderboard task score: the
  single metric, or the mean of the two for MRPC / QQP (accuracy, F1) and STS-B (Pearson, Spearman).
* SQuAD v1.1 / v2.0: exact match and token F1 after the official answer normalisation (lower-case,
  strip punctuation and the articles a/an/the, collapse whitespace), maximised over the gold
  answers; for v2.0 an unanswerable question has the single gold answer "" (empty prediction = right).
* Summarisation: ROUGE-1/2/L F-measure with Porter stemming (``rouge-score``), averaged.

All scores are in [0, 1] except SQuAD and ROUGE, which follow their papers' 0–100 convention.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence

import numpy as np

from wlora.data.registry import TASKS, normalize_task

#: Metrics reported per GLUE task (first = listed first in the papers' tables; the specs: wlora.data.registry).
GLUE_METRICS: dict[str, tuple[str, ...]] = {k: s.metrics for k, s in TASKS.items() if s.family == "glue"}


def _task_key(task: str) -> str:
    key = normalize_task(task)
    if key not in GLUE_METRICS:
        raise ValueError(f"{task!r} is not a GLUE task; choose one of {', '.join(GLUE_METRICS)}")
    return key


#: Key of the sweep objective (the GLUE task score, always maximised) in :func:`glue_metrics`' output.
MAIN_METRIC = "main"


def glue_metrics(task: str, predictions: Sequence, labels: Sequence) -> dict[str, float]:
    """The task's metrics plus ``MAIN_METRIC`` (the GLUE task score). Classification takes class ids,
    STS-B takes real-valued scores."""
    # deferred: scipy and scikit-learn are needed only when a run evaluates
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    key = _task_key(task)
    preds, golds = np.asarray(predictions), np.asarray(labels)
    if preds.shape != golds.shape or preds.size == 0:
        raise ValueError(f"need equally long, non-empty predictions and labels, got {preds.shape} vs {golds.shape}")
    out: dict[str, float] = {}
    for name in GLUE_METRICS[key]:
        if name == "accuracy":
            out[name] = float(accuracy_score(golds, preds))
        elif name == "f1":
            out[name] = float(f1_score(golds, preds, pos_label=1, average="binary", zero_division=0))
        elif name == "matthews_corrcoef":
            out[name] = float(matthews_corrcoef(golds, preds))
        elif name == "pearson":
            out[name] = _corr(pearsonr, preds, golds)
        elif name == "spearman":
            out[name] = _corr(spearmanr, preds, golds)
    out[MAIN_METRIC] = float(np.mean([out[n] for n in GLUE_METRICS[key]]))
    return out


def _corr(fn, a: np.ndarray, b: np.ndarray) -> float:
    # A constant prediction has no correlation; scipy warns and returns NaN — report 0 instead.
    if np.all(a == a.flat[0]) or np.all(b == b.flat[0]):
        return 0.0
    return float(fn(a.astype(float), b.astype(float))[0])


# ----- SQuAD -----

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower-case, drop punctuation, drop articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def squad_exact(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction: str, gold: str) -> float:
    pred_toks, gold_toks = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred_toks or not gold_toks:  # no-answer: right only if both are empty
        return float(pred_toks == gold_toks)
    common = sum((collections.Counter(pred_toks) & collections.Counter(gold_toks)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_toks), common / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """EM and F1 (0–100) over ``references`` (question id → gold answers; ``[]`` = unanswerable)."""
    missing = [qid for qid in references if qid not in predictions]
    if missing:
        raise ValueError(f"{len(missing)} questions have no prediction, e.g. {missing[:3]}")
    em = f1 = 0.0
    for qid, golds in references.items():
        golds = list(golds) or [""]
        em += max(squad_exact(predictions[qid], g) for g in golds)
        f1 += max(squad_f1(predictions[qid], g) for g in golds)
    n = max(1, len(references))
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n}


# ----- summarisation -----


def rouge_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure (0–100), Porter-stemmed, as reported for XSum / CNN-DailyMail."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"need equally many, non-empty predictions and references, got {len(predictions)}")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    totals = collections.Counter()
    for pred, ref in zip(predictions, references, strict=True):
        for name, score in scorer.score(ref, pred).items():
            totals[name] += score.fmeasure
    return {name: 100.0 * totals[name] / len(predictions) for name in ("rouge1", "rouge2", "rougeL")}


def trivial_baseline(task: str, train_labels: Sequence, dev_labels: Sequence) -> dict[str, float]:
    """The task metrics of the best constant predictor: the training majority class, or (regression)
    the mean training score, whose correlations with the dev scores are undefined — reported as 0."""
    key = _task_key(task)
    dev = np.asarray(dev_labels)
    if TASKS[key].labels is None:  # regression (STS-B)
        return {**dict.fromkeys(TASKS[key].metrics, 0.0), MAIN_METRIC: 0.0}
    majority = np.bincount(np.asarray(train_labels, dtype=int)).argmax()
    return glue_metrics(task, np.full(len(dev), majority), dev)
