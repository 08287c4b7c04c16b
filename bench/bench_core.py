"""Benchmark of the pure core: is the reward negligible next to decoding, and are the metrics fast and right?

(1) ``reward.compute_score`` µs per response at 5, 20 and 50 codes next to the µs the same response takes
    to ``decode`` with ``tiny_model``'s byte-level BPE trained here (the step verl runs before every reward call).
(2) ``metrics.corpus_metrics`` on a MIMIC-IV-full-sized synthetic test set next to scikit-learn
    (``MultiLabelBinarizer`` + ``precision_recall_fscore_support``, micro and macro), with an agreement check.

Run: ``.venvs/rl/bin/python bench/bench_core.py [--quick]``. Exits 1 if the metrics disagree.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np


from llm4icd_plugins.metrics import corpus_metrics, sample_prf

MIMIC_IV_FULL = {"docs": 19_802, "codes": 7_900, "gold_per_doc": 15, "pred_per_doc": 15}
QUICK = {"docs": 2_000, "codes": 1_000, "gold_per_doc": 15, "pred_per_doc": 15}
_WORDS = ("patient admitted with chest pain shortness of breath hypertension diabetes mellitus type 2 acute "
          "kidney injury congestive heart failure atrial fibrillation pneumonia sepsis discharge diagnosis "
          "history of present illness medications aspirin metoprolol lisinopril insulin follow up cardiology "
          "echocardiogram ejection fraction creatinine hemoglobin transfusion intubated extubated").split()


def best_us(fn: Callable[[], object], number: int, repeat: int = 5) -> float:
    """Best over ``repeat`` runs of the mean µs per call over ``number`` calls (timeit's convention)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best * 1e6


def icd9_codes(rng: np.random.Generator, n: int) -> list[str]:
    """Real ICD-9-CM diagnosis codes from the project's tables, else code-shaped strings."""
    try:
        from llm4icd_plugins.codes import load_code_system

        pool = load_code_system("icd9").codes("icd9_dx")
    except Exception as exc:  # the bench still runs without the tables
        print(f"(code tables unavailable: {type(exc).__name__}; using code-shaped strings)")
        pool = [f"{i // 10:03d}.{i % 10}" for i in range(1000, 9990)]
    return [pool[i] for i in rng.choice(len(pool), n, replace=False)]


def train_tokenizer(rng: np.random.Generator, codes: list[str], folder: str):
    """``tiny_model``'s byte-level BPE (Qwen2 pre-tokenizer) trained on generated clinical-ish text with code lists."""
    from data_tools.build.tiny_model import train_tokenizer as train

    lines = []
    for _ in range(3000):
        words = " ".join(rng.choice(_WORDS, 25))
        listed = ", ".join(rng.choice(codes, int(rng.integers(3, 30))))
        lines.append(f"{words}. Discharge codes: <code>{listed}</code>")
    return train(lines, folder, vocab_size=4000)


def bench_reward(rng: np.random.Generator, quick: bool) -> None:
    from llm4icd_plugins.verl.reward import compute_score

    codes = icd9_codes(rng, 400)
    with tempfile.TemporaryDirectory(prefix="bench_core_tok_") as folder:
        tokenizer = train_tokenizer(rng, codes, folder)
    print(f"\n(1) reward vs decode, per response; tokenizer: data_tools.build.tiny_model, {len(tokenizer):,} tokens")
    print(f"{'codes':>5} {'tokens':>6} {'decode µs':>10} {'reward µs':>10} {'reward/decode':>14} "
          f"{'reward+icd9 µs':>15} {'ratio':>6}")
    number = 200 if quick else 2000
    for n_codes in (5, 20, 50):
        gold = codes[:n_codes]
        pred = codes[n_codes // 2:n_codes // 2 + n_codes]  # half right, half wrong
        text = "<code>" + ", ".join(pred) + "</code>"
        ids = tokenizer.encode(text + "<|im_end|>")

        def decode():
            return tokenizer.decode(ids, skip_special_tokens=True)

        def reward():
            return compute_score("mimic", text, gold, None)

        def reward_sys():
            return compute_score("mimic", text, gold, None, code_system="icd9")

        assert decode().strip().endswith("</code>"), "decode round trip failed"
        assert abs(reward()["score"] - sample_prf(pred, gold)[2]) < 1e-12, "reward sanity check failed"
        t_dec, t_rew = best_us(decode, number), best_us(reward, number)
        try:
            reward_sys()
            t_sys = best_us(reward_sys, number)
            sys_cols = f"{t_sys:>15.1f} {t_sys / t_dec:>6.2f}"
        except Exception as exc:
            sys_cols = f"{'n/a (' + type(exc).__name__ + ')':>22}"
        print(f"{n_codes:>5} {len(ids):>6} {t_dec:>10.1f} {t_rew:>10.1f} {t_rew / t_dec:>14.2f} {sys_cols}")


def synthetic_corpus(rng: np.random.Generator, size: dict) -> tuple[list[list[str]], list[list[str]]]:
    """Zipf-distributed gold sets and predictions that keep ~70% of gold plus frequent wrong codes."""
    vocab = np.array([f"{chr(65 + i % 26)}{i // 26 % 100:02d}.{i // 2600}{i % 10}" for i in range(size["codes"])],
                     dtype=object)
    weights = 1.0 / np.arange(1, size["codes"] + 1) ** 0.9
    weights /= weights.sum()
    golds, preds = [], []
    for _ in range(size["docs"]):
        gold = vocab[rng.choice(size["codes"], size["gold_per_doc"], replace=False, p=weights)]
        kept = gold[rng.random(len(gold)) < 0.7]
        extra = vocab[rng.choice(size["codes"], size["pred_per_doc"] - len(kept), p=weights)]
        golds.append(list(gold))
        preds.append(list(kept) + list(extra))
    return golds, preds


def bench_metrics(rng: np.random.Generator, quick: bool) -> bool:
    size = QUICK if quick else MIMIC_IV_FULL
    golds, preds = synthetic_corpus(rng, size)
    try:
        from sklearn.metrics import precision_recall_fscore_support
        from sklearn.preprocessing import MultiLabelBinarizer
    except ImportError:
        t_ours = best_us(lambda: corpus_metrics(golds, preds), 1, 3) / 1e6
        print(f"\n(2) corpus_metrics on {size['docs']:,} docs: {t_ours:.3f} s; scikit-learn is not installed, "
              "so the reference comparison is skipped")
        return True

    def ours():
        return corpus_metrics(golds, preds)

    def sklearn():
        labels = sorted({c for g in golds for c in g})
        inside = set(labels)
        mlb = MultiLabelBinarizer(classes=labels, sparse_output=True)
        y_true = mlb.fit_transform(golds)
        y_pred = mlb.transform([[c for c in p if c in inside] for p in preds])
        return {avg: precision_recall_fscore_support(y_true, y_pred, average=avg, zero_division=0)[:3]
                for avg in ("micro", "macro")}

    mine, ref = ours(), sklearn()
    t_ours, t_sk = best_us(ours, 1, 3) / 1e6, best_us(sklearn, 1, 3) / 1e6
    got = {"micro": tuple(mine[f"micro_{k}"] for k in ("precision", "recall", "f1")),
           "macro": tuple(mine[f"macro_{k}"] for k in ("precision", "recall", "f1"))}
    diff = max(abs(a - b) for avg in got for a, b in zip(got[avg], ref[avg]))
    print(f"\n(2) corpus metrics: {size['docs']:,} docs, {mine['n_labels']:,} codes in the label space, "
          f"{mine['n_gold_pairs']:,} gold / {mine['n_pred_pairs'] + mine['n_pred_dropped']:,} predicted pairs")
    print(f"{'':>28} {'seconds':>8} {'micro P/R/F1':>24} {'macro P/R/F1':>24}")
    fmt = lambda t: "/".join(f"{100 * x:.2f}" for x in t)  # noqa: E731
    print(f"{'llm4icd corpus_metrics':>28} {t_ours:>8.3f} {fmt(got['micro']):>24} {fmt(got['macro']):>24}")
    print(f"{'sklearn MLB(sparse)+PRFS x2':>28} {t_sk:>8.3f} {fmt(ref['micro']):>24} {fmt(ref['macro']):>24}")
    agree = diff < 1e-9
    print(f"speed ratio sklearn/ours: {t_sk / t_ours:.2f}x; max |difference|: {diff:.2e} -> "
          f"{'AGREE' if agree else 'DISAGREE'}")
    return agree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"small run (seconds): fewer timing loops, {QUICK['docs']:,} docs x {QUICK['codes']:,} "
                             f"codes instead of MIMIC-IV full ({MIMIC_IV_FULL['docs']:,} x {MIMIC_IV_FULL['codes']:,})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default 0)")
    args = parser.parse_args(argv)
    print(f"bench_core on {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"numpy {np.__version__}{' (quick)' if args.quick else ''}")
    rng = np.random.default_rng(args.seed)
    bench_reward(rng, args.quick)
    return 0 if bench_metrics(rng, args.quick) else 1


if __name__ == "__main__":
    sys.exit(main())
