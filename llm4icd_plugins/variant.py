"""The prepared variant: the folder ``data_tools.build.prepare`` writes, described in one place.

    <root>/stats.json             sizes, code system, label scope, corpus, token settings (``tokens``)
    <root>/label_space.json       the label space (``codes.LabelSpace``)
    <root>/dataset_info.json      LlamaFactory's dataset registry for sharegpt/
    <root>/examples/<split>.parquet   id, subject_id, text (whole note), codes, text_truncated (the note in the prompt)
    <root>/sharegpt/<split>.jsonl     SFT conversations
    <root>/verl/<split>.parquet       GRPO / inference rows: prompt, reward_model.ground_truth, extra_info

Every reader of that layout goes through ``PreparedVariant``, so a missing or damaged file is one clear
``UserError`` naming the file and the fix (run ``data_tools.build.prepare``), never a value's contents.
Pure: json, pathlib and pyarrow only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from llm4icd_plugins import prompts
from llm4icd_plugins.codes import SYSTEMS, CodeSystem, LabelSpace, load_code_system, load_label_space
from llm4icd_plugins.errors import UserError, describe, user_error

SPLITS = ("train", "val", "test")
EXAMPLES_SCHEMA = pa.schema([("id", pa.string()), ("subject_id", pa.string()), ("text", pa.string()),
                             ("codes", pa.list_(pa.string())), ("text_truncated", pa.string())])
"""``examples/<split>.parquet``: whole note (``text``) and the note as the prepared prompt holds it."""
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
VERL_SCHEMA = pa.schema([
    ("data_source", pa.string()),
    ("prompt", pa.list_(MESSAGE)),
    ("ability", pa.string()),
    ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.list_(pa.string()))])),
    ("extra_info", pa.struct([("index", pa.int64()), ("sample_id", pa.string()), ("split", pa.string()),
                              ("code_system", pa.string()), ("label_space", pa.string()), ("n_codes", pa.int64())])),
])
"""``verl/<split>.parquet``: verl's RL dataset row (``extra_info`` travels with every batch to the reward)."""
EXAMPLE_COLUMNS = tuple(EXAMPLES_SCHEMA.names)
VERL_COLUMNS = tuple(VERL_SCHEMA.names)
PREPARE = "run `python -m data_tools.build.prepare` to write one, or point --data at a variant folder"


class VariantError(UserError):
    """A folder that is not (or no longer) a complete prepared variant."""


@dataclass
class Examples:
    """One split of ``examples/``: ids, patients, whole notes and gold codes in file order."""

    split: str
    ids: list[str]
    subjects: list[str | None]
    texts: list[str]
    codes: list[list[str]]
    texts_truncated: list[str] | None = None
    """The note as the prepared prompt holds it (read only on request: it doubles the memory)."""

    def __len__(self) -> int:
        return len(self.ids)

    def head(self, n: int | None) -> Examples:
        """The first ``n`` examples (all when None)."""
        if n is None:
            return self
        cut = self.texts_truncated[:n] if self.texts_truncated is not None else None
        return Examples(self.split, self.ids[:n], self.subjects[:n], self.texts[:n], self.codes[:n], cut)


@dataclass(frozen=True)
class PreparedVariant:
    """The paths of a prepared variant and readers for its files; ``error`` is the class its errors take."""

    root: Path
    error: type[UserError] = field(default=VariantError, compare=False, repr=False)
    _cache: dict = field(default_factory=dict, compare=False, repr=False, init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def containing(cls, path: str | Path, error: type[UserError] = VariantError) -> PreparedVariant | None:
        """The variant a file such as ``<root>/verl/train.parquet`` belongs to, or None when it is not inside one."""
        path = Path(path)
        if path.parent.name in ("examples", "verl", "sharegpt"):
            return cls(path.parent.parent, error)
        return None

    # --- layout ------------------------------------------------------------------------------------------

    @property
    def stats_path(self) -> Path:
        return self.root / "stats.json"

    @property
    def label_space_path(self) -> Path:
        return self.root / "label_space.json"

    @property
    def dataset_info_path(self) -> Path:
        return self.root / "dataset_info.json"

    def examples_path(self, split: str) -> Path:
        return self.root / "examples" / f"{split}.parquet"

    def verl_path(self, split: str) -> Path:
        return self.root / "verl" / f"{split}.parquet"

    def sharegpt_path(self, split: str) -> Path:
        return self.root / "sharegpt" / f"{split}.jsonl"

    def require(self, *paths: Path) -> None:
        """Raise ``error`` naming the first of ``paths`` that is not a file."""
        for path in paths:
            if not Path(path).is_file():
                raise user_error(path, f"no such file, so {self.root} is not a complete prepared variant", PREPARE,
                                 cls=self.error)

    # --- readers -----------------------------------------------------------------------------------------

    def stats(self) -> dict:
        """``stats.json`` (read once)."""
        if "stats" not in self._cache:
            self.require(self.stats_path)
            try:
                stats = json.loads(self.stats_path.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError) as exc:
                raise user_error(self.stats_path, f"unreadable stats ({type(exc).__name__})",
                                 "re-run data_tools.build.prepare for this variant", cls=self.error) from None
            if not isinstance(stats, dict):
                raise user_error(self.stats_path, f"holds {describe(stats)}, not an object",
                                 "re-run data_tools.build.prepare for this variant", cls=self.error)
            self._cache["stats"] = stats
        return self._cache["stats"]

    def stat(self, key: str) -> Any:
        """One required entry of ``stats.json``."""
        stats = self.stats()
        if key not in stats:
            raise user_error(self.stats_path, f'no "{key}" entry', "re-run data_tools.build.prepare for this variant",
                             cls=self.error)
        return stats[key]

    def tokens(self) -> dict:
        """The token settings prepare recorded (``stats.json`` → ``tokens``); empty when there are none."""
        tokens = self.stats().get("tokens")
        return tokens if isinstance(tokens, dict) else {}

    def chat_template_kwargs(self) -> dict:
        """The chat-template settings the prompts were fitted with; empty when not recorded or unreadable."""
        try:
            kwargs = self.tokens().get("chat_template_kwargs")
        except UserError:
            return {}
        return dict(kwargs) if isinstance(kwargs, dict) else {}

    def chat_template(self) -> str | None:
        """The chat template prepare fitted prompts with when the backbone overrides the model's; else None."""
        try:
            template = self.tokens().get("chat_template")
        except UserError:
            return None
        return template if isinstance(template, str) and template else None

    def max_prompt_length(self, default: int | None = None) -> int | None:
        """The prompt budget prepare fitted to (``--max-prompt-length``), else ``default``."""
        try:
            return int(self.tokens()["max_prompt_length"])
        except (UserError, KeyError, TypeError, ValueError):
            return default

    def prompt_spec(self) -> prompts.PromptSpec:
        """Code system, label scope and corpus as a ``prompts.PromptSpec``."""
        stats = self.stats()
        if not isinstance(stats.get("code_system"), str) or not isinstance(stats.get("label_scope"), str):
            raise user_error(self.stats_path, "no code system and label scope", "re-run data_tools.build.prepare "
                             "for this folder", cls=self.error)
        return prompts.PromptSpec(stats["code_system"], stats["label_scope"], stats.get("corpus"))

    def label_space(self) -> LabelSpace:
        """``label_space.json`` as a validated ``codes.LabelSpace`` (read once)."""
        if "label_space" not in self._cache:
            self.require(self.label_space_path)
            try:
                self._cache["label_space"] = load_label_space(self.label_space_path)
            except (OSError, ValueError, TypeError) as exc:
                raise user_error(self.label_space_path, f"unreadable label space ({type(exc).__name__})",
                                 "re-run data_tools.build.prepare for this variant", cls=self.error) from None
        return self._cache["label_space"]

    def code_system(self) -> CodeSystem:
        """The ICD tables of the variant's code system (``stats.json``; ``codes.load_code_system``)."""
        name = self.stat("code_system")
        if name not in SYSTEMS:
            raise user_error(self.stats_path, f"code_system is {describe(name)}, not one of {', '.join(SYSTEMS)}",
                             "re-run data_tools.build.prepare for this variant", cls=self.error)
        return load_code_system(name)

    def examples(self, split: str, *, truncated: bool = False) -> Examples:
        """``examples/<split>.parquet``; ``truncated`` also reads the notes as the prompts hold them."""
        self.require(self.examples_path(split))
        return read_examples(self.examples_path(split), split, truncated=truncated, error=self.error)

    def verl(self, split: str, columns: Sequence[str] | None = None) -> pa.Table:
        """``verl/<split>.parquet`` as a pyarrow table (``columns``: a subset of ``VERL_COLUMNS``)."""
        path = self.verl_path(split)
        self.require(path)
        try:
            return pq.read_table(path, columns=list(columns) if columns is not None else None)
        except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
            raise user_error(path, f"cannot read the prepared {split} split ({type(exc).__name__})",
                             "re-run data_tools.build.prepare for this variant", cls=self.error) from None


def read_examples(path: str | Path, split: str | None = None, *, truncated: bool = False,
                  error: type[UserError] = VariantError) -> Examples:
    """An ``examples/<split>.parquet`` file (also given on its own, e.g. ``--notes``); rows checked: a note is
    a string, codes a list."""
    path = Path(path)
    columns = list(EXAMPLE_COLUMNS if truncated else EXAMPLE_COLUMNS[:4])
    fix = "pass an examples file written by data_tools.build.prepare (re-run it for this variant)"
    try:
        data = pq.read_table(path, columns=columns).to_pydict()
    except FileNotFoundError:
        raise user_error(path, "no such file", PREPARE, cls=error) from None
    except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
        raise user_error(path, f"cannot read {', '.join(columns)} ({type(exc).__name__})", fix, cls=error) from None
    for row, (text, codes) in enumerate(zip(data["text"], data["codes"]), start=1):
        if not isinstance(text, str):
            raise user_error(path, f"the note is {describe(text)}", fix, row=row, column="text", cls=error)
        if codes is None:
            raise user_error(path, "no code list", fix, row=row, column="codes", cls=error)
    shown = data.get("text_truncated")
    if shown is not None:
        for row, text in enumerate(shown, start=1):
            if not isinstance(text, str):
                raise user_error(path, f"the note is {describe(text)}", fix, row=row, column="text_truncated",
                                 cls=error)
    return Examples(split or path.stem, [str(i) for i in data["id"]],
                    [None if s is None else str(s) for s in data["subject_id"]], data["text"],
                    [[str(c) for c in cs] for cs in data["codes"]], shown)
