"""Benchmark of prompt truncation: notes per second for ``truncation.truncate_for_budget`` next to naive loops.

A synthetic MIMIC-III corpus with long discharge summaries (``data_tools.build.synth``; lower-cased as
``prepare`` does) is truncated to a prompt budget with the project's training prompt
(``prompts.build_messages``) and a tokenizer trained here (or ``--tokenizer`` for a real one). On a subset,
in the same run, two naive loops that re-render and re-encode the whole prompt after each trim step:
``naive-10%`` cuts 10% of the remaining characters from the middle per step (the usual loop),
``naive-proportional`` cuts as many characters as the excess tokens are worth (few steps, a strong naive).

Run: ``PYTHONPATH=. python bench/bench_prepare.py [--quick] [--n-notes N]``. Exits 1 if a prompt exceeds
its budget.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
import tempfile
import time

import numpy as np

from llm4icd_plugins.truncation import truncate_for_budget

MARKER = "[...]"


def build_corpus(n_notes: int, long_fraction: float, seed: int) -> list[str]:
    """Lower-cased discharge summaries from ``data_tools.build.synth``; cycled if it yields fewer than ``n_notes``."""
    import pandas as pd

    from data_tools.build import synth
    from data_tools.build.loaders import process_text

    with tempfile.TemporaryDirectory() as tmp:
        paths = synth.generate_mimic3(tmp, n_admissions=n_notes, seed=seed, long_note_fraction=long_fraction,
                                      other_notes_per_admission=0.0, progress=True)
        notes = pd.read_csv(paths["notes"], dtype=str, keep_default_na=False)
    texts = [process_text(t) for t in notes.loc[notes["CATEGORY"] == "Discharge summary", "TEXT"]]
    return [texts[i % len(texts)] for i in range(n_notes)]


def load_tokenizer(path: str | None, corpus: list[str]):
    from transformers import AutoTokenizer

    if path:
        return AutoTokenizer.from_pretrained(path), path
    from data_tools.build.tiny_model import train_tokenizer

    folder = tempfile.mkdtemp(prefix="bench_tok_")
    return train_tokenizer(corpus[:300], folder, vocab_size=8192), "trained here (byte-level BPE, 8k vocab)"


def prompt_len(tokenizer, messages_fn, text: str, kwargs: dict) -> int:
    return len(tokenizer.apply_chat_template(messages_fn(text), tokenize=True, add_generation_prompt=True,
                                             return_dict=False, **kwargs))


def naive_truncate(note: str, tokenizer, messages_fn, budget: int, kwargs: dict, proportional: bool):
    """Cut the middle of the note and re-encode the whole prompt until it fits; returns (text, tokens, encodes)."""
    text, encodes = note, 0
    while True:
        n = prompt_len(tokenizer, messages_fn, text, kwargs)
        encodes += 1
        if n <= budget or not text:
            return text, n, encodes
        body = text.replace(MARKER, "")
        if proportional:
            chars_per_token = max(1.0, len(body) / max(1, n))
            cut = int((n - budget) * chars_per_token) + len(MARKER)
        else:
            cut = max(len(MARKER) + 1, len(body) // 10)
        keep = max(0, len(body) - cut)
        text = body[:keep // 2] + MARKER + body[len(body) - (keep - keep // 2):] if keep else ""


def run(args: argparse.Namespace) -> int:
    from llm4icd_plugins import prompts

    if args.quick:
        args.n_notes, args.naive_subset = min(args.n_notes, 400), min(args.naive_subset, 40)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}")
    t0 = time.perf_counter()
    corpus = build_corpus(args.n_notes, args.long_note_fraction, args.seed)
    t_synth = time.perf_counter() - t0
    tokenizer, tok_name = load_tokenizer(args.tokenizer, corpus)
    kwargs = {"enable_thinking": False} if args.enable_thinking_false else {}
    messages_fn = functools.partial(prompts.build_messages, spec=prompts.PromptSpec("icd9", "full"))
    chars = np.array([len(t) for t in corpus])
    print(f"corpus: {len(corpus)} notes in {t_synth:.1f} s (synth), chars mean {chars.mean():.0f} "
          f"p95 {np.percentile(chars, 95):.0f} max {chars.max()}; tokenizer: {tok_name}; budget {args.budget}")

    timings = {}
    for workers in sorted({1, args.num_workers}):
        t0 = time.perf_counter()
        results = truncate_for_budget(corpus, tokenizer, messages_fn=messages_fn, budget=args.budget,
                                      chat_template_kwargs=kwargs, num_workers=workers, show_progress=True)
        timings[workers] = time.perf_counter() - t0
        print(f"truncate_for_budget, num_workers={workers}: {timings[workers]:.1f} s, "
              f"{len(corpus) / timings[workers]:.1f} notes/s")
    before = np.array([r.tokens_before for r in results])
    after = np.array([r.tokens_after for r in results])
    truncated = np.array([r.truncated for r in results])
    over = int((after > args.budget).sum())
    unused = (args.budget - after[truncated]).mean() if truncated.any() else 0.0
    print(f"  prompt tokens before: mean {before.mean():.0f} p95 {np.percentile(before, 95):.0f} max {before.max()}; "
          f"truncated {truncated.sum()} / {len(results)} ({truncated.mean():.0%}); after: max {after.max()}, "
          f"unused budget of truncated prompts mean {unused:.1f} "
          f"tokens; over budget: {over}")

    # Same subset for all three, preferring notes that need truncation (where the methods differ).
    order = np.argsort(~truncated, kind="stable")
    subset = [corpus[i] for i in order[:args.naive_subset]]
    # CPU seconds (all threads) next to wall seconds: on a shared machine the wall clock is noisy.
    wall, cpu = time.perf_counter(), time.process_time()
    ours = truncate_for_budget(subset, tokenizer, messages_fn=messages_fn, budget=args.budget,
                               chat_template_kwargs=kwargs)
    t_ours, c_ours = time.perf_counter() - wall, time.process_time() - cpu
    print(f"\nsubset of {len(subset)} notes ({sum(r.truncated for r in ours)} truncated), num_workers=1:")
    print(f"  {'tiered middle-out (ours)':24s} {len(subset) / t_ours:7.1f} notes/s ({c_ours:6.1f} cpu s)   "
          f"unused budget mean {np.mean([args.budget - r.tokens_after for r in ours]):6.1f}")
    for name, proportional in (("naive-10%", False), ("naive-proportional", True)):
        wall, cpu = time.perf_counter(), time.process_time()
        naive = [naive_truncate(n, tokenizer, messages_fn, args.budget, kwargs, proportional) for n in subset]
        t_naive, c_naive = time.perf_counter() - wall, time.process_time() - cpu
        over += sum(n > args.budget for _, n, _ in naive)
        print(f"  {name:24s} {len(subset) / t_naive:7.1f} notes/s ({c_naive:6.1f} cpu s)   unused budget mean "
              f"{np.mean([args.budget - n for _, n, _ in naive]):6.1f}   encodes/note "
              f"{np.mean([e for *_, e in naive]):.1f}   ratio naive/ours: wall {t_naive / t_ours:.2f}x, "
              f"cpu {c_naive / c_ours:.2f}x")
    if over:
        print(f"FAIL: {over} prompts over budget")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/bench_prepare.py",
        description="Notes per second for fitting prompts to a token budget with llm4icd_plugins.truncation "
                    "(tiered middle-out in token space) next to naive re-encode-after-each-trim loops "
                    "measured on a subset in the same run. Exits 1 if any prompt exceeds the budget.")
    parser.add_argument("--n-notes", type=int, default=20_000,
                        help="synthetic discharge summaries to truncate (default 20000; --quick caps it at 400)")
    parser.add_argument("--naive-subset", type=int, default=300,
                        help="notes the naive loops and ours are timed on for the ratio (default 300; --quick: 40)")
    parser.add_argument("--quick", action="store_true",
                        help="a small run for CI (400 notes; one to two minutes on 2 cores)")
    parser.add_argument("--budget", type=int, default=4096,
                        help="prompt budget in tokens (default 4096, prepare's max_prompt_length; no hint reserve)")
    parser.add_argument("--long-note-fraction", type=float, default=0.3,
                        help="share of synthetic notes with a very long hospital course (default 0.3)")
    parser.add_argument("--num-workers", type=int, default=2,
                        help="also time truncate_for_budget with this many processes (default 2; 1 = serial only)")
    parser.add_argument("--tokenizer", default=None,
                        help="a Hugging Face tokenizer folder to use (e.g. a Qwen checkpoint); default: train a "
                             "byte-level BPE on the synthetic notes")
    parser.add_argument("--enable-thinking-false", action="store_true",
                        help="render with enable_thinking=False (hybrid Qwen3 templates)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic corpus seed (default 0)")
    args = parser.parse_args(argv)
    for flag, value in (("--n-notes", args.n_notes), ("--naive-subset", args.naive_subset),
                        ("--budget", args.budget), ("--num-workers", args.num_workers)):
        if value < 1:
            parser.error(f"{flag} must be >= 1 (got {value})")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
