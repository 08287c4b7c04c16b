"""Command-line data tools: prepare MIMIC, synthesise a corpus, build a tiny model, infer, evaluate."""
