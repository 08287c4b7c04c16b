"""Note text: MIMIC-style discharge summaries (with addenda) and the other note categories of an admission.

Every random value comes from the writer's ``Draws`` in a fixed order, so the same seed writes the same text.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .cohort import Admission
from .draws import Draws
from .options import SynthOptions
from .phrases import (
    ACTIVITY,
    ALLERGIES,
    DISPOSITION,
    DRUGS,
    ETOH,
    HPI_FILL,
    HPI_LINKS,
    INSTRUCTIONS,
    JOBS,
    SERVICES,
    SOCIAL,
    SURGICAL_HISTORY,
    SYMPTOMS,
    TOB,
    WHERE,
    WHO,
    admission_exam,
    cased,
    clinical_name,
    family_history,
    fill,
    medication_list,
    negation,
    sentences,
    spoken,
)
from .vocabulary import Vocabulary

SIGNATURE_INDENT = " " * 29
_EPOCH = dt.date(2100, 1, 1).toordinal()
_NO_FAMILY_HISTORY = ("Non-contributory.", "No family history of premature CAD.", "NC")
_CONDITION = "Mental Status: Clear and coherent.\nLevel of Consciousness: Alert and interactive.\nActivity Status: "
_RADIOLOGY_STUDIES = ("CHEST (PORTABLE AP)", "CT HEAD W/O CONTRAST", "RENAL U.S.", "CHEST (PA & LAT)")
_ECG_READS = ("Sinus rhythm. Normal ECG.", "Atrial fibrillation with rapid ventricular response.",
              "Sinus tachycardia. Nonspecific ST-T wave changes.", "Sinus bradycardia. Left axis deviation.")


def date_of(day: int) -> dt.date:
    """The calendar date of ``day`` (days since 2100-01-01, MIMIC's shifted years)."""
    return dt.date.fromordinal(_EPOCH + day)


class Style:
    """MIMIC-III's [** **] de-identification placeholders vs MIMIC-IV's ___ ."""

    def __init__(self, mimic4: bool, draws: Draws):
        self.mimic4, self.draws = mimic4, draws
        self.gap = " \n" if mimic4 else "\n"

    def date(self, day: int) -> str:
        if self.mimic4:
            return "___"
        x = date_of(day)
        return f"[**{x.year}-{x.month}-{x.day}**]"

    def doctor(self) -> str:
        if self.mimic4:
            return "___"
        return f"[**Last Name (NamePattern{self.draws.randint(1, 4)}) {self.draws.randint(100, 9999)}**]"

    def first_name(self) -> str:
        d = self.draws
        return "___" if self.mimic4 else f"[**First Name{d.randint(3, 11)} (LF) {d.randint(10, 9999)}**]"

    def phone(self) -> str:
        d = self.draws
        return "___" if self.mimic4 else f"[**Telephone/Fax ({d.randint(1, 5)}) {d.randint(100, 9999)}**]"

    def age(self, age: int) -> str:
        if self.mimic4:
            return "___"
        return "[**Age over 90 **]" if age > 89 else str(age)

    def signature(self) -> str:
        return f"{SIGNATURE_INDENT}{self.first_name()} {self.doctor()} MD {self.phone()}"


def lab_lines(style: Style, day: int, draws: Draws, n: int) -> list[str]:
    """``n`` lab result lines (blood count, chemistry or liver panel), three a day from ``day``."""
    lines = []
    for k in range(n):
        clock = f"{draws.randint(1, 12):02d}:{draws.randint(0, 59):02d}{draws.choice(('AM', 'PM'))}"
        when = f"{style.date(day + k // 3)} {clock}"
        kind = draws.randint(0, 2)
        if kind == 0:
            wbc, hgb = 4 + 12 * draws.random(), 7 + 8 * draws.random()
            low = "*" if hgb < 12 else ""
            lines.append(f"{when} BLOOD WBC-{wbc:.1f}{'*' if wbc > 11 else ''} RBC-{2.5 + 2.5 * draws.random():.2f}* "
                         f"Hgb-{hgb:.1f}{low} Hct-{hgb * 3:.1f}{low} MCV-{draws.randint(78, 102)} "
                         f"RDW-{12 + 5 * draws.random():.1f} Plt Ct-{draws.randint(60, 450)}")
        elif kind == 1:
            cr = 0.5 + 3 * draws.random()
            lines.append(f"{when} BLOOD Glucose-{draws.randint(70, 320)}* UreaN-{draws.randint(8, 80)}* "
                         f"Creat-{cr:.1f}{'*' if cr > 1.2 else ''} Na-{draws.randint(125, 146)} "
                         f"K-{3 + 2 * draws.random():.1f} Cl-{draws.randint(92, 110)} HCO3-{draws.randint(16, 32)} "
                         f"AnGap-{draws.randint(8, 22)}")
        else:
            lines.append(f"{when} BLOOD ALT-{draws.randint(8, 200)} AST-{draws.randint(10, 240)} "
                         f"AlkPhos-{draws.randint(40, 300)} TotBili-{0.2 + 3 * draws.random():.1f} "
                         f"Albumin-{2 + 2.5 * draws.random():.1f} Lactate-{0.6 + 4 * draws.random():.1f}")
    return lines


@dataclass
class _Plan:
    """Where a discharge summary mentions each code of its admission (vocabulary indices)."""

    primary: list[int]  # the first diagnosis, if any
    listed: list[int]  # diagnoses under "Discharge Diagnosis"
    in_course: list[int]  # diagnoses with a hospital-course paragraph
    procedures_listed: list[int]  # procedures under "Major Surgical or Invasive Procedure"
    addendum_code: int | None  # the diagnosis only the addendum names
    complaint: str
    verbosity: float  # how much filler this author writes
    negated: list[str]  # names of codes ruled out


class NoteWriter:
    """Renders one admission's discharge summary (and addendum / other notes) as MIMIC-style text."""

    def __init__(self, vocab_by_system: dict[str, Vocabulary], opts: SynthOptions, mimic4: bool, draws: Draws):
        self.vocabs, self.opts, self.draws = vocab_by_system, opts, draws
        self.style = Style(mimic4, draws)

    def _description(self, a: Admission, i: int) -> str:
        return self.vocabs[a.system].descriptions[i]

    def _section(self, title: str, body: str) -> str:
        return f"{title}:\n{body}\n{self.style.gap}"

    def discharge_summary(self, a: Admission) -> tuple[str, str | None]:
        """(report text, addendum text or None). Each assigned code's description or synonym is in
        the report, except one code that an addendum (if any) is the only place to mention."""
        draws, style = self.draws, self.style
        plan = self._plan(a)
        sex = "M" if a.sex == "M" else "F"
        parts = [self._identity(a), self._section("Chief Complaint", plan.complaint)]
        procedures = [cased(self._description(a, i), draws) for i in plan.procedures_listed]
        parts.append(self._section("Major Surgical or Invasive Procedure", "\n".join(procedures) or "None"))
        history = [spoken(self._description(a, i), draws) for i in a.chronic]
        history_text = ", ".join(history) if history else "no significant PMH"
        present_illness, negated_left = self._present_illness(a, plan, history, history_text, sex)
        parts.append(self._section("History of Present Illness", present_illness))
        past = [f"- {n}" for n in history] + [f"- {x}" for x in draws.sample(SURGICAL_HISTORY, draws.randint(0, 2))]
        parts.append(self._section("Past Medical History", "\n".join(past) or "- none"))
        parts.append(self._section("Social History", self._social()))
        relatives = family_history([self._description(a, i) for i in a.family], draws)
        parts.append(self._section("Family History", " ".join(relatives) or draws.choice(_NO_FAMILY_HISTORY)))
        parts.append(self._section("Physical Exam", "ADMISSION EXAM:\n" + admission_exam(draws)))
        labs = lab_lines(style, a.admit, draws, draws.randint(1, 2 + int(12 * plan.verbosity)))
        parts.append(self._section("Pertinent Results", "\n".join(labs)))
        course = (f"{style.age(a.age)} y/o {sex} with {history_text} admitted with {plan.complaint}.\n\n"
                  + self._course(a, plan, negated_left) + (self._long_course(a) if a.long_note else ""))
        parts.append(self._section("Brief Hospital Course", course))
        meds = draws.sample(DRUGS, draws.randint(3, 4 + int(12 * plan.verbosity)))
        parts.append(self._section("Medications on Admission", medication_list(meds[: max(3, len(meds) - 3)])))
        parts.append(self._section("Discharge Medications", medication_list(meds)))
        parts.append(self._section("Discharge Disposition", draws.choice(DISPOSITION)))
        parts.append(f"Discharge Diagnosis:\n{self._diagnosis_list(a, plan)}{style.gap}")
        parts.append(self._section("Discharge Condition", f"{_CONDITION}{draws.choice(ACTIVITY)}."))
        topic = spoken(self._description(a, plan.primary[0]), draws) if plan.primary else plan.complaint
        instructions = draws.sample(INSTRUCTIONS, draws.randint(1, 1 + int(3 * plan.verbosity)))
        parts.append(self._section("Discharge Instructions",
                                   "\n\n".join(fill(t, draws, x=topic) for t in instructions)))
        parts.append(f"Followup Instructions:\nPlease follow up with Dr. {style.doctor()} in {draws.randint(1, 4)} "
                     f"weeks. Phone: {style.phone()}\n")
        if not style.mimic4:
            parts.append(f"\n{style.signature()}\n\nCompleted by:{style.date(a.admit + a.los)}")
        addendum = self._addendum(a, plan.addendum_code) if a.addendum else None
        return "".join(parts), addendum

    def _plan(self, a: Admission) -> _Plan:
        """Where each code goes, the complaint and the verbosity: the first draws of every summary."""
        draws = self.draws
        diagnoses = list(a.dx)
        addendum_code = diagnoses.pop() if a.addendum and len(diagnoses) > 1 else None
        primary = diagnoses[:1]
        listed = [i for i in diagnoses if draws.chance(self.opts.dx_list_recall)]
        if primary and primary[0] not in listed and draws.chance(0.7):
            listed.insert(0, primary[0])
        in_course = [i for i in diagnoses if i not in listed or draws.chance(0.5)]
        procedures_listed = [i for i in a.proc if draws.chance(0.85)]
        complaint = (spoken(self._description(a, primary[0]), draws) if primary and draws.chance(0.35)
                     else draws.choice(SYMPTOMS))
        verbosity = 0.3 + 1.3 * draws.random()
        negated = [spoken(self._description(a, i), draws) for i in a.negated]
        return _Plan(primary, listed, in_course, procedures_listed, addendum_code, complaint, verbosity, negated)

    def _identity(self, a: Admission) -> str:
        """Name line (MIMIC-IV), dates, birth date, sex, service, allergies and attending."""
        draws, style, gap = self.draws, self.style, self.style.gap
        name = " \nName:  ___                     Unit No:   ___\n \n" if style.mimic4 else ""
        born = style.date(a.admit - 365 * a.age - draws.randint(0, 364))
        return (f"{name}Admission Date:  {style.date(a.admit)}              Discharge Date:   "
                f"{style.date(a.admit + a.los)}\n{gap}Date of Birth:  {born}             Sex:   {a.sex}\n{gap}"
                f"Service: {draws.choice(SERVICES)}\n{gap}" + self._section("Allergies", draws.choice(ALLERGIES))
                + f"Attending: {style.first_name()}.\n{gap}")

    def _present_illness(self, a: Admission, plan: _Plan, history: list[str], history_text: str,
                         sex: str) -> tuple[str, list[str]]:
        """The HPI paragraph, and the negated names it left for the hospital course."""
        draws = self.draws
        intro = f"PMH significant for {history_text}" if history else history_text
        text = f"{self.style.age(a.age)} y/o {sex} with {intro} {draws.choice(HPI_LINKS)} {plan.complaint}. "
        fillers = draws.sample(HPI_FILL, draws.randint(1, 1 + int(4 * plan.verbosity)))
        text += " ".join(fill(t, draws) for t in fillers)
        negated = plan.negated
        if negated and draws.chance(0.5):
            text += " " + negation(negated[0], draws)
            negated = negated[1:]
        others = [x for x in draws.sample(SYMPTOMS, 4) if x != plan.complaint][:3]
        return f"{text} Denies {', '.join(others)}.", negated

    def _social(self) -> str:
        d = self.draws
        return d.choice(SOCIAL).format(who=d.choice(WHO), job=d.choice(JOBS), where=d.choice(WHERE),
                                       tob=d.choice(TOB), etoh=d.choice(ETOH))

    def _diagnosis_list(self, a: Admission, plan: _Plan) -> str:
        if not plan.listed:
            return f"{plan.complaint}\n"
        text = ""
        primary = [i for i in plan.listed if i in plan.primary]
        secondary = [i for i in plan.listed if i not in plan.primary]
        if primary:
            text += "Primary:\n" + "\n".join(cased(self._description(a, i), self.draws) for i in primary) + "\n\n"
        if secondary:
            text += "Secondary:\n" + "\n".join(cased(self._description(a, i), self.draws) for i in secondary) + "\n"
        return text

    def _course(self, a: Admission, plan: _Plan, negated: list[str]) -> str:
        """A paragraph per diagnosis in the course, a line per procedure and per ruled-out condition."""
        draws = self.draws
        parts = []
        for i in plan.in_course:
            # A code missing from the discharge-diagnosis list keeps its full description here.
            description = self._description(a, i)
            head = cased(description, draws) if i not in plan.listed else spoken(description, draws)
            parts.append(f"# {head}: {sentences(draws, draws.randint(1, 1 + int(4 * plan.verbosity)))}")
        for i in a.proc:
            on = self.style.date(a.admit + draws.randint(0, max(a.los - 1, 0)))
            description = self._description(a, i)
            named = i not in plan.procedures_listed or draws.chance(0.5)
            name = cased(description, draws) if named else spoken(description, draws)
            parts.append(f"Pt underwent {name} on {on}. {sentences(draws, draws.randint(0, 2))}".rstrip())
        for name in negated:
            parts.append(f"# r/o {name}: {negation(name, draws)} {sentences(draws, draws.randint(0, 1))}".rstrip())
        # The shuffle's draws are part of the seeded stream; its result was never used, so the paragraphs
        # keep the order above (kept as is: using it would change every corpus written so far).
        draws.shuffle(parts)
        return "\n\n".join(parts)

    def _long_course(self, a: Admission) -> str:
        draws = self.draws
        target = draws.randint(2500, 7000)
        words = 0
        parts = ["\n\nDetailed hospital course by day:"]
        day = 1
        while words < target:
            text = f"HD #{day}: {sentences(draws, draws.randint(6, 14))}\n" + "\n".join(
                lab_lines(self.style, a.admit + day, draws, draws.randint(1, 3)))
            words += len(text.split())
            parts.append(text)
            day += 1
        return "\n\n".join(parts)

    def _addendum(self, a: Admission, code: int | None) -> str:
        """The addendum note; it alone names ``code`` when given."""
        draws, style = self.draws, self.style
        discharge = a.admit + a.los
        text = (f"Name:  {style.doctor()},  {style.first_name()}            Unit No:  {draws.randint(1000, 99999)}\n\n"
                f"Admission Date:  {style.date(a.admit)}              Discharge Date:   {style.date(discharge)}\n\n"
                f"Date of Birth:  {style.date(a.admit - 365 * a.age)}             Sex:   {a.sex}\n\n"
                f"Service: {draws.choice(SERVICES)}\n\nAddendum:\n")
        if code is not None:
            text += (f"Pt was also noted to have {cased(self._description(a, code), draws)} during this admission, "
                     f"to be followed up as an outpatient. ")
        return (text + f"{sentences(draws, draws.randint(1, 3))}\n\nDischarge Disposition:\n{draws.choice(DISPOSITION)}"
                f"\n\n{style.signature()}\n\nCompleted by:{style.date(discharge + draws.randint(0, 3))}")

    def other_note(self, a: Admission | None, category: str, day: int) -> str:
        """A note of another category (Radiology, ECG, nursing, ...); ``a`` None: no finding of its codes."""
        draws, style = self.draws, self.style
        if category == "Radiology":
            finding = "No acute cardiopulmonary process." if a is None or not a.dx or draws.chance(0.5) else \
                f"Findings may be consistent with {clinical_name(self._description(a, draws.choice(a.dx)))}."
            clock = f"{draws.randint(1, 12)}:{draws.randint(0, 59):02d} {draws.choice(('AM', 'PM'))}"
            return (f"{style.date(day)} {clock}\n"
                    f" {draws.choice(_RADIOLOGY_STUDIES)}  Clip # {style.phone()}\n Reason: eval\n\n FINAL REPORT\n"
                    f" INDICATION: {draws.choice(SYMPTOMS)}.\n\n IMPRESSION: {finding}\n")
        if category == "ECG":
            return draws.choice(_ECG_READS)
        return (f"{category.strip()} note: {sentences(draws, draws.randint(2, 6))} Vitals: HR {draws.randint(55, 120)} "
                f"BP {draws.randint(90, 170)}/{draws.randint(50, 95)}.")
