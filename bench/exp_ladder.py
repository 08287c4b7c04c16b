"""Ladder experiments: variants of one finished quickstart run, each redone from one stage, side by side.

    python bench/exp_ladder.py seeds        --base outputs/quickstart --out outputs/exp_seeds
    python bench/exp_ladder.py phi-controls --base outputs/quickstart --out outputs/exp_phi_controls
    python bench/exp_ladder.py phi-resume   --base outputs/quickstart --out outputs/exp_phi_resume
    python bench/exp_ladder.py rerun        --base outputs/quickstart --out outputs/exp_rerun
    python bench/exp_ladder.py candidates   --base outputs/quickstart --out outputs/exp_candidates
    python bench/exp_ladder.py grpo-lr      --base outputs/quickstart --out outputs/exp_grpo_lr
    python bench/exp_ladder.py grpo-temperature --base outputs/quickstart --out outputs/exp_grpo_temperature

- ``seeds``: GRPO and PHI with RL seeds 1 to 4 from the base run's SFT model (the base run is seed 0): test
  micro/macro-F1 and recall per training-frequency bucket of every rung, per seed and as mean ± sd.
- ``phi-controls``: one PHI round from the SFT model on the same round file, with the paper's hint block, without
  its mini example, with neutral text of equal length instead of the hints, and with no hinted draw
  (``phi_inject_prob=0``): hint-free validation micro/macro-F1 and recall per bucket after the round.
- ``phi-resume``: PHI rounds t ≥ 2 from the previous round's whole verl checkpoint (optimizer state and step
  counter included, as the paper's release) against the default, the adapter alone (the base run).
- ``rerun``: GRPO again with the base run's seed: how reproducible the RL stage is for a fixed seed.
- ``candidates``: the whole ladder from ``prepare`` with the linear coder's top-10 candidates in every prompt
  (training notes cross-fitted), against the base run without them; plus the linear and kNN coders' own scores
  (micro/macro-F1 at the threshold tuned on validation, candidate recall@K) on the same plain variant.
- ``grpo-lr``: GRPO alone (no PHI) at learning rates 3e-3, 1e-3 (the default) and 3e-4 from the base run's SFT
  model, same RL seed: how the step size moves the tiny model away from or beyond its SFT scores.
- ``grpo-temperature``: GRPO alone with rollouts sampled at temperature 1.0 (the paper's) and 0.7, RL seeds 0–2:
  whether sampling nearer the greedy decoding that evaluation uses keeps the tiny model's answers closed.

Each variant is a copy of the base run (``OUT/<variant>/``) redone with ``data_tools.ladder --from-stage`` and
the base run's own settings (read from its stage markers) plus the variant's flags; its console goes to
``OUT/<variant>.console``. A finished variant is kept on a re-run. ``OUT/summary.md`` and ``summary.json``
compare the variants. No note text is printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from data_tools.cli import run_tool
from data_tools.ladder.report import bucket_recall
from data_tools.ladder.run import VARIANT
from llm4icd_plugins import atomic
from llm4icd_plugins.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
RUNGS = ("zero_shot", "sft", "grpo", "phi")
LABELS = {"zero_shot": "Zero-shot", "sft": "SFT", "grpo": "GRPO", "phi": "PHI"}
BASE = None
"""A variant whose flags are BASE is the base run itself, not a copy."""


class ExperimentError(UserError):
    """A base run or output folder this experiment cannot use, with the fix."""


@dataclass(frozen=True)
class Experiment:
    from_stage: str
    variants: dict[str, list[str] | None]
    report: str
    """'table' (test scores of every rung), 'rounds' (PHI's per-round validation) or both ('table+rounds')."""


EXPERIMENTS = {
    "seeds": Experiment("grpo", {"rl_seed_0": BASE, **{f"rl_seed_{i}": ["--rl-seed", str(i)] for i in range(1, 5)}},
                        "table"),
    "phi-controls": Experiment("phi", {
        "paper_block": ["--phi-rounds", "1"],
        "no_example": ["--phi-rounds", "1", "--phi-override", "+data.phi_hint_style=no_example"],
        "neutral": ["--phi-rounds", "1", "--phi-override", "+data.phi_hint_style=neutral"],
        "inject0": ["--phi-rounds", "1", "--phi-override", "+data.phi_inject_prob=0"],
    }, "rounds"),
    "phi-resume": Experiment("phi", {"adapter": BASE, "checkpoint": ["--phi-resume", "checkpoint"]}, "table+rounds"),
    "rerun": Experiment("grpo", {"first": BASE, "rerun": ["--phi-rounds", "0"]}, "table"),
    "candidates": Experiment("prepare", {"none": BASE, "linear_top10": ["--candidates", "10"]}, "table"),
    "grpo-lr": Experiment("grpo", {f"lr_{lr}": ["--grpo-lr", lr, "--phi-rounds", "0"]
                                   for lr in ("3e-3", "1e-3", "3e-4")}, "table"),
    "grpo-temperature": Experiment("grpo", {f"t{t}_seed_{seed}": ["--rollout-temperature", t, "--rl-seed", seed,
                                                                   "--phi-rounds", "0"]
                                            for t in ("1.0", "0.7") for seed in ("0", "1", "2")}, "table"),
}


def base_flags(base: Path) -> list[str]:
    """The ladder flags the base run used, from its stage markers (so a variant changes only its own flags)."""
    settings: dict = {}
    for marker in sorted((base / ".done").glob("*.json")):
        settings.update(json.loads(marker.read_text()).get("settings", {}))
    if not settings:
        raise ExperimentError(f"{base} has no finished ladder stages (.done/*.json). Fix: run "
                              f"`bash recipes/quickstart.sh --out {base}` first")
    flags = []
    for key, value in settings.items():
        option = f"--{key.replace('_', '-')}"
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                flags += [option, str(item)]
    return flags


def run_variant(base: Path, out: Path, name: str, experiment: Experiment, python: str) -> Path:
    """Copy the base run and redo it from the experiment's stage with the variant's flags; skip when finished."""
    flags = experiment.variants[name]
    if flags is BASE:
        return base
    folder = out / name
    done = folder / ".done" / "report.json"
    record = out / f"{name}.flags.json"
    if done.exists() and record.exists() and json.loads(record.read_text()) == flags:
        print(f"{name}: done already, kept", flush=True)
        return folder
    if not folder.exists():  # copied whole or not at all: an interrupted copy is never taken for the run
        atomic.remove_stale_temporaries(folder)
        with atomic.atomic_dir(folder) as copy:
            shutil.copytree(base, copy, symlinks=True, dirs_exist_ok=True)
            (copy / ".done" / "report.json").unlink(missing_ok=True)
    atomic.write_text(record, json.dumps(flags))
    cmd = [python, "-m", "data_tools.ladder", "--out", str(folder), "--from-stage", experiment.from_stage,
           *base_flags(base), *flags]
    print(f"{name}: {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    with open(out / f"{name}.console", "w") as console:
        code = subprocess.run(cmd, cwd=ROOT, stdout=console, stderr=subprocess.STDOUT, check=False).returncode
    if code != 0:
        raise ExperimentError(f"variant {name} failed (exit {code}); see {out / f'{name}.console'} and "
                              f"{folder / 'logs'}. Re-run the same command to resume it")
    print(f"{name}: finished in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    return folder


def other_coders(run: Path, python: str) -> None:
    """Beside the coder a --candidates run used, the other coders on the same plain variant (cross-fitted too),
    so the summary compares them all; seconds each on the embedded corpus."""
    plain = run / "candidates" / "plain" / VARIANT
    if not plain.is_dir():
        return
    for coder in ("linear", "knn"):
        folder = run / "candidates" / coder
        if not (folder / "report.json").exists():
            cmd = [python, "-m", "data_tools.evaluation.candidates", "train", "--data", str(plain), "--coder", coder,
                   "--top-k", "50", "--out", str(folder), "--overwrite", "--no-progress"]
            if subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, check=False).returncode != 0:
                raise ExperimentError(f"training the {coder} coder on {plain} failed; run `{' '.join(cmd[1:])}`")


def rung_scores(run: Path) -> dict[str, dict]:
    """Test micro/macro-F1 (with bootstrap intervals) and recall per bucket of every rung the run evaluated."""
    scores = {}
    for rung in RUNGS:
        path = run / "eval" / rung / "metrics.json"
        if path.exists() and (run / "predictions" / f"{rung}.jsonl").exists():
            m = json.loads(path.read_text())
            scores[rung] = {"micro_f1": m["micro_f1"], "macro_f1": m["macro_f1"], "ci": m.get("ci") or {},
                            "recall": {b: r for b, r in bucket_recall(m).items() if r is not None}}
    return scores


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def table_markdown(runs: dict[str, dict]) -> str:
    buckets = list(dict.fromkeys(b for scores in runs.values() for s in scores.values() for b in s["recall"]))
    head = ["Variant", "Method", "Micro F1 [95% CI]", "Macro F1 [95% CI]", *[f"Recall {b}" for b in buckets]]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for name, scores in runs.items():
        for rung, s in scores.items():
            cells = [name, LABELS[rung]]
            for key in ("micro_f1", "macro_f1"):
                ci = s["ci"].get(key)
                cells.append(_pct(s[key]) + (f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else ""))
            cells += [_pct(s["recall"].get(b)) for b in buckets]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def spread_markdown(runs: dict[str, dict]) -> tuple[str, dict]:
    """Mean ± sample sd over the variants (seeds) per rung, and the per-seed differences GRPO−SFT and PHI−GRPO."""
    metrics = ["micro_f1", "macro_f1"]
    buckets = list(dict.fromkeys(b for scores in runs.values() for s in scores.values() for b in s["recall"]))
    stats: dict = {}
    for rung in RUNGS:
        rows = [scores[rung] for scores in runs.values() if rung in scores]
        if not rows:
            continue
        values = {k: [r[k] for r in rows] for k in metrics}
        values.update({f"recall {b}": [r["recall"][b] for r in rows if r["recall"].get(b) is not None]
                       for b in buckets})
        stats[rung] = {k: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v))
                       for k, v in values.items() if v}
    cols = [*metrics, *[f"recall {b}" for b in buckets]]
    lines = ["| Method | n | " + " | ".join(c.replace("_", " ") for c in cols) + " |",
             "|---|---:|" + "---:|" * len(cols)]
    for rung, st in stats.items():
        n = max(v[2] for v in st.values())
        lines.append(f"| {LABELS[rung]} | {n} | " + " | ".join(
            f"{100 * st[c][0]:.1f} ± {100 * st[c][1]:.1f}" if c in st else "–" for c in cols) + " |")
    diffs = []
    for a, b in (("grpo", "sft"), ("phi", "grpo"), ("phi", "sft")):
        for key in metrics:
            d = [scores[a][key] - scores[b][key] for scores in runs.values() if a in scores and b in scores]
            if d:
                diffs.append(f"{LABELS[a]} − {LABELS[b]} {key.replace('_', ' ')}: "
                             + ", ".join(f"{100 * x:+.1f}" for x in d) + f" (mean {100 * statistics.fmean(d):+.1f})")
    return "\n".join(lines) + "\n\nPer seed: " + "; ".join(diffs) + ".\n", stats


def rounds_markdown(runs: dict[str, Path]) -> tuple[str, dict]:
    """Hint-free validation per PHI round of every variant (round 0: the SFT model)."""
    reports = {name: json.loads((run / "phi" / "rounds_report.json").read_text()) for name, run in runs.items()
               if (run / "phi" / "rounds_report.json").exists()}
    buckets = list(dict.fromkeys(b for rep in reports.values() for r in rep for b in r["val_bucket_recall"]))
    head = ["Variant", "Round", "Hinted draws", "Reward", "Val micro-F1", "Val macro-F1",
            *[f"Val recall {b}" for b in buckets]]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, rep in reports.items():
        for r in rep:
            hinted = f"{r['hinted_draws']}/{r['train_draws']}" if r["round"] else "–"
            reward = (f"{r['reward_first']:.3f} → {r['reward_last']:.3f}"
                      if r["round"] and r.get("reward_first") is not None else "–")
            lines.append("| " + " | ".join([name, str(r["round"]), hinted, reward, _pct(r["val_micro_f1"]),
                                              _pct(r["val_macro_f1"]),
                                              *[_pct(r["val_bucket_recall"].get(b)) for b in buckets]]) + " |")
    return "\n".join(lines) + "\n", reports


def coder_markdown(runs: dict[str, Path]) -> tuple[str, dict]:
    """The discriminative coders behind --candidates: F1 at their tuned threshold, candidate recall@K."""
    reports = {f"{name}/{path.parent.name}": json.loads(path.read_text())
               for name, run in runs.items() for path in sorted(run.glob("candidates/*/report.json"))}
    if not reports:
        return "", {}
    ks = list(dict.fromkeys(k for rep in reports.values() for by_k in rep["recall_at_k"].values() for k in by_k))
    lines = ["| Coder | Split | Micro F1 (tuned threshold) | Macro F1 | "
             + " | ".join(f"Recall@{k}" for k in ks) + " |", "|---|---|---:|---:|" + "---:|" * len(ks)]
    for name, rep in reports.items():
        tuned = rep.get("f1_at_tuned_threshold", {})
        for split, by_k in rep["recall_at_k"].items():
            f1 = [_pct(tuned.get("test_micro_f1")), _pct(tuned.get("test_macro_f1"))] if split == "test" else ["–", "–"]
            lines.append(f"| {name} | {split} | " + " | ".join(f1) + " | "
                         + " | ".join(_pct((by_k.get(k) or {}).get("micro")) for k in ks) + " |")
    return "\n".join(lines) + "\n", reports


def summarize(experiment_name: str, experiment: Experiment, runs: dict[str, Path], out: Path) -> str:
    parts, data = [f"# Ladder experiment: {experiment_name}", ""], {"experiment": experiment_name,
                                                                    "variants": {k: str(v) for k, v in runs.items()}}
    if "table" in experiment.report:
        scores = {name: rung_scores(run) for name, run in runs.items()}
        parts += ["## Test scores per variant", "", table_markdown(scores)]
        data["test"] = scores
        if experiment_name == "seeds":
            text, stats = spread_markdown(scores)
            parts += ["## Mean ± sd over seeds", "", text]
            data["spread"] = stats
    if "rounds" in experiment.report:
        text, reports = rounds_markdown(runs)
        parts += ["## PHI rounds: hint-free validation", "", text]
        data["rounds"] = reports
    text, coders = coder_markdown(runs)
    if text:
        parts += ["## Discriminative coders (candidate source)", "", text]
        data["coders"] = coders
    summary = "\n".join(parts)
    atomic.write_text(out / "summary.md", summary)
    atomic.write_text(out / "summary.json", json.dumps(data, indent=1, default=str))
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python bench/exp_ladder.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=sorted(EXPERIMENTS), help="which experiment (see above)")
    p.add_argument("--base", type=Path, required=True, help="a finished quickstart run (data_tools.ladder --out)")
    p.add_argument("--out", type=Path, required=True, help="output folder: one sub-folder per variant, summary.md")
    p.add_argument("--only", action="append", default=None, metavar="VARIANT",
                   help="run only this variant (repeatable; the summary still covers every finished one)")
    p.add_argument("--python", default=sys.executable,
                   help="python of the rl environment that runs the ladder (default: this one)")
    return p


def run(args: argparse.Namespace) -> None:
    experiment = EXPERIMENTS[args.experiment]
    base = args.base.resolve()
    if not (base / ".done" / "report.json").exists():
        raise ExperimentError(f"{base} is not a finished ladder run (no .done/report.json). Fix: run "
                              f"`bash recipes/quickstart.sh --out {base}` to the end first")
    unknown = set(args.only or ()) - set(experiment.variants)
    if unknown:
        raise ExperimentError(f"unknown variant(s) {sorted(unknown)}; {args.experiment} has "
                              f"{sorted(experiment.variants)}")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for name in experiment.variants:
        if args.only and name not in args.only:
            folder = base if experiment.variants[name] is BASE else out / name
            if (folder / ".done" / "report.json").exists():
                runs[name] = folder
            continue
        runs[name] = run_variant(base, out, name, experiment, args.python)
    for run in runs.values():
        other_coders(run, args.python)
    print(summarize(args.experiment, experiment, runs, out))
    print(f"summary: {out / 'summary.md'}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_tool("exp_ladder", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
