"""The ladder's stage driver without the frameworks: markers, skipping, --from-stage, changed-settings note,
the quiet console (one line per stage, full output in the stage log, the log's tail on failure), the reward
trend read from a verl console log, the PHI step commands data_tools.phi.rounds runs, and the per-round
PHI report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from scipy.stats import linregress

from data_tools.ladder import report as ladder_report
from data_tools.ladder import run as ladder
from data_tools.phi.rounds import _fill, check_template


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
    assert ladder.main(base) == 2, "a user error, as every tool's"
    err = capsys.readouterr().err
    assert "no sft environment" in err and "env/setup.sh" in err and calls == []


def _chatty(lines: int, code: int = 0) -> list[str]:
    """A command printing numbered lines on stdout and stderr, then exiting with ``code``."""
    return [sys.executable, "-c", f"import sys\nfor i in range({lines}):\n    print(f'framework line {{i}}', "
            f"file=sys.stderr if i % 2 else sys.stdout)\nsys.exit({code})"]


def test_console_shows_one_line_per_stage_and_the_log_holds_the_output(tmp_path, monkeypatch, capfd):
    for env in ("rl", "sft"):
        (tmp_path / "venvs" / env / "bin").mkdir(parents=True)
        (tmp_path / "venvs" / env / "bin" / "python").touch()

    def loud(s, log):
        ladder.sh(_chatty(500), log)
        return "42 steps, reward 0.1 → 0.2"

    monkeypatch.setattr(ladder, "STAGES", [ladder.Stage("loud", "a stage with much output", loud),
                                           ladder.Stage("quiet", "a stage without a summary", lambda s, log: None)])
    out = tmp_path / "out"
    assert ladder.main(["--out", str(out), "--venvs", str(tmp_path / "venvs")]) == 0
    console = capfd.readouterr()
    assert "framework line" not in console.out + console.err
    stage_lines = [line for line in console.out.splitlines() if line.startswith("[")]
    assert len(stage_lines) == 2
    assert stage_lines[0].startswith("[1/2] loud:") and "✓" in stage_lines[0]
    assert "42 steps, reward 0.1 → 0.2" in stage_lines[0]
    assert stage_lines[1].startswith("[2/2] quiet:") and "✓" in stage_lines[1]
    assert len(console.out.splitlines()) < 10
    log = (out / "logs" / "loud.log").read_text()
    assert all(f"framework line {i}\n" in log for i in range(500))
    assert json.loads((out / ".done" / "loud.json").read_text())["summary"] == "42 steps, reward 0.1 → 0.2"


def test_failing_stage_prints_the_tail_of_its_log(tmp_path, monkeypatch, capfd):
    for env in ("rl", "sft"):
        (tmp_path / "venvs" / env / "bin").mkdir(parents=True)
        (tmp_path / "venvs" / env / "bin" / "python").touch()
    ran = []
    monkeypatch.setattr(ladder, "STAGES",
                        [ladder.Stage("broken", "fails", lambda s, log: ladder.sh(_chatty(100, 3), log)),
                         ladder.Stage("after", "never runs", lambda s, log: ran.append(1))])
    out = tmp_path / "out"
    assert ladder.main(["--out", str(out), "--venvs", str(tmp_path / "venvs")]) == 1
    console = capfd.readouterr()
    assert "✗ failed" in console.out and ran == []
    err = console.err
    assert "stage broken" in err and "exit code 3" in err and str(out / "logs" / "broken.log") in err
    assert all(f"framework line {i}" in err for i in range(100 - ladder.TAIL_LINES + 1, 100))
    assert "framework line 59\n" not in err and f"framework line {100 - ladder.TAIL_LINES - 2}\n" not in err
    assert not (out / ".done" / "broken.json").exists()


def _verl_log(rewards, val_first, val_last, source="llm4icd/mimic3_full"):
    lines = [f"(TaskRunnerV1 pid=1) step:0 - val-aux/{source}/f1/mean@1:np.float64({val_first}) - "
             f"val-aux/{source}/n_pred/mean@1:4.0"]
    lines += [f"(TaskRunnerV1 pid=1) step:{i} - critic/score/mean:{r} - actor/lr:0.003"
              for i, r in enumerate(rewards, 1)]
    lines.append(f"(TaskRunnerV1 pid=1) step:{len(rewards)} - val-aux/{source}/f1/mean@1:np.float64({val_last})")
    return "\n".join(lines) + "\n"


def test_reward_curve_trend_and_validation_summary(tmp_path):
    rewards = [0.20, 0.22, 0.21, 0.25, 0.27, 0.26, 0.30, 0.31]
    log = tmp_path / "grpo.log"
    log.write_text(_verl_log(rewards, 0.25, 0.32))
    curve = ladder_report.save_reward_curve(log, tmp_path / "curve.json")
    assert json.loads((tmp_path / "curve.json").read_text()) == json.loads(json.dumps(curve))
    curve = json.loads((tmp_path / "curve.json").read_text())
    assert list(curve["train_reward_mean"].values()) == rewards
    assert curve["trend"]["first_quarter_mean"] == pytest.approx(0.21)
    assert curve["trend"]["last_quarter_mean"] == pytest.approx(0.305)
    assert curve["trend"]["slope_per_step"] == pytest.approx(linregress(range(1, 9), rewards).slope)
    assert curve["validation"]["0"]["f1"] == 0.25 and curve["validation"]["8"]["f1"] == 0.32
    line = ladder_report.curve_summary(curve)
    assert line.startswith("8 steps") and "reward 0.210 → 0.305" in line and "greedy val F1 0.250 → 0.320" in line


def test_step_and_batch_knobs_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        ladder.build_parser().parse_args(["--grpo-batch", "0"])
    assert "--grpo-batch: must be at least 1, got 0" in capsys.readouterr().err
    for flag in ("--rollout-temperature", "--grpo-lr", "--sft-lr"):
        with pytest.raises(SystemExit):
            ladder.build_parser().parse_args([flag, "0"])
        assert f"{flag}: must be above 0, got 0" in capsys.readouterr().err


# --- PHI through data_tools.phi.rounds ------------------------------------------------------------------

@pytest.fixture
def stub_tools(tmp_path, monkeypatch):
    """A repository whose run_cpu.sh and an rl python that only record how they were called."""
    record = tmp_path / "calls.jsonl"
    repo = tmp_path / "repo"
    script = repo / "recipes" / "tiny" / "grpo" / "run_cpu.sh"
    script.parent.mkdir(parents=True)
    script.write_text(f"#!/usr/bin/env bash\n{sys.executable} -c 'import json, os, sys; "
                      f"open(\"{record}\", \"a\").write(json.dumps({{\"tool\": \"grpo\", \"args\": sys.argv[1:], "
                      f"\"train\": os.environ.get(\"TRAIN_FILE\"), \"ckpt\": os.environ.get(\"CKPT_DIR\"), "
                      f"\"tb\": os.environ.get(\"TENSORBOARD_DIR\")}}) + \"\\n\")' \"$@\"\necho verl says hello\n")
    python = tmp_path / "venvs" / "rl" / "bin" / "python"
    python.parent.mkdir(parents=True)
    # the infer stub writes what data_tools.evaluation.infer writes: --out FILE, or with --lora --out DIR/NAME.jsonl
    python.write_text(f"#!{sys.executable}\nimport json, sys\nfrom pathlib import Path\na = sys.argv[1:]\n"
                      f"open('{record}', 'a').write(json.dumps({{'tool': 'python', 'args': a}}) + '\\n')\n"
                      "if '--out' in a and '--lora' not in a:\n    Path(a[a.index('--out') + 1]).write_text('one\\n')\n"
                      "if '--lora' in a:\n    d = Path(a[a.index('--out') + 1]); d.mkdir(parents=True)\n"
                      "    name = a[a.index('--lora') + 1].split('=')[0]\n"
                      "    (d / f'{name}.jsonl').write_text('two\\n')\n")
    python.chmod(0o755)
    monkeypatch.setattr(ladder, "REPO", repo)
    args = ladder.build_parser().parse_args(["--out", str(tmp_path / "out"), "--venvs", str(tmp_path / "venvs"),
                                             "--phi-steps", "2", "--grpo-batch", "6", "--seed", "5",
                                             "--max-train-infer", "10"])
    settings = ladder._settings(args)
    (settings.out / "logs").mkdir(parents=True)

    def calls():
        return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    return settings, calls


def _shell(command: str) -> None:
    subprocess.run(command, shell=True, check=True, env={**os.environ, "PYTHON": "unused"})


def test_phi_train_command_continues_from_the_previous_adapter(stub_tools):
    s, calls = stub_tools
    commands = ladder.phi_commands(s)
    for kind, template in commands.items():
        check_template(kind, template)
    round_dir = s.rounds / "round_2"
    _shell(_fill(commands["train"], {"round": 1, "train_file": s.rounds / "round_1" / "train.parquet",
                                     "ckpt_dir": s.rounds / "round_1" / "checkpoints", "prev_adapter": ""}))
    _shell(_fill(commands["train"], {"round": 2, "train_file": round_dir / "train.parquet",
                                     "ckpt_dir": round_dir / "checkpoints", "prev_adapter": "/x/round_1/lora adapter"}))
    first, second = calls()
    assert first["train"] == str(s.rounds / "round_1" / "train.parquet")
    assert second["ckpt"] == str(round_dir / "checkpoints")
    assert second["tb"].endswith("round_2")
    assert not any(a.startswith("actor_rollout_ref.model.lora_adapter_path") for a in first["args"])
    assert "actor_rollout_ref.model.lora_adapter_path=/x/round_1/lora adapter" in second["args"]
    for call, t in ((first, 1), (second, 2)):
        assert f"+data.phi_audit_file={s.rounds / f'round_{t}' / 'hint_audit.jsonl'}" in call["args"]
        assert {"data.custom_cls.name=PHIDataset", "trainer.total_training_steps=2", "data.train_batch_size=6",
                "actor_rollout_ref.actor.ppo_mini_batch_size=3", "+data.phi_seed=5", "data.seed=5"} <= set(call["args"])
        assert not any(a.startswith(("data.train_files", "data.val_files", "actor_rollout_ref.model.path"))
                       for a in call["args"]), "paths come from the recipe's environment variables"
        assert "verl says hello" in (s.out / "logs" / f"phi_round_{t}.log").read_text()


def test_phi_checkpoint_resume_seed_and_overrides_reach_every_round(stub_tools):
    """--phi-resume checkpoint: round t >= 2 resumes verl's whole checkpoint of round t-1 and stops at step
    t x phi_steps; --rl-seed seeds the data order, vLLM and the hint draws; --phi-override and
    --rollout-temperature reach every round."""
    s, calls = stub_tools
    s = replace(s, phi_resume="checkpoint", rl_seed=7, phi_overrides=("+data.phi_hint_style=neutral",),
                rollout_temperature=0.6)
    template = ladder.phi_commands(s)["train"]
    check_template("train", template)
    prev = s.rounds / "round_1" / "checkpoints" / "global_step_2"
    for t, previous in ((1, ""), (2, prev)):
        _shell(_fill(template, {"round": t, "train_file": s.rounds / f"round_{t}" / "train.parquet",
                                "ckpt_dir": s.rounds / f"round_{t}" / "checkpoints", "prev_adapter": "/x/adapter",
                                "prev_checkpoint": previous}))
    first, second = (c["args"] for c in calls())
    assert [a for a in first if a.startswith("trainer.total_training_steps=")] == ["trainer.total_training_steps=2"]
    assert [a for a in second if a.startswith("trainer.total_training_steps=")] == ["trainer.total_training_steps=4"]
    assert not any(a.startswith("trainer.resume") for a in first)
    assert {"trainer.resume_mode=resume_path", f"trainer.resume_from_path={prev}"} <= set(second)
    for args in (first, second):
        assert not any(a.startswith("actor_rollout_ref.model.lora_adapter_path") for a in args)
        assert {"data.seed=7", "+data.phi_seed=7", f"actor_rollout_ref.rollout.seed={ladder.ROLLOUT_SEED + 7}",
                "+data.phi_hint_style=neutral", "actor_rollout_ref.rollout.temperature=0.6"} <= set(args)


def test_phi_checkpoint_resume_composes_with_verls_config(stub_tools):
    """The round-2 overrides of --phi-resume checkpoint, on the tiny recipe, through verl's own config checks."""
    pytest.importorskip("verl")
    from hydra import compose, initialize_config_dir
    from verl.utils.config import validate_config

    s, calls = stub_tools
    s = replace(s, phi_resume="checkpoint", phi_overrides=("+data.phi_inject_prob=0",))
    _shell(_fill(ladder.phi_commands(s)["train"], {
        "round": 2, "train_file": "/r/train.parquet", "ckpt_dir": "/r/ckpt", "prev_adapter": "/x",
        "prev_checkpoint": "/r/round_1/checkpoints/global_step_2"}))
    overrides = [a for a in calls()[0]["args"] if not a.startswith("+ray_kwargs")]
    env = {"TRAIN_FILE": "/r/train.parquet", "VAL_FILE": "/r/val.parquet", "MODEL_PATH": "/m", "CKPT_DIR": "/r/ckpt"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[2] / "recipes"), version_base=None):
            cfg = compose(config_name="tiny/grpo_synthetic", overrides=overrides)
    assert cfg.trainer.resume_mode == "resume_path" and cfg.trainer.total_training_steps == 4
    assert cfg.data.phi_inject_prob == 0
    validate_config(cfg, use_reference_policy=True, use_critic=False)


def test_phi_infer_command_writes_the_predictions_file_with_and_without_adapter(stub_tools):
    s, calls = stub_tools
    template = ladder.phi_commands(s)["infer"]
    base, tuned = s.out / "round_0.jsonl.partial", s.out / "round_1.jsonl.partial"
    _shell(_fill(template, {"round": 0, "adapter": "", "predictions": base}))
    _shell(_fill(template, {"round": 1, "adapter": "/x/lora", "predictions": tuned}))
    assert base.read_text() == "one\n" and tuned.read_text() == "two\n"
    assert not tuned.with_name(tuned.name + ".d").exists()
    first, second = (c["args"] for c in calls())
    for args in (first, second):
        assert args[args.index("--split") + 1] == "train" and args[args.index("--max-samples") + 1] == "10"
        assert args[args.index("--model") + 1] == str(s.models / "sft" / "merged")
    assert "--lora" not in first and second[second.index("--lora") + 1] == "round=/x/lora"


def _round_file(path: Path, pools: dict[str, list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"extra_info": [{"sample_id": i, "split": "train"} for i in pools],
                  "phi": [{"pool": p} for p in pools.values()]}).to_parquet(path)


def test_audit_finds_hints_outside_the_pool_and_hinted_validation(tmp_path):
    _round_file(tmp_path / "train.parquet", {"a": ["401.9", "428.0"], "b": []})
    audit = tmp_path / "audit.jsonl"
    draws = [{"split": "train", "sample_id": "a", "hints": ["428.0"]},
             {"split": "train", "sample_id": "b", "hints": []},
             {"split": "train", "sample_id": "b", "hints": ["250.00"]},
             {"split": "val", "sample_id": "v", "hints": []},
             {"split": "val", "sample_id": "w", "hints": ["401.9"]}]
    audit.write_text("".join(json.dumps(d) + "\n" for d in draws))
    assert ladder_report.audit_hints(audit, tmp_path / "train.parquet") == {
        "train_draws": 3, "train_draws_hinted": 2, "other_draws": 2, "other_draws_hinted": 1, "hints": 3,
        "hints_outside_pool": 2}


def test_phi_round_report_per_round(stub_tools, monkeypatch):
    s, _ = stub_tools
    buckets = ["≥100", "30–99", "10–29", "<10"]

    def metrics(round_index):
        return {"micro_f1": 0.30 + round_index / 100, "macro_f1": 0.05 + round_index / 100, "micro_recall": 0.2,
                "buckets": [{"bucket": b, "n_codes": 0 if b == "<10" else 3, "micro_recall": 0.1 * k}
                            for k, b in enumerate(buckets)]}

    evaluated = []

    def fake_evaluate(s_, log, predictions, out, *, split="test", bootstrap=True):
        evaluated.append((predictions.name, split, bootstrap))
        return metrics(0 if predictions.name == "base.jsonl" else int(predictions.stem.split("_")[1]))

    monkeypatch.setattr(ladder, "_evaluate", fake_evaluate)
    pools = {1: {"a": ["401.9"], "b": ["428.0", "584.9"], "c": [], "d": ["250.00"]},
             2: {"a": [], "b": ["428.0"], "c": [], "d": []}}
    for t, pool in pools.items():
        round_dir = s.rounds / f"round_{t}"
        _round_file(round_dir / "train.parquet", pool)
        sizes = [len(p) for p in pool.values()]
        nonempty = [n for n in sizes if n]
        (round_dir / "train.summary.json").write_text(json.dumps(
            {"rows": len(sizes), "rows_with_hints": len(nonempty), "mastered_rows": sizes.count(0),
             "train_micro_recall": 0.5, "pool_size": {"mean_nonempty": sum(nonempty) / len(nonempty)}}))
        (round_dir / "hint_audit.jsonl").write_text("".join(
            json.dumps({"split": "train", "sample_id": i, "hints": p[:1]}) + "\n" for i, p in pool.items()))
        (s.out / "logs" / f"phi_round_{t}.log").write_text(_verl_log([0.1 * t, 0.2 * t], 0.3, 0.3))
    report = ladder.phi_round_report(s, s.out / "logs" / "phi.log", [1, 2])
    assert [r["round"] for r in report] == [0, 1, 2]
    assert evaluated == [("base.jsonl", "val", False), ("round_1.jsonl", "val", False), ("round_2.jsonl", "val", False)]
    assert "rows_kept" not in report[0] and report[0]["val_micro_f1"] == pytest.approx(0.30)
    one, two = report[1], report[2]
    assert (one["rows_kept"], one["rows"], one["mastered_share"]) == (3, 4, 0.25)
    assert one["mean_pool"] == pytest.approx(4 / 3)
    assert (two["rows_kept"], two["mastered_share"], two["mean_pool"]) == (1, 0.75, 1.0)
    assert (one["hinted_draws"], one["train_draws"], two["hinted_draws"]) == (3, 4, 1)
    assert one["reward_first"] == pytest.approx(0.1) and two["reward_last"] == pytest.approx(0.4)
    assert two["val_bucket_recall"] == {"≥100": 0.0, "30–99": 0.1, "10–29": 0.2, "<10": None}
    table = ladder_report.rounds_markdown(report).splitlines()
    assert len(table) == 2 + 3 and all("val recall " + b in table[0] for b in buckets)
    assert table[3].startswith("| 1 | 3/4 | 25% | 1.33 | 3/4 | 0.100 → 0.200 | 31.0 | 6.0 | 0.0 | 10.0 | 20.0 | – |")


def test_intervals_table_has_every_rung_with_its_interval_and_buckets():
    entries = [(name, "tiny", "Full", {"micro_f1": f, "macro_f1": f / 2, "ci": {"micro_f1": [f - 0.01, f + 0.02]},
                                       "buckets": [{"bucket": "≥100", "n_codes": 7, "micro_recall": f},
                                                   {"bucket": "<100", "n_codes": 90, "micro_recall": None}]})
               for name, f in (("SFT", 0.4), ("PHI", 0.5))]
    lines = ladder_report.intervals_markdown(entries).splitlines()
    assert lines[0] == "| Method | Micro F1 [95% CI] | Macro F1 [95% CI] | Recall ≥100 | Recall <100 |"
    assert lines[2] == "| SFT | 40.0 [39.0, 42.0] | 20.0 | 40.0 | – |"
    assert lines[3] == "| PHI | 50.0 [49.0, 52.0] | 25.0 | 50.0 | – |"
    assert "≥100: 7 codes, <100: 90 codes" in lines[-1]


def test_phi_train_rows_are_the_first_inferred_rows_beside_their_notes(stub_tools):
    from data_tools.phi import refresh

    s, _ = stub_tools
    (s.data / "verl").mkdir(parents=True)
    (s.data / "examples").mkdir()
    rows = pd.DataFrame({"extra_info": [{"sample_id": str(i)} for i in range(30)]})
    rows.to_parquet(s.data / "verl" / "train.parquet")
    pd.DataFrame({"id": [str(i) for i in range(30)]}).to_parquet(s.data / "examples" / "train.parquet")
    train = ladder._phi_train_file(s)
    assert [e["sample_id"] for e in pd.read_parquet(train)["extra_info"]] == [str(i) for i in range(10)]
    notes = refresh.default_notes(train)
    assert notes is not None and notes.resolve() == (s.data / "examples" / "train.parquet").resolve()
    assert ladder._phi_train_file(s) == train
    full = ladder._settings(ladder.build_parser().parse_args(["--out", str(s.out), "--max-train-infer", "0"]))
    assert ladder._phi_train_file(full) == s.data / "verl" / "train.parquet"


def test_candidates_prepare_a_plain_variant_train_the_coder_then_prepare_with_its_candidates(tmp_path, monkeypatch):
    """--candidates K: the coder trains on a plain variant (never on prompts that list its own candidates), and the
    variant every later stage reads is prepared with that coder's folder and K."""
    calls = []

    def fake_sh(cmd, log, **_):
        cmd = [str(c) for c in cmd]
        calls.append(cmd)
        if "data_tools.build.prepare" in cmd:
            variant = Path(cmd[cmd.index("--out") + 1]) / ladder.VARIANT
            (variant / "verl").mkdir(parents=True, exist_ok=True)
            for split in ("train", "val", "test"):
                pd.DataFrame({"x": [1, 2]}).to_parquet(variant / "verl" / f"{split}.parquet")
            (variant / "label_space.json").write_text(json.dumps({"codes": ["401.9", "428.0"]}))
        else:
            out = Path(cmd[cmd.index("--out") + 1])
            out.mkdir(parents=True)
            (out / "report.json").write_text(json.dumps({
                "recall_at_k": {"test": {"10": {"micro": 0.74}}}, "f1_at_tuned_threshold": {"test_micro_f1": 0.77}}))

    monkeypatch.setattr(ladder, "sh", fake_sh)
    args = ladder.build_parser().parse_args(["--out", str(tmp_path), "--candidates", "10",
                                             "--candidate-coder", "knn"])
    summary = ladder.stage_prepare(ladder._settings(args), tmp_path / "log")
    plain, coder, final = calls
    assert "data_tools.evaluation.candidates" in coder and coder[coder.index("--coder") + 1] == "knn"
    assert coder[coder.index("--data") + 1] == str(tmp_path / "candidates" / "plain" / ladder.VARIANT)
    assert plain[plain.index("--out") + 1] == str(tmp_path / "candidates" / "plain") and "--candidates" not in plain
    assert final[final.index("--out") + 1] == str(tmp_path / "data")
    assert final[final.index("--candidates") + 1] == coder[coder.index("--out") + 1]
    assert final[final.index("--top-k") + 1] == "10"
    assert "recall@10 0.740" in summary and "knn coder" in summary
    calls.clear()
    args = ladder.build_parser().parse_args(["--out", str(tmp_path / "plain_run")])
    ladder.stage_prepare(ladder._settings(args), tmp_path / "log")
    assert len(calls) == 1 and "--candidates" not in calls[0], "the default prepares once, the paper's prompt"


def test_phi_stage_starts_fresh_logs_for_rounds_not_trained_yet(stub_tools, monkeypatch):
    """A round's commands append to logs/phi_round_<t>.log: a redone round (or a copied run) must not mix in the
    steps of an earlier run, while a finished round keeps the log its report reads."""
    s, _ = stub_tools
    s = replace(s, phi_rounds=3)
    for t in (1, 2, 3):
        (s.out / "logs" / f"phi_round_{t}.log").write_text("step:1 - critic/score/mean:0.9\n")
    (s.rounds / "round_1").mkdir(parents=True)
    (s.rounds / "round_1" / "TRAINED").write_text("ok\n")
    monkeypatch.setattr(ladder, "_phi_train_file", lambda s_: s_.out / "train.parquet")

    def stop(cmd, log, **_):
        raise ladder.LadderError("stopped here")

    monkeypatch.setattr(ladder, "sh", stop)
    with pytest.raises(ladder.LadderError):
        ladder.stage_phi(s, s.out / "logs" / "phi.log")
    assert [(s.out / "logs" / f"phi_round_{t}.log").exists() for t in (1, 2, 3)] == [True, False, False]
