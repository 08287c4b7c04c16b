"""The evaluation CLI: outputs agree with the metrics module, errors name file/line/fix, nothing leaks or
half-writes; --out and its alias --output-dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from data_tools.evaluation.evaluate import main
from llm4icd_plugins.metrics import corpus_metrics

REPO = Path(__file__).resolve().parents[2]
SECRET = "Patient Zebediah Quux, born 03/04/1950"  # stands in for note text a model may echo
OUTPUTS = ("metrics.json", "per_code.csv", "summary.md")


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


ROWS = [
    {"id": "a", "gold": ["401.9", "428.0"], "pred": ["401.9", "250.00"]},
    {"id": "b", "gold": ["250.00"], "response": f"<think>{SECRET}</think><code>250.00, 428.0,</code>"},
    {"id": "c", "gold": ["428.0", "V58.61"], "response": f"{SECRET} no span"},
    {"id": 4, "gold": ["V58.61"], "response": f"<code>V58.61, {SECRET}</code>"},
]
# After parsing: a {401.9, 250.00}; b {250.00, 428.0}; c {}; d {V58.61} (the echoed text: 2 malformed tokens).
EXPECTED_PREDS = [["401.9", "250.00"], ["250.00", "428.0"], [], ["V58.61"]]


def _all_output_text(directory: Path) -> str:
    return "".join((directory / name).read_text(encoding="utf-8") for name in OUTPUTS)


def test_in_process_run_matches_corpus_metrics(tmp_path, capsys):
    pred_file = _write_jsonl(tmp_path / "pred.jsonl", ROWS)
    out = tmp_path / "out"
    assert main(["--predictions", str(pred_file), "--output-dir", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    expected = corpus_metrics([r["gold"] for r in ROWS], EXPECTED_PREDS)
    for key in ("micro_precision", "micro_recall", "micro_f1", "macro_precision", "macro_recall", "macro_f1",
                "open_micro_f1", "exact_match", "mean_sample_f1", "n_docs", "n_labels", "n_pred_dropped"):
        assert metrics[key] == pytest.approx(expected[key]), key
    # Hand check: tp 3 (401.9, 250.00 in b, V58.61), fp 2 (250.00 in a, 428.0 in b), fn 3 → micro-F1 3/5.5
    assert metrics["micro_f1"] == pytest.approx(3 / 5.5)
    # per code (P, R, F): 401.9 (1, 1, 1); 428.0 (0, 0, 0); 250.00 (1/2, 1, 2/3); V58.61 (1, 1/2, 2/3)
    assert (metrics["macro_precision"], metrics["macro_recall"]) == pytest.approx((2.5 / 4, 2.5 / 4))
    assert metrics["macro_f1"] == pytest.approx((1 + 0 + 2 / 3 + 2 / 3) / 4)
    assert (metrics["n_responses"], metrics["n_no_span"], metrics["n_format_bad"]) == (3, 1, 1)
    assert metrics["n_pred_malformed"] == 2 and metrics["n_empty_pred"] == 1
    per_code = pd.read_csv(out / "per_code.csv", dtype={"code": str})
    assert set(per_code.code) == {"401.9", "428.0", "250.00", "V58.61"}
    assert per_code.set_index("code").loc["428.0", "fn"] == 2
    printed = capsys.readouterr()
    assert "| micro |" in printed.out and (out / "summary.md").read_text() in printed.out
    assert SECRET not in printed.out + printed.err + _all_output_text(out)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_code_system_resolves_and_rescues(tmp_path):
    rows = [
        {"id": 1, "gold": ["4280", "000.0"], "pred": ["428.0", "000.0", "001.9"]},  # 000.0: gold, unknown to tables
        {"id": 2, "gold": ["25000"], "response": "<code>25000, 001.9</code>"},
    ]
    out = tmp_path / "out"
    assert main(["--predictions", str(_write_jsonl(tmp_path / "p.jsonl", rows)), "--output-dir", str(out),
                 "--code-system", "icd9"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # gold resolves to 428.0 / 250.00; 000.0 stays (retired-code rule) and a prediction of it counts
    assert metrics["micro_recall"] == 1.0 and metrics["n_gold_unknown"] == 1
    assert metrics["n_pred_rescued"] == 1 and metrics["n_pred_unknown"] == 0
    assert metrics["open_micro_precision"] == pytest.approx(3 / 5)  # 001.9 (cholera) twice, a real code
    per_code = pd.read_csv(out / "per_code.csv", dtype={"code": str}).set_index("code")
    assert "heart failure" in per_code.loc["428.0", "description"].lower()


def test_unknown_codes_are_rescued_only_for_the_row_whose_gold_they_are(tmp_path):
    # 000.0: code-shaped, unknown to the ICD-9 tables, gold of row 1 only. Predicted in row 2 it is an
    # invalid code (excluded from Ŷ as the reward excludes it), not a false positive.
    rows = [{"id": 1, "gold": ["401.9", "000.0"], "response": "<code>401.9, 000.0</code>"},
            {"id": 2, "gold": ["428.0"], "response": "<code>428.0, 000.0</code>"}]
    out = tmp_path / "out"
    assert main(["--predictions", str(_write_jsonl(tmp_path / "p.jsonl", rows)), "--output-dir", str(out),
                 "--code-system", "icd9"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["micro_precision"] == 1.0 and metrics["open_micro_precision"] == 1.0
    assert metrics["n_pred_rescued"] == 1 and metrics["n_pred_unknown"] == 1
    from llm4icd_plugins.verl.reward import compute_score

    rewards = [compute_score("d", r["response"], r["gold"], {"code_system": "icd9"})["score"] for r in rows]
    assert rewards == [1.0, 1.0] and metrics["mean_sample_f1"] == 1.0


def test_label_space_drops_and_counts(tmp_path):
    from llm4icd_plugins.codes import LabelSpace

    space_file = tmp_path / "top2.json"
    LabelSpace("top2", "icd9", ["401.9", "428.0"]).save(space_file)
    out = tmp_path / "out"
    assert main(["--predictions", str(_write_jsonl(tmp_path / "p.jsonl", ROWS)), "--output-dir", str(out),
                 "--label-space", str(space_file)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    expected = corpus_metrics([r["gold"] for r in ROWS], EXPECTED_PREDS, ["401.9", "428.0"])
    assert metrics["n_labels"] == 2 and metrics["label_space"] == "top2"
    assert metrics["n_pred_dropped"] == expected["n_pred_dropped"] == 3
    assert metrics["macro_f1"] == pytest.approx(expected["macro_f1"])


def test_near_misses_and_categories_in_every_output(tmp_path, capsys):
    rows = [
        # 401.1: a near miss of the missed 401.9; 428.1 is not one (its category's gold code 428.0 was predicted)
        {"id": 1, "gold": ["401.9", "428.0"], "response": "<code>401.1, 428.0, 428.1</code>"},
        # 250.02: one near miss with two missed candidates; 96.71 matches a missed code of another document only
        {"id": 2, "gold": ["250.00", "250.01"], "pred": ["250.02", "96.71"]},
        {"id": 3, "gold": ["96.72"], "pred": []},
    ]
    out = tmp_path / "out"
    assert main(["--predictions", str(_write_jsonl(tmp_path / "p.jsonl", rows)), "--output-dir", str(out),
                 "--code-system", "icd9", "--bootstrap", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # false positives 401.1, 428.1, 250.02, 96.71 (2 near); missed 401.9, 250.00, 250.01, 96.72 (3 near-missed)
    assert (metrics["n_fp"], metrics["n_near_miss"], metrics["n_fn"], metrics["n_fn_near_miss"]) == (4, 2, 4, 3)
    assert (metrics["near_miss_rate"], metrics["fn_near_miss_rate"]) == (0.5, 0.75)
    # categories 401, 428, 250, 96: tp 401, 428, 250; fp 96 (document 2); fn 96 (document 3)
    assert metrics["n_categories"] == 4
    for key in ("precision", "recall", "f1"):
        assert metrics[f"category_micro_{key}"] == pytest.approx(3 / 4)
        assert metrics[f"category_macro_{key}"] == pytest.approx(3 / 4)  # per category 1, 1, 1, 0
    per_code = pd.read_csv(out / "per_code.csv", dtype={"code": str, "category": str}).set_index("code")
    assert per_code["near_miss_fn"].to_dict() == {"401.9": 1, "428.0": 0, "250.00": 1, "250.01": 1, "96.72": 0}
    assert per_code.loc["96.72", "category"] == "96" and per_code.loc["250.01", "category"] == "250"
    summary = (out / "summary.md").read_text()
    assert "| category micro | 75.00 | 75.00 | 75.00 |" in summary
    assert "2 of 4 false positives (50.00%)" in summary and "3 of 4 (75.00%)" in summary
    assert summary in capsys.readouterr().out


def _bad_cases():
    ok = json.dumps(ROWS[0])
    yield "bad json", [ok, '{"id": "x", "gold": [' + json.dumps(SECRET)], 2, "not valid JSON"
    yield "not an object", [ok, "[1, 2]"], 2, "not an object"
    yield "missing gold", [ok, json.dumps({"id": "z", "pred": []})], 2, 'missing key "gold"'
    yield "missing id", [json.dumps({"gold": ["401.9"], "pred": []})], 1, 'missing key "id"'
    yield "gold not list", [json.dumps({"id": 1, "gold": "401.9", "pred": []})], 1, "not a list"
    yield "bad gold code", [json.dumps({"id": 1, "gold": ["hypertension"], "pred": []})], 1, "not an ICD code"
    yield "pred not list", [json.dumps({"id": 1, "gold": ["401.9"], "pred": "401.9"})], 1, '"pred" is str'
    yield "no prediction", [json.dumps({"id": 1, "gold": ["401.9"]})], 1, 'neither "pred" nor "response"'
    yield "duplicate id", [ok, ok], 2, "already used on line 1"
    yield "empty file", [], None, "no records"


@pytest.mark.parametrize("name, lines, line_no, message", list(_bad_cases()), ids=[c[0] for c in _bad_cases()])
def test_bad_input_names_file_line_and_fix_and_writes_nothing(tmp_path, capsys, name, lines, line_no, message):
    pred_file = _write_jsonl(tmp_path / "pred.jsonl", lines)
    out = tmp_path / "out"
    assert main(["--predictions", str(pred_file), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(pred_file) in err and message in err and "Fix:" in err
    if line_no is not None:
        assert f"line {line_no}:" in err
    assert SECRET not in err
    assert not out.exists()


def test_error_leaves_previous_outputs_untouched(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--predictions", str(_write_jsonl(tmp_path / "good.jsonl", ROWS)), "--output-dir", str(out)]) == 0
    before = _all_output_text(out)
    bad = _write_jsonl(tmp_path / "bad.jsonl", [json.dumps(ROWS[0]), "{oops"])
    assert main(["--predictions", str(bad), "--output-dir", str(out)]) == 2
    assert _all_output_text(out) == before and sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)


def test_unreadable_inputs(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--predictions", str(tmp_path / "missing.jsonl"), "--output-dir", str(out)]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(json.dumps(ROWS[0]).encode() + b"\n" + '{"id": "é"}'.encode("latin-1") + b"\n")
    assert main(["--predictions", str(latin1), "--output-dir", str(out)]) == 2
    assert "line 2: not UTF-8" in capsys.readouterr().err
    space = tmp_path / "space.json"
    space.write_text("{not json")
    good = _write_jsonl(tmp_path / "good.jsonl", ROWS)
    assert main(["--predictions", str(good), "--output-dir", str(out), "--label-space", str(space)]) == 2
    assert "space.json" in capsys.readouterr().err
    assert not out.exists()


def test_subprocess_help_and_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    helped = subprocess.run([sys.executable, "-m", "data_tools.evaluation.evaluate", "--help"], capture_output=True,
                            text=True, env=env, cwd=tmp_path, check=True)
    for flag in ("--predictions", "--out", "--output-dir", "--label-space", "--code-system"):
        assert flag in helped.stdout
    pred_file = _write_jsonl(tmp_path / "pred.jsonl", ROWS)
    ran = subprocess.run([sys.executable, "-m", "data_tools.evaluation.evaluate", "--predictions", str(pred_file),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "micro" in ran.stdout and SECRET not in ran.stdout + ran.stderr
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["n_docs"] == len(ROWS)
    failed = subprocess.run([sys.executable, "-m", "data_tools.evaluation.evaluate", "--predictions",
                             str(tmp_path / "nope"), "--output-dir", str(tmp_path / "out2")], capture_output=True,
                            text=True, env=env)
    assert failed.returncode == 2 and "nope" in failed.stderr and "Traceback" not in failed.stderr


# --- coverage of the split (--data), deep nesting, stale temporaries --------------------------------------

@pytest.fixture(scope="module")
def variant(tmp_path_factory):
    from data_tools.build import prepare
    from data_tools.build.synth import generate_mimic3

    base = tmp_path_factory.mktemp("evaluate")
    raw = generate_mimic3(base / "raw", n_admissions=60, seed=5)
    assert prepare.main(["mimic3", "--root", str(raw["root"]), "--out", str(base / "prep"), "--variants", "full",
                         "--min-code-count", "1"]) == 0
    return base / "prep" / "mimic3_full"


def _split_rows(variant: Path, split: str) -> list[dict]:
    frame = pd.read_parquet(variant / "examples" / f"{split}.parquet")
    return [{"id": i, "gold": list(c), "pred": list(c)} for i, c in zip(frame["id"], frame["codes"])]


def test_data_requires_predictions_covering_the_split(variant, tmp_path, capsys):
    rows = _split_rows(variant, "test")
    assert len(rows) >= 4
    half = _write_jsonl(tmp_path / "half.jsonl", rows[: len(rows) // 2])
    args = ["--data", str(variant), "--bootstrap", "0", "--no-plots"]
    assert main(["--predictions", str(half), "--output-dir", str(tmp_path / "o1"), *args]) == 2
    err = capsys.readouterr().err
    missing = len(rows) - len(rows) // 2
    assert f"{missing} of {len(rows)} samples" in err and "--allow-partial" in err and "Traceback" not in err
    assert not (tmp_path / "o1").exists()
    # explicitly partial: scored, and the coverage is reported loudly and recorded
    assert main(["--predictions", str(half), "--output-dir", str(tmp_path / "o2"), "--allow-partial", *args]) == 0
    captured = capsys.readouterr()
    assert "WARNING: partial evaluation" in captured.err
    metrics = json.loads((tmp_path / "o2" / "metrics.json").read_text())
    assert metrics["coverage"]["n_missing"] == missing and metrics["n_docs"] == len(rows) // 2
    assert "partial evaluation" in (tmp_path / "o2" / "summary.md").read_text()
    # the whole split: no warning, coverage complete
    full = _write_jsonl(tmp_path / "full.jsonl", rows)
    assert main(["--predictions", str(full), "--output-dir", str(tmp_path / "o3"), *args]) == 0
    assert "WARNING" not in capsys.readouterr().err
    assert json.loads((tmp_path / "o3" / "metrics.json").read_text())["coverage"]["n_missing"] == 0


def test_data_refuses_ids_outside_the_split(variant, tmp_path, capsys):
    rows = _split_rows(variant, "test")
    foreign = rows + [{"id": "not-a-sample", "gold": ["401.9"], "pred": ["401.9"]}]
    pred = _write_jsonl(tmp_path / "foreign.jsonl", foreign)
    for extra in ([], ["--allow-partial"]):
        assert main(["--predictions", str(pred), "--output-dir", str(tmp_path / "o"), "--data", str(variant),
                     "--bootstrap", "0", "--no-plots", *extra]) == 2
        err = capsys.readouterr().err
        assert f"1 of {len(foreign)} ids are not samples of" in err and f"line {len(foreign)}" in err
    # validation predictions are accepted with --split val, refused as test predictions
    val = _write_jsonl(tmp_path / "val.jsonl", _split_rows(variant, "val"))
    assert main(["--predictions", str(val), "--output-dir", str(tmp_path / "v"), "--data", str(variant),
                 "--bootstrap", "0", "--no-plots"]) == 2
    assert "--split" in capsys.readouterr().err
    assert main(["--predictions", str(val), "--output-dir", str(tmp_path / "v"), "--data", str(variant),
                 "--split", "val", "--bootstrap", "0", "--no-plots"]) == 0
    assert not (tmp_path / "o").exists()


def test_deeply_nested_json_is_a_clean_error(tmp_path, capsys):
    pred = _write_jsonl(tmp_path / "nested.jsonl", [json.dumps(ROWS[0]), "[" * 100_000 + "]" * 100_000])
    assert main(["--predictions", str(pred), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "line 2: JSON nested too deeply" in err and "Fix:" in err


def test_stale_temporaries_of_a_killed_run_are_removed_and_named(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".metrics.json.tmp-abc123"  # the name llm4icd_plugins.atomic gives a temporary
    stale.write_text(SECRET)
    assert main(["--predictions", str(_write_jsonl(tmp_path / "p.jsonl", ROWS)), "--output-dir", str(out),
                 "--bootstrap", "0"]) == 0
    assert not stale.exists() and stale.name in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)


def test_output_dir_that_is_a_file_is_refused_before_the_work(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("a file")
    pred = _write_jsonl(tmp_path / "p.jsonl", ROWS)
    for out in (taken, taken / "sub"):
        assert main(["--predictions", str(pred), "--output-dir", str(out)]) == 2
        err = capsys.readouterr().err
        assert "is a file, not a folder" in err and "Fix:" in err and "Traceback" not in err
    assert taken.read_text() == "a file"
