"""Benchmark of ``data_tools.evaluation.infer``'s wall time on a CPU: vLLM's engine in the tool's own process (the
CPU default, ``VLLM_ENABLE_V1_MULTIPROCESSING=0``) against vLLM's default of an engine-core and a worker process.

The ladder runs about nine inferences (baseline, three test evaluations, PHI's refresh and validation), each a
fresh engine on a model that generates in seconds, so start-up and shutdown dominate. Both modes run alternately
on the same finished quickstart run (its SFT model and prepared variant), greedy, and must give identical answers.

Run: ``.venvs/rl/bin/python bench/bench_infer_engine.py --run outputs/quickstart [--repeats 3] [--samples 16]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data_tools.ladder import run as ladder

ROOT = Path(__file__).resolve().parents[1]
MODES = {"in-process": "0", "engine processes": "1"}


def infer_once(run: Path, out: Path, samples: int, multiprocessing: str) -> float:
    """The ladder's own inference command (``data_tools.ladder``'s), on the run's SFT model and validation notes."""
    s = ladder._settings(ladder.build_parser().parse_args(["--out", str(run)]))
    cmd = [*map(str, ladder._infer_cmd(s, s.models / "sft" / "merged", split="val", max_samples=samples)),
           "--out", str(out), "--overwrite"]
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": multiprocessing}
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def responses(path: Path) -> list[str]:
    return [json.loads(line)["response"] for line in path.read_text().splitlines()]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a finished quickstart run (data_tools.ladder --out)")
    p.add_argument("--repeats", type=int, default=3, help="runs per mode, alternating (default %(default)s)")
    p.add_argument("--samples", type=int, default=16, help="validation notes per run (default %(default)s)")
    args = p.parse_args()
    if not (args.run / "models" / "sft" / "merged" / "config.json").is_file():
        print(f"bench_infer_engine: error: {args.run} has no SFT model. Fix: run `bash recipes/quickstart.sh "
              f"--out {args.run}` first", file=sys.stderr)
        return 2
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        outs = {mode: Path(tmp) / f"{i}.jsonl" for i, mode in enumerate(MODES)}
        for _ in range(args.repeats):
            for mode, flag in MODES.items():
                times[mode].append(infer_once(args.run, outs[mode], args.samples, flag))
        same = responses(outs["in-process"]) == responses(outs["engine processes"])
    print(f"{args.samples} greedy validation notes of {args.run}, {args.repeats} runs per mode, "
          f"{os.cpu_count()} CPUs")
    for mode, values in times.items():
        print(f"  {mode:17s} median {statistics.median(values):5.1f} s  (runs: "
              + ", ".join(f"{v:.1f}" for v in values) + ")")
    ratio = statistics.median(times["engine processes"]) / statistics.median(times["in-process"])
    print(f"  engine processes / in-process: {ratio:.2f}×; identical answers: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
