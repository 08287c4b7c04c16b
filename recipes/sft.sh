#!/usr/bin/env bash
# Stage-1 LoRA SFT with LlamaFactory: recipes/sft.sh <model> <dataset> [key=value ...]
#   <model>   qwen2.5-1.5b-instruct | qwen3-4b        (recipes/<model>/sft/config_<dataset>.yaml)
#   <dataset> mimic3_full | mimic3_top50 | mimic4_full | mimic4_top50
#   key=value overrides any recipe key, e.g. per_device_train_batch_size=1 save_steps=1000
# Environment (defaults in brackets):
#   LLM4ICD_SFT_ENV   SFT virtualenv holding llamafactory-cli            [<repo>/.venvs/sft]
#   LLM4ICD_DATA_ROOT folder of prepared variants (data_tools.prepare --out) [<repo>/data/prepared]
#   MODEL_PATH        base model folder or hub id                         [the recipe's model_name_or_path]
#   OUTPUT_DIR        adapter/checkpoint folder                          [<repo>/outputs/<model>/sft/<dataset>]
#   NPROC_PER_NODE    GPUs per node [4];  NNODES [1];  NODE_RANK [0]
#   MASTER_ADDR, MASTER_PORT  required when NNODES > 1 (same values on every node)
# Single node, 4 GPUs:  recipes/sft.sh qwen2.5-1.5b-instruct mimic3_full
# Two nodes: on each node  NNODES=2 NODE_RANK=<0|1> MASTER_ADDR=<node0 host> MASTER_PORT=29500 recipes/sft.sh ...
# The tiny CPU recipe (recipes/tiny/sft/) is run with llamafactory-cli directly, see its header.
set -euo pipefail

die() { echo "recipes/sft.sh: error: $*" >&2; exit 2; }

[[ $# -ge 2 ]] || die "usage: recipes/sft.sh <model> <dataset> [key=value ...] (see the header of this script)"
MODEL=$1; DATASET=$2; shift 2
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

[[ $MODEL != tiny ]] || die "the tiny CPU recipe runs without torchrun: llamafactory-cli train recipes/tiny/sft/config_synthetic.yaml"
CONFIG=$REPO_ROOT/recipes/$MODEL/sft/config_$DATASET.yaml
[[ -f $CONFIG ]] || die "no recipe $CONFIG; models: $(cd "$REPO_ROOT/recipes" && ls -d */sft 2>/dev/null | cut -d/ -f1 | grep -v '^tiny$' | tr '\n' ' ')datasets: mimic3_full mimic3_top50 mimic4_full mimic4_top50"

SFT_ENV=${LLM4ICD_SFT_ENV:-$REPO_ROOT/.venvs/sft}
# llamafactory-cli, minus its printout of a whole training example (note text is PHI): llm4icd_plugins/llamafactory_cli.py
CLI=("$SFT_ENV/bin/python" -m llm4icd_plugins.llamafactory_cli)
[[ -x ${CLI[0]} ]] || die "no python at ${CLI[0]}; create the SFT environment (pip install -e '.[sft]') there or set LLM4ICD_SFT_ENV to its folder"

DATA_DIR=${LLM4ICD_DATA_ROOT:-$REPO_ROOT/data/prepared}/$DATASET
[[ -f $DATA_DIR/dataset_info.json ]] || die "no $DATA_DIR/dataset_info.json; run python -m data_tools.prepare ... --out ${LLM4ICD_DATA_ROOT:-$REPO_ROOT/data/prepared} (with --tokenizer and --cutoff-len matching the recipe) or set LLM4ICD_DATA_ROOT"
OUTPUT_DIR=${OUTPUT_DIR:-$REPO_ROOT/outputs/$MODEL/sft/$DATASET}

# LlamaFactory re-launches itself through torchrun with its arguments joined by spaces.
for path in "$CONFIG" "$DATA_DIR" "$OUTPUT_DIR" "${MODEL_PATH:-}"; do
  [[ $path != *" "* ]] || die "path with a space is not supported by LlamaFactory's torchrun re-launch: '$path'"
done

export FORCE_TORCHRUN=1
export NPROC_PER_NODE=${NPROC_PER_NODE:-4}
export NNODES=${NNODES:-1}
export NODE_RANK=${NODE_RANK:-0}
if (( NNODES > 1 )); then
  [[ -n ${MASTER_ADDR:-} ]] || die "NNODES=$NNODES needs MASTER_ADDR (host of node rank 0, same on every node)"
  [[ -n ${MASTER_PORT:-} ]] || die "NNODES=$NNODES needs MASTER_PORT (a free port on node rank 0, same on every node)"
  export MASTER_ADDR MASTER_PORT
fi
export TOKENIZERS_PARALLELISM=false

overrides=("dataset_dir=$DATA_DIR" "output_dir=$OUTPUT_DIR")
[[ -z ${MODEL_PATH:-} ]] || overrides+=("model_name_or_path=$MODEL_PATH")

echo "recipes/sft.sh: $MODEL on $DATASET, $NNODES node(s) x $NPROC_PER_NODE GPU(s), node rank $NODE_RANK" >&2
echo "  recipe $CONFIG" >&2
echo "  data   $DATA_DIR" >&2
echo "  output $OUTPUT_DIR" >&2
cd "$REPO_ROOT"
exec "${CLI[@]}" train "$CONFIG" "${overrides[@]}" "$@"
