"""data_tools.build.prepare on synthetic MIMIC-III/IV raw tables: expected codes recomputed independently from
the raw tables, splits, Top-50 selection, output schemas, truncation budgets, and bad-input errors
that leave no output behind."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from data_tools.build import prepare
from data_tools.build.synth import generate_mimic3, generate_mimic4
from llm4icd_plugins import prompts
from llm4icd_plugins.codes import load_code_system, load_label_space, mimic3_top50_codes
from llm4icd_plugins.errors import UserError
from llm4icd_plugins.normalize import format_code, table_of_canonical

N_ADMISSIONS = 500
SPLITS = ("train", "val", "test")
UNKNOWN_RAW, UNKNOWN_CODE = "79999", "799.99"  # well-formed ICD-9 code the tables do not know


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    base = tmp_path_factory.mktemp("raw")
    m3 = generate_mimic3(base, n_admissions=N_ADMISSIONS, seed=1)
    m4 = generate_mimic4(base, n_admissions=N_ADMISSIONS, seed=1)
    # A well-formed ICD-9 code absent from the current tables, frequent enough to survive the rare filter.
    assert UNKNOWN_CODE not in load_code_system("icd9")
    dx = pd.read_csv(m3["diagnoses"], dtype=str, keep_default_na=False)
    first = dx.drop_duplicates("HADM_ID").head(12).copy()
    first["ICD9_CODE"] = UNKNOWN_RAW
    first["SEQ_NUM"] = "99"
    pd.concat([dx, first]).to_csv(m3["diagnoses"], index=False)
    return {"mimic3": m3, "mimic4": m4, "base": base}


@pytest.fixture(scope="module")
def small_raw(tmp_path_factory):
    """A smaller corpus for the tests that tokenize every prompt."""
    base = tmp_path_factory.mktemp("small_raw")
    return {"mimic3": generate_mimic3(base, n_admissions=150, seed=2),
            "mimic4": generate_mimic4(base, n_admissions=150, seed=2)}


def _run(args) -> int:
    return prepare.main([str(a) for a in args])


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "data"
    assert _run(["mimic3", "--root", raw["mimic3"]["root"], "--out", out]) == 0
    assert _run(["mimic4", "--root", raw["mimic4"]["root"], "--out", out]) == 0
    return out


def _examples(out: Path, variant: str) -> pd.DataFrame:
    parts = [pd.read_parquet(out / variant / "examples" / f"{s}.parquet").assign(split=s) for s in SPLITS]
    return pd.concat(parts, ignore_index=True)


def _expected_codes(raw_paths, dataset: str, min_count: int = 10) -> dict[str, list[str]]:
    """Per admission of the split file: deduplicated canonical codes with rare codes removed, from the raw tables."""
    splits = pd.read_feather(raw_paths["splits"])
    ids = set(splits["_id"].astype(str))
    per_id: dict[str, set] = {i: set() for i in ids}
    for key, kind in (("diagnoses", "dx"), ("procedures", "proc")):
        table = pd.read_csv(raw_paths[key], dtype=str, keep_default_na=False)
        table.columns = [c.lower() for c in table.columns]
        if dataset == "mimic4":
            table = table[table["icd_version"] == "10"]
            system, col = "icd10", "icd_code"
        else:
            system, col = "icd9", "icd9_code"
        for hadm, raw_code in zip(table["hadm_id"], table[col]):
            if hadm in per_id and raw_code.strip():
                per_id[hadm].add(format_code(raw_code, f"{system}_{kind}"))
    counts = Counter(c for codes in per_id.values() for c in codes)
    kept = {i: sorted(c for c in codes if counts[c] >= min_count) for i, codes in per_id.items()}
    return {i: codes for i, codes in kept.items() if codes}


@pytest.mark.parametrize("dataset", ["mimic3", "mimic4"])
def test_full_variant_codes_match_raw_tables(raw, prepared, dataset):
    ex = _examples(prepared, f"{dataset}_full")
    expected = _expected_codes(raw[dataset], dataset)
    got = {i: sorted(c) for i, c in zip(ex["id"], ex["codes"])}
    assert got == expected
    system = "icd9" if dataset == "mimic3" else "icd10"
    assert all(table_of_canonical(c, system) for codes in got.values() for c in codes)
    # Codes keep MIMIC's order: diagnoses (by SEQ_NUM) before procedures, no duplicates.
    for codes in ex["codes"]:
        tables = [table_of_canonical(c, system) for c in codes]
        assert tables == sorted(tables, key=lambda t: t.endswith("_proc")) and len(set(codes)) == len(codes)
    labels = load_label_space(prepared / f"{dataset}_full" / "label_space.json")
    assert labels.system == system and labels.name == f"{dataset}_full"
    assert set(labels.codes) == {c for codes in got.values() for c in codes}


def test_dotted_forms_and_rare_codes(raw, prepared):
    ex = _examples(prepared, "mimic3_full")
    codes = Counter(c for cs in ex["codes"] for c in cs)
    assert min(codes.values()) >= 10
    assert any("." in c and table_of_canonical(c, "icd9") == "icd9_proc" for c in codes)
    assert not any(c.isdigit() and len(c) > 3 for c in codes)  # no undotted raw forms left
    stats = json.loads((prepared / "mimic3_full" / "stats.json").read_text())
    assert stats["info"]["rare_codes_removed"]["distinct"] > 0
    # A lower threshold keeps more codes (and the count in stats says so).
    out = raw["base"] / "min1"
    assert _run(["mimic3", "--root", raw["mimic3"]["root"], "--out", out, "--min-code-count", "1",
                 "--variants", "full"]) == 0
    labels_1 = load_label_space(out / "mimic3_full" / "label_space.json")
    assert len(labels_1) > len(codes)
    assert not (out / "mimic3_top50").exists()


def test_unknown_codes_are_kept_and_counted(prepared):
    ex = _examples(prepared, "mimic3_full")
    assert sum(UNKNOWN_CODE in cs for cs in ex["codes"]) >= 10
    stats = json.loads((prepared / "mimic3_full" / "stats.json").read_text())
    assert UNKNOWN_CODE in stats["unknown_codes"]["codes"]
    assert stats["unknown_codes"]["occurrences"] >= 10


def test_addenda_joined_in_chart_order(raw, prepared):
    notes = pd.read_csv(raw["mimic3"]["notes"], dtype=str, keep_default_na=False)
    ds = notes[notes["CATEGORY"] == "Discharge summary"]
    ex = _examples(prepared, "mimic3_full").set_index("id")
    checked = 0
    for hadm, group in ds.groupby("HADM_ID"):
        hadm = hadm.removesuffix(".0")
        if (group["DESCRIPTION"] == "Addendum").any() and hadm in ex.index:
            text = ex.loc[hadm, "text"]
            ordered = group.sort_values(["CHARTDATE", "ROW_ID"], key=lambda s: s if s.name == "CHARTDATE"
                                        else s.astype(int))
            positions = [text.index(t.strip().lower()[:200]) for t in ordered["TEXT"]]
            assert positions == sorted(positions)
            checked += 1
    assert checked > 0
    other = notes[notes["CATEGORY"] != "Discharge summary"]["TEXT"].str.lower().str.strip().str[:200]
    assert not any(snippet in text for snippet in other[:50] for text in ex["text"])


@pytest.mark.parametrize("dataset", ["mimic3", "mimic4"])
def test_patient_level_splits_kept(raw, prepared, dataset):
    ex = _examples(prepared, f"{dataset}_full")
    split_file = pd.read_feather(raw[dataset]["splits"]).assign(_id=lambda d: d["_id"].astype(str))
    assert dict(zip(ex["id"], ex["split"])).items() <= dict(zip(split_file["_id"], split_file["split"])).items()
    subjects = [set(ex.loc[ex["split"] == s, "subject_id"]) for s in SPLITS]
    assert not (subjects[0] & subjects[1] or subjects[0] & subjects[2] or subjects[1] & subjects[2])
    assert all(len(s) for s in subjects)


def test_mimic3_top50_is_mullenbach_list_in_data(prepared):
    full = load_label_space(prepared / "mimic3_full" / "label_space.json")
    top = load_label_space(prepared / "mimic3_top50" / "label_space.json")
    assert list(top.codes) == [c for c in mimic3_top50_codes() if c in full]
    _check_top_examples(prepared, "mimic3", set(top.codes))


def test_mimic4_top50_is_most_frequent_training_codes(prepared):
    full_ex = _examples(prepared, "mimic4_full")
    counts = Counter(c for cs in full_ex.loc[full_ex["split"] == "train", "codes"] for c in cs)
    expected = sorted(counts, key=lambda c: (-counts[c], c))[:50]
    top = load_label_space(prepared / "mimic4_top50" / "label_space.json")
    assert list(top.codes) == expected and len(top) == min(50, len(counts)) == 50
    _check_top_examples(prepared, "mimic4", set(expected))


def _check_top_examples(out, dataset, top):
    full = _examples(out, f"{dataset}_full").set_index("id")
    ex = _examples(out, f"{dataset}_top50")
    for sample_id, codes in zip(ex["id"], ex["codes"]):
        assert list(codes) == [c for c in full.loc[sample_id, "codes"] if c in top] and len(codes)
    n_empty = sum(not any(c in top for c in cs) for cs in full["codes"])
    assert len(ex) == len(full) - n_empty
    dropped = json.loads((out / f"{dataset}_top50" / "stats.json").read_text())["dropped"]
    assert sum(n for r, n in dropped.items() if "without a Top-50 code" in r) == n_empty


def test_mimic4_icd9_rows_dropped_and_counted(raw, prepared):
    stats = json.loads((prepared / "mimic4_full" / "stats.json").read_text())
    for key, name in (("diagnoses", "diagnoses_icd"), ("procedures", "procedures_icd")):
        table = pd.read_csv(raw["mimic4"][key], dtype=str)
        n9 = int((table["icd_version"] == "9").sum())
        assert n9 > 0
        assert stats["dropped"][f"{name}.csv.gz: rows with icd_version 9 (this variant keeps ICD-10 only)"] == n9


@pytest.mark.parametrize("variant", ["mimic3_full", "mimic3_top50", "mimic4_full", "mimic4_top50"])
def test_output_files_have_the_exact_schema(prepared, variant):
    root = prepared / variant
    system = "icd9" if variant.startswith("mimic3") else "icd10"
    spec = prompts.PromptSpec(system, variant.split("_")[1])
    info = json.loads((root / "dataset_info.json").read_text())
    assert set(info) == {f"{variant}_{s}" for s in SPLITS}
    for split in SPLITS:
        entry = info[f"{variant}_{split}"]
        assert entry["formatting"] == "sharegpt" and entry["columns"] == {"messages": "messages"}
        assert entry["tags"] == {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                 "assistant_tag": "assistant", "system_tag": "system"}
        assert (root / entry["file_name"]).is_file()
        ex = pd.read_parquet(root / "examples" / f"{split}.parquet")
        assert list(ex.columns) == ["id", "subject_id", "text", "codes", "text_truncated"]
        assert ex["id"].is_unique and len(ex) > 0
        sharegpt = [json.loads(line) for line in (root / "sharegpt" / f"{split}.jsonl").read_text().splitlines()]
        verl = pd.read_parquet(root / "verl" / f"{split}.parquet")
        assert list(verl.columns) == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
        assert len(sharegpt) == len(verl) == len(ex)
        for i, (row, sg, v) in enumerate(zip(ex.itertuples(), sharegpt, verl.itertuples())):
            user = prompts.build_user_prompt(row.text_truncated, spec)
            assert row.text == row.text.lower() and row.text_truncated == row.text  # no tokenizer: untruncated
            assert sg["id"] == row.id
            assert sg["messages"] == [{"role": "user", "content": user},
                                      {"role": "assistant", "content": prompts.format_answer(list(row.codes))}]
            assert [dict(m) for m in v.prompt] == [{"role": "user", "content": user}]
            assert v.data_source == f"llm4icd/{variant}" and v.ability == "icd_coding"
            assert v.reward_model["style"] == "rule" and list(v.reward_model["ground_truth"]) == list(row.codes)
            assert v.extra_info == {"index": i, "sample_id": row.id, "split": split, "code_system": system,
                                    "label_space": variant, "n_codes": len(row.codes)}
    stats = json.loads((root / "stats.json").read_text())
    assert stats["splits"]["train"]["examples"] == len(pd.read_parquet(root / "examples" / "train.parquet"))
    assert "no --tokenizer" in stats["tokens"]["truncation"]


def test_reward_scores_the_gold_answer_one(prepared):
    from llm4icd_plugins.verl.reward import compute_score

    verl = pd.read_parquet(prepared / "mimic4_full" / "verl" / "val.parquet")
    for row in verl.head(5).itertuples():
        gold = list(row.reward_model["ground_truth"])
        result = compute_score(row.data_source, prompts.format_answer(gold), gold, dict(row.extra_info))
        assert (result["score"] if isinstance(result, dict) else result) == pytest.approx(1.0)


# --- bad input --------------------------------------------------------------------------------------------

def _copy_mimic3(raw, dest: Path) -> Path:
    dest.mkdir()
    for key in ("notes", "diagnoses", "procedures", "splits"):
        src = raw["mimic3"][key]
        (dest / src.name).write_bytes(src.read_bytes())
    return dest


def _assert_fails_cleanly(args, out: Path, capsys, *needles):
    assert _run(args + ["--out", out]) == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, err
    assert "Fix:" in err
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))


def test_missing_column_is_an_error(raw, tmp_path, capsys):
    root = _copy_mimic3(raw, tmp_path / "m3")
    dx = pd.read_csv(root / "DIAGNOSES_ICD.csv.gz", dtype=str).drop(columns=["ICD9_CODE"])
    dx.to_csv(root / "DIAGNOSES_ICD.csv.gz", index=False)
    _assert_fails_cleanly(["mimic3", "--root", root], tmp_path / "out", capsys,
                          "DIAGNOSES_ICD.csv.gz", "missing column(s) ICD9_CODE")


def test_split_id_not_in_notes_is_an_error(raw, tmp_path, capsys):
    root = _copy_mimic3(raw, tmp_path / "m3")
    splits = pd.read_feather(root / "mimiciii_clean_splits.feather")
    bad = pd.concat([splits, pd.DataFrame({"_id": [999999999], "split": ["train"]})], ignore_index=True)
    bad.to_feather(root / "mimiciii_clean_splits.feather")
    _assert_fails_cleanly(["mimic3", "--root", root], tmp_path / "out", capsys, "mimiciii_clean_splits.feather",
                          f"row {len(bad)}", "999999999", "no discharge summary")


def test_malformed_code_is_an_error_or_skipped(raw, tmp_path, capsys):
    root = _copy_mimic3(raw, tmp_path / "m3")
    dx = pd.read_csv(root / "DIAGNOSES_ICD.csv.gz", dtype=str, keep_default_na=False)
    dx.loc[5, "ICD9_CODE"] = "12AB"
    dx.to_csv(root / "DIAGNOSES_ICD.csv.gz", index=False)
    _assert_fails_cleanly(["mimic3", "--root", root], tmp_path / "out", capsys,
                          "DIAGNOSES_ICD.csv.gz", "row 6", "'12AB'", "--skip-malformed")
    out = tmp_path / "skipped"
    assert _run(["mimic3", "--root", root, "--out", out, "--skip-malformed"]) == 0
    stats = json.loads((out / "mimic3_full" / "stats.json").read_text())
    assert stats["dropped"]["DIAGNOSES_ICD.csv.gz: rows with a malformed code (--skip-malformed)"] == 1


def test_unreadable_file_and_existing_output(raw, tmp_path, capsys):
    root = _copy_mimic3(raw, tmp_path / "m3")
    (root / "PROCEDURES_ICD.csv.gz").write_bytes(b"\x1f\x8bnot really gzip")
    _assert_fails_cleanly(["mimic3", "--root", root], tmp_path / "out", capsys,
                          "PROCEDURES_ICD.csv.gz", "cannot read")
    out = tmp_path / "exists"
    (out / "mimic3_full").mkdir(parents=True)
    assert _run(["mimic3", "--root", raw["mimic3"]["root"], "--out", out]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert not (out / "mimic3_top50").exists() and not any((out / "mimic3_full").iterdir())


# --- hostile input: nothing corrupted silently -------------------------------------------------------------

def _single_note_admissions(notes: pd.DataFrame) -> pd.DataFrame:
    """Discharge-summary rows of admissions that have exactly one."""
    ds = notes[notes["CATEGORY"].str.strip() == "Discharge summary"]
    counts = ds["HADM_ID"].value_counts()
    return ds[ds["HADM_ID"].isin(counts[counts == 1].index)]


def test_blank_empty_and_iserror_notes_are_dropped_and_counted(small_raw, tmp_path, capsys):
    root = _copy_mimic3(small_raw, tmp_path / "m3")
    notes = pd.read_csv(root / "NOTEEVENTS.csv.gz", dtype=str, keep_default_na=False)
    single = _single_note_admissions(notes)
    blank, empty, flagged = single.index[:3], single.index[3:5], single.index[5:7]
    notes.loc[blank, "TEXT"] = " \n\t  "
    notes.loc[empty, "TEXT"] = ""
    notes.loc[flagged, "ISERROR"] = "1"
    notes.to_csv(root / "NOTEEVENTS.csv.gz", index=False)
    out = tmp_path / "out"
    assert _run(["mimic3", "--root", root, "--out", out, "--variants", "full"]) == 0, capsys.readouterr().err
    dropped = json.loads((out / "mimic3_full" / "stats.json").read_text())["dropped"]
    assert dropped["NOTEEVENTS.csv.gz: discharge notes with empty or whitespace-only text"] == 5
    is_ds = notes["CATEGORY"].str.strip() == "Discharge summary"
    assert dropped["NOTEEVENTS: discharge summaries flagged ISERROR"] == int((is_ds & notes["ISERROR"].eq("1")).sum())
    gone = set(notes.loc[blank.union(empty).union(flagged), "HADM_ID"])
    in_split = gone & set(pd.read_feather(root / "mimiciii_clean_splits.feather")["_id"].astype(str))
    assert in_split
    key = "admissions in the split file whose discharge summaries are all empty or flagged ISERROR"
    assert dropped[key] == len(in_split)
    examples = _examples(out, "mimic3_full")
    assert not set(examples["id"]) & gone
    assert examples["text"].str.strip().str.len().min() > 0


def test_duplicate_note_rows_are_kept_once(small_raw, tmp_path, capsys):
    root = _copy_mimic3(small_raw, tmp_path / "m3")
    notes = pd.read_csv(root / "NOTEEVENTS.csv.gz", dtype=str, keep_default_na=False)
    twice = _single_note_admissions(notes).head(4)
    pd.concat([notes, twice]).to_csv(root / "NOTEEVENTS.csv.gz", index=False)
    out = tmp_path / "out"
    assert _run(["mimic3", "--root", root, "--out", out, "--variants", "full"]) == 0, capsys.readouterr().err
    dropped = json.loads((out / "mimic3_full" / "stats.json").read_text())["dropped"]
    assert dropped["NOTEEVENTS.csv.gz: duplicate discharge notes (same admission and text; kept once)"] == 4
    texts = _examples(out, "mimic3_full").set_index("id")["text"]
    checked = [h for h in twice["HADM_ID"] if h in texts.index]
    assert checked
    for hadm, text in zip(twice["HADM_ID"], twice["TEXT"]):
        if hadm in texts.index:
            assert texts[hadm] == text.lower().strip()


@pytest.mark.parametrize("damage", ["cut_inside_code", "cut_row_short", "stray_quote"])
def test_damaged_code_table_is_refused(small_raw, tmp_path, capsys, damage):
    root = _copy_mimic3(small_raw, tmp_path / "m3")
    import gzip

    data = gzip.decompress((root / "DIAGNOSES_ICD.csv.gz").read_bytes()).decode()
    if damage == "cut_inside_code":
        data = data.rstrip("\n")[:-2]
    elif damage == "cut_row_short":
        data = data.rstrip("\n").rsplit(",", 1)[0] + "\n"
    else:
        lines = data.split("\n")
        lines[7] = lines[7].replace(",", ',"x', 1)
        data = "\n".join(lines)
    (root / "DIAGNOSES_ICD.csv.gz").write_bytes(gzip.compress(data.encode()))
    needles = {"cut_inside_code": "line break", "cut_row_short": "fields", "stray_quote": "row 7"}
    _assert_fails_cleanly(["mimic3", "--root", root], tmp_path / "out", capsys, "DIAGNOSES_ICD.csv.gz",
                          needles[damage])


def test_output_is_checked_before_the_work(small_raw, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        assert _run(["mimic3", "--root", tmp_path / "no-such-root", "--out", out]) == 2
        err = capsys.readouterr().err
        assert str(tmp_path / "file") in err and "--out" in err and "no-such-root" not in err, err
    assert (tmp_path / "file").read_text() == "x"



def test_read_only_output_is_refused_before_the_work():
    """As root (CI) the check runs as the unprivileged user `nobody` (root may write anywhere)."""
    import shutil
    import subprocess
    import sys
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="llm4icd-ro-"))  # world-traversable, unlike pytest's root-only tmp
    try:
        base.chmod(0o755)
        locked = base / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        cmd = [sys.executable, "-m", "data_tools.build.prepare", "mimic3", "--root", str(base / "no-such-root"),
               "--out", str(locked / "out")]
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.fail("running as root needs setpriv (util-linux) to drop privileges for this check")
            cmd = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2],
                              env={**os.environ, "HOME": str(base)}, timeout=120, check=False)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "read-only" in proc.stderr and str(locked) in proc.stderr, proc.stderr[-2000:]
        assert not (locked / "out").exists()
    finally:
        (base / "locked").chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


# --- generic input ----------------------------------------------------------------------------------------

def test_generic_table_inputs(prepared, tmp_path):
    ex = _examples(prepared, "mimic4_full")
    undotted = [[c.replace(".", "") for c in cs] for cs in ex["codes"]]
    table = pd.DataFrame({"id": ex["id"], "text": ex["text"].str.upper(), "subject_id": ex["subject_id"],
                          "split": ex["split"]})
    jsonl = tmp_path / "t.jsonl"
    table.assign(codes=undotted).to_json(jsonl, orient="records", lines=True)
    out = tmp_path / "generic"
    assert _run(["generic", "--input", jsonl, "--code-system", "icd10", "--name", "mine", "--out", out,
                 "--min-code-count", "1"]) == 0
    got = _examples(out, "mine_full")
    assert got["id"].tolist() == ex["id"].tolist() and got["split"].tolist() == ex["split"].tolist()
    assert [list(c) for c in got["codes"]] == [list(c) for c in ex["codes"]]  # undotted → canonical
    assert got["text"].tolist() == ex["text"].tolist()  # lower-cased
    assert (out / "mine_top50" / "label_space.json").is_file()

    csv = tmp_path / "t.csv"
    table.drop(columns=["split"]).assign(codes=[", ".join(c) for c in ex["codes"]]).to_csv(csv, index=False)
    out2 = tmp_path / "generic2"
    assert _run(["generic", "--input", csv, "--code-system", "icd10", "--out", out2, "--variants", "full",
                 "--min-code-count", "1", "--seed", "3", "--corpus", "Hospital X"]) == 0
    got2 = _examples(out2, "generic_full")
    assert json.loads((out2 / "generic_full" / "stats.json").read_text())["corpus"] == "Hospital X"
    assert json.loads((out / "mine_full" / "stats.json").read_text())["corpus"] == "MIMIC-IV"  # the icd10 default
    from data_tools.evaluation.baselines import prompt_spec
    assert "Hospital X" in prompt_spec(out2 / "generic_full").label_scope_text  # the baselines' prompts name it
    assert set(got2["split"]) == set(SPLITS) and len(got2) == len(ex)
    by_subject = got2.groupby("subject_id")["split"].nunique()
    assert (by_subject == 1).all()  # random split is patient-level

    bad = tmp_path / "bad.jsonl"
    table.assign(codes=[["NOT-A-CODE"]] * len(table)).head(3).to_json(bad, orient="records", lines=True)
    # a token without a digit could be a word of a note: described, never shown
    with pytest.raises(UserError, match=r"bad.jsonl, row 1 .*column 'codes': code a string of 10 characters") as err:
        prepare.run(prepare.build_parser().parse_args(["generic", "--input", str(bad), "--code-system", "icd10",
                                                       "--out", str(tmp_path / "x")]))
    assert "NOT-A-CODE" not in str(err.value)


def test_help_explains_every_flag(capsys):
    for sub in ("mimic3", "mimic4", "generic"):
        with pytest.raises(SystemExit):
            prepare.main([sub, "--help"])
        text = capsys.readouterr().out
        for flag in ("--out", "--tokenizer", "--max-prompt-length", "--hint-reserve", "--cutoff-len",
                     "--min-code-count", "--skip-malformed", "--enable-thinking"):
            assert flag in text


# --- truncation with a real tokenizer and chat template --------------------------------------------------

def test_truncated_prompts_fit_both_trainers(small_raw, tiny_tokenizer_dir, tmp_path, capsys):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    out = tmp_path / "trunc"
    max_prompt, reserve, cutoff = 1024, 128, 1000
    assert _run(["mimic4", "--root", small_raw["mimic4"]["root"], "--out", out, "--tokenizer", tiny_tokenizer_dir,
                 "--max-prompt-length", max_prompt, "--hint-reserve", reserve, "--cutoff-len", cutoff,
                 "--variants", "full", "--min-code-count", 1]) == 0
    assert "truncated" in capsys.readouterr().out
    root = out / "mimic4_full"
    stats = json.loads((root / "stats.json").read_text())["tokens"]
    assert stats["n_truncated"] > 0 and stats["prompt_tokens_before"]["max"] > max_prompt
    n_checked = 0
    for split in SPLITS:
        ex = pd.read_parquet(root / "examples" / f"{split}.parquet")
        lines = (root / "sharegpt" / f"{split}.jsonl").read_text().splitlines()
        verl = pd.read_parquet(root / "verl" / f"{split}.parquet")
        for row, line, prompt in zip(ex.itertuples(), lines, verl["prompt"]):
            messages = json.loads(line)["messages"]
            user = [dict(m) for m in prompt]
            assert user == messages[:1]  # the same truncated prompt for SFT and RL
            n_prompt = len(tok.apply_chat_template(user, tokenize=True, add_generation_prompt=True,
                                                   return_dict=False))
            n_full = len(tok.apply_chat_template(messages, tokenize=True, return_dict=False))
            assert n_prompt <= max_prompt - reserve and n_full <= cutoff
            assert messages[0]["content"].startswith(prompts.training_instruction(prompts.PromptSpec("icd10")))
            if row.text_truncated != row.text:
                assert "[...]" in row.text_truncated and len(row.text_truncated) < len(row.text)
                n_checked += 1
    assert n_checked == stats["n_truncated"]


def test_impossible_budget_leaves_no_output(small_raw, tiny_tokenizer_dir, tmp_path, capsys):
    # Fails after loading and assembling, while writing the first variant: nothing may be left behind.
    _assert_fails_cleanly(["mimic3", "--root", small_raw["mimic3"]["root"], "--tokenizer", tiny_tokenizer_dir,
                           "--max-prompt-length", "160", "--hint-reserve", "0", "--cutoff-len", "4000"],
                          tmp_path / "out", capsys, "truncation failed", "--max-prompt-length")


def test_qwen3_no_thinking_budget_counts_the_empty_think_block(small_raw, tiny_texts, tmp_path):
    pytest.importorskip("transformers")
    from data_tools.build.tiny_model import train_tokenizer

    tok = train_tokenizer(tiny_texts, tmp_path / "qwen3_tok", arch="qwen3")
    out = tmp_path / "q3"
    cutoff = 700
    assert _run(["mimic3", "--root", small_raw["mimic3"]["root"], "--out", out, "--tokenizer",
                 tmp_path / "qwen3_tok", "--max-prompt-length", 1024, "--hint-reserve", 0, "--cutoff-len", cutoff,
                 "--variants", "top50", "--min-code-count", 1, "--no-enable-thinking"]) == 0
    stats = json.loads((out / "mimic3_top50" / "stats.json").read_text())["tokens"]
    assert stats["chat_template_kwargs"] == {"enable_thinking": False}
    longest = 0
    for line in (out / "mimic3_top50" / "sharegpt" / "train.jsonl").read_text().splitlines():
        messages = json.loads(line)["messages"]
        n_full = len(tok.apply_chat_template(messages, tokenize=True, enable_thinking=False, return_dict=False))
        assert n_full <= cutoff
        longest = max(longest, n_full)
    assert longest >= 0.9 * cutoff  # the budget is used, not just respected


# --- verl reads what prepare writes (LlamaFactory: tests/integration/test_sft_llamafactory.py, its own env) ---

@pytest.fixture(scope="module")
def truncated_top50(small_raw, tiny_tokenizer_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("framework") / "data"
    assert _run(["mimic3", "--root", small_raw["mimic3"]["root"], "--out", out, "--tokenizer", tiny_tokenizer_dir,
                 "--max-prompt-length", 1024, "--hint-reserve", 256, "--cutoff-len", 900,
                 "--variants", "top50", "--min-code-count", 1]) == 0
    return out / "mimic3_top50"


def test_verl_dataset_reads_the_parquet(truncated_top50, tiny_tokenizer_dir):
    pytest.importorskip("verl")
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    config = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 1024 - 256,
                               "filter_overlong_prompts": True, "return_raw_chat": True})
    dataset = RLHFDataset(data_files=[str(truncated_top50 / "verl" / "train.parquet")], tokenizer=tok, config=config)
    ex = pd.read_parquet(truncated_top50 / "examples" / "train.parquet")
    assert len(dataset) == len(ex)  # nothing filtered as overlong
    row = dataset[3]
    assert row["index"] == 3 and row["extra_info"]["sample_id"] == ex["id"][3]
    assert list(row["reward_model"]["ground_truth"]) == list(ex["codes"][3])
