"""Tests of the synthetic MIMIC-III / MIMIC-IV generator (``data_tools.build.synth``) on real ICD tables."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_tools.build import synth
from data_tools.build.synth import files as synth_files
from llm4icd_plugins.codes import load_code_system, mimic3_top50_codes
from llm4icd_plugins.normalize import format_code

N3 = 900
N4 = 600


@pytest.fixture(scope="module")
def m3(tmp_path_factory) -> dict[str, Path]:
    return synth.generate_mimic3(tmp_path_factory.mktemp("synth3"), N3, seed=7, gzip=False)


@pytest.fixture(scope="module")
def m4(tmp_path_factory) -> dict[str, Path]:
    return synth.generate_mimic4(tmp_path_factory.mktemp("synth4"), N4, seed=7, gzip=False)


def _manifest(paths) -> dict:
    return json.loads(paths["manifest"].read_text(encoding="utf-8"))


def _m3_tables(paths):
    notes = pd.read_csv(paths["notes"])
    dx = pd.read_csv(paths["diagnoses"], dtype={"ICD9_CODE": str})
    proc = pd.read_csv(paths["procedures"], dtype={"ICD9_CODE": str})
    return notes, dx, proc


def _m4_tables(paths):
    notes = pd.read_csv(paths["notes"])
    dx = pd.read_csv(paths["diagnoses"], dtype={"icd_code": str})
    proc = pd.read_csv(paths["procedures"], dtype={"icd_code": str})
    return notes, dx, proc


def _m3_gold(dx: pd.DataFrame, proc: pd.DataFrame) -> dict[int, set[str]]:
    gold: dict[int, set[str]] = {}
    for frame, table in ((dx, "icd9_dx"), (proc, "icd9_proc")):
        for hadm, code in frame.dropna(subset=["ICD9_CODE"])[["HADM_ID", "ICD9_CODE"]].itertuples(index=False):
            gold.setdefault(int(hadm), set()).add(format_code(code, table))
    return gold


def _m3_texts(notes: pd.DataFrame) -> dict[int, str]:
    """Discharge summary per admission with its addenda joined (what prepare does)."""
    ds = notes[notes["CATEGORY"] == "Discharge summary"].sort_values(["HADM_ID", "ROW_ID"])
    return {int(h): "\n".join(g["TEXT"]) for h, g in ds.groupby("HADM_ID")}


# ---------------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------------
def test_mimic3_files_columns_and_dtypes(m3):
    assert {p.name for p in m3["root"].iterdir()} == {
        "NOTEEVENTS.csv", "DIAGNOSES_ICD.csv", "PROCEDURES_ICD.csv", "mimiciii_clean_splits.feather",
        "mimiciii_clean_splits.csv", synth.MANIFEST}
    notes, dx, proc = _m3_tables(m3)
    assert list(notes.columns) == ["ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "STORETIME",
                                   "CATEGORY", "DESCRIPTION", "CGID", "ISERROR", "TEXT"]
    for frame in (dx, proc):
        assert list(frame.columns) == ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"]
        assert frame["ROW_ID"].dtype == np.int64 and frame["SUBJECT_ID"].dtype == np.int64
        assert frame["HADM_ID"].dtype == np.int64
        assert frame["ROW_ID"].is_unique
    # As in MIMIC: empty codes come with an empty SEQ_NUM, so pandas reads SEQ_NUM as float.
    assert dx["SEQ_NUM"].dtype == np.float64 and dx["ICD9_CODE"].isna().any()
    assert notes["ROW_ID"].dtype == np.int64 and notes["ROW_ID"].is_unique
    assert notes["HADM_ID"].dtype == np.float64 and notes["HADM_ID"].isna().any()  # outpatient studies
    ds = notes[notes["CATEGORY"] == "Discharge summary"]
    assert ds["HADM_ID"].notna().all() and ds["CHARTTIME"].isna().all() and ds["STORETIME"].isna().all()
    pd.to_datetime(notes["CHARTDATE"], format="%Y-%m-%d")
    # MIMIC-III quoting: quoted header and strings (codes keep their leading zeros), bare numbers.
    with open(m3["diagnoses"], encoding="utf-8") as f:
        assert f.readline() == '"ROW_ID","SUBJECT_ID","HADM_ID","SEQ_NUM","ICD9_CODE"\n'
        assert re.fullmatch(r'\d+,\d+,\d+,\d+,"[0-9EV]+"\n', f.readline())
    with open(m3["notes"], encoding="utf-8") as f:
        f.readline()
        assert re.match(r'\d+,\d+,\d+(\.0)?,\d{4}-\d\d-\d\d,', f.readline())


def test_mimic4_files_columns_and_dtypes(m4):
    notes, dx, proc = _m4_tables(m4)
    assert m4["notes"] == m4["root"] / "note" / "discharge.csv"
    assert m4["diagnoses"] == m4["root"] / "hosp" / "diagnoses_icd.csv"
    assert m4["procedures"] == m4["root"] / "hosp" / "procedures_icd.csv"
    assert list(notes.columns) == ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime",
                                   "storetime", "text"]
    assert list(dx.columns) == ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"]
    assert list(proc.columns) == ["subject_id", "hadm_id", "seq_num", "chartdate", "icd_code", "icd_version"]
    for col in ("subject_id", "hadm_id", "note_seq"):
        assert notes[col].dtype == np.int64
    for frame in (dx, proc):
        for col in ("subject_id", "hadm_id", "seq_num", "icd_version"):
            assert frame[col].dtype == np.int64
        assert frame["icd_code"].notna().all()
    assert set(notes["note_type"]) == {"DS"}
    assert notes["note_id"].is_unique and notes["hadm_id"].is_unique
    ids = notes[["note_id", "subject_id", "note_seq"]].itertuples(index=False)
    assert all(nid == f"{s}-DS-{k}" for nid, s, k in ids)
    pd.to_datetime(notes["charttime"], format="%Y-%m-%d %H:%M:%S")
    pd.to_datetime(proc["chartdate"], format="%Y-%m-%d")
    assert (pd.to_datetime(notes["storetime"]) >= pd.to_datetime(notes["charttime"])).all()
    text = "\n".join(notes["text"].head(50))
    assert "___" in text and "[**" not in text  # MIMIC-IV de-identification style


def test_split_files_are_patient_level(m3, m4):
    notes3, _, _ = _m3_tables(m3)
    linked = notes3.dropna(subset=["HADM_ID"])
    subject_of = dict(zip(linked["HADM_ID"].astype(int), linked["SUBJECT_ID"]))
    notes4, dx4, _ = _m4_tables(m4)
    subject_of.update(zip(notes4["hadm_id"], notes4["subject_id"]))
    version = dict(zip(dx4["hadm_id"], dx4["icd_version"]))
    for key, path in (("m3", m3["splits"]), ("m4", m4["splits"]), ("m4-9", m4["splits_icd9"])):
        split = pd.read_feather(path)
        assert list(split.columns) == ["_id", "split"] and split["_id"].dtype == np.int64
        assert split["_id"].is_unique and set(split["split"]) == {"train", "val", "test"}
        pd.testing.assert_frame_equal(pd.read_csv(path.with_suffix(".csv")), split, check_dtype=False)
        by_subject = split.assign(subject=split["_id"].map(subject_of))
        assert by_subject["subject"].notna().all(), f"{key}: split ids without a discharge summary"
        assert (by_subject.groupby("subject")["split"].nunique() == 1).all(), f"{key}: a subject spans splits"
        assert by_subject["subject"].duplicated().any(), f"{key}: no subject with several admissions"
        frac = split["split"].value_counts(normalize=True)
        assert frac["train"] > 0.6 and frac["test"] > 0.08 and frac["val"] > 0.05
        if key == "m4":
            assert {version[h] for h in split["_id"] if h in version} == {10}
        if key == "m4-9":
            assert {version[h] for h in split["_id"] if h in version} == {9}
    m4_all = pd.concat([pd.read_feather(m4["splits"]), pd.read_feather(m4["splits_icd9"])])
    subj = m4_all.assign(subject=m4_all["_id"].map(subject_of))
    assert (subj.groupby("subject")["split"].nunique() == 1).all()  # same patient split across ICD versions


# ---------------------------------------------------------------------------------------------
# Codes
# ---------------------------------------------------------------------------------------------
def test_codes_are_undotted_real_codes_of_their_table(m3, m4):
    _, dx3, proc3 = _m3_tables(m3)
    _, dx4, proc4 = _m4_tables(m4)
    systems = {"icd9": load_code_system("icd9"), "icd10": load_code_system("icd10")}
    cases = [(dx3["ICD9_CODE"].dropna(), "icd9_dx"), (proc3["ICD9_CODE"].dropna(), "icd9_proc")]
    for frame, kind in ((dx4, "dx"), (proc4, "proc")):
        for version in (9, 10):
            cases.append((frame.loc[frame["icd_version"] == version, "icd_code"], f"icd{version}_{kind}"))
    seen_e_code = False
    for raw, table in cases:
        assert len(raw) > 0, table
        cs = systems[table.split("_")[0]]
        for code in set(raw):
            assert "." not in code and code == code.strip().upper()
            canonical = format_code(code, table)
            assert canonical in cs and cs.table_of(canonical) == table, (code, table)
            seen_e_code |= table == "icd9_dx" and code.startswith("E")
    assert seen_e_code  # E-codes (4 digits before the dot) occur, as in MIMIC-III
    assert dx3["ICD9_CODE"].str.match(r"^0\d").any() or proc3["ICD9_CODE"].str.match(r"^0\d").any()


def test_admission_code_structure(m3, m4):
    notes, dx, proc = _m3_tables(m3)
    coded = dx.dropna(subset=["ICD9_CODE"])
    per_adm = coded.groupby("HADM_ID").size()
    assert per_adm.between(1, 16).all() and 5 <= per_adm.mean() <= 9  # 3-12, plus the odd rare code
    procs = proc.groupby("HADM_ID").size().reindex(per_adm.index, fill_value=0)
    assert procs.max() <= 7 and (procs == 0).any() and 1 <= procs.mean() <= 3
    assert not coded.duplicated(["HADM_ID", "ICD9_CODE"]).any()
    seq = coded.groupby("HADM_ID")["SEQ_NUM"].apply(lambda s: sorted(s) == list(range(1, len(s) + 1)))
    assert seq.all()
    ds_hadm = set(notes.loc[notes["CATEGORY"] == "Discharge summary", "HADM_ID"].astype(int))
    assert ds_hadm - set(coded["HADM_ID"]), "expected admissions with a note but no code"
    assert set(coded["HADM_ID"]) - ds_hadm, "expected admissions with codes but no discharge summary"
    _, dx4, proc4 = _m4_tables(m4)
    both = pd.concat([dx4[["hadm_id", "icd_version"]], proc4[["hadm_id", "icd_version"]]])
    assert (both.groupby("hadm_id")["icd_version"].nunique() == 1).all()
    share9 = (both.drop_duplicates("hadm_id")["icd_version"] == 9).mean()
    assert 0.05 < share9 < 0.5


def test_long_tail_with_top50_at_the_head_and_rare_codes(m3):
    _, dx, proc = _m3_tables(m3)
    counts = Counter(_code for codes in _m3_gold(dx, proc).values() for _code in codes)
    ranked = [c for c, _ in counts.most_common()]
    top50 = mimic3_top50_codes()
    positions = sorted(ranked.index(c) for c in top50)
    assert positions[39] < 55 and positions[-1] < 110, positions
    assert min(counts[c] for c in top50) >= 10  # prepare keeps all of them
    freq = np.array(sorted(counts.values(), reverse=True))
    assert freq[0] > 0.3 * N3  # a very common head code (401.9 is in ~37% of MIMIC-III admissions)
    assert freq[0] > 10 * np.median(freq)  # long tail
    rare = (freq < 10).sum()
    assert 20 <= rare and (freq >= 10).sum() >= 60
    assert (freq <= 2).sum() > 0


def test_rare_codes_persist_at_scale(tmp_path):
    """Rare codes get an explicit count, so they exist however many admissions are generated."""
    vocab = synth.build_vocabulary("icd10", 120, np.random.default_rng(0), head=("I10", "E78.5"), rare_fraction=0.2)
    assert vocab.codes[:2] == ("I10", "E78.5") and len(set(vocab.codes)) == 120
    assert len(vocab.rare_counts) == 24 and all(1 <= k <= 9 for k in vocab.rare_counts.values())
    assert (vocab.weights[:96] > 0).all() and (vocab.weights[96:] == 0).all()
    assert np.all(np.diff(vocab.weights[:96]) < 0)
    cs = load_code_system("icd10")
    assert all(cs.table_of(c) == t and cs.is_billable(c) for c, t in zip(vocab.codes, vocab.tables))
    assert {"icd10_dx", "icd10_proc"} == set(vocab.tables)


# ---------------------------------------------------------------------------------------------
# Note text
# ---------------------------------------------------------------------------------------------
SECTIONS = ("Admission Date:", "Discharge Date:", "Chief Complaint:", "History of Present Illness:",
            "Past Medical History:", "Brief Hospital Course:", "Discharge Medications:", "Discharge Diagnosis:",
            "Discharge Instructions:", "Followup Instructions:")


def test_notes_have_mimic_sections_and_describe_every_assigned_code(m3):
    notes, dx, proc = _m3_tables(m3)
    texts = _m3_texts(notes)
    gold = _m3_gold(dx, proc)
    cs = load_code_system("icd9")
    reports = notes[(notes["CATEGORY"] == "Discharge summary") & (notes["DESCRIPTION"] == "Report")]
    assert reports["HADM_ID"].is_unique
    for text in reports["TEXT"].head(100):
        positions = [text.find(s) for s in SECTIONS]
        assert min(positions) >= 0 and positions == sorted(positions)
        assert re.search(r"\[\*\*\d{4}-\d{1,2}-\d{1,2}\*\*\]", text)  # MIMIC-III de-identified dates
    checked = 0
    for hadm, codes in gold.items():
        if hadm not in texts:
            continue
        low = texts[hadm].lower()
        for code in codes:
            assert cs.description(code).lower() in low, (hadm, code)
            checked += 1
    assert checked > 5 * len(texts) * 0.9


def test_discharge_diagnosis_block_lists_most_but_not_all_codes(m3):
    notes, dx, proc = _m3_tables(m3)
    reports = notes[(notes["CATEGORY"] == "Discharge summary") & (notes["DESCRIPTION"] == "Report")]
    cs = load_code_system("icd9")
    gold = _m3_gold(dx, proc)
    listed = total = 0
    for hadm, text in zip(reports["HADM_ID"].astype(int), reports["TEXT"]):
        block = text.split("Discharge Diagnosis:")[1].split("Discharge Condition:")[0].lower()
        for code in gold.get(hadm, ()):
            if cs.table_of(code) == "icd9_dx":
                total += 1
                listed += cs.description(code).lower() in block
    assert 0.75 < listed / total < 0.97


def test_negated_and_family_history_mentions_of_codes_not_assigned(m3):
    notes, dx, proc = _m3_tables(m3)
    texts = _m3_texts(notes)
    gold = _m3_gold(dx, proc)
    man = _manifest(m3)
    cs = load_code_system("icd9")
    cue = re.compile(r"no evidence of|denies|ruled out|negative for|no signs of|workup for", re.IGNORECASE)
    n_neg = found = 0
    for hadm, info in man["admissions"].items():
        hadm = int(hadm)
        if hadm not in texts or not gold.get(hadm):
            continue
        low = texts[hadm].lower()
        for code in info["negated"] + info["family_history"]:
            assert code not in gold[hadm]
        for code in info["negated"]:
            n_neg += 1
            forms = synth.mention_forms(cs.description(code))
            hits = [m.start() for f in forms for m in re.finditer(rf"\b{re.escape(f.lower())}\b", low)]
            # The negated condition is named next to a negation cue.
            found += any(cue.search(low[max(0, h - 60): h + 80]) for h in hits)
    assert n_neg >= len(texts) and found / n_neg > 0.95
    relative = re.compile(r"(Mother|Father|Brother|Sister|grandmother|uncle) (with|had|died of)")
    assert any(relative.search(t) for t in texts.values())


def test_note_lengths_and_long_notes(m3):
    notes, _, _ = _m3_tables(m3)
    man = _manifest(m3)
    reports = notes[(notes["CATEGORY"] == "Discharge summary") & (notes["DESCRIPTION"] == "Report")]
    words = reports["TEXT"].str.split().str.len()
    is_long = reports["HADM_ID"].astype(int).astype(str).map(lambda h: man["admissions"][h]["long_note"])
    assert 0.02 < is_long.mean() < 0.1
    assert (words[is_long] > 3000).all()
    normal = words[~is_long]
    assert normal.between(300, 1500).mean() > 0.95 and normal.max() < 2000
    assert normal.std() > 100  # lengths vary


def test_addenda_and_other_categories(m3):
    notes, _, _ = _m3_tables(m3)
    ds = notes[notes["CATEGORY"] == "Discharge summary"]
    add = ds[ds["DESCRIPTION"] == "Addendum"]
    assert set(ds["DESCRIPTION"]) == {"Report", "Addendum"} and len(add) >= 10
    report_hadm = set(ds.loc[ds["DESCRIPTION"] == "Report", "HADM_ID"])
    assert set(add["HADM_ID"]) <= report_hadm
    assert add["TEXT"].str.contains("Addendum:").all()
    others = set(notes["CATEGORY"]) - {"Discharge summary"}
    assert {"Radiology", "Nursing/other", "ECG", "Physician "} <= others
    assert not notes["HADM_ID"].isna()[notes["CATEGORY"] == "Discharge summary"].any()


# ---------------------------------------------------------------------------------------------
# Determinism, atomic writes, CLI
# ---------------------------------------------------------------------------------------------
def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("generate", [synth.generate_mimic3, synth.generate_mimic4])
def test_deterministic_for_a_seed(tmp_path, generate):
    a = _file_bytes(generate(tmp_path / "a", 120, seed=3)["root"])
    b = _file_bytes(generate(tmp_path / "b", 120, seed=3)["root"])
    c = _file_bytes(generate(tmp_path / "c", 120, seed=4)["root"])
    assert any(name.endswith(".csv.gz") for name in a)
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if k.endswith(".csv.gz"))
    notes = next(k for k in a if "NOTEEVENTS" in k or "discharge" in k)
    assert gzip.decompress(a[notes]).startswith(b'"ROW_ID"' if "NOTEEVENTS" in notes else b"note_id")


def test_existing_output_needs_overwrite_and_failures_leave_nothing(tmp_path, monkeypatch):
    first = synth.generate_mimic3(tmp_path, 30, seed=0, gzip=False)
    before = _file_bytes(first["root"])
    with pytest.raises(FileExistsError, match="--overwrite"):
        synth.generate_mimic3(tmp_path, 30, seed=1, gzip=False)
    assert _file_bytes(first["root"]) == before

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(synth_files, "write_splits", broken)
    with pytest.raises(OSError, match="disk full"):
        synth.generate_mimic3(tmp_path, 30, seed=1, gzip=False, overwrite=True)
    assert _file_bytes(first["root"]) == before  # the old corpus is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mimic3"]  # no temp folder left
    monkeypatch.undo()
    second = synth.generate_mimic3(tmp_path, 30, seed=1, gzip=False, overwrite=True)
    assert _file_bytes(second["root"]) != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mimic3"]


def test_outputs_are_checked_before_any_work(tmp_path, capsys):
    stale = tmp_path / ".mimic3.tmp-killed"  # what a killed run leaves beside the output
    stale.mkdir()
    (stale / "NOTEEVENTS.csv").write_text("partial")
    (tmp_path / "mimic4").mkdir()
    args = ["--out", str(tmp_path), "--n-admissions", "20", "--no-progress"]
    assert synth.main(args) == 2  # mimic4 exists: refused before mimic3 is written
    assert "--overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mimic4"]
    (tmp_path / "file").write_text("x")
    assert synth.main(["--out", str(tmp_path / "file" / "sub"), "--n-admissions", "20"]) == 2
    err = capsys.readouterr().err
    assert "Fix:" in err and str(tmp_path / "file") in err
    assert (tmp_path / "file").read_text() == "x"


def test_bad_options_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="--dx-per-admission"):
        synth.generate_mimic3(tmp_path, 10, dx_per_admission=(5, 2))
    with pytest.raises(ValueError, match="--n-admissions"):
        synth.generate_mimic4(tmp_path, 0)
    with pytest.raises(TypeError, match="unknown option"):
        synth.generate_mimic3(tmp_path, 10, n_code=5)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_both_corpora_and_prints_a_summary(tmp_path, capsys):
    rc = synth.main(["--out", str(tmp_path), "--corpus", "both", "--n-admissions", "40", "--n-codes", "80",
                     "--no-gzip", "--no-progress", "--seed", "2", "--long-note-fraction", "0"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "mimic3: wrote" in out and "mimic4: wrote" in out and "split" in out
    assert (tmp_path / "mimic3" / "NOTEEVENTS.csv").exists()
    assert (tmp_path / "mimic4" / "note" / "discharge.csv").exists()
    man = json.loads((tmp_path / "mimic4" / synth.MANIFEST).read_text())
    assert man["seed"] == 2 and man["options"]["n_codes"] == 80 and man["summary"]["long_notes"] == 0
    assert synth.main(["--out", str(tmp_path), "--corpus", "mimic3", "--n-admissions", "5"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_cli_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        synth.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    parser = synth.build_parser()
    for action in parser._actions:
        for flag in action.option_strings:
            assert flag in text
        assert action.help, action.option_strings


def test_tiny_corpus(tmp_path):
    paths = synth.generate_mimic4(tmp_path, 1, seed=0, gzip=False, icd9_fraction=0.0)
    notes = pd.read_csv(paths["notes"])
    assert len(notes) <= 1 and "splits_icd9" not in paths
    assert list(pd.read_feather(paths["splits"]).columns) == ["_id", "split"]


def test_clinical_name_and_mention_forms():
    assert synth.clinical_name("Unspecified essential hypertension") == "essential hypertension"
    assert synth.clinical_name("Congestive heart failure, unspecified") == "congestive heart failure"
    assert synth.clinical_name("Acute kidney failure, unspecified") == "acute kidney failure"
    forms = synth.mention_forms("Congestive heart failure, unspecified")
    assert forms[0] == "Congestive heart failure, unspecified" and "CHF" in forms
    assert "HTN" in synth.mention_forms("Unspecified essential hypertension")


# ---------------------------------------------------------------------------------------------
# Long-tail label profile (data_tools.build.synth.longtail)
# ---------------------------------------------------------------------------------------------
from data_tools.build.synth import longtail as synth_longtail  # noqa: E402

NLT = 900  # the ladder's corpus size
# sha256 over the files (path + bytes, feather files left out) of the default profile's corpora below, computed
# with data_tools/synth.py as committed before the long-tail profile was added (bdddcf0). The manifest names the
# generator module, which moved from data_tools.synth to data_tools.build.synth (ca4fe54): the digest reads the
# name as it was, so that every byte the generator draws is still compared.
DEFAULT_MIMIC3_DIGEST = "2904cf0f7d7e5521f60c746d08026d022b670a90ef3f8f4b08db5dbf9a866dcb"
DEFAULT_MIMIC4_DIGEST = "5434906328e3f75aa08899a0d556a1da712e0dc25f3f6808a7308239b701e6fc"


@pytest.fixture(scope="module")
def lt(tmp_path_factory) -> dict[str, Path]:
    return synth_longtail.generate_mimic3_longtail(tmp_path_factory.mktemp("longtail"), NLT, seed=11, gzip=False)


def _train_counts(paths) -> Counter:
    """Occurrences per code among training admissions with a note, read from the raw tables and split file."""
    _, dx, proc = _m3_tables(paths)
    split = pd.read_csv(paths["splits_csv"])
    train = set(split.loc[split["split"] == "train", "_id"].astype(int))
    gold = _m3_gold(dx, proc)
    return Counter(c for hadm, codes in gold.items() if hadm in train for c in codes)


def test_longtail_has_hundreds_of_trainable_codes_on_a_zipf_curve(lt):
    counts = _train_counts(lt)
    freq = np.array(sorted(counts.values(), reverse=True), dtype=float)
    assert (freq >= 10).sum() >= 200  # the Full label space of the ladder's corpus
    assert len(freq) >= 500
    ranks = np.arange(1, len(freq) + 1)
    head = freq >= 5
    slope = np.polyfit(np.log(ranks[head]), np.log(freq[head]), 1)[0]
    assert -2.0 < slope < -0.5, slope  # Zipf-like, not flat and not a cliff
    assert freq[0] > 10 * np.median(freq)
    # Top-50 (Mullenbach's list) is a small part of the Full label space, at its head.
    top50 = set(mimic3_top50_codes())
    trainable = {c for c, k in counts.items() if k >= 10}
    assert len(trainable - top50) >= 150
    assert len(top50 & {c for c, _ in counts.most_common(100)}) >= 35


def test_longtail_codes_per_note_as_in_mimic(lt):
    notes, dx, proc = _m3_tables(lt)
    gold = _m3_gold(dx, proc)
    with_note = set(_m3_texts(notes))
    sizes = np.array([len(codes) for hadm, codes in gold.items() if hadm in with_note and codes])
    assert 10 <= sizes.mean() <= 15, sizes.mean()
    assert sizes.min() >= 8 and sizes.max() <= 16


def test_longtail_evidence_is_in_each_note_at_its_grade(lt):
    notes, dx, proc = _m3_tables(lt)
    texts = {h: t.lower() for h, t in _m3_texts(notes).items()}
    gold = _m3_gold(dx, proc)
    ev = pd.read_csv(lt["evidence"], dtype={"CODE": str}, keep_default_na=False)
    assert list(ev.columns) == ["HADM_ID", "CODE", "GRADE", "EVIDENCE"]
    cs = load_code_system("icd9")
    # Exactly one evidence row per gold code of every admission with a note.
    rows = {(int(h), c): (g, e) for h, c, g, e in ev[["HADM_ID", "CODE", "GRADE", "EVIDENCE"]].itertuples(index=False)}
    assert len(rows) == len(ev)
    expected = {(h, c) for h, codes in gold.items() if h in texts for c in codes}
    assert set(rows) == expected
    lines = {(t.lower(), c): dose for t, dose, c in synth_longtail.IMPLIED}
    leaked = 0
    for (hadm, code), (grade, form) in rows.items():
        text, description = texts[hadm], cs.description(code).lower()
        assert form.lower() in text, (hadm, code, grade)
        if grade == "named":
            assert form.lower() == description
        elif grade == "synonym":
            assert description not in form.lower() and synth.clinical_name(description) not in form.lower()
            leaked += description in text
        else:
            assert grade == "implied" and (form.lower(), code) in lines, (hadm, code)
            leaked += description in text
    assert leaked <= 0.01 * len(rows), leaked  # the description of a harder-graded code is (almost) never written
    share = ev["GRADE"].value_counts(normalize=True)
    assert set(share.index) == set(synth_longtail.GRADES) and share.min() > 0.05, share.to_dict()
    # A trigger's medication line or device sentence appears only in notes of admissions with its code.
    for (trigger, code), dose in lines.items():
        line = f"{trigger} {dose.lower()}" if not dose.endswith(".") else dose.lower()
        for hadm, text in texts.items():
            if line in text:
                assert code in gold.get(hadm, ()), (trigger, code)


def test_longtail_keeps_negations_and_addenda(lt):
    notes, dx, proc = _m3_tables(lt)
    gold = _m3_gold(dx, proc)
    man = _manifest(lt)
    assert man["label_profile"] == "longtail" and man["options"]["n_codes"] == 600
    negated = [(int(h), c) for h, info in man["admissions"].items() for c in info["negated"]]
    assert len(negated) >= NLT and all(c not in gold.get(h, ()) for h, c in negated)
    texts = _m3_texts(notes)
    cue = re.compile(r"no evidence of|denies|ruled out|negative for|no signs of|workup for", re.IGNORECASE)
    assert sum(bool(cue.search(t)) for t in texts.values()) > 0.9 * len(texts)
    assert (notes["DESCRIPTION"] == "Addendum").sum() > 0 and (notes["CATEGORY"] != "Discharge summary").sum() > 0


def test_longtail_deterministic_and_default_profile_unchanged(tmp_path):
    import hashlib

    def digest(root: Path) -> str:
        h = hashlib.sha256()
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.suffix != ".feather":  # the feather bytes depend on the pyarrow version
                data = p.read_bytes()
                if p.name == synth.MANIFEST:
                    data = data.replace(b'"generator": "llm4icd data_tools.build.synth"',
                                        b'"generator": "llm4icd data_tools.synth"', 1)
                h.update(str(p.relative_to(root)).encode())
                h.update(data)
        return h.hexdigest()

    a = synth_longtail.generate_mimic3_longtail(tmp_path / "a", 60, seed=4)
    b = synth_longtail.generate_mimic3_longtail(tmp_path / "b", 60, seed=4)
    c = synth_longtail.generate_mimic3_longtail(tmp_path / "c", 60, seed=5)
    assert digest(a["root"]) == digest(b["root"]) != digest(c["root"])
    # Digests of the default profile computed with the generator before the long-tail profile existed.
    m3 = synth.generate_mimic3(tmp_path / "d", 120, seed=3, n_codes=60)
    m4 = synth.generate_mimic4(tmp_path / "e", 80, seed=3, gzip=False)
    assert digest(m3["root"]) == DEFAULT_MIMIC3_DIGEST
    assert digest(m4["root"]) == DEFAULT_MIMIC4_DIGEST


def test_longtail_cli(tmp_path, capsys):
    assert synth.main(["--out", str(tmp_path), "--label-profile", "longtail", "--corpus", "both"]) == 2
    assert "--corpus mimic3" in capsys.readouterr().err
    rc = synth.main(["--out", str(tmp_path), "--corpus", "mimic3", "--label-profile", "longtail", "--n-admissions",
                     "30", "--n-cod=300", "--no-gzip", "--no-progress"])
    assert rc == 0 and "mimic3: wrote" in capsys.readouterr().out
    man = json.loads((tmp_path / "mimic3" / synth.MANIFEST).read_text())
    assert man["label_profile"] == "longtail" and man["options"]["n_codes"] == 300
    assert man["options"]["dx_per_admission"] == [8, 12] and len(man["vocabulary"]["icd9"]) == 300
    assert (tmp_path / "mimic3" / synth_longtail.EVIDENCE_FILE).exists()


def test_longtail_prepares_into_a_full_label_space_apart_from_top50(lt, tmp_path):
    from data_tools.build import prepare

    out = tmp_path / "data"
    assert prepare.main(["mimic3", "--root", str(lt["root"]), "--out", str(out), "--variants", "full,top50"]) == 0
    full = json.loads((out / "mimic3_full" / "stats.json").read_text())
    top50 = json.loads((out / "mimic3_top50" / "stats.json").read_text())
    assert top50["n_labels"] == 50 and full["n_labels"] >= 300
    assert 9 <= full["splits"]["train"]["codes_per_note"]["mean"] <= 15
    assert top50["splits"]["train"]["codes_per_note"]["mean"] < 0.6 * full["splits"]["train"]["codes_per_note"]["mean"]
