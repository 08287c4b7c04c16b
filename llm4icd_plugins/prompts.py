"""Every prompt of the project, in one place: the SFT/RL training prompt, the PHI hint block
(paper App. E), the optional candidate block (suggestions of a discriminative coder) and the four
prompting baselines (paper App. D), parameterised by code system, corpus and label scope.

Templates hold ``{PLACEHOLDER}`` fields filled in a single regex pass (``_fill``), never with
``str.format``: a note containing braces, ``{DISCHARGE_SUMMARY}`` or backslashes is inserted
verbatim and never re-interpreted. Pure Python, importable without torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CODE_SYSTEM_NAMES = {"icd9": "ICD-9-CM", "icd10": "ICD-10-CM/PCS"}
"""The {CODE_SYSTEM} wording of paper App. D."""

ICD_VERSIONS = {"icd9": "9", "icd10": "10"}
"""The {VERSION} of the App. E hint block ("ICD-9 codes", "ICD-10 codes")."""

DEFAULT_CORPUS = {"icd9": "MIMIC-III", "icd10": "MIMIC-IV"}
LABEL_SCOPES = ("full", "top50")

FORMAT_EXAMPLE_CODES = {
    "icd9": ("250.00", "V58.61", "96.04"),
    "icd10": ("E11.9", "Z79.4", "0BH17EZ"),
}
"""Format-example codes shown in prompts: one dotted diagnosis, one V/Z code, one procedure, so the
model sees every canonical form of the system. A formatting example, not codes to copy."""

# App. E's mini example is written with ICD-9 codes; the ICD-10 prompt gets ICD-10-CM codes of the
# same roles (hinted code + two other supported codes) so the example matches the requested system.
HINT_MINI_EXAMPLES = {
    "icd9": (("276.2", "Acidosis"), ("401.9", "584.9")),
    "icd10": (("E86.0", "Dehydration"), ("I10", "N17.9")),
}

DESCRIPTION_MAX_CHARS = 100
"""Default cap on the length of a hint description (App. E: "truncated to a maximum length")."""

_PLACEHOLDER = re.compile(r"\{([A-Z][A-Z0-9_]*)\}")


@dataclass(frozen=True)
class PromptSpec:
    """What a prompt is about: code system ("icd9"/"icd10"), label scope ("full"/"top50") and corpus
    name (defaults to MIMIC-III for icd9, MIMIC-IV for icd10)."""

    code_system: str
    label_scope: str = "full"
    corpus: str | None = None

    def __post_init__(self) -> None:
        if self.code_system not in CODE_SYSTEM_NAMES:
            raise ValueError(f"unknown code system {self.code_system!r}; expected one of {sorted(CODE_SYSTEM_NAMES)}")
        if self.label_scope not in LABEL_SCOPES:
            raise ValueError(f"unknown label scope {self.label_scope!r}; expected one of {LABEL_SCOPES}")
        if self.corpus is None:
            object.__setattr__(self, "corpus", DEFAULT_CORPUS[self.code_system])

    @property
    def code_system_name(self) -> str:
        return CODE_SYSTEM_NAMES[self.code_system]

    @property
    def label_scope_text(self) -> str:
        """The {LABEL_SCOPE} of App. D. The paper names only "Top-50 or Full"; this is our wording."""
        if self.label_scope == "top50":
            return f"only codes from the {self.corpus} Top-50 label set (the 50 most frequent codes)"
        return f"any applicable code from the full {self.corpus} {self.code_system_name} label set"

    @property
    def format_example(self) -> str:
        return ", ".join(FORMAT_EXAMPLE_CODES[self.code_system])

    def placeholders(self) -> dict[str, str]:
        return {
            "CODE_SYSTEM": self.code_system_name,
            "CORPUS": self.corpus,
            "LABEL_SCOPE": self.label_scope_text,
            "FORMAT_EXAMPLE_CODES": self.format_example,
        }


def _fill(template: str, values: Mapping[str, str]) -> str:
    """Replace every ``{NAME}`` of ``template`` in one pass; inserted values are never rescanned."""

    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"no value for placeholder {{{name}}}")
        return values[name]

    return _PLACEHOLDER.sub(replace, template)


def format_answer(codes: Sequence[str]) -> str:
    """Serialise a code list as the single answer span ``<code>c1, c2</code>`` (order kept, duplicates
    dropped). This is the SFT target and the form the parser reads back."""
    if isinstance(codes, str):
        raise TypeError("format_answer expects a sequence of codes, not a string")
    seen: dict[str, None] = {}
    for code in codes:
        if not isinstance(code, str) or not code.strip() or any(c in code for c in ",<>\n"):
            raise ValueError(f"cannot serialise code {code!r}: it must be a non-empty string without , < > or newlines")
        seen.setdefault(code.strip(), None)
    return "<code>" + ", ".join(seen) + "</code>"


# --- training prompt (SFT and RL; paper Sec. 4.1, App. A) -----------------------------------------

TRAINING_INSTRUCTION = (
    "You are a clinical coding specialist assigning {CODE_SYSTEM} codes to a {CORPUS} discharge summary. "
    "Read the discharge summary below and assign all applicable {CODE_SYSTEM} diagnosis and procedure codes. "
    "Use {LABEL_SCOPE}."
)
NOTE_HEADER = "Discharge Summary:"
FORMAT_LINE = (
    "Output only the final {CODE_SYSTEM} codes, separated by commas, in a single <code>...</code> block. "
    "Do not include any other text. "
    "Formatting example only, not a clinical example and not codes to copy: <code>{FORMAT_EXAMPLE_CODES}</code>"
)


def training_instruction(spec: PromptSpec) -> str:
    """The fixed coding instruction that opens every training prompt."""
    return _fill(TRAINING_INSTRUCTION, spec.placeholders())


def format_line(spec: PromptSpec) -> str:
    """The output-format line that closes every training prompt."""
    return _fill(FORMAT_LINE, spec.placeholders())


def build_user_prompt(note: str, spec: PromptSpec, hints: Sequence | None = None, *,
                      max_description_chars: int = DESCRIPTION_MAX_CHARS, candidates: Sequence | None = None) -> str:
    """The user turn of a training example: instruction, [candidate block], note, [PHI hint block], format line.

    ``hints`` is ``None``/empty (the inference and SFT prompt) or a sequence of ``(code, description)``
    pairs (description may be ``None``). The hinted and unhinted prompts differ only by the inserted
    block, placed before the format line as in App. E. ``candidates`` (``None``: the paper's prompt) are
    ``(code, description)`` pairs of a discriminative coder, listed before the note header in every split's
    prompt, so the text after the note header is the same with or without them.
    """
    if not isinstance(note, str):
        raise TypeError(f"note must be a string, got {type(note).__name__}")
    parts = [training_instruction(spec)]
    if candidates is not None:
        parts.append(render_candidate_block([c[0] for c in candidates], [c[1] for c in candidates], spec,
                                            max_description_chars=max_description_chars))
    parts.append(f"{NOTE_HEADER}\n{note}")
    if hints:
        codes = [h[0] for h in hints]
        descriptions = [h[1] for h in hints]
        parts.append(render_hint_block(codes, descriptions, spec.code_system,
                                       max_description_chars=max_description_chars))
    parts.append(format_line(spec))
    return "\n\n".join(parts)


def build_messages(note: str, spec: PromptSpec, hints: Sequence | None = None, *,
                   candidates: Sequence | None = None) -> list[dict[str, str]]:
    """Chat messages of a training prompt (one user turn; no system turn, the model's template default)."""
    return [{"role": "user", "content": build_user_prompt(note, spec, hints, candidates=candidates)}]


# --- candidate block (suggestions of a discriminative coder, data_tools.evaluation.candidates) -------------

CANDIDATES_HEAD = (
    "Candidate codes:\n"
    "An automatic coder suggests the {CODE_SYSTEM} codes below, best first. They are suggestions only and may or "
    "may not apply: assign a listed code only if the discharge summary supports it, and also assign applicable "
    "codes that are not listed.\n"
    "Suggested codes:"
)
CANDIDATES_NONE = "- (no suggestions)"


def _code_lines(codes: Sequence[str], descs: Sequence, max_description_chars: int, what: str) -> list[str]:
    """``- code (description)`` lines of a hint or candidate block; a code that is not one line is an error."""
    lines = []
    for code, desc in zip(codes, descs):
        if not isinstance(code, str) or not code.strip() or "\n" in code:
            raise ValueError(f"invalid {what} code {code!r}")
        short = truncate_description(desc, max_description_chars)
        lines.append(f"- {code} ({short})" if short else f"- {code}")
    return lines


def render_candidate_block(codes: Sequence[str], descriptions: Sequence[str | None] | None, spec: PromptSpec, *,
                           max_description_chars: int = DESCRIPTION_MAX_CHARS) -> str:
    """The candidate block listing ``codes`` (best first) with their (truncated) descriptions; an empty list
    says so. A missing description drops the parentheses, as in the hint block."""
    if isinstance(codes, str):
        raise ValueError("render_candidate_block needs a sequence of codes, not a string")
    descs = [None] * len(codes) if descriptions is None else list(descriptions)
    if len(descs) != len(codes):
        raise ValueError(f"{len(codes)} candidate codes but {len(descs)} descriptions")
    lines = [_fill(CANDIDATES_HEAD, spec.placeholders())]
    lines += _code_lines(codes, descs, max_description_chars, "candidate")
    if not codes:
        lines.append(CANDIDATES_NONE)
    return "\n".join(lines)


# --- PHI hint block (paper App. E) -----------------------------------------------------------------

HINT_TEMPLATE_HEAD = (
    "Training hint:\n"
    "The following ICD-{VERSION} codes were missed previously, but they are confirmed applicable to this case. "
    "Include these hinted codes in the final <code> answer, then add any other applicable ICD-{VERSION} codes "
    "supported by the note.\n"
    "Hinted codes:"
)
HINT_TEMPLATE_TAIL = (
    "Mini example:\n"
    "If the hint says:\n"
    "- {EXAMPLE_HINT_CODE} ({EXAMPLE_HINT_DESCRIPTION})\n"
    "and the note also supports {EXAMPLE_OTHER_CODE_1} and {EXAMPLE_OTHER_CODE_2}, then the final answer should "
    "include both the hinted code and the other supported codes:\n"
    "<code>{EXAMPLE_ANSWER_CODES}</code>"
)


def _version_key(version) -> str:
    key = str(version).lower().removeprefix("icd-").removeprefix("icd")
    for system, number in ICD_VERSIONS.items():
        if key == number:
            return system
    raise ValueError(f"unknown ICD version {version!r}; expected 9, 10, 'icd9' or 'icd10'")


def truncate_description(text: str | None, max_chars: int = DESCRIPTION_MAX_CHARS) -> str | None:
    """Shorten a code description to at most ``max_chars`` characters, at a word boundary when one is
    near, ending with "..."; whitespace collapsed. ``None``/empty stays ``None``."""
    if text is None:
        return None
    text = " ".join(str(text).split())
    if not text:
        return None
    if max_chars < 4:
        raise ValueError("max_chars must be at least 4")
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 3]
    space = cut.rfind(" ")
    if space >= (max_chars - 3) // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:-(") + "..."


def render_hint_block(codes: Sequence[str], descriptions: Sequence[str | None] | Mapping[str, str | None] | None,
                      version, *, max_description_chars: int = DESCRIPTION_MAX_CHARS, example: bool = True) -> str:
    """The App. E "Training hint" block listing ``codes`` with their (truncated) descriptions.

    ``descriptions`` is a sequence parallel to ``codes``, a mapping code → description, or ``None``;
    a missing description drops the parentheses. ``version`` is 9/10 or "icd9"/"icd10". ``example=False``
    leaves out the closing mini example (the ``no_example`` style: its codes are frequent gold codes).
    """
    system = _version_key(version)
    if isinstance(codes, str) or not codes:
        raise ValueError("render_hint_block needs a non-empty sequence of codes")
    if descriptions is None:
        descs = [None] * len(codes)
    elif isinstance(descriptions, Mapping):
        descs = [descriptions.get(code) for code in codes]
    else:
        descs = list(descriptions)
        if len(descs) != len(codes):
            raise ValueError(f"{len(codes)} hinted codes but {len(descs)} descriptions")
    lines = [_fill(HINT_TEMPLATE_HEAD, {"VERSION": ICD_VERSIONS[system]})]
    lines += _code_lines(codes, descs, max_description_chars, "hinted")
    if not example:
        return "\n".join(lines)
    (hint_code, hint_desc), (other_1, other_2) = HINT_MINI_EXAMPLES[system]
    lines.append(_fill(HINT_TEMPLATE_TAIL, {
        "EXAMPLE_HINT_CODE": hint_code,
        "EXAMPLE_HINT_DESCRIPTION": hint_desc,
        "EXAMPLE_OTHER_CODE_1": other_1,
        "EXAMPLE_OTHER_CODE_2": other_2,
        "EXAMPLE_ANSWER_CODES": ", ".join((hint_code, other_1, other_2)),
    }))
    return "\n".join(lines)



HINT_STYLES = ("paper", "no_example", "neutral")
"""What a PHI draw inserts (``data.phi_hint_style``): the App. E block; that block without its mini example;
or ``neutral_block`` filler of the paper block's token length, naming no code (position and length stay,
copying is impossible)."""

NEUTRAL_HEAD = "Reading note:"
NEUTRAL_WORDS = ("read", "the", "whole", "discharge", "summary", "with", "care", "and", "answer", "only", "from",
                 "what", "it", "states")
"""Filler of the ``neutral`` style: plain lower-case words, no digit, no code, no tag."""


def neutral_block(n_words: int) -> str:
    """The ``neutral`` style's block: ``NEUTRAL_HEAD`` and ``n_words`` filler words (``NEUTRAL_WORDS`` cycled),
    ending with a full stop. Callers pick ``n_words`` to match the paper block's token count."""
    if isinstance(n_words, bool) or not isinstance(n_words, int) or n_words < 0:
        raise ValueError(f"n_words must be a non-negative integer, got {n_words!r}")
    words = [NEUTRAL_WORDS[i % len(NEUTRAL_WORDS)] for i in range(n_words)]
    return NEUTRAL_HEAD + ("\n" + " ".join(words) + "." if words else "")

# --- prompting baselines (paper App. D, word for word; line breaks added for readability) ------------

BASELINE_KINDS = ("zero_shot", "few_shot", "zero_shot_cot", "few_shot_cot")

_HEAD = ("You are a clinical coding specialist assigning {CODE_SYSTEM} codes from a discharge summary. "
         "Use {LABEL_SCOPE}.")
_PLAIN_RULE = "Output only the final {CODE_SYSTEM} codes in <code>...</code>. Do not include any other text."
_COT_RULE = ("First write a brief structured rationale in <think>...</think>, then output the final {CODE_SYSTEM} "
             "codes in <code>...</code>. Do not put codes outside the <code> block.")
_TAIL = "Now code the following discharge summary.\nDischarge Summary:\n{DISCHARGE_SUMMARY}\nAnswer:"
_SHOT = "Example {K}\nDischarge Summary:\n{SHOT_NOTE}\nAnswer: {SHOT_ANSWER}"
_ZERO_SHOT_COT_THINK = ("<think>Briefly identify the documented diagnoses and procedures, then map them to "
                        "{CODE_SYSTEM} codes.</think>")
_FEW_SHOT_COT_THINK = ("<think>Review the discharge summary for documented diagnoses and procedures, then map the "
                       "supported findings to {CODE_SYSTEM} codes.</think>")
_FORMAT_ONLY = "Formatting example only, not a clinical example and not codes to copy:"


def render_baseline(kind: str, note: str, spec: PromptSpec, shots: Sequence[tuple[str, Sequence[str]]] = ()) -> str:
    """The App. D prompt ``kind`` (one of ``BASELINE_KINDS``) for ``note``.

    Few-shot kinds take ``shots``: (note, gold codes) pairs, three in the paper, retrieved by note
    similarity by the caller. Zero-shot kinds take none.
    """
    if kind not in BASELINE_KINDS:
        raise ValueError(f"unknown baseline {kind!r}; expected one of {BASELINE_KINDS}")
    few_shot = kind.startswith("few_shot")
    cot = kind.endswith("_cot")
    if few_shot and not shots:
        raise ValueError(f"{kind} needs at least one (note, codes) shot; the paper uses three")
    if not few_shot and shots:
        raise ValueError(f"{kind} takes no shots")
    values = spec.placeholders()
    parts = [_fill(_HEAD, values), _fill(_COT_RULE if cot else _PLAIN_RULE, values)]
    if few_shot:
        think = _fill(_FEW_SHOT_COT_THINK, values) + " " if cot else ""
        blocks = ["Examples:"]
        for k, (shot_note, shot_codes) in enumerate(shots, start=1):
            blocks.append(_fill(_SHOT, {"K": str(k), "SHOT_NOTE": shot_note,
                                        "SHOT_ANSWER": think + format_answer(shot_codes)}))
        parts.append("\n\n".join(blocks))
    else:
        example = _fill(_ZERO_SHOT_COT_THINK, values) + " " if cot else ""
        parts.append(f"{_FORMAT_ONLY} {example}<code>{values['FORMAT_EXAMPLE_CODES']}</code>")
    parts.append(_fill(_TAIL, {"DISCHARGE_SUMMARY": note}))
    return "\n\n".join(parts)


def baseline_messages(kind: str, note: str, spec: PromptSpec,
                      shots: Sequence[tuple[str, Sequence[str]]] = ()) -> list[dict[str, str]]:
    """Chat messages (one user turn) of a baseline prompt."""
    return [{"role": "user", "content": render_baseline(kind, note, spec, shots)}]


# --- verification by the ICD hierarchy (data_tools.evaluation.verify) -------------------------------------------
# Candidates are shown by description only, without codes, and no reasoning is asked for: the survey of LLM ICD
# coding found descriptions without codes best and reasoning harmful for this step.

VERIFY_INSTRUCTION = (
    "You are a clinical coding specialist checking {CODE_SYSTEM} coding of a {CORPUS} discharge summary. Read the "
    "discharge summary and the numbered candidate diagnoses and procedures below, and choose every candidate "
    "that the discharge summary documents."
)
VERIFY_CANDIDATES_HEADER = "Candidates:"
VERIFY_FORMAT_LINE = (
    "Output only the numbers of the candidates that apply, separated by commas, in a single <answer>...</answer> "
    "block, e.g. <answer>1, 3</answer>. Do not include any other text."
)


def verify_messages(note: str, descriptions: Sequence[str], spec: PromptSpec) -> list[dict[str, str]]:
    """Chat messages (one user turn) of a verification prompt: instruction, note, numbered candidate
    descriptions (1..n, no codes), answer format."""
    listing = "\n".join(f"{i}. {d}" for i, d in enumerate(descriptions, 1))
    content = "\n\n".join([_fill(VERIFY_INSTRUCTION, spec.placeholders()), f"{NOTE_HEADER}\n{note}",
                           f"{VERIFY_CANDIDATES_HEADER}\n{listing}", VERIFY_FORMAT_LINE])
    return [{"role": "user", "content": content}]
