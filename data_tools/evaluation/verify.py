"""Verification by the ICD hierarchy: generate → expand → verify, on top of any predictions file.

    python -m data_tools.evaluation.verify --predictions preds/sft.jsonl --data data/prepared/mimic3_full \\
        --split test --model models/sft --out preds/sft_verified.jsonl

Each note's predicted codes (Ŷ of its prediction record, ``llm4icd_plugins.records``, as evaluation reads them)
are expanded by the code tables (``llm4icd_plugins.expansion``: their siblings, then the codes of their
categories; gold is never looked at), restricted to the variant's label space and capped (``--max-candidates``).
One more LLM call per note shows the candidates numbered and by description only, with the note cut by the
project's tiered truncation so that note, list and instruction fit ``--prompt-budget``, and asks which apply.
The chosen numbers map back to codes; an answer with nothing readable keeps the note's predictions. Codes
without a description in the tables (retired MIMIC-III codes) are kept as predicted and not shown. Notes without
predictions are passed through.

The output has infer's record format (``data_tools.evaluation.evaluate`` reads it unchanged; ``response`` is the final
``<code>…</code>`` answer, the verifier's own text is ``verify_response``), plus per note ``before``, ``added``,
``removed`` and, computed from gold after the call, ``near_miss_repairs``/``near_miss_breaks``. It is resumable
like infer's (run record ``X.jsonl.meta.json``); ``X.summary.json`` holds the totals printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from data_tools.cli import exit_with, run_tool
from data_tools.evaluation import baselines, infer
from llm4icd_plugins import atomic, expansion, prompts, records
from llm4icd_plugins.errors import UserError
from llm4icd_plugins.metrics import corpus_metrics
from llm4icd_plugins.truncation import NoteFitter
from llm4icd_plugins.variant import PreparedVariant

PROMPT_KIND = "verify"


class VerifyError(UserError):
    """A problem with the inputs of a verification run, with what to do about it."""


@dataclass
class Item:
    """One note to verify: its predictions, the candidates shown (codes and descriptions) and codes kept unshown."""

    id: str
    gold: list[str]
    before: list[str]
    candidates: list[str]
    descriptions: list[str]
    kept: list[str]


def read_predictions(path: Path, code_system) -> list[tuple[str, list[str], list[str]]]:
    """(id, predicted codes, gold) per line: ``records.read_predictions`` (Ŷ re-derived from the response)."""
    return [(r.id, r.codes, list(r.gold)) for r in records.read_predictions(path, code_system, error=VerifyError)]


def read_notes(data_dir: Path, split: str) -> dict[str, str]:
    """The notes of a prepared split by id (``examples/<split>.parquet``)."""
    examples = PreparedVariant(data_dir, VerifyError).examples(split)
    return dict(zip(examples.ids, examples.texts))


def plan_items(predictions, code_system, label_space, max_candidates: int | None) -> list[Item]:
    """Candidates per note: predicted codes expanded by the hierarchy (gold is carried along, never used)."""
    hierarchy = expansion.Hierarchy(code_system, label_space)
    items = []
    for doc_id, before, gold in predictions:
        shown = [c for c in before if code_system.description(c)]
        kept = [c for c in before if c not in set(shown)]
        candidates = hierarchy.expand(shown, max_candidates) if shown else []
        descriptions = [prompts.truncate_description(code_system.description(c)) or c for c in candidates]
        items.append(Item(doc_id, list(gold), list(before), candidates, descriptions, kept))
    return items


def fit_prompt(fitter, note: str, item: Item, spec, budget: int):
    """The messages of one note's verification prompt within ``budget`` tokens, or None. When the list alone is
    over the budget, expanded candidates are dropped from the end (predicted ones never) until it fits."""
    n = len(item.candidates)
    n_predicted = sum(c in set(item.before) for c in item.candidates)
    while True:
        descriptions = item.descriptions[:n]
        fitted = fitter.fit(note, lambda text, shown=descriptions: prompts.verify_messages(text, shown, spec), budget)
        if fitted is not None:
            del item.candidates[n:], item.descriptions[n:]
            return prompts.verify_messages(fitted.text, descriptions, spec), fitted.truncated
        if n <= n_predicted:
            return None
        n = max(n_predicted, n // 2)


def final_codes(item: Item, text, code_system=None) -> tuple[list[str], bool]:
    """The codes after verification and whether the answer was readable (if not, the predictions stay)."""
    selection = expansion.parse_selection(text, item.descriptions, item.candidates, code_system)
    if not selection.parsed:
        return list(item.before), False
    chosen = set(selection.chosen)
    return item.kept + [c for i, c in enumerate(item.candidates) if i in chosen], True


def output_record(item: Item, after: list[str], name: str, code_system, **extra) -> dict:
    """Infer's record format for the final codes, with the verification's changes."""
    repairs, breaks = expansion.near_miss_repairs(item.before, after, item.gold, code_system)
    return {"id": item.id, "model": name, "response": prompts.format_answer(after), "pred": after, "gold": item.gold,
            "n_malformed": 0, "n_unknown": 0, "unknown": [], "has_span": True, "format_ok": True,
            "before": item.before, "added": [c for c in after if c not in set(item.before)],
            "removed": [c for c in item.before if c not in set(after)], "candidates": item.candidates,
            "near_miss_repairs": repairs, "near_miss_breaks": breaks, **extra}


def summarize(out: Path) -> dict:
    """Totals over every record of ``out``, micro-F1 before and after included (from gold: evaluation only)."""
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]
    golds = [r["gold"] for r in rows]
    keys = ("verified", "unreadable", "over_budget", "notes_changed", "codes_added", "codes_removed",
            "near_miss_repairs", "near_miss_breaks")
    total = dict.fromkeys(keys, 0)
    for r in rows:
        total["verified"] += r["verified"]
        total["unreadable"] += r["verified"] and not r["verify_parsed"]
        total["over_budget"] += r["over_budget"]
        total["notes_changed"] += bool(r["added"] or r["removed"])
        total["codes_added"] += len(r["added"])
        total["codes_removed"] += len(r["removed"])
        total["near_miss_repairs"] += r["near_miss_repairs"]
        total["near_miss_breaks"] += r["near_miss_breaks"]
    summary = {"notes": len(rows), **total, "mean_candidates": round(sum(len(r["candidates"]) for r in rows)
                                                                      / max(len(rows), 1), 2)}
    if rows and any(golds):
        for key, preds in (("before", [r["before"] for r in rows]), ("after", [r["pred"] for r in rows])):
            metrics = corpus_metrics(golds, preds)  # Edin's label space, as evaluation scores by default
            summary[f"micro_f1_{key}"] = round(float(metrics["micro_f1"]), 4)
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_tools.evaluation.verify", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--predictions", required=True, type=Path,
                   help="predictions JSONL to verify (data_tools.evaluation.infer's output, or any file evaluate "
                        "reads)")
    p.add_argument("--data", required=True, type=Path,
                   help="the prepared variant the predictions are for (notes, label space, code system)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="the predicted split")
    p.add_argument("--model", required=True, type=Path, help="the verifying model (a Hugging Face model folder)")
    p.add_argument("--lora", type=Path, default=None, help="a LoRA adapter folder to run on top of --model")
    p.add_argument("--out", required=True, type=Path, metavar="PATH",
                   help="output JSONL (appended and resumable: a re-run of the same command continues it)")
    p.add_argument("--overwrite", action="store_true", help="start the output again (default: resume the same run, "
                                                            "refuse another)")
    p.add_argument("--max-candidates", type=int, default=30,
                   help="most candidates shown per note: the predicted codes, then siblings, then category codes")
    p.add_argument("--prompt-budget", type=int, default=None,
                   help="prompt tokens incl. chat template that note, candidates and instruction are fitted to "
                        "(default: the variant's max prompt length, capped at --max-model-len minus --max-new-tokens)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="answer budget (the answer is a list of numbers)")
    p.add_argument("--enable-thinking", action=argparse.BooleanOptionalAction, default=None,
                   help="chat-template thinking switch; default: the setting recorded in the variant's stats.json")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="GPUs per model replica")
    p.add_argument("--max-model-len", type=int, default=None, help="context length for vLLM (default: the model's)")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="vLLM GPU memory share")
    p.add_argument("--dtype", default="auto", help="model dtype for vLLM (auto, bfloat16, float32)")
    p.add_argument("--enforce-eager", action="store_true", help="skip vLLM's graph capture (starts faster; CPU tests)")
    p.add_argument("--max-samples", type=int, default=None, help="only the first N predictions (quick checks)")
    p.add_argument("--batch-size", type=int, default=256, help="notes per engine call; results appended after each")
    p.add_argument("--seed", type=int, default=0, help="engine seed (decoding is greedy)")
    return p


def _budget(args: argparse.Namespace) -> int:
    if args.prompt_budget is not None:
        return args.prompt_budget
    budget = baselines.default_budget(args.data)
    return min(budget, args.max_model_len - args.max_new_tokens) if args.max_model_len else budget


def run(args: argparse.Namespace) -> dict:
    """Verify every prediction not yet in ``--out`` and return the summary over the whole output."""
    if not (args.model / "config.json").is_file():
        raise VerifyError(f"--model {args.model}: no config.json there (a Hugging Face model folder is expected)")
    if args.lora is not None and not (args.lora / "adapter_config.json").is_file():
        raise VerifyError(f"--lora {args.lora}: no adapter_config.json there (a PEFT LoRA adapter folder)")
    if args.max_candidates < 1:
        raise VerifyError(f"--max-candidates {args.max_candidates}: give at least 1")
    variant = PreparedVariant(args.data, VerifyError)
    label_space = list(variant.label_space().codes)
    code_system, spec = variant.code_system(), variant.prompt_spec()
    if not args.predictions.is_file():
        raise VerifyError(f"--predictions {args.predictions}: no such file")
    kwargs = variant.chat_template_kwargs() if args.enable_thinking is None else {
        "enable_thinking": args.enable_thinking}
    budget = _budget(args)
    files = [args.predictions, variant.examples_path(args.split), variant.label_space_path]
    decoding = {"max_new_tokens": args.max_new_tokens, "temperature": 0.0, "seed": args.seed, "dtype": args.dtype,
                "chat_template_kwargs": kwargs, "prompt_budget": budget, "max_candidates": args.max_candidates,
                "prompt": prompts.verify_messages("NOTE", ["A", "B"], spec)}
    record = infer.run_record(args.model, args.lora, args.split, PROMPT_KIND, files, decoding)
    done = infer.plan_resume(args.out, record, args.overwrite)

    predictions = read_predictions(args.predictions, code_system)[: args.max_samples]
    notes = read_notes(args.data, args.split)
    missing = [i for i, _, _ in predictions if i not in notes]
    if missing:
        raise VerifyError(f"{args.predictions}: {len(missing)} ids are not in the {args.split} split of {args.data} "
                          f"(e.g. {missing[0]!r}). Fix: pass the variant and --split the predictions were made for")
    items = [i for i in plan_items(predictions, code_system, label_space, args.max_candidates) if i.id not in done]
    name = args.model.name if args.lora is None else args.lora.name
    if items:
        _verify(args, items, notes, spec, budget, kwargs, name, code_system)
    summary = summarize(args.out) if args.out.exists() else {"notes": 0}
    summary.update(output=str(args.out), written=len(items), already_done=len(done))
    atomic.write_text(args.out.with_name(args.out.name.removesuffix(".jsonl") + ".summary.json"),
                      json.dumps(summary, indent=2) + "\n")
    print(f"[verify] {len(items)} verified ({len(done)} already done) → {args.out}\n[verify] " + ", ".join(
        f"{k} {v}" for k, v in summary.items() if k not in ("output", "written", "already_done")))
    return summary


def _engine(args: argparse.Namespace):
    if not infer._has_gpu():  # vLLM's CPU build would otherwise reserve most of the RAM for its KV cache
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM

    engine_kwargs = dict(model=str(args.model), tokenizer=str(args.model), dtype=args.dtype, seed=args.seed,
                         tensor_parallel_size=args.tensor_parallel_size,
                         gpu_memory_utilization=args.gpu_memory_utilization, enforce_eager=args.enforce_eager)
    if args.max_model_len:
        engine_kwargs["max_model_len"] = args.max_model_len
    if args.lora is not None:
        engine_kwargs.update(enable_lora=True, max_loras=1, max_lora_rank=infer._adapter_rank(args.lora))
    return LLM(**engine_kwargs)


def _verify(args, items: list[Item], notes: dict[str, str], spec, budget: int, kwargs: dict, name: str,
            code_system) -> None:
    tokenizer = infer.load_tokenizer(args.model, args.data)
    fitter = NoteFitter(tokenizer, chat_template_kwargs=kwargs)
    llm = sampling = lora = None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(args.out, "a", encoding="utf-8") as sink, tqdm(total=len(items), desc="verify", unit="note") as bar:
        for lo in range(0, len(items), args.batch_size):
            chunk = items[lo: lo + args.batch_size]
            fitted = [fit_prompt(fitter, notes[i.id], i, spec, budget) if i.candidates else None for i in chunk]
            asked = [(item, messages) for item, (messages, _) in zip(chunk, [f or (None, None) for f in fitted])
                     if messages is not None]
            if asked and llm is None:
                from vllm import SamplingParams
                from vllm.lora.request import LoRARequest

                llm = _engine(args)
                sampling = SamplingParams(temperature=0.0, max_tokens=args.max_new_tokens, seed=args.seed)
                lora = LoRARequest(name, 1, str(args.lora)) if args.lora is not None else None
            inputs = infer.prompt_inputs(tokenizer, [m for _, m in asked], kwargs)
            outputs = dict(zip([item.id for item, _ in asked],
                               llm.generate(inputs, sampling, lora_request=lora, use_tqdm=False) if asked else []))
            for item, fit in zip(chunk, fitted):
                output = outputs.get(item.id)
                if output is None:  # nothing to show, or the list alone over the budget: predictions kept
                    line = output_record(item, list(item.before), name, code_system, verified=False,
                                         verify_parsed=False, verify_response=None, over_budget=bool(item.candidates),
                                         note_truncated=False, prompt_tokens=0, gen_tokens=0, finish_reason=None)
                else:
                    completion = output.outputs[0]
                    after, readable = final_codes(item, completion.text, code_system)
                    line = output_record(item, after, name, code_system, verified=True, verify_parsed=readable,
                                         verify_response=completion.text, over_budget=False,
                                         note_truncated=bool(fit[1]), prompt_tokens=len(output.prompt_token_ids or ()),
                                         gen_tokens=len(completion.token_ids), finish_reason=completion.finish_reason)
                sink.write(json.dumps(line, ensure_ascii=False) + "\n")
            sink.flush()
            os.fsync(sink.fileno())
            bar.update(len(chunk))
    print(f"[verify] {name}: {len(items)} notes in {time.perf_counter() - start:.1f} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_tool(parser.prog, lambda: run(args) and None)


if __name__ == "__main__":  # vLLM spawns worker processes: the guard is required
    exit_with(main)
