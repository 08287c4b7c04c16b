"""``llamafactory-cli`` without the one printout that holds note text.

LlamaFactory prints its first training and evaluation example — token ids and the decoded text, i.e. a
whole discharge summary — to stdout on rank 0. MIMIC notes are protected health information, so the
recipes start LlamaFactory as ``python -m llm4icd_plugins.llamafactory.cli <command> ...``: the same CLI
with that printout replaced by a one-line count. It also holds in the torchrun workers that LlamaFactory
re-launches for multi-GPU runs, because those are pointed at this file instead of LlamaFactory's launcher.
"""

from __future__ import annotations

import os
import sys

IGNORE_INDEX = -100


def _describe_example(self, example: dict) -> None:
    labels = example.get("labels") or []
    trained = sum(1 for token in labels if token != IGNORE_INDEX)
    print(f"[llm4icd] example: {len(example.get('input_ids') or [])} tokens, {trained} trained "
          "(text not shown: clinical notes are PHI)")


def quiet_examples() -> None:
    """Replace ``print_data_example`` of every LlamaFactory dataset processor with a count."""
    from llamafactory.data import processor

    for name in processor.__all__:
        cls = getattr(processor, name)
        if isinstance(cls, type) and hasattr(cls, "print_data_example"):
            cls.print_data_example = _describe_example


def main() -> None:
    quiet_examples()
    if os.environ.get("TORCHELASTIC_RUN_ID"):  # a torchrun worker re-launched by LlamaFactory
        from llamafactory.train.tuner import run_exp

        run_exp()
        return
    from llamafactory import launcher
    from llamafactory.cli import main as llamafactory_main

    launcher.__file__ = os.path.abspath(__file__)  # torchrun re-launches run this file, not theirs
    sys.exit(llamafactory_main())


if __name__ == "__main__":
    main()
