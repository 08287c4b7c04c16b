"""Write the tiny CPU LlamaFactory YAML: the users' SFT (or merge) recipe on the tiny backbone + this folder's
scale and CPU keys + key=value overrides.

    python recipes/tiny/sft/compose.py train --out FILE [key=value ...]
    python recipes/tiny/sft/compose.py merge --out FILE adapter_name_or_path=... export_dir=...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

RECIPES = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(RECIPES), str(RECIPES.parent)]

import launch  # noqa: E402
from llm4icd_plugins.atomic import write_text  # noqa: E402
from llm4icd_plugins.backbones import load_backbone  # noqa: E402

SCALE = Path(__file__).resolve().parent / "synthetic.yaml"


def tiny_config(kind: str, overrides: list[str]) -> dict:
    """`train`: recipes/sft/train.yaml + tiny backbone + paper profile + synthetic.yaml; `merge`: merge.yaml."""
    backbone = load_backbone("tiny")
    if kind == "merge":
        return launch.merge_config(backbone, Path("outputs/tiny-qwen2/sft/synthetic"),
                                   Path("outputs/tiny-qwen2/sft/synthetic/merged"), overrides)
    scale = yaml.safe_load(SCALE.read_text(encoding="utf-8"))
    settings = dict(launch.load_profile(launch.DEFAULT_PROFILE)["sft"], **scale)
    return launch._llamafactory_yaml("train", backbone, settings, overrides)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="recipes/tiny/sft/compose.py", description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=("train", "merge"))
    p.add_argument("--out", required=True, type=Path, help="YAML file to write (replaced)")
    p.add_argument("overrides", nargs="*", help="key=value")
    args = p.parse_intermixed_args(argv)
    write_text(args.out, yaml.safe_dump(tiny_config(args.kind, args.overrides), sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
