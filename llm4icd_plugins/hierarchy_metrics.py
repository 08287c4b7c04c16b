"""Hierarchy-aware error analysis of ICD predictions: category-level metrics and near misses.

A code's category is its top ancestor in the code tables (``codes.CodeSystem.parent``): 401.9 → 401,
V58.61 → V58, E849.7 → E849, 96.71 → 96, S72.001A → S72. ICD-10-PCS codes have no parents there; their
category is their first three characters (section, body system, root operation: the PCS table, e.g. 0BH).
Codes the tables do not know, or scored without a code system, follow the same rules on the string: the
part before the dot, the first three characters of a 7-character PCS code.

A near miss is a false positive whose category is the category of a gold code of the same document that
was missed ("right category, wrong leaf"); its mirror, a near-missed gold code, is a missed gold code with
such a false positive. Both are counted over every predicted and gold code (open set, label space or not).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Any

import numpy as np
import pandas as pd

from llm4icd_plugins.metrics import corpus_metrics
from llm4icd_plugins.normalize import category  # re-exported: the rule lives with the code forms

HIERARCHY_KEYS = (
    "category_micro_precision", "category_micro_recall", "category_micro_f1",
    "category_macro_precision", "category_macro_recall", "category_macro_f1", "n_categories",
    "n_fp", "n_near_miss", "near_miss_rate", "n_fn", "n_fn_near_miss", "fn_near_miss_rate",
)
"""Keys of ``hierarchy_metrics``' result besides ``per_code``; rates are fractions of n_fp / n_fn (0/0 = 0)."""

def category_map(codes: Iterable[str], code_system: Any = None) -> dict[str, str]:
    """``{code: category}`` for the distinct ``codes``."""
    return {code: category(code, code_system) for code in dict.fromkeys(codes)}


def _pair_keys(docs: np.ndarray, ids: np.ndarray, n_vocab: int) -> np.ndarray:
    """Sorted distinct ``doc * n_vocab + code id`` keys of the (document, code) pairs."""
    keys = np.sort(docs * n_vocab + ids)  # a plain sort: faster than numpy 2's hash-based np.unique here
    return keys[np.concatenate(([True], keys[1:] != keys[:-1]))] if len(keys) else keys


def _split(flat: list[str], lengths: np.ndarray) -> list[list[str]]:
    ends = np.cumsum(lengths).tolist()
    return [flat[a:b] for a, b in zip([0] + ends[:-1], ends)]


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def hierarchy_metrics(golds: Sequence[Iterable[str]], preds: Sequence[Iterable[str]], label_space: Any = None,
                      code_system: Any = None) -> dict[str, Any]:
    """Category-level Edin metrics and near-miss counts of predicted vs gold code sets (one entry per document).

    Category metrics are ``metrics.corpus_metrics`` over each document's gold and predicted categories
    (every predicted code counts, off-label ones too); their label space is the categories of
    ``label_space`` (None → categories with a gold occurrence). ``per_code`` is a DataFrame with, per code
    seen, its ``category``, ``near_miss_fp`` (its false positives that are near misses) and ``near_miss_fn``
    (its misses with a same-category false positive in the document).
    """
    golds = [g if isinstance(g, list) else list(g) for g in golds]
    preds = [p if isinstance(p, list) else list(p) for p in preds]
    if len(golds) != len(preds):
        raise ValueError(f"{len(golds)} gold documents but {len(preds)} predictions; they must align")
    space = None if label_space is None else list(getattr(label_space, "codes", label_space))
    gold_len = np.fromiter(map(len, golds), dtype=np.int64, count=len(golds))
    pred_len = np.fromiter(map(len, preds), dtype=np.int64, count=len(preds))
    flat = list(chain.from_iterable(golds)) + list(chain.from_iterable(preds))
    ids, vocab = pd.factorize(np.asarray(flat, dtype=object))
    vocab = list(vocab)
    cat_of = category_map(vocab + (space or []), code_system)
    cat_ids, cats = pd.factorize(np.asarray([cat_of[c] for c in vocab] or [""], dtype=object))
    n_vocab, n_cats, n_gold = max(len(vocab), 1), max(len(cats), 1), int(gold_len.sum())
    doc_of = np.arange(len(golds), dtype=np.int64)

    gold_keys = _pair_keys(np.repeat(doc_of, gold_len), ids[:n_gold], n_vocab)
    pred_keys = _pair_keys(np.repeat(doc_of, pred_len), ids[n_gold:], n_vocab)
    fp_keys = np.setdiff1d(pred_keys, gold_keys, assume_unique=True)
    fn_keys = np.setdiff1d(gold_keys, pred_keys, assume_unique=True)
    fp_cat = fp_keys // n_vocab * n_cats + cat_ids[fp_keys % n_vocab]
    fn_cat = fn_keys // n_vocab * n_cats + cat_ids[fn_keys % n_vocab]
    near_fp, near_fn = np.isin(fp_cat, fn_cat), np.isin(fn_cat, fp_cat)

    flat_cats = np.asarray(cats, dtype=object)[cat_ids[ids]].tolist() if len(flat) else []
    cat_space = None if space is None else list(dict.fromkeys(cat_of[c] for c in space))
    cat = corpus_metrics(_split(flat_cats[:n_gold], gold_len), _split(flat_cats[n_gold:], pred_len), cat_space)
    per_code = pd.DataFrame({
        "code": np.asarray(vocab, dtype=object),
        "category": np.asarray([cat_of[c] for c in vocab], dtype=object),
        "near_miss_fp": np.bincount(fp_keys[near_fp] % n_vocab, minlength=n_vocab)[:len(vocab)],
        "near_miss_fn": np.bincount(fn_keys[near_fn] % n_vocab, minlength=n_vocab)[:len(vocab)],
    })
    n_near, n_fn_near = int(near_fp.sum()), int(near_fn.sum())
    return {
        **{f"category_{k}": cat[k] for k in ("micro_precision", "micro_recall", "micro_f1",
                                             "macro_precision", "macro_recall", "macro_f1")},
        "n_categories": cat["n_labels"],
        "n_fp": int(len(fp_keys)), "n_near_miss": n_near, "near_miss_rate": _ratio(n_near, len(fp_keys)),
        "n_fn": int(len(fn_keys)), "n_fn_near_miss": n_fn_near, "fn_near_miss_rate": _ratio(n_fn_near, len(fn_keys)),
        "per_code": per_code,
    }
