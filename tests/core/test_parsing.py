"""The answer parser: documented rules on examples, hypothesis properties, adversarial inputs in linear time."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm4icd_plugins.parsing import MAX_TOKENS, ParseResult, parse_codes, parse_response, predicted_codes


def _invariant_holds(r: ParseResult) -> bool:
    return r.n_tokens == len(r.codes) + r.n_unknown + r.n_off_label + r.n_duplicates + r.n_malformed


# --- span and think rules -------------------------------------------------------------------------

def test_basic_span_splits_on_commas_semicolons_newlines():
    r = parse_response("<code>401.9, 428.0; E11.9\nI10</code>")
    assert r.codes == ("401.9", "428.0", "E11.9", "I10")
    assert (r.has_span, r.format_ok, r.n_tokens, r.n_malformed) == (True, True, 4, 0)


def test_only_the_last_span_after_the_last_think_is_read():
    text = "<think>maybe <code>250.00</code></think> draft <code>111.1</code> final <code>401.9</code>"
    r = parse_response(text)
    assert r.codes == ("401.9",)
    assert r.has_span and not r.format_ok  # two spans in the answer


def test_the_answer_starts_after_the_last_think_close_not_the_first():
    # A span between two </think> tags is still thinking: the answer (after the last one) has no span.
    r = parse_response("<think>a</think><code>401.9</code> on second thought </think>")
    assert not r.has_span and r.codes == ()
    r = parse_response("<think>a</think> <code>250.00</code> wait </think> <code>401.9</code>")
    assert r.codes == ("401.9",) and not r.format_ok


def test_a_stray_close_tag_inside_the_span_separates_codes():
    # The last </code> closes the span; an earlier one inside it must not swallow the code before it.
    r = parse_response("<code>401.9</code>, 584.9</code>")
    assert r.codes == ("401.9", "584.9") and r.n_malformed == 0
    assert r.has_span and not r.format_ok
    assert parse_response("<code>401.9</code>584.9</code>").codes == ("401.9", "584.9")


def test_code_span_inside_think_is_ignored():
    r = parse_response("<think>I think <code>401.9</code></think>no answer")
    assert not r.has_span and r.codes == ()


def test_unclosed_think_swallows_the_rest():
    r = parse_response("<code>401.9</code><think>still thinking <code>428.0</code>")
    assert r.codes == ("401.9",) and not r.format_ok
    assert not parse_response("<think>still thinking <code>428.0</code>").has_span


def test_think_opener_in_the_prompt_is_fine():
    r = parse_response("reasoning only</think>\n<code>401.9</code>")
    assert r.codes == ("401.9",) and r.format_ok


def test_nested_open_tags_read_from_the_innermost():
    r = parse_response("<code><code>401.9</code>")
    assert r.codes == ("401.9",) and not r.format_ok


@pytest.mark.parametrize("text", [
    "401.9, 428.0", "<code>401.9", "401.9</code>", "</code>401.9<code>", "<CODE>401.9</CODE>",
    "< code>401.9</code>", "<co\u200bde>401.9</code>", "\uff1ccode\uff1e401.9\uff1c/code\uff1e", "",
])
def test_no_closed_lower_case_span_means_no_codes(text):
    r = parse_response(text)
    assert r == ParseResult() and not r.has_span and not r.format_ok


@pytest.mark.parametrize("value", [None, 42, 3.5, b"<code>401.9</code>", ["<code>401.9</code>"], {"a": 1}])
def test_non_string_input_gives_an_empty_result(value):
    assert parse_response(value) == ParseResult()


def test_empty_span_is_well_formed_and_empty():
    r = parse_response("<code></code>")
    assert r.has_span and r.format_ok and r.codes == () and r.n_tokens == 0


# --- tokens -----------------------------------------------------------------------------------------

def test_blank_tokens_are_skipped_not_malformed():
    r = parse_response("<code>401.9,, ;\n 428.0,\n</code>")
    assert r.codes == ("401.9", "428.0") and r.n_malformed == 0 and r.n_tokens == 2


def test_malformed_tokens_are_counted_and_not_kept():
    r = parse_response("<code>401.9, hypertension, 401.9 - Hypertension, 401.9 428.0, ???</code>")
    assert r.codes == ("401.9",)
    assert r.n_malformed == 4 and r.n_tokens == 5 and _invariant_holds(r)


def test_unicode_look_alikes():
    # Full-width digits fold to ASCII; Cyrillic O and a zero-width space make a token malformed.
    r = parse_response("<code>\uff14\uff10\uff11.\uff19, 4\u041e1.9, 40\u200b1.9, E11.9\u200b</code>")
    assert r.codes == ("401.9",) and r.n_malformed == 3


def test_duplicates_removed_first_seen_order():
    r = parse_response("<code>i10, E11.9, I10, e11.9, 401.9</code>")
    assert r.codes == ("I10", "E11.9", "401.9") and r.n_duplicates == 2 and _invariant_holds(r)


def test_token_cap_sets_truncated():
    codes = [f"{100 + i % 900}.{i % 10}" for i in range(MAX_TOKENS + 50)]
    r = parse_response("<code>" + ",".join(codes) + "</code>")
    assert r.truncated and r.n_tokens == MAX_TOKENS
    assert not parse_response("<code>" + ",".join(codes[:100]) + "</code>").truncated


# --- label space and code system -----------------------------------------------------------------

@pytest.mark.parametrize("make", [set, frozenset, list, tuple, dict.fromkeys])
def test_label_space_separates_off_label_codes(make):
    r = parse_response("<code>401.9, 428.0, I10, 428.0</code>", label_space=make(["401.9", "I10"]))
    assert r.codes == ("401.9", "I10") and r.off_label == ("428.0",)
    assert r.n_off_label == 1 and r.n_duplicates == 1 and _invariant_holds(r)


def test_label_space_object(tmp_path):
    from llm4icd_plugins.codes import LabelSpace

    space = LabelSpace("top2", "icd9", ["401.9", "428.0"])
    r = parse_response("<code>428.0, 250.00</code>", label_space=space)
    assert r.codes == ("428.0",) and r.off_label == ("250.00",)


def test_label_space_as_a_string_is_a_programming_error():
    with pytest.raises(TypeError):
        parse_response("<code>401.9</code>", label_space="401.9")


def test_code_system_resolves_undotted_and_flags_unknown(icd9):
    # 9604 is ambiguous in ICD-9 (diagnosis 960.4 or procedure 96.04): the dotted forms decide.
    assert icd9.resolve("9604") is None and icd9.resolve("25000") == "250.00"
    r = parse_response("<code>25000, 250.00, 000.0, 9604, 96.04, 960.4, 000.0</code>", code_system=icd9)
    assert r.codes == ("250.00", "96.04", "960.4") and r.n_duplicates == 2
    assert r.unknown == ("000.0", "9604") and r.n_unknown == 2
    assert _invariant_holds(r)


def test_code_system_icd10(icd10):
    r = parse_response("<code>e119, I10, Z99.99X, 0BH17EZ</code>", code_system=icd10)
    assert r.codes == ("E11.9", "I10", "0BH17EZ") and r.unknown == ("Z99.99X",)


def test_label_space_makes_a_code_valid_even_if_tables_do_not_know_it(icd9):
    # MIMIC-III keeps retired codes as gold labels: a code in the label space is always valid.
    assert icd9.resolve("000.0") is None
    r = parse_response("<code>000.0, 401.9</code>", code_system=icd9, label_space={"000.0", "401.9"})
    assert r.codes == ("000.0", "401.9") and r.unknown == ()


def test_repeated_parses_follow_each_calls_code_system_and_label_space(icd9):
    # The parser memoises token verdicts per (code system, label space); every expectation is by hand.
    from llm4icd_plugins.codes import LabelSpace

    text = "<code>25000, 401.9, 250.00, 000.0</code>"
    mutable = {"401.9"}
    space = LabelSpace("one", "icd9", ["250.00"])
    cases = [  # (code system, label space) -> (codes, unknown, off_label, n_duplicates)
        ((None, None), (("25000", "401.9", "250.00", "000.0"), (), (), 0)),
        ((icd9, None), (("250.00", "401.9"), ("000.0",), (), 1)),  # 25000 resolves to 250.00: a duplicate
        ((icd9, frozenset({"401.9"})), (("401.9",), ("000.0",), ("250.00",), 1)),
        ((None, mutable), (("401.9",), (), ("25000", "250.00", "000.0"), 0)),
        ((icd9, space), (("250.00",), ("000.0",), ("401.9",), 1)),
    ]
    for _ in range(2):
        for (system, labels), expected in cases + cases[::-1]:
            r = parse_response(text, code_system=system, label_space=labels)
            assert (r.codes, r.unknown, r.off_label, r.n_duplicates) == expected, (system, labels)
    mutable.add("250.00")  # the same set object, changed in place: its verdicts change with it
    r = parse_response(text, label_space=mutable)
    assert (r.codes, r.off_label) == (("401.9", "250.00"), ("25000", "000.0"))


def test_predicted_codes_rescues_only_this_rows_gold_inside_the_label_space(icd9):
    # 000.0 and 000.1 are code-shaped but unknown to the tables (think MIMIC-III's retired codes).
    assert icd9.resolve("000.0") is None and icd9.resolve("000.1") is None
    text = "<code>4280, 000.0, 000.1, 401.9</code>"
    pred = predicted_codes(text, {"428.0", "000.0"}, icd9)
    assert pred.codes == ("428.0", "401.9", "000.0") and pred.n_rescued == 1  # 000.1 is not gold here
    assert pred.parsed.unknown == ("000.0", "000.1")
    # With a label space, an unknown gold code outside it is not rescued, and off-label codes are dropped.
    space = frozenset({"428.0", "000.1"})
    pred = predicted_codes(text, {"428.0", "000.0", "401.9"}, icd9, space)
    assert pred.codes == ("428.0", "000.1") and pred.n_rescued == 0 and pred.parsed.off_label == ("401.9",)
    # The same rule for a list of predictions.
    assert predicted_codes(["4280", "000.0"], {"000.0"}, icd9).codes == ("428.0", "000.0")


def test_parse_codes_for_json_lists():
    r = parse_codes(["401.9", " ", None, 7, "4019", "401.9"])
    assert r.codes == ("401.9", "4019") and r.n_malformed == 2 and r.n_duplicates == 1 and r.n_tokens == 5


# --- properties ------------------------------------------------------------------------------------

_PIECES = st.sampled_from([
    "<code>", "</code>", "<think>", "</think>", "<cod", "e>", ",", ";", "\n", " ", "401.9", "4019", "E11.9",
    "V58.61", "0BH17EZ", "\uff14", "\u041e", "\u200b", "<", ">", "/", ".", "x",
])
_TEXTS = st.one_of(st.text(), st.lists(_PIECES, max_size=40).map("".join))


@settings(max_examples=400, deadline=None)
@given(_TEXTS)
def test_never_raises_deterministic_and_consistent(text):
    r = parse_response(text)
    assert _invariant_holds(r)
    assert len(set(r.codes)) == len(r.codes)
    assert r.has_span or r == ParseResult()
    assert not r.format_ok or r.has_span


def _oracle_codes(text: str) -> tuple[str, ...]:
    """The documented rules 1-3 and 5, written independently with partition and a regex."""
    import re

    from llm4icd_plugins.normalize import canonicalize

    answer = text.rpartition("</think>")[2] if "</think>" in text else text
    answer = answer.partition("<think>")[0]
    head, found, _ = answer.rpartition("</code>")
    if not found or "<code>" not in head:
        return ()
    content = head.rpartition("<code>")[2].replace("</code>", ",")
    pieces = re.split(r"[,;\n]", content)[:MAX_TOKENS]
    return tuple(dict.fromkeys(c for c in map(canonicalize, pieces) if c))


@settings(max_examples=400, deadline=None, derandomize=True)
@given(_TEXTS)
def test_agrees_with_an_independent_oracle(text):
    assert parse_response(text).codes == _oracle_codes(text)


@settings(max_examples=300, deadline=None)
@given(_TEXTS)
def test_reserialised_output_parses_back_to_the_same_codes(text):
    r = parse_response(text)
    again = parse_response("<code>" + ", ".join(r.codes) + "</code>")
    assert again.codes == r.codes and again.format_ok and again.n_malformed == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["4019", "401.9", "9604", "96.04", "25000", "250.00", "V5861", "E8859", "000.0", "x"]),
                max_size=12))
def test_reserialised_output_is_stable_with_a_code_system(tokens):
    from llm4icd_plugins.codes import load_code_system

    icd9 = load_code_system("icd9")
    r = parse_response("<code>" + ", ".join(tokens) + "</code>", code_system=icd9)
    assert parse_response("<code>" + ", ".join(r.codes) + "</code>", code_system=icd9).codes == r.codes
    assert all(code in icd9 for code in r.codes)


# --- adversarial inputs: linear time -------------------------------------------------------------

def _best_time(text: str, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        parse_response(text)
        best = min(best, time.perf_counter() - start)
    return best


_ADVERSARIAL = {
    "unclosed open tags": lambda n: "<code>" * n,
    "open tags then one close": lambda n: "<code>" * n + "</code>",
    "close tags only": lambda n: "</code>" * n,
    "nested think": lambda n: "<think>" * n + "</think>" * n + "<code>401.9</code>",
    "near-miss tags": lambda n: "<cod</cod<code" * n + "</code>",
    "one huge token": lambda n: "<code>" + "4" * (7 * n) + "</code>",
    "many tokens": lambda n: "<code>" + "401.9," * n + "</code>",
    "separators only": lambda n: "<code>" + ",;\n" * n + "</code>",
    "look-alikes": lambda n: "<code>" + "\uff14\u041e\u200b1.9, " * n + "</code>",
}


@pytest.mark.parametrize("name", sorted(_ADVERSARIAL))
def test_adversarial_input_takes_linear_time(name):
    build = _ADVERSARIAL[name]
    small, large = build(20_000), build(200_000)  # the large ones are about a megabyte or more
    parse_response(large)  # never raises
    ratio = _best_time(large) / max(_best_time(small), 1e-5)
    assert ratio < 40, f"{name}: 10x input took {ratio:.0f}x the time (quadratic would be ~100x)"


def test_hundred_thousand_unclosed_tags_and_a_megabyte_answer():
    assert parse_response("<code>" * 100_000) == ParseResult()
    r = parse_response("x" * 1_000_000 + "<code>401.9</code>")
    assert r.codes == ("401.9",) and r.format_ok
