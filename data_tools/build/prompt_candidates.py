"""``prepare --candidates PATH --top-k K``: a discriminative coder's ranked candidates as a block of the prompt.

PATH is the folder ``python -m data_tools.evaluation.candidates`` writes (``candidates_<split>.jsonl``, one row
per note: ``id``, ``codes`` best first, ``scores``; training notes cross-fitted) or one such JSONL file. Every
example of every split gets the top K of its candidates that lie in the variant's label space, with their
descriptions, so training and inference see the same prompt. A note without a candidates row is an error naming
the file and the id. Files hold ids, codes and numbers only; errors never show a value that is not code-like.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llm4icd_plugins.errors import UserError, describe, show_token, user_error

FILE_PATTERN = "candidates_*.jsonl"
_FIX = "pass the folder written by `python -m data_tools.evaluation.candidates` (candidates_<split>.jsonl)"


@dataclass(frozen=True)
class CandidateLists:
    """Ranked candidate codes per sample id, read from ``files``; ``sha256`` identifies their bytes."""

    source: Path
    files: tuple[Path, ...]
    sha256: str
    ranked: dict[str, tuple[str, ...]]
    where: dict[str, Path]  # the file that gave each id

    def record(self, top_k: int) -> dict:
        """What ``stats.json`` says the variant was built with."""
        return {"source": str(self.source), "files": [f.name for f in self.files], "sha256": self.sha256,
                "top_k": top_k, "placement": "a suggestion block before the note, in every split's prompt"}

    def check_ids(self, ids: Sequence[str], splits: Sequence[str]) -> None:
        """Every sample id has a candidates row, else an error naming the file (``candidates_<split>.jsonl`` of the
        note's split when the folder has one, else all of them) and the first missing id."""
        missing = [(i, s) for i, s in zip(ids, splits) if i not in self.ranked]
        if missing:
            sample_id, split = missing[0]
            own = [f for f in self.files if f.name == f"candidates_{split}.jsonl"]
            names = ", ".join(str(f) for f in own or self.files)
            raise UserError(f"{names}: no candidates row for {split} sample id {show_token(sample_id)} "
                            f"({len(missing)} of {len(ids)} notes have none). Fix: write candidates for every split "
                            "of this data (data_tools.evaluation.candidates train on a variant of the same notes)")

    def top(self, sample_id: str, k: int, label_space: frozenset[str] | set[str]) -> list[str]:
        """The ``k`` best candidates of ``sample_id`` that lie in ``label_space``, best first."""
        chosen: list[str] = []
        for code in self.ranked[sample_id]:
            if code in label_space:
                chosen.append(code)
                if len(chosen) == k:
                    break
        return chosen


def read_candidates(path: str | Path) -> CandidateLists:
    """The candidates folder (or one JSONL file) at ``path``, checked row by row."""
    path = Path(path)
    if path.is_dir():
        files = tuple(sorted(path.glob(FILE_PATTERN)))
        if not files:
            raise user_error(path, f"no {FILE_PATTERN} file in the folder", _FIX)
    elif path.is_file():
        files = (path,)
    else:
        raise user_error(path, "no such file or folder", _FIX)
    digest = hashlib.sha256()
    ranked: dict[str, tuple[str, ...]] = {}
    where: dict[str, Path] = {}
    for file in files:
        data = file.read_bytes()
        digest.update(f"{file.name}\0{len(data)}\0".encode())
        digest.update(data)
        for row, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            sample_id, codes = _row(file, row, line)
            if sample_id in ranked:
                raise user_error(file, f"sample id {show_token(sample_id)} has a candidates row already in "
                                 f"{where[sample_id].name}", "keep one row per note", row=row, column="id")
            ranked[sample_id], where[sample_id] = codes, file
    return CandidateLists(path, files, digest.hexdigest(), ranked, where)


def _row(file: Path, row: int, line: str) -> tuple[str, tuple[str, ...]]:
    try:
        record = json.loads(line)
    except ValueError:
        raise user_error(file, "not a JSON object", _FIX, row=row) from None
    if not isinstance(record, dict):
        raise user_error(file, f"the row is {describe(record)}, not a JSON object", _FIX, row=row)
    sample_id = record.get("id")
    if isinstance(sample_id, int) and not isinstance(sample_id, bool):
        sample_id = str(sample_id)
    if not isinstance(sample_id, str) or not sample_id.strip():
        raise user_error(file, f"the id is {describe(sample_id)}", _FIX, row=row, column="id")
    codes = record.get("codes")
    if not isinstance(codes, list) or not all(isinstance(c, str) and c.strip() and "\n" not in c for c in codes):
        raise user_error(file, f"the codes are {describe(codes)}, not a list of code strings", _FIX, row=row,
                         column="codes")
    return sample_id.strip(), tuple(c.strip() for c in codes)


def candidate_pairs(lists: CandidateLists, ids: Sequence[str], k: int, label_codes: Sequence[str],
                    system) -> list[list[tuple[str, str | None]]]:
    """Per sample id: its top-``k`` candidates in the label space with their descriptions (None if unknown)."""
    space = frozenset(label_codes)
    return [[(code, system.description(code)) for code in lists.top(i, k, space)] for i in ids]


def prepare_into(command: str, variant: str, target: Path) -> str:
    """A prepare command (given without --out) that writes ``variant`` under another folder name, ``target`` (the
    launcher's <dataset>_cand<K>): prepared aside, then moved there, so the plain variant beside it is never touched."""
    aside = target.with_name(target.name + ".prepare")
    q = shlex.quote
    return f"{command} --out {q(str(aside))} && mv {q(str(aside / variant))} {q(str(target))} && rmdir {q(str(aside))}"
