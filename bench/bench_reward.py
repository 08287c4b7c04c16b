"""Benchmark of the reward on one GRPO batch: ``reward.compute_score`` next to the authors' released reward.

The batch is 512 prompts × 8 rollouts; the rollouts of a prompt share its gold list (as verl passes it: one
numpy object array per row). The other column is ``authors_reference_score``, a reimplementation of the
algorithm of the authors' release (github.com/AlexandreWANG915/LLM4ICD, EasyR1/examples/reward_function/icd.py,
``compute_score``) written from reading it, not their code: per response a format regex, the code set
extracted from the first ``<code>`` span after the reasoning (a regex scan of the whole text when there is
none), the gold string split on commas, both done twice as their loop does, and the per-code counters of
their corpus metrics. Both sides see the same responses; scores are checked to agree on plain answers.
The last two rows time the recall options (``partial_credit``; ``recovery_bonus`` on PHI rows whose
``extra_info`` carries a pool of 3 gold codes, one hinted); the speed-up target applies with them off.

Run: ``.venvs/rl/bin/python bench/bench_reward.py [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import platform
import re
import sys
import time
from collections import Counter

import numpy as np


from llm4icd_plugins.verl.reward import compute_score

PROMPTS, ROLLOUTS = 512, 8

# --- reference reimplementation of the authors' algorithm ---------------------------------------------------

_REF_SHAPES = [re.compile(p) for p in (r"\b(\d{2,3}\.\d{1,2})\b", r"\b([VE]\d{2,3}(?:\.\d{1,2})?)\b",
                                         r"\b([A-TV-Z]\d{2}\.\d{1,4}[A-Z0-9]*)\b", r"\b([A-TV-Z]\d{2}\.?)\b",
                                         r"\b(\d[A-Z0-9]{6})\b")]
_REF_TOKEN = re.compile(r"^[A-Z0-9][A-Z0-9.]{1,9}$")
_REF_SPAN = re.compile(r"<code>(.*?)</code>", re.DOTALL)
_REF_SPLIT = re.compile(r"[,;\n]")
_REF_FORMAT = re.compile(r"<(reasoning|think)>.*?</\1>\s*<code>.*?</code>", re.DOTALL)


def _ref_extract(text: str) -> set[str]:
    for tag in ("</reasoning>", "</think>"):
        at = text.rfind(tag)
        if at != -1:
            text = text[at:]
            break
    span = _REF_SPAN.search(text)
    if span:
        tokens = (t.strip().rstrip(".").upper() for t in _REF_SPLIT.split(span.group(1)))
        return {t for t in tokens if t and _REF_TOKEN.match(t)}
    return {m.upper() for shape in _REF_SHAPES for m in shape.findall(text)}


def _ref_gold(ground_truth) -> set[str]:
    if ground_truth is None or str(ground_truth).strip().lower() == "nan":
        return set()
    return {c for c in (part.strip().rstrip(".").upper() for part in str(ground_truth).split(",")) if c}


def _ref_fbeta(precision: float, recall: float, beta: float) -> float:
    b2 = beta * beta
    return (1 + b2) * precision * recall / (b2 * precision + recall) if precision + recall else 0.0


def authors_reference_score(response: str, ground_truth: str, counters: tuple[Counter, Counter, Counter],
                            format_weight: float = 0.1, beta: float = 1.0) -> dict[str, float]:
    """One response of the authors' batch loop (reference reimplementation, see the module docstring)."""
    fmt = 1.0 if _REF_FORMAT.search(response) else 0.0
    pred, gold = _ref_extract(response), _ref_gold(ground_truth)  # the sets for their corpus counters
    counters[0].update(pred & gold)
    counters[1].update(pred - gold)
    counters[2].update(gold - pred)
    pred, gold = _ref_extract(response), _ref_gold(ground_truth)  # again inside their accuracy reward
    if not pred and not gold:
        precision = recall = acc = 1.0
    elif not pred or not gold:
        precision = recall = acc = 0.0
    else:
        tp = len(pred & gold)
        precision, recall = tp / len(pred), tp / len(gold)
        acc = _ref_fbeta(precision, recall, beta)
    return {"overall": (1 - format_weight) * acc + format_weight * fmt, "accuracy": acc,
            "precision": precision, "recall": recall, "f1": _ref_fbeta(precision, recall, 1.0), "format": fmt}


# --- the batch -----------------------------------------------------------------------------------------------

def make_batch(rng: np.random.Generator):
    """512 gold lists (10-15 real ICD-9 codes) and 8 rollouts each: most recall ~60% of gold plus a few
    frequent wrong codes, some think first, a few have no span."""
    from llm4icd_plugins.codes import load_code_system

    pool = load_code_system("icd9").codes("icd9_dx")
    vocab = [pool[i] for i in rng.choice(len(pool), 600, replace=False)]
    frequent = vocab[:40]
    rows = []
    for p in range(PROMPTS):
        gold = [vocab[i] for i in rng.choice(len(vocab), int(rng.integers(10, 16)), replace=False)]
        responses = []
        for _ in range(ROLLOUTS):
            kept = [c for c in gold if rng.random() < 0.6]
            wrong = [frequent[i] for i in rng.choice(len(frequent), int(rng.integers(0, 5)), replace=False)]
            codes = kept + wrong
            order = rng.permutation(len(codes))
            body = "<code>" + ", ".join(codes[i] for i in order) + "</code>"
            roll = rng.random()
            if roll < 0.25:
                body = "<think>The note mentions hypertension and heart failure.</think>\n" + body
            elif roll < 0.30:
                body = body.replace("</code>", "")
            responses.append(body)
        rows.append((gold, responses))
    return rows


def time_batches(fns: list, repeat: int) -> list[float]:
    """Best CPU seconds of each function over ``repeat`` rounds, the functions interleaved in every round
    (CPU time, not wall time: other processes on a shared machine then distort the ratio less)."""
    best = [math.inf] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = time.process_time()
            fn()
            best[i] = min(best[i], time.process_time() - start)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = make_batch(rng)
    n = PROMPTS * ROLLOUTS
    # verl hands each rollout the row's reward_model dict: one shared object array of gold codes per prompt
    ours_rows = [(np.array(gold, dtype=object), responses) for gold, responses in rows]
    theirs_rows = [(",".join(gold), responses) for gold, responses in rows]
    extra = {"index": 0, "sample_id": "s", "split": "train", "code_system": "icd9", "label_space": "mimic3_full"}

    # PHI rows: the pool is 3 gold codes of the prompt, one of them hinted (as PHIDataset puts it in extra_info)
    phi_extras = [dict(extra, phi_pool=list(gold[:3]), phi_hints=list(gold[:1])) for gold, _ in rows]

    def ours(extra_info=extra, **options):
        for gold, responses in ours_rows:
            for text in responses:
                compute_score("llm4icd/mimic3_full", text, gold, extra_info, **options)

    def ours_phi(**options):
        for (gold, responses), phi_extra in zip(ours_rows, phi_extras):
            for text in responses:
                compute_score("llm4icd/mimic3_full", text, gold, phi_extra, **options)

    def theirs():
        counters = (Counter(), Counter(), Counter())
        for gold, responses in theirs_rows:
            for text in responses:
                authors_reference_score(text, gold, counters)

    # agreement on plain answers (no think, closed span): same F1 when no code system filters anything
    for (gold, responses), (gold_str, _) in zip(ours_rows[:50], theirs_rows[:50]):
        for text in responses:
            if text.startswith("<code>") and text.endswith("</code>"):
                mine = compute_score("d", text, gold, None, code_system="none")["f1"]
                ref = authors_reference_score(text, gold_str, (Counter(), Counter(), Counter()))["f1"]
                assert abs(mine - ref) < 1e-12, "the two rewards disagree on a plain answer"
    repeat = 3 if args.quick else 7
    credit, bonus = 0.5, 0.5  # the recall options, one object each for every call (as verl's reward_kwargs)
    ours(), theirs(), ours(partial_credit=credit), ours_phi(recovery_bonus=bonus)  # warm caches and code tables
    names = ["authors' release (reference reimplementation)", "compute_score, code system from extra_info",
             "compute_score, code_system=none", "compute_score, partial_credit=0.5",
             "compute_score, PHI rows, recovery_bonus=0.5"]
    times = time_batches([theirs, ours, lambda: ours(code_system="none"), lambda: ours(partial_credit=credit),
                          lambda: ours_phi(recovery_bonus=bonus)], repeat)
    t_ref = times[0]
    results = list(zip(names, times))
    print(f"GRPO batch: {PROMPTS} prompts × {ROLLOUTS} rollouts = {n} responses; Python "
          f"{platform.python_version()} on {platform.machine()}; best CPU time of {repeat}, interleaved")
    print(f"{'reward':<48} {'batch ms':>9} {'µs/response':>12} {'speed-up':>9}")
    for name, seconds in results:
        print(f"{name:<48} {seconds * 1e3:>9.1f} {seconds / n * 1e6:>12.2f} {t_ref / seconds:>8.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
