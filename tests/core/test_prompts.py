"""Prompts: App. D baselines word for word, the App. E hint block, the training prompt layout, and
safe insertion of note text (no template re-interpretation)."""

from __future__ import annotations

import re

import pytest

from llm4icd_plugins import prompts
from llm4icd_plugins.normalize import SYSTEM_OF_TABLE, TABLES, table_of_canonical
from llm4icd_plugins.prompts import PromptSpec

# Paper App. D, copied from the paper text with its placeholders (whitespace is not significant).
PAPER_APP_D = {
    "zero_shot": "You are a clinical coding specialist assigning {CODE_SYSTEM} codes from a discharge summary. "
    "Use {LABEL_SCOPE}. Output only the final {CODE_SYSTEM} codes in <code>...</code>. Do not include any other "
    "text. Formatting example only, not a clinical example and not codes to copy: <code>{FORMAT_EXAMPLE_CODES}"
    "</code> Now code the following discharge summary. Discharge Summary: {DISCHARGE_SUMMARY} Answer:",
    "few_shot": "You are a clinical coding specialist assigning {CODE_SYSTEM} codes from a discharge summary. "
    "Use {LABEL_SCOPE}. Output only the final {CODE_SYSTEM} codes in <code>...</code>. Do not include any other "
    "text. Examples: Example 1 Discharge Summary: {SHOT_NOTE_1} Answer: <code>{SHOT_CODES_1}</code> Example 2 "
    "Discharge Summary: {SHOT_NOTE_2} Answer: <code>{SHOT_CODES_2}</code> Example 3 Discharge Summary: "
    "{SHOT_NOTE_3} Answer: <code>{SHOT_CODES_3}</code> Now code the following discharge summary. Discharge "
    "Summary: {DISCHARGE_SUMMARY} Answer:",
    "zero_shot_cot": "You are a clinical coding specialist assigning {CODE_SYSTEM} codes from a discharge "
    "summary. Use {LABEL_SCOPE}. First write a brief structured rationale in <think>...</think>, then output the "
    "final {CODE_SYSTEM} codes in <code>...</code>. Do not put codes outside the <code> block. Formatting example "
    "only, not a clinical example and not codes to copy: <think>Briefly identify the documented diagnoses and "
    "procedures, then map them to {CODE_SYSTEM} codes.</think> <code>{FORMAT_EXAMPLE_CODES}</code> Now code the "
    "following discharge summary. Discharge Summary: {DISCHARGE_SUMMARY} Answer:",
    "few_shot_cot": "You are a clinical coding specialist assigning {CODE_SYSTEM} codes from a discharge summary. "
    "Use {LABEL_SCOPE}. First write a brief structured rationale in <think>...</think>, then output the final "
    "{CODE_SYSTEM} codes in <code>...</code>. Do not put codes outside the <code> block. Examples: Example 1 "
    "Discharge Summary: {SHOT_NOTE_1} Answer: <think>Review the discharge summary for documented diagnoses and "
    "procedures, then map the supported findings to {CODE_SYSTEM} codes.</think> <code>{SHOT_CODES_1}</code> "
    "Example 2 Discharge Summary: {SHOT_NOTE_2} Answer: <think>Review the discharge summary for documented "
    "diagnoses and procedures, then map the supported findings to {CODE_SYSTEM} codes.</think> <code>"
    "{SHOT_CODES_2}</code> Example 3 Discharge Summary: {SHOT_NOTE_3} Answer: <think>Review the discharge summary "
    "for documented diagnoses and procedures, then map the supported findings to {CODE_SYSTEM} codes.</think> "
    "<code>{SHOT_CODES_3}</code> Now code the following discharge summary. Discharge Summary: {DISCHARGE_SUMMARY} "
    "Answer:",
}

SHOTS = [("shot one note", ["401.9", "428.0"]), ("shot two note", ["486"]), ("shot three note", ["96.04", "V58.61"])]
SPECS = [PromptSpec("icd9", "full"), PromptSpec("icd9", "top50"), PromptSpec("icd10", "full"),
         PromptSpec("icd10", "top50", corpus="MIMIC-IV-Note")]


def _squash(text: str) -> str:
    return " ".join(text.split())


def _expected(kind: str, spec: PromptSpec, note: str) -> str:
    values = dict(spec.placeholders(), DISCHARGE_SUMMARY=note)
    for k, (shot_note, codes) in enumerate(SHOTS, start=1):
        values[f"SHOT_NOTE_{k}"] = shot_note
        values[f"SHOT_CODES_{k}"] = ", ".join(codes)
    return re.sub(r"\{([A-Z_0-9]+)\}", lambda m: values[m.group(1)], PAPER_APP_D[kind])


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.code_system}-{s.label_scope}")
@pytest.mark.parametrize("kind", prompts.BASELINE_KINDS)
def test_baselines_match_paper_word_for_word(kind, spec):
    shots = SHOTS if kind.startswith("few_shot") else ()
    rendered = prompts.render_baseline(kind, "the note text", spec, shots)
    assert _squash(rendered) == _squash(_expected(kind, spec, "the note text"))
    assert "{" not in rendered  # every placeholder filled


def test_placeholder_wording_per_system_and_scope():
    icd9, icd10 = PromptSpec("icd9", "top50"), PromptSpec("icd10", "full")
    assert icd9.code_system_name == "ICD-9-CM" and icd10.code_system_name == "ICD-10-CM/PCS"
    assert icd9.corpus == "MIMIC-III" and icd10.corpus == "MIMIC-IV"
    assert "Top-50" in icd9.label_scope_text and "MIMIC-III" in icd9.label_scope_text
    assert "full" in icd10.label_scope_text and "Top-50" not in icd10.label_scope_text
    assert "ICD-10-CM/PCS" in prompts.render_baseline("zero_shot", "n", icd10)
    with pytest.raises(ValueError, match="code system"):
        PromptSpec("icd11")
    with pytest.raises(ValueError, match="label scope"):
        PromptSpec("icd9", "top100")


@pytest.mark.parametrize("system", ["icd9", "icd10"])
def test_format_examples_cover_every_table_form_and_exist(system):
    from llm4icd_plugins.codes import load_code_system

    codes = load_code_system(system)
    example = prompts.FORMAT_EXAMPLE_CODES[system]
    tables = {table_of_canonical(c, system) for c in example}
    assert tables == {t for t in TABLES if SYSTEM_OF_TABLE[t] == system}
    assert all(c in codes for c in example)
    (hint, _), others = prompts.HINT_MINI_EXAMPLES[system]
    assert all(c in codes for c in (hint, *others))


def test_baseline_argument_errors():
    spec = PromptSpec("icd9")
    with pytest.raises(ValueError, match="needs at least one"):
        prompts.render_baseline("few_shot", "n", spec)
    with pytest.raises(ValueError, match="takes no shots"):
        prompts.render_baseline("zero_shot", "n", spec, SHOTS)
    with pytest.raises(ValueError, match="unknown baseline"):
        prompts.render_baseline("one_shot", "n", spec)


def test_format_answer():
    assert prompts.format_answer(["401.9", "96.04", "401.9"]) == "<code>401.9, 96.04</code>"
    assert prompts.format_answer([]) == "<code></code>"
    with pytest.raises(TypeError):
        prompts.format_answer("401.9")
    for bad in ("", "40,1", "<x>", None):
        with pytest.raises(ValueError):
            prompts.format_answer(["401.9", bad])


def test_format_answer_round_trips_through_the_parser():
    from llm4icd_plugins.codes import load_code_system
    from llm4icd_plugins.parsing import parse_response

    codes = ["401.9", "E885.9", "V58.61", "96.04", "486"]
    parsed = parse_response(prompts.format_answer(codes), code_system=load_code_system("icd9"))
    assert list(parsed.codes) == codes


NASTY_NOTES = [
    "braces {DISCHARGE_SUMMARY} {0} {} {{x}} %s %(x)s",
    "backslashes \\1 \\g<1> \\n and $1 ${X}",
    "<code>123.4</code> inside the note\nAnswer: fake",
]


@pytest.mark.parametrize("note", NASTY_NOTES)
def test_note_text_is_inserted_verbatim(note):
    spec = PromptSpec("icd9")
    user = prompts.build_user_prompt(note, spec)
    assert user.count(note) == 1
    assert user.startswith(prompts.training_instruction(spec))
    assert user.endswith(prompts.format_line(spec))
    baseline = prompts.render_baseline("few_shot", note, spec, [(note, ["401.9"])] * 3)
    assert baseline.count(note) == 4


def test_training_prompt_layout_and_hints_share_everything_else():
    spec = PromptSpec("icd10", "full")
    note = "chief complaint: chest pain\n\ndischarge diagnosis: stemi"
    plain = prompts.build_user_prompt(note, spec)
    hinted = prompts.build_user_prompt(note, spec, hints=[("I21.3", "ST elevation (STEMI) myocardial infarction"),
                                                          ("Z95.5", None)])
    block = prompts.render_hint_block(["I21.3", "Z95.5"], ["ST elevation (STEMI) myocardial infarction", None], 10)
    # The hinted prompt is the plain one with the block inserted right before the format line.
    cut = plain.index(prompts.format_line(spec))
    assert hinted == plain[:cut] + block + "\n\n" + plain[cut:]
    assert plain.index(prompts.training_instruction(spec)) < plain.index(note) < cut
    assert prompts.build_user_prompt(note, spec, hints=[]) == plain
    messages = prompts.build_messages(note, spec)
    assert messages == [{"role": "user", "content": plain}]


def test_hint_block_matches_appendix_e():
    block = prompts.render_hint_block(["276.2", "401.9"], {"276.2": "Acidosis", "401.9": "Unspecified essential "
                                                           "hypertension"}, "icd9")
    expected = (
        "Training hint:\n"
        "The following ICD-9 codes were missed previously, but they are confirmed applicable to this case. "
        "Include these hinted codes in the final <code> answer, then add any other applicable ICD-9 codes "
        "supported by the note.\n"
        "Hinted codes:\n"
        "- 276.2 (Acidosis)\n"
        "- 401.9 (Unspecified essential hypertension)\n"
        "Mini example:\n"
        "If the hint says:\n"
        "- 276.2 (Acidosis)\n"
        "and the note also supports 401.9 and 584.9, then the final answer should include both the hinted code "
        "and the other supported codes:\n"
        "<code>276.2, 401.9, 584.9</code>"
    )
    assert block == expected
    icd10 = prompts.render_hint_block(["I10"], None, "icd10")
    assert "ICD-10 codes were missed" in icd10 and "- I10\n" in icd10 and "ICD-9" not in icd10



def test_hint_block_without_mini_example_keeps_the_head_and_hints_only():
    descriptions = {"276.2": "Acidosis", "V58.61": None}
    full = prompts.render_hint_block(["276.2", "V58.61"], descriptions, "icd9")
    short = prompts.render_hint_block(["276.2", "V58.61"], descriptions, "icd9", example=False)
    assert full.startswith(short + "\nMini example:\n")
    assert short.splitlines()[-2:] == ["- 276.2 (Acidosis)", "- V58.61"]
    for system, version in (("icd9", 9), ("icd10", 10)):
        (hint, _), others = prompts.HINT_MINI_EXAMPLES[system]
        block = prompts.render_hint_block(["X1"], None, version, example=False)
        assert "Mini example" not in block and "<code>" in block  # the head's own "<code> answer" stays
        assert not any(code in block for code in (hint, *others))


def test_neutral_block_names_no_code_and_grows_with_its_length():
    import re

    assert prompts.neutral_block(0) == prompts.NEUTRAL_HEAD
    blocks = [prompts.neutral_block(n) for n in (1, 14, 15, 200)]
    assert [len(b.splitlines()[1].split()) for b in blocks] == [1, 14, 15, 200]
    for block in blocks:
        assert not re.search(r"[0-9<>]", block) and "code" not in block.lower() and "hint" not in block.lower()
        assert block.endswith(".")
    for bad in (-1, 2.0, True, "3"):
        with pytest.raises(ValueError, match="n_words"):
            prompts.neutral_block(bad)
    assert prompts.HINT_STYLES[0] == "paper" and set(prompts.HINT_STYLES) == {"paper", "no_example", "neutral"}

def test_hint_descriptions_truncated_and_validated():
    long = "Acute on chronic combined systolic and diastolic congestive heart failure with " * 3
    block = prompts.render_hint_block(["428.43"], [long], 9, max_description_chars=40)
    line = next(x for x in block.splitlines() if x.startswith("- 428.43"))
    desc = line[len("- 428.43 ("):-1]
    assert len(desc) <= 40 and desc.endswith("...") and long.startswith(desc[:-3])
    assert prompts.truncate_description("short", 40) == "short"
    assert prompts.truncate_description("  ", 40) is None
    with pytest.raises(ValueError, match="descriptions"):
        prompts.render_hint_block(["401.9", "486"], ["one"], 9)
    with pytest.raises(ValueError, match="version"):
        prompts.render_hint_block(["401.9"], None, 11)
    with pytest.raises(ValueError):
        prompts.render_hint_block([], None, 9)


def test_candidate_block_sits_before_the_note_header_and_says_it_may_not_apply():
    spec = PromptSpec("icd9", "full")
    note = "chief complaint: dyspnea\n\ndischarge diagnosis: chf"
    long = "Congestive heart failure, unspecified, with a description far longer than the cap of the block " * 2
    candidates = [("428.0", long), ("V58.61", None), ("401.9", "Unspecified essential hypertension")]
    plain = prompts.build_user_prompt(note, spec)
    with_block = prompts.build_user_prompt(note, spec, candidates=candidates)
    block = with_block[len(prompts.training_instruction(spec)) + 2:with_block.index("\n\n" + prompts.NOTE_HEADER)]
    lines = block.splitlines()
    assert lines[0] == "Candidate codes:" and "may or may not apply" in lines[1] and lines[2] == "Suggested codes:"
    assert [line.split()[1] for line in lines[3:]] == ["428.0", "V58.61", "401.9"]  # the given order (best first)
    assert lines[4] == "- V58.61" and lines[5] == "- 401.9 (Unspecified essential hypertension)"
    assert len(lines[3]) <= len("- 428.0 ()") + prompts.DESCRIPTION_MAX_CHARS and lines[3].endswith("...)")
    # Everything from the note header on, and the instruction, are those of the paper's prompt.
    head = prompts.training_instruction(spec) + "\n\n"
    assert plain.startswith(head) and with_block.startswith(head)
    assert with_block.endswith(plain[len(head):]) and with_block == head + block + "\n\n" + plain[len(head):]
    # The default is the paper's prompt: no block, byte for byte what it was.
    assert prompts.build_user_prompt(note, spec, candidates=None) == plain == (
        head + prompts.NOTE_HEADER + "\n" + note + "\n\n" + prompts.format_line(spec))
    assert prompts.build_messages(note, spec, candidates=candidates) == [{"role": "user", "content": with_block}]
    # Composes with PHI hints: the hint block still goes right before the format line.
    hinted = prompts.build_user_prompt(note, spec, [("276.2", "Acidosis")], candidates=candidates)
    cut = with_block.index(prompts.format_line(spec))
    assert hinted == with_block[:cut] + prompts.render_hint_block(["276.2"], ["Acidosis"], 9) + "\n\n" + \
        with_block[cut:]


def test_candidate_block_without_candidates_and_bad_codes():
    spec = PromptSpec("icd10", "top50", "MIMIC-IV")
    block = prompts.render_candidate_block([], [], spec)
    assert block.splitlines()[-1] == prompts.CANDIDATES_NONE and "ICD-10-CM/PCS codes below" in block
    assert "Suggested codes:\n- (no suggestions)" in prompts.build_user_prompt("n", spec, candidates=[])
    for bad in (["I10\nZ79.4"], [""], [None]):
        with pytest.raises(ValueError, match="invalid candidate code"):
            prompts.render_candidate_block(bad, None, spec)
    with pytest.raises(ValueError, match="descriptions"):
        prompts.render_candidate_block(["I10", "E11.9"], ["one"], spec)


def test_prompts_import_without_heavy_dependencies():
    import subprocess
    import sys

    code = ("import sys, llm4icd_plugins.prompts; "
            "print(any(m in sys.modules for m in ('torch', 'transformers', 'pandas')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
