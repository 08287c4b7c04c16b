"""Candidate codes for verification by the ICD hierarchy (generate → expand → verify), and the verifier's answer.

``expand`` widens a note's predicted codes to the codes a coder would weigh against them: the predicted codes
themselves, then each one's siblings (the billable codes under its parent, header siblings opened down to their
leaves), then the billable codes of its category (``hierarchy_metrics.category``: 428.22 → 428, J18.9 → J18,
96.04 → 96, a PCS code → its first three characters). Only predicted codes feed it: never gold. With a label
space, expanded codes outside it are left out; a cap keeps the first candidates in that order.

``parse_selection`` reads the verifier's answer (numbers of the listed descriptions, or the descriptions) and
never raises. Pure Python: no torch or vLLM.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from typing import Any, NamedTuple

from llm4icd_plugins.hierarchy_metrics import category

MAX_ANSWER_CHARS = 20_000
"""Characters of an answer read; a degenerate, never-ending answer costs no more than this."""
_NUMBER = re.compile(r"(?<![\w.])\d{1,4}(?!\w|\.\d)")
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
CODE_OPEN = "<code>"


def _leaves(code_system: Any, node: str, out: list[str], depth: int = 0) -> None:
    """Billable codes at or under ``node`` (a header is opened, a leaf is itself), in table order."""
    if depth > 16:  # a cycle in a damaged table
        return
    if code_system.is_billable(node):
        out.append(node)
        return
    for child in code_system.children(node):
        _leaves(code_system, child, out, depth + 1)


class Hierarchy:
    """Sibling and category lookups over one code system, with the category index built once."""

    def __init__(self, code_system: Any, label_space: Collection[str] | None = None):
        self.code_system = code_system
        self.allowed = None if label_space is None else set(label_space)
        self._by_category: dict[str, list[str]] | None = None

    def _keep(self, code: str) -> bool:
        return self.allowed is None or code in self.allowed

    def siblings(self, code: str) -> list[str]:
        """Billable codes under the parent of ``code`` other than itself (empty at the top or if unknown)."""
        system = self.code_system
        parent = system.parent(code) if code in system else None
        if not parent:
            return []
        out: list[str] = []
        for child in system.children(parent):
            _leaves(system, child, out)
        return [c for c in out if c != code and self._keep(c)]

    def category_codes(self, code: str) -> list[str]:
        """Billable codes of the category of ``code`` other than itself (label-space codes only, with one)."""
        if self._by_category is None:
            pool = self.allowed if self.allowed is not None else (
                c for c in self.code_system if self.code_system.is_billable(c))
            index: dict[str, list[str]] = {}
            for c in sorted(pool):
                index.setdefault(category(c, self.code_system), []).append(c)
            self._by_category = index
        return [c for c in self._by_category.get(category(code, self.code_system), ()) if c != code]

    def expand(self, predicted: Sequence[str], max_candidates: int | None = None) -> list[str]:
        """Predicted codes first (all kept), then their siblings, then their categories' codes; capped."""
        out = dict.fromkeys(predicted)
        limit = max_candidates if max_candidates is not None else float("inf")
        for tier in (self.siblings, self.category_codes):
            for code in predicted:
                for candidate in tier(code):
                    if len(out) >= limit:
                        return list(out)
                    out.setdefault(candidate, None)
        return list(out)


def expand(predicted: Sequence[str], code_system: Any, label_space: Collection[str] | None = None,
           max_candidates: int | None = None) -> list[str]:
    """``Hierarchy(code_system, label_space).expand(predicted, max_candidates)`` for one note."""
    return Hierarchy(code_system, label_space).expand(predicted, max_candidates)


class Selection(NamedTuple):
    """The verifier's choice: indices (0-based) into the candidate list, and whether anything was read."""

    chosen: tuple[int, ...] = ()
    parsed: bool = False


def _region(text: str) -> str:
    """The answer part: after the last ``</think>``, inside the last ``<answer>…</answer>`` when there is one."""
    close = text.rfind("</think>")
    if close >= 0:
        text = text[close + len("</think>"):]
    end = text.rfind(ANSWER_CLOSE)
    start = text.rfind(ANSWER_OPEN, 0, end) if end >= 0 else -1
    return text[start + len(ANSWER_OPEN):end] if start >= 0 else text


def parse_selection(text: Any, descriptions: Sequence[str], codes: Sequence[str] = (), code_system: Any = None
                    ) -> Selection:
    """Which of the numbered ``descriptions`` (shown as 1..n, for ``codes``) the answer chose; never raises.

    Read, first that is there: the numbers 1..n in the answer region (other numbers, decimals and numbers inside
    words ignored); the candidate ``codes`` in a ``<code>…</code>`` span (the one parser's rule: a coder trained to
    answer in codes); the descriptions it quotes (case-insensitive, whole). ``parsed`` is False when none is there
    ("none" or an empty ``<answer></answer>`` is a parsed, empty choice).
    """
    if not isinstance(text, str):
        return Selection()
    text = text[:MAX_ANSWER_CHARS]
    region = _region(text)
    n = len(descriptions)
    chosen: dict[int, None] = {}
    for match in _NUMBER.finditer(region):
        number = int(match.group())
        if 1 <= number <= n:
            chosen.setdefault(number - 1, None)
    if not chosen and codes and CODE_OPEN in text:
        from llm4icd_plugins.parsing import parse_response

        position = {code: i for i, code in enumerate(codes)}
        for code in parse_response(text, code_system).codes:
            if code in position:
                chosen.setdefault(position[code], None)
    if not chosen:
        lowered = region.lower()
        for i, description in enumerate(descriptions):
            if isinstance(description, str) and description.strip() and description.lower() in lowered:
                chosen.setdefault(i, None)
    if chosen:
        return Selection(tuple(chosen), True)
    words = region.strip().strip(".").lower()
    return Selection((), words in ("none", "none of them", "none apply", "") and ANSWER_OPEN in text)


def near_miss_repairs(before: Iterable[str], after: Iterable[str], gold: Iterable[str], code_system: Any = None
                      ) -> tuple[int, int]:
    """(repairs, breaks) of one note, from gold, at evaluation time only. A repair is an added gold code whose
    category holds a removed non-gold code (a wrong leaf replaced by the right one); a break is the mirror: a
    removed gold code whose category holds an added non-gold code."""
    before, after, gold = set(before), set(after), set(gold)
    added, removed = after - before, before - after

    def cats(codes: Iterable[str]) -> set[str]:
        return {category(c, code_system) for c in codes}

    wrong_removed, wrong_added = cats(removed - gold), cats(added - gold)
    repairs = sum(category(c, code_system) in wrong_removed for c in added & gold)
    breaks = sum(category(c, code_system) in wrong_added for c in removed & gold)
    return repairs, breaks
