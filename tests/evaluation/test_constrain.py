"""data_tools.evaluation.constrain: the answer grammar, checked token by token through xgrammar's own matcher (the
engine vLLM runs) with a real byte-level BPE tokenizer over real ICD-9 codes — every code of the set is accepted, codes
outside it, prefixes, other separators, empty spans and over-long lists are rejected — and the code sets."""

from __future__ import annotations

import json
import random

import pytest

from data_tools.evaluation import constrain
from llm4icd_plugins.codes import LabelSpace, mimic3_top50_codes

xgr = pytest.importorskip("xgrammar")


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


@pytest.fixture(scope="module")
def compiler(tokenizer):
    return xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer)),
                               cache_enabled=False)


@pytest.fixture(scope="module")
def code_sets(icd9):
    """A 600-code closed set of real ICD-9 codes (Top-50 included) and real codes outside it."""
    rng = random.Random(0)
    everything = sorted(icd9)
    chosen = sorted(set(mimic3_top50_codes()) | set(rng.sample(everything, 550)))
    outside = [c for c in rng.sample(everything, 400) if c not in set(chosen)][:200]
    return chosen, outside


def _accepts(compiler, tokenizer, grammar: str, text: str) -> bool:
    """Feed ``text``'s real token ids, then end-of-sequence: accepted only if the grammar is complete there."""
    matcher = xgr.GrammarMatcher(compiler.compile_grammar(grammar))
    ids = tokenizer.encode(text, add_special_tokens=False)
    return all(matcher.accept_token(i) for i in ids) and matcher.accept_token(tokenizer.eos_token_id) \
        and matcher.is_terminated()


@pytest.mark.parametrize("form", constrain.FORMS)
def test_every_code_of_the_set_is_accepted_and_no_other(compiler, tokenizer, code_sets, form):
    chosen, outside = code_sets
    grammar = constrain.build_grammar(chosen, form=form)
    matcher = xgr.GrammarMatcher(compiler.compile_grammar(grammar))
    for code in chosen:
        matcher.reset()
        for i in tokenizer.encode(f"<code>{code}</code>", add_special_tokens=False):
            assert matcher.accept_token(i), code
        assert matcher.accept_token(tokenizer.eos_token_id) and matcher.is_terminated(), code
    for code in outside:
        assert not _accepts(compiler, tokenizer, grammar, f"<code>{code}</code>"), code
    rng = random.Random(1)
    for _ in range(20):
        answer = "<code>" + ", ".join(rng.sample(chosen, rng.randint(2, 6))) + "</code>"
        assert _accepts(compiler, tokenizer, grammar, answer)
    a, b = chosen[0], chosen[-1]
    rejected = ["<code></code>", f"<code>{a},{b}</code>", f"<code>{a}; {b}</code>", f"<code>{a}, </code>",
                f"<code>{a}", f"{a}", f" <code>{a}</code>", f"<code>{a}</code> done",
                f"<think>x</think><code>{a}</code>",
                f"<code>{a}, {outside[0]}</code>", f"<code>{a}x</code>"]
    for text in rejected:
        assert not _accepts(compiler, tokenizer, grammar, text), text


def test_prefix_codes_are_told_apart(compiler, tokenizer):
    grammar = constrain.build_grammar(["401", "401.9", "40.1"], form="trie")
    assert _accepts(compiler, tokenizer, grammar, "<code>401, 401.9, 40.1</code>")
    for text in ("<code>401.</code>", "<code>40</code>", "<code>401.91</code>", "<code>40.19</code>"):
        assert not _accepts(compiler, tokenizer, grammar, text), text


@pytest.mark.parametrize("form", constrain.FORMS)
def test_cap_and_think_block(compiler, tokenizer, form):
    codes = ["401.9", "428.0", "584.9", "96.04"]
    capped = constrain.build_grammar(codes, max_codes=2, form=form)
    assert _accepts(compiler, tokenizer, capped, "<code>401.9, 428.0</code>")
    assert not _accepts(compiler, tokenizer, capped, "<code>401.9, 428.0, 584.9</code>")
    one = constrain.build_grammar(codes, max_codes=1, form=form)
    assert _accepts(compiler, tokenizer, one, "<code>96.04</code>")
    assert not _accepts(compiler, tokenizer, one, "<code>96.04, 401.9</code>")
    cot = constrain.build_grammar(codes, think=True, form=form)
    assert _accepts(compiler, tokenizer, cot, "<think>Sepsis with renal failure, 2 days.</think>\n<code>584.9</code>")
    assert _accepts(compiler, tokenizer, cot, "<code>584.9</code>")  # thinking is allowed, not required
    assert not _accepts(compiler, tokenizer, cot, "<think>unfinished <code>584.9</code>")
    assert not _accepts(compiler, tokenizer, cot, "<think>a</think>\n<code>999.9</code>")


def test_bad_settings_are_user_errors():
    with pytest.raises(constrain.ConstrainError, match="empty"):
        constrain.build_grammar([])
    with pytest.raises(constrain.ConstrainError, match="at least 1"):
        constrain.build_grammar(["401.9"], max_codes=0)


def test_code_sets_of_a_variant(tmp_path, icd9):
    space = LabelSpace("tiny", "icd9", ["401.9", "428.0", "250.00"])
    space.save(tmp_path / "label_space.json")
    assert constrain.code_set("label-space", tmp_path) == ["401.9", "428.0", "250.00"]
    open_set = constrain.code_set("code-system", tmp_path)
    assert set(open_set) == set(icd9) | {"401.9", "428.0", "250.00"} and len(open_set) == len(set(open_set))
    with pytest.raises(constrain.ConstrainError, match="label_space.json"):
        constrain.code_set("label-space", tmp_path / "nowhere")
    (tmp_path / "label_space.json").write_text(json.dumps({"codes": 3}))
    with pytest.raises(constrain.ConstrainError, match="unreadable"):
        constrain.code_set("label-space", tmp_path)


def test_auto_form_switches_to_the_trie_for_large_sets():
    small = [f"{i:03d}.{j}" for i in range(100) for j in range(10)]  # 1,000 codes
    large = [f"{i:03d}.{j}{k}" for i in range(100) for j in range(10) for k in range(11)]  # 11,000 codes
    assert constrain.build_grammar(small) == constrain.build_grammar(small, form="alternation")
    assert constrain.build_grammar(large) == constrain.build_grammar(large, form="trie")
