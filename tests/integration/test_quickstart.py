"""The whole ladder, shortened, through the real frameworks on the CPU: CI's smoke run of the embedded default.

synth → prepare → tiny model → zero-shot baseline (vLLM) → SFT + merge (llamafactory-cli) → GRPO (verl
main_ppo + vLLM, the project's reward) → PHI refresh + hinted GRPO (the hint dataset) → hint-free
evaluation of every rung → the Table-1-style table. About 10-15 minutes on 2 cores.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from data_tools.ladder import run as ladder
from data_tools.ladder.verl_logs import read_step_metrics
from llm4icd_plugins.verl.reward import REWARD_KEYS

REPO = Path(__file__).resolve().parents[2]
VENVS = Path(os.environ.get("LLM4ICD_VENVS", REPO / ".venvs"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (VENVS / "sft" / "bin" / "python").exists() or not (VENVS / "rl" / "bin" / "python").exists(),
                       reason="needs both environments: bash env/setup.sh"),
]

ARGS = ["--n-admissions", "300", "--n-codes", "40", "--pretrain-steps", "40", "--sft-steps", "30",
        "--grpo-steps", "2", "--phi-steps", "2", "--rollouts", "2", "--grpo-batch", "4", "--max-test", "24",
        "--max-train-infer", "48"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart")
    proc = subprocess.run([sys.executable, "-m", "data_tools.ladder.run", "--out", str(out), "--venvs", str(VENVS), *ARGS],
                          cwd=REPO, capture_output=True, text=True, timeout=2400, check=False)
    assert proc.returncode == 0, f"ladder failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    return out, proc.stdout + proc.stderr


def test_every_stage_finished_with_its_artefacts(run):
    out, _ = run
    assert sorted(p.stem for p in (out / ".done").glob("*.json")) == sorted(s.name for s in ladder.STAGES)
    data = out / "data" / ladder.VARIANT
    for path in [out / "raw" / "mimic3" / "NOTEEVENTS.csv.gz", out / "models" / "base" / "config.json",
                 data / "verl" / "train.parquet", data / "sharegpt" / "train.jsonl", data / "label_space.json",
                 out / "models" / "sft" / "merged" / "config.json",
                 out / "models" / "grpo" / "lora_adapter" / "adapter_config.json",
                 out / "models" / "phi" / "lora_adapter" / "adapter_config.json",
                 out / "phi" / "round_1" / "train.parquet", out / "table.md", out / "table.csv"]:
        assert path.exists(), f"missing {path}"
    for rung in ("zero_shot", "sft", "grpo", "phi"):
        lines = (out / "predictions" / f"{rung}.jsonl").read_text().splitlines()
        assert len(lines) == 24 and {"id", "response", "pred", "gold"} <= set(json.loads(lines[0]))
        assert (out / "eval" / rung / "metrics.json").exists()


def test_grpo_called_the_project_reward(run):
    out, _ = run
    for name in ("grpo", "phi"):
        steps = read_step_metrics(out / "logs" / f"{name}.log")
        assert max(steps) == 2, f"{name}: verl ran {sorted(steps)} steps"
        keys = set().union(*steps.values())
        for key in REWARD_KEYS:
            assert f"val-aux/llm4icd/{ladder.VARIANT}/{key}/mean@1" in keys, f"{name}: reward key {key} not logged"
        assert all("critic/score/mean" in steps[s] for s in (1, 2))
        curve = json.loads((out / name / "reward_curve.json").read_text())
        assert len(curve["train_reward_mean"]) == 2


def test_phi_hinted_only_training_prompts_from_their_pools(run):
    out, _ = run
    summary = json.loads((out / "phi" / "hint_audit_summary.json").read_text())
    assert summary["train_draws"] >= 2 * 4 and summary["other_draws"] > 0
    assert summary["other_draws_hinted"] == 0 and summary["hints_outside_pool"] == 0
    pools = pd.read_parquet(out / "phi" / "round_1" / "train.parquet", columns=["phi"])["phi"]
    if any(len(p["pool"]) for p in pools):
        assert summary["train_draws_hinted"] > 0


def test_table_has_one_row_per_rung_with_fractions(run):
    out, _ = run
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [r["method"] for r in rows] == ["Zero-shot", "SFT", "GRPO", "PHI"]
    for row in rows:
        values = [float(row[key]) for key, _ in ladder.COLUMNS]
        assert all(0.0 <= v <= 1.0 for v in values)
    assert (out / "table.md").read_text().count("| tiny-qwen2 |") == 4


def test_no_note_text_in_logs_or_reports(run):
    out, console = run
    notes = pd.read_parquet(out / "data" / ladder.VARIANT / "examples" / "test.parquet", columns=["text"])["text"]
    probes = {line.strip() for text in notes for line in text.splitlines() if len(line.strip()) > 40}
    assert probes, "no probe sentences found"
    places = {"console": console}
    for path in [*(out / "logs").glob("*.log"), *(out / "eval").rglob("*.md"), *(out / "eval").rglob("*.json"),
                 *(out / "eval").rglob("*.csv"), out / "table.md", *(out / "phi").glob("*.json*"),
                 *(out / "grpo").glob("*.json"), *(out / "phi").glob("*.json")]:
        places[str(path)] = path.read_text(errors="replace")
    for where, text in places.items():
        leaked = [p for p in probes if p in text]
        assert not leaked, f"note text in {where}: {len(leaked)} lines"
