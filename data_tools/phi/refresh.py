"""Refresh PHI hint pools from hint-free greedy predictions on the training split (paper Eq. 3-4).

    python -m data_tools.phi.refresh --train data/prepared/mimic3_full/verl/train.parquet \\
        --predictions runs/phi/round_0/predictions.jsonl --round 1 --out runs/phi/round_1/train.parquet

For every training row, joined on the stable ``extra_info.sample_id`` (never on prompt text), the new
pool is H = Y \\ Ŷ (Ŷ of each prediction record by ``llm4icd_plugins.records``: re-derived from the raw
response, the reward's rule); each pooled code gets its training frequency and its recall under these
predictions (the inputs of the hint priority). The output is the training parquet with a ``phi``
column (``round``, ``pool``, ``pool_freq``, ``pool_recall``, ``note``), read by
``llm4icd_plugins.verl.dataset``; ``note`` is the whole note (from ``--notes``, prepare's
``examples/train.parquet``) of a pooled row whose prompt holds a truncated one, so a hinted prompt can be
re-fitted around its hint block; it is null elsewhere (the prompt holds the whole note, or no hints).
The note stays in this column, which the dataset drops before a batch is built: not in ``extra_info``,
which travels with every batch to the reward. A JSON summary (mastered rows, pool sizes) is written next
to it. Both are written to temporary files in the output folder and renamed into place, the parquet last
(it marks the round file complete); temporaries of an interrupted earlier run are removed first. Response
text is never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data_tools.cli import exit_with, run_tool
from llm4icd_plugins import atomic, prompts, records
from llm4icd_plugins.codes import load_code_system
from llm4icd_plugins.errors import UserError, describe, user_error
from llm4icd_plugins.hints import code_stats, hint_pools
from llm4icd_plugins.variant import PreparedVariant, read_examples

PHI_TYPE = pa.struct([("round", pa.int64()), ("pool", pa.list_(pa.string())),
                      ("pool_freq", pa.list_(pa.int64())), ("pool_recall", pa.list_(pa.float64())),
                      ("note", pa.string())])


class RefreshError(UserError):
    """Bad input: the message names the file, the line or row, and the fix (never a value's contents)."""


def _fail(path, problem: str, fix: str, line: int | None = None, row: int | None = None) -> RefreshError:
    return user_error(path, problem, fix, line=line, row=row, cls=RefreshError)


def summary_path(out: Path) -> Path:
    """Where the summary of a round file goes: ``<out without .parquet>.summary.json``."""
    return out.with_name(out.name.removesuffix(".parquet") + ".summary.json")


def read_train(path: Path):
    """The training rows (pyarrow table without a previous ``phi`` column), their ids, gold sets, code system."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise _fail(path, f"cannot read the parquet file ({type(exc).__name__})",
                    "pass <variant>/verl/train.parquet written by data_tools.build.prepare") from None
    for column in ("reward_model", "extra_info", "prompt"):
        if column not in table.column_names:
            raise _fail(path, f"no '{column}' column",
                        "pass <variant>/verl/train.parquet written by data_tools.build.prepare")
    if "phi" in table.column_names:
        table = table.drop(["phi"])
    extra = table.column("extra_info").to_pylist()
    gold = [list(rm["ground_truth"] or []) for rm in table.column("reward_model").to_pylist()]
    ids, systems = [], set()
    for row, info in enumerate(extra):
        info = info or {}
        split = info.get("split")
        if split != "train":
            shown = repr(split) if split in ("val", "test", "dev") else describe(split)
            raise _fail(path, f"extra_info.split is {shown}", "PHI pools are for the training split only: pass "
                        "<variant>/verl/train.parquet", row=row + 1)
        if info.get("sample_id") in (None, ""):
            raise _fail(path, "no extra_info.sample_id", "rebuild the data with data_tools.build.prepare", row=row + 1)
        ids.append(str(info["sample_id"]))
        systems.add(info.get("code_system"))
    first_row: dict[str, int] = {}
    for row, sample_id in enumerate(ids, start=1):
        if sample_id in first_row:
            raise _fail(path, f"extra_info.sample_id repeats that of row {first_row[sample_id]}",
                        "rebuild the data with data_tools.build.prepare", row=row)
        first_row[sample_id] = row
    if len(systems) != 1 or None in systems or not systems <= {"icd9", "icd10"}:
        raise _fail(path, f"extra_info.code_system takes {len(systems)} value(s), not one of icd9/icd10",
                    "use one prepared variant per file")
    return table, ids, gold, systems.pop()


def read_predictions(path: Path, system=None, gold: dict[str, Sequence[str]] | None = None
                     ) -> dict[str, records.PredictionRecord]:
    """``id`` → prediction record (``records.read_predictions``: Ŷ re-derived from the raw response, rescuing
    unknown codes against the line's gold, else ``gold[id]``); a bad line is an error naming it."""
    found = records.read_predictions(path, system, gold=gold, require_gold=False, allow_empty=True,
                                     error=RefreshError, progress="reading predictions")
    return found.by_id()


def default_notes(train: Path) -> Path | None:
    """Prepare's ``examples/<split>.parquet`` beside ``<variant>/verl/<split>.parquet``, if there."""
    train = Path(train)
    variant = PreparedVariant.containing(train)
    if variant is None or train.parent.name != "verl" or train.suffix != ".parquet":
        return None
    candidate = variant.examples_path(train.stem)
    return candidate if candidate.is_file() else None


def read_notes(path: Path, table, ids: Sequence[str], system_name: str) -> list[str | None]:
    """Per training row, the whole note if its prompt holds a truncated one, else None (from prepare's
    ``examples`` parquet: ``id``, ``text``, ``text_truncated``); checked against the row's prompt."""
    notes = read_examples(path, truncated=True, error=RefreshError)
    by_id = dict(zip(notes.ids, zip(notes.texts, notes.texts_truncated)))
    tail = "\n\n" + prompts.format_line(prompts.PromptSpec(system_name))
    out: list[str | None] = []
    for row, (sample_id, messages) in enumerate(zip(ids, table.column("prompt").to_pylist()), start=1):
        if sample_id not in by_id:
            raise _fail(path, f"no note for the sample id of row {row} of the training file",
                        "pass the examples file of the same prepared variant")
        text, shown = by_id[sample_id]
        content = (messages or [{}])[-1].get("content") or ""
        if not isinstance(text, str) or not isinstance(shown, str) or not content.endswith(shown + tail):
            raise _fail(path, f"the note of the sample id of row {row} of the training file is not the one in "
                        "its prompt", "pass the examples file of the same prepare run as --train")
        out.append(text if text != shown else None)
    return out


def refresh(train: Path, predictions: Path, out: Path, round_index: int, *, overwrite: bool = False,
            notes: Path | None = None) -> dict:
    """Write the round file and its summary; returns the summary. ``notes`` defaults to ``default_notes``."""
    out = Path(out)
    _check_out(out, overwrite)
    if round_index < 0:
        raise RefreshError(f"--round {round_index}: must be >= 0. Fix: pass the index of the round (1 or more)")
    removed = remove_stale(out)
    if removed:
        print(f"removed {len(removed)} temporary file(s) of an interrupted earlier run: "
              + ", ".join(p.name for p in removed))
    table, ids, raw_gold, system_name = read_train(Path(train))
    system = load_code_system(system_name)
    gold = [list(dict.fromkeys(c for c in (records.gold_code(x, system) for x in g) if c)) for g in raw_gold]
    found = read_predictions(Path(predictions), system, dict(zip(ids, gold)))
    missing = [row for row, i in enumerate(ids, start=1) if i not in found]
    if missing:
        raise _fail(predictions, f"{len(missing)} of {len(ids)} training samples have no prediction "
                    f"(first: row {missing[0]} of {train})",
                    "run hint-free inference on the whole training split of this variant")
    known = set(ids)
    extra = sorted(record.line for key, record in found.items() if key not in known)
    if extra:
        raise _fail(predictions, f"{len(extra)} ids are not training samples of {train} (first on line {extra[0]})",
                    "pass predictions on the training split of the same variant")
    preds = []
    for row, (sample_id, g) in enumerate(zip(ids, gold), start=1):
        record = found[sample_id]
        if record.gold is not None and set(record.gold) != set(g):
            raise _fail(predictions, f"the gold codes differ from those of row {row} of {train}",
                        "pass predictions made on the same prepared variant", record.line)
        preds.append(set(record.prediction.codes))
    pools = hint_pools(gold, preds)
    freq, recall = code_stats(gold, preds)
    notes = Path(notes) if notes is not None else default_notes(Path(train))
    if notes is None:
        print(f"warning: no --notes and no examples file beside {train}: a hinted prompt re-fits the note of its "
              "prompt, which prepare may have truncated", file=sys.stderr)
        whole: list[str | None] = [None] * len(ids)
    else:
        whole = read_notes(notes, table, ids, system_name)
    phi = [{"round": int(round_index), "pool": pool, "pool_freq": [int(freq[c]) for c in pool],
            "pool_recall": [float(recall[c]) for c in pool], "note": note if pool else None}
           for pool, note in zip(pools, whole)]
    table = table.append_column(pa.field("phi", PHI_TYPE), pa.array(phi, type=PHI_TYPE))
    summary = _summary(pools, gold, preds, freq, round_index, train, predictions)
    summary["whole_notes"] = {"source": str(notes) if notes else None,
                              "rows": sum(p["note"] is not None for p in phi)}
    atomic.write_text(summary_path(out), json.dumps(summary, indent=2) + "\n")
    atomic.write_with(out, lambda p: pq.write_table(table, p))  # last: the parquet marks the round file complete
    return summary


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse an output that exists (without --overwrite), is a folder, or cannot be written, before any work."""
    if out.is_dir():
        raise _fail(out, "is a folder", "give --out a file path, e.g. round_1/train.parquet")
    if out.exists() and not overwrite:
        raise _fail(out, "already exists", "pass --overwrite, or another --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail(out.parent, f"cannot create the output folder ({exc.strerror})", "choose a writable --out") \
            from None
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK | os.X_OK):
        raise _fail(out.parent, "the output folder is not writable", "choose a writable --out")


def remove_stale(out: Path) -> list[Path]:
    """Temporaries of an interrupted earlier refresh beside ``out`` (they hold prompts), removed; also those
    of the earlier naming ``.<name>.<random>.tmp``."""
    removed = [p for final in (out, summary_path(out)) for p in atomic.remove_stale_temporaries(final)]
    for final in (out, summary_path(out)):
        legacy = [p for p in out.parent.glob(f".{final.name}.*.tmp") if p.is_file()]
        for path in legacy:
            path.unlink(missing_ok=True)
        removed += legacy
    return removed


def _summary(pools, gold, preds, freq, round_index, train, predictions) -> dict:
    sizes = np.array([len(p) for p in pools], dtype=float)
    tp = sum(len(set(g) & p) for g, p in zip(gold, preds))
    n_gold = sum(len(g) for g in gold)
    pooled = Counter(c for p in pools for c in p)
    nonempty = sizes[sizes > 0]
    return {
        "round": int(round_index), "train": str(train), "predictions": str(predictions),
        "rows": len(pools), "mastered_rows": int((sizes == 0).sum()), "rows_with_hints": int(len(nonempty)),
        "pool_size": {"mean": float(sizes.mean()) if len(sizes) else 0.0,
                      "mean_nonempty": float(nonempty.mean()) if len(nonempty) else 0.0,
                      "p50": float(np.percentile(sizes, 50)) if len(sizes) else 0.0,
                      "max": int(sizes.max()) if len(sizes) else 0,
                      "histogram": {str(k): int(v) for k, v in sorted(Counter(sizes.astype(int).tolist()).items())}},
        "pooled_codes": len(pooled), "pooled_occurrences": int(sum(pooled.values())),
        "gold_codes": len(freq), "train_micro_recall": tp / n_gold if n_gold else 0.0,
        "most_missed": [{"code": c, "missed": n, "freq": int(freq[c])} for c, n in pooled.most_common(10)],
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_tools.phi.refresh", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="The summary goes to <out>.summary.json (without .parquet).")
    parser.add_argument("--train", required=True, type=Path,
                        help="training rows: <variant>/verl/train.parquet from data_tools.build.prepare (or a previous "
                        "round file: its pools are replaced)")
    parser.add_argument("--predictions", required=True, type=Path,
                        help='JSONL of hint-free greedy predictions on the training split: one {"id", "pred": [codes]} '
                        'or {"id", "response"} per sample (ids = extra_info.sample_id); an optional "gold" is checked')
    parser.add_argument("--out", required=True, type=Path,
                        help="round file to write (parquet), e.g. round_1/train.parquet")
    parser.add_argument("--round", required=True, type=int, dest="round_index",
                        help="index of the PHI round that will train on this file (1 for pools seeded by the SFT "
                        "model)")
    parser.add_argument("--notes", type=Path, default=None,
                        help="whole notes for re-fitting hinted prompts: <variant>/examples/train.parquet from "
                        "data_tools.build.prepare (default: found beside --train when it is "
                        "<variant>/verl/train.parquet)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_tool(parser.prog, lambda: _report(args, refresh(args.train, args.predictions, args.out,
                                                               args.round_index, overwrite=args.overwrite,
                                                               notes=args.notes)))


def _report(args: argparse.Namespace, s: dict) -> None:
    print(f"{args.out}: round {s['round']}, {s['rows']} training rows; {s['mastered_rows']} mastered (empty pool, "
          f"skipped), {s['rows_with_hints']} with hints; pool size mean {s['pool_size']['mean_nonempty']:.2f} "
          f"(non-empty), max {s['pool_size']['max']}; {s['pooled_codes']} distinct codes pooled; "
          f"training micro-recall {s['train_micro_recall']:.4f}")


if __name__ == "__main__":
    exit_with(main)
