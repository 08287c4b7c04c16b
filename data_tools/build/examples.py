"""Admissions → examples: the split file (Edin et al.'s clean splits, a table's own split column or a
patient-level random split), codes deduplicated per admission, rare codes removed, code-less admissions
dropped; and the Top-50 label set."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd

from data_tools.build.loaders import RawData, Report
from data_tools.build.tables import norm_ids, read_table
from llm4icd_plugins.errors import show_token, user_error

SPLITS = ("train", "val", "test")


def load_splits(path) -> pd.DataFrame:
    """Edin's clean split file: ``_id`` (admission id) and ``split`` in train/val/test."""
    frame = read_table(path, ["_id", "split"])
    return check_splits(frame, path)


def check_splits(frame: pd.DataFrame, path) -> pd.DataFrame:
    frame = frame.copy()
    frame["_id"] = norm_ids(frame["_id"], path, "_id")
    frame["split"] = frame["split"].astype("string").str.strip().str.lower()
    bad = ~frame["split"].isin(SPLITS) | frame["_id"].isna()
    if bad.any():
        row = int(frame.index[bad.to_numpy()][0])
        split, sample = show_token(frame.loc[row, "split"]), show_token(frame.loc[row, "_id"])
        raise user_error(path, f"split {split} for id {sample} is not one of {', '.join(SPLITS)}",
                         "use the split names train, val and test", row=row + 1)
    dup = frame["_id"].duplicated()
    if dup.any():
        row = int(frame.index[dup.to_numpy()][0])
        raise user_error(path, f"id {frame.loc[row, '_id']} appears more than once", "list every admission once",
                         row=row + 1)
    return frame


def random_splits(ids: Sequence[str], groups: Sequence | None, val_fraction: float, test_fraction: float,
                  seed: int) -> pd.DataFrame:
    """Group-level (patient-level when groups are subjects) random split for tables without one."""
    ids = list(ids)
    keys = [g if g is not None and not pd.isna(g) else f"id:{i}" for g, i in zip(groups or ids, ids)]
    unique = sorted(set(keys))
    order = np.random.default_rng(seed).permutation(len(unique))
    n_test = int(round(test_fraction * len(unique)))
    n_val = int(round(val_fraction * len(unique)))
    assignment = {}
    for rank, idx in enumerate(order):
        assignment[unique[idx]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return pd.DataFrame({"_id": ids, "split": [assignment[k] for k in keys]})


# --- assembling examples -------------------------------------------------------------------------------

def assemble(raw: RawData, splits: pd.DataFrame, splits_path, report: Report, min_code_count: int) -> pd.DataFrame:
    """Examples (id, subject_id, text, codes, split) of the admissions in the split file, with
    deduplicated codes, rare codes removed and code-less admissions dropped."""
    notes = raw.notes.set_index("id")
    unusable = splits["_id"].isin(raw.unusable) & ~splits["_id"].isin(notes.index)
    report.drop("admissions in the split file whose discharge summaries are all empty or flagged ISERROR",
                int(unusable.sum()))
    splits = splits[~unusable]
    in_notes = splits["_id"].isin(notes.index)
    if not in_notes.all():
        row = int(splits.index[~in_notes.to_numpy()][0])
        raise user_error(splits_path, f"{int((~in_notes).sum())} split id(s) have no discharge summary in "
                         f"{raw.sources.get('notes', raw.sources.get('input'))} (first: {splits.loc[row, '_id']})",
                         "pass the split file that belongs to these notes (e.g. mimiciii_clean_splits for MIMIC-III, "
                         "mimiciv_icd10_split for MIMIC-IV ICD-10)", row=row + 1)
    report.drop("admissions with a discharge summary but not in the split file",
                int((~notes.index.isin(splits["_id"])).sum()))
    codes = raw.codes
    no_note = ~codes["id"].isin(splits["_id"])
    report.info["code_rows_of_admissions_outside_the_split_file"] = int(no_note.sum())
    codes = codes[~no_note].sort_values(["kind", "seq", "row"], kind="stable")
    dup = codes.duplicated(["id", "code"])
    report.info["duplicate_code_rows_removed"] = int(dup.sum())
    codes = codes[~dup]
    per_id = codes.groupby("id", sort=False)["code"].agg(list)
    examples = pd.DataFrame({"id": splits["_id"].to_numpy(), "split": splits["split"].to_numpy()})
    examples["subject_id"] = notes.loc[examples["id"], "subject_id"].to_numpy()
    examples["text"] = notes.loc[examples["id"], "text"].to_numpy()
    examples["codes"] = [per_id.get(i, []) for i in examples["id"]]
    empty = examples["codes"].map(len) == 0
    report.drop("admissions without any code", int(empty.sum()))
    examples = examples[~empty]

    counts = Counter(c for codes_ in examples["codes"] for c in codes_)
    rare = {c for c, n in counts.items() if n < min_code_count}
    report.info["rare_codes_removed"] = {"threshold": min_code_count, "distinct": len(rare),
                                         "occurrences": int(sum(counts[c] for c in rare))}
    if rare:
        examples = examples.assign(codes=[[c for c in cs if c not in rare] for cs in examples["codes"]])
        empty = examples["codes"].map(len) == 0
        report.drop(f"admissions left without codes after removing codes seen < {min_code_count} times",
                    int(empty.sum()))
        examples = examples[~empty]
    subjects = examples.dropna(subset=["subject_id"]).groupby("subject_id")["split"].nunique()
    leaking = int((subjects > 1).sum())
    report.info["subjects_in_several_splits"] = leaking
    if leaking:
        print(f"warning: {leaking} subject(s) have admissions in more than one split; the clean splits are "
              "patient-level, check the split file", file=sys.stderr)
    order = {s: i for i, s in enumerate(SPLITS)}
    examples = examples.sort_values("split", key=lambda s: s.map(order), kind="stable")
    return examples.reset_index(drop=True)


def top50_codes(examples: pd.DataFrame, dataset: str) -> tuple[list[str], dict]:
    """MIMIC-III: Mullenbach's fixed list ∩ codes in the data; otherwise the 50 most frequent
    training codes (ties broken by code)."""
    present = Counter(c for cs in examples["codes"] for c in cs)
    if dataset == "mimic3":
        from llm4icd_plugins.codes import mimic3_top50_codes

        fixed = list(mimic3_top50_codes())
        chosen = [c for c in fixed if c in present]
        return chosen, {"source": "Mullenbach et al. fixed list", "absent_from_data": [c for c in fixed
                                                                                       if c not in present]}
    train = Counter(c for cs in examples.loc[examples["split"] == "train", "codes"] for c in cs)
    chosen = [c for c, _ in sorted(train.items(), key=lambda kv: (-kv[1], kv[0]))[:50]]
    return chosen, {"source": "50 most frequent training codes"}


def variant_examples(examples: pd.DataFrame, variant: str, dataset: str) -> tuple[pd.DataFrame, list[str], dict,
                                                                                  Counter]:
    """The examples, label space, label-space record and extra drop counts of the label setting ``variant``
    (full: every code left; top50: ``top50_codes``, examples without a Top-50 code dropped)."""
    dropped: Counter = Counter()
    if variant == "full":
        return examples, sorted({c for cs in examples["codes"] for c in cs}), \
            {"source": "all codes left after rare-code removal"}, dropped
    labels, label_info = top50_codes(examples, dataset)
    keep = set(labels)
    data = examples.assign(codes=[[c for c in cs if c in keep] for cs in examples["codes"]])
    empty = data["codes"].map(len) == 0
    for split in SPLITS:
        n = int((empty & (data["split"] == split)).sum())
        if n:
            dropped[f"{split} examples without a Top-50 code"] += n
    return data[~empty].reset_index(drop=True), labels, label_info, dropped
