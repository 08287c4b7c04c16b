#!/usr/bin/env bash
# PHI (paper Sec. 4.3, App. E): recipes/phi.sh <model> <dataset> [hydra overrides for every GRPO round ...]
# Usually called through recipes/phi_<dataset>.sh <model>. Runs python -m data_tools.phi_rounds:
#   round 0: hint-free greedy inference of the SFT model on the training split -> pools H = Y \ Y_hat
#   round t = 1..PHI_ROUNDS: one GRPO epoch on the rows with a non-empty pool (PHIDataset hints them),
#     continuing the LoRA of round t-1 (the reference stays the SFT model), export of the adapter
#     (verl.model_merger), hint-free inference on the training split, pool refresh.
# Interrupted at any point, the same command line continues where it stopped (see data_tools/phi_rounds.py).
# Environment (defaults in brackets; the GRPO ones of recipes/grpo.sh apply too: MODEL_PATH, LLM4ICD_DATA_ROOT, ...):
#   PHI_RUN_DIR   folder of this PHI run                         [<repo>/outputs/<model>/phi/<dataset>]
#   PHI_ROUNDS    number of rounds (paper: 3 to 5)               [3]
#   INFER_ARGS    extra arguments of data_tools.infer, e.g. "--tensor-parallel-size 1 --batch-size 512"
# Hint knobs (paper defaults) go in as overrides, e.g. +data.phi_inject_prob=0.5 +data.phi_max_hints=5
# +data.phi_temperature=3.0 (all of them: llm4icd_plugins/hints.py, HintConfig).
set -euo pipefail

die() { echo "recipes/phi.sh: error: $*" >&2; exit 2; }
SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/phi.sh
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RL_ENV=${LLM4ICD_RL_ENV:-$REPO_ROOT/.venvs/rl}
PYTHON=$RL_ENV/bin/python

# --- the three steps, called back by data_tools.phi_rounds with its placeholders filled ----------------
case ${1:-} in
  __train)  # <round> <train_file> <ckpt_dir> <prev_adapter or ''>
    shift; round=$1 train_file=$2 ckpt_dir=$3 prev=$4
    read -r -a extra <<< "${PHI_GRPO_OVERRIDES:-}"
    TRAIN_FILE=$train_file CKPT_DIR=$ckpt_dir LORA_ADAPTER_PATH=$prev OUTPUT_DIR=$(dirname "$ckpt_dir") \
      exec "$(dirname "$SELF")/grpo.sh" "$PHI_MODEL" "$PHI_DATASET" \
      data.custom_cls.path=pkg://llm4icd_plugins.verl_dataset data.custom_cls.name=PHIDataset \
      trainer.total_epochs=1 trainer.resume_mode=auto \
      "trainer.experiment_name=${PHI_MODEL}_phi_${PHI_DATASET}_round${round}" "${extra[@]}" ;;
  __export)  # <round> <actor_dir> <export_dir>
    exec "$PYTHON" -m verl.model_merger merge --backend fsdp --local_dir "$3" --target_dir "$4" ;;
  __infer)  # <round> <adapter or ''> <predictions>
    shift; round=$1 adapter=$2 predictions=$3
    read -r -a infer_args <<< "${INFER_ARGS:-}"
    [[ $PHI_MODEL != qwen3-4b ]] || infer_args+=(--no-enable-thinking)
    common=(--data "$PHI_DATA_DIR" --split train --model "$PHI_MODEL_PATH" --max-new-tokens "$PHI_MAX_NEW_TOKENS" "${infer_args[@]}")
    if [[ -z $adapter ]]; then
      exec "$PYTHON" -m data_tools.infer "${common[@]}" --output "$predictions"
    fi
    tmp=$predictions.d; rm -rf "$tmp"
    "$PYTHON" -m data_tools.infer "${common[@]}" --lora "round$round=$adapter" --output-dir "$tmp"
    mv "$tmp/round$round.jsonl" "$predictions" && rm -rf "$tmp"
    exit 0 ;;
esac

# --- the round loop ----------------------------------------------------------------------------------
[[ $# -ge 2 ]] || die "usage: recipes/phi.sh <model> <dataset> [hydra overrides ...] (see the header of this script)"
MODEL=$1; DATASET=$2; shift 2
[[ -f $REPO_ROOT/recipes/$MODEL/grpo/config_$DATASET.yaml ]] || die "no recipe recipes/$MODEL/grpo/config_$DATASET.yaml"
[[ -x $PYTHON ]] || die "no python at $PYTHON; create the RL environment there or set LLM4ICD_RL_ENV"
DATA_DIR=${LLM4ICD_DATA_ROOT:-$REPO_ROOT/data/prepared}/$DATASET
[[ -f $DATA_DIR/verl/train.parquet ]] || die "no $DATA_DIR/verl/train.parquet; run data_tools.prepare (or set LLM4ICD_DATA_ROOT)"
MODEL_PATH=${MODEL_PATH:-$REPO_ROOT/outputs/$MODEL/sft/$DATASET/merged}
[[ -f $MODEL_PATH/config.json ]] || die "no model at MODEL_PATH=$MODEL_PATH (needs config.json); set MODEL_PATH to the merged SFT model"
RUN_DIR=${PHI_RUN_DIR:-$REPO_ROOT/outputs/$MODEL/phi/$DATASET}
[[ $DATASET == *_top50 ]] && max_new=196 || max_new=${MAX_RESPONSE_LENGTH:-512}

export PHI_MODEL=$MODEL PHI_DATASET=$DATASET PHI_DATA_DIR=$DATA_DIR PHI_MODEL_PATH=$MODEL_PATH MODEL_PATH
export PHI_MAX_NEW_TOKENS=$max_new PHI_GRPO_OVERRIDES="$*" LLM4ICD_RL_ENV=$RL_ENV
echo "recipes/phi.sh: $MODEL on $DATASET, ${PHI_ROUNDS:-3} rounds, run folder $RUN_DIR" >&2
cd "$REPO_ROOT"
exec "$PYTHON" -m data_tools.phi_rounds --run-dir "$RUN_DIR" --train "$DATA_DIR/verl/train.parquet" \
  --rounds "${PHI_ROUNDS:-3}" \
  --train-cmd "bash $(printf %q "$SELF") __train {round} {train_file} {ckpt_dir} {prev_adapter}" \
  --export-cmd "bash $(printf %q "$SELF") __export {round} {actor_dir} {export_dir}" \
  --infer-cmd "bash $(printf %q "$SELF") __infer {round} {adapter} {predictions}"
