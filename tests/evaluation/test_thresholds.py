"""Single global threshold tuning (Edin et al.): a hand-computed case, precision and recall at grid points by hand,
strictness at grid points, agreement with scikit-learn's micro scores on random matrices, and the CLI end to end
(npz and parquet; --out and its alias --output-dir; the PR curve file) with clean failures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from data_tools.evaluation.thresholds import load_matrix, main, predict, threshold_curve, tune_threshold
from llm4icd_plugins.metrics import corpus_metrics

GRID = np.linspace(0, 1, 100)


def test_hand_computed_case():
    probs = np.array([[0.9, 0.2], [0.6, 0.4], [0.3, 0.05]])
    targets = np.array([[1, 0], [0, 1], [1, 0]], dtype=bool)
    threshold, f1, grid, curve = tune_threshold(probs, targets)
    # Positives 0.9, 0.4, 0.3; negatives 0.6, 0.2, 0.05. For 0.2 <= t < 0.3 only the negative 0.6 is
    # predicted: tp 3, fp 1, fn 0 → 3 / 3.5. The first grid point there is 20/99.
    assert threshold == pytest.approx(20 / 99) and f1 == pytest.approx(6 / 7)
    assert len(grid) == 100 and grid[0] == 0 and grid[-1] == 1


def test_hand_computed_curve_points():
    probs = np.array([[0.9, 0.2], [0.6, 0.4], [0.3, 0.05]])
    targets = np.array([[1, 0], [0, 1], [1, 0]], dtype=bool)
    _, _, grid, curve = tune_threshold(probs, targets)
    # grid[k] = k/99. t=0: all six cells predicted (tp 3, fp 3); t=0.10: 0.05 drops out (fp 2); t=0.35: tp 2
    # (0.9, 0.4), fp 1, fn 1; t=0.51: tp 1, fp 1, fn 2; t=0.71: tp 1, fn 2; t=0.96: nothing predicted.
    expected = {0: 3 / 4.5, 10: 3 / 4, 35: 2 / 3, 50: 1 / 2.5, 70: 1 / 2, 95: 0.0}
    for k, value in expected.items():
        assert curve[k] == pytest.approx(value), (k, grid[k])


def test_hand_computed_precision_recall_points():
    probs = np.array([[0.9, 0.2], [0.6, 0.4], [0.3, 0.05]])
    targets = np.array([[1, 0], [0, 1], [1, 0]], dtype=bool)
    curve = threshold_curve(probs, targets)
    # Positives 0.9, 0.4, 0.3; negatives 0.6, 0.2, 0.05; grid[k] = k/99, a cell predicted when prob > t.
    expected = {  # k: (tp, fp, fn, precision, recall)
        0: (3, 3, 0, 3 / 6, 1.0),  # everything predicted
        10: (3, 2, 0, 3 / 5, 1.0),  # 0.05 drops out
        25: (3, 1, 0, 3 / 4, 1.0),  # 0.2 drops out
        35: (2, 1, 1, 2 / 3, 2 / 3),  # 0.3 (a positive) drops out
        50: (1, 1, 2, 1 / 2, 1 / 3),  # 0.4 drops out: 0.9 and 0.6 remain
        70: (1, 0, 2, 1.0, 1 / 3),  # only 0.9
        95: (0, 0, 3, 0.0, 0.0),  # nothing predicted: precision 0/0 is 0
    }
    for k, (tp, fp, fn, precision, recall) in expected.items():
        got = tuple(int(curve[key][k]) for key in ("tp", "fp", "fn"))
        assert got == (tp, fp, fn), k
        assert (curve["precision"][k], curve["recall"][k]) == pytest.approx((precision, recall)), k
        assert curve["f1"][k] == pytest.approx(tp / (tp + 0.5 * (fp + fn))), k
    assert list(curve["threshold"]) == list(GRID)


def test_threshold_rule_is_strictly_greater():
    # A negative exactly on grid point 10: with "prob > t" it is not predicted at t = grid[10], so that
    # point already reaches F1 = 1 (with ">=" the best point would be 11).
    probs = np.array([[0.9, GRID[10]]])
    targets = np.array([[1, 0]], dtype=bool)
    threshold, f1, _, _ = tune_threshold(probs, targets)
    assert threshold == GRID[10] and f1 == 1.0
    assert predict(type("M", (), {"probs": probs, "codes": ["a", "b"]})(), threshold) == [["a"]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_sklearn_micro_f1(seed):
    rng = np.random.default_rng(seed)
    targets = rng.random((60, 25)) < 0.15
    probs = np.clip(targets * 0.3 + rng.random((60, 25)) * 0.7, 0, 1)
    threshold, best, grid, curve = tune_threshold(probs, targets, chunk_rows=7)  # chunking must not matter
    reference = np.array([f1_score(targets, probs > t, average="micro", zero_division=0) for t in grid])
    np.testing.assert_allclose(curve, reference, atol=1e-12)
    assert threshold == grid[int(np.argmax(reference))] and best == pytest.approx(reference.max())
    points = threshold_curve(probs, targets, chunk_rows=11)
    for name, metric in (("precision", precision_score), ("recall", recall_score)):
        expected = [metric(targets, probs > t, average="micro", zero_division=0) for t in grid]
        np.testing.assert_allclose(points[name], expected, atol=1e-12, err_msg=name)


def _write_npz(path, ids, codes, probs, targets=None):
    arrays = {"ids": np.array(ids), "codes": np.array(codes), "probs": probs}
    if targets is not None:
        arrays["targets"] = targets
    np.savez(path, **arrays)
    return path


def test_cli_npz_with_targets(tmp_path, capsys):
    codes = ["401.9", "428.0", "250.00", "V58.61"]
    rng = np.random.default_rng(3)
    val_t, test_t = rng.random((30, 4)) < 0.4, rng.random((20, 4)) < 0.4
    val_p = np.clip(val_t * 0.35 + rng.random((30, 4)) * 0.6, 0, 1)
    test_p = np.clip(test_t * 0.35 + rng.random((20, 4)) * 0.6, 0, 1)
    val = _write_npz(tmp_path / "val.npz", [f"v{i}" for i in range(30)], codes, val_p, val_t)
    test = _write_npz(tmp_path / "test.npz", [f"t{i}" for i in range(20)], codes, test_p, test_t)
    out = tmp_path / "out"
    assert main(["--val", str(val), "--test", str(test), "--out", str(out), "--bootstrap", "50"]) == 0
    tuned = json.loads((out / "threshold.json").read_text())
    expected_t, expected_f1, _, _ = tune_threshold(val_p, val_t)
    assert tuned["threshold"] == expected_t and tuned["val_micro_f1"] == pytest.approx(expected_f1)
    for split, (p, t) in {"val": (val_p, val_t), "test": (test_p, test_t)}.items():
        reference = threshold_curve(p, t)
        for key in ("precision", "recall", "f1"):
            np.testing.assert_allclose(tuned[f"{split}_curve"][key], reference[key], atol=1e-6)
        assert tuned[f"{split}_curve"]["tp"] == [int(x) for x in reference["tp"]]
    assert (out / "pr_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [json.loads(line) for line in (out / "predictions_test.jsonl").read_text().splitlines()]
    preds = [[codes[j] for j in np.flatnonzero(row > expected_t)] for row in test_p]
    golds = [[codes[j] for j in np.flatnonzero(row)] for row in test_t]
    assert [sorted(r["pred"]) for r in rows] == [sorted(p) for p in preds]
    metrics = json.loads((out / "metrics.json").read_text())
    reference = corpus_metrics(golds, preds)
    assert metrics["micro_f1"] == pytest.approx(reference["micro_f1"])
    assert metrics["macro_f1"] == pytest.approx(reference["macro_f1"])
    assert "threshold" in capsys.readouterr().out


def test_cli_parquet_with_gold_files_and_label_space(tmp_path):
    from llm4icd_plugins.codes import LabelSpace

    codes = ["401.9", "428.0", "250.00"]
    val = pd.DataFrame({"id": ["a", "b"], "401.9": [0.9, 0.1], "428.0": [0.2, 0.8], "250.00": [0.4, 0.3]})
    test = pd.DataFrame({"id": ["c", "d"], "401.9": [0.7, 0.25], "428.0": [0.1, 0.6], "250.00": [0.5, 0.05]})
    val.to_parquet(tmp_path / "val.parquet")
    test.to_parquet(tmp_path / "test.parquet")
    (tmp_path / "val_gold.jsonl").write_text('{"id": "a", "codes": ["401.9"]}\n{"id": "b", "codes": ["428.0"]}\n')
    (tmp_path / "test_gold.jsonl").write_text('{"id": "c", "codes": ["401.9", "496"]}\n'
                                              '{"id": "d", "codes": ["428.0"]}\n')
    LabelSpace("three", "icd9", codes).save(tmp_path / "space.json")
    out = tmp_path / "out"
    assert main(["--val", str(tmp_path / "val.parquet"), "--test", str(tmp_path / "test.parquet"),
                 "--val-gold", str(tmp_path / "val_gold.jsonl"), "--test-gold", str(tmp_path / "test_gold.jsonl"),
                 "--label-space", str(tmp_path / "space.json"), "--output-dir", str(out), "--bootstrap", "0",
                 "--no-plots"]) == 0
    assert not (out / "pr_curve.png").exists()
    tuned = json.loads((out / "threshold.json").read_text())
    # Validation: 0.2 <= t < 0.4 would predict 250.00 (0.4, a negative) for a; t in [0.4, 0.8) is perfect.
    assert tuned["threshold"] == GRID[40] and tuned["val_micro_f1"] == 1.0
    assert tuned["test_gold_codes_outside_columns"] == 1  # 496 has no column
    rows = {json.loads(x)["id"]: json.loads(x) for x in (out / "predictions_test.jsonl").read_text().splitlines()}
    assert rows["c"]["pred"] == ["401.9", "250.00"] and rows["d"]["pred"] == ["428.0"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_gold_dropped"] == 1 and metrics["micro_precision"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("problem", ["range", "codes", "shape", "no_gold"])
def test_bad_matrices_fail_cleanly(tmp_path, capsys, problem):
    codes = ["401.9", "428.0"]
    good = np.array([[0.2, 0.8], [0.6, 0.1]])
    targets = np.eye(2, dtype=bool)
    val = _write_npz(tmp_path / "val.npz", ["a", "b"], codes, good, targets)
    test_probs = {"range": good * 3, "shape": good[:, :1]}.get(problem, good)
    test_codes = ["401.9", "496"] if problem == "codes" else codes if problem != "shape" else codes
    test = _write_npz(tmp_path / "test.npz", ["c", "d"], test_codes, test_probs,
                      None if problem == "no_gold" else (targets if problem != "shape" else None))
    out = tmp_path / "out"
    assert main(["--val", str(val), "--test", str(test), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "test.npz" in err and "Fix:" in err and "Traceback" not in err
    assert not out.exists()


def test_load_matrix_roundtrip(tmp_path):
    path = _write_npz(tmp_path / "m.npz", [1, 2], ["I10", "E11.9"], np.array([[0.1, 0.9], [0.5, 0.5]]))
    matrix = load_matrix(path)
    assert matrix.ids == ["1", "2"] and matrix.codes == ["I10", "E11.9"] and matrix.targets is None
