"""prepare --candidates/--top-k on the synthetic corpus with real cross-fitted candidates from
data_tools.evaluation.candidates: the block is in every split's prompt (SFT and RL alike), lists the top K
candidates of the note's own row that lie in the variant's label space, is never cut while the note is, the
prompt fits both trainers' budgets; PHI's prompt split keeps it; a note without candidates is an error naming
the file and the id; without the flags the prompt is the paper's."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from data_tools.build import prepare
from data_tools.build.synth import generate_mimic3
from data_tools.evaluation import candidates as candidates_tool
from llm4icd_plugins import prompts
from llm4icd_plugins.codes import load_code_system

SPLITS = ("train", "val", "test")
TOP_K = 6
MAX_PROMPT, CUTOFF = 900, 1000
VARIANTS = ("mimic3_full", "mimic3_top50")


def _run(args) -> int:
    return prepare.main([str(a) for a in args])


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_tokenizer_dir):
    base = tmp_path_factory.mktemp("prep_cand")
    root = generate_mimic3(base / "raw", n_admissions=160, seed=5)["root"]
    common = ["mimic3", "--root", root, "--min-code-count", 3, "--tokenizer", tiny_tokenizer_dir,
              "--max-prompt-length", MAX_PROMPT, "--cutoff-len", CUTOFF]
    assert _run([*common, "--out", base / "plain"]) == 0
    cand = base / "cand"
    assert candidates_tool.main(["train", "--data", str(base / "plain" / "mimic3_full"), "--coder", "knn", "--out",
                                 str(cand), "--folds", "3", "--top-k", "30", "--neighbours", "5",
                                 "--no-progress"]) == 0
    assert _run([*common, "--out", base / "with", "--candidates", cand, "--top-k", TOP_K]) == 0
    return {"base": base, "root": root, "common": common, "cand": cand, "tok": tiny_tokenizer_dir}


def _ranked(cand: Path) -> dict[str, list[str]]:
    ranked = {}
    for split in SPLITS:
        for line in (cand / f"candidates_{split}.jsonl").read_text().splitlines():
            row = json.loads(line)
            ranked[str(row["id"])] = row["codes"]
    return ranked


def _rows(variant: Path, split: str):
    examples = pd.read_parquet(variant / "examples" / f"{split}.parquet")
    verl = pd.read_parquet(variant / "verl" / f"{split}.parquet")
    sharegpt = [json.loads(line) for line in (variant / "sharegpt" / f"{split}.jsonl").read_text().splitlines()]
    return examples, verl, sharegpt


def _split_block(content: str) -> tuple[str, str | None, str]:
    """(instruction, candidate block or None, rest from the note header on), cut on the paper's layout."""
    header = "\n\n" + prompts.NOTE_HEADER + "\n"
    head, rest = content.split(header, 1)
    instruction, _, block = head.partition("\n\n")
    return instruction, block or None, prompts.NOTE_HEADER + "\n" + rest


@pytest.mark.parametrize("name", VARIANTS)
def test_block_lists_top_k_in_label_space_in_every_split(built, name):
    variant = built["base"] / "with" / name
    space = json.loads((variant / "label_space.json").read_text())["codes"]
    ranked = _ranked(built["cand"])
    system = load_code_system("icd9")
    spec = prompts.PromptSpec("icd9", name.rsplit("_", 1)[1])
    n_short = 0
    for split in SPLITS:
        examples, verl, sharegpt = _rows(variant, split)
        assert len(examples) > 0
        for sample_id, truncated, prompt, conversation in zip(examples["id"], examples["text_truncated"],
                                                              verl["prompt"], sharegpt):
            content = prompt[0]["content"]
            assert conversation["messages"][0]["content"] == content  # SFT and RL see the same prompt
            instruction, block, rest = _split_block(content)
            assert instruction == prompts.training_instruction(spec) and block is not None
            assert "may or may not apply" in block
            listed = [line[2:].split(" (", 1)[0] for line in block.splitlines() if line.startswith("- ")]
            expected = [c for c in ranked[sample_id] if c in space][:TOP_K]
            assert listed == expected or (not expected and listed == ["(no suggestions)"])
            assert len(listed) <= TOP_K
            n_short += len(expected) < TOP_K
            for code in expected:
                description = prompts.truncate_description(system.description(code))
                assert (f"- {code} ({description})" if description else f"- {code}") in block.splitlines()
            # The rest is the paper's prompt around the (possibly truncated) note.
            assert rest == prompts.NOTE_HEADER + "\n" + truncated + "\n\n" + prompts.format_line(spec)
    if name == "mimic3_full":
        assert n_short < sum(len(_rows(variant, s)[0]) for s in SPLITS)  # K is the limit for most notes


def test_prompts_fit_the_budgets_and_the_note_is_cut_not_the_block(built):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(built["tok"])
    variant = built["base"] / "with" / "mimic3_full"
    plain = built["base"] / "plain" / "mimic3_full"
    stats = json.loads((variant / "stats.json").read_text())
    assert stats["tokens"]["n_truncated"] > 0
    longer_cut = 0
    for split in SPLITS:
        examples, verl, sharegpt = _rows(variant, split)
        plain_examples = pd.read_parquet(plain / "examples" / f"{split}.parquet")
        assert plain_examples["id"].tolist() == examples["id"].tolist()
        for text, truncated, plain_truncated, prompt, conversation in zip(
                examples["text"], examples["text_truncated"], plain_examples["text_truncated"], verl["prompt"],
                sharegpt):
            user = [dict(m) for m in prompt]
            n_prompt = len(tok.apply_chat_template(user, tokenize=True, add_generation_prompt=True,
                                                   return_dict=False))
            n_full = len(tok.apply_chat_template(conversation["messages"], tokenize=True, return_dict=False))
            assert n_prompt <= MAX_PROMPT and n_full <= CUTOFF
            if truncated != text:
                assert "[...]" in truncated
                # The block's tokens came out of the note: it keeps less than without the block.
                longer_cut += len(truncated) < len(plain_truncated)
                assert len(truncated) <= len(plain_truncated)
    assert longer_cut > 0


def test_stats_record_the_candidates_and_plain_prompts_have_no_block(built):
    cand = built["cand"]
    digest = hashlib.sha256()
    for file in sorted(cand.glob("candidates_*.jsonl")):
        data = file.read_bytes()
        digest.update(f"{file.name}\0{len(data)}\0".encode())
        digest.update(data)
    for name in VARIANTS:
        stats = json.loads((built["base"] / "with" / name / "stats.json").read_text())
        record = stats["candidates"]
        assert record["sha256"] == digest.hexdigest() and record["top_k"] == TOP_K
        assert record["source"] == str(cand) and record["listed_per_note"]["max"] <= TOP_K
        plain = built["base"] / "plain" / name
        assert "candidates" not in json.loads((plain / "stats.json").read_text())
        spec = prompts.PromptSpec("icd9", name.rsplit("_", 1)[1])
        for split in SPLITS:
            examples, verl, sharegpt = _rows(plain, split)
            for truncated, prompt in zip(examples["text_truncated"], verl["prompt"]):
                # Without --candidates: the paper's prompt, byte for byte.
                assert prompt[0]["content"] == (prompts.training_instruction(spec) + "\n\n" + prompts.NOTE_HEADER
                                                + "\n" + truncated + "\n\n" + prompts.format_line(spec))


def test_phi_prompt_split_keeps_the_block(built):
    pytest.importorskip("verl")
    from llm4icd_plugins.verl.dataset import insert_hint_block, split_prompt

    variant = built["base"] / "with" / "mimic3_full"
    examples, verl, _ = _rows(variant, "train")
    hints = [("401.9", "Unspecified essential hypertension")]
    for truncated, prompt in zip(examples["text_truncated"][:20], verl["prompt"][:20]):
        content = prompt[0]["content"]
        head, note, tail = split_prompt(content, "icd9")
        assert note == truncated and "Suggested codes:" in head  # a re-fit cuts the note only
        _, block, _ = _split_block(content)
        pairs = [(line[2:].split(" (", 1)[0], None) for line in block.splitlines() if line.startswith("- ")]
        hinted = insert_hint_block(content, hints, "icd9", max_description_chars=prompts.DESCRIPTION_MAX_CHARS)
        assert hinted.startswith(head) and hinted.endswith(tail) and "Training hint:" in hinted
        assert hinted.index("Suggested codes:") < hinted.index(prompts.NOTE_HEADER) < hinted.index("Training hint:")
        if pairs != [("(no suggestions)", None)]:
            assert [c for c, _ in pairs] == [line[2:].split(" (", 1)[0] for line in hinted.splitlines()
                                             if line.startswith("- ")][:len(pairs)]


def test_note_without_candidates_is_an_error_naming_file_and_id(built, tmp_path, capsys):
    broken = tmp_path / "cand"
    shutil.copytree(built["cand"], broken)
    lines = (broken / "candidates_val.jsonl").read_text().splitlines()
    missing = json.loads(lines[3])["id"]
    (broken / "candidates_val.jsonl").write_text("\n".join(lines[:3] + lines[4:]) + "\n")
    out = tmp_path / "out"
    assert _run([*built["common"], "--out", out, "--candidates", broken]) == 2
    err = capsys.readouterr().err
    assert "candidates_val.jsonl" in err and repr(str(missing)) in err and "1 of" in err
    assert not out.exists() or not any(out.iterdir())
    note = pd.read_parquet(built["base"] / "plain" / "mimic3_full" / "examples" / "val.parquet")["text"].iloc[0]
    assert note[:40] not in err


@pytest.mark.parametrize("extra, message", [
    (["--top-k", "5"], "--top-k is the number of candidates"),
    (["--candidates", "CAND", "--top-k", "0"], "at least one candidate"),
    (["--candidates", "NOWHERE"], "no such file or folder"),
])
def test_flag_errors(built, tmp_path, capsys, extra, message):
    extra = [str(built["cand"]) if e == "CAND" else str(tmp_path / "nowhere") if e == "NOWHERE" else e
             for e in extra]
    assert _run(["mimic3", "--root", built["root"], "--out", tmp_path / "out", *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_candidates_row_is_an_error_naming_the_row(built, tmp_path, capsys):
    broken = tmp_path / "cand"
    shutil.copytree(built["cand"], broken)
    lines = (broken / "candidates_test.jsonl").read_text().splitlines()
    lines[1] = json.dumps({"id": json.loads(lines[1])["id"], "codes": "401.9, 428.0", "scores": [1.0]})
    (broken / "candidates_test.jsonl").write_text("\n".join(lines) + "\n")
    assert _run(["mimic3", "--root", built["root"], "--out", tmp_path / "out", "--candidates", broken]) == 2
    err = capsys.readouterr().err
    assert "candidates_test.jsonl" in err and "row 2" in err and "codes" in err and "401.9, 428.0" not in err


def test_phi_hinted_prompts_keep_the_block_and_fit(built, tmp_path):
    """Through PHIDataset (verl's loader, a real round file): every hinted prompt keeps the candidate block of its
    prepared prompt, adds the hint block, and fits max_prompt_length; only the note was re-fitted."""
    pytest.importorskip("verl.trainer")
    import verl.trainer.config as verl_config
    from omegaconf import OmegaConf, open_dict
    from transformers import AutoTokenizer
    from verl.trainer.ppo.utils import create_rl_dataset

    from data_tools.phi import refresh as phi_refresh

    variant = built["base"] / "with" / "mimic3_full"
    train = variant / "verl" / "train.parquet"
    frame = pd.read_parquet(train)
    predictions = tmp_path / "pred.jsonl"  # the model found the first gold code of every note, missed the rest
    predictions.write_text("".join(json.dumps({"id": e["sample_id"], "response": f"<code>{rm['ground_truth'][0]}"
                                                                                 "</code>"}) + "\n"
                                   for e, rm in zip(frame["extra_info"], frame["reward_model"])))
    round_file = tmp_path / "round_1" / "train.parquet"
    phi_refresh.refresh(train, predictions, round_file, 1)
    cfg = OmegaConf.load(Path(verl_config.__file__).parent / "data" / "legacy_data.yaml")
    cfg.custom_cls.path = "pkg://llm4icd_plugins.verl.dataset"
    cfg.custom_cls.name = "PHIDataset"
    cfg.max_prompt_length, cfg.seed, cfg.dataloader_num_workers = MAX_PROMPT, 3, 0
    with open_dict(cfg):
        cfg.phi_inject_prob, cfg.phi_min_hints, cfg.phi_max_hints = 1.0, 3, 3
    tok = AutoTokenizer.from_pretrained(built["tok"])
    dataset = create_rl_dataset(str(round_file), cfg, tok, None, is_train=True)
    prepared = {e["sample_id"]: p[0]["content"] for e, p in zip(frame["extra_info"], frame["prompt"])}
    hinted = 0
    for i in range(len(dataset)):
        item = dataset[i]
        content = item["raw_prompt"][0]["content"]
        original = prepared[item["extra_info"]["sample_id"]]
        assert _split_block(content)[1] == _split_block(original)[1]  # the block, unchanged
        if item["extra_info"]["phi_hints"]:
            hinted += 1
            assert "Training hint:" in content
            assert len(tok.apply_chat_template(item["raw_prompt"], tokenize=True, add_generation_prompt=True,
                                               return_dict=False)) <= MAX_PROMPT
        else:
            assert content == original
    assert hinted > 0 and dataset.hint_stats["notes_refitted"] > 0
