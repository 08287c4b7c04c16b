"""Mutation check of the core's tests (scoring, parsing, metrics, PHI hints and dataset, the prediction reader,
the layout): plant known bugs one at a time in a copy of the package and report whether the tests that guard
that code catch each one.

    .venvs/rl/bin/python scripts/mutation_check.py               # every mutant (a few minutes on a CPU)
    .venvs/rl/bin/python scripts/mutation_check.py --only first_think_close --only salted_draw_hash
    .venvs/rl/bin/python scripts/mutation_check.py --list

Each mutant is one exact text replacement in one source file; the copy (``llm4icd_plugins``, ``data_tools``,
``recipes``, ``bench``, ``tests``, ``pyproject.toml``) lives in a temporary folder and is imported ahead of the
installed package.
The unmutated copy is run first: a mutant only counts as caught when the same tests pass without it.
Exit status 0 when every mutant is caught, 1 when one is missed, 2 when a mutant no longer applies.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COPIED = ("llm4icd_plugins", "data_tools", "tests", "recipes", "bench", "pyproject.toml")


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS = (
    Mutant("format_term_on_span", "the reward's format_weight term uses 'has a span' instead of 'format ok'",
           "llm4icd_plugins/scoring.py", "format_ok = 1.0 if parsed.format_ok else 0.0",
           "format_ok = 1.0 if parsed.has_span else 0.0", ("tests/core/test_reward.py",)),
    Mutant("rescue_ignores_label_space", "unknown gold codes are rescued even outside the label space",
           "llm4icd_plugins/parsing.py", "c in gold and (allowed is None or c in allowed)", "c in gold",
           ("tests/core/test_parsing.py", "tests/core/test_reward.py")),
    Mutant("phi_split_check_deleted", "PHIDataset hints validation and test rows too",
           "llm4icd_plugins/verl/dataset.py", 'if phi is not None and extra.get("split") == "train" and',
           "if phi is not None and", ("tests/verl_glue/test_verl_dataset.py",)),
    Mutant("salted_draw_hash", "the hint draw generator keys on Python's salted hash() instead of blake2b",
           "llm4icd_plugins/hints.py",
           'int.from_bytes(hashlib.blake2b(str(sample_id).encode("utf-8"), digest_size=8).digest(), "little")',
           "hash(str(sample_id)) & 0xFFFFFFFFFFFFFFFF", ("tests/core/test_hints.py",)),
    Mutant("first_think_close", "the answer starts after the FIRST </think> instead of the last",
           "llm4icd_plugins/parsing.py", "close = text.rfind(THINK_CLOSE)", "close = text.find(THINK_CLOSE)",
           ("tests/core/test_parsing.py", "tests/core/test_reward.py")),
    Mutant("stray_close_truncates", "a stray </code> inside the span is left in place (the code before it is lost)",
           "llm4icd_plugins/parsing.py", "stray = CODE_CLOSE in content", "stray = False",
           ("tests/core/test_parsing.py", "tests/core/test_reward.py")),
    Mutant("memo_shared_for_mutable_sets", "a mutable label-space set shares token verdicts by id (stale once changed)",
           "llm4icd_plugins/parsing.py", 'elif isinstance(getattr(label_space, "index", None), dict):', "elif True:",
           ("tests/core/test_parsing.py",)),
    Mutant("macro_p_r_swapped", "macro precision and macro recall are swapped",
           "llm4icd_plugins/metrics.py", '"macro_precision": float(code_p.mean())',
           '"macro_precision": float(code_r.mean())', ("tests/core/test_metrics.py",)),
    Mutant("gold_not_resolved", "undotted gold codes are not resolved against the code system",
           "llm4icd_plugins/scoring.py", "code = code_system.resolve(code) or code", "code = code",
           ("tests/core/test_reward.py",)),
    Mutant("core_imports_torch", "a module of the pure core imports torch",
           "llm4icd_plugins/metrics.py", "import numpy as np\n", "import numpy as np\nimport torch  # noqa: F401\n",
           ("tests/core/test_layout.py::test_core_module_has_no_framework_import_statement",)),
    Mutant("reader_trusts_pred_list", "the prediction reader (evaluate, phi.refresh) prefers the stored pred list "
           "to the raw response", "llm4icd_plugins/records.py",
           "return response if response is not None else list(pred or ())",
           "return list(pred) if pred is not None else response",
           ("tests/core/test_records.py", "tests/phi/test_phi_refresh.py")),
    Mutant("fbeta_weights_swapped", "F-beta weighs false positives by beta² instead of false negatives",
           "llm4icd_plugins/scoring.py", "denom = (1 + b2) * tp + b2 * fn + fp", "denom = (1 + b2) * tp + fn + b2 * fp",
           ("tests/core/test_reward.py", "tests/core/test_metrics.py")),
    Mutant("resume_from_own_round", "PHI round t resumes its own checkpoint folder instead of round t-1's",
           "data_tools/phi/rounds.py", "str(self.actor_dir(t - 1).parent)",
           'str(self.round_dir(t) / "checkpoints" / "global_step_0")', ("tests/phi/test_phi_refresh.py",)),
    Mutant("rl_seed_ignored", "the ladder's GRPO/PHI data order ignores --rl-seed",
           "data_tools/ladder/run.py", 'f"data.seed={s.rl_seed}"', 'f"data.seed={s.seed}"',
           ("tests/ladder/test_ladder_driver.py",)),
)


def make_copy(root: Path) -> None:
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, root / name)


def run_tests(root: Path, tests: tuple[str, ...], stop_first: bool) -> tuple[int, float, list[str]]:
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider", "-p", "no:warnings",
           *(["-x"] if stop_first else []), *tests]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    failed = [line.split(" - ")[0] for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return proc.returncode, time.monotonic() - start, failed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this mutant (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:28} {m.path:34} {m.what}")
        return 0
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    unknown = set(args.only or ()) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"unknown mutant(s) {', '.join(sorted(unknown))}; see --list")
    with tempfile.TemporaryDirectory(prefix="llm4icd-mutants-") as tmp:
        root = Path(tmp)
        make_copy(root)
        probe = subprocess.run([sys.executable, "-c", "import llm4icd_plugins; print(llm4icd_plugins.__file__)"],
                               cwd=root, env=dict(os.environ, PYTHONPATH=str(root)), capture_output=True, text=True)
        if not probe.stdout.strip().startswith(str(root)):
            print(f"the copy is not imported first (got {probe.stdout.strip()!r}); aborting", file=sys.stderr)
            return 2
        tests = tuple(sorted({t for m in chosen for t in m.tests}))
        rc, seconds, failed = run_tests(root, tests, stop_first=False)
        print(f"baseline (no mutant): {'pass' if rc == 0 else f'FAIL (rc {rc})'} in {seconds:.0f} s: {' '.join(tests)}")
        if rc != 0:
            print("\n".join(failed), file=sys.stderr)
            print("the tests fail without a mutant; fix them first", file=sys.stderr)
            return 2
        missed = stale = 0
        for m in chosen:
            path = root / m.path
            original = path.read_text(encoding="utf-8")
            if original.count(m.old) != 1:
                n = original.count(m.old)
                print(f"{m.name:28} NOT APPLICABLE: the text to mutate occurs {n} times in {m.path}")
                stale += 1
                continue
            path.write_text(original.replace(m.old, m.new), encoding="utf-8")
            try:
                rc, seconds, failed = run_tests(root, m.tests, stop_first=True)
            finally:
                path.write_text(original, encoding="utf-8")
            verdict = "caught" if rc == 1 else ("MISSED" if rc == 0 else f"error (rc {rc})")
            missed += rc == 0
            print(f"{m.name:28} {verdict:8} {seconds:5.0f} s  {m.what}")
            if failed:
                print(f"{'':28} first failing: {failed[0].removeprefix('FAILED ')}")
        print(f"{len(chosen) - missed - stale} of {len(chosen)} mutants caught")
        return 2 if stale else (1 if missed else 0)


if __name__ == "__main__":
    sys.exit(main())
