"""PHI hint pools and hint sampling (paper Sec. 4.3 and App. E), pure Python + numpy.

A training example's hint pool is the set of gold codes the latest checkpoint missed, H = Y \\ Ŷ.
Each draw injects hints with probability p; the number of hints is uniform in [min, max] capped by
the pool; hints are drawn without replacement with probability ∝ w̃_c^(1/τ), where
a_c = 1/sqrt(freq_c) · 1/max(recall_c, floor) and w̃_c = min(a_c, clip × median a) — the median
taken over the codes that occur in at least one pool (the codes that can be hinted).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np

from llm4icd_plugins.prompts import HINT_STYLES

__all__ = ["HintConfig", "HintSampler", "code_priorities", "clip_priorities", "sampling_weights",
           "hint_pools", "code_stats", "draw_rng", "CONFIG_PREFIX"]

CONFIG_PREFIX = "phi_"
"""verl ``data`` keys of the knobs: ``+data.phi_<field>`` (e.g. ``+data.phi_inject_prob=0.5``)."""


@dataclass(frozen=True)
class HintConfig:
    """The PHI knobs with the paper's defaults; ``seed`` makes every draw reproducible."""

    inject_prob: float = 0.5
    min_hints: int = 1
    max_hints: int = 5
    temperature: float = 3.0
    recall_floor: float = 0.05
    clip_multiple: float = 3.0
    description_chars: int = 100
    hint_style: str = "paper"
    """What a draw inserts (``prompts.HINT_STYLES``): ``paper`` (App. E), ``no_example`` (no mini example) or
    ``neutral`` (code-free filler of the paper block's token length)."""
    skip_empty: bool = True
    seed: int = 0
    audit_file: str | None = None
    """If set, every draw appends ``{"sample_id", "split", "hints"}`` (codes only, no text) to this JSONL."""

    def __post_init__(self) -> None:
        self._check_types()
        self._check_ranges()

    def _bad(self, name: str, why: str) -> ValueError:
        return ValueError(f"PHI setting data.{CONFIG_PREFIX}{name}={getattr(self, name)!r}: {why}")

    def _check_types(self) -> None:
        bad = self._bad
        for name in ("inject_prob", "temperature", "recall_floor", "clip_multiple"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad(name, "must be a finite number")
        for name in ("min_hints", "max_hints", "description_chars", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise bad(name, "must be an integer")
        if not isinstance(self.skip_empty, (bool, np.bool_)):
            raise bad("skip_empty", "must be true or false")
        if self.audit_file is not None and not isinstance(self.audit_file, str):
            raise bad("audit_file", "must be a file path")
        if not isinstance(self.hint_style, str) or self.hint_style not in HINT_STYLES:
            raise bad("hint_style", f"must be one of {', '.join(HINT_STYLES)} (the paper's block is 'paper')")

    def _check_ranges(self) -> None:
        bad = self._bad
        if not 0.0 <= self.inject_prob <= 1.0:
            raise bad("inject_prob", "must be in [0, 1] (the paper uses 0.5)")
        if self.min_hints < 1:
            raise bad("min_hints", "must be at least 1 (the paper uses 1)")
        if self.max_hints < self.min_hints:
            raise bad("max_hints", f"must be >= min_hints ({self.min_hints}); the paper uses 5")
        if self.temperature <= 0:
            raise bad("temperature", "must be > 0 (the paper uses 3.0; larger is flatter)")
        if not 0.0 < self.recall_floor <= 1.0:
            raise bad("recall_floor", "must be in (0, 1] (the paper uses 0.05)")
        if self.clip_multiple <= 0:
            raise bad("clip_multiple", "must be > 0 (the paper clips at 3 x the median priority)")
        if self.description_chars < 4:
            raise bad("description_chars", "must be at least 4 (default 100)")
        if self.seed < 0:
            raise bad("seed", "must be >= 0")

    @classmethod
    def from_mapping(cls, config: Mapping, *, default_seed: int | None = None) -> HintConfig:
        """Build from verl's ``data`` config: keys ``phi_<field>``; an unknown ``phi_*`` key is an
        error naming the closest valid one (a misspelled knob must not be silently ignored)."""
        import difflib

        valid = {f"{CONFIG_PREFIX}{f.name}": f for f in fields(cls)}
        values = {}
        for key in list(config.keys()):
            key = str(key)
            if not key.startswith(CONFIG_PREFIX):
                continue
            if key not in valid:
                close = difflib.get_close_matches(key, valid, n=1)
                hint = f"did you mean data.{close[0]}? " if close else ""
                raise ValueError(f"unknown PHI setting data.{key}; {hint}valid: {', '.join(sorted(valid))}")
            value = config[key]
            if value is not None:
                values[valid[key].name] = value
        if "seed" not in values and default_seed is not None:
            values["seed"] = int(default_seed)
        return cls(**values)


def code_priorities(freq: Mapping[str, int], recall: Mapping[str, float], codes: Iterable[str] | None = None,
                    *, recall_floor: float = 0.05) -> dict[str, float]:
    """a_c = 1/sqrt(freq_c) · 1/max(recall_c, recall_floor) for ``codes`` (default: all of ``freq``)."""
    out = {}
    for code in (freq if codes is None else codes):
        if code not in freq or code not in recall:
            raise KeyError(f"no frequency/recall for code {code!r}: the refresh writes both for every pooled code")
        n = freq[code]
        if n <= 0:
            raise ValueError(f"code {code!r} has frequency {n}; a pooled code is gold at least once")
        out[code] = 1.0 / math.sqrt(n) / max(float(recall[code]), recall_floor)
    return out


def clip_priorities(priorities: Mapping[str, float], clip_multiple: float = 3.0) -> dict[str, float]:
    """w̃_c = min(a_c, clip_multiple × median of all a)."""
    if not priorities:
        return {}
    cap = clip_multiple * float(np.median(np.fromiter(priorities.values(), dtype=float)))
    return {code: min(a, cap) for code, a in priorities.items()}


def sampling_weights(clipped: Mapping[str, float], temperature: float = 3.0) -> dict[str, float]:
    """Unnormalised sampling weights w̃_c^(1/τ); p(c | pool) is this over its sum in the pool."""
    return {code: w ** (1.0 / temperature) for code, w in clipped.items()}


def draw_rng(seed: int, sample_id: str, draw: int) -> np.random.Generator:
    """A generator for the ``draw``-th draw of ``sample_id``: same seed, same hints, in any process
    (``hash()`` is salted per process, so the id is hashed with blake2b)."""
    digest = int.from_bytes(hashlib.blake2b(str(sample_id).encode("utf-8"), digest_size=8).digest(), "little")
    return np.random.default_rng([int(seed), digest, int(draw)])


class HintSampler:
    """Draws hint subsets from pools, with weights fixed by the latest refresh's freq and recall."""

    def __init__(self, freq: Mapping[str, int], recall: Mapping[str, float], config: HintConfig | None = None):
        self.config = config or HintConfig()
        priorities = code_priorities(freq, recall, recall_floor=self.config.recall_floor)
        self.priorities = priorities
        self.clipped = clip_priorities(priorities, self.config.clip_multiple)
        self.weights = sampling_weights(self.clipped, self.config.temperature)

    def probabilities(self, pool: Sequence[str]) -> np.ndarray:
        """p(c | pool) for each code of ``pool`` (the first-draw probabilities)."""
        w = np.array([self.weights[c] for c in pool], dtype=float)
        return w / w.sum()

    def draw(self, pool: Sequence[str], rng: np.random.Generator) -> tuple[str, ...]:
        """Hints for one draw: empty with probability 1 − p (or for an empty pool), else k ~ U[min, max]
        capped by the pool, sampled without replacement in draw order (successive sampling ∝ weight,
        done as Gumbel top-k)."""
        cfg = self.config
        inject = rng.random() < cfg.inject_prob
        k = int(rng.integers(cfg.min_hints, cfg.max_hints + 1))
        if not inject or not pool:
            return ()
        k = min(k, len(pool))
        keys = np.log(self.probabilities(pool)) + rng.gumbel(size=len(pool))
        order = np.argsort(-keys, kind="stable")[:k]
        return tuple(pool[i] for i in order)


def hint_pools(golds: Sequence[Sequence[str]], preds: Sequence[Iterable[str]]) -> list[list[str]]:
    """H_i = Y_i \\ Ŷ_i for each example, in gold order."""
    if len(golds) != len(preds):
        raise ValueError(f"{len(golds)} gold sets but {len(preds)} predictions")
    pools = []
    for gold, pred in zip(golds, preds):
        predicted = set(pred)
        pools.append([c for c in dict.fromkeys(gold) if c not in predicted])
    return pools


def code_stats(golds: Sequence[Sequence[str]], preds: Sequence[Iterable[str]]) -> tuple[Counter, dict[str, float]]:
    """Per-code gold frequency (examples whose gold set holds c) and recall (share of them predicted)."""
    if len(golds) != len(preds):
        raise ValueError(f"{len(golds)} gold sets but {len(preds)} predictions")
    freq: Counter = Counter()
    hits: Counter = Counter()
    for gold, pred in zip(golds, preds):
        predicted = set(pred)
        for code in dict.fromkeys(gold):
            freq[code] += 1
            hits[code] += code in predicted
    return freq, {code: hits[code] / n for code, n in freq.items()}
