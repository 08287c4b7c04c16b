"""data_tools.phi.refresh (pools, frequency, recall, joins on sample_id, atomic writes, clear errors) and
data_tools.phi.rounds (the resumable round loop) on CPU, with stand-in train/export/infer commands and an
interruption in the middle of a round."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_tools.phi import refresh as phi_refresh
from data_tools.phi import rounds as phi_rounds

GOLD = {"a1": ["401.9", "428.0", "584.9"], "a2": ["401.9", "276.2"], "a3": ["428.0"], "a4": ["96.04", "401.9"]}


@pytest.fixture()
def train(tmp_path) -> Path:
    """A training parquet with the schema data_tools.build.prepare writes."""
    rows = {"data_source": [], "prompt": [], "ability": [], "reward_model": [], "extra_info": []}
    for i, (sid, gold) in enumerate(GOLD.items()):
        rows["data_source"].append("llm4icd/t")
        rows["prompt"].append([{"role": "user", "content": f"note {sid}"}])
        rows["ability"].append("icd_coding")
        rows["reward_model"].append({"style": "rule", "ground_truth": gold})
        rows["extra_info"].append({"index": i, "sample_id": sid, "split": "train", "code_system": "icd9",
                                   "label_space": "t", "n_codes": len(gold)})
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pydict(rows), path)
    return path


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_refresh_pools_freq_recall(train, tmp_path):
    preds = write_jsonl(tmp_path / "p.jsonl", [
        {"id": "a3", "pred": []},  # ids in another order: joined on sample_id, not on position
        {"id": "a1", "response": "<code>401.9, 999.9</code>"},  # parsed from the response text
        {"id": "a2", "pred": ["401.9", "276.2"], "gold": ["401.9", "276.2"]},
        {"id": "a4", "pred": ["96.04", "401.9"]},
    ])
    out = tmp_path / "round_1" / "train.parquet"
    assert _refresh(train, preds, out) == 0
    frame = pd.read_parquet(out)
    phi = {e["sample_id"]: p for e, p in zip(frame["extra_info"], frame["phi"])}
    assert list(phi["a1"]["pool"]) == ["428.0", "584.9"] and list(phi["a2"]["pool"]) == []
    assert list(phi["a3"]["pool"]) == ["428.0"] and list(phi["a4"]["pool"]) == []
    assert list(phi["a1"]["pool_freq"]) == [2, 1] and list(phi["a1"]["pool_recall"]) == [0.0, 0.0]
    assert all(p["round"] == 1 for p in phi.values())
    assert list(frame["prompt"]) == list(pd.read_parquet(train)["prompt"])  # rows otherwise unchanged
    summary = json.loads(phi_refresh.summary_path(out).read_text())
    assert summary["mastered_rows"] == 2 and summary["rows_with_hints"] == 2 and summary["pool_size"]["max"] == 2
    assert summary["train_micro_recall"] == pytest.approx(5 / 8)
    # refreshing a round file replaces its pools
    out2 = tmp_path / "round_2" / "train.parquet"
    phi_refresh.refresh(out, preds, out2, 2)
    assert pd.read_parquet(out2)["phi"].map(lambda p: p["round"]).eq(2).all()


def test_refresh_reparses_the_response_so_a_predicted_retired_gold_code_leaves_the_pool(tmp_path):
    # 000.0 stands for a retired gold code the ICD tables lack; infer's "pred" list was filtered through
    # the tables and lost it, but the raw response has it: Ŷ follows the reward's rule (rescued: gold of this row).
    rows = {"data_source": ["d"] * 2, "prompt": [[{"role": "user", "content": "n"}]] * 2, "ability": ["x"] * 2,
            "reward_model": [{"style": "rule", "ground_truth": ["401.9", "000.0"]},
                             {"style": "rule", "ground_truth": ["4280"]}],
            "extra_info": [{"index": i, "sample_id": f"r{i}", "split": "train", "code_system": "icd9",
                            "label_space": "t", "n_codes": 2} for i in range(2)]}
    train = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pydict(rows), train)
    preds = write_jsonl(tmp_path / "p.jsonl", [
        {"id": "r0", "pred": ["401.9"], "response": "<code>401.9, 000.0, 000.1</code>"},
        {"id": "r1", "pred": [], "response": "<code>428.0</code>"},  # gold written undotted: resolved
    ])
    out = tmp_path / "round_1.parquet"
    phi_refresh.refresh(train, preds, out, 1)
    frame = pd.read_parquet(out)
    assert [list(p["pool"]) for p in frame["phi"]] == [[], []]


@pytest.mark.parametrize("records,needle", [
    ([{"id": "a1", "pred": []}], "3 of 4 training samples have no prediction"),
    ([{"id": k, "pred": []} for k in GOLD] + [{"id": "zz", "pred": []}], "not training samples"),
    ([{"id": "a1", "pred": []}, {"id": "a1", "pred": []}], "line 2: the id is already used on line 1"),
    ([{"id": k, "pred": [], "gold": ["V58.61"]} for k in GOLD], "the gold codes differ from those of row 1"),
    ([{"id": "a1"}], 'line 1: neither "pred" nor "response"'),
])
def test_refresh_errors_name_the_problem_and_write_nothing(train, tmp_path, capsys, records, needle):
    preds = write_jsonl(tmp_path / "p.jsonl", records)
    out = tmp_path / "r" / "train.parquet"
    assert _refresh(train, preds, out) == 2
    err = capsys.readouterr().err
    assert needle in err and "Fix:" in err and str(preds) in err
    assert not out.exists() and not list(tmp_path.glob("r/*"))


def test_refresh_refuses_a_validation_file(tmp_path, train):
    frame = pq.read_table(train).to_pylist()
    for row in frame:
        row["extra_info"]["split"] = "val"
    val = tmp_path / "val.parquet"
    pq.write_table(pa.Table.from_pylist(frame), val)
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": k, "pred": []} for k in GOLD])
    with pytest.raises(phi_refresh.RefreshError, match="training split only"):
        phi_refresh.refresh(val, preds, tmp_path / "o.parquet", 1)


def _refresh(train, preds, out, *extra) -> int:
    return phi_refresh.main(["--train", str(train), "--predictions", str(preds), "--out", str(out), "--round", "1",
                             *extra])


@pytest.mark.parametrize("content,needle", [
    (b'{"id": "a1", "pred": []}\n{"id": "a2", "response": "caf\xe9"}\n', "line 2: not UTF-8 text"),
    (b'{"id": "a1", "pred": []}\n' + b"[" * 100_000 + b"]" * 100_000 + b"\n", "line 2: JSON nested too deeply"),
    (b'{"id": {"nested": ["a1"]}, "pred": []}\n', 'line 1: "id" is a mapping with 1 keys'),
])
def test_refresh_bad_encoding_and_nesting_are_clean_errors(train, tmp_path, capsys, content, needle):
    preds = tmp_path / "p.jsonl"
    preds.write_bytes(content)
    out = tmp_path / "r" / "train.parquet"
    assert _refresh(train, preds, out) == 2
    err = capsys.readouterr().err
    assert needle in err and str(preds) in err and "Fix:" in err and "Traceback" not in err
    assert not out.exists()


def test_refresh_checks_the_output_before_the_work(train, tmp_path, capsys):
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": k, "pred": []} for k in GOLD])
    folder = tmp_path / "taken"
    folder.mkdir()
    assert _refresh(train, preds, folder, "--overwrite") == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and "Fix:" in err and "reading predictions" not in err


def test_refresh_removes_temporaries_of_a_killed_run(train, tmp_path, capsys):
    out = tmp_path / "r" / "train.parquet"
    out.parent.mkdir()
    stale = [out.parent / ".train.parquet.tmp-k1ll3d", out.parent / ".train.parquet.x7y8z9.tmp",  # both namings
             out.parent / ".train.summary.json.tmp-k1ll3d"]
    for path in stale:
        path.write_bytes(pq.read_table(train).to_pandas().to_json().encode())  # prompts, as a killed write leaves
    unrelated = out.parent / ".other.parquet.tmp-keep"
    unrelated.write_text("not this tool's")
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": k, "pred": []} for k in GOLD])
    assert _refresh(train, preds, out) == 0
    printed = capsys.readouterr().out
    assert not any(p.exists() for p in stale) and unrelated.exists()
    assert all(p.name in printed for p in stale)
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([out.name, phi_refresh.summary_path(out).name,
                                                                   unrelated.name])


# --- the round loop -------------------------------------------------------------------------------------

STEP = r'''
import json, os, sys, pathlib
kind, rnd = sys.argv[1], int(sys.argv[2])
log = pathlib.Path(os.environ["PHI_TEST_LOG"])
with log.open("a") as fh:
    fh.write(f"{kind} {rnd}\n")
fail = os.environ.get("PHI_TEST_FAIL", "")
if kind == "train":
    train_file, ckpt, prev, prev_ckpt = sys.argv[3:7]
    assert "phi" in open(train_file, "rb").read().decode("latin-1")
    assert (prev == "") == (rnd == 1), prev
    assert prev_ckpt == ("" if rnd == 1 else str(pathlib.Path(ckpt).parents[1] / f"round_{rnd - 1}" / "checkpoints"
                                                 / f"global_step_{(rnd - 1) * 10}")), prev_ckpt
    step = pathlib.Path(ckpt) / f"global_step_{rnd * 10}" / "actor"
    step.mkdir(parents=True, exist_ok=True)
    if fail == f"train {rnd}":
        sys.exit(1)  # killed mid-epoch: a checkpoint folder is left behind, no latest marker
    (pathlib.Path(ckpt) / "latest_checkpointed_iteration.txt").write_text(str(rnd * 10))
elif kind == "export":
    actor, out = sys.argv[3:5]
    assert actor.endswith(f"global_step_{rnd * 10}/actor"), actor
    (pathlib.Path(out) / "lora_adapter").mkdir(parents=True)
    if fail == f"export {rnd}":
        sys.exit(1)
else:
    adapter, out = sys.argv[3:5]
    assert (adapter == "") == (rnd == 0), adapter
    gold = json.loads(os.environ["PHI_TEST_GOLD"])
    with open(out, "w") as fh:
        for i, (sid, codes) in enumerate(gold.items()):
            if fail == f"infer {rnd}" and i == 2:
                fh.flush(); sys.exit(1)  # half-written predictions
            if fail == f"short {rnd}" and i == 2:
                fh.flush(); sys.exit(0)  # stops early but reports success
            keep = codes[:rnd]  # each round recovers one more code
            fh.write(json.dumps({"id": sid, "pred": keep}) + "\n")
'''


@pytest.fixture()
def rounds_env(tmp_path, train, monkeypatch):
    script = tmp_path / "step.py"
    script.write_text(STEP)
    monkeypatch.setenv("PHI_TEST_LOG", str(tmp_path / "log.txt"))
    monkeypatch.setenv("PHI_TEST_GOLD", json.dumps(GOLD))
    py = sys.executable
    commands = {
        "train": f"{py} {script} train {{round}} {{train_file}} {{ckpt_dir}} {{prev_adapter}} {{prev_checkpoint}}",
        "export": f"{py} {script} export {{round}} {{actor_dir}} {{export_dir}}",
        "infer": f"{py} {script} infer {{round}} {{adapter}} {{predictions}}",
    }
    return {"dir": tmp_path / "run", "train": train, "commands": commands, "log": tmp_path / "log.txt"}


def _run(env, rounds=3):
    return phi_rounds.Rounds(env["dir"], env["train"], rounds, env["commands"], log=lambda *_: None).run()


def _log(env):
    return env["log"].read_text().split("\n")[:-1] if env["log"].exists() else []


def test_rounds_run_end_to_end(rounds_env):
    summaries = _run(rounds_env, rounds=2)
    assert _log(rounds_env) == ["infer 0", "train 1", "export 1", "infer 1", "train 2", "export 2"]
    run = rounds_env["dir"]
    assert [s["round"] for s in summaries] == [1, 2]
    # each round recovers one more code, so pools shrink and more rows are mastered
    assert summaries[0]["rows_with_hints"] > summaries[1]["rows_with_hints"]
    assert (run / "round_2" / "export" / "lora_adapter").is_dir()
    pools = pd.read_parquet(run / "round_2" / "train.parquet")["phi"]
    assert sorted(len(p["pool"]) for p in pools) == [0, 1, 1, 2]
    # a finished run does nothing when re-run
    _run(rounds_env, rounds=2)
    assert len(_log(rounds_env)) == 6


@pytest.mark.parametrize("fail,redone", [
    ("train 2", ["train 2", "export 2", "infer 2", "train 3", "export 3"]),
    ("export 1", ["export 1", "infer 1", "train 2", "export 2", "infer 2", "train 3", "export 3"]),
    ("infer 1", ["infer 1", "train 2", "export 2", "infer 2", "train 3", "export 3"]),
])
def test_interrupted_round_resumes_without_repeating_finished_steps(rounds_env, monkeypatch, fail, redone):
    monkeypatch.setenv("PHI_TEST_FAIL", fail)
    with pytest.raises(phi_rounds.RoundsError, match="re-run"):
        _run(rounds_env)
    before = _log(rounds_env)
    assert before[-1] == fail
    run = rounds_env["dir"]
    assert not (run / "round_1" / "predictions.jsonl").exists() or fail != "infer 1"
    assert not (run / "round_1" / "export").exists() or fail != "export 1"  # half export never promoted
    monkeypatch.setenv("PHI_TEST_FAIL", "")
    _run(rounds_env)
    assert _log(rounds_env)[len(before):] == redone
    assert not list(run.rglob("*.partial"))
    preds = (run / "round_1" / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == len(GOLD)  # the half-written file of the failed run was not reused


def test_driver_killed_mid_inference_resumes(rounds_env, tmp_path):
    """SIGKILL of the whole driver while inference is writing: the re-run starts that step afresh."""
    slow = dict(rounds_env["commands"])
    slow["infer"] = slow["infer"].replace(sys.executable, f"sleep 0.1 && {sys.executable}", 1)
    cmd = [sys.executable, "-m", "data_tools.phi.rounds", "--out", str(rounds_env["dir"]),
           "--train", str(rounds_env["train"]), "--rounds", "2", "--train-cmd", slow["train"],
           "--export-cmd", slow["export"], "--infer-cmd", slow["infer"] + " && sleep 30"]
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[2], start_new_session=True)
    partial = rounds_env["dir"] / "round_0" / "predictions.jsonl.partial"
    import os
    import signal
    import time

    deadline = time.monotonic() + 60
    while not partial.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert partial.exists() and not (rounds_env["dir"] / "round_0" / "predictions.jsonl").exists()
    _run(rounds_env, rounds=2)
    assert (rounds_env["dir"] / "round_2" / "export" / "lora_adapter").is_dir()
    assert not partial.exists()


def test_bad_templates_and_mixed_runs_are_refused(rounds_env, tmp_path, train):
    bad = dict(rounds_env["commands"], infer="python x.py {adaptor}")
    with pytest.raises(phi_rounds.RoundsError, match="unknown placeholder.*adaptor"):
        phi_rounds.Rounds(rounds_env["dir"], train, 3, bad)
    _run(rounds_env, rounds=1)
    other = tmp_path / "other.parquet"
    frame = pq.read_table(train).to_pylist()[:3]
    pq.write_table(pa.Table.from_pylist(frame), other)
    with pytest.raises(phi_rounds.RoundsError, match="another training file"):
        phi_rounds.Rounds(rounds_env["dir"], other, 1, rounds_env["commands"]).run()


def test_infer_that_stops_early_with_status_0_is_not_committed(rounds_env, monkeypatch):
    monkeypatch.setenv("PHI_TEST_FAIL", "short 1")
    with pytest.raises(phi_rounds.RoundsError) as caught:
        _run(rounds_env, rounds=2)
    message = str(caught.value)
    assert "exited 0" in message and f"2 of {len(GOLD)} training samples (2 missing" in message
    assert "re-run the same command line" in message
    run = rounds_env["dir"]
    assert not (run / "round_1" / "predictions.jsonl").exists()
    assert not (run / "round_1" / "predictions.jsonl.partial").exists()  # responses may echo notes
    monkeypatch.setenv("PHI_TEST_FAIL", "")
    before = len(_log(rounds_env))
    _run(rounds_env, rounds=2)
    assert _log(rounds_env)[before:] == ["infer 1", "train 2", "export 2"]
    assert len((run / "round_1" / "predictions.jsonl").read_text().splitlines()) == len(GOLD)


def test_a_committed_partial_predictions_file_is_named_with_the_fix(rounds_env):
    _run(rounds_env, rounds=1)
    final = rounds_env["dir"] / "round_0" / "predictions.jsonl"
    final.write_text("\n".join(final.read_text().splitlines()[:2]) + "\n")  # as an earlier version committed it
    (rounds_env["dir"] / "round_1" / "train.parquet").unlink()  # so that the pools are refreshed again
    with pytest.raises(phi_rounds.RoundsError, match=f"Fix: delete {final} and re-run"):
        _run(rounds_env, rounds=1)
    final.unlink()
    _run(rounds_env, rounds=1)
    assert len(final.read_text().splitlines()) == len(GOLD)
