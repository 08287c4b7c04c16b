"""ICD coding metrics exactly as Edin et al. (2023) define them (paper Appendix G), vectorised with numpy.

- micro P/R/F1 pool tp/fp/fn over all (document, code) pairs: F1 = Σtp / (Σtp + ½(Σfp + Σfn)).
- macro P/R/F1 are arithmetic means of per-code P/R/F1 over the label space, per-code 0/0 = 0. Macro-F1
  is the mean of per-code F1, NOT the harmonic mean of macro-P and macro-R (PLM-ICD's number).
- The label space defaults to the codes with at least one gold occurrence in the evaluated set; codes
  predicted outside it are dropped (and counted), as in Edin's evaluation.
- Open-set micro P/R/F1 count every predicted and gold code, label space or not: the stricter view
  of a generative coder that may invent or misplace codes.

Codes are compared as strings: normalise them first (``parsing.parse_codes`` / ``normalize``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Any

import numpy as np
import pandas as pd

from llm4icd_plugins.scoring import fbeta

SCALAR_KEYS = (
    "micro_precision", "micro_recall", "micro_f1",
    "macro_precision", "macro_recall", "macro_f1",
    "open_micro_precision", "open_micro_recall", "open_micro_f1",
    "exact_match", "mean_sample_f1",
    "n_docs", "n_labels", "n_gold_pairs", "n_pred_pairs", "n_pred_dropped", "n_gold_dropped",
)
"""Keys of ``corpus_metrics``' result besides ``per_code``; all metrics are fractions in [0, 1]."""

PER_CODE_COLUMNS = ("code", "support", "tp", "fp", "fn", "precision", "recall", "f1")


def _ratio(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    """num / den elementwise with 0/0 (and x/0) = 0."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def sample_prf(pred: Iterable[str], gold: Iterable[str], beta: float = 1.0) -> tuple[float, float, float]:
    """Set-based precision, recall and F-beta of one document (the reward's ``scoring.fbeta``); 0/0 = 0."""
    pred_set, gold_set = set(pred), set(gold)
    tp = len(pred_set & gold_set)
    return fbeta(tp, len(pred_set) - tp, len(gold_set) - tp, beta)


def _flatten(docs: Sequence[Iterable[str]], what: str) -> tuple[list[str], np.ndarray]:
    """All codes of all documents (duplicates included) and, aligned, their document numbers."""
    lists: list[Sequence[str]] = []
    for i, doc in enumerate(docs):
        if isinstance(doc, (str, bytes)) or doc is None:
            raise TypeError(f"{what}[{i}] is {type(doc).__name__}; each document needs a list/set of code strings")
        lists.append(doc if isinstance(doc, (list, tuple)) else list(doc))
    lengths = np.fromiter((len(c) for c in lists), dtype=np.int64, count=len(lists))
    return list(chain.from_iterable(lists)), np.repeat(np.arange(len(lists), dtype=np.int64), lengths)


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct keys (a plain sort: faster than numpy 2's hash-based ``np.unique`` here)."""
    keys = np.sort(keys)
    return keys[np.concatenate(([True], keys[1:] != keys[:-1]))] if len(keys) else keys


def _label_codes(label_space: Any) -> list[str]:
    codes = getattr(label_space, "codes", label_space)
    if isinstance(codes, str):
        raise TypeError("label_space must be a LabelSpace or a collection of codes, not a string")
    return list(dict.fromkeys(codes))


def corpus_metrics(
    golds: Sequence[Iterable[str]],
    preds: Sequence[Iterable[str]],
    label_space: Any = None,
) -> dict[str, Any]:
    """Edin-style corpus metrics of predicted vs gold code sets, one entry per document.

    ``label_space``: a ``codes.LabelSpace`` or a collection of codes; None → codes with ≥1 gold
    occurrence. Returns a dict with ``SCALAR_KEYS`` (floats/ints) and ``per_code``, a DataFrame with
    ``PER_CODE_COLUMNS`` over the label space, sorted by support (descending) then code.
    """
    if len(golds) != len(preds):
        raise ValueError(f"{len(golds)} gold documents but {len(preds)} predictions; they must align")
    if len(golds) == 0:
        raise ValueError("no documents to evaluate")
    gold_codes, gold_docs = _flatten(golds, "golds")
    pred_codes, pred_docs = _flatten(preds, "preds")
    label_codes = sorted(set(gold_codes)) if label_space is None else _label_codes(label_space)
    n_docs, n_labels = len(golds), len(label_codes)

    # Label-space codes first, so ids < n_labels mean "inside the label space".
    ids, vocab = pd.factorize(np.array(label_codes + gold_codes + pred_codes, dtype=object))
    for code in vocab:
        if not isinstance(code, str):
            raise TypeError(f"code {code!r} ({type(code).__name__}) in golds, preds or label_space; "
                            "codes must be strings")
    # One int64 key per (doc, code) pair; deduplicating keys drops a code repeated within a document.
    n_vocab = max(len(vocab), 1)
    gold_keys = _sorted_unique(gold_docs * n_vocab + ids[n_labels:n_labels + len(gold_codes)])
    pred_keys = _sorted_unique(pred_docs * n_vocab + ids[n_labels + len(gold_codes):])
    gold_ids, gold_docs = gold_keys % n_vocab, gold_keys // n_vocab
    pred_ids, pred_docs = pred_keys % n_vocab, pred_keys // n_vocab
    tp_keys = np.intersect1d(gold_keys, pred_keys, assume_unique=True)

    per_tp = np.bincount(tp_keys % n_vocab, minlength=n_vocab)
    per_gold = np.bincount(gold_ids, minlength=n_vocab)
    per_pred = np.bincount(pred_ids, minlength=n_vocab)
    per_fp, per_fn = per_pred - per_tp, per_gold - per_tp
    inside = slice(0, n_labels)

    tp, fp, fn = per_tp[inside].sum(), per_fp[inside].sum(), per_fn[inside].sum()
    all_tp, all_fp, all_fn = per_tp.sum(), per_fp.sum(), per_fn.sum()
    code_p = _ratio(per_tp[inside], per_tp[inside] + per_fp[inside])
    code_r = _ratio(per_tp[inside], per_tp[inside] + per_fn[inside])
    code_f = _ratio(per_tp[inside], per_tp[inside] + 0.5 * (per_fp[inside] + per_fn[inside]))

    # Per document, over the label space (exact match) and over all codes (sample F1 = mean reward).
    doc_tp_in = np.bincount(tp_keys[tp_keys % n_vocab < n_labels] // n_vocab, minlength=n_docs)
    doc_gold_in = np.bincount(gold_docs[gold_ids < n_labels], minlength=n_docs)
    doc_pred_in = np.bincount(pred_docs[pred_ids < n_labels], minlength=n_docs)
    doc_tp = np.bincount(tp_keys // n_vocab, minlength=n_docs)
    doc_gold = np.bincount(gold_docs, minlength=n_docs)
    doc_pred = np.bincount(pred_docs, minlength=n_docs)
    exact = (doc_tp_in == doc_gold_in) & (doc_tp_in == doc_pred_in)
    sample_f1 = _ratio(2 * doc_tp, doc_gold + doc_pred)

    per_code = pd.DataFrame({
        "code": np.asarray(label_codes, dtype=object),
        "support": per_gold[inside], "tp": per_tp[inside], "fp": per_fp[inside], "fn": per_fn[inside],
        "precision": code_p, "recall": code_r, "f1": code_f,
    }, columns=list(PER_CODE_COLUMNS))
    per_code = per_code.sort_values(["support", "code"], ascending=[False, True], kind="stable")
    return {
        "micro_precision": float(_ratio(tp, tp + fp)),
        "micro_recall": float(_ratio(tp, tp + fn)),
        "micro_f1": float(_ratio(tp, tp + 0.5 * (fp + fn))),
        "macro_precision": float(code_p.mean()) if n_labels else 0.0,
        "macro_recall": float(code_r.mean()) if n_labels else 0.0,
        "macro_f1": float(code_f.mean()) if n_labels else 0.0,
        "open_micro_precision": float(_ratio(all_tp, all_tp + all_fp)),
        "open_micro_recall": float(_ratio(all_tp, all_tp + all_fn)),
        "open_micro_f1": float(_ratio(all_tp, all_tp + 0.5 * (all_fp + all_fn))),
        "exact_match": float(exact.mean()),
        "mean_sample_f1": float(sample_f1.mean()),
        "n_docs": int(n_docs),
        "n_labels": int(n_labels),
        "n_gold_pairs": int(per_gold[inside].sum()),
        "n_pred_pairs": int(per_pred[inside].sum()),
        "n_pred_dropped": int(per_pred[n_labels:].sum()),
        "n_gold_dropped": int(per_gold[n_labels:].sum()),
        "per_code": per_code.reset_index(drop=True),
    }


# --- frequency buckets for evaluation reports (bootstrap intervals: llm4icd_plugins.bootstrap) ----------------

DEFAULT_BUCKET_EDGES = (500, 100, 10)
"""Lower edges of the training-frequency buckets: ≥500, 100–499, 10–99 and, below the last edge, <10."""


def bucket_names(edges: Sequence[int] = DEFAULT_BUCKET_EDGES) -> list[str]:
    """Readable names of the buckets of ``edges`` (descending lower edges): ≥500, 100–499, 10–99, <10."""
    edges = _check_edges(edges)
    names = [f"≥{edges[0]}"] + [f"{lo}–{hi - 1}" for hi, lo in zip(edges, edges[1:])]
    return names + ([f"<{edges[-1]}"] if edges[-1] > 0 else [])


def _check_edges(edges: Sequence[int]) -> list[int]:
    edges = [int(e) for e in edges]
    if not edges or any(e < 0 for e in edges) or any(a <= b for a, b in zip(edges, edges[1:])):
        raise ValueError(f"bucket edges {edges} must be non-negative and strictly descending, e.g. 500,100,10")
    return edges


def assign_buckets(frequencies: Sequence[int] | np.ndarray, edges: Sequence[int] = DEFAULT_BUCKET_EDGES) -> list[str]:
    """The bucket name of each training frequency (a code never seen in training has frequency 0)."""
    edges = _check_edges(edges)
    names = bucket_names(edges)
    freq = np.asarray(frequencies, dtype=np.int64)
    # Position of the first edge the frequency reaches; past the last edge → the "<last" bucket.
    reached = freq[:, None] >= np.asarray(edges)[None, :]
    first = np.where(reached.any(axis=1), reached.argmax(axis=1), len(edges))
    return [names[i] for i in first]


def bucket_metrics(per_code: pd.DataFrame, frequencies: dict[str, int] | pd.Series,
                   edges: Sequence[int] = DEFAULT_BUCKET_EDGES) -> pd.DataFrame:
    """Micro and macro P/R/F1 per training-frequency bucket, from ``corpus_metrics``' per-code table.

    A bucket's micro scores pool tp/fp/fn of its codes; its macro scores average their per-code scores,
    so the buckets together reproduce the overall metrics. Empty buckets get ``n_codes`` 0 and NaN.
    """
    freq = per_code["code"].map(lambda c: int(frequencies.get(c, 0)))
    table = per_code.assign(train_frequency=freq.to_numpy(), bucket=assign_buckets(freq.to_numpy(), edges))
    rows = []
    for name in bucket_names(edges):
        part = table[table["bucket"] == name]
        tp, fp, fn = (int(part[k].sum()) for k in ("tp", "fp", "fn"))
        empty = part.empty
        rows.append({
            "bucket": name, "n_codes": int(len(part)), "support": int(part["support"].sum()),
            "micro_precision": float(_ratio(tp, tp + fp)) if not empty else np.nan,
            "micro_recall": float(_ratio(tp, tp + fn)) if not empty else np.nan,
            "micro_f1": float(_ratio(tp, tp + 0.5 * (fp + fn))) if not empty else np.nan,
            "macro_precision": float(part["precision"].mean()) if not empty else np.nan,
            "macro_recall": float(part["recall"].mean()) if not empty else np.nan,
            "macro_f1": float(part["f1"].mean()) if not empty else np.nan,
        })
    return pd.DataFrame(rows)
