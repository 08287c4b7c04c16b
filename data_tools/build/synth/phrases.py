"""The words of the notes: how a code is named (description, clinical name, abbreviation), and the
phrase tables and templates the note writers draw their filler from."""

from __future__ import annotations

import re
import string

from .draws import Draws

# (phrase in a lower-cased description, spoken forms). First match wins, so longer phrases first.
_SYNONYMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("coronary atherosclerosis of native coronary artery", ("CAD", "coronary artery disease")),
    ("atherosclerotic heart disease of native coronary artery", ("CAD", "coronary artery disease")),
    ("congestive heart failure", ("CHF", "heart failure")),
    ("atrial fibrillation", ("afib", "AF", "Afib")),
    ("chronic obstructive pulmonary disease", ("COPD",)),
    ("chronic airway obstruction", ("COPD",)),
    ("obstructive chronic bronchitis", ("COPD",)),
    ("acute respiratory failure", ("acute resp failure", "hypoxic respiratory failure")),
    ("acute kidney failure", ("ARF", "AKI", "acute renal failure")),
    ("acute posthemorrhagic anemia", ("acute blood loss anemia", "ABLA")),
    ("chronic kidney disease", ("CKD",)),
    ("end stage renal disease", ("ESRD",)),
    ("urinary tract infection", ("UTI",)),
    ("hyperlipidemia", ("HLD", "hyperlipidemia")),
    ("pure hypercholesterolemia", ("hypercholesterolemia", "high cholesterol")),
    ("esophageal reflux", ("GERD", "reflux")),
    ("gastro-esophageal reflux disease", ("GERD",)),
    ("essential (primary) hypertension", ("HTN", "hypertension")),
    ("hypertension", ("HTN",)),
    ("pneumonia", ("PNA",)),
    ("subendocardial infarction", ("NSTEMI",)),
    ("myocardial infarction", ("MI",)),
    ("obstructive sleep apnea", ("OSA",)),
    ("pulmonary embolism", ("PE",)),
    ("gastrointestinal hemorrhage", ("GI bleed", "GIB")),
    ("hypothyroidism", ("hypothyroid", "hypothyroidism")),
    ("major depressive disorder", ("MDD", "depression")),
    ("depressive disorder", ("depression",)),
    ("tobacco use disorder", ("tobacco abuse", "active smoker")),
    ("nicotine dependence", ("tobacco use", "smoker")),
    ("hyposmolality and/or hyponatremia", ("hyponatremia",)),
    ("thrombocytopenia", ("thrombocytopenia", "low platelets")),
    ("cerebral infarction", ("CVA", "stroke")),
    ("transient cerebral ischemia", ("TIA",)),
    ("hypertrophy (benign) of prostate", ("BPH",)),
    ("benign prostatic hyperplasia", ("BPH",)),
    ("osteoarthrosis", ("OA", "osteoarthritis")),
    ("rheumatoid arthritis", ("RA",)),
    ("human immunodeficiency virus", ("HIV",)),
    ("septicemia", ("sepsis",)),
    ("alcohol abuse", ("EtOH abuse",)),
    ("alcohol dependence", ("EtOH dependence",)),
    ("long-term (current) use of anticoagulants", ("on anticoagulation", "on coumadin")),
    ("long term (current) use of anticoagulants", ("on anticoagulation", "on coumadin")),
    ("long-term (current) use of insulin", ("insulin dependent", "on insulin")),
    ("long term (current) use of insulin", ("insulin dependent", "on insulin")),
    ("diabetes mellitus", ("DM", "diabetes")),
    ("venous catheterization, not elsewhere classified", ("central line placement", "CVL placement")),
    ("insertion of endotracheal tube", ("intubation", "ETT placement")),
    ("continuous invasive mechanical ventilation", ("mechanical ventilation",)),
    ("enteral infusion of concentrated nutritional substances", ("tube feeds", "enteral feeding")),
    ("transfusion of packed cells", ("PRBC transfusion", "transfused pRBCs")),
    ("extracorporeal circulation auxiliary to open heart surgery", ("cardiopulmonary bypass", "CPB")),
    ("coronary arteriography using two catheters", ("cardiac cath", "coronary angiography")),
    ("left heart cardiac catheterization", ("left heart cath", "LHC")),
    ("hemodialysis", ("HD", "hemodialysis")),
    ("single internal mammary-coronary artery bypass", ("CABG", "LIMA-LAD")),
    ("insertion of drug-eluting coronary artery stent", ("DES placement", "PCI with DES")),
    ("arterial catheterization", ("arterial line", "A-line")),
    ("percutaneous [endoscopic] gastrostomy", ("PEG", "PEG placement")),
    ("respiratory ventilation", ("mechanical ventilation", "intubated on the vent")),
    ("transfusion of nonautologous red blood cells", ("PRBC transfusion", "transfused pRBCs")),
    ("insertion of endotracheal airway", ("intubation", "ETT placement")),
    ("insertion of infusion device into superior vena cava", ("central line placement", "CVL placement")),
)
_DROP = re.compile(r",\s*(?:[a-z]+\s+)?(?:unspecified|not specified)(?:\s+[a-z]+)?(?=,|$)"
                   r"|,?\s*\b(?:not elsewhere classified|NEC|NOS|not otherwise specified)\b"
                   r"|^\s*(?:other and unspecified|unspecified|other specified)\s+", re.IGNORECASE)
_SPACES = re.compile(r"\s{2,}")
_SPACE_COMMA = re.compile(r"\s+,")


def clinical_name(description: str) -> str:
    """A clinician's shorter name for a code description: drops "unspecified"/"NEC" qualifiers.

    "Unspecified essential hypertension" -> "essential hypertension";
    "Congestive heart failure, unspecified" -> "congestive heart failure".
    """
    text = _SPACES.sub(" ", _SPACE_COMMA.sub(",", _DROP.sub(" ", description))).strip(" ,;")
    if not text:
        text = description.strip()
    if len(text) > 1 and not text[:2].isupper():
        text = text[0].lower() + text[1:]
    return text


def synonyms(description: str) -> tuple[str, ...]:
    """Abbreviations/synonyms of the first ``_SYNONYMS`` phrase in ``description`` (empty if none)."""
    low = description.lower()
    for phrase, forms in _SYNONYMS:
        if phrase in low:
            return forms
    return ()


def mention_forms(description: str) -> tuple[str, ...]:
    """Every way the generated notes may name a code: its description, its clinical name, and the
    abbreviations/synonyms of the first matching phrase (for checks and string-matching baselines)."""
    return tuple(dict.fromkeys((description, clinical_name(description), *synonyms(description))))


def spoken(description: str, draws: Draws) -> str:
    """How a note refers to a code in running text: an abbreviation/synonym if one fits, else its
    clinical name."""
    forms = synonyms(description)
    if forms and draws.chance(0.75):
        return draws.choice(forms)
    return clinical_name(description)


def cased(text: str, draws: Draws) -> str:
    """``text`` as written, lower-cased or capitalised (55 / 30 / 15 %)."""
    u = draws.random()
    if u < 0.55:
        return text
    if u < 0.85:
        return text.lower()
    return text[:1].upper() + text[1:]


SYMPTOMS = (
    "shortness of breath", "chest pain", "fever", "abdominal pain", "altered mental status", "weakness",
    "nausea and vomiting", "hematemesis", "syncope", "cough", "dyspnea on exertion", "lower extremity swelling",
    "headache", "confusion", "hypotension", "melena", "bright red blood per rectum", "fall", "dizziness",
    "palpitations", "chills", "dysuria", "back pain", "diarrhea",
)
DRUGS = (
    ("Aspirin", "81 mg PO DAILY"), ("Metoprolol Tartrate", "25 mg PO BID"), ("Lisinopril", "10 mg PO DAILY"),
    ("Atorvastatin", "40 mg PO QPM"), ("Furosemide", "40 mg PO DAILY"), ("Warfarin", "5 mg PO QHS"),
    ("Insulin Glargine", "20 units SC QHS"), ("Pantoprazole", "40 mg PO Q24H"), ("Levothyroxine", "75 mcg PO DAILY"),
    ("Amlodipine", "5 mg PO DAILY"), ("Heparin", "5000 UNIT SC TID"), ("Acetaminophen", "650 mg PO Q6H:PRN pain"),
    ("Docusate Sodium", "100 mg PO BID"), ("Senna", "8.6 mg PO BID:PRN constipation"),
    ("Vancomycin", "1000 mg IV Q12H"),
    ("Piperacillin-Tazobactam", "4.5 g IV Q8H"), ("Ceftriaxone", "1 gm IV Q24H"), ("Azithromycin", "250 mg PO DAILY"),
    ("Prednisone", "40 mg PO DAILY"), ("Albuterol Inhaler", "2 PUFF IH Q6H:PRN wheeze"),
    ("Tiotropium", "1 CAP IH DAILY"),
    ("Sertraline", "50 mg PO DAILY"), ("Gabapentin", "300 mg PO TID"), ("Oxycodone", "5 mg PO Q4H:PRN pain"),
    ("Tamsulosin", "0.4 mg PO QHS"), ("Clopidogrel", "75 mg PO DAILY"), ("Apixaban", "5 mg PO BID"),
    ("Metformin", "500 mg PO BID"), ("Simvastatin", "20 mg PO QPM"), ("Lactulose", "30 mL PO TID"),
    ("Rifaximin", "550 mg PO BID"), ("Ondansetron", "4 mg IV Q8H:PRN nausea"), ("Magnesium Oxide", "400 mg PO DAILY"),
    ("Potassium Chloride", "20 mEq PO DAILY"), ("Folic Acid", "1 mg PO DAILY"), ("Thiamine", "100 mg PO DAILY"),
)
COURSE_SENTENCES = (
    "Patient was started on {drug} with improvement.", "Home {drug} was continued.", "{drug} was held on admission.",
    "Monitored on telemetry without events.", "Electrolytes were repleted as needed.",
    "Pt was seen by the consult service who agreed with the plan.", "Repeat labs were stable.",
    "Daily weights were followed and I/Os monitored.", "PT evaluated the patient and recommended rehab.",
    "Symptoms improved over the course of the admission.", "Cultures were sent and remained no growth to date.",
    "Pain was controlled with {drug}.", "{drug} was uptitrated as tolerated by BP.",
    "Diet was advanced without difficulty.", "Renal function was trended and remained at baseline.",
    "She was transferred to the floor in stable condition.", "He remained afebrile and hemodynamically stable.",
    "Social work was involved for discharge planning.", "Case discussed with the family at bedside.",
    "Goals of care were addressed with the health care proxy.", "Imaging was reviewed with radiology.",
    "Antibiotics were narrowed based on sensitivities.", "Blood pressure remained well controlled.",
    "Transitioned to PO {drug} prior to discharge.", "Nutrition was consulted and recommendations followed.",
)
EXAM = (
    "VS: T {t} BP {sbp}/{dbp} HR {hr} RR {rr} O2sat {sat}% RA\n"
    "GEN: {gen}\nHEENT: NCAT, PERRL, EOMI, MMM, oropharynx clear\nNECK: supple, JVP not elevated\n"
    "CV: {cv}\nLUNGS: {lungs}\nABD: soft, NT/ND, normoactive bowel sounds\n"
    "EXT: {ext}\nNEURO: A&Ox3, CN II-XII intact, moving all extremities\nSKIN: no rashes or lesions"
)
GEN = ("NAD, comfortable", "elderly, in mild distress", "well appearing, alert", "ill appearing, diaphoretic")
CV = ("RRR, normal S1/S2, no m/r/g", "irregularly irregular, no murmurs", "RRR, II/VI SEM at RUSB")
LUNGS = ("CTAB, no wheezes, rales, or rhonchi", "bibasilar crackles", "diffuse expiratory wheezes",
          "decreased breath sounds at the right base")
EXT = ("WWP, no c/c/e", "2+ pitting edema bilaterally to the knees", "trace edema, 2+ DP pulses")
SOCIAL = (
    "Lives with {who}. {tob}. {etoh}. No illicit drug use.",
    "Retired {job}, lives {where}. {tob}. {etoh}.",
)
WHO = ("his wife", "her husband", "daughter", "alone", "son and daughter-in-law")
JOBS = ("teacher", "electrician", "nurse", "accountant", "truck driver", "engineer", "cook")
WHERE = ("alone in an apartment", "with family", "in an assisted living facility")
TOB = ("Former smoker, quit 20 years ago", "Denies tobacco", "Smokes 1 ppd", "Remote 30 pack-year history")
ETOH = ("Occasional EtOH", "Denies EtOH", "Drinks 2-3 beers per day", "Social EtOH")
FAMILY_REL = ("Mother", "Father", "Brother", "Sister", "Maternal grandmother", "Paternal uncle")
FAMILY_FMT = ("{rel} with {x}.", "{rel} died of {x} at age {age}.", "{rel} had {x}.")
SURGICAL_HISTORY = ("s/p appendectomy", "s/p cholecystectomy", "remote tonsillectomy", "s/p right knee arthroscopy",
                     "cataract surgery OU", "s/p hernia repair", "s/p C-section x2", "s/p TURP")
NEG_FMT = (
    "No evidence of {x}.", "Denies {x}.", "Ruled out for {x}.", "Negative for {x}.",
    "{X} was considered but ruled out.", "Workup for {x} was negative.", "No signs of {x} on imaging.",
    "There was initial concern for {x}, which was ruled out.",
)
HPI_LINKS = ("who presents with", "who presented to the ED with", "transferred from an outside hospital with",
              "admitted with")
HPI_FILL = (
    "Symptoms began {n} days prior to admission and progressively worsened.",
    "In the ED, initial vitals were notable for HR {hr} and BP {sbp}/{dbp}.",
    "She was given {drug} in the ED and admitted to medicine.",
    "He reports poor PO intake over the past week.",
    "Per family, the patient has been more fatigued recently.",
    "ROS otherwise negative except as noted above.",
    "Labs in the ED were notable for a creatinine of {cr} and lactate of {lac}.",
)
INSTRUCTIONS = (
    "You were admitted to the hospital for {x}. While you were here, you were treated with {drug}. "
    "Please take all of your medications as prescribed and keep your follow-up appointments.",
    "Please call your doctor or return to the emergency department if you experience chest pain, shortness "
    "of breath, fever greater than 101, or any other concerning symptoms.",
    "Weigh yourself every morning and call your doctor if your weight goes up more than 3 lbs.",
    "Please do not drive while taking pain medications.",
)
DISPOSITION = ("Home", "Home With Service", "Extended Care", "Skilled Nursing Facility", "Rehab")
SERVICES = ("MEDICINE", "SURGERY", "CARDIOTHORACIC", "NEUROLOGY", "ORTHOPAEDICS", "MEDICINE")
ALLERGIES = ("No Known Allergies / Adverse Drug Reactions", "Penicillins", "Sulfa (Sulfonamide Antibiotics)",
             "Patient recorded as having No Known Allergies to Drugs", "Codeine")
ACTIVITY = ("Ambulatory - Independent", "Ambulatory - requires assistance or aid (walker or cane)",
            "Out of Bed with assistance to chair or wheelchair")

_FIELDS = {
    "drug": lambda d: d.choice(DRUGS)[0], "hr": lambda d: d.randint(55, 130), "sbp": lambda d: d.randint(85, 180),
    "dbp": lambda d: d.randint(45, 100), "n": lambda d: d.randint(1, 10),
    "cr": lambda d: f"{0.6 + 3 * d.random():.1f}", "lac": lambda d: f"{0.8 + 3 * d.random():.1f}",
}
_TEMPLATE_FIELDS: dict[str, tuple[str, ...]] = {}


def fill(template: str, draws: Draws, **kw) -> str:
    """Fill a sentence template; random values are drawn only for the fields it uses."""
    names = _TEMPLATE_FIELDS.get(template)
    if names is None:
        names = tuple(dict.fromkeys(f for _, f, _, _ in string.Formatter().parse(template) if f))
        _TEMPLATE_FIELDS[template] = names
    if not names:
        return template
    return template.format(**{k: kw[k] if k in kw else _FIELDS[k](draws) for k in names})


def sentences(draws: Draws, k: int) -> str:
    """``k`` hospital-course filler sentences."""
    return " ".join(fill(draws.choice(COURSE_SENTENCES), draws) for _ in range(k))


def negation(name: str, draws: Draws) -> str:
    """A sentence ruling out ``name``."""
    return draws.choice(NEG_FMT).format(x=name, X=name[:1].upper() + name[1:])


def admission_exam(draws: Draws) -> str:
    """The admission physical exam with random vital signs."""
    return fill(EXAM, draws, t=f"{96.5 + 4 * draws.random():.1f}", rr=draws.randint(12, 28), sat=draws.randint(88, 100),
                gen=draws.choice(GEN), cv=draws.choice(CV), lungs=draws.choice(LUNGS), ext=draws.choice(EXT))


def family_history(descriptions: list[str], draws: Draws) -> list[str]:
    """One sentence per condition of a relative (``descriptions``: code descriptions)."""
    return [draws.choice(FAMILY_FMT).format(rel=draws.choice(FAMILY_REL), x=clinical_name(description),
                                            age=draws.randint(40, 90)) for description in descriptions]


def medication_list(meds) -> str:
    """Numbered "name dose" lines."""
    return "\n".join(f"{k}. {name} {dose}" for k, (name, dose) in enumerate(meds, 1))


