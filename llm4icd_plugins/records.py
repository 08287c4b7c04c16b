"""Prediction records: the one definition of a prediction JSONL line, its one reader and its one rule for Ŷ.

A line is one JSON object per sample, as ``data_tools.evaluation.infer`` writes it (``response_record``,
``voted_record``) and ``evaluate``, ``verify`` and ``phi.refresh`` read it (``read_predictions``)::

    {"id": "104623", "response": "<code>401.9, 486</code>", "pred": ["401.9", "486"], "gold": ["401.9"], ...}

- ``id``: the sample id (prepare's ``extra_info.sample_id``), a string or integer, once per file.
- ``response``: the raw model answer (``null`` reads as an empty answer).
- ``pred``: a list of code strings. Informational on a line with a ``response``; the prediction itself on a
  line without one (a voted answer, an external coder's codes).
- ``gold``: a list of code strings; required where the reader scores (``require_gold``).
- ``votes``: on a voted line, each code's share of the K samples (``{code: share in [0, 1]}``).
- Anything else (model, parse counts, votes, token counts, prompt kind, ...) is for people; readers ignore it.

Precedence, the one rule: Ŷ of a line is always re-derived from its raw ``response`` with
``parsing.predicted_codes`` (the paper's rule, the reward's); the stored ``pred`` list is never preferred, since
it may have been filtered through the tables and lost a retired gold code the model did predict. A line
without a response gets Ŷ from its ``pred`` list by the same rule.

Codes the ICD tables do not know: a predicted one is dropped from Ŷ unless it is a gold code of the same line
and inside the label space (rescued: MIMIC-III keeps retired codes as gold by design); a gold one stays gold
(resolved to its dotted form when the tables know it) and is listed in ``Predictions.unknown_gold``.

Errors are ``UserError`` (or the caller's subclass) naming the file and the line, never a value's contents.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from llm4icd_plugins.errors import UserError, describe, user_error
from llm4icd_plugins.normalize import canonicalize
from llm4icd_plugins.parsing import Prediction, predicted_codes

RECORD_EXAMPLE = '{"id": "123", "gold": ["401.9", "428.0"], "pred": ["401.9"]}'


class RecordError(UserError):
    """A prediction file that cannot be read: file, line and fix (never a value's contents)."""


@dataclass
class Request:
    """One sample to generate for: its id, prompt messages and gold codes; ``extra`` is copied into its line."""

    id: str
    messages: list[dict]
    gold: list[str]
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PredictionRecord:
    """One line of a prediction file, with Ŷ derived by the one rule (see the module docstring)."""

    id: str
    line: int
    """1-based line of the file."""
    gold: tuple[str, ...] | None
    """Canonical gold codes (resolved where the tables know them), deduplicated; None: the line has none."""
    response: str | None
    """The raw answer; None on a line without one (then ``pred`` is the prediction)."""
    pred: tuple[Any, ...] | None
    """The stored ``pred`` list as written (informational whenever ``response`` is set)."""
    prediction: Prediction
    """Ŷ (``prediction.codes``), the parse it came from and the number of rescued unknown gold codes."""
    votes: dict[str, float] | None = None
    """A voted line's vote share per code; None on other lines."""

    @property
    def from_response(self) -> bool:
        """Whether Ŷ came from a raw response (spans and format are then meaningful)."""
        return self.response is not None

    @property
    def codes(self) -> list[str]:
        """Ŷ as a list."""
        return list(self.prediction.codes)


@dataclass
class Predictions:
    """The records of one file in file order, and the gold codes the tables do not know."""

    path: Path
    records: list[PredictionRecord]
    unknown_gold: set[str] = field(default_factory=set)

    def __iter__(self) -> Iterator[PredictionRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def by_id(self) -> dict[str, PredictionRecord]:
        """Records keyed by id (ids are unique in a file)."""
        return {r.id: r for r in self.records}


def answer_of(response: str | None, pred: Sequence[Any] | None) -> Any:
    """The precedence rule: the raw response when there is one, else the stored ``pred`` list."""
    return response if response is not None else list(pred or ())


def derive(response: str | None, pred: Sequence[Any] | None, gold: Collection[str], code_system: Any = None,
           label_space: Any = None) -> Prediction:
    """Ŷ of one line: ``parsing.predicted_codes`` over ``answer_of(response, pred)`` (the reward's rule)."""
    return predicted_codes(answer_of(response, pred), gold, code_system, label_space)


def read_predictions(path: str | Path, code_system: Any, label_space: Any = None, *,
                     gold: Mapping[str, Collection[str]] | None = None, require_gold: bool = True,
                     allow_empty: bool = False, error: type[UserError] = RecordError,
                     progress: str | None = None) -> Predictions:
    """Read and validate every line of a prediction file; the first bad line raises ``error``.

    ``code_system`` (a ``codes.CodeSystem`` or None) resolves gold and predicted codes; ``label_space``
    filters Ŷ (off-label codes are in ``prediction.parsed.off_label``). ``gold`` gives the gold codes by id
    from another source (a training file) for lines that carry none; ``require_gold`` makes a line without
    ``gold`` an error. ``progress``: a progress-bar label (None: no bar).
    """
    path = Path(path)
    try:
        handle = open(path, "rb")  # decoded line by line, so a bad byte is reported on its own line
    except OSError as exc:
        raise user_error(path, f"cannot open the predictions file ({exc.strerror})",
                         "check the path given to --predictions", cls=error) from None
    reader = _Reader(path, code_system, label_space, gold, require_gold, error)
    with handle:
        lines: Any = enumerate(handle, start=1)
        if progress:
            lines = tqdm(lines, desc=progress, unit=" lines", leave=False, disable=None)
        for number, raw in lines:
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # tolerate a BOM
            except UnicodeDecodeError as exc:
                raise user_error(path, f"not UTF-8 text ({exc.reason})", "write the file as UTF-8 JSONL",
                                 line=number, cls=error) from None
            if text.strip():
                reader.add(number, text)
    if not reader.records and not allow_empty:
        raise user_error(path, "no records", f"write one JSON object per line, e.g. {RECORD_EXAMPLE}", cls=error)
    return Predictions(path, reader.records, reader.unknown_gold)


class _Reader:
    """Validation state of one file: ids seen, the gold-code memo, the records so far."""

    def __init__(self, path: Path, code_system: Any, label_space: Any, gold: Mapping | None, require_gold: bool,
                 error: type[UserError]) -> None:
        self.path, self.code_system, self.label_space = path, code_system, label_space
        self.gold, self.require_gold, self.error = gold, require_gold, error
        self.records: list[PredictionRecord] = []
        self.unknown_gold: set[str] = set()
        self.seen: dict[str, int] = {}
        self.memo: dict[str, str | None] = {}

    def fail(self, line: int, problem: str, fix: str) -> UserError:
        return user_error(self.path, problem, fix, line=line, cls=self.error)

    def add(self, number: int, text: str) -> None:
        obj = self._object(number, text)
        doc_id = self._id(number, obj)
        if "gold" in obj:
            gold: tuple[str, ...] | None = self._gold(number, obj["gold"])
        elif self.require_gold:
            raise self.fail(number, 'missing key "gold"', f"give every line id, gold and pred, e.g. {RECORD_EXAMPLE}")
        else:
            gold = None
        response = obj.get("response")
        pred = obj.get("pred")
        if "pred" in obj and not isinstance(response, str):
            if not isinstance(pred, list):
                raise self.fail(number, f'"pred" is {type(pred).__name__}, not a list',
                                'write predictions as a JSON list of code strings, or give the raw "response" instead')
            response = None
        elif "response" not in obj:
            raise self.fail(number, 'neither "pred" nor "response"',
                            'add "pred" (a list of codes) or "response" (the raw model output)')
        elif response is not None and not isinstance(response, str):
            raise self.fail(number, f'"response" is {type(response).__name__}',
                            "give the model output as a string (or null)")
        else:
            response = response or ""
        stored = tuple(pred) if isinstance(pred, list) else None
        rescue = gold if gold is not None else (self.gold or {}).get(doc_id, ())
        prediction = derive(response, stored, set(rescue), self.code_system, self.label_space)
        votes = self._votes(number, obj["votes"]) if "votes" in obj else None
        self.records.append(PredictionRecord(doc_id, number, gold, response, stored, prediction, votes))

    def _votes(self, number: int, value: Any) -> dict[str, float]:
        fix = "write it with data_tools.evaluation.infer --samples K (K > 1)"
        if not isinstance(value, dict):
            raise self.fail(number, f'"votes" is {type(value).__name__}, not an object', fix)
        for share in value.values():
            if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
                raise self.fail(number, f"a vote share is {describe(share)}, not a share in [0, 1]", fix)
        return {str(code): float(share) for code, share in value.items()}

    def _object(self, number: int, text: str) -> dict:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:  # the message gives a position only, never the content
            raise self.fail(number, f"not valid JSON ({exc.msg} at column {exc.colno})",
                            f"write one JSON object per line, e.g. {RECORD_EXAMPLE}") from None
        except RecursionError:
            raise self.fail(number, "JSON nested too deeply to read",
                            f"write one flat JSON object per line, e.g. {RECORD_EXAMPLE}") from None
        if not isinstance(obj, dict):
            raise self.fail(number, f"a JSON {type(obj).__name__}, not an object",
                            f"write one JSON object per line, e.g. {RECORD_EXAMPLE}")
        return obj

    def _id(self, number: int, obj: dict) -> str:
        if "id" not in obj:
            raise self.fail(number, 'missing key "id"', f"give every line id, gold and pred, e.g. {RECORD_EXAMPLE}")
        value = obj["id"]
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise self.fail(number, f'"id" is {describe(value)}', "give the sample id as a string or integer")
        doc_id = str(value)
        if not doc_id.strip():
            raise self.fail(number, '"id" is blank', "give every line its sample id")
        if doc_id in self.seen:
            raise self.fail(number, f"the id is already used on line {self.seen[doc_id]}",
                            "give every sample one line (were two prediction files concatenated?)")
        self.seen[doc_id] = number
        return doc_id

    def _gold(self, number: int, value: Any) -> tuple[str, ...]:
        """The line's gold codes, canonical and resolved; the memo keeps each distinct string's result."""
        if not isinstance(value, list):
            raise self.fail(number, f'"gold" is {type(value).__name__}, not a list',
                            f"write the gold codes as a JSON list of strings, e.g. {RECORD_EXAMPLE}")
        codes: dict[str, None] = {}
        for position, item in enumerate(value, start=1):
            try:
                code = self.memo[item]
            except (KeyError, TypeError):  # TypeError: an unhashable item (a list), never a code
                code = gold_code(item, self.code_system, self.unknown_gold)
                if isinstance(item, str):
                    self.memo[item] = code
            if code is None:
                raise self.fail(number, f"gold code {position} of the list ({describe(item)}) is not an ICD code",
                                "correct or remove it in the file that produced the gold labels")
            codes[code] = None
        return tuple(codes)


def gold_code(item: Any, code_system: Any = None, unknown: set[str] | None = None) -> str | None:
    """A gold code in canonical form, resolved by the tables when they know it (else kept as it is and added
    to ``unknown``); None when ``item`` is not an ICD code at all."""
    code = canonicalize(item) if isinstance(item, str) else None
    if code is not None and code_system is not None:
        resolved = code_system.resolve(code)
        if resolved is None and unknown is not None:  # e.g. MIMIC-III's retired codes: kept as gold, reported
            unknown.add(code)
        code = resolved or code
    return code


# --- writing ------------------------------------------------------------------------------------------------

def response_record(sample_id: str, model: str, response: str, gold: Sequence[str], code_system: Any = None, *,
                    prompt_tokens: int = 0, gen_tokens: int = 0, finish_reason: str | None = None,
                    extra: Mapping[str, Any] | None = None) -> dict:
    """The line of one generated answer: the raw ``response`` (what readers score), its Ŷ as ``pred``
    (informational), the parse counts and the generation's token counts."""
    prediction = predicted_codes(response, set(gold), code_system)
    parsed = prediction.parsed
    return {"id": sample_id, "model": model, "response": response, "pred": list(prediction.codes),
            "gold": list(gold), "n_malformed": parsed.n_malformed, "n_unknown": parsed.n_unknown,
            "unknown": list(parsed.unknown), "has_span": parsed.has_span, "format_ok": parsed.format_ok,
            "prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens, "finish_reason": finish_reason,
            **(extra or {})}


def voted_record(sample_id: str, model: str, responses: Sequence[str], gold: Sequence[str], code_system: Any = None,
                 *, majority: float = 0.5, prompt_tokens: int = 0, gen_tokens: int = 0,
                 finish_reasons: Sequence[str | None] = (), extra: Mapping[str, Any] | None = None) -> dict:
    """The line of K sampled answers: no ``response`` key, so readers score ``pred``, the majority answer
    (codes in at least ``majority`` of the samples' Ŷ); ``votes`` holds every code's share."""
    predictions = [predicted_codes(text, set(gold), code_system) for text in responses]
    chosen, votes = aggregate_votes([p.codes for p in predictions], majority)
    return {"id": sample_id, "model": model, "responses": list(responses), "pred": chosen, "votes": votes,
            "gold": list(gold), "n_samples": len(responses),
            "n_no_span": sum(not p.parsed.has_span for p in predictions),
            "n_format_bad": sum(not p.parsed.format_ok for p in predictions),
            "n_malformed": sum(p.parsed.n_malformed for p in predictions),
            "n_unknown": sum(p.parsed.n_unknown for p in predictions), "prompt_tokens": prompt_tokens,
            "gen_tokens": gen_tokens, "finish_reasons": list(finish_reasons), **(extra or {})}


def aggregate_votes(code_lists: Sequence[Sequence[str]], majority: float = 0.5) -> tuple[list[str], dict[str, float]]:
    """The majority answer and every code's vote share over K parsed samples of one note.

    A code's share is the number of samples naming it (once per sample) over K; the majority answer holds the
    codes with share >= ``majority``, most voted first (ties: first seen first).
    """
    k = len(code_lists)
    counts: dict[str, int] = {}
    for codes in code_lists:
        for code in dict.fromkeys(codes):
            counts[code] = counts.get(code, 0) + 1
    votes = {code: n / k for code, n in counts.items()} if k else {}
    order = sorted(counts, key=lambda c: -counts[c])  # stable: first seen wins a tie
    return [c for c in order if votes[c] >= majority], votes

