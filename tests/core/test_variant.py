"""llm4icd_plugins.variant: the layout PreparedVariant names is exactly what data_tools.build.prepare writes (both
ways), its readers return what the files hold (read here with pandas/json directly), and a folder that is not a
prepared variant, or a damaged file, is one clear error naming the file and the fix, never a value's contents."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_tools.build import prepare
from data_tools.build.synth import generate_mimic3
from llm4icd_plugins.errors import UserError
from llm4icd_plugins.variant import EXAMPLES_SCHEMA, SPLITS, VERL_SCHEMA, PreparedVariant, VariantError, read_examples

SECRET = "Mrs Canarywood"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("variant")
    raw = generate_mimic3(base / "raw", n_admissions=60, seed=3)
    assert prepare.main(["mimic3", "--root", str(raw["root"]), "--out", str(base / "prep"), "--variants", "full",
                         "--min-code-count", "2"]) == 0
    return base / "prep" / "mimic3_full"


def test_the_layout_is_what_prepare_writes(root):
    variant = PreparedVariant(root)
    named = {variant.stats_path, variant.label_space_path, variant.dataset_info_path}
    for split in SPLITS:
        named |= {variant.examples_path(split), variant.verl_path(split), variant.sharegpt_path(split)}
    written = {p for p in root.rglob("*") if p.is_file()}
    assert written == named  # no file the layout misses, none it names that prepare does not write
    for split in SPLITS:  # the schemas stated here are the ones prepare writes
        assert pq.read_schema(variant.examples_path(split)).remove_metadata() == EXAMPLES_SCHEMA
        assert pq.read_schema(variant.verl_path(split)).remove_metadata() == VERL_SCHEMA
    assert PreparedVariant.containing(variant.verl_path("train")) == variant
    assert PreparedVariant.containing(root / "stats.json") is None


def test_readers_return_what_the_files_hold(root, icd9):
    variant = PreparedVariant(root)
    stats = json.loads((root / "stats.json").read_text())
    space = json.loads((root / "label_space.json").read_text())
    assert variant.stats() == stats and variant.stat("code_system") == "icd9"
    assert list(variant.label_space().codes) == space["codes"] and variant.label_space().name == space["name"]
    # The stats' code system, loaded (equal tables, not necessarily the cached object: other tests reset the cache)
    system = variant.code_system()
    assert system.name == "icd9" and len(system) == len(icd9)
    assert system.description("401.9") == icd9.description("401.9")
    spec = variant.prompt_spec()
    assert (spec.code_system, spec.label_scope, spec.corpus) == ("icd9", "full", stats["corpus"])
    for split in SPLITS:
        frame = pd.read_parquet(root / "examples" / f"{split}.parquet")
        examples = variant.examples(split, truncated=True)
        assert examples.split == split and len(examples) == len(frame) > 0
        assert examples.ids == [str(i) for i in frame["id"]] and examples.texts == frame["text"].tolist()
        assert examples.codes == [list(c) for c in frame["codes"]]
        assert examples.texts_truncated == frame["text_truncated"].tolist()
        assert variant.examples(split).texts_truncated is None
        verl = variant.verl(split, ["extra_info"]).column("extra_info").to_pylist()
        assert [e["sample_id"] for e in verl] == examples.ids
    head = variant.examples("train").head(3)
    assert len(head) == 3 and head.ids == variant.examples("train").ids[:3]


def test_token_settings_have_defaults_when_not_recorded(tmp_path):
    variant = PreparedVariant(tmp_path)
    assert variant.chat_template_kwargs() == {} and variant.max_prompt_length(4096) == 4096
    (tmp_path / "stats.json").write_text(json.dumps({"tokens": {"max_prompt_length": 900,
                                                               "chat_template_kwargs": {"enable_thinking": False}}}))
    fresh = PreparedVariant(tmp_path)
    assert fresh.max_prompt_length(4096) == 900 and fresh.chat_template_kwargs() == {"enable_thinking": False}


def test_a_folder_that_is_no_variant_is_a_clear_error(tmp_path):
    class ToolError(UserError):
        pass

    variant = PreparedVariant(tmp_path / "nowhere", ToolError)
    readers = ((variant.stats, "stats.json"), (variant.label_space, "label_space.json"),
               (lambda: variant.examples("val"), "val.parquet"), (lambda: variant.verl("test"), "test.parquet"))
    for read, name in readers:
        with pytest.raises(ToolError) as caught:
            read()
        message = str(caught.value)
        assert name in message and "data_tools.build.prepare" in message and "Fix:" in message
    with pytest.raises(VariantError, match="stats.json"):
        PreparedVariant(tmp_path).code_system()


@pytest.mark.parametrize("content, needle", [
    ('{"code_system": "' + SECRET, "unreadable stats"),
    (json.dumps([SECRET]), "holds a list of length 1, not an object"),
    (json.dumps({"code_system": SECRET}), "code_system is a string of"),
    (json.dumps({"corpus": SECRET}), 'no "code_system" entry'),
])
def test_a_damaged_stats_file_is_named_without_its_content(tmp_path, content, needle):
    (tmp_path / "stats.json").write_text(content)
    with pytest.raises(VariantError) as caught:
        PreparedVariant(tmp_path).code_system()
    assert needle in str(caught.value) and str(tmp_path / "stats.json") in str(caught.value)
    assert SECRET not in str(caught.value)


def test_a_damaged_label_space_or_examples_file_is_named(tmp_path):
    (tmp_path / "label_space.json").write_text(json.dumps({"codes": [SECRET]}))
    with pytest.raises(VariantError, match="unreadable label space") as caught:
        PreparedVariant(tmp_path).label_space()
    assert SECRET not in str(caught.value)
    examples = tmp_path / "examples"
    examples.mkdir()
    table = {"id": ["1", "2"], "subject_id": ["s", None], "text": ["a note", None], "codes": [["401.9"], []]}
    pq.write_table(pa.table(table), examples / "test.parquet")
    with pytest.raises(VariantError, match="row 2 .*column 'text'.*an empty value"):
        PreparedVariant(tmp_path).examples("test")
    pq.write_table(pa.table({"id": ["1"], "text": [SECRET]}), examples / "val.parquet")
    with pytest.raises(VariantError, match="cannot read") as caught:
        read_examples(examples / "val.parquet")
    assert SECRET not in str(caught.value)
