"""data_tools.evaluation.candidates / coders / edin_export: cross-fitting without label leakage, recall@K, import,
Edin export.

The variant is built by the real ``data_tools.build.prepare generic`` from a small planted corpus: note A is the only
note with code 995.92 and carries a planted token that one other note (without the code) also has.
"""

from __future__ import annotations

import json
import random

import joblib
import numpy as np
import pandas as pd
import pyarrow.feather as feather
import pytest

from data_tools.evaluation import candidates
from data_tools.build import prepare
from data_tools.evaluation import thresholds
from data_tools.build.edin_export import _integer_ids

CODES = ["401.9", "428.0", "427.31", "584.9", "250.00", "272.4", "414.01", "518.81", "96.04", "38.93"]
MARKERS = {c: f"marker{chr(97 + i)}word" for i, c in enumerate(CODES)}
UNIQUE_CODE, PLANT = "995.92", "zqxplanttoken"
FILLER = [f"filler{i}" for i in range(200)]


def _note(rng: random.Random, codes: list[str], extra: str = "") -> str:
    words = rng.choices(FILLER, k=120) + [MARKERS[c] for c in codes for _ in range(3)]
    rng.shuffle(words)
    return " ".join(words) + (" " + extra if extra else "")


@pytest.fixture(scope="module")
def variant(tmp_path_factory):
    rng = random.Random(0)
    rows = []
    for i in range(90):
        split = "train" if i < 60 else ("val" if i < 75 else "test")
        codes = rng.sample(CODES, rng.randint(2, 4))
        rows.append({"id": str(1000 + i), "subject_id": str(i // 2 if i < 10 else i), "split": split,
                     "codes": codes, "text": _note(rng, codes)})
    rows[20]["codes"] = rows[20]["codes"] + [UNIQUE_CODE]  # note A: the only note with the code
    rows[20]["text"] = rows[20]["text"] + f" {PLANT}" * 5
    rows[40]["text"] = rows[40]["text"] + f" {PLANT}"  # another patient's note shares the token, not the code
    root = tmp_path_factory.mktemp("cand")
    table = root / "table.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert prepare.main(["generic", "--input", str(table), "--code-system", "icd9", "--name", "toy", "--variants",
                         "full", "--min-code-count", "1", "--out", str(root / "data")]) == 0
    return root / "data" / "toy_full", rows


@pytest.fixture(scope="module", params=["linear", "knn"])
def trained(request, variant, tmp_path_factory):
    path, rows = variant
    out = tmp_path_factory.mktemp(request.param) / "out"
    assert candidates.main(["train", "--data", str(path), "--coder", request.param, "--out", str(out), "--folds", "3",
                            "--top-k", "10", "--no-progress", "--neighbours", "5"]) == 0
    return out, path, rows


def _read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_cross_fitted_train_candidates_never_see_own_labels(trained):
    out, _, rows = trained
    train = {r["id"]: r for r in _read(out / "candidates_train.jsonl")}
    note_a = rows[20]["id"]
    assert UNIQUE_CODE not in train[note_a]["codes"]
    # Any candidate of a training note must be a code some other patient's training note carries.
    by_code: dict[str, set[str]] = {}
    for r in rows:
        if r["split"] == "train":
            for c in r["codes"]:
                by_code.setdefault(c, set()).add(r["subject_id"])
    subject = {r["id"]: r["subject_id"] for r in rows}
    for sample_id, cand in train.items():
        for code in cand["codes"]:
            assert by_code.get(code, set()) - {subject[sample_id]}, (sample_id, code)


def test_the_planted_association_is_learnt_by_the_full_model(trained):
    """The oracle that makes the leakage test meaningful: a model that saw note A's labels ranks the code high."""
    out, _, rows = trained
    model = joblib.load(out / "model.joblib")
    probs = model.predict_proba([rows[20]["text"]])[0]
    ranked = [model.codes[j] for j in np.argsort(-probs, kind="stable")]
    assert probs[model.codes.index(UNIQUE_CODE)] > 0
    assert UNIQUE_CODE in ranked[:5]


def test_outputs_are_complete_and_read_by_thresholds(trained, tmp_path):
    out, path, rows = trained
    for split, n in (("train", 60), ("val", 15), ("test", 15)):
        cands = _read(out / f"candidates_{split}.jsonl")
        assert [c["id"] for c in cands] == [r["id"] for r in rows if r["split"] == split]
        for c in cands:
            assert len(c["codes"]) == len(c["scores"]) <= 10
            assert c["scores"] == sorted(c["scores"], reverse=True) and all(0 < s <= 1 for s in c["scores"])
    matrix = thresholds.load_matrix(out / "probs_test.npz")
    gold = {r["id"]: set(r["codes"]) for r in rows}
    for doc, row in zip(matrix.ids, matrix.targets):
        assert {matrix.codes[j] for j in np.flatnonzero(row)} == gold[doc]
    assert thresholds.main(["--val", str(out / "probs_val.npz"), "--test", str(out / "probs_test.npz"), "--data",
                            str(path), "--output-dir", str(tmp_path / "eval"), "--bootstrap", "0",
                            "--no-plots"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["recall_at_k"]) == {"train", "val", "test"}
    assert 0 <= report["f1_at_tuned_threshold"]["test_micro_f1"] <= 1


def test_recall_at_k_on_hand_cases():
    golds = [["a", "b"], ["c"], ["a", "d", "e", "f"]]
    ranked = [["b", "x", "a"], ["x", "y"], ["f", "a", "z"]]
    one = candidates.recall_at_k(golds, ranked, 1)  # hits 1, 0, 1 of 2, 1, 4
    assert one["micro"] == pytest.approx(2 / 7) and one["mean_per_note"] == pytest.approx((1 / 2 + 0 + 1 / 4) / 3)
    three = candidates.recall_at_k(golds, ranked, 3)  # hits 2, 0, 2
    assert three["micro"] == pytest.approx(4 / 7)
    rows = candidates.recall_by_bucket(golds, ranked, [3], {"a": 600, "b": 50, "c": 50, "d": 5, "f": 5})
    by = {r["bucket"]: r for r in rows}
    assert by["≥500"]["occurrences"] == 2 and by["≥500"]["recall@3"] == pytest.approx(1.0)  # a twice, found twice
    assert by["10–99"]["recall@3"] == pytest.approx(1 / 2)  # b found, c not
    assert by["<10"]["occurrences"] == 3 and by["<10"]["recall@3"] == pytest.approx(1 / 3)  # d, e (freq 0), f
    assert by["100–499"]["n_codes"] == 0


def test_import_reproduces_the_ranking_of_an_edin_prediction_file(variant, tmp_path):
    path, rows = variant
    rng = np.random.default_rng(1)
    codes = CODES + [UNIQUE_CODE]
    files = {}
    for split in ("val", "test"):
        ids = [r["id"] for r in rows if r["split"] == split][::-1]  # another row order than the variant's
        probs = rng.random((len(ids), len(codes))).astype(np.float32)
        frame = pd.DataFrame(probs, columns=codes)
        frame["target"] = [[c for c in r["codes"]] for r in rows if r["split"] == split][::-1]
        frame["_id"] = [int(i) for i in ids]
        files[split] = tmp_path / f"predictions_{split}.feather"
        frame.to_feather(files[split])
        files[split + "_oracle"] = {i: [codes[j] for j in sorted(range(len(codes)), key=lambda j: -p[j])[:5]]
                                    for i, p in zip(ids, probs)}
    out = tmp_path / "imported"
    assert candidates.main(["import", "--data", str(path), "--val", str(files["val"]), "--test", str(files["test"]),
                            "--out", str(out), "--top-k", "5", "--name", "plm-icd"]) == 0
    for split in ("val", "test"):
        got = _read(out / f"candidates_{split}.jsonl")
        assert [g["id"] for g in got] == [r["id"] for r in rows if r["split"] == split]
        assert {g["id"]: g["codes"] for g in got} == files[split + "_oracle"]
    assert json.loads((out / "report.json").read_text())["coder"] == "plm-icd"


def test_import_refuses_a_matrix_that_misses_notes(variant, tmp_path, capsys):
    path, rows = variant
    ids = [r["id"] for r in rows if r["split"] == "val"][:-1]
    np.savez(tmp_path / "val.npz", probs=np.zeros((len(ids), 2)), ids=np.array(ids), codes=np.array(CODES[:2]))
    code = candidates.main(["import", "--data", str(path), "--val", str(tmp_path / "val.npz"), "--test",
                            str(tmp_path / "val.npz"), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "val.npz" in err and "1 notes of the split have no row" in err and not (tmp_path / "o").exists()


def test_errors_exit_2_and_never_show_note_text(variant, trained, tmp_path, capsys):
    path, _ = variant
    out, _, _ = trained
    assert candidates.main(["train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "label_space.json" in capsys.readouterr().err
    assert candidates.main(["train", "--data", str(path), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert candidates.main(["predict", "--model", str(out / "model.joblib"), "--data", str(path), "--splits", "train",
                            "--out", str(tmp_path / "p")]) == 2
    assert "cross-fitted" in capsys.readouterr().err
    for name in ("report.json", "report.md", "candidates_train.jsonl", "candidates_test.jsonl"):
        text = (out / name).read_text(encoding="utf-8")
        assert not any(w in text for w in (PLANT, "filler1", "markeraword")), name


def test_predict_scores_notes_the_model_did_not_train_on(trained, tmp_path):
    out, path, rows = trained
    assert candidates.main(["predict", "--model", str(out / "model.joblib"), "--data", str(path), "--out",
                            str(tmp_path / "p"), "--top-k", "10"]) == 0
    assert _read(tmp_path / "p" / "candidates_test.jsonl") == _read(out / "candidates_test.jsonl")


def test_edin_export_reads_back_into_the_same_examples(variant, tmp_path):
    path, _ = variant
    out = tmp_path / "edin"
    assert candidates.main(["export-edin", "--data", str(path), "--out", str(out)]) == 0
    table = feather.read_table(out / "toy_full.feather")
    assert str(table.schema.field("_id").type) == "int64"
    data = table.to_pandas()
    splits = feather.read_table(out / "toy_full_splits.feather").to_pandas()
    joined = data.merge(splits, on="_id", how="inner")
    examples = pd.concat([pd.read_parquet(path / "examples" / f"{s}.parquet").assign(split=s)
                          for s in ("train", "val", "test")])
    assert len(joined) == len(examples)
    back = joined.assign(id=joined["_id"].astype(str)).set_index("id")
    for _, ex in examples.iterrows():
        row = back.loc[ex["id"]]
        assert row["text"] == ex["text"] and row["split"] == ex["split"]
        assert list(row["target"]) == list(ex["codes"]) and row["num_targets"] == len(ex["codes"])
        # ICD-9 procedures have two digits before the dot, diagnoses three (or a V/E prefix).
        procs = [c for c in ex["codes"] if c.split(".")[0].isdigit() and len(c.split(".")[0]) == 2]
        assert list(row["icd9_proc"]) == procs
        assert list(row["icd9_diag"]) == [c for c in ex["codes"] if c not in procs]
    config = (out / "toy_full.yaml").read_text()
    assert "data_filename: toy_full.feather" in config and "  - icd9_diag" in config
    assert not (out / "ids.csv").exists()


def test_edin_export_maps_ids_that_are_not_integers(variant, tmp_path):
    from data_tools.build.edin_export import export_edin

    path, _ = variant
    loaded = candidates.load_variant(path)
    for part in loaded.splits.values():
        part.ids = [f"note-{i}" for i in part.ids]
    info = export_edin(loaded, tmp_path / "edin")
    assert info["id_map"]
    mapping = pd.read_csv(tmp_path / "edin" / "ids.csv", dtype=str)
    data = feather.read_table(tmp_path / "edin" / "toy_full.feather").to_pandas()
    back = dict(zip(mapping["_id"].astype(int), mapping["id"]))
    expected = [i for part in loaded.splits.values() for i in part.ids]
    assert [back[i] for i in data["_id"]] == expected and len(set(data["_id"])) == len(expected)


def test_integer_ids_only_when_they_round_trip():
    assert _integer_ids(["100", "2"]) and not _integer_ids(["007"]) and not _integer_ids(["a1"])
