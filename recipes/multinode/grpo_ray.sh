#!/usr/bin/env bash
# GRPO on a running multi-node Ray cluster: NNODES=2 bash recipes/multinode/grpo_ray.sh DATASET [--backbone NAME] [--profile NAME] [key=value ...]
# Environment: NNODES (required, >= 2), GPUS_PER_NODE [4], RAY_ADDRESS [auto], plus those of recipes/launch.py (--help).
set -euo pipefail
die() { echo "recipes/multinode/grpo_ray.sh: error: $*" >&2; exit 2; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ $# -ge 1 ]] || die "usage: recipes/multinode/grpo_ray.sh DATASET [--backbone NAME] [--profile NAME] [key=value ...]"
source "$HERE/check_cluster.sh"
exec bash "$HERE/../launch.sh" grpo "$@"
