"""The one deterministic answer parser: model response text → predicted ICD code set (paper Sec. 3).

Reward, inference, evaluation and PHI all call ``parse_response``, so a code counts the same way
everywhere. Rules, in order:

1. Thinking. Only text after the LAST ``</think>`` is the answer (all text if there is none). An
   unclosed ``<think>`` in the answer swallows everything after it (the model never finished thinking).
2. Span. The answer's LAST closed ``<code>…</code>`` span is read: the last ``</code>`` and the last
   ``<code>`` before it (so ``<code><code>a</code>`` reads ``a``). A stray ``</code>`` inside that span
   separates codes like a comma (``<code>401.9</code>, 584.9</code>`` reads both; format not ok). Tags
   match exactly, lower case: ``<CODE>``, ``< code>`` or a tag broken by a zero-width space are plain
   text. No span → no codes.
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
``predicted_codes`` is Ŷ itself, the one rule reward, evaluation and PHI refresh share: ``codes`` plus
the unknown codes that are gold codes of the same row (MIMIC-III's retired codes) and in the label space.
Invariant: ``n_tokens == len(codes) + n_unknown + n_off_label + n_duplicates + n_malformed``.

``parse_response`` never raises on any ``text`` (non-strings give an empty result) and runs in time
linear in the input: only ``str.rfind``/``find``/``count``/``split``, no regex over the whole text.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any, NamedTuple

from llm4icd_plugins.normalize import canonicalize

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CODE_OPEN, CODE_CLOSE = "<code>", "</code>"
SEPARATORS = (",", ";", "\n")  # (rule 3; parse_response splits on them inline)
MAX_TOKENS = 2048
"""Pieces read per span. Real admissions carry at most ~100 codes (MIMIC-IV full); a bound keeps a
degenerate, never-ending list from costing more than a few milliseconds per response."""

_MEMO_SIZE = 1 << 16
_CACHEABLE_LEN = 128  # longer tokens are never codes; not caching them bounds the memo's memory
# Token kinds, in the order of rule 4.
_BLANK, _MALFORMED, _KEPT, _UNKNOWN, _OFF_LABEL = range(5)
_MEMOS: dict[tuple, tuple[Any, dict, dict]] = {}


class ParseResult(NamedTuple):
    """What the parser found in one response. Counts are per token except the ``n_unknown``/``n_off_label``
    counts, which count distinct codes (the length of ``unknown``/``off_label``). Immutable (a tuple)."""

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
_new = tuple.__new__  # builds a NamedTuple from a full tuple without its Python-level __new__ (hot path)


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


def _classify(token: str, code_system: Any, allowed: Collection[str] | None) -> tuple[int, str | None]:
    """Rule 4 for one string token: its kind and canonical code."""
    if not token.strip():
        return _BLANK, None
    code = canonicalize(token)
    if code is None:
        return _MALFORMED, None
    if allowed is not None and code in allowed:
        return _KEPT, code
    if code_system is not None:
        resolved = code_system.resolve(code)
        if resolved is None:
            return _UNKNOWN, code
        code = resolved
    return (_KEPT if allowed is None or code in allowed else _OFF_LABEL), code


def _memos(code_system: Any, label_space: Any) -> tuple[dict, dict]:
    """Per (code system, label space): token → (kind, code), and token → code for tokens that are kept codes.

    The same few thousand tokens recur in every batch. Shared only for immutable label spaces (None,
    frozenset, LabelSpace); any other collection gets fresh ones.
    """
    if label_space is None or isinstance(label_space, frozenset):
        label_key: Any = label_space
    elif isinstance(getattr(label_space, "index", None), dict):
        label_key = id(label_space)
    else:
        return {}, {}
    try:
        entry = _MEMOS.get((code_system, label_key))
    except TypeError:  # an unhashable code-system-like object
        return {}, {}
    if entry is None or entry[0] is not label_space:
        if len(_MEMOS) >= 64:
            _MEMOS.clear()
        entry = _MEMOS[(code_system, label_key)] = (label_space, {}, {})  # holds label_space: its id stays unique
    elif len(entry[1]) >= _MEMO_SIZE:
        entry[1].clear()
        entry[2].clear()
    return entry[1], entry[2]


_last_context: tuple = (None, None, None)  # (code system, label space, (allowed, memo, kept_memo)), swapped whole


def _context(code_system: Any, label_space: Any) -> tuple:
    """``_membership`` and ``_memos`` of a (code system, label space) pair; the last pair is kept (one per batch)."""
    global _last_context
    last = _last_context
    if last[2] is not None and last[0] is code_system and last[1] is label_space:
        return last[2]
    context = (_membership(label_space), *_memos(code_system, label_space))
    shared = label_space is None or isinstance(label_space, frozenset)
    if shared or isinstance(getattr(label_space, "index", None), dict):
        _last_context = (code_system, label_space, context)
    return context


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
    return _parse_tokens(tokens, code_system, label_space, has_span, format_ok, truncated)


def _all_kept(tokens: list, kept_memo: dict) -> dict | None:
    """The distinct codes of ``tokens`` when every one is a known, kept code (the common case), else None."""
    try:
        fast = dict.fromkeys(map(kept_memo.get, tokens))
    except TypeError:  # an unhashable item in a JSON list
        return None
    return None if None in fast else fast


def _parse_tokens(tokens: Iterable[Any], code_system: Any, label_space: Any, has_span: bool, format_ok: bool,
                  truncated: bool) -> ParseResult:
    last = _last_context  # ``_context`` inlined: this runs once per response
    if last[2] is not None and last[0] is code_system and last[1] is label_space:
        allowed, memo, kept_memo = last[2]
    else:
        allowed, memo, kept_memo = _context(code_system, label_space)
    fast = _all_kept(tokens, kept_memo) if type(tokens) is list and kept_memo else None
    if fast is not None:
        n = len(tokens)
        return _new(ParseResult, (tuple(fast), (), (), n, 0, 0, 0, n - len(fast), has_span, format_ok, truncated))
    seen: dict[str, int] = {}
    n_tokens = n_malformed = n_duplicates = n_other = 0
    for token in tokens:
        if type(token) is not str:
            if isinstance(token, str):
                token = str(token)
            else:
                n_tokens += 1
                n_malformed += 1
                continue
        hit = memo.get(token)
        if hit is None:
            hit = _classify(token, code_system, allowed)
            if len(token) <= _CACHEABLE_LEN:
                memo[token] = hit
                if hit[0] == _KEPT:
                    kept_memo[token] = hit[1]
        kind, code = hit
        if kind <= _MALFORMED:
            if kind == _MALFORMED:
                n_tokens += 1
                n_malformed += 1
            continue
        n_tokens += 1
        if code in seen:
            n_duplicates += 1
        else:
            seen[code] = kind
            if kind != _KEPT:
                n_other += 1
    if not n_other:
        return _new(ParseResult, (tuple(seen), (), (), n_tokens, n_malformed, 0, 0, n_duplicates,
                                  has_span, format_ok, truncated))
    kept = tuple(c for c, k in seen.items() if k == _KEPT)
    unknown = tuple(c for c, k in seen.items() if k == _UNKNOWN)
    off_label = tuple(c for c, k in seen.items() if k == _OFF_LABEL)
    return ParseResult(kept, unknown, off_label, n_tokens, n_malformed, len(unknown), len(off_label), n_duplicates,
                       has_span, format_ok, truncated)


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


def parse_response(text: Any, code_system: Any = None, label_space: Any = None) -> ParseResult:
    """Parse a model response into a ``ParseResult`` (rules in the module docstring); never raises on ``text``.

    ``code_system`` is a ``codes.CodeSystem`` (or None: no table check); ``label_space`` a
    ``codes.LabelSpace`` or any collection of canonical codes (or None: no label filter).
    """
    if not isinstance(text, str):
        return _EMPTY
    if THINK_OPEN in text or THINK_CLOSE in text:
        region, think_clean = _answer_region(text)
    else:
        region, think_clean = text, True
    close = region.rfind(CODE_CLOSE)
    start = region.rfind(CODE_OPEN, 0, close) if close >= 0 else -1
    if start < 0:
        return _EMPTY
    content = region[start + len(CODE_OPEN):close]
    stray = CODE_CLOSE in content
    if stray:
        content = content.replace(CODE_CLOSE, ",")
    # one <code> and one </code>: the first of each is the span's own, and no <code> follows the span
    format_ok = (think_clean and not stray and region.find(CODE_OPEN) == start and region.find(CODE_CLOSE) == close
                 and region.rfind(CODE_OPEN) == start)
    if ";" in content or "\n" in content:
        content = content.replace(";", ",").replace("\n", ",")
    pieces = content.split(",", MAX_TOKENS)
    if len(pieces) > MAX_TOKENS:
        return _parse_tokens(pieces[:MAX_TOKENS], code_system, label_space, True, format_ok, True)
    return _parse_tokens(pieces, code_system, label_space, True, format_ok, False)


class Prediction(NamedTuple):
    """Ŷ of one answer (``codes``), the parse it came from, and how many unknown gold codes were rescued."""

    codes: tuple[str, ...]
    parsed: ParseResult
    n_rescued: int


def predicted_codes(answer: Any, gold: Collection[str], code_system: Any = None,
                    label_space: Any = None) -> Prediction:
    """The paper's Ŷ for one row: the one rule reward, evaluation and PHI refresh apply.

    ``answer`` is a raw response (parsed with ``parse_response``) or a list of code tokens. Malformed
    codes are dropped; undotted codes are resolved against ``code_system``; codes it does not know are
    dropped unless they are a gold code of this row (``gold``: canonical, resolved codes) inside the
    label space; with a ``label_space`` off-label codes are dropped (listed in ``parsed.off_label``).
    """
    if isinstance(answer, (list, tuple)):
        parsed = parse_codes(answer, code_system, label_space)
    else:
        parsed = parse_response(answer, code_system, label_space)
    if not parsed.unknown:
        return _new(Prediction, (parsed.codes, parsed, 0))
    allowed = _membership(label_space)
    rescued = tuple(c for c in parsed.unknown if c in gold and (allowed is None or c in allowed))
    return Prediction(parsed.codes + rescued, parsed, len(rescued))
