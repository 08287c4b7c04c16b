"""The ``longtail`` label profile of the synthetic MIMIC-III corpus: a Full label space with hundreds of
trainable codes and evidence for each code at a graded difficulty.

Where the default profile names (almost) every assigned code by its description, here each assigned
code's evidence in the discharge summary is one of three grades (``longtail_evidence``), recorded per
admission and code in ``synth_evidence.csv`` (``HADM_ID, CODE, GRADE, EVIDENCE``; CODE dotted, as the code
tables write it):

- ``named``: the code's real description, listed under "Discharge Diagnosis" / "Major Surgical or
  Invasive Procedure" (the description also heads its hospital-course paragraph);
- ``synonym``: only an abbreviation or synonym, never the description;
- ``implied``: only a medication or device named in the medication lists and the hospital course,
  never the description. A trigger appears only in notes of admissions that have its code, so the
  inference is sound.

Codes are real ICD-9-CM codes: the Mullenbach Top-50 and the codes of the evidence tables at the head,
then siblings of head codes (look-alike descriptions) and random billable codes, each table with Zipf
weights ``(rank + offset) ** -a``; an admission draws its codes without replacement (Gumbel top-k).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .cohort import Admission, admissions, gumbel_top, patient_splits, pick_distractors
from .corpus import discharge_row, other_note_rows, write_corpus
from .draws import Draws
from .files import Corpus, mimic3_paths, write_csv, write_manifest, write_mimic3_tables
from .longtail_evidence import GRADES, IMPLIED, P_TRIGGER_WITH_OTHER_GRADE, Evidence
from .notes import SIGNATURE_INDENT, NoteWriter, Style, lab_lines
from .options import MANIFEST, MIMIC3_DIR, SynthOptions, resolve_options
from .phrases import (
    COURSE_SENTENCES,
    DISPOSITION,
    DRUGS,
    ETOH,
    HPI_FILL,
    HPI_LINKS,
    INSTRUCTIONS,
    SERVICES,
    SOCIAL,
    SYMPTOMS,
    TOB,
    WHO,
    admission_exam,
    cased,
    clinical_name,
    family_history,
    fill,
    medication_list,
    negation,
    spoken,
)
from .vocabulary import COMMON_ICD9_EXTRA, Vocabulary

EVIDENCE_FILE = "synth_evidence.csv"
LONGTAIL_DEFAULTS = {"n_codes": 600, "zipf_exponent": 0.7, "dx_per_admission": (8, 12), "proc_per_admission": (1, 3)}
"""SynthOptions values of the profile where the user gives none: ~12 codes per note, ~250 codes with >= 10
training occurrences at 900 admissions, the most frequent code in ~30% of notes."""
ZIPF_OFFSET = 2.0
PROC_SHARE = 0.18  # share of the vocabulary drawn from the procedure table
_ALLERGIES = ("No Known Allergies / Adverse Drug Reactions", "Penicillins", "Codeine")
_TRIGGER_SENTENCES = ("Home {x} was continued.", "{X} was restarted prior to discharge.",
                      "Continued on {x} during the admission.", "{X} was held initially and then resumed.")


def _vocabulary(n_codes: int, zipf_exponent: float, rng: np.random.Generator, cs) -> Vocabulary:
    """Head (Top-50, common extras, evidence-table codes) then a shuffled tail of siblings of head codes and
    random billable codes; Zipf weights by rank within each table."""
    from llm4icd_plugins.codes import mimic3_top50_codes

    dx_t, proc_t = "icd9_dx", "icd9_proc"
    implied_codes = [c for _, _, c in IMPLIED]

    def usable(code: str | None) -> bool:
        return bool(code) and cs.table_of(code) in (dx_t, proc_t) and bool(cs.is_billable(code)) \
            and bool(cs.description(code)) and not code.startswith("E") \
            and not cs.description(code).lower().startswith("family history")

    head: list[str] = []
    for raw in (*mimic3_top50_codes(), *COMMON_ICD9_EXTRA, *implied_codes):
        code = cs.resolve(raw)
        if usable(code) and code not in head:
            head.append(code)
    n_proc = int(round(PROC_SHARE * n_codes))
    by_table = {t: [c for c in head if cs.table_of(c) == t] for t in (dx_t, proc_t)}
    want = {dx_t: n_codes - n_proc, proc_t: n_proc}
    for table in (dx_t, proc_t):
        taken = set(head)
        siblings = sorted({s for c in by_table[table] for s in cs.siblings(c) if usable(s) and s not in taken})
        pool = sorted(c for c in cs.codes(table) if usable(c) and c not in taken and c not in siblings)
        siblings = [siblings[i] for i in rng.permutation(len(siblings))]
        pool = [pool[i] for i in rng.permutation(len(pool))]
        room = max(want[table] - len(by_table[table]), 0)
        tail = siblings[: room // 2]
        tail += pool[: room - len(tail)]
        by_table[table] = by_table[table][: want[table]] + [tail[i] for i in rng.permutation(len(tail))]
    codes, tables, weights = [], [], []
    for table in (dx_t, proc_t):
        for rank, code in enumerate(by_table[table]):
            codes.append(code)
            tables.append(table)
            weights.append((rank + ZIPF_OFFSET) ** -zipf_exponent)
    return Vocabulary(system="icd9", codes=tuple(codes), tables=tuple(tables),
                      descriptions=tuple(cs.description(c) for c in codes), weights=np.asarray(weights),
                      rare_counts={})


def _cohort(n_admissions: int, opts: SynthOptions, vocab: Vocabulary, rng: np.random.Generator) -> list[Admission]:
    """Admissions as in the default profile (no stray empty code rows), codes drawn by Zipf weight alone."""
    draws = Draws(rng)
    adms = admissions("mimic3", n_admissions, opts, rng, draws, stray_empty_code_rows=False)
    dx_idx, proc_idx = vocab.indices("icd9_dx"), vocab.indices("icd9_proc")
    logw = np.log(vocab.weights)
    n = len(adms)
    k_dx = rng.integers(opts.dx_per_admission[0], opts.dx_per_admission[1] + 1, size=n)
    k_proc = rng.integers(opts.proc_per_admission[0], opts.proc_per_admission[1] + 1, size=n)
    dx_rows, proc_rows = gumbel_top(logw[dx_idx], k_dx, rng), gumbel_top(logw[proc_idx], k_proc, rng)
    pool = [int(i) for i in dx_idx[:80] if not vocab.codes[i].startswith("V") and len(vocab.descriptions[i]) <= 70]
    for a, rd, rp in zip(adms, dx_rows, proc_rows):
        if a.no_codes:
            continue
        a.dx = [int(dx_idx[j]) for j in rd]
        a.proc = [int(proc_idx[j]) for j in rp]
        pick_distractors(a, opts, draws, pool)
    return adms


_NEUTRAL = tuple((name, dose) for name, dose in DRUGS
                 if not any(t.lower() in name.lower() or name.lower() in t.lower() for t, _, _ in IMPLIED))
"""Medications that imply no code of the evidence table (filler)."""


class _LongtailWriter:
    """Discharge summaries whose code evidence is exactly the drawn grade and form."""

    def __init__(self, evidence: Evidence, draws: Draws):
        self.evidence, self.draws, self.style = evidence, draws, Style(False, draws)

    def _filler(self, k: int) -> str:
        draws = self.draws
        return " ".join(fill(draws.choice(COURSE_SENTENCES), draws, drug=draws.choice(_NEUTRAL)[0]) for _ in range(k))

    def _medications(self, a: Admission, grades: dict[int, tuple[str, str]]) -> list[tuple[str, str]]:
        """The triggers written: every implied-grade one, and half of those of codes graded otherwise."""
        draws, triggers = self.draws, self.evidence.triggers
        meds = [(t, dose) for i in a.dx + a.proc if i in triggers for t, dose in triggers[i]
                if grades[i] == ("implied", t)
                or (grades[i][0] != "implied" and draws.chance(P_TRIGGER_WITH_OTHER_GRADE))]
        return list(dict.fromkeys(meds))

    def discharge_summary(self, a: Admission, grades: dict[int, tuple[str, str]]) -> tuple[str, str | None]:
        draws, style, desc = self.draws, self.style, self.evidence.descriptions
        named_dx = [i for i in a.dx if grades[i][0] == "named"]
        named_proc = [i for i in a.proc if grades[i][0] == "named"]
        synonym_dx = [i for i in a.dx if grades[i][0] == "synonym"]
        meds = self._medications(a, grades)
        pills = [(t, dose) for t, dose in meds if not dose.endswith(".")]
        devices = [(t, dose) for t, dose in meds if dose.endswith(".")]
        filler_meds = draws.sample(_NEUTRAL, draws.randint(2, 8))
        complaint = draws.choice(SYMPTOMS)
        negated = [spoken(desc[i], draws) for i in a.negated]
        history = [grades[i][1] for i in synonym_dx if draws.chance(0.5)]
        sex = "M" if a.sex == "M" else "F"
        discharge = a.admit + a.los
        born = style.date(a.admit - 365 * a.age - draws.randint(0, 364))
        out = [f"Admission Date:  {style.date(a.admit)}              Discharge Date:   {style.date(discharge)}\n\n"
               f"Date of Birth:  {born}             Sex:   {a.sex}\n\n"]
        service, allergies = draws.choice(SERVICES), draws.choice(_ALLERGIES)
        out.append(f"Service: {service}\n\nAllergies:\n{allergies}\n\nAttending: {style.first_name()}.\n\n"
                   f"Chief Complaint:\n{complaint}\n\nMajor Surgical or Invasive Procedure:\n")
        out.append("\n".join(cased(desc[i], draws) for i in named_proc) if named_proc else "None")
        intro = "PMH significant for " + ", ".join(history) if history else "no significant PMH"
        out.append(f"\n\nHistory of Present Illness:\n{style.age(a.age)} y/o {sex} with {intro} "
                   f"{draws.choice(HPI_LINKS)} {complaint}. ")
        fillers = draws.sample(HPI_FILL, draws.randint(1, 4))
        out.append(" ".join(fill(t, draws, drug=draws.choice(_NEUTRAL)[0]) for t in fillers))
        if negated and draws.chance(0.5):
            out.append(" " + negation(negated.pop(0), draws))
        out.append(f"\n\nPast Medical History:\n{chr(10).join('- ' + x for x in history) if history else '- none'}\n\n")
        social = SOCIAL[0].format(who=draws.choice(WHO), tob=draws.choice(TOB), etoh=draws.choice(ETOH))
        relatives = family_history([desc[i] for i in a.family], draws)
        out.append(f"Social History:\n{social}\n\nFamily History:\n{' '.join(relatives) or 'Non-contributory.'}\n\n"
                   f"Physical Exam:\n{admission_exam(draws)}")
        out.append("\n\nPertinent Results:\n" + "\n".join(lab_lines(style, a.admit, draws, draws.randint(1, 6))))
        out.append(f"\n\nBrief Hospital Course:\n{style.age(a.age)} y/o {sex} admitted with {complaint}.\n\n")
        out.append(self._course(a, grades, pills, devices, negated))
        listed = draws.shuffle(filler_meds + pills)
        out.append("\n\nMedications on Admission:\n" + medication_list(listed))
        out.append("\n\nDischarge Medications:\n" + medication_list(listed))
        out.append(f"\n\nDischarge Disposition:\n{draws.choice(DISPOSITION)}\n\nDischarge Diagnosis:\n")
        out.append("\n".join(cased(desc[i], draws) for i in named_dx) if named_dx else complaint)
        out.append("\n\nDischarge Condition:\nMental Status: Clear and coherent.\n\nDischarge Instructions:\n")
        out.append(fill(INSTRUCTIONS[1], draws) + "\n\nFollowup Instructions:\nPlease follow up with Dr. "
                   f"{style.doctor()} in {draws.randint(1, 4)} weeks.\n\n"
                   f"{SIGNATURE_INDENT}{style.first_name()} {style.doctor()} MD\n\n"
                   f"Completed by:{style.date(discharge)}")
        addendum = None
        if a.addendum:
            name = f"{style.doctor()},  {style.first_name()}"
            addendum = (f"Name:  {name}            Unit No:  {draws.randint(1000, 99999)}\n\n"
                        f"Addendum:\n{self._filler(draws.randint(1, 3))}\n\nCompleted by:{style.date(discharge + 1)}")
        return "".join(out), addendum

    def _course(self, a: Admission, grades: dict[int, tuple[str, str]], pills: list, devices: list,
                negated: list[str]) -> str:
        """Paragraphs of the graded diagnoses, procedures, chronic medications/devices and ruled-out
        conditions, shuffled; then the day-by-day course of a long note."""
        draws, desc = self.draws, self.evidence.descriptions
        parts = []
        for i in a.dx:
            grade, form = grades[i]
            if grade != "implied":
                head = clinical_name(desc[i]) if grade == "named" else form
                parts.append(f"# {head}: {self._filler(draws.randint(1, 3))}")
        for i in a.proc:
            name = cased(desc[i], draws) if grades[i][0] == "named" else grades[i][1]
            parts.append(f"Pt underwent {name} on {self.style.date(a.admit + draws.randint(0, max(a.los - 1, 0)))}.")
        chronic = [draws.choice(_TRIGGER_SENTENCES).format(x=t, X=t[:1].upper() + t[1:]) for t, _ in pills]
        chronic += [dose for _, dose in devices]
        if chronic:
            parts.append("# Chronic issues: " + " ".join(draws.shuffle(chronic)))
        for name in negated:
            parts.append(f"# r/o {name}: {negation(name, draws)}")
        text = "\n\n".join(draws.shuffle(parts))
        if a.long_note:
            text += "\n\nDetailed hospital course by day:\n\n" + "\n\n".join(
                f"HD #{k}: {self._filler(draws.randint(6, 14))}" for k in range(1, draws.randint(40, 90)))
        return text


def generate_mimic3_longtail(out_dir: str | os.PathLike, n_admissions: int = 900, seed: int = 0, *,
                             options: SynthOptions | None = None, overwrite: bool = False, progress: bool = False,
                             **option_overrides) -> dict[str, Path]:
    """Write a long-tail MIMIC-III corpus under ``out_dir/mimic3``; same keys as ``generate_mimic3``
    plus ``evidence`` (``synth_evidence.csv``). Unset options take ``LONGTAIL_DEFAULTS``."""
    if options is None:
        option_overrides = {**LONGTAIL_DEFAULTS, **option_overrides}
    opts = resolve_options(options, option_overrides)
    return write_corpus(_generate_into, out_dir, MIMIC3_DIR, n_admissions, seed, opts, overwrite, progress)


def _generate_into(tmp: Path, final: Path, n_admissions: int, seed: int, opts: SynthOptions,
                   progress: bool) -> dict[str, Path]:
    from llm4icd_plugins.codes import load_code_system

    cs = load_code_system("icd9")
    ss = np.random.SeedSequence([int(seed), 3, 15])  # 15: the long-tail profile, apart from the default streams
    r_vocab, r_cohort, r_text, r_split, r_other = (np.random.default_rng(x) for x in ss.spawn(5))
    vocab = _vocabulary(opts.n_codes, opts.zipf_exponent, r_vocab, cs)
    adms = _cohort(n_admissions, opts, vocab, r_cohort)
    splits = patient_splits(adms, opts.split_fractions, r_split)
    evidence = Evidence(vocab, cs)
    draws, other_draws = Draws(r_text), Draws(r_other)
    writer = _LongtailWriter(evidence, draws)
    other_writer = NoteWriter({"icd9": vocab}, opts, mimic4=False, draws=other_draws)
    c = Corpus("mimic3", seed, n_admissions, opts, {"icd9": vocab}, adms, splits, words=[])
    notes, evidence_rows = [], []
    grade_counts: Counter = Counter()
    for a in tqdm(adms, desc="mimic3 longtail notes", unit="adm", disable=not progress):
        discharge = a.admit + a.los
        grades = {i: evidence.draw(i, draws) for i in a.dx + a.proc}
        if a.has_note:
            report, addendum = writer.discharge_summary(a, grades)
            c.words.append(len(report.split()))
            notes.append(discharge_row(len(notes) + 1, a, discharge, "Report", report))
            if addendum is not None:
                notes.append(discharge_row(len(notes) + 1, a, discharge + 1, "Addendum", addendum))
                c.n_addenda += 1
            for i in a.dx + a.proc:
                evidence_rows.append((a.hadm_id, vocab.codes[i], *grades[i]))
                grade_counts[grades[i][0]] += 1
        other = other_note_rows(a, len(notes) + 1, opts, other_draws, other_writer, plain=True)
        notes += other
        c.n_other += len(other)
    paths = {**mimic3_paths(final, opts.gzip), "evidence": final / EVIDENCE_FILE, "manifest": final / MANIFEST}
    c.n_dx_rows, c.n_proc_rows = write_mimic3_tables(tmp, paths, notes, adms, vocab, splits, r_other, opts.gzip)
    write_csv(tmp / EVIDENCE_FILE, ("HADM_ID", "CODE", "GRADE", "EVIDENCE"), evidence_rows, mimic3_quoting=False,
              use_gzip=False)
    total = sum(grade_counts.values()) or 1
    share = {g: round(grade_counts[g] / total, 4) for g in GRADES}
    write_manifest(tmp, paths, c, summary_extra={"label_profile": "longtail", "evidence_share": share},
                   manifest_extra={"label_profile": "longtail"})
    return paths
