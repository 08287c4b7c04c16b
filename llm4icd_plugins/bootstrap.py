"""Percentile bootstrap intervals of Edin's micro/macro P/R/F1, vectorised over resamples (numpy, scipy.sparse).

Each resample draws ``n`` document indices uniformly with replacement; its per-code tp/fp/fn are the
document counts of the draw times a sparse code × document matrix, so 1,000 resamples of a MIMIC-IV Full
test split (20k documents, 8k codes) take about a second.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Any

import numpy as np
import pandas as pd

from llm4icd_plugins.metrics import _ratio, _sorted_unique

CI_KEYS = ("micro_precision", "micro_recall", "micro_f1", "macro_precision", "macro_recall", "macro_f1")


def resample_counts(rng: np.random.Generator, n_docs: int, n_resamples: int) -> np.ndarray:
    """How often each document is drawn in each resample, ``n_docs × n_resamples`` (float32, exact counts).

    Resample ``r`` is ``rng.integers(0, n_docs, size=(n_resamples, n_docs))[r]``, counted per document.
    """
    draws = rng.integers(0, n_docs, size=(n_resamples, n_docs))
    flat = draws + (np.arange(n_resamples) * n_docs)[:, None]  # (resample, document) → one cell
    counts = np.bincount(flat.ravel(), minlength=n_docs * n_resamples).reshape(n_resamples, n_docs)
    return np.ascontiguousarray(counts.T, dtype=np.float32)


def _count_matrix(golds: Sequence[list[str]], preds: Sequence[list[str]], label_codes: list[str]):
    """Sparse ``3L × n_docs`` 0/1 matrix: rows ``k*L + code`` mark the documents where the code is a
    true positive (k=0), a false negative (k=1) or a false positive (k=2); codes outside the label space
    are dropped and repeats count once."""
    from scipy import sparse

    index = pd.Index(np.asarray(label_codes, dtype=object), dtype=object)
    n_labels = max(len(label_codes), 1)

    def keys(docs: Sequence[list[str]]) -> np.ndarray:
        codes = np.asarray(list(chain.from_iterable(docs)), dtype=object)
        ids = index.get_indexer(codes).astype(np.int64)  # -1: outside the label space
        rows = np.repeat(np.arange(len(docs), dtype=np.int64), [len(doc) for doc in docs])
        return _sorted_unique((rows * n_labels + ids)[ids >= 0])

    gold, pred = keys(golds), keys(preds)
    parts = (np.intersect1d(gold, pred, assume_unique=True), np.setdiff1d(gold, pred, assume_unique=True),
             np.setdiff1d(pred, gold, assume_unique=True))
    rows = np.concatenate([k * n_labels + part % n_labels for k, part in enumerate(parts)])
    cols = np.concatenate([part // n_labels for part in parts])
    return sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                             shape=(3 * n_labels, len(golds)))


def bootstrap_ci(golds: Sequence[Iterable[str]], preds: Sequence[Iterable[str]], label_space: Any = None, *,
                 n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
                 chunk: int = 50) -> dict[str, Any]:
    """Percentile bootstrap intervals of micro/macro P/R/F1, resampling documents with replacement.

    Each resample is scored exactly as ``metrics.corpus_metrics`` scores its document list: with
    ``label_space`` None its label space is the codes with a gold occurrence in the resample (Edin's default
    applied to the resample). Returns ``{key: (low, high)}`` for ``CI_KEYS`` plus the settings used.
    """
    golds = [g if isinstance(g, list) else list(g) for g in golds]
    preds = [p if isinstance(p, list) else list(p) for p in preds]
    if len(golds) != len(preds):
        raise ValueError(f"{len(golds)} gold documents but {len(preds)} predictions; they must align")
    if not golds:
        raise ValueError("no documents to evaluate")
    if n_resamples < 1 or not 0 < confidence < 1:
        raise ValueError("n_resamples must be ≥ 1 and confidence in (0, 1)")
    if label_space is None:
        label_codes = sorted(set(chain.from_iterable(golds)))
    else:
        codes = getattr(label_space, "codes", label_space)
        if isinstance(codes, str):
            raise TypeError("label_space must be a LabelSpace or a collection of codes, not a string")
        label_codes = list(dict.fromkeys(codes))
    n_labels = len(label_codes)
    matrix = _count_matrix(golds, preds, label_codes)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[np.ndarray]] = {k: [] for k in CI_KEYS}
    for start in range(0, n_resamples, chunk):
        weights = resample_counts(rng, len(golds), min(chunk, n_resamples - start))
        counts = np.asarray(matrix @ weights, dtype=np.float64).reshape(3, max(n_labels, 1), -1)
        tp, fn, fp = counts  # code × resample
        gold = tp + fn
        # With Edin's default a code without gold in the resample is outside its label space: its false
        # positives are dropped; its per-code scores are 0/0 or 0/fp = 0 either way, so only n_avg changes.
        if label_space is None:
            present = gold > 0
            fp = np.where(present, fp, 0.0)
            n_avg = np.maximum(present.sum(axis=0), 1)
        else:
            n_avg = max(n_labels, 1)
        s_tp, s_fn, s_fp = tp.sum(axis=0), fn.sum(axis=0), fp.sum(axis=0)
        samples["micro_precision"].append(_ratio(s_tp, s_tp + s_fp))
        samples["micro_recall"].append(_ratio(s_tp, s_tp + s_fn))
        samples["micro_f1"].append(_ratio(2 * s_tp, 2 * s_tp + s_fp + s_fn))
        samples["macro_precision"].append(_ratio(tp, tp + fp).sum(axis=0) / n_avg)
        samples["macro_recall"].append(_ratio(tp, gold).sum(axis=0) / n_avg)
        samples["macro_f1"].append(_ratio(2 * tp, 2 * tp + fp + fn).sum(axis=0) / n_avg)
    alpha = (1 - confidence) / 2
    out: dict[str, Any] = {}
    for key, parts in samples.items():
        values = np.concatenate(parts)
        out[key] = (float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha)))
    out.update(n_resamples=int(n_resamples), confidence=float(confidence), seed=int(seed))
    return out
