"""Benchmark of ``data_tools.evaluation.evaluate`` at MIMIC-IV-Full size: before and after, side by side, in one run.

A synthetic predictions file of Edin's MIMIC-IV ICD-10 Full test split size (19,802 notes, about 7,900 codes,
about 15 gold codes per note; real ICD-10-CM and PCS codes from the project's tables, Zipf-distributed) holds
model responses that keep a share of the gold codes, swap some for a sibling (near misses), add random and
hallucinated codes. The whole command runs in a subprocess, with 1,000 bootstrap resamples and without, and once
more with training frequencies (buckets and both plots), for every tree: "before" is ``data_tools`` and
``llm4icd_plugins`` as committed at each ``--before-ref`` (a whole, importable tree; default ca4fe54), "after" the
working tree. (Before 928ddb4 vectorised the bootstrap, the same command took 20.7 s, 6.8 s without resamples;
the trees of that time do not import on their own, their commits having landed in parts.) Point estimates must
agree to the last digit (exit 1 otherwise); the bootstrap intervals are printed side by side. Wall time depends on
the machine's load (the load average is printed): CPU time is shown too.

Run: ``PYTHONPATH=. python bench/bench_evaluate.py [--quick] [--repeat 3] [--before-ref REF ...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from llm4icd_plugins.codes import load_code_system

ROOT = Path(__file__).resolve().parents[1]

BEFORE_REF = "ca4fe54"  # the tree this work started from (evaluate.py of 928ddb4: vectorised bootstrap)
HALLUCINATED = "Z99.999"  # well-formed ICD-10-CM, not in the tables


def build_predictions(path: Path, n_notes: int, n_codes: int, per_note: float, seed: int) -> dict[str, float]:
    """Write the synthetic predictions file; returns its shape."""
    system = load_code_system("icd10")
    assert HALLUCINATED not in system
    rng = np.random.default_rng(seed)
    dx = [c for c in system.codes("icd10_dx") if system.is_billable(c)]
    pcs = [c for c in system.codes("icd10_proc") if system.is_billable(c)]
    n_pcs = n_codes // 5
    pool = np.asarray(list(rng.choice(dx, n_codes - n_pcs, replace=False))
                      + list(rng.choice(pcs, n_pcs, replace=False)), dtype=object)
    rng.shuffle(pool)
    weights = 1.0 / np.arange(1, n_codes + 1) ** 0.9
    sizes = np.maximum(rng.poisson(per_note * 1.1, n_notes), 1)  # draws with replacement: repeats are dropped
    draws = iter(pool[rng.choice(n_codes, int(sizes.sum()), p=weights / weights.sum())])
    extras = iter(pool[rng.choice(n_codes, 4 * n_notes, p=weights / weights.sum())])
    siblings: dict[str, tuple[str, ...]] = {}
    n_gold = 0
    with open(path, "w", encoding="utf-8") as fh:
        for note, size in enumerate(sizes):
            gold = list(dict.fromkeys(next(draws) for _ in range(size)))
            kept = rng.random(len(gold)) < 0.6
            pred = [c for c, k in zip(gold, kept) if k]
            for code in (c for c, k in zip(gold, kept) if not k):
                options = siblings.setdefault(code, system.siblings(code))
                if options and rng.random() < 0.3:
                    pred.append(options[int(rng.integers(len(options)))])
            pred += [next(extras) for _ in range(int(rng.integers(0, 4)))]
            if rng.random() < 0.1:
                pred.append(HALLUCINATED)
            response = "<think>reasoning</think><code>" + ", ".join(pred) + "</code>"
            fh.write(json.dumps({"id": f"note-{note}", "gold": gold, "response": response, "pred": pred}) + "\n")
            n_gold += len(gold)
    return {"notes": n_notes, "codes in the pool": n_codes, "gold codes per note": n_gold / n_notes}


def before_tree(ref: str, folder: Path) -> tuple[Path, str] | None:
    """``data_tools/`` and ``llm4icd_plugins/`` as committed at ``ref`` and the module path of its evaluate
    (``data_tools.evaluate`` before the layout of ca4fe54); None without git or the ref."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", ref, "data_tools"],
                            capture_output=True, text=True)
    if listed.returncode != 0:
        return None
    module = ("data_tools.evaluation.evaluate" if "data_tools/evaluation/evaluate.py" in listed.stdout.split()
              else "data_tools.evaluate")
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "data_tools", "llm4icd_plugins"],
                             capture_output=True)
    if archive.returncode != 0:
        return None
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder, module


def run_evaluate(root: Path, module: str, predictions: Path, out: Path, n_bootstrap: int,
                 frequencies: Path | None = None) -> tuple[float, float, dict]:
    """Wall and CPU seconds of one ``python -m <module>`` run from ``root``, and its metrics."""
    env = {**os.environ, "PYTHONPATH": str(root), "TQDM_DISABLE": "1", "MPLBACKEND": "Agg"}
    command = [sys.executable, "-m", module, "--predictions", str(predictions), "--output-dir", str(out),
               "--code-system", "icd10", "--bootstrap", str(n_bootstrap)]
    if frequencies is not None:
        command += ["--train-frequencies", str(frequencies)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"evaluate failed in {root}:\n{done.stderr[-2000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu, json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def write_frequencies(predictions: Path, out: Path) -> Path:
    """Training frequencies for the bucket view: each code's gold count in the file (a stand-in)."""
    counts: dict[str, int] = {}
    with open(predictions, encoding="utf-8") as fh:
        for line in fh:
            for code in json.loads(line)["gold"]:
                counts[code] = counts.get(code, 0) + 1
    out.write_text(json.dumps(counts), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 notes, 1 repeat")
    parser.add_argument("--n-notes", type=int, default=19802, help="notes in the file (default: MIMIC-IV Full test)")
    parser.add_argument("--n-codes", type=int, default=7900, help="distinct codes drawn from (default 7,900)")
    parser.add_argument("--codes-per-note", type=float, default=15.0, help="mean gold codes per note (default 15)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1,000)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per cell; the fastest counts (default 2)")
    parser.add_argument("--before-ref", action="append", default=None, metavar="REF",
                        help=f"git ref of a 'before' tree; repeat for several (default {BEFORE_REF})")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_notes, args.repeat = 2000, 1
    with tempfile.TemporaryDirectory(prefix="bench_evaluate_") as tmp:
        tmp = Path(tmp)
        predictions = tmp / "predictions.jsonl"
        shape = build_predictions(predictions, args.n_notes, args.n_codes, args.codes_per_note, seed=0)
        frequencies = write_frequencies(predictions, tmp / "frequencies.json")
        print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
              f"python {platform.python_version()}")
        print("predictions: " + ", ".join(f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v:,}"
                                          for k, v in shape.items()))
        trees: dict[str, tuple[Path, str]] = {}
        for ref in args.before_ref or [BEFORE_REF]:
            before = before_tree(ref, tmp / f"before-{ref}")
            if before is None:
                print(f"(no tree for {ref}: git failed; it is left out)")
            else:
                trees[f"before {ref[:7]}"] = before
        trees["after"] = (ROOT, "data_tools.evaluation.evaluate")
        cells = [(f"bootstrap {args.bootstrap}", args.bootstrap, None), ("bootstrap 0", 0, None),
                 (f"bootstrap {args.bootstrap} + plots", args.bootstrap, frequencies)]
        times, metrics = {}, {}
        for name, (root, module) in trees.items():
            run_evaluate(root, module, predictions, tmp / "warm", 0)  # builds or warms the code-table cache
            for label, n_bootstrap, freq in cells:
                runs = [run_evaluate(root, module, predictions, tmp / f"{name}-{label}", n_bootstrap, freq)
                        for _ in range(args.repeat)]
                times[name, label] = (min(r[0] for r in runs), min(r[1] for r in runs))
                metrics[name, label] = runs[0][2]
        load = os.getloadavg()[0]
        names = list(trees)
        print(f"\nevaluate --code-system icd10 (best of {args.repeat}; load average {load:.1f} on "
              f"{os.cpu_count()} CPUs)")
        print(f"{'':36s}" + "".join(f"{name:>14s}" for name in names) + "   before/after")
        for label, _, _ in cells:
            for i, unit in enumerate(("wall s", "CPU s")):
                row = [times[name, label][i] for name in names]
                ratio = "   " + " ".join(f"{c / row[-1]:5.1f}x" for c in row[:-1])
                print(f"{unit + ', ' + label:36s}" + "".join(f"{c:14.2f}" for c in row) + ratio)
        main_cell = cells[0][0]
        after = metrics["after", main_cell]
        print(f"\nafter: category micro-F1 {after['category_micro_f1']:.4f} (codes {after['micro_f1']:.4f}); near "
              f"misses {after['n_near_miss']:,} of {after['n_fp']:,} false positives "
              f"({100 * after['near_miss_rate']:.1f}%)")
        status = 0
        for name in names[:-1]:
            old = metrics[name, main_cell]
            differ = [k for k, v in old.items() if k not in ("ci", "summary", "predictions") and after.get(k) != v]
            print(f"{name}: point estimates and counts: {len(old) - 1 - len(differ)} keys identical, {len(differ)} "
                  "differ" + (f": {', '.join(differ)}" if differ else ""))
            print(f"95% intervals ({args.bootstrap} resamples)   {name:21s}after")
            for key in ("micro_precision", "micro_recall", "micro_f1", "macro_precision", "macro_recall", "macro_f1"):
                (a, b), (c, d) = old["ci"][key], after["ci"][key]
                print(f"{key:28s}[{a:.5f}, {b:.5f}]   [{c:.5f}, {d:.5f}]")
            status |= bool(differ)
        return status


if __name__ == "__main__":
    sys.exit(main())
