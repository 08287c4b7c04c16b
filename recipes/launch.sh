#!/usr/bin/env bash
# bash recipes/launch.sh STAGE DATASET [--backbone NAME] [--profile NAME] [key=value ...]   (--help: all options)
# Runs recipes/launch.py with the Python of the stage's environment: LLM4ICD_SFT_ENV [.venvs/sft] for sft and
# merge, LLM4ICD_RL_ENV [.venvs/rl] for grpo, phi and infer.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
case ${1:-} in
  sft|merge) ENV_DIR=${LLM4ICD_SFT_ENV:-$REPO_ROOT/.venvs/sft}; EXTRA=sft ;;
  *)         ENV_DIR=${LLM4ICD_RL_ENV:-$REPO_ROOT/.venvs/rl};  EXTRA=rl ;;
esac
PYTHON=$ENV_DIR/bin/python
if [[ ! -x $PYTHON ]]; then
  VAR=LLM4ICD_$(tr a-z A-Z <<< "$EXTRA")_ENV
  echo "recipes/launch.sh: error: no python at $PYTHON. Fix: create the environment there" \
       "(a venv with pip install -e '.[$EXTRA]', see README) or set $VAR" >&2
  exit 2
fi
exec "$PYTHON" "$REPO_ROOT/recipes/launch.py" "$@"
