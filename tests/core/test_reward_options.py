"""Recall-oriented reward options: hierarchy ``partial_credit`` and the PHI ``recovery_bonus``, on hand-computed
cases and against brute-force oracles (through verl 0.9.1's PHIDataset rows: tests/verl_glue/test_reward_verl.py)."""

from __future__ import annotations

import json
import math
from itertools import permutations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm4icd_plugins.verl.reward import REWARD_KEYS, GoldError, compute_score

ICD9 = {"code_system": "icd9", "index": 3, "sample_id": "s-3", "split": "train"}


def run(pred, gold, extra=ICD9, **options):
    return compute_score("llm4icd/mimic3_full", "<code>" + ", ".join(pred) + "</code>", gold, extra, **options)


def f_from(tp, n_pred, n_gold, beta=1.0):
    """F-beta from precision and recall written out (0 when both are 0)."""
    p, r = tp / n_pred, tp / n_gold
    return (1 + beta ** 2) * p * r / (beta ** 2 * p + r) if p + r else 0.0


# --- partial credit on hand-made cases --------------------------------------------------------------------
# (pred, gold, exact matches, category pairs) worked out by hand; ICD-9 categories: 401.x -> 401, 250.xx -> 250,
# procedures 96.xx -> 96 (the two-digit ICD-9-CM volume 3 category), 960.4 is a diagnosis (category 960).
CASES = [
    (["401.1", "428.0"], ["401.9", "428.0"], 1, 1),  # right category, wrong leaf
    (["401.0", "401.1", "428.0"], ["401.9", "428.0"], 1, 1),  # two wrong leaves, one missed gold: credit once
    (["401.9", "401.0"], ["401.9", "401.1"], 1, 1),  # the exact match first, then 401.0 pairs with 401.1
    (["401.9", "401.0"], ["401.9"], 1, 0),  # the only 401 gold code is matched exactly: nothing left to pair
    (["250.02", "250.03"], ["250.00", "250.01"], 0, 2),  # two pairs in one category
    (["250.02", "96.71"], ["250.00", "250.01", "96.04", "584.9"], 0, 2),
    (["960.4"], ["96.04"], 0, 0),  # a diagnosis never pairs with a procedure
    (["428.0", "584.5"], ["401.9"], 0, 0),  # other categories
]


@pytest.mark.parametrize("credit", [0.5, 1.0, 0.25])
@pytest.mark.parametrize("pred, gold, exact, pairs", CASES)
def test_partial_credit_hand_cases(pred, gold, exact, pairs, credit):
    r = run(pred, gold, partial_credit=credit)
    tp = exact + credit * pairs
    precision, recall = tp / len(pred), tp / len(gold)
    expected = 2 * precision * recall / (precision + recall) if tp else 0.0
    assert r["score"] == pytest.approx(expected, abs=1e-12)
    assert r["n_partial"] == pairs
    # the logged exact-match statistics do not move
    assert (r["tp"], r["fp"], r["fn"]) == (exact, len(pred) - exact, len(gold) - exact)
    assert r["f1"] == pytest.approx(2 * exact / (len(pred) + len(gold)))
    assert run(pred, gold)["score"] == pytest.approx(r["f1"])  # option off: the paper's F1


def test_partial_credit_does_not_reward_over_prediction():
    gold = ["401.9", "428.0"]
    one = run(["401.1", "428.0"], gold, partial_credit=0.5)["score"]
    two = run(["401.1", "401.0", "428.0"], gold, partial_credit=0.5)["score"]
    assert one == pytest.approx(0.75) and two == pytest.approx(0.6) and two < one
    # an invented code of the right category is dropped from Ŷ (unknown to the tables): it earns nothing
    invented = run(["401.7", "428.0"], gold, partial_credit=1.0)
    assert invented["n_unknown"] == 1 and invented["n_partial"] == 0
    assert invented["score"] == pytest.approx(2 * 1 / (1 + 2))
    # a sibling of a matched gold code stays a plain false positive
    assert run(["401.9", "428.0", "428.1"], gold, partial_credit=1.0)["score"] == pytest.approx(4 / 5)


def test_partial_credit_with_icd10_categories_and_pcs_tables():
    extra = dict(ICD9, code_system="icd10")
    r = run(["I50.9", "0BH18EZ"], ["I50.23", "0BH17EZ", "E11.9"], extra, partial_credit=0.5)
    assert r["n_partial"] == 2 and r["score"] == pytest.approx(2 * 1.0 / (2 + 3))
    # ICD-10-PCS B00B0ZZ (imaging) and ICD-10-CM B00.1 (herpes) share three characters, not a category
    assert run(["B00B0ZZ"], ["B00.1"], extra, partial_credit=1.0)["n_partial"] == 0


def test_partial_credit_with_beta_and_code_weights(tmp_path):
    r = run(["401.1", "428.0"], ["401.9", "428.0", "584.9"], partial_credit=0.5, beta=2.0)
    assert r["score"] == pytest.approx(f_from(1.5, 2, 3, beta=2.0))
    weights = tmp_path / "w.json"
    weights.write_text(json.dumps({"401.9": 3.0}))
    r = run(["401.1", "428.0"], ["401.9", "428.0"], partial_credit=0.5, code_weights=str(weights))
    # by hand: tp 1 + 0.5·3 = 2.5, fp 1 - 0.5·1 = 0.5, fn 3 - 0.5·3 = 1.5
    assert r["score"] == pytest.approx(2 * 2.5 / (2 * 2.5 + 0.5 + 1.5))


# --- recovery bonus ----------------------------------------------------------------------------------------

GOLD = ["401.9", "428.0", "96.04", "584.9"]


def phi_row(pool, hints):
    return dict(ICD9, phi_pool=pool, phi_hints=hints)


def test_only_unhinted_pool_codes_earn_the_bonus():
    answer = ["401.9", "428.0", "96.04"]  # F1 = 6/7
    f1 = 6 / 7
    hinted_only = run(answer, GOLD, phi_row(["96.04", "584.9"], ["96.04", "584.9"]), recovery_bonus=0.5)
    assert hinted_only["score"] == pytest.approx(f1) and hinted_only["n_recovered"] == 0  # nothing to recover
    one_hinted = run(answer, GOLD, phi_row(["96.04", "584.9"], ["584.9"]), recovery_bonus=0.5)
    assert one_hinted["score"] == pytest.approx(f1 + 0.5 * 1 / 1) and one_hinted["n_recovered"] == 1
    copied = run(answer, GOLD, phi_row(["96.04", "584.9"], ["96.04"]), recovery_bonus=0.5)
    assert copied["score"] == pytest.approx(f1) and copied["n_recovered"] == 0  # 96.04 was hinted; 584.9 missed
    unhinted = run(answer, GOLD, phi_row(np.array(["96.04", "584.9"], dtype=object), []), recovery_bonus=0.5)
    assert unhinted["score"] == pytest.approx(f1 + 0.5 * 1 / 2) and unhinted["n_recovered"] == 1
    full = run(GOLD, GOLD, phi_row(["96.04", "584.9"], []), recovery_bonus=0.5)
    assert full["score"] == pytest.approx(1.5)  # not capped: recovering still counts next to a perfect F1
    # the bonus counts pool codes that are gold only (not 250.00), resolved like gold (4280 -> 428.0)
    assert run(answer, GOLD, phi_row(["4280", "250.00"], []), recovery_bonus=0.5)["score"] == pytest.approx(f1 + 0.5)


def test_rows_without_a_pool_score_as_without_the_option():
    answer = ["401.9", "250.00"]
    plain = run(answer, GOLD)
    for extra in (ICD9, phi_row([], []), dict(ICD9, split="valid", phi_hints=[], phi_pool=[])):
        r = run(answer, GOLD, extra, recovery_bonus=1.0, partial_credit=0.0)
        assert r == plain
    # the option off: n_recovered is still logged for PHI rows, the score is F1
    r = run(GOLD, GOLD, phi_row(["584.9"], []))
    assert r["score"] == 1.0 and r["n_recovered"] == 1


def test_a_bad_pool_fails_naming_the_row_never_the_value():
    secret = "Mrs Quux, DOB 1931"
    for pool in (["96.04", secret], 7, [None]):
        with pytest.raises(GoldError, match="sample_id 's-3'.*phi_pool") as info:
            run(["401.9"], GOLD, phi_row(pool, []), recovery_bonus=0.5)
        assert secret not in str(info.value)


@pytest.mark.parametrize("bad", [
    {"partial_credit": -0.1}, {"partial_credit": 1.5}, {"partial_credit": float("nan")}, {"partial_credit": True},
    {"partial_credit": "0.5"}, {"recovery_bonus": -1}, {"recovery_bonus": 2.0}, {"recovery_bonus": float("inf")},
    {"partial_credit": 0.5, "code_system": "none"},
])
def test_bad_option_values_are_rejected_at_the_first_call(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=f"reward {name}"):
        run(["401.9"], GOLD, **bad)


# --- properties: options at 0 are the paper's F1; options on stay in range and match a brute-force oracle -----

VOCAB = ["401.0", "401.1", "401.9", "428.0", "428.1", "428.9", "250.00", "250.01", "250.02", "584.5", "584.9",
         "96.04", "96.71", "96.72", "38.91", "38.93", "V58.61", "V58.67", "E849.0", "E849.7", "960.4"]


def oracle_category(code: str) -> str:
    """By hand for VOCAB: the part before the dot (ICD-9 diagnoses 3 characters, procedures 2)."""
    return code.split(".")[0]


def oracle_pairs(wrong: set, missed: set) -> int:
    """Largest number of disjoint (wrong, missed) pairs of one category, by trying every assignment."""
    wrong, missed = sorted(wrong), sorted(missed)
    if len(wrong) < len(missed):
        wrong, missed = missed, wrong
    return max((sum(oracle_category(a) == oracle_category(b) for a, b in zip(perm, missed))
                for perm in permutations(wrong, len(missed))), default=0)


_SETS = st.sets(st.sampled_from(VOCAB), max_size=5)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(pred=_SETS, gold=_SETS.filter(bool), credit=st.floats(0, 1), bonus=st.floats(0, 1), pool=_SETS,
       hinted=_SETS)
def test_options_match_a_brute_force_oracle(pred, gold, credit, bonus, pool, hinted):
    pred_list = sorted(pred)
    exact = len(pred & gold)
    paper = 2 * exact / (len(pred) + len(gold))
    assert run(pred_list, sorted(gold))["score"] == paper
    assert run(pred_list, sorted(gold), partial_credit=0.0, recovery_bonus=0.0)["score"] == paper
    assert run(pred_list, sorted(gold), phi_row(sorted(pool), sorted(hinted)), partial_credit=0,
               recovery_bonus=0)["score"] == paper
    r = run(pred_list, sorted(gold), phi_row(sorted(pool), sorted(hinted)), partial_credit=credit,
            recovery_bonus=bonus)
    k = oracle_pairs(pred - gold, gold - pred)
    eligible = (pool & gold) - hinted
    expected = 2 * (exact + credit * k) / (len(pred) + len(gold))
    if eligible:
        expected += bonus * len(eligible & pred) / len(eligible)
    assert r["n_partial"] == (k if credit else 0) and r["n_recovered"] == len(eligible & pred)
    assert r["score"] == pytest.approx(expected, abs=1e-12)
    assert r["f1"] == paper


_PIECES = st.sampled_from(VOCAB + ["4019", "9604", "401.7", "0BH17EZ", "I50.9", "x", "<code>", "</code>",
                                   "<think>", "</think>", ",", ";", "\n", "\uff14", " "])
_ANSWERS = st.one_of(st.text(max_size=120), st.lists(_PIECES, max_size=25).map("".join), st.none(), st.integers())


@settings(max_examples=300, deadline=None, derandomize=True)
@given(answer=_ANSWERS, gold=_SETS.filter(bool), pool=_SETS, hinted=_SETS, credit=st.floats(0, 1),
       bonus=st.floats(0, 1), fmt=st.floats(0, 1), beta=st.floats(0.01, 100))
def test_options_on_never_raise_on_model_output_and_stay_in_range(answer, gold, pool, hinted, credit, bonus, fmt,
                                                                  beta):
    r = compute_score("d", answer, sorted(gold), phi_row(sorted(pool), sorted(hinted)), partial_credit=credit,
                      recovery_bonus=bonus, format_weight=fmt, beta=beta)
    assert tuple(r) == REWARD_KEYS and all(isinstance(v, float) and math.isfinite(v) for v in r.values())
    assert 0.0 <= r["score"] <= 1.0 + bonus + 1e-12
    assert r["n_partial"] <= min(r["fp"], r["fn"]) and r["n_recovered"] <= r["tp"]
