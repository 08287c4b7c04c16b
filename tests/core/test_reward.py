"""The verl reward adapter without verl: hand-computed scores, the gold side, options and a fuzz property
(verl 0.9.1's own loader and reward manager: tests/verl_glue/test_reward_verl.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm4icd_plugins.verl.reward import REWARD_KEYS, GoldError, compute_score, gold_codes

GOLD = ["401.9", "428.0", "96.04", "584.9"]


def score(text, gold=GOLD, **kw):
    return compute_score(data_source="llm4icd/mimic3_full", solution_str=text, ground_truth=gold, **kw)


def test_perfect_partial_and_empty():
    assert score("<code>401.9, 428.0, 96.04, 584.9</code>")["score"] == 1.0
    r = score("<code>401.9, 428.0, 250.00</code>")  # tp 2, fp 1, fn 2
    assert (r["tp"], r["fp"], r["fn"]) == (2, 1, 2)
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(0.5)
    assert r["score"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    for text in ["401.9, 428.0", "<code>401.9, 428.0", "", None, 42]:
        r = score(text)
        assert r["score"] == 0.0 and r["format_ok"] == 0.0 and r["n_pred"] == 0


def test_result_keys_are_always_the_same_and_numeric():
    for text in ["<code>401.9</code>", "nothing", "<code></code>", "<think>x</think><code>zz, 9604</code>"]:
        r = score(text)
        assert tuple(r) == REWARD_KEYS
        assert all(isinstance(v, float) and math.isfinite(v) for v in r.values())


def test_ground_truth_forms():
    text = "<code>401.9, 96.04</code>"
    as_list = score(text, gold=["401.9", "96.04"])
    assert score(text, gold=np.array(["401.9", "96.04"], dtype=object)) == as_list
    assert score(text, gold="401.9, 96.04") == as_list
    assert score(text, gold="401.9;96.04\n") == as_list
    assert as_list["score"] == 1.0
    assert gold_codes(" 401.9 , 401.9,,") == ("401.9",)


def test_duplicates_and_normalisation_do_not_inflate():
    r = score("<code>401.9, 401.9 , 428.0., 96.04, 584.9</code>")
    assert r["score"] == 1.0 and r["n_pred"] == 4


def test_last_span_after_think_counts():
    text = "<think>maybe <code>250.00</code></think>\n<code>401.9, 428.0, 96.04, 584.9</code>"
    assert score(text)["score"] == 1.0


def test_fbeta_rewards_recall():
    text = "<code>401.9, 428.0, 250.00, 272.4, 285.9, 530.81</code>"  # high recall-ish, low precision
    r1, r2 = score(text), score(text, beta=2.0)
    p, r = 2 / 6, 2 / 4
    assert r2["score"] == pytest.approx(5 * p * r / (4 * p + r))
    assert r2["f1"] == pytest.approx(r1["score"])


def test_code_weights(tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"96.04": 5.0, "__default__": 1.0}))
    text = "<code>401.9, 428.0, 584.9</code>"  # misses the heavy code
    plain, weighted = score(text), score(text, code_weights=str(path))
    assert weighted["score"] == pytest.approx(2 * 3 / (2 * 3 + 5))
    assert weighted["score"] < plain["score"]
    assert weighted["tp"] == plain["tp"] == 3


def test_format_weight_and_label_space(tmp_path):
    from llm4icd_plugins.codes import LabelSpace

    r = score("<code>401.9</code>", format_weight=0.2)
    assert r["score"] == pytest.approx(0.8 * (2 * 1 / (2 + 3)) + 0.2)
    space = tmp_path / "ls.json"
    LabelSpace(name="t", system="icd9", codes=("401.9", "428.0", "96.04", "584.9")).save(space)
    r = score("<code>401.9, 428.0, 96.04, 584.9, 250.00</code>", label_space=str(space))
    assert r["score"] == 1.0 and r["n_off_label"] == 1


def test_code_system_drops_unknown_but_keeps_gold_retired_codes():
    gold = ["401.9", "999.99"]  # 999.99 stands for a code the current tables lack
    text = "<code>401.9, 999.99, 123.45</code>"
    open_set = score(text, gold=gold)
    assert open_set["fp"] == 1 and open_set["tp"] == 2
    checked = score(text, gold=gold, code_system="icd9")
    assert checked["tp"] == 2 and checked["fp"] == 0 and checked["n_unknown"] == 1
    penalised = score(text, gold=gold, code_system="icd9", unknown_penalty=0.1)
    assert penalised["score"] == pytest.approx(checked["score"] - 0.1)
    auto = compute_score(data_source="x", solution_str=text, ground_truth=gold,
                         extra_info={"code_system": "icd9"}, code_system="auto")
    assert auto == checked


@pytest.mark.parametrize("bad", [
    {"beta": 0}, {"beta": -1.0}, {"beta": 1e200}, {"beta": float("nan")}, {"beta": True}, {"format_weight": 1.5},
    {"unknown_penalty": -1}, {"unknown_penalty": float("inf"), "code_system": "icd9"},
    {"unknown_penalty": 0.1, "code_system": "none"}, {"code_system": "icd11"}, {"code_weights": "/nonexistent/w.json"},
])
def test_configuration_errors_are_clear(bad):
    with pytest.raises(ValueError, match="reward"):
        score("<code>401.9</code>", **bad)


def test_batch_micro_f1_is_recoverable_from_logged_means():
    rng = np.random.default_rng(0)
    vocab = [f"{c}.{d}" for c in range(400, 420) for d in range(3)]
    results = []
    tp = fp = fn = 0
    for _ in range(64):
        gold = list(rng.choice(vocab, size=rng.integers(1, 8), replace=False))
        pred = list(rng.choice(vocab, size=rng.integers(0, 8), replace=False))
        results.append(score("<code>" + ", ".join(pred) + "</code>", gold=gold))
        tp += len(set(pred) & set(gold))
        fp += len(set(pred) - set(gold))
        fn += len(set(gold) - set(pred))
    mean = {k: np.mean([r[k] for r in results]) for k in REWARD_KEYS}
    assert 2 * mean["tp"] / (2 * mean["tp"] + mean["fp"] + mean["fn"]) == pytest.approx(2 * tp / (2 * tp + fp + fn))


# --- one rule for Ŷ (parsing.predicted_codes), defaults from extra_info -----------------------------

ROW = {"index": 7, "sample_id": "s-7", "split": "train", "code_system": "icd9", "label_space": "mimic3_full"}


def test_undotted_gold_and_prediction_match_with_a_code_system():
    assert compute_score("d", "<code>25000</code>", ["25000"], code_system="icd9")["score"] == 1.0
    assert compute_score("d", "<code>250.00</code>", ["25000"], code_system="icd9")["score"] == 1.0
    # the row's extra_info names the code system: 4280 is 428.0 without any reward option
    r = compute_score("d", "<code>4280, 401.9</code>", ["428.0", "401.9"], ROW)
    assert r["score"] == 1.0 and r["tp"] == 2


def test_code_system_defaults_from_extra_info_and_an_option_overrides_it():
    text = "<code>401.9, 000.0</code>"  # 000.0: code-shaped, unknown to the ICD-9 tables, not gold
    by_row = compute_score("d", text, ["401.9"], ROW)
    assert (by_row["tp"], by_row["fp"], by_row["n_unknown"], by_row["score"]) == (1, 0, 1, 1.0)
    as_written = compute_score("d", text, ["401.9"], ROW, code_system="none")
    assert (as_written["tp"], as_written["fp"], as_written["score"]) == (1, 1, pytest.approx(2 / 3))


def test_label_space_from_extra_info_file_and_option(tmp_path):
    from llm4icd_plugins.codes import LabelSpace

    top = tmp_path / "label_space.json"
    LabelSpace("top2", "icd9", ["401.9", "428.0"]).save(top)
    text = "<code>401.9, 428.0, 250.00</code>"  # 250.00: a real code outside the label space
    gold = ["401.9", "428.0"]
    assert compute_score("d", text, gold, ROW)["fp"] == 1  # a bare label-space name is not a file
    for row, kw in ((dict(ROW, label_space_file=str(top)), {}), (dict(ROW, label_space=str(top)), {}),
                    (ROW, {"label_space": str(top)})):
        r = compute_score("d", text, gold, row, **kw)
        assert (r["score"], r["fp"], r["n_off_label"], r["n_pred"]) == (1.0, 0, 1, 2)


def test_rescue_of_an_unknown_gold_code_respects_the_label_space(tmp_path):
    from llm4icd_plugins.codes import LabelSpace

    space = tmp_path / "ls.json"
    LabelSpace("top2", "icd9", ["401.9", "428.0"]).save(space)
    gold = ["401.9", "000.0"]  # 000.0: a gold code the tables do not know (MIMIC-III keeps retired codes)
    text = "<code>401.9, 000.0</code>"
    rescued = compute_score("d", text, gold, ROW)
    assert (rescued["tp"], rescued["n_pred"], rescued["n_unknown"]) == (2, 2, 0)
    inside = compute_score("d", text, gold, ROW, label_space=str(space))
    assert (inside["tp"], inside["n_pred"]) == (1, 1)  # 000.0 is outside the label space: not in Ŷ


def test_format_term_rewards_a_well_formed_answer_not_just_a_span():
    two_spans = "<code>250.00</code> final: <code>401.9</code>"  # a span, but not format_ok
    r = score(two_spans, format_weight=0.5)
    f1 = 2 * 1 / (2 * 1 + 0 + 3)
    assert r["format_ok"] == 0.0 and r["score"] == pytest.approx(0.5 * f1)
    clean = score("<code>401.9</code>", format_weight=0.5)
    assert clean["score"] == pytest.approx(0.5 * f1 + 0.5)


def test_stray_close_tag_and_last_think():
    assert score("<code>401.9, 428.0</code>, 96.04, 584.9</code>")["score"] == 1.0
    assert score("<think>x</think><code>401.9, 428.0, 96.04, 584.9</code> hmm </think>")["score"] == 0.0


# --- the gold side -------------------------------------------------------------------------------------

SECRET = "Mr Zebediah Quux"


@pytest.mark.parametrize("gold", [None, float("nan"), 4019, 3.5, True, {"codes": ["401.9"]},
                                  ["401.9", None], ["401.9", float("nan")], ["401.9", 4019],
                                  ["401.9", SECRET], SECRET, b"\xff\xfe", pd.NA])
def test_bad_gold_fails_loudly_naming_the_row_never_the_value(gold):
    with pytest.raises(GoldError, match="sample_id 's-7', index 7") as info:
        compute_score("d", "<code>401.9</code>", gold, ROW)
    assert isinstance(info.value, ValueError) and SECRET not in str(info.value) and "Fix:" in str(info.value)


def test_gold_as_bytes_or_zero_d_array_is_read_not_emptied():
    text = "<code>401.9, 96.04</code>"
    for gold in (b"401.9, 96.04", np.array("401.9,96.04"), np.array([b"401.9", b"96.04"], dtype=object),
                 ("401.9", "96.04"), np.array(["401.9", "96.04"])):
        r = compute_score("d", text, gold, ROW)
        assert (r["score"], r["n_gold"]) == (1.0, 2), gold
    assert gold_codes(b"4280;96.04", "icd9") == ("428.0", "96.04")


def test_a_huge_gold_value_is_refused_fast():
    import time

    for gold in ("401.9," * 2_000_000, ["401.9"] * 100_000):
        start = time.perf_counter()
        with pytest.raises(GoldError, match="over the limit"):
            compute_score("d", "<code>401.9</code>", gold, ROW)
        assert time.perf_counter() - start < 0.5  # parsing it would take seconds


def test_rollouts_sharing_a_gold_array_score_like_fresh_copies():
    gold = np.array(GOLD, dtype=object)
    texts = ["<code>401.9</code>", "<code>428.0, 96.04</code>", "<code>4280, 9604</code>"]
    shared = [compute_score("d", t, gold, ROW)["score"] for t in texts]
    fresh = [compute_score("d", t, list(GOLD), ROW)["score"] for t in texts]
    assert shared == fresh == [pytest.approx(2 / 5), pytest.approx(4 / 6), pytest.approx(2 / 5)]
    # 9604 is ambiguous in ICD-9 (960.4 or 96.04): it stays unknown and is dropped; 4280 resolves


# --- options -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, suggestion", [("bta", "beta"), ("temperature", None),
                                              ("partial_credits", "partial_credit"),
                                              ("format_wieght", "format_weight"), ("codesystem", "code_system")])
def test_unknown_options_are_rejected_with_the_closest_name(name, suggestion):
    with pytest.raises(ValueError, match=f"unknown reward_kwargs '{name}'") as info:
        score("<code>401.9</code>", **{name: 1})
    if suggestion:
        assert f"did you mean '{suggestion}'" in str(info.value)


def test_what_verl_passes_is_accepted():
    r = score("<code>401.9</code>", reward_router_address=None, reward_model_tokenizer=None)
    assert r["tp"] == 1


def test_huge_weights_are_rejected(tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"401.9": 1e308}))
    with pytest.raises(ValueError, match="code_weights"):
        score("<code>401.9</code>", code_weights=str(path))


# --- fuzz: answers, gold, extra_info and options together ---------------------------------------------

_CODES = ["401.9", "4019", "428.0", "96.04", "9604", "000.0", "E11.9", "V58.61", "250.00", "x", " ", "0BH17EZ"]
_PIECES = st.sampled_from(_CODES + ["<code>", "</code>", "<think>", "</think>", ",", ";", "\n", "\uff14", "\u200b"])
_ANSWERS = st.one_of(st.text(max_size=200), st.lists(_PIECES, max_size=30).map("".join), st.none(), st.integers())
_GOLDS = st.one_of(st.lists(st.sampled_from(_CODES), max_size=8),
                   st.lists(st.sampled_from(_CODES), max_size=8).map(", ".join),
                   st.lists(st.sampled_from(_CODES), max_size=8).map(lambda g: np.array(g, dtype=object)),
                   st.sampled_from([None, float("nan"), 7, b"401.9", np.array("428.0"), ["401.9", None]]))
_EXTRA = st.one_of(st.none(), st.just({}), st.fixed_dictionaries(
    {"index": st.integers(0, 9), "sample_id": st.just("s"), "code_system": st.sampled_from(["icd9", "icd10"]),
     "label_space": st.sampled_from(["mimic3_full", "synthetic_top50"])}))
_OPTIONS = st.fixed_dictionaries({}, optional={
    "beta": st.floats(0.01, 100), "format_weight": st.floats(0, 1), "code_system": st.sampled_from(["icd9", "none"]),
})


@settings(max_examples=300, deadline=None, derandomize=True)
@given(answer=_ANSWERS, gold=_GOLDS, extra=_EXTRA, options=_OPTIONS)
def test_fuzz_never_raises_on_model_output_and_counts_add_up(answer, gold, extra, options):
    try:
        r = compute_score("d", answer, gold, extra, **options)
    except GoldError as exc:  # the gold side may fail, loudly and with the row named; never a TypeError
        assert "Fix:" in str(exc)
        return
    assert tuple(r) == REWARD_KEYS and all(isinstance(v, float) and math.isfinite(v) for v in r.values())
    assert 0.0 <= r["score"] <= 1.0 and r["n_pred"] == r["tp"] + r["fp"] and r["n_gold"] == r["tp"] + r["fn"]
    denom = 2 * r["tp"] + r["fp"] + r["fn"]
    assert r["f1"] == pytest.approx(2 * r["tp"] / denom if denom else 0.0)
    if not isinstance(answer, str) or "</code>" not in answer:
        assert r["tp"] == r["fp"] == 0 and r["format_ok"] == 0.0
