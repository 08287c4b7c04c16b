"""The ``longtail`` label profile of the synthetic MIMIC-III corpus: a Full label space with hundreds of
trainable codes and evidence for each code at a graded difficulty.

Where the default profile names (almost) every assigned code by its description, here each assigned
code's evidence in the discharge summary is one of three grades, recorded per admission and code in
``synth_evidence.csv`` (``HADM_ID, CODE, GRADE, EVIDENCE``; CODE dotted, as the code tables write it):

- ``named``: the code's real description, listed under "Discharge Diagnosis" / "Major Surgical or
  Invasive Procedure" (the description also heads its hospital-course paragraph);
- ``synonym``: only an abbreviation or synonym (a hand-made table for common terms, else systematic
  abbreviations such as disease -> dz, with -> w/), never the description;
- ``implied``: only a medication or device named in the medication lists and the hospital course
  (levothyroxine -> hypothyroidism), never the description. A trigger appears only in notes of
  admissions that have its code, so the inference is sound.

Codes are real ICD-9-CM codes: the Mullenbach Top-50 and the codes of the evidence tables at the head,
then siblings of head codes (look-alike descriptions) and random billable codes, each table with Zipf
weights ``(rank + offset) ** -a``; an admission draws its codes without replacement (Gumbel top-k).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_tools.build import synth as S
from llm4icd_plugins import atomic

__all__ = ["GRADES", "EVIDENCE_FILE", "IMPLIED", "LONGTAIL_DEFAULTS", "synonym_forms", "systematic_form",
           "generate_mimic3_longtail"]

GRADES = ("named", "synonym", "implied")
EVIDENCE_FILE = "synth_evidence.csv"
LONGTAIL_DEFAULTS = {"n_codes": 600, "zipf_exponent": 0.7, "dx_per_admission": (8, 12), "proc_per_admission": (1, 3)}
"""SynthOptions values of the profile where the user gives none: ~12 codes per note, ~250 codes with >= 10
training occurrences at 900 admissions, the most frequent code in ~30% of notes."""
ZIPF_OFFSET = 2.0
PROC_SHARE = 0.18  # share of the vocabulary drawn from the procedure table
# Probabilities of the harder grades where a code has them (else it is named); the systematic abbreviation
# grows from P_SYSTEMATIC at the head of its table to P_SYSTEMATIC + P_SYSTEMATIC_TAIL at the end, so rare
# codes are seldom named.
P_IMPLIED, P_HAND_SYNONYM, P_SYSTEMATIC, P_SYSTEMATIC_TAIL = 0.45, 0.6, 0.3, 0.5
P_TRIGGER_WITH_OTHER_GRADE = 0.5  # a named/synonym code's medication still shows up, as in real notes

# (trigger as written in a note, dose or sentence, ICD-9-CM code it implies). A trigger implies one code;
# a code may have several triggers. Medications get a dose; devices/therapies a course sentence.
IMPLIED: tuple[tuple[str, str, str], ...] = (
    ("Levothyroxine", "75 mcg PO DAILY", "244.9"), ("Metformin", "500 mg PO BID", "250.00"),
    ("Glipizide", "5 mg PO DAILY", "250.00"), ("Insulin Glargine", "20 units SC QHS", "V58.67"),
    ("Warfarin", "5 mg PO QHS", "V58.61"), ("Tiotropium", "1 CAP IH DAILY", "496"),
    ("Tamsulosin", "0.4 mg PO QHS", "600.00"), ("Finasteride", "5 mg PO DAILY", "600.00"),
    ("Allopurinol", "100 mg PO DAILY", "274.9"), ("Colchicine", "0.6 mg PO DAILY", "274.9"),
    ("Donepezil", "10 mg PO QHS", "331.0"), ("Carbidopa-Levodopa (25-100)", "1 TAB PO TID", "332.0"),
    ("Levetiracetam", "500 mg PO BID", "345.90"), ("Sertraline", "50 mg PO DAILY", "311"),
    ("Rifaximin", "550 mg PO BID", "572.2"), ("Nitroglycerin SL", "0.4 mg SL Q5MIN:PRN chest pain", "413.9"),
    ("Sevelamer", "800 mg PO TID W/MEALS", "585.6"), ("Epoetin Alfa", "4000 UNIT SC QWEEK", "285.21"),
    ("Digoxin", "0.125 mg PO DAILY", "427.31"), ("Lithium Carbonate", "300 mg PO BID", "296.80"),
    ("Olanzapine", "10 mg PO QHS", "295.90"), ("Omeprazole", "20 mg PO DAILY", "530.81"),
    ("Methadone", "60 mg PO DAILY", "304.00"), ("Nicotine Patch", "14 mg TD DAILY", "305.1"),
    ("Chlordiazepoxide", "25 mg PO Q6H:PRN CIWA > 10", "291.81"), ("Ferrous Sulfate", "325 mg PO DAILY", "280.9"),
    ("Cyanocobalamin", "1000 mcg IM MONTHLY", "281.0"), ("Alendronate", "70 mg PO QWEEK", "733.00"),
    ("Memantine", "10 mg PO BID", "294.10"), ("Tacrolimus", "2 mg PO Q12H", "V42.0"),
    ("Emtricitabine-Tenofovir", "1 TAB PO DAILY", "042"), ("Methimazole", "10 mg PO DAILY", "242.90"),
    ("Pyridostigmine", "60 mg PO TID", "358.00"), ("Hydroxyurea", "500 mg PO DAILY", "282.60"),
    ("Atorvastatin", "40 mg PO QPM", "272.4"), ("Simvastatin", "20 mg PO QPM", "272.0"),
    ("Amlodipine", "5 mg PO DAILY", "401.9"), ("Furosemide", "40 mg PO DAILY", "428.0"),
    ("Entecavir", "0.5 mg PO DAILY", "070.32"), ("Mesalamine", "1.2 gram PO BID", "556.9"),
    ("Hydroxychloroquine", "200 mg PO BID", "714.0"), ("Montelukast", "10 mg PO DAILY", "493.90"),
    ("Clopidogrel", "75 mg PO DAILY", "V45.82"), ("Aspirin", "81 mg PO DAILY", "V58.66"),
    ("Bupropion", "150 mg PO BID", "311"), ("Quetiapine", "25 mg PO QHS", "298.9"),
    ("CPAP", "Continued home CPAP at night.", "327.23"), ("home O2", "Weaned to his home O2 at 2L NC.", "V46.2"),
    ("PEG tube feeds", "Home PEG tube feeds were resumed.", "V44.1"),
    ("trach care", "Routine trach care was provided by RT.", "V44.0"),
    ("AICD", "AICD was interrogated by EP and functioning appropriately.", "V45.02"),
    ("pacemaker", "Pacemaker was interrogated and functioning normally.", "V45.01"),
    ("colostomy", "Colostomy output was monitored and the ostomy nurse followed.", "V44.3"),
    ("outpatient dialysis", "Resumed outpatient dialysis on a MWF schedule.", "V45.11"),
)

# Abbreviations/synonyms for common head terms that the default table (synth._SYNONYMS) lacks.
_EXTRA_SYNONYMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("hypothyroidism", ("low thyroid",)),
    ("diabetes mellitus", ("DM2", "T2DM", "type 2 diabetes")),
    ("hypopotassemia", ("hypokalemia", "low K")),
    ("hyperpotassemia", ("hyperkalemia", "high K")),
    ("acidosis", ("metabolic acidosis",)),
    ("anemia in chronic kidney disease", ("anemia of CKD",)),
    ("other and unspecified hyperlipidemia", ("HLD", "dyslipidemia")),
    ("pleural effusion", ("effusion",)),
    ("severe sepsis", ("severe sepsis with organ dysfunction",)),
    ("septic shock", ("shock 2/2 sepsis",)),
    ("delirium", ("acute confusional state",)),
    ("food/vomit", ("aspiration PNA",)),
    ("pressure ulcer", ("decubitus ulcer", "bedsore")),
    ("aortocoronary bypass", ("s/p CABG",)),
    ("percutaneous transluminal coronary angioplasty", ("s/p PCI",)),
    ("coronary atherosclerosis", ("CAD",)),
    ("atrial flutter", ("AFL",)),
    ("diverticulosis", ("tics",)),
    ("gout", ("gouty arthritis",)),
)
_ABBREVIATIONS: tuple[tuple[str, str], ...] = (
    (r"\bdiabetes mellitus\b", "DM"), (r"\bhypertension\b", "HTN"), (r"\bhypertensive\b", "HTN"),
    (r"\bcongestive heart failure\b", "CHF"), (r"\bgastrointestinal\b", "GI"), (r"\bpersonal history of\b", "h/o"),
    (r"\bhistory\b", "hx"), (r"\bdisease\b", "dz"), (r"\bdiseases\b", "dz"), (r"\bfracture\b", "fx"),
    (r"\binfection\b", "infxn"), (r"\bsyndrome\b", "synd."), (r"\bwithout\b", "w/o"), (r"\bwith\b", "w/"),
    (r"\bleft\b", "L"), (r"\bright\b", "R"), (r"\bpulmonary\b", "pulm"), (r"\bmalignant neoplasm\b", "ca"),
    (r"\bhemorrhage\b", "bleed"), (r"\bdeficiency\b", "def."), (r"\binsufficiency\b", "insuff."),
    (r"\bobstruction\b", "obstr."), (r"\bpostoperative\b", "post-op"), (r"\bchronic\b", "chr."),
    (r"\bacute\b", "ac."), (r"\band\b", "&"), (r"\bcomplications?\b", "complic."), (r"\bunspecified\b", "unspec."),
    (r"\bwithout mention of\b", "w/o"), (r"\bclosed\b", "cl."), (r"\bopen\b", "op."), (r"\binjury\b", "inj."),
    (r"\bdisorders?\b", "d/o"), (r"\bcongenital\b", "congen."), (r"\banomal(?:y|ies)\b", "anom."),
    (r"\bbenign neoplasm\b", "benign tumor"), (r"\bprocedures?\b", "proc."), (r"\boperations?\b", "op."),
    (r"\bexcision\b", "exc."), (r"\bbiopsy\b", "bx"), (r"\breplacement\b", "repl."), (r"\binsertion\b", "placement"),
    (r"\bremoval\b", "d/c"), (r"\bartery\b", "a."), (r"\bbilateral\b", "b/l"), (r"\blaparoscopic\b", "lap"),
    (r"\bpercutaneous\b", "perc"), (r"\bendoscopic\b", "endo"), (r"\btransplant\b", "tx"),
    (r"\bexamination\b", "exam"), (r"\bdiagnostic\b", "dx"), (r"\bspecified\b", "spec."), (r"\bother\b", "oth."),
)
_ABBREVIATIONS_RE = tuple((re.compile(p, re.IGNORECASE), r) for p, r in _ABBREVIATIONS)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def synonym_forms(description: str) -> tuple[str, ...]:
    """Hand-made synonyms/abbreviations of a description that do not contain its description or
    clinical name (so a synonym-grade mention never names the code)."""
    low = description.lower()
    forms: list[str] = list(S._synonyms(description))
    for phrase, extra in _EXTRA_SYNONYMS:
        if phrase in low:
            forms.extend(extra)
            break
    names = (_norm(description), _norm(S.clinical_name(description)))
    return tuple(f for f in dict.fromkeys(forms) if not any(n in _norm(f) for n in names))


def systematic_form(description: str) -> str | None:
    """The clinical name with clinicians' abbreviations applied (disease -> dz, with -> w/ ...), or
    ``None`` when none applies."""
    name = S.clinical_name(description)
    out = name
    for pattern, repl in _ABBREVIATIONS_RE:
        out = pattern.sub(repl, out)
    return out if _norm(out) != _norm(name) and _norm(description) not in _norm(out) else None


# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------
def _vocabulary(n_codes: int, zipf_exponent: float, rng: np.random.Generator, cs) -> S.Vocabulary:
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
    for raw in (*mimic3_top50_codes(), *S._COMMON_ICD9_EXTRA, *implied_codes):
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
    return S.Vocabulary(system="icd9", codes=tuple(codes), tables=tuple(tables),
                        descriptions=tuple(cs.description(c) for c in codes), weights=np.asarray(weights),
                        rare_counts={})


# --------------------------------------------------------------------------------------------
# Cohort and evidence
# --------------------------------------------------------------------------------------------
def _cohort(n_admissions: int, opts: S.SynthOptions, vocab: S.Vocabulary, rng: np.random.Generator):
    draws = S._Draws(rng)
    counts, subject_ids, hadm_ids = S._subjects(n_admissions, opts, rng, (100, 100_000))
    adms: list[S._Admission] = []
    h = 0
    for sid, k in zip(subject_ids, counts):
        sex, age, day = ("F" if draws.chance(0.45) else "M"), draws.randint(18, 95), draws.randint(0, 365 * 90)
        for _ in range(k):
            los = min(1 + int(rng.exponential(5.0)), 60)
            adms.append(S._Admission(subject_id=sid, hadm_id=hadm_ids[h], system="icd9", admit=day, los=los,
                                     sex=sex, age=age))
            h += 1
            day += los + draws.randint(20, 900)
            age = min(age + draws.randint(0, 2), 99)
    for a in adms:
        a.no_codes = draws.chance(opts.no_code_fraction)
        a.null_code_row = a.no_codes and draws.chance(0.5)
        a.has_note = not draws.chance(opts.no_note_fraction)
        a.long_note = draws.chance(opts.long_note_fraction)
        a.addendum = draws.chance(opts.addendum_fraction)
    dx_idx, proc_idx = vocab.indices("icd9_dx"), vocab.indices("icd9_proc")
    logw = np.log(vocab.weights)
    n = len(adms)
    k_dx = rng.integers(opts.dx_per_admission[0], opts.dx_per_admission[1] + 1, size=n)
    k_proc = rng.integers(opts.proc_per_admission[0], opts.proc_per_admission[1] + 1, size=n)
    dx_rows, proc_rows = S._gumbel_top(logw[dx_idx], k_dx, rng), S._gumbel_top(logw[proc_idx], k_proc, rng)
    pool = [int(i) for i in dx_idx[:80] if not vocab.codes[i].startswith("V") and len(vocab.descriptions[i]) <= 70]
    for a, rd, rp in zip(adms, dx_rows, proc_rows):
        if a.no_codes:
            continue
        a.dx = [int(dx_idx[j]) for j in rd]
        a.proc = [int(proc_idx[j]) for j in rp]
        S._pick_distractors(a, vocab, opts, draws, pool)
    return adms


class _Evidence:
    """Which grades each vocabulary code can take, and the draw of one grade and form per mention."""

    def __init__(self, vocab: S.Vocabulary, cs):
        self.triggers: dict[int, list[tuple[str, str]]] = {}
        index = {c: i for i, c in enumerate(vocab.codes)}
        for trigger, dose, raw in IMPLIED:
            i = index.get(cs.resolve(raw) or "")
            if i is not None:
                self.triggers.setdefault(i, []).append((trigger, dose))
        self.hand = [synonym_forms(d) for d in vocab.descriptions]
        self.systematic = [systematic_form(d) for d in vocab.descriptions]
        self.descriptions = vocab.descriptions
        size = Counter(vocab.tables)
        rank = Counter()
        self.p_systematic = []
        for table in vocab.tables:
            self.p_systematic.append(P_SYSTEMATIC + P_SYSTEMATIC_TAIL * rank[table] / size[table])
            rank[table] += 1

    def draw(self, i: int, d: S._Draws) -> tuple[str, str]:
        if i in self.triggers and d.chance(P_IMPLIED):
            return "implied", d.choice(self.triggers[i])[0]
        if self.hand[i] and d.chance(P_HAND_SYNONYM):
            return "synonym", d.choice(self.hand[i])
        if self.systematic[i] and d.chance(self.p_systematic[i]):
            return "synonym", self.systematic[i]
        return "named", self.descriptions[i]


# --------------------------------------------------------------------------------------------
# Note text
# --------------------------------------------------------------------------------------------
def _neutral_drugs() -> tuple[tuple[str, str], ...]:
    triggers = [t.lower() for t, _, _ in IMPLIED]
    return tuple((n, dose) for n, dose in S._DRUGS
                 if not any(t in n.lower() or n.lower() in t for t in triggers))


_NEUTRAL = _neutral_drugs()
_TRIGGER_SENTENCES = ("Home {x} was continued.", "{X} was restarted prior to discharge.",
                      "Continued on {x} during the admission.", "{X} was held initially and then resumed.")


class _LongtailWriter:
    """Discharge summaries whose code evidence is exactly the drawn grade and form."""

    def __init__(self, evidence: _Evidence, opts: S.SynthOptions, draws: S._Draws):
        self.ev, self.opts, self.d, self.s = evidence, opts, draws, S._Style(False, draws)

    def _filler(self, k: int) -> str:
        d = self.d
        return " ".join(S._fill(d.choice(S._COURSE_SENTENCES), d, drug=d.choice(_NEUTRAL)[0]) for _ in range(k))

    def discharge_summary(self, a: S._Admission, grades: dict[int, tuple[str, str]]) -> tuple[str, str | None]:
        d, s, desc, ev = self.d, self.s, self.ev.descriptions, self.ev
        named_dx = [i for i in a.dx if grades[i][0] == "named"]
        named_proc = [i for i in a.proc if grades[i][0] == "named"]
        synonym_dx = [i for i in a.dx if grades[i][0] == "synonym"]
        meds = [(t, dose) for i in a.dx + a.proc if i in ev.triggers for t, dose in ev.triggers[i]
                if grades[i] == ("implied", t) or (grades[i][0] != "implied" and d.chance(P_TRIGGER_WITH_OTHER_GRADE))]
        meds = list(dict.fromkeys(meds))
        pills = [(t, dose) for t, dose in meds if not dose.endswith(".")]
        devices = [(t, dose) for t, dose in meds if dose.endswith(".")]
        filler_meds = d.sample(_NEUTRAL, d.randint(2, 8))
        cc = d.choice(S._SYMPTOMS)
        neg = [S._spoken(desc[i], d) for i in a.negated]
        pmh = [grades[i][1] for i in synonym_dx if d.chance(0.5)]
        who = "M" if a.sex == "M" else "F"
        out: list[str] = []
        w = out.append
        w(f"Admission Date:  {s.date(a.admit)}              Discharge Date:   {s.date(a.admit + a.los)}\n\n")
        w(f"Date of Birth:  {s.date(a.admit - 365 * a.age - d.randint(0, 364))}             Sex:   {a.sex}\n\n")
        service = d.choice(S._SERVICES)
        allergies = d.choice(("No Known Allergies / Adverse Drug Reactions", "Penicillins", "Codeine"))
        w(f"Service: {service}\n\nAllergies:\n{allergies}\n\n")
        w(f"Attending: {s.first_name()}.\n\nChief Complaint:\n{cc}\n\nMajor Surgical or Invasive Procedure:\n")
        w("\n".join(S._cased(desc[i], d) for i in named_proc) if named_proc else "None")
        w("\n\nHistory of Present Illness:\n")
        w(f"{s.age(a.age)} y/o {who} with {'PMH significant for ' + ', '.join(pmh) if pmh else 'no significant PMH'} "
          f"{d.choice(S._HPI_LINKS)} {cc}. ")
        w(" ".join(S._fill(t, d, drug=d.choice(_NEUTRAL)[0]) for t in d.sample(S._HPI_FILL, d.randint(1, 4))))
        if neg and d.chance(0.5):
            w(" " + S._negation(neg.pop(0), d))
        w(f"\n\nPast Medical History:\n{chr(10).join('- ' + x for x in pmh) if pmh else '- none'}\n\n")
        social = S._SOCIAL[0].format(who=d.choice(S._WHO), tob=d.choice(S._TOB), etoh=d.choice(S._ETOH))
        w(f"Social History:\n{social}\n\n")
        fam = [d.choice(S._FAMILY_FMT).format(rel=d.choice(S._FAMILY_REL), x=S.clinical_name(desc[i]),
                                              age=d.randint(40, 90)) for i in a.family]
        w(f"Family History:\n{' '.join(fam) if fam else 'Non-contributory.'}\n\nPhysical Exam:\n")
        w(S._fill(S._EXAM, d, t=f"{96.5 + 4 * d.random():.1f}", rr=d.randint(12, 28), sat=d.randint(88, 100),
                  gen=d.choice(S._GEN), cv=d.choice(S._CV), lungs=d.choice(S._LUNGS), ext=d.choice(S._EXT)))
        w("\n\nPertinent Results:\n" + "\n".join(S._lab_lines(s, a.admit, d, d.randint(1, 6))))
        w(f"\n\nBrief Hospital Course:\n{s.age(a.age)} y/o {who} admitted with {cc}.\n\n")
        parts = []
        for i in a.dx:
            grade, form = grades[i]
            if grade != "implied":
                head = S.clinical_name(desc[i]) if grade == "named" else form
                parts.append(f"# {head}: {self._filler(d.randint(1, 3))}")
        for i in a.proc:
            name = S._cased(desc[i], d) if grades[i][0] == "named" else grades[i][1]
            parts.append(f"Pt underwent {name} on {s.date(a.admit + d.randint(0, max(a.los - 1, 0)))}.")
        chronic = [d.choice(_TRIGGER_SENTENCES).format(x=t, X=t[:1].upper() + t[1:]) for t, _ in pills]
        chronic += [dose for _, dose in devices]
        if chronic:
            parts.append("# Chronic issues: " + " ".join(d.shuffle(chronic)))
        for name in neg:
            parts.append(f"# r/o {name}: {S._negation(name, d)}")
        w("\n\n".join(d.shuffle(parts)))
        if a.long_note:
            w("\n\nDetailed hospital course by day:\n\n" + "\n\n".join(
                f"HD #{k}: {self._filler(d.randint(6, 14))}" for k in range(1, d.randint(40, 90))))
        listed = d.shuffle(filler_meds + pills)
        w("\n\nMedications on Admission:\n" + "\n".join(f"{k}. {n} {dose}" for k, (n, dose) in enumerate(listed, 1)))
        w("\n\nDischarge Medications:\n" + "\n".join(f"{k}. {n} {dose}" for k, (n, dose) in enumerate(listed, 1)))
        w(f"\n\nDischarge Disposition:\n{d.choice(S._DISPOSITION)}\n\nDischarge Diagnosis:\n")
        w("\n".join(S._cased(desc[i], d) for i in named_dx) if named_dx else cc)
        w("\n\nDischarge Condition:\nMental Status: Clear and coherent.\n\nDischarge Instructions:\n")
        w(S._fill(S._INSTRUCTIONS[1], d) + f"\n\nFollowup Instructions:\nPlease follow up with Dr. {s.doctor()} in "
          f"{d.randint(1, 4)} weeks.\n\n                             {s.first_name()} {s.doctor()} MD\n\n"
          f"Completed by:{s.date(a.admit + a.los)}")
        addendum = None
        if a.addendum:
            addendum = (f"Name:  {s.doctor()},  {s.first_name()}            Unit No:  {d.randint(1000, 99999)}\n\n"
                        f"Addendum:\n{self._filler(d.randint(1, 3))}\n\nCompleted by:{s.date(a.admit + a.los + 1)}")
        return "".join(out), addendum


# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------
def generate_mimic3_longtail(out_dir: str | os.PathLike, n_admissions: int = 900, seed: int = 0, *,
                             options: S.SynthOptions | None = None, overwrite: bool = False, progress: bool = False,
                             **option_overrides) -> dict[str, Path]:
    """Write a long-tail MIMIC-III corpus under ``out_dir/mimic3``; same keys as ``synth.generate_mimic3``
    plus ``evidence`` (``synth_evidence.csv``). Unset options take ``LONGTAIL_DEFAULTS``."""
    if options is None:
        option_overrides = {**LONGTAIL_DEFAULTS, **option_overrides}
    opts = S._options(options, option_overrides)
    S._check_n(n_admissions)
    final = S._check_out(out_dir, S.MIMIC3_DIR, overwrite)
    with atomic.atomic_dir(final) as tmp:
        paths = _generate_into(tmp, final, n_admissions, seed, opts, progress)
    return paths


def _generate_into(tmp: Path, final: Path, n_admissions: int, seed: int, opts: S.SynthOptions,
                   progress: bool) -> dict[str, Path]:
    from llm4icd_plugins.codes import load_code_system

    cs = load_code_system("icd9")
    ss = np.random.SeedSequence([int(seed), 3, 15])  # 15: the long-tail profile, apart from the default streams
    r_vocab, r_cohort, r_text, r_split, r_other = (np.random.default_rng(x) for x in ss.spawn(5))
    vocab = _vocabulary(opts.n_codes, opts.zipf_exponent, r_vocab, cs)
    adms = _cohort(n_admissions, opts, vocab, r_cohort)
    splits = S._patient_splits(adms, opts.split_fractions, r_split)
    evidence = _Evidence(vocab, cs)
    draws, other_draws = S._Draws(r_text), S._Draws(r_other)
    writer = _LongtailWriter(evidence, opts, draws)
    other_writer = S._NoteWriter({"icd9": vocab}, opts, mimic4=False, draws=other_draws)
    ext = ".csv.gz" if opts.gzip else ".csv"
    notes, words, ev_rows = [], [], []
    grade_counts: Counter = Counter()
    row_id = n_addenda = n_other = 0
    for a in tqdm(adms, desc="mimic3 longtail notes", unit="adm", disable=not progress):
        disch = a.admit + a.los
        grades = {i: evidence.draw(i, draws) for i in a.dx + a.proc}
        if a.has_note:
            report, addendum = writer.discharge_summary(a, grades)
            words.append(len(report.split()))
            row_id += 1
            notes.append((row_id, a.subject_id, a.hadm_id, S._Bare(S._date(disch).isoformat()), None, None,
                          "Discharge summary", "Report", None, None, report))
            if addendum is not None:
                row_id += 1
                n_addenda += 1
                notes.append((row_id, a.subject_id, a.hadm_id, S._Bare(S._date(disch + 1).isoformat()), None, None,
                              "Discharge summary", "Addendum", None, None, addendum))
            for i in a.dx + a.proc:
                ev_rows.append((a.hadm_id, vocab.codes[i], *grades[i]))
                grade_counts[grades[i][0]] += 1
        for _ in range(int(other_draws.random() * 2 * opts.other_notes_per_admission + 0.5)):
            cat, desc = other_draws.choice(S._OTHER_CATEGORIES)
            day = a.admit + other_draws.randint(0, a.los)
            hour, minute = other_draws.randint(0, 23), other_draws.randint(0, 59)
            when = S._Bare(f"{S._date(day).isoformat()} {hour:02d}:{minute:02d}:00")
            row_id += 1
            n_other += 1
            notes.append((row_id, a.subject_id, a.hadm_id, S._Bare(S._date(day).isoformat()), when, when, cat, desc,
                          None, None, other_writer.other_note(None, cat, day)))
    notes = [notes[int(i)] for i in r_other.permutation(len(notes))]
    dx_rows, proc_rows = [], []
    for a in adms:
        dx_rows += [(len(dx_rows) + k, a.subject_id, a.hadm_id, seq, code)
                    for k, (seq, code) in enumerate(S._code_rows(a, vocab, "dx"), 1)]
        if a.null_code_row:
            dx_rows.append((len(dx_rows) + 1, a.subject_id, a.hadm_id, None, None))
        proc_rows += [(len(proc_rows) + k, a.subject_id, a.hadm_id, seq, code)
                      for k, (seq, code) in enumerate(S._code_rows(a, vocab, "proc"), 1)]
    paths = {"root": final, "notes": final / f"NOTEEVENTS{ext}", "diagnoses": final / f"DIAGNOSES_ICD{ext}",
             "procedures": final / f"PROCEDURES_ICD{ext}", "splits": final / "mimiciii_clean_splits.feather",
             "splits_csv": final / "mimiciii_clean_splits.csv", "evidence": final / EVIDENCE_FILE,
             "manifest": final / S.MANIFEST}
    S._write_csv(tmp / paths["notes"].name, S._NOTE_COLS_3, notes, mimic3_quoting=True, use_gzip=opts.gzip)
    S._write_csv(tmp / paths["diagnoses"].name, S._CODE_COLS_3, dx_rows, mimic3_quoting=True, use_gzip=opts.gzip)
    S._write_csv(tmp / paths["procedures"].name, S._CODE_COLS_3, proc_rows, mimic3_quoting=True, use_gzip=opts.gzip)
    S._write_csv(tmp / EVIDENCE_FILE, ("HADM_ID", "CODE", "GRADE", "EVIDENCE"), ev_rows, mimic3_quoting=False,
                 use_gzip=False)
    with_note = [a for a in adms if a.has_note]
    S._write_splits(tmp, "mimiciii_clean_splits", [a.hadm_id for a in with_note],
                    [splits[a.subject_id] for a in with_note])
    counts = S._code_counts(adms, {"icd9": vocab})
    summary = S._summary("mimic3", adms, splits, counts, words, n_addenda, n_other, len(dx_rows), len(proc_rows))
    total = sum(grade_counts.values()) or 1
    summary["label_profile"] = "longtail"
    summary["evidence_share"] = {g: round(grade_counts[g] / total, 4) for g in GRADES}
    files = {k: v.name for k, v in paths.items() if k != "root"}
    man = S._manifest("mimic3", seed, n_admissions, opts, {"icd9": vocab}, adms, counts, words, files,
                      {"summary": summary, "label_profile": "longtail"})
    (tmp / S.MANIFEST).write_text(json.dumps(man, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return paths
