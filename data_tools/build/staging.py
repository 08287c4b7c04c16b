"""Publishing prepared variants all at once: they are written to a staging folder next to ``--out`` and
renamed into place at the end. A failed run leaves no partial output; the variants of one run replace the
previous ones together (a run killed while renaming is completed by the next start, which also removes a
killed run's staging folders: they hold note text)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from llm4icd_plugins import atomic
from llm4icd_plugins.errors import UserError, user_error

COMMIT_MARK = "COMMIT"  # in a staging folder: the new variants are complete, replace the old ones


def staging_prefix(out: Path, prefix: str) -> str:
    return f".{out.name}{atomic.TEMP_MARK}{prefix}+"


def start_output(out: Path, prefix: str, names: Sequence[str], overwrite: bool) -> None:
    """Before any work: complete a replacement that a killed run left half done, remove a killed run's
    temporary folder (it holds note text), and check that ``out`` can take the variants ``names``."""
    out = Path(out)
    for tmp in atomic.stale_temporaries(out):
        suffix = tmp.name[len(f".{out.name}{atomic.TEMP_MARK}"):]
        if not (tmp.name.startswith(staging_prefix(out, prefix)) or "+" not in suffix):
            continue  # another --name's run, perhaps still going (no "+": an earlier version's temporary)
        if (tmp / COMMIT_MARK).is_file():
            _publish(tmp, out)
            print(f"note: {out}: completed the replacement that an interrupted run left half done", file=sys.stderr)
        else:
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            print(f"note: removed {tmp}, the temporary folder of an interrupted run", file=sys.stderr)
    fix = "pass --out a folder you can write to"
    if out.exists() and not out.is_dir():
        raise user_error(out, "--out is a file, not a folder", fix)
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise user_error(parent, "a file stands where --out needs a folder", fix)
    for folder in (out if out.exists() else parent, parent):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise user_error(folder, "the folder is read-only", fix)
    existing = [n for n in names if (out / n).exists()]
    if existing and not overwrite:
        raise UserError(f"{out}: {', '.join(existing)} already exist(s). Fix: pass --overwrite or another --out")


def _publish(tmp_root: Path, out: Path) -> None:
    """Move the variants staged in ``tmp_root/new`` into ``out``: every old one aside first, then every new
    one in, so no moment pairs a new variant with an old one. Idempotent, so a killed run's next start
    completes it; the old variants are deleted only once all new ones are in place."""
    new, old = tmp_root / "new", tmp_root / "old"
    if new.is_dir() and not out.exists():
        os.replace(new, out)
    elif new.is_dir():
        pending = sorted(p.name for p in new.iterdir())
        old.mkdir(exist_ok=True)
        for name in pending:
            if (out / name).exists():
                os.replace(out / name, Path(tempfile.mkdtemp(dir=old)) / name)
        for name in pending:
            os.replace(new / name, out / name)
    shutil.rmtree(tmp_root, ignore_errors=True)



@contextlib.contextmanager
def staged(out: Path, prefix: str, names: Sequence[str], overwrite: bool) -> Iterator[Path]:
    """A folder to write the variants ``names`` into (each as ``<folder>/<name>``); on leaving without an error
    they replace those in ``out`` together. Removed on an error; once marked complete, the next start finishes
    a replacement that this run could not."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=staging_prefix(out, prefix), dir=out.parent))
    marked = False
    try:
        yield tmp_root / "new"
        appeared = [n for n in names if (out / n).exists()]
        if appeared and not overwrite:
            raise UserError(f"{out}: {', '.join(appeared)} appeared while preparing. Fix: pass --overwrite or "
                            "another --out")
        atomic.write_text(tmp_root / COMMIT_MARK, json.dumps(sorted(names)) + "\n")
        marked = True
        _publish(tmp_root, out)
    finally:
        if not marked:  # once marked, the staged variants are the output: the next start completes them
            shutil.rmtree(tmp_root, ignore_errors=True)
