"""Synthetic MIMIC-III / MIMIC-IV-shaped raw tables, for tests, benchmarks and the embedded default corpus.

Nobody outside a credentialed lab has MIMIC, so this writes files with MIMIC's real names, columns,
code forms (undotted) and quirks (addenda, other note categories, empty codes, admissions without
codes, ICD-9 admissions in MIMIC-IV) plus Edin-style patient-level split files, so that
``data_tools.build.prepare`` runs on them exactly as on MIMIC. Codes are REAL codes from the code tables
(``llm4icd_plugins.codes``) with a long-tailed (Zipf) frequency; notes are MIMIC-style discharge
summaries whose text mentions each assigned code's real description (or an abbreviation of it), with
negated and family-history mentions of codes that do NOT apply, so the task is learnable but not trivial.

    python -m data_tools.build.synth --out data/synth --corpus both --n-admissions 2000 --seed 0

``--label-profile longtail`` (``longtail``) writes a MIMIC-III corpus with hundreds of trainable codes and
evidence graded named / synonym / implied instead; the default profile is unchanged.

Everything is drawn from numpy Generators seeded from ``--seed``: same arguments and code tables give
the same bytes. Each corpus is written to a temporary folder that is renamed into place at the end; an
existing corpus is refused before any work unless ``--overwrite`` is given, and a killed run's temporary
folders are removed by the next run.

Modules: ``options`` (flags, errors, names), ``draws`` (seeded scalar draws), ``vocabulary`` (sampled
codes), ``cohort`` (admissions and their codes), ``phrases`` (how codes are named, filler tables),
``notes`` (note text), ``files`` (CSV dialects, split files, manifest), ``corpus`` (the MIMIC-III and
MIMIC-IV corpora), ``longtail`` / ``longtail_evidence`` (the long-tail profile), ``cli``.
"""

from .cli import build_parser, main
from .corpus import generate_mimic3, generate_mimic4
from .options import MANIFEST, OutputExists, SynthError, SynthOptions
from .phrases import clinical_name, mention_forms
from .vocabulary import Vocabulary, build_vocabulary

__all__ = [
    "MANIFEST",
    "OutputExists",
    "SynthError",
    "SynthOptions",
    "Vocabulary",
    "build_parser",
    "build_vocabulary",
    "clinical_name",
    "mention_forms",
    "generate_mimic3",
    "generate_mimic4",
    "main",
]
