"""The whole ladder, shortened, through the real frameworks on the CPU: CI's smoke run of the embedded default.

synth → tiny model → prepare → zero-shot baseline (vLLM) → SFT + merge (llamafactory-cli)
→ GRPO (verl main_ppo + vLLM, the project's reward) → two PHI rounds through data_tools.phi.rounds (refresh,
hinted GRPO with the hint dataset, export, hint-free inference) → hint-free evaluation of every rung → the
Table-1-style table. About 15-20 minutes on 2 cores.
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
from llm4icd_plugins.variant import PreparedVariant
from llm4icd_plugins.verl.reward import REWARD_KEYS

REPO = Path(__file__).resolve().parents[2]
VENVS = Path(os.environ.get("LLM4ICD_VENVS", REPO / ".venvs"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not all((VENVS / env / "bin" / "python").exists() for env in ("sft", "rl")),
                       reason="needs both environments: bash env/setup.sh"),
]

ROUNDS, STEPS, BATCH, TRAIN_ROWS, TEST_ROWS = 2, 2, 4, 24, 24
ARGS = ["--n-admissions", "300", "--pretrain-steps", "40", "--sft-steps", "30", "--grpo-steps", "2",
        "--phi-rounds", str(ROUNDS), "--phi-steps", str(STEPS), "--rollouts", "2", "--grpo-batch", str(BATCH),
        "--max-test", str(TEST_ROWS), "--max-train-infer", str(TRAIN_ROWS)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart")
    proc = subprocess.run([sys.executable, "-m", "data_tools.ladder.run", "--out", str(out), "--venvs", str(VENVS),
                           *ARGS], cwd=REPO, capture_output=True, text=True, timeout=2400, check=False)
    assert proc.returncode == 0, f"ladder failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    return out, proc.stdout + proc.stderr


def test_every_stage_finished_with_its_artefacts_and_log(run):
    out, _ = run
    assert sorted(p.stem for p in (out / ".done").glob("*.json")) == sorted(s.name for s in ladder.STAGES)
    data = out / "data" / ladder.VARIANT
    rounds = out / "phi" / "rounds"
    for path in [out / "raw" / "mimic3" / "NOTEEVENTS.csv.gz", out / "models" / "base" / "config.json",
                 data / "verl" / "train.parquet", data / "sharegpt" / "train.jsonl", data / "label_space.json",
                 out / "models" / "sft" / "merged" / "config.json",
                 out / "models" / "grpo" / "lora_adapter" / "adapter_config.json",
                 out / "models" / "phi" / "lora_adapter" / "adapter_config.json",
                 *[rounds / f"round_{t}" / "export" / "lora_adapter" / "adapter_config.json"
                   for t in range(1, ROUNDS + 1)],
                 rounds / "rounds_summary.json", out / "phi" / "rounds_report.md",
                 out / "table.md", out / "table.csv", out / "table_buckets.csv"]:
        assert path.exists(), f"missing {path}"
    for stage in ladder.STAGES:
        assert (out / "logs" / f"{stage.name}.log").stat().st_size > 0, f"no log of {stage.name}"
    for rung in ("zero_shot", "sft", "grpo", "phi"):
        lines = (out / "predictions" / f"{rung}.jsonl").read_text().splitlines()
        assert len(lines) == TEST_ROWS and {"id", "response", "pred", "gold"} <= set(json.loads(lines[0]))
        assert (out / "eval" / rung / "metrics.json").exists()


def test_console_is_one_line_per_stage(run):
    out, console = run
    for number, stage in enumerate(ladder.STAGES, 1):
        head = f"[{number}/{len(ladder.STAGES)}] {stage.name}:"
        lines = [line for line in console.splitlines() if line.startswith(head)]
        assert len(lines) == 1 and "✓" in lines[0], f"stage {stage.name}: {lines}"
    assert "step:1 - " not in console and "INFO" not in console, "framework output reached the console"
    assert len(console.splitlines()) < 80


def test_grpo_and_every_phi_round_called_the_project_reward(run):
    out, _ = run
    for log, steps in [("grpo", 2), *[(f"phi_round_{t}", STEPS) for t in range(1, ROUNDS + 1)]]:
        metrics = read_step_metrics(out / "logs" / f"{log}.log")
        assert max(metrics) == steps, f"{log}: verl ran {sorted(metrics)} steps"
        keys = set().union(*metrics.values())
        for key in REWARD_KEYS:
            assert f"val-aux/llm4icd/{ladder.VARIANT}/{key}/mean@1" in keys, f"{log}: reward key {key} not logged"
        assert all("critic/score/mean" in metrics[s] for s in range(1, steps + 1))
    assert len(json.loads((out / "grpo" / "reward_curve.json").read_text())["train_reward_mean"]) == 2


def test_phi_rounds_report_is_consistent_with_the_round_files(run):
    out, _ = run
    report = json.loads((out / "phi" / "rounds_report.json").read_text())
    assert [r["round"] for r in report] == list(range(ROUNDS + 1))
    for row in report:
        assert 0 <= row["val_macro_f1"] <= 1 and 0 <= row["val_micro_f1"] <= 1
        assert set(row["val_bucket_recall"]) == {"≥100", "30–99", "10–29", "<10"}
        if not row["round"]:
            continue
        round_file = out / "phi" / "rounds" / f"round_{row['round']}" / "train.parquet"
        pools = pd.read_parquet(round_file, columns=["phi"])["phi"]
        sizes = [len(p["pool"]) for p in pools]
        assert row["rows"] == len(sizes) == TRAIN_ROWS
        assert row["rows_kept"] == sum(n > 0 for n in sizes)
        assert row["mastered_share"] == pytest.approx(sizes.count(0) / len(sizes))
        assert row["mean_pool"] == pytest.approx(sum(sizes) / max(1, row["rows_kept"]))
        audit = row["audit"]
        assert audit["train_draws"] == row["train_draws"] >= STEPS * BATCH
        assert audit["train_draws_hinted"] == row["hinted_draws"] <= row["train_draws"]
        assert audit["other_draws"] > 0 and audit["other_draws_hinted"] == 0 and audit["hints_outside_pool"] == 0
        if row["rows_kept"]:
            assert row["hinted_draws"] > 0
    table = (out / "phi" / "rounds_report.md").read_text().splitlines()
    assert len(table) == 2 + ROUNDS + 1


def test_table_has_one_row_per_rung_with_intervals_and_buckets(run):
    out, _ = run
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [r["method"] for r in rows] == ["Zero-shot", "SFT", "GRPO", "PHI"]
    for row in rows:
        for level in ("micro", "macro"):
            for metric in ("recall", "precision", "f1"):
                assert 0.0 <= float(row[f"{ladder.SETTING}/{level}/{metric}"]) <= 100.0
        low, value, high = (float(row[f"{ladder.SETTING}/micro/f1{end}"]) for end in ("_ci_low", "", "_ci_high"))
        assert low <= value <= high
    buckets = list(csv.DictReader((out / "table_buckets.csv").open()))
    assert {b["method"] for b in buckets} == {"Zero-shot", "SFT", "GRPO", "PHI"} and len(buckets) == 4 * 4
    text = (out / "table.md").read_text()
    assert text.count(f"| {ladder.BACKBONE} |") == 4 and "Micro F1 [95% CI]" in text


def test_no_note_text_in_logs_or_reports(run):
    out, console = run
    notes = pd.read_parquet(out / "data" / ladder.VARIANT / "examples" / "test.parquet", columns=["text"])["text"]
    probes = {line.strip() for text in notes for line in text.splitlines() if len(line.strip()) > 40}
    # A note line that is exactly a code's description (a synthetic diagnosis list) is not note text when a
    # report names that code.
    variant = PreparedVariant(out / "data" / ladder.VARIANT)
    system = variant.code_system()
    descriptions = {(system.description(c) or "").lower() for c in variant.label_space().codes}
    probes -= {p for p in probes if p.lower().lstrip("-*0123456789. ") in descriptions}
    assert probes, "no probe sentences found"
    places = {"console": console}
    for path in [*(out / "logs").glob("*.log"), *(out / "eval").rglob("*.md"), *(out / "eval").rglob("*.json"),
                 *(out / "eval").rglob("*.csv"), out / "table.md", *(out / "phi").rglob("*.json"),
                 *(out / "phi").glob("*.md"), *(out / "grpo").glob("*.json")]:
        places[str(path)] = path.read_text(errors="replace")
    for where, text in places.items():
        leaked = [p for p in probes if p in text]
        assert not leaked, f"note text in {where}: {len(leaked)} lines"
