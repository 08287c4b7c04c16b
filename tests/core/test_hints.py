"""PHI hint sampling (llm4icd_plugins.hints): the priority formula, and over many draws the injection rate,
the hint-count range, hints only from the pool, and sampling frequencies that follow the priorities and τ."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from scipy import stats

from llm4icd_plugins.hints import (HintConfig, HintSampler, clip_priorities, code_priorities, code_stats, draw_rng,
                                   hint_pools, sampling_weights)

# freq, recall of six codes: one very rare and never recalled (clipped), one frequent and well recalled.
FREQ = {"401.9": 400, "428.0": 120, "584.9": 60, "276.2": 25, "V58.61": 9, "E885.9": 1}
RECALL = {"401.9": 0.9, "428.0": 0.5, "584.9": 0.3, "276.2": 0.1, "V58.61": 0.02, "E885.9": 0.0}
POOL = list(FREQ)
N = 30_000
ALPHA = 1e-4  # statistical tests: false alarm rate per check


def _hand_probabilities(pool, temperature=3.0, floor=0.05, clip=3.0):
    """The paper's priorities written out with no library call: a = 1 / sqrt(freq) / max(recall, floor), clipped
    at ``clip`` x their median over every code, then a^(1/τ) normalised over the pool."""
    a = {c: 1 / math.sqrt(FREQ[c]) / max(RECALL[c], floor) for c in FREQ}
    values = sorted(a.values())
    mid = len(values) // 2
    median = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
    w = [min(a[c], clip * median) ** (1 / temperature) for c in pool]
    return [x / sum(w) for x in w]


def _draws(sampler: HintSampler, pool, n=N, seed=7):
    return [sampler.draw(pool, draw_rng(seed, "sample-1", i)) for i in range(n)]


def test_priority_formula_clip_and_temperature():
    a = code_priorities(FREQ, RECALL)
    for c in FREQ:
        assert a[c] == pytest.approx(1 / math.sqrt(FREQ[c]) / max(RECALL[c], 0.05))
    cap = 3 * float(np.median(list(a.values())))
    clipped = clip_priorities(a, 3.0)
    assert clipped["E885.9"] == pytest.approx(cap) and a["E885.9"] > cap  # the rare, never-recalled code is clipped
    assert clipped["401.9"] == pytest.approx(a["401.9"])
    w = sampling_weights(clipped, 3.0)
    assert w["428.0"] == pytest.approx(clipped["428.0"] ** (1 / 3))
    sampler = HintSampler(FREQ, RECALL)
    np.testing.assert_allclose(sampler.probabilities(POOL), _hand_probabilities(POOL))
    np.testing.assert_allclose(sampler.probabilities(["401.9", "E885.9"]), _hand_probabilities(["401.9", "E885.9"]))


def test_injection_rate_count_range_and_pool_membership():
    sampler = HintSampler(FREQ, RECALL)
    draws = _draws(sampler, POOL)
    injected = [d for d in draws if d]
    assert stats.binomtest(len(injected), N, 0.5).pvalue > ALPHA
    counts = Counter(len(d) for d in injected)
    assert set(counts) == {1, 2, 3, 4, 5}
    assert stats.chisquare([counts[k] for k in range(1, 6)]).pvalue > ALPHA  # uniform in [1, 5]
    for d in injected:
        assert len(set(d)) == len(d) and set(d) <= set(POOL)


def test_count_is_capped_by_the_pool():
    sampler = HintSampler(FREQ, RECALL)
    pool = ["401.9", "584.9"]
    counts = Counter(len(d) for d in _draws(sampler, pool, n=10_000) if d)
    assert set(counts) == {1, 2}
    # k ~ U[1, 5] capped at 2: P(1) = 1/5, P(2) = 4/5
    assert stats.binomtest(counts[1], sum(counts.values()), 0.2).pvalue > ALPHA
    assert sampler.draw([], draw_rng(0, "x", 0)) == ()


@pytest.mark.parametrize("temperature", [1.0, 3.0, 10.0])
def test_first_hint_frequencies_follow_priorities_and_temperature(temperature):
    sampler = HintSampler(FREQ, RECALL, HintConfig(temperature=temperature, inject_prob=1.0))
    first = Counter(d[0] for d in _draws(sampler, POOL))
    observed = [first[c] for c in POOL]
    expected = sampler.probabilities(POOL) * N
    assert stats.chisquare(observed, expected).pvalue > ALPHA
    np.testing.assert_allclose(expected / N, _hand_probabilities(POOL, temperature))


def test_temperature_flattens_the_distribution():
    entropy = {}
    for t in (1.0, 3.0, 10.0):
        p = HintSampler(FREQ, RECALL, HintConfig(temperature=t)).probabilities(POOL)
        entropy[t] = float(-(p * np.log(p)).sum())
    assert entropy[1.0] < entropy[3.0] < entropy[10.0] < math.log(len(POOL))


def test_without_replacement_is_successive_sampling():
    """P(first a, then b) = p_a · p_b / (1 − p_a) for two hints from a three-code pool."""
    pool = ["401.9", "276.2", "E885.9"]
    sampler = HintSampler(FREQ, RECALL, HintConfig(inject_prob=1.0, min_hints=2, max_hints=2))
    pairs = Counter(_draws(sampler, pool))
    p = dict(zip(pool, sampler.probabilities(pool)))
    keys = [(a, b) for a in pool for b in pool if a != b]
    expected = [N * p[a] * p[b] / (1 - p[a]) for a, b in keys]
    assert sum(pairs.values()) == N and set(pairs) == set(keys)
    assert stats.chisquare([pairs[k] for k in keys], expected).pvalue > ALPHA


def test_draws_are_reproducible_under_a_seed():
    sampler = HintSampler(FREQ, RECALL)
    assert _draws(sampler, POOL, n=200, seed=3) == _draws(sampler, POOL, n=200, seed=3)
    assert _draws(sampler, POOL, n=200, seed=3) != _draws(sampler, POOL, n=200, seed=4)
    # the id is hashed stably (not with Python's salted hash)
    assert draw_rng(1, "abc", 0).random() == draw_rng(1, "abc", 0).random()


def test_draws_are_the_same_in_processes_with_different_hash_seeds():
    # verl builds the dataset in worker processes, each with its own PYTHONHASHSEED: a draw must not
    # depend on the process (the seed, the sample id and the draw number decide it).
    import os
    import subprocess
    import sys

    script = ("from llm4icd_plugins.hints import HintSampler, draw_rng\n"
              f"sampler = HintSampler({FREQ!r}, {RECALL!r})\n"
              "print([sampler.draw(" + repr(POOL) + ", draw_rng(5, f'row-{i}', i % 3)) for i in range(40)])\n"
              "print([draw_rng(5, f'row-{i}', 0).integers(1 << 30) for i in range(5)])")
    outputs = []
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        outputs.append(subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                      check=True).stdout)
    assert outputs[0] == outputs[1]
    assert len(set(outputs[0].splitlines()[1].strip("[]").split(","))) == 5  # and distinct per id


def test_pools_and_code_stats():
    golds = [["401.9", "428.0", "584.9"], ["401.9", "276.2"], ["428.0"]]
    preds = [{"401.9", "999.9"}, {"401.9", "276.2"}, set()]
    assert hint_pools(golds, preds) == [["428.0", "584.9"], [], ["428.0"]]
    freq, recall = code_stats(golds, preds)
    assert freq == {"401.9": 2, "428.0": 2, "584.9": 1, "276.2": 1}
    assert recall == {"401.9": 1.0, "428.0": 0.0, "584.9": 0.0, "276.2": 1.0}
    with pytest.raises(ValueError):
        hint_pools(golds, preds[:2])


@pytest.mark.parametrize("key,value,needle", [
    ("phi_inject_prob", 1.5, "in [0, 1]"),
    ("phi_max_hints", 0, ">= min_hints"),
    ("phi_temperature", 0, "> 0"),
    ("phi_recall_floor", 0, "(0, 1]"),
    ("phi_min_hints", 2.5, "integer"),
    ("phi_skip_empty", "yes", "true or false"),
    ("phi_hint_style", "nuetral", "one of paper, no_example, neutral"),
    ("phi_hint_style", 1, "one of paper, no_example, neutral"),
])
def test_config_validation(key, value, needle):
    with pytest.raises(ValueError, match=f"data.{key}.*{needle}".replace("[", r"\[").replace("(", r"\(")):
        HintConfig.from_mapping({key: value})


def test_config_from_mapping_defaults_and_misspelling():
    cfg = HintConfig.from_mapping({"phi_temperature": 2.0, "max_prompt_length": 10}, default_seed=5)
    assert cfg.temperature == 2.0 and cfg.inject_prob == 0.5 and cfg.max_hints == 5 and cfg.seed == 5
    assert cfg.hint_style == "paper"
    assert HintConfig.from_mapping({"phi_hint_style": "no_example"}).hint_style == "no_example"
    with pytest.raises(ValueError, match="did you mean data.phi_temperature"):
        HintConfig.from_mapping({"phi_temprature": 2.0})
