"""verl glue: the reward adapter, the PHI dataset and the CPU platform. Import submodules directly;
this package itself imports nothing from verl, so the reward loads in any worker."""

from pathlib import Path

SEEDED_AGENT_LOOP = "llm4icd_seeded_single_turn"
"""verl agent-loop name of agent_loop.SeededSingleTurnAgentLoop, registered by AGENT_LOOPS_YAML."""
AGENT_LOOPS_YAML = Path(__file__).with_name("agent_loops.yaml")
"""The file for ``actor_rollout_ref.rollout.agent.agent_loop_config_path``."""
