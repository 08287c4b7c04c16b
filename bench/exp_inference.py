"""The issue-13 table from one run: every rung of a quickstart output folder with and without constrained decoding,
vote calibration and verification, scored on the test split.

    python bench/exp_inference.py --run outputs/quickstart [--max-test 64] [--samples 8 --temperature 1.0]

For each rung (zero-shot: the base model with the zero-shot prompt; SFT: the merged model; GRPO and PHI: the merged
model with their LoRA adapters, where ``data_tools.ladder.run`` leaves them) and each method:

- ``greedy``: ``data_tools.evaluation.infer`` on the test split, greedy (what the ladder's table scores);
- ``constrained``: the same with ``--constrain label-space`` (valid, in-label-space codes by construction);
- ``voted``: ``--samples K --temperature T``, the majority answer (codes in at least half of the K samples);
- ``voted+threshold``: the vote shares of the validation split tune one global threshold
  (``data_tools.evaluation.thresholds``, Edin's protocol), applied to the test split's shares;
- ``verified``: ``data_tools.evaluation.verify`` on the greedy predictions, with the rung's own model.

Each is scored by ``data_tools.evaluation.evaluate --data`` (bootstrap intervals, frequency buckets, near misses).
``OUT/table.md`` (and ``table.csv``) has one row per rung × method: micro/macro-F1 with 95% intervals, recall in
the rarest training-frequency bucket with gold codes, the hallucinated, malformed and off-label (outside the
variant's label space) shares of the predicted codes, the no-span share of the answers and the near-miss share
of the false positives; ``OUT/pr_curve.png`` the test precision–recall curves of the vote shares over the threshold.
SFT, GRPO and PHI share one vLLM engine per method (``--lora ... --include-base``).

Resumable: inference and verification resume where they stopped (their run records), and a cell whose
predictions are complete and already scored is skipped; delete ``OUT`` to start again. ``--max-test N`` bounds
the run to the first N test notes (and ``--max-val`` the validation notes the threshold is tuned on). Every
command's output goes to ``OUT/logs/``; step times to ``OUT/times.json``. No note text is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from data_tools.cli import exit_with, run_tool
from data_tools.ladder.run import RESPONSE_LENGTH
from llm4icd_plugins import atomic
from llm4icd_plugins.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
"""The repository: working folder of the commands this script runs."""

VARIANT = Path("data") / "mimic3_full"
METHODS = ("greedy", "constrained", "voted", "voted+threshold", "verified")
IN_PROCESS = ("data_tools.evaluation.evaluate", "data_tools.evaluation.thresholds")


class ExperimentError(UserError):
    """A run folder or setting this experiment cannot use, with the fix."""


@dataclass(frozen=True)
class Rung:
    label: str
    key: str
    model: Path
    lora: Path | None
    prompt: str


def rungs_of(run: Path) -> list[Rung]:
    """The ladder's rungs whose model is in ``run`` (``data_tools.ladder.run`` layout), in ladder order."""
    models = run / "models"
    merged = models / "sft" / "merged"
    candidates = [Rung("Zero-shot", "zero_shot", models / "base", None, "zero_shot"),
                  Rung("SFT", "sft", merged, None, "train"),
                  Rung("GRPO", "grpo", merged, models / "grpo" / "lora_adapter", "train"),
                  Rung("PHI", "phi", merged, models / "phi" / "lora_adapter", "train")]
    return [r for r in candidates if (r.model / "config.json").is_file()
            and (r.lora is None or (r.lora / "adapter_config.json").is_file())]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1",
               VLLM_CPU_KVCACHE_SPACE=env.get("VLLM_CPU_KVCACHE_SPACE", "1"), TQDM_DISABLE="1")
    return env


def count_lines(path: Path) -> int:
    """Complete JSON lines of a JSONL file (0 when absent); a torn last line does not count."""
    if not path.is_file():
        return 0
    n = 0
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.endswith(b"\n") and raw.strip():
                n += 1
    return n


class Runner:
    """Runs the steps, logging each command and timing it; ``times`` holds seconds per step."""

    def __init__(self, out: Path) -> None:
        self.out, self.times, self.step = out, {}, 0
        path = out / "times.json"
        if path.is_file():
            self.times = json.loads(path.read_text(encoding="utf-8"))

    def __call__(self, name: str, cmd: list) -> None:
        """Run ``cmd``; a ``python -m`` of evaluate or thresholds runs in this process (no start-up cost)."""
        self.step += 1
        log = self.out / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [str(c) for c in cmd]
        print(f"[{self.step}] {name} ...", end=" ", flush=True)
        start = time.perf_counter()
        with open(log, "a", encoding="utf-8") as sink:
            sink.write(f"$ {shlex.join(cmd)}\n")
            sink.flush()
            if cmd[1] == "-m" and cmd[2] in IN_PROCESS:
                import contextlib
                import importlib

                tool = importlib.import_module(cmd[2])
                with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                    code = tool.main(cmd[3:])
            else:
                code = subprocess.run(cmd, cwd=ROOT, env=_env(), stdout=sink, stderr=subprocess.STDOUT).returncode
        seconds = time.perf_counter() - start
        print(f"{seconds:.0f} s" + ("" if code == 0 else f" FAILED (exit {code}; see {log})"), flush=True)
        self.times[name] = round(self.times.get(name, 0.0) + seconds, 1)
        atomic.write_text(self.out / "times.json", json.dumps(self.times, indent=1) + "\n")
        if code != 0:
            raise ExperimentError(f"{name} failed with exit code {code}. Fix: see {log}; re-running resumes")


@dataclass
class Plan:
    """Paths and settings of one experiment."""

    run: Path
    out: Path
    rungs: list[Rung]
    methods: list[str]
    n_test: int
    n_val: int
    test_size: int
    max_test: int | None
    max_val: int | None
    samples: int
    temperature: float
    max_new_tokens: int
    max_model_len: int
    max_codes: int | None = None

    @property
    def data(self) -> Path:
        return self.run / VARIANT

    def preds(self, method: str, split: str, rung: Rung) -> Path:
        """Where ``infer`` writes a rung's predictions (SFT is the shared engine's base model)."""
        stem = "base" if rung.key == "sft" else rung.key
        return self.out / "predictions" / method / split / f"{stem}.jsonl"

    def eval_dir(self, rung: Rung, method: str) -> Path:
        return self.out / "eval" / rung.key / method.replace("+", "_")

    def infer_common(self, split: str) -> list:
        limit = self.max_test if split == "test" else self.max_val
        return [sys.executable, "-m", "data_tools.evaluation.infer", "--data", self.data, "--split", split,
                "--max-new-tokens", self.max_new_tokens, "--max-model-len", self.max_model_len, "--dtype", "float32",
                "--enforce-eager", *(["--max-samples", limit] if limit else [])]

    def expected(self, split: str) -> int:
        return self.n_test if split == "test" else self.n_val


def _decoding(method: str, plan: Plan) -> list:
    if method == "constrained":
        return ["--constrain", "label-space", *(["--max-codes", plan.max_codes] if plan.max_codes else [])]
    if method == "voted":
        return ["--samples", plan.samples, "--temperature", plan.temperature]
    return []


def infer_all(plan: Plan, runner: Runner, method: str, split: str) -> None:
    """Generate ``method``'s predictions of every rung on ``split`` (skipping complete files)."""
    todo = [r for r in plan.rungs if count_lines(plan.preds(method, split, r)) < plan.expected(split)]
    extra = _decoding(method, plan)
    alone = [r for r in todo if r.key == "zero_shot"]
    shared = [r for r in todo if r.key != "zero_shot"]
    for rung in alone:
        runner(f"infer_{method}_{split}_{rung.key}",
               [*plan.infer_common(split), "--model", rung.model, "--prompt", rung.prompt,
                "--out", plan.preds(method, split, rung), *extra])
    if shared:  # one engine: the merged SFT model as the base, GRPO and PHI as adapters
        model = shared[0].model
        adapters = [x for r in shared if r.lora is not None for x in ("--lora", f"{r.key}={r.lora}")]
        sft = any(r.key == "sft" for r in shared)
        if adapters:
            cmd = [*plan.infer_common(split), "--model", model, *adapters,
                   *(["--include-base"] if sft else []), "--out", plan.preds(method, split, shared[0]).parent]
        else:
            cmd = [*plan.infer_common(split), "--model", model, "--out", plan.preds(method, split, shared[0])]
        runner(f"infer_{method}_{split}_" + "_".join(r.key for r in shared), [*cmd, *extra])


def verify_all(plan: Plan, runner: Runner) -> None:
    for rung in plan.rungs:
        greedy = plan.preds("greedy", "test", rung)
        out = plan.out / "predictions" / "verified" / f"{rung.key}.jsonl"
        if count_lines(out) >= count_lines(greedy):
            continue
        runner(f"verify_{rung.key}", [sys.executable, "-m", "data_tools.evaluation.verify", "--predictions", greedy,
                                      "--data", plan.data, "--split", "test", "--model", rung.model,
                                      *(["--lora", rung.lora] if rung.lora is not None else []), "--out", out,
                                      "--max-model-len", plan.max_model_len, "--dtype", "float32",
                                      "--enforce-eager"])


def _fresh(result: Path, *inputs: Path) -> bool:
    """``result`` exists and is newer than every input."""
    return result.is_file() and all(result.stat().st_mtime >= p.stat().st_mtime for p in inputs)


def evaluate_cell(plan: Plan, runner: Runner, rung: Rung, method: str) -> None:
    """Score one cell (``evaluate``; ``thresholds`` for voted+threshold) unless its metrics are up to date."""
    out = plan.eval_dir(rung, method)
    partial = ["--allow-partial"] if plan.n_test < plan.test_size else []
    if method == "voted+threshold":
        val, test = (plan.preds("voted", s, rung).with_name(plan.preds("voted", s, rung).stem + ".votes.npz")
                     for s in ("val", "test"))
        if not (val.is_file() and test.is_file()) or _fresh(out / "metrics.json", val, test):
            return
        runner(f"thresholds_{rung.key}", [sys.executable, "-m", "data_tools.evaluation.thresholds", "--val", val,
                                          "--test", test, "--data", plan.data, "--out", out])
        return
    pred = (plan.out / "predictions" / "verified" / f"{rung.key}.jsonl" if method == "verified"
            else plan.preds(method, "test", rung))
    if not pred.is_file() or _fresh(out / "metrics.json", pred):
        return
    runner(f"evaluate_{rung.key}_{method}", [sys.executable, "-m", "data_tools.evaluation.evaluate", "--predictions",
                                             pred, "--data", plan.data, "--out", out, *partial])


def off_label_rate(pred: Path, data: Path) -> float | None:
    """Share of the well-formed predicted codes that lie outside the variant's label space (0 by construction
    with ``--constrain label-space`` and for thresholded vote shares)."""
    from llm4icd_plugins.records import read_predictions
    from llm4icd_plugins.variant import PreparedVariant

    variant = PreparedVariant(data, error=ExperimentError)
    records = read_predictions(pred, variant.code_system(), variant.label_space(), error=ExperimentError)
    off = total = 0
    for record in records:
        parsed = record.prediction.parsed
        off += parsed.n_off_label
        total += len(parsed.codes) + parsed.n_unknown + parsed.n_off_label
    return off / total if total else None


def sample_no_span_rate(pred: Path) -> float | None:
    """Share of the K samples per note (over a voted predictions file) without a closed <code> span."""
    if not pred.is_file():
        return None
    no_span = samples = 0
    with open(pred, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                record = json.loads(line)
                no_span += int(record.get("n_no_span", 0))
                samples += int(record.get("n_samples", 0))
    return no_span / samples if samples else None


def _rare_recall(metrics: dict) -> tuple[str, float | None]:
    """Micro recall in the rarest training-frequency bucket that has gold codes in the evaluated notes."""
    buckets = [b for b in metrics.get("buckets") or () if b.get("support")]
    if not buckets:
        return "–", None
    rare = buckets[-1]  # buckets run from the most to the least frequent
    return rare["bucket"], rare.get("micro_recall")


def cell_row(plan: Plan, rung: Rung, method: str) -> dict | None:
    """One table row from a cell's metrics.json (None when the cell has not been scored)."""
    out = plan.eval_dir(rung, method)
    path = out / "metrics.json"
    if not path.is_file():
        return None
    m = json.loads(path.read_text(encoding="utf-8"))
    pred = Path(m["predictions"])
    malformed_total = (m.get("n_pred_codes") or 0) + (m.get("n_pred_malformed") or 0)
    bucket, rare = _rare_recall(m)
    ci = m.get("ci") or {}
    row = {"rung": rung.label, "method": method, "n_docs": m["n_docs"], "micro_f1": m["micro_f1"],
           "micro_f1_ci": ci.get("micro_f1"), "macro_f1": m["macro_f1"], "macro_f1_ci": ci.get("macro_f1"),
           "micro_precision": m["micro_precision"], "micro_recall": m["micro_recall"],
           "rare_bucket": bucket, "rare_recall": rare, "hallucination_rate": m.get("hallucination_rate"),
           "malformed_rate": m["n_pred_malformed"] / malformed_total if malformed_total else 0.0,
           "off_label_rate": off_label_rate(pred, plan.data) if pred.is_file() else None,
           "no_span_rate": m.get("no_span_rate"), "near_miss_rate": m.get("near_miss_rate")}
    if method in ("voted", "voted+threshold"):  # the samples' spans (the scored answer is a code list)
        row["no_span_rate"] = sample_no_span_rate(plan.preds("voted", "test", rung))
    if method == "verified":  # verify writes every final answer in a span: the greedy row has the model's rate
        row["no_span_rate"] = None
    if method == "voted+threshold":
        tuned = json.loads((out / "threshold.json").read_text(encoding="utf-8"))
        row.update(threshold=tuned["threshold"], val_micro_f1=tuned["val_micro_f1"])
    if method == "verified":
        summary = pred.with_name(pred.name.removesuffix(".jsonl") + ".summary.json")
        if summary.is_file():
            row["verify"] = json.loads(summary.read_text(encoding="utf-8"))
    return row


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def _with_ci(value: float, ci) -> str:
    return f"{_pct(value)} [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else _pct(value)


def render_table(rows: list[dict]) -> str:
    """The Markdown table (percentages), with Δ micro-F1 against the same rung's greedy row."""
    greedy = {r["rung"]: r["micro_f1"] for r in rows if r["method"] == "greedy"}
    lines = ["| Rung | Method | Micro-F1 [95% CI] | Δ vs greedy | Macro-F1 [95% CI] | Micro P | Micro R | "
             "Rare recall (bucket) | Halluc. | Malformed | Off-label | No span | Near miss |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        base = greedy.get(r["rung"])
        delta = "–" if base is None or r["method"] == "greedy" else f"{100 * (r['micro_f1'] - base):+.1f}"
        lines.append(f"| {r['rung']} | {r['method']} | {_with_ci(r['micro_f1'], r['micro_f1_ci'])} | {delta} | "
                     f"{_with_ci(r['macro_f1'], r['macro_f1_ci'])} | {_pct(r['micro_precision'])} | "
                     f"{_pct(r['micro_recall'])} | {_pct(r['rare_recall'])} ({r['rare_bucket']}) | "
                     f"{_pct(r['hallucination_rate'])} | {_pct(r['malformed_rate'])} | {_pct(r['off_label_rate'])} | "
                     f"{_pct(r['no_span_rate'])} | {_pct(r['near_miss_rate'])} |")
    notes = [f"- {r['rung']} voted+threshold: threshold {r['threshold']:.3f} (validation micro-F1 "
             f"{_pct(r['val_micro_f1'])})" for r in rows if "threshold" in r]
    for r in rows:
        v = r.get("verify")
        if v:
            shown = {k: v[k] for k in ("notes", "verified", "unreadable", "notes_changed", "codes_added",
                                       "codes_removed", "near_miss_repairs", "near_miss_breaks") if k in v}
            notes.append(f"- {r['rung']} verified: "
                         + ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in shown.items()))
    return "\n".join(lines) + "\n" + ("\n" + "\n".join(notes) + "\n" if notes else "")


def write_outputs(plan: Plan, rows: list[dict]) -> str:
    import csv
    import io

    table = render_table(rows)
    cap = f" (at most {plan.max_codes} codes)" if plan.max_codes else " (no cap on the number of codes)"
    header = (f"Test split: the first {plan.n_test} of {plan.test_size} notes; constrained: label space{cap}; voted: "
              f"K = {plan.samples} samples at temperature {plan.temperature}, threshold tuned on the first "
              f"{plan.n_val} validation notes; percentages; 95% intervals from 1,000 bootstrap resamples.\n\n")
    atomic.write_text(plan.out / "table.md", header + table)
    buffer = io.StringIO()
    keys = [k for k in rows[0] if k != "verify"] if rows else []
    writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(plan.out / "table.csv", buffer.getvalue())
    curves, thresholds = {}, {}
    for rung in rungs_of(plan.run):
        tuned = plan.eval_dir(rung, "voted+threshold") / "threshold.json"
        if tuned.is_file():
            data = json.loads(tuned.read_text(encoding="utf-8"))
            if "test_curve" in data:
                import numpy as np

                curves[rung.label] = {k: np.asarray(v) for k, v in data["test_curve"].items()}
                thresholds[rung.label] = data["threshold"]
    if curves:
        from data_tools.evaluation.thresholds import pr_curve_png

        atomic.write_bytes(plan.out / "pr_curve.png",
                           pr_curve_png(curves, thresholds, "vote shares on the test split, per rung"))
    return header + table


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python bench/exp_inference.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, type=Path, metavar="DIR",
                   help="a quickstart output folder (recipes/quickstart.sh --out): data/mimic3_full and models/")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="folder for predictions, evaluations, table.md/.csv and pr_curve.png (default "
                        "RUN/exp_inference; a re-run resumes it)")
    p.add_argument("--max-test", type=int, default=None, metavar="N", help="only the first N test notes")
    p.add_argument("--max-val", type=int, default=None, metavar="N",
                   help="only the first N validation notes for the threshold (default: all)")
    p.add_argument("--samples", type=int, default=8, metavar="K", help="samples per note for voting (default 8)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature for voting (default 1.0)")
    p.add_argument("--max-codes", type=int, default=None, metavar="N",
                   help="constrained decoding: at most N codes per answer (default: no cap; an answer that repeats "
                        "a code then runs to --max-new-tokens without closing its span)")
    p.add_argument("--max-new-tokens", type=int, default=RESPONSE_LENGTH,
                   help="answer budget (default %(default)s, the ladder's)")
    p.add_argument("--max-model-len", type=int, default=2048, help="vLLM context length (default 2048, the ladder's)")
    p.add_argument("--rungs", nargs="+", choices=("zero_shot", "sft", "grpo", "phi"), default=None,
                   help="only these rungs (default: every rung whose model is in RUN)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                   help="only these methods (default: all; voted+threshold needs voted, verified needs greedy)")
    return p


def make_plan(args: argparse.Namespace) -> Plan:
    from llm4icd_plugins.variant import PreparedVariant

    run = args.run
    variant = PreparedVariant(run / VARIANT, error=ExperimentError)
    variant.require(variant.examples_path("test"), variant.examples_path("val"), variant.label_space_path)
    rungs = [r for r in rungs_of(run) if args.rungs is None or r.key in args.rungs]
    if not rungs:
        raise ExperimentError(f"{run / 'models'}: no rung's model found. Fix: point --run at a finished quickstart "
                              "output folder (recipes/quickstart.sh --out DIR)")
    for name, value in (("--max-test", args.max_test), ("--max-val", args.max_val), ("--samples", args.samples)):
        if value is not None and value < 1:
            raise ExperimentError(f"{name} {value}: give at least 1")
    if args.samples < 2 or args.temperature <= 0:
        raise ExperimentError("voting needs --samples of at least 2 and --temperature above 0. Fix: e.g. --samples 8 "
                              "--temperature 1.0")
    import pyarrow.parquet as pq

    sizes = {s: pq.read_metadata(variant.examples_path(s)).num_rows for s in ("test", "val")}
    methods = list(args.methods)
    if "voted+threshold" in methods and "voted" not in methods:
        methods.insert(methods.index("voted+threshold"), "voted")
    if "verified" in methods and "greedy" not in methods:
        methods.insert(0, "greedy")
    return Plan(run, args.out or run / "exp_inference", rungs, [m for m in METHODS if m in methods],
                min(sizes["test"], args.max_test or sizes["test"]), min(sizes["val"], args.max_val or sizes["val"]),
                sizes["test"], args.max_test, args.max_val, args.samples, args.temperature, args.max_new_tokens,
                args.max_model_len, args.max_codes)


def run_experiment(plan: Plan) -> str:
    plan.out.mkdir(parents=True, exist_ok=True)
    runner = Runner(plan.out)
    print(f"rungs: {', '.join(r.label for r in plan.rungs)}; methods: {', '.join(plan.methods)}; "
          f"{plan.n_test} test notes, {plan.n_val} validation notes; output {plan.out}", flush=True)
    start = time.perf_counter()
    for method in plan.methods:
        if method in ("greedy", "constrained", "voted"):
            infer_all(plan, runner, method, "test")
            if method == "voted" and "voted+threshold" in plan.methods:
                infer_all(plan, runner, method, "val")
        elif method == "verified":
            verify_all(plan, runner)
        for rung in plan.rungs:
            evaluate_cell(plan, runner, rung, method)
    # every scored cell in OUT, also those of earlier runs with other --rungs/--methods
    rows = [row for rung in rungs_of(plan.run) for method in METHODS if (row := cell_row(plan, rung, method))]
    text = write_outputs(plan, rows)
    print("\n" + text)
    plot = ", pr_curve.png" if (plan.out / "pr_curve.png").is_file() else ""
    print(f"wrote {plan.out / 'table.md'}, table.csv{plot}; this run took {time.perf_counter() - start:.0f} s "
          f"(all steps so far: {sum(runner.times.values()):.0f} s, times.json)")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_tool(parser.prog, lambda: run_experiment(make_plan(args)) and None)


if __name__ == "__main__":
    exit_with(main)
