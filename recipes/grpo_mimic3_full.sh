#!/usr/bin/env bash
# GRPO on mimic3_full: recipes/grpo_mimic3_full.sh <model> [hydra overrides ...]   (model: qwen2.5-1.5b-instruct | qwen3-4b)
# Paths and defaults: see the header of recipes/grpo.sh (MODEL_PATH, LLM4ICD_DATA_ROOT, OUTPUT_DIR, ...).
set -euo pipefail
[[ $# -ge 1 ]] || { echo "recipes/grpo_mimic3_full.sh: error: usage: recipes/grpo_mimic3_full.sh <model> [hydra overrides ...]" >&2; exit 2; }
exec "$(dirname "${BASH_SOURCE[0]}")/grpo.sh" "$1" mimic3_full "${@:2}"
