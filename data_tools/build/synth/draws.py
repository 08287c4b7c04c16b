"""Scalar random draws from a numpy Generator, pulled in blocks: text building needs millions of them and a
numpy scalar call costs microseconds. The order of draws is part of the output: same seed, same bytes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class Draws:
    """``random``, ``chance``, ``randint``, ``choice``, ``sample`` and ``shuffle`` over one Generator."""

    def __init__(self, rng: np.random.Generator, block: int = 1 << 15):
        self._rng, self._block = rng, block
        self._buf: list[float] = []
        self._i = 0

    def random(self) -> float:
        if self._i >= len(self._buf):
            self._buf = self._rng.random(self._block).tolist()
            self._i = 0
        self._i += 1
        return self._buf[self._i - 1]

    def chance(self, p: float) -> bool:
        return self.random() < p

    def randint(self, lo: int, hi: int) -> int:
        """Uniform integer in [lo, hi], both included."""
        return lo + int(self.random() * (hi - lo + 1))

    def choice(self, seq: Sequence):
        return seq[int(self.random() * len(seq))]

    def sample(self, seq: Sequence, k: int) -> list:
        """``k`` distinct items (partial Fisher-Yates), in draw order."""
        pool = list(seq)
        k = min(k, len(pool))
        for i in range(k):
            j = i + int(self.random() * (len(pool) - i))
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:k]

    def shuffle(self, seq: list) -> list:
        return self.sample(seq, len(seq))
