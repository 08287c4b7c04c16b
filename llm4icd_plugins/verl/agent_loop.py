"""verl's single-turn agent loop with a vLLM sampling seed per request, so a rollout's tokens do not depend on
the order verl's asynchronous loop submits requests (verl 0.9.1 otherwise samples every request from one
generator per engine; its ``full_determinism`` gives every request the same seed, so the G rollouts of a
prompt would be identical).

    actor_rollout_ref.rollout.agent.agent_loop_config_path=<this folder>/agent_loops.yaml   (AGENT_LOOPS_YAML)
    actor_rollout_ref.rollout.agent.default_agent_loop=llm4icd_seeded_single_turn            (SEEDED_AGENT_LOOP)
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop


def request_seed(base_seed: int, step: Any, session: Any, messages: Any) -> int:
    """A 31-bit seed from the rollout seed, the trainer step, the rollout's index in its group and the prompt."""
    key = json.dumps([int(base_seed), str(step), str(session), messages], sort_keys=True, default=str)
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little") & 0x7FFFFFFF


class SeededSingleTurnAgentLoop(SingleTurnAgentLoop):
    """SingleTurnAgentLoop whose sampling parameters carry ``request_seed`` unless a seed is already set."""

    async def run(self, sampling_params: dict[str, Any], priority: int = 0, **kwargs):
        params = dict(sampling_params)
        messages = [dict(m) if isinstance(m, dict) else m for m in kwargs.get("raw_prompt", [])]
        params.setdefault("seed", request_seed(self.rollout_config.seed, kwargs.get("global_steps"),
                                               kwargs.get("session_id", priority), messages))
        return await super().run(params, priority, **kwargs)
