"""Benchmark of ``data_tools.evaluation.evaluate`` at MIMIC-IV-Full size, before and after its vectorised bootstrap.

A synthetic predictions file of Edin's MIMIC-IV ICD-10 Full test split size (19,802 notes, about 7,900 codes,
about 15 gold codes per note; real ICD-10-CM and PCS codes from the project's tables, Zipf-distributed) holds
model responses that keep a share of the gold codes, swap some for a sibling (near misses), add random and
hallucinated codes. The whole command runs in a subprocess, with 1,000 bootstrap resamples and without, for
the current tree and for "before": the same tree with ``data_tools/evaluation/evaluate.py`` and ``reports.py`` of
``--before-ref`` (its bootstrap is ``metrics.bootstrap_ci``, multinomial weights). Point estimates must agree
to the last digit (exit 1 otherwise); the bootstrap intervals are printed side by side (another random
stream: they agree within Monte-Carlo error). Wall time depends on the machine's load: CPU time is shown too.

Run: ``PYTHONPATH=. python bench/bench_evaluate.py [--quick] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llm4icd_plugins.codes import load_code_system  # noqa: E402

BEFORE_REF = "bdddcf0"  # the last commit before the vectorised bootstrap and the hierarchy view
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


def before_tree(ref: str, folder: Path) -> Path | None:
    """Copies of data_tools/ and llm4icd_plugins/ with evaluate.py and reports.py of ``ref``; None without git."""
    files = {}
    for name in ("data_tools/evaluation/evaluate.py", "data_tools/evaluation/reports.py"):
        shown = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:{name}"], capture_output=True, text=True)
        if shown.returncode != 0:
            return None
        files[name] = shown.stdout
    for package in ("data_tools", "llm4icd_plugins"):
        shutil.copytree(ROOT / package, folder / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def run_evaluate(root: Path, predictions: Path, out: Path, n_bootstrap: int) -> tuple[float, float, dict]:
    """Wall and CPU seconds of one ``python -m data_tools.evaluation.evaluate`` run from ``root``, and its metrics."""
    env = {**os.environ, "PYTHONPATH": str(root), "TQDM_DISABLE": "1"}
    command = [sys.executable, "-m", "data_tools.evaluation.evaluate", "--predictions", str(predictions), "--output-dir",
               str(out), "--code-system", "icd10", "--bootstrap", str(n_bootstrap)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"evaluate failed in {root}:\n{done.stderr[-2000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu, json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 notes, 1 repeat")
    parser.add_argument("--n-notes", type=int, default=19802)
    parser.add_argument("--n-codes", type=int, default=7900)
    parser.add_argument("--codes-per-note", type=float, default=15.0)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2, help="runs per cell; the fastest counts (default 2)")
    parser.add_argument("--before-ref", default=BEFORE_REF,
                        help=f"git ref of the 'before' evaluate (default {BEFORE_REF})")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_notes, args.repeat = 2000, 1
    with tempfile.TemporaryDirectory(prefix="bench_evaluate_") as tmp:
        tmp = Path(tmp)
        predictions = tmp / "predictions.jsonl"
        shape = build_predictions(predictions, args.n_notes, args.n_codes, args.codes_per_note, seed=0)
        print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
              f"python {platform.python_version()}")
        print("predictions: " + ", ".join(f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v:,}"
                                          for k, v in shape.items()))
        trees = {"after": ROOT}
        before = before_tree(args.before_ref, tmp / "before")
        if before is None:
            print(f"(no 'before': git show {args.before_ref} failed; timing the current tree only)")
        else:
            trees = {"before": before, **trees}
        run_evaluate(ROOT, predictions, tmp / "warm", 0)  # builds or warms the code-table cache
        times, metrics = {}, {}
        for name, root in trees.items():
            for n_bootstrap in (args.bootstrap, 0):
                runs = [run_evaluate(root, predictions, tmp / f"{name}{n_bootstrap}", n_bootstrap)
                        for _ in range(args.repeat)]
                times[name, n_bootstrap] = (min(r[0] for r in runs), min(r[1] for r in runs))
                metrics[name, n_bootstrap] = runs[0][2]
        load = os.getloadavg()[0]
        print(f"\nevaluate --code-system icd10 (best of {args.repeat}; load average {load:.1f})")
        print(f"{'':28s}" + "".join(f"{name:>12s}" for name in trees) + ("     ratio" if len(trees) == 2 else ""))
        for n_bootstrap in (args.bootstrap, 0):
            for i, unit in enumerate(("wall s", "CPU s")):
                cells = [times[name, n_bootstrap][i] for name in trees]
                ratio = f"{cells[0] / cells[1]:9.1f}x" if len(cells) == 2 else ""
                print(f"{unit + f', bootstrap {n_bootstrap}':28s}" + "".join(f"{c:12.2f}" for c in cells) + ratio)
        after = metrics["after", args.bootstrap]
        print(f"\nafter: category micro-F1 {after['category_micro_f1']:.4f} (codes {after['micro_f1']:.4f}); near "
              f"misses {after['n_near_miss']:,} of {after['n_fp']:,} false positives "
              f"({100 * after['near_miss_rate']:.1f}%)")
        if "before" not in trees:
            return 0
        old = metrics["before", args.bootstrap]
        differ = [k for k, v in old.items() if k not in ("ci", "summary") and after.get(k) != v]
        print(f"point estimates and counts: {len(old) - 1 - len(differ)} keys identical, {len(differ)} differ"
              + (f": {', '.join(differ)}" if differ else ""))
        print(f"\n95% intervals ({args.bootstrap} resamples)   before               after")
        for key in ("micro_precision", "micro_recall", "micro_f1", "macro_precision", "macro_recall", "macro_f1"):
            (a, b), (c, d) = old["ci"][key], after["ci"][key]
            print(f"{key:28s}[{a:.5f}, {b:.5f}]   [{c:.5f}, {d:.5f}]")
        return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
