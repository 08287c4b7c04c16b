#!/usr/bin/env bash
# PHI rounds on mimic4_full: recipes/phi_mimic4_full.sh <model> [hydra overrides ...]   (model: qwen2.5-1.5b-instruct | qwen3-4b)
# Paths, rounds and knobs: see the header of recipes/phi.sh (and recipes/grpo.sh).
set -euo pipefail
[[ $# -ge 1 ]] || { echo "recipes/phi_mimic4_full.sh: error: usage: recipes/phi_mimic4_full.sh <model> [hydra overrides ...]" >&2; exit 2; }
exec "$(dirname "${BASH_SOURCE[0]}")/phi.sh" "$1" mimic4_full "${@:2}"
