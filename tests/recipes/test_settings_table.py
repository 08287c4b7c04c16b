"""The README's settings table is the profiles: every knob of recipes/profiles/*.yaml has a row whose
release and default columns equal the files, and where the paper states a plain value it is the default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "recipes" / "profiles"


def _rows() -> dict[str, list[str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- settings-table:start -->", 1)[1].split("<!-- settings-table:end -->", 1)[0]
    rows = {}
    for line in block.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1:]
    return rows


def _knobs(name: str) -> dict:
    raw = yaml.safe_load((PROFILES / f"{name}.yaml").read_text(encoding="utf-8"))
    return {f"{section}.{key}": value for section in ("sft", "grpo") for key, value in raw[section].items()}


def _number(cell: str) -> float | None:
    return float(cell) if re.fullmatch(r"[0-9.e+-]+", cell) else None


def test_profiles_are_the_two_named_ones():
    assert sorted(p.stem for p in PROFILES.glob("*.yaml")) == ["paper", "release"]
    assert _knobs("paper").keys() == _knobs("release").keys()


def test_every_knob_has_a_row_and_every_row_a_knob():
    assert set(_rows()) == set(_knobs("paper"))


def test_table_values_match_the_profiles():
    rows, paper, release = _rows(), _knobs("paper"), _knobs("release")
    stated = 0
    for knob, (paper_text, release_cell, default_cell, why) in rows.items():
        assert _number(release_cell) == float(release[knob]), knob
        assert _number(default_cell) == float(paper[knob]), knob
        assert why, f"{knob}: say why"
        if _number(paper_text) is not None:  # the paper states it: the default follows the paper
            assert _number(paper_text) == float(paper[knob]), knob
            stated += 1
        elif paper_text == "—":  # the paper is silent: the default follows the release
            assert paper[knob] == release[knob], knob
    assert stated >= 4  # lr, epochs, LoRA rank, KL, G, Top-50 length: the check ran on real rows


def test_the_known_differences_are_there():
    """FACTS.md: the release's SFT lr is 10x and its KL coefficient 10x the paper's text."""
    paper, release = _knobs("paper"), _knobs("release")
    assert release["sft.learning_rate"] == pytest.approx(10 * paper["sft.learning_rate"])
    assert release["grpo.kl_loss_coef"] == pytest.approx(10 * paper["grpo.kl_loss_coef"])
