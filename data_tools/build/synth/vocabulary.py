"""The sampled code vocabulary of a corpus: real billable codes of one system, ranked, with Zipf weights."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llm4icd_plugins.errors import user_error

from .options import SynthError, SynthOptions

# Frequent real codes put at the head of the MIMIC-IV / ICD-9 vocabularies (after the Mullenbach
# Top-50 for MIMIC-III), so the common codes look like MIMIC's; unknown ones are skipped.
COMMON_ICD10 = (
    "I10", "E78.5", "Z87.891", "K21.9", "F32.9", "F41.9", "E11.9", "N17.9", "I25.10", "Z79.01",
    "Z79.4", "E03.9", "G47.33", "D64.9", "I48.91", "J44.9", "N39.0", "E87.1", "I50.9", "Z95.5",
    "E66.9", "J96.01", "I12.9", "N18.9", "Z86.73", "A41.9", "J18.9", "D69.6", "E87.2", "Y92.9",
    "0BH17EZ", "02HV33Z", "5A1955Z", "5A1945Z", "5A1935Z", "30233N1", "3E0G76Z", "B2111ZZ",
    "4A023N7", "0DJ08ZZ", "02703DZ", "05HY33Z", "0W9930Z", "5A1D70Z", "B211YZZ",
)
COMMON_ICD9_EXTRA = (
    "E849.7", "E878.8", "E885.9", "E888.9", "E934.2", "E879.8", "V10.3", "V12.51", "995.91",
    "428.30", "427.89", "780.39", "305.00", "250.02", "V49.86", "V12.54",
)
_EXTERNAL_CAUSE = {"icd9": ("E",), "icd10": ("V", "W", "X", "Y")}  # left out of the random tail


@dataclass(frozen=True)
class Vocabulary:
    """Sampled real codes of one system, by rank; ``weights`` are Zipf weights (0 for rare codes,
    which get an explicit small count instead)."""

    system: str
    codes: tuple[str, ...]
    tables: tuple[str, ...]
    descriptions: tuple[str, ...]
    weights: np.ndarray
    rare_counts: dict[str, int]
    head_missing: tuple[str, ...] = ()

    def indices(self, table: str) -> np.ndarray:
        return np.array([i for i, t in enumerate(self.tables) if t == table], dtype=np.int64)


def _head_codes(corpus: str, system: str) -> list[str]:
    if system == "icd10":
        return list(COMMON_ICD10)
    if corpus == "mimic3":
        from llm4icd_plugins.codes import mimic3_top50_codes

        return list(mimic3_top50_codes()) + list(COMMON_ICD9_EXTRA)
    return list(COMMON_ICD9_EXTRA)


def _later_encounter(code: str, system: str) -> bool:
    """ICD-10-CM injury codes for subsequent encounters / sequelae: rare in inpatient data, left out."""
    return system == "icd10" and code[0] in "ST" and len(code) == 8 and code[-1] not in "AB"


def build_vocabulary(system: str, n_codes: int, rng: np.random.Generator, *, head: Sequence[str] = (),
                     proc_share: float = 0.2, zipf_exponent: float = 1.0, rare_fraction: float = 0.1,
                     code_system=None) -> Vocabulary:
    """Pick ``n_codes`` billable codes of ``system`` (``head`` first, in order) and give them Zipf weights.

    Tail ranks are assigned to the diagnosis or procedure table so that each table's share of the
    total weight equals ``proc_share`` (the procedure share of codes per admission); drawing
    diagnoses and procedures separately then keeps the global rank order of frequencies, so the head
    codes stay the most frequent. The last ``rare_fraction`` of the vocabulary gets a count of 1-9.
    """
    if code_system is None:
        from llm4icd_plugins.codes import load_code_system

        code_system = load_code_system(system)
    cs = code_system
    dx_table, proc_table = f"{system}_dx", f"{system}_proc"
    ranked: list[tuple[str, str]] = []
    missing: list[str] = []
    seen: set[str] = set()
    for raw in head:
        code = cs.resolve(raw)
        table = cs.table_of(code) if code else None
        if code is None or table not in (dx_table, proc_table) or not cs.description(code):
            missing.append(raw)
        elif code not in seen:
            seen.add(code)
            ranked.append((code, table))
    ranked = ranked[:n_codes]

    n_rare = int(round(rare_fraction * n_codes))
    n_zipf = n_codes - n_rare
    ranks = np.arange(n_codes, dtype=np.float64)
    weights = (ranks + 2.0) ** -zipf_exponent
    weights[n_zipf:] = 0.0

    excluded = _EXTERNAL_CAUSE[system]
    pools: dict[str, list[str]] = {}
    for table in (dx_table, proc_table):
        pool = sorted(c for c in cs.codes(table) if c not in seen and not c.startswith(excluded)
                      and not _later_encounter(c, system) and cs.is_billable(c) and cs.description(c))
        order = rng.permutation(len(pool))
        pools[table] = [pool[i] for i in order]
    taken = {dx_table: 0, proc_table: 0}
    w_proc = sum(weights[i] for i, (_, t) in enumerate(ranked) if t == proc_table)
    w_all = float(weights[: len(ranked)].sum())
    for rank in range(len(ranked), n_codes):
        if rank < n_zipf:
            table = proc_table if w_proc < proc_share * (w_all + weights[rank]) else dx_table
        else:  # rare tail: procedures in proportion to their share of codes
            table = proc_table if rng.random() < proc_share else dx_table
        if taken[table] >= len(pools[table]):
            table = dx_table if table == proc_table else proc_table
        if taken[table] >= len(pools[table]):
            raise user_error(None, f"synth: --n-codes {n_codes} is larger than the {system} code tables allow",
                             "lower --n-codes", cls=SynthError)
        ranked.append((pools[table][taken[table]], table))
        taken[table] += 1
        w_all += weights[rank]
        if table == proc_table:
            w_proc += weights[rank]

    codes = tuple(c for c, _ in ranked)
    rare_counts = {c: int(k) for c, k in zip(codes[n_zipf:], rng.integers(1, 10, size=n_rare))}
    return Vocabulary(system=system, codes=codes, tables=tuple(t for _, t in ranked),
                      descriptions=tuple(cs.description(c) for c in codes), weights=weights,
                      rare_counts=rare_counts, head_missing=tuple(missing))


def corpus_vocabularies(corpus: str, opts: SynthOptions, rng: np.random.Generator) -> dict[str, Vocabulary]:
    """The vocabularies of a corpus by system: MIMIC-III ICD-9; MIMIC-IV ICD-10 (and ICD-9 when
    ``icd9_fraction`` > 0, a third the size)."""
    dx = sum(opts.dx_per_admission) / 2
    proc = sum(opts.proc_per_admission) / 2
    kw = dict(proc_share=proc / (dx + proc), zipf_exponent=opts.zipf_exponent, rare_fraction=opts.rare_fraction)
    if corpus == "mimic3":
        return {"icd9": build_vocabulary("icd9", opts.n_codes, rng, head=_head_codes(corpus, "icd9"), **kw)}
    vocabs = {"icd10": build_vocabulary("icd10", opts.n_codes, rng, head=_head_codes(corpus, "icd10"), **kw)}
    if opts.icd9_fraction > 0:
        vocabs["icd9"] = build_vocabulary("icd9", max(40, opts.n_codes // 3), rng,
                                          head=_head_codes(corpus, "icd9"), **kw)
    return vocabs
