"""A privacy canary: note text laced with a marker, and a check that the marker leaked nowhere.

Tests build hostile inputs whose notes come from `canary_note`, drive a tool's error paths, and call
`assert_no_canary` on its stdout, stderr and output folders. The note repeats the full `CANARY` marker
and, every `FRAGMENT_EVERY` characters, a short fragment of it, so even a cut excerpt (an error that quotes
the first 20 characters of a cell) still carries a detectable piece. Files the test names as datasets
(where note text belongs) are skipped. Tests import it as `from canary import ...` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

CANARY = "zqxcanaryvq7k"  # lower case: prepare lower-cases notes, and a leak must still match
FRAGMENT = "qxcanv"  # a shorter piece, planted on its own so that short excerpts carry it too
FRAGMENT_EVERY = 20  # any excerpt of this many characters holds a whole FRAGMENT
_FILLER = ("pt came in with chest pain and sob, hx of high blood sugar, on meds. "
           "sent home stable").split()  # words of at most FRAGMENT_EVERY - 2 * (len(FRAGMENT) + 1) characters


def canary_note(n_words: int = 120) -> str:
    """Note-like text of about `n_words` words, opening and closing with `CANARY`, with a `FRAGMENT`
    at least every `FRAGMENT_EVERY` characters in between (every other word)."""
    words = [CANARY]
    for i in range(max(n_words, 2)):
        words += [FRAGMENT, _FILLER[i % len(_FILLER)]]
    words += [FRAGMENT, CANARY]
    return " ".join(words)


def leaks(text: str) -> list[str]:
    """The canary pieces found in `text` (case-insensitive: tools may upper- or lower-case)."""
    low = text.lower()
    return [piece for piece in (CANARY, FRAGMENT) if piece in low]


def _files(paths: Iterable[str | os.PathLike]) -> Iterable[Path]:
    for path in map(Path, paths):
        if path.is_file():
            yield path
        elif path.is_dir():
            yield from (p for p in sorted(path.rglob("*")) if p.is_file())


def assert_no_canary(stdout: str, stderr: str, *paths: str | os.PathLike,
                     datasets: Iterable[str | os.PathLike] = ()) -> None:
    """Fail if a canary piece is in `stdout`, `stderr`, or any file under `paths` (hidden temporaries
    included) other than those at or under a path in `datasets`."""
    for name, text in (("stdout", stdout), ("stderr", stderr)):
        found = leaks(text or "")
        assert not found, f"note text ({found}) leaked to {name}"
    allowed = [Path(p).resolve() for p in datasets]
    for file in _files(paths):
        real = file.resolve()
        if any(real == a or a in real.parents for a in allowed):
            continue
        found = leaks(file.read_bytes().decode("utf-8", errors="replace"))
        assert not found, f"note text ({found}) leaked to {file}"
