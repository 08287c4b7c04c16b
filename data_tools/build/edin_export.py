"""The bridge to Edin et al.'s repository (medical-coding-reproducibility): export a prepared variant in the
table its models (PLM-ICD, LAAT, MultiResCNN, CAML, ...) train on, and read their scores back.

Their loader reads ``<name>.feather`` with columns ``_id`` (int64), ``text``, ``target`` (list of codes),
``num_words``, ``num_targets`` and one list column per code table (``icd9_diag``, ``icd9_proc``; ``icd10_diag``,
``icd10_proc``), joins ``<name>_splits.feather`` (``_id``, ``split``: train/val/test) on ``_id``, and writes
``predictions_<split>.feather``: one column of sigmoid probabilities per code, ``target`` and ``_id``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather

from data_tools.evaluation.thresholds import ProbMatrix, ThresholdError, _check, load_matrix
from llm4icd_plugins.atomic import atomic_dir
from llm4icd_plugins.errors import UserError, show_token, user_error
from llm4icd_plugins.normalize import table_of_canonical
from llm4icd_plugins.variant import PreparedVariant

TABLE_COLUMNS = {"icd9": {"icd9_dx": "icd9_diag", "icd9_proc": "icd9_proc"},
                 "icd10": {"icd10_dx": "icd10_diag", "icd10_proc": "icd10_proc"}}


def _integer_ids(ids: Sequence[str]) -> bool:
    """True when every id is a canonical decimal integer (MIMIC's hadm_id), so ``_id`` can be the id itself."""
    try:
        return all(str(int(i)) == i for i in ids) and len({int(i) for i in ids}) == len(ids)
    except ValueError:
        return False


def export_edin(variant, out: Path) -> dict:
    """Write ``<name>.feather``, ``<name>_splits.feather``, ``<name>.yaml`` (their data config) and, when the ids
    are not integers, ``ids.csv`` (``_id`` → sample id). Returns what was written."""
    columns = TABLE_COLUMNS[variant.code_system]
    rows = [(sid, split, text, codes) for split, part in variant.splits.items()
            for sid, text, codes in zip(part.ids, part.texts, part.codes)]
    ids = [r[0] for r in rows]
    mapped = not _integer_ids(ids)
    numeric = list(range(len(ids))) if mapped else [int(i) for i in ids]
    per_table = {name: [] for name in columns.values()}
    for sid, split, _, codes in rows:
        split_codes = {name: [] for name in columns.values()}
        for code in codes:
            table = table_of_canonical(code, variant.code_system)
            if table not in columns:
                raise user_error(PreparedVariant(variant.path).examples_path(split),
                                 f"code {show_token(code)} of sample {show_token(sid, 32)} is neither a "
                                 f"{variant.code_system} diagnosis nor procedure code in canonical form",
                                 "re-run data_tools.build.prepare, which writes canonical codes", cls=UserError)
            split_codes[columns[table]].append(code)
        for name, values in split_codes.items():
            per_table[name].append(values)
    codes_type = pa.list_(pa.large_string())
    table = pa.table({
        "_id": pa.array(numeric, pa.int64()),
        "text": pa.array([r[2] for r in rows], pa.large_utf8()),
        "target": pa.array([list(r[3]) for r in rows], codes_type),
        "num_words": pa.array([len(r[2].split()) for r in rows], pa.int64()),
        "num_targets": pa.array([len(r[3]) for r in rows], pa.int64()),
        **{name: pa.array(values, codes_type) for name, values in per_table.items()},
    })
    splits = pa.table({"_id": pa.array(numeric, pa.int64()), "split": pa.array([r[1] for r in rows], pa.large_utf8())})
    name = variant.name
    info = {"data_filename": f"{name}.feather", "split_filename": f"{name}_splits.feather", "config": f"{name}.yaml",
            "rows": len(rows), "id_map": mapped}
    config = (f"defaults:\n  - defaults\ndir: files/data/{name}\ndata_filename: {info['data_filename']}\n"
              f"split_filename: {info['split_filename']}\ncode_column_names:\n"
              + "".join(f"  - {c}\n" for c in columns.values()) + "max_length: 4000\n")
    with atomic_dir(out) as tmp:
        feather.write_feather(table, tmp / info["data_filename"])
        feather.write_feather(splits, tmp / info["split_filename"])
        (tmp / info["config"]).write_text(config, encoding="utf-8")
        if mapped:
            pd.DataFrame({"_id": numeric, "id": ids}).to_csv(tmp / "ids.csv", index=False)
        (tmp / "export.json").write_text(json.dumps(dict(info, variant=str(variant.path)), indent=2) + "\n",
                                         encoding="utf-8")
    return info


def read_edin_predictions(path: Path, id_map: Path | None):
    """Edin et al.'s ``predictions_<split>.feather`` as a ``thresholds.ProbMatrix`` keyed by sample id."""
    try:
        frame = pd.read_feather(path)
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise user_error(path, f"cannot read the feather file ({type(exc).__name__})",
                         "pass predictions_<split>.feather as Edin et al.'s trainer writes it") from exc
    if "_id" not in frame.columns:
        raise user_error(path, "no '_id' column", "pass predictions_<split>.feather (columns _id, target, codes)",
                         column="_id")
    try:
        ids = [str(int(i)) for i in frame["_id"]]
    except (TypeError, ValueError) as exc:
        raise user_error(path, "an _id is missing or not an integer", "pass the predictions of an export-edin "
                         "table, whose _id are integers", column="_id") from exc
    if id_map is not None:
        mapping = pd.read_csv(id_map, dtype=str)
        if list(mapping.columns) != ["_id", "id"]:
            raise user_error(id_map, "columns are not _id, id", "pass the ids.csv written by export-edin")
        lookup = dict(zip(mapping["_id"], mapping["id"]))
        missing = [i for i in ids if i not in lookup]
        if missing:
            raise user_error(path, f"{len(missing)} _id values are not in {id_map}",
                             "pass the ids.csv of the export these predictions were trained on", column="_id")
        ids = [lookup[i] for i in ids]
    codes = [str(c) for c in frame.columns if c not in ("_id", "target")]
    probs = frame[codes].to_numpy(dtype=np.float64)
    return ProbMatrix(ids, codes, probs)


def read_scores(path: Path, split_ids: Sequence[str], id_map: Path | None = None):
    """An external coder's scores of one split (``.npz``/``.parquet`` as ``data_tools.evaluation.thresholds`` reads
    them, or Edin's ``.feather``), rows in the order of ``split_ids``; every note of the split must be scored once."""
    path = Path(path)
    if not path.is_file():
        raise user_error(path, "no such file", "pass the coder's score matrix of this split")
    try:
        if path.suffix == ".feather":
            matrix = read_edin_predictions(path, id_map)
            _check(matrix, path)
        else:
            matrix = load_matrix(path)
    except ThresholdError as exc:
        raise UserError(str(exc)) from exc
    row = {i: r for r, i in enumerate(matrix.ids)}
    missing = [i for i in split_ids if i not in row]
    extra = len(set(row) - set(split_ids))
    if missing or extra:
        raise user_error(path, f"{len(missing)} notes of the split have no row and {extra} rows are not notes of "
                         "the split", "score exactly the notes of this split of the --data variant (ids as in its "
                         "examples/<split>.parquet; for Edin exports with ids.csv pass --id-map)", column="id")
    order = np.array([row[i] for i in split_ids], dtype=np.int64)
    return ProbMatrix(list(split_ids), matrix.codes, np.asarray(matrix.probs, dtype=np.float32)[order])
