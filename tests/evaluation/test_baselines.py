"""Prompting baselines (paper App. D) over a prepared synthetic split: the four variants render within the token
budget with the real tiny tokenizer and chat template, few-shot demonstrations are retrieved by note similarity
(never the note itself or the same patient) and carry their gold answers."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from data_tools.evaluation import baselines
from data_tools.build import prepare
from data_tools.build.synth import generate_mimic3
from llm4icd_plugins import prompts

BUDGET = 1000


@pytest.fixture(scope="module")
def variant(tmp_path_factory):
    base = tmp_path_factory.mktemp("baselines")
    raw = generate_mimic3(base / "raw", n_admissions=120, seed=5)
    assert prepare.main(["mimic3", "--root", str(raw["root"]), "--out", str(base / "prep"), "--variants", "full",
                         "--min-code-count", "2"]) == 0
    return base / "prep" / "mimic3_full"


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


def _count(tokenizer, messages) -> int:
    return len(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False))


@pytest.mark.parametrize("kind", prompts.BASELINE_KINDS)
def test_four_variants_fit_the_budget(variant, tokenizer, kind):
    requests = baselines.build_requests(variant, "test", kind, tokenizer=tokenizer, budget=BUDGET)
    test = pd.read_parquet(variant / "examples" / "test.parquet")
    assert [r.id for r in requests] == test["id"].tolist()
    assert [r.gold for r in requests] == [list(c) for c in test["codes"]]
    counts = [_count(tokenizer, r.messages) for r in requests]
    assert max(counts) <= BUDGET
    assert sum(r.extra["prompt_truncated"] for r in requests) > 0  # synthetic notes are longer than the budget
    assert min(counts) > BUDGET * 0.8  # truncation cuts to the budget, not far below it
    for request in requests:
        text = request.messages[0]["content"]
        assert text.startswith("You are a clinical coding specialist assigning ICD-9-CM codes")
        assert text.endswith("Answer:") and "Now code the following discharge summary." in text
        assert ("<think>" in text) == kind.endswith("_cot")
        assert request.extra["prompt_kind"] == kind
        if kind.startswith("few_shot"):  # demonstrations give way when their answers would crowd out the note
            assert 1 <= len(request.extra["shot_ids"]) <= baselines.N_SHOTS
            assert text.count("Example ") == len(request.extra["shot_ids"])


def test_untruncated_prompts_keep_the_note_verbatim(variant, tokenizer):
    requests = baselines.build_requests(variant, "val", "zero_shot", tokenizer=tokenizer, budget=60_000)
    notes = pd.read_parquet(variant / "examples" / "val.parquet")["text"].tolist()
    spec = baselines.prompt_spec(variant)
    assert not any(r.extra["prompt_truncated"] for r in requests)
    assert [r.messages for r in requests] == [prompts.baseline_messages("zero_shot", n, spec) for n in notes]


@pytest.mark.parametrize("kind", ["few_shot", "few_shot_cot"])
def test_few_shot_demonstrations_are_retrieved_training_examples(variant, tokenizer, kind):
    # Tiny-tokenizer codes take ~7 tokens each: a larger budget keeps all three demonstrations' answers in.
    requests = baselines.build_requests(variant, "test", kind, tokenizer=tokenizer, budget=1800, max_samples=6)
    assert len(requests) == 6 and max(_count(tokenizer, r.messages) for r in requests) <= 1800
    train = pd.read_parquet(variant / "examples" / "train.parquet").set_index("id")
    for request in requests:
        shot_ids = request.extra["shot_ids"]
        assert len(shot_ids) == baselines.N_SHOTS and len(set(shot_ids)) == baselines.N_SHOTS
        text = request.messages[0]["content"]
        answers = re.findall(r"Answer: (?:<think>[^<]*</think> )?(<code>[^<]*</code>)", text)
        assert answers == [prompts.format_answer(list(train.loc[s, "codes"])) for s in shot_ids]
        assert [int(k) for k in re.findall(r"^Example (\d)$", text, flags=re.M)] == [1, 2, 3]


def test_retrieval_ranks_by_similarity_and_excludes():
    train = ["pneumonia with cough and fever, treated with antibiotics",
             "hip fracture after a fall, open reduction internal fixation",
             "diabetes mellitus with hyperglycemia, insulin started",
             "community acquired pneumonia, fever, cough, chest x-ray infiltrate"]
    query = ["fever and productive cough, pneumonia on chest x-ray", "fall with hip fracture"]
    got = baselines.retrieve_shots(train, query, k=2)
    assert got[0].tolist() == [3, 0] and got[1][0] == 1
    # A training note never retrieves itself (nor its patient's other notes).
    self_query = baselines.retrieve_shots(train, train[:1], k=2, exclude=[[0, 3]])
    assert 0 not in self_query[0] and 3 not in self_query[0]


def test_train_split_never_retrieves_own_patient(variant):
    requests = baselines.build_requests(variant, "train", "few_shot", tokenizer=None, max_samples=20)
    train = pd.read_parquet(variant / "examples" / "train.parquet").set_index("id")
    for request in requests:
        subject = train.loc[request.id, "subject_id"]
        assert request.id not in request.extra["shot_ids"]
        assert all(train.loc[s, "subject_id"] != subject for s in request.extra["shot_ids"])


def test_impossible_budget_and_bad_inputs(variant, tokenizer, tmp_path):
    with pytest.raises(baselines.BaselineError, match="over the budget"):
        baselines.build_requests(variant, "val", "few_shot", tokenizer=tokenizer, budget=120, max_samples=2)
    with pytest.raises(baselines.BaselineError, match="stats.json"):
        baselines.build_requests(tmp_path, "test", "zero_shot", tokenizer=tokenizer)
    with pytest.raises(baselines.BaselineError, match="unknown prompt kind"):
        baselines.build_requests(variant, "test", "three_shot")
