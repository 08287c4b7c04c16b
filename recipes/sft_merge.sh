#!/usr/bin/env bash
# Merge a Stage-1 LoRA adapter into its base model: recipes/sft_merge.sh <model> <dataset> [key=value ...]
# Uses recipes/<model>/sft/merge.yaml (llamafactory-cli export, on CPU). Environment (defaults in brackets):
#   LLM4ICD_SFT_ENV  SFT virtualenv holding llamafactory-cli     [<repo>/.venvs/sft]
#   MODEL_PATH       base model folder or hub id                 [the recipe's model_name_or_path]
#   ADAPTER_DIR      adapter written by recipes/sft.sh           [<repo>/outputs/<model>/sft/<dataset>]
#   EXPORT_DIR       merged model folder                         [$ADAPTER_DIR/merged]
set -euo pipefail

die() { echo "recipes/sft_merge.sh: error: $*" >&2; exit 2; }

[[ $# -ge 2 ]] || die "usage: recipes/sft_merge.sh <model> <dataset> [key=value ...]"
MODEL=$1; DATASET=$2; shift 2
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

CONFIG=$REPO_ROOT/recipes/$MODEL/sft/merge.yaml
[[ -f $CONFIG ]] || die "no merge recipe $CONFIG (models: qwen2.5-1.5b-instruct, qwen3-4b; tiny: recipes/tiny/sft/merge_synthetic.yaml)"
SFT_ENV=${LLM4ICD_SFT_ENV:-$REPO_ROOT/.venvs/sft}
# llamafactory-cli, minus its printout of a whole training example (note text is PHI): llm4icd_plugins/llamafactory_cli.py
CLI=("$SFT_ENV/bin/python" -m llm4icd_plugins.llamafactory_cli)
[[ -x ${CLI[0]} ]] || die "no python at ${CLI[0]}; create the SFT environment there or set LLM4ICD_SFT_ENV"

ADAPTER_DIR=${ADAPTER_DIR:-$REPO_ROOT/outputs/$MODEL/sft/$DATASET}
[[ -f $ADAPTER_DIR/adapter_config.json ]] || die "no LoRA adapter in $ADAPTER_DIR (adapter_config.json missing); train it with recipes/sft.sh $MODEL $DATASET or set ADAPTER_DIR"
EXPORT_DIR=${EXPORT_DIR:-$ADAPTER_DIR/merged}

overrides=("adapter_name_or_path=$ADAPTER_DIR" "export_dir=$EXPORT_DIR")
[[ -z ${MODEL_PATH:-} ]] || overrides+=("model_name_or_path=$MODEL_PATH")

echo "recipes/sft_merge.sh: $ADAPTER_DIR -> $EXPORT_DIR" >&2
cd "$REPO_ROOT"
"${CLI[@]}" export "$CONFIG" "${overrides[@]}" "$@"
echo "merged model written to $EXPORT_DIR" >&2
