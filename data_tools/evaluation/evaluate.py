"""Score predicted ICD codes against gold codes with Edin-compatible metrics (paper Appendix G).

Input: a JSONL file, one object per document: ``{"id", "gold": [codes], "pred": [codes]}``, or a raw model
``"response"`` instead of ``"pred"``, parsed with ``llm4icd_plugins.parsing`` (the reward's parser); when a
line has both (``data_tools.evaluation.infer`` output), the response is parsed.
Output, written atomically into ``--out`` (alias ``--output-dir``): ``metrics.json`` (with bootstrap intervals,
the no-span and hallucination rates, category-level scores and near misses: ``llm4icd_plugins.hierarchy_metrics``),
``per_code.csv`` and ``summary.md``; with training frequencies (``--data`` or
``--train-frequencies``) also ``buckets.csv``, ``f1_vs_frequency.png`` and ``buckets.png``. ``--compare``
puts several runs into the layout of the paper's Tables 1-2 (``comparison.md`` / ``comparison.csv``).
Response text is never printed, logged or written (it may echo the note).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_tools.cli import exit_with, run_tool
from llm4icd_plugins import atomic
from llm4icd_plugins.bootstrap import bootstrap_ci
from llm4icd_plugins.errors import UserError, user_error
from llm4icd_plugins.hierarchy_metrics import category_map, hierarchy_metrics
from llm4icd_plugins.metrics import DEFAULT_BUCKET_EDGES, assign_buckets, bucket_metrics, bucket_names, corpus_metrics
from llm4icd_plugins.parsing import ParseResult
from llm4icd_plugins.records import RECORD_EXAMPLE, PredictionRecord, read_predictions
OUTPUT_NAMES = ("metrics.json", "per_code.csv", "summary.md", "buckets.csv", "f1_vs_frequency.png", "buckets.png",
                "comparison.md", "comparison.csv")


class EvaluationError(UserError):
    """Bad input; the message names the file, the line and the fix (never a value's contents)."""


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
    n_pred_codes: int = 0
    n_docs_hallucinating: int = 0
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
        self.n_pred_codes += len(parsed.codes) + parsed.n_unknown + parsed.n_off_label  # well-formed, deduplicated
        self.n_docs_hallucinating += parsed.n_unknown - rescued > 0


def _fail(path: Path, line: int | None, problem: str, fix: str) -> EvaluationError:
    return user_error(path, problem, fix, line=line, cls=EvaluationError)


def read_records(path: Path, code_system: Any, label_space: Any, counts: Counts) -> list[PredictionRecord]:
    """Read and validate every line (``llm4icd_plugins.records``, which also derives Ŷ by the reward's rule);
    raise ``EvaluationError`` at the first bad one."""
    predictions = read_predictions(path, code_system, label_space, error=EvaluationError, progress="reading")
    counts.unknown_gold_codes |= predictions.unknown_gold
    return predictions.records


def parse_records(records: Sequence[PredictionRecord], counts: Counts) -> tuple[list[list[str]], list[list[str]]]:
    """Gold and predicted code lists per document: Ŷ as the reader derived it, plus the valid off-label codes,
    which ``corpus_metrics`` drops and counts (they enter the open-set scores)."""
    golds, preds = [], []
    for record in records:
        codes, parsed, rescued = record.prediction
        counts.add(parsed, rescued, record.from_response)
        gold = list(record.gold or ())
        pred = list(codes) + list(parsed.off_label)
        counts.n_empty_gold += not gold
        counts.n_empty_pred += not pred
        golds.append(gold)
        preds.append(pred)
    counts.n_gold_unknown = len(counts.unknown_gold_codes)
    return golds, preds


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def render_summary(metrics: dict[str, Any]) -> str:
    """Short Markdown summary: the paper's table columns (percentages) and the counts that explain them."""
    m = metrics
    rows = [("micro", "micro_"), ("macro", "macro_"), ("micro, open set", "open_micro_")]
    if "category_micro_f1" in m:
        rows += [("category micro", "category_micro_"), ("category macro", "category_macro_")]
    lines = [
        f"# Evaluation of {m['predictions']}",
        "",
        "| | Precision | Recall | F1 |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {_pct(m[p + 'precision'])} | {_pct(m[p + 'recall'])} | {_pct(m[p + 'f1'])} |"
          for name, p in rows),
        "",
        f"- documents: {m['n_docs']}; label space: {m['label_space']} ({m['n_labels']} codes); "
        f"code system: {m['code_system'] or 'none (codes compared as written)'}",
        f"- exact match: {_pct(m['exact_match'])}%; mean sample F1 (the reward): {_pct(m['mean_sample_f1'])}%",
        *([f"- near misses (right category, wrong leaf; over every predicted and gold code): {m['n_near_miss']} "
           f"of {m['n_fp']} false positives ({_pct(m['near_miss_rate'])}%); missed gold codes with such a false "
           f"positive: {m['n_fn_near_miss']} of {m['n_fn']} ({_pct(m['fn_near_miss_rate'])}%); 3-character "
           f"categories scored: {m['n_categories']}"] if "n_near_miss" in m else []),
        f"- predictions dropped outside the label space: {m['n_pred_dropped']}; gold codes outside it: "
        f"{m['n_gold_dropped']}",
        f"- predicted codes unknown to the code system: {m['n_pred_unknown']} (kept because gold or in the label "
        f"space: {m['n_pred_rescued']}); malformed tokens: {m['n_pred_malformed']}; duplicates: "
        f"{m['n_pred_duplicates']}; distinct gold codes unknown to the code system: {m['n_gold_unknown']}",
        f"- raw responses: {m['n_responses']}; without a closed <code> span: {m['n_no_span']}; "
        f"format not ok: {m['n_format_bad']}; documents with no prediction: {m['n_empty_pred']}",
    ]
    cov = m.get("coverage")
    if cov and cov["n_missing"]:
        lines.append(f"- **partial evaluation**: {cov['n_predicted']} of {cov['n_split']} samples of "
                     f"{cov['split_file']} predicted ({cov['n_missing']} missing)")
    return "\n".join(lines) + "\n" + render_report_extras(m)


def _write_atomically(directory: Path, contents: dict[str, str | bytes]) -> None:
    """Write every file to a temporary sibling first, then move them all into place (llm4icd_plugins.atomic)."""
    with contextlib.ExitStack() as stack:
        for name, data in contents.items():
            temp = stack.enter_context(atomic.atomic_path(Path(directory) / name))
            temp.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))


def _remove_stale(directory: Path, names) -> None:
    """Temporaries an interrupted earlier run left in ``directory`` are removed, and named on stderr."""
    removed = [p for name in names for p in atomic.remove_stale_temporaries(Path(directory) / name)]
    if removed:
        print(f"removed {len(removed)} temporary file(s) of an interrupted earlier run: "
              + ", ".join(p.name for p in removed), file=sys.stderr)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_tools.evaluation.evaluate",
        description="Score ICD code predictions with Edin et al. (2023) metrics: micro/macro precision, recall "
                    "and F1 (macro = mean of per-code values over the label space), open-set micro, exact match; "
                    "bootstrap 95% intervals, hallucination and no-span rates, category-level (3-character) "
                    "micro/macro scores and near misses (false positives whose category is that of a missed gold "
                    "code: right category, wrong leaf), training-frequency buckets with plots, and (--compare) the "
                    "paper's Tables 1-2 layout over several runs.",
        epilog=f"Each input line: {RECORD_EXAMPLE}, or \"response\": \"<raw model output>\" instead of \"pred\". "
               "Compare: python -m data_tools.evaluation.evaluate --out tables --compare "
               "'SFT:Qwen3-4B:Top-50=eval/sft_top50' 'GRPO:Qwen3-4B:Top-50=eval/grpo_top50' (each PATH an "
               "evaluation folder, a metrics.json or a predictions JSONL).",
    )
    parser.add_argument("--predictions", type=Path, metavar="PRED.jsonl",
                        help="JSONL file, one document per line with id, gold (list of codes) and either pred "
                             "(list of codes) or response (raw model output, parsed with the reward's parser); "
                             "required unless --compare is given")
    parser.add_argument("--out", "--output-dir", dest="out", required=True, type=Path, metavar="DIR",
                        help="folder for metrics.json, per_code.csv and summary.md (plus buckets.csv and the PNG "
                             "plots with training frequencies; comparison.md/.csv with --compare); created, existing "
                             "files replaced (--output-dir is an alias)")
    parser.add_argument("--data", type=Path, metavar="VARIANT_DIR",
                        help="prepared variant folder (data_tools.build.prepare): gives --code-system (from its "
                             "label_space.json), --train-frequencies (its training split) and the ids of --split, "
                             "which the predictions must cover. The label space stays "
                             "Edin's default unless --label-space is given")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"),
                        help="with --data: the split the predictions are for; they must cover its samples exactly "
                             "(default test)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="with --data: score predictions that cover only part of the split (e.g. an infer run "
                             "with --max-samples); the coverage is printed and recorded in metrics.json")
    parser.add_argument("--label-space", type=Path, metavar="FILE",
                        help="label-space JSON ({\"name\", \"code_system\", \"codes\"}); macro metrics average over "
                             "its codes and predictions outside it are dropped. Default: the codes with at least one "
                             "gold occurrence in PRED.jsonl (Edin et al.)")
    parser.add_argument("--code-system", choices=("icd9", "icd10"),
                        help="resolve undotted codes (4019 → 401.9 when unambiguous) and drop predicted codes unknown "
                             "to the ICD tables unless gold for that document or in the label space (the "
                             "hallucination rate needs it). Default: compare codes as written, after cleaning "
                             "(upper case, whitespace and edge punctuation removed)")
    parser.add_argument("--train-frequencies", type=Path, metavar="PATH",
                        help="training occurrences per code for the frequency buckets and plots: a prepared variant "
                             "folder, a parquet/JSONL table with a 'codes' list column, or a JSON {code: count}")
    parser.add_argument("--buckets", default=",".join(map(str, DEFAULT_BUCKET_EDGES)), metavar="EDGES",
                        help="descending lower edges of the training-frequency buckets (default 500,100,10: "
                             "≥500, 100–499, 10–99 and <10)")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                        help="bootstrap resamples of the documents for 95%% intervals of micro/macro P/R/F1 "
                             "(default 1000; 0 turns them off)")
    parser.add_argument("--confidence", type=float, default=0.95, help="bootstrap interval level (default 0.95)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap random seed (default 0)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots (written with frequencies)")
    parser.add_argument("--compare", nargs="+", metavar="METHOD[:BACKBONE[:SETTING]]=PATH",
                        help="build the paper's comparison table (Tables 1-2: per setting Micro/Macro × R/P/F1) "
                             "from several runs; PATH is an evaluation folder, a metrics.json, or a predictions JSONL "
                             "(scored here with --data/--label-space/--code-system). Writes comparison.md and "
                             "comparison.csv into --out")
    return parser


def variant_code_system(data: Path | None, code_system_name: str | None, error: type[UserError]) -> str | None:
    """The code system to score with: ``--code-system`` when given, else that of the ``--data`` variant's label
    space (``llm4icd_plugins.variant``), else None.

    The label space itself stays Edin's default (codes with a gold occurrence in the evaluated file) unless
    given explicitly: a Full variant's label space holds many codes absent from a test split, and averaging
    their 0 F1 into macro-F1 would not be Edin's (nor the paper's) macro-F1.
    """
    if data is None or code_system_name is not None:
        return code_system_name
    from llm4icd_plugins.variant import PreparedVariant

    return PreparedVariant(data, error=error).label_space().system


def split_ids(data: Path, split: str) -> tuple[Path, list[str]]:
    """The sample ids of a prepared split (``<data>/examples/<split>.parquet``), in file order."""
    import pandas as pd

    from llm4icd_plugins.variant import PreparedVariant

    path = PreparedVariant(data).examples_path(split)
    try:
        frame = pd.read_parquet(path, columns=["id"])
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types; the message names none of the contents
        raise _fail(path, None, f"cannot read the ids of the {split} split ({type(exc).__name__})",
                    "point --data at a folder written by data_tools.build.prepare, and --split at the predicted "
                    "split") from None
    return path, [str(i) for i in frame["id"]]


def check_coverage(records: Sequence[PredictionRecord], predictions: Path, split_file: Path, expected: Sequence[str],
                   allow_partial: bool) -> dict[str, Any]:
    """Predictions must be for the split's samples (always) and cover all of them (unless ``allow_partial``)."""
    wanted = set(expected)
    foreign = [r.line for r in records if r.id not in wanted]
    if foreign:
        raise _fail(predictions, None, f"{len(foreign)} of {len(records)} ids are not samples of {split_file} "
                    f"(first on line {foreign[0]})", "evaluate predictions of the same prepared variant, and pass "
                    "--split for predictions on another split")
    have = {r.id for r in records}
    missing = [row for row, i in enumerate(expected, start=1) if i not in have]
    coverage = {"split_file": str(split_file), "n_split": len(expected), "n_predicted": len(records),
                "n_missing": len(missing)}
    if missing and not allow_partial:
        raise _fail(predictions, None, f"{len(missing)} of {len(expected)} samples of {split_file} have no "
                    f"prediction (first: row {missing[0]} of that file)", "finish the inference run (re-run the "
                    "same data_tools.evaluation.infer command: it resumes), or pass --allow-partial to score the "
                    "covered samples only")
    if missing:
        print(f"WARNING: partial evaluation: the predictions cover {len(records)} of {len(expected)} samples of "
              f"{split_file} ({len(missing)} missing); the metrics are over the covered samples only",
              file=sys.stderr)
    return coverage


def evaluate(predictions: Path, output_dir: Path | None, label_space_path: Path | None = None,
             code_system_name: str | None = None, *, train_frequencies: dict[str, int] | None = None,
             bucket_edges: Sequence[int] = DEFAULT_BUCKET_EDGES, n_bootstrap: int = 1000, confidence: float = 0.95,
             seed: int = 0, plots: bool = True, expected_ids: tuple[Path, Sequence[str]] | None = None,
             allow_partial: bool = False) -> dict[str, Any]:
    """Run the evaluation and write the outputs (unless ``output_dir`` is None); returns the metrics dict.

    ``expected_ids`` (split file, ids) makes the predictions' coverage of that split a checked condition.
    """
    if output_dir is not None:
        _remove_stale(Path(output_dir), OUTPUT_NAMES)
    code_system = label_space = None
    if code_system_name is not None:
        from llm4icd_plugins.codes import load_code_system

        code_system = load_code_system(code_system_name)
    if label_space_path is not None:
        from llm4icd_plugins.codes import load_label_space

        try:
            label_space = load_label_space(label_space_path)
        except (OSError, ValueError) as exc:  # codes.py's message names the file and the fix
            raise EvaluationError(f"--label-space: {exc}. Fix: pass the label_space.json of a prepared variant "
                                  "(or one written by LabelSpace.save)") from None
        if code_system_name is not None and label_space.system != code_system_name:
            raise _fail(label_space_path, None, f"label space is {label_space.system}, --code-system is "
                        f"{code_system_name}", "use the label space of the same code system")
    counts = Counts()
    records = read_records(predictions, code_system, label_space, counts)
    coverage = None
    if expected_ids is not None:
        coverage = check_coverage(records, predictions, *expected_ids, allow_partial)
    golds, preds = parse_records(records, counts)
    result = corpus_metrics(golds, preds, label_space)
    per_code = result.pop("per_code")
    hierarchy = hierarchy_metrics(golds, preds, label_space, code_system)
    near = hierarchy.pop("per_code").set_index("code")
    categories = near["category"].to_dict()
    unseen = [c for c in per_code["code"] if c not in categories]  # label-space codes neither gold nor predicted
    categories.update(category_map(unseen, code_system))
    per_code.insert(1, "category", per_code["code"].map(categories))
    for column in ("near_miss_fp", "near_miss_fn"):
        per_code[column] = per_code["code"].map(near[column]).fillna(0).astype(int)
    if code_system is not None:
        per_code["description"] = [code_system.description(c) for c in per_code.code]
    rates = {
        "no_span_rate": counts.n_no_span / counts.n_responses if counts.n_responses else None,
        "hallucination_rate": counts.n_pred_unknown / counts.n_pred_codes
        if code_system is not None and counts.n_pred_codes else (0.0 if code_system is not None else None),
        "hallucinating_doc_rate": counts.n_docs_hallucinating / len(records) if code_system is not None else None,
    }
    ci = None
    if n_bootstrap > 0:
        ci = bootstrap_ci(golds, preds, label_space, n_resamples=n_bootstrap, confidence=confidence, seed=seed)
    metrics = {
        **result,
        **hierarchy,
        **rates,
        "ci": ci,
        **{k: v for k, v in vars(counts).items() if k != "unknown_gold_codes"},
        "unknown_gold_codes": sorted(counts.unknown_gold_codes)[:100],
        "predictions": str(predictions),
        "predictions_sha256": _sha256(predictions),
        "label_space": label_space.name if label_space is not None else "gold codes of the evaluated set",
        "label_space_file": str(label_space_path) if label_space_path else None,
        "code_system": code_system_name,
        "coverage": coverage,
    }
    files: dict[str, str | bytes] = {}
    if train_frequencies is not None:
        buckets = bucket_metrics(per_code, train_frequencies, bucket_edges)
        per_code["train_frequency"] = per_code["code"].map(lambda c: int(train_frequencies.get(c, 0)))
        per_code["bucket"] = assign_buckets(per_code["train_frequency"].to_numpy(), bucket_edges)
        sums = per_code.groupby("bucket")[["near_miss_fn", "fn"]].sum().reindex(buckets["bucket"])
        # Share of the bucket's missed gold codes whose category was predicted with a wrong leaf.
        buckets["fn_near_miss_rate"] = (sums["near_miss_fn"] / sums["fn"]).to_numpy()
        metrics["buckets"] = json.loads(buckets.to_json(orient="records"))
        metrics["bucket_edges"] = list(bucket_edges)
        files["buckets.csv"] = buckets.to_csv(index=False, float_format="%.6f")
        if plots:
            from data_tools.evaluation.reports import plot_buckets, plot_f1_vs_frequency

            title = f"{Path(predictions).name} ({metrics['label_space']})"
            files["f1_vs_frequency.png"] = plot_f1_vs_frequency(per_code, bucket_edges, title)
            files["buckets.png"] = plot_buckets(buckets, title)
    summary = render_summary(metrics)
    files = {"metrics.json": json.dumps(metrics, indent=2) + "\n",
             "per_code.csv": per_code.to_csv(index=False, float_format="%.6f"), "summary.md": summary, **files}
    if output_dir is not None:
        _write_atomically(Path(output_dir), files)
    metrics["summary"] = summary
    return metrics


def _opt_pct(x: float | None) -> str:
    return "n/a" if x is None else f"{_pct(x)}%"


def render_report_extras(metrics: dict[str, Any]) -> str:
    """Summary lines for the rates, bootstrap intervals and frequency buckets (empty when absent)."""
    lines = [f"- responses without a valid <code> span: {_opt_pct(metrics.get('no_span_rate'))}; predicted codes "
             f"unknown to the code system (hallucinated): {_opt_pct(metrics.get('hallucination_rate'))} "
             f"(documents with one: {_opt_pct(metrics.get('hallucinating_doc_rate'))})"]
    ci = metrics.get("ci")
    if ci:
        level = round(100 * ci["confidence"])
        lines.append(f"- bootstrap {level}% intervals ({ci['n_resamples']} resamples of the documents): " + "; ".join(
            f"{k.replace('_', '-')} [{_pct(ci[k][0])}, {_pct(ci[k][1])}]" for k in ("micro_f1", "macro_f1")))
    buckets = metrics.get("buckets")
    if buckets:
        lines += ["", "| training frequency | codes | gold | micro-F1 | macro-F1 | misses near (%) |",
                  "|---|---:|---:|---:|---:|---:|"]
        def f(v):
            return "–" if v is None else _pct(v)

        for b in buckets:
            lines.append(f"| {b['bucket']} | {b['n_codes']} | {b['support']} | {f(b['micro_f1'])} | "
                         f"{f(b['macro_f1'])} | {f(b.get('fn_near_miss_rate'))} |")
        lines.append("\n(misses near: share of the bucket's missed gold codes whose category was predicted with "
                     "another leaf)")
    return "\n".join(lines) + "\n"


def _load_compare_metrics(path: Path, options: dict) -> dict[str, Any]:
    if path.is_dir():
        path = path / "metrics.json"
    if not path.is_file():
        raise _fail(path, None, "no such file", "give an evaluation folder (with metrics.json), a metrics.json or a "
                    "predictions JSONL")
    if path.suffix == ".json":
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
            for key in ("micro_recall", "micro_precision", "micro_f1", "macro_recall", "macro_precision", "macro_f1"):
                float(metrics[key])
            return metrics
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise _fail(path, None, f"not a metrics.json of data_tools.evaluation.evaluate ({type(exc).__name__})",
                        "run `python -m data_tools.evaluation.evaluate` first and pass its output folder") from None
    return evaluate(path, None, plots=False, **options)


def compare(specs: Sequence[str], output_dir: Path, options: dict) -> str:
    """Evaluate or read every entry and write comparison.md / comparison.csv; returns the Markdown."""
    from data_tools.evaluation.reports import comparison_markdown, comparison_table, parse_entry

    entries = [parse_entry(spec) for spec in specs]
    _remove_stale(Path(output_dir), OUTPUT_NAMES)
    scored = [(m, b, s, _load_compare_metrics(p, options)) for m, b, s, p in entries]
    table = comparison_table(scored)
    markdown = comparison_markdown(table)
    _write_atomically(Path(output_dir), {"comparison.md": markdown,
                                         "comparison.csv": table.to_csv(index=False, float_format="%.2f")})
    return markdown


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.predictions is None and not args.compare:
        parser.error("give --predictions PRED.jsonl (or --compare ENTRY ...)")
    if args.compare and args.predictions is not None:
        parser.error("--compare builds a table from its entries; leave out --predictions")
    return run_tool(parser.prog, lambda: _main(args))


def check_output_dir(path: Path, flag: str = "--out") -> None:
    """Refuse an output folder that is a file, or lies under a file or a read-only folder, before any work
    (nothing is created here)."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise _fail(existing, None, "is a file, not a folder", f"give {flag} a folder path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise _fail(existing, None, "the folder is not writable", f"choose a writable {flag}")


def _main(args: argparse.Namespace) -> int:
    from data_tools.evaluation.reports import load_frequencies

    check_output_dir(args.out)
    try:
        edges = [int(e) for e in args.buckets.split(",") if e.strip()]
        bucket_names(edges)  # validates the edges
    except ValueError as exc:  # the message names edges only
        raise EvaluationError(f"--buckets {args.buckets}: {exc}. Fix: give descending integer edges, e.g. "
                              "500,100,10") from None
    if not 0 < args.confidence < 1 or args.bootstrap < 0:
        raise EvaluationError("--confidence must be in (0, 1) and --bootstrap >= 0. Fix: e.g. --confidence 0.95 "
                              "--bootstrap 1000")
    label_space_path, code_system = args.label_space, variant_code_system(args.data, args.code_system, EvaluationError)
    freq_source = args.train_frequencies or args.data
    options = dict(label_space_path=label_space_path, code_system_name=code_system, bucket_edges=edges,
                   n_bootstrap=args.bootstrap, confidence=args.confidence, seed=args.seed,
                   train_frequencies=load_frequencies(freq_source) if freq_source else None,
                   expected_ids=split_ids(args.data, args.split) if args.data is not None else None,
                   allow_partial=args.allow_partial)
    if args.compare:
        print(compare(args.compare, args.out, options), end="")
        print(f"wrote {args.out / 'comparison.md'} and comparison.csv")
        return 0
    metrics = evaluate(args.predictions, args.out, plots=not args.no_plots, **options)
    print(metrics["summary"], end="")
    print(f"wrote {args.out / 'metrics.json'}, per_code.csv and summary.md"
          + (", buckets.csv and plots" if "buckets" in metrics else ""))
    return 0


if __name__ == "__main__":
    exit_with(main)
