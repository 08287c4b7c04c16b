"""Candidate codes from a discriminative coder: train one on a prepared variant, or import an external coder's scores.

    python -m data_tools.evaluation.candidates train --data data/prepared/mimic3_full --coder linear --out cand/linear
    python -m data_tools.evaluation.candidates predict --model cand/linear/model.joblib --data OTHER_VARIANT \\
        --out cand/other
    python -m data_tools.evaluation.candidates import --data data/prepared/mimic3_full --val v.npz --test t.npz \\
        --out cand/plm
    python -m data_tools.evaluation.candidates export-edin --data data/prepared/mimic3_full --out edin/mimic3_full

Every command writing candidates writes into --out: candidates_<split>.jsonl (one row per note: id, codes, scores;
the top --top-k codes, best first, zero scores left out), probs_<split>.npz for val and test (the matrix
``data_tools.evaluation.thresholds`` tunes: probs, ids, codes, targets), report.json and report.md (candidate
recall@K per split and per training-frequency bucket, and micro/macro-F1 at the one global threshold tuned on
validation).
Training notes' candidates are cross-fitted: each comes from a model trained on the other folds (patients kept
whole), so no note's candidates come from a model that saw its labels. Outputs hold ids, codes and numbers only;
model.joblib holds n-grams of the training notes (treat it like the data).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_tools.build.edin_export import export_edin, read_scores
from data_tools.cli import add_output_arguments, exit_with, refuse_existing, run_tool
from data_tools.evaluation.coders import CODERS, label_matrix
from data_tools.evaluation.reports import load_frequencies
from data_tools.evaluation.thresholds import ProbMatrix, predict, tune_threshold
from llm4icd_plugins.atomic import atomic_dir
from llm4icd_plugins.errors import UserError, user_error
from llm4icd_plugins.metrics import DEFAULT_BUCKET_EDGES, assign_buckets, bucket_names, corpus_metrics
from llm4icd_plugins.variant import Examples, PreparedVariant

SPLITS = ("train", "val", "test")
RECALL_AT = (10, 20, 50)


class CandidateError(UserError):
    """Bad input to data_tools.evaluation.candidates."""


Split = Examples
"""One split of the variant's examples (``llm4icd_plugins.variant.Examples``); subjects never None here."""


@dataclass
class Variant:
    path: Path
    name: str
    code_system: str
    label_codes: list[str]
    splits: dict[str, Split]


def load_variant(path: Path, splits: Sequence[str] = SPLITS) -> Variant:
    """The examples and label space of a folder written by ``data_tools.build.prepare`` (``PreparedVariant``);
    a note without a patient id is its own patient (``id:<sample id>``), so cross-fitting keeps it whole."""
    variant = PreparedVariant(path, CandidateError)
    space = variant.label_space()
    out = {}
    for split in splits:
        examples = variant.examples(split)
        subjects = [s if s else f"id:{i}" for s, i in zip(examples.subjects, examples.ids)]
        out[split] = dataclasses.replace(examples, subjects=subjects)
    return Variant(variant.root, space.name, space.system, list(space.codes), out)


# --- ranking, cross-fitting -----------------------------------------------------------------------------

def rank(probs: np.ndarray, codes: Sequence[str], top_k: int) -> list[tuple[list[str], list[float]]]:
    """Per row: the ``top_k`` highest-scoring codes (ties: lower column first), zero scores left out."""
    k = min(top_k, probs.shape[1])
    out = []
    for row in probs:
        top = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
        top = top[np.lexsort((top, -row[top]))]
        top = top[row[top] > 0]
        out.append(([codes[j] for j in top], [round(float(row[j]), 6) for j in top]))
    return out


def cross_fit(make_coder, x, split: Split, codes: Sequence[str], folds: int, top_k: int,
              progress: bool = True) -> list[tuple[list[str], list[float]]]:
    """Ranked candidates of every training note from a coder fitted on the other folds (patients kept whole).

    ``x`` are the training notes' features: the featurizer learnt text statistics (vocabulary, idf) from all
    of them, never labels, so sharing it across folds cannot carry a note's labels into its candidates.
    """
    from sklearn.model_selection import GroupKFold

    if len(set(split.subjects)) < folds:
        raise CandidateError(f"--folds {folds} is more than the {len(set(split.subjects))} patients of the training "
                             "split. Fix: pass a smaller --folds (at least 2)")
    ranked: list = [None] * len(split.ids)
    for fit_rows, held in tqdm(GroupKFold(n_splits=folds).split(np.zeros(len(split.ids)), groups=split.subjects),
                               total=folds, desc="cross-fitting", unit="fold", disable=not progress):
        coder = make_coder().fit_features(x[fit_rows], [split.codes[i] for i in fit_rows], codes)
        for i, cand in zip(held, rank(coder.predict_features(x[held]), codes, top_k)):
            ranked[i] = cand
    return ranked


# --- recall and threshold report --------------------------------------------------------------------------

def recall_at_k(golds: Sequence[Sequence[str]], ranked: Sequence[Sequence[str]], k: int) -> dict:
    """Micro recall (found gold occurrences / all) and the mean per-note recall of the top ``k`` candidates."""
    hits = [len(set(g) & set(r[:k])) for g, r in zip(golds, ranked)]
    sizes = [len(set(g)) for g in golds]
    per_note = [h / s for h, s in zip(hits, sizes) if s]
    return {"micro": sum(hits) / sum(sizes) if sum(sizes) else float("nan"),
            "mean_per_note": float(np.mean(per_note)) if per_note else float("nan")}


def recall_by_bucket(golds: Sequence[Sequence[str]], ranked: Sequence[Sequence[str]], ks: Sequence[int],
                     frequencies: dict[str, int]) -> list[dict]:
    """Recall@K pooled over the gold occurrences of the codes of each training-frequency bucket."""

    occurrences = Counter(c for g in golds for c in set(g))
    hits = {k: Counter(c for g, r in zip(golds, ranked) for c in set(g) & set(r[:k])) for k in ks}
    codes = sorted(occurrences)
    bucket_of = dict(zip(codes, assign_buckets([frequencies.get(c, 0) for c in codes], DEFAULT_BUCKET_EDGES)))
    rows = []
    for name in bucket_names(DEFAULT_BUCKET_EDGES):
        members = [c for c in codes if bucket_of[c] == name]
        total = sum(occurrences[c] for c in members)
        row = {"bucket": name, "n_codes": len(members), "occurrences": total}
        for k in ks:
            row[f"recall@{k}"] = sum(hits[k][c] for c in members) / total if total else float("nan")
        rows.append(row)
    return rows


def threshold_scores(val: tuple, test: tuple) -> dict:
    """Edin's protocol on (probs, codes, golds) of val and test: one threshold tuned on val, micro/macro-F1 on test."""

    (vp, codes, vg), (tp, _, tg) = val, test
    threshold, val_f1, _, _ = tune_threshold(vp, label_matrix(vg, codes).toarray().astype(bool))
    preds = predict(ProbMatrix([str(i) for i in range(len(tp))], list(codes), tp), threshold)
    metrics = corpus_metrics(tg, preds)
    return {"threshold": threshold, "val_micro_f1": val_f1, "test_micro_f1": float(metrics["micro_f1"]),
            "test_macro_f1": float(metrics["macro_f1"]),
            "rule": "prob > threshold on linspace(0, 1, 100), tuned for validation micro-F1 (Edin et al.); test "
                    "macro-F1 over the codes with a test gold occurrence"}


def build_report(variant: Variant, ranked: dict[str, list], probs: dict[str, np.ndarray], codes: Sequence[str],
                 top_k: int, meta: dict) -> dict:

    frequencies = load_frequencies(variant.path)
    ks = [k for k in RECALL_AT if k <= top_k] or [top_k]
    report = dict(meta, variant=str(variant.path), top_k=top_k, n_codes=len(codes), recall_at_k={},
                  recall_by_bucket={})
    for split, cands in ranked.items():
        golds, lists = variant.splits[split].codes, [c for c, _ in cands]
        report["recall_at_k"][split] = {str(k): recall_at_k(golds, lists, k) for k in ks}
        report["recall_by_bucket"][split] = recall_by_bucket(golds, lists, ks, frequencies)
    if "val" in probs and "test" in probs:
        report["f1_at_tuned_threshold"] = threshold_scores(
            (probs["val"], codes, variant.splits["val"].codes), (probs["test"], codes, variant.splits["test"].codes))
    return report


def report_markdown(report: dict) -> str:
    name = report.get("coder", "candidates")
    lines = [f"# Candidates: {name} on {report['variant']}", ""]
    f1 = report.get("f1_at_tuned_threshold")
    if f1:
        lines += [f"Threshold {f1['threshold']:.4f} (validation micro-F1 {100 * f1['val_micro_f1']:.1f}): test "
                  f"micro-F1 {100 * f1['test_micro_f1']:.1f}, macro-F1 {100 * f1['test_macro_f1']:.1f}", ""]
    ks = list(next(iter(report["recall_at_k"].values())).keys()) if report["recall_at_k"] else []
    lines += ["| split | " + " | ".join(f"recall@{k}" for k in ks) + " |", "|---|" + "---:|" * len(ks)]
    for split, by_k in report["recall_at_k"].items():
        lines.append(f"| {split} | " + " | ".join(f"{100 * by_k[k]['micro']:.1f}" for k in ks) + " |")
    lines += ["", "Recall@K (micro, %) per training-frequency bucket:", "",
              "| split | bucket | codes | occurrences | " + " | ".join(f"@{k}" for k in ks) + " |",
              "|---|---|---:|---:|" + "---:|" * len(ks)]
    for split, rows in report["recall_by_bucket"].items():
        for row in rows:
            cells = " | ".join("–" if row[f"recall@{k}"] != row[f"recall@{k}"] else f"{100 * row[f'recall@{k}']:.1f}"
                               for k in ks)
            lines.append(f"| {split} | {row['bucket']} | {row['n_codes']} | {row['occurrences']} | {cells} |")
    return "\n".join(lines) + "\n"


# --- writing --------------------------------------------------------------------------------------------

def write_outputs(out: Path, variant: Variant, ranked: dict[str, list], probs: dict[str, np.ndarray],
                  codes: Sequence[str], report: dict, model=None) -> None:
    """All files of one run into ``out``, published at once (no partial output)."""

    with atomic_dir(out) as tmp:
        for split, cands in ranked.items():
            with open(tmp / f"candidates_{split}.jsonl", "w", encoding="utf-8") as fh:
                for sample_id, (cs, scores) in zip(variant.splits[split].ids, cands):
                    fh.write(json.dumps({"id": sample_id, "codes": cs, "scores": scores}) + "\n")
        for split, matrix in probs.items():
            targets = label_matrix(variant.splits[split].codes, codes).toarray().astype(bool)
            np.savez_compressed(tmp / f"probs_{split}.npz", probs=matrix.astype(np.float32),
                                ids=np.array(variant.splits[split].ids, dtype=str), codes=np.array(codes, dtype=str),
                                targets=targets)
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (tmp / "report.md").write_text(report_markdown(report), encoding="utf-8")
        if model is not None:
            import joblib

            joblib.dump(model, tmp / "model.joblib", compress=3)


def summary(report: dict, out: Path) -> str:
    parts = []
    for split, by_k in report["recall_at_k"].items():
        parts.append(f"{split} " + ", ".join(f"@{k} {100 * v['micro']:.1f}" for k, v in by_k.items()))
    text = "candidate recall (micro, %): " + "; ".join(parts)
    f1 = report.get("f1_at_tuned_threshold")
    if f1:
        text += (f"\nthreshold {f1['threshold']:.4f} tuned on val: test micro-F1 {100 * f1['test_micro_f1']:.1f}, "
                 f"macro-F1 {100 * f1['test_macro_f1']:.1f}")
    return text + f"\nwrote {out}/ (candidates_<split>.jsonl, probs_val/test.npz, report.json, report.md)"


# --- commands -------------------------------------------------------------------------------------------

def _coder_factory(args):

    params = dict(progress=not args.no_progress)
    if args.coder == "linear":
        params.update(c=args.c, max_negatives=args.max_negatives, word_features=args.word_features,
                      char_features=args.char_features, char_ngrams=not args.no_char_ngrams, prune=args.prune,
                      seed=args.seed, n_jobs=args.jobs)
    else:
        params.update(k=args.neighbours, word_features=args.word_features)
    return lambda: CODERS[args.coder](**params)


def cmd_train(args) -> None:
    refuse_existing(args.out, args.overwrite, cls=CandidateError)
    if args.folds < 2 or args.top_k < 1:
        raise CandidateError("--folds must be at least 2 and --top-k at least 1. Fix: pass e.g. --folds 5 --top-k 50")
    variant = load_variant(args.data)
    codes, make = variant.label_codes, _coder_factory(args)
    train = variant.splits["train"]
    start = time.perf_counter()
    model = make()
    model.featurizer = model.make_featurizer()
    x_train = model.featurizer.fit_transform(train.texts)
    model.fit_features(x_train, train.codes, codes)
    model.train_ids_ = frozenset(train.ids)
    fit_seconds = time.perf_counter() - start
    probs = {s: model.predict_proba(variant.splits[s].texts) for s in ("val", "test")}
    ranked = {s: rank(p, codes, args.top_k) for s, p in probs.items()}
    start = time.perf_counter()
    ranked["train"] = cross_fit(make, x_train, train, codes, args.folds, args.top_k, progress=not args.no_progress)
    meta = {"coder": args.coder, "params": model.params, "folds": args.folds,
            "seconds": {"fit": round(fit_seconds, 1), "cross_fit": round(time.perf_counter() - start, 1)},
            "train_candidates": f"cross-fitted over {args.folds} patient-grouped folds"}
    report = build_report(variant, {s: ranked[s] for s in SPLITS}, probs, codes, args.top_k, meta)
    write_outputs(args.out, variant, {s: ranked[s] for s in SPLITS}, probs, codes, report, model)
    print(summary(report, args.out))


def cmd_predict(args) -> None:
    import joblib

    refuse_existing(args.out, args.overwrite, cls=CandidateError)
    if not args.model.is_file():
        raise user_error(args.model, "no such file", "pass the model.joblib written by `candidates train`",
                         cls=CandidateError)
    model = joblib.load(args.model)
    variant = load_variant(args.data, args.splits)
    for split in args.splits:
        if model.train_ids_ & set(variant.splits[split].ids):
            raise user_error(PreparedVariant(args.data).examples_path(split), "notes of this split trained the model",
                             "use the cross-fitted candidates_train.jsonl written by `candidates train`",
                             cls=CandidateError)
    probs = {s: model.predict_proba(variant.splits[s].texts) for s in args.splits}
    ranked = {s: rank(p, model.codes, args.top_k) for s, p in probs.items()}
    report = build_report(variant, ranked, probs, model.codes, args.top_k,
                          {"coder": model.kind, "model": str(args.model), "params": model.params})
    write_outputs(args.out, variant, ranked, probs, model.codes, report)
    print(summary(report, args.out))


def cmd_import(args) -> None:

    refuse_existing(args.out, args.overwrite, cls=CandidateError)
    files = {"train": args.train, "val": args.val, "test": args.test}
    files = {s: f for s, f in files.items() if f is not None}
    variant = load_variant(args.data, list(files))
    matrices = {s: read_scores(f, variant.splits[s].ids, args.id_map) for s, f in files.items()}
    codes = matrices["val"].codes
    for split, m in matrices.items():
        if m.codes != codes:
            raise user_error(files[split], "its code columns differ from the validation matrix's",
                             "score every split over the same codes in the same order", cls=CandidateError)
    probs = {s: m.probs for s, m in matrices.items()}
    ranked = {s: rank(p, codes, args.top_k) for s, p in probs.items()}
    outside = sorted(set(codes) - set(variant.label_codes))
    report = build_report(variant, ranked, {s: p for s, p in probs.items() if s != "train"}, codes, args.top_k,
                          {"coder": args.name, "imported_from": {s: str(f) for s, f in files.items()},
                           "columns_outside_label_space": len(outside)})
    write_outputs(args.out, variant, ranked, {s: p for s, p in probs.items() if s != "train"}, codes, report)
    print(summary(report, args.out))


def cmd_export(args) -> None:

    refuse_existing(args.out, args.overwrite, cls=CandidateError)
    info = export_edin(load_variant(args.data), args.out)
    print(f"wrote {args.out}/{info['data_filename']} ({info['rows']} notes) and {info['split_filename']}; "
          f"Edin's data config: {args.out}/{info['config']}" + (" (ids mapped: ids.csv)" if info["id_map"] else ""))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_tools.evaluation.candidates", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def common(q, what):
        q.add_argument("--data", required=True, type=Path, help="prepared variant folder (data_tools.build.prepare)")
        add_output_arguments(q, what)

    def ranking(q):
        q.add_argument("--top-k", type=int, default=50, help="candidates kept per note (default %(default)s)")
        q.add_argument("--no-progress", action="store_true", help="hide progress bars")

    t = sub.add_parser("train", help="train a coder on the train split; candidates for every split")
    common(t, "the output folder (model, candidates, probability matrices, report)")
    ranking(t)
    t.add_argument("--coder", choices=("linear", "knn"), default="linear",
                   help="linear: TF-IDF word+char n-grams, one-vs-rest logistic regression; knn: codes of the most "
                   "similar training notes weighted by similarity (default %(default)s)")
    t.add_argument("--folds", type=int, default=5, help="cross-fitting folds for the training notes' candidates "
                   "(default %(default)s; patients kept within one fold)")
    t.add_argument("--seed", type=int, default=0, help="seed of the negative sampling (default %(default)s)")
    t.add_argument("--jobs", type=int, default=2, help="threads fitting per-code models (default %(default)s)")
    t.add_argument("--c", type=float, default=8.0, help="linear: inverse L2 regularisation (default %(default)s)")
    t.add_argument("--max-negatives", type=int, default=1000, help="linear: negatives sampled per code, "
                   "intercept corrected for the rate (default %(default)s)")
    t.add_argument("--prune", type=float, default=0.2, help="linear: drop weights smaller in magnitude "
                   "(default %(default)s)")
    t.add_argument("--word-features", type=int, default=200_000, help="word (1-2)-gram vocabulary cap "
                   "(default %(default)s)")
    t.add_argument("--char-features", type=int, default=100_000, help="linear: character (3-5)-gram vocabulary "
                   "cap (default %(default)s)")
    t.add_argument("--no-char-ngrams", action="store_true", help="linear: word n-grams only")
    t.add_argument("--neighbours", type=int, default=20, help="knn: neighbours per note (default %(default)s)")

    r = sub.add_parser("predict", help="apply a trained coder to notes it did not train on")
    common(r, "the output folder (candidates, probability matrices, report)")
    ranking(r)
    r.add_argument("--model", required=True, type=Path, help="model.joblib written by `train`")
    r.add_argument("--splits", nargs="+", choices=SPLITS, default=["val", "test"],
                   help="splits to score (default val test); the model's own training notes are refused")

    i = sub.add_parser("import", help="an external coder's scores (e.g. PLM-ICD) as candidates")
    common(i, "the output folder (candidates, probability matrices, report)")
    ranking(i)
    for split in SPLITS:
        i.add_argument(f"--{split}", type=Path, required=split != "train",
                       help=f"{split} scores: .npz (probs, ids, codes), wide .parquet (id + one column per code) or "
                       "Edin et al.'s predictions_<split>.feather (_id, target, one column per code)"
                       + (" (optional: must be cross-fitted)" if split == "train" else ""))
    i.add_argument("--id-map", type=Path, help="ids.csv written by export-edin (when its _id are row numbers)")
    i.add_argument("--name", default="imported", help="coder name in the report (default %(default)s)")

    e = sub.add_parser("export-edin", help="the variant as the table Edin et al.'s repository trains on")
    common(e, "the output folder (<name>.feather, <name>_splits.feather, <name>.yaml)")
    return p


COMMANDS = {"train": cmd_train, "predict": cmd_predict, "import": cmd_import, "export-edin": cmd_export}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_tool("python -m data_tools.evaluation.candidates", lambda: COMMANDS[args.command](args))


if __name__ == "__main__":
    exit_with(main)
