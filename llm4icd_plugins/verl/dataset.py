"""``PHIDataset``: verl's ``RLHFDataset`` with PHI training-time hints (paper Sec. 4.3, App. E).

Plug it in with::

    data.custom_cls.path=pkg://llm4icd_plugins.verl.dataset data.custom_cls.name=PHIDataset
    data.train_files=<run>/round_<t>/train.parquet     # written by data_tools.phi.refresh
    +data.phi_inject_prob=0.5 +data.phi_max_hints=5 ...  # knobs, see hints.HintConfig

A PHI round file is the prepared ``verl/train.parquet`` plus a ``phi`` column per row: the hint pool,
for each pooled code its training frequency and latest recall, and (``note``) the whole note of a row
whose prompt holds a truncated one. Pool state lives in that file, never in this object: each PHI
round is its own ``main_ppo`` run. Rows with an empty pool are skipped; rows whose
``extra_info.split`` is not ``train`` (validation, test) are never hinted, and unhinted prompts pass
through byte for byte (they use the whole prompt budget). A hinted prompt is the row's prompt with the
App. E block inserted before the output-format line; when that exceeds ``data.max_prompt_length``
(real tokenizer and chat template), the whole note is re-fitted around the block with the tiered
truncation of ``llm4icd_plugins.truncation``, so every drawn hint stays. Hints are dropped (last drawn
first) only when not even an empty note leaves room for them. Without a ``phi`` column (plain GRPO)
rows pass through unchanged.

``+data.phi_hint_style`` picks what a draw inserts (the controls of a PHI ablation): ``paper`` (default, App. E),
``no_example`` (the block without its mini example, whose codes are frequent gold codes) or ``neutral`` (filler
text of the paper block's token length that names no code: same position and length, nothing to copy; such
rows carry ``phi_hints=[]``, as no code was shown).
"""

from __future__ import annotations

import copy
import json
import os
from collections import Counter

from verl.utils.dataset.rl_dataset import RLHFDataset

from llm4icd_plugins import prompts
from llm4icd_plugins.hints import HintConfig, HintSampler, draw_rng
from llm4icd_plugins.truncation import NoteFitter, count_prompt_tokens

__all__ = ["PHIDataset", "PHI_COLUMN", "insert_hint_block", "split_prompt"]

PHI_COLUMN = "phi"


def split_prompt(content: str, code_system: str) -> tuple[str, str, str]:
    """``(head, note, tail)`` of a prompt built by ``prompts.build_user_prompt`` without hints: ``head`` ends
    with the note header line, ``tail`` is the blank line and the output-format line."""
    tail = "\n\n" + prompts.format_line(prompts.PromptSpec(code_system))
    header = "\n\n" + prompts.NOTE_HEADER + "\n"
    start = content.find(header)
    if start < 0 or not content.endswith(tail) or start + len(header) > len(content) - len(tail):
        raise ValueError("the prompt is not an unhinted training prompt of llm4icd_plugins.prompts (note header, "
                         "output-format line)")
    start += len(header)
    return content[:start], content[start:len(content) - len(tail)], content[len(content) - len(tail):]


def insert_hint_block(content: str, hints, code_system: str, *, max_description_chars: int) -> str:
    """``content`` (a prompt built by ``prompts.build_user_prompt`` without hints) with the hint block
    placed before its output-format line: the same text ``build_user_prompt(note, spec, hints)`` gives."""
    head, note, tail = split_prompt(content, code_system)
    return _hinted(head, note, tail, _block(hints, code_system, max_description_chars))


def _block(hints, code_system: str, max_description_chars: int, example: bool = True) -> str:
    return prompts.render_hint_block([h[0] for h in hints], [h[1] for h in hints], code_system,
                                     max_description_chars=max_description_chars, example=example)


def _hinted(head: str, note: str, tail: str, block: str) -> str:
    return head + note + "\n\n" + block + tail


class PHIDataset(RLHFDataset):
    """RLHFDataset whose training rows carry hint pools and get stochastic, budget-checked hints."""

    def __init__(self, data_files, tokenizer, config, processor=None, max_samples: int = -1):
        seed = config.get("seed")
        self.hint_config = HintConfig.from_mapping(config, default_seed=0 if seed is None else seed)
        self.hint_sampler = None
        self.phi_round = None
        self.hint_stats: Counter = Counter()
        self._draws: Counter = Counter()
        self._descriptions: dict[tuple[str, str], str | None] = {}
        self._fitter: NoteFitter | None = None  # built on first use, in each data-loader worker
        self._neutral_blocks: dict[int, str] = {}  # token count of a paper block -> neutral block of that length
        super().__init__(data_files, tokenizer, config, processor=processor, max_samples=max_samples)

    # Runs at construction and again on verl's resume_dataset_state, so filtering is never lost.
    def _read_files_and_tokenize(self):
        super()._read_files_and_tokenize()
        self._setup_phi()

    def _where(self) -> str:
        return ", ".join(map(str, self.original_data_files))

    def _setup_phi(self) -> None:
        frame = self.dataframe
        extra = frame["extra_info"] if "extra_info" in frame.column_names else [None] * len(frame)
        splits = [(e or {}).get("split") for e in extra]
        n_train = sum(s == "train" for s in splits)
        if PHI_COLUMN not in frame.column_names:
            if n_train:
                raise ValueError(
                    f"{self._where()}: {n_train} training rows have no '{PHI_COLUMN}' column (hint pools). Fix: "
                    "point data.train_files to a round file written by `python -m data_tools.phi.refresh`, or drop "
                    "data.custom_cls for plain GRPO")
            return
        phi = frame[PHI_COLUMN]
        freq: dict[str, int] = {}
        recall: dict[str, float] = {}
        keep = []
        rounds = set()
        for i, (row, split) in enumerate(zip(phi, splits)):
            if split != "train":
                keep.append(i)
                continue
            if row is None:
                raise ValueError(f"{self._where()}, row {i}: training row without a hint pool. Fix: rewrite the "
                                 "file with data_tools.phi.refresh")
            pool, pool_freq, pool_recall = row["pool"] or [], row["pool_freq"] or [], row["pool_recall"] or []
            if not len(pool) == len(pool_freq) == len(pool_recall):
                raise ValueError(f"{self._where()}, row {i}: pool, pool_freq and pool_recall differ in length. "
                                 "Fix: rewrite the file with data_tools.phi.refresh")
            for code, n, r in zip(pool, pool_freq, pool_recall):
                if freq.setdefault(code, n) != n or recall.setdefault(code, r) != r:
                    raise ValueError(f"{self._where()}, row {i}: code {code} has frequency/recall {n}/{r} here but "
                                     f"{freq[code]}/{recall[code]} elsewhere. Fix: rewrite the file with "
                                     "data_tools.phi.refresh (one refresh per file)")
            rounds.add(row.get("round"))
            if pool or not self.hint_config.skip_empty:
                keep.append(i)
        if len(rounds) > 1:
            raise ValueError(f"{self._where()}: rows of several PHI rounds {sorted(map(str, rounds))}. Fix: train on "
                             "one round file at a time")
        self.phi_round = next(iter(rounds), None)
        self.hint_stats["rows_skipped_empty_pool"] = len(frame) - len(keep)
        if len(keep) < len(frame):
            self.dataframe = frame.select(keep)
        if n_train and len(self.dataframe) == 0:
            raise ValueError(f"{self._where()}: every hint pool is empty (the model recovers every gold code), "
                             "nothing left to train on. Fix: stop the PHI rounds here")
        self.hint_sampler = HintSampler(freq, recall, self.hint_config)

    def _description(self, system: str, code: str) -> str | None:
        key = (system, code)
        if key not in self._descriptions:
            from llm4icd_plugins.codes import load_code_system

            self._descriptions[key] = load_code_system(system).description(code)
        return self._descriptions[key]

    def __getstate__(self):
        state = super().__getstate__()
        state["_fitter"] = None  # holds a tokenizer copy; rebuilt where it is used
        return state

    def template_kwargs(self) -> dict:
        """verl's ``apply_chat_template_kwargs`` without the arguments the token count sets itself."""
        return {k: v for k, v in dict(self.apply_chat_template_kwargs or {}).items()
                if k not in ("tokenize", "return_dict", "return_tensors", "add_generation_prompt", "conversation")}

    def fitter(self) -> NoteFitter:
        """The note re-fit of ``llm4icd_plugins.truncation``, with the chat-template arguments of verl's count."""
        if self._fitter is None:
            self._fitter = NoteFitter(self.tokenizer, chat_template_kwargs=self.template_kwargs())
        return self._fitter

    def _n_tokens(self, block: str) -> int:
        """Tokens of ``block`` between the blank lines that surround it in a prompt (so boundary merges count)."""
        return len(self.tokenizer("\n\n" + block + "\n\n", add_special_tokens=False)["input_ids"])

    def hint_block(self, codes, code_system: str) -> str:
        """The block a draw of ``codes`` inserts, in the style of ``data.phi_hint_style``."""
        style = self.hint_config.hint_style
        paper = _block([(c, self._description(code_system, c)) for c in codes], code_system,
                       self.hint_config.description_chars, example=style != "no_example")
        if style != "neutral":
            return paper
        target = self._n_tokens(paper)
        if target not in self._neutral_blocks:
            lo, hi = 0, target  # the most filler words whose block is at most ``target`` tokens (a word >= 1 token)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self._n_tokens(prompts.neutral_block(mid)) <= target:
                    lo = mid
                else:
                    hi = mid - 1
            under, over = prompts.neutral_block(lo), prompts.neutral_block(lo + 1)
            closer = over if self._n_tokens(over) - target < target - self._n_tokens(under) else under
            self._neutral_blocks[target] = closer
        return self._neutral_blocks[target]

    def hinted_messages(self, messages: list[dict], hints, code_system: str, sample_id,
                        note: str | None = None) -> tuple[list[dict], tuple]:
        """``messages`` with the hint block of ``hints`` (draw order) within ``max_prompt_length``.

        The prompt's own note is kept if the hinted prompt fits; otherwise ``note`` (the whole note; default the
        prompt's) is re-fitted around the block. Hints are dropped, last drawn first, only while not even an
        empty note fits.
        """
        user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
        if user is None:
            raise ValueError(f"{self._where()}, sample {sample_id}: the prompt has no user turn")
        try:
            head, shown, tail = split_prompt(messages[user]["content"], code_system)
        except ValueError as exc:
            raise ValueError(f"{self._where()}, sample {sample_id}: {exc}. Fix: rebuild the data with "
                             "data_tools.build.prepare and data_tools.phi.refresh") from exc
        whole = shown if note is None else note
        fitter = self.fitter()
        hints = tuple(hints)
        while hints:
            block = self.hint_block(hints, code_system)

            def build(text: str) -> list[dict]:
                candidate = copy.deepcopy(messages)
                candidate[user]["content"] = _hinted(head, text, tail, block)
                return candidate

            fitted = fitter.fit(whole, build, self.max_prompt_length)
            if fitted is not None:
                # Hints never show more of the note than the prompt did: a re-fit longer than the prompt's
                # (truncated) note means that note fits with the block (prepare cut it for a tighter budget).
                if whole != shown and len(fitted.text) >= len(shown) and count_prompt_tokens(
                        self.tokenizer, build(shown), **self.template_kwargs()) <= self.max_prompt_length:
                    return build(shown), hints
                if fitted.truncated:
                    self.hint_stats["notes_refitted"] += 1
                return build(fitted.text), hints
            hints = hints[:-1]
            self.hint_stats["hints_dropped_for_budget"] += 1
        return messages, ()

    def __getitem__(self, item):
        row = super().__getitem__(item)
        phi = row.pop(PHI_COLUMN, None)
        extra = row["extra_info"]
        hints: tuple = ()
        if phi is not None and extra.get("split") == "train" and self.hint_sampler is not None:
            sample_id = extra.get("sample_id", row.get("index"))
            rng = draw_rng(self.hint_config.seed, f"{self.phi_round}:{sample_id}", self._draws[sample_id])
            self._draws[sample_id] += 1
            drawn = self.hint_sampler.draw(list(phi["pool"] or []), rng)
            if drawn:
                messages, hints = self.hinted_messages(row["raw_prompt"], drawn, extra["code_system"], sample_id,
                                                       phi.get("note"))
                row["raw_prompt"] = messages
                row[self.prompt_key] = copy.deepcopy(messages)
                self.hint_stats["rows_hinted" if hints else "rows_unhinted_over_budget"] += 1
                if self.hint_config.hint_style == "neutral":
                    hints = ()  # the block names no code: none was shown, every pool code stays recoverable
        # phi_pool and phi_hints: what reward.recovery_bonus needs to reward unhinted pool codes (codes only)
        pool = list(phi["pool"] or []) if phi is not None and extra.get("split") == "train" else []
        row["extra_info"] = dict(extra, phi_hints=list(hints), phi_pool=pool)
        if self.hint_config.audit_file:
            self._audit(extra.get("sample_id", row.get("index")), extra.get("split"), hints)
        return row

    def _audit(self, sample_id, split, hints) -> None:
        """One JSON line per draw (codes only): lets a run prove that only training prompts got hints."""
        line = json.dumps({"sample_id": str(sample_id), "split": split, "round": self.phi_round,
                           "hints": list(hints)}) + "\n"
        fd = os.open(self.hint_config.audit_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())  # one write with O_APPEND: lines from parallel workers never interleave
        finally:
            os.close(fd)
