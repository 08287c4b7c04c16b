"""Train time and memory of the linear candidate coder on a synthetic corpus the size of MIMIC-III Full.

MIMIC-III Full in Edin's clean split: about 52,700 notes (47,700 train) and 3,681 codes. The corpus is written by
``data_tools.build.synth`` and ``data_tools.build.prepare`` (no tokenizer) into --work once and reused; ``--scale 0.25``
runs a quarter-size corpus (notes and codes) and prints the full-size extrapolation (time linear in notes for
the features and in codes for the per-code fits, whose rows are capped by --max-negatives).

    python bench/bench_candidates.py --work /tmp/bench_candidates            # full size
    python bench/bench_candidates.py --work /tmp/bench_candidates_q --scale 0.25
    python bench/bench_candidates.py --work /tmp/bench_embedded --embedded   # quality on the embedded default

``--embedded`` instead trains both coders (linear, kNN; 5-fold cross-fitting) with
``data_tools.evaluation.candidates train`` on the embedded default's corpus (900 admissions, 60 codes, seed 0,
as the quickstart) and prints their micro/macro-F1 at the tuned threshold and candidate recall@K.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

MIMIC3_FULL_NOTES, MIMIC3_FULL_CODES = 52_700, 3_681


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def build_corpus(work: Path, scale: float, seed: int) -> Path:
    variant = work / "data" / "mimic3_full"
    if (variant / "stats.json").is_file():
        return variant
    # Synthetic codes below 10 occurrences are dropped by prepare; ~1.25x codes leaves about the target count.
    n_adm, n_codes = int(MIMIC3_FULL_NOTES * scale * 1.03), int(MIMIC3_FULL_CODES * scale * 1.25)
    py = sys.executable
    subprocess.run([py, "-m", "data_tools.build.synth", "--out", str(work / "raw"), "--corpus", "mimic3",
                    "--n-admissions", str(n_adm), "--n-codes", str(n_codes), "--seed", str(seed), "--overwrite",
                    "--no-progress"], check=True)
    subprocess.run([py, "-m", "data_tools.build.prepare", "mimic3", "--root", str(work / "raw" / "mimic3"), "--out",
                    str(work / "data"), "--variants", "full", "--overwrite"], check=True, stdout=subprocess.DEVNULL)
    return variant


def embedded(work: Path) -> None:
    """Both coders on the quickstart's corpus: the table of the README's candidates section."""
    py = sys.executable
    subprocess.run([py, "-m", "data_tools.build.synth", "--out", str(work / "raw"), "--corpus", "mimic3",
                    "--n-admissions", "900", "--n-codes", "60", "--seed", "0", "--overwrite", "--no-progress"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([py, "-m", "data_tools.build.prepare", "mimic3", "--root", str(work / "raw" / "mimic3"), "--out",
                    str(work / "data"), "--variants", "full", "--overwrite"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    rows = []
    for coder in ("linear", "knn"):
        out = work / coder
        subprocess.run([py, "-m", "data_tools.evaluation.candidates", "train", "--data",
                        str(work / "data" / "mimic3_full"), "--coder", coder, "--out", str(out), "--overwrite",
                        "--no-progress"], check=True)
        r = json.loads((out / "report.json").read_text(encoding="utf-8"))
        f1, recall = r["f1_at_tuned_threshold"], r["recall_at_k"]
        rows.append(f"| {coder} | {100 * f1['test_micro_f1']:.1f} | {100 * f1['test_macro_f1']:.1f} | "
                    f"{f1['threshold']:.2f} | " + " | ".join(
                        "/".join(f"{100 * recall[s][k]['micro']:.1f}" for k in recall[s]) for s in ("train", "test"))
                    + f" | {r['seconds']['fit']} + {r['seconds']['cross_fit']} |")
    print("| coder | test micro-F1 | test macro-F1 | threshold | train recall@10/20/50 | test recall@10/20/50 "
          "| seconds fit + cross-fit |\n|---|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True, help="folder for the synthetic corpus (reused when present)")
    p.add_argument("--scale", type=float, default=1.0, help="fraction of MIMIC-III Full's notes and codes (default 1)")
    p.add_argument("--folds", type=int, default=5, help="cross-fitting folds to extrapolate to (default 5)")
    p.add_argument("--jobs", type=int, default=2, help="threads (default 2)")
    p.add_argument("--max-negatives", type=int, default=1000, help="as `candidates train` (default 1000)")
    p.add_argument("--no-char-ngrams", action="store_true", help="word n-grams only (as `candidates train`)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--embedded", action="store_true", help="quality of both coders on the embedded default instead")
    args = p.parse_args()
    if args.embedded:
        embedded(args.work)
        return

    from data_tools.evaluation.candidates import load_variant
    from data_tools.evaluation.coders import LinearCoder

    start = time.perf_counter()
    variant = build_corpus(args.work, args.scale, args.seed)
    corpus_s = time.perf_counter() - start
    v = load_variant(variant)
    train = v.splits["train"]
    words = sum(len(t.split()) for t in train.texts) / len(train.texts)
    coder = LinearCoder(max_negatives=args.max_negatives, n_jobs=args.jobs, char_ngrams=not args.no_char_ngrams,
                        seed=args.seed)
    coder.featurizer = coder.make_featurizer()
    marks = [(time.perf_counter(), time.process_time())]
    x = coder.featurizer.fit_transform(train.texts)
    marks.append((time.perf_counter(), time.process_time()))
    coder.fit_features(x, train.codes, v.label_codes)
    marks.append((time.perf_counter(), time.process_time()))
    for split in ("val", "test"):
        coder.predict_proba(v.splits[split].texts)
    marks.append((time.perf_counter(), time.process_time()))
    (feat_s, fit_s, pred_s), (feat_cpu, fit_cpu, pred_cpu) = (
        [b[k] - a[k] for a, b in zip(marks, marks[1:])] for k in (0, 1))
    notes_factor = MIMIC3_FULL_NOTES * 0.905 / len(train.ids)  # Edin's clean split: 47,719 of 52,723 notes train
    codes_factor = MIMIC3_FULL_CODES / len(v.label_codes)
    result = {
        "scale": args.scale, "train_notes": len(train.ids), "codes": len(v.label_codes),
        "mean_words_per_note": round(words), "features": x.shape[1], "feature_nnz_per_note": round(x.nnz / x.shape[0]),
        "corpus_build_s": round(corpus_s, 1), "wall_s": {"featurize": round(feat_s, 1), "fit": round(fit_s, 1),
                                                         "predict_val_test": round(pred_s, 1)},
        "cpu_s": {"featurize": round(feat_cpu, 1), "fit": round(fit_cpu, 1), "predict_val_test": round(pred_cpu, 1)},
        "model_weights": int(coder.weights_.nnz), "peak_rss_gb": round(_peak_rss_gb(), 2), "jobs": args.jobs,
        "max_negatives": args.max_negatives, "char_ngrams": not args.no_char_ngrams,
        "load_average_1min": round(os.getloadavg()[0], 1),
    }
    # Full size on an otherwise idle 2-core machine: featurizing is one thread and linear in notes; the per-code
    # fits use --jobs threads and are linear in codes (rows per code are capped by --max-negatives).
    feat_full = feat_cpu * notes_factor
    fit_full = fit_cpu * codes_factor / args.jobs
    result["full_size_extrapolated_min"] = {
        "featurize": round(feat_full / 60, 1), "fit": round(fit_full / 60, 1),
        "train_with_crossfit": round((feat_full + (1 + args.folds) * fit_full + pred_cpu * notes_factor) / 60, 1)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
