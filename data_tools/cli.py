"""The command-line convention every tool follows, stated once.

- Output: `--out PATH` (a file or a folder, as the tool says) and `--overwrite` to replace an existing one;
  without it an existing output is an error (resumable tools say how they resume instead).
- Bad input or configuration raises `llm4icd_plugins.errors.UserError` (a subclass per tool is fine); the
  tool prints `<prog>: error: <message>` (file, row, column, fix; never a cell's contents), no traceback,
  and exits with 2, like argparse's own usage errors. Success exits 0; anything else is a bug and keeps
  its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from llm4icd_plugins.errors import EXIT_USER_ERROR, UserError


def add_output_arguments(parser: argparse.ArgumentParser, what: str, *, required: bool = True) -> None:
    """`--out` and `--overwrite`, with the same names and help in every tool."""
    parser.add_argument("--out", type=Path, required=required, metavar="PATH", help=f"where to write {what}")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output (default: refuse and say so)")


def refuse_existing(out: Path, overwrite: bool, *, cls: type[UserError] = UserError) -> None:
    """The one check for an existing output, done before any work."""
    if out.exists() and not overwrite:
        raise cls(f"{out}: the output exists. Fix: pass --overwrite to replace it, or choose another --out")


def run_tool(prog: str, body: Callable[[], int | None]) -> int:
    """Run a tool's body under the convention: UserError → message on stderr, exit 2."""
    try:
        code = body()
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0 if code is None else int(code)


def exit_with(main: Callable[[Sequence[str] | None], int]) -> None:
    """`if __name__ == "__main__": exit_with(main)`."""
    sys.exit(main(None))
