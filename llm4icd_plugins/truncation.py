"""Fit clinical notes into a prompt token budget, measured with the backbone's real tokenizer and chat template.

LlamaFactory's ``cutoff_len`` silently cuts prompt+answer from the right and verl silently left-truncates
over-long prompts, so every prompt must fit before either sees it. Over-long notes get the tiered
middle-out truncation of the paper (Appendix F): (1) the brief hospital course loses its middle first,
(2) then the rest of the note loses its middle while section headers and the discharge-diagnoses block
are kept, (3) headers and finally the diagnoses block go only when nothing else is left. Removed text is
replaced by a visible marker. Work happens in token space: one batched encode of the rendered prompts
counts them (character offsets only for the over-long ones), cuts are planned on those offsets, and one
batched render + encode re-checks every truncated prompt; the rare one still over (tokens merging across
a cut) is shaved by its excess and re-checked. ``NoteFitter`` does the same for one note at a time, for a
prompt whose text around the note varies per call (PHI hint blocks, at data-loading time).

``count_prompt_tokens`` is the project's one prompt-token count (what verl's prompt filter and
``apply_chat_template(tokenize=True, add_generation_prompt=True)`` give); the truncation counts with it too.

Note: in transformers 5 ``apply_chat_template(tokenize=True)`` returns a dict unless ``return_dict=False``.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import re
import weakref
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

__all__ = ["TruncationResult", "truncate_for_budget", "NoteFitter", "NoteSections", "find_sections",
           "count_prompt_tokens", "count_prompt_tokens_batch"]

MessagesFn = Callable[[str], list[dict]]

_SENTINEL = "\ue000\ue001\ue002"  # private-use code points: never in a real note or template
_BATCH = 128  # prompts per batched render/encode: bounds memory (offsets of long notes are big)
_MAX_SHAVE_ROUNDS = 32
_RATIO_SAMPLE = 8  # prompts counted first to estimate tokens per character
_RESERVED_KWARGS = {"tokenize", "add_generation_prompt", "return_dict", "conversation"}
_MAX_SHAPES = 4096  # prompt shapes cached per truncator (one per distinct text around the note)

# A header is a line that starts with a short lower-case label and a colon ("discharge diagnosis:").
_HEADER_RE = re.compile(r"^[ \t]*([a-z][a-z /&-]{2,40}):", re.MULTILINE | re.IGNORECASE)
_MAX_HEADER_WORDS = 6
_COURSE_RE = re.compile(r"hospital course", re.IGNORECASE)
# Sections that follow the hospital course in MIMIC discharge summaries; sub-headers inside the
# course ("cardiovascular:", "transitional issues:") do not end it.
_AFTER_COURSE_RE = re.compile(
    r"^(?:medications? on admission|admission medications|discharge\b|follow[ -]?up|pertinent results"
    r"|physical exam|disposition|condition at discharge)", re.IGNORECASE)
_DX_RE = re.compile(r"^(?:discharge|final)\s+diagnos[ie]s", re.IGNORECASE)
# Sub-headers that belong to the discharge-diagnoses block ("primary:", "secondary diagnoses:").
_DX_PART_RE = re.compile(
    r"diagnos|^(?:primary|secondary|principal|active|chronic|resolved|inactive|acute|other|additional)\b",
    re.IGNORECASE)

# Removal priority of a note character: lower is cut first.
_COURSE, _TEXT, _HEADER, _DIAGNOSES = 0, 1, 2, 3


@dataclass(frozen=True)
class TruncationResult:
    """A note fitted to its budget; token counts are of the full rendered prompt (template included)."""

    text: str
    tokens_before: int
    tokens_after: int
    truncated: bool


@dataclass(frozen=True)
class NoteSections:
    """Character spans ``(start, end)`` of the parts of a note the truncation treats specially."""

    headers: tuple[tuple[int, int], ...]
    hospital_course: tuple[tuple[int, int], ...]
    """Body of each hospital-course section (its header excluded)."""
    diagnoses: tuple[tuple[int, int], ...]
    """Each discharge-diagnoses block, header included."""


def find_sections(text: str) -> NoteSections:
    """Locate section headers, hospital-course bodies and discharge-diagnoses blocks in a note."""
    headers = []  # (line start, label end incl. colon, label)
    for match in _HEADER_RE.finditer(text):
        label = match.group(1).strip()
        if len(label.split()) <= _MAX_HEADER_WORDS:
            headers.append((match.start(), match.end(), label))
    course, diagnoses = [], []
    for i, (_, label_end, label) in enumerate(headers):
        following = headers[i + 1:]
        if _COURSE_RE.search(label) and not (course and course[-1][1] > headers[i][0]):  # not a sub-header
            end = next((s for s, _, lab in following if _AFTER_COURSE_RE.search(lab)), len(text))
            course.append((label_end, end))
        elif _DX_RE.search(label) and not (diagnoses and diagnoses[-1][1] > headers[i][0]):
            end = next((s for s, _, lab in following if not _DX_PART_RE.search(lab)), len(text))
            diagnoses.append((headers[i][0], end))
    course = [(s, e) for s, e in course if e > s]
    return NoteSections(headers=tuple((s, e) for s, e, _ in headers), hospital_course=tuple(course),
                        diagnoses=tuple(diagnoses))


def count_prompt_tokens(tokenizer, messages: list[dict], **chat_template_kwargs) -> int:
    """Tokens of the prompt ``messages`` as the trainers count them: ``len(tokenizer.apply_chat_template(messages,
    tokenize=True, add_generation_prompt=True, return_dict=False, **chat_template_kwargs))``, computed faster."""
    return count_prompt_tokens_batch(tokenizer, [messages], **chat_template_kwargs)[0]


def count_prompt_tokens_batch(tokenizer, conversations: Sequence[list[dict]], **chat_template_kwargs) -> list[int]:
    """``count_prompt_tokens`` of each conversation, rendered and encoded in batches."""
    kwargs = _template_kwargs(chat_template_kwargs)
    backend = _cached_backend(tokenizer)
    conversations = list(conversations)
    counts: list[int] = []
    for start in range(0, len(conversations), _BATCH):
        counts.extend(_count_texts(tokenizer, backend, _render(tokenizer, conversations[start:start + _BATCH],
                                                                kwargs)))
    return counts


def _template_kwargs(chat_template_kwargs: dict | None) -> dict:
    kwargs = dict(chat_template_kwargs or {})
    bad = _RESERVED_KWARGS & kwargs.keys()
    if bad:
        raise ValueError(f"chat_template_kwargs must not set {sorted(bad)}: the count always renders with "
                         "add_generation_prompt=True and tokenizes the rendered text")
    return kwargs


def _render(tokenizer, conversations: list[list[dict]], kwargs: dict) -> list[str]:
    if not conversations:
        return []
    return list(tokenizer.apply_chat_template(conversations, tokenize=False, add_generation_prompt=True, **kwargs))


def _count_texts(tokenizer, backend, texts: list[str]) -> list[int]:
    """Token counts of rendered prompts, as ``apply_chat_template(tokenize=True)`` gives them (it encodes the
    rendered text without adding special tokens)."""
    if not texts:
        return []
    if backend is None:
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]
    return [len(e) for e in backend.encode_batch_fast(texts, add_special_tokens=False)]


def truncate_for_budget(notes: Sequence[str], tokenizer, *, messages_fn: MessagesFn | Sequence[MessagesFn],
                        budget: int | Sequence[int], chat_template_kwargs: dict | None = None,
                        num_workers: int = 1, marker: str = "[...]",
                        show_progress: bool = False) -> list[TruncationResult]:
    """Shorten each note so that its prompt ``messages_fn(note)`` renders to at most ``budget`` tokens.

    The count is ``count_prompt_tokens(tokenizer, messages_fn(text), **chat_template_kwargs)``; ``budget`` is one
    int or one per note. Notes that fit are returned unchanged. ``messages_fn`` (one function, or one per note
    when the text around each note differs) must put the note verbatim into one message content (the
    instruction, format lines and anything else around it are never touched). Raises
    ``ValueError`` when even an empty note does not fit a budget, naming the note and the overhead.
    ``num_workers > 1`` spreads chunks of notes over processes (fork).
    """
    notes = list(notes)
    budgets = _budgets(budget, len(notes))
    fns = _messages_fns(messages_fn, len(notes))
    kwargs = _checked_kwargs(tokenizer, chat_template_kwargs, "truncate_for_budget")
    for i, note in enumerate(notes):
        if not isinstance(note, str):
            raise ValueError(f"note {i} is {type(note).__name__}, not str; fill or drop missing notes first")
    if not notes:
        return []
    worker = _Truncator(tokenizer, fns[0], kwargs, marker)
    chunks = [(start, min(start + _BATCH, len(notes))) for start in range(0, len(notes), _BATCH)]
    progress = _progress(show_progress, len(notes))
    results: list[TruncationResult] = []
    try:
        if num_workers <= 1 or len(chunks) == 1:
            for start, end in chunks:
                results.extend(worker.run(notes[start:end], budgets[start:end], start, fns[start:end]))
                progress.update(end - start)
        else:
            for chunk in _parallel(worker, notes, budgets, fns, chunks, num_workers):
                results.extend(chunk)
                progress.update(len(chunk))
    finally:
        progress.close()
    return results


def _messages_fns(messages_fn, n: int) -> list[MessagesFn]:
    if callable(messages_fn):
        return [messages_fn] * n
    fns = list(messages_fn)
    if len(fns) != n or not all(callable(f) for f in fns):
        raise ValueError(f"messages_fn is a sequence of {len(fns)} entries for {n} notes; give one function or "
                         "one per note")
    return fns


def _checked_kwargs(tokenizer, chat_template_kwargs: dict | None, who: str) -> dict:
    """The chat-template arguments a count may take, and a fast tokenizer (offsets need one)."""
    kwargs = _template_kwargs(chat_template_kwargs)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{who} needs a fast (Rust) tokenizer for offsets; got {type(tokenizer).__name__}. "
                         "Load it with AutoTokenizer.from_pretrained(..., use_fast=True)")
    return kwargs


class NoteFitter:
    """One note at a time, for a prompt whose text around the note changes per call (a PHI hint block): the
    tiered truncation of ``truncate_for_budget``, planned on one offsets encoding of the prompt with the whole
    note, and ``count``, ``count_prompt_tokens`` with this fitter's tokenizer and template arguments."""

    def __init__(self, tokenizer, *, chat_template_kwargs: dict | None = None, marker: str = "[...]"):
        self._worker = _Truncator(tokenizer, None, _checked_kwargs(tokenizer, chat_template_kwargs, "NoteFitter"),
                                  marker)

    def count(self, messages: list[dict]) -> int:
        """Tokens of ``messages`` rendered with the generation prompt."""
        worker = self._worker
        return worker._count(worker._render([messages]))[0]

    def fit(self, note: str, messages_fn: Callable[[str], list[dict]], budget: int) -> TruncationResult | None:
        """``note`` cut (tiered, as ``truncate_for_budget``) so that ``messages_fn(note)`` takes at most ``budget``
        tokens; unchanged if it fits; None if the prompt without any note is already over ``budget``."""
        worker = self._worker
        rendered = worker._render([messages_fn(note)])[0]
        encoding = worker._offsets([rendered])[0]
        before = len(encoding)
        if before <= budget:
            return TruncationResult(note, before, before, False)
        around = worker._render([messages_fn(_SENTINEL)])[0]
        if around.count(_SENTINEL) != 1:
            raise ValueError("messages_fn(note) must put the note verbatim into one message content")
        prefix, suffix = around.split(_SENTINEL)
        shown = rendered[len(prefix):len(rendered) - len(suffix)]
        lo = note.find(shown)
        if not (rendered.startswith(prefix) and rendered.endswith(suffix) and lo >= 0 and not note[:lo].strip()
                and not note[lo + len(shown):].strip()):
            raise ValueError("messages_fn(note) must put the note verbatim into one message content")
        plan = worker._plan(0, note, lo, lo + len(shown), len(prefix), encoding.offsets, budget, messages_fn)
        results = [TruncationResult(note, before, before, False)]
        if worker._fit([plan], [budget], results):  # the note is gone and the prompt is still over
            return None
        return TruncationResult(results[0].text, before, results[0].tokens_after, True)


def _budgets(budget, n: int) -> list[int]:
    if isinstance(budget, (int, np.integer)) and not isinstance(budget, bool):
        budgets = [int(budget)] * n
    else:
        budgets = [int(b) for b in budget]
        if len(budgets) != n:
            raise ValueError(f"budget has {len(budgets)} entries for {n} notes; give one int or one per note")
    for i, b in enumerate(budgets):
        if b <= 0:
            raise ValueError(f"budget for note {i} is {b}; budgets are positive token counts")
    return budgets


def _progress(show: bool, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="truncate", unit="note", disable=not show)


# ---- parallel driver -------------------------------------------------------------------------------

_FORK_STATE: tuple | None = None  # (truncator, notes, budgets, messages fns), inherited by forked workers


def _run_chunk(bounds: tuple[int, int]) -> list[TruncationResult]:
    worker, notes, budgets, fns = _FORK_STATE
    start, end = bounds
    return worker.run(notes[start:end], budgets[start:end], start, fns[start:end])


def _parallel(worker, notes, budgets, fns, chunks, num_workers):
    global _FORK_STATE
    if "fork" not in multiprocessing.get_all_start_methods():
        raise ValueError("num_workers > 1 needs the 'fork' start method (Linux); use num_workers=1 here")
    _FORK_STATE = (worker, notes, budgets, fns)
    # Workers share the cores: the tokenizer's own thread pool in each would oversubscribe them.
    saved = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        with multiprocessing.get_context("fork").Pool(num_workers) as pool:
            if saved is None:
                os.environ.pop("TOKENIZERS_PARALLELISM")
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = saved
            yield from pool.imap(_run_chunk, chunks)
    finally:
        _FORK_STATE = None
        if saved is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved


# ---- the truncation itself -------------------------------------------------------------------------

@dataclass(frozen=True)
class _Shape:
    """The rendered prompt around a note: ``prefix + note + suffix``; ``overhead`` = tokens of the empty note."""

    prefix: str
    suffix: str
    overhead: int


@dataclass
class _Plan:
    """An over-long note in token space: which tokens may go, in which order, and the target size."""

    index: int  # position in the chunk
    note: str
    lo: int  # note[lo:hi] is what the template shows verbatim (a trimming template drops the rest)
    hi: int
    bounds: np.ndarray  # token k of note[lo:hi] spans bounds[k]:bounds[k+1]; gaps go with the token before
    order: np.ndarray  # token indices, the first cut first
    word_starts: np.ndarray  # first token of each word: cuts never split a word
    blank: np.ndarray  # token k is whitespace only
    target: int  # tokens the note may take inside the prompt
    messages_fn: MessagesFn  # the prompt around the note


class _Truncator:
    """Truncation for one tokenizer / template / messages_fn; caches the prompt shapes it has seen."""

    def __init__(self, tokenizer, messages_fn, kwargs, marker):
        self.tokenizer = tokenizer
        self.messages_fn = messages_fn
        self.kwargs = kwargs
        self.marker = marker
        self.shapes: dict[str, _Shape] = {}
        self.generic: _Shape | None = None  # the shape of messages_fn(sentinel), if the note shows verbatim
        self.generic_done = False
        self.backend = _cached_backend(tokenizer)
        self.tokens_per_char: float | None = None  # running estimate, to spot clearly over-long prompts
        self.marker_cost = max(self._count([f" {marker} ", f"\n{marker}\n"]))

    def _render(self, conversations: list[list[dict]]) -> list[str]:
        return _render(self.tokenizer, conversations, self.kwargs)

    def _count(self, texts: list[str]) -> list[int]:
        return _count_texts(self.tokenizer, self.backend, texts)

    def _offsets(self, texts: list[str]) -> list:
        """Encodings with character offsets (slower than counting: only for prompts that need cutting)."""
        if self.backend is None:
            return self.tokenizer(texts, add_special_tokens=False).encodings
        return self.backend.encode_batch(texts, add_special_tokens=False)

    def _shape_of(self, sentinel_messages: list[dict]) -> _Shape | None:
        """The shape of a prompt whose note is the sentinel; None if the template does not show it once."""
        key = json.dumps(sentinel_messages, sort_keys=True, ensure_ascii=False, default=str)
        if key not in self.shapes:
            if len(self.shapes) >= _MAX_SHAPES:  # a prompt that differs per note: keep memory bounded
                self.shapes.clear()
            rendered = self._render([sentinel_messages])[0]
            shape = None
            if rendered.count(_SENTINEL) == 1:
                prefix, suffix = rendered.split(_SENTINEL)
                overhead = self._count(self._render([_replace_note(sentinel_messages, _SENTINEL, "")]))[0]
                shape = _Shape(prefix, suffix, overhead)
            self.shapes[key] = shape
        return self.shapes[key]

    def _candidate_shapes(self, messages: list[dict], note: str, messages_fn: MessagesFn):
        if not self.generic_done:
            self.generic, self.generic_done = self._shape_of(self.messages_fn(_SENTINEL)), True
        if self.generic is not None and messages_fn is self.messages_fn:
            yield self.generic
        # A messages_fn whose text around the note varies per note: one shape per distinct variant.
        sentinel_messages = _sentinel_messages(messages, note)
        if sentinel_messages is not None and (shape := self._shape_of(sentinel_messages)) is not None:
            yield shape

    def _locate(self, i: int, note: str, messages: list[dict], rendered: str,
                messages_fn: MessagesFn) -> tuple[_Shape, int, int]:
        """The prompt shape of a note and the span ``note[lo:hi]`` that ``rendered`` shows."""
        for shape in self._candidate_shapes(messages, note, messages_fn):
            end = len(rendered) - len(shape.suffix)
            if end >= len(shape.prefix) and rendered.startswith(shape.prefix) and rendered.endswith(shape.suffix):
                shown = rendered[len(shape.prefix):end]
                lo = note.find(shown)
                if lo >= 0 and not note[:lo].strip() and not note[lo + len(shown):].strip():
                    return shape, lo, lo + len(shown)
        raise ValueError(f"note {i}: messages_fn(note) must put the note verbatim into one message content "
                         "(the prompt around it is measured once per shape and reused); it does not")

    def _encode_chunk(self, rendered: list[str], budgets: list[int]) -> tuple[list[int], dict]:
        """Token counts of all prompts, and offsets-carrying encodings of those over their budget.

        Counting is about twice as fast as encoding with offsets; a prompt that is clearly too long by the
        running tokens-per-character estimate is encoded with offsets straight away (no second pass).
        """
        counts: list[int | None] = [None] * len(rendered)
        encodings: dict[int, object] = {}
        if self.tokens_per_char is None:  # first chunk: estimate from a few prompts
            sample = rendered[:_RATIO_SAMPLE]
            counts[:len(sample)] = self._count(sample)
            self.tokens_per_char = sum(counts[:len(sample)]) / max(1, sum(map(len, sample)))
        sure = [j for j, (r, b, c) in enumerate(zip(rendered, budgets, counts))
                if c is None and len(r) * self.tokens_per_char > 1.25 * b]
        for j, enc in zip(sure, self._offsets([rendered[j] for j in sure])):
            counts[j], encodings[j] = len(enc), enc
        rest = [j for j, c in enumerate(counts) if c is None]
        for j, c in zip(rest, self._count([rendered[j] for j in rest])):
            counts[j] = c
        over = [j for j, c in enumerate(counts) if c > budgets[j] and j not in encodings]
        encodings.update(zip(over, self._offsets([rendered[j] for j in over])))
        chars = sum(map(len, rendered))
        if chars:
            self.tokens_per_char = sum(counts) / chars
        return counts, encodings

    def run(self, notes: list[str], budgets: list[int], offset: int,
            fns: Sequence[MessagesFn] | None = None) -> list[TruncationResult]:
        """Results for a chunk of notes; ``offset`` is the chunk's position, for error messages; ``fns`` the
        prompt of each note (default: this truncator's one)."""
        fns = list(fns) if fns is not None else [self.messages_fn] * len(notes)
        conversations = [fn(note) for fn, note in zip(fns, notes)]
        rendered = self._render(conversations)
        counts, encodings = self._encode_chunk(rendered, budgets)
        results: list[TruncationResult | None] = [None] * len(notes)
        plans: list[_Plan] = []
        for j, (note, budget, n_tokens) in enumerate(zip(notes, budgets, counts)):
            shape, lo, hi = self._locate(offset + j, note, conversations[j], rendered[j], fns[j])
            if shape.overhead > budget:
                raise ValueError(
                    f"note {offset + j}: the prompt without any note already takes {shape.overhead} tokens, over "
                    f"its budget of {budget}; raise the budget (max prompt length / cutoff_len) or shorten the "
                    "instruction")
            results[j] = TruncationResult(note, n_tokens, n_tokens, False)
            if n_tokens > budget:
                plans.append(self._plan(j, note, lo, hi, len(shape.prefix), encodings[j].offsets, budget, fns[j]))
        if self._fit(plans, budgets, results):
            raise RuntimeError("a prompt stayed over its budget with its note removed; please report this as a bug")
        return results  # type: ignore[return-value]

    @staticmethod
    def _plan(j: int, note: str, lo: int, hi: int, start: int, offsets, budget: int, messages_fn: MessagesFn) -> _Plan:
        spans = np.fromiter(itertools.chain.from_iterable(offsets), dtype=np.int64,
                            count=2 * len(offsets)).reshape(-1, 2)
        # Note tokens lie wholly inside the note; a token straddling a template boundary stays fixed.
        inside = (spans[:, 0] >= start) & (spans[:, 1] <= start + hi - lo)
        note_spans = spans[inside] - start
        n = len(note_spans)
        bounds = np.zeros(n + 1, dtype=np.int64)
        if n:
            bounds[1:-1] = note_spans[1:, 0]
            bounds[-1] = note_spans[-1, 1]
        body = note[lo:hi]
        word_starts, blank = _token_shapes(body, bounds)
        return _Plan(j, note, lo, hi, bounds, _cut_order(body, bounds), word_starts, blank,
                     target=budget - (len(spans) - n), messages_fn=messages_fn)

    def _fit(self, plans: list[_Plan], budgets: list[int], results: list) -> list[_Plan]:
        """Cut every plan to its target, then re-render; shave the rare prompt still over its budget (the one
        "shave until it fits" loop). Returns the plans that do not fit even with the note gone."""
        failed: list[_Plan] = []
        for _ in range(_MAX_SHAVE_ROUNDS):
            if not plans:
                return failed
            texts = [self._cut(plan) for plan in plans]
            counts = self._count(self._render([plan.messages_fn(t) for plan, t in zip(plans, texts)]))
            over = []
            for plan, text, count in zip(plans, texts, counts):
                budget = budgets[plan.index]
                if count <= budget:
                    before = results[plan.index].tokens_before
                    results[plan.index] = TruncationResult(text, before, count, text != plan.note)
                elif plan.target <= 0:  # the note is gone and the prompt is still over
                    failed.append(plan)
                else:
                    # Tokens merged or split across a cut or a marker: take the excess off the target.
                    plan.target -= count - budget
                    over.append(plan)
            plans = over
        raise RuntimeError(f"could not fit a note in {_MAX_SHAVE_ROUNDS} rounds; please report this as a bug")

    def _cut(self, plan: _Plan) -> str:
        """The note with the fewest tokens cut (in ``plan.order``) so that kept tokens + markers fit the target."""
        n = len(plan.bounds) - 1
        if plan.target <= 0 or n == 0:
            return plan.note[:plan.lo] + plan.note[plan.hi:]

        def cost(k: int):
            removed = _removal(plan, k)
            runs = int(removed[0]) + int(np.count_nonzero(removed[1:] & ~removed[:-1]))
            return n - int(removed.sum()) + runs * self.marker_cost, removed

        low = max(0, n - plan.target)  # below this, the kept tokens alone exceed the target
        c, removed = cost(low)
        if c > plan.target:
            # Smallest feasible k by bisection (cost is not strictly monotone, so keep a feasible upper end).
            high, high_removed = n, None
            while low + 1 < high:
                mid = (low + high) // 2
                c, mid_removed = cost(mid)
                if c <= plan.target:
                    high, high_removed = mid, mid_removed
                else:
                    low = mid
            if high_removed is None:
                c, high_removed = cost(n)
                if c > plan.target:  # not even the marker fits
                    return plan.note[:plan.lo] + plan.note[plan.hi:]
            removed = high_removed
        body = _assemble(plan.note[plan.lo:plan.hi], plan.bounds, removed, self.marker)
        return plan.note[:plan.lo] + body + plan.note[plan.hi:]


_BACKENDS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # keeps BPE caches warm across calls


def _cached_backend(tokenizer):
    try:
        if tokenizer not in _BACKENDS:
            _BACKENDS[tokenizer] = _private_backend(tokenizer)
        return _BACKENDS[tokenizer]
    except TypeError:  # not weak-referenceable
        return _private_backend(tokenizer)


def _private_backend(tokenizer):
    """A copy of the Rust tokenizer set up as the transformers wrapper sets it for ``apply_chat_template``
    (no truncation or padding; special tokens per ``split_special_tokens``), or None to use the wrapper.

    Calling it directly allows ``encode_batch_fast`` (no offsets) for counting; a probe checks that the
    counts agree with the wrapper's.
    """
    try:
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.no_truncation()
        backend.no_padding()
        backend.encode_special_tokens = bool(getattr(tokenizer, "split_special_tokens", False))
        probe = ["<|im_start|>user\nA  probe: 401.9, résumé\t[...]\n\n<|im_end|>\n", " x", ""]
        wrapper = [len(ids) for ids in tokenizer(probe, add_special_tokens=False)["input_ids"]]
        if [len(e) for e in backend.encode_batch_fast(probe, add_special_tokens=False)] != wrapper:
            return None
        if [len(e) for e in backend.encode_batch(probe, add_special_tokens=False)] != wrapper:
            return None
        return backend
    except Exception:  # an older tokenizers without encode_batch_fast, a wrapper without a backend
        return None


def _sentinel_messages(messages: list[dict], note: str) -> list[dict] | None:
    """``messages`` with the last verbatim occurrence of the note replaced by the sentinel."""
    if not note:
        return None
    for m in range(len(messages) - 1, -1, -1):
        content = messages[m].get("content")
        if isinstance(content, str):
            pos = content.rfind(note)
            if pos >= 0:
                out = [dict(msg) for msg in messages]
                out[m]["content"] = content[:pos] + _SENTINEL + content[pos + len(note):]
                return out
    return None


def _replace_note(messages: list[dict], old: str, new: str) -> list[dict]:
    out = []
    for msg in messages:
        msg = dict(msg)
        if isinstance(msg.get("content"), str):
            msg["content"] = msg["content"].replace(old, new)
        out.append(msg)
    return out


_WORD_CHAR = np.zeros(128, dtype=bool)
for _c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789":
    _WORD_CHAR[ord(_c)] = True
_SPACE_CHAR = np.zeros(128, dtype=bool)
for _c in " \t\n\r\f\v":
    _SPACE_CHAR[ord(_c)] = True


def _token_shapes(body: str, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First token of each word (a token continuing a word starts with a word character right after one),
    and which tokens are whitespace only."""
    n = len(bounds) - 1
    codes = np.frombuffer(body.encode("utf-32-le"), dtype=np.uint32)
    ascii_ = codes < 128
    small = np.where(ascii_, codes, 0)
    word = np.where(ascii_, _WORD_CHAR[small], True)  # non-ASCII letters count as word characters
    space = ascii_ & _SPACE_CHAR[small]
    starts = bounds[:-1]
    cont = np.zeros(n, dtype=bool)
    if n > 1:
        s = starts[1:]
        ok = (s > 0) & (s < len(codes))
        prev = np.where(ok, s - 1, 0)
        cur = np.where(ok, s, 0)
        cont[1:] = (ok & word[prev] & word[cur]) | (s == starts[:-1])  # same start: pieces of one character
    nonspace_cum = np.concatenate(([0], np.cumsum(~space)))
    blank = nonspace_cum[bounds[1:]] == nonspace_cum[bounds[:-1]]
    return np.flatnonzero(~cont), blank


def _removal(plan: _Plan, k: int) -> np.ndarray:
    """Tokens removed when the first ``k`` of ``plan.order`` go, widened to whole words and closing
    whitespace-only gaps between two cuts (one marker instead of two)."""
    n = len(plan.bounds) - 1
    removed = np.zeros(n, dtype=bool)
    removed[plan.order[:k]] = True
    if not k:
        return removed
    word_lengths = np.diff(np.append(plan.word_starts, n))
    removed = np.repeat(np.maximum.reduceat(removed, plan.word_starts), word_lengths)
    kept = ~removed
    run_start = np.flatnonzero(kept & np.concatenate(([True], removed[:-1])))
    run_end = np.flatnonzero(kept & np.concatenate((removed[1:], [True]))) + 1
    nonblank_cum = np.concatenate(([0], np.cumsum(~plan.blank)))
    gaps = (run_start > 0) & (run_end < n) & (nonblank_cum[run_end] == nonblank_cum[run_start])
    for s, e in zip(run_start[gaps], run_end[gaps]):
        removed[s:e] = True
    return removed


def _cut_order(text: str, bounds: np.ndarray) -> np.ndarray:
    """Token indices in the order they are cut: hospital course, text, headers, diagnoses; middle-out in each."""
    n = len(bounds) - 1
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    sections = find_sections(text)
    char_class = np.full(len(text) + 1, _TEXT, dtype=np.int8)
    char_class[-1] = _COURSE  # end sentinel for reduceat; the lowest class never raises a maximum
    for s, e in sections.hospital_course:
        char_class[s:e] = _COURSE
    for s, e in sections.headers:
        char_class[s:e] = _HEADER
    for s, e in sections.diagnoses:
        char_class[s:e] = _DIAGNOSES
    starts = np.clip(bounds[:-1], 0, len(text))
    # A token takes the highest class of its characters, so a token touching a header is kept with it.
    token_class = np.maximum.reduceat(char_class, starts)
    # Middle-out: distance of each token to the centre of its region (its section, or the whole note).
    position = np.arange(n, dtype=np.float64) + 0.5
    centre = np.full(n, n / 2.0)
    for spans, cls in ((sections.hospital_course, _COURSE), (sections.diagnoses, _DIAGNOSES)):
        for s, e in spans:
            t0, t1 = np.searchsorted(starts, [s, e])
            centre[t0:t1] = np.where(token_class[t0:t1] == cls, (t0 + t1) / 2.0, centre[t0:t1])
    return np.lexsort((np.abs(position - centre), token_class)).astype(np.int64)


def _assemble(body: str, bounds: np.ndarray, removed: np.ndarray, marker: str) -> str:
    """The kept token spans of ``body`` joined, each removed run replaced by one marker."""
    n = len(removed)
    edges = np.flatnonzero(np.diff(removed.astype(np.int8))) + 1
    run_starts = np.concatenate(([0], edges))
    run_ends = np.concatenate((edges, [n]))
    pieces: list[str] = []
    for s, e in zip(run_starts, run_ends):
        span = body[bounds[s]:bounds[e]]
        if not removed[s]:
            pieces.append(span)
            continue
        sep = "\n" if "\n" in span else " "
        if pieces and not pieces[-1].endswith(("\n", " ")):
            pieces.append(sep)
        pieces.append(marker)
        if bounds[e] < len(body) and body[bounds[e]] not in "\n ":
            pieces.append(sep)
    pieces.append(body[bounds[n]:])
    return "".join(pieces)
