"""No note text reaches a message or a stray file from the evaluation and PHI tools: every error path of evaluate,
thresholds, reports, infer, baselines, phi_refresh and phi_rounds is driven with notes, responses, ids and gold
values laced with a canary (tests/canary.py); stdout, stderr and every file outside the datasets are searched."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from canary import CANARY, assert_no_canary, canary_note

from data_tools.evaluation import baselines
from data_tools.evaluation import evaluate
from data_tools.evaluation import infer
from data_tools.phi import refresh as phi_refresh
from data_tools.phi import rounds as phi_rounds
from data_tools.build import prepare
from data_tools.evaluation import thresholds
from data_tools.build.synth import generate_mimic3

NOTE = canary_note(80)


@pytest.fixture(scope="module")
def variant(tmp_path_factory) -> Path:
    """A prepared variant whose every note is canary text (its examples and verl files are datasets)."""
    base = tmp_path_factory.mktemp("canary_tools")
    paths = generate_mimic3(base / "raw", n_admissions=60, seed=4)
    notes = pd.read_csv(paths["notes"], dtype=str, keep_default_na=False)
    notes["TEXT"] = [canary_note(40 + i % 30) for i in range(len(notes))]
    notes.to_csv(paths["notes"], index=False, quoting=csv.QUOTE_NONNUMERIC)
    assert prepare.main(["mimic3", "--root", str(paths["root"]), "--out", str(base / "prep"), "--variants", "full",
                         "--min-code-count", "1"]) == 0
    out = base / "prep" / "mimic3_full"
    assert CANARY in pq.read_table(out / "verl" / "train.parquet").to_pandas()["prompt"].map(str).str.cat()
    return out


def _jsonl(path: Path, rows) -> Path:
    path.write_bytes(b"".join(r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode()
                              + b"\n" for r in rows))
    return path


def _refused(main, argv, capsys, where: Path, datasets=(), *needles) -> str:
    """Run a tool's main in-process: a clean refusal (exit 2, a fix, no traceback) and no canary anywhere."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert "Fix:" in captured.err and "Traceback" not in captured.err, captured.err
    for needle in needles:
        assert needle in captured.err, captured.err
    assert_no_canary(captured.out, captured.err, where, datasets=datasets)
    return captured.err


# --- evaluate and reports ---------------------------------------------------------------------------------

def _test_rows(variant: Path) -> list[dict]:
    frame = pd.read_parquet(variant / "examples" / "test.parquet")
    return [{"id": i, "gold": list(c), "response": f"<think>{NOTE}</think><code>{', '.join(c)}</code>"}
            for i, c in zip(frame["id"], frame["codes"])]


EVALUATE_CASES = {
    "gold value": (lambda rows: rows[:1] + [{"id": "x", "gold": [NOTE], "pred": []}], "is not an ICD code"),
    "gold not a list": (lambda rows: [{"id": "x", "gold": NOTE, "pred": []}], "not a list"),
    "broken json": (lambda rows: ['{"id": "x", "gold": ["' + NOTE], "not valid JSON"),
    "pred not a list": (lambda rows: [{"id": "x", "gold": ["401.9"], "pred": NOTE}], '"pred" is str'),
    "response not text": (lambda rows: [{"id": "x", "gold": [], "response": {"text": NOTE}}], '"response" is dict'),
    "duplicate id": (lambda rows: [{"id": NOTE, "gold": [], "pred": []}] * 2, "already used on line 1"),
    "id an object": (lambda rows: [{"id": {"note": NOTE}, "gold": [], "pred": []}], '"id" is a mapping'),
    "not utf-8": (lambda rows: [NOTE.encode("latin-1") + b"\xe9\xff"], "not UTF-8"),
    "nested": (lambda rows: ["[" * 50_000 + json.dumps(NOTE) + "]" * 50_000], "nested too deeply"),
    "foreign id": (lambda rows: rows + [{"id": NOTE, "gold": [], "pred": []}], "are not samples of"),
    "missing samples": (lambda rows: rows[:2], "have no prediction"),
}


@pytest.mark.parametrize("case", list(EVALUATE_CASES))
def test_evaluate_error_paths(variant, tmp_path, capsys, case):
    make, needle = EVALUATE_CASES[case]
    pred = _jsonl(tmp_path / "pred.jsonl", make(_test_rows(variant)))
    _refused(evaluate.main, ["--predictions", pred, "--output-dir", tmp_path / "out", "--data", variant,
                             "--bootstrap", "0"], capsys, tmp_path, [pred], needle)
    assert not (tmp_path / "out").exists()


def test_evaluate_input_files_with_note_text(variant, tmp_path, capsys):
    pred = _jsonl(tmp_path / "pred.jsonl", _test_rows(variant))
    common = ["--predictions", pred, "--output-dir", tmp_path / "out", "--bootstrap", "0"]
    bad_space = tmp_path / "space.json"
    bad_space.write_text('{"name": "' + NOTE + '", "codes": ')
    _refused(evaluate.main, common + ["--label-space", bad_space], capsys, tmp_path, [pred, bad_space])
    freq = tmp_path / "freq.json"
    freq.write_text(json.dumps({"401.9": NOTE}))
    _refused(evaluate.main, common + ["--train-frequencies", freq], capsys, tmp_path, [pred, bad_space, freq],
             "cannot read training frequencies")
    metrics = tmp_path / "m" / "metrics.json"
    metrics.parent.mkdir()
    metrics.write_text(json.dumps({k: NOTE for k in ("micro_recall", "micro_precision", "micro_f1", "macro_recall",
                                                     "macro_precision", "macro_f1")}))
    inputs = [pred, bad_space, freq, metrics.parent]
    _refused(evaluate.main, ["--output-dir", tmp_path / "table", "--compare", f"A={metrics.parent}"], capsys,
             tmp_path, inputs, "not a metrics.json")
    # a stale temporary of a killed run holding note text is removed by the next run
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / ".summary.md.tmp-dead").write_text(NOTE)
    assert evaluate.main([str(a) for a in ["--predictions", pred, "--output-dir", tmp_path / "ok", "--data",
                                           variant, "--bootstrap", "0"]]) == 0
    captured = capsys.readouterr()
    assert_no_canary(captured.out, captured.err, tmp_path, datasets=inputs)


# --- thresholds ------------------------------------------------------------------------------------------

def test_thresholds_error_paths(tmp_path, capsys):
    ids, codes = ["d1", "d2"], ["401.9", "428.0"]
    good = tmp_path / "val.npz"
    np.savez(good, probs=np.array([[0.9, 0.1], [0.2, 0.8]]), ids=np.array(ids), codes=np.array(codes))
    text_matrix = tmp_path / "text.parquet"
    pd.DataFrame({"id": ids, "401.9": [0.5, 0.5], "428.0": [NOTE, NOTE]}).to_parquet(text_matrix)
    out = tmp_path / "out"
    _refused(thresholds.main, ["--val", good, "--test", text_matrix, "--output-dir", out], capsys, tmp_path,
             [text_matrix], "cannot read the matrix")
    gold_text = _jsonl(tmp_path / "gold.jsonl", [{"id": i, "codes": NOTE} for i in ids])
    _refused(thresholds.main, ["--val", good, "--test", good, "--output-dir", out, "--val-gold", gold_text],
             capsys, tmp_path, [text_matrix, gold_text], "not a list")
    other_ids = tmp_path / "other.npz"
    np.savez(other_ids, probs=np.array([[0.9, 0.1]]), ids=np.array([NOTE]), codes=np.array(codes))
    gold = _jsonl(tmp_path / "gold2.jsonl", [{"id": i, "codes": ["401.9"]} for i in ids])
    _refused(thresholds.main, ["--val", other_ids, "--test", good, "--output-dir", out, "--val-gold", gold,
                               "--test-gold", gold], capsys, tmp_path, [text_matrix, gold_text, other_ids],
             "has no gold codes")
    assert not out.exists()


# --- infer (the checks before any model is loaded) and baselines -----------------------------------------

def test_infer_error_paths(variant, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "preds.jsonl"
    argv = ["--data", variant, "--model", tiny_model_dir, "--output", out, "--max-samples", "1"]
    record = infer.run_records(infer.build_parser().parse_args([str(a) for a in argv]))[out]
    infer.plan_resume(out, record)
    out.write_text(json.dumps({"id": "a", "response": NOTE}) + "\n" + NOTE + "\n", encoding="utf-8")
    _refused(infer.main, argv, capsys, tmp_path, [out], "line 2 is not a prediction record")
    _refused(infer.main, argv + ["--temperature", "0.5"], capsys, tmp_path, [out], "another run")
    infer.meta_path(out).write_text('{"model": "' + NOTE)
    _refused(infer.main, argv, capsys, tmp_path, [out, infer.meta_path(out)], "unreadable run record")
    # a killed torn-line cut leaves a temporary with responses: the next run removes it
    (tmp_path / f".{out.name}.tmp-dead").write_text(NOTE)
    infer.meta_path(out).unlink()
    out.unlink()
    assert infer.plan_resume(out, record) == set()
    assert_no_canary("", "", tmp_path)


def test_baselines_error_paths(variant, tmp_path):
    broken = tmp_path / "variant"
    (broken / "examples").mkdir(parents=True)
    (broken / "stats.json").write_text('{"code_system": "' + NOTE)
    with pytest.raises(baselines.BaselineError) as caught:
        baselines.build_requests(broken, "test", "zero_shot")
    assert "Fix:" in str(caught.value)
    assert_no_canary(str(caught.value), "", tmp_path / "none")
    (broken / "stats.json").write_text((variant / "stats.json").read_text())
    (broken / "examples" / "test.parquet").write_text(NOTE)  # not a parquet file
    with pytest.raises(baselines.BaselineError) as caught:
        baselines.build_requests(broken, "test", "zero_shot")
    assert_no_canary(str(caught.value), "", tmp_path / "none")


# --- phi_refresh and phi_rounds ----------------------------------------------------------------------------

def _train_rows(variant: Path) -> list[dict]:
    return pq.read_table(variant / "verl" / "train.parquet").to_pylist()


def _write_train(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


REFRESH_PRED_CASES = {
    "missing samples": (lambda ids: [{"id": ids[0], "response": NOTE}], "have no prediction"),
    "foreign id": (lambda ids: [{"id": i, "pred": []} for i in ids] + [{"id": NOTE, "pred": []}],
                   "not training samples"),
    "duplicate id": (lambda ids: [{"id": NOTE, "pred": []}] * 2, "already used on line 1"),
    "gold differs": (lambda ids: [{"id": i, "pred": [], "gold": [NOTE, "401.9"]} for i in ids], "is not an ICD code"),
    "no prediction": (lambda ids: [{"id": ids[0], "text": NOTE}], "neither"),
    "broken json": (lambda ids: ['{"id": "' + NOTE], "not valid JSON"),
    "not utf-8": (lambda ids: [NOTE.encode("latin-1") + b"\xe9\xff"], "not UTF-8"),
    "nested": (lambda ids: ["[" * 50_000 + json.dumps(NOTE) + "]" * 50_000], "nested too deeply"),
    "id an object": (lambda ids: [{"id": {"n": NOTE}, "pred": []}], '"id" is a mapping'),
}


@pytest.mark.parametrize("case", list(REFRESH_PRED_CASES))
def test_phi_refresh_prediction_error_paths(variant, tmp_path, capsys, case):
    make, needle = REFRESH_PRED_CASES[case]
    train = variant / "verl" / "train.parquet"
    ids = [str(r["extra_info"]["sample_id"]) for r in _train_rows(variant)]
    pred = _jsonl(tmp_path / "pred.jsonl", make(ids))
    out = tmp_path / "round_1" / "train.parquet"
    _refused(phi_refresh.main, ["--train", train, "--predictions", pred, "--out", out, "--round", "1"], capsys,
             tmp_path, [pred], needle)
    assert not out.exists()


@pytest.mark.parametrize("field", ["split", "sample_id", "code_system"])
def test_phi_refresh_training_file_error_paths(variant, tmp_path, capsys, field):
    rows = _train_rows(variant)
    for row in rows[:2]:
        row["extra_info"][field] = NOTE  # two rows: a repeated sample_id is an error too
    train = _write_train(tmp_path / "train.parquet", rows)
    pred = _jsonl(tmp_path / "pred.jsonl", [{"id": str(r["extra_info"]["sample_id"]), "pred": []} for r in rows])
    _refused(phi_refresh.main, ["--train", train, "--predictions", pred, "--out", tmp_path / "o.parquet",
                                "--round", "1"], capsys, tmp_path, [train, pred])
    garbage = tmp_path / "garbage.parquet"
    garbage.write_text(NOTE)
    _refused(phi_refresh.main, ["--train", garbage, "--predictions", pred, "--out", tmp_path / "o.parquet",
                                "--round", "1"], capsys, tmp_path, [train, pred, garbage], "cannot read the parquet")


STAND_IN = r'''
import json, sys
from canary import canary_note
out, ids = sys.argv[1], json.load(open(sys.argv[2]))
with open(out, "w") as fh:
    for sid in ids[: len(ids) // 2]:  # stops half-way, reporting success
        fh.write(json.dumps({"id": sid, "response": canary_note(30)}) + "\n")
'''


def test_phi_rounds_incomplete_inference(variant, tmp_path, capfd, monkeypatch):
    train = variant / "verl" / "train.parquet"
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps([str(r["extra_info"]["sample_id"]) for r in _train_rows(variant)]))
    script = tmp_path / "stand_in_infer.py"
    script.write_text(STAND_IN)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    commands = {"train": "true", "export": "true", "infer": f"{sys.executable} {script} {{predictions}} {ids}"}
    run = tmp_path / "run"
    code = phi_rounds.main(["--run-dir", str(run), "--train", str(train), "--rounds", "1",
                            "--train-cmd", commands["train"], "--export-cmd", commands["export"],
                            "--infer-cmd", commands["infer"]])
    captured = capfd.readouterr()
    assert code == 2 and "exited 0" in captured.err and "Fix:" in captured.err
    assert_no_canary(captured.out, captured.err, tmp_path)  # the incomplete predictions are deleted too
