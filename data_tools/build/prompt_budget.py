"""Prompt budgets of the trainers: every prompt is fitted (tiered middle-out, ``llm4icd_plugins.truncation``)
so that neither LlamaFactory (``cutoff_len``: prompt + answer + end of turn) nor verl
(``max_prompt_length``) cuts it silently; token statistics for ``stats.json``."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from llm4icd_plugins import prompts
from llm4icd_plugins.errors import UserError, user_error
from llm4icd_plugins.truncation import count_prompt_tokens


@dataclass
class TruncationSettings:
    """Prompt-length limits of the trainers (see the --help of the flags)."""

    tokenizer_path: str | None = None
    max_prompt_length: int = 4096
    hint_reserve: int = 0
    cutoff_len: int = 4480
    enable_thinking: bool | None = None
    num_workers: int = 1
    backbone: str | None = None  # recorded in stats.json for data_tools.build.backbone_check
    chat_template: str | None = None  # the backbone's own Jinja chat template, replacing the tokenizer's

    def chat_template_kwargs(self) -> dict:
        return {} if self.enable_thinking is None else {"enable_thinking": self.enable_thinking}


def load_tokenizer(settings: TruncationSettings):
    """The backbone's tokenizer (with its own chat template when the backbone gives one), or None without one."""
    if not settings.tokenizer_path:
        return None
    path = settings.tokenizer_path
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise UserError("--tokenizer needs the transformers package. Fix: install the sft or rl extra, "
                        "or leave out --tokenizer") from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise user_error(path, f"cannot load a tokenizer ({type(exc).__name__}: {exc})", "pass a Hugging Face "
                         "model or tokenizer folder (tokenizer.json + tokenizer_config.json)") from exc
    if settings.chat_template:
        tokenizer.chat_template = settings.chat_template
    return tokenizer


def summary(values: Sequence[int | float]) -> dict | None:
    """Mean, median, 95th percentile and maximum (None for no values)."""
    if len(values) == 0:
        return None
    arr = np.asarray(values, dtype=float)
    return {"mean": round(float(arr.mean()), 2), "p50": float(np.percentile(arr, 50)),
            "p95": float(np.percentile(arr, 95)), "max": float(arr.max())}


def _token_ids(rendered) -> list[int]:
    if isinstance(rendered, dict) or hasattr(rendered, "keys"):
        rendered = rendered["input_ids"]
    return list(rendered)


def end_of_turn_tokens(tokenizer, spec: prompts.PromptSpec, kwargs: dict) -> int:
    """Tokens the trainer adds after an answer (end of turn), measured on the real template."""
    probe = "<code>" + prompts.FORMAT_EXAMPLE_CODES[spec.code_system][0] + "</code>"
    messages = prompts.build_messages("x", spec)
    prompt = count_prompt_tokens(tokenizer, messages, **kwargs)
    full_ids = _token_ids(tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": probe}],
                                                        tokenize=True, return_dict=False, **kwargs))
    probe_ids = tokenizer(probe, add_special_tokens=False)["input_ids"]
    return max(1, len(full_ids) - prompt - len(probe_ids))


def fit_prompts(examples: pd.DataFrame, spec: prompts.PromptSpec, answers: list[str], settings: TruncationSettings,
                tokenizer, report_tokens: dict, candidates: Sequence[list] | None = None) -> list[str]:
    """The note text of each prompt, truncated so that prompt ≤ max_prompt_length − hint_reserve and
    prompt + answer + end-of-turn ≤ cutoff_len; token statistics go to ``report_tokens``. ``candidates`` (one
    list of (code, description) pairs per example) are part of the prompt: the note is cut, never the block."""
    texts = examples["text"].tolist()
    if tokenizer is None:
        report_tokens["truncation"] = "none (no --tokenizer given): prompts are not checked against any length"
        return texts
    from llm4icd_plugins.truncation import truncate_for_budget

    kwargs = settings.chat_template_kwargs()
    if candidates is None:
        messages_fn = functools.partial(prompts.build_messages, spec=spec)
    else:
        messages_fn = [functools.partial(prompts.build_messages, spec=spec, candidates=c) for c in candidates]
    end_of_turn = end_of_turn_tokens(tokenizer, spec, kwargs)
    answer_tokens = [len(ids) + end_of_turn for ids in tokenizer(answers, add_special_tokens=False)["input_ids"]]
    prompt_cap = settings.max_prompt_length - settings.hint_reserve
    budgets = [min(prompt_cap, settings.cutoff_len - n) for n in answer_tokens]
    try:
        results = truncate_for_budget(texts, tokenizer, messages_fn=messages_fn, budget=budgets,
                                      chat_template_kwargs=kwargs or None, num_workers=settings.num_workers,
                                      show_progress=True)
    except ValueError as exc:
        lower = "lower --hint-reserve or --top-k" if candidates is not None else "lower --hint-reserve"
        raise UserError(f"truncation failed: {exc}. Fix: raise --max-prompt-length/--cutoff-len or {lower} "
                        "(the instruction and answer alone must fit)") from exc
    from data_tools.build.backbone_check import data_record

    report_tokens.update({
        "truncation": "tiered middle-out to fit the budget",
        **data_record(settings.backbone, tokenizer),
        "tokenizer": str(settings.tokenizer_path),
        "chat_template_kwargs": kwargs,
        "max_prompt_length": settings.max_prompt_length, "hint_reserve": settings.hint_reserve,
        "cutoff_len": settings.cutoff_len, "end_of_turn_tokens": end_of_turn,
        "prompt_tokens_before": summary([r.tokens_before for r in results]),
        "prompt_tokens_after": summary([r.tokens_after for r in results]),
        "answer_tokens": summary([n - end_of_turn for n in answer_tokens]),
        "n_truncated": int(sum(r.truncated for r in results)),
    })
    return [r.text for r in results]


def hint_block_tokens(tokenizer, spec: prompts.PromptSpec, label_codes: Sequence[str], system, kwargs) -> int:
    """Tokens a worst-case PHI hint (5 codes with the longest descriptions) adds to a prompt."""
    described = sorted(label_codes, key=lambda c: (-len(system.description(c) or ""), c))[:5]
    hints = [(c, system.description(c)) for c in described]
    plain = count_prompt_tokens(tokenizer, prompts.build_messages("x", spec), **kwargs)
    hinted = count_prompt_tokens(tokenizer, prompts.build_messages("x", spec, hints), **kwargs)
    return hinted - plain
