"""data_tools.evaluation.infer: resumable JSONL bookkeeping (fast), and real vLLM CPU generation on the tiny model over
a prepared synthetic split (slow): a LoRA sweep in one engine, interrupted by SIGKILL mid-run plus a torn last line,
then resumed without redoing finished ids; a few-shot baseline run; and evaluation of the real outputs. Vote
calibration: shares and majority by hand, the vote matrix through the real thresholds CLI; constrained, voted
generation (slow) valid by construction."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from data_tools.evaluation import infer
from data_tools.build import prepare
from data_tools.build.synth import generate_mimic3

REPO = Path(__file__).resolve().parents[2]
MAX_PROMPT = 640
HAS_VLLM = importlib.util.find_spec("vllm") is not None


def _record(i: int) -> str:
    return json.dumps({"id": f"s{i}", "model": "m", "response": "<code>401.9</code>", "pred": ["401.9"],
                       "gold": ["401.9"]})


def test_finished_ids_cuts_a_torn_last_line(tmp_path):
    path = tmp_path / "out.jsonl"
    whole = "".join(_record(i) + "\n" for i in range(3))
    path.write_text(whole + _record(3)[:17], encoding="utf-8")  # the write of s3 was cut short
    assert infer.finished_ids(path) == {"s0", "s1", "s2"}
    assert path.read_text(encoding="utf-8") == whole  # the torn tail is gone, the rest untouched
    assert infer.finished_ids(tmp_path / "missing.jsonl") == set()


def test_finished_ids_rejects_a_foreign_file(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text(_record(0) + "\nnot json\n" + _record(1) + "\n", encoding="utf-8")
    with pytest.raises(infer.InferError, match="line 2 is not a prediction record"):
        infer.finished_ids(path)


def test_bad_arguments_fail_before_loading_anything(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    assert infer.main(["--data", str(tmp_path), "--model", str(tmp_path / "model"), "--output", "x.jsonl"]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert infer.main(["--data", str(tmp_path), "--model", str(tmp_path), "--lora", "nopath"]) == 2
    assert "expected NAME=PATH" in capsys.readouterr().err
    assert infer.main(["--data", str(tmp_path), "--model", str(tmp_path), "--lora", f"a={tmp_path}"]) == 2
    assert "adapter_config.json" in capsys.readouterr().err


def test_out_is_the_output_flag_and_the_older_names_still_work(tmp_path, capsys):
    parser = infer.build_parser()
    base = ["--data", str(tmp_path), "--model", str(tmp_path)]
    for flag in ("--out", "--output", "--output-dir"):
        assert parser.parse_args(base + [flag, "p.jsonl"]).out == Path("p.jsonl")
    assert "--out PATH" in parser.format_help()
    adapter = tmp_path / "ad"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (tmp_path / "config.json").write_text("{}")
    assert infer.main(base + ["--lora", f"a={adapter}", "--out", str(tmp_path / "p.jsonl")]) == 2
    assert "with --lora it is a folder" in capsys.readouterr().err
    assert infer.main(base) == 2
    assert "give --out FILE.jsonl" in capsys.readouterr().err


# --- real generation with vLLM's CPU build ---------------------------------------------------------------

@pytest.fixture(scope="module")
def variant(tmp_path_factory, tiny_model_dir):
    base = tmp_path_factory.mktemp("infer")
    raw = generate_mimic3(base / "raw", n_admissions=120, seed=7)
    assert prepare.main(["mimic3", "--root", str(raw["root"]), "--out", str(base / "prep"), "--variants", "full",
                         "--min-code-count", "2", "--tokenizer", str(tiny_model_dir), "--max-prompt-length",
                         str(MAX_PROMPT), "--hint-reserve", "0", "--cutoff-len", str(MAX_PROMPT + 200)]) == 0
    return base / "prep" / "mimic3_full"


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, tiny_model_dir):
    """A random LoRA adapter on every linear layer, strong enough to change greedy outputs."""
    peft = pytest.importorskip("peft")
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                          init_lora_weights=False))
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if "lora_B" in name:
                param.mul_(5.0)
    out = tmp_path_factory.mktemp("lora") / "adapter"
    wrapped.save_pretrained(out)
    return out


def _infer_args(variant: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return ["--data", str(variant), "--split", "test", "--model", str(model), "--output", str(out),
            "--max-new-tokens", "8", "--max-samples", "2", *extra]


def _records(argv: list[str]) -> dict:
    return infer.run_records(infer.build_parser().parse_args(argv))


def test_resume_refuses_another_run_and_resumes_the_same(variant, tiny_model_dir, tiny_texts, tmp_path, capsys):
    """The run record decides: another model in a folder of the same name, another split or other decoding
    settings are refused before anything is loaded; the same run resumes after its finished ids."""
    from data_tools.build.tiny_model import build_tiny_model

    model = tmp_path / "a" / "model"
    shutil.copytree(tiny_model_dir, model)
    other = build_tiny_model(tmp_path / "b" / "model", tiny_texts, seed=1)  # same architecture and files
    out = tmp_path / "preds.jsonl"
    argv = _infer_args(variant, model, out)
    record = _records(argv)[out]
    assert infer.plan_resume(out, record) == set() and json.loads(infer.meta_path(out).read_text()) == record
    ids = [e["sample_id"] for e in pd.read_parquet(variant / "verl" / "test.parquet")["extra_info"]]
    out.write_text("".join(json.dumps({"id": i, "model": "model", "response": "", "pred": [], "gold": []}) + "\n"
                           for i in ids[:3]) + '{"id": "' + ids[3], encoding="utf-8")  # killed mid-line
    before = out.read_bytes()

    shutil.rmtree(model)
    shutil.copytree(other, model)  # same path, same folder name, another model
    assert infer.main(argv) == 2
    err = capsys.readouterr().err
    assert "model_sha256" in err and "--overwrite" in err and "split" not in err and "Traceback" not in err
    assert out.read_bytes() == before
    shutil.rmtree(model)
    shutil.copytree(tiny_model_dir, model)
    for extra, named in ((["--split", "val"], "split, data_sha256"), (["--temperature", "0.7"], "decoding.temperature"),
                         (["--max-new-tokens", "9"], "decoding.max_new_tokens")):
        args = _infer_args(variant, model, out, *extra)
        if extra[0] == "--split":
            args[args.index("test")] = "val"
        assert infer.main(args) == 2
        assert named in capsys.readouterr().err
        assert out.read_bytes() == before
    # the same run resumes: finished ids are skipped, the torn line is cut
    assert infer.plan_resume(out, _records(argv)[out]) == set(ids[:3])
    assert out.read_bytes() == before[: before.rfind(b"\n") + 1]
    # --overwrite starts again under the new record
    new = _records(_infer_args(variant, model, out, "--temperature", "0.7"))[out]
    assert infer.plan_resume(out, new, overwrite=True) == set() and not out.exists()
    assert json.loads(infer.meta_path(out).read_text()) == new


def test_output_without_a_run_record_is_not_resumed(variant, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "old.jsonl"
    out.write_text(_record(0) + "\n", encoding="utf-8")  # written before run records existed
    assert infer.main(_infer_args(variant, tiny_model_dir, out)) == 2
    err = capsys.readouterr().err
    assert "no run record" in err and "--overwrite" in err
    assert out.read_text(encoding="utf-8") == _record(0) + "\n"


def test_fingerprint_tells_weight_files_apart_by_content(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, fill in ((a, b"\x01"), (b, b"\x02")):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        big = bytearray(b"\0" * (infer.WHOLE_FILE_LIMIT + 3 * infer.SAMPLE))
        big[len(big) // 2] = fill[0]  # differs only in the middle sample of a large file
        (folder / "model.safetensors").write_bytes(bytes(big))
    assert infer.fingerprint(a) != infer.fingerprint(b)
    (b / "model.safetensors").write_bytes((a / "model.safetensors").read_bytes())
    assert infer.fingerprint(a) == infer.fingerprint(b)
    (b / ".model.safetensors.tmp-x").write_text("a temporary is not part of the model")
    assert infer.fingerprint(a) == infer.fingerprint(b)


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


@pytest.mark.slow
@pytest.mark.skipif(not HAS_VLLM, reason="needs vLLM (the CPU build, vllm-cpu, works)")
def test_lora_sweep_survives_a_kill_and_resumes(variant, tiny_model_dir, lora_dir, tmp_path):
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "data_tools.evaluation.infer", "--data", str(variant), "--split", "test",
               "--model", str(tiny_model_dir), "--lora", f"ad={lora_dir}", "--include-base", "--output-dir", str(out),
               "--max-new-tokens", "48", "--max-model-len", str(MAX_PROMPT + 64), "--enforce-eager"]
    # 1. One sample per engine call, killed (SIGKILL, no clean-up) once a few results are on disk.
    log = open(tmp_path / "first.log", "w")
    process = subprocess.Popen(command + ["--batch-size", "1"], env=_env(), cwd=tmp_path, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while len(_lines(out / "base.jsonl")) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    log.close()
    before = _lines(out / "base.jsonl")
    test_ids = pd.read_parquet(variant / "examples" / "test.parquet")["id"].tolist()
    assert 3 <= len(before) < len(test_ids), (tmp_path / "first.log").read_text()[-2000:]
    assert not (out / "ad.jsonl").exists() or len(_lines(out / "ad.jsonl")) < len(test_ids)
    with open(out / "base.jsonl", "a", encoding="utf-8") as fh:  # and a write cut short mid-line
        fh.write('{"id": "' + test_ids[-1] + '", "model": "ba')

    # 2. The same command again: finished ids are kept as they are, the rest is generated.
    resumed = subprocess.run(command, env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    base = _lines(out / "base.jsonl")
    assert base[:len(before)] == before  # nothing finished was redone or rewritten
    assert f"[infer] base: {len(test_ids) - len(before)} generated ({len(before)} already done)" in resumed.stdout
    records = {name: [json.loads(x) for x in _lines(out / f"{name}.jsonl")] for name in ("base", "ad")}
    examples = pd.read_parquet(variant / "examples" / "test.parquet").set_index("id")
    verl = pd.read_parquet(variant / "verl" / "test.parquet")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt_tokens = {e["sample_id"]: len(tokenizer.apply_chat_template(list(p), tokenize=True,
                                                                       add_generation_prompt=True, return_dict=False))
                     for p, e in zip(verl["prompt"], verl["extra_info"])}
    for name, rows in records.items():
        assert sorted(r["id"] for r in rows) == sorted(test_ids)  # each id exactly once
        for r in rows:
            assert r["model"] == name and r["gold"] == list(examples.loc[r["id"], "codes"])
            assert r["prompt_tokens"] == prompt_tokens[r["id"]] <= MAX_PROMPT  # the training prompt and template
            assert 0 < r["gen_tokens"] <= 48 and r["finish_reason"] in ("length", "stop")
    by_id = {r["id"]: r["response"] for r in records["base"]}
    changed = sum(r["response"] != by_id[r["id"]] for r in records["ad"])
    assert changed >= len(test_ids) // 2  # the adapter is really applied
    # Other decoding settings into the same folder: refused before the engine starts, the outputs untouched.
    other = command[:command.index("--max-new-tokens") + 1] + ["40"] + command[command.index("--max-new-tokens") + 2:]
    refused = subprocess.run(other, env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "decoding.max_new_tokens" in refused.stderr, refused.stderr[-2000:]
    assert _lines(out / "base.jsonl") == base

    # 3. The evaluation reads these real outputs (responses are re-parsed).
    from data_tools.evaluation.evaluate import main as evaluate_main

    report = tmp_path / "eval"
    assert evaluate_main(["--predictions", str(out / "ad.jsonl"), "--data", str(variant), "--output-dir",
                          str(report), "--bootstrap", "100"]) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["n_docs"] == len(test_ids) and metrics["n_responses"] == len(test_ids)
    assert metrics["no_span_rate"] == pytest.approx(sum(not r["has_span"] for r in records["ad"]) / len(test_ids))
    assert (report / "buckets.png").is_file() and (report / "f1_vs_frequency.png").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not HAS_VLLM, reason="needs vLLM (the CPU build, vllm-cpu, works)")
def test_few_shot_baseline_generation(variant, tiny_model_dir, tmp_path):
    out = tmp_path / "few_shot.jsonl"
    budget = 1200
    ran = subprocess.run([sys.executable, "-m", "data_tools.evaluation.infer", "--data", str(variant),
                          "--split", "test", "--model", str(tiny_model_dir), "--prompt", "few_shot_cot",
                          "--prompt-budget", str(budget),
                          "--max-samples", "4", "--output", str(out), "--max-new-tokens", "16",
                          "--max-model-len", str(budget + 16), "--enforce-eager"],
                         env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    rows = [json.loads(x) for x in _lines(out)]
    train_ids = set(pd.read_parquet(variant / "examples" / "train.parquet")["id"])
    assert len(rows) == 4
    for r in rows:
        assert r["prompt_kind"] == "few_shot_cot" and 1 <= len(r["shot_ids"]) <= 3
        assert set(r["shot_ids"]) <= train_ids and r["prompt_tokens"] <= budget
    assert "samples/s" in ran.stdout and "prompt tok/s" in ran.stdout


# --- vote calibration (pure) and constrained decoding settings ------------------------------------------

def test_vote_shares_are_counts_over_k_and_the_majority_is_at_least_half():
    samples = [["401.9", "428.0"], ["401.9"], ["401.9", "401.9", "584.9"], ["428.0"]]  # K = 4
    majority, votes = infer.aggregate_votes(samples)
    # by hand: 401.9 in samples 1-3 (repeated once in 3: one vote), 428.0 in 1 and 4, 584.9 in 3
    assert votes == {"401.9": 3 / 4, "428.0": 2 / 4, "584.9": 1 / 4}
    assert majority == ["401.9", "428.0"]  # 2 of 4 is half: kept; most voted first
    majority, votes = infer.aggregate_votes([["a"], ["b", "a"], ["b"]])  # K = 3: 1 vote is a third, 2 are a majority
    assert votes == {"a": 2 / 3, "b": 2 / 3} and majority == ["a", "b"]  # a tie keeps first-seen order
    assert infer.aggregate_votes([["c"], [], [], []]) == ([], {"c": 0.25})
    assert infer.aggregate_votes([[], []]) == ([], {})


def test_sampling_and_constraint_settings_are_checked_and_define_the_run(variant, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    for extra, message in ((["--samples", "4"], "greedy decoding repeats"), (["--samples", "0"], "at least 1"),
                           (["--max-codes", "3"], "--constrain")):
        assert infer.main(_infer_args(variant, tiny_model_dir, out, *extra)) == 2
        assert message in capsys.readouterr().err
    assert not out.exists() and not infer.meta_path(out).exists()
    plain = _records(_infer_args(variant, tiny_model_dir, out))[out]["decoding"]
    voted = _records(_infer_args(variant, tiny_model_dir, out, "--samples", "4", "--temperature", "1"))[out]["decoding"]
    closed = _records(_infer_args(variant, tiny_model_dir, out, "--constrain", "label-space"))[out]["decoding"]
    capped = _records(_infer_args(variant, tiny_model_dir, out, "--constrain", "label-space", "--max-codes", "5"))[out]
    assert plain["constrain"] == "off" and "grammar_sha256" not in plain and voted["samples"] == 4
    assert closed["constrain"] == "label-space" and capped["decoding"]["max_codes"] == 5
    assert capped["decoding"]["grammar_sha256"] != closed["grammar_sha256"]
    infer.plan_resume(out, _records(_infer_args(variant, tiny_model_dir, out))[out])
    out.write_text(_record(0) + "\n", encoding="utf-8")
    assert infer.main(_infer_args(variant, tiny_model_dir, out, "--constrain", "label-space")) == 2
    assert "decoding.constrain" in capsys.readouterr().err  # a constrained run never appends to a free one


def _voted_file(path: Path, frame: pd.DataFrame, space: list[str], k: int = 4) -> dict:
    """Fake K parsed samples per note: every in-space gold code in 3 of 4 samples, one wrong code in 1 of 4."""
    shares = {}
    with open(path, "w", encoding="utf-8") as fh:
        for row, (doc, gold) in enumerate(zip(frame["id"], frame["codes"])):
            good = [c for c in gold if c in space]
            wrong = next(c for c in space[row % len(space):] + space if c not in gold)
            samples = [good, good, good + [wrong], [wrong]]
            majority, votes = infer.aggregate_votes(samples)
            shares[doc] = {**{c: 0.75 for c in good}, wrong: 0.5}
            fh.write(json.dumps({"id": doc, "gold": list(gold), "pred": majority, "votes": votes}) + "\n")
    return shares


def test_vote_matrix_feeds_thresholds_end_to_end(variant, tmp_path):
    from data_tools.evaluation import thresholds

    space = json.loads((variant / "label_space.json").read_text())["codes"]
    written = {}
    for split in ("val", "test"):
        frame = pd.read_parquet(variant / "examples" / f"{split}.parquet")
        expected = _voted_file(tmp_path / f"{split}.jsonl", frame, space)
        written[split] = infer.write_vote_matrix(tmp_path / f"{split}.jsonl", space)
        assert written[split] == tmp_path / f"{split}.votes.npz"
        matrix = thresholds.load_matrix(written[split])
        assert matrix.codes == space and matrix.ids == [str(i) for i in frame["id"]]
        for i, doc in enumerate(matrix.ids):
            assert {matrix.codes[j]: matrix.probs[i, j] for j in matrix.probs[i].nonzero()[0]} == expected[doc]
    report = tmp_path / "tuned"
    assert thresholds.main(["--val", str(written["val"]), "--test", str(written["test"]), "--data", str(variant),
                            "--output-dir", str(report), "--bootstrap", "0", "--no-plots"]) == 0
    tuned = json.loads((report / "threshold.json").read_text())
    # gold codes have share 0.75, wrong codes 0.5: the first grid point k/99 >= 0.5 separates them
    assert tuned["threshold"] == pytest.approx(50 / 99)
    test = pd.read_parquet(variant / "examples" / "test.parquet")
    tp = sum(len([c for c in g if c in space]) for g in test["codes"])
    fn = sum(len([c for c in g if c not in space]) for g in test["codes"])
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["micro_f1"] == pytest.approx(tp / (tp + 0.5 * fn))
    bad = tmp_path / "greedy.jsonl"
    bad.write_text(_record(0) + "\n", encoding="utf-8")
    with pytest.raises(infer.InferError, match="line 1 has no vote shares"):
        infer.write_vote_matrix(bad, space)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_VLLM, reason="needs vLLM (the CPU build, vllm-cpu, works)")
def test_constrained_voted_generation_is_valid_by_construction(variant, tiny_model_dir, tmp_path):
    """The random tiny model writes garbage when free (see the tests above); constrained by the label-space grammar
    every one of its K samples per note must be a closed, well-formed list of at most 3 label-space codes."""
    out = tmp_path / "voted.jsonl"
    k = 4
    ran = subprocess.run([sys.executable, "-m", "data_tools.evaluation.infer", "--data", str(variant),
                          "--split", "test", "--model", str(tiny_model_dir), "--output", str(out),
                          "--constrain", "label-space",
                          "--max-codes", "3", "--samples", str(k), "--temperature", "1.0", "--max-new-tokens", "96",
                          "--max-model-len", str(MAX_PROMPT + 96), "--enforce-eager"],
                         env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    space = json.loads((variant / "label_space.json").read_text())["codes"]
    rows = [json.loads(x) for x in _lines(out)]
    assert len(rows) == len(pd.read_parquet(variant / "examples" / "test.parquet"))
    seen = set()
    for r in rows:
        assert len(r["responses"]) == k and r["finish_reasons"] == ["stop"] * k
        counts: dict[str, int] = {}
        for text in r["responses"]:
            assert text.startswith("<code>") and text.endswith("</code>")
            codes = text[len("<code>"): -len("</code>")].split(", ")
            assert 1 <= len(codes) <= 3 and set(codes) <= set(space), "a code outside the label space"
            seen.update(codes)
            for code in set(codes):
                counts[code] = counts.get(code, 0) + 1
        assert r["votes"] == pytest.approx({c: n / k for c, n in counts.items()})
        assert set(r["pred"]) == {c for c, n in counts.items() if 2 * n >= k}
        assert r["n_no_span"] == r["n_format_bad"] == r["n_malformed"] == 0
    assert len(seen) >= 10  # sampling really ranges over the label space
    from data_tools.evaluation import thresholds

    matrix = thresholds.load_matrix(out.with_name("voted.votes.npz"))
    assert matrix.codes == space and matrix.ids == [r["id"] for r in rows]
    assert matrix.probs.sum() == pytest.approx(sum(sum(r["votes"].values()) for r in rows))


def test_prompts_go_to_vllm_as_ids_with_one_bos_and_the_variants_template(tmp_path):
    """A Llama-3 prompt rendered here keeps its single <|begin_of_text|> (vLLM would add a second to a text
    prompt), and a backbone's chat template recorded in stats.json replaces the model's own."""
    from backbone_tokenizers import LLAMA31_CHAT_TEMPLATE, LLAMA3_CHAT_TEMPLATE, build_tokenizer

    model = build_tokenizer(tmp_path / "llama31", "llama3.1")
    variant = tmp_path / "variant"
    variant.mkdir()
    (variant / "stats.json").write_text(json.dumps({"tokens": {"chat_template": LLAMA3_CHAT_TEMPLATE}}))
    messages = [{"role": "user", "content": "chest pain, troponin negative"}]

    tokenizer = infer.load_tokenizer(model, variant)
    assert tokenizer.chat_template == LLAMA3_CHAT_TEMPLATE != LLAMA31_CHAT_TEMPLATE
    [prompt] = infer.prompt_inputs(tokenizer, [messages], {})
    ids = prompt["prompt_token_ids"]
    bos = tokenizer.convert_tokens_to_ids("<|begin_of_text|>")
    assert ids.count(bos) == 1 and ids[0] == bos
    assert "Today Date" not in tokenizer.decode(ids)
    # The same ids as the text prompt tokenized without special tokens: nothing else changes.
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ids == tokenizer(text, add_special_tokens=False)["input_ids"]

    (variant / "stats.json").write_text(json.dumps({"tokens": {}}))  # no override: the model's own template
    assert "Today Date" in infer.load_tokenizer(model, variant).apply_chat_template(messages, tokenize=False)
