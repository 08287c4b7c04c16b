"""SIGKILL at seeded random points: phi_refresh and the phi_rounds driver (with stand-in step commands) are killed
and re-run, and infer's resume logic is fed the files a kill leaves (a torn last line, a stale temporary). After
every kill the previous output is intact or the new one complete; the next run resumes to the same result as an
uninterrupted one, or refuses with the exact fix; no temporary holding note text (a canary) is left behind."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from canary import assert_no_canary, canary_note

from data_tools.evaluation import infer
from data_tools.phi import refresh as phi_refresh

REPO = Path(__file__).resolve().parents[2]
SEED = 20240611
CODES = ["401.9", "428.0", "584.9", "276.2", "96.04", "250.00", "427.31", "414.01", "272.4", "518.81"]
N_ROWS = 400


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
            "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """A training parquet in data_tools.build.prepare's schema whose prompts are canary notes, and predictions on it."""
    base = tmp_path_factory.mktemp("faults")
    rng = random.Random(SEED)
    rows, preds = [], []
    for i in range(N_ROWS):
        gold = rng.sample(CODES, rng.randint(1, 5))
        rows.append({"data_source": "llm4icd/t", "prompt": [{"role": "user", "content": canary_note(300)}],
                     "ability": "icd_coding", "reward_model": {"style": "rule", "ground_truth": gold},
                     "extra_info": {"index": i, "sample_id": f"s{i}", "split": "train", "code_system": "icd9",
                                    "label_space": "t", "n_codes": len(gold)}})
        preds.append({"id": f"s{i}", "response": f"<code>{', '.join(c for c in gold if rng.random() < 0.6)}</code> "
                                                 + canary_note(20)})
    train = base / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), train)
    predictions = base / "preds.jsonl"
    predictions.write_text("".join(json.dumps(p) + "\n" for p in preds), encoding="utf-8")
    gold = {r["extra_info"]["sample_id"]: r["reward_model"]["ground_truth"] for r in rows}
    return {"base": base, "train": train, "predictions": predictions, "gold": gold}


def _kill_at(cmd: list[str], delay: float, cwd: Path) -> int | None:
    """Start ``cmd``, SIGKILL its process group after ``delay`` s; its exit status if it finished first."""
    proc = subprocess.Popen(cmd, env=_env(), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        return proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None


def _phi_column(path: Path) -> list:
    return pq.read_table(path).column("phi").to_pylist()


def test_phi_refresh_killed_at_random_points(corpus, tmp_path):
    reference = tmp_path / "reference" / "train.parquet"
    phi_refresh.refresh(corpus["train"], corpus["predictions"], reference, 1)
    expected = _phi_column(reference)
    cmd = [sys.executable, "-m", "data_tools.phi.refresh", "--train", str(corpus["train"]), "--predictions",
           str(corpus["predictions"]), "--round", "1"]
    start = time.monotonic()
    assert _kill_at(cmd + ["--out", str(tmp_path / "timing" / "train.parquet")], 120, tmp_path) == 0
    duration = time.monotonic() - start
    rng = random.Random(SEED)
    outcomes = {"killed, no output": 0, "killed, output complete": 0, "finished": 0}
    for k in range(5):
        out = tmp_path / f"kill_{k}" / "train.parquet"
        status = _kill_at(cmd + ["--out", str(out)], rng.uniform(0.3, 1.05) * duration, tmp_path)
        if out.exists():  # the parquet is renamed into place last: present means complete
            assert _phi_column(out) == expected
            assert json.loads(phi_refresh.summary_path(out).read_text())["rows"] == N_ROWS
            with pytest.raises(phi_refresh.RefreshError, match="already exists. Fix: pass --overwrite"):
                phi_refresh.refresh(corpus["train"], corpus["predictions"], out, 1)
            outcomes["finished" if status == 0 else "killed, output complete"] += 1
        else:
            outcomes["killed, no output"] += 1
            phi_refresh.refresh(corpus["train"], corpus["predictions"], out, 1)  # the next run completes it
            assert _phi_column(out) == expected
        assert_no_canary("", "", out.parent, datasets=[out])  # no temporary with prompts left beside it
    print(f"phi_refresh: clean run {duration:.2f} s; {outcomes}")


STEP = r'''
import json, os, sys, time, pathlib
from canary import canary_note
kind, rnd = sys.argv[1], int(sys.argv[2])
if kind == "train":
    ckpt = pathlib.Path(sys.argv[4])
    (ckpt / f"global_step_{rnd}" / "actor").mkdir(parents=True, exist_ok=True)
    time.sleep(0.2)
    (ckpt / "latest_checkpointed_iteration.txt").write_text(str(rnd))
elif kind == "export":
    (pathlib.Path(sys.argv[4]) / "lora_adapter").mkdir(parents=True)
else:
    gold = json.loads(os.environ["FAULT_GOLD"])
    with open(sys.argv[4], "w") as fh:
        for i, (sid, codes) in enumerate(gold.items()):
            keep = [c for j, c in enumerate(codes) if (i + j) % 3 < rnd + 1]  # more recovered each round
            fh.write(json.dumps({"id": sid, "response": "<code>" + ", ".join(keep) + "</code> " + canary_note(10)})
                     + "\n")
            fh.flush()
            if i % 50 == 0:
                time.sleep(0.02)
'''


def _rounds_cmd(run: Path, train: Path, script: Path) -> list[str]:
    py = sys.executable
    return [py, "-m", "data_tools.phi.rounds", "--out", str(run), "--train", str(train), "--rounds", "2",
            "--train-cmd", f"{py} {script} train {{round}} {{train_file}} {{ckpt_dir}} {{prev_adapter}}",
            "--export-cmd", f"{py} {script} export {{round}} {{actor_dir}} {{export_dir}}",
            "--infer-cmd", f"{py} {script} infer {{round}} {{adapter}} {{predictions}}"]


def _round_outputs(run: Path) -> dict:
    summaries = json.loads((run / "rounds_summary.json").read_text())
    return {"pools": {t: _phi_column(run / f"round_{t}" / "train.parquet") for t in (1, 2)},
            "summaries": [{k: v for k, v in s.items() if k not in ("train", "predictions")} for s in summaries],
            "predictions": {t: (run / f"round_{t}" / "predictions.jsonl").read_text() for t in (0, 1)}}


def test_phi_rounds_driver_killed_at_random_points(corpus, tmp_path, monkeypatch):
    script = tmp_path / "step.py"
    script.write_text(STEP)
    monkeypatch.setenv("FAULT_GOLD", json.dumps(corpus["gold"]))
    reference = tmp_path / "reference"
    start = time.monotonic()
    assert _kill_at(_rounds_cmd(reference, corpus["train"], script), 120, tmp_path) == 0
    duration = time.monotonic() - start
    expected = _round_outputs(reference)
    run = tmp_path / "run"
    rng = random.Random(SEED)
    kills = 0
    for _ in range(6):  # each attempt resumes the previous one and is killed at a random point
        status = _kill_at(_rounds_cmd(run, corpus["train"], script), rng.uniform(0.05, 0.6) * duration, tmp_path)
        kills += status is None
        for t in (0, 1):  # a committed predictions file is always complete
            final = run / f"round_{t}" / "predictions.jsonl"
            if final.exists():
                assert len(final.read_text().splitlines()) == N_ROWS
        if status == 0:
            break
    assert _kill_at(_rounds_cmd(run, corpus["train"], script), 120, tmp_path) == 0
    assert _round_outputs(run) == expected
    assert not list(run.rglob("*.partial")) and not list(run.rglob(".*.tmp-*"))
    datasets = [run / f"round_{t}" / n for t in (0, 1, 2) for n in ("predictions.jsonl", "train.parquet")]
    assert_no_canary("", "", run, datasets=datasets)
    print(f"phi_rounds: clean run {duration:.2f} s; {kills} kills before completion")


def _record(i: int) -> str:
    return json.dumps({"id": f"s{i}", "model": "m", "response": "<code>401.9</code> " + canary_note(15),
                       "pred": ["401.9"], "gold": ["401.9"]})


def test_infer_resume_after_a_kill_at_random_points(tmp_path):
    """A SIGKILL while infer appends leaves a prefix of its output cut at any byte: the resume keeps the complete
    lines, regenerates the rest, and ends with the file an uninterrupted run writes."""
    lines = [_record(i) + "\n" for i in range(30)]
    full = "".join(lines).encode()
    record = {"version": infer.RECORD_VERSION, "model": "/m", "model_sha256": "x", "split": "test"}
    rng = random.Random(SEED)
    for cut in sorted(rng.sample(range(len(full) + 1), 25)) + [0, len(full)]:
        folder = tmp_path / f"cut_{cut}"
        folder.mkdir()
        out = folder / "preds.jsonl"
        infer.plan_resume(out, record)  # the run record is written before the first line
        out.write_bytes(full[:cut])
        (folder / f".{out.name}.tmp-dead").write_bytes(full[:cut])  # a kill inside the torn-line rewrite
        done = infer.plan_resume(out, record)
        kept = full[: full.rfind(b"\n", 0, cut) + 1] if cut else b""
        assert out.read_bytes() == kept and done == {json.loads(x)["id"] for x in kept.decode().splitlines()}
        with open(out, "a", encoding="utf-8") as sink:  # what _generate appends: the ids not done, in order
            sink.writelines(x for x in lines if json.loads(x)["id"] not in done)
        assert out.read_bytes() == full
        assert_no_canary("", "", folder, datasets=[out])
        other = dict(record, split="val")  # and a different run is refused, the file left as it is
        with pytest.raises(infer.InferError, match="split differ.*Fix: pass --overwrite"):
            infer.plan_resume(out, other)
        assert out.read_bytes() == full
