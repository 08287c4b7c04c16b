"""Data building: the synthetic corpus, MIMIC tables to prepared variants, the tiny model, exports."""
