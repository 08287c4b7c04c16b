"""The ladder's stage driver without the frameworks: markers, skipping, --from-stage, changed-settings note,
and the reward-trend summary read from a verl console log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy.stats import linregress

from data_tools.ladder import run as ladder


@pytest.fixture
def fake_ladder(tmp_path, monkeypatch):
    """Two quick stages in place of the real ones; environments only need to exist, nothing runs in them."""
    for env in ("rl", "sft"):
        python = tmp_path / "venvs" / env / "bin" / "python"
        python.parent.mkdir(parents=True)
        python.touch()
    calls: list[str] = []

    def make(name):
        def run(s, log):
            calls.append(name)
            (s.out / f"{name}.txt").write_text(str(s.grpo_steps))
        return run

    stages = [ladder.Stage("first", "first stage", make("first"), knobs=("seed",)),
              ladder.Stage("second", "second stage", make("second"), clean=("second.txt",),
                           knobs=("grpo_steps",))]
    monkeypatch.setattr(ladder, "STAGES", stages)
    base = ["--out", str(tmp_path / "out"), "--venvs", str(tmp_path / "venvs")]
    return base, calls, tmp_path / "out"


def test_rerun_skips_finished_stages_and_from_stage_redoes(fake_ladder, capsys):
    base, calls, out = fake_ladder
    assert ladder.main(base + ["--grpo-steps", "3"]) == 0
    assert calls == ["first", "second"]
    marker = json.loads((out / ".done" / "second.json").read_text())
    assert marker["settings"] == {"grpo_steps": 3} and marker["seconds"] >= 0

    assert ladder.main(base + ["--grpo-steps", "3"]) == 0
    assert calls == ["first", "second"], "a finished stage ran again"
    assert "note:" not in capsys.readouterr().out

    assert ladder.main(base + ["--grpo-steps", "5"]) == 0
    printed = capsys.readouterr().out
    assert calls == ["first", "second"]
    assert "it ran with --grpo-steps 3; it is kept — add --from-stage second" in printed

    assert ladder.main(base + ["--grpo-steps", "5", "--from-stage", "second"]) == 0
    assert calls == ["first", "second", "second"]
    assert (out / "second.txt").read_text() == "5"
    assert "note:" not in capsys.readouterr().out


def test_missing_environment_is_a_clear_error(fake_ladder, capsys):
    base, calls, _ = fake_ladder
    (Path(base[3]) / "sft" / "bin" / "python").unlink()
    assert ladder.main(base) == 1
    err = capsys.readouterr().err
    assert "no sft environment" in err and "env/setup.sh" in err and calls == []


def test_reward_curve_trend_and_validation_summary(tmp_path, capsys):
    source = "llm4icd/mimic3_full"
    lines = [f"(TaskRunnerV1 pid=1) step:0 - val-aux/{source}/f1/mean@1:np.float64(0.25) - "
             f"val-aux/{source}/n_pred/mean@1:4.0"]
    rewards = [0.20, 0.22, 0.21, 0.25, 0.27, 0.26, 0.30, 0.31]
    lines += [f"(TaskRunnerV1 pid=1) step:{i} - critic/score/mean:{r} - actor/lr:0.003"
              for i, r in enumerate(rewards, 1)]
    lines.append(f"(TaskRunnerV1 pid=1) step:8 - val-aux/{source}/f1/mean@1:np.float64(0.32)")
    log = tmp_path / "grpo.log"
    log.write_text("\n".join(lines) + "\n")
    ladder._reward_curve(log, tmp_path / "curve.json")
    curve = json.loads((tmp_path / "curve.json").read_text())
    assert list(curve["train_reward_mean"].values()) == rewards
    assert curve["trend"]["first_quarter_mean"] == pytest.approx(0.21)
    assert curve["trend"]["last_quarter_mean"] == pytest.approx(0.305)
    assert curve["trend"]["slope_per_step"] == pytest.approx(linregress(range(1, 9), rewards).slope)
    assert curve["validation"]["0"]["f1"] == 0.25 and curve["validation"]["8"]["f1"] == 0.32
    printed = capsys.readouterr().out
    assert "0.210 → last quarter 0.305" in printed and "greedy validation F1: step 0 0.250 → step 8 0.320" in printed


def test_step_and_batch_knobs_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        ladder.build_parser().parse_args(["--grpo-batch", "0"])
    assert "--grpo-batch: must be at least 1, got 0" in capsys.readouterr().err
