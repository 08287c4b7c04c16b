"""Benchmark of constrained decoding (``data_tools.evaluation.constrain``): grammar compile time and per-token mask
cost at MIMIC-III/IV Full label-space sizes, constrained next to unconstrained decoding.

Code sets: 3,681 real ICD-9 codes and 7,942 real ICD-10 codes drawn (fixed seed) from the project's tables
(Edin's MIMIC-III and MIMIC-IV ICD-10 Full label-space sizes), and with ``--open`` the whole tables (the
``code-system`` constraint). Tokenizer: ``data_tools.build.tiny_model``'s byte-level BPE trained here on synthetic notes
and the tables' code titles (``--vocab`` tokens, Qwen2 style), or the one of ``--model``.

1. xgrammar directly (the engine vLLM's structured outputs run): compile time of both grammar spellings
   (alternation, trie; cache off) and the time to fill the next-token bitmask per decoding step while a
   realistic 12-code answer is fed token by token. Unconstrained decoding has no mask to fill.
2. vLLM (skip with ``--no-vllm``) on a tiny random Qwen2 with the same tokenizer: the same prompts sampled
   freely and under each grammar; time per generated token and per request (first call compiles the grammar,
   the second finds it in vLLM's grammar cache).

Run: ``.venvs/rl/bin/python bench/bench_constrain.py [--quick] [--open] [--no-vllm]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path


from data_tools.evaluation import constrain

SIZES = (("MIMIC-III Full (ICD-9)", "icd9", 3681), ("MIMIC-IV Full (ICD-10)", "icd10", 7942))
ANSWER_CODES = 12
ALTERNATION_LIMIT = 50_000
"""Above this the alternation is not measured: the ICD-10 tables' ~160k-code alternation ran over 3 minutes."""


def code_sets(include_open: bool) -> list[tuple[str, list[str]]]:
    from llm4icd_plugins.codes import load_code_system

    out = []
    for name, system, size in SIZES:
        table = load_code_system(system)
        billable = sorted(c for c in table if table.is_billable(c))
        out.append((f"{name}, {size:,} codes", random.Random(0).sample(billable, size)))
        if include_open:
            out.append((f"{system} tables, {len(table):,} codes", list(table)))
    return out


def build_model(folder: Path, vocab: int, quick: bool) -> Path:
    from data_tools.build.tiny_model import build_tiny_model, synthetic_texts

    from llm4icd_plugins.codes import load_code_system

    # Synthetic notes alone run out of merges far below a real vocabulary; the tables' code titles add words.
    texts = synthetic_texts(60 if quick else 300, seed=0)
    for system in ("icd9", "icd10"):
        table = load_code_system(system)
        titles = [table.description(c) or "" for c in table]
        texts += [" ".join(titles[i: i + 50]).lower() for i in range(0, len(titles), 50)]
    return build_tiny_model(folder / "model", texts, vocab_size=vocab, seed=0)


def time_xgrammar(tokenizer, codes: list[str], form: str, repeats: int, answers: int) -> dict:
    import xgrammar as xgr

    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer))
    grammar = constrain.build_grammar(codes, form=form)
    compile_s = []
    for _ in range(repeats):
        compiler = xgr.GrammarCompiler(info, cache_enabled=False)
        start = time.perf_counter()
        compiled = compiler.compile_grammar(grammar)
        compile_s.append(time.perf_counter() - start)
    matcher = xgr.GrammarMatcher(compiled)
    bitmask = xgr.allocate_token_bitmask(1, info.vocab_size)
    rng = random.Random(1)
    fill_ms = []
    for _ in range(answers):
        matcher.reset()
        text = "<code>" + ", ".join(rng.sample(codes, ANSWER_CODES)) + "</code>"
        for token in [*tokenizer.encode(text, add_special_tokens=False), tokenizer.eos_token_id]:
            start = time.perf_counter()
            matcher.fill_next_token_bitmask(bitmask)
            fill_ms.append(1000 * (time.perf_counter() - start))
            assert matcher.accept_token(token), "the grammar rejected a code of its own set"
    fill_ms.sort()
    return {"compile_s": statistics.median(compile_s), "mask_ms_mean": statistics.fmean(fill_ms),
            "mask_ms_p95": fill_ms[int(0.95 * (len(fill_ms) - 1))], "steps": len(fill_ms),
            "grammar_kb": len(grammar) / 1024}


def time_vllm(model: Path, sets: list[tuple[str, list[str]]], prompts: int, max_tokens: int) -> list[tuple]:
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    tokenizer = AutoTokenizer.from_pretrained(model)
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": f"Code admission {i}."}], tokenize=False,
                                           add_generation_prompt=True) for i in range(prompts)]
    llm = LLM(model=str(model), dtype="float32", enforce_eager=True, max_model_len=512, seed=0,
              structured_outputs_config={"backend": "xgrammar"})
    rows = []
    conditions = [("unconstrained", None)] + [(name, constrain.build_grammar(codes)) for name, codes in sets]
    for name, grammar in conditions:
        for call in ("first call", "cached"):
            params = SamplingParams(temperature=1.0, max_tokens=max_tokens, seed=0, structured_outputs=None
                                    if grammar is None else StructuredOutputsParams(grammar=grammar))
            start = time.perf_counter()
            outputs = llm.generate(texts, params, use_tqdm=False)
            seconds = time.perf_counter() - start
            tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
            rows.append((name, call, seconds / prompts * 1000, seconds / max(tokens, 1) * 1000, tokens / prompts))
            if grammar is None:
                break
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small tokenizer corpus and fewer repeats")
    parser.add_argument("--open", action="store_true", help="also the whole code tables (--constrain code-system)")
    parser.add_argument("--no-vllm", action="store_true", help="xgrammar only")
    parser.add_argument("--model", type=Path, help="a model folder to take the tokenizer (and vLLM model) from")
    parser.add_argument("--vocab", type=int, default=32000, help="BPE vocabulary of the tokenizer trained here")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # keep the tables readable
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        model = args.model or build_model(Path(tmp), args.vocab, args.quick)
        tokenizer = AutoTokenizer.from_pretrained(model)
        print(f"# constrained decoding — {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
              f"byte-level BPE, {len(tokenizer):,} tokens (built in {time.perf_counter() - start:.0f} s)")
        sets = code_sets(args.open)
        print("\n## xgrammar: compile and per-token mask (unconstrained decoding: no mask, 0 ms)\n")
        print("| code set | grammar | size KiB | compile s | mask ms/token mean | p95 | steps |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for name, codes in sets:
            for form in constrain.FORMS:
                if form == "alternation" and len(codes) > ALTERNATION_LIMIT:
                    print(f"| {name} | {form} | | not measured (over 3 min) | | | |", flush=True)
                    continue
                r = time_xgrammar(tokenizer, codes, form, repeats=1 if args.quick or len(codes) > 20_000 else 3,
                                  answers=3 if args.quick else 20)
                print(f"| {name} | {form} | {r['grammar_kb']:.0f} | {r['compile_s']:.3f} | {r['mask_ms_mean']:.3f} "
                      f"| {r['mask_ms_p95']:.3f} | {r['steps']} |", flush=True)
        if args.no_vllm:
            return
        print("\n## vLLM (CPU build, tiny random Qwen2, temperature 1, grammar form auto)\n")
        print("| decoding | call | ms/request | ms/generated token | tokens/request |")
        print("|---|---|---:|---:|---:|")
        closed = [s for s in sets if "tables" not in s[0]]
        for row in time_vllm(model, closed, prompts=8 if args.quick else 32, max_tokens=96):
            print(f"| {row[0]} | {row[1]} | {row[2]:.1f} | {row[3]:.2f} | {row[4]:.1f} |", flush=True)


if __name__ == "__main__":  # vLLM spawns worker processes
    main()
