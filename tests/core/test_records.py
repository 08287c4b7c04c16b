"""llm4icd_plugins.records: the one reader of prediction lines and its one precedence rule (Ŷ re-derived from the
raw response, the stored pred list never preferred), the policy for codes the tables do not know, errors that name
file and line without content, and infer's writers read back. Expected values are written out by hand."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from llm4icd_plugins import records
from llm4icd_plugins.errors import UserError

SECRET = "Mr Canarywood has a rash"  # stands for note text a line might echo
RETIRED = "000.0"  # a well-formed ICD-9 code the tables do not know (like MIMIC-III's retired gold codes)


def _write(path: Path, lines) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines),
                    encoding="utf-8")
    return path


def test_the_response_wins_over_a_stored_pred_list(tmp_path, icd9):
    # infer's pred list was filtered through the tables and lost the retired gold code the model did predict,
    # and a hand-edited list may hold codes the answer never gave: neither is believed.
    path = _write(tmp_path / "p.jsonl", [
        {"id": "a", "gold": ["401.9", RETIRED], "pred": ["401.9", "584.9"],
         "response": f"<code>401.9, {RETIRED}, 000.1</code>"},
        {"id": "b", "gold": ["428.0"], "pred": ["428.0", "584.9"]},  # no response: the list is the prediction
        {"id": "c", "gold": ["428.0"], "pred": ["428.0"], "response": None},  # null response: the list
        {"id": "d", "gold": ["428.0"], "response": None},  # null response, no list: an empty answer
    ])
    found = records.read_predictions(path, icd9).by_id()
    assert found["a"].codes == ["401.9", RETIRED] and found["a"].prediction.n_rescued == 1
    assert found["a"].prediction.parsed.unknown == (RETIRED, "000.1") and found["a"].from_response
    assert found["b"].codes == ["428.0", "584.9"] and not found["b"].from_response
    assert found["c"].codes == ["428.0"] and not found["c"].from_response
    assert found["d"].codes == [] and found["d"].from_response and found["d"].response == ""
    assert found["a"].pred == ("401.9", "584.9") and [r.line for r in found.values()] == [1, 2, 3, 4]


def test_gold_is_resolved_and_unknown_gold_is_kept_and_reported(tmp_path, icd9):
    path = _write(tmp_path / "p.jsonl", [
        {"id": 7, "gold": ["4280", RETIRED, "428.0"], "response": "<code>4280</code>"},
    ])
    got = records.read_predictions(path, icd9)
    (record,) = got
    assert record.id == "7" and record.gold == ("428.0", RETIRED)  # undotted resolved, duplicate dropped
    assert record.codes == ["428.0"] and got.unknown_gold == {RETIRED}


def test_label_space_filters_the_prediction_and_bounds_the_rescue(tmp_path, icd9):
    path = _write(tmp_path / "p.jsonl", [
        {"id": "a", "gold": ["401.9", RETIRED], "response": f"<code>401.9, 584.9, {RETIRED}</code>"},
    ])
    (inside,) = records.read_predictions(path, icd9, label_space={"401.9", RETIRED})
    assert inside.codes == ["401.9", RETIRED] and inside.prediction.parsed.off_label == ("584.9",)
    (outside,) = records.read_predictions(path, icd9, label_space={"401.9", "584.9"})
    assert outside.codes == ["401.9", "584.9"] and outside.prediction.n_rescued == 0


def test_gold_from_another_source_rescues_lines_without_gold(tmp_path, icd9):
    path = _write(tmp_path / "p.jsonl", [{"id": "a", "response": f"<code>{RETIRED}, 401.9</code>"},
                                         {"id": "b", "response": f"<code>{RETIRED}</code>"}])
    with pytest.raises(UserError, match='line 1: missing key "gold"'):
        records.read_predictions(path, icd9)
    found = records.read_predictions(path, icd9, gold={"a": [RETIRED]}, require_gold=False).by_id()
    assert found["a"].gold is None and found["a"].codes == ["401.9", RETIRED]  # rescued codes come last
    assert found["b"].codes == []  # no gold anywhere: an unknown code is dropped


def _bad_lines():
    ok = json.dumps({"id": "ok", "gold": ["401.9"], "pred": []})
    yield "bad json", [ok, '{"id": "x", "gold": [' + json.dumps(SECRET)], 2, "not valid JSON"
    yield "not an object", [ok, json.dumps([SECRET])], 2, "a JSON list, not an object"
    yield "missing id", [json.dumps({"gold": [], "response": SECRET})], 1, 'missing key "id"'
    yield "id not a scalar", [json.dumps({"id": {"k": SECRET}, "gold": [], "pred": []})], 1, '"id" is a mapping'
    yield "blank id", [json.dumps({"id": " ", "gold": [], "pred": []})], 1, '"id" is blank'
    yield "duplicate id", [ok, ok], 2, "the id is already used on line 1"
    yield "gold not a list", [json.dumps({"id": 1, "gold": SECRET, "pred": []})], 1, '"gold" is str, not a list'
    yield "gold not a code", [json.dumps({"id": 1, "gold": [SECRET], "pred": []})], 1, "gold code 1 of the list"
    yield "pred not a list", [json.dumps({"id": 1, "gold": [], "pred": SECRET})], 1, '"pred" is str, not a list'
    yield "no prediction", [json.dumps({"id": 1, "gold": [], "note": SECRET})], 1, 'neither "pred" nor "response"'
    yield "response not text", [json.dumps({"id": 1, "gold": [], "response": [SECRET]})], 1, '"response" is list'
    yield "deep nesting", [ok, "[" * 100_000 + "]" * 100_000], 2, "JSON nested too deeply"


@pytest.mark.parametrize("name, lines, line_no, needle", list(_bad_lines()), ids=[c[0] for c in _bad_lines()])
def test_a_bad_line_names_file_and_line_never_its_content(tmp_path, icd9, name, lines, line_no, needle):
    path = _write(tmp_path / "p.jsonl", lines)
    with pytest.raises(records.RecordError) as caught:
        records.read_predictions(path, icd9)
    message = str(caught.value)
    assert f"{path}, line {line_no}: " in message and needle in message and "Fix:" in message
    assert SECRET not in message and "Canarywood" not in message


def test_bad_bytes_empty_files_and_the_callers_error_class(tmp_path, icd9):
    class ToolError(UserError):
        pass

    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"id": "a", "gold": [], "pred": []}\n{"id": "b", "response": "caf\xe9"}\n')
    with pytest.raises(ToolError, match="line 2: not UTF-8 text"):
        records.read_predictions(path, icd9, error=ToolError)
    _write(path, ["", "  "])
    with pytest.raises(records.RecordError, match="no records"):
        records.read_predictions(path, icd9)
    assert len(records.read_predictions(path, icd9, allow_empty=True)) == 0
    with pytest.raises(records.RecordError, match="cannot open"):
        records.read_predictions(tmp_path / "absent.jsonl", icd9)
    path.write_bytes(b'\xef\xbb\xbf{"id": "a", "gold": [], "pred": ["401.9"]}\n')  # a BOM is tolerated
    assert records.read_predictions(path, icd9).records[0].codes == ["401.9"]


def test_infers_response_line_reads_back_to_the_same_prediction(tmp_path, icd9):
    line = records.response_record("s1", "sft", f"<code>428.0, {RETIRED}, 000.1, bad code</code>",
                                   ["428.0", RETIRED], icd9, prompt_tokens=12, gen_tokens=5, finish_reason="stop",
                                   extra={"prompt_kind": "zero_shot"})
    assert line["pred"] == ["428.0", RETIRED]  # Ŷ: the retired gold code is kept, the unknown one is not
    assert line["n_malformed"] == 1 and line["unknown"] == [RETIRED, "000.1"] and line["format_ok"]
    assert (line["prompt_tokens"], line["gen_tokens"], line["finish_reason"]) == (12, 5, "stop")
    assert line["prompt_kind"] == "zero_shot" and line["model"] == "sft"
    (record,) = records.read_predictions(_write(tmp_path / "p.jsonl", [line]), icd9)
    assert record.codes == ["428.0", RETIRED] and record.gold == ("428.0", RETIRED) and record.from_response


def test_voted_line_holds_the_majority_and_is_read_from_its_pred_list(tmp_path, icd9):
    responses = ["<code>401.9, 428.0</code>", "<code>428.0</code>", "<code>584.9, 428.0, 401.9</code>", "none"]
    line = records.voted_record("v1", "m", responses, ["428.0"], icd9, finish_reasons=["stop"] * 4)
    # 428.0 in 3 of 4 samples, 401.9 in 2 of 4 (a majority at 0.5), 584.9 in 1 of 4
    assert line["pred"] == ["428.0", "401.9"] and line["votes"] == {"401.9": 0.5, "428.0": 0.75, "584.9": 0.25}
    assert line["n_samples"] == 4 and line["n_no_span"] == 1 and "response" not in line
    strict = records.voted_record("v1", "m", responses, ["428.0"], icd9, majority=0.6)
    assert strict["pred"] == ["428.0"]
    (record,) = records.read_predictions(_write(tmp_path / "p.jsonl", [line]), icd9)
    assert record.codes == ["428.0", "401.9"] and not record.from_response
    assert record.votes == {"401.9": 0.5, "428.0": 0.75, "584.9": 0.25}
    for votes, needle in (([0.5], '"votes" is list'), ({"401.9": 1.5}, "a vote share is a number (float)"),
                          ({"401.9": SECRET}, "a vote share is a string of")):
        path = _write(tmp_path / "bad.jsonl", [dict(line, votes=votes)])
        with pytest.raises(records.RecordError, match=re.escape(f"line 1: {needle}")) as caught:
            records.read_predictions(path, icd9)
        assert SECRET not in str(caught.value)
