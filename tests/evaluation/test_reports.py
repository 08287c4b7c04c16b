"""Evaluation reports: frequency buckets (hand-computed), bootstrap intervals (replicates equal corpus_metrics on the
resampled documents; coverage of a known value), categories and near misses (hand-computed on the real ICD tables),
hallucination and no-span rates, PNG plots and the paper-style comparison table, run on a prepared synthetic split
with responses in the model output format."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest

from data_tools.build import prepare
from data_tools.evaluation.evaluate import main
from data_tools.build.synth import generate_mimic3
from llm4icd_plugins.bootstrap import bootstrap_ci
from llm4icd_plugins.codes import load_code_system
from llm4icd_plugins.hierarchy_metrics import category, hierarchy_metrics
from llm4icd_plugins.metrics import assign_buckets, bucket_metrics, bucket_names, corpus_metrics

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
    # Rebuild the one replicate from the same random stream (n uniform draws of a document) and score it.
    index = np.random.default_rng(seed).integers(0, len(golds), size=(1, len(golds)))[0]
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
    assert bootstrap_ci(golds, preds, n_resamples=400, seed=3, chunk=7) == ci  # chunking changes nothing here


def test_bootstrap_interval_covers_the_population_value():
    """Documents drawn from a model whose micro-F1 is known in closed form: 3 gold codes each predicted with
    probability 0.7 (E tp = 2.1, E fn = 0.9) and one false positive with probability 0.5 (E fp = 0.5), so the
    population micro-F1 is 2·2.1 / (2·2.1 + 0.5 + 0.9) = 0.75. The 95% intervals must cover it about 95% of
    the time and be as wide as the spread of the estimate across samples says."""
    codes = [f"{400 + i}.{j}" for i in range(10) for j in range(3)]
    rng = random.Random(5)
    covered, widths, estimates = 0, [], []
    for trial in range(100):
        golds, preds = [], []
        for _ in range(300):
            gold = rng.sample(codes, 3)
            pred = [c for c in gold if rng.random() < 0.7]
            if rng.random() < 0.5:
                pred.append(rng.choice([c for c in codes if c not in gold]))
            golds.append(gold)
            preds.append(pred)
        low, high = bootstrap_ci(golds, preds, codes, n_resamples=300, seed=trial)["micro_f1"]
        covered += low <= 0.75 <= high
        widths.append(high - low)
        estimates.append(corpus_metrics(golds, preds, codes)["micro_f1"])
    assert covered >= 88
    assert np.mean(widths) == pytest.approx(2 * 1.96 * np.std(estimates), rel=0.3)


# --- categories and near misses, computed by hand on real ICD-9 codes ------------------------------------

NEAR_MISS_DOCS = [
    (["401.9"], ["401.1"]),              # 1: 401.1 a near miss of 401.9
    (["428.0"], ["428.0", "428.1"]),     # 2: 428.1 shares the category of a gold code that WAS predicted: not one
    (["250.00", "250.01"], ["250.02"]),  # 3: one false positive, two missed candidates: one near miss, two near-missed
    (["V58.61"], ["V58.62", "V58.66"]),  # 4: two near misses of one missed code
    (["038.9"], ["041.4"]),              # 5: other category
    (["E849.7"], ["E848"]),              # 6: E-code categories have 4 characters: E848 is not E849 (nor "E84")
    (["96.71"], ["96.72"]),              # 7: ICD-9 procedure category: 96
    (["403.90"], []),                    # 8: missed, nothing predicted
    (["584.9"], ["403.91"]),             # 9: 403's missed gold code is in document 8, not here: not a near miss
]


def test_category_follows_the_tables():
    icd9, icd10 = load_code_system("icd9"), load_code_system("icd10")
    expected = {"401.9": "401", "250.01": "250", "V58.61": "V58", "E849.7": "E849", "E848": "E848", "96.71": "96",
                "403.90": "403"}
    assert {code: category(code, icd9) for code in expected} == expected
    assert category("S72.001A", icd10) == "S72" and category("I10", icd10) == "I10"
    assert category("0DTJ4ZZ", icd10) == "0DT"  # PCS: section, body system, root operation
    assert category("0DTJ4ZZ") == "0DT" and category("E11.9") == "E11" and category("V58.61") == "V58"


def test_near_misses_and_category_scores_by_hand():
    icd9 = load_code_system("icd9")
    golds, preds = [g for g, _ in NEAR_MISS_DOCS], [p for _, p in NEAR_MISS_DOCS]
    assert all(code in icd9 for doc in golds + preds for code in doc)  # real codes: the parents are the tables'
    result = hierarchy_metrics(golds, preds, None, icd9)
    # False positives: 401.1, 428.1, 250.02, V58.62, V58.66, 041.4, E848, 96.72, 403.91 = 9; near misses:
    # 401.1, 250.02, V58.62, V58.66, 96.72 = 5. Missed: 401.9, 250.00, 250.01, V58.61, 038.9, E849.7, 96.71,
    # 403.90, 584.9 = 9; near-missed: 401.9, 250.00, 250.01, V58.61, 96.71 = 5.
    assert (result["n_fp"], result["n_near_miss"], result["n_fn"], result["n_fn_near_miss"]) == (9, 5, 9, 5)
    assert result["near_miss_rate"] == pytest.approx(5 / 9) and result["fn_near_miss_rate"] == pytest.approx(5 / 9)
    per_code = result["per_code"].set_index("code")
    assert per_code.loc["250.02", "near_miss_fp"] == 1 and per_code.loc["428.1", "near_miss_fp"] == 0
    assert per_code.loc["250.00", "near_miss_fn"] == per_code.loc["250.01", "near_miss_fn"] == 1
    assert per_code.loc["403.91", "near_miss_fp"] == 0 and per_code.loc["403.90", "near_miss_fn"] == 0
    # Categories: gold 401 428 250 V58 038 E849 96 403 584 (the label space, 9); predicted 041 and E848 fall
    # outside it. tp: docs 1-4 and 7 = 5; fp: 403 in document 9 = 1; fn: 038, E849, 403 (doc 8), 584 = 4.
    assert result["n_categories"] == 9
    assert result["category_micro_precision"] == pytest.approx(5 / 6)
    assert result["category_micro_recall"] == pytest.approx(5 / 9)
    assert result["category_micro_f1"] == pytest.approx(10 / 15)
    # per category F1: 1 for the five hit, 0 for the other four
    for key in ("category_macro_precision", "category_macro_recall", "category_macro_f1"):
        assert result[key] == pytest.approx(5 / 9), key


def test_category_scores_with_a_fixed_label_space():
    icd9 = load_code_system("icd9")
    # Label space {401.9, 038.9}: categories 401 and 038. 401.1 is off-label as a code, but its category counts.
    result = hierarchy_metrics([["401.9"], ["038.9"]], [["401.1"], ["428.0"]], ["401.9", "038.9"], icd9)
    assert result["n_categories"] == 2
    # 401: tp 1 → F1 1; 038: fn 1 → 0; 428 outside. micro: tp 1, fp 0, fn 1 → P 1, R 1/2, F1 2/3
    assert (result["category_micro_precision"], result["category_micro_recall"]) == pytest.approx((1.0, 0.5))
    assert result["category_micro_f1"] == pytest.approx(2 / 3) and result["category_macro_f1"] == pytest.approx(0.5)
    assert result["n_near_miss"] == 1 and result["n_fp"] == 2


@pytest.fixture(scope="module")
def variant(tmp_path_factory):
    base = tmp_path_factory.mktemp("reports")
    raw = generate_mimic3(base / "raw", n_admissions=150, seed=11)
    assert prepare.main(["mimic3", "--root", str(raw["root"]), "--out", str(base / "prep"), "--variants", "full",
                         "--min-code-count", "2"]) == 0
    return base / "prep" / "mimic3_full"


def _write_predictions(variant, path, seed: int, keep: float):
    """Model-format responses for the test split: a share of the gold codes, a sibling (another leaf of the same
    parent) for some missed ones, some hallucinated, some without span. ``stats["scored"]``: (gold, scored
    prediction) per document."""
    rng = random.Random(seed)
    icd9 = load_code_system("icd9")
    test = pd.read_parquet(variant / "examples" / "test.parquet")
    stats = {"docs": 0, "no_span": 0, "hallucinated": 0, "codes": 0, "scored": []}
    with open(path, "w", encoding="utf-8") as fh:
        for sample_id, codes in zip(test["id"], test["codes"]):
            chosen = [c for c in codes if rng.random() < keep]
            chosen += [rng.choice(icd9.siblings(c)) for c in codes
                       if c not in chosen and icd9.siblings(c) and rng.random() < 0.5]
            scored = list(chosen)
            if rng.random() < 0.3:
                chosen.append(HALLUCINATED)
                stats["hallucinated"] += 1
            if rng.random() < 0.15:
                response = "the codes are " + ", ".join(chosen)  # no span: nothing is scored
                stats["no_span"] += 1
                scored = []
            else:
                response = "<code>" + ", ".join(chosen) + "</code>"
                stats["codes"] += len(set(chosen))
            stats["docs"] += 1
            stats["scored"].append((list(codes), scored))
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
    # Near misses against a plain loop over the documents (categories by the ICD-9 string rule: before the dot)
    fp = near = fn = fn_near = 0
    for gold, pred in stats["scored"]:
        wrong, missed = set(pred) - set(gold), set(gold) - set(pred)
        missed_categories = {c.split(".")[0] for c in missed}
        fp, fn = fp + len(wrong), fn + len(missed)
        near += sum(c.split(".")[0] in missed_categories for c in wrong)
        fn_near += sum(c.split(".")[0] in {w.split(".")[0] for w in wrong} for c in missed)
    assert near > 0 and (metrics["n_fp"], metrics["n_near_miss"], metrics["n_fn"], metrics["n_fn_near_miss"]) == \
        (fp, near, fn, fn_near)
    assert f"near misses (right category, wrong leaf; over every predicted and gold code): {near} of {fp}" in summary
    assert metrics["category_micro_f1"] > metrics["micro_f1"]  # every near miss is a category hit
    for name, part in per_code.groupby("bucket"):
        rate = part["near_miss_fn"].sum() / part["fn"].sum()
        assert buckets.loc[name, "fn_near_miss_rate"] == pytest.approx(rate, abs=1e-6)
    assert (per_code["category"] == per_code["code"].str.split(".").str[0]).all()


def test_legends_sit_outside_the_data():
    """The F1-vs-frequency legend once covered the codes at F1 = 0 of the frequent buckets: no legend over the axes."""
    import matplotlib.pyplot as plt

    from data_tools.evaluation.reports import buckets_figure, f1_vs_frequency_figure

    per_code = pd.DataFrame({"code": [f"c{i}" for i in range(6)], "f1": [0.0, 0.0, 1.0, 0.5, 0.0, 1.0],
                             "train_frequency": [5000, 800, 40, 3, 0, 20000], "near_miss_fn": [1, 0, 0, 2, 0, 0]})
    per_code["bucket"] = assign_buckets(per_code["train_frequency"].to_numpy())
    buckets = pd.DataFrame({"bucket": bucket_names(), "n_codes": [2, 0, 1, 3], "micro_f1": [0.1, np.nan, 1.0, 0.4],
                            "macro_f1": [0.0, np.nan, 1.0, 0.5], "fn_near_miss_rate": [0.5, np.nan, 0.0, 1.0]})
    for fig in (f1_vs_frequency_figure(per_code, (500, 100, 10), "t"), buckets_figure(buckets, "t")):
        fig.canvas.draw()
        ax = fig.axes[0]
        legend, axes_box = ax.get_legend().get_window_extent(), ax.get_window_extent()
        assert legend.y1 < axes_box.y0, "the legend overlaps the plotting area"
        assert len(ax.get_legend().get_texts()) >= 3  # codes, near misses / the near-miss bars, and the rest
        plt.close(fig)


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
    assert [c for c in csv.columns if "_ci_" not in c] == [
        "method", "backbone", "Full/micro/recall", "Full/micro/precision", "Full/micro/f1", "Full/macro/recall",
        "Full/macro/precision", "Full/macro/f1", "Full/category/micro_f1", "Full/near_miss/rate"]
    assert csv["method"].tolist() == ["Weak", "Strong", "Raw"]
    strong = json.loads((tmp_path / "eval_Strong" / "metrics.json").read_text())
    row = csv.set_index("method").loc["Strong"]
    assert row["Full/micro/f1"] == pytest.approx(100 * strong["micro_f1"], abs=0.01)
    assert row["Full/micro/f1_ci_low"] == pytest.approx(100 * strong["ci"]["micro_f1"][0], abs=0.01)
    assert row["Full/category/micro_f1"] == pytest.approx(100 * strong["category_micro_f1"], abs=0.01)
    assert row["Full/near_miss/rate"] == pytest.approx(100 * strong["near_miss_rate"], abs=0.01)
    markdown = (table_dir / "comparison.md").read_text()
    header, _, *lines = markdown.splitlines()
    assert header.startswith("| Method | Backbone | Full Micro R | Full Micro P | Full Micro F1 | Full Macro R")
    assert header.endswith("| Full Macro F1 | Full Cat. Micro F1 | Full Near-miss % of FP |")
    strong_line = next(x for x in lines if x.startswith("| Strong"))
    assert f"**{100 * strong['micro_f1']:.1f}**" in strong_line  # best micro-F1 in bold
    near_cells = [line.split("|")[-2] for line in lines[:3]]
    assert not any("**" in c or "<u>" in c for c in near_cells)  # a share of errors: not ranked
    # A metrics.json written before the hierarchy view: its columns stay empty ("–"), the table still builds
    old = {k: v for k, v in strong.items() if not k.startswith(("category_", "near_miss", "n_near", "n_fn", "n_fp"))}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert main(["--output-dir", str(tmp_path / "t2"), "--compare", f"Old:Tiny:Full={tmp_path / 'old.json'}",
                 f"Strong:Tiny:Full={tmp_path / 'eval_Strong'}"]) == 0
    old_line = next(x for x in (tmp_path / "t2" / "comparison.md").read_text().splitlines() if x.startswith("| Old"))
    assert old_line.endswith("| – | – |")
    assert "<u>" in markdown  # the second best is underlined
    assert main(["--output-dir", str(table_dir), "--compare", "no-path-here"]) == 2
    assert "METHOD[:BACKBONE[:SETTING]]=PATH" in capsys.readouterr().err
