"""No note text reaches a message or a stray file: the error paths of prepare, synth and tiny_model are driven
with notes laced with a canary (tests/canary.py), and stdout, stderr and every file outside the datasets are
searched for it."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
from canary import CANARY, assert_no_canary, canary_note

from data_tools.build import prepare
from data_tools.build import synth
from data_tools.build import tiny_model
from data_tools.build.synth import generate_mimic3


def _dataset_parts(out: Path) -> list[Path]:
    """Where note text belongs in a prepared output: the example, ShareGPT and verl files of each variant."""
    return [p for p in out.glob("*/*") if p.is_dir() and p.name in ("examples", "sharegpt", "verl")]


@pytest.fixture(scope="module")
def canary_root(tmp_path_factory) -> Path:
    """A small MIMIC-III corpus whose every note is canary text."""
    paths = generate_mimic3(tmp_path_factory.mktemp("canary"), n_admissions=80, seed=3)
    notes = pd.read_csv(paths["notes"], dtype=str, keep_default_na=False)
    notes["TEXT"] = [canary_note(60 + i % 40) for i in range(len(notes))]
    notes.to_csv(paths["notes"], index=False, quoting=csv.QUOTE_NONNUMERIC)
    return paths["root"]


def _copy(root: Path, dest: Path) -> Path:
    dest.mkdir()
    for src in root.iterdir():
        if src.is_file():
            (dest / src.name).write_bytes(src.read_bytes())
    return dest


def _prepare(args, capsys) -> tuple[int, str, str]:
    code = prepare.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _refused(args, out: Path, capsys, *needles) -> str:
    """Run prepare, expect a clean refusal with no canary anywhere around ``out``; returns stderr."""
    code, stdout, stderr = _prepare(args + ["--out", out], capsys)
    assert code == 2, stderr
    assert "Traceback" not in stderr and "Fix:" in stderr, stderr
    for needle in needles:
        assert needle in stderr, stderr
    assert_no_canary(stdout, stderr, out.parent)
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))
    return stderr


def _notes(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "NOTEEVENTS.csv.gz", dtype=str, keep_default_na=False)


def test_the_canary_survives_preparation(canary_root, tmp_path, capsys):
    """The oracle works: a successful run puts the canary in the dataset files and nowhere else."""
    out = tmp_path / "work" / "out"
    code, stdout, stderr = _prepare(["mimic3", "--root", canary_root, "--out", out], capsys)
    assert code == 0, stderr
    assert CANARY in (out / "mimic3_full" / "sharegpt" / "train.jsonl").read_text()
    with pytest.raises(AssertionError):
        assert_no_canary(stdout, stderr, out)
    assert_no_canary(stdout, stderr, out.parent, datasets=_dataset_parts(out))


def test_notes_without_a_header_row(canary_root, tmp_path, capsys):
    root = _copy(canary_root, tmp_path / "m3")
    _notes(root).to_csv(root / "NOTEEVENTS.csv.gz", index=False, header=False, quoting=csv.QUOTE_NONNUMERIC)
    err = _refused(["mimic3", "--root", root], tmp_path / "work" / "out", capsys, "NOTEEVENTS.csv.gz",
                   "missing column(s)", "header")
    assert "11 fields" in err


@pytest.mark.parametrize("flag", ["--codes-column", "--split-column", "--id-column", "--subject-column"])
def test_generic_text_given_as_another_column(tmp_path, capsys, flag):
    table = pd.DataFrame({"id": [f"s{i}" for i in range(30)], "note": [canary_note(50 + i) for i in range(30)],
                          "codes": [["401.9", "428.0"]] * 30, "split": ["train"] * 20 + ["val"] * 5 + ["test"] * 5,
                          "subject_id": [str(i) for i in range(30)]})
    path = tmp_path / "table.jsonl"
    table.to_json(path, orient="records", lines=True)
    columns = {"--id-column": "id", "--codes-column": "codes", "--split-column": "split",
               "--subject-column": "subject_id"}
    columns[flag] = "note"
    args = ["generic", "--input", path, "--code-system", "icd9", "--text-column", "note", "--min-code-count", "1"]
    for name, column in columns.items():
        args += [name, column]
    _refused(args, tmp_path / "work" / "out", capsys, "table.jsonl", "--text-column")
    # The same note column under another name: caught by what the cells hold, still without quoting them.
    args = [a if a != "note" or args[i - 1] == "--text-column" else "note2" for i, a in enumerate(args)]
    table.assign(note2=table["note"]).to_json(path, orient="records", lines=True)
    _refused(args, tmp_path / "work" / "out", capsys, "table.jsonl", "column 'note2'", "row 1")


def test_generic_nested_values(tmp_path, capsys):
    path = tmp_path / "nested.jsonl"
    rows = [{"id": f"s{i}", "text": canary_note(40), "codes": ["401.9"]} for i in range(6)]
    for key, value in (("text", {"body": canary_note(30)}), ("codes", [[canary_note(5)]]),
                       ("id", {"x": canary_note(5)}), ("text", "   \n  ")):
        bad = [dict(r) for r in rows]
        bad[3][key] = value
        path.write_text("".join(json.dumps(r) + "\n" for r in bad))
        _refused(["generic", "--input", path, "--code-system", "icd9"], tmp_path / "work" / "out", capsys,
                 "nested.jsonl", "row 4", f"column '{key}'")


def test_broken_csv_quoting(canary_root, tmp_path, capsys):
    root = _copy(canary_root, tmp_path / "m3")
    text = gzip.decompress((root / "NOTEEVENTS.csv.gz").read_bytes()).decode()
    cut = text.index(CANARY, text.index(CANARY) + 1) + 3  # inside the first note's closing canary
    (root / "NOTEEVENTS.csv.gz").write_bytes(gzip.compress((text[:cut] + '"' + text[cut:]).encode()))
    _refused(["mimic3", "--root", root], tmp_path / "work" / "out", capsys, "NOTEEVENTS.csv.gz", "quot", "row 1")


def test_unquoted_csv_and_cut_csv(canary_root, tmp_path, capsys):
    root = _copy(canary_root, tmp_path / "m3")
    notes = _notes(root)
    notes["TEXT"] = notes["TEXT"].str.replace(" pt ", " pt,\n")
    notes.to_csv(root / "NOTEEVENTS.csv.gz", index=False, quoting=csv.QUOTE_NONE, escapechar="\\")
    _refused(["mimic3", "--root", root], tmp_path / "work" / "out", capsys, "NOTEEVENTS.csv.gz", "fields")
    root = _copy(canary_root, tmp_path / "m3cut")
    data = gzip.decompress((root / "NOTEEVENTS.csv.gz").read_bytes())
    (root / "NOTEEVENTS.csv.gz").write_bytes(gzip.compress(data[: len(data) - 40]))
    _refused(["mimic3", "--root", root], tmp_path / "work" / "out", capsys, "NOTEEVENTS.csv.gz")


def test_non_utf8_notes(canary_root, tmp_path, capsys):
    root = _copy(canary_root, tmp_path / "m3")
    data = gzip.decompress((root / "NOTEEVENTS.csv.gz").read_bytes())
    at = data.index(CANARY.encode()) + 2
    (root / "NOTEEVENTS.csv.gz").write_bytes(gzip.compress(data[:at] + b"\xff\xfe" + data[at:]))
    _refused(["mimic3", "--root", root], tmp_path / "work" / "out", capsys, "NOTEEVENTS.csv.gz", "UTF-8")


def test_other_refusals(canary_root, tmp_path, capsys):
    root = _copy(canary_root, tmp_path / "m3")
    dx = pd.read_csv(root / "DIAGNOSES_ICD.csv.gz", dtype=str, keep_default_na=False)
    dx.loc[4, "ICD9_CODE"] = canary_note(3)
    dx.to_csv(root / "DIAGNOSES_ICD.csv.gz", index=False)
    _refused(["mimic3", "--root", root], tmp_path / "work" / "out", capsys, "DIAGNOSES_ICD.csv.gz", "row 5")
    _refused(["mimic3", "--root", tmp_path / "missing"], tmp_path / "work" / "out", capsys, "--notes")
    (tmp_path / "work").mkdir(exist_ok=True)
    (tmp_path / "work" / "file").write_text("x")
    _refused(["mimic3", "--root", canary_root], tmp_path / "work" / "file", capsys, "--out")


def test_stale_temporaries_of_a_killed_run_are_removed(canary_root, tmp_path, capsys):
    out = tmp_path / "work" / "out"
    stale = out.parent / f".{out.name}.tmp-mimic3+abc123"
    (stale / "new" / "mimic3_full" / "sharegpt").mkdir(parents=True)
    (stale / "new" / "mimic3_full" / "sharegpt" / "train.jsonl").write_text(json.dumps({"t": canary_note(20)}))
    legacy = out.parent / f".{out.name}.tmp-k2j4l5"  # the name an earlier version gave its temporaries
    legacy.mkdir()
    (legacy / "notes.txt").write_text(canary_note(20))
    other = out.parent / f".{out.name}.tmp-other+abc123"  # another --name's run: not ours to remove
    other.mkdir()
    code, stdout, stderr = _prepare(["mimic3", "--root", canary_root, "--out", out], capsys)
    assert code == 0, stderr
    assert not stale.exists() and not legacy.exists() and other.is_dir()
    assert str(stale) in stderr and str(legacy) in stderr
    assert_no_canary(stdout, stderr, out.parent, datasets=_dataset_parts(out))


def test_synth_refusals(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for args in (["--out", tmp_path / "file", "--n-admissions", 20], ["--out", tmp_path / "o", "--n-admissions", 0],
                 ["--out", tmp_path / "o", "--split-fractions", 1, 1, 1]):
        assert synth.main([str(a) for a in args]) == 2
        captured = capsys.readouterr()
        assert "Fix:" in captured.err and "Traceback" not in captured.err, captured.err
        assert_no_canary(captured.out, captured.err, tmp_path)


def test_tiny_model_refusals(tmp_path, capsys):
    texts = tmp_path / "notes.jsonl"
    texts.write_text("".join(json.dumps({"text": canary_note(40 + i)}) + "\n" for i in range(20)))
    latin = tmp_path / "latin.txt"
    latin.write_bytes(canary_note(30).encode() + b"\xe9\xff")
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"text": canary_note(30)}) + "\n" + canary_note(30) + "\n")
    existing = tmp_path / "work" / "model"
    existing.mkdir(parents=True)
    (existing / "config.json").write_text("{}")
    cases = [(["--texts", texts, "--out", existing], "--overwrite"),
             (["--texts", latin, "--out", tmp_path / "work" / "m1"], "UTF-8"),
             (["--texts", broken, "--out", tmp_path / "work" / "m2"], "line 2"),
             (["--texts", texts, "--out", tmp_path / "work" / "m3", "--hidden", 100], "hidden"),
             (["--texts", texts, "--out", tmp_path / "notes.jsonl"], "--out")]
    for args, needle in cases:
        assert tiny_model.main([str(a) for a in args]) == 2, args
        captured = capsys.readouterr()
        assert needle in captured.err and "Fix:" in captured.err and "Traceback" not in captured.err, captured.err
        assert_no_canary(captured.out, captured.err, tmp_path / "work")
    assert (existing / "config.json").read_text() == "{}"
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["model"]
