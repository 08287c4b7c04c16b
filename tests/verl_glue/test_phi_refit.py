"""Hint room where hints go: prepare keeps no room for hints (every prompt gets the whole budget), the round
file keeps the whole note of truncated pooled rows, and PHIDataset re-fits the note around the hint block, so
a hinted prompt always fits with all its hints. Real parts throughout: the synthetic MIMIC-III corpus, the
tiny byte-level BPE tokenizer and chat template, data_tools.build.prepare / phi_refresh, verl's own dataset factory
and loader; token counts of the oracle come straight from ``apply_chat_template``."""

from __future__ import annotations

import hashlib
import json
import re

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("verl.trainer", reason="verl lives in the rl environment (bash env/setup.sh rl)")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from torchdata.stateful_dataloader import StatefulDataLoader  # noqa: E402
from verl.trainer.ppo.utils import create_rl_dataset, create_rl_sampler  # noqa: E402
from verl.utils.dataset.rl_dataset import collate_fn  # noqa: E402

from data_tools.phi import refresh as phi_refresh  # noqa: E402
from data_tools.build import prepare  # noqa: E402
from data_tools.build.synth import generate_mimic3  # noqa: E402
from llm4icd_plugins import prompts  # noqa: E402
from llm4icd_plugins.codes import load_code_system  # noqa: E402
from llm4icd_plugins.truncation import truncate_for_budget  # noqa: E402
from llm4icd_plugins.verl.dataset import PHIDataset  # noqa: E402

MAX_PROMPT = 1024
DATA_SEED = 7
OLD_RESERVE = 384
MARKER = "[...]"
SPEC = prompts.PromptSpec("icd9", "full", "MIMIC-III")
# Section headers the synthetic discharge summaries write (lower-cased by prepare), one per line.
HEADERS = ("past medical history:", "social history:", "family history:", "physical exam:", "pertinent results:",
           "brief hospital course:", "medications on admission:", "discharge medications:",
           "discharge disposition:", "discharge diagnosis:", "discharge condition:", "discharge instructions:",
           "followup instructions:")


def _kept(sample_id: str, code: str, share: float) -> bool:
    """A deterministic stand-in for a model's predictions."""
    return int(hashlib.sha256(f"{sample_id}|{code}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def write_predictions(train_parquet, path) -> None:
    frame = pd.read_parquet(train_parquet)
    with open(path, "w", encoding="utf-8") as fh:
        for info, rm in zip(frame["extra_info"], frame["reward_model"]):
            gold = list(rm["ground_truth"])
            mastered = _kept(info["sample_id"], "*", 0.1)
            pred = [c for c in gold if mastered or _kept(info["sample_id"], c, 0.4)]
            fh.write(json.dumps({"id": info["sample_id"], "response": "<code>" + ", ".join(pred) + "</code>"}) + "\n")


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_tokenizer_dir):
    base = tmp_path_factory.mktemp("phi_refit")
    raw = generate_mimic3(base / "raw", n_admissions=160, seed=5, long_note_fraction=0.3)
    out = base / "prepared"
    assert prepare.main(["mimic3", "--root", str(raw["root"]), "--out", str(out), "--variants", "full",
                         "--tokenizer", str(tiny_tokenizer_dir), "--max-prompt-length", str(MAX_PROMPT),
                         "--cutoff-len", "4000", "--min-code-count", "3"]) == 0  # default hint reserve
    variant = out / "mimic3_full"
    write_predictions(variant / "verl" / "train.parquet", base / "pred.jsonl")
    round_file = base / "round_1" / "train.parquet"
    phi_refresh.refresh(variant / "verl" / "train.parquet", base / "pred.jsonl", round_file, 1)
    return {"variant": variant, "round": round_file, "tokenizer_dir": tiny_tokenizer_dir, "base": base}


def all_items(dataset, cfg):
    loader = StatefulDataLoader(dataset=dataset, batch_size=8, num_workers=0, drop_last=False,
                                collate_fn=collate_fn, sampler=create_rl_sampler(cfg, dataset))
    return [{k: batch[k][i] for k in ("raw_prompt", "extra_info")}
            for batch in loader for i in range(len(batch["raw_prompt"]))]


def n_tokens(tokenizer, messages) -> int:
    return len(tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True,
                                             return_dict=False))


def note_of(content: str, hints) -> str:
    """The note shown in a training prompt, by its fixed text around it (instruction, header, block, format)."""
    head = prompts.training_instruction(SPEC) + "\n\n" + prompts.NOTE_HEADER + "\n"
    tail = "\n\n" + prompts.format_line(SPEC)
    if hints:
        system = load_code_system("icd9")
        tail = "\n\n" + prompts.render_hint_block(list(hints), [system.description(c) for c in hints], "icd9") + tail
    assert content.startswith(head) and content.endswith(tail)
    return content[len(head):len(content) - len(tail)]


def pieces_in_order(shown: str, whole: str) -> bool:
    """``shown`` is ``whole`` with runs replaced by markers: every kept piece occurs in ``whole``, in order."""
    at = 0
    for piece in (p.strip() for p in shown.split(MARKER)):
        if piece:
            found = whole.find(piece, at)
            if found < 0:
                return False
            at = found + len(piece)
    return True


@pytest.fixture(scope="module")
def frames(data):
    rounds = pd.read_parquet(data["round"])
    examples = pd.read_parquet(data["variant"] / "examples" / "train.parquet").set_index("id")
    return rounds, examples


def test_prepare_keeps_no_hint_room_and_the_round_file_keeps_whole_notes(data, tokenizer, frames):
    rounds, examples = frames
    stats = json.loads((data["variant"] / "stats.json").read_text())
    assert stats["tokens"]["hint_reserve"] == 0
    counts = [n_tokens(tokenizer, p) for p in rounds["prompt"]]
    assert max(counts) <= MAX_PROMPT
    # Unhinted prompts use the room the old reserve kept free.
    assert sum(c > MAX_PROMPT - OLD_RESERVE for c in counts) >= 5
    n_notes = 0
    for info, phi in zip(rounds["extra_info"], rounds["phi"]):
        text, shown = examples.loc[info["sample_id"], ["text", "text_truncated"]]
        if len(phi["pool"]) and text != shown:
            assert phi["note"] == text
            n_notes += 1
        else:
            assert phi["note"] is None
    assert n_notes >= 5
    summary = json.loads(phi_refresh.summary_path(data["round"]).read_text())
    assert summary["whole_notes"]["rows"] == n_notes


def test_refresh_rejects_notes_of_another_prepare_run(data, tmp_path):
    table = pq.read_table(data["variant"] / "examples" / "train.parquet").to_pylist()
    secret = "zqx-canary-note-text"
    table[3]["text_truncated"] = secret + table[3]["text_truncated"]
    other = tmp_path / "examples.parquet"
    pq.write_table(pa.Table.from_pylist(table, schema=pq.read_schema(data["variant"] / "examples" / "train.parquet")),
                   other)
    with pytest.raises(phi_refresh.RefreshError, match="row 4 of the training file") as err:
        phi_refresh.refresh(data["variant"] / "verl" / "train.parquet", data["base"] / "pred.jsonl",
                            tmp_path / "r.parquet", 1, notes=other)
    assert secret not in str(err.value)


def test_refresh_without_notes_warns_and_keeps_none(data, tmp_path, capsys):
    train = tmp_path / "subset.parquet"  # not inside a prepared variant: no examples file to find
    pq.write_table(pq.read_table(data["variant"] / "verl" / "train.parquet"), train)
    phi_refresh.refresh(train, data["base"] / "pred.jsonl", tmp_path / "r.parquet", 1)
    assert "--notes" in capsys.readouterr().err
    assert all(p["note"] is None for p in pq.read_table(tmp_path / "r.parquet").column("phi").to_pylist())


def test_through_verl_loader_hinted_fit_with_all_hints_unhinted_untouched(data, tokenizer, frames, data_config):
    rounds, examples = frames
    cfg = data_config(inject_prob=0.5, min_hints=3, max_hints=3)
    dataset = create_rl_dataset(str(data["round"]), cfg, tokenizer, None)
    assert isinstance(dataset, PHIDataset)
    prepared = {e["sample_id"]: list(p) for e, p in zip(rounds["extra_info"], rounds["prompt"])}
    pools = {e["sample_id"]: list(p["pool"]) for e, p in zip(rounds["extra_info"], rounds["phi"])}
    items = all_items(dataset, cfg)
    hinted = 0
    for it in items:
        sid, hints = it["extra_info"]["sample_id"], tuple(it["extra_info"]["phi_hints"])
        messages = [dict(m) for m in it["raw_prompt"]]
        if not hints:
            assert messages == [dict(m) for m in prepared[sid]]  # byte for byte
            continue
        hinted += 1
        assert len(hints) == min(3, len(pools[sid])) and set(hints) <= set(pools[sid])
        assert n_tokens(tokenizer, messages) <= MAX_PROMPT
        shown = note_of(messages[0]["content"], hints)
        whole, prepared_note = examples.loc[sid, ["text", "text_truncated"]]
        assert pieces_in_order(shown, whole)
        assert len(shown.replace(MARKER, "")) <= len(prepared_note.replace(MARKER, ""))  # hints add no note text
    assert 0.3 < hinted / len(items) < 0.7
    assert dataset.hint_stats["hints_dropped_for_budget"] == 0
    assert dataset.hint_stats["notes_refitted"] > 0


def test_validation_prompts_are_byte_identical(data, tokenizer, data_config, build):
    val = data["variant"] / "verl" / "val.parquet"
    original = pq.read_table(val).column("prompt").to_pylist()
    items = all_items(build(val, tokenizer, inject_prob=1.0), data_config())
    assert all(list(it["extra_info"]["phi_hints"]) == [] for it in items)
    assert sorted(json.dumps([dict(m) for m in it["raw_prompt"]], sort_keys=True) for it in items) == \
        sorted(json.dumps(p, sort_keys=True) for p in original)


def test_validation_rows_with_pools_and_whole_notes_are_never_hinted(data, tokenizer, tmp_path, data_config):
    rows = pq.read_table(data["round"]).to_pylist()
    relabelled = set()
    for row in rows:
        if row["phi"]["note"] is not None and len(relabelled) < len(rows) // 3:
            row["extra_info"]["split"] = "val"
            relabelled.add(row["extra_info"]["sample_id"])
    mixed = tmp_path / "mixed.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(data["round"])), mixed)
    prepared = {r["extra_info"]["sample_id"]: r["prompt"] for r in rows}
    cfg = data_config(inject_prob=1.0)
    items = all_items(create_rl_dataset(str(mixed), cfg, tokenizer, None), cfg)
    seen = {it["extra_info"]["sample_id"]: it for it in items}
    assert relabelled and relabelled <= set(seen)
    for sid in relabelled:
        assert list(seen[sid]["extra_info"]["phi_hints"]) == []
        assert [dict(m) for m in seen[sid]["raw_prompt"]] == prepared[sid]
    assert all(len(it["extra_info"]["phi_hints"]) for it in items if it["extra_info"]["split"] == "train")


@pytest.fixture(scope="module")
def dataset(data, tokenizer, build):
    return build(data["round"], tokenizer, inject_prob=1.0)


@pytest.fixture(scope="module")
def label_codes(data):
    codes = json.loads((data["variant"] / "label_space.json").read_text())["codes"]
    system = load_code_system("icd9")
    return sorted(codes, key=lambda c: (-len(system.description(c) or ""), c))  # longest blocks first


def test_hinted_prompt_always_fits_with_all_its_hints(data, tokenizer, frames, dataset, label_codes):
    rounds, _ = frames
    rows = [i for i, p in enumerate(rounds["phi"]) if len(p["pool"])]

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.sampled_from(rows), st.lists(st.sampled_from(label_codes[:40]), min_size=1, max_size=5, unique=True))
    def check(row, hints):
        messages = list(rounds["prompt"][row])
        sid, note = rounds["extra_info"][row]["sample_id"], rounds["phi"][row]["note"]
        out, kept = dataset.hinted_messages([dict(m) for m in messages], hints, "icd9", sid, note)
        assert kept == tuple(hints)
        assert n_tokens(tokenizer, out) <= MAX_PROMPT
        whole = note if note is not None else note_of(messages[0]["content"], ())
        assert pieces_in_order(note_of(out[0]["content"], hints), whole)

    check()


def test_refit_is_the_tiered_truncation_and_keeps_headers_and_diagnoses(data, tokenizer, frames, dataset,
                                                                         label_codes):
    rounds, _ = frames
    hints = label_codes[-3:]  # a block of realistic size next to the budget (MIMIC: ~400 of 4096 tokens)
    system = load_code_system("icd9")
    checked = 0
    for prompt, info, phi in zip(rounds["prompt"], rounds["extra_info"], rounds["phi"]):
        if phi["note"] is None:
            continue
        whole = phi["note"]
        out, kept = dataset.hinted_messages([dict(m) for m in prompt], hints, "icd9", info["sample_id"], whole)
        shown = note_of(out[0]["content"], kept)
        assert kept == tuple(hints) and MARKER in shown
        # The batch truncation of prepare on the same hinted prompt gives the same note.
        batch = truncate_for_budget([whole], tokenizer, budget=MAX_PROMPT, messages_fn=lambda n: prompts.build_messages(
            n, SPEC, [(c, system.description(c)) for c in hints]))[0]
        assert batch.text == shown
        for header in HEADERS:
            if re.search(rf"^{re.escape(header)}", whole, re.MULTILINE):
                assert re.search(rf"^{re.escape(header)}", shown, re.MULTILINE), header
        start = whole.index("discharge diagnosis:")
        block = whole[start:whole.index("discharge condition:", start)].rstrip()
        assert block in shown
        # A tight budget (tiers 2-3: text around the note's centre, then headers) is where re-cutting the
        # prompt's already truncated note would differ from cutting the whole note.
        tight = label_codes[:5]
        out, kept = dataset.hinted_messages([dict(m) for m in prompt], tight, "icd9", info["sample_id"], whole)
        batch = truncate_for_budget([whole], tokenizer, budget=MAX_PROMPT, messages_fn=lambda n: prompts.build_messages(
            n, SPEC, [(c, system.description(c)) for c in tight]))[0]
        assert kept == tuple(tight) and batch.text == note_of(out[0]["content"], kept)
        checked += 1
    assert checked >= 5


def test_hints_are_dropped_only_when_not_even_an_empty_note_fits(data, tokenizer, frames, label_codes, build):
    rounds, _ = frames
    small = build(data["round"], tokenizer, inject_prob=1.0)
    system = load_code_system("icd9")
    hints = label_codes[:5]
    empty_two = n_tokens(tokenizer, prompts.build_messages("", SPEC, [(c, system.description(c)) for c in hints[:2]]))
    small.max_prompt_length = empty_two + 3
    row = next(i for i, p in enumerate(rounds["phi"]) if p["note"] is not None)
    out, kept = small.hinted_messages([dict(m) for m in rounds["prompt"][row]], hints, "icd9",
                                      rounds["extra_info"][row]["sample_id"], rounds["phi"][row]["note"])
    assert kept == tuple(hints[:2])
    assert n_tokens(tokenizer, out) <= small.max_prompt_length
    assert small.hint_stats["hints_dropped_for_budget"] == 3
