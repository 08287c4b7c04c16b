# Sourced by grpo_ray.sh / phi_ray.sh: checks NNODES and the Ray cluster, exports RAY_ADDRESS, NNODES, GPUS_PER_NODE.
[[ ${NNODES:-} =~ ^[0-9]+$ && $NNODES -ge 2 ]] || die "set NNODES to the number of nodes in the Ray cluster (>= 2); for one node use recipes/grpo_<dataset>.sh"
export NNODES GPUS_PER_NODE=${GPUS_PER_NODE:-4} RAY_ADDRESS=${RAY_ADDRESS:-auto}
_root=$(cd "$HERE/../.." && pwd)
_python=${LLM4ICD_RL_ENV:-$_root/.venvs/rl}/bin/python
[[ -x $_python ]] || die "no python at $_python; set LLM4ICD_RL_ENV"
_gpus=$("$_python" -c 'import ray; ray.init(address="auto", logging_level="ERROR"); print(int(ray.cluster_resources().get("GPU", 0)))' 2>/dev/null) \
  || die "no Ray cluster reachable at RAY_ADDRESS=$RAY_ADDRESS; run 'ray start --head' on the head node and 'ray start --address=<head>:6379' on the others"
(( _gpus >= NNODES * GPUS_PER_NODE )) || die "the Ray cluster has $_gpus GPU(s), fewer than NNODES x GPUS_PER_NODE = $((NNODES * GPUS_PER_NODE))"
