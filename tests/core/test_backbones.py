"""The backbone registry (recipes/models/*.yaml → Backbone): every shipped backbone loads with the facts its
model card states, and every way a YAML can be wrong is a UserError naming the file and the fix."""

from __future__ import annotations

import pytest

from llm4icd_plugins.backbones import (BACKBONE_DIR, DEFAULT_BACKBONE, Backbone, list_backbones,
                                       load_backbone)
from llm4icd_plugins.errors import UserError

# model card facts, written here independently of the YAML files
SHIPPED = {
    "qwen2.5-1.5b-instruct": ("Qwen/Qwen2.5-1.5B-Instruct", "qwen", {}),
    "qwen3-4b": ("Qwen/Qwen3-4B", "qwen3", {"enable_thinking": False}),
    "qwen3-4b-instruct-2507": ("Qwen/Qwen3-4B-Instruct-2507", "qwen3_nothink", {}),
    "llama3-8b-instruct": ("meta-llama/Meta-Llama-3-8B-Instruct", "llama3", {}),
    "llama3.1-8b-instruct": ("meta-llama/Llama-3.1-8B-Instruct", "llama3", {}),
}
# Llama-3.1's own chat template adds a dated system block that LlamaFactory's llama3 has not: it needs its own
OWN_CHAT_TEMPLATE = {"llama3.1-8b-instruct"}
COMPLETE = ("name: {name}\nmodel: org/model\ntemplate: qwen\nchat_template: null\nchat_template_kwargs: {{}}\n"
            "tensor_parallel_size: 1\nactor_tokens_per_gpu: 8192\nlog_prob_tokens_per_gpu: 8192\n"
            "gpu_memory_utilization: 0.5\n")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_backbones(name):
    model, template, kwargs = SHIPPED[name]
    b = load_backbone(name)
    assert (b.name, b.model, b.template, b.chat_template_kwargs) == (name, model, template, kwargs)
    assert (b.chat_template is not None) is (name in OWN_CHAT_TEMPLATE)
    assert b.tensor_parallel_size >= 1 and 0 < b.gpu_memory_utilization <= 1
    assert b.log_prob_tokens_per_gpu >= b.actor_tokens_per_gpu >= 4096


def test_registry_lists_the_shipped_and_the_tiny_backbone():
    assert set(list_backbones()) == set(SHIPPED) | {"tiny"}
    assert DEFAULT_BACKBONE in SHIPPED and BACKBONE_DIR.name == "models"


def test_llama31_template_is_llamafactorys_llama3_format_without_a_date():
    """The Jinja is read as text (a YAML block, what Hydra hands to verl): Llama-3 headers, no dated system block."""
    text = load_backbone("llama3.1-8b-instruct").chat_template
    assert text.lstrip().startswith("{{- '<|begin_of_text|>' -}}") and "<|start_header_id|>" in text
    assert "add_generation_prompt" in text and "<|eot_id|>" in text
    for dated in ("Today Date", "Cutting Knowledge", "strftime_now", "date_string"):
        assert dated not in text


def test_enable_thinking_is_none_without_the_switch():
    assert load_backbone("qwen3-4b").enable_thinking is False
    assert load_backbone("qwen3-4b-instruct-2507").enable_thinking is None


def test_backbone_is_frozen():
    with pytest.raises(AttributeError):
        load_backbone("qwen3-4b").model = "other"  # type: ignore[misc]
    assert isinstance(load_backbone("qwen3-4b"), Backbone)


def test_a_new_yaml_is_a_new_backbone(tmp_path, monkeypatch):
    (tmp_path / "mine.yaml").write_text(COMPLETE.format(name="mine"))
    assert load_backbone("mine", tmp_path).gpu_memory_utilization == 0.5
    assert load_backbone(tmp_path / "mine.yaml").name == "mine"
    monkeypatch.setenv("LLM4ICD_BACKBONE_DIR", str(tmp_path))
    assert list_backbones() == ["mine"] and load_backbone("mine").model == "org/model"


@pytest.mark.parametrize("text,problem,fix", [
    (None, "no backbone 'bad'", "pick a known backbone"),
    ("name: bad\nmodel: [unclosed\n", "is not valid YAML", "fix the YAML syntax"),
    ("- a list\n", "holds a list of length 1, not a mapping", "as a YAML mapping"),
    (COMPLETE.format(name="bad") + "lora_rank: 8\n", "unknown keys ['lora_rank']", "use only name"),
    (COMPLETE.format(name="bad").replace("template: qwen\n", ""), "missing keys ['template']", "add template"),
    (COMPLETE.format(name="bad").replace("model: org/model", "model: ''"), "missing keys ['model']", "add model"),
    (COMPLETE.format(name="other"), "'name' differs from the file name 'bad'", "set name: bad"),
    (COMPLETE.format(name="bad").replace("tensor_parallel_size: 1", "tensor_parallel_size: two"),
     "'tensor_parallel_size' is a string of 3 characters", "make 'tensor_parallel_size' a int"),
    (COMPLETE.format(name="bad").replace("tensor_parallel_size: 1", "tensor_parallel_size: true"),
     "'tensor_parallel_size' is a boolean", "a int"),
    (COMPLETE.format(name="bad").replace("chat_template_kwargs: {}", "chat_template_kwargs: 3"),
     "'chat_template_kwargs' is a number (int)", "a dict"),
    (COMPLETE.format(name="bad").replace("actor_tokens_per_gpu: 8192", "actor_tokens_per_gpu: 0"),
     "'actor_tokens_per_gpu' is below 1", "positive integer"),
    (COMPLETE.format(name="bad").replace("gpu_memory_utilization: 0.5", "gpu_memory_utilization: 1.5"),
     "outside (0, 1]", "fraction"),
    (COMPLETE.format(name="bad").replace("chat_template: null", "chat_template: templates/llama3.jinja"),
     "'chat_template' holds no Jinja", "paste the Jinja text as a YAML block"),
    (COMPLETE.format(name="bad").replace("chat_template: null", "chat_template: \"{{ '${x}' }}\""),
     "contains '${'", "without '${'"),
])
def test_bad_yaml_names_the_file_and_the_fix(tmp_path, text, problem, fix):
    if text is not None:
        (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(UserError) as err:
        load_backbone("bad", tmp_path)
    message = str(err.value)
    assert message.startswith(str(tmp_path / "bad.yaml")) and problem in message and fix in message
    assert "Fix:" in message
