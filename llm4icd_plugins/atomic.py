"""The one way the project writes outputs: to a temporary sibling, then `os.replace`.

A reader never sees a half-written file, and a killed run leaves at most a temporary file whose name
starts with `.<final name>.tmp-`, which `stale_temporaries`/`remove_stale_temporaries` find and the
next run of the same tool removes (a temporary may hold note text).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

TEMP_MARK = ".tmp-"


def _temp_prefix(final: Path) -> str:
    return f".{final.name}{TEMP_MARK}"


@contextlib.contextmanager
def atomic_path(final: str | Path, *, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success it replaces `final`, on error it is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=_temp_prefix(final))
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, mode)  # mkstemp makes it private; outputs are shared like any data file
        os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(final: str | Path, text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(final: str | Path, data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def write_with(final: str | Path, writer: Callable[[Path], None]) -> None:
    """Call `writer(tmp_path)` and publish its file atomically (for pandas/pyarrow writers)."""
    with atomic_path(final) as tmp:
        writer(tmp)


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success it takes `final`'s place (the old one is
    moved aside first and removed after), on error it is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=_temp_prefix(final)))
    try:
        yield tmp
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(dir=final.parent, prefix=_temp_prefix(final)))
            os.replace(final, old / "old")
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def stale_temporaries(final: str | Path) -> list[Path]:
    """Temporaries a killed earlier run left beside `final` (they may hold note text)."""
    final = Path(final)
    if not final.parent.is_dir():
        return []
    return sorted(p for p in final.parent.iterdir() if p.name.startswith(_temp_prefix(final)))


def remove_stale_temporaries(final: str | Path) -> list[Path]:
    """Remove what `stale_temporaries` finds; returns the removed paths (for the tool to report)."""
    removed = stale_temporaries(final)
    for path in removed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return removed
