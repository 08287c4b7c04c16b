"""Raw MIMIC-III / MIMIC-IV tables (or a generic table) → LlamaFactory SFT and verl RL datasets.

Follows the paper (App. A) and Edin et al.'s clean splits: discharge summaries (MIMIC-III addenda
joined to the report in chart order), lower-cased with punctuation and layout kept; codes put in the
canonical dotted form of their source table, deduplicated per admission; codes seen fewer than
``--min-code-count`` times removed and admissions left without codes dropped; Full and Top-50
variants. Codes unknown to the current ICD tables (MIMIC-III's retired codes) are gold labels: kept
and counted, never dropped or corrected. With ``--tokenizer`` every prompt is truncated (tiered
middle-out, ``llm4icd_plugins.truncation``) so that neither LlamaFactory nor verl cuts it silently.
With ``--candidates`` every prompt of every split lists a discriminative coder's top ``--top-k``
candidates as suggestions that may or may not apply (the note is cut to make room, never the list).

    python -m data_tools.build.prepare mimic3 --root MIMIC3_DIR --splits mimiciii_clean_splits.feather --out OUT
    python -m data_tools.build.prepare mimic4 --root MIMIC4_DIR --splits mimiciv_icd10_split.feather --out OUT
    python -m data_tools.build.prepare generic --input table.jsonl --code-system icd10 --name mydata --out OUT

Everything is written to a temporary folder next to ``--out`` and renamed into place at the end: a
failed run leaves no partial output, and the variants of one run replace the previous ones together (a
run killed while renaming is completed by the next start, which also removes a killed run's temporary
folders). Note text is never printed or logged (MIMIC notes are PHI): errors name the file, row and
column, never a cell's contents.

Modules: ``loaders`` (raw tables), ``examples`` (splits, code filtering, Top-50), ``prompt_budget``
(truncation to the trainers' budgets), ``prompt_candidates`` (the candidate block), ``writers`` (one
variant's files), ``staging`` (publishing all variants at once); this one joins them and is the command line.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from data_tools.build import staging
from data_tools.build.examples import assemble, check_splits, load_splits, random_splits, variant_examples
from data_tools.build.loaders import (MIMIC3_FILES, MIMIC4_FILES, SPLIT_FILE_NAMES, RawData, Report, find_file,
                                      load_generic, load_mimic3, load_mimic4)
from data_tools.build.prompt_budget import TruncationSettings, load_tokenizer
from data_tools.build.prompt_candidates import CandidateLists, candidate_pairs, read_candidates
from data_tools.build.writers import write_variant
from data_tools.cli import run_tool
from llm4icd_plugins import prompts
from llm4icd_plugins.errors import UserError, show_token

DEFAULT_TOP_K = 20
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")  # --name; a staging folder is .<out>.tmp-<name>+XXXX


def prepare(raw: RawData, splits: pd.DataFrame, splits_path, out: Path, dataset: str, *, name: str | None = None,
            variants: Sequence[str] = ("full", "top50"), min_code_count: int = 10,
            settings: TruncationSettings | None = None, overwrite: bool = False,
            report: Report | None = None, candidates: CandidateLists | None = None,
            top_k: int = DEFAULT_TOP_K) -> dict[str, dict]:
    """Build and atomically write the requested variants; returns each variant's stats. ``candidates``: the top
    ``top_k`` of each note's candidates (in the variant's label space) are listed in its prompt."""
    from llm4icd_plugins.codes import load_code_system

    settings = settings or TruncationSettings()
    report = report or Report()
    prefix = name or dataset
    names = {v: f"{prefix}_{v}" for v in variants}
    out = Path(out)
    staging.start_output(out, prefix, list(names.values()), overwrite)
    system = load_code_system(raw.code_system)
    examples = assemble(raw, splits, splits_path, report, min_code_count)
    if examples.empty:
        raise UserError(f"{splits_path}: no admission is left after filtering. Fix: check the inputs "
                        f"(dropped: {dict(report.dropped)})")
    if candidates is not None:
        candidates.check_ids(examples["id"].tolist(), examples["split"].tolist())
    tokenizer = load_tokenizer(settings)
    results = {}
    with staging.staged(out, prefix, list(names.values()), overwrite) as staged:
        for variant, vname in names.items():
            data, labels, label_info, dropped = variant_examples(examples, variant, dataset)
            vreport = Counter(report.dropped)
            vreport.update(dropped)
            spec = prompts.PromptSpec(raw.code_system, variant, raw.corpus)
            base = {"sources": raw.sources, "dropped": dict(sorted(vreport.items())),
                    "info": report.info, "label_space": label_info}
            pairs = None
            if candidates is not None:
                base["candidates"] = candidates.record(top_k)
                pairs = candidate_pairs(candidates, data["id"].tolist(), top_k, labels, system)
            results[vname] = write_variant(staged / vname, vname, data, labels, spec, system, settings,
                                           tokenizer, base, pairs)
    return results


# --- command line ---------------------------------------------------------------------------------------

def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder; each variant goes to OUT/<variant>/ (written atomically)")
    parser.add_argument("--name", help="variant name prefix (default: mimic3, mimic4 or generic): writes "
                        "<name>_full and <name>_top50")
    parser.add_argument("--variants", default="full,top50",
                        help="comma-separated label settings to write: full, top50 (default: both)")
    parser.add_argument("--min-code-count", type=int, default=10,
                        help="remove codes seen fewer than this many times in the split-file admissions; "
                        "admissions left without codes are dropped (default 10, as Edin et al.)")
    parser.add_argument("--skip-malformed", action="store_true",
                        help="drop and count codes that are malformed for their table instead of stopping")
    parser.add_argument("--overwrite", action="store_true", help="replace variant folders that already exist")
    parser.add_argument("--tokenizer", help="Hugging Face tokenizer/model folder of the backbone; enables "
                        "truncation with its chat template (without it, notes are not truncated)")
    parser.add_argument("--backbone", help="backbone name or YAML (recipes/models/): its tokenizer (or --tokenizer, "
                        "a local copy), chat template and arguments, checked against its LlamaFactory template first; "
                        "recorded in stats.json. Prepare each backbone into its own --out, e.g. data/prepared/NAME")
    parser.add_argument("--max-prompt-length", type=int, default=4096,
                        help="verl data.max_prompt_length: prompt tokens incl. chat template (default 4096)")
    parser.add_argument("--hint-reserve", type=int, default=0,
                        help="prompt tokens kept free in every prompt for PHI hint blocks (default 0: PHIDataset "
                        "re-fits the note of a hinted prompt instead)")
    parser.add_argument("--cutoff-len", type=int, default=4480,
                        help="LlamaFactory cutoff_len: prompt + answer + end-of-turn tokens (default 4480)")
    parser.add_argument("--enable-thinking", action=argparse.BooleanOptionalAction, default=None,
                        help="pass enable_thinking to the chat template (Qwen3 hybrid models: use "
                        "--no-enable-thinking, matching LlamaFactory's enable_thinking: false)")
    parser.add_argument("--num-workers", type=int, default=1, help="processes for truncation (default 1)")


    parser.add_argument("--candidates", type=Path, help="candidates of a discriminative coder: the folder written "
                        "by `python -m data_tools.evaluation.candidates` (candidates_<split>.jsonl, training notes "
                        "cross-fitted) or one such JSONL file; every note of every split needs a row. Lists each "
                        "note's top --top-k candidates in the variant's label space, with descriptions, in its "
                        "prompt as suggestions that may or may not apply (default: none, the paper's prompt)")
    parser.add_argument("--top-k", type=int, help=f"candidates listed per prompt with --candidates "
                        f"(default {DEFAULT_TOP_K})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_tools.build.prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Run `python -m data_tools.build.prepare {mimic3,mimic4,generic} --help` "
                                     "for the flags of each input kind.")
    sub = parser.add_subparsers(dest="dataset", required=True)
    for dataset, files in (("mimic3", MIMIC3_FILES), ("mimic4", MIMIC4_FILES)):
        p = sub.add_parser(dataset, help=f"raw {'MIMIC-III' if dataset == 'mimic3' else 'MIMIC-IV (+ MIMIC-IV-Note)'}"
                           " tables")
        p.add_argument("--root", type=Path, help="folder holding the raw tables under their MIMIC names "
                       f"({', '.join(v + '.csv[.gz]' for v in files.values())}) and optionally the split file")
        p.add_argument("--notes", help=f"{files['notes']} table (overrides --root)")
        p.add_argument("--diagnoses", help=f"{files['diagnoses']} table (overrides --root)")
        p.add_argument("--procedures", help=f"{files['procedures']} table (overrides --root)")
        p.add_argument("--splits", help="clean split file (feather or csv; columns _id, split); default: "
                       "Edin's file name under --root")
        if dataset == "mimic4":
            p.add_argument("--icd-version", type=int, choices=(9, 10), default=10,
                           help="keep codes of this ICD version only (default 10, as the paper)")
        _add_common(p)
    g = sub.add_parser("generic", help="a table with id, text, codes (+ optional split, subject_id)")
    g.add_argument("--input", required=True, help="jsonl, csv or parquet table")
    g.add_argument("--code-system", required=True, choices=("icd9", "icd10"), help="code system of the codes")
    g.add_argument("--corpus", help="corpus name used in prompts (default MIMIC-III for icd9, MIMIC-IV for icd10)")
    g.add_argument("--splits", help="split file (_id, split); default: the table's split column, else random")
    g.add_argument("--id-column", default="id", help="column of sample ids (default id)")
    g.add_argument("--text-column", default="text", help="column of note texts (default text)")
    g.add_argument("--codes-column", default="codes", help="column of codes: list or 'c1, c2' (default codes)")
    g.add_argument("--split-column", default="split", help="optional column of splits (default split)")
    g.add_argument("--subject-column", default="subject_id", help="optional patient column (default subject_id); "
                   "random splits keep a patient's samples together")
    g.add_argument("--val-fraction", type=float, default=0.1, help="random split: validation fraction (0.1)")
    g.add_argument("--test-fraction", type=float, default=0.1, help="random split: test fraction (0.1)")
    g.add_argument("--seed", type=int, default=0, help="random split seed (0)")
    _add_common(g)
    return parser


def _read_candidates(args: argparse.Namespace) -> tuple[CandidateLists | None, int]:
    if args.candidates is None:
        if args.top_k is not None:
            raise UserError("--top-k is the number of candidates listed with --candidates. Fix: pass --candidates "
                            "FOLDER too, or leave out --top-k")
        return None, DEFAULT_TOP_K
    top_k = DEFAULT_TOP_K if args.top_k is None else args.top_k
    if top_k < 1:
        raise UserError(f"--top-k {top_k}: at least one candidate is listed. Fix: pass --top-k 1 or more")
    return read_candidates(args.candidates), top_k


def run(args: argparse.Namespace) -> dict[str, dict]:
    report = Report()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in prompts.LABEL_SCOPES]
    if bad or not variants:
        raise UserError(f"--variants {args.variants!r}: expected full and/or top50. Fix: pass --variants full,top50")
    if args.dataset == "generic":
        dataset = "generic"
    else:
        dataset = args.dataset if args.dataset == "mimic3" or args.icd_version == 10 else "mimic4_icd9"
    prefix = args.name or dataset
    if not _NAME.fullmatch(prefix):
        raise UserError(f"--name {show_token(prefix)}: not a plain name. Fix: use letters, digits, '_', '-' and '.'")
    staging.start_output(args.out, prefix, [f"{prefix}_{v}" for v in variants], args.overwrite)
    from data_tools.build.backbone_check import prepare_settings  # --backbone: its tokenizer; templates checked

    backbone_fields = prepare_settings(args)
    candidates, top_k = _read_candidates(args)
    if args.dataset == "generic":
        raw, table_splits = load_generic(args.input, args.code_system, report, id_col=args.id_column,
                                         text_col=args.text_column, codes_col=args.codes_column,
                                         split_col=args.split_column, subject_col=args.subject_column,
                                         corpus=args.corpus, skip_malformed=args.skip_malformed)
        if args.splits:
            splits, splits_path = load_splits(args.splits), args.splits
        elif table_splits is not None:
            splits, splits_path = check_splits(table_splits, args.input), args.input
        else:
            splits = random_splits(raw.notes["id"], raw.notes["subject_id"].tolist(), args.val_fraction,
                                   args.test_fraction, args.seed)
            splits_path = args.input
            report.info["splits"] = f"random, group-level (seed {args.seed})"
    else:
        files = MIMIC3_FILES if args.dataset == "mimic3" else MIMIC4_FILES
        paths = {k: find_file(args.root, getattr(args, k), [stem, stem.lower(), stem.upper()], f"--{k}")
                 for k, stem in files.items()}
        split_key = "mimic3" if args.dataset == "mimic3" else f"mimic4_{args.icd_version}"
        splits_path = find_file(args.root, args.splits, SPLIT_FILE_NAMES[split_key], "--splits")
        if args.dataset == "mimic3":
            raw = load_mimic3(paths["notes"], paths["diagnoses"], paths["procedures"], report, args.skip_malformed)
        else:
            raw = load_mimic4(paths["notes"], paths["diagnoses"], paths["procedures"], report, args.icd_version,
                              args.skip_malformed)
        splits = load_splits(splits_path)
    settings = TruncationSettings(args.tokenizer, args.max_prompt_length, args.hint_reserve, args.cutoff_len,
                                  args.enable_thinking, args.num_workers, **backbone_fields)
    return prepare(raw, splits, splits_path, args.out, dataset, name=args.name, variants=variants,
                   min_code_count=args.min_code_count, settings=settings, overwrite=args.overwrite, report=report,
                   candidates=candidates, top_k=top_k)


def print_summary(results: dict[str, dict], out: Path) -> None:
    for name, stats in results.items():
        counts = ", ".join(f"{s} {v['examples']}" for s, v in stats["splits"].items())
        print(f"{out / name}: {counts}; {stats['n_labels']} labels; "
              f"{stats['unknown_codes']['distinct']} codes unknown to the current tables (kept)")
        tokens = stats["tokens"]
        if "n_truncated" in tokens:
            print(f"  prompts: {tokens['n_truncated']} truncated; tokens before max "
                  f"{tokens['prompt_tokens_before']['max']:.0f}, after max {tokens['prompt_tokens_after']['max']:.0f}")
        else:
            print(f"  prompts: {tokens['truncation']}")
    first = next(iter(results.values()))
    print("dropped:")
    for reason, n in first["dropped"].items():
        print(f"  {n:>8}  {reason}")
    info = first["info"]
    rare = info.get("rare_codes_removed", {})
    print(f"rare codes removed (< {rare.get('threshold')}): {rare.get('distinct')} distinct, "
          f"{rare.get('occurrences')} occurrences")
    print(f"admissions whose text joins several notes (e.g. report + addenda): "
          f"{info.get('notes_joined_from_several_parts', 0)}; duplicate code rows removed: "
          f"{info.get('duplicate_code_rows_removed', 0)}")
    if info.get("subjects_in_several_splits"):
        print(f"WARNING: {info['subjects_in_several_splits']} subjects have admissions in several splits")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        print_summary(run(args), args.out)

    return run_tool("python -m data_tools.build.prepare", body)


if __name__ == "__main__":
    sys.exit(main())
