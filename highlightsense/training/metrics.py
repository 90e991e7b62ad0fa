"""Binary classification metrics over clip logits, in numpy (sklearn's definitions).

Scores are probabilities ``sigmoid(logit)``; a clip is predicted a highlight when its
probability is ≥ the threshold. Precision, recall and F1 are 0 where their denominator is 0;
ROC-AUC and PR-AUC are NaN when a class is absent.
"""

from __future__ import annotations

import numpy as np

THRESHOLD = 0.5  # probability at which a clip counts as a highlight (SPEC §6)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def bce_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy from logits, as ``BCEWithLogitsLoss`` computes it."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    return float(np.mean(y * np.logaddexp(0.0, -z) + (1.0 - y) * np.logaddexp(0.0, z)))


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else 0.0


def confusion(scores: np.ndarray, labels: np.ndarray, threshold: float = THRESHOLD) -> dict:
    """{'tp', 'fp', 'tn', 'fn'} counts for predictions ``scores >= threshold``."""
    predicted = np.asarray(scores) >= threshold
    actual = np.asarray(labels).astype(bool)
    return {
        "tp": int(np.sum(predicted & actual)),
        "fp": int(np.sum(predicted & ~actual)),
        "tn": int(np.sum(~predicted & ~actual)),
        "fn": int(np.sum(~predicted & actual)),
    }


def scores_at(counts: dict) -> dict:
    """Confusion counts → accuracy, precision, recall, F1."""
    tp, fp, tn, fn = counts["tp"], counts["fp"], counts["tn"], counts["fn"]
    return {
        "accuracy": _ratio(tp + tn, tp + fp + tn + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``, ties sharing their average rank (scipy's ``rankdata``)."""
    values = np.asarray(values)
    order = np.argsort(values, kind="mergesort")
    ranked = values[order]
    first = np.r_[True, ranked[1:] != ranked[:-1]]  # start of each group of equal values
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = ((starts + 1 + ends) / 2)[np.cumsum(first) - 1]
    return ranks


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: the chance a random positive outscores a random negative
    (ties count half), i.e. the Mann-Whitney U statistic over n_pos · n_neg."""
    actual = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(actual.sum()), int((~actual).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = average_ranks(np.asarray(scores, dtype=np.float64))
    return float((ranks[actual].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pr_curve(scores: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall and F1 at each distinct score used as the threshold, highest first."""
    scores = np.asarray(scores, dtype=np.float64)
    actual = np.asarray(labels).astype(np.int64)
    order = np.argsort(-scores, kind="mergesort")
    ranked, hits = scores[order], actual[order]
    last = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # end of each tie group
    tp = np.cumsum(hits)[last]
    predicted = last + 1
    positives = actual.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = tp / positives if positives else np.zeros_like(tp, dtype=np.float64)
        f1 = np.where(predicted + positives > 0, 2 * tp / (predicted + positives), 0.0)
    return {"threshold": ranked[last], "precision": precision, "recall": recall, "f1": f1}


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """PR-AUC as sklearn's ``average_precision_score``: Σ (R_k − R_{k−1}) · P_k."""
    if not np.asarray(labels).astype(bool).any():
        return float("nan")
    curve = pr_curve(scores, labels)
    return float(np.sum(np.diff(np.r_[0.0, curve["recall"]]) * curve["precision"]))


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(threshold, F1): the probability threshold with the highest F1 (the highest such one)."""
    curve = pr_curve(scores, labels)
    best = int(np.argmax(curve["f1"]))
    return float(curve["threshold"][best]), float(curve["f1"][best])


def classification_metrics(
    logits: np.ndarray, labels: np.ndarray, threshold: float = THRESHOLD
) -> dict:
    """Everything the training log and ``evaluate`` report, from logits and 0/1 labels."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    scores = sigmoid(logits)
    counts = confusion(scores, labels, threshold)
    best, best_f1 = best_threshold(scores, labels) if len(labels) else (float("nan"), 0.0)
    return {
        "n": int(len(labels)),
        "positives": int(labels.sum()),
        "negatives": int(len(labels) - labels.sum()),
        "loss": bce_loss(logits, labels) if len(labels) else float("nan"),
        "threshold": threshold,
        **scores_at(counts),
        "roc_auc": roc_auc(scores, labels),
        "pr_auc": average_precision(scores, labels),
        "confusion": counts,
        "best_threshold": best,
        "best_f1": best_f1,
    }
