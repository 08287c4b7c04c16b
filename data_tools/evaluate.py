"""Score predicted ICD codes against gold codes with Edin-compatible metrics (paper Appendix G).

Input: a JSONL file, one object per document: ``{"id", "gold": [codes], "pred": [codes]}``, or a raw model
``"response"`` instead of ``"pred"``, parsed with ``llm4icd_plugins.parsing`` (the reward's parser).
Output, written atomically into ``--output-dir``: ``metrics.json``, ``per_code.csv`` and ``summary.md``.
Response text is never printed, logged or written (it may echo the note).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from llm4icd_plugins.metrics import corpus_metrics
from llm4icd_plugins.normalize import canonicalize
from llm4icd_plugins.parsing import ParseResult, parse_codes, parse_response

RECORD_EXAMPLE = '{"id": "123", "gold": ["401.9", "428.0"], "pred": ["401.9"]}'


class EvaluationError(ValueError):
    """Bad input; the message names the file, the line and the fix."""


@dataclass
class Record:
    """One document as read from the file: gold codes normalised, prediction not yet parsed."""

    doc_id: str
    line: int
    gold: list[str]
    pred: list[Any] | None = None
    response: str | None = None


@dataclass
class Counts:
    """Parser and normalisation counts summed over documents (reported next to the metrics)."""

    n_responses: int = 0
    n_no_span: int = 0
    n_format_bad: int = 0
    n_truncated_spans: int = 0
    n_pred_malformed: int = 0
    n_pred_unknown: int = 0
    n_pred_rescued: int = 0
    n_pred_duplicates: int = 0
    n_gold_unknown: int = 0
    n_empty_gold: int = 0
    n_empty_pred: int = 0
    unknown_gold_codes: set[str] = field(default_factory=set)

    def add(self, parsed: ParseResult, rescued: int, from_response: bool) -> None:
        self.n_responses += from_response
        self.n_no_span += from_response and not parsed.has_span
        self.n_format_bad += from_response and not parsed.format_ok
        self.n_truncated_spans += parsed.truncated
        self.n_pred_malformed += parsed.n_malformed
        self.n_pred_unknown += parsed.n_unknown - rescued
        self.n_pred_rescued += rescued
        self.n_pred_duplicates += parsed.n_duplicates


def _fail(path: Path, line: int | None, problem: str, fix: str) -> EvaluationError:
    where = f"{path}" if line is None else f"{path}, line {line}"
    return EvaluationError(f"{where}: {problem}. Fix: {fix}")


def _short(value: Any) -> str:
    """A value for an error message, cut short: a bad field could hold note text."""
    text = repr(value)
    return text if len(text) <= 24 else text[:20] + "...'"


def _gold_codes(value: Any, path: Path, line: int, code_system: Any, counts: Counts) -> list[str]:
    if not isinstance(value, list):
        raise _fail(path, line, f'"gold" is {type(value).__name__}, not a list',
                    f'write the gold codes as a JSON list of strings, e.g. {RECORD_EXAMPLE}')
    codes: dict[str, None] = {}
    for item in value:
        code = canonicalize(item) if isinstance(item, str) else None
        if code is None:
            raise _fail(path, line, f"gold code {_short(item)} is not an ICD code",
                        "correct or remove it in the file that produced the gold labels")
        if code_system is not None:
            resolved = code_system.resolve(code)
            if resolved is None:  # e.g. MIMIC-III's retired codes: kept as gold, reported
                counts.unknown_gold_codes.add(code)
            code = resolved or code
        codes.setdefault(code, None)
    return list(codes)


def read_records(path: Path, code_system: Any, counts: Counts) -> list[Record]:
    """Read and validate every line; raise ``EvaluationError`` at the first bad one."""
    try:
        handle = open(path, "rb")  # decoded line by line, so a bad byte is reported on its own line
    except OSError as exc:
        raise _fail(path, None, f"cannot open the predictions file ({exc.strerror})",
                    "check the path given to --predictions") from exc
    records: list[Record] = []
    seen: dict[str, int] = {}
    with handle:
        for number, raw in enumerate(tqdm(handle, desc="reading", unit=" docs", disable=None), start=1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # tolerate a BOM
            except UnicodeDecodeError as exc:
                raise _fail(path, number, f"not UTF-8 text ({exc.reason})", "write the file as UTF-8 JSONL") from None
            if text.strip():
                records.append(_record(path, number, text, code_system, counts, seen))
    if not records:
        raise _fail(path, None, "no records", f"write one JSON object per line, e.g. {RECORD_EXAMPLE}")
    return records


def _record(path: Path, number: int, text: str, code_system: Any, counts: Counts, seen: dict[str, int]) -> Record:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:  # the message gives a position only, never the content
        raise _fail(path, number, f"not valid JSON ({exc.msg} at column {exc.colno})",
                    f"write one JSON object per line, e.g. {RECORD_EXAMPLE}") from None
    if not isinstance(obj, dict):
        raise _fail(path, number, f"a JSON {type(obj).__name__}, not an object",
                    f"write one JSON object per line, e.g. {RECORD_EXAMPLE}")
    for key in ("id", "gold"):
        if key not in obj:
            raise _fail(path, number, f'missing key "{key}"', f"give every line id, gold and pred, e.g. {RECORD_EXAMPLE}")
    if not isinstance(obj["id"], (str, int)) or isinstance(obj["id"], bool):
        raise _fail(path, number, f'"id" is {type(obj["id"]).__name__}', "use a string or integer id")
    doc_id = str(obj["id"])
    if doc_id in seen:
        raise _fail(path, number, f"id {doc_id!r} already used on line {seen[doc_id]}",
                    "give every document one line (were two prediction files concatenated?)")
    seen[doc_id] = number
    gold = _gold_codes(obj["gold"], path, number, code_system, counts)
    if "pred" in obj:
        if not isinstance(obj["pred"], list):
            raise _fail(path, number, f'"pred" is {type(obj["pred"]).__name__}, not a list',
                        'write predictions as a JSON list of code strings, or give the raw "response" instead')
        return Record(doc_id, number, gold, pred=obj["pred"])
    if "response" not in obj:
        raise _fail(path, number, 'neither "pred" nor "response"',
                    'add "pred" (a list of codes) or "response" (the raw model output)')
    response = obj["response"]
    if response is not None and not isinstance(response, str):
        raise _fail(path, number, f'"response" is {type(response).__name__}', "give the model output as a string (or null)")
    return Record(doc_id, number, gold, response=response or "")


def score(records: Sequence[Record], code_system: Any, label_space: Any, counts: Counts) -> dict[str, Any]:
    """Parse the predictions and compute the metrics; unknown codes that are gold or in the label space count."""
    known = {c for r in records for c in r.gold}
    if label_space is not None:
        known.update(label_space.codes)
    golds, preds = [], []
    for record in tqdm(records, desc="parsing", unit=" docs", disable=None):
        if record.pred is not None:
            parsed = parse_codes(record.pred, code_system)
        else:
            parsed = parse_response(record.response, code_system)
        rescued = [c for c in parsed.unknown if c in known]
        counts.add(parsed, len(rescued), record.pred is None)
        pred = list(parsed.codes) + rescued
        counts.n_empty_gold += not record.gold
        counts.n_empty_pred += not pred
        golds.append(record.gold)
        preds.append(pred)
    counts.n_gold_unknown = len(counts.unknown_gold_codes)
    return corpus_metrics(golds, preds, label_space)


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def render_summary(metrics: dict[str, Any]) -> str:
    """Short Markdown summary: the paper's table columns (percentages) and the counts that explain them."""
    m = metrics
    rows = [("micro", "micro_"), ("macro", "macro_"), ("micro, open set", "open_micro_")]
    lines = [
        f"# Evaluation of {m['predictions']}",
        "",
        "| | Precision | Recall | F1 |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {_pct(m[p + 'precision'])} | {_pct(m[p + 'recall'])} | {_pct(m[p + 'f1'])} |" for name, p in rows),
        "",
        f"- documents: {m['n_docs']}; label space: {m['label_space']} ({m['n_labels']} codes); "
        f"code system: {m['code_system'] or 'none (codes compared as written)'}",
        f"- exact match: {_pct(m['exact_match'])}%; mean sample F1 (the reward): {_pct(m['mean_sample_f1'])}%",
        f"- predictions dropped outside the label space: {m['n_pred_dropped']}; gold codes outside it: "
        f"{m['n_gold_dropped']}",
        f"- predicted codes unknown to the code system: {m['n_pred_unknown']} (kept because gold or in the label "
        f"space: {m['n_pred_rescued']}); malformed tokens: {m['n_pred_malformed']}; duplicates: "
        f"{m['n_pred_duplicates']}; distinct gold codes unknown to the code system: {m['n_gold_unknown']}",
        f"- raw responses: {m['n_responses']}; without a closed <code> span: {m['n_no_span']}; "
        f"format not ok: {m['n_format_bad']}; documents with no prediction: {m['n_empty_pred']}",
    ]
    return "\n".join(lines) + "\n"


def _write_atomically(directory: Path, contents: dict[str, str]) -> None:
    """Write every file to a temp file in ``directory`` first, then move them all into place."""
    directory.mkdir(parents=True, exist_ok=True)
    temps: list[tuple[Path, Path]] = []
    try:
        for name, text in contents.items():
            temp = directory / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
            temps.append((temp, directory / name))
            with open(temp, "x", encoding="utf-8", newline="") as fh:
                fh.write(text)
        for temp, final in temps:
            os.replace(temp, final)
    finally:
        for temp, _ in temps:
            temp.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_tools.evaluate",
        description="Score ICD code predictions with Edin et al. (2023) metrics: micro/macro precision, recall "
                    "and F1 (macro = mean of per-code values over the label space), open-set micro, exact match.",
        epilog=f"Each input line: {RECORD_EXAMPLE}, or \"response\": \"<raw model output>\" instead of \"pred\".",
    )
    parser.add_argument("--predictions", required=True, type=Path, metavar="PRED.jsonl",
                        help="JSONL file, one document per line with id, gold (list of codes) and either pred "
                             "(list of codes) or response (raw model output, parsed with the reward's parser)")
    parser.add_argument("--output-dir", required=True, type=Path, metavar="DIR",
                        help="folder for metrics.json, per_code.csv and summary.md (created; existing files replaced)")
    parser.add_argument("--label-space", type=Path, metavar="FILE",
                        help="label-space JSON ({\"name\", \"code_system\", \"codes\"}); macro metrics average over "
                             "its codes and predictions outside it are dropped. Default: the codes with at least one "
                             "gold occurrence in PRED.jsonl (Edin et al.)")
    parser.add_argument("--code-system", choices=("icd9", "icd10"),
                        help="resolve undotted codes (4019 → 401.9 when unambiguous) and drop predicted codes unknown "
                             "to the ICD tables unless they are gold or in the label space. Default: compare codes "
                             "as written, after cleaning (upper case, whitespace and edge punctuation removed)")
    return parser


def evaluate(predictions: Path, output_dir: Path, label_space_path: Path | None = None,
             code_system_name: str | None = None) -> dict[str, Any]:
    """Run the evaluation and write the outputs; returns the metrics dict written to ``metrics.json``."""
    code_system = label_space = None
    if code_system_name is not None:
        from llm4icd_plugins.codes import load_code_system

        code_system = load_code_system(code_system_name)
    if label_space_path is not None:
        from llm4icd_plugins.codes import load_label_space

        try:
            label_space = load_label_space(label_space_path)
        except (OSError, ValueError) as exc:  # codes.py's message names the file and the fix
            raise EvaluationError(f"--label-space: {exc}") from exc
        if code_system_name is not None and label_space.system != code_system_name:
            raise _fail(label_space_path, None, f"label space is {label_space.system}, --code-system is "
                        f"{code_system_name}", "use the label space of the same code system")
    counts = Counts()
    records = read_records(predictions, code_system, counts)
    result = score(records, code_system, label_space, counts)
    per_code = result.pop("per_code")
    if code_system is not None:
        per_code["description"] = [code_system.description(c) for c in per_code.code]
    metrics = {
        **result,
        **{k: v for k, v in vars(counts).items() if k != "unknown_gold_codes"},
        "unknown_gold_codes": sorted(counts.unknown_gold_codes)[:100],
        "predictions": str(predictions),
        "predictions_sha256": _sha256(predictions),
        "label_space": label_space.name if label_space is not None else "gold codes of the evaluated set",
        "label_space_file": str(label_space_path) if label_space_path else None,
        "code_system": code_system_name,
    }
    summary = render_summary(metrics)
    _write_atomically(Path(output_dir), {
        "metrics.json": json.dumps(metrics, indent=2) + "\n",
        "per_code.csv": per_code.to_csv(index=False, float_format="%.6f"),
        "summary.md": summary,
    })
    metrics["summary"] = summary
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        metrics = evaluate(args.predictions, args.output_dir, args.label_space, args.code_system)
    except EvaluationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(metrics["summary"], end="")
    print(f"wrote {args.output_dir / 'metrics.json'}, per_code.csv and summary.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
