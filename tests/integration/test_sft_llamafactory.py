"""Stage-1 SFT with the real LlamaFactory 0.9.5 on the tiny model: recipe files, shell wrappers, the data
pipeline on data_tools.build.prepare output (loss masks, nothing cut), LoRA training and the merge/export.

LlamaFactory lives in its own environment: ``$LLM4ICD_SFT_ENV`` (default ``<repo>/.venvs/sft``, then
``/tmp/envtest/sft``); these tests run its CLI and python through subprocesses.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPES = REPO_ROOT / "recipes"
CUTOFF_LEN = 768  # tiny tokenizer: the instruction alone is a few hundred tokens


def _find_sft_env() -> Path | None:
    candidates = [os.environ.get("LLM4ICD_SFT_ENV"), REPO_ROOT / ".venvs" / "sft", "/tmp/envtest/sft"]
    for cand in candidates:
        if cand and (Path(cand) / "bin" / "llamafactory-cli").is_file():
            return Path(cand)
    return None


SFT_ENV = _find_sft_env()
needs_sft_env = pytest.mark.skipif(SFT_ENV is None, reason="no LlamaFactory environment: set LLM4ICD_SFT_ENV")


def _sft_environ() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_TORCHRUN", "PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", WANDB_DISABLED="true", DISABLE_VERSION_CHECK="1")
    return env


def _run(cmd, *, env=None, cwd=REPO_ROOT, timeout=300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env or _sft_environ(), capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{cmd[0]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _sft_python(script: str, *args, timeout=300) -> subprocess.CompletedProcess:
    return _run([SFT_ENV / "bin" / "python", "-c", textwrap.dedent(script), *args], timeout=timeout)


# --- recipes: tests/recipes/test_sft_recipes.py (every backbone x dataset x profile through LlamaFactory's parser) ----

def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _tiny_recipe(tmp_path: Path, kind: str = "train") -> Path:
    """The tiny CPU recipe, written by recipes/tiny/sft/compose.py (the users' SFT recipe at tiny scale)."""
    out = tmp_path / f"tiny_{kind}.yaml"
    subprocess.run([sys.executable, str(RECIPES / "tiny" / "sft" / "compose.py"), kind, "--out", str(out)],
                   check=True, cwd=REPO_ROOT)
    return out


# --- data prepared by data_tools.build.prepare, then LlamaFactory --------------------------------------------

_SENTENCES = (
    "chief complaint: shortness of breath and leg swelling.",
    "history of present illness: 71 y/o woman with chf, htn and afib presenting with dyspnea.",
    "hospital course: diuresed with iv furosemide, creatinine peaked at 2.1 then improved to 1.3.",
    "discharge diagnosis: acute on chronic diastolic heart failure; acute kidney injury; hypertension.",
    "procedures: intubation and mechanical ventilation; arterial catheterization.",
    "discharge medications: metoprolol 25 mg bid, furosemide 40 mg daily, apixaban 5 mg bid.",
)
_CODES = ("401.9", "428.0", "427.31", "584.9", "272.4", "250.00", "96.04", "38.91")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_model_dir):
    """Run the real data_tools.build.prepare (generic table, tiny tokenizer) so that notes are truncated."""
    root = tmp_path_factory.mktemp("sft_data")
    rng = random.Random(0)
    rows = []
    for i in range(40):
        text = "\n".join(rng.choice(_SENTENCES) for _ in range(rng.randint(2, 40)))
        split = "train" if i < 28 else ("val" if i < 34 else "test")
        rows.append({"id": f"s{i}", "subject_id": f"p{i}", "text": text, "split": split,
                     "codes": sorted(rng.sample(_CODES, rng.randint(1, 6)))})
    table = root / "notes.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = root / "prepared"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    _run([sys.executable, "-m", "data_tools.build.prepare", "generic", "--input", table, "--code-system", "icd9",
          "--out", out, "--name", "synthetic", "--variants", "full", "--min-code-count", "1",
          "--tokenizer", tiny_model_dir, "--cutoff-len", CUTOFF_LEN, "--max-prompt-length", CUTOFF_LEN,
          "--hint-reserve", "0"], env=env)
    variant = out / "synthetic_full"
    stats = json.loads((variant / "stats.json").read_text())
    assert stats["tokens"]["n_truncated"] > 0, "the fixture must exercise truncation"
    return variant


_DUMP_SCRIPT = """
    import json, sys
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    base, out = json.loads(sys.argv[1]), {}
    for cutoff in json.loads(sys.argv[2]):
        model_args, data_args, training_args, _, _ = get_train_args(dict(base, cutoff_len=cutoff))
        tok = load_tokenizer(model_args)
        template = get_template_and_fix_tokenizer(tok["tokenizer"], data_args)
        data = get_dataset(template, model_args, data_args, training_args, stage="sft", **tok)["train_dataset"]
        out[str(cutoff)] = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in data]
    json.dump(out, open(sys.argv[3], "w"))
"""


def _render_ids(tokenizer, messages, **kw):
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False, **kw))


@pytest.mark.slow
@needs_sft_env
def test_llamafactory_pipeline_masks_prompt_and_cuts_nothing(prepared, tiny_model_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = [json.loads(line) for line in (prepared / "sharegpt" / "train.jsonl").read_text().splitlines()]
    full = [_render_ids(tok, ex["messages"]) for ex in examples]
    longest = max(range(len(full)), key=lambda i: len(full[i]))
    assert len(full[longest]) <= CUTOFF_LEN
    recipe = _load(_tiny_recipe(tmp_path))
    base = dict(recipe, model_name_or_path=str(tiny_model_dir), dataset_dir=str(prepared),
                dataset="synthetic_full_train", eval_dataset=None, output_dir=str(tmp_path / "unused"))
    base = {k: v for k, v in base.items() if v is not None}
    dump = tmp_path / "dump.json"
    # The recipe's cutoff, and one token less than the longest example as a negative control.
    cutoffs = [CUTOFF_LEN, len(full[longest]) - 1]
    _sft_python(_DUMP_SCRIPT, json.dumps(base), json.dumps(cutoffs), dump)
    dumped = json.loads(dump.read_text())

    rows = dumped[str(CUTOFF_LEN)]
    assert len(rows) == len(examples)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    for ex, row, expected in zip(examples, rows, full):
        # LlamaFactory's built-in qwen template == the tokenizer's chat template, token for token: nothing cut.
        assert row["input_ids"] == expected
        n_prompt = len(_render_ids(tok, ex["messages"][:1], add_generation_prompt=True))
        labels = row["labels"]
        assert set(labels[:n_prompt]) == {-100}
        assert labels[n_prompt:] == row["input_ids"][n_prompt:]
        answer = ex["messages"][1]["content"]
        # Trained: the answer, <|im_end|> and the newline the template puts after it.
        assert tok.decode(labels[n_prompt:]) == answer + "<|im_end|>\n"
        assert im_end in labels[n_prompt:]

    cut = dumped[str(cutoffs[1])][longest]
    assert len(cut["input_ids"]) == cutoffs[1] and cut["input_ids"] != full[longest]
    # What LlamaFactory does to an over-long example: keeps the answer, cuts the prompt's end silently.
    assert tok.decode(cut["input_ids"]).endswith(examples[longest]["messages"][1]["content"] + "<|im_end|>\n")
    assert "<|im_start|>assistant\n<code>" not in tok.decode(cut["input_ids"])


def _losses(output_dir: Path) -> list[float]:
    log = output_dir / "trainer_log.jsonl"
    return [r["loss"] for r in map(json.loads, log.read_text().splitlines()) if "loss" in r]


@pytest.mark.slow
@needs_sft_env
def test_lora_sft_then_merge(prepared, tiny_model_dir, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    adapter, merged = tmp_path / "adapter", tmp_path / "merged"
    steps = 12
    trained = _run([SFT_ENV / "bin" / "python", "-m", "llm4icd_plugins.llamafactory.cli", "train",
                    _tiny_recipe(tmp_path),
          f"model_name_or_path={tiny_model_dir}", f"dataset_dir={prepared}", "dataset=synthetic_full_train",
          "eval_dataset=synthetic_full_val", "eval_strategy=steps", f"eval_steps={steps}",
          f"output_dir={adapter}", f"max_steps={steps}", f"cutoff_len={CUTOFF_LEN}"])
    console = trained.stdout + trained.stderr
    assert "[llm4icd] example:" in console and "inputs:" not in console
    assert not any(sentence.split(":")[1].strip()[:30] in console for sentence in _SENTENCES), "note text leaked"
    losses = _losses(adapter)
    assert len(losses) == steps and all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, f"loss did not go down: {losses}"
    assert "eval_loss" in json.loads((adapter / "all_results.json").read_text())
    adapter_cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == 8 and (adapter / "adapter_model.safetensors").is_file()
    assert set(adapter_cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                  "up_proj", "down_proj"}

    _run([SFT_ENV / "bin" / "python", "-m", "llm4icd_plugins.llamafactory.cli", "export",
          _tiny_recipe(tmp_path, "merge"), f"model_name_or_path={tiny_model_dir}",
          f"adapter_name_or_path={adapter}", f"export_dir={merged}"])
    assert not list(merged.glob("adapter_*")), "export must merge the adapter, not copy it"
    tok = transformers.AutoTokenizer.from_pretrained(merged)
    model = transformers.AutoModelForCausalLM.from_pretrained(merged).eval()
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with_adapter = peft.PeftModel.from_pretrained(
        transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter).eval()
    ids = tok.apply_chat_template([{"role": "user", "content": "hypertension, chf"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        got, ref, orig = (m(**ids).logits for m in (model, with_adapter, base))
    assert torch.allclose(got, ref, atol=1e-4), "merged weights differ from base + adapter"
    assert not torch.allclose(got, orig, atol=1e-4), "training left the model unchanged"
    assert tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False) == \
        transformers.AutoTokenizer.from_pretrained(tiny_model_dir).apply_chat_template(
            [{"role": "user", "content": "x"}], tokenize=False)


@pytest.mark.slow
@needs_sft_env
def test_qwen3_template_with_thinking_off_matches_tokenizer(tiny_qwen3_model_dir, tmp_path):
    """Recipe setting for Qwen3-4B (template qwen3, enable_thinking false) on the tiny Qwen3: LlamaFactory's
    sequence equals the tokenizer's chat template, and the empty think block is masked as prompt."""
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(tiny_qwen3_model_dir)
    data = tmp_path / "data"
    data.mkdir()
    examples = [{"id": str(i),
                 "messages": [{"role": "user", "content": f"note {i}: " + " ".join(_SENTENCES[:i + 1])},
                              {"role": "assistant", "content": f"<code>{', '.join(_CODES[:i + 1])}</code>"}]}
                for i in range(4)]
    (data / "train.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
            "system_tag": "system"}
    (data / "dataset_info.json").write_text(json.dumps({"q3_train": {
        "file_name": "train.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages"}, "tags": tags}}))
    sys.path.insert(0, str(RECIPES))
    import launch

    from llm4icd_plugins.backbones import load_backbone

    recipe = launch.sft_config("mimic3_full", load_backbone("qwen3-4b"), launch.load_profile("paper"), data,
                               tmp_path / "unused", [])
    base = {k: recipe[k] for k in ("stage", "do_train", "finetuning_type", "lora_rank", "lora_target", "template",
                                    "enable_thinking", "train_on_prompt")}
    base.update(model_name_or_path=str(tiny_qwen3_model_dir), dataset_dir=str(data), dataset="q3_train",
                output_dir=str(tmp_path / "unused"), use_cpu=True, report_to="none", overwrite_cache=True)
    dump = tmp_path / "dump.json"
    _sft_python(_DUMP_SCRIPT, json.dumps(base), json.dumps([CUTOFF_LEN]), dump)
    rows = json.loads(dump.read_text())[str(CUTOFF_LEN)]
    assert len(rows) == len(examples)
    for ex, row in zip(examples, rows):
        assert row["input_ids"] == _render_ids(tok, ex["messages"])
        n_prompt = len(_render_ids(tok, ex["messages"][:1], add_generation_prompt=True, enable_thinking=False))
        assert tok.decode(row["input_ids"][:n_prompt]).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
        assert set(row["labels"][:n_prompt]) == {-100}
        assert tok.decode(row["labels"][n_prompt:]) == ex["messages"][1]["content"] + "<|im_end|>\n"
