"""Evaluation reports: frequency buckets (hand-computed), bootstrap intervals (replicates equal corpus_metrics on the
resampled documents), hallucination and no-span rates, PNG plots and the paper-style comparison table, run on a
prepared synthetic split with responses in the model output format."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest

from data_tools import prepare
from data_tools.evaluate import main
from data_tools.synth import generate_mimic3
from llm4icd_plugins.codes import load_code_system
from llm4icd_plugins.metrics import assign_buckets, bootstrap_ci, bucket_metrics, bucket_names, corpus_metrics

HALLUCINATED = "799.99"  # well-formed ICD-9 diagnosis code that the tables do not know


def test_bucket_names_and_assignment():
    assert bucket_names() == ["≥500", "100–499", "10–99", "<10"]
    assert assign_buckets([0, 9, 10, 99, 100, 499, 500, 10_000]) == ["<10", "<10", "10–99", "10–99", "100–499",
                                                                     "100–499", "≥500", "≥500"]
    assert bucket_names([5, 0]) == ["≥5", "0–4"]
    with pytest.raises(ValueError, match="descending"):
        bucket_names([10, 100])


def test_bucket_metrics_by_hand():
    per_code = pd.DataFrame({"code": ["a", "b", "c", "d"], "support": [4, 2, 2, 1], "tp": [3, 1, 0, 1],
                             "fp": [1, 0, 2, 1], "fn": [1, 1, 2, 0]})
    per_code["precision"] = [0.75, 1.0, 0.0, 0.5]
    per_code["recall"] = [0.75, 0.5, 0.0, 1.0]
    per_code["f1"] = [0.75, 2 / 3, 0.0, 2 / 3]
    table = bucket_metrics(per_code, {"a": 800, "b": 150, "c": 120, "d": 3}).set_index("bucket")
    assert table.loc["≥500", "micro_f1"] == pytest.approx(3 / 4)
    # 100–499: b and c pooled: tp 1, fp 2, fn 3 → 1 / (1 + 2.5); macro = mean(2/3, 0)
    assert table.loc["100–499", "micro_f1"] == pytest.approx(1 / 3.5)
    assert table.loc["100–499", "macro_f1"] == pytest.approx(1 / 3)
    assert table.loc["10–99", "n_codes"] == 0 and np.isnan(table.loc["10–99", "micro_f1"])
    assert table.loc["<10", "support"] == 1 and table.loc["<10", "micro_precision"] == 0.5


def _random_docs(seed: int, n: int = 40):
    rng = random.Random(seed)
    codes = [f"{400 + i}.{j}" for i in range(6) for j in range(2)]
    golds = [rng.sample(codes, rng.randint(1, 4)) for _ in range(n)]
    preds = [[c for c in g if rng.random() < 0.7] + rng.sample(codes, rng.randint(0, 2)) for g in golds]
    return golds, preds


@pytest.mark.parametrize("fixed_space", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bootstrap_replicate_equals_corpus_metrics_on_resampled_documents(seed, fixed_space):
    golds, preds = _random_docs(seed)
    space = sorted({c for g in golds for c in g})[:-2] if fixed_space else None
    ci = bootstrap_ci(golds, preds, space, n_resamples=1, seed=seed)
    # Rebuild the one replicate from the same random stream and score it with corpus_metrics.
    counts = np.random.default_rng(seed).multinomial(len(golds), np.full(len(golds), 1 / len(golds)), size=1)[0]
    index = np.repeat(np.arange(len(golds)), counts)
    expected = corpus_metrics([golds[i] for i in index], [preds[i] for i in index], space)
    for key in ("micro_precision", "micro_recall", "micro_f1", "macro_precision", "macro_recall", "macro_f1"):
        assert ci[key][0] == pytest.approx(expected[key]) and ci[key][1] == pytest.approx(expected[key]), key


def test_bootstrap_interval_brackets_the_estimate():
    golds, preds = _random_docs(7, n=200)
    point = corpus_metrics(golds, preds)
    ci = bootstrap_ci(golds, preds, n_resamples=400, seed=3)
    for key in ("micro_f1", "macro_f1"):
        low, high = ci[key]
        assert low < point[key] < high and high - low < 0.25
    assert bootstrap_ci(golds, preds, n_resamples=400, seed=3) == ci  # seeded: reproducible
    same = bootstrap_ci([["401.9"]] * 10, [["401.9"]] * 10, n_resamples=50)
    assert same["micro_f1"] == (1.0, 1.0)


@pytest.fixture(scope="module")
def variant(tmp_path_factory):
    base = tmp_path_factory.mktemp("reports")
    raw = generate_mimic3(base / "raw", n_admissions=150, seed=11)
    assert prepare.main(["mimic3", "--root", str(raw["root"]), "--out", str(base / "prep"), "--variants", "full",
                         "--min-code-count", "2"]) == 0
    return base / "prep" / "mimic3_full"


def _write_predictions(variant, path, seed: int, keep: float):
    """Model-format responses for the test split: a share of the gold codes, some hallucinated, some without span."""
    rng = random.Random(seed)
    test = pd.read_parquet(variant / "examples" / "test.parquet")
    stats = {"docs": 0, "no_span": 0, "hallucinated": 0, "codes": 0}
    with open(path, "w", encoding="utf-8") as fh:
        for sample_id, codes in zip(test["id"], test["codes"]):
            chosen = [c for c in codes if rng.random() < keep]
            if rng.random() < 0.3:
                chosen.append(HALLUCINATED)
                stats["hallucinated"] += 1
            if rng.random() < 0.15:
                response = "the codes are " + ", ".join(chosen)  # no span: nothing is scored
                stats["no_span"] += 1
            else:
                response = "<code>" + ", ".join(chosen) + "</code>"
                stats["codes"] += len(set(chosen))
            stats["docs"] += 1
            fh.write(json.dumps({"id": sample_id, "gold": list(codes), "response": response}) + "\n")
    return stats


def test_report_with_buckets_rates_intervals_and_plots(variant, tmp_path):
    pred = tmp_path / "model_a.jsonl"
    stats = _write_predictions(variant, pred, seed=1, keep=0.7)
    out = tmp_path / "eval_a"
    assert main(["--predictions", str(pred), "--data", str(variant), "--output-dir", str(out),
                 "--bootstrap", "200"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert HALLUCINATED not in load_code_system("icd9")
    rows = [json.loads(x) for x in pred.read_text().splitlines()]
    # Only codes inside a span are predictions: a hallucinated code in a span-less response does not count.
    fake_in_span = sum(1 for r in rows if r["response"].startswith("<code>") and HALLUCINATED in r["response"])
    assert stats["hallucinated"] >= fake_in_span > 0
    assert metrics["no_span_rate"] == pytest.approx(stats["no_span"] / stats["docs"])
    assert metrics["hallucination_rate"] == pytest.approx(fake_in_span / stats["codes"])
    assert metrics["hallucinating_doc_rate"] == pytest.approx(fake_in_span / stats["docs"])
    low, high = metrics["ci"]["micro_f1"]
    assert low <= metrics["micro_f1"] <= high
    per_code = pd.read_csv(out / "per_code.csv", dtype={"code": str})
    train = pd.read_parquet(variant / "examples" / "train.parquet")
    counts = pd.Series([c for cs in train["codes"] for c in cs]).value_counts()
    assert (per_code["train_frequency"] == per_code["code"].map(counts).fillna(0).astype(int)).all()
    buckets = pd.read_csv(out / "buckets.csv").set_index("bucket")
    assert buckets["n_codes"].sum() == metrics["n_labels"] == len(per_code)
    for name, part in per_code.groupby("bucket"):
        tp, fp, fn = part["tp"].sum(), part["fp"].sum(), part["fn"].sum()
        assert buckets.loc[name, "micro_f1"] == pytest.approx(tp / (tp + 0.5 * (fp + fn)), abs=1e-6)
        assert buckets.loc[name, "macro_f1"] == pytest.approx(part["f1"].mean(), abs=1e-6)
    import matplotlib.image as mpimg

    for name in ("f1_vs_frequency.png", "buckets.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        image = mpimg.imread(out / name)
        assert image.shape[0] > 200 and image.shape[1] > 300 and image.std() > 0.01  # a drawn figure, not blank
    summary = (out / "summary.md").read_text()
    assert "bootstrap 95% intervals" in summary and "| training frequency |" in summary
    assert all(f"| {name} |" in summary for name in buckets.index)


def test_compare_table_in_paper_layout(variant, tmp_path, capsys):
    entries = []
    for name, keep, seed in (("Weak", 0.3, 2), ("Strong", 0.9, 3)):
        pred = tmp_path / f"{name}.jsonl"
        _write_predictions(variant, pred, seed=seed, keep=keep)
        out = tmp_path / f"eval_{name}"
        assert main(["--predictions", str(pred), "--data", str(variant), "--output-dir", str(out),
                     "--bootstrap", "100", "--no-plots"]) == 0
        entries.append(f"{name}:Tiny:Full={out}")
    raw_pred = tmp_path / "Raw.jsonl"
    _write_predictions(variant, raw_pred, seed=4, keep=0.6)
    entries.append(f"Raw:Tiny:Full={raw_pred}")  # a predictions file, scored on the fly with --data
    table_dir = tmp_path / "tables"
    assert main(["--output-dir", str(table_dir), "--data", str(variant), "--bootstrap", "0",
                 "--compare", *entries]) == 0
    csv = pd.read_csv(table_dir / "comparison.csv")
    assert [c for c in csv.columns if "_ci_" not in c] == ["method", "backbone", "Full/micro/recall", "Full/micro/precision",
                                        "Full/micro/f1", "Full/macro/recall", "Full/macro/precision", "Full/macro/f1"]
    assert csv["method"].tolist() == ["Weak", "Strong", "Raw"]
    strong = json.loads((tmp_path / "eval_Strong" / "metrics.json").read_text())
    row = csv.set_index("method").loc["Strong"]
    assert row["Full/micro/f1"] == pytest.approx(100 * strong["micro_f1"], abs=0.01)
    assert row["Full/micro/f1_ci_low"] == pytest.approx(100 * strong["ci"]["micro_f1"][0], abs=0.01)
    markdown = (table_dir / "comparison.md").read_text()
    header, _, *lines = markdown.splitlines()
    assert header.startswith("| Method | Backbone | Full Micro R | Full Micro P | Full Micro F1 | Full Macro R")
    strong_line = next(x for x in lines if x.startswith("| Strong"))
    assert f"**{100 * strong['micro_f1']:.1f}**" in strong_line  # best micro-F1 in bold
    assert "<u>" in markdown  # the second best is underlined
    assert main(["--output-dir", str(table_dir), "--compare", "no-path-here"]) == 2
    assert "METHOD[:BACKBONE[:SETTING]]=PATH" in capsys.readouterr().err
