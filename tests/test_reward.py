"""The verl reward: pure behaviour, and driven through verl 0.9.1's own loader and reward manager."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm4icd_plugins.reward import REWARD_KEYS, compute_score, gold_codes

GOLD = ["401.9", "428.0", "96.04", "584.9"]


def score(text, gold=GOLD, **kw):
    return compute_score(data_source="llm4icd/mimic3_full", solution_str=text, ground_truth=gold, **kw)


def test_perfect_partial_and_empty():
    assert score("<code>401.9, 428.0, 96.04, 584.9</code>")["score"] == 1.0
    r = score("<code>401.9, 428.0, 250.00</code>")  # tp 2, fp 1, fn 2
    assert (r["tp"], r["fp"], r["fn"]) == (2, 1, 2)
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(0.5)
    assert r["score"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    for text in ["401.9, 428.0", "<code>401.9, 428.0", "", None, 42]:
        r = score(text)
        assert r["score"] == 0.0 and r["format_ok"] == 0.0 and r["n_pred"] == 0


def test_result_keys_are_always_the_same_and_numeric():
    for text in ["<code>401.9</code>", "nothing", "<code></code>", "<think>x</think><code>zz, 9604</code>"]:
        r = score(text)
        assert tuple(r) == REWARD_KEYS
        assert all(isinstance(v, float) and math.isfinite(v) for v in r.values())


def test_ground_truth_forms():
    text = "<code>401.9, 96.04</code>"
    as_list = score(text, gold=["401.9", "96.04"])
    assert score(text, gold=np.array(["401.9", "96.04"], dtype=object)) == as_list
    assert score(text, gold="401.9, 96.04") == as_list
    assert score(text, gold="401.9;96.04\n") == as_list
    assert as_list["score"] == 1.0
    assert gold_codes(" 401.9 , 401.9,,") == ("401.9",)


def test_duplicates_and_normalisation_do_not_inflate():
    r = score("<code>401.9, 401.9 , 428.0., 96.04, 584.9</code>")
    assert r["score"] == 1.0 and r["n_pred"] == 4


def test_last_span_after_think_counts():
    text = "<think>maybe <code>250.00</code></think>\n<code>401.9, 428.0, 96.04, 584.9</code>"
    assert score(text)["score"] == 1.0


def test_fbeta_rewards_recall():
    text = "<code>401.9, 428.0, 250.00, 272.4, 285.9, 530.81</code>"  # high recall-ish, low precision
    r1, r2 = score(text), score(text, beta=2.0)
    p, r = 2 / 6, 2 / 4
    assert r2["score"] == pytest.approx(5 * p * r / (4 * p + r))
    assert r2["f1"] == pytest.approx(r1["score"])


def test_code_weights(tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"96.04": 5.0, "__default__": 1.0}))
    text = "<code>401.9, 428.0, 584.9</code>"  # misses the heavy code
    plain, weighted = score(text), score(text, code_weights=str(path))
    assert weighted["score"] == pytest.approx(2 * 3 / (2 * 3 + 5))
    assert weighted["score"] < plain["score"]
    assert weighted["tp"] == plain["tp"] == 3


def test_format_weight_and_label_space(tmp_path):
    from llm4icd_plugins.codes import LabelSpace

    r = score("<code>401.9</code>", format_weight=0.2)
    assert r["score"] == pytest.approx(0.8 * (2 * 1 / (2 + 3)) + 0.2)
    space = tmp_path / "ls.json"
    LabelSpace(name="t", system="icd9", codes=("401.9", "428.0", "96.04", "584.9")).save(space)
    r = score("<code>401.9, 428.0, 96.04, 584.9, 250.00</code>", label_space=str(space))
    assert r["score"] == 1.0 and r["n_off_label"] == 1


def test_code_system_drops_unknown_but_keeps_gold_retired_codes():
    gold = ["401.9", "999.99"]  # 999.99 stands for a code the current tables lack
    text = "<code>401.9, 999.99, 123.45</code>"
    open_set = score(text, gold=gold)
    assert open_set["fp"] == 1 and open_set["tp"] == 2
    checked = score(text, gold=gold, code_system="icd9")
    assert checked["tp"] == 2 and checked["fp"] == 0 and checked["n_unknown"] == 1
    penalised = score(text, gold=gold, code_system="icd9", unknown_penalty=0.1)
    assert penalised["score"] == pytest.approx(checked["score"] - 0.1)
    auto = compute_score(data_source="x", solution_str=text, ground_truth=gold,
                         extra_info={"code_system": "icd9"}, code_system="auto")
    assert auto == checked


@pytest.mark.parametrize("bad", [{"beta": 0}, {"format_weight": 1.5}, {"unknown_penalty": -1},
                                 {"code_system": "icd11"}, {"code_weights": "/nonexistent/w.json"}])
def test_configuration_errors_are_clear(bad):
    with pytest.raises(ValueError, match="reward"):
        score("<code>401.9</code>", **bad)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=400), gold=st.lists(st.sampled_from(GOLD + ["E11.9", "0BH17EZ"]), max_size=6))
def test_never_raises_on_model_output(text, gold):
    r = score(text, gold=gold)
    assert 0.0 <= r["score"] <= 1.0 and tuple(r) == REWARD_KEYS


def test_batch_micro_f1_is_recoverable_from_logged_means():
    rng = np.random.default_rng(0)
    vocab = [f"{c}.{d}" for c in range(400, 420) for d in range(3)]
    results = []
    tp = fp = fn = 0
    for _ in range(64):
        gold = list(rng.choice(vocab, size=rng.integers(1, 8), replace=False))
        pred = list(rng.choice(vocab, size=rng.integers(0, 8), replace=False))
        results.append(score("<code>" + ", ".join(pred) + "</code>", gold=gold))
        tp += len(set(pred) & set(gold)); fp += len(set(pred) - set(gold)); fn += len(set(gold) - set(pred))
    mean = {k: np.mean([r[k] for r in results]) for k in REWARD_KEYS}
    assert 2 * mean["tp"] / (2 * mean["tp"] + mean["fp"] + mean["fn"]) == pytest.approx(2 * tp / (2 * tp + fp + fn))


# --- through verl 0.9.1 -----------------------------------------------------------------------------

verl = pytest.importorskip("verl", reason="verl lives in the rl environment (bash env/setup.sh rl)")


def _verl_config(*overrides):
    import os

    from hydra import compose, initialize_config_dir

    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose(config_name="ppo_trainer", overrides=[
            "reward.custom_reward_function.path=pkg://llm4icd_plugins.reward",
            "reward.custom_reward_function.name=compute_score",
            *overrides,
        ])


def test_verl_loads_the_reward_through_pkg_path():
    from verl.trainer.ppo.reward import get_custom_reward_fn

    fn = get_custom_reward_fn(_verl_config("+reward.custom_reward_function.reward_kwargs.beta=2.0"))
    text = "<code>401.9, 428.0, 250.00, 272.4, 285.9, 530.81</code>"
    assert fn(data_source="d", solution_str=text, ground_truth=GOLD, extra_info={}) == score(text, beta=2.0)


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
    responses = ["<code>401.9, 428.0, 96.04, 584.9</code>", "<code>401.9, 250.00</code>", "no codes here"]
    batch = _data_proto(tokenizer, responses, [GOLD] * 3)
    for i, text in enumerate(responses):
        out = manager.loop.run_until_complete(manager.run_single(batch[i: i + 1]))
        decoded = tokenizer.decode(batch[i].batch["responses"][: len(tokenizer(text, add_special_tokens=False)["input_ids"])],
                                   skip_special_tokens=True)
        expected = score(decoded)
        assert out["reward_score"] == pytest.approx(expected["score"])
        assert set(out["reward_extra_info"]) == set(REWARD_KEYS)
    first = manager.loop.run_until_complete(manager.run_single(batch[0:1]))
    assert first["reward_score"] == 1.0
