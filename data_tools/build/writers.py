"""Writing one prepared variant (layout: ``llm4icd_plugins.variant``): the label space, the examples, the
LlamaFactory ShareGPT conversations with their ``dataset_info.json``, the verl parquet rows and ``stats.json``."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from data_tools.build.examples import SPLITS
from data_tools.build.prompt_budget import TruncationSettings, fit_prompts, hint_block_tokens, summary
from llm4icd_plugins import prompts
from llm4icd_plugins.variant import EXAMPLES_SCHEMA, VERL_SCHEMA, PreparedVariant

ABILITY = "icd_coding"
SHAREGPT_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                 "assistant_tag": "assistant", "system_tag": "system"}


def write_variant(out_dir: Path, name: str, examples: pd.DataFrame, label_codes: Sequence[str],
                  spec: prompts.PromptSpec, system, settings: TruncationSettings, tokenizer, stats: dict,
                  candidates: Sequence[list] | None = None) -> dict:
    """Write one variant (label space, examples, ShareGPT, verl, dataset_info, stats) under ``out_dir``;
    ``candidates`` (one list of (code, description) pairs per example) go into every prompt."""
    from llm4icd_plugins.codes import LabelSpace

    layout = PreparedVariant(out_dir)
    out_dir.mkdir(parents=True)
    LabelSpace(name, spec.code_system, list(label_codes)).save(layout.label_space_path)
    answers = [prompts.format_answer(c) for c in examples["codes"]]
    token_stats: dict = {}
    notes = fit_prompts(examples, spec, answers, settings, tokenizer, token_stats, candidates)
    if tokenizer is not None:
        kwargs = settings.chat_template_kwargs()
        token_stats["worst_case_hint_block_tokens"] = hint_block_tokens(tokenizer, spec, label_codes, system, kwargs)
        if 0 < settings.hint_reserve < token_stats["worst_case_hint_block_tokens"]:
            print(f"warning: {name}: a 5-code PHI hint block can take {token_stats['worst_case_hint_block_tokens']} "
                  f"tokens, more than --hint-reserve {settings.hint_reserve}", file=sys.stderr)
    per_split = {}
    for split in SPLITS:
        mask = (examples["split"] == split).to_numpy()
        part = examples[mask]
        part_candidates = None if candidates is None else [c for c, m in zip(candidates, mask) if m]
        per_split[split] = _write_split(layout, name, split, part, [n for n, m in zip(notes, mask) if m],
                                        [a for a, m in zip(answers, mask) if m], spec, part_candidates)
    dataset_info = {f"{name}_{split}": {"file_name": str(layout.sharegpt_path(split).relative_to(out_dir)),
                                        "formatting": "sharegpt", "columns": {"messages": "messages"},
                                        "tags": dict(SHAREGPT_TAGS)}
                    for split in SPLITS}
    layout.dataset_info_path.write_text(json.dumps(dataset_info, indent=2) + "\n", encoding="utf-8")
    occurrences = Counter(c for cs in examples["codes"] for c in cs)
    unknown = sorted(c for c in occurrences if c not in system)
    stats = dict(stats, variant=name, corpus=spec.corpus, code_system=spec.code_system, label_scope=spec.label_scope,
                 splits=per_split, n_labels=len(label_codes),
                 unknown_codes={"note": "codes absent from the current ICD tables (e.g. retired ICD-9-CM codes): "
                                        "kept as gold labels, not corrected",
                                "distinct": len(unknown), "occurrences": int(sum(occurrences[c] for c in unknown)),
                                "codes": unknown},
                 tokens=token_stats)
    if candidates is not None:
        stats["candidates"] = dict(stats.get("candidates", {}), listed_per_note=summary([len(c) for c in candidates]),
                                   notes_without_any=int(sum(not c for c in candidates)))
    layout.stats_path.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return stats


def _write_split(layout: PreparedVariant, name: str, split: str, part: pd.DataFrame, notes: list[str],
                 answers: list[str], spec: prompts.PromptSpec, candidates: list | None) -> dict:
    """The examples, ShareGPT and verl files of one split; returns its statistics."""
    for path in (layout.examples_path(split), layout.sharegpt_path(split), layout.verl_path(split)):
        path.parent.mkdir(exist_ok=True)
    pq.write_table(pa.Table.from_pydict({
        "id": part["id"].tolist(), "subject_id": part["subject_id"].astype(object).where(
            part["subject_id"].notna(), None).tolist(),
        "text": part["text"].tolist(), "codes": part["codes"].tolist(), "text_truncated": notes,
    }, schema=EXAMPLES_SCHEMA), layout.examples_path(split))
    verl_rows: dict[str, list] = {k: [] for k in VERL_SCHEMA.names}
    with open(layout.sharegpt_path(split), "w", encoding="utf-8") as fh:
        rows = zip(part["id"], part["codes"], notes, answers, candidates or [None] * len(part))
        for index, (sample_id, codes, note, answer, cands) in enumerate(
                tqdm(rows, total=len(part), desc=f"{name}/{split}", unit="ex", leave=False)):
            messages = prompts.build_messages(note, spec, candidates=cands)
            fh.write(json.dumps({"id": sample_id, "messages": messages + [
                {"role": "assistant", "content": answer}]}, ensure_ascii=False) + "\n")
            verl_rows["data_source"].append(f"llm4icd/{name}")
            verl_rows["prompt"].append(messages)
            verl_rows["ability"].append(ABILITY)
            verl_rows["reward_model"].append({"style": "rule", "ground_truth": list(codes)})
            verl_rows["extra_info"].append({"index": index, "sample_id": sample_id, "split": split,
                                            "code_system": spec.code_system, "label_space": name,
                                            "n_codes": len(codes)})
    pq.write_table(pa.Table.from_pydict(verl_rows, schema=VERL_SCHEMA), layout.verl_path(split))
    return {"examples": int(len(part)), "distinct_codes": len({c for cs in part["codes"] for c in cs}),
            "codes_per_note": summary(part["codes"].map(len).tolist()),
            "subjects": int(part["subject_id"].nunique())}
