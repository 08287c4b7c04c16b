"""Grammars that make a coder's answer valid by construction: ``<code>`` code (", " code)* ``</code>``.

``data_tools.evaluation.infer --constrain`` hands the grammar to vLLM's structured outputs (xgrammar backend), so every
generated code is one of a closed set: the variant's label space (``label-space``) or every code of the code
system's tables plus the label space (``code-system``; MIMIC-III keeps retired codes as gold labels). The
CoT prompt kinds may write a ``<think>`` block first. Pure: no vLLM or xgrammar import here.

Two equivalent spellings of the code set: an ``alternation`` of literals, or a ``trie`` of rules over
shared prefixes. Measured by ``bench/bench_constrain.py`` (xgrammar, CPU): up to ~8,000 codes the alternation
compiles 2-5x faster at the same mask cost; at 22,000 codes it masks in 0.2-0.5 ms per token against ~0.02 ms
for the trie, so ``auto`` takes the trie above ``TRIE_ABOVE`` codes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from llm4icd_plugins.codes import load_code_system
from llm4icd_plugins.errors import UserError
from llm4icd_plugins.variant import PreparedVariant

MODES = ("off", "label-space", "code-system")
FORMS = ("alternation", "trie")
TRIE_ABOVE = 10_000
SEPARATOR = ", "
"""Between codes, as ``llm4icd_plugins.prompts.format_answer`` writes training answers."""


class ConstrainError(UserError):
    """A constraint that cannot be built, with the file and the fix."""


def _literal(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _alternation(codes: list[str]) -> list[str]:
    return ["code ::= " + " | ".join(_literal(c) for c in codes)]


def _trie(codes: list[str]) -> list[str]:
    """Rules of a radix trie: one rule per branching node, single-child chains merged into one literal."""
    root: dict = {}
    for code in codes:
        node = root
        for char in code:
            node = node.setdefault(char, {})
        node[""] = {}  # end of a code
    rules: list[str] = []

    def rule_of(node: dict) -> str:
        name = f"t{len(rules)}"
        rules.append("")
        slot = len(rules) - 1
        alternatives = []
        ends = "" in node
        for char in sorted(k for k in node if k):
            text, child = char, node[char]
            while "" not in child and len(child) == 1:  # a chain without branching or ending
                (nxt, child), = child.items()
                text += nxt
            if set(child) == {""}:
                alternatives.append(_literal(text))
            else:
                alternatives.append(f"{_literal(text)} {rule_of(child)}")
        body = " | ".join(alternatives)
        rules[slot] = f"{name} ::= ({body})" + ("?" if ends else "")
        return name

    top = rule_of(root)
    return [f"code ::= {top}", *rules]


def build_grammar(codes: Iterable[str], *, max_codes: int | None = None, think: bool = False,
                  form: str = "auto") -> str:
    """EBNF (xgrammar/GBNF dialect) accepting ``[<think>…</think> ws]<code>c1, c2, …</code>`` over ``codes``.

    At least one code; at most ``max_codes`` when given. The think block may hold any text without ``<``.
    """
    codes = sorted(set(codes))
    if not codes:
        raise ConstrainError("constrained decoding: the code set is empty. Fix: use a variant whose "
                             "label_space.json lists codes, or --constrain code-system")
    if max_codes is not None and max_codes < 1:
        raise ConstrainError(f"--max-codes {max_codes}: must be at least 1. Fix: give a positive cap or leave it out")
    if form == "auto":
        form = "trie" if len(codes) > TRIE_ABOVE else "alternation"
    if form not in FORMS:
        raise ConstrainError(f"grammar form {form!r}: expected auto or one of {', '.join(FORMS)}")
    if max_codes is None:
        more = f"({_literal(SEPARATOR)} code)*"
    elif max_codes == 1:
        more = ""
    else:
        more = f"({_literal(SEPARATOR)} code){{0,{max_codes - 1}}}"
    answer = f'answer ::= "<code>" code {more} "</code>"'.replace("  ", " ")
    head = ['root ::= (think [ \\n]*)? answer', 'think ::= "<think>" [^<]* "</think>"'] if think else [
        "root ::= answer"]
    body = _trie(codes) if form == "trie" else _alternation(codes)
    return "\n".join([*head, answer, *body]) + "\n"


def code_set(mode: str, data_dir: Path) -> list[str]:
    """The codes a constraint allows: the variant's label space, or the code system's tables plus it."""
    if mode not in MODES or mode == "off":
        raise ConstrainError(f"--constrain {mode}: no code set for it; expected label-space or code-system")
    variant = PreparedVariant(data_dir, ConstrainError)
    if not variant.label_space_path.is_file():
        raise ConstrainError(f"{variant.label_space_path}: no label space, which --constrain {mode} needs. Fix: point "
                             "--data at a variant folder written by data_tools.build.prepare, or pass --constrain off")
    space = variant.label_space()
    codes = list(space.codes)
    if mode == "code-system":
        codes = sorted(set(codes) | set(load_code_system(space.system)))
    return codes


def is_cot(prompt_kind: str) -> bool:
    """Whether a prompt kind asks for a ``<think>`` rationale before the codes."""
    return prompt_kind.endswith("_cot")
