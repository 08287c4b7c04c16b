#!/usr/bin/env bash
# GRPO with verl 0.9.1 (paper Sec. 4.2): recipes/grpo.sh <model> <dataset> [hydra overrides ...]
#   <model>   qwen2.5-1.5b-instruct | qwen3-4b     (recipes/<model>/grpo/config_<dataset>.yaml)
#   <dataset> mimic3_full | mimic3_top50 | mimic4_full | mimic4_top50
# Usually called through recipes/grpo_<dataset>.sh <model>. Overrides use Hydra syntax, e.g.
# trainer.total_epochs=2 data.train_batch_size=64 (keys verl lacks need a leading +).
# Environment (defaults in brackets):
#   LLM4ICD_RL_ENV     RL virtualenv holding verl + vllm                     [<repo>/.venvs/rl]
#   LLM4ICD_DATA_ROOT  folder of prepared variants (data_tools.prepare --out) [<repo>/data/prepared]
#   MODEL_PATH         merged SFT model (recipes/sft_merge.sh output)        [<repo>/outputs/<model>/sft/<dataset>/merged]
#   OUTPUT_DIR         checkpoints + tensorboard logs                        [<repo>/outputs/<model>/grpo/<dataset>]
#   TRAIN_FILE         training parquet                                      [<data>/<dataset>/verl/train.parquet]
#   CKPT_DIR           verl checkpoint folder (resume_mode auto resumes here) [$OUTPUT_DIR/checkpoints]
#   LORA_ADAPTER_PATH  LoRA adapter to continue training from (PHI rounds)    [none: fresh LoRA]
#   MAX_RESPONSE_LENGTH  response tokens; Full default: measured from <data>/<dataset>/stats.json
#   NNODES [1], GPUS_PER_NODE [4]  (multi-node: see recipes/multinode/README.md)
# Privacy: console + tensorboard only, no prompt/generation text logged (see recipes/README.md).
set -euo pipefail

die() { echo "recipes/grpo.sh: error: $*" >&2; exit 2; }
[[ $# -ge 2 ]] || die "usage: recipes/grpo.sh <model> <dataset> [hydra overrides ...] (see the header of this script)"
MODEL=$1; DATASET=$2; shift 2
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

[[ $MODEL != tiny ]] || die "the tiny CPU recipe runs with recipes/tiny/grpo/run_cpu.sh"
CONFIG_DIR=$REPO_ROOT/recipes/$MODEL/grpo
[[ -f $CONFIG_DIR/config_$DATASET.yaml ]] || die "no recipe $CONFIG_DIR/config_$DATASET.yaml; models: qwen2.5-1.5b-instruct qwen3-4b; datasets: mimic3_full mimic3_top50 mimic4_full mimic4_top50"

RL_ENV=${LLM4ICD_RL_ENV:-$REPO_ROOT/.venvs/rl}
PYTHON=$RL_ENV/bin/python
[[ -x $PYTHON ]] || die "no python at $PYTHON; create the RL environment (pip install -e '.[rl]') there or set LLM4ICD_RL_ENV"

DATA_ROOT=${LLM4ICD_DATA_ROOT:-$REPO_ROOT/data/prepared}
DATA_DIR=$DATA_ROOT/$DATASET
TRAIN_FILE=${TRAIN_FILE:-$DATA_DIR/verl/train.parquet}
VAL_FILE=${VAL_FILE:-$DATA_DIR/verl/val.parquet}
[[ -f $TRAIN_FILE ]] || die "no training file $TRAIN_FILE; run python -m data_tools.prepare ... --out $DATA_ROOT --tokenizer <backbone> (or set LLM4ICD_DATA_ROOT / TRAIN_FILE)"
[[ -f $VAL_FILE ]] || die "no validation file $VAL_FILE; run data_tools.prepare (or set VAL_FILE)"
MODEL_PATH=${MODEL_PATH:-$REPO_ROOT/outputs/$MODEL/sft/$DATASET/merged}
[[ -f $MODEL_PATH/config.json ]] || die "no model at MODEL_PATH=$MODEL_PATH (needs config.json); set MODEL_PATH to the merged SFT model (recipes/sft_merge.sh)"
OUTPUT_DIR=${OUTPUT_DIR:-$REPO_ROOT/outputs/$MODEL/grpo/$DATASET}
mkdir -p "$OUTPUT_DIR" || die "cannot create OUTPUT_DIR=$OUTPUT_DIR"

overrides=("data.train_files=$TRAIN_FILE" "data.val_files=$VAL_FILE" "actor_rollout_ref.model.path=$MODEL_PATH"
           "trainer.default_local_dir=${CKPT_DIR:-$OUTPUT_DIR/checkpoints}"
           "trainer.nnodes=${NNODES:-1}" "trainer.n_gpus_per_node=${GPUS_PER_NODE:-4}")
if [[ -n ${LORA_ADAPTER_PATH:-} ]]; then
  [[ -f $LORA_ADAPTER_PATH/adapter_config.json ]] || die "LORA_ADAPTER_PATH=$LORA_ADAPTER_PATH has no adapter_config.json"
  overrides+=("actor_rollout_ref.model.lora_adapter_path=$LORA_ADAPTER_PATH")
fi
if [[ -n ${MAX_RESPONSE_LENGTH:-} ]]; then
  overrides+=("data.max_response_length=$MAX_RESPONSE_LENGTH")
elif [[ $DATASET == *_full && -f $DATA_DIR/stats.json ]]; then
  # Full label set: the longest gold answer measured by prepare with the backbone tokenizer, +25 % and
  # a 32-token margin (for end-of-turn and a few extra codes), rounded up to 64, at least the Top-50 196.
  measured=$("$PYTHON" -c 'import json,math,sys; t=json.load(open(sys.argv[1])).get("tokens",{}); a=(t.get("answer_tokens") or {}).get("max"); print(max(196, 64*math.ceil((1.25*a+32)/64)) if a else "")' "$DATA_DIR/stats.json")
  if [[ -n $measured ]]; then
    overrides+=("data.max_response_length=$measured")
    echo "recipes/grpo.sh: max_response_length=$measured (measured in $DATA_DIR/stats.json)" >&2
  else
    echo "recipes/grpo.sh: warning: $DATA_DIR/stats.json has no answer lengths (prepare ran without --tokenizer); using the recipe's max_response_length" >&2
  fi
fi

export TENSORBOARD_DIR=${TENSORBOARD_DIR:-$OUTPUT_DIR/tensorboard}
export TOKENIZERS_PARALLELISM=false
export WANDB_MODE=disabled
echo "recipes/grpo.sh: $MODEL on $DATASET, ${NNODES:-1} node(s) x ${GPUS_PER_NODE:-4} GPU(s)" >&2
echo "  recipe $CONFIG_DIR/config_$DATASET.yaml; model $MODEL_PATH; train $TRAIN_FILE; output $OUTPUT_DIR" >&2
cd "$REPO_ROOT"
exec "$PYTHON" -m verl.trainer.main_ppo --config-path "$CONFIG_DIR" --config-name "config_$DATASET" "${overrides[@]}" "$@"
