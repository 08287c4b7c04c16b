"""The tiny-model builder: loads in transformers, renders Qwen2.5's/Qwen3's chat format exactly,
tokenises ICD codes character by character, has a head dim vLLM's CPU attention supports, and is
deterministic for a seed."""

from __future__ import annotations

import hashlib
import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from data_tools.build import tiny_model  # noqa: E402
from llm4icd_plugins.errors import UserError  # noqa: E402

VLLM_CPU_HEAD_DIMS = {32, 64, 80, 96, 112, 128, 160, 192, 224, 256}
DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def qwen25_render(messages, add_generation_prompt=False):
    """Qwen2.5-Instruct's chat format written out by hand (reference for the Jinja template)."""
    out = []
    if not messages or messages[0]["role"] != "system":
        out.append(f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n")
    for m in messages:
        out.append(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n")
    if add_generation_prompt:
        out.append("<|im_start|>assistant\n")
    return "".join(out)


CONVERSATIONS = [
    [{"role": "user", "content": "Code this note.\nDischarge Summary: pt with htn.\nAnswer:"}],
    [{"role": "user", "content": "note: copd, chf"}, {"role": "assistant", "content": "<code>496, 428.0</code>"}],
    [{"role": "system", "content": "You are a coder."}, {"role": "user", "content": "sepsis, uti"},
     {"role": "assistant", "content": "<code>038.9, 599.0</code>"}, {"role": "user", "content": "and procedures?"}],
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return transformers.AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_chat_template_equals_qwen25_rendering(tokenizer, conversation, add_generation_prompt):
    expected = qwen25_render(conversation, add_generation_prompt)
    rendered = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert rendered == expected
    ids = tokenizer.apply_chat_template(conversation, tokenize=True, add_generation_prompt=add_generation_prompt,
                                        return_dict=False)
    assert list(ids) == tokenizer(expected, add_special_tokens=False)["input_ids"]


def test_chat_template_rejects_tool_turns(tokenizer):
    with pytest.raises(Exception, match="unsupported role"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_qwen3_template_thinking_switch(tiny_qwen3_model_dir):
    tok = transformers.AutoTokenizer.from_pretrained(tiny_qwen3_model_dir)
    user = [{"role": "user", "content": "note: htn"}]
    # Qwen3 has no default system turn; enable_thinking=False pre-fills an empty think block.
    assert tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True) == \
        "<|im_start|>user\nnote: htn<|im_end|>\n<|im_start|>assistant\n"
    assert tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True, enable_thinking=False) == \
        "<|im_start|>user\nnote: htn<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    # A training pair: the final answer carries the (empty) think block, so prompt(enable_thinking=False)
    # is a prefix of the full conversation, as LlamaFactory's qwen3 template with enable_thinking: false.
    full = tok.apply_chat_template(user + [{"role": "assistant", "content": "<code>I10</code>"}], tokenize=False)
    assert full == ("<|im_start|>user\nnote: htn<|im_end|>\n<|im_start|>assistant\n"
                    "<think>\n\n</think>\n\n<code>I10</code><|im_end|>\n")
    config = json.loads((tiny_qwen3_model_dir / "config.json").read_text())
    assert config["model_type"] == "qwen3" and config["head_dim"] == tiny_model.HEAD_DIM


def test_special_tokens_and_code_tokenisation(tokenizer):
    for token in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"):
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids[0]) == token
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.bos_token is None
    # Qwen2's pre-tokenizer: every digit and the dot are separate tokens, so codes are learnable.
    pieces = [tokenizer.decode([i]) for i in tokenizer("401.9 96.04 E11.9", add_special_tokens=False)["input_ids"]]
    assert [p.strip() for p in pieces if p.strip() and not p.strip().isalpha()] == \
        ["4", "0", "1", ".", "9", "9", "6", ".", "0", "4", "1", "1", ".", "9"]
    text = "admission date: [**2150-1-1**]\n<code>0BH17EZ, S72.001A</code> ünïcode"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_model_loads_and_generates(tiny_model_dir, tokenizer):
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = model.config
    assert config.model_type == "qwen2" and config.tie_word_embeddings
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    assert head_dim in VLLM_CPU_HEAD_DIMS
    assert config.vocab_size == len(tokenizer)
    assert config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    gen = json.loads((tiny_model_dir / "generation_config.json").read_text())
    assert gen["eos_token_id"] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert gen["pad_token_id"] == tokenizer.pad_token_id
    prompt = tokenizer.apply_chat_template(CONVERSATIONS[0], add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    with torch.no_grad():
        logits = model(**prompt).logits
        out = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert logits.shape == (1, prompt["input_ids"].shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()
    assert out.shape[1] > prompt["input_ids"].shape[1]


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_deterministic_for_a_seed(tmp_path, tiny_texts):
    kwargs = {"layers": 1, "hidden": 64, "vocab_size": 600}
    a = tiny_model.build_tiny_model(tmp_path / "a", tiny_texts, seed=3, **kwargs)
    b = tiny_model.build_tiny_model(tmp_path / "b", tiny_texts, seed=3, **kwargs)
    c = tiny_model.build_tiny_model(tmp_path / "c", tiny_texts, seed=4, **kwargs)
    assert _digest(a) == _digest(b)
    assert _digest(a)["tokenizer.json"] == _digest(c)["tokenizer.json"]
    assert _digest(a)["model.safetensors"] != _digest(c)["model.safetensors"]


def test_invalid_sizes_fail_without_output(tmp_path, tiny_texts):
    with pytest.raises(ValueError, match="head dim must be 64"):
        tiny_model.build_tiny_model(tmp_path / "m", tiny_texts, hidden=96)
    with pytest.raises(ValueError, match="kv_heads"):
        tiny_model.build_tiny_model(tmp_path / "m", tiny_texts, hidden=192, kv_heads=2)
    with pytest.raises(ValueError, match="unknown arch"):
        tiny_model.build_tiny_model(tmp_path / "m", tiny_texts, arch="llama")
    assert list(tmp_path.iterdir()) == []


def test_cli_reads_sharegpt_jsonl(tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    rows = [{"id": str(i), "messages": [{"role": "user", "content": f"note {i}: htn, chf, copd " * 20},
                                        {"role": "assistant", "content": "<code>401.9, 428.0</code>"}]}
            for i in range(20)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "model"
    assert tiny_model.main(["--out", str(out), "--texts", str(data), "--layers", "1", "--vocab-size", "600"]) == 0
    summary = capsys.readouterr().out
    assert str(out) in summary and "parameters" in summary
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert len(tok("htn, chf, copd", add_special_tokens=False)["input_ids"]) < len("htn, chf, copd")


def test_cli_bad_jsonl_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(UserError, match=r"bad\.jsonl, line 2: not valid JSON"):
        tiny_model.read_text_files([bad])
    with pytest.raises(UserError, match="missing.txt"):
        tiny_model.read_text_files([tmp_path / "missing.txt"])


def test_existing_output_is_refused_before_any_work(tmp_path, tiny_texts, capsys):
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    stale = tmp_path / ".model.tmp-killed"  # what a killed run leaves beside the output
    stale.mkdir()
    with pytest.raises(UserError, match="--overwrite"):
        tiny_model.build_tiny_model(out, tiny_texts)
    assert not stale.exists()
    assert tiny_model.main(["--out", str(out), "--texts", str(tmp_path / "absent.jsonl")]) == 2
    assert "--overwrite" in capsys.readouterr().err  # the output is checked before the texts are read
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    built = tiny_model.build_tiny_model(out, tiny_texts, layers=1, vocab_size=600, overwrite=True)
    assert sorted(p.name for p in built.iterdir()) != ["keep.txt"] and not (out / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_pretraining_lowers_the_loss_and_repeats(tiny_texts, tiny_tokenizer_dir):
    tok = transformers.AutoTokenizer.from_pretrained(tiny_tokenizer_dir)

    def run():
        config = tiny_model._model_config("qwen2", tok, layers=1, hidden=64, heads=1, kv_heads=1, intermediate=128,
                                          max_position_embeddings=256)
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config)
        return tiny_model.pretrain(model, tok, tiny_texts, steps=8, seq_len=32, batch_size=4, lr=2e-2, seed=0)

    losses = run()
    assert len(losses) == 8 and sum(losses[-2:]) < sum(losses[:2])
    assert run() == losses
    with pytest.raises(ValueError, match="more than"):
        tiny_model.pretrain(None, tok, ["short"], steps=1, seq_len=64)


def test_train_tokenizer_refuses_an_existing_output(tmp_path, tiny_texts):
    out = tmp_path / "tok"
    out.mkdir()  # an empty folder (a fresh temporary one) is used as is
    tiny_model.train_tokenizer(tiny_texts, out, vocab_size=600)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "tokenizer.json" in before and oct(out.stat().st_mode & 0o777) == "0o755"
    with pytest.raises(UserError, match="--overwrite"):
        tiny_model.train_tokenizer(tiny_texts[:5], out, vocab_size=520)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        tiny_model.train_tokenizer(tiny_texts, tmp_path / "file", overwrite=True)
    tok = tiny_model.train_tokenizer(tiny_texts[:5], out, vocab_size=520, overwrite=True)
    assert (out / "tokenizer.json").read_bytes() != before["tokenizer.json"] and len(tok) <= 520 + 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "tok"]  # no temporary left beside it
