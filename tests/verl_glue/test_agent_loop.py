"""The seeded agent loop: verl's registry file names it, it is a SingleTurnAgentLoop, and the seed of a request
depends on the step, the rollout's index in its group and the prompt, never on submission order."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("verl")
from hydra.utils import get_class  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop  # noqa: E402

from llm4icd_plugins.verl import AGENT_LOOPS_YAML, SEEDED_AGENT_LOOP  # noqa: E402
from llm4icd_plugins.verl.agent_loop import SeededSingleTurnAgentLoop, request_seed  # noqa: E402

PROMPT = [{"role": "user", "content": "codes please"}]


def test_registry_file_names_the_class_verl_instantiates():
    entries = OmegaConf.load(AGENT_LOOPS_YAML)
    (entry,) = [e for e in entries if e.name == SEEDED_AGENT_LOOP]
    cls = get_class(entry._target_)
    assert cls is SeededSingleTurnAgentLoop and issubclass(cls, SingleTurnAgentLoop)


def test_request_seed_is_stable_and_distinct_per_rollout_step_and_prompt():
    seeds = {request_seed(42, 3, session, PROMPT) for session in range(8)}
    assert len(seeds) == 8, "the G rollouts of one prompt get different seeds"
    assert request_seed(42, 3, 0, PROMPT) == request_seed(42, 3, 0, [dict(m) for m in PROMPT])
    assert request_seed(42, 3, 0, PROMPT) != request_seed(42, 4, 0, PROMPT)
    assert request_seed(42, 3, 0, PROMPT) != request_seed(43, 3, 0, PROMPT)
    other = [{"role": "user", "content": "other note"}]
    assert request_seed(42, 3, 0, PROMPT) != request_seed(42, 3, 0, other)
    assert all(0 <= s < 2**31 for s in seeds)


def test_run_adds_the_seed_and_keeps_a_given_one(monkeypatch):
    seen = []

    async def parent_run(self, sampling_params, priority=0, **kwargs):
        seen.append(sampling_params)

    monkeypatch.setattr(SingleTurnAgentLoop, "run", parent_run)
    loop = SeededSingleTurnAgentLoop.__new__(SeededSingleTurnAgentLoop)
    loop.rollout_config = OmegaConf.create({"seed": 42})
    params = {"temperature": 1.0}
    asyncio.run(loop.run(params, global_steps=3, session_id=5, raw_prompt=PROMPT))
    asyncio.run(loop.run({"seed": 7}, global_steps=3, session_id=5, raw_prompt=PROMPT))
    assert seen[0] == {"temperature": 1.0, "seed": request_seed(42, 3, 5, PROMPT)} and "seed" not in params
    assert seen[1] == {"seed": 7}
