"""Edin-style metrics: hand-computed examples, 0/0 cases, dropped predictions, agreement with scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.metrics import precision_recall_fscore_support
from sklearn.preprocessing import MultiLabelBinarizer

from llm4icd_plugins.metrics import PER_CODE_COLUMNS, SCALAR_KEYS, corpus_metrics, sample_prf

approx = pytest.approx


# --- sample_prf --------------------------------------------------------------------------------------

def test_sample_prf_hand_computed():
    # pred {A, B, C}, gold {A, B, D, E}: tp 2 → P 2/3, R 2/4, F1 = 2PR/(P+R) = 4/7.
    assert sample_prf(["A", "B", "C"], ["A", "B", "D", "E"]) == approx((2 / 3, 1 / 2, 4 / 7))


def test_sample_prf_is_set_based():
    assert sample_prf(["A", "A", "B"], ["A", "B", "B"]) == approx((1.0, 1.0, 1.0))


@pytest.mark.parametrize("pred, gold, expected", [
    ([], ["A"], (0.0, 0.0, 0.0)),   # empty prediction: P = 0
    (["A"], [], (0.0, 0.0, 0.0)),   # empty gold: R = 0
    ([], [], (0.0, 0.0, 0.0)),      # 0/0 = 0
    (["B"], ["A"], (0.0, 0.0, 0.0)),
])
def test_sample_prf_zero_cases(pred, gold, expected):
    assert sample_prf(pred, gold) == approx(expected)


def test_sample_prf_beta():
    # P = 1/2, R = 1: F2 = 5PR / (4P + R) = 2.5 / 3.
    assert sample_prf(["A", "B"], ["A"], beta=2.0)[2] == approx(2.5 / 3)
    assert sample_prf(["A", "B"], ["A"], beta=1.0)[2] == approx(2 / 3)


# --- corpus_metrics: hand-computed ---------------------------------------------------------------------

GOLDS = [{"A", "B"}, {"A", "C"}, {"B"}, {"C"}]
PREDS = [{"A", "X"}, {"A", "B", "C"}, set(), {"C", "X"}]


def test_hand_computed_example():
    r = corpus_metrics(GOLDS, PREDS)
    # Label space = gold codes {A, B, C}; X is predicted twice outside it → dropped.
    # A: support 2, tp 2            → P 1, R 1, F 1
    # B: support 2, tp 0, fp 1, fn 2 → P 0, R 0, F 0
    # C: support 2, tp 2            → P 1, R 1, F 1
    # micro: tp 4, fp 1, fn 2 → P 4/5, R 4/6, F1 4/(4 + 1.5) = 8/11
    assert r["n_labels"] == 3 and r["n_docs"] == 4 and r["n_pred_dropped"] == 2 and r["n_gold_dropped"] == 0
    assert (r["micro_precision"], r["micro_recall"], r["micro_f1"]) == approx((4 / 5, 2 / 3, 8 / 11))
    assert (r["macro_precision"], r["macro_recall"], r["macro_f1"]) == approx((2 / 3, 2 / 3, 2 / 3))
    # open set counts X: tp 4, fp 3, fn 2 → P 4/7, R 4/6, F1 4/(4 + 2.5) = 8/13
    assert (r["open_micro_precision"], r["open_micro_recall"], r["open_micro_f1"]) == approx((4 / 7, 2 / 3, 8 / 13))
    # exact match inside the label space: only doc 3 ({C} vs {C, X→dropped})
    assert r["exact_match"] == approx(1 / 4)
    # sample F1 (open set): 2/4, 4/5, 0, 2/3
    assert r["mean_sample_f1"] == approx((0.5 + 0.8 + 0.0 + 2 / 3) / 4)
    assert (r["n_gold_pairs"], r["n_pred_pairs"]) == (6, 5)


def test_per_code_table():
    table = corpus_metrics(GOLDS, PREDS)["per_code"]
    assert tuple(table.columns) == PER_CODE_COLUMNS
    rows = {row.code: row for row in table.itertuples()}
    assert (rows["B"].support, rows["B"].tp, rows["B"].fp, rows["B"].fn) == (2, 0, 1, 2)
    assert (rows["B"].precision, rows["B"].recall, rows["B"].f1) == (0.0, 0.0, 0.0)
    assert rows["A"].f1 == 1.0 and list(table.code) == ["A", "B", "C"]  # support desc, then code


def test_macro_f1_is_not_the_harmonic_mean_of_macro_p_and_r():
    # A: tp 1, fn 1 → P 1, R 1/2, F 2/3;  B: tp 1, fp 1 → P 1/2, R 1, F 2/3.
    r = corpus_metrics([{"A"}, {"A"}, {"B"}], [{"A"}, {"B"}, {"B"}])
    assert r["macro_precision"] == approx(0.75) and r["macro_recall"] == approx(0.75)
    assert r["macro_f1"] == approx(2 / 3)
    harmonic = 2 * 0.75 * 0.75 / 1.5
    assert not math.isclose(r["macro_f1"], harmonic)


def test_macro_precision_and_recall_differ_when_errors_are_one_sided():
    # A: gold 3×, predicted once (tp 1, fn 2) → P 1, R 1/3, F 1/2;  B: tp 1 → P 1, R 1, F 1.
    # C: predicted once, never gold → outside the default label space (dropped).
    r = corpus_metrics([{"A"}, {"A"}, {"A"}, {"B"}], [{"A"}, set(), {"C"}, {"B"}])
    assert (r["macro_precision"], r["macro_recall"], r["macro_f1"]) == approx((1.0, 2 / 3, 3 / 4))
    assert (r["micro_precision"], r["micro_recall"]) == approx((1.0, 1 / 2))
    # With C in the label space its P = R = F = 0 joins the means: recall-side and precision-side differ again.
    r = corpus_metrics([{"A"}, {"A"}, {"A"}, {"B"}], [{"A"}, set(), {"C"}, {"B"}], label_space=["A", "B", "C"])
    assert (r["macro_precision"], r["macro_recall"], r["macro_f1"]) == approx((2 / 3, 4 / 9, 1 / 2))
    assert r["micro_precision"] == approx(2 / 3)


def test_explicit_label_space_zero_support_code_and_dropped_gold():
    # D has no gold and no prediction: P = R = F = 0/0 = 0 and it counts in the macro mean.
    # E is predicted but never gold: P = 0/1 = 0. G is gold outside the label space: dropped.
    r = corpus_metrics([{"A", "G"}, {"A"}], [{"A", "E"}, {"A"}], label_space=["A", "D", "E"])
    assert r["n_labels"] == 3 and r["n_gold_dropped"] == 1 and r["n_pred_dropped"] == 0
    assert r["macro_f1"] == approx(1 / 3) and r["macro_precision"] == approx(1 / 3)
    # micro over the label space: tp 2, fp 1 (E), fn 0 → P 2/3, R 1
    assert (r["micro_precision"], r["micro_recall"]) == approx((2 / 3, 1.0))
    # open set: tp 2, fp 1, fn 1 (G)
    assert r["open_micro_recall"] == approx(2 / 3)
    rows = r["per_code"].set_index("code")
    assert rows.loc["D"].tolist() == [0, 0, 0, 0, 0.0, 0.0, 0.0]


def test_label_space_object_is_accepted():
    from llm4icd_plugins.codes import LabelSpace

    space = LabelSpace("two", "icd9", ["401.9", "428.0"])
    r = corpus_metrics([["401.9"], ["428.0"]], [["401.9", "250.00"], []], label_space=space)
    assert r["n_labels"] == 2 and r["n_pred_dropped"] == 1 and r["macro_recall"] == approx(0.5)


def test_duplicates_within_a_document_count_once():
    r = corpus_metrics([["A", "A"]], [["A", "A", "B", "B"]])
    assert r["n_gold_pairs"] == 1 and r["n_pred_dropped"] == 1 and r["micro_f1"] == 1.0


def test_all_empty_predictions():
    r = corpus_metrics([["A"], ["B"]], [[], []])
    assert all(r[k] == 0.0 for k in SCALAR_KEYS if k.endswith(("precision", "recall", "f1")))


def test_keys_and_types():
    r = corpus_metrics(GOLDS, PREDS)
    assert set(r) == set(SCALAR_KEYS) | {"per_code"}
    assert all(isinstance(r[k], (int, float)) for k in SCALAR_KEYS)


@pytest.mark.parametrize("golds, preds, error", [
    ([["A"]], [], ValueError),
    ([], [], ValueError),
    (["A"], [["A"]], TypeError),
    ([["A"]], [[1]], TypeError),
    ([None], [["A"]], TypeError),
])
def test_bad_input_raises(golds, preds, error):
    with pytest.raises(error):
        corpus_metrics(golds, preds)


# --- agreement with scikit-learn ---------------------------------------------------------------------

def _sklearn(golds, preds, labels):
    inside = set(labels)
    mlb = MultiLabelBinarizer(classes=labels)
    y_true = mlb.fit_transform([sorted(set(g) & inside) for g in golds])
    y_pred = mlb.transform([sorted(set(p) & inside) for p in preds])
    return {avg: precision_recall_fscore_support(y_true, y_pred, average=avg, zero_division=0)[:3]
            for avg in ("micro", "macro")}


def _check_against_sklearn(golds, preds, label_space=None) -> bool:
    """Assert agreement; False (nothing checked) for one label, which scikit-learn reads as binary data."""
    r = corpus_metrics(golds, preds, label_space)
    labels = list(r["per_code"].code) if label_space is None else list(dict.fromkeys(label_space))
    if len(labels) < 2:
        return False
    ref = _sklearn(golds, preds, labels)
    assert (r["micro_precision"], r["micro_recall"], r["micro_f1"]) == approx(ref["micro"], abs=1e-12)
    assert (r["macro_precision"], r["macro_recall"], r["macro_f1"]) == approx(ref["macro"], abs=1e-12)
    sample = [sample_prf(p, g)[2] for g, p in zip(golds, preds)]
    assert r["mean_sample_f1"] == approx(float(np.mean(sample)), abs=1e-12)
    return True


_CODE = st.sampled_from([f"C{i}" for i in range(12)])
_DOC = st.sets(_CODE, max_size=6)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_DOC.filter(bool), _DOC), min_size=1, max_size=25),
       st.one_of(st.none(), st.lists(_CODE, min_size=1, max_size=12, unique=True)))
def test_agrees_with_sklearn_hypothesis(pairs, label_space):
    golds, preds = [g for g, _ in pairs], [p for _, p in pairs]
    assume(_check_against_sklearn(golds, preds, label_space))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_sklearn_on_a_larger_zipf_corpus(seed):
    rng = np.random.default_rng(seed)
    vocab = np.array([f"{100 + i // 10}.{i % 10}" for i in range(800)], dtype=object)
    weights = 1.0 / np.arange(1, len(vocab) + 1) ** 1.1
    weights /= weights.sum()
    golds, preds = [], []
    for _ in range(1500):
        gold = list(vocab[rng.choice(len(vocab), rng.integers(1, 20), replace=False, p=weights)])
        keep = [c for c in gold if rng.random() < 0.7]
        preds.append(keep + list(vocab[rng.choice(len(vocab), rng.integers(0, 6), p=weights)]))
        golds.append(gold)
    assert _check_against_sklearn(golds, preds)
