"""The generator's options (the command-line flags), its errors and the names of what it writes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llm4icd_plugins.errors import UserError, user_error

GENERATOR_VERSION = 1
MIMIC3_DIR, MIMIC4_DIR = "mimic3", "mimic4"
MANIFEST = "synth_manifest.json"
SPLITS = ("train", "val", "test")
# Edin et al.'s MIMIC-III clean split sizes 38,401 / 5,577 / 8,734 (patient-level).
DEFAULT_SPLIT_FRACTIONS = (0.729, 0.105, 0.166)


class SynthError(UserError, ValueError):
    """Bad options or output (a ValueError too, for callers of the Python API)."""


class OutputExists(SynthError, FileExistsError):
    """The corpus folder exists and ``overwrite`` was not given."""


@dataclass(frozen=True)
class SynthOptions:
    """Knobs shared by both corpora (the CLI flags); defaults give MIMIC-like proportions."""

    n_codes: int = 500
    dx_per_admission: tuple[int, int] = (3, 12)
    proc_per_admission: tuple[int, int] = (0, 4)
    zipf_exponent: float = 1.0
    rare_fraction: float = 0.1
    long_note_fraction: float = 0.05
    addendum_fraction: float = 0.05
    other_notes_per_admission: float = 1.0
    no_code_fraction: float = 0.01
    no_note_fraction: float = 0.01
    negations_per_note: tuple[int, int] = (1, 4)
    dx_list_recall: float = 0.88
    max_admissions_per_subject: int = 5
    split_fractions: tuple[float, float, float] = DEFAULT_SPLIT_FRACTIONS
    icd9_fraction: float = 0.25  # MIMIC-IV only: admissions coded in ICD-9
    gzip: bool = True

    def validate(self) -> None:
        def bad(flag: str, why: str) -> SynthError:
            return user_error(None, f"synth: {flag} {why}", f"change {flag}", cls=SynthError)

        if self.n_codes < 20:
            raise bad("--n-codes", f"must be >= 20 (got {self.n_codes})")
        for flag, (lo, hi), floor in (("--dx-per-admission", self.dx_per_admission, 1),
                                      ("--proc-per-admission", self.proc_per_admission, 0)):
            if not floor <= lo <= hi:
                raise bad(flag, f"needs {floor} <= MIN <= MAX (got {lo} {hi})")
        lo, hi = self.negations_per_note
        if not 0 <= lo <= hi:
            raise bad("--negations-per-note", f"needs 0 <= MIN <= MAX (got {lo} {hi})")
        for flag, value in (("--rare-fraction", self.rare_fraction),
                            ("--long-note-fraction", self.long_note_fraction),
                            ("--addendum-fraction", self.addendum_fraction),
                            ("--no-code-fraction", self.no_code_fraction),
                            ("--no-note-fraction", self.no_note_fraction), ("--dx-list-recall", self.dx_list_recall),
                            ("--icd9-fraction", self.icd9_fraction)):
            if not 0.0 <= value <= 1.0:
                raise bad(flag, f"must be within [0, 1] (got {value})")
        if self.rare_fraction > 0.5:
            raise bad("--rare-fraction", f"must be <= 0.5 (got {self.rare_fraction})")
        if self.zipf_exponent <= 0:
            raise bad("--zipf-exponent", f"must be > 0 (got {self.zipf_exponent})")
        if self.other_notes_per_admission < 0:
            raise bad("--other-notes", f"must be >= 0 (got {self.other_notes_per_admission})")
        if self.max_admissions_per_subject < 1:
            raise bad("--max-admissions-per-subject", "must be >= 1")
        fr = self.split_fractions
        if len(fr) != 3 or min(fr) <= 0 or abs(sum(fr) - 1.0) > 1e-6:
            raise bad("--split-fractions", f"needs three positive numbers summing to 1 (got {fr})")


def resolve_options(options: SynthOptions | None, overrides: dict) -> SynthOptions:
    """``options`` (default: ``SynthOptions()``) with ``overrides`` (field names) applied, validated."""
    base = options or SynthOptions()
    unknown = sorted(set(overrides) - set(base.__dict__))
    if unknown:
        raise TypeError(f"synth: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(base.__dict__))}")
    opts = SynthOptions(**{**base.__dict__, **overrides})
    opts.validate()
    return opts


def check_n_admissions(n_admissions: int) -> None:
    if not isinstance(n_admissions, (int, np.integer)) or n_admissions < 1:
        raise user_error(None, f"synth: --n-admissions must be a positive integer (got {n_admissions!r})",
                         "pass --n-admissions 1 or more", cls=SynthError)
