"""The backbone registry: one small YAML per model under `recipes/models/`, read into a `Backbone`.

A backbone names the model, its LlamaFactory template and the chat-template arguments verl and vLLM use,
plus the GPU knobs that depend on model size. `chat_template` is the Jinja text itself (a YAML block), not a
file: the GRPO recipes hand it to verl as `actor_rollout_ref.model.custom_chat_template`, and Hydra reads YAML.
Pure: PyYAML only, so any environment (and any test) can read it without torch, verl or LlamaFactory.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from llm4icd_plugins.errors import UserError, describe, user_error

BACKBONE_DIR = Path(__file__).resolve().parents[1] / "recipes" / "models"
DEFAULT_BACKBONE = "qwen3-4b-instruct-2507"
# LLM4ICD_BACKBONE_DIR points the registry at another folder (a user's own backbones, a test's tmp_path).
BACKBONE_DIR_ENV = "LLM4ICD_BACKBONE_DIR"


@dataclass(frozen=True)
class Backbone:
    """One backbone: what to load, how to render its prompts, and how much fits on a GPU."""

    name: str
    model: str  # hub id or local folder of the base model
    template: str  # LlamaFactory template name
    chat_template_kwargs: dict = field(default_factory=dict)  # e.g. {"enable_thinking": False}
    chat_template: str | None = None  # Jinja text replacing the tokenizer's own (verl, vLLM, prepare), or None
    tensor_parallel_size: int = 1  # vLLM rollout / inference tensor parallelism
    actor_tokens_per_gpu: int = 16384  # verl dynamic batch: tokens per GPU per actor update micro-batch
    log_prob_tokens_per_gpu: int = 32768  # verl dynamic batch: tokens per GPU per log-prob pass
    gpu_memory_utilization: float = 0.6  # vLLM's share of a GPU during rollouts

    @property
    def enable_thinking(self) -> bool | None:
        """The chat template's `enable_thinking` argument, None when the backbone has no such switch."""
        return self.chat_template_kwargs.get("enable_thinking")


_FIELDS = {f.name: f for f in dataclasses.fields(Backbone)}
# every key, so that the Hydra recipes (which read the YAML itself, recipes/grpo/common.yaml) find each one
_REQUIRED = tuple(_FIELDS)
_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "model": (str,), "template": (str,), "chat_template_kwargs": (dict,),
    "chat_template": (str, type(None)), "tensor_parallel_size": (int,), "actor_tokens_per_gpu": (int,),
    "log_prob_tokens_per_gpu": (int,), "gpu_memory_utilization": (float, int),
}


def backbone_dir() -> Path:
    """The registry folder: `$LLM4ICD_BACKBONE_DIR` when set, else `recipes/models/` of this checkout."""
    return Path(os.environ.get(BACKBONE_DIR_ENV) or BACKBONE_DIR)


def list_backbones(directory: str | Path | None = None) -> list[str]:
    """Names of the backbones in the registry folder, sorted."""
    folder = Path(directory) if directory is not None else backbone_dir()
    return sorted(p.stem for p in folder.glob("*.yaml"))


def backbone_path(name_or_path: str | Path, directory: str | Path | None = None) -> Path:
    """The YAML file of a backbone name, or the given path when it names a `.yaml` file."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        return Path(text)
    return (Path(directory) if directory is not None else backbone_dir()) / f"{text}.yaml"


def load_backbone(name_or_path: str | Path, directory: str | Path | None = None) -> Backbone:
    """Read and check one backbone; a `UserError` names the file and the fix for anything wrong."""
    path = backbone_path(name_or_path, directory)
    if not path.is_file():
        known = ", ".join(list_backbones(path.parent)) if path.parent.is_dir() else "none"
        raise user_error(path, f"no backbone '{name_or_path}' (known: {known})",
                         f"pick a known backbone or add {path.name} with the keys {', '.join(_REQUIRED)}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise user_error(path, "is not valid YAML", "fix the YAML syntax",
                         line=mark.line + 1 if mark is not None else None) from None
    if not isinstance(raw, dict):
        raise user_error(path, f"holds {describe(raw)}, not a mapping of backbone keys",
                         f"write the keys {', '.join(_REQUIRED)} as a YAML mapping")
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise user_error(path, f"unknown keys {unknown}", f"use only {', '.join(_FIELDS)}")
    missing = [key for key in _REQUIRED if key not in raw or key in ("name", "model", "template") and not raw[key]]
    if missing:
        raise user_error(path, f"missing keys {missing}", f"add {', '.join(missing)}")
    for key, value in raw.items():
        if value is None and key != "chat_template":
            raise user_error(path, f"'{key}' is empty", f"give '{key}' a value or delete the line")
        if not isinstance(value, _TYPES[key]) or isinstance(value, bool) and bool not in _TYPES[key]:
            want = " or ".join(t.__name__ for t in _TYPES[key])
            raise user_error(path, f"'{key}' is {describe(value)}", f"make '{key}' a {want}")
    _check_chat_template(path, raw["chat_template"])
    if raw["name"] != path.stem:
        raise user_error(path, f"'name' differs from the file name '{path.stem}'",
                         f"set name: {path.stem} (or rename the file)")
    backbone = Backbone(**raw)
    for key in ("tensor_parallel_size", "actor_tokens_per_gpu", "log_prob_tokens_per_gpu"):
        if getattr(backbone, key) < 1:
            raise user_error(path, f"'{key}' is below 1", f"set '{key}' to a positive integer")
    if not 0 < backbone.gpu_memory_utilization <= 1:
        raise user_error(path, "'gpu_memory_utilization' is outside (0, 1]", "set it to a fraction such as 0.6")
    return backbone


def _check_chat_template(path: Path, text: str | None) -> None:
    """A chat template must be Jinja text Hydra passes through unchanged: not a file name, no `${`."""
    if text is None:
        return
    if "{{" not in text and "{%" not in text:
        raise user_error(path, "'chat_template' holds no Jinja ({{ or {%): it is the template's text, not a file name",
                         "paste the Jinja text as a YAML block (chat_template: |-) or write the backbone with "
                         "python -m data_tools.build.backbone_check export-template")
    if "${" in text:
        raise user_error(path, "'chat_template' contains '${', which Hydra would read as an interpolation",
                         "rewrite that part of the template without '${' (e.g. '$' ~ '{')")


__all__ = ["BACKBONE_DIR", "BACKBONE_DIR_ENV", "DEFAULT_BACKBONE", "Backbone", "UserError", "backbone_dir",
           "backbone_path", "list_backbones", "load_backbone"]
