"""The one deterministic answer parser: model response text → predicted ICD code set (paper Sec. 3).

Reward, inference, evaluation and PHI all call ``parse_response``, so a code counts the same way
everywhere. Rules, in order:

1. Thinking. Only text after the LAST ``</think>`` is the answer (all text if there is none). An
   unclosed ``<think>`` in the answer swallows everything after it (the model never finished thinking).
2. Span. The answer's LAST closed ``<code>…</code>`` span is read: the last ``</code>`` and the last
   ``<code>`` before it (so ``<code><code>a</code>`` reads ``a``). Tags match exactly, lower case:
   ``<CODE>``, ``< code>`` or a tag broken by a zero-width space are plain text. No span → no codes.
3. Tokens. The span content is split on commas, semicolons and newlines (not on spaces: ``401.9 428.0``
   is one malformed token, and so is ``401.9 - Hypertension``: the prompts ask for codes only). Blank
   tokens (``a, b,``) are skipped and not counted. At most ``MAX_TOKENS`` pieces are read; the rest of
   an over-long span is ignored and ``truncated`` is set.
4. Normalising. Each token goes through ``normalize.canonicalize`` (NFKC: full-width digits fold to
   ASCII; Cyrillic look-alikes and zero-width characters make a token malformed). Malformed tokens are
   counted, never kept (their text could echo the note). With a code system, ``resolve`` maps a token to
   its canonical code (``4019`` → ``401.9`` when unambiguous); a token it cannot resolve is *unknown*.
   A code in the label space is always valid, even if the tables do not know it (MIMIC-III keeps
   retired codes as gold labels). Without a code system tokens stay in canonicalized form and are
   not checked against any table.
5. Duplicates (after normalising, so ``4019`` and ``401.9`` are one code) are dropped, first-seen order
   kept. With a label space, valid codes outside it are *off-label*.

``codes`` holds only valid, in-label-space codes: "malformed or invalid codes are excluded from Ŷ"
(paper Sec. 3). Unknown and off-label codes are listed separately so callers can count or rescue them.
Invariant: ``n_tokens == len(codes) + n_unknown + n_off_label + n_duplicates + n_malformed``.

``parse_response`` never raises on any ``text`` (non-strings give an empty result) and runs in time
linear in the input: only ``str.rfind``/``find``/``count``/``split``, no regex over the whole text.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from llm4icd_plugins.normalize import canonicalize

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CODE_OPEN, CODE_CLOSE = "<code>", "</code>"
SEPARATORS = (",", ";", "\n")
MAX_TOKENS = 2048
"""Pieces read per span. Real admissions carry at most ~100 codes (MIMIC-IV full); a bound keeps a
degenerate, never-ending list from costing more than a few milliseconds per response."""


_CACHE_SIZE = 1 << 15
_CACHEABLE_LEN = 128  # longer tokens are never codes; not caching them bounds the cache's memory


@lru_cache(maxsize=_CACHE_SIZE)
def _canonical(token: str) -> str | None:
    return canonicalize(token)


@lru_cache(maxsize=_CACHE_SIZE)
def _resolved(code_system: Any, code: str) -> str | None:
    return code_system.resolve(code)


def _resolve(code_system: Any, code: str) -> str | None:
    """``code_system.resolve`` memoised: model outputs repeat the same few thousand codes."""
    try:
        return _resolved(code_system, code)
    except TypeError:  # an unhashable code-system-like object
        return code_system.resolve(code)


@dataclass(frozen=True, slots=True)
class ParseResult:
    """What the parser found in one response. Counts are per token except the ``n_unknown``/``n_off_label``
    counts, which count distinct codes (the length of ``unknown``/``off_label``)."""

    codes: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    off_label: tuple[str, ...] = ()
    n_tokens: int = 0
    n_malformed: int = 0
    n_unknown: int = 0
    n_off_label: int = 0
    n_duplicates: int = 0
    has_span: bool = False
    format_ok: bool = False
    truncated: bool = False


_EMPTY = ParseResult()


def _membership(label_space: Any) -> Collection[str] | None:
    """A container with fast ``in`` for a LabelSpace, set, dict or any iterable of codes."""
    if label_space is None:
        return None
    index = getattr(label_space, "index", None)
    if isinstance(index, dict):
        return index
    if isinstance(label_space, (set, frozenset, dict)):
        return label_space
    if isinstance(label_space, str):
        raise TypeError("label_space must be a LabelSpace or a collection of codes, not a string")
    return frozenset(label_space)


def parse_codes(
    tokens: Iterable[Any],
    code_system: Any = None,
    label_space: Any = None,
    *,
    has_span: bool = True,
    format_ok: bool = True,
    truncated: bool = False,
) -> ParseResult:
    """Normalise, validate and deduplicate code tokens (rules 4-5 above), e.g. a JSON list of predictions.

    Non-string and blank tokens: blank ones are skipped, other non-strings count as malformed.
    """
    allowed = _membership(label_space)
    kept: dict[str, None] = {}
    unknown: dict[str, None] = {}
    off_label: dict[str, None] = {}
    n_tokens = n_malformed = n_duplicates = 0
    for token in tokens:
        if isinstance(token, str) and not token.strip():
            continue
        n_tokens += 1
        if not isinstance(token, str):
            code = None
        else:
            code = _canonical(token) if len(token) <= _CACHEABLE_LEN else canonicalize(token)
        if code is None:
            n_malformed += 1
            continue
        if allowed is not None and code in allowed:
            bucket = kept
        elif code_system is not None and (resolved := _resolve(code_system, code)) is None:
            bucket = unknown
        else:
            if code_system is not None:
                code = resolved
            bucket = kept if allowed is None or code in allowed else off_label
        if code in kept or code in unknown or code in off_label:
            n_duplicates += 1
            continue
        bucket[code] = None
    return ParseResult(
        codes=tuple(kept), unknown=tuple(unknown), off_label=tuple(off_label),
        n_tokens=n_tokens, n_malformed=n_malformed, n_unknown=len(unknown),
        n_off_label=len(off_label), n_duplicates=n_duplicates,
        has_span=has_span, format_ok=format_ok, truncated=truncated,
    )


def _answer_region(text: str) -> tuple[str, bool]:
    """Text after the last ``</think>``, cut at an unclosed ``<think>``; and whether think tags are clean."""
    close = text.rfind(THINK_CLOSE)
    region = text if close < 0 else text[close + len(THINK_CLOSE):]
    n_open, n_close = text.count(THINK_OPEN), text.count(THINK_CLOSE)
    clean = n_close <= 1 and n_open <= 1 and (n_open == 0 or close < 0 or text.find(THINK_OPEN) < close)
    cut = region.find(THINK_OPEN)
    if cut >= 0:
        return region[:cut], False
    return region, clean


def _split(content: str) -> tuple[list[str], bool]:
    for sep in SEPARATORS[1:]:
        content = content.replace(sep, SEPARATORS[0])
    pieces = content.split(SEPARATORS[0], MAX_TOKENS)
    if len(pieces) > MAX_TOKENS:
        return pieces[:MAX_TOKENS], True
    return pieces, False


def parse_response(text: Any, code_system: Any = None, label_space: Any = None) -> ParseResult:
    """Parse a model response into a ``ParseResult`` (rules in the module docstring); never raises on ``text``.

    ``code_system`` is a ``codes.CodeSystem`` (or None: no table check); ``label_space`` a
    ``codes.LabelSpace`` or any collection of canonical codes (or None: no label filter).
    """
    if not isinstance(text, str):
        return _EMPTY
    region, think_clean = _answer_region(text)
    close = region.rfind(CODE_CLOSE)
    start = region.rfind(CODE_OPEN, 0, close) if close >= 0 else -1
    if start < 0:
        return _EMPTY
    format_ok = think_clean and region.count(CODE_OPEN) == 1 and region.count(CODE_CLOSE) == 1
    pieces, truncated = _split(region[start + len(CODE_OPEN):close])
    return parse_codes(pieces, code_system, label_space,
                       has_span=True, format_ok=format_ok, truncated=truncated)
