"""Tiered middle-out truncation against a real fast tokenizer and Qwen chat templates (tiny, built locally)."""

from __future__ import annotations

import random
import re

import pytest

pytest.importorskip("transformers")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm4icd_plugins.truncation import (NoteFitter, TruncationResult, count_prompt_tokens, count_prompt_tokens_batch,
                                        find_sections, truncate_for_budget)

MARKER = "[...]"
INSTRUCTION = "You are a clinical coder. Read the discharge summary and assign ICD-9 codes.\n\nNote:\n"
FORMAT_LINE = "\n\nAnswer with the codes only, inside <code></code>, separated by commas."
WORDS = ("the patient was admitted with chest pain and shortness of breath treated with aspirin heparin lasix "
         "metoprolol creatinine 1.4 bid echo showed ef 30% bnp 1,240 cxr effusion sat 94% ra").split()
DX_BLOCK = "discharge diagnosis:\nprimary: acute on chronic systolic heart failure\nsecondary: atrial fibrillation\n"
HEADERS = ("chief complaint:", "history of present illness:", "brief hospital course:",
           "medications on admission:", "discharge diagnosis:", "discharge condition:", "followup instructions:")


def messages_fn(note: str) -> list[dict]:
    return [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": INSTRUCTION + note + FORMAT_LINE}]


def prompt_tokens(tok, text: str, fn=messages_fn, **kwargs) -> int:
    return len(tok.apply_chat_template(fn(text), tokenize=True, add_generation_prompt=True, return_dict=False,
                                       **kwargs))


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def make_note(rng: random.Random, hpi: int = 120, course: int = 400, meds: int = 60, follow: int = 40) -> str:
    return (f"chief complaint: dyspnea\nhistory of present illness:\n{words(rng, hpi)}\n"
            f"brief hospital course:\n{words(rng, course)}\n"
            f"medications on admission:\n{words(rng, meds)}\n{DX_BLOCK}"
            f"discharge condition:\nstable, ambulatory\nfollowup instructions:\n{words(rng, follow)}\n")


def section_body(note: str, header: str) -> str:
    after = note.split(header, 1)[1]
    nxt = [after.find(h) for h in HEADERS if h != header and after.find(h) >= 0]
    return after[:min(nxt)] if nxt else after


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


@pytest.fixture(scope="module")
def qwen3_tok(tmp_path_factory, tiny_texts):
    from data_tools.build.tiny_model import train_tokenizer

    return train_tokenizer(tiny_texts, tmp_path_factory.mktemp("qwen3_tok"), arch="qwen3")


@pytest.fixture(scope="module")
def cross_word_tok(tiny_texts):
    """A byte-level BPE without Qwen's pre-tokenizer: tokens span spaces, so cuts change neighbouring tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from data_tools.build.tiny_model import CHAT_TEMPLATES, IM_END, PAD_TOKEN, SPECIAL_TOKENS

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    bpe.decoder = decoders.ByteLevel()
    rng = random.Random(0)
    bpe.train_from_iterator([*tiny_texts, *(make_note(rng) for _ in range(20))], trainers.BpeTrainer(
        vocab_size=3000, special_tokens=list(SPECIAL_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=IM_END, pad_token=PAD_TOKEN,
                                  chat_template=CHAT_TEMPLATES["qwen2"])
    assert any("Ġ" in piece.strip("Ġ") for piece in tok.get_vocab())  # merges across a space
    return tok


@pytest.fixture(scope="module")
def overhead(tok) -> int:
    return prompt_tokens(tok, "")


def test_note_that_fits_is_untouched(tok):
    note = make_note(random.Random(1), course=50)
    full = prompt_tokens(tok, note)
    for budget in (full, full + 100):
        (res,) = truncate_for_budget([note], tok, messages_fn=messages_fn, budget=budget)
        assert res == TruncationResult(note, full, full, False)


@pytest.mark.parametrize("rust_counts", [True, False], ids=["rust-backend", "wrapper"])
def test_counts_are_those_of_the_rendered_prompt(tok, rust_counts, monkeypatch):
    from llm4icd_plugins import truncation

    if not rust_counts:  # the fallback when the Rust backend cannot be used directly
        monkeypatch.setattr(truncation, "_private_backend", lambda tokenizer: None)
    else:
        assert truncation._private_backend(tok) is not None
    rng = random.Random(2)
    notes = [make_note(rng, course=rng.randint(50, 500)) for _ in range(6)]
    results = truncate_for_budget(notes, tok, messages_fn=messages_fn, budget=400)
    for note, res in zip(notes, results):
        assert res.tokens_before == prompt_tokens(tok, note)
        assert res.tokens_after == prompt_tokens(tok, res.text) <= 400
        assert res.truncated == (res.tokens_before > 400) == (res.text != note)


def test_hospital_course_shrinks_first(tok):
    # The course is not in the middle of the note: plain middle-out would cut the history first.
    note = make_note(random.Random(3), hpi=700, course=400, meds=20, follow=20)
    full = prompt_tokens(tok, note)
    without_course = note.replace(section_body(note, "brief hospital course:"), "")
    course_tokens = full - prompt_tokens(tok, without_course)
    budget = full - course_tokens // 2
    (res,) = truncate_for_budget([note], tok, messages_fn=messages_fn, budget=budget)
    assert res.truncated and res.tokens_after <= budget
    assert res.text.count(MARKER) == 1
    for header in HEADERS:
        if header != "brief hospital course:":  # every other section is verbatim
            assert section_body(res.text, header) == section_body(note, header), header
    course_before = section_body(note, "brief hospital course:")
    course_after = section_body(res.text, "brief hospital course:")
    assert MARKER in course_after and len(course_after) < len(course_before)
    head, tail = course_after.split(MARKER)  # middle-out within the course: its head and tail stay
    assert course_before.startswith(head.rstrip()) and course_before.endswith(tail.lstrip())
    assert len(head.split()) > 30 and len(tail.split()) > 30
    assert abs(len(head) - len(tail)) < 0.2 * len(course_before)


def test_headers_and_diagnoses_block_survive_deep_cuts(tok, overhead):
    note = make_note(random.Random(4), hpi=300, course=600, meds=200, follow=200)
    budget = overhead + 150
    (res,) = truncate_for_budget([note], tok, messages_fn=messages_fn, budget=budget)
    assert res.tokens_after <= budget < res.tokens_before
    positions = [res.text.find(h) for h in HEADERS]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), res.text
    assert DX_BLOCK in res.text
    assert MARKER in section_body(res.text, "brief hospital course:")
    assert section_body(res.text, "brief hospital course:").strip() == MARKER  # cut first, so cut entirely
    for header in ("history of present illness:", "medications on admission:"):  # then the other text
        assert MARKER in section_body(res.text, header)
        assert len(section_body(res.text, header)) < len(section_body(note, header))


def test_one_marker_per_gap_at_tiny_budgets(tok, overhead):
    note = make_note(random.Random(4), hpi=300, course=600, meds=200, follow=200)
    for extra in range(0, 100, 5):  # headers themselves go here, leaving only blanks between cuts
        (res,) = truncate_for_budget([note], tok, messages_fn=messages_fn, budget=overhead + extra)
        assert res.tokens_after <= overhead + extra
        assert not re.search(rf"{re.escape(MARKER)}\s*{re.escape(MARKER)}", res.text), res.text


def test_plain_note_keeps_head_and_tail(tok, overhead):
    rng = random.Random(5)
    note = words(rng, 800)
    budget = overhead + 200
    (res,) = truncate_for_budget([note], tok, messages_fn=messages_fn, budget=budget, marker="<cut>")
    assert res.tokens_after <= budget and res.text.count("<cut>") == 1
    head, tail = res.text.split("<cut>")
    assert note.startswith(head.rstrip()) and note.endswith(tail.lstrip())
    assert abs(len(head) - len(tail)) < 0.2 * len(note)  # the middle went, not one end
    assert len(head.split()) > 20 and len(tail.split()) > 20
    # Cuts fall between words: every kept word is a word of the note.
    assert set(head.split()) | set(tail.split()) <= set(WORDS)


def test_cuts_fall_between_words(tok, overhead):
    rng = random.Random(14)
    rare = ["".join(rng.choice("qxzjkvwy") for _ in range(rng.randint(6, 12))) for _ in range(700)]
    assert len(tok.tokenize(" " + rare[0])) > 2  # rare words take several tokens each
    note = "history of present illness:\n" + " ".join(rare[:400]) + "\n\n" + " ".join(rare[400:])
    for extra in (100, 250, 400):
        (res,) = truncate_for_budget([note], tok, messages_fn=messages_fn, budget=overhead + extra)
        kept = res.text.replace("history of present illness:", " ").replace(MARKER, " ").split()
        assert kept and set(kept) <= set(rare)


def test_instruction_and_format_line_are_intact(tok):
    note = make_note(random.Random(6), course=900)
    (res,) = truncate_for_budget([note], tok, messages_fn=messages_fn, budget=300)
    prompt = tok.apply_chat_template(messages_fn(res.text), tokenize=False, add_generation_prompt=True)
    assert INSTRUCTION in prompt and FORMAT_LINE in prompt
    assert prompt.endswith(FORMAT_LINE + "<|im_end|>\n<|im_start|>assistant\n")


def test_per_note_budgets(tok):
    rng = random.Random(7)
    notes = [make_note(rng, course=500) for _ in range(4)]
    budgets = [900, 500, 250, 2000]
    results = truncate_for_budget(notes, tok, messages_fn=messages_fn, budget=budgets)
    for note, res, budget in zip(notes, results, budgets):
        assert res.tokens_after <= budget
        assert res.tokens_after == prompt_tokens(tok, res.text)
    assert [r.truncated for r in results] == [prompt_tokens(tok, n) > b for n, b in zip(notes, budgets)]
    with pytest.raises(ValueError, match="3 entries for 4 notes"):
        truncate_for_budget(notes, tok, messages_fn=messages_fn, budget=budgets[:3])


def test_impossible_budget_is_an_error(tok, overhead):
    notes = ["short note", make_note(random.Random(8))]
    expected = rf"note 1: .*already takes {overhead} tokens, over its budget of {overhead - 1}"
    with pytest.raises(ValueError, match=expected):
        truncate_for_budget(notes, tok, messages_fn=messages_fn, budget=[1000, overhead - 1])
    # Exactly the overhead: the note goes entirely, the instruction stays.
    (res,) = truncate_for_budget(notes[1:], tok, messages_fn=messages_fn, budget=overhead)
    assert res.tokens_after <= overhead and res.truncated


def test_bad_arguments(tok):
    with pytest.raises(ValueError, match="add_generation_prompt"):
        truncate_for_budget(["x"], tok, messages_fn=messages_fn, budget=100,
                            chat_template_kwargs={"add_generation_prompt": False})
    with pytest.raises(ValueError, match="note 1 is NoneType"):
        truncate_for_budget(["x", None], tok, messages_fn=messages_fn, budget=100)
    with pytest.raises(ValueError, match="positive"):
        truncate_for_budget(["x"], tok, messages_fn=messages_fn, budget=0)
    with pytest.raises(ValueError, match="note 0: messages_fn"):
        truncate_for_budget(["a note"], tok, messages_fn=lambda n: messages_fn(n.upper()), budget=100)
    assert truncate_for_budget([], tok, messages_fn=messages_fn, budget=10) == []


def test_qwen3_enable_thinking_is_counted(qwen3_tok):
    note = make_note(random.Random(9), course=700)
    kwargs = {"enable_thinking": False}
    prompt = qwen3_tok.apply_chat_template(messages_fn(""), tokenize=False, add_generation_prompt=True, **kwargs)
    assert prompt.endswith("<think>\n\n</think>\n\n")
    think_tokens = prompt_tokens(qwen3_tok, "", **kwargs) - prompt_tokens(qwen3_tok, "")
    assert think_tokens > 0
    budget = 350
    (res,) = truncate_for_budget([note], qwen3_tok, messages_fn=messages_fn, budget=budget,
                                 chat_template_kwargs=kwargs)
    assert res.tokens_after == prompt_tokens(qwen3_tok, res.text, **kwargs) <= budget
    assert res.tokens_before == prompt_tokens(qwen3_tok, note, **kwargs)
    # Counted without the kwargs, the note would keep more text: the think block's tokens are not free.
    (plain,) = truncate_for_budget([note], qwen3_tok, messages_fn=messages_fn, budget=budget)
    assert len(plain.text) > len(res.text)


TRIMMING_TEMPLATE = (  # like Llama 3's: every content is trimmed, so leading/trailing blanks never count
    "{%- for m in messages -%}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] | trim + '<|im_end|>\\n' -}}"
    "{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}")


def test_trimming_template_and_bare_note_message(tok):
    note = "\n\n  " + make_note(random.Random(10), course=500) + "  \n"
    bare = lambda n: [{"role": "user", "content": n}]  # noqa: E731
    kwargs = {"chat_template": TRIMMING_TEMPLATE}
    (res,) = truncate_for_budget([note], tok, messages_fn=bare, budget=200, chat_template_kwargs=kwargs)
    assert res.tokens_after == prompt_tokens(tok, res.text, bare, **kwargs) <= 200
    assert DX_BLOCK in res.text and MARKER in res.text


def test_prompt_shape_that_varies_per_note(tok):
    rng = random.Random(11)
    notes = [make_note(rng, course=rng.randint(100, 600)) for _ in range(5)]
    hints = {note: f"Hint: code {400 + i}.{i} may apply. " * (i + 1) for i, note in enumerate(notes)}

    def hinted(note):  # the text around the note depends on the note (retrieved hints, few-shot examples)
        hint = hints.get(note, "")
        return [{"role": "user", "content": INSTRUCTION + note + "\n\n" + hint + FORMAT_LINE}]

    # Truncated notes are no longer keys of ``hints``: their prompts render without a hint, which is
    # shorter, so the budget holds for the hinted prompt of the original note too.
    results = truncate_for_budget(notes, tok, messages_fn=hinted, budget=300)
    for note, res in zip(notes, results):
        assert res.tokens_before == prompt_tokens(tok, note, hinted)
        assert res.tokens_after == prompt_tokens(tok, res.text, hinted) <= 300


def test_one_messages_fn_per_note_keeps_each_prompt_around_its_note(tok):
    """Per-note prompts (a candidate list that belongs to one note): each stays whole, only its note is cut."""
    rng = random.Random(21)
    notes = [make_note(rng, course=600)] * 5 + [make_note(rng, course=20, hpi=10, meds=5, follow=5)]
    blocks = [f"Suggested: code {400 + i}.{i} " * (2 * i + 1) for i in range(5)] + ["Suggested: none "]

    def fn_for(block):
        return lambda note: [{"role": "user", "content": INSTRUCTION + block + "\n" + note + FORMAT_LINE}]

    fns = [fn_for(b) for b in blocks]
    results = truncate_for_budget(notes, tok, messages_fn=fns, budget=300)
    for note, fn, block, res in zip(notes, fns, blocks, results):
        assert res.tokens_before == prompt_tokens(tok, note, fn)
        assert res.tokens_after == prompt_tokens(tok, res.text, fn) <= 300
        assert res.truncated == (res.tokens_before > 300)
    # The same note with a longer block keeps less of itself: the block's tokens are paid for by the note.
    kept = [len(r.text) for r in results[:5]]
    assert all(r.truncated for r in results[:5]) and not results[5].truncated
    assert kept == sorted(kept, reverse=True) and kept[0] > kept[-1]
    with pytest.raises(ValueError, match="one per note"):
        truncate_for_budget(notes, tok, messages_fn=fns[:2], budget=300)


@pytest.mark.parametrize("rust_counts", [True, False], ids=["rust-backend", "wrapper"])
def test_count_prompt_tokens_is_the_trainers_count(tok, qwen3_tok, rust_counts, monkeypatch):
    from llm4icd_plugins import truncation

    if not rust_counts:
        monkeypatch.setattr(truncation, "_private_backend", lambda tokenizer: None)
        monkeypatch.setattr(truncation, "_BACKENDS", truncation.weakref.WeakKeyDictionary())
    rng = random.Random(22)
    conversations = [messages_fn(make_note(rng, course=rng.randint(0, 300))) for _ in range(3)]
    conversations.append([{"role": "user", "content": ""}])
    for tokenizer, kwargs in ((tok, {}), (qwen3_tok, {"enable_thinking": False}), (qwen3_tok, {})):
        expected = [len(tokenizer.apply_chat_template(m, tokenize=True, add_generation_prompt=True,
                                                      return_dict=False, **kwargs)) for m in conversations]
        assert [count_prompt_tokens(tokenizer, m, **kwargs) for m in conversations] == expected
        assert count_prompt_tokens_batch(tokenizer, conversations, **kwargs) == expected
        assert NoteFitter(tokenizer, chat_template_kwargs=kwargs).count(conversations[0]) == expected[0]
    assert count_prompt_tokens_batch(tok, []) == []
    with pytest.raises(ValueError, match="must not set"):
        count_prompt_tokens(tok, conversations[0], add_generation_prompt=False)


def test_parallel_matches_serial(tok):
    rng = random.Random(12)
    notes = [make_note(rng, hpi=rng.randint(5, 80), course=rng.randint(10, 300), meds=10, follow=10)
             for _ in range(300)]  # several chunks
    serial = truncate_for_budget(notes, tok, messages_fn=messages_fn, budget=250)
    parallel = truncate_for_budget(notes, tok, messages_fn=messages_fn, budget=250, num_workers=2)
    assert parallel == serial
    assert 0 < sum(r.truncated for r in serial) < len(notes)


def test_final_render_shaves_what_the_estimate_missed(tok, overhead, monkeypatch):
    """If the token-space estimate is too low, the re-render catches it and the note is cut further."""
    from llm4icd_plugins import truncation

    cuts = []
    real_init, real_cut = truncation._Truncator.__init__, truncation._Truncator._cut

    def optimistic_init(self, *args):
        real_init(self, *args)
        self.marker_cost = 0  # markers assumed free: every estimate with a cut is too low

    def counting_cut(self, plan):
        cuts.append(plan.index)
        return real_cut(self, plan)

    monkeypatch.setattr(truncation._Truncator, "__init__", optimistic_init)
    monkeypatch.setattr(truncation._Truncator, "_cut", counting_cut)
    rng = random.Random(13)
    notes = [make_note(rng, course=400) for _ in range(3)]
    results = truncate_for_budget(notes, tok, messages_fn=messages_fn, budget=overhead + 120)
    assert all(r.tokens_after == prompt_tokens(tok, r.text) <= overhead + 120 for r in results)
    assert len(cuts) > len(notes)  # at least one note needed a second round


def test_find_sections():
    note = ("chief complaint: cough\nbrief hospital course:\n# chf: diuresed\ncardiovascular: stable\n"
            "detailed hospital course by day:\nhd 1: ok\n"
            "transitional issues: none\nmedications on admission:\nasa\n" + DX_BLOCK +
            "discharge condition:\nstable\nthe patient was told: rest")
    sections = find_sections(note)
    labels = [note[s:e] for s, e in sections.headers]
    assert labels == ["chief complaint:", "brief hospital course:", "cardiovascular:",
                      "detailed hospital course by day:", "transitional issues:",
                      "medications on admission:", "discharge diagnosis:", "primary:", "secondary:",
                      "discharge condition:", "the patient was told:"]
    (course,) = sections.hospital_course
    assert note[course[0]:course[1]] == ("\n# chf: diuresed\ncardiovascular: stable\ndetailed hospital course by day:"
                                         "\nhd 1: ok\ntransitional issues: none\n")
    (dx,) = sections.diagnoses
    assert note[dx[0]:dx[1]] == DX_BLOCK
    long_line = "this line is far too long to be a section header of a note:"
    assert find_sections(long_line).headers == ()


NOTE_PARTS = st.sampled_from(
    [*(h + "\n" for h in HEADERS), DX_BLOCK, "\n", "\n\n", " ", "°", "é ", "naïve ", "ß", "→", "100% ", "___ ",
     "[**2150-1-1**] ", "4019 ", "e.g. ", "\t"])


@st.composite
def notes(draw):
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    parts = draw(st.lists(st.one_of(NOTE_PARTS, st.integers(1, 120).map(lambda n: words(rng, n) + " "),
                                    st.text(max_size=30)), max_size=25))
    return "".join(parts)


@pytest.mark.parametrize("tokenizer", ["tok", "cross_word_tok"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(notes(), min_size=1, max_size=4), slack=st.lists(st.integers(0, 600), min_size=4, max_size=4))
def test_every_result_fits_its_budget(request, tokenizer, batch, slack):
    tok = request.getfixturevalue(tokenizer)
    overhead = prompt_tokens(tok, "")
    budgets = [overhead + s for s in slack[:len(batch)]]
    results = truncate_for_budget(batch, tok, messages_fn=messages_fn, budget=budgets)
    for note, res, budget in zip(batch, results, budgets):
        before = prompt_tokens(tok, note)
        assert res.tokens_before == before
        assert res.tokens_after == prompt_tokens(tok, res.text) <= budget
        if before <= budget:
            assert res.text == note and not res.truncated
        else:
            assert res.truncated and res.tokens_after < before
            if budget - overhead > 20:
                assert MARKER in res.text
            assert not re.search(rf"{re.escape(MARKER)}\s*{re.escape(MARKER)}", res.text)  # one marker per gap
        # What survives is the note's own text in order, apart from markers and the blanks around them.
        pieces = [p.strip() for p in re.split(re.escape(MARKER), res.text) if p.strip()]
        cursor = 0
        for piece in pieces:
            found = note.find(piece, cursor)
            assert found >= 0, (piece, note)
            cursor = found + len(piece)
