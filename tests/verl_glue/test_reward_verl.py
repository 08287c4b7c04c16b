"""The reward through verl 0.9.1: loaded by verl's custom-reward loader from its ``pkg://`` path, run by verl's
reward manager on a DataProto, and the PHI ``recovery_bonus`` on rows of verl's own PHIDataset loader."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("verl.trainer", reason="verl lives in the rl environment (bash env/setup.sh rl)")

from llm4icd_plugins.verl.reward import REWARD_KEYS, compute_score  # noqa: E402

GOLD = ["401.9", "428.0", "96.04", "584.9"]
MAX_PROMPT = 2048  # data_config (tests/verl_glue/conftest.py): the prompt budget and seed of verl's data config
DATA_SEED = 11


# --- through verl 0.9.1 -----------------------------------------------------------------------------

def _verl_config(*overrides):
    import os

    import verl
    from hydra import compose, initialize_config_dir

    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose(config_name="ppo_trainer", overrides=[
            "reward.custom_reward_function.path=pkg://llm4icd_plugins.verl.reward",
            "reward.custom_reward_function.name=compute_score",
            *overrides,
        ])


def test_verl_loads_the_reward_through_pkg_path():
    from verl.trainer.ppo.reward import get_custom_reward_fn

    fn = get_custom_reward_fn(_verl_config("+reward.custom_reward_function.reward_kwargs.beta=2.0"))
    text = "<code>401.9, 428.0, 250.00, 272.4, 285.9, 530.81</code>"
    p, r = 2 / 6, 2 / 4  # by hand: tp 2, fp 4, fn 2
    out = fn(data_source="d", solution_str=text, ground_truth=GOLD, extra_info={})
    assert out["score"] == pytest.approx(5 * p * r / (4 * p + r)) and out["f1"] == pytest.approx(2 * p * r / (p + r))


def test_verl_passes_a_misspelled_option_and_the_first_call_names_the_right_one():
    from verl.trainer.ppo.reward import get_custom_reward_fn

    fn = get_custom_reward_fn(_verl_config("+reward.custom_reward_function.reward_kwargs.bta=2.0"))
    with pytest.raises(ValueError, match="'bta' \\(did you mean 'beta'\\?\\)"):
        fn(data_source="d", solution_str="<code>401.9</code>", ground_truth=GOLD, extra_info={})


def _data_proto(tokenizer, responses, golds):
    import torch
    from verl import DataProto

    prompt = tokenizer("code this note", return_tensors="pt")["input_ids"][0]
    ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in responses]
    width = max(len(i) for i in ids)
    resp = torch.full((len(ids), width), tokenizer.pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros((len(ids), len(prompt) + width), dtype=torch.long)
    mask[:, : len(prompt)] = 1
    for row, seq in enumerate(ids):
        resp[row, : len(seq)] = torch.tensor(seq)
        mask[row, len(prompt): len(prompt) + len(seq)] = 1
    return DataProto.from_dict(
        tensors={"prompts": prompt.repeat(len(ids), 1), "responses": resp, "attention_mask": mask},
        non_tensors={
            "data_source": np.array(["llm4icd/mimic3_full"] * len(ids), dtype=object),
            "reward_model": np.array([{"style": "rule", "ground_truth": np.array(g, dtype=object)} for g in golds]),
            "extra_info": np.array([{"index": i, "code_system": "icd9"} for i in range(len(ids))], dtype=object),
        },
    )


def test_verl_reward_manager_runs_the_reward(tiny_tokenizer_dir):
    from transformers import AutoTokenizer
    from verl.trainer.ppo.reward import load_reward_manager

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    manager = load_reward_manager(_verl_config(), tokenizer)
    assert type(manager).__name__ == "NaiveRewardManager"
    responses = ["<code>401.9, 428.0, 96.04, 584.9</code>", "<code>401.9, 250.00</code>", "no codes here",
                 "<code>401.9, 4280, 000.0, 96.04</code>"]
    # By hand against GOLD (4 codes): all; tp 1 fp 1 fn 3; no span; 4280 resolves through the row's
    # code system (icd9 in extra_info), the invented 000.0 is dropped: tp 3, fp 0, fn 1.
    expected = [1.0, 2 / (2 + 1 + 3), 0.0, 6 / (6 + 1)]
    batch = _data_proto(tokenizer, responses, [GOLD] * len(responses))
    for i, want in enumerate(expected):
        out = manager.loop.run_until_complete(manager.run_single(batch[i: i + 1]))
        assert out["reward_score"] == pytest.approx(want)
        assert set(out["reward_extra_info"]) == set(REWARD_KEYS)
    first = manager.loop.run_until_complete(manager.run_single(batch[0:1]))
    assert first["reward_score"] == 1.0


# --- through verl 0.9.1's PHIDataset ------------------------------------------------------------------------

def test_phi_dataset_rows_carry_pool_and_hints_the_bonus_reads(tmp_path, tiny_tokenizer_dir, data_config):
    from test_verl_dataset import all_items, write_predictions
    from transformers import AutoTokenizer
    from verl.trainer.ppo.utils import create_rl_dataset

    from data_tools.build import prepare
    from data_tools.build.synth import generate_mimic3
    from data_tools.phi import refresh as phi_refresh

    raw = generate_mimic3(tmp_path / "raw", n_admissions=80, seed=5)
    out = tmp_path / "prepared"
    assert prepare.main(["mimic3", "--root", str(raw["root"]), "--out", str(out), "--variants", "full",
                         "--tokenizer", str(tiny_tokenizer_dir), "--max-prompt-length", str(MAX_PROMPT),
                         "--hint-reserve", "384", "--cutoff-len", "2600", "--min-code-count", "2"]) == 0
    train = out / "mimic3_full" / "verl" / "train.parquet"
    write_predictions(train, tmp_path / "pred.jsonl")
    round_file = tmp_path / "round_1" / "train.parquet"
    phi_refresh.refresh(train, tmp_path / "pred.jsonl", round_file, 1)
    cfg = data_config(inject_prob=0.5, max_hints=2)
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    dataset = create_rl_dataset([str(round_file)], cfg, tokenizer, None, is_train=True)
    seen = {"hinted": 0, "unhinted": 0}
    for item in all_items(dataset, cfg):  # through verl's sampler, collate_fn and data loader
        extra, gold = item["extra_info"], list(item["reward_model"]["ground_truth"])
        pool, hints = list(extra["phi_pool"]), list(extra["phi_hints"])
        assert pool and set(hints) <= set(pool) <= set(gold)
        unhinted = [c for c in pool if c not in hints]
        seen["hinted" if hints else "unhinted"] += 1
        answer = "<code>" + ", ".join(gold) + "</code>"
        r = compute_score("d", answer, item["reward_model"]["ground_truth"], extra, recovery_bonus=0.5)
        assert r["n_recovered"] == len(unhinted)
        assert r["score"] == pytest.approx(1.5 if unhinted else 1.0)
        copy_hints = compute_score("d", "<code>" + ", ".join(hints) + "</code>", gold, extra, recovery_bonus=0.5)
        assert copy_hints["n_recovered"] == 0 and copy_hints["score"] <= 1.0
    assert seen["hinted"] and seen["unhinted"]


# --- answer diagnostics (answer_stats): through verl's reward manager and its validation metrics ----------------

# (response, answer/n_codes, answer/duplicates, answer/closed) by hand; 4280 resolves to 428.0 (icd9 row)
ANSWERS = [
    ("<code>401.9, 428.0, 96.04, 584.9</code>", 4, 0, 1),
    ("<code>428.0, 401.9, 428.0, 4280, x y</code>", 5, 2, 1),  # two repeats of 428.0; the malformed token counts
    ("<code>401.9</code> then <code>428.0, 584.9, 584.9</code>", 3, 1, 1),  # the last span is the answer
    ("<code>401.9, 428.0, 428.0, 428.0", 0, 0, 0),  # cut before </code>: no span
    ("no codes here", 0, 0, 0),
]


def _run_manager(tokenizer, *overrides):
    from verl.trainer.ppo.reward import load_reward_manager

    manager = load_reward_manager(_verl_config(*overrides), tokenizer)
    batch = _data_proto(tokenizer, [a[0] for a in ANSWERS], [GOLD] * len(ANSWERS))
    return [manager.loop.run_until_complete(manager.run_single(batch[i: i + 1])) for i in range(len(ANSWERS))]


def test_answer_stats_arrive_through_verl_reward_manager_and_validation_metrics(tiny_tokenizer_dir):
    from transformers import AutoTokenizer
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    from llm4icd_plugins.verl.reward import ANSWER_KEYS

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    plain = _run_manager(tokenizer)
    outs = _run_manager(tokenizer, "+reward.custom_reward_function.reward_kwargs.answer_stats=true")
    for out, base, (_, n_codes, duplicates, closed) in zip(outs, plain, ANSWERS):
        assert set(base["reward_extra_info"]) == set(REWARD_KEYS)  # off by default: the keys of today
        info = out["reward_extra_info"]
        assert set(info) == set(REWARD_KEYS) | set(ANSWER_KEYS)
        assert (info["answer/n_codes"], info["answer/duplicates"], info["answer/closed"]) == (n_codes, duplicates,
                                                                                               closed)
        assert out["reward_score"] == base["reward_score"]  # diagnostics only: the score is unchanged
    # The validation metrics verl 0.9.1's (v1) trainer logs from these reward_extra_info lists (PPOTrainer._validate).
    infos = {"reward": [o["reward_score"] for o in outs]}
    for key in ANSWER_KEYS:
        infos[key] = [o["reward_extra_info"][key] for o in outs]
    metrics = PPOTrainer._val_metrics_update(None, np.array(["llm4icd/mimic3_full"] * len(outs)),
                                             [str(i) for i in range(len(outs))], infos, [])
    for key, column in zip(ANSWER_KEYS, (1, 2, 3)):
        want = sum(a[column] for a in ANSWERS) / len(ANSWERS)
        assert metrics[f"val-aux/llm4icd/mimic3_full/{key}/mean@1"] == pytest.approx(want)


def test_answer_stats_option_is_checked_and_never_raises_on_model_output():
    with pytest.raises(ValueError, match="answer_stats='yes'"):
        compute_score("d", "<code>401.9</code>", GOLD, {}, answer_stats="yes")
    for text in (None, 7, "", "<code>" * 5000, "</code><code>" + "401.9," * 5000 + "</code>", b"<code>401.9</code>"):
        r = compute_score("d", text, GOLD, {"code_system": "icd9"}, answer_stats=True)
        assert r["answer/n_codes"] >= r["answer/duplicates"] >= 0 and r["answer/closed"] in (0.0, 1.0)
    capped = compute_score("d", "<code>" + "401.9, " * 5000 + "</code>", GOLD, {}, answer_stats=True)
    assert capped["answer/duplicates"] == capped["answer/n_codes"] - 1 > 1000 and capped["n_pred"] == 1


_PIECES = ["401.9", "4280", "428.0", "x", " ", "<code>", "</code>", "<think>", "</think>", ",", ";", "\n", "\u200b"]


def test_answer_stats_fuzz_never_raises_and_counts_add_up():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from llm4icd_plugins.verl.reward import ANSWER_KEYS

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(answer=st.one_of(st.text(max_size=120), st.lists(st.sampled_from(_PIECES), max_size=30).map("".join)),
           system=st.sampled_from(["icd9", "icd10", None]))
    def check(answer, system):
        r = compute_score("d", answer, GOLD, {"code_system": system} if system else {}, answer_stats=True)
        assert tuple(r) == REWARD_KEYS + ANSWER_KEYS
        n_codes, duplicates, closed = (r[k] for k in ANSWER_KEYS)
        assert closed in (0.0, 1.0) and (closed == 1.0 or not r["format_ok"])
        assert 0 <= duplicates <= max(n_codes - 1, 0) and r["n_pred"] <= n_codes
        if not closed:
            assert n_codes == duplicates == r["n_pred"] == 0
        plain = compute_score("d", answer, GOLD, {"code_system": system} if system else {})
        assert plain == {k: r[k] for k in REWARD_KEYS}

    check()
