"""The command line: ``python -m data_tools.build.synth`` (every flag is a ``SynthOptions`` field or says where
to write)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from data_tools.cli import run_tool
from llm4icd_plugins.errors import user_error

from .corpus import generate_mimic3, generate_mimic4
from .files import check_out
from .longtail import LONGTAIL_DEFAULTS, generate_mimic3_longtail
from .options import MIMIC3_DIR, MIMIC4_DIR, SynthError, SynthOptions, check_n_admissions, resolve_options


def build_parser() -> argparse.ArgumentParser:
    d = SynthOptions()
    p = argparse.ArgumentParser(
        prog="python -m data_tools.build.synth",
        description="Write synthetic MIMIC-III / MIMIC-IV-shaped raw tables (real file and column names, undotted "
                    "real ICD codes with a long-tailed frequency, MIMIC-style discharge summaries) and Edin-style "
                    "patient-level split files, for tests, benchmarks and the embedded default corpus. No real "
                    "patient data is involved.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="output folder; corpora go to OUT/mimic3 and OUT/mimic4")
    p.add_argument("--corpus", choices=("mimic3", "mimic4", "both"), default="both", help="which corpus to write")
    p.add_argument("--label-profile", choices=("default", "longtail"), default="default",
                   help="longtail (MIMIC-III only): a Full label space of hundreds of trainable codes, ~12 codes "
                        "per note, each code's evidence named, only a synonym/abbreviation, or only implied by a "
                        "medication or device (written to synth_evidence.csv); where not given, --n-codes 600, "
                        "--zipf-exponent 0.7, --dx-per-admission 8 12, --proc-per-admission 1 3")
    p.add_argument("--n-admissions", type=int, default=2000, help="admissions per corpus (patients have 1-5 each)")
    p.add_argument("--n-codes", type=int, default=d.n_codes,
                   help="size of the sampled code vocabulary (diagnoses + procedures) per code system; MIMIC-III "
                        "puts the 50 Mullenbach Top-50 codes at its head")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed and arguments give identical files")
    p.add_argument("--gzip", action=argparse.BooleanOptionalAction, default=d.gzip,
                   help="write .csv.gz as MIMIC ships them (--no-gzip: plain .csv)")
    p.add_argument("--long-note-fraction", type=float, default=d.long_note_fraction,
                   help="fraction of discharge summaries with a long day-by-day hospital course (2,500-7,000 extra "
                        "words) so that truncation matters")
    p.add_argument("--dx-per-admission", type=int, nargs=2, metavar=("MIN", "MAX"), default=list(d.dx_per_admission),
                   help="diagnosis codes per admission, uniform in [MIN, MAX] (rare codes may add one)")
    p.add_argument("--proc-per-admission", type=int, nargs=2, metavar=("MIN", "MAX"),
                   default=list(d.proc_per_admission), help="procedure codes per admission, uniform in [MIN, MAX]")
    p.add_argument("--zipf-exponent", type=float, default=d.zipf_exponent,
                   help="exponent a of the code frequency curve weight(rank) = (rank + 2)^-a; larger = steeper head")
    p.add_argument("--rare-fraction", type=float, default=d.rare_fraction,
                   help="fraction of the vocabulary given only 1-9 occurrences (codes prepare must drop)")
    p.add_argument("--addendum-fraction", type=float, default=d.addendum_fraction,
                   help="MIMIC-III: fraction of admissions with a discharge-summary Addendum row to be joined")
    p.add_argument("--other-notes", dest="other_notes_per_admission", type=float, default=d.other_notes_per_admission,
                   help="MIMIC-III: mean number of non-discharge notes (Radiology, Nursing, ECG, ...) per admission")
    p.add_argument("--no-code-fraction", type=float, default=d.no_code_fraction,
                   help="fraction of admissions without any code (some with an empty ICD9_CODE row in MIMIC-III)")
    p.add_argument("--no-note-fraction", type=float, default=d.no_note_fraction,
                   help="fraction of admissions with codes but no discharge summary (not in the split files)")
    p.add_argument("--negations-per-note", type=int, nargs=2, metavar=("MIN", "MAX"),
                   default=list(d.negations_per_note),
                   help="negated mentions of codes the admission does NOT have ('ruled out for ...') per note")
    p.add_argument("--dx-list-recall", type=float, default=d.dx_list_recall,
                   help="probability that a diagnosis is listed under 'Discharge Diagnosis' (others are only "
                        "described in the hospital course)")
    p.add_argument("--icd9-fraction", type=float, default=d.icd9_fraction,
                   help="MIMIC-IV: fraction of subjects with ICD-9-coded admissions (icd_version 9)")
    p.add_argument("--max-admissions-per-subject", type=int, default=d.max_admissions_per_subject,
                   help="cap on admissions per subject")
    p.add_argument("--split-fractions", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                   default=list(d.split_fractions), help="patient-level split fractions (Edin's clean splits)")
    p.add_argument("--overwrite", action="store_true", help="replace existing OUT/mimic3 or OUT/mimic4 folders")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    given = _given(parser, sys.argv[1:] if argv is None else argv)
    return run_tool("python -m data_tools.build.synth", lambda: _run(args, given))


def _given(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """Destinations of the options written on the command line (so a profile can default the others)."""
    flags = {str(tok).split("=", 1)[0] for tok in argv if str(tok).startswith("--") and len(str(tok)) > 2}
    return {a.dest for a in parser._actions if any(o.startswith(f) for o in a.option_strings for f in flags)}


def _run(args: argparse.Namespace, given: set[str] = frozenset()) -> None:
    fields = set(SynthOptions().__dict__)
    overrides = {k: (tuple(v) if isinstance(v, list) else v) for k, v in vars(args).items() if k in fields}
    if args.label_profile == "longtail":
        if args.corpus != "mimic3":
            raise user_error(None, "synth: --label-profile longtail writes a MIMIC-III corpus only",
                             "pass --corpus mimic3", cls=SynthError)
        overrides.update({k: v for k, v in LONGTAIL_DEFAULTS.items() if k not in given})
    opts = resolve_options(None, overrides)
    check_n_admissions(args.n_admissions)
    corpora = ("mimic3", "mimic4") if args.corpus == "both" else (args.corpus,)
    for corpus in corpora:  # both outputs checked before either is written
        check_out(args.out, MIMIC3_DIR if corpus == "mimic3" else MIMIC4_DIR, args.overwrite)
    for corpus in corpora:
        gen = generate_mimic3 if corpus == "mimic3" else generate_mimic4
        if args.label_profile == "longtail":
            gen = generate_mimic3_longtail
        t0 = time.perf_counter()
        paths = gen(args.out, args.n_admissions, args.seed, options=opts, overwrite=args.overwrite,
                    progress=not args.no_progress)
        _print_summary(paths, time.perf_counter() - t0)


def _print_summary(paths: dict[str, Path], seconds: float) -> None:
    s = json.loads(paths["manifest"].read_text(encoding="utf-8"))["summary"]
    w = s["note_words"]
    print(f"\n{s['corpus']}: wrote {paths['root']} in {seconds:.1f} s")
    print(f"  admissions {s['admissions']} ({', '.join(f'{k} {v}' for k, v in s['admissions_by_system'].items())}), "
          f"subjects {s['subjects']}, without codes {s['admissions_without_codes']}, "
          f"without note {s['admissions_without_note']}")
    print(f"  discharge summaries {s['discharge_summaries']} (long {s['long_notes']}, addenda {s['addenda']}), "
          f"other notes {s['other_notes']}; words p50 {w.get('p50')} p95 {w.get('p95')} max {w.get('max')}")
    codes = "; ".join(f"{k}: {v['distinct']} distinct codes, {v['rare_lt10']} seen < 10 times"
                      for k, v in s["codes"].items())
    print(f"  code rows: diagnoses {s['diagnosis_rows']}, procedures {s['procedure_rows']}; {codes}")
    print("  split (admissions with a note): " + ", ".join(f"{k} {v}" for k, v in s["split_admissions"].items()))
    for key, path in paths.items():
        if key != "root":
            print(f"  {key:16s} {path}")
