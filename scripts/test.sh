#!/usr/bin/env bash
# The test command of the README: builds the CPU environments if needed, then runs the whole suite
# in the rl environment (LlamaFactory tests call into the sft environment).
#   bash scripts/test.sh                 # everything, framework runs included
#   bash scripts/test.sh -m "not slow"   # skip the minutes-long framework runs
#   bash scripts/test.sh tests/verl_glue/test_reward_verl.py   # any pytest arguments
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash env/setup.sh
export LLM4ICD_VENVS="${LLM4ICD_VENVS:-$ROOT/.venvs}"
export LLM4ICD_SFT_ENV="${LLM4ICD_SFT_ENV:-$LLM4ICD_VENVS/sft}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled
export TOKENIZERS_PARALLELISM=false
# Lint first (configured in pyproject.toml): a style error fails the run like a failing test.
"$LLM4ICD_VENVS/rl/bin/ruff" check --quiet "$ROOT"
exec "$LLM4ICD_VENVS/rl/bin/python" -m pytest "$@"
