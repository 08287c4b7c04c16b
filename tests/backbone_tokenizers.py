"""Small local stand-ins for the shipped backbones' tokenizers: a BPE vocabulary trained here, the family's
special tokens, and a chat template that renders the real model's format for system/user/assistant turns.

No hub access. The templates below are written from the published `tokenizer_config.json` of each model
(tool calling left out, which the project never uses):
- Qwen2.5-Instruct: default system turn when there is none (`data_tools.build.tiny_model.QWEN25_CHAT_TEMPLATE`);
- Qwen3 hybrid (Qwen3-4B): think block handling and `enable_thinking` (`tiny_model.QWEN3_CHAT_TEMPLATE`);
- Qwen3-2507 Instruct: no default system turn, no think block;
- Meta-Llama-3-Instruct: BOS, header-wrapped turns, contents trimmed, no system block of its own;
- Llama-3.1-Instruct: always a system block with "Cutting Knowledge Date" and "Today Date: {date_string}";
- Llama-3.2-Instruct: the same, the date taken from `strftime_now` (the calendar) when it is defined.
"""

from __future__ import annotations

from pathlib import Path

from data_tools.build import tiny_model

QWEN3_2507_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>'"
    " + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

_LLAMA31_DATE = '{%- if not date_string is defined -%}{%- set date_string = "26 Jul 2024" -%}{%- endif -%}'
_LLAMA32_DATE = (
    "{%- if not date_string is defined -%}{%- if strftime_now is defined -%}"
    '{%- set date_string = strftime_now("%d %b %Y") -%}{%- else -%}{%- set date_string = "26 Jul 2024" -%}'
    "{%- endif -%}{%- endif -%}"
)
_LLAMA31_BODY = (
    "{{- bos_token -}}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set system_message = messages[0]['content'] | trim -%}{%- set messages = messages[1:] -%}"
    "{%- else -%}{%- set system_message = '' -%}{%- endif -%}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' -}}"
    "{{- 'Cutting Knowledge Date: December 2023\\n' -}}"
    "{{- 'Today Date: ' + date_string + '\\n\\n' -}}"
    "{{- system_message -}}{{- '<|eot_id|>' -}}"
    "{%- for message in messages -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"
)
LLAMA31_CHAT_TEMPLATE = _LLAMA31_DATE + _LLAMA31_BODY
LLAMA32_CHAT_TEMPLATE = _LLAMA32_DATE + _LLAMA31_BODY

QWEN_SPECIALS = (tiny_model.PAD_TOKEN, tiny_model.IM_START, tiny_model.IM_END)
LLAMA_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|eot_id|>", "<|eom_id|>")
LLAMA3_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

FAMILIES = {
    # family: (chat template, Qwen-style?)
    "qwen2.5": (tiny_model.QWEN25_CHAT_TEMPLATE, True),
    "qwen3": (tiny_model.QWEN3_CHAT_TEMPLATE, True),
    "qwen3-2507": (QWEN3_2507_CHAT_TEMPLATE, True),
    "llama3": (LLAMA3_CHAT_TEMPLATE, False),
    "llama3.1": (LLAMA31_CHAT_TEMPLATE, False),
    "llama3.2": (LLAMA32_CHAT_TEMPLATE, False),
}
FAMILY_OF_TEMPLATE = {"qwen": "qwen2.5", "qwen3": "qwen3", "qwen3_nothink": "qwen3-2507", "llama3": "llama3"}
"""The family whose real chat template a shipped backbone's LlamaFactory template is meant to match."""


def build_tokenizer(out_dir: str | Path, family: str, texts: list[str] | None = None, vocab_size: int = 800) -> Path:
    """Train a byte-level BPE on ``texts`` (default: tiny_model's built-in notes) and save it as a Hugging Face
    tokenizer folder with ``family``'s special tokens and chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    template, qwen = FAMILIES[family]
    specials = QWEN_SPECIALS if qwen else LLAMA_SPECIALS
    regex = tiny_model.QWEN2_PRETOKENIZE_REGEX if qwen else LLAMA3_PRETOKENIZE_REGEX
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=list(specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts or tiny_model.builtin_texts(), trainer=trainer)
    if qwen:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        extra = dict(bos_token=None, eos_token=tiny_model.IM_END, pad_token=tiny_model.PAD_TOKEN,
                     additional_special_tokens=[tiny_model.IM_START, tiny_model.IM_END])
        if family == "qwen3":
            from tokenizers import AddedToken

            tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in tiny_model.THINK_TOKENS])
    else:  # Llama-3 adds BOS when asked for special tokens, as the real tokenizer does
        bos = LLAMA_SPECIALS[0]
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                          special_tokens=[(bos, tok.token_to_id(bos))]),
        ])
        extra = dict(bos_token=bos, eos_token="<|eot_id|>", pad_token=None,
                     additional_special_tokens=list(LLAMA_SPECIALS[2:]))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=None, chat_template=template,
                                   model_max_length=8192, clean_up_tokenization_spaces=False, **extra)
    fast.save_pretrained(out)
    return out
