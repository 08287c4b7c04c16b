"""Prompting baselines of paper Appendix D over a prepared split: zero-shot, few-shot, and their CoT forms.

Few-shot prompts take the three training examples most similar to the note (TF-IDF cosine similarity,
scikit-learn, fitted once on the training notes and computed for the whole split in one pass). Every
prompt is fitted to a token budget with the real tokenizer and chat template: the demonstrations are
shortened first to a fair share of the budget, then the note itself (tiered middle-out truncation of
``llm4icd_plugins.truncation``), so the rendered prompt never exceeds the budget.

Used by ``python -m data_tools.evaluation.infer --prompt zero_shot|few_shot|zero_shot_cot|few_shot_cot``.
Note text is never printed or logged.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llm4icd_plugins import prompts
from llm4icd_plugins.errors import UserError
from llm4icd_plugins.records import Request
from llm4icd_plugins.truncation import count_prompt_tokens_batch, truncate_for_budget
from llm4icd_plugins.variant import Examples, PreparedVariant

N_SHOTS = 3
"""Demonstrations per few-shot prompt (paper App. D)."""
NOTE_SHARE = 0.5
"""Share of the free prompt tokens the note to code may keep when demonstrations compete for them; the
demonstrations split the rest equally, and any share left unused is passed on to the others."""
DEFAULT_BUDGET = 4096
MIN_NOTE_TOKENS = 8
"""Fewest tokens a note or demonstration note is cut to; below that the prompt is considered not to fit."""
MAX_FEATURES = 200_000
_CHUNK = 512  # query notes per similarity block: bounds the dense (chunk × train) score matrix


class BaselineError(UserError):
    """Bad inputs for a baseline prompt, with the file and the fix (never a value's contents)."""


def read_split(data_dir: Path, split: str) -> Examples:
    """The ids, subjects, full note texts and gold codes of a prepared split."""
    return PreparedVariant(data_dir, BaselineError).examples(split)


def prompt_spec(data_dir: Path) -> prompts.PromptSpec:
    """Code system, label scope and corpus of a prepared variant, from its ``stats.json``."""
    return PreparedVariant(data_dir, BaselineError).prompt_spec()


def default_budget(data_dir: Path) -> int:
    """The prompt budget recorded by ``data_tools.build.prepare`` (its --max-prompt-length), else 4096."""
    return PreparedVariant(data_dir, BaselineError).max_prompt_length(DEFAULT_BUDGET)


def retrieve_shots(train_texts: Sequence[str], query_texts: Sequence[str], k: int = N_SHOTS, *,
                   exclude: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Indices (``len(query) × k``) of the ``k`` training notes most similar to each query note.

    TF-IDF (word unigrams, sublinear tf, l2-normalised, fitted on the training notes) cosine similarity;
    ties go to the lower training index. ``exclude[i]`` lists training indices query ``i`` may not use (itself, the
    same patient), so a training note never retrieves its own answer.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    if len(train_texts) < k + (1 if exclude is not None else 0):
        raise BaselineError(f"few-shot needs at least {k} training notes to retrieve from; got {len(train_texts)}")
    # Unigrams with a capped vocabulary: bigrams over tens of thousands of long notes would need gigabytes.
    vectorizer = TfidfVectorizer(sublinear_tf=True, max_df=0.95, max_features=MAX_FEATURES, dtype=np.float32)
    train = vectorizer.fit_transform(train_texts)
    out = np.empty((len(query_texts), k), dtype=np.int64)
    for lo in range(0, len(query_texts), _CHUNK):
        scores = (vectorizer.transform(query_texts[lo: lo + _CHUNK]) @ train.T).toarray()
        if exclude is not None:
            for row in range(scores.shape[0]):
                scores[row, list(exclude[lo + row])] = -np.inf
        # Stable descending order: a negated score with a stable sort keeps lower indices first on ties.
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        out[lo: lo + len(order)] = order
    return out


def _exclusions(query: Examples, train: Examples, same_split: bool) -> list[list[int]] | None:
    by_subject: dict[str, list[int]] = {}
    for j, subject in enumerate(train.subjects):
        if subject is not None:
            by_subject.setdefault(subject, []).append(j)
    by_id = {sid: j for j, sid in enumerate(train.ids)}
    out = []
    for sid, subject in zip(query.ids, query.subjects):
        banned = set(by_subject.get(subject, ())) if subject is not None else set()
        if same_split and sid in by_id:
            banned.add(by_id[sid])
        out.append(sorted(banned))
    return out if any(out) else None


def _share(needs: Sequence[int], available: int, weights: Sequence[float]) -> list[int]:
    """Water-filling: token caps per item in proportion to ``weights``; what an item does not need goes to the rest."""
    caps = [0] * len(needs)
    open_ = [i for i in range(len(needs))]
    left = max(available, 0)
    while open_:
        total = sum(weights[i] for i in open_)
        fits = [i for i in open_ if needs[i] <= left * weights[i] / total]
        if not fits:
            for i in open_:
                caps[i] = int(left * weights[i] / total)
            break
        for i in fits:
            caps[i] = needs[i]
            left -= needs[i]
            open_.remove(i)
    return caps


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    # Called on whole notes too: the "longer than the model maximum" warning would be noise here.
    return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"] if texts else []


def _bare(note: str) -> list[dict]:
    return [{"role": "user", "content": note}]


def _shorten(texts: list[str], caps: list[int], tokenizer, kwargs: dict) -> list[str]:
    """Each text middle-out truncated to about ``cap`` tokens of its own (batched; ``cap`` < 1 → a marker)."""
    out = list(texts)
    # The template overhead of a bare user turn is added to each cap, so about ``cap`` note tokens stay.
    overhead = count_prompt_tokens_batch(tokenizer, [_bare("")], **kwargs)[0]
    todo = [i for i, cap in enumerate(caps) if cap >= 1]
    for i, cap in enumerate(caps):
        if cap < 1:
            out[i] = "[...]"
    if todo:
        results = truncate_for_budget([texts[i] for i in todo], tokenizer, messages_fn=_bare,
                                      budget=[caps[i] + overhead for i in todo], chat_template_kwargs=kwargs or None)
        for i, result in zip(todo, results):
            out[i] = result.text
    return out


def fit_few_shot(kind: str, notes: list[str], shots: list[list[tuple[str, list[str]]]], spec: prompts.PromptSpec,
                 tokenizer, budget: int, chat_template_kwargs: dict | None = None, max_rounds: int = 16):
    """Shorten demonstrations and notes so that every few-shot prompt fits ``budget`` tokens (batched).

    The note to code may keep ``NOTE_SHARE`` of the free tokens, each demonstration an equal part of the
    rest (unused shares are passed on); demonstrations are middle-out truncated to their share, then the
    note to the exact room left, re-checked on the rendered prompt. Answers and instructions are never
    cut; while they take more than half the budget, demonstrations are dropped from the end (recorded in
    the request's ``shot_ids``), and a ``BaselineError`` is raised when even one leaves the notes no room.
    Returns ``(notes, shots, truncated)`` lists.
    """
    kwargs = dict(chat_template_kwargs or {})
    notes, shots = list(notes), [list(s) for s in shots]
    n = len(notes)

    def empty_prompt(i: int) -> list[dict]:
        return prompts.baseline_messages(kind, "", spec, [("", codes) for _, codes in shots[i]])

    overhead = count_prompt_tokens_batch(tokenizer, [empty_prompt(i) for i in range(n)], **kwargs)
    for i in range(n):
        # Notes need room too: demonstrations go while instructions and answers take over half the budget.
        while overhead[i] > budget // 2 and len(shots[i]) > 1:
            shots[i] = shots[i][:-1]
            overhead[i] = count_prompt_tokens_batch(tokenizer, [empty_prompt(i)], **kwargs)[0]
        if overhead[i] + MIN_NOTE_TOKENS * (1 + len(shots[i])) > budget:
            raise BaselineError(f"sample {i}: a {kind} prompt with one demonstration and empty notes already takes "
                                f"{overhead[i]} tokens, over the budget of {budget} less room for the notes; "
                                "raise --prompt-budget")
    full = count_prompt_tokens_batch(
        tokenizer, [prompts.baseline_messages(kind, notes[i], spec, shots[i]) for i in range(n)], **kwargs)
    truncated = [count > budget for count in full]
    over = [i for i in range(n) if truncated[i]]
    originals_shots = {i: list(shots[i]) for i in over}
    # 1. Demonstrations: cut to their share of the free tokens.
    flat = [(i, k) for i in over for k in range(len(shots[i]))]
    needs = dict(zip(over, _encode(tokenizer, [notes[i] for i in over])))
    shot_needs = dict(zip(flat, _encode(tokenizer, [shots[i][k][0] for i, k in flat])))
    shot_caps = {}
    for i in over:
        m = len(shots[i])
        weights = [NOTE_SHARE * m / (1 - NOTE_SHARE)] + [1.0] * m
        caps = _share([len(needs[i])] + [len(shot_needs[(i, k)]) for k in range(m)], budget - overhead[i], weights)
        shot_caps.update({(i, k): caps[k + 1] for k in range(m)})
    cut = [(i, k) for i, k in flat if len(shot_needs[(i, k)]) > shot_caps[(i, k)]]
    cache: dict[tuple[str, int], str] = {}  # a training note retrieved by many prompts is cut once per cap
    keys = list(dict.fromkeys((shots[i][k][0], shot_caps[(i, k)]) for i, k in cut))
    for key, text in zip(keys, _shorten([t for t, _ in keys], [c for _, c in keys], tokenizer, kwargs)):
        cache[key] = text
    for i, k in cut:
        text, codes = shots[i][k]
        shots[i][k] = (cache[(text, shot_caps[(i, k)])], codes)
    # 2. The note: cut to the room the demonstrations leave, shaving the rare prompt still over.
    room = {i: budget - c for i, c in zip(over, count_prompt_tokens_batch(
        tokenizer, [prompts.baseline_messages(kind, "", spec, shots[i]) for i in over], **kwargs))}
    originals = {i: notes[i] for i in over}
    todo = list(over)
    for _ in range(max_rounds):
        if not todo:
            return notes, shots, truncated
        texts = _shorten([originals[i] for i in todo], [room[i] for i in todo], tokenizer, kwargs)
        counts = count_prompt_tokens_batch(tokenizer, [prompts.baseline_messages(kind, t, spec, shots[i])
                                           for i, t in zip(todo, texts)], **kwargs)
        still, squeeze = [], []
        for i, text, count in zip(todo, texts, counts):
            notes[i] = text
            if count > budget:
                room[i] -= count - budget  # tokens merged across the note's edges: take the excess off
                (still if room[i] >= MIN_NOTE_TOKENS else squeeze).append(i)
        if squeeze:  # the demonstrations came out longer than their share: cut them further
            for i in squeeze:
                m = len(shots[i])
                lack = MIN_NOTE_TOKENS - room[i]
                caps = [max(MIN_NOTE_TOKENS, shot_caps[(i, k)] - -(-lack // m) - 1) for k in range(m)]
                shot_caps.update({(i, k): caps[k] for k in range(m)})
                cut_texts = _shorten([originals_shots[i][k][0] for k in range(m)], caps, tokenizer, kwargs)
                shots[i] = [(t, codes) for t, (_, codes) in zip(cut_texts, shots[i])]
            rooms = count_prompt_tokens_batch(
                tokenizer, [prompts.baseline_messages(kind, "", spec, shots[i]) for i in squeeze], **kwargs)
            room.update({i: budget - c for i, c in zip(squeeze, rooms)})
            still += squeeze
        todo = still
    raise BaselineError(f"{len(todo)} {kind} prompt(s) still exceed {budget} tokens after {max_rounds} rounds; "
                        "please report this as a bug")


def build_requests(data_dir: Path, split: str, kind: str, *, tokenizer=None, chat_template_kwargs: dict | None = None,
                   max_samples: int | None = None, budget: int | None = None,
                   n_shots: int = N_SHOTS) -> list[Request]:
    """One ``records.Request`` per sample of ``split`` with the App. D prompt ``kind``, fitted to ``budget``.

    ``budget`` (prompt tokens incl. chat template) defaults to the variant's max prompt length from
    ``stats.json``. Without a tokenizer prompts are not fitted (for inspection only). Each request's
    ``extra`` records the prompt kind, the retrieved shot ids and whether the prompt was cut.
    """
    if kind not in prompts.BASELINE_KINDS:
        raise BaselineError(f"unknown prompt kind {kind!r}; expected one of {prompts.BASELINE_KINDS}")
    data_dir = Path(data_dir)
    spec = prompt_spec(data_dir)
    query = read_split(data_dir, split)
    query = query.head(max_samples)
    budget = budget or default_budget(data_dir)
    kwargs = dict(chat_template_kwargs or {})
    few_shot = kind.startswith("few_shot")
    shot_index: np.ndarray | None = None
    train = None
    if few_shot:
        train = read_split(data_dir, "train")
        shot_index = retrieve_shots(train.texts, query.texts, n_shots,
                                    exclude=_exclusions(query, train, split == "train"))
    notes: list[str] = list(query.texts)
    shots_of: list[list[tuple[str, list[str]]]] = [[] for _ in notes]
    truncated = [False] * len(notes)
    if tokenizer is not None:
        if few_shot:
            shots_of = [[(train.texts[j], train.codes[j]) for j in row] for row in shot_index]
            notes, shots_of, truncated = fit_few_shot(kind, notes, shots_of, spec, tokenizer, budget, kwargs)
        else:
            messages_fn = functools.partial(prompts.baseline_messages, kind, spec=spec)
            results = truncate_for_budget(notes, tokenizer, messages_fn=messages_fn, budget=budget,
                                          chat_template_kwargs=kwargs or None, show_progress=True)
            notes = [r.text for r in results]
            truncated = [r.truncated for r in results]
    elif few_shot:
        shots_of = [[(train.texts[j], train.codes[j]) for j in row] for row in shot_index]
    requests = []
    for i, sample_id in enumerate(query.ids):
        extra = {"prompt_kind": kind, "prompt_truncated": truncated[i]}
        if few_shot:
            extra["shot_ids"] = [train.ids[j] for j in shot_index[i][:len(shots_of[i])]]
        messages = prompts.baseline_messages(kind, notes[i], spec, shots_of[i])
        requests.append(Request(sample_id, messages, list(query.codes[i]), extra))
    return requests
