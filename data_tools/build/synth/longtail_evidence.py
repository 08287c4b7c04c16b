"""Evidence of the ``longtail`` label profile: how a code's presence shows in a note, at three grades.

- ``named``: the code's real description;
- ``synonym``: only an abbreviation or synonym (a hand-made table for common terms, else systematic
  abbreviations such as disease -> dz, with -> w/), never the description;
- ``implied``: only a medication or device (levothyroxine -> hypothyroidism), never the description.
"""

from __future__ import annotations

import re
from collections import Counter

from .draws import Draws
from .phrases import clinical_name, synonyms
from .vocabulary import Vocabulary

GRADES = ("named", "synonym", "implied")
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

# Abbreviations/synonyms for common head terms that the default table (phrases._SYNONYMS) lacks.
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
    forms: list[str] = list(synonyms(description))
    for phrase, extra in _EXTRA_SYNONYMS:
        if phrase in low:
            forms.extend(extra)
            break
    names = (_norm(description), _norm(clinical_name(description)))
    return tuple(f for f in dict.fromkeys(forms) if not any(n in _norm(f) for n in names))


def systematic_form(description: str) -> str | None:
    """The clinical name with clinicians' abbreviations applied (disease -> dz, with -> w/ ...), or
    ``None`` when none applies."""
    name = clinical_name(description)
    out = name
    for pattern, repl in _ABBREVIATIONS_RE:
        out = pattern.sub(repl, out)
    return out if _norm(out) != _norm(name) and _norm(description) not in _norm(out) else None


class Evidence:
    """Which grades each vocabulary code can take, and the draw of one grade and form per mention."""

    def __init__(self, vocab: Vocabulary, cs):
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

    def draw(self, i: int, d: Draws) -> tuple[str, str]:
        """(grade, form) of vocabulary code ``i`` in one note: the trigger, synonym or description written."""
        if i in self.triggers and d.chance(P_IMPLIED):
            return "implied", d.choice(self.triggers[i])[0]
        if self.hand[i] and d.chance(P_HAND_SYNONYM):
            return "synonym", d.choice(self.hand[i])
        if self.systematic[i] and d.chance(self.p_systematic[i]):
            return "synonym", self.systematic[i]
        return "named", self.descriptions[i]
