#!/usr/bin/env bash
# GPU preflight, once per cluster before any training: environments, CUDA and driver, versions, model,
# template check, prepared data, disk. One go/no-go line per check (each no-go with its fix); exit 0 if all go.
#   bash recipes/preflight.sh [--backbone NAME] [--dataset mimic3_full ...]   (--help for every option)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${LLM4ICD_RL_ENV:-$ROOT/.venvs/rl}/bin/python"
[ -x "$PY" ] || PY="$(command -v python3)"
exec "$PY" -m data_tools.ladder.preflight "$@"
