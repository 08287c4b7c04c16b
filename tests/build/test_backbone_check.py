"""data_tools.build.backbone_check with real tokenizers built here (one per shipped backbone family, chat templates
of the real models) and the real LlamaFactory encoder of the SFT environment: matching pairs pass, real
mismatches (hybrid Qwen3 with `qwen3_nothink`, Llama-3.1's dated template) fail with the fix; prepared data
records its backbone and a different backbone, tokenizer or budget is refused with the re-prepare command."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import yaml

from backbone_tokenizers import FAMILIES, FAMILY_OF_TEMPLATE, QWEN3_2507_CHAT_TEMPLATE, build_tokenizer
from data_tools.build import backbone_check
from data_tools.build import prepare
from llm4icd_plugins.backbones import list_backbones, load_backbone

# shipped backbones with their own chat_template -> the family of their model's real (replaced) template
OWN_TEMPLATE_FAMILY = {"llama3.1-8b-instruct": "llama3.1"}

REPO_ROOT = Path(__file__).resolve().parents[2]
SFT_ENV = Path(os.environ.get("LLM4ICD_SFT_ENV") or REPO_ROOT / ".venvs" / "sft")
needs_sft_env = pytest.mark.skipif(not (SFT_ENV / "bin" / "llamafactory-cli").is_file(),
                                   reason="no LlamaFactory environment: set LLM4ICD_SFT_ENV")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def family_tokenizers(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {family: build_tokenizer(root / family, family) for family in FAMILIES}


def _prompt_text(tokenizer_dir: Path, **kwargs) -> str:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    return tok.apply_chat_template([{"role": "user", "content": "Q"}], tokenize=False, add_generation_prompt=True,
                                   **kwargs)


def test_family_templates_render_the_real_formats(family_tokenizers):
    """The stand-in templates give the published prompt formats (written out here by hand)."""
    q = "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    qwen_system = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    llama = "<|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    assert _prompt_text(family_tokenizers["qwen2.5"]) == qwen_system + q
    assert _prompt_text(family_tokenizers["qwen3"], enable_thinking=False) == q + "<think>\n\n</think>\n\n"
    assert _prompt_text(family_tokenizers["qwen3"]) == q
    assert _prompt_text(family_tokenizers["qwen3-2507"]) == q
    assert _prompt_text(family_tokenizers["llama3"]) == "<|begin_of_text|>" + llama
    dated = _prompt_text(family_tokenizers["llama3.1"])
    assert dated.startswith("<|begin_of_text|><|start_header_id|>system") and "Today Date: 26 Jul 2024" in dated


@needs_sft_env
def test_every_shipped_backbone_passes(family_tokenizers):
    """Each shipped backbone with a stand-in of its model's tokenizer (one LlamaFactory call for all)."""
    backbones = [load_backbone(name) for name in list_backbones()]
    assert {"qwen2.5-1.5b-instruct", "qwen3-4b", "qwen3-4b-instruct-2507"} <= {b.name for b in backbones}
    assert any(b.template == "llama3" for b in backbones)
    for b in backbones:
        assert b.template in FAMILY_OF_TEMPLATE, f"add a stand-in tokenizer family for template {b.template}"
    assert OWN_TEMPLATE_FAMILY.keys() == {b.name for b in backbones if b.chat_template}
    summaries = backbone_check.check_templates(
        [(b, family_tokenizers[OWN_TEMPLATE_FAMILY.get(b.name) or FAMILY_OF_TEMPLATE[b.template]]) for b in backbones])
    assert [s["backbone"] for s in summaries] == [b.name for b in backbones]
    for summary in summaries:
        assert summary["conversations"] == len(backbone_check.sample_conversations()) >= 3
        assert min(summary["prompt_tokens"]) > 100


@needs_sft_env
def test_a_chat_template_override_passes_where_the_models_own_fails(family_tokenizers):
    """Llama-3.1's tokenizer (dated template): refused as it is, passed with the backbone's chat_template."""
    backbone = load_backbone("llama3.1-8b-instruct")
    tokenizer = family_tokenizers["llama3.1"]
    with pytest.raises(backbone_check.BackboneCheckError, match="reads today's date"):
        backbone_check.check_template(dataclasses.replace(backbone, chat_template=None), tokenizer)
    summary = backbone_check.check_template(backbone, tokenizer)
    assert summary["backbone"] == backbone.name and summary["conversations"] >= 3
    assert backbone_check.load_tokenizer(backbone, tokenizer).chat_template == backbone.chat_template


@needs_sft_env
def test_hybrid_qwen3_with_the_nothink_template_is_refused(family_tokenizers):
    from transformers import AutoTokenizer

    backbone = dataclasses.replace(load_backbone("qwen3-4b"), template="qwen3_nothink")
    path = family_tokenizers["qwen3"]
    with pytest.raises(backbone_check.BackboneCheckError) as err:
        backbone_check.check_template(backbone, path)
    message = str(err.value)
    # qwen3_nothink renders the prompt without the empty think block the chat template adds: they agree up to
    # the end of the thinking-on generation prompt.
    prompt = backbone_check.sample_conversations()["icd9 full prompt"][:-1]
    tok = AutoTokenizer.from_pretrained(path)
    agree = len(tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False))
    assert f"agree on the first {agree} tokens" in message and "qwen3-4b" in message
    fix = "Fix: in recipes/models/qwen3-4b.yaml set template: qwen3 with chat_template_kwargs {enable_thinking: false}"
    assert fix in message
    assert backbone_check.SAMPLE_NOTE.splitlines()[1] not in message


@needs_sft_env
@pytest.mark.parametrize("family", ["llama3.1", "llama3.2"])
def test_a_dated_llama_template_is_refused(family, family_tokenizers):
    with pytest.raises(backbone_check.BackboneCheckError) as err:
        backbone_check.check_template(load_backbone("llama3-8b-instruct"), family_tokenizers[family])
    assert "reads today's date" in str(err.value) and "export-template" in str(err.value)


@needs_sft_env
def test_export_template_makes_a_dated_llama_pass(family_tokenizers, tmp_path, capsys):
    """The fix the error names: LlamaFactory's llama3 format as the backbone's chat template."""
    tok = family_tokenizers["llama3.1"]
    path = tmp_path / "llama31-fixed.yaml"
    args = ["export-template", "--backbone", "llama3-8b-instruct", "--model", str(tok), "--out", str(path)]
    assert backbone_check.main(args) == 0
    assert backbone_check.main(args) == 2 and "--overwrite" in capsys.readouterr().err
    written = load_backbone(path)  # a complete backbone: the source's settings, its name, model and template
    assert (written.name, written.model, written.template) == ("llama31-fixed", str(tok), "llama3")
    assert written.actor_tokens_per_gpu == load_backbone("llama3-8b-instruct").actor_tokens_per_gpu
    assert yaml.safe_load(path.read_text())["chat_template"] == written.chat_template
    assert backbone_check.main(["template", "--backbone", str(path)]) == 0
    assert "template check passed" in capsys.readouterr().out
    text = backbone_check.load_tokenizer(load_backbone(path)).apply_chat_template(
        [{"role": "user", "content": "Q"}], tokenize=False, add_generation_prompt=True)
    assert "Today Date" not in text and text.startswith("<|begin_of_text|><|start_header_id|>user")


def test_cli_errors_follow_the_convention(capsys):
    assert backbone_check.main(["template", "--backbone", "no-such-backbone"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m data_tools.build.backbone_check: error:") and "known:" in err
    assert "Traceback" not in err


# --- prepared data keyed by backbone -------------------------------------------------------------------------

def _backbone_yaml(folder: Path, name: str, model: Path, template: str, kwargs: dict | None = None) -> Path:
    """A backbone YAML in a test folder: a shipped backbone's GPU settings, this model and template."""
    spec = dataclasses.asdict(load_backbone("qwen2.5-1.5b-instruct"))
    spec.update(name=name, model=str(model), template=template, chat_template=None, chat_template_kwargs=kwargs or {})
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory, tiny_tokenizer_dir, tiny_texts):
    """One synthetic MIMIC-III corpus prepared for two backbones into data/prepared/<backbone>/."""
    from data_tools.build.synth import generate_mimic3
    from data_tools.build.tiny_model import train_tokenizer

    base = tmp_path_factory.mktemp("bb")
    raw = generate_mimic3(base / "raw", n_admissions=120, seed=3)
    qwen3_tok = base / "qwen3_tok"
    train_tokenizer(tiny_texts, qwen3_tok, arch="qwen3")
    backbones = {"bb-qwen25": _backbone_yaml(base, "bb-qwen25", tiny_tokenizer_dir, "qwen"),
                 "bb-qwen3": _backbone_yaml(base, "bb-qwen3", qwen3_tok, "qwen3", {"enable_thinking": False})}
    root = base / "data" / "prepared"
    for name, path in backbones.items():
        assert prepare.main(["mimic3", "--root", str(raw["root"]), "--out", str(root / name), "--backbone", str(path),
                             "--variants", "full", "--min-code-count", "1", "--max-prompt-length", "1024",
                             "--hint-reserve", "128", "--cutoff-len", "1100"]) == 0
    return {"root": root, "backbones": backbones, "raw": raw, "qwen3_tok": qwen3_tok}


@needs_sft_env
def test_prepare_records_the_backbone_and_data_check_passes(side_by_side, capsys):
    root, backbones = side_by_side["root"], side_by_side["backbones"]
    for name, path in backbones.items():
        stats = json.loads((root / name / "mimic3_full" / "stats.json").read_text())["tokens"]
        assert stats["backbone"] == name and stats["tokenizer_fingerprint"].startswith("sha256:")
        assert stats["chat_template_kwargs"] == load_backbone(path).chat_template_kwargs
        # the template the prompts were fitted with, for inference to render them the same way
        tokenizer = backbone_check.load_tokenizer(load_backbone(path))
        assert stats["chat_template"] == tokenizer.chat_template and "{%" in stats["chat_template"]
        assert backbone_check.main(["data", "--backbone", str(path), "--data", str(root / name / "mimic3_full"),
                                    "--max-prompt-length", "1024", "--cutoff-len", "1100"]) == 0
    assert capsys.readouterr().out.count("data check passed") == 2
    # The two backbones' prompts differ (the Qwen2.5 default system turn, the Qwen3 think block), so do the files.
    a, b = ((root / n / "mimic3_full" / "verl" / "train.parquet").read_bytes() for n in backbones)
    assert a != b


@needs_sft_env
def test_data_for_another_backbone_is_refused_with_the_prepare_command(side_by_side, capsys):
    root, backbones = side_by_side["root"], side_by_side["backbones"]
    data = root / "bb-qwen3" / "mimic3_full"
    assert backbone_check.main(["data", "--backbone", str(backbones["bb-qwen25"]), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert "does not match backbone 'bb-qwen25'" in err and "another tokenizer or chat template" in err
    assert "chat_template_kwargs {'enable_thinking': False}" in err
    command = err.split("re-prepare for this backbone: ")[1].strip()
    assert command.startswith("python -m data_tools.build.prepare mimic3 --notes ")
    assert f"--backbone bb-qwen25 --out {root / 'bb-qwen25'}" in command and "--max-prompt-length 1024" in command
    assert "--overwrite" in command  # that variant exists already


@needs_sft_env
def test_a_different_budget_is_refused(side_by_side):
    path = side_by_side["backbones"]["bb-qwen25"]
    data = side_by_side["root"] / "bb-qwen25" / "mimic3_full"
    with pytest.raises(backbone_check.BackboneCheckError, match="fitted for max_prompt_length 1024, the run uses 5120"):
        backbone_check.check_data(load_backbone(path), data, budgets={"max_prompt_length": 5120})


@needs_sft_env
def test_a_changed_chat_template_is_refused(side_by_side):
    """Same vocabulary, another chat template (e.g. a chat_template added later): the fingerprint differs."""
    spec = yaml.safe_load(side_by_side["backbones"]["bb-qwen3"].read_text())
    spec["chat_template"] = QWEN3_2507_CHAT_TEMPLATE
    with pytest.raises(backbone_check.BackboneCheckError, match="another tokenizer or chat template"):
        backbone_check.check_data(backbone_check.Backbone(**spec), side_by_side["root"] / "bb-qwen3" / "mimic3_full")


def test_untruncated_or_missing_data_is_refused(tmp_path, tiny_tokenizer_dir):
    backbone = load_backbone(_backbone_yaml(tmp_path, "bb", tiny_tokenizer_dir, "qwen"))
    with pytest.raises(backbone_check.BackboneCheckError, match="no prepared data here.*prepare it: python -m"):
        backbone_check.check_data(backbone, tmp_path / "data" / "prepared" / "bb" / "mimic3_full")
    variant = tmp_path / "old" / "mimic3_full"
    variant.mkdir(parents=True)
    (variant / "stats.json").write_text(json.dumps({"variant": "mimic3_full", "corpus": "MIMIC-III", "tokens": {
        "truncation": "none (no --tokenizer given)"}}))
    with pytest.raises(backbone_check.BackboneCheckError, match="not fitted with a recorded tokenizer"):
        backbone_check.check_data(backbone, variant)


def test_prepare_refuses_a_contradicting_enable_thinking(tmp_path, tiny_tokenizer_dir, capsys):
    path = _backbone_yaml(tmp_path, "bb-think", tiny_tokenizer_dir, "qwen3", {"enable_thinking": False})
    out = tmp_path / "prepared" / "bb-think"
    assert prepare.main(["generic", "--input", str(tmp_path / "unused.jsonl"), "--code-system", "icd9", "--out",
                         str(out), "--backbone", str(path), "--enable-thinking"]) == 2
    assert "--enable-thinking contradicts backbone 'bb-think'" in capsys.readouterr().err and not out.exists()


@needs_sft_env
def test_prepare_stops_on_a_template_mismatch_before_writing(tmp_path, family_tokenizers, capsys):
    path = _backbone_yaml(tmp_path, "bb-bad", family_tokenizers["qwen2.5"], "qwen3_nothink")
    table = tmp_path / "table.jsonl"
    table.write_text("".join(json.dumps({"id": str(i), "text": "note", "codes": ["401.9"]}) + "\n" for i in range(5)))
    out = tmp_path / "prepared" / "bb-bad"
    assert prepare.main(["generic", "--input", str(table), "--code-system", "icd9", "--out", str(out),
                         "--backbone", str(path)]) == 2
    err = capsys.readouterr().err
    # Qwen2.5's chat template adds its default system turn, qwen3_nothink has none: both open with the one
    # <|im_start|> token, then "system" against "user".
    assert "agree on the first 1 tokens" in err and "Fix: in recipes/models/bb-bad.yaml set template: qwen" in err
    assert not out.exists()


def test_the_prepare_command_of_a_candidate_variant_keeps_its_candidates_and_folder(tmp_path, tiny_tokenizer_dir):
    """A variant the launcher keeps as <dataset>_cand<K>: the fix re-prepares it with the same candidates and K,
    aside, and moves it into that folder (never over the plain variant beside it)."""
    backbone = load_backbone(_backbone_yaml(tmp_path, "bb", tiny_tokenizer_dir, "qwen"))
    root = tmp_path / "prepared"
    (root / "old" / "mimic3_full").mkdir(parents=True)
    data = root / "old" / "mimic3_full_cand10"
    stats = {"variant": "mimic3_full", "corpus": "MIMIC-III", "tokens": {"backbone": "old", "max_prompt_length": 896},
             "candidates": {"source": "/c/linear", "top_k": 10}}
    command = backbone_check.prepare_command(stats, backbone, data, {})
    aside = root / "bb" / "mimic3_full_cand10.prepare"
    assert "--candidates /c/linear --top-k 10" in command and f"--out {aside} " in command
    assert command.endswith(f" && mv {aside / 'mimic3_full'} {root / 'bb' / 'mimic3_full_cand10'} && rmdir {aside}")
    assert "--overwrite" not in command
    plain = backbone_check.prepare_command({k: v for k, v in stats.items() if k != "candidates"}, backbone,
                                           root / "old" / "mimic3_full", {})
    assert "--candidates" not in plain and " && mv " not in plain and f"--out {root / 'bb'}" in plain
