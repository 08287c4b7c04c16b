#!/usr/bin/env bash
# The embedded default: the paper's whole ladder on a synthetic MIMIC-III-like corpus and a tiny Qwen2,
# on a CPU, through the real LlamaFactory, verl and vLLM (CPU build). Builds the environments first.
#   bash recipes/quickstart.sh            # everything, into outputs/quickstart (re-runs skip finished stages)
#   bash recipes/quickstart.sh --help     # the knobs: corpus size, steps, seed, output folder, ...
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case " $* " in *" -h "*|*" --help "*) ;; *) bash "$ROOT/env/setup.sh" ;; esac
export LLM4ICD_VENVS="${LLM4ICD_VENVS:-$ROOT/.venvs}"
PY="$LLM4ICD_VENVS/rl/bin/python"
[ -x "$PY" ] || PY=python3
cd "$ROOT"
exec "$PY" -m data_tools.ladder.run "$@"
