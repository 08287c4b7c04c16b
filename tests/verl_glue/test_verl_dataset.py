"""PHIDataset built through verl's own create_rl_dataset, sampler, collate_fn and StatefulDataLoader, on
parquet files made by data_tools.build.prepare from the synthetic MIMIC-III corpus (tiny tokenizer): rows, hints,
prompt text and the prompt budget checked with the real chat template."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("verl.trainer", reason="verl lives in the rl environment (bash env/setup.sh rl)")
from torchdata.stateful_dataloader import StatefulDataLoader  # noqa: E402
from verl.trainer.ppo.utils import create_rl_dataset, create_rl_sampler  # noqa: E402
from verl.utils.dataset.rl_dataset import collate_fn  # noqa: E402

from data_tools.phi import refresh as phi_refresh  # noqa: E402
from data_tools.build import prepare  # noqa: E402
from data_tools.build.synth import generate_mimic3  # noqa: E402
from llm4icd_plugins import prompts  # noqa: E402
from llm4icd_plugins.codes import load_code_system  # noqa: E402
from llm4icd_plugins.verl.reward import compute_score  # noqa: E402
from llm4icd_plugins.verl.dataset import PHIDataset, split_prompt  # noqa: E402

MAX_PROMPT = 2048
DATA_SEED = 11
HINT_RESERVE = 384


def _predicted(sample_id: str, code: str, keep: float = 0.6) -> bool:
    """A deterministic stand-in for a model's predictions: keeps ~60 % of the gold codes."""
    h = int(hashlib.sha256(f"{sample_id}|{code}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < keep


def write_predictions(train_parquet, path, keep=0.6):
    frame = pd.read_parquet(train_parquet)
    with open(path, "w", encoding="utf-8") as fh:
        for info, rm in zip(frame["extra_info"], frame["reward_model"]):
            gold = list(rm["ground_truth"])
            mastered = _predicted(info["sample_id"], "*", 0.15)  # some rows get every code right
            pred = [c for c in gold if mastered or _predicted(info["sample_id"], c, keep)] + ["999.9"]
            fh.write(json.dumps({"id": info["sample_id"], "response": "<code>" + ", ".join(pred) + "</code>",
                                 "gold": gold}) + "\n")


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_tokenizer_dir):
    base = tmp_path_factory.mktemp("phi_data")
    raw = generate_mimic3(base / "raw", n_admissions=200, seed=3)
    out = base / "prepared"
    assert prepare.main(["mimic3", "--root", str(raw["root"]), "--out", str(out), "--variants", "full",
                         "--tokenizer", str(tiny_tokenizer_dir), "--max-prompt-length", str(MAX_PROMPT),
                         "--hint-reserve", str(HINT_RESERVE), "--cutoff-len", "2600", "--min-code-count", "3"]) == 0
    variant = out / "mimic3_full"
    write_predictions(variant / "verl" / "train.parquet", base / "pred.jsonl")
    round_file = base / "round_1" / "train.parquet"
    phi_refresh.refresh(variant / "verl" / "train.parquet", base / "pred.jsonl", round_file, 1)
    return {"variant": variant, "round": round_file, "tokenizer_dir": tiny_tokenizer_dir}


def all_items(dataset, cfg, batch_size=8):
    loader = StatefulDataLoader(dataset=dataset, batch_size=batch_size, num_workers=0, drop_last=False,
                                collate_fn=collate_fn, sampler=create_rl_sampler(cfg, dataset))
    items = []
    for batch in loader:
        for i in range(len(batch["raw_prompt"])):
            items.append({k: batch[k][i] for k in ("raw_prompt", "extra_info", "reward_model", "index")})
    return items


def n_tokens(tokenizer, messages):
    return len(tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True,
                                             return_dict=False))


def test_rows_hints_and_prompts_through_verl_loader(data, tokenizer, data_config):
    cfg = data_config(inject_prob=0.5)
    dataset = create_rl_dataset(str(data["round"]), cfg, tokenizer, None)
    assert isinstance(dataset, PHIDataset)
    rounds = pd.read_parquet(data["round"])
    pools = {e["sample_id"]: list(p["pool"]) for e, p in zip(rounds["extra_info"], rounds["phi"])}
    nonempty = {s for s, p in pools.items() if p}
    assert 0 < len(nonempty) < len(pools)  # some rows are mastered and must be skipped
    assert len(dataset) == len(nonempty) and dataset.hint_stats["rows_skipped_empty_pool"] == len(pools) - len(nonempty)

    examples = pd.read_parquet(data["variant"] / "examples" / "train.parquet").set_index("id")
    plain = {e["sample_id"]: p[0]["content"] for e, p in zip(rounds["extra_info"], rounds["prompt"])}
    spec = prompts.PromptSpec("icd9", "full", "MIMIC-III")
    system = load_code_system("icd9")
    items = all_items(dataset, cfg)
    assert sorted(it["extra_info"]["sample_id"] for it in items) == sorted(nonempty)
    n_hinted = 0
    for it in items:
        sid, hints = it["extra_info"]["sample_id"], list(it["extra_info"]["phi_hints"])
        content = it["raw_prompt"][0]["content"]
        assert set(hints) <= set(pools[sid]) and len(set(hints)) == len(hints) <= 5
        if hints:
            n_hinted += 1
            note = examples.loc[sid, "text_truncated"]
            expected = prompts.build_user_prompt(note, spec, [(c, system.description(c)) for c in hints])
            assert content == expected  # same prompt as prepare's, block before the format line
            assert content.index("Training hint:") < content.index("Output only the final")
        else:
            assert content == plain[sid]
        assert n_tokens(tokenizer, it["raw_prompt"]) <= MAX_PROMPT
        gold = list(it["reward_model"]["ground_truth"])
        assert set(pools[sid]) <= set(gold)  # the target stays the full gold set, not the hints
        answer = prompts.format_answer(gold)
        assert compute_score("llm4icd/mimic3_full", answer, gold, it["extra_info"])["score"] == 1.0
    assert 0.3 < n_hinted / len(items) < 0.7


def test_injection_probability_extremes(data, tokenizer, data_config, build):
    never = all_items(build(data["round"], tokenizer, inject_prob=0.0), data_config())
    assert all(len(it["extra_info"]["phi_hints"]) == 0 for it in never)
    always = build(data["round"], tokenizer, inject_prob=1.0)
    items = all_items(always, data_config())
    assert all(len(it["extra_info"]["phi_hints"]) >= 1 for it in items)
    assert always.hint_stats["rows_hinted"] == len(items)


def test_budget_refits_the_note_rather_than_dropping_hints(data, tokenizer, data_config):
    rounds = pd.read_parquet(data["round"])
    pools = {e["sample_id"]: len(p["pool"]) for e, p in zip(rounds["extra_info"], rounds["phi"])}
    longest = max(n_tokens(tokenizer, p) for p in rounds["prompt"])
    budget = longest + 120  # room for a short block with one or two hints, not five: the note gives way
    cfg = data_config(inject_prob=1.0, min_hints=5, max_hints=5)
    cfg.max_prompt_length = budget
    dataset = create_rl_dataset(str(data["round"]), cfg, tokenizer, None)
    items = all_items(dataset, cfg)
    for it in items:
        assert n_tokens(tokenizer, it["raw_prompt"]) <= budget
        assert len(it["extra_info"]["phi_hints"]) == min(5, pools[it["extra_info"]["sample_id"]])
    assert dataset.hint_stats["hints_dropped_for_budget"] == 0
    assert dataset.hint_stats["notes_refitted"] > 0


def Counter_(values):
    from collections import Counter

    return Counter(values)


def test_validation_rows_are_never_hinted(data, tokenizer, data_config, build):
    val = data["variant"] / "verl" / "val.parquet"
    dataset = build(val, tokenizer, inject_prob=1.0)
    original = pd.read_parquet(val)
    items = all_items(dataset, data_config())
    assert len(items) == len(original)
    for it in items:
        assert list(it["extra_info"]["phi_hints"]) == []
        assert "Training hint:" not in it["raw_prompt"][0]["content"]


def test_validation_rows_with_hint_pools_are_never_hinted(data, tokenizer, tmp_path, data_config):
    # A round file whose rows carry real, non-empty pools, every other row relabelled as validation:
    # only the training rows may get hints, whatever the injection probability.
    frame = pq.read_table(data["round"]).to_pylist()
    for i, row in enumerate(frame):
        if i % 2:
            row["extra_info"]["split"] = "val"
    mixed = tmp_path / "mixed.parquet"
    pq.write_table(pa.Table.from_pylist(frame, schema=pq.read_schema(data["round"])), mixed)
    val_ids = {r["extra_info"]["sample_id"] for r in frame if r["extra_info"]["split"] == "val" and r["phi"]["pool"]}
    assert val_ids
    cfg = data_config(inject_prob=1.0)
    dataset = create_rl_dataset(str(mixed), cfg, tokenizer, None)
    items = all_items(dataset, cfg)
    seen = {it["extra_info"]["sample_id"]: it for it in items}
    assert val_ids <= set(seen)
    for sid in val_ids:
        assert list(seen[sid]["extra_info"]["phi_hints"]) == []
        assert "Training hint:" not in seen[sid]["raw_prompt"][0]["content"]
    assert any(len(it["extra_info"]["phi_hints"]) for it in items if it["extra_info"]["split"] == "train")


def test_draws_are_reproducible_under_the_seed(data, tokenizer, build):
    def hints(seed):
        ds = build(data["round"], tokenizer, seed=seed)
        return [tuple(ds[i]["extra_info"]["phi_hints"]) for i in range(len(ds))]

    assert hints(1) == hints(1)
    assert hints(1) != hints(2)


def test_training_file_without_pools_is_a_clear_error(data, tokenizer, build):
    with pytest.raises(ValueError, match=r"phi\.refresh"):
        build(data["variant"] / "verl" / "train.parquet", tokenizer)


def test_misspelled_knob_is_a_clear_error(data, tokenizer, build):
    with pytest.raises(ValueError, match="did you mean data.phi_inject_prob"):
        build(data["round"], tokenizer, inject_prb=0.3)


# --- data.phi_hint_style: the controls of a PHI ablation ------------------------------------------------------

def test_hint_styles_change_only_the_block(data, tokenizer, build):
    import re

    rounds = pd.read_parquet(data["round"])
    plain = {e["sample_id"]: p[0]["content"] for e, p in zip(rounds["extra_info"], rounds["prompt"])}
    system = load_code_system("icd9")
    default = build(data["round"], tokenizer, inject_prob=1.0)
    styles = {style: build(data["round"], tokenizer, inject_prob=1.0, hint_style=style)
              for style in ("paper", "no_example", "neutral")}
    assert len(default) == len(styles["neutral"]) > 10
    gaps = []
    for i in range(len(default)):
        row = {style: ds[i] for style, ds in styles.items()}
        base = default[i]
        sid = base["extra_info"]["sample_id"]
        hints = list(base["extra_info"]["phi_hints"])
        assert hints and row["paper"]["raw_prompt"] == base["raw_prompt"]  # the default is the paper's block
        for style in ("paper", "no_example"):
            assert list(row[style]["extra_info"]["phi_hints"]) == hints
        head, note, tail = split_prompt(plain[sid], "icd9")
        descriptions = [system.description(c) for c in hints]
        paper_block = prompts.render_hint_block(hints, descriptions, "icd9")
        assert base["raw_prompt"][0]["content"] == head + note + "\n\n" + paper_block + tail
        short = row["no_example"]["raw_prompt"][0]["content"]
        no_example = prompts.render_hint_block(hints, descriptions, "icd9", example=False)
        assert short == head + note + "\n\n" + no_example + tail
        assert "Mini example" not in short and "Mini example" in base["raw_prompt"][0]["content"]
        neutral = row["neutral"]["raw_prompt"][0]["content"]
        assert neutral.startswith(head + note + "\n\n") and neutral.endswith(tail)
        block = neutral[len(head + note + "\n\n"):len(neutral) - len(tail)]
        assert block.startswith(prompts.NEUTRAL_HEAD + "\n")
        assert not re.search(r"[0-9<>]", block) and not any(c in block for c in hints)
        assert list(row["neutral"]["extra_info"]["phi_hints"]) == []  # nothing shown, every pool code recoverable
        assert list(row["neutral"]["extra_info"]["phi_pool"]) == list(base["extra_info"]["phi_pool"])
        gaps.append(n_tokens(tokenizer, row["neutral"]["raw_prompt"]) - n_tokens(tokenizer, base["raw_prompt"]))
        for r in row.values():
            assert n_tokens(tokenizer, r["raw_prompt"]) <= MAX_PROMPT
    assert max(map(abs, gaps)) <= 2  # same position and token length as the paper block
    assert styles["neutral"].hint_stats["rows_hinted"] == default.hint_stats["rows_hinted"] == len(default)


def test_neutral_block_length_follows_the_paper_block(data, tokenizer, build):
    dataset = build(data["round"], tokenizer, hint_style="neutral")
    counts = {}
    for codes in (["401.9"], ["401.9", "428.0", "584.9", "276.2", "250.00"]):
        paper = prompts.render_hint_block(codes, [load_code_system("icd9").description(c) for c in codes], "icd9")
        neutral = dataset.hint_block(codes, "icd9")
        counts[len(codes)] = dataset._n_tokens(neutral)
        assert abs(counts[len(codes)] - dataset._n_tokens(paper)) <= 2
    assert counts[5] > counts[1] + 20  # five hints make a longer block, so a longer filler


def test_unknown_hint_style_is_a_clear_error(data, tokenizer, build):
    with pytest.raises(ValueError, match=r"data\.phi_hint_style='nuetral'.*one of paper, no_example, neutral"):
        build(data["round"], tokenizer, hint_style="nuetral")
