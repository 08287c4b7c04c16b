"""Benchmark of the PHI re-fit: draws per second of ``PHIDataset.__getitem__`` with a hint (the whole note
re-fitted around the hint block by ``llm4icd_plugins.truncation``) next to plain draws without one, on one core.

Real-size notes: synthetic MIMIC-III discharge summaries (``data_tools.build.synth``, lower-cased as ``prepare``
does), a share of them with a long day-by-day hospital course (MIMIC's are ~1,500-4,000 words); a byte-level
BPE tokenizer trained here by ``data_tools.build.tiny_model`` (or ``--tokenizer``). The notes are first fitted to
the unhinted prompt budget as ``prepare`` does (timed: today's truncation, notes/s), written as a PHI round
file (every row with a 5-code pool, the whole note of truncated rows), then drawn through verl's dataset
factory with ``phi_inject_prob`` 1 and 0. Every hinted prompt is checked against the budget (exit 1 if over).

Run: ``.venvs/rl/bin/python bench/bench_phi_refit.py [--quick]``.
"""

from __future__ import annotations

import os

os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core: no Rust thread pool
os.environ["RAYON_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import functools  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


from bench_prepare import build_corpus, load_tokenizer  # noqa: E402  (bench/ is sys.path[0] for a script)

SPEC_ARGS = ("icd9", "full", "MIMIC-III")


def write_round_file(path: Path, whole: list[str], fitted: list[str], pool_codes: list[str], seed: int) -> None:
    """A PHI round file as ``phi_refresh`` writes it: prepared prompts, 5-code pools, whole notes of truncated rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from data_tools.phi.refresh import PHI_TYPE
    from llm4icd_plugins import prompts

    spec = prompts.PromptSpec(*SPEC_ARGS)
    rng = np.random.default_rng(seed)
    freq = {c: int(rng.integers(10, 500)) for c in pool_codes}
    recall = {c: float(rng.uniform(0.0, 0.5)) for c in pool_codes}
    rows = []
    for i, (note, shown) in enumerate(zip(whole, fitted)):
        pool = [str(c) for c in rng.choice(pool_codes, size=5, replace=False)]
        rows.append({
            "data_source": "llm4icd/bench", "prompt": prompts.build_messages(shown, spec), "ability": "icd_coding",
            "reward_model": {"style": "rule", "ground_truth": pool},
            "extra_info": {"index": i, "sample_id": str(i), "split": "train", "code_system": "icd9",
                           "label_space": "bench", "n_codes": len(pool)},
            "phi": {"round": 1, "pool": pool, "pool_freq": [freq[c] for c in pool],
                    "pool_recall": [recall[c] for c in pool], "note": note if note != shown else None},
        })
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    schema = pa.schema([
        ("data_source", pa.string()), ("prompt", pa.list_(message)), ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.list_(pa.string()))])),
        ("extra_info", pa.struct([("index", pa.int64()), ("sample_id", pa.string()), ("split", pa.string()),
                                  ("code_system", pa.string()), ("label_space", pa.string()),
                                  ("n_codes", pa.int64())])),
        ("phi", PHI_TYPE)])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def build_dataset(path: Path, tokenizer, budget: int, inject_prob: float):
    import verl.trainer.config as verl_config
    from omegaconf import OmegaConf, open_dict
    from verl.trainer.ppo.utils import create_rl_dataset

    cfg = OmegaConf.load(Path(verl_config.__file__).parent / "data" / "legacy_data.yaml")
    cfg.custom_cls.path = "pkg://llm4icd_plugins.verl.dataset"
    cfg.custom_cls.name = "PHIDataset"
    cfg.max_prompt_length = budget
    cfg.filter_overlong_prompts = False  # prompts fit by construction; the hinted ones are checked below
    with open_dict(cfg):
        cfg.phi_inject_prob = inject_prob
        cfg.phi_min_hints = 1
        cfg.phi_max_hints = 5
    return create_rl_dataset(str(path), cfg, tokenizer, None, is_train=True)


def draw_all(dataset) -> tuple[list[dict], float, float, np.ndarray]:
    """Every row once, in order; returns the rows, wall seconds, CPU seconds and CPU seconds per draw."""
    wall, cpu = time.perf_counter(), time.process_time()
    rows, each = [], []
    for i in range(len(dataset)):
        start = time.process_time()
        rows.append(dataset[i])
        each.append(time.process_time() - start)
    return rows, time.perf_counter() - wall, time.process_time() - cpu, np.array(each)


def run(args: argparse.Namespace) -> int:
    from llm4icd_plugins import prompts
    from llm4icd_plugins.codes import load_code_system
    from llm4icd_plugins.truncation import NoteFitter, truncate_for_budget

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import torch

    torch.set_num_threads(1)
    if args.quick:
        args.n_notes = min(args.n_notes, 150)
    print(f"machine: {platform.processor() or platform.machine()}, pinned to 1 of {os.cpu_count()} cores, "
          f"python {platform.python_version()}")
    corpus = build_corpus(args.n_notes, args.long_note_fraction, args.seed)
    tokenizer, tok_name = load_tokenizer(args.tokenizer, corpus)
    words = np.array([len(t.split()) for t in corpus])
    print(f"corpus: {len(corpus)} notes, words mean {words.mean():.0f} p50 {np.median(words):.0f} "
          f"p95 {np.percentile(words, 95):.0f} max {words.max()}; {(words >= 1500).mean():.0%} of notes >= 1,500 "
          f"words; tokenizer: {tok_name}; prompt budget {args.budget}")

    spec = prompts.PromptSpec(*SPEC_ARGS)
    wall, cpu = time.perf_counter(), time.process_time()
    fitted = truncate_for_budget(corpus, tokenizer, budget=args.budget,
                                 messages_fn=functools.partial(prompts.build_messages, spec=spec))
    t_prepare, c_prepare = time.perf_counter() - wall, time.process_time() - cpu
    print(f"today's truncation (truncate_for_budget, unhinted, 1 process): {len(corpus) / t_prepare:.1f} notes/s "
          f"wall, {len(corpus) / c_prepare:.1f} notes/cpu-s; {sum(r.truncated for r in fitted)} of {len(corpus)} "
          "truncated")

    system = load_code_system("icd9")
    codes = sorted((c for c in system.codes() if system.description(c)), key=lambda c: -len(system.description(c)))
    with tempfile.TemporaryDirectory() as tmp:
        round_file = Path(tmp) / "round.parquet"
        write_round_file(round_file, corpus, [r.text for r in fitted], codes[:200], args.seed)
        plain, t_plain, c_plain, _ = draw_all(build_dataset(round_file, tokenizer, args.budget, 0.0))
        hinted_ds = build_dataset(round_file, tokenizer, args.budget, 1.0)
        hinted, t_hint, c_hint, each = draw_all(hinted_ds)
    truncated = np.array([r.truncated for r in fitted])

    fitter = NoteFitter(tokenizer)
    overhead = fitter.count(prompts.build_messages("", spec))
    over = 0
    note_plain, note_hinted, n_hints = [], [], []
    for row_plain, row_hint in zip(plain, hinted):
        hints = list(row_hint["extra_info"]["phi_hints"])
        n_hints.append(len(hints))
        total = fitter.count(row_hint["raw_prompt"])
        over += total > args.budget
        block = fitter.count(prompts.build_messages("", spec, [(c, system.description(c)) for c in hints])) - overhead
        note_hinted.append(total - overhead - block)
        note_plain.append(fitter.count(row_plain["raw_prompt"]) - overhead)
    stats = hinted_ds.hint_stats
    n = len(plain)
    print(f"\nPHIDataset.__getitem__ through verl's create_rl_dataset, {n} rows, each drawn once:")
    print(f"  plain (phi_inject_prob=0)   {n / t_plain:8.1f} draws/s wall, {n / c_plain:8.1f} draws/cpu-s "
          f"({1000 * c_plain / n:6.2f} cpu ms/draw)")
    print(f"  hinted (phi_inject_prob=1)  {n / t_hint:8.1f} draws/s wall, {n / c_hint:8.1f} draws/cpu-s "
          f"({1000 * c_hint / n:6.2f} cpu ms/draw); hints per draw mean {np.mean(n_hints):.2f}; notes re-fitted "
          f"{stats['notes_refitted']}; hints dropped {stats['hints_dropped_for_budget']}")
    for name, mask in (("whole note in the prompt", ~truncated), ("note truncated by prepare", truncated)):
        if mask.any():
            print(f"    rows with the {name}: {mask.sum()} rows, {1000 * each[mask].mean():6.2f} cpu ms/hinted draw "
                  f"(p95 {1000 * np.percentile(each[mask], 95):.2f})")
    print(f"  note tokens kept per prompt: plain mean {np.mean(note_plain):.0f}, hinted mean "
          f"{np.mean(note_hinted):.0f} (only notes that no longer fit with the block give way)")
    per_step = args.batch * 0.5 * (c_hint + c_plain) / n
    print(f"  a {args.batch}-prompt GRPO batch at phi_inject_prob 0.5: {per_step:.2f} cpu s of one core "
          f"(spread over the data-loader workers, overlapping the step)")
    if over:
        print(f"FAIL: {over} hinted prompts over the budget")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/bench_phi_refit.py",
        description="Draws per second of PHIDataset with the hinted note re-fit, next to plain draws, on one core. "
                    "Exits 1 if a hinted prompt exceeds the budget.")
    parser.add_argument("--n-notes", type=int, default=600, help="synthetic discharge summaries (default 600)")
    parser.add_argument("--quick", action="store_true", help="a small run (150 notes)")
    parser.add_argument("--budget", type=int, default=4096, help="data.max_prompt_length in tokens (default 4096)")
    parser.add_argument("--long-note-fraction", type=float, default=0.3,
                        help="share of synthetic notes with a long day-by-day hospital course (default 0.3: mean "
                             "about 2,000 words)")
    parser.add_argument("--batch", type=int, default=128, help="prompts per GRPO step for the per-step figure")
    parser.add_argument("--tokenizer", default=None,
                        help="a Hugging Face tokenizer folder (e.g. a Qwen checkpoint); default: train a byte-level "
                             "BPE on the synthetic notes")
    parser.add_argument("--seed", type=int, default=0, help="corpus and pool seed (default 0)")
    args = parser.parse_args(argv)
    for flag, value in (("--n-notes", args.n_notes), ("--budget", args.budget), ("--batch", args.batch)):
        if value < 1:
            parser.error(f"{flag} must be >= 1 (got {value})")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
