"""Refresh PHI hint pools from hint-free greedy predictions on the training split (paper Eq. 3-4).

    python -m data_tools.phi_refresh --train data/prepared/mimic3_full/verl/train.parquet \\
        --predictions runs/phi/round_0/predictions.jsonl --round 1 --out runs/phi/round_1/train.parquet

For every training row, joined on the stable ``extra_info.sample_id`` (never on prompt text), the new
pool is H = Y \\ Ŷ; each pooled code gets its training frequency and its recall under these
predictions (the inputs of the hint priority). The output is the training parquet with a ``phi``
column (``round``, ``pool``, ``pool_freq``, ``pool_recall``), read by ``llm4icd_plugins.verl_dataset``;
a JSON summary (mastered rows, pool sizes) is written next to it. Both are written to temporary files
in the output folder and renamed into place. Response text is never printed (it may echo the note).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from llm4icd_plugins.hints import code_stats, hint_pools
from llm4icd_plugins.normalize import canonicalize
from llm4icd_plugins.parsing import parse_codes, parse_response

PHI_TYPE = pa.struct([("round", pa.int64()), ("pool", pa.list_(pa.string())),
                      ("pool_freq", pa.list_(pa.int64())), ("pool_recall", pa.list_(pa.float64()))])
RECORD_EXAMPLE = '{"id": "104623", "response": "<code>401.9, 486</code>"}  or  {"id": "104623", "pred": ["401.9"]}'


class RefreshError(ValueError):
    """Bad input: the message names the file, the line or row, and the fix."""


def _fail(path, problem: str, fix: str, line: int | None = None) -> RefreshError:
    where = f"{path}" + (f", line {line}" if line is not None else "")
    return RefreshError(f"{where}: {problem}. Fix: {fix}")


def summary_path(out: Path) -> Path:
    """Where the summary of a round file goes: ``<out without .parquet>.summary.json``."""
    return out.with_name(out.name.removesuffix(".parquet") + ".summary.json")


def read_train(path: Path):
    """The training rows (pyarrow table without a previous ``phi`` column), their ids, gold sets, code system."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise _fail(path, f"cannot read the parquet file ({exc})",
                    "pass <variant>/verl/train.parquet written by data_tools.prepare") from exc
    for column in ("reward_model", "extra_info", "prompt"):
        if column not in table.column_names:
            raise _fail(path, f"no '{column}' column", "pass <variant>/verl/train.parquet written by data_tools.prepare")
    if "phi" in table.column_names:
        table = table.drop(["phi"])
    extra = table.column("extra_info").to_pylist()
    gold = [list(rm["ground_truth"] or []) for rm in table.column("reward_model").to_pylist()]
    ids, systems = [], set()
    for row, info in enumerate(extra):
        info = info or {}
        if info.get("split") != "train":
            raise _fail(path, f"row {row} is from split {info.get('split')!r}",
                        "PHI pools are for the training split only: pass <variant>/verl/train.parquet")
        if info.get("sample_id") in (None, ""):
            raise _fail(path, f"row {row} has no extra_info.sample_id", "rebuild the data with data_tools.prepare")
        ids.append(str(info["sample_id"]))
        systems.add(info.get("code_system"))
    dup = [i for i, n in Counter(ids).items() if n > 1]
    if dup:
        raise _fail(path, f"sample_id {dup[0]} appears {Counter(ids)[dup[0]]} times", "rebuild the data with data_tools.prepare")
    if len(systems) != 1 or None in systems:
        raise _fail(path, f"extra_info.code_system is {sorted(map(str, systems))}", "use one prepared variant per file")
    return table, ids, gold, systems.pop()


def read_predictions(path: Path) -> dict[str, tuple[int, dict]]:
    """``id`` → (line, record) for every JSONL line; a bad line is an error naming it."""
    records: dict[str, tuple[int, dict]] = {}
    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        raise _fail(path, f"cannot open the predictions file ({exc.strerror})", "check --predictions") from exc
    with handle:
        for line_no, line in enumerate(tqdm(handle, desc="reading predictions", unit="line", leave=False), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _fail(path, f"not a JSON object ({exc.msg})", f"write one object per line, e.g. {RECORD_EXAMPLE}",
                            line_no) from None
            if not isinstance(record, dict) or record.get("id") in (None, ""):
                raise _fail(path, 'no "id"', f"give every line the sample id, e.g. {RECORD_EXAMPLE}", line_no)
            key = str(record["id"])
            if key in records:
                raise _fail(path, f"id {key} also on line {records[key][0]}", "keep one prediction per sample", line_no)
            if not isinstance(record.get("pred"), list) and not isinstance(record.get("response"), str):
                raise _fail(path, 'neither a "pred" list nor a "response" string',
                            f"write the inference tool's output, e.g. {RECORD_EXAMPLE}", line_no)
            records[key] = (line_no, record)
    return records


def predicted_codes(record: dict, gold: Sequence[str], system) -> set[str]:
    """Ŷ of one record, in the gold's canonical forms: a code unknown to the current tables (MIMIC-III's
    retired codes) still matches a gold code written the same way; undotted forms are resolved."""
    parsed = parse_codes(record["pred"]) if isinstance(record.get("pred"), list) else parse_response(record["response"])
    gold_set = set(gold)
    out = set()
    for code in parsed.codes:
        if code not in gold_set:
            code = system.resolve(code) or code
        out.add(code)
    return out


def refresh(train: Path, predictions: Path, out: Path, round_index: int, *, overwrite: bool = False) -> dict:
    """Write the round file and its summary; returns the summary."""
    from llm4icd_plugins.codes import load_code_system

    out = Path(out)
    if out.exists() and not overwrite:
        raise _fail(out, "already exists", "pass --overwrite, or another --out")
    if round_index < 0:
        raise RefreshError(f"--round {round_index}: must be >= 0")
    table, ids, raw_gold, system_name = read_train(Path(train))
    system = load_code_system(system_name)
    gold = [list(dict.fromkeys(c for c in map(canonicalize, g) if c)) for g in raw_gold]
    records = read_predictions(Path(predictions))
    missing = [i for i in ids if i not in records]
    if missing:
        raise _fail(predictions, f"{len(missing)} of {len(ids)} training samples have no prediction "
                    f"(first ids: {', '.join(missing[:5])})",
                    "run hint-free inference on the whole training split of this variant")
    extra = sorted(set(records) - set(ids))
    if extra:
        raise _fail(predictions, f"{len(extra)} ids are not training samples of {train} (first: {', '.join(extra[:5])})",
                    "pass predictions on the training split of the same variant")
    preds = []
    for sample_id, g in zip(ids, gold):
        line, record = records[sample_id]
        if isinstance(record.get("gold"), list):
            theirs = {c for c in map(canonicalize, (x for x in record["gold"] if isinstance(x, str))) if c}
            if theirs != set(g):
                raise _fail(predictions, f"gold codes of sample {sample_id} differ from {train}",
                            "pass predictions made on the same prepared variant", line)
        preds.append(predicted_codes(record, g, system))
    pools = hint_pools(gold, preds)
    freq, recall = code_stats(gold, preds)
    phi = [{"round": int(round_index), "pool": pool, "pool_freq": [int(freq[c]) for c in pool],
            "pool_recall": [float(recall[c]) for c in pool]} for pool in pools]
    table = table.append_column(pa.field("phi", PHI_TYPE), pa.array(phi, type=PHI_TYPE))
    summary = _summary(pools, gold, preds, freq, round_index, train, predictions)
    out.parent.mkdir(parents=True, exist_ok=True)
    _atomic(out, lambda p: pq.write_table(table, p))
    _atomic(summary_path(out), lambda p: Path(p).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8"))
    return summary


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


def _atomic(path: Path, write) -> None:
    """Write through a temporary file in the same folder, renamed into place only when complete."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_tools.phi_refresh", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="The summary goes to <out>.summary.json (without .parquet).")
    parser.add_argument("--train", required=True, type=Path,
                        help="training rows: <variant>/verl/train.parquet from data_tools.prepare (or a previous "
                        "round file: its pools are replaced)")
    parser.add_argument("--predictions", required=True, type=Path,
                        help='JSONL of hint-free greedy predictions on the training split: one {"id", "pred": [codes]} '
                        'or {"id", "response"} per sample (ids = extra_info.sample_id); an optional "gold" is checked')
    parser.add_argument("--out", required=True, type=Path, help="round file to write (parquet), e.g. round_1/train.parquet")
    parser.add_argument("--round", required=True, type=int, dest="round_index",
                        help="index of the PHI round that will train on this file (1 for pools seeded by the SFT model)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        s = refresh(args.train, args.predictions, args.out, args.round_index, overwrite=args.overwrite)
    except RefreshError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: round {s['round']}, {s['rows']} training rows; {s['mastered_rows']} mastered (empty pool, "
          f"skipped), {s['rows_with_hints']} with hints; pool size mean {s['pool_size']['mean_nonempty']:.2f} "
          f"(non-empty), max {s['pool_size']['max']}; {s['pooled_codes']} distinct codes pooled; "
          f"training micro-recall {s['train_micro_recall']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
